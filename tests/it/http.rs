//! The HTTP skeleton: the error body of API.md §1 for 400/404/405/413/415,
//! trailing slashes, `/health`, `/ready`, and registration.

use std::time::Instant;

use serde_json::{json, Value};

use crate::metrics::sample;
use crate::support::{
    assert_error, auth_options, client, new_session, signed_in, ServerOptions, TestServer,
};

fn open_registration() -> TestServer {
    TestServer::with(ServerOptions::default().open_registration())
}

#[tokio::test]
async fn health_and_ready() {
    let server = TestServer::start();
    let http = client();
    for path in ["/health", "/health/"] {
        let res = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().contains_key("x-request-id"));
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert!(body["uptime_seconds"].is_u64());
    }
    let res = http.get(server.url("/ready/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");
}

/// `/ready` is public and its probe is a durable write: however often and
/// however concurrently it is asked, storage is probed (and flushed) at most
/// once a second. Counted by the flushes `/metrics` reports.
#[tokio::test]
async fn ready_probes_storage_at_most_once_a_second() {
    let server = TestServer::start();
    let http = client();
    let flushes = || async {
        let scrape = http
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sample(&scrape, "palaver_storage_flush_seconds_count", &[]).unwrap_or(0.0)
    };
    let before = flushes().await;
    let started = Instant::now();
    let burst = (0..20).map(|_| http.get(server.url("/ready")).send());
    for res in futures_util::future::join_all(burst).await {
        assert_eq!(res.unwrap().status(), 200);
    }
    for _ in 0..20 {
        let res = http.get(server.url("/ready")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let elapsed = started.elapsed();
    let probes = flushes().await - before;
    let allowed = elapsed.as_secs_f64().floor() + 1.0;
    assert!(
        (1.0..=allowed).contains(&probes),
        "{probes} flushes for 40 /ready calls in {elapsed:?}"
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let server = TestServer::start();
    let http = client();
    for path in ["/nope", "/api/nope/", "/api/auth/register/extra"] {
        assert_error(
            http.get(server.url(path)).send().await.unwrap(),
            404,
            "not_found",
        )
        .await;
    }
    let res = http.delete(server.url("/health")).send().await.unwrap();
    assert_error(res, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn malformed_json_and_missing_fields_are_400_naming_the_problem() {
    let server = open_registration();
    let http = client();
    let post = |body: &'static str| {
        http.post(server.url("/api/auth/register/"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_error(post("{not json").await.unwrap(), 400, "invalid_request").await;
    let body = assert_error(
        post(r#"{"email":"a@example.com"}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("password"),
        "{body}"
    );
    let body = assert_error(
        post(r#"{"email":"a@example.com","password":5}"#)
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("invalid"),
        "{body}"
    );
}

/// Every JSON body the API reads names the field a client got wrong: of the
/// wrong type (serde's own message names only the type), missing, or unknown.
#[tokio::test]
async fn every_json_body_names_a_wrong_typed_field() {
    let server = TestServer::with(auth_options());
    let access = signed_in(&server, "ann@example.com").await["access"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = new_session(&server, &access).await;
    let http = client();
    let messages = format!("/api/sessions/{session}/messages/");
    let renamed = format!("/api/sessions/{session}/");
    // (method, path, field): the field, given a number where it wants a
    // string or an object, is the first the server reads.
    let cases = [
        ("POST", "/api/auth/register/", "password"),
        ("POST", "/api/auth/login/", "email"),
        ("POST", "/api/auth/refresh/", "refresh"),
        ("POST", "/api/auth/logout/", "refresh"),
        ("POST", "/api/auth/api-keys/", "name"),
        ("POST", "/api/sessions/", "title"),
        ("POST", "/api/sessions/", "track_id"),
        ("PATCH", renamed.as_str(), "title"),
        ("POST", messages.as_str(), "text"),
    ];
    for (method, path, field) in cases {
        let res = http
            .request(method.parse().unwrap(), server.url(path))
            .bearer_auth(&access)
            .json(&json!({ field: 5 }))
            .send()
            .await
            .unwrap();
        let error = assert_error(res, 400, "invalid_request").await;
        let message = error["error"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}: invalid type: integer `5`")),
            "{method} {path}: {message}"
        );
    }
    // A missing field and an unknown one are named as well.
    let res = http
        .post(server.url(&messages))
        .bearer_auth(&access)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let error = assert_error(res, 400, "invalid_request").await;
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("missing field `text`"),
        "{error}"
    );
    let res = http
        .patch(server.url(&renamed))
        .bearer_auth(&access)
        .json(&json!({"title": "t", "colour": "red"}))
        .send()
        .await
        .unwrap();
    let error = assert_error(res, 400, "invalid_request").await;
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{error}"
    );
    // Malformed JSON is still said to be malformed.
    let res = http
        .post(server.url(&messages))
        .bearer_auth(&access)
        .header("content-type", "application/json")
        .body(r#"{"text": "#)
        .send()
        .await
        .unwrap();
    let error = assert_error(res, 400, "invalid_request").await;
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{error}"
    );
}

#[tokio::test]
async fn oversized_body_is_413_and_wrong_type_is_415() {
    let server = TestServer::with(
        ServerOptions::default()
            .open_registration()
            .env("PALAVER_SERVER__MAX_JSON_BYTES", "1024"),
    );
    let http = client();
    let big = json!({"email": "a@example.com", "password": "x".repeat(2000)});
    let res = http
        .post(server.url("/api/auth/register"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_error(res, 413, "payload_too_large").await;

    let res = http
        .post(server.url("/api/auth/register/"))
        .header("content-type", "text/plain")
        .body(r#"{"email":"a@example.com","password":"long enough"}"#)
        .send()
        .await
        .unwrap();
    assert_error(res, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn registration_creates_users_once_and_validates() {
    let server = open_registration();
    let http = client();
    let register = |email: &str, password: &str| {
        http.post(server.url("/api/auth/register/"))
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    let res = register("Ann@Example.com", "correct horse").await.unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], "Ann@Example.com");
    assert_eq!(body["user"]["is_demo"], false);
    let id = body["user"]["id"].as_str().unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(id).unwrap().hyphenated().to_string(),
        id
    );

    let taken = register("ann@example.COM", "another password")
        .await
        .unwrap();
    assert_error(taken, 409, "email_taken").await;
    let short = register("bob@example.com", "short").await.unwrap();
    let body = assert_error(short, 400, "invalid_request").await;
    assert!(body["error"].as_str().unwrap().contains("password"));
    let bad = register("not-an-email", "long enough pw").await.unwrap();
    let body = assert_error(bad, 400, "invalid_request").await;
    assert!(body["error"].as_str().unwrap().contains("email"));
}

#[tokio::test]
async fn registration_is_closed_by_default() {
    let server = TestServer::start();
    let res = client()
        .post(server.url("/api/auth/register/"))
        .json(&json!({"email": "a@example.com", "password": "long enough"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "registration_closed").await;
}

#[tokio::test]
async fn cors_follows_allowed_origins() {
    let server = TestServer::with(ServerOptions::default().env(
        "PALAVER_SERVER__ALLOWED_ORIGINS",
        "[\"https://app.example.com\"]",
    ));
    let http = client();
    // A preflight from a listed origin is answered.
    let res = http
        .request(reqwest::Method::OPTIONS, server.url("/api/auth/login/"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    // Responses to it carry the origin; other origins get nothing.
    let res = http
        .post(server.url("/api/auth/register/"))
        .header("origin", "https://app.example.com")
        .json(&json!({"email": "a@example.com", "password": "long enough"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let res = http
        .post(server.url("/api/auth/register/"))
        .header("origin", "https://evil.example.com")
        .json(&json!({"email": "a@example.com", "password": "long enough"}))
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    // A state-changing request from an origin not allowed never runs.
    assert_error(res, 403, "forbidden").await;
}

/// Any web page can make its visitors' browsers `POST /api/auth/demo/` (no
/// body, so no preflight): a foreign `Origin` on a state-changing `/api/`
/// request is 403 `forbidden` before anything runs, so it neither creates a
/// demo user nor spends the visitor's per-IP demo budget, nor is counted.
#[tokio::test]
async fn cross_site_state_changes_are_refused_before_anything_runs() {
    let server =
        TestServer::with(ServerOptions::default().env("PALAVER_DEMO__PER_IP_PER_HOUR", "1"));
    let http = client();
    let host = server.base.trim_start_matches("http://").to_owned();
    for foreign in [
        "https://evil.example.com",
        "null",
        &format!("https://{host}"),
    ] {
        let res = http
            .post(server.url("/api/auth/demo/"))
            .header("origin", foreign)
            .send()
            .await
            .unwrap();
        let body = assert_error(res, 403, "forbidden").await;
        assert!(body["error"].as_str().unwrap().contains("origin"), "{body}");
    }
    // The page's own origin passes, and the one demo the budget allows is
    // still there to be had.
    let res = http
        .post(server.url("/api/auth/demo/"))
        .header("origin", server.base.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let demo: Value = res.json().await.unwrap();
    let access = demo["access"].as_str().unwrap();

    // A counted request from a foreign origin is refused and not counted;
    // reads (no state change) are CORS's business, not refused.
    let res = http
        .post(server.url("/api/sessions/"))
        .header("origin", "https://evil.example.com")
        .bearer_auth(access)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
    let res = http
        .get(server.url("/api/auth/me/"))
        .header("origin", "https://evil.example.com")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["quota"]["request_count"], 0);
    // Non-browser clients send no Origin and are unaffected.
    let res = http
        .post(server.url("/api/sessions/"))
        .bearer_auth(access)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}
