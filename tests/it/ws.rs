//! WebSocket chat (API.md §7) with a real client against the real server:
//! every credential form, every close code, every event.

use serde_json::{json, Value};

use crate::support::{
    assert_error, auth_options, client, close_code, new_session, next_frame, send_json, signed_in,
    ticket, until_done, ws_connected, ws_open, JsonValue, ServerOptions, TestServer, Ws,
};

fn echo() -> ServerOptions {
    auth_options().env("PALAVER_ANALYSIS__ENGINE", "echo")
}

struct User {
    access: String,
    refresh: String,
    session: String,
}

impl User {
    /// The socket path of the user's session, with the access token.
    fn token_path(&self) -> String {
        path(&self.session, &format!("?token={}", self.access))
    }

    /// Connects with the access token; the socket once `connected` came.
    async fn connect(&self, server: &TestServer) -> (Ws, Value) {
        ws_connected(server, &self.token_path(), &[]).await
    }
}

async fn user(server: &TestServer, email: &str) -> User {
    let tokens = signed_in(server, email).await;
    let access = tokens["access"].as_str().unwrap().to_owned();
    let session = new_session(server, &access).await;
    User {
        refresh: tokens["refresh"].as_str().unwrap().to_owned(),
        access,
        session,
    }
}

/// A session's messages, oldest first (the history endpoint's body).
async fn history(server: &TestServer, token: &str, session: &str) -> Value {
    client()
        .get(server.url(&format!("/api/sessions/{session}/messages/")))
        .bearer_auth(token)
        .json_value()
        .await
}

fn path(session: &str, query: &str) -> String {
    format!("/ws/sessions/{session}/{query}")
}

async fn api_key(server: &TestServer, access: &str) -> String {
    let res = client()
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(access)
        .json(&json!({"name": "ws"}))
        .send()
        .await
        .unwrap();
    res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_credential_form_connects_and_connected_comes_first() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let key = api_key(&server, &ann.access).await;
    let t = ticket(&server, &ann.access).await;
    let bearer = format!("Bearer {}", ann.access);
    let protocol = format!("palaver.v1, bearer.{}", ann.access);
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        (path(&ann.session, &format!("?ticket={t}")), vec![]),
        (
            path(&ann.session, ""),
            vec![("sec-websocket-protocol", protocol.as_str())],
        ),
        (ann.token_path(), vec![]),
        (
            path(&ann.session, ""),
            vec![("authorization", bearer.as_str())],
        ),
        (path(&ann.session, &format!("?api_key={key}")), vec![]),
        (path(&ann.session, ""), vec![("x-api-key", key.as_str())]),
    ];
    for (i, (p, headers)) in forms.iter().enumerate() {
        let (mut ws, response) = ws_open(&server, p, headers)
            .await
            .unwrap_or_else(|e| panic!("form {i}: {e}"));
        if i == 1 {
            assert_eq!(response.headers()["sec-websocket-protocol"], "palaver.v1");
        }
        let connected = next_frame(&mut ws).await;
        assert_eq!(connected["type"], "connected", "form {i}");
        assert_eq!(connected["session_id"], ann.session.as_str());
        assert_eq!(connected["user"]["is_demo"], false);
        assert_eq!(connected["quota"], Value::Null);
        if i < 4 {
            assert!(connected["expires_at"].as_u64().unwrap() > crate::support::now());
        } else {
            assert_eq!(
                connected["expires_at"],
                Value::Null,
                "API keys do not expire"
            );
        }
    }
}

