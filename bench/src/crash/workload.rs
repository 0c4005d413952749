//! The mixed workload one life of the server sees until it is killed:
//! registrations and logins; regular users creating and deleting sessions,
//! asking over a WebSocket (now and then cancelling) and over HTTP, and
//! creating, using and deleting API keys; demo users spending their quota
//! over HTTP and two WebSockets at once. Every acknowledgement goes into the
//! [`Ledger`] the moment it is seen.
//!
//! A request cut by the kill is a [`Cut`]: the task then waits for the stop
//! signal and ends.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as Frame;

use super::ledger::{Acked, ApiKey, Demo, Ledger, Owner, Session, State, User};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The connection to the server went away (the kill, normally).
#[derive(Debug)]
pub struct Cut(pub String);

impl From<reqwest::Error> for Cut {
    fn from(e: reqwest::Error) -> Self {
        Cut(e.to_string())
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Cut {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Cut(e.to_string())
    }
}

/// What every client task of one life shares.
#[derive(Clone)]
pub struct Ctx {
    pub base: String,
    pub ws_base: String,
    pub http: reqwest::Client,
    pub ledger: Arc<Mutex<Ledger>>,
    /// Becomes `true` once the server was killed.
    pub stop: watch::Receiver<bool>,
    /// When a task first saw the connection cut; compared with the kill's
    /// instant afterwards (a cut well before it means the server dropped a
    /// client while up).
    pub cuts: Arc<Mutex<Vec<(Instant, String)>>>,
    pub seed: u64,
    pub life: u64,
}

/// How many clients of each kind a life runs.
#[derive(Clone, Copy)]
pub struct Shape {
    /// Regular users' clients (each a user of its own in this life).
    pub regular: usize,
    /// Demo users spending at once (each: one HTTP and two WebSocket clients).
    pub demos: usize,
    /// Regular users registered at most (then the registrar only logs in).
    pub max_users: usize,
}

impl Ctx {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn rng(&self, task: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ (self.life << 20) ^ (task << 8) ^ 0x5eed)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// After a cut: note it and wait for the stop signal.
    async fn cut(&self, cut: Cut) {
        self.cuts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Instant::now(), cut.0));
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }

    fn anomaly(&self, what: String) {
        self.ledger().anomaly(format!("life {}: {what}", self.life));
    }
}

/// Runs every client of one life until the stop signal (and the cut it
/// brings) ends them.
pub async fn run(ctx: Ctx, shape: Shape) {
    // Each regular client gets a user of its own for this life: users
    // rotate from life to life, new ones registered while there are few.
    let assigned: Vec<Option<usize>> = {
        let ledger = ctx.ledger();
        let n = ledger.users.iter().filter(|u| u.access.is_some()).count();
        (0..shape.regular)
            .map(|i| {
                (n >= shape.regular).then(|| {
                    let with_access: Vec<usize> = (0..ledger.users.len())
                        .filter(|&u| ledger.users[u].access.is_some())
                        .collect();
                    with_access[(ctx.life as usize * shape.regular + i) % n]
                })
            })
            .collect()
    };
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(registrar(ctx.clone(), shape.max_users)));
    for (i, user) in assigned.into_iter().enumerate() {
        tasks.push(tokio::spawn(regular(ctx.clone(), i as u64, user)));
    }
    for i in 0..shape.demos {
        tasks.push(tokio::spawn(demo_runner(ctx.clone(), i as u64)));
    }
    for task in tasks {
        let _ = task.await;
    }
}

