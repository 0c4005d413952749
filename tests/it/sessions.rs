//! The sessions API (API.md §5): CRUD, pagination, ownership as 404, history.

use serde_json::{json, Value};

use crate::support::{
    assert_error, auth_options, client, close_code, new_session, signed_in, ws_connected,
    JsonValue, TestServer,
};

struct Api<'a> {
    server: &'a TestServer,
    token: String,
}

impl Api<'_> {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        client()
            .request(method, self.server.url(path))
            .bearer_auth(&self.token)
    }
}

async fn api<'a>(server: &'a TestServer, email: &str) -> Api<'a> {
    let tokens = signed_in(server, email).await;
    Api {
        server,
        token: tokens["access"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn create_get_rename_delete() {
    use reqwest::Method;
    let server = TestServer::with(auth_options());
    let ann = api(&server, "ann@example.com").await;

    // No body at all, an empty object, and a title.
    let res = ann
        .req(Method::POST, "/api/sessions/")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let untitled: Value = res.json().await.unwrap();
    assert_eq!(untitled["title"], "New session");
    assert_eq!(untitled["track_id"], Value::Null);
    assert_eq!(untitled["message_count"], 0);
    assert!(untitled["created_at"].as_str().unwrap().ends_with('Z'));
    let res = ann
        .req(Method::POST, "/api/sessions")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = ann
        .req(Method::POST, "/api/sessions/")
        .json(&json!({"title": "  Mix notes "}))
        .send()
        .await
        .unwrap();
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["title"], "Mix notes");
    let id = session["id"].as_str().unwrap();

    let got: Value = ann
        .req(Method::GET, &format!("/api/sessions/{id}/"))
        .json_value()
        .await;
    assert_eq!(got, session);

    let res = ann
        .req(Method::PATCH, &format!("/api/sessions/{id}"))
        .json(&json!({"title": "Master"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let renamed: Value = res.json().await.unwrap();
    assert_eq!(renamed["title"], "Master");
    assert_eq!(renamed["created_at"], session["created_at"]);

    let history: Value = ann
        .req(Method::GET, &format!("/api/sessions/{id}/messages/"))
        .json_value()
        .await;
    assert_eq!(history, json!({"messages": [], "next": null}));

    let res = ann
        .req(Method::DELETE, &format!("/api/sessions/{id}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for method in [Method::GET, Method::DELETE] {
        assert_error(
            ann.req(method, &format!("/api/sessions/{id}/"))
                .send()
                .await
                .unwrap(),
            404,
            "not_found",
        )
        .await;
    }
    assert_error(
        ann.req(Method::GET, &format!("/api/sessions/{id}/messages/"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn another_users_session_is_a_plain_404() {
    use reqwest::Method;
    let server = TestServer::with(auth_options());
    let ann = api(&server, "ann@example.com").await;
    let bob = api(&server, "bob@example.com").await;
    let session: Value = ann.req(Method::POST, "/api/sessions/").json_value().await;
    let id = session["id"].as_str().unwrap();
    let path = format!("/api/sessions/{id}/");
    assert_error(
        bob.req(Method::GET, &path).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        bob.req(Method::PATCH, &path)
            .json(&json!({"title": "mine"}))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        bob.req(Method::DELETE, &path).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        bob.req(Method::GET, &format!("{path}messages/"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let listed: Value = bob.req(Method::GET, "/api/sessions/").json_value().await;
    assert_eq!(listed["sessions"], json!([]));
    // Still Ann's, untouched.
    let still: Value = ann.req(Method::GET, &path).json_value().await;
    assert_eq!(still["title"], "New session");
    assert_error(
        ann.req(Method::GET, "/api/sessions/not-a-uuid/")
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn listing_is_newest_first_with_a_cursor() {
    use reqwest::Method;
    let server = TestServer::with(auth_options());
    let ann = api(&server, "ann@example.com").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let s: Value = ann
            .req(Method::POST, "/api/sessions/")
            .json(&json!({"title": format!("s{i}")}))
            .json_value()
            .await;
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let path = match &cursor {
            Some(c) => format!("/api/sessions/?limit=2&before={c}"),
            None => "/api/sessions/?limit=2".to_owned(),
        };
        let page: Value = ann.req(Method::GET, &path).json_value().await;
        seen.extend(
            page["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned()),
        );
        cursor = page["next"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids);
    assert!(cursor.is_none());
}

#[tokio::test]
async fn bad_input_is_400_and_missing_tracks_404() {
    use reqwest::Method;
    let server = TestServer::with(auth_options());
    let ann = api(&server, "ann@example.com").await;
    let long = "x".repeat(201);
    for (body, code, status) in [
        (json!({"title": long}), "invalid_request", 400),
        (json!({"title": 5}), "invalid_request", 400),
        (json!({"nonsense": true}), "invalid_request", 400),
        (json!({"track_id": "nope"}), "invalid_request", 400),
        (
            json!({"track_id": uuid::Uuid::new_v4().to_string()}),
            "not_found",
            404,
        ),
    ] {
        let res = ann
            .req(Method::POST, "/api/sessions/")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(res, status, code).await;
    }
    let res = ann
        .req(Method::POST, "/api/sessions/")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "invalid_request").await;
    for query in ["limit=0", "limit=101", "limit=x", "before=zz"] {
        let res = ann
            .req(Method::GET, &format!("/api/sessions/?{query}"))
            .send()
            .await
            .unwrap();
        assert_error(res, 400, "invalid_request").await;
    }
    let res = client()
        .get(server.url("/api/sessions/"))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_missing").await;
    // The session count is untouched by all of it.
    let listed: Value = ann.req(Method::GET, "/api/sessions/").json_value().await;
    assert_eq!(listed["sessions"], json!([]));
}

/// A body is a JSON object: serde alone would build the request from an
/// array of its fields (`[null, null]` made a session; schemathesis found
/// it).
#[tokio::test]
async fn a_body_that_is_not_an_object_is_400() {
    let server = TestServer::with(auth_options());
    let login = signed_in(&server, "arrays@example.com").await;
    let token = login["access"].as_str().unwrap();
    for (path, body) in [
        ("/api/sessions/", "[null, null]"),
        ("/api/sessions/", "null"),
        ("/api/auth/api-keys/", r#"["laptop"]"#),
    ] {
        let res = client()
            .post(server.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let error = assert_error(res, 400, "invalid_request").await;
        assert!(
            error["error"].as_str().unwrap().contains("object"),
            "{path} {body}: {error}"
        );
    }
    let sessions = client()
        .get(server.url("/api/sessions/"))
        .bearer_auth(token)
        .json_value()
        .await;
    assert_eq!(sessions["sessions"], json!([]));
}

/// `after` is any non-negative integer: past every `seq` (even past
/// `u64::MAX`, which the document allows) the page is empty; anything else
/// is 400 (schemathesis sent a 35-digit `after`, refused before).
#[tokio::test]
async fn history_after_any_integer_is_a_page() {
    use reqwest::Method;
    let server = TestServer::with(auth_options());
    let ann = api(&server, "after@example.com").await;
    let session: Value = ann
        .req(Method::POST, "/api/sessions/")
        .json(&json!({}))
        .json_value()
        .await;
    let id = session["id"].as_str().unwrap();
    for after in [
        "0",
        "18446744073709551615",
        "19188975079501212726627563980455936",
    ] {
        let page: Value = ann
            .req(
                Method::GET,
                &format!("/api/sessions/{id}/messages/?after={after}"),
            )
            .json_value()
            .await;
        assert_eq!(page["messages"], json!([]), "after={after}: {page}");
    }
    for after in ["-1", "x", "", "1.5"] {
        let res = ann
            .req(
                Method::GET,
                &format!("/api/sessions/{id}/messages/?after={after}"),
            )
            .send()
            .await
            .unwrap();
        assert_error(res, 400, "invalid_request").await;
    }
}

/// `storage.retention`: a session nobody wrote to (no message, no rename)
/// for longer is deleted with its messages and its sockets are closed 4004,
/// as if its owner had deleted it; a session in use stays.
#[tokio::test]
async fn sessions_idle_past_the_retention_are_deleted() {
    use reqwest::Method;
    use std::time::{Duration, Instant};
    let server = TestServer::with(auth_options().env("PALAVER_STORAGE__RETENTION", "4s"));
    let ann = api(&server, "ann@example.com").await;
    let idle = new_session(&server, &ann.token).await;
    let active = new_session(&server, &ann.token).await;
    let path = format!("/ws/sessions/{idle}/?token={}", ann.token);
    let (mut ws, _) = ws_connected(&server, &path, &[]).await;
    // Keep `active` in use (a rename moves its `updated_at`) until `idle`
    // is gone: within 4 s + a quarter of it, the sweep's period.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let res = ann
            .req(Method::PATCH, &format!("/api/sessions/{active}/"))
            .json(&json!({"title": "in use"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let res = ann
            .req(Method::GET, &format!("/api/sessions/{idle}/"))
            .send()
            .await
            .unwrap();
        if res.status() == 404 {
            break;
        }
        assert_eq!(res.status(), 200);
        assert!(
            Instant::now() < deadline,
            "the idle session was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(close_code(&mut ws).await, 4004);
    let res = ann
        .req(Method::GET, &format!("/api/sessions/{idle}/messages/"))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found").await;
    let res = ann
        .req(Method::GET, &format!("/api/sessions/{active}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "palaver_sessions_expired_total 1"),
        "{metrics}"
    );
}