#[tokio::test]
async fn bad_credentials_of_every_form_close_4001_and_a_ticket_works_once() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let t = ticket(&server, &ann.access).await;
    let (_ws, _) = ws_connected(&server, &path(&ann.session, &format!("?ticket={t}")), &[]).await;
    let forged = format!("{}x", ann.access);
    let bad_bearer = format!("Bearer {forged}");
    let bad_protocol = format!("palaver.v1, bearer.{forged}");
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "used ticket",
            path(&ann.session, &format!("?ticket={t}")),
            vec![],
        ),
        (
            "unknown ticket",
            path(&ann.session, "?ticket=pvt_nope"),
            vec![],
        ),
        (
            "bad subprotocol token",
            path(&ann.session, ""),
            vec![("sec-websocket-protocol", bad_protocol.as_str())],
        ),
        (
            "bad ?token",
            path(&ann.session, &format!("?token={forged}")),
            vec![],
        ),
        (
            "bad Authorization",
            path(&ann.session, ""),
            vec![("authorization", bad_bearer.as_str())],
        ),
        (
            "bad ?api_key",
            path(&ann.session, "?api_key=pvk_nope"),
            vec![],
        ),
        (
            "bad X-API-Key",
            path(&ann.session, ""),
            vec![("x-api-key", "pvk_nope")],
        ),
        ("nothing", path(&ann.session, ""), vec![]),
        // Precedence: a bad ticket decides even when a good token follows.
        (
            "ticket before token",
            path(
                &ann.session,
                &format!("?ticket=pvt_nope&token={}", ann.access),
            ),
            vec![],
        ),
    ];
    for (what, p, headers) in cases {
        let (mut ws, _) = ws_open(&server, &p, &headers)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(close_code(&mut ws).await, 4001, "{what}");
    }
}

#[tokio::test]
async fn sessions_that_are_missing_or_not_yours_close_4004() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let bob = user(&server, "bob@example.com").await;
    for session in [
        uuid::Uuid::new_v4().to_string(),
        bob.session.clone(),
        "nope".into(),
    ] {
        let (mut ws, _) = ws_open(
            &server,
            &path(&session, &format!("?token={}", ann.access)),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(close_code(&mut ws).await, 4004, "{session}");
    }
}

#[tokio::test]
async fn a_disabled_user_closes_4002() {
    use crate::support::{palaver, text};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = palaver(
        dir.path(),
        &[
            "user",
            "add",
            "--email",
            "off@example.com",
            "--password-stdin",
            "--data",
            d,
        ],
        &[],
        "password-123\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = palaver(
        dir.path(),
        &[
            "apikey",
            "create",
            "--email",
            "off@example.com",
            "--name",
            "k",
            "--data",
            d,
        ],
        &[],
        "",
    );
    let key = text(&out.stdout)
        .lines()
        .find(|l| l.starts_with("pvk_"))
        .unwrap()
        .to_owned();
    // A session made while enabled.
    let server = TestServer::with(echo().data(&data));
    let session = {
        let res = client()
            .post(server.url("/api/sessions/"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(server.terminate().code(), Some(0));
    // An operator's token (a family of its own, which disabling cannot
    // revoke; disabling deletes the API key): the user check refuses it.
    let minted = palaver(
        dir.path(),
        &["token", "mint", "--email", "off@example.com", "--data", d],
        &[("PALAVER_AUTH__SECRET", crate::support::SECRET)],
        "",
    );
    let token = text(&minted.stdout).trim().to_owned();
    assert!(palaver(
        dir.path(),
        &["user", "disable", "--email", "off@example.com", "--data", d],
        &[],
        ""
    )
    .status
    .success());
    let server = TestServer::with(echo().data(&data));
    let (mut ws, _) = ws_open(&server, &path(&session, &format!("?token={token}")), &[])
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 4002);
    // The deleted API key is refused like any unknown one.
    let (mut ws, _) = ws_open(&server, &path(&session, ""), &[("x-api-key", key.as_str())])
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test]
async fn too_many_connections_close_4029() {
    let server = TestServer::with(echo().env("PALAVER_WS__MAX_CONNECTIONS_PER_USER", "2"));
    let ann = user(&server, "ann@example.com").await;
    let p = ann.token_path();
    let (_a, _) = ws_connected(&server, &p, &[]).await;
    let (b, _) = ws_connected(&server, &p, &[]).await;
    let (mut c, _) = ws_open(&server, &p, &[]).await.unwrap();
    assert_eq!(close_code(&mut c).await, 4029);
    // A place frees when a connection ends.
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (mut ws, _) = ws_open(&server, &p, &[]).await.unwrap();
        match crate::support::next_incoming(&mut ws).await {
            crate::support::Incoming::Json(v) if v["type"] == "connected" => break,
            _ => assert!(
                std::time::Instant::now() < deadline,
                "the closed connection's place was never freed"
            ),
        }
    }
}

#[tokio::test]
async fn foreign_origins_close_1008() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let p = ann.token_path();
    let (mut ws, _) = ws_open(&server, &p, &[("origin", "http://evil.example")])
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1008);
    let own = server.base.clone();
    ws_connected(&server, &p, &[("origin", own.as_str())]).await;
    drop(server);

    let server = TestServer::with(echo().env(
        "PALAVER_SERVER__ALLOWED_ORIGINS",
        "[\"https://chat.example.com\"]",
    ));
    let ann = user(&server, "ann@example.com").await;
    let p = ann.token_path();
    ws_connected(&server, &p, &[("origin", "https://chat.example.com")]).await;
    for origin in [
        "https://chat.example.com.evil.io",
        "http://chat.example.com",
        server.base.as_str(),
    ] {
        let (mut ws, _) = ws_open(&server, &p, &[("origin", origin)]).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1008, "{origin}");
    }
}