fn words(rng: &mut StdRng) -> String {
    let n = rng.gen_range(3..=30);
    (0..n)
        .map(|_| format!("w{}", rng.gen_range(0..100_000)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_of(v: &Value) -> &'static str {
    match v.as_str() {
        Some("complete") => "complete",
        Some("cancelled") => "cancelled",
        Some("failed") => "failed",
        Some("streaming") => "streaming",
        _ => "?",
    }
}

fn acked(message: &Value) -> Option<Acked> {
    Some(Acked {
        id: message["id"].as_str()?.to_owned(),
        seq: message["seq"].as_u64()?,
        role: if message["role"] == "user" {
            "user"
        } else {
            "assistant"
        },
        text: message["text"].as_str()?.to_owned(),
        status: status_of(&message["status"]),
    })
}

/// Registers a new regular user and logs it in; its index.
async fn register(ctx: &Ctx, rng: &mut StdRng) -> Result<Option<usize>, Cut> {
    let email = format!(
        "crash-{:x}-{}-{}@example.com",
        ctx.seed,
        ctx.life,
        rng.gen::<u32>()
    );
    let password = format!("pw-{}", rng.gen::<u64>());
    let res = ctx
        .http
        .post(ctx.url("/api/auth/register/"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    match res.status().as_u16() {
        201 => {}
        // `busy`: the registration permits (argon2) are all taken.
        503 => return Ok(None),
        other => {
            ctx.anomaly(format!("register: {other}"));
            return Ok(None);
        }
    }
    let body: Value = res.json().await?;
    let Some(id) = body["user"]["id"].as_str() else {
        ctx.anomaly(format!("register: no user id in {body}"));
        return Ok(None);
    };
    let index = {
        let mut ledger = ctx.ledger();
        ledger.users.push(User {
            id: id.to_owned(),
            email,
            password,
            access: None,
            login_checked: false,
        });
        ledger.counts.registrations += 1;
        ledger.users.len() - 1
    };
    login(ctx, index).await?;
    Ok(Some(index))
}

/// Logs user `index` in (a new token family); keeps its access token.
async fn login(ctx: &Ctx, index: usize) -> Result<Option<String>, Cut> {
    let (email, password) = {
        let ledger = ctx.ledger();
        let u = &ledger.users[index];
        (u.email.clone(), u.password.clone())
    };
    let res = ctx
        .http
        .post(ctx.url("/api/auth/login/"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    match res.status().as_u16() {
        200 => {}
        // `busy`: the login permits (argon2) are all taken.
        503 => return Ok(None),
        other => {
            ctx.anomaly(format!("login of an acknowledged user: {other}"));
            return Ok(None);
        }
    }
    let body: Value = res.json().await?;
    let access = body["access"].as_str().map(str::to_owned);
    let mut ledger = ctx.ledger();
    ledger.counts.logins += 1;
    if access.is_some() {
        ledger.users[index].access = access.clone();
    }
    Ok(access)
}

/// Registers users while there are fewer than `max`, then logs existing
/// ones in again (new families).
async fn registrar(ctx: Ctx, max: usize) {
    let mut rng = ctx.rng(1);
    while !ctx.stopped() {
        let n = ctx.ledger().users.len();
        let step = if n < max {
            register(&ctx, &mut rng).await.map(drop)
        } else {
            login(&ctx, rng.gen_range(0..n)).await.map(drop)
        };
        if let Err(cut) = step {
            return ctx.cut(cut).await;
        }
    }
}

/// One regular user's client: a random mix of session, question and key
/// operations until the kill.
async fn regular(ctx: Ctx, task: u64, user: Option<usize>) {
    let mut rng = ctx.rng(100 + task);
    let user = match user {
        Some(u) => u,
        None => match register(&ctx, &mut rng).await {
            Ok(Some(u)) => u,
            Ok(None) => return,
            Err(cut) => return ctx.cut(cut).await,
        },
    };
    let Some(token) = ctx.ledger().users[user].access.clone() else {
        return;
    };
    let owner = Owner::User(user);
    let mut socket: Option<(String, Ws)> = None;
    while !ctx.stopped() {
        let roll = rng.gen_range(0..100);
        let step = match roll {
            0..=14 => create_session(&ctx, owner, &token).await.map(drop),
            15..=19 => {
                let keep: Vec<String> = socket.iter().map(|(s, _)| s.clone()).collect();
                delete_session(&ctx, owner, &token, &keep, &mut rng).await
            }
            20..=59 => ask_on_socket(&ctx, owner, &token, &mut socket, &mut rng).await,
            60..=74 => ask_http(&ctx, owner, &token, &mut rng).await.map(drop),
            75..=84 => create_key(&ctx, user, &token).await,
            85..=94 => use_key(&ctx, user, &mut rng).await,
            _ => delete_key(&ctx, user, &token, &mut rng).await,
        };
        if let Err(cut) = step {
            return ctx.cut(cut).await;
        }
    }
}

/// Creates a session; its id once acknowledged. `None` when refused (a
/// demo user's quota).
async fn create_session(ctx: &Ctx, owner: Owner, token: &str) -> Result<Option<String>, Cut> {
    let res = ctx
        .http
        .post(ctx.url("/api/sessions/"))
        .bearer_auth(token)
        .json(&json!({"title": format!("life {}", ctx.life)}))
        .send()
        .await?;
    let status = res.status().as_u16();
    if status == 429 {
        refused(ctx, owner);
        return Ok(None);
    }
    if status != 201 {
        ctx.anomaly(format!("create session: {status}"));
        return Ok(None);
    }
    let body: Value = res.json().await?;
    let Some(id) = body["id"].as_str() else {
        ctx.anomaly(format!("create session: no id in {body}"));
        return Ok(None);
    };
    let mut ledger = ctx.ledger();
    ledger.sessions.insert(
        id.to_owned(),
        Session {
            owner,
            state: State::Live,
            messages: Vec::new(),
        },
    );
    ledger.counts.sessions_created += 1;
    if let Owner::Demo(d) = owner {
        ledger.demo_admitted_http(d);
    }
    Ok(Some(id.to_owned()))
}

fn refused(ctx: &Ctx, owner: Owner) {
    if let Owner::Demo(d) = owner {
        let mut ledger = ctx.ledger();
        ledger.demos[d].exhausted = true;
        ledger.counts.demo_refusals += 1;
    } else {
        ctx.anomaly("a regular user refused quota_exceeded".into());
    }
}

/// Deletes one of `owner`'s live sessions, not one of `keep` (those a
/// socket of the same client asks in).
async fn delete_session(
    ctx: &Ctx,
    owner: Owner,
    token: &str,
    keep: &[String],
    rng: &mut StdRng,
) -> Result<(), Cut> {
    let candidates: Vec<String> = ctx
        .ledger()
        .live_sessions(owner)
        .into_iter()
        .filter(|s| !keep.contains(s))
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let id = candidates[rng.gen_range(0..candidates.len())].clone();
    set_session_state(ctx, &id, State::Doubtful);
    let res = ctx
        .http
        .delete(ctx.url(&format!("/api/sessions/{id}/")))
        .bearer_auth(token)
        .send()
        .await?;
    match res.status().as_u16() {
        204 => {
            set_session_state(ctx, &id, State::Deleted);
            let mut ledger = ctx.ledger();
            ledger.counts.sessions_deleted += 1;
            if let Owner::Demo(d) = owner {
                ledger.demo_admitted_http(d);
                ledger.demos[d].sessions.retain(|s| *s != id);
            }
        }
        429 => {
            set_session_state(ctx, &id, State::Live);
            refused(ctx, owner);
        }
        other => ctx.anomaly(format!("delete session: {other}")),
    }
    Ok(())
}

fn set_session_state(ctx: &Ctx, id: &str, state: State) {
    if let Some(s) = ctx.ledger().sessions.get_mut(id) {
        s.state = state;
    }
}

/// The whole-answer endpoint on one of `owner`'s live sessions.
async fn ask_http(
    ctx: &Ctx,
    owner: Owner,
    token: &str,
    rng: &mut StdRng,
) -> Result<Option<()>, Cut> {
    let sessions = ctx.ledger().live_sessions(owner);
    if sessions.is_empty() {
        return Ok(None);
    }
    let id = sessions[rng.gen_range(0..sessions.len())].clone();
    let text = words(rng);
    let res = ctx
        .http
        .post(ctx.url(&format!("/api/sessions/{id}/messages/")))
        .bearer_auth(token)
        .json(&json!({"text": text}))
        .send()
        .await?;
    let status = res.status().as_u16();
    if status == 429 {
        refused(ctx, owner);
        return Ok(None);
    }
    if status != 200 {
        ctx.anomaly(format!("whole answer: {status}"));
        return Ok(None);
    }
    let body: Value = res.json().await?;
    let (Some(q), Some(r)) = (acked(&body["question"]), acked(&body["reply"])) else {
        ctx.anomaly(format!("whole answer: malformed {body}"));
        return Ok(None);
    };
    if q.text != text {
        ctx.anomaly(format!("whole answer: question stored as {:?}", q.text));
    }
    let mut ledger = ctx.ledger();
    ledger.record_message(&id, q);
    ledger.record_message(&id, r);
    ledger.counts.answers_http += 1;
    if let Owner::Demo(d) = owner {
        ledger.demo_admitted_http(d);
    }
    Ok(Some(()))
}

async fn connect(ctx: &Ctx, session: &str, token: &str) -> Result<Ws, Cut> {
    let url = format!("{}/ws/sessions/{session}/?token={token}", ctx.ws_base);
    let (ws, _) = tokio_tungstenite::connect_async(url).await?;
    Ok(ws)
}

/// Asks on the client's socket, opening one on a live session first.
async fn ask_on_socket(
    ctx: &Ctx,
    owner: Owner,
    token: &str,
    socket: &mut Option<(String, Ws)>,
    rng: &mut StdRng,
) -> Result<(), Cut> {
    if socket.is_none() {
        let sessions = ctx.ledger().live_sessions(owner);
        if sessions.is_empty() {
            return Ok(());
        }
        let id = sessions[rng.gen_range(0..sessions.len())].clone();
        *socket = Some((id.clone(), connect(ctx, &id, token).await?));
    }
    let Some((session, ws)) = socket.as_mut() else {
        return Ok(());
    };
    let session = session.clone();
    match ask(ctx, ws, &session, owner, rng, 0.1).await? {
        Asked::Closed(code) => {
            *socket = None;
            // 4004: the session was deleted (never by this client: it keeps
            // its socket's session), so anything else is an anomaly.
            ctx.anomaly(format!("socket closed {code} while asking"));
        }
        Asked::Refused => refused(ctx, owner),
        Asked::Answered | Asked::Other => {}
    }
    Ok(())
}

/// How one question over a WebSocket ended.
enum Asked {
    Answered,
    Refused,
    Closed(u16),
    Other,
}

/// The next text frame as JSON, or the close code.
async fn next_frame(ws: &mut Ws) -> Result<Result<Value, u16>, Cut> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => return Err(Cut("no frame within 30 s".into())),
            Ok(None) => return Err(Cut("connection ended".into())),
            Ok(Some(frame)) => match frame? {
                Frame::Text(t) => {
                    return serde_json::from_str(t.as_str())
                        .map(Ok)
                        .map_err(|e| Cut(format!("bad frame: {e}")))
                }
                Frame::Close(f) => return Ok(Err(f.map_or(1005, |f| u16::from(f.code)))),
                _ => continue,
            },
        }
    }
}

/// One question: `message` and `done` recorded as they arrive; with
/// probability `cancel_p` a `cancel` after the first token.
async fn ask(
    ctx: &Ctx,
    ws: &mut Ws,
    session: &str,
    owner: Owner,
    rng: &mut StdRng,
    cancel_p: f64,
) -> Result<Asked, Cut> {
    let text = words(rng);
    let client_id = format!("c{}", rng.gen::<u64>());
    let cancel = rng.gen_bool(cancel_p);
    ws.send(Frame::text(
        json!({"type": "question", "text": text, "id": client_id}).to_string(),
    ))
    .await?;
    let mut question: Option<Acked> = None;
    let mut reply_text = String::new();
    let mut cancelled = false;
    let outcome = loop {
        let frame = match next_frame(ws).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(code)) => break Ok(Asked::Closed(code)),
            Err(cut) => break Err(cut),
        };
        match frame["type"].as_str() {
            Some("message") if frame["client_id"] == client_id.as_str() => {
                let Some(q) = acked(&frame["message"]) else {
                    ctx.anomaly(format!("malformed message frame {frame}"));
                    break Ok(Asked::Other);
                };
                if q.text != text {
                    ctx.anomaly(format!("question stored as {:?}", q.text));
                }
                let mut ledger = ctx.ledger();
                if let Owner::Demo(d) = owner {
                    ledger.demo_question(d, &q.id);
                }
                ledger.counts.questions_ws += 1;
                ledger.record_message(session, q.clone());
                question = Some(q);
            }
            Some("token") if question.is_some() => {
                reply_text.push_str(frame["text"].as_str().unwrap_or_default());
                if cancel && !cancelled {
                    cancelled = true;
                    ws.send(Frame::text(json!({"type": "cancel"}).to_string()))
                        .await?;
                }
            }
            Some("done") if question.is_some() => {
                let (Some(_), Some(id)) = (&question, frame["message_id"].as_str()) else {
                    break Ok(Asked::Other);
                };
                let status = status_of(&frame["status"]);
                let mut ledger = ctx.ledger();
                ledger.record_message(
                    session,
                    Acked {
                        id: id.to_owned(),
                        // Not necessarily the question's + 1: a whole
                        // answer asked meanwhile may take that number.
                        seq: 0,
                        role: "assistant",
                        text: std::mem::take(&mut reply_text),
                        status,
                    },
                );
                ledger.counts.replies_ws += 1;
                if status == "cancelled" {
                    ledger.counts.cancels += 1;
                }
                break Ok(Asked::Answered);
            }
            Some("error") => {
                break Ok(match frame["code"].as_str() {
                    Some("quota_exceeded") => Asked::Refused,
                    _ => {
                        ctx.anomaly(format!("error frame {frame}"));
                        Asked::Other
                    }
                })
            }
            _ => {}
        }
    };
    if question.is_some() && !matches!(outcome, Ok(Asked::Answered)) {
        ctx.ledger().interrupted += 1;
    }
    outcome
}

/// Creates an API key for `user`.
async fn create_key(ctx: &Ctx, user: usize, token: &str) -> Result<(), Cut> {
    let res = ctx
        .http
        .post(ctx.url("/api/auth/api-keys/"))
        .bearer_auth(token)
        .json(&json!({"name": format!("life {}", ctx.life)}))
        .send()
        .await?;
    if res.status() != 201 {
        ctx.anomaly(format!("create key: {}", res.status()));
        return Ok(());
    }
    let body: Value = res.json().await?;
    let (Some(id), Some(key)) = (body["id"].as_str(), body["key"].as_str()) else {
        ctx.anomaly(format!("create key: malformed {body}"));
        return Ok(());
    };
    let mut ledger = ctx.ledger();
    ledger.keys.push(ApiKey {
        id: id.to_owned(),
        key: key.to_owned(),
        user,
        state: State::Live,
    });
    ledger.counts.api_keys_created += 1;
    Ok(())
}

/// Authenticates with one of `user`'s keys: a live one must work, a
/// deleted one must not.
async fn use_key(ctx: &Ctx, user: usize, rng: &mut StdRng) -> Result<(), Cut> {
    let (key, state, user_id) = {
        let ledger = ctx.ledger();
        let keys: Vec<&ApiKey> = ledger
            .keys
            .iter()
            .filter(|k| k.user == user && k.state != State::Doubtful)
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let k = keys[rng.gen_range(0..keys.len())];
        (k.key.clone(), k.state, ledger.users[user].id.clone())
    };
    let res = ctx
        .http
        .get(ctx.url("/api/auth/me/"))
        .header("X-API-Key", &key)
        .send()
        .await?;
    let status = res.status().as_u16();
    match (state, status) {
        (State::Live, 200) => {
            let body: Value = res.json().await?;
            if body["id"] != user_id.as_str() {
                ctx.anomaly(format!("a key answered as another user: {body}"));
            }
        }
        (State::Deleted, 401) => {}
        (state, status) => ctx.anomaly(format!("a {state:?} API key: {status}")),
    }
    Ok(())
}

async fn delete_key(ctx: &Ctx, user: usize, token: &str, rng: &mut StdRng) -> Result<(), Cut> {
    let chosen = {
        let mut ledger = ctx.ledger();
        let live: Vec<usize> = (0..ledger.keys.len())
            .filter(|&i| ledger.keys[i].user == user && ledger.keys[i].state == State::Live)
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let i = live[rng.gen_range(0..live.len())];
        ledger.keys[i].state = State::Doubtful;
        (i, ledger.keys[i].id.clone())
    };
    let res = ctx
        .http
        .delete(ctx.url(&format!("/api/auth/api-keys/{}/", chosen.1)))
        .bearer_auth(token)
        .send()
        .await?;
    if res.status() == 204 {
        let mut ledger = ctx.ledger();
        ledger.keys[chosen.0].state = State::Deleted;
        ledger.counts.api_keys_deleted += 1;
    } else {
        ctx.anomaly(format!("delete key: {}", res.status()));
    }
    Ok(())
}

/// Demo users, one after another: each spends its quota over HTTP and two
/// WebSockets at once until refused; then the next. A demo user the kill
/// interrupted goes on in the next life.
async fn demo_runner(ctx: Ctx, task: u64) {
    let mut rng = ctx.rng(1000 + task);
    while !ctx.stopped() {
        let step = match pick_demo(&ctx, task as usize) {
            Some(d) => spend(&ctx, d, &mut rng).await,
            None => new_demo(&ctx).await.map(drop),
        };
        if let Err(cut) = step {
            return ctx.cut(cut).await;
        }
    }
}

/// A demo user with quota left that no other runner has (runner `task`
/// takes every `task`-th of them), if any.
fn pick_demo(ctx: &Ctx, task: usize) -> Option<usize> {
    let ledger = ctx.ledger();
    (0..ledger.demos.len())
        .filter(|&d| !ledger.demos[d].exhausted && d % 2 == task % 2)
        .min()
}

async fn new_demo(ctx: &Ctx) -> Result<Option<usize>, Cut> {
    let res = ctx
        .http
        .post(ctx.url("/api/auth/demo/"))
        .json(&json!({}))
        .send()
        .await?;
    if res.status() != 200 {
        ctx.anomaly(format!("demo: {}", res.status()));
        return Ok(None);
    }
    let body: Value = res.json().await?;
    let (Some(id), Some(access)) = (body["user"]["id"].as_str(), body["access"].as_str()) else {
        ctx.anomaly(format!("demo: malformed {body}"));
        return Ok(None);
    };
    let mut ledger = ctx.ledger();
    // Runners take demo users by parity: keep the new one on this side.
    ledger.demos.push(Demo {
        id: id.to_owned(),
        access: access.to_owned(),
        admitted: 0,
        questions: Default::default(),
        exhausted: false,
        sessions: Vec::new(),
    });
    ledger.counts.demo_users += 1;
    Ok(Some(ledger.demos.len() - 1))
}

/// Demo user `d` spends until refused: two sessions first (counted), then
/// its HTTP client and two WebSocket clients at once.
async fn spend(ctx: &Ctx, d: usize, rng: &mut StdRng) -> Result<(), Cut> {
    let owner = Owner::Demo(d);
    let token = ctx.ledger().demos[d].access.clone();
    while ctx.ledger().demos[d].sessions.len() < 2 {
        match create_session(ctx, owner, &token).await? {
            Some(id) => ctx.ledger().demos[d].sessions.push(id),
            None => {
                // Refused: spent. Any other failure was noted; stop here.
                ctx.ledger().demos[d].exhausted = true;
                return Ok(());
            }
        }
    }
    let sessions = ctx.ledger().demos[d].sessions.clone();
    let seed: u64 = rng.gen();
    let http = demo_http(ctx.clone(), d, token.clone(), seed);
    let sockets = sessions
        .into_iter()
        .take(2)
        .enumerate()
        .map(|(i, s)| demo_socket(ctx.clone(), d, token.clone(), s, seed ^ (i as u64 + 1)));
    let (http, sockets) =
        futures_util::future::join(http, futures_util::future::join_all(sockets)).await;
    http?;
    for s in sockets {
        s?;
    }
    if !ctx.stopped() {
        ctx.ledger().demos[d].exhausted = true;
    }
    Ok(())
}

fn exhausted(ctx: &Ctx, d: usize) -> bool {
    ctx.ledger().demos[d].exhausted
}

async fn demo_http(ctx: Ctx, d: usize, token: String, seed: u64) -> Result<(), Cut> {
    let mut rng = StdRng::seed_from_u64(seed);
    let owner = Owner::Demo(d);
    while !ctx.stopped() && !exhausted(&ctx, d) {
        match rng.gen_range(0..10) {
            0..=5 => {
                ask_http(&ctx, owner, &token, &mut rng).await?;
            }
            6..=7 => {
                if let Some(id) = create_session(&ctx, owner, &token).await? {
                    ctx.ledger().demos[d].sessions.push(id);
                }
            }
            _ => {
                // Never one of the two its sockets ask in.
                let keep: Vec<String> = ctx.ledger().demos[d]
                    .sessions
                    .iter()
                    .take(2)
                    .cloned()
                    .collect();
                delete_session(&ctx, owner, &token, &keep, &mut rng).await?;
            }
        }
    }
    Ok(())
}

async fn demo_socket(
    ctx: Ctx,
    d: usize,
    token: String,
    session: String,
    seed: u64,
) -> Result<(), Cut> {
    let mut rng = StdRng::seed_from_u64(seed);
    let owner = Owner::Demo(d);
    let mut ws = connect(&ctx, &session, &token).await?;
    while !ctx.stopped() && !exhausted(&ctx, d) {
        match ask(&ctx, &mut ws, &session, owner, &mut rng, 0.0).await? {
            Asked::Answered => {}
            Asked::Refused => {
                refused(&ctx, owner);
                break;
            }
            Asked::Closed(code) => {
                ctx.anomaly(format!("demo socket closed {code}"));
                break;
            }
            Asked::Other => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}
