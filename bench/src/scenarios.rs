//! The load scenarios. Each runs against a [`Target`] and reports what the
//! client saw (rates, latencies from hdrhistogram) and what the server paid
//! (its CPU time per operation, its resident memory).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::target::{Target, SECRET};

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// What palaver needs before load: a user, its id, and sessions to talk in.
pub struct Setup {
    pub user_id: String,
    pub access: String,
    pub sessions: Vec<String>,
    pub http: reqwest::Client,
}

/// Registers and logs in a new regular user: its access token and id.
async fn register(target: &Target, http: &reqwest::Client) -> Result<(String, String)> {
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "bench-password-123";
    let res = http
        .post(format!("{}/api/auth/register/", target.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "register: {}", res.status());
    let login: Value = http
        .post(format!("{}/api/auth/login/", target.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let access = login["access"].as_str().context("access")?.to_owned();
    let user_id = login["user"]["id"].as_str().context("user id")?.to_owned();
    Ok((access, user_id))
}

impl Setup {
    pub async fn palaver(target: &Target, sessions: usize) -> Result<Setup> {
        let http = reqwest::Client::new();
        let (access, user_id) = register(target, &http).await?;
        let mut setup = Setup {
            user_id,
            access,
            sessions: Vec::new(),
            http,
        };
        setup.more_sessions(target, sessions).await?;
        Ok(setup)
    }

    /// Creates sessions until there are `n` (64 requests at a time: the
    /// scenarios that hold thousands of sockets want one each).
    pub async fn more_sessions(&mut self, target: &Target, n: usize) -> Result<()> {
        use futures_util::StreamExt;
        let missing = n.saturating_sub(self.sessions.len());
        let url = format!("{}/api/sessions/", target.base);
        let (http, access, url) = (&self.http, &self.access, &url);
        let created: Vec<Result<String>> = futures_util::stream::iter(0..missing)
            .map(|_| async move {
                let session: Value = http
                    .post(url)
                    .bearer_auth(access)
                    .json(&json!({}))
                    .send()
                    .await?
                    .json()
                    .await?;
                Ok(session["id"].as_str().context("session id")?.to_owned())
            })
            .buffer_unordered(64)
            .collect()
            .await;
        for id in created {
            self.sessions.push(id?);
        }
        Ok(())
    }

    /// A fresh access token, minted with the server's secret.
    pub fn mint(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = json!({
            "iss": "palaver", "sub": self.user_id, "user_id": self.user_id,
            "token_type": "access", "jti": uuid::Uuid::new_v4(), "fam": uuid::Uuid::new_v4(),
            "iat": now, "exp": now + 3600, "is_demo": false,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("HS256 encodes")
    }

    /// A token with a broken signature (must be refused with 4001).
    pub fn forged(&self) -> String {
        let mut token = self.mint();
        let last = token.pop().unwrap_or('A');
        token.push(if last == 'A' { 'B' } else { 'A' });
        token
    }

    pub fn path(&self, i: usize, token: &str) -> String {
        format!(
            "/ws/sessions/{}/?token={token}",
            self.sessions[i % self.sessions.len()]
        )
    }
}

/// Opens a WebSocket from source address `src` (several loopback sources
/// pass the per-address ephemeral port limit).
pub async fn connect(target: &Target, path: &str, src: IpAddr) -> Result<Ws> {
    connect_base(&target.base, path, src).await
}

/// [`connect`] to the server at `base` (`http://127.0.0.1:PORT`).
pub async fn connect_base(base: &str, path: &str, src: IpAddr) -> Result<Ws> {
    let addr: SocketAddr = base.trim_start_matches("http://").parse()?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("{}{path}", Target::ws_base_of(base));
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(ws)
}

pub fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 8) as u8))
}

/// The next text frame as JSON, or the close code.
pub async fn next(ws: &mut Ws) -> Result<std::result::Result<Value, u16>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => bail!("no frame within 30 s"),
            Ok(None) => bail!("connection ended"),
            Ok(Some(msg)) => match msg? {
                Message::Text(t) => return Ok(Ok(serde_json::from_str(t.as_str())?)),
                Message::Close(f) => return Ok(Err(f.map_or(1005, |f| u16::from(f.code)))),
                _ => continue,
            },
        }
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[derive(Debug)]
pub struct HandshakeResult {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_us: f64,
    pub ok: usize,
    pub refused: usize,
}