#[tokio::test]
async fn reject_with_http_answers_without_upgrading() {
    use tokio_tungstenite::tungstenite::Error;
    let server = TestServer::with(
        echo()
            .env("PALAVER_WS__REJECT_WITH", "http")
            .env("PALAVER_WS__MAX_CONNECTIONS_PER_USER", "1"),
    );
    let ann = user(&server, "ann@example.com").await;
    let good = ann.token_path();
    let _held = ws_connected(&server, &good, &[]).await;
    let cases = [
        (
            path(&ann.session, "?token=bad"),
            vec![],
            401u16,
            "token_invalid",
        ),
        (
            path(
                &uuid::Uuid::new_v4().to_string(),
                &format!("?token={}", ann.access),
            ),
            vec![],
            404,
            "not_found",
        ),
        (good.clone(), vec![], 429, "rate_limited"),
        (
            good.clone(),
            vec![("origin", "http://evil.example")],
            403,
            "forbidden",
        ),
    ];
    for (p, headers, status, code) in cases {
        match ws_open(&server, &p, &headers).await {
            Err(Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{p}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["code"], code);
            }
            Err(e) => panic!("{p}: {e}"),
            Ok(_) => panic!("{p}: upgraded"),
        }
    }
}

#[tokio::test]
async fn a_question_streams_message_tokens_done_and_is_stored() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    let question = "is the low end of this mix too heavy";
    send_json(
        &mut ws,
        json!({"type": "question", "text": question, "id": "c-1"}),
    )
    .await;
    let ack = next_frame(&mut ws).await;
    assert_eq!(ack["type"], "message");
    assert_eq!(ack["client_id"], "c-1");
    assert_eq!(ack["message"]["role"], "user");
    assert_eq!(ack["message"]["text"], question);
    assert_eq!(ack["message"]["seq"], 1);
    let frames = until_done(&mut ws).await;
    let (done, tokens) = frames.split_last().unwrap();
    let reply_id = done["message_id"].as_str().unwrap();
    assert!(
        tokens
            .iter()
            .all(|t| t["type"] == "token" && t["message_id"] == reply_id),
        "{tokens:?}"
    );
    let text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(text, question);
    assert_eq!(done["status"], "complete");
    assert_eq!(done["usage"]["tokens"], 9);
    assert!(done["usage"]["total_ms"].is_u64() && done["usage"]["first_token_ms"].is_u64());

    // History holds both, oldest first.
    let history: Value = history(&server, &ann.access, &ann.session).await;
    let msgs = history["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1]["id"], reply_id);
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["status"], "complete");
    assert_eq!(msgs[1]["text"], question);
}

