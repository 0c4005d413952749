//! Hostile clients (issue 18): slowloris heads and slow bodies, many
//! connections from one address, floods of bad handshakes, oversize heads,
//! WebSocket frame abuse, clients that never read, thousands of half-open
//! connections. Each test checks that the abuse is cut off within its
//! configured bound and that good clients are served while it goes on.
//! Nothing here asserts a speed: the handshake latency under a flood is
//! measured by `palaver-bench flood` (docs/RELIABILITY.md).
//!
//! Abusers connect from other loopback addresses (127.0.0.2, …: the server
//! listens on 127.0.0.1, which any 127/8 source reaches), so per-address
//! limits see them apart from the good clients.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    auth_options, client, close_code, new_session, next_frame, send_json, signed_in, ServerOptions,
    TestServer, Ws, SECRET,
};

/// The server's listening address.
fn server_addr(server: &TestServer) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// A TCP connection to the server from `127.0.0.<host>`.
async fn connect_from(server: &TestServer, host: u8) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))?;
    socket.connect(server_addr(server)).await
}

/// Waits up to `within` for the server to end the connection: `Some(bytes
/// it sent before)` once it did (EOF or reset), `None` if it is still open.
async fn ended_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after
/// `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of a metric line (`name{labels} value`) in a scrape, summed
/// over the lines that start with `prefix`.
async fn metric(server: &TestServer, prefix: &str) -> f64 {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}

/// A good client's request, which must succeed.
async fn healthy(server: &TestServer) {
    let res = client().get(server.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200, "a good client was refused");
}

/// A user with a session: (access token, session id).
async fn user_with_session(server: &TestServer, email: &str) -> (String, String) {
    let tokens = signed_in(server, email).await;
    let access = tokens["access"].as_str().unwrap().to_owned();
    let session = new_session(server, &access).await;
    (access, session)
}

fn ws_path(session: &str, access: &str) -> String {
    format!("/ws/sessions/{session}/?token={access}")
}

/// A WebSocket handshake over `tcp` (connected from any address).
async fn ws_over(
    server: &TestServer,
    tcp: TcpStream,
    path: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}{path}", server.base.replace("http://", "ws://"));
    let request = url.into_client_request()?;
    let (ws, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await?;
    Ok(ws)
}

/// A WebSocket from `127.0.0.<host>`; `None` if the connection or the
/// handshake failed.
async fn ws_from(server: &TestServer, host: u8, path: &str) -> Option<Ws> {
    let tcp = connect_from(server, host).await.ok()?;
    ws_over(server, tcp, path).await.ok()
}

/// A good client's WebSocket: handshake, `connected`, ping answered.
async fn good_socket(server: &TestServer, path: &str) {
    let tcp = connect_from(server, 1).await.unwrap();
    let mut ws = ws_over(server, tcp, path).await.expect("good handshake");
    assert_eq!(next_frame(&mut ws).await["type"], "connected");
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await["type"], "pong");
    let _ = ws.close(None).await;
}

/// Sends `bytes` one a `pause` until the server ends the connection; how
/// many it took, or `None` if all were sent and the connection still stood
/// `pause` later.
async fn trickle(stream: &mut TcpStream, bytes: &[u8], pause: Duration) -> Option<usize> {
    for (i, byte) in bytes.iter().enumerate() {
        if stream.write_all(&[*byte]).await.is_err() {
            return Some(i);
        }
        if ended_within(stream, pause).await.is_some() {
            return Some(i + 1);
        }
    }
    None
}

// ---------------------------------------------------------------- HTTP ---