/// `total` handshakes, `concurrency` at a time: connect, wait for `connected`,
/// close. Every `bad_every`-th uses a forged token and must be refused.
pub async fn handshake(
    target: &Target,
    setup: Option<&Setup>,
    total: usize,
    concurrency: usize,
    bad_every: usize,
) -> Result<HandshakeResult> {
    // Tokens minted before the clock starts: minting is the client's work.
    let paths: Vec<(String, bool)> = (0..total)
        .map(|i| {
            let bad = bad_every > 0 && i % bad_every == bad_every - 1;
            match setup {
                Some(s) => (s.path(i, &if bad { s.forged() } else { s.mint() }), bad),
                None => ("/ws".to_owned(), false),
            }
        })
        .collect();
    let paths = Arc::new(paths);
    let next_job = Arc::new(AtomicUsize::new(0));
    let cpu0 = target.cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (paths, next_job) = (paths.clone(), next_job.clone());
        tasks.push(async move {
            let mut h = hist();
            let (mut ok, mut refused) = (0, 0);
            loop {
                let i = next_job.fetch_add(1, Ordering::Relaxed);
                let Some((path, bad)) = paths.get(i) else {
                    break;
                };
                let t = Instant::now();
                let mut ws = connect(target, path, source(worker)).await?;
                match next(&mut ws).await? {
                    Ok(frame) if frame["type"] == "connected" && !bad => ok += 1,
                    Err(4001) if *bad => refused += 1,
                    other => bail!("handshake {i}: unexpected {other:?}"),
                }
                h.record(t.elapsed().as_micros().max(1) as u64)?;
                let _ = ws.close(None).await;
            }
            Ok::<_, anyhow::Error>((h, ok, refused))
        });
    }
    let results = futures_util::future::join_all(tasks).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = target.cpu_seconds() - cpu0;
    let mut h = hist();
    let (mut ok, mut refused) = (0, 0);
    for r in results {
        let (part, o, f) = r?;
        h.add(part)?;
        ok += o;
        refused += f;
    }
    Ok(HandshakeResult {
        per_sec: total as f64 / elapsed,
        p50_ms: ms(&h, 0.5),
        p99_ms: ms(&h, 0.99),
        cpu_us: cpu * 1e6 / total as f64,
        ok,
        refused,
    })
}

/// Opens `n` connections, `BATCH` at a time, each waited on until its
/// `connected` frame (fresh token per connection; sessions round-robin).
pub async fn open_many(target: &Target, setup: Option<&Setup>, n: usize) -> Result<Vec<Ws>> {
    const BATCH: usize = 200;
    let mut conns = Vec::with_capacity(n);
    for start in (0..n).step_by(BATCH) {
        let opens = (start..(start + BATCH).min(n)).map(|i| async move {
            let path = match setup {
                Some(s) => s.path(i, &s.mint()),
                None => "/ws".to_owned(),
            };
            let mut ws = connect(target, &path, source(i)).await?;
            match next(&mut ws).await? {
                Ok(f) if f["type"] == "connected" => Ok(ws),
                other => bail!("connection {i}: unexpected {other:?}"),
            }
        });
        for ws in futures_util::future::join_all(opens).await {
            conns.push(ws?);
        }
    }
    Ok(conns)
}

#[derive(Debug)]
pub struct HoldResult {
    pub held: usize,
    /// Growth of the server's RSS per connection, fresh: each connection
    /// received `connected` and nothing else.
    pub rss_per_conn: f64,
    /// The same, once every connection has asked one question and received
    /// its reply (its buffers touched by traffic; for palaver it includes
    /// the stored question and reply).
    pub rss_per_conn_after_traffic: f64,
}

/// Opens `n` idle connections and keeps them; the server's resident memory
/// grows by this much per connection. Then each asks one question (50 at a
/// time) and the growth is measured again.
pub async fn hold(target: &Target, setup: Option<&Setup>, n: usize) -> Result<HoldResult> {
    // Let the server settle, then measure from there.
    let rss0 = target.rss_bytes();
    let mut held = open_many(target, setup, n).await?;
    let rss1 = target.rss_bytes();
    let question = question_frame();
    futures_util::stream::iter(held.iter_mut())
        .map(|ws| ask(ws, &question))
        .buffer_unordered(50)
        .try_collect::<Vec<_>>()
        .await?;
    let rss2 = target.rss_bytes();
    let per_conn = |rss: u64| rss.saturating_sub(rss0) as f64 / n.max(1) as f64;
    let result = HoldResult {
        held: held.len(),
        rss_per_conn: per_conn(rss1),
        rss_per_conn_after_traffic: per_conn(rss2),
    };
    drop(held);
    Ok(result)
}