#[tokio::test]
async fn ping_refresh_invalid_messages_and_stream_in_progress() {
    let server = TestServer::with(echo().env("PALAVER_ANALYSIS__TOKEN_DELAY", "50ms"));
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await, json!({"type": "pong"}));

    for bad in [
        json!({"type": "shout"}),
        json!({"text": "x"}),
        json!([1, 2]),
    ] {
        send_json(&mut ws, bad).await;
        let err = next_frame(&mut ws).await;
        assert_eq!(
            (err["type"].as_str(), err["code"].as_str()),
            (Some("error"), Some("invalid_message"))
        );
    }
    {
        use futures_util::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::text("not json"))
            .await
            .unwrap();
    }
    assert_eq!(next_frame(&mut ws).await["code"], "invalid_message");

    // Refresh with a fresh token of the same user; a bad one keeps the old.
    let fresh = crate::support::login(&server, "ann@example.com", "correct horse battery").await;
    send_json(
        &mut ws,
        json!({"type": "refresh", "token": fresh["access"]}),
    )
    .await;
    let refreshed = next_frame(&mut ws).await;
    assert_eq!(refreshed["type"], "refreshed");
    assert!(refreshed["expires_at"].as_u64().is_some());
    send_json(&mut ws, json!({"type": "refresh", "token": "garbage"})).await;
    assert_eq!(next_frame(&mut ws).await["code"], "token_invalid");
    let bob = crate::support::signed_in(&server, "bob@example.com").await;
    send_json(&mut ws, json!({"type": "refresh", "token": bob["access"]})).await;
    assert_eq!(next_frame(&mut ws).await["code"], "token_invalid");

    // A second question while one streams.
    send_json(
        &mut ws,
        json!({"type": "question", "text": "one two three four five six"}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    send_json(&mut ws, json!({"type": "question", "text": "again"})).await;
    let mut saw_in_progress = false;
    loop {
        let f = next_frame(&mut ws).await;
        if f["type"] == "error" {
            assert_eq!(f["code"], "stream_in_progress");
            saw_in_progress = true;
        }
        if f["type"] == "done" {
            break;
        }
    }
    assert!(saw_in_progress);
    // Still open and working.
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn cancel_ends_the_reply_cancelled() {
    let server = TestServer::with(echo().env("PALAVER_ANALYSIS__TOKEN_DELAY", "100ms"));
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    let long = vec!["word"; 200].join(" ");
    send_json(&mut ws, json!({"type": "question", "text": long})).await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    assert_eq!(next_frame(&mut ws).await["type"], "token");
    send_json(&mut ws, json!({"type": "cancel"})).await;
    let frames = until_done(&mut ws).await;
    let done = frames.last().unwrap();
    assert_eq!(done["status"], "cancelled");
    assert!(done["usage"]["tokens"].as_u64().unwrap() < 200);
    let history: Value = history(&server, &ann.access, &ann.session).await;
    assert_eq!(history["messages"][1]["status"], "cancelled");
}

#[tokio::test]
async fn question_too_long_and_busy_pool() {
    let server = TestServer::with(
        echo()
            .env("PALAVER_ANALYSIS__TOKEN_DELAY", "100ms")
            .env("PALAVER_ANALYSIS__MAX_STREAMS", "2")
            .env("PALAVER_ANALYSIS__MAX_QUESTION_CHARS", "300"),
    );
    let ann = user(&server, "ann@example.com").await;
    let p = |s: &str| path(s, &format!("?token={}", ann.access));
    let (mut a, _) = ws_connected(&server, &p(&ann.session), &[]).await;
    send_json(&mut a, json!({"type": "question", "text": "x".repeat(301)})).await;
    assert_eq!(next_frame(&mut a).await["code"], "question_too_long");

    let long = vec!["word"; 50].join(" ");
    // A and B stream, C finds the pool full (two places).
    send_json(&mut a, json!({"type": "question", "text": long})).await;
    assert_eq!(next_frame(&mut a).await["type"], "message");
    assert_eq!(next_frame(&mut a).await["type"], "token");
    let s2 = new_session(&server, &ann.access).await;
    let (mut b, _) = ws_connected(&server, &p(&s2), &[]).await;
    send_json(&mut b, json!({"type": "question", "text": long})).await;
    assert_eq!(next_frame(&mut b).await["type"], "message");
    assert_eq!(next_frame(&mut b).await["type"], "token");
    let s3 = new_session(&server, &ann.access).await;
    let (mut c, _) = ws_connected(&server, &p(&s3), &[]).await;
    send_json(&mut c, json!({"type": "question", "text": "hello"})).await;
    let busy = next_frame(&mut c).await;
    assert_eq!(
        (busy["type"].as_str(), busy["code"].as_str()),
        (Some("error"), Some("busy"))
    );
    // Nothing was stored for the refused question.
    let history: Value = history(&server, &ann.access, &s3).await;
    assert_eq!(history["messages"], json!([]));
    send_json(&mut a, json!({"type": "cancel"})).await;
    send_json(&mut b, json!({"type": "cancel"})).await;
}

#[tokio::test]
async fn websocket_questions_are_counted_for_demo_users() {
    let server = TestServer::with(echo());
    let demo: Value = client()
        .post(server.url("/api/auth/demo/"))
        .json_value()
        .await;
    let access = demo["access"].as_str().unwrap().to_owned();
    let session = new_session(&server, &access).await; // counted: 1 of 5
    let (mut ws, connected) =
        ws_connected(&server, &path(&session, &format!("?token={access}")), &[]).await;
    assert_eq!(
        connected["quota"],
        json!({"request_count": 1, "request_limit": 5})
    );
    assert_eq!(connected["user"]["is_demo"], true);
    for n in 2..=5 {
        send_json(&mut ws, json!({"type": "question", "text": "hi there"})).await;
        assert_eq!(next_frame(&mut ws).await["type"], "message");
        let quota = next_frame(&mut ws).await;
        assert_eq!(quota["type"], "quota");
        assert_eq!(
            (
                quota["request_count"].as_u64(),
                quota["request_limit"].as_u64()
            ),
            (Some(n), Some(5))
        );
        assert!(quota["reset_in"].as_u64().unwrap() <= 900);
        until_done(&mut ws).await;
    }
    send_json(&mut ws, json!({"type": "question", "text": "one more"})).await;
    let refused = next_frame(&mut ws).await;
    assert_eq!(refused["code"], "quota_exceeded");
    assert_eq!(
        (
            refused["request_count"].as_u64(),
            refused["request_limit"].as_u64()
        ),
        (Some(5), Some(5))
    );
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        next_frame(&mut ws).await["type"],
        "pong",
        "the socket stays open"
    );
}

#[tokio::test]
async fn binary_and_oversized_frames_close_1003_and_1009() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::with(echo().env("PALAVER_WS__MAX_MESSAGE_BYTES", "1024"));
    let ann = user(&server, "ann@example.com").await;
    let p = ann.token_path();
    let (mut ws, _) = ws_connected(&server, &p, &[]).await;
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1003);
    let (mut ws, _) = ws_connected(&server, &p, &[]).await;
    let big = json!({"type": "question", "text": "x".repeat(2000)}).to_string();
    ws.send(Message::text(big)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
}