/// Slowloris: a request head trickled a byte a second, on a new connection
/// and on a kept-alive one after a first request was answered (actix-http
/// times only a connection's first head; palaver's connection layer times
/// every one). Both are cut off at `server.header_timeout`.
#[tokio::test]
async fn slowloris_heads_are_cut_off_at_the_header_timeout() {
    let server =
        TestServer::with(ServerOptions::default().env("PALAVER_SERVER__HEADER_TIMEOUT", "2s"));
    let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: one byte at a time\r\n\r\n";
    let abuse = |kept_alive: bool| {
        let server = &server;
        async move {
            let mut tcp = connect_from(server, 2).await.unwrap();
            // The clock runs from the connection's start, or from the end of
            // the answer to its last request (which comes after this).
            let started = Instant::now();
            if kept_alive {
                tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(
                    buf[..n].starts_with(b"HTTP/1.1 200"),
                    "first request answered"
                );
            }
            let sent = trickle(&mut tcp, head, Duration::from_secs(1)).await;
            (sent, started.elapsed())
        }
    };
    let good = async {
        let mut served = 0;
        for _ in 0..5 {
            healthy(&server).await;
            served += 1;
            tokio::time::sleep(Duration::from_millis(300)).await; // pacing, not synchronisation
        }
        served
    };
    let ((fresh, fresh_took), (kept, kept_took), served) =
        tokio::join!(abuse(false), abuse(true), good);
    assert_eq!(served, 5);
    for (what, sent, took) in [("new", fresh, fresh_took), ("kept-alive", kept, kept_took)] {
        let sent =
            sent.unwrap_or_else(|| panic!("the {what} connection's whole head was trickled in"));
        eprintln!("{what} connection: cut off after {sent} bytes, {took:?}");
        assert!(sent < head.len(), "{what}: {sent} bytes");
        assert!(
            took >= Duration::from_secs(2),
            "{what}: cut before the timeout ({took:?})"
        );
    }
    assert!(metric(&server, "palaver_http_timeouts_total{phase=\"header\"}").await >= 2.0);
}

/// The header timeout is for a request's head only: an open WebSocket that
/// says nothing for longer is served on (its connection's head timer goes
/// when the handshake is served, not at the next read, which an idle
/// socket may never do).
#[tokio::test]
async fn an_idle_websocket_outlives_the_header_timeout() {
    let server = TestServer::with(auth_options().env("PALAVER_SERVER__HEADER_TIMEOUT", "1s"));
    let (access, session) = user_with_session(&server, "idle@example.com").await;
    let mut ws = ws_from(&server, 1, &ws_path(&session, &access))
        .await
        .expect("handshake");
    assert_eq!(next_frame(&mut ws).await["type"], "connected");
    // Time passing is what is tested: twice the bound, in silence.
    tokio::time::sleep(Duration::from_secs(2)).await;
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await["type"], "pong");
    assert_eq!(
        metric(&server, "palaver_http_timeouts_total{phase=\"header\"}").await,
        0.0
    );
}

