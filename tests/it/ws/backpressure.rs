//! Slow and abusive clients: bounded outboxes, silent peers, frame rate limits.

use super::*;
use crate::support::{next_incoming, Incoming};

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
    flood_until(server, ws, &["slow reader"]).await
}

/// Like [`flood_until_slow_reader`], until the server logs any of `signs`.
async fn flood_until(server: &TestServer, ws: &mut Ws, signs: &[&str]) {
    let question = vec!["w"; FLOOD_WORDS].join(" ");
    send_json(ws, json!({"type": "question", "text": question})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !signs.iter().any(|sign| server.output().contains(sign)) {
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
    // Never read again. On a loaded machine the 2 s idle timeout (the
    // client answers no ping while it reads nothing) may close the socket
    // before the outbox fills: either way the server gave up on it, and the
    // kernel must then drop the connection.
    flood_until(&server, &mut ws, &["slow reader", "idle timeout"]).await;
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
    // place freed (a third connection fits in the limit of two). The place
    // goes when its actor has stopped, a moment after the drop is logged:
    // until then a third connection is refused 4029, and tried again.
    let (silent, _) = ws_connected(&server, &p, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut third = loop {
        let (mut ws, _) = ws_open(&server, &p, &[]).await.expect("handshake");
        match next_incoming(&mut ws).await {
            Incoming::Json(f) if f["type"] == "connected" => break ws,
            Incoming::Close(4029, _) => {
                assert!(Instant::now() < deadline, "never dropped");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Incoming::Json(f) => panic!("unexpected first frame: {f}"),
            Incoming::Close(code, reason) => panic!("closed {code} {reason:?}"),
            Incoming::Ended => panic!("ended without a frame"),
        }
    };
    // Dropped as idle (the log line may reach the test after the place is
    // free: stderr is read by a thread of its own).
    server.output_once("idle timeout");
    send_json(&mut third, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut third).await["type"], "pong");
    drop(silent);
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