#[tokio::test]
async fn logout_and_session_deletion_close_open_sockets() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let other = crate::support::login(&server, "ann@example.com", "correct horse battery").await;
    let (mut ws, _) = ann.connect(&server).await;
    let other_access = other["access"].as_str().unwrap();
    let (mut survivor, _) = ws_connected(
        &server,
        &path(&ann.session, &format!("?token={other_access}")),
        &[],
    )
    .await;
    let res = client()
        .post(server.url("/api/auth/logout/"))
        .json(&json!({"refresh": ann.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(close_code(&mut ws).await, 4001);
    // Another family's socket is untouched...
    send_json(&mut survivor, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut survivor).await["type"], "pong");
    // ...until its session is deleted.
    let res = client()
        .delete(server.url(&format!("/api/sessions/{}/", ann.session)))
        .bearer_auth(other_access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(close_code(&mut survivor).await, 4004);
}

#[tokio::test]
async fn refresh_reuse_closes_the_familys_sockets() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    let refresh = |token: String| {
        client()
            .post(server.url("/api/auth/refresh/"))
            .json(&json!({"refresh": token}))
            .send()
    };
    assert_eq!(refresh(ann.refresh.clone()).await.unwrap().status(), 200);
    assert_error(
        refresh(ann.refresh.clone()).await.unwrap(),
        401,
        "token_revoked",
    )
    .await;
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test]
async fn an_expiring_credential_warns_then_closes_4001() {
    let server = TestServer::with(
        echo()
            .env("PALAVER_AUTH__ACCESS_TTL", "3s")
            .env("PALAVER_AUTH__LEEWAY_SECONDS", "0")
            .env("PALAVER_WS__EXPIRY_WARNING", "2s"),
    );
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, connected) = ann.connect(&server).await;
    assert!(connected["expires_at"].as_u64().unwrap() <= crate::support::now() + 3);
    let warning = next_frame(&mut ws).await;
    assert_eq!(warning["type"], "token_expiring");
    assert!(warning["expires_in"].as_u64().unwrap() <= 2);
    assert_eq!(close_code(&mut ws).await, 4001);
}