/// Slow bodies: a JSON body and a track upload trickled a byte a second get
/// 408 `request_timeout` at their bound and the connection is closed (no
/// staged file is left behind); a chunked body sent to an endpoint that
/// does not read it is cut off between requests, at the header timeout.
#[tokio::test]
async fn slow_bodies_are_cut_off_with_408() {
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_SERVER__BODY_TIMEOUT", "2s")
            .env("PALAVER_SERVER__UPLOAD_TIMEOUT", "2s")
            .env("PALAVER_SERVER__HEADER_TIMEOUT", "2s"),
    );
    let tokens = signed_in(&server, "ann@example.com").await;
    let access = tokens["access"].as_str().unwrap().to_owned();
    let pause = Duration::from_millis(500);

    let json_body = async {
        let mut tcp = connect_from(&server, 2).await.unwrap();
        let body = br#"{"email": "ann@example.com", "password": "correct horse battery"}"#;
        let head = format!(
            "POST /api/auth/login/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let sent = trickle_until_answered(&mut tcp, body, pause).await;
        (sent, started.elapsed())
    };
    let upload = async {
        let mut tcp = connect_from(&server, 3).await.unwrap();
        let body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF....WAVEfmt ";
        let head = format!(
            "POST /api/tracks/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {access}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let sent = trickle_until_answered(&mut tcp, body, pause).await;
        (sent, started.elapsed())
    };
    let unread_chunked = async {
        let mut tcp = connect_from(&server, 4).await.unwrap();
        tcp.write_all(
            b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n",
        )
        .await
        .unwrap();
        let started = Instant::now();
        // The answer comes at once; the connection then waits for the rest
        // of the body, which trickles, and is cut off.
        let chunks = b"a\r\n1\r\nb\r\n1\r\nc\r\n1\r\nd\r\n1\r\ne\r\n1\r\nf\r\n1\r\ng\r\n";
        let sent = trickle(&mut tcp, chunks, pause).await;
        (sent, started.elapsed())
    };
    let good = async {
        for _ in 0..4 {
            healthy(&server).await;
            tokio::time::sleep(Duration::from_millis(300)).await; // pacing
        }
    };
    let ((json_answer, json_took), (upload_answer, upload_took), (chunked, chunked_took), ()) =
        tokio::join!(json_body, upload, unread_chunked, good);
    for (what, answer, took) in [
        ("JSON body", json_answer, json_took),
        ("upload", upload_answer, upload_took),
    ] {
        let (sent, answer) =
            answer.unwrap_or_else(|| panic!("the {what} was trickled in whole, never cut off"));
        let text = String::from_utf8_lossy(&answer).to_string();
        eprintln!(
            "{what}: answered after {sent} bytes, {took:?}: {}",
            text.lines().next().unwrap_or("")
        );
        assert!(text.starts_with("HTTP/1.1 408"), "{what}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{what}: {text}"
        );
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["code"], "request_timeout", "{what}: {body}");
        assert!(
            took >= Duration::from_secs(2),
            "{what}: before the bound ({took:?})"
        );
    }
    let sent = chunked.expect("the unread chunked body was trickled in whole");
    eprintln!("unread chunked body: cut off after {sent} bytes, {chunked_took:?}");
    // No staged upload is left behind.
    let incoming = server.data.join("tracks/incoming");
    until(
        Duration::from_secs(10),
        "the staged upload removed",
        || async { std::fs::read_dir(&incoming).map_or(true, |d| d.count() == 0) },
    )
    .await;
    assert!(metric(&server, "palaver_http_timeouts_total{phase=\"body\"}").await >= 1.0);
    assert!(metric(&server, "palaver_http_timeouts_total{phase=\"upload\"}").await >= 1.0);
}

/// Trickles `bytes` until the server answers; `(bytes sent, everything it
/// sent until it closed)`, or `None` if all went in unanswered.
async fn trickle_until_answered(
    stream: &mut TcpStream,
    bytes: &[u8],
    pause: Duration,
) -> Option<(usize, Vec<u8>)> {
    let mut buf = [0u8; 4096];
    for (i, byte) in bytes.iter().enumerate() {
        if stream.write_all(&[*byte]).await.is_err() {
            return Some((i, Vec::new()));
        }
        if let Ok(read) = tokio::time::timeout(pause, stream.read(&mut buf)).await {
            let mut answer = match read {
                Ok(n) => buf[..n].to_vec(),
                Err(_) => Vec::new(),
            };
            // The rest of the answer, until the server closes.
            if let Some(rest) = ended_within(stream, Duration::from_secs(10)).await {
                answer.extend(rest);
            }
            return Some((i + 1, answer));
        }
    }
    None
}