/// When a reply's first token and its `done` arrived.
struct ReplyTimes {
    first_token: Option<Instant>,
    done: Instant,
}

/// Sends a `question` frame and reads its reply up to `done`.
async fn ask(ws: &mut Ws, question: &str) -> Result<ReplyTimes> {
    ws.send(Message::text(question)).await?;
    let mut first_token = None;
    loop {
        let frame = match next(ws).await? {
            Ok(f) => f,
            Err(code) => bail!("closed {code} mid-reply"),
        };
        match frame["type"].as_str() {
            Some("token") if first_token.is_none() => first_token = Some(Instant::now()),
            Some("done") => {
                return Ok(ReplyTimes {
                    first_token,
                    done: Instant::now(),
                })
            }
            Some("error") => bail!("error frame: {frame}"),
            _ => {}
        }
    }
}

/// [`ask`] for other modules: when the first token and `done` arrived.
pub async fn ask_timed(ws: &mut Ws, question: &str) -> Result<(Option<Instant>, Instant)> {
    let times = ask(ws, question).await?;
    Ok((times.first_token, times.done))
}

/// The `question` frame every scenario asks: 20 words.
fn question_frame() -> String {
    let words = (1..=20)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    json!({"type": "question", "text": words}).to_string()
}

/// A duration as a histogram value (µs, at least 1).
fn micros(d: Duration) -> u64 {
    d.as_micros().max(1) as u64
}

#[derive(Debug)]
pub struct StreamResult {
    pub replies_per_sec: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub done_p50_ms: f64,
    pub done_p99_ms: f64,
    pub cpu_us: f64,
}

