//! The protocol once connected: questions, replies, cancel, refresh, limits, shutdown.

use super::*;

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