/// `server.max_connections_per_ip`: from one address, connections past the
/// bound are reset at accept (nothing read, nothing written), WebSockets
/// count like any connection, a place freed is usable again, and other
/// addresses are served all along.
#[tokio::test]
async fn connections_per_address_are_bounded() {
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_SERVER__MAX_CONNECTIONS_PER_IP", "6")
            .env("PALAVER_SERVER__HEADER_TIMEOUT", "60s")
            .env("PALAVER_WS__MAX_CONNECTIONS_PER_USER", "50"),
    );
    let (access, session) = user_with_session(&server, "ann@example.com").await;
    let path = ws_path(&session, &access);

    // Seven connections from 127.0.0.2: the server takes six (whichever it
    // admits first: its workers accept in parallel) and resets the other.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..7 {
        // A reset may come before the connection is even reported open.
        match connect_from(&server, 2).await {
            Ok(tcp) => held.push(tcp),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
            Err(e) => panic!("connect: {e}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused == 0 {
        let mut ended = None;
        for (i, tcp) in held.iter_mut().enumerate() {
            if let Some(said) = ended_within(tcp, Duration::from_millis(20)).await {
                assert!(
                    said.is_empty(),
                    "nothing is written to a refused connection"
                );
                assert!(ended.is_none(), "two of seven connections were refused");
                ended = Some(i);
            }
        }
        if let Some(i) = ended {
            held.remove(i);
            refused += 1;
        }
        assert!(
            Instant::now() < deadline,
            "the seventh connection was never refused"
        );
    }
    assert_eq!((refused, held.len()), (1, 6));
    // The six are served.
    held[0]
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = held[0].read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Other addresses are served meanwhile, over HTTP and WebSocket.
    healthy(&server).await;
    good_socket(&server, &path).await;

    // WebSockets count: six from 127.0.0.3, then a seventh is refused.
    let mut sockets = Vec::new();
    for _ in 0..6 {
        let tcp = connect_from(&server, 3).await.unwrap();
        let mut ws = ws_over(&server, tcp, &path).await.unwrap();
        assert_eq!(next_frame(&mut ws).await["type"], "connected");
        sockets.push(ws);
    }
    assert!(
        ws_from(&server, 3, &path).await.is_none(),
        "a seventh connection from one address"
    );
    // A socket closed gives its place back.
    let mut first = sockets.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(mut ws) = ws_from(&server, 3, &path).await {
            assert_eq!(next_frame(&mut ws).await["type"], "connected");
            sockets.push(ws);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    healthy(&server).await;
    let refused = metric(
        &server,
        "palaver_http_connections_refused_total{reason=\"per_ip_limit\"}",
    )
    .await;
    assert!(refused >= 2.0, "refusals counted: {refused}");
    drop(held);
}

/// A flood of handshakes with bad credentials (garbage, and well-formed
/// tokens signed with the wrong key) from several connections at once:
/// every one is refused with 4001, and good clients' handshakes succeed
/// throughout. (Their latency under the flood: `palaver-bench flood`.)
#[tokio::test]
async fn a_flood_of_bad_handshakes_does_not_stop_good_ones() {
    let server = Arc::new(TestServer::with(auth_options()));
    let (access, session) = user_with_session(&server, "ann@example.com").await;
    let forged = {
        let mut claims = crate::support::claims_of(&access);
        claims["exp"] = json!(crate::support::now() + 600);
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret-not-the-server-secret"),
        )
        .unwrap()
    };
    assert_ne!(
        SECRET.as_bytes(),
        b"not-the-server-secret-not-the-server-secret"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..8)
        .map(|i| {
            let (server, stop, refused) = (server.clone(), stop.clone(), refused.clone());
            let token = if i % 2 == 0 {
                "garbage".to_owned()
            } else {
                forged.clone()
            };
            let path = ws_path(&session, &token);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let tcp = connect_from(&server, 10 + i).await.unwrap();
                    let mut ws = ws_over(&server, tcp, &path).await.expect("handshake");
                    assert_eq!(close_code(&mut ws).await, 4001);
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let the flood get going before the good clients start.
    until(Duration::from_secs(30), "the flood running", || async {
        refused.load(Ordering::Relaxed) >= 50
    })
    .await;
    let good = ws_path(&session, &access);
    for _ in 0..20 {
        good_socket(&server, &good).await;
    }
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let refused = refused.load(Ordering::Relaxed);
    eprintln!("{refused} bad handshakes refused while 20 good ones succeeded");
    assert!(refused >= 70, "the flood ran alongside the good handshakes");
}

/// A request head past actix-http's bounds (128 KiB, or 96 headers) is
/// answered 431 and its connection closed; the server goes on.
#[tokio::test]
async fn oversize_heads_get_431() {
    let server = TestServer::start();
    let huge_header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 << 10)
    );
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..100)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let huge_upgrade = format!(
        "GET /ws/sessions/00000000-0000-0000-0000-000000000000/ HTTP/1.1\r\nHost: x\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {}\r\n\r\n",
        "c".repeat(200 << 10)
    );
    for (what, request) in [
        ("a 200 KiB header", huge_header),
        ("100 headers", many_headers),
        ("a 200 KiB upgrade", huge_upgrade),
    ] {
        let mut tcp = connect_from(&server, 2).await.unwrap();
        // The server may close before reading it all: a failed write is fine.
        let _ = tcp.write_all(request.as_bytes()).await;
        let answer = ended_within(&mut tcp, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{what}: the connection stayed open"));
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 431"), "{what}: {text:?}");
        healthy(&server).await;
    }
}