/// `sockets` connections each asking `questions` 20-word questions back to
/// back; time to first token and to `done`.
pub async fn stream(
    target: &Target,
    setup: Option<&Setup>,
    sockets: usize,
    questions: usize,
) -> Result<StreamResult> {
    let question = question_frame();
    let conns = open_many(target, setup, sockets).await?;
    let cpu0 = target.cpu_seconds();
    let started = Instant::now();
    let tasks = conns.into_iter().map(|mut ws| {
        let question = question.clone();
        async move {
            let (mut ttft, mut done) = (hist(), hist());
            for _ in 0..questions {
                let asked = Instant::now();
                let reply = ask(&mut ws, &question).await?;
                if let Some(first) = reply.first_token {
                    ttft.record(micros(first - asked))?;
                }
                done.record(micros(reply.done - asked))?;
            }
            let _ = ws.close(None).await;
            Ok::<_, anyhow::Error>((ttft, done))
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = target.cpu_seconds() - cpu0;
    let (mut ttft, mut done) = (hist(), hist());
    for r in results {
        let (a, b) = r?;
        ttft.add(a)?;
        done.add(b)?;
    }
    let replies = (sockets * questions) as f64;
    Ok(StreamResult {
        replies_per_sec: replies / elapsed,
        ttft_p50_ms: ms(&ttft, 0.5),
        ttft_p99_ms: ms(&ttft, 0.99),
        done_p50_ms: ms(&done, 0.5),
        done_p99_ms: ms(&done, 0.99),
        cpu_us: cpu * 1e6 / replies,
    })
}

#[derive(Debug)]
pub struct QuotaResult {
    pub off_per_sec: f64,
    pub on_per_sec: f64,
    /// Server CPU time per counted request.
    pub off_cpu_us: f64,
    pub on_cpu_us: f64,
}

/// Counted requests (`POST /api/sessions/`) per second, `concurrency` at a
/// time, each concurrent client a user of its own: regular users (no quota)
/// and demo users (admitted by the QuotaRegistry), in 5 rounds that
/// alternate which goes first; the medians of the rounds' rates, and the
/// server's CPU time per request.
pub async fn quota(
    target: &Target,
    setup: &Setup,
    requests: usize,
    concurrency: usize,
) -> Result<QuotaResult> {
    const ROUNDS: usize = 5;
    let mut regular = vec![setup.access.clone()];
    let mut demo = Vec::new();
    while demo.len() < concurrency {
        if regular.len() < concurrency {
            regular.push(register(target, &setup.http).await?.0);
        }
        let user: Value = setup
            .http
            .post(format!("{}/api/auth/demo/", target.base))
            .send()
            .await?
            .json()
            .await?;
        demo.push(user["access"].as_str().context("demo access")?.to_owned());
    }
    let per_round = (requests / ROUNDS).max(1);
    // [off, on]: rates and CPU seconds.
    let mut rates = [Vec::new(), Vec::new()];
    let mut cpu = [0.0, 0.0];
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let tokens = [&regular, &demo][which];
            let cpu0 = target.cpu_seconds();
            let started = Instant::now();
            counted_requests(target, setup, tokens, per_round).await?;
            rates[which].push(per_round as f64 / started.elapsed().as_secs_f64());
            cpu[which] += target.cpu_seconds() - cpu0;
        }
    }
    let total = (per_round * ROUNDS) as f64;
    let [off, on] = rates;
    Ok(QuotaResult {
        off_per_sec: crate::median(off),
        on_per_sec: crate::median(on),
        off_cpu_us: cpu[0] / total * 1e6,
        on_cpu_us: cpu[1] / total * 1e6,
    })
}

/// `requests` session creations, one client per token, all at once.
async fn counted_requests(
    target: &Target,
    setup: &Setup,
    tokens: &[String],
    requests: usize,
) -> Result<()> {
    let left = Arc::new(AtomicUsize::new(requests));
    let tasks = tokens.iter().map(|token| {
        let (left, http) = (left.clone(), setup.http.clone());
        let url = format!("{}/api/sessions/", target.base);
        async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let res = http
                    .post(&url)
                    .bearer_auth(token)
                    .json(&json!({}))
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 201, "create: {}", res.status());
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    for r in futures_util::future::join_all(tasks).await {
        r?;
    }
    Ok(())
}

#[derive(Debug)]
pub struct OpenLoopResult {
    pub replies: usize,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub ttft_max_ms: f64,
}

/// `sockets` connections, each asking one 20-word question per second for
/// `seconds` seconds on a fixed schedule (open loop: a slow reply does not
/// delay the next question's send time); time to first token.
pub async fn open_loop(
    target: &Target,
    setup: Option<&Setup>,
    sockets: usize,
    seconds: u64,
) -> Result<OpenLoopResult> {
    let question = question_frame();
    let conns = open_many(target, setup, sockets).await?;
    let epoch = tokio::time::Instant::now() + Duration::from_millis(200);
    let tasks = conns.into_iter().enumerate().map(|(i, mut ws)| {
        let question = question.clone();
        async move {
            let mut ttft = hist();
            // Spread the sockets evenly over each second.
            let phase = Duration::from_micros((i as u64 * 1_000_000) / sockets.max(1) as u64);
            for second in 0..seconds {
                let at = epoch + phase + Duration::from_secs(second);
                tokio::time::sleep_until(at).await;
                let reply = ask(&mut ws, &question).await?;
                // Measured from the scheduled send time: a late send (client
                // overload) counts against the figure.
                if let Some(first) = reply.first_token {
                    ttft.record(micros(first - at.into_std()))?;
                }
            }
            let _ = ws.close(None).await;
            Ok::<_, anyhow::Error>(ttft)
        }
    });
    let mut all = hist();
    for r in futures_util::future::join_all(tasks).await {
        all.add(r?)?;
    }
    Ok(OpenLoopResult {
        replies: all.len() as usize,
        ttft_p50_ms: ms(&all, 0.5),
        ttft_p99_ms: ms(&all, 0.99),
        ttft_max_ms: all.max() as f64 / 1000.0,
    })
}

#[derive(Debug)]
pub struct FlushStats {
    pub count: u64,
    pub mean_ms: f64,
    /// Flushes that took longer than 5 ms (from the histogram's buckets).
    pub over_5ms: u64,
}

/// palaver's group-commit flushes so far, from its `/metrics`.
pub async fn flush_stats(target: &Target) -> Result<FlushStats> {
    let text = reqwest::get(format!("{}/metrics", target.base))
        .await?
        .text()
        .await?;
    let value = |line_start: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .with_context(|| format!("{line_start} in /metrics"))
    };
    let count = value("palaver_storage_flush_seconds_count ")?;
    let sum = value("palaver_storage_flush_seconds_sum ")?;
    let within_5ms = value("palaver_storage_flush_seconds_bucket{le=\"0.005\"} ")?;
    Ok(FlushStats {
        count: count as u64,
        mean_ms: if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        },
        over_5ms: (count - within_5ms) as u64,
    })
}