/// A question sent just after the credential's expiry is never admitted,
/// even if the expiry timer has not run yet: the socket closes 4001.
#[tokio::test]
async fn a_question_after_expiry_is_not_admitted() {
    let server = TestServer::with(
        echo()
            .env("PALAVER_AUTH__ACCESS_TTL", "2s")
            .env("PALAVER_AUTH__LEEWAY_SECONDS", "0")
            .env("PALAVER_WS__EXPIRY_WARNING", "1s"),
    );
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, connected) = ann.connect(&server).await;
    let expires_at = connected["expires_at"].as_u64().unwrap();
    // The clock is the subject here: send 20 ms after the expiry instant.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(expires_at * 1000 + 20);
    if let Ok(wait) = at.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    send_json(&mut ws, json!({"type": "question", "text": "too late"})).await;
    loop {
        match crate::support::next_incoming(&mut ws).await {
            crate::support::Incoming::Json(frame) => assert_eq!(
                frame["type"], "token_expiring",
                "nothing but the warning before the close: {frame}"
            ),
            crate::support::Incoming::Close(code, _) => {
                assert_eq!(code, 4001);
                break;
            }
            crate::support::Incoming::Ended => panic!("ended without a close frame"),
        }
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_1001_and_exits_zero() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    let pid = server.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(close_code(&mut ws).await, 1001);
    assert_eq!(server.terminate_wait().code(), Some(0));
}

