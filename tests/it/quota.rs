//! Quotas (API.md §4) against the real server: exact admission under
//! concurrency over separate connections, RateLimit fields, what is never
//! counted, and counts that survive SIGKILL.

use serde_json::{json, Value};

use crate::support::{
    assert_error, auth_options, client, me, JsonValue, ServerOptions, TestServer, SECRET,
};

async fn demo(server: &TestServer) -> String {
    let res = client()
        .post(server.url("/api/auth/demo/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["access"].as_str().unwrap().to_owned()
}

/// A counted request on a connection of its own.
async fn create_session(server: &TestServer, token: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .post(server.url("/api/sessions/"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

fn options() -> ServerOptions {
    auth_options().env("PALAVER_DEMO__PER_IP_PER_HOUR", "1000")
}

#[tokio::test]
async fn exactly_the_limit_of_concurrent_requests_is_admitted() {
    let server = TestServer::with(options());
    for round in 0..20 {
        let token = demo(&server).await;
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (url, token) = (server.url("/api/sessions/"), token.clone());
                tokio::spawn(async move {
                    reqwest::Client::builder()
                        .pool_max_idle_per_host(0)
                        .build()
                        .unwrap()
                        .post(url)
                        .bearer_auth(token)
                        .json(&json!({}))
                        .send()
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut created = 0;
        let mut refused = 0;
        for handle in handles {
            let res = handle.await.unwrap();
            match res.status().as_u16() {
                201 => created += 1,
                429 => {
                    let body = assert_error(res, 429, "quota_exceeded").await;
                    assert_eq!(
                        (
                            body["request_count"].as_u64(),
                            body["request_limit"].as_u64()
                        ),
                        (Some(5), Some(5))
                    );
                    refused += 1;
                }
                other => panic!("round {round}: unexpected status {other}"),
            }
        }
        assert_eq!((created, refused), (5, 45), "round {round}");
        let sessions: Value = client()
            .get(server.url("/api/sessions/"))
            .bearer_auth(&token)
            .json_value()
            .await;
        assert_eq!(
            sessions["sessions"].as_array().unwrap().len(),
            5,
            "round {round}"
        );
    }
}

#[tokio::test]
async fn counted_responses_carry_ratelimit_fields_and_reads_are_free() {
    let server = TestServer::with(options());
    let token = demo(&server).await;
    for remaining in (0..5).rev() {
        let res = create_session(&server, &token).await;
        assert_eq!(res.status(), 201);
        assert_eq!(res.headers()["ratelimit-policy"], "\"demo\";q=5;w=900");
        let limit = res.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            limit.starts_with(&format!("\"demo\";r={remaining};t=")),
            "{limit}"
        );
        let t: u64 = limit.rsplit("t=").next().unwrap().parse().unwrap();
        assert!(t > 880 && t <= 900, "{limit}");
    }
    let res = create_session(&server, &token).await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 880 && retry <= 900);
    assert!(res.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"demo\";r=0;"));
    assert_error(res, 429, "quota_exceeded").await;

    // Reads and /api/auth/ are never counted, nor refused, at the limit.
    let http = client();
    for _ in 0..3 {
        let res = http
            .get(server.url("/api/sessions/"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(!res.headers().contains_key("ratelimit"));
        let res = http
            .post(server.url("/api/auth/ws-ticket/"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let who: Value = me(&server, &token).await.json().await.unwrap();
    assert_eq!(who["quota"]["request_count"], 5);
    // Other counted methods are refused too.
    let sessions: Value = http
        .get(server.url("/api/sessions/"))
        .bearer_auth(&token)
        .json_value()
        .await;
    let id = sessions["sessions"][0]["id"].as_str().unwrap();
    let res = http
        .patch(server.url(&format!("/api/sessions/{id}/")))
        .bearer_auth(&token)
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 429, "quota_exceeded").await;
    let res = http
        .delete(server.url(&format!("/api/sessions/{id}/")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_error(res, 429, "quota_exceeded").await;
}

#[tokio::test]
async fn counts_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::with(options().data(&data));
    let token = demo(&server).await;
    for _ in 0..3 {
        assert_eq!(create_session(&server, &token).await.status(), 201);
    }
    server.kill();

    let server = TestServer::with(options().data(&data));
    let who: Value = me(&server, &token).await.json().await.unwrap();
    assert_eq!(who["quota"]["request_count"], 3);
    for _ in 0..2 {
        assert_eq!(create_session(&server, &token).await.status(), 201);
    }
    assert_error(create_session(&server, &token).await, 429, "quota_exceeded").await;
}

#[tokio::test]
async fn regular_users_have_the_user_policy_when_set() {
    let server = TestServer::with(
        ServerOptions::default()
            .env("PALAVER_AUTH__SECRET", SECRET)
            .open_registration()
            .env("PALAVER_QUOTA__USER_REQUEST_LIMIT", "2")
            .env("PALAVER_QUOTA__WINDOW", "1h"),
    );
    let tokens = crate::support::signed_in(&server, "ann@example.com").await;
    let token = tokens["access"].as_str().unwrap();
    for _ in 0..2 {
        let res = create_session(&server, token).await;
        assert_eq!(res.status(), 201);
        assert_eq!(res.headers()["ratelimit-policy"], "\"user\";q=2;w=3600");
    }
    assert_error(create_session(&server, token).await, 429, "quota_exceeded").await;
}

#[tokio::test]
async fn regular_users_are_unlimited_by_default() {
    let server = TestServer::with(auth_options());
    let tokens = crate::support::signed_in(&server, "ann@example.com").await;
    let token = tokens["access"].as_str().unwrap();
    for _ in 0..8 {
        let res = create_session(&server, token).await;
        assert_eq!(res.status(), 201);
        assert!(!res.headers().contains_key("ratelimit"));
    }
}

#[tokio::test]
async fn percent_encoded_paths_are_counted_like_plain_ones() {
    let server = TestServer::with(options().env("PALAVER_ANALYSIS__ENGINE", "echo"));
    let token = demo(&server).await;
    let session: Value = create_session(&server, &token).await.json().await.unwrap(); // 1
    let id = session["id"].as_str().unwrap();
    let ask = |path: String| {
        let (url, token) = (server.url(&path), token.clone());
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"text": "hi"}))
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..4 {
        let path = if i % 2 == 0 {
            format!("/api/sessions/{id}/m%65ssages/")
        } else {
            format!("/api/%73essions/{id}/messages")
        };
        let res = ask(path).await;
        assert_eq!(res.status(), 200, "request {i}");
        assert!(res.headers().contains_key("ratelimit"), "counted");
    }
    let res = ask(format!("/api/sessions/{id}/m%65ssages/")).await;
    assert_error(res, 429, "quota_exceeded").await;
}

/// An invalid question (too long, empty) is not counted, over HTTP as over a
/// WebSocket: the same lifecycle refuses it before it is counted or stored.
#[tokio::test]
async fn invalid_questions_are_not_counted_on_either_transport() {
    use crate::support::{next_frame, send_json, ws_connected};
    let server = TestServer::with(
        options()
            .env("PALAVER_ANALYSIS__ENGINE", "echo")
            .env("PALAVER_ANALYSIS__MAX_QUESTION_CHARS", "20"),
    );
    let token = demo(&server).await;
    let res = create_session(&server, &token).await;
    assert_eq!(res.status(), 201);
    let session = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let count = || async {
        me(&server, &token).await.json::<Value>().await.unwrap()["quota"]["request_count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count().await, 1);
    for text in ["x".repeat(21), "   ".to_owned()] {
        let res = client()
            .post(server.url(&format!("/api/sessions/{session}/messages/")))
            .bearer_auth(&token)
            .json(&json!({ "text": text }))
            .send()
            .await
            .unwrap();
        let body = assert_error(res, 400, "invalid_request").await;
        assert!(
            body["error"].as_str().unwrap().starts_with("text:"),
            "{body}"
        );
    }
    let (mut ws, _) = ws_connected(
        &server,
        &format!("/ws/sessions/{session}/?token={token}"),
        &[],
    )
    .await;
    send_json(&mut ws, json!({"type": "question", "text": "x".repeat(21)})).await;
    assert_eq!(next_frame(&mut ws).await["code"], "question_too_long");
    assert_eq!(
        count().await,
        1,
        "neither transport counted an invalid question"
    );
    // A valid one is counted, once, over HTTP.
    let res = client()
        .post(server.url(&format!("/api/sessions/{session}/messages/")))
        .bearer_auth(&token)
        .json(&json!({"text": "fine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(count().await, 2);
}
