//! Identity and tokens (API.md §2, §3) against the real server: every status
//! and code of the auth endpoints, rotation and reuse, demo lifetime caps,
//! forged tokens, API keys and tickets.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use crate::support::{
    assert_error, auth_options, claims_of, client, login, me, now, register, signed_in, TestServer,
    SECRET,
};

const PASSWORD: &str = "correct horse battery";

async fn post(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn refresh(server: &TestServer, token: &str) -> reqwest::Response {
    post(server, "/api/auth/refresh/", json!({"refresh": token})).await
}

#[tokio::test]
async fn login_answers_the_contract_and_me_describes_the_user() {
    let server = TestServer::with(auth_options());
    register(&server, "Ann@Example.com", PASSWORD).await;
    let body = login(&server, "ann@example.com", PASSWORD).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["is_demo"], false);
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["user"]["email"], "Ann@Example.com");
    assert_eq!(body["user"]["is_demo"], false);
    assert!(body["access"].is_string() && body["refresh"].is_string());

    let res = me(&server, body["access"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    let who: Value = res.json().await.unwrap();
    assert_eq!(who["id"], body["user"]["id"]);
    assert_eq!(who["email"], "Ann@Example.com");
    assert_eq!(who["is_active"], true);
    assert_eq!(who["is_demo"], false);
    assert!(who["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(who["quota"], Value::Null);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    let server = TestServer::with(auth_options());
    register(&server, "ann@example.com", PASSWORD).await;
    let unknown = post(
        &server,
        "/api/auth/login/",
        json!({"email": "nobody@example.com", "password": PASSWORD}),
    )
    .await;
    let unknown = assert_error(unknown, 401, "invalid_credentials").await;
    let wrong = post(
        &server,
        "/api/auth/login/",
        json!({"email": "ann@example.com", "password": "wrong password"}),
    )
    .await;
    let wrong = assert_error(wrong, 401, "invalid_credentials").await;
    assert_eq!(unknown, wrong);
    let missing = post(
        &server,
        "/api/auth/login/",
        json!({"email": "ann@example.com"}),
    )
    .await;
    assert_error(missing, 400, "invalid_request").await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_email_and_per_ip() {
    let server = TestServer::with(auth_options().env("PALAVER_AUTH__LOGIN_FAILURES_PER_IP", "8"));
    register(&server, "ann@example.com", PASSWORD).await;
    for _ in 0..5 {
        let res = post(
            &server,
            "/api/auth/login/",
            json!({"email": "ann@example.com", "password": "nope nope"}),
        )
        .await;
        assert_eq!(res.status(), 401);
    }
    // Now even the right password waits: the email is locked for the window.
    let res = post(
        &server,
        "/api/auth/login/",
        json!({"email": "ANN@example.com", "password": PASSWORD}),
    )
    .await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 900, "Retry-After {retry}");
    assert_error(res, 429, "rate_limited").await;

    // Three more failures on other emails reach the per-IP limit of 8.
    for i in 0..3 {
        let res = post(
            &server,
            "/api/auth/login/",
            json!({"email": format!("x{i}@example.com"), "password": "nope nope"}),
        )
        .await;
        assert_eq!(res.status(), 401);
    }
    let res = post(
        &server,
        "/api/auth/login/",
        json!({"email": "fresh@example.com", "password": "nope nope"}),
    )
    .await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "rate_limited").await;
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let server = TestServer::with(auth_options());
    let first = signed_in(&server, "ann@example.com").await;
    let other = login(&server, "ann@example.com", PASSWORD).await; // a second family
    let r1 = first["refresh"].as_str().unwrap();

    let res = refresh(&server, r1).await;
    assert_eq!(res.status(), 200);
    let second: Value = res.json().await.unwrap();
    assert_eq!(second["token_type"], "Bearer");
    assert!(second["expires_in"].as_u64().unwrap() > 0);
    let r2 = second["refresh"].as_str().unwrap();
    assert_ne!(r1, r2);
    assert_eq!(claims_of(r1)["fam"], claims_of(r2)["fam"], "same family");
    assert_eq!(
        me(&server, second["access"].as_str().unwrap())
            .await
            .status(),
        200
    );

    // The spent token again: reuse.
    assert_error(refresh(&server, r1).await, 401, "token_revoked").await;
    // The whole family is dead: its access tokens and its newest refresh token.
    let res = me(&server, second["access"].as_str().unwrap()).await;
    let challenge = res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert_error(res, 401, "token_revoked").await;
    assert_error(
        me(&server, first["access"].as_str().unwrap()).await,
        401,
        "token_revoked",
    )
    .await;
    assert_error(refresh(&server, r2).await, 401, "token_revoked").await;
    // Another login's family is untouched.
    assert_eq!(
        me(&server, other["access"].as_str().unwrap())
            .await
            .status(),
        200
    );

    // An access token is not a refresh token.
    let access = other["access"].as_str().unwrap();
    assert_error(refresh(&server, access).await, 401, "token_invalid").await;
    assert_error(refresh(&server, "garbage").await, 401, "token_invalid").await;
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_have_exactly_one_winner() {
    let server = TestServer::with(auth_options());
    let tokens = signed_in(&server, "ann@example.com").await;
    let token = tokens["refresh"].as_str().unwrap().to_owned();
    let attempts = (0..8).map(|_| refresh(&server, &token));
    let results = futures_join_all(attempts).await;
    let ok = results.iter().filter(|r| r.status() == 200).count();
    assert_eq!(
        ok,
        1,
        "statuses: {:?}",
        results.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    assert!(results
        .iter()
        .all(|r| r.status() == 200 || r.status() == 401));
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::new();
    // Poll them all concurrently on this task.
    let mut pinned: Vec<_> = handles.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, fut) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(done.into_iter().map(|v| v.expect("completed")));
    out
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let server = TestServer::with(auth_options());
    let tokens = signed_in(&server, "ann@example.com").await;
    let refresh_token = tokens["refresh"].as_str().unwrap();
    let res = post(
        &server,
        "/api/auth/logout/",
        json!({"refresh": refresh_token}),
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_error(
        me(&server, tokens["access"].as_str().unwrap()).await,
        401,
        "token_revoked",
    )
    .await;
    assert_error(refresh(&server, refresh_token).await, 401, "token_revoked").await;
    let res = post(
        &server,
        "/api/auth/logout/",
        json!({"refresh": tokens["access"]}),
    )
    .await;
    assert_error(res, 401, "token_invalid").await;
    let res = post(&server, "/api/auth/logout/", json!({})).await;
    assert_error(res, 400, "invalid_request").await;
}

#[tokio::test]
async fn demo_tokens_never_outlive_the_demo() {
    let server = TestServer::with(auth_options().env("PALAVER_DEMO__LIFETIME", "2m"));
    let started = now();
    let res = client()
        .post(server.url("/api/auth/demo/"))
        .send()
        .await
        .unwrap(); // no body at all
    assert_eq!(res.status(), 200);
    let demo: Value = res.json().await.unwrap();
    assert_eq!(demo["is_demo"], true);
    assert_eq!(demo["token_type"], "Bearer");
    assert_eq!(demo["request_limit"], 5);
    assert_eq!(demo["request_count"], 0);
    assert_eq!(demo["user"]["is_demo"], true);
    let end = demo["expires_at"].as_u64().unwrap();
    assert!(end >= started + 120 && end <= now() + 120, "demo end {end}");
    // access_ttl (30m) and refresh_ttl (7d) both exceed the demo: capped.
    assert_eq!(claims_of(demo["access"].as_str().unwrap())["exp"], end);
    assert_eq!(claims_of(demo["refresh"].as_str().unwrap())["exp"], end);
    assert_eq!(claims_of(demo["access"].as_str().unwrap())["is_demo"], true);
    assert!(demo["expires_in"].as_u64().unwrap() <= 120);

    // Refreshing, however often, never extends it.
    let mut token = demo["refresh"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let res = refresh(&server, &token).await;
        assert_eq!(res.status(), 200);
        let next: Value = res.json().await.unwrap();
        assert!(
            claims_of(next["access"].as_str().unwrap())["exp"]
                .as_u64()
                .unwrap()
                <= end
        );
        assert!(
            claims_of(next["refresh"].as_str().unwrap())["exp"]
                .as_u64()
                .unwrap()
                <= end
        );
        token = next["refresh"].as_str().unwrap().to_owned();
    }

    let who: Value = me(&server, demo["access"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who["is_demo"], true);
    assert_eq!(who["quota"]["request_limit"], 5);
    assert_eq!(who["quota"]["expires_at"], end);

    // Demo users cannot have API keys.
    let res = client()
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(demo["access"].as_str().unwrap())
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
}

#[tokio::test]
async fn demo_creation_is_limited_per_ip_and_can_be_disabled() {
    let server = TestServer::with(auth_options().env("PALAVER_DEMO__PER_IP_PER_HOUR", "2"));
    for _ in 0..2 {
        let res = post(&server, "/api/auth/demo/", json!({})).await;
        assert_eq!(res.status(), 200);
    }
    let res = post(&server, "/api/auth/demo/", json!({})).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "rate_limited").await;
    drop(server);

    let server = TestServer::with(auth_options().env("PALAVER_DEMO__ENABLED", "false"));
    assert_error(
        post(&server, "/api/auth/demo/", json!({})).await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn expired_demo_users_are_swept_with_what_they_own() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_DEMO__LIFETIME", "1s")
            .env("PALAVER_DEMO__GC_AFTER", "1s")
            .data(&data),
    );
    let demo: Value = post(&server, "/api/auth/demo/", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let id = demo["user"]["id"].as_str().unwrap().to_owned();
    // Wait (bounded) for the sweep to report the deletion.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !server.output().contains("demo user expired and deleted") {
        assert!(
            std::time::Instant::now() < deadline,
            "no sweep:\n{}",
            server.output()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The token is refused (its user is gone or its lifetime over).
    let res = me(&server, demo["access"].as_str().unwrap()).await;
    assert_eq!(res.status(), 401);
    assert_eq!(server.terminate().code(), Some(0));
    let store = palaver_storage::Store::open(&palaver_storage::StoreConfig {
        path: data,
        cache_bytes: 8 << 20,
        fsync: false,
    })
    .unwrap();
    assert!(store.users().get(id.parse().unwrap()).unwrap().is_none());
    assert_eq!(store.users().demo_count(), 0);
}

/// A token signed with the server's secret but with chosen claims.
fn forge(claims: &Value, alg: Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// The forge set: tokens made from a good access token that every
/// verifier must refuse, each with the code it gets: `alg: none` in every
/// spelling, another algorithm in the header, a tampered payload, a
/// stripped signature, another issuer, expiry, `nbf` ahead, another key,
/// garbage. `sign` signs claims with the verifier's own key. Shared with
/// tests/it/external.rs, which runs it against another issuer's entry.
pub(crate) fn forgeries(
    access: &str,
    sign: &dyn Fn(&Value, Algorithm) -> String,
) -> Vec<(&'static str, String, &'static str)> {
    let good = claims_of(access);
    let parts: Vec<&str> = access.split('.').collect();
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&json!({"alg": alg, "typ": "JWT"}));
        cases.push((
            "alg none",
            format!("{header}.{}.", parts[1]),
            "token_invalid",
        ));
    }
    cases.push((
        "HS512 header",
        sign(&good, Algorithm::HS512),
        "token_invalid",
    ));
    let rs_header = b64(&json!({"alg": "RS256", "typ": "JWT"}));
    cases.push((
        "RS256 header",
        format!("{rs_header}.{}.{}", parts[1], parts[2]),
        "token_invalid",
    ));
    let mut tampered = good.clone();
    tampered["is_demo"] = json!(true);
    cases.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64(&tampered), parts[2]),
        "token_invalid",
    ));
    cases.push((
        "stripped signature",
        format!("{}.{}.", parts[0], parts[1]),
        "token_invalid",
    ));
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("someone-else");
    cases.push((
        "wrong issuer",
        sign(&wrong_iss, Algorithm::HS256),
        "token_invalid",
    ));
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 60);
    cases.push(("expired", sign(&expired, Algorithm::HS256), "token_expired"));
    let mut early = good.clone();
    early["nbf"] = json!(now() + 3600);
    cases.push((
        "nbf in the future",
        sign(&early, Algorithm::HS256),
        "token_invalid",
    ));
    let other_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"another-secret-another-secret-another-secret"),
    )
    .unwrap();
    cases.push(("other key", other_key, "token_invalid"));
    cases.push(("garbage", "not.a.jwt".into(), "token_invalid"));
    cases
}

