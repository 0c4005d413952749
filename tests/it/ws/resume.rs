//! Positions, resume and several sockets (API.md §7): `seq` on every event,
//! `resume` and `?resume=`, fan-out to every socket of a session.

use super::*;
use crate::support::{next_incoming, Incoming};

/// Echo, paced so that a reply lasts long enough to leave it mid-way.
fn paced() -> ServerOptions {
    echo().env("PALAVER_ANALYSIS__TOKEN_DELAY", "20ms")
}

/// A question of `n` words: its echo is `n` tokens.
fn words(n: usize) -> String {
    (1..=n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads until `tokens` tokens arrived (at least one, for the reply's id);
/// the reply id and the tokens.
async fn read_tokens(ws: &mut Ws, tokens: usize) -> (String, Vec<Value>) {
    let mut got = Vec::new();
    while got.len() < tokens.max(1) {
        let frame = next_frame(ws).await;
        assert_ne!(frame["type"], "done", "the reply ended early: {frame}");
        if frame["type"] == "token" {
            got.push(frame);
        }
    }
    (got[0]["message_id"].as_str().unwrap().to_owned(), got)
}

/// Sends `resume` and reads `resumed` and everything up to `done`.
async fn resume(ws: &mut Ws, id: &str, after: u64) -> (Value, Vec<Value>) {
    send_json(
        ws,
        json!({"type": "resume", "message_id": id, "after": after}),
    )
    .await;
    resumed(ws).await
}

async fn resumed(ws: &mut Ws) -> (Value, Vec<Value>) {
    let first = next_frame(ws).await;
    assert_eq!(first["type"], "resumed", "{first}");
    (first, until_done(ws).await)
}

/// The text of the session's last message (the reply), once it is stored.
async fn stored_reply(server: &TestServer, u: &User) -> Value {
    for _ in 0..200 {
        let h = history(server, &u.access, &u.session).await;
        let last = h["messages"].as_array().unwrap().last().unwrap().clone();
        if last["status"] != "streaming" {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the reply was never stored");
}

/// Every numbered frame's seq, in order; the token text concatenated.
fn seqs_and_text(frames: &[Value]) -> (Vec<u64>, String) {
    let mut seqs = Vec::new();
    let mut text = String::new();
    for f in frames {
        if let Some(seq) = f.get("seq").and_then(Value::as_u64) {
            if f["type"] != "message" {
                seqs.push(seq);
            }
        }
        if f["type"] == "token" {
            text.push_str(f["text"].as_str().unwrap());
        }
    }
    (seqs, text)
}

/// Leaves a 12-token reply after `k` tokens (or, `None`, after one token
/// and once it finished), resumes on a new socket and checks the text and
/// the positions.
async fn leave_and_resume(server: &TestServer, u: &User, k: Option<usize>) {
    let (mut ws, _) = u.connect(server).await;
    send_json(&mut ws, json!({"type": "question", "text": words(12)})).await;
    let (id, seen) = read_tokens(&mut ws, k.unwrap_or(1)).await;
    drop(ws);
    let after = k.unwrap_or(1) as u64;
    if k.is_none() {
        stored_reply(server, u).await;
    }
    let (mut ws, _) = u.connect(server).await;
    let (head, rest) = resume(&mut ws, &id, after).await;
    assert_eq!(head["message_id"], id.as_str());
    assert_eq!(head["after"], after);
    // (Once stored, a reply may still be live for the moment until its
    // `done` is sent: either way, what follows is the same.)
    let done = rest.last().unwrap();
    assert_eq!(done["status"], "complete");
    assert_eq!(done["last_seq"], 12);
    let (seqs, text) = seqs_and_text(&rest);
    assert_eq!(seqs, (after + 1..=12).collect::<Vec<_>>(), "k = {k:?}");
    let (_, before) = seqs_and_text(&seen[..after as usize]);
    let stored = stored_reply(server, u).await;
    assert_eq!(format!("{before}{text}"), stored["text"].as_str().unwrap());
    assert_eq!(stored["id"], id.as_str());
}

#[tokio::test]
async fn events_are_numbered_and_done_says_the_last() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    send_json(&mut ws, json!({"type": "question", "text": words(5)})).await;
    let frames = until_done(&mut ws).await;
    let (seqs, text) = seqs_and_text(&frames);
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(text, words(5));
    assert_eq!(frames.last().unwrap()["last_seq"], 5);
}

#[tokio::test]
async fn a_reply_left_after_k_events_resumes_exactly_once() {
    let server = TestServer::with(paced());
    let ann = user(&server, "ann@example.com").await;
    // k = 0 (the id known from the first event), the middle, the last,
    // and once the reply finished while away.
    for k in [Some(0), Some(6), Some(12), None] {
        leave_and_resume(&server, &ann, k).await;
    }
}

#[tokio::test]
async fn resume_at_connect_and_on_another_socket_of_the_user() {
    let server = TestServer::with(paced());
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    send_json(&mut ws, json!({"type": "question", "text": words(10)})).await;
    let (id, _) = read_tokens(&mut ws, 3).await;
    // Another socket (a ticket, not the token) resumes at connect while
    // the first still follows the reply.
    let t = ticket(&server, &ann.access).await;
    let (mut other, _) = ws_connected(
        &server,
        &path(&ann.session, &format!("?ticket={t}&resume={id}:3")),
        &[],
    )
    .await;
    let (head, rest) = resumed(&mut other).await;
    assert_eq!(head["after"], 3);
    let (seqs, _) = seqs_and_text(&rest);
    assert_eq!(seqs, (4..=10).collect::<Vec<_>>());
    // The first socket saw it all, once.
    let first = until_done(&mut ws).await;
    assert_eq!(first.last().unwrap()["last_seq"], 10);
    // A malformed `?resume=` is told, the socket stays.
    let (mut bad, _) = ws_connected(
        &server,
        &path(
            &ann.session,
            &format!("?token={}&resume=nonsense", ann.access),
        ),
        &[],
    )
    .await;
    let err = next_frame(&mut bad).await;
    assert_eq!(err["code"], "invalid_message", "{err}");
}

#[tokio::test]
async fn two_sockets_on_one_session_see_the_same_reply_and_either_can_cancel() {
    let server = TestServer::with(paced());
    let ann = user(&server, "ann@example.com").await;
    let (mut one, _) = ann.connect(&server).await;
    let (mut two, _) = ann.connect(&server).await;
    send_json(
        &mut one,
        json!({"type": "question", "text": words(8), "id": "c1"}),
    )
    .await;
    let not_quota = |frames: Vec<Value>| -> Vec<Value> {
        frames
            .into_iter()
            .filter(|f| f["type"] != "quota")
            .collect()
    };
    let a = not_quota(until_done(&mut one).await);
    let b = not_quota(until_done(&mut two).await);
    assert_eq!(a, b);
    assert_eq!(a[0]["type"], "message");
    assert_eq!(a[0]["client_id"], "c1");
    // A question on the second socket while the first's streams: refused.
    send_json(&mut one, json!({"type": "question", "text": words(200)})).await;
    let (_, _) = read_tokens(&mut two, 1).await;
    send_json(&mut two, json!({"type": "question", "text": "hi"})).await;
    loop {
        let f = next_frame(&mut two).await;
        if f["type"] == "error" {
            assert_eq!(f["code"], "stream_in_progress");
            break;
        }
    }
    // Cancel from the second socket stops it for both.
    send_json(&mut two, json!({"type": "cancel"})).await;
    let one_done = until_done(&mut one).await;
    assert_eq!(one_done.last().unwrap()["status"], "cancelled");
    let two_done = until_done(&mut two).await;
    assert_eq!(two_done.last().unwrap()["status"], "cancelled");
    assert_eq!(
        one_done.last().unwrap()["last_seq"],
        two_done.last().unwrap()["last_seq"]
    );
}

#[tokio::test]
async fn a_socket_that_joins_mid_reply_gets_nothing_until_it_resumes() {
    let server = TestServer::with(paced());
    let ann = user(&server, "ann@example.com").await;
    let (mut one, _) = ann.connect(&server).await;
    send_json(&mut one, json!({"type": "question", "text": words(6)})).await;
    let (id, _) = read_tokens(&mut one, 1).await;
    let (mut late, _) = ann.connect(&server).await;
    until_done(&mut one).await;
    // Nothing of it came to the late socket: its next frame answers a ping.
    send_json(&mut late, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut late).await["type"], "pong");
    let (_, rest) = resume(&mut late, &id, 0).await;
    assert_eq!(seqs_and_text(&rest).0, (1..=6).collect::<Vec<_>>());
}

#[tokio::test]
async fn another_users_or_sessions_reply_is_unavailable_and_reveals_nothing() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let bob = user(&server, "bob@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    send_json(&mut ws, json!({"type": "question", "text": words(3)})).await;
    let frames = until_done(&mut ws).await;
    let id = frames.last().unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let question_id = frames[0]["message"]["id"].as_str().unwrap().to_owned();
    let other_session = new_session(&server, &ann.access).await;
    let (bobs, _) = bob.connect(&server).await;
    let (anns_other, _) = ws_connected(
        &server,
        &path(&other_session, &format!("?token={}", ann.access)),
        &[],
    )
    .await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut answers = Vec::new();
    let mut sockets = [bobs, anns_other, ws];
    for (i, id) in [
        (0, id.as_str()),
        (1, id.as_str()),
        (2, unknown.as_str()),
        (2, "not-an-id"),
        (2, question_id.as_str()),
    ] {
        let ws = &mut sockets[i];
        send_json(ws, json!({"type": "resume", "message_id": id, "after": 0})).await;
        let err = next_frame(ws).await;
        assert_eq!(err["code"], "resume_unavailable", "{err}");
        answers.push(err["message"].clone());
    }
    // One answer for every reason.
    answers.dedup();
    assert_eq!(answers.len(), 1);
}

#[tokio::test]
async fn past_the_window_a_reply_is_unavailable() {
    let server = TestServer::with(echo().env("PALAVER_WS__RESUME_WINDOW", "1s"));
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    send_json(&mut ws, json!({"type": "question", "text": words(3)})).await;
    let frames = until_done(&mut ws).await;
    let id = frames.last().unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        send_json(
            &mut ws,
            json!({"type": "resume", "message_id": id, "after": 0}),
        )
        .await;
        let first = next_frame(&mut ws).await;
        if first["type"] == "error" {
            assert_eq!(first["code"], "resume_unavailable");
            break;
        }
        assert_eq!(first["type"], "resumed");
        until_done(&mut ws).await;
        assert!(std::time::Instant::now() < deadline, "never swept");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn after_a_restart_finished_replies_replay_and_interrupted_ones_fail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::with(paced().data(&data));
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    send_json(&mut ws, json!({"type": "question", "text": words(4)})).await;
    let finished = until_done(&mut ws).await;
    let finished_id = finished.last().unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    send_json(&mut ws, json!({"type": "question", "text": words(400)})).await;
    let (cut_id, _) = read_tokens(&mut ws, 2).await;
    server.kill();
    let server = TestServer::with(paced().data(&data));
    let (mut ws, _) = ann.connect(&server).await;
    let (head, rest) = resume(&mut ws, &finished_id, 0).await;
    assert_eq!(head["live"], false);
    // Replayed exactly as first sent.
    let first_events: Vec<&Value> = finished
        .iter()
        .filter(|f| f.get("seq").is_some() && f["type"] != "message")
        .collect();
    let replayed: Vec<&Value> = rest.iter().filter(|f| f.get("seq").is_some()).collect();
    assert_eq!(first_events, replayed);
    assert_eq!(rest.last().unwrap(), finished.last().unwrap());
    let (_, rest) = resume(&mut ws, &cut_id, 2).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["status"], "failed");
    assert_eq!(rest[0]["message_id"], cut_id.as_str());
}

#[tokio::test]
async fn a_slow_reader_is_closed_while_the_other_socket_completes() {
    let server = TestServer::with(
        echo()
            .env("PALAVER_WS__MAX_BUFFERED_BYTES", "4194304")
            .env("PALAVER_WS__MAX_MESSAGE_BYTES", "2000000")
            .env("PALAVER_ANALYSIS__MAX_QUESTION_CHARS", "2000000"),
    );
    let ann = user(&server, "ann@example.com").await;
    let (mut slow, _) = ann.connect(&server).await;
    let (mut fast, _) = ann.connect(&server).await;
    // About 12 MB of token frames: far more than the socket buffers and
    // the outbox of the socket that reads nothing hold.
    const WORDS: usize = 150_000;
    let question = vec!["w"; WORDS].join(" ");
    send_json(&mut fast, json!({"type": "question", "text": question})).await;
    // The fast one reads everything (without parsing tokens, to keep up).
    let mut tokens = 0usize;
    let done = loop {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let item = tokio::time::timeout(crate::support::FRAME_TIMEOUT, fast.next())
            .await
            .expect("a frame within the timeout");
        match item {
            Some(Ok(Message::Text(text))) => {
                if text.as_str().starts_with(r#"{"type":"token""#) {
                    tokens += 1;
                } else if text.as_str().starts_with(r#"{"type":"done""#) {
                    break serde_json::from_str::<Value>(text.as_str()).unwrap();
                }
            }
            Some(Ok(Message::Close(f))) => {
                panic!("the fast reader was closed after {tokens} tokens: {f:?}")
            }
            Some(Ok(_)) => continue,
            other => panic!("the fast reader's connection ended: {other:?}"),
        }
    };
    assert_eq!(done["status"], "complete");
    assert_eq!(tokens, WORDS);
    assert_eq!(done["last_seq"], WORDS as u64);
    // The slow one, which read nothing, was closed at its bound.
    let code = loop {
        match next_incoming(&mut slow).await {
            Incoming::Json(_) => continue,
            Incoming::Close(code, _) => break code,
            Incoming::Ended => panic!("no close frame"),
        }
    };
    assert_eq!(code, 1008);
}