// ----------------------------------------------------------- WebSocket ---

/// A WebSocket spoken byte by byte: the handshake, then frames as the test
/// writes them (masked, as a client must), fragments and all.
struct RawWs(TcpStream);

impl RawWs {
    async fn open(server: &TestServer, path: &str) -> RawWs {
        let mut tcp = connect_from(server, 1).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server_addr(server)
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        // The 101 head, byte by byte (frames may follow it in the same read).
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let mut ws = RawWs(tcp);
        let (op, first) = ws.next_data().await.expect("connected");
        assert_eq!(op, 1);
        assert_eq!(
            serde_json::from_slice::<Value>(&first).unwrap()["type"],
            "connected"
        );
        ws
    }

    /// Writes one frame; `false` once the server has closed the connection.
    async fn send(&mut self, opcode: u8, fin: bool, payload: &[u8]) -> bool {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&frame).await.is_ok()
    }

    /// The next frame from the server (opcode, payload); `None` at the end.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        let read = async {
            let b0 = self.0.read_u8().await.ok()?;
            let b1 = self.0.read_u8().await.ok()?;
            let len = match b1 & 0x7f {
                126 => u64::from(self.0.read_u16().await.ok()?),
                127 => self.0.read_u64().await.ok()?,
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            self.0.read_exact(&mut payload).await.ok()?;
            Some((b0 & 0x0f, payload))
        };
        tokio::time::timeout(crate::support::FRAME_TIMEOUT, read)
            .await
            .expect("a frame within the timeout")
    }

    /// The next text or close frame (pings skipped).
    async fn next_data(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            match self.next().await? {
                (9 | 10, _) => continue,
                frame => return Some(frame),
            }
        }
    }

    /// The close code the server sends next (text frames before it are
    /// collected into `texts`).
    async fn close_code(&mut self, texts: &mut Vec<Value>) -> u16 {
        loop {
            match self.next_data().await {
                Some((8, payload)) => return u16::from_be_bytes([payload[0], payload[1]]),
                Some((1, text)) => texts.push(serde_json::from_slice(&text).unwrap()),
                Some((op, _)) => panic!("unexpected opcode {op}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

const TEXT: u8 = 1;
const CONTINUATION: u8 = 0;
const PONG: u8 = 10;

/// Invalid UTF-8 closes 1007 (whole or joined from fragments; a character
/// split across fragments is fine); a continuation with no message begun
/// and a message begun inside another close 1002; a fragmented message
/// growing past `ws.max_message_bytes` closes 1009; endless fragments and
/// unsolicited pongs count against the frame rate limit (1008), while the
/// pongs answering the server's own pings are free.
#[tokio::test]
async fn websocket_frame_abuse_is_closed_with_the_right_code() {
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_ANALYSIS__ENGINE", "echo")
            .env("PALAVER_WS__MAX_MESSAGE_BYTES", "1024")
            .env("PALAVER_WS__MAX_MESSAGES_PER_MINUTE", "10")
            .env("PALAVER_WS__MAX_CONNECTIONS_PER_USER", "20")
            .env("PALAVER_WS__PING_INTERVAL", "50ms")
            .env("PALAVER_WS__IDLE_TIMEOUT", "10s"),
    );
    let (access, session) = user_with_session(&server, "ann@example.com").await;
    let path = ws_path(&session, &access);
    let ping = br#"{"type":"ping"}"#;

    // A character split across fragments is joined into one good message.
    let mut ws = RawWs::open(&server, &path).await;
    let euro = r#"{"type":"question","text":"5 €"}"#.as_bytes();
    let split = euro.iter().position(|&b| b == 0xe2).unwrap() + 1;
    assert!(ws.send(TEXT, false, &euro[..split]).await);
    assert!(ws.send(CONTINUATION, true, &euro[split..]).await);
    let (_, message) = ws.next_data().await.unwrap();
    let message: Value = serde_json::from_slice(&message).unwrap();
    assert_eq!(message["message"]["text"], "5 €", "{message}");

    let closed = |frames: Vec<(u8, bool, Vec<u8>)>| {
        let server = &server;
        let path = path.clone();
        async move {
            let mut ws = RawWs::open(server, &path).await;
            for (opcode, fin, payload) in frames {
                if !ws.send(opcode, fin, &payload).await {
                    break;
                }
            }
            let mut texts = Vec::new();
            let code = ws.close_code(&mut texts).await;
            (code, texts)
        }
    };
    let invalid = vec![(TEXT, true, vec![b'"', 0xff, 0xfe, b'"'])];
    assert_eq!(closed(invalid).await.0, 1007, "invalid UTF-8");
    let invalid_joined = vec![
        (TEXT, false, vec![b'"', 0xe2]),
        (CONTINUATION, true, vec![b'x', b'"']),
    ];
    assert_eq!(closed(invalid_joined).await.0, 1007, "invalid once joined");
    let orphan = vec![(CONTINUATION, true, ping.to_vec())];
    assert_eq!(
        closed(orphan).await.0,
        1002,
        "continuation with nothing begun"
    );
    let interleaved = vec![
        (TEXT, false, b"{\"type\":".to_vec()),
        (TEXT, false, b"{\"type\":".to_vec()),
    ];
    assert_eq!(
        closed(interleaved).await.0,
        1002,
        "a message begun inside another"
    );
    let growing: Vec<_> = std::iter::once((TEXT, false, vec![b' '; 100]))
        .chain((0..20).map(|_| (CONTINUATION, false, vec![b' '; 100])))
        .collect();
    let (code, _) = closed(growing).await;
    assert_eq!(code, 1009, "a fragmented message past the bound");
    let endless: Vec<_> = std::iter::once((TEXT, false, Vec::new()))
        .chain((0..100).map(|_| (CONTINUATION, false, Vec::new())))
        .collect();
    let (code, said) = closed(endless).await;
    assert_eq!(code, 1008, "endless empty fragments");
    assert!(said.iter().any(|f| f["code"] == "rate_limited"), "{said:?}");
    let pongs: Vec<_> = (0..100).map(|_| (PONG, true, Vec::new())).collect();
    assert_eq!(closed(pongs).await.0, 1008, "unsolicited pongs");

    // A client that answers the server's pings (tungstenite does, while it
    // reads) sends far more pongs than the limit allows frames, and stays.
    let (mut lively, _) = crate::support::ws_connected(&server, &path, &[]).await;
    let mut pings = 0;
    while pings < 40 {
        match tokio::time::timeout(Duration::from_secs(20), lively.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            other => panic!("unexpected while idle: {other:?}"),
        }
    }
    send_json(&mut lively, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut lively).await["type"], "pong");
}

/// Clients that never read: WebSockets whose replies pile up, and HTTP
/// connections that pipeline requests without reading a response. The
/// server's memory stays within what its bounds allow (each socket's
/// outbox, `ws.max_buffered_bytes`, and its reply; actix-http's pipeline
/// and write buffer); the server lets go of every one of them (a socket is
/// closed 1008 at its bound or 1001 for answering no ping, or dropped, like
/// the pipelined connections, once its window stays shut for
/// `ws.idle_timeout`), and a good client is served meanwhile.
#[tokio::test]
async fn clients_that_never_read_leave_memory_bounded() {
    const SOCKETS: usize = 10;
    const PIPELINES: usize = 10;
    const OUTBOX: usize = 256 << 10;
    // sled's page cache (storage.cache_bytes, its default) grows with what
    // the replies store, and is part of the bound.
    const CACHE: usize = 64 << 20;
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_ANALYSIS__ENGINE", "echo")
            .env("PALAVER_WS__MAX_BUFFERED_BYTES", &OUTBOX.to_string())
            .env("PALAVER_WS__MAX_MESSAGES_PER_MINUTE", "100000")
            .env("PALAVER_WS__MAX_CONNECTIONS_PER_USER", "50")
            .env("PALAVER_WS__PING_INTERVAL", "500ms")
            .env("PALAVER_WS__IDLE_TIMEOUT", "3s"),
    );
    let tokens = signed_in(&server, "ann@example.com").await;
    let access = tokens["access"].as_str().unwrap().to_owned();
    // 1 900 words: a reply of about 170 KB of token frames.
    let question = json!({"type": "question", "text": vec!["w"; 1900].join(" ")});

    // Warm up what one reply allocates and frees, read by a good client.
    let good_session = new_session(&server, &access).await;
    let good_path = ws_path(&good_session, &access);
    let good_reply = || async {
        let (mut ws, _) = crate::support::ws_connected(&server, &good_path, &[]).await;
        send_json(&mut ws, question.clone()).await;
        let frames = crate::support::until_done(&mut ws).await;
        assert_eq!(frames.last().unwrap()["status"], "complete");
    };
    good_reply().await;
    let before = status_kib(server.pid(), "VmRSS:");

    // Non-readers: a small receive buffer, so the kernel holds little.
    let mut readers_never = Vec::new();
    for _ in 0..SOCKETS {
        let session = new_session(&server, &access).await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
        let tcp = socket.connect(server_addr(&server)).await.unwrap();
        let ws = ws_over(&server, tcp, &ws_path(&session, &access))
            .await
            .unwrap();
        readers_never.push(ws);
    }
    let mut pipelines = Vec::new();
    let requests = "GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    for _ in 0..PIPELINES {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 3], 0))).unwrap();
        let mut tcp = socket.connect(server_addr(&server)).await.unwrap();
        tcp.write_all(requests.as_bytes()).await.unwrap();
        pipelines.push(tcp);
    }
    // Ask question after question, reading nothing, until each socket is
    // closed (a question while its reply streams is refused, which only
    // queues more).
    // Until the server holds none of them: each is closed 1008 at its outbox
    // bound, or 1001 for answering no ping within `ws.idle_timeout`, or
    // dropped by the kernel once its window stayed shut that long
    // (TCP_USER_TIMEOUT): which comes first depends on how fast the kernel's
    // buffers fill, i.e. on the machine's load.
    let open = || metric(&server, "palaver_ws_connections ");
    let deadline = Instant::now() + Duration::from_secs(120);
    while open().await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the server still holds sockets that never read"
        );
        for ws in &mut readers_never {
            let _ = tokio::time::timeout(
                Duration::from_millis(20),
                ws.send(Message::text(question.to_string())),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // pacing
    }
    eprintln!(
        "{SOCKETS} sockets that never read: {} closed 1008, {} closed 1001, the rest dropped by the kernel",
        metric(&server, "palaver_ws_closes_total{code=\"1008\"}").await,
        metric(&server, "palaver_ws_closes_total{code=\"1001\"}").await,
    );
    // A good client is served while the pipelines sit unread.
    healthy(&server).await;
    good_reply().await;
    let peak = status_kib(server.pid(), "VmHWM:");
    let grown = peak.saturating_sub(before);
    let bound =
        (SOCKETS * (OUTBOX + (512 << 10)) + PIPELINES * (512 << 10) + CACHE) / 1024 + 24 * 1024;
    eprintln!(
        "RSS {before} KiB before, peak {peak} KiB: +{grown} KiB for {SOCKETS} sockets and \
         {PIPELINES} pipelines that never read (bound {bound} KiB)"
    );
    assert!(grown < bound as u64, "grew {grown} KiB, bound {bound} KiB");
    // The pipelined connections are dropped: their window stays shut.
    let port = server_addr(&server).port();
    let ports: Vec<u16> = pipelines
        .iter()
        .map(|t| t.local_addr().unwrap().port())
        .collect();
    until(
        Duration::from_secs(60),
        "the unread pipelines dropped",
        || async { ports.iter().all(|p| !server_socket_exists(port, *p)) },
    )
    .await;
    drop(readers_never);
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// The server-side socket of a connection from `client_port` exists.
fn server_socket_exists(server_port: u16, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{server_port:04X}");
    let remote = format!(":{client_port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 2 && fields[1].ends_with(&local) && fields[2].ends_with(&remote)
    })
}