/// Every token is refused at `GET /api/auth/me/` with a 401, its code and
/// the RFC 6750 challenge.
pub(crate) async fn assert_all_refused(server: &TestServer, cases: Vec<(&str, String, &str)>) {
    for (what, token, code) in cases {
        let res = me(server, &token).await;
        assert_eq!(res.status(), 401, "{what}");
        let challenge = res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{what}: {challenge}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], code, "{what}: {body}");
    }
}

#[tokio::test]
async fn forged_and_misused_tokens_are_rejected() {
    let server = TestServer::with(auth_options());
    let tokens = signed_in(&server, "ann@example.com").await;
    let access = tokens["access"].as_str().unwrap();
    let good = claims_of(access);

    let mut cases = forgeries(access, &forge);
    let mut ghost = good.clone();
    ghost["sub"] = json!(uuid::Uuid::now_v7().to_string());
    cases.push((
        "unknown user",
        forge(&ghost, Algorithm::HS256),
        "token_invalid",
    ));
    cases.push((
        "refresh as access",
        tokens["refresh"].as_str().unwrap().to_owned(),
        "token_invalid",
    ));

    assert_all_refused(&server, cases).await;

    // The untouched token still works, so every refusal above was the forgery's.
    assert_eq!(me(&server, access).await.status(), 200);
    let res = client()
        .get(server.url("/api/auth/me/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["www-authenticate"],
        r#"Bearer realm="palaver""#
    );
    assert_error(res, 401, "token_missing").await;
    let res = client()
        .get(server.url("/api/auth/me/"))
        .header("authorization", format!("Basic {access}"))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_invalid").await;
}

#[tokio::test]
async fn issued_tokens_decode_with_a_standard_library_and_the_secret_alone() {
    let server = TestServer::with(auth_options());
    let tokens = signed_in(&server, "ann@example.com").await;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["palaver"]);
    let key = DecodingKey::from_secret(SECRET.as_bytes());
    let access =
        jsonwebtoken::decode::<Value>(tokens["access"].as_str().unwrap(), &key, &validation)
            .unwrap();
    let c = access.claims;
    let user_id = tokens["user"]["id"].as_str().unwrap();
    assert_eq!(c["sub"], user_id);
    assert_eq!(c["user_id"], user_id);
    assert_eq!(c["token_type"], "access");
    assert_eq!(c["is_demo"], false);
    assert!(uuid::Uuid::parse_str(c["jti"].as_str().unwrap()).is_ok());
    assert!(uuid::Uuid::parse_str(c["fam"].as_str().unwrap()).is_ok());
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        1800
    );
    assert!(access.header.kid.is_some(), "kid present");
    let refresh =
        jsonwebtoken::decode::<Value>(tokens["refresh"].as_str().unwrap(), &key, &validation)
            .unwrap();
    assert_eq!(refresh.claims["token_type"], "refresh");
    assert_eq!(refresh.claims["fam"], c["fam"]);
    assert_eq!(refresh.header.kid, access.header.kid);
}

