//! Test support: [`TestServer`] runs the real `palaver` binary on a loopback
//! port with its own temporary data directory and working directory, and
//! captures everything it prints; [`palaver`] runs one CLI command.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_palaver");

/// How long a server may take to print its address (a cold debug binary on
/// a loaded 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server; killed on drop if still running.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub data: PathBuf,
    /// Working directory of the process (holds `config.toml` when given).
    pub workdir: PathBuf,
    output: Arc<Mutex<String>>,
    _tmp: Option<TempDir>,
}

/// Options for starting a server.
#[derive(Default)]
pub struct ServerOptions {
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Contents of `config.toml` in the working directory.
    pub config_toml: Option<String>,
    /// Reuse this data directory (e.g. after a restart).
    pub data: Option<PathBuf>,
}

impl ServerOptions {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn config_toml(mut self, text: &str) -> Self {
        self.config_toml = Some(text.into());
        self
    }

    /// Registration open and unthrottled (tests register many users from
    /// one address; the registration limits have tests of their own).
    pub fn open_registration(self) -> Self {
        self.env("PALAVER_AUTH__ALLOW_REGISTRATION", "true")
            .env("PALAVER_AUTH__REGISTRATIONS_PER_IP_PER_HOUR", "0")
            .env("PALAVER_AUTH__REGISTRATIONS_PER_HOUR", "0")
    }

    pub fn data(mut self, dir: &Path) -> Self {
        self.data = Some(dir.to_path_buf());
        self
    }
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with(ServerOptions::default())
    }

    pub fn with(options: ServerOptions) -> TestServer {
        Self::try_with(options).unwrap_or_else(|output| panic!("server did not start:\n{output}"))
    }

    /// Starts a server; `Err(everything it printed)` if it exits or stays
    /// silent instead of printing its address.
    pub fn try_with(options: ServerOptions) -> Result<TestServer, String> {
        let tmp = TempDir::new().expect("tempdir");
        let workdir = tmp.path().join("work");
        std::fs::create_dir_all(&workdir).unwrap();
        let data = options
            .data
            .clone()
            .unwrap_or_else(|| tmp.path().join("data"));
        if let Some(text) = &options.config_toml {
            std::fs::write(workdir.join("config.toml"), text).unwrap();
        }
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&workdir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("serve")
            .args(["--data", data.to_str().unwrap()]);
        if !options.args.iter().any(|a| a == "--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        cmd.args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn palaver");

        let output = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        pump(stdout, output.clone(), Some(addr_tx));
        pump(stderr, output.clone(), None);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(base) = addr_rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(TestServer {
                    child,
                    base,
                    data,
                    workdir,
                    output,
                    _tmp: Some(tmp),
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                // Let the pumps drain what it printed.
                std::thread::sleep(Duration::from_millis(100));
                return Err(output.lock().unwrap().clone());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "(no address within {START_TIMEOUT:?})\n{}",
                    output.lock().unwrap()
                ));
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Everything printed once `needle` appears (stdout and stderr are read
    /// by two threads, so a line on one may lag a later one on the other).
    pub fn output_once(&self, needle: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let output = self.output();
            if output.contains(needle) {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "never printed {needle:?}:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.pid()), Signal::SIGTERM).expect("send SIGTERM");
        self.wait(Duration::from_secs(30))
    }

    /// Waits for an exit already under way (after a signal the test sent).
    pub fn terminate_wait(mut self) -> ExitStatus {
        self.wait(Duration::from_secs(30))
    }

    /// SIGKILL, then wait: a crash.
    pub fn kill(mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL");
        self.wait(Duration::from_secs(30))
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies a child's stream into `sink`; the first `listening on http://…`
/// line's URL goes to `addr`.
fn pump(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<String>>,
    addr: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        let mut addr = addr;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(pos) = line.find("listening on http://") {
                if let Some(tx) = addr.take() {
                    let url = line[pos + "listening on ".len()..].trim().to_string();
                    let _ = tx.send(url);
                }
            }
            let mut out = sink.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
}

/// Runs `palaver ARGS` to completion in `workdir`, with `stdin` piped in and
/// only the given environment.
pub fn palaver(workdir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn palaver");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().expect("palaver output")
}

/// The programs the tests run besides cargo, one per line: tool, source
/// (`apt` or `venv`), package, why. `scripts/test` installs from this list.
const TOOLS: &str = include_str!("../../scripts/test-tools.txt");

/// Where `tool` is: on PATH, or in the workspace's `.venv/bin`. A missing tool
/// fails the test with one message naming the package that provides it; so
/// does a tool not listed in scripts/test-tools.txt (the script would not
/// install it).
#[track_caller]
pub fn require_tool(tool: &str) -> PathBuf {
    let row = TOOLS
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&tool) && fields.len() >= 3);
    let Some(row) = row else {
        panic!("{tool} is not listed in scripts/test-tools.txt: add it there so scripts/test installs it");
    };
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(tool);
    if let Some(path) = on_path(tool).or_else(|| is_executable(&venv).then_some(venv)) {
        return path;
    }
    match row[1] {
        "venv" => panic!(
            "{tool} not found: install the Python package `{}` into .venv/ with its pip, or run ./scripts/test, which does",
            row[2]
        ),
        _ => panic!(
            "{tool} not found: install the Debian package `{}`, or run ./scripts/test, which installs it",
            row[2]
        ),
    }
}

/// `name` as a shell finds it: the first executable file so named on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An async HTTP client with no connection reuse surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Asserts a contract error body: `{"error": <non-empty>, "code": code}`.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let body: serde_json::Value = res.json().await.expect("JSON error body");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|s| !s.is_empty()),
        "error sentence missing: {body}"
    );
    body
}