/// 2 000 connections that send nothing, or half a request head, from ten
/// addresses (200 each, under the default per-address bound): a good
/// client's request and WebSocket are served while they are open, and the
/// server closes every one of them at `server.header_timeout`.
#[tokio::test]
async fn thousands_of_half_open_connections_are_closed_at_the_header_timeout() {
    const CONNECTIONS: usize = 2000;
    // Each end of each connection is a file here (the server raises its own
    // limit at start).
    rlimit::increase_nofile_limit(4 * CONNECTIONS as u64 + 256).unwrap();
    let server = TestServer::with(auth_options().env("PALAVER_SERVER__HEADER_TIMEOUT", "3s"));
    let (access, session) = user_with_session(&server, "ann@example.com").await;
    let opened = Instant::now();
    let mut half_open = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut tcp = connect_from(&server, 20 + (i % 10) as u8).await.unwrap();
        if i % 2 == 1 {
            tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Half: ")
                .await
                .unwrap();
        }
        half_open.push(tcp);
    }
    eprintln!(
        "{CONNECTIONS} half-open connections in {:?}",
        opened.elapsed()
    );
    healthy(&server).await;
    good_socket(&server, &ws_path(&session, &access)).await;
    let open = metric(&server, "palaver_http_connections ").await;
    eprintln!("connections open at the server: {open}");
    // Every one is closed by the server, with nothing written (a head that
    // never came is not answered).
    let closers: Vec<_> = half_open
        .into_iter()
        .map(|mut tcp| {
            tokio::spawn(async move { ended_within(&mut tcp, Duration::from_secs(90)).await })
        })
        .collect();
    let mut answered = 0;
    for closer in closers {
        let said = closer
            .await
            .unwrap()
            .expect("a half-open connection left open");
        answered += usize::from(!said.is_empty());
    }
    eprintln!(
        "all closed {:?} after the first was opened",
        opened.elapsed()
    );
    assert_eq!(answered, 0, "nothing is written to a head that never came");
    healthy(&server).await;
    until(
        Duration::from_secs(20),
        "the connection gauge back down",
        || async {
            // This scrape's own connection (and perhaps the last good one's).
            metric(&server, "palaver_http_connections ").await <= 3.0
        },
    )
    .await;
}