#[tokio::test]
async fn a_generated_secret_is_private_and_survives_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = || {
        crate::support::ServerOptions::default()
            .open_registration()
            .data(&data)
    };
    let server = TestServer::with(options());
    let tokens = signed_in(&server, "ann@example.com").await;
    let mode = std::fs::metadata(data.join("jwt_secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(data.join("jwt_secret")).unwrap().len(),
        64
    );
    assert_eq!(server.terminate().code(), Some(0));

    let server = TestServer::with(options());
    assert_eq!(
        me(&server, tokens["access"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn previous_secrets_verify_old_tokens_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::with(auth_options().data(&data));
    let tokens = signed_in(&server, "ann@example.com").await;
    assert_eq!(server.terminate().code(), Some(0));

    let new_secret = "rotated-secret-rotated-secret-rotated-secret-0000";
    let rotated = TestServer::with(
        crate::support::ServerOptions::default()
            .env("PALAVER_AUTH__SECRET", new_secret)
            .env("PALAVER_AUTH__PREVIOUS_SECRETS", &format!("[\"{SECRET}\"]"))
            .data(&data),
    );
    assert_eq!(
        me(&rotated, tokens["access"].as_str().unwrap())
            .await
            .status(),
        200
    );
    let fresh = login(&rotated, "ann@example.com", PASSWORD).await;
    assert_ne!(
        jsonwebtoken::decode_header(fresh["access"].as_str().unwrap())
            .unwrap()
            .kid,
        jsonwebtoken::decode_header(tokens["access"].as_str().unwrap())
            .unwrap()
            .kid,
    );
    drop(rotated);

    let forgotten = TestServer::with(
        crate::support::ServerOptions::default()
            .env("PALAVER_AUTH__SECRET", new_secret)
            .data(&data),
    );
    assert_error(
        me(&forgotten, tokens["access"].as_str().unwrap()).await,
        401,
        "token_invalid",
    )
    .await;
}

#[tokio::test]
async fn ws_tickets_need_authentication() {
    let server = TestServer::with(auth_options());
    let tokens = signed_in(&server, "ann@example.com").await;
    let res = client()
        .post(server.url("/api/auth/ws-ticket/"))
        .bearer_auth(tokens["access"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 30);
    assert!(body["ticket"].as_str().unwrap().len() >= 40);
    let res = client()
        .post(server.url("/api/auth/ws-ticket/"))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_missing").await;
}

#[tokio::test]
async fn api_keys_are_shown_once_and_act_as_their_user() {
    let server = TestServer::with(auth_options());
    let ann = signed_in(&server, "ann@example.com").await;
    let bob = signed_in(&server, "bob@example.com").await;
    let ann_access = ann["access"].as_str().unwrap();
    let http = client();

    let res = http
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(ann_access)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "ci");
    assert!(created["created_at"].is_string());

    // The key authenticates as Ann, on any protected endpoint.
    let res = http
        .get(server.url("/api/auth/me/"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["email"],
        "ann@example.com"
    );
    let res = http
        .post(server.url("/api/auth/ws-ticket/"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Listed without the key itself; marked used.
    let res = http
        .get(server.url("/api/auth/api-keys/"))
        .bearer_auth(ann_access)
        .send()
        .await
        .unwrap();
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["api_keys"].as_array().unwrap().len(), 1);
    assert_eq!(list["api_keys"][0]["id"], created["id"]);
    assert!(list["api_keys"][0].get("key").is_none());
    assert!(list["api_keys"][0]["last_used_at"].is_string());
    assert!(!list.to_string().contains(&key));

    // Bob cannot see or delete it.
    let bob_access = bob["access"].as_str().unwrap();
    let res = http
        .get(server.url("/api/auth/api-keys/"))
        .bearer_auth(bob_access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["api_keys"], json!([]));
    let path = format!("/api/auth/api-keys/{}/", created["id"].as_str().unwrap());
    let res = http
        .delete(server.url(&path))
        .bearer_auth(bob_access)
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found").await;

    let res = http
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(ann_access)
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "invalid_request").await;

    let res = http
        .delete(server.url(&path))
        .bearer_auth(ann_access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = http
        .get(server.url("/api/auth/me/"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_invalid").await;
    let res = http
        .get(server.url("/api/auth/me/"))
        .header("x-api-key", "pvk_madeup")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_invalid").await;
}

#[tokio::test]
async fn me_reports_a_regular_users_quota_when_one_is_set() {
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_QUOTA__USER_REQUEST_LIMIT", "3")
            .env("PALAVER_QUOTA__WINDOW", "1h"),
    );
    let tokens = signed_in(&server, "ann@example.com").await;
    let who: Value = me(&server, tokens["access"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who["quota"]["request_count"], 0);
    assert_eq!(who["quota"]["request_limit"], 3);
    let resets = who["quota"]["expires_at"].as_u64().unwrap();
    assert!(resets > now() && resets <= now() + 3600, "{who}");
}

#[tokio::test]
async fn requests_to_no_route_are_not_counted() {
    let server = TestServer::with(auth_options());
    let demo: Value = post(&server, "/api/auth/demo/", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let access = demo["access"].as_str().unwrap();
    for _ in 0..7 {
        let res = client()
            .post(server.url("/api/no-such-thing/"))
            .bearer_auth(access)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(!res.headers().contains_key("ratelimit"));
        assert_error(res, 404, "not_found").await;
    }
    let who: Value = me(&server, access).await.json().await.unwrap();
    assert_eq!(who["quota"]["request_count"], 0);
}

#[tokio::test]
async fn concurrent_guesses_cannot_slip_past_the_throttle() {
    let server = TestServer::with(auth_options());
    register(&server, "ann@example.com", PASSWORD).await;
    let guesses = (0..20).map(|i| {
        post(
            &server,
            "/api/auth/login/",
            json!({"email": "ann@example.com", "password": format!("guess-{i}")}),
        )
    });
    let mut checked = 0;
    for res in futures_util::future::join_all(guesses).await {
        match res.status().as_u16() {
            401 => checked += 1,
            429 | 503 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        checked <= 5,
        "{checked} guesses were checked; the limit is 5"
    );
}