/// The HS256 secret the auth tests configure, so they can forge tokens.
pub const SECRET: &str = "it-secret-0123456789-0123456789-0123456789-0123456789";

/// A server with a known secret and open registration.
pub fn auth_options() -> ServerOptions {
    ServerOptions::default()
        .env("PALAVER_AUTH__SECRET", SECRET)
        .open_registration()
}

pub async fn register(server: &TestServer, email: &str, password: &str) -> serde_json::Value {
    let res = client()
        .post(server.url("/api/auth/register/"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "register {email}");
    res.json().await.unwrap()
}

/// Logs in; the whole 200 body.
pub async fn login(server: &TestServer, email: &str, password: &str) -> serde_json::Value {
    let res = client()
        .post(server.url("/api/auth/login/"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login {email}");
    res.json().await.unwrap()
}

/// Registers and logs in a fresh user; the login body.
pub async fn signed_in(server: &TestServer, email: &str) -> serde_json::Value {
    register(server, email, "correct horse battery").await;
    login(server, email, "correct horse battery").await
}

/// `GET /api/auth/me/` with a bearer token.
pub async fn me(server: &TestServer, access: &str) -> reqwest::Response {
    client()
        .get(server.url("/api/auth/me/"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The payload of a JWT, without verifying it.
pub fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A WebSocket client connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for one frame (generous: a loaded 2-core machine).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// Opens `path` (e.g. `/ws/sessions/ID/?ticket=…`) with extra headers.
pub async fn ws_open(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", server.base.replace("http://", "ws://"));
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request).await
}

/// Connects and returns the socket once `connected` arrived (and the frame).
pub async fn ws_connected(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (Ws, serde_json::Value) {
    let (mut ws, _) = ws_open(server, path, headers).await.expect("handshake");
    let first = next_frame(&mut ws).await;
    assert_eq!(first["type"], "connected", "first frame: {first}");
    (ws, first)
}

/// What the server sent next, skipping pings.
pub enum Incoming {
    Json(serde_json::Value),
    Close(u16, String),
    Ended,
}

pub async fn next_incoming(ws: &mut Ws) -> Incoming {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let item = tokio::time::timeout(FRAME_TIMEOUT, ws.next())
            .await
            .expect("a frame within the timeout");
        match item {
            Some(Ok(Message::Text(text))) => {
                return Incoming::Json(serde_json::from_str(text.as_str()).expect("JSON frame"))
            }
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) => Incoming::Close(u16::from(f.code), f.reason.to_string()),
                    None => Incoming::Close(1005, String::new()),
                }
            }
            Some(Ok(Message::Binary(_))) => panic!("the server sent a binary frame"),
            Some(Ok(_)) => continue, // ping, pong
            Some(Err(_)) | None => return Incoming::Ended,
        }
    }
}

/// The next JSON frame; panics on a close.
pub async fn next_frame(ws: &mut Ws) -> serde_json::Value {
    match next_incoming(ws).await {
        Incoming::Json(v) => v,
        Incoming::Close(code, reason) => {
            panic!("closed {code} {reason:?} while a frame was expected")
        }
        Incoming::Ended => panic!("the connection ended while a frame was expected"),
    }
}

/// The close code the server sends next (JSON frames before it are skipped).
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match next_incoming(ws).await {
            Incoming::Json(_) => continue,
            Incoming::Close(code, _) => return code,
            Incoming::Ended => panic!("the connection ended without a close frame"),
        }
    }
}

pub async fn send_json(ws: &mut Ws, value: serde_json::Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        value.to_string(),
    ))
    .await
    .expect("send");
}

/// Creates a session for `token`; its id.
pub async fn new_session(server: &TestServer, token: &str) -> String {
    let res = client()
        .post(server.url("/api/sessions/"))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: serde_json::Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// A ticket for `token`.
pub async fn ticket(server: &TestServer, token: &str) -> String {
    let res = client()
        .post(server.url("/api/auth/ws-ticket/"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    body["ticket"].as_str().unwrap().to_owned()
}

/// Reads frames until `done`; returns everything read, `done` last.
pub async fn until_done(ws: &mut Ws) -> Vec<serde_json::Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(ws).await;
        let done = frame["type"] == "done";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// Sends a request that must succeed at the transport level and reads its
/// JSON body (whatever the status).
pub trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::RequestBuilder {
    async fn json_value(self) -> serde_json::Value {
        self.send().await.unwrap().json().await.unwrap()
    }
}