#[tokio::test]
async fn a_reply_finishes_and_is_stored_after_the_socket_drops() {
    let server = TestServer::with(echo().env("PALAVER_ANALYSIS__TOKEN_DELAY", "20ms"));
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    let question = vec!["word"; 30].join(" ");
    send_json(&mut ws, json!({"type": "question", "text": question})).await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    assert_eq!(next_frame(&mut ws).await["type"], "token");
    drop(ws);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let history: Value = history(&server, &ann.access, &ann.session).await;
        let reply = &history["messages"][1];
        if reply["status"] == "complete" {
            assert_eq!(reply["text"], question.as_str());
            break;
        }
        assert_eq!(reply["status"], "streaming");
        assert!(
            std::time::Instant::now() < deadline,
            "the reply never completed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A server whose outbox bound (512 KiB) holds the `message` echoing a
/// 300 KB question, so that it is the reply's tokens that overflow it.
fn flood_config() -> ServerOptions {
    echo()
        .env("PALAVER_WS__MAX_BUFFERED_BYTES", "524288")
        .env("PALAVER_WS__MAX_MESSAGE_BYTES", "2000000")
        .env("PALAVER_ANALYSIS__MAX_QUESTION_CHARS", "2000000")
}

/// Asks a question of `FLOOD_WORDS` words (about 12 MB of token frames, far
/// more than the socket buffers and the outbox hold) and, reading nothing,
/// waits until the server reports the slow reader.
async fn flood_until_slow_reader(server: &TestServer, ws: &mut Ws) {
    let question = vec!["w"; FLOOD_WORDS].join(" ");
    send_json(ws, json!({"type": "question", "text": question})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !server.output().contains("slow reader") {
        assert!(
            std::time::Instant::now() < deadline,
            "never closed:\n{}",
            server.output()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

const FLOOD_WORDS: usize = 150_000;

#[tokio::test]
async fn a_reader_that_stops_reading_is_closed_at_the_buffer_bound() {
    let server = TestServer::with(flood_config());
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    flood_until_slow_reader(&server, &mut ws).await;
    // Now read everything: the tokens that were buffered, then 1008.
    let mut tokens = 0usize;
    let code = loop {
        match crate::support::next_incoming(&mut ws).await {
            crate::support::Incoming::Json(f) => {
                if f["type"] == "token" {
                    tokens += 1;
                }
            }
            crate::support::Incoming::Close(code, _) => break code,
            crate::support::Incoming::Ended => panic!("no close frame"),
        }
    };
    assert_eq!(code, 1008);
    assert!(tokens > 0, "the reply had started streaming");
    assert!(
        tokens < FLOOD_WORDS,
        "the server dropped what it could not send ({tokens} of {FLOOD_WORDS} arrived)"
    );
}

/// The server-side TCP socket of a connection from `client_port` to
/// `server_port` exists (from /proc/net/tcp).
fn server_socket_exists(server_port: u16, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{server_port:04X}");
    let remote = format!(":{client_port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 2 && fields[1].ends_with(&local) && fields[2].ends_with(&remote)
    })
}

#[tokio::test]
async fn a_reader_that_never_reads_again_loses_its_connection() {
    // The kernel drops a connection whose peer acknowledges nothing for
    // `ws.idle_timeout` (TCP_USER_TIMEOUT), even one that still answers
    // zero-window probes: else it would outlive its actor forever.
    let server = TestServer::with(
        flood_config()
            .env("PALAVER_WS__PING_INTERVAL", "500ms")
            .env("PALAVER_WS__IDLE_TIMEOUT", "2s"),
    );
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    let client_port = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap().port(),
        _ => unreachable!("plain ws://"),
    };
    let server_port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    assert!(server_socket_exists(server_port, client_port));
    // Never read again.
    flood_until_slow_reader(&server, &mut ws).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server_socket_exists(server_port, client_port) {
        assert!(
            std::time::Instant::now() < deadline,
            "the server still holds the connection of a client that reads nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(ws);
}

#[tokio::test]
async fn too_many_frames_are_rate_limited_then_closed_1008() {
    let server = TestServer::with(echo().env("PALAVER_WS__MAX_MESSAGES_PER_MINUTE", "5"));
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    for _ in 0..5 {
        send_json(&mut ws, json!({"type": "ping"})).await;
        assert_eq!(next_frame(&mut ws).await["type"], "pong");
    }
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await["code"], "rate_limited");
    for _ in 0..10 {
        send_json(&mut ws, json!({"type": "ping"})).await;
    }
    assert_eq!(close_code(&mut ws).await, 1008);
}

#[tokio::test]
async fn the_builtin_engine_announces_tools() {
    let server = TestServer::with(auth_options());
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    send_json(
        &mut ws,
        json!({"type": "question", "text": "How many messages so far?"}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    let frames = until_done(&mut ws).await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[..4],
        ["tool_call", "tool_result", "tool_call", "tool_result"]
    );
    assert_eq!(frames[0]["tool"], "message_count");
    assert_eq!(
        frames[1]["result"],
        json!({"messages": 1, "questions": 1, "replies": 0})
    );
    assert_eq!(frames[2]["tool"], "session_summary");
    let text: String = frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(
        text.starts_with("This conversation has 1 message"),
        "{text}"
    );
    // Whole answers over HTTP run the same analysis.
    let res = client()
        .post(server.url(&format!("/api/sessions/{}/messages/", ann.session)))
        .bearer_auth(&ann.access)
        .json(&json!({"text": "count the words"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let whole: Value = res.json().await.unwrap();
    assert_eq!(whole["question"]["text"], "count the words");
    assert_eq!(whole["reply"]["status"], "complete");
    assert_eq!(whole["reply"]["tools"][0]["tool"], "word_count");
    assert!(whole["reply"]["text"].as_str().unwrap().contains("words"));
}

#[tokio::test]
async fn silent_connections_are_dropped_and_answering_ones_kept() {
    use std::time::{Duration, Instant};
    let server = TestServer::with(
        echo()
            .env("PALAVER_WS__PING_INTERVAL", "100ms")
            .env("PALAVER_WS__IDLE_TIMEOUT", "400ms")
            .env("PALAVER_WS__MAX_CONNECTIONS_PER_USER", "2"),
    );
    let ann = user(&server, "ann@example.com").await;
    let p = ann.token_path();
    // A client that keeps reading answers the server's pings (tungstenite
    // does it while polled) and stays connected for many idle timeouts.
    let (mut lively, _) = ws_connected(&server, &p, &[]).await;
    let until = Instant::now() + Duration::from_millis(1500);
    {
        use futures_util::StreamExt;
        while let Ok(item) = tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            lively.next(),
        )
        .await
        {
            match item {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => {}
                other => panic!("unexpected while idle: {other:?}"),
            }
        }
    }
    send_json(&mut lively, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut lively).await["type"], "pong");

    // A client that reads nothing never answers a ping: dropped, and its
    // place freed (a third connection fits in the limit of two).
    let (silent, _) = ws_connected(&server, &p, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.output().contains("idle timeout") {
        assert!(Instant::now() < deadline, "never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut third, _) = ws_connected(&server, &p, &[]).await;
    send_json(&mut third, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut third).await["type"], "pong");
    drop(silent);
}

#[tokio::test]
async fn replies_cut_by_a_crash_or_a_shutdown_are_stored_failed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = || {
        echo()
            .env("PALAVER_ANALYSIS__TOKEN_DELAY", "200ms")
            .env("PALAVER_SERVER__SHUTDOWN_GRACE", "1s")
            .data(&data)
    };
    let long = vec!["word"; 100].join(" ");

    // A crash mid-reply: at the next start the reply is `failed`.
    let server = TestServer::with(options());
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    send_json(&mut ws, json!({"type": "question", "text": long})).await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    assert_eq!(next_frame(&mut ws).await["type"], "token");
    server.kill();
    let server = TestServer::with(options());
    let h = history(&server, &ann.access, &ann.session).await;
    assert_eq!(h["messages"][1]["status"], "failed");

    // A shutdown mid-reply: the grace passes, the reply is stored `failed`
    // with what was said, the socket gets 1001, the process exits 0.
    let (mut ws, _) = ann.connect(&server).await;
    send_json(&mut ws, json!({"type": "question", "text": long})).await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    assert_eq!(next_frame(&mut ws).await["type"], "token");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut last = Value::Null;
    let code = loop {
        match crate::support::next_incoming(&mut ws).await {
            crate::support::Incoming::Json(f) => last = f,
            crate::support::Incoming::Close(code, _) => break code,
            crate::support::Incoming::Ended => panic!("no close frame"),
        }
    };
    assert_eq!(code, 1001);
    assert_eq!(last["type"], "done");
    assert_eq!(last["status"], "failed");
    assert_eq!(server.terminate_wait().code(), Some(0));
    let server = TestServer::with(options());
    let h = history(&server, &ann.access, &ann.session).await;
    let reply = &h["messages"][3];
    assert_eq!(reply["status"], "failed");
    assert!(
        reply["text"].as_str().unwrap().starts_with("word"),
        "what was said is kept: {reply}"
    );
}

#[tokio::test]
async fn deleting_an_api_key_closes_its_sockets_and_refresh_follows_the_new_family() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let key = api_key(&server, &ann.access).await;
    let (mut by_key, _) = ws_connected(
        &server,
        &path(&ann.session, ""),
        &[("x-api-key", key.as_str())],
    )
    .await;
    // A ticket the key asked for, not yet used when the key goes.
    let pending: Value = client()
        .post(server.url("/api/auth/ws-ticket/"))
        .header("x-api-key", key.as_str())
        .json_value()
        .await;
    let pending = pending["ticket"].as_str().unwrap();
    let keys: Value = client()
        .get(server.url("/api/auth/api-keys/"))
        .bearer_auth(&ann.access)
        .json_value()
        .await;
    let id = keys["api_keys"][0]["id"].as_str().unwrap();
    let res = client()
        .delete(server.url(&format!("/api/auth/api-keys/{id}/")))
        .bearer_auth(&ann.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(close_code(&mut by_key).await, 4001);
    let (mut late, _) = ws_open(
        &server,
        &path(&ann.session, &format!("?ticket={pending}")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        close_code(&mut late).await,
        4001,
        "the key's ticket went with it"
    );

    // A socket refreshed in-band with another login's token follows that
    // family: logging the new family out closes it.
    let (mut ws, _) = ann.connect(&server).await;
    let other = crate::support::login(&server, "ann@example.com", "correct horse battery").await;
    send_json(
        &mut ws,
        json!({"type": "refresh", "token": other["access"]}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["type"], "refreshed");
    let res = client()
        .post(server.url("/api/auth/logout/"))
        .json(&json!({"refresh": other["refresh"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test]
async fn pings_count_against_the_rate_limit() {
    use futures_util::SinkExt;
    let server = TestServer::with(echo().env("PALAVER_WS__MAX_MESSAGES_PER_MINUTE", "5"));
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    for _ in 0..30 {
        if ws
            .send(tokio_tungstenite::tungstenite::Message::Ping(
                vec![0u8; 8].into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, 1008);
}

#[tokio::test]
async fn a_deleted_users_token_closes_4002() {
    use crate::support::{palaver, text};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let server = TestServer::with(echo().data(&data));
    let ann = user(&server, "ann@example.com").await;
    let _bob = user(&server, "bob@example.com").await;
    assert_eq!(server.terminate().code(), Some(0));
    let out = palaver(
        dir.path(),
        &["user", "delete", "--email", "ann@example.com", "--data", d],
        &[],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let server = TestServer::with(echo().data(&data));
    let (mut ws, _) = ws_open(&server, &ann.token_path(), &[]).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 4002);
    // Her sessions went with her.
    let store_check = client()
        .get(server.url("/api/sessions/"))
        .bearer_auth(&ann.access)
        .send()
        .await
        .unwrap();
    assert_eq!(store_check.status(), 401);
}
