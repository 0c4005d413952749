//! Tokens from another issuer (API.md §2, `[[auth.external]]`) against the
//! real server: a Django app's simplejwt tokens (minted by simplejwt itself)
//! over HTTP and every WebSocket form; an identity provider's RS256 tokens
//! from a JWKS this test serves (keys by `kid`, rotation, one refetch, an
//! endpoint that hangs or is gone); every cross-issuer attack and the forge
//! set; provisioning, disable/enable/delete by `--external`; refresh and
//! logout refused; bad entries refusing the start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{assert_all_refused, forgeries};
use crate::support::{
    assert_error, auth_options, claims_of, client, close_code, me, new_session, next_frame, now,
    palaver, require_tool, send_json, text, ticket, until_done, ws_connected, ws_open, JsonValue,
    ServerOptions, TestServer, SECRET,
};

/// A Django project's `SECRET_KEY` (simplejwt signs with it by default).
pub(crate) const DJANGO_SECRET: &str =
    "django-insecure-7x!q2m#v9p$w4k&z8r@t6y^u1i*o3e%a5s(d0f)g-h+j=l";
const FLASK_SECRET: &str = "flask-jwt-extended-secret-flask-jwt-extended-secret";
const KC_ISSUER: &str = "https://idp.example.com/realms/main";
const KC2_ISSUER: &str = "https://other-idp.example.com/realms/main";
const PEM_ISSUER: &str = "https://pem-idp.example.com";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt")).join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// The entry a Django project with simplejwt's defaults needs.
pub(crate) fn django_entry() -> String {
    format!("[[auth.external]]\nname = \"django\"\nsecret = \"{DJANGO_SECRET}\"\n")
}

/// palaver with a known secret of its own, the echo engine, and `entries`.
fn with_entries(entries: &str) -> ServerOptions {
    auth_options()
        .env("PALAVER_ANALYSIS__ENGINE", "echo")
        .config_toml(entries)
}

/// Tokens minted by djangorestframework-simplejwt itself, with a Django
/// project's defaults (`tests/external/simplejwt_mint.py`): one per
/// `(type, user_id, lifetime_seconds)`.
async fn simplejwt(tokens: &[(&str, i64, i64)]) -> Vec<String> {
    // scripts/test installs simplejwt (and Django) into .venv/; its Python
    // sits beside django-admin.
    let django_admin = require_tool("django-admin");
    let python = ["python", "python3"]
        .iter()
        .map(|name| django_admin.with_file_name(name))
        .find(|p| p.exists())
        .expect("a Python beside django-admin");
    let spec = json!({
        "signing_key": DJANGO_SECRET,
        "tokens": tokens.iter().map(|(kind, user, lifetime)| json!({
            "type": kind, "user_id": user, "lifetime_seconds": lifetime,
        })).collect::<Vec<_>>(),
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/external/simplejwt_mint.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the simplejwt script");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(spec.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "simplejwt: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON list of tokens")
}

/// An HS256 token with `claims`, signed with `secret`.
fn hs(claims: &Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// What simplejwt puts in an access token (before 5.0 `user_id` was the
/// integer itself; since, its string): HS256, no `iss`.
fn simplejwt_claims(user_id: Value, lifetime: i64) -> Value {
    let now = now() as i64;
    json!({"token_type": "access", "exp": now + lifetime, "iat": now,
           "jti": uuid::Uuid::new_v4().simple().to_string(), "user_id": user_id})
}

/// Minted in Rust exactly as simplejwt mints an access token.
pub(crate) fn django_token(user_id: Value) -> String {
    hs(
        &simplejwt_claims(user_id, 300),
        Algorithm::HS256,
        DJANGO_SECRET,
    )
}

/// An identity provider's access token: `sub`, `aud`, `iss`, RS256 with a
/// fixture key, `kid` in the header.
fn idp_token(issuer: &str, sub: &str, kid: Option<&str>, key: &str) -> String {
    let now = now();
    let claims = json!({"iss": issuer, "aud": "palaver", "sub": sub, "exp": now + 300,
                        "iat": now, "typ": "Bearer", "azp": "chat"});
    rs256(&claims, kid, key)
}

fn rs256(claims: &Value, kid: Option<&str>, key: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_rsa_pem(&fixture_bytes(key)).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

async fn whoami(server: &TestServer, token: &str) -> Value {
    let res = me(server, token).await;
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    res.json().await.unwrap()
}

/// A JWKS endpoint on loopback, counting the requests it answers. It can be
/// given new keys (rotation), made to hang (accept, never answer), or
/// stopped (connections refused). It runs on a thread of its own, so it
/// answers while the test blocks (starting palaver, running the CLI).
struct JwksServer {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    hang: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl JwksServer {
    /// Serves the JWKs of the named fixtures (`rsa-a`, …).
    fn start(kids: &[&str]) -> JwksServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = Arc::new(Mutex::new(Vec::new()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let hang = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (k, f, h) = (keys.clone(), fetches.clone(), hang.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((socket, _)) = listener.accept().await else {
                            return;
                        };
                        tokio::spawn(answer(socket, k.clone(), f.clone(), h.clone()));
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime closes the listener and every connection.
        });
        let server = JwksServer {
            addr,
            keys,
            fetches,
            hang,
            stop,
            thread,
        };
        server.serve(kids);
        server
    }

    fn serve(&self, kids: &[&str]) {
        *self.keys.lock().unwrap() = kids
            .iter()
            .map(|kid| serde_json::from_slice(&fixture_bytes(&format!("{kid}.jwk.json"))).unwrap())
            .collect();
    }

    fn url(&self) -> String {
        format!(
            "http://{}/realms/main/protocol/openid-connect/certs",
            self.addr
        )
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn hang(&self) {
        self.hang.store(true, Ordering::SeqCst);
    }

    /// Stops listening: connections are refused from now on.
    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

/// Answers one request: the keys as a JWKS, or (hanging) nothing, ever.
async fn answer(
    mut socket: tokio::net::TcpStream,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    hang: Arc<AtomicBool>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    fetches.fetch_add(1, Ordering::SeqCst);
    if hang.load(Ordering::SeqCst) {
        // Accepted, never answered: the socket stays open.
        std::future::pending::<()>().await;
    }
    let body = json!({"keys": *keys.lock().unwrap()}).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
}

/// The entry of an identity provider publishing a JWKS (Keycloak-like).
fn jwks_entry(name: &str, issuer: &str, url: &str) -> String {
    format!(
        "[[auth.external]]\nname = \"{name}\"\nissuer = \"{issuer}\"\naudience = \"palaver\"\n\
         algorithms = [\"RS256\"]\njwks_url = \"{url}\"\nuser_claim = \"sub\"\ntoken_type_claim = \"\"\n"
    )
}

#[tokio::test]
async fn simplejwt_tokens_chat_over_http_and_every_websocket_form() {
    let server = TestServer::with(with_entries(&django_entry()));
    let minted = simplejwt(&[
        ("access", 42, 300),
        ("refresh", 42, 86_400),
        ("access", 42, -120),
        ("access", 42, 900),
        ("access", 43, 300),
    ])
    .await;
    let [access, refresh, expired, newer, other] = &minted[..] else {
        panic!("five tokens");
    };
    // What simplejwt made: HS256, no `iss`, its own claims.
    let claims = claims_of(access);
    assert!(claims.get("iss").is_none(), "{claims}");
    assert_eq!(claims["token_type"], "access");
    assert!(claims["jti"].is_string() && claims["iat"].is_number());

    // HTTP: the first token provisions the user.
    let who = whoami(&server, access).await;
    assert_eq!(who["external"], json!({"issuer": "django", "id": "42"}));
    assert_eq!(
        (who["email"].as_str(), who["is_demo"].as_bool()),
        (Some(""), Some(false))
    );
    let user_id = who["id"].as_str().unwrap().to_owned();
    // simplejwt before 5.0 wrote the integer: the same user.
    assert_eq!(
        whoami(&server, &django_token(json!(42))).await["id"],
        user_id.as_str()
    );
    assert_ne!(whoami(&server, other).await["id"], user_id.as_str());
    assert_error(me(&server, refresh).await, 401, "token_invalid").await;
    assert_error(me(&server, expired).await, 401, "token_expired").await;

    // The session and a ticket are asked for with the Django token, as the
    // browser does; then the socket, and a question answered.
    let session = new_session(&server, access).await;
    let t = ticket(&server, access).await;
    let (mut ws, connected) =
        ws_connected(&server, &format!("/ws/sessions/{session}/?ticket={t}"), &[]).await;
    assert_eq!(connected["user"]["id"], user_id.as_str());
    assert_eq!(connected["expires_at"], claims["exp"]);
    send_json(
        &mut ws,
        json!({"type": "question", "text": "hello from django"}),
    )
    .await;
    let frames = until_done(&mut ws).await;
    assert_eq!(frames.last().unwrap()["status"], "complete");

    // In-band refresh: a newer access token of the same user is taken ...
    send_json(&mut ws, json!({"type": "refresh", "token": newer})).await;
    let refreshed = next_frame(&mut ws).await;
    assert_eq!(refreshed["type"], "refreshed", "{refreshed}");
    assert_eq!(refreshed["expires_at"], claims_of(newer)["exp"]);
    // ... another user's, a refresh token or an expired one are not.
    for bad in [other, refresh, expired] {
        send_json(&mut ws, json!({"type": "refresh", "token": bad})).await;
        let error = next_frame(&mut ws).await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some("token_invalid")),
            "{error}"
        );
    }

    // Every other credential form of the socket takes the token too.
    let bearer = format!("Bearer {access}");
    let protocol = format!("palaver.v1, bearer.{access}");
    let path = format!("/ws/sessions/{session}/");
    for (query, headers) in [
        (format!("?token={access}"), vec![]),
        (
            String::new(),
            vec![("sec-websocket-protocol", protocol.as_str())],
        ),
        (String::new(), vec![("authorization", bearer.as_str())]),
    ] {
        let (_ws, connected) = ws_connected(&server, &format!("{path}{query}"), &headers).await;
        assert_eq!(connected["user"]["id"], user_id.as_str());
    }
    for bad in [refresh, expired] {
        let (mut ws, _) = ws_open(&server, &format!("{path}?token={bad}"), &[])
            .await
            .unwrap();
        assert_eq!(close_code(&mut ws).await, 4001);
    }
    // Ownership is unchanged: user 43 cannot open user 42's session.
    let (mut ws, _) = ws_open(&server, &format!("{path}?token={other}"), &[])
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 4004);

    // Refresh and logout are the issuer's: 401 token_invalid, both tokens.
    for endpoint in ["/api/auth/refresh/", "/api/auth/logout/"] {
        for token in [access, refresh] {
            let res = client()
                .post(server.url(endpoint))
                .json(&json!({"refresh": token}))
                .send()
                .await
                .unwrap();
            assert_error(res, 401, "token_invalid").await;
        }
    }
    // The token still works: nothing above revoked anything.
    whoami(&server, access).await;

    // Counted per source and outcome.
    let scrape = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome: &str| {
        crate::metrics::sample(
            &scrape,
            "palaver_auth_external_verifications_total",
            &[("source", "django"), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert!(count("ok") >= 8.0, "{scrape}");
    assert!(
        count("invalid") >= 2.0 && count("expired") >= 2.0,
        "{scrape}"
    );
}

#[tokio::test]
async fn first_requests_at_once_make_one_user_whom_the_cli_disables_enables_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = || with_entries(&django_entry()).data(&data);
    let server = TestServer::with(options());
    let token = django_token(json!(1001));
    let requests = (0..16).map(|_| me(&server, &token));
    let mut ids = std::collections::HashSet::new();
    for res in futures_util::future::join_all(requests).await {
        assert_eq!(res.status(), 200);
        ids.insert(
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 1, "16 first requests at once made {ids:?}");
    let user_id = ids.into_iter().next().unwrap();
    // It owns things, like any user: a session (with a message) and a key.
    let session = new_session(&server, &token).await;
    let res = client()
        .post(server.url(&format!("/api/sessions/{session}/messages/")))
        .bearer_auth(&token)
        .json(&json!({"text": "remember me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let key: Value = client()
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(&token)
        .json(&json!({"name": "bot"}))
        .json_value()
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    assert_eq!(server.terminate().code(), Some(0));

    let workdir = dir.path();
    let data_arg = data.to_str().unwrap();
    let cli = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--data", data_arg]);
        palaver(workdir, &full, &[], "")
    };
    let list = text(&cli(&["user", "list"]).stdout);
    let row = list
        .lines()
        .find(|l| l.contains(&user_id))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("django:1001") && row.contains(" django "),
        "{row}"
    );
    assert_eq!(list.lines().count(), 2, "one user: {list}");

    let out = cli(&["user", "disable", "--external", "django:1001"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("disabled django:1001"),
        "{}",
        text(&out.stdout)
    );
    let server = TestServer::with(options());
    assert_error(me(&server, &token).await, 403, "account_disabled").await;
    let (mut ws, _) = ws_open(
        &server,
        &format!("/ws/sessions/{session}/?token={token}"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, 4002);
    // Disabling deleted its key (as for palaver's own users).
    let res = client()
        .get(server.url("/api/auth/me/"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_invalid").await;
    assert_eq!(server.terminate().code(), Some(0));

    let out = cli(&["user", "enable", "--external", "django:1001"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let server = TestServer::with(options());
    assert_eq!(whoami(&server, &token).await["id"], user_id.as_str());
    assert_eq!(server.terminate().code(), Some(0));

    for (args, needle) in [
        (vec!["user", "delete", "--external", "django"], "NAME:ID"),
        (
            vec!["user", "delete", "--external", "django:9999"],
            "no user django:9999",
        ),
        (
            vec![
                "user",
                "delete",
                "--external",
                "django:1001",
                "--email",
                "a@b.c",
            ],
            "cannot be used with",
        ),
    ] {
        let out = cli(&args);
        assert_eq!(
            out.status.code(),
            Some(if needle == "cannot be used with" {
                2
            } else {
                1
            })
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = cli(&["user", "delete", "--external", "django:1001"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("deleted django:1001"));
    {
        let store = palaver_storage::Store::open(&palaver_storage::StoreConfig {
            path: data.clone(),
            cache_bytes: 8 << 20,
            fsync: false,
        })
        .unwrap();
        let gone = store.users().get(user_id.parse().unwrap()).unwrap();
        assert!(gone.is_none());
        let identity = palaver_storage::ExternalIdentity {
            issuer: "django".into(),
            id: "1001".into(),
        };
        assert!(store.users().find_by_external(&identity).unwrap().is_none());
        assert!(store
            .sessions()
            .get(session.parse().unwrap())
            .unwrap()
            .is_none());
        assert!(store.api_keys().list_all().unwrap().is_empty());
    }
    // The issuer still vouches for the user: a new, empty account.
    let server = TestServer::with(options());
    let fresh = whoami(&server, &token).await;
    assert_ne!(fresh["id"], user_id.as_str());
    let sessions: Value = client()
        .get(server.url("/api/sessions/"))
        .bearer_auth(&token)
        .json_value()
        .await;
    assert_eq!(sessions["sessions"], json!([]));
}

#[tokio::test]
async fn jwks_keys_are_chosen_by_kid_and_an_unknown_kid_refetches_once() {
    let jwks = JwksServer::start(&["rsa-a", "rsa-b"]);
    let server = TestServer::with(with_entries(&jwks_entry(
        "keycloak",
        KC_ISSUER,
        &jwks.url(),
    )));
    let ann = whoami(
        &server,
        &idp_token(KC_ISSUER, "ann-uuid", Some("rsa-a"), "rsa-a.key.pem"),
    )
    .await;
    assert_eq!(
        ann["external"],
        json!({"issuer": "keycloak", "id": "ann-uuid"})
    );
    let bob = whoami(
        &server,
        &idp_token(KC_ISSUER, "bob-uuid", Some("rsa-b"), "rsa-b.key.pem"),
    )
    .await;
    assert_ne!(ann["id"], bob["id"]);
    assert_eq!(jwks.fetches(), 1, "the start's fetch serves both keys");
    // A kid naming one key, signed by the other.
    assert_error(
        me(
            &server,
            &idp_token(KC_ISSUER, "ann-uuid", Some("rsa-a"), "rsa-b.key.pem"),
        )
        .await,
        401,
        "token_invalid",
    )
    .await;

    // Rotation: the provider publishes key c and signs with it. Sixteen
    // requests at once meet the unknown kid: one refetch serves them all.
    jwks.serve(&["rsa-a", "rsa-b", "rsa-c"]);
    let rotated = idp_token(KC_ISSUER, "ann-uuid", Some("rsa-c"), "rsa-c.key.pem");
    let requests = (0..16).map(|_| me(&server, &rotated));
    for res in futures_util::future::join_all(requests).await {
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap()["id"], ann["id"]);
    }
    assert_eq!(jwks.fetches(), 2, "one refetch for sixteen requests");

    // A kid nobody published, sixteen times: within 30 s of the last
    // refetch, none is made.
    let unknown = idp_token(KC_ISSUER, "ann-uuid", Some("rsa-d"), "rsa-c.key.pem");
    let requests = (0..16).map(|_| me(&server, &unknown));
    for res in futures_util::future::join_all(requests).await {
        assert_error(res, 401, "token_invalid").await;
    }
    assert_eq!(jwks.fetches(), 2);

    // The endpoint goes away: the keys fetched before still verify, on
    // HTTP and on a socket; an unknown kid is refused at once.
    jwks.stop();
    whoami(
        &server,
        &idp_token(KC_ISSUER, "bob-uuid", Some("rsa-b"), "rsa-b.key.pem"),
    )
    .await;
    let session = new_session(&server, &rotated).await;
    ws_connected(
        &server,
        &format!("/ws/sessions/{session}/?token={rotated}"),
        &[],
    )
    .await;
    let started = Instant::now();
    let (mut ws, _) = ws_open(
        &server,
        &format!("/ws/sessions/{session}/?token={unknown}"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, 4001);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // The fetches and the keys are in the metrics, labelled by source.
    let scrape = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let check = crate::metrics::promtool(&scrape);
    assert!(check.status.success(), "promtool: {}", text(&check.stderr));
    let value = |name: &str, labels: &[(&str, &str)]| crate::metrics::sample(&scrape, name, labels);
    assert_eq!(
        value(
            "palaver_auth_jwks_fetches_total",
            &[("source", "keycloak"), ("outcome", "ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value("palaver_auth_jwks_keys", &[("source", "keycloak")]),
        Some(3.0)
    );
    assert!(
        value(
            "palaver_auth_external_verifications_total",
            &[("source", "keycloak"), ("outcome", "invalid")]
        )
        .is_some_and(|n| n >= 17.0),
        "{scrape}"
    );
}

#[tokio::test]
async fn a_jwks_endpoint_that_hangs_never_hangs_a_handshake() {
    let jwks = JwksServer::start(&["rsa-a"]);
    let server = TestServer::with(with_entries(&jwks_entry(
        "keycloak",
        KC_ISSUER,
        &jwks.url(),
    )));
    let cached = idp_token(KC_ISSUER, "ann-uuid", Some("rsa-a"), "rsa-a.key.pem");
    let session = new_session(&server, &cached).await;
    assert_eq!(jwks.fetches(), 1, "{}", server.output());
    jwks.hang();

    // The unknown kid's fetch is accepted and never answered: the fetch
    // gives up (2 s) and the handshake is refused, not held.
    let unknown = idp_token(KC_ISSUER, "ann-uuid", Some("rsa-b"), "rsa-b.key.pem");
    let started = Instant::now();
    let (mut ws, _) = ws_open(
        &server,
        &format!("/ws/sessions/{session}/?token={unknown}"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, 4001);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "the handshake waited {waited:?}"
    );
    assert_eq!(jwks.fetches(), 2, "the fetch was made (and hung)");
    // Meanwhile and after, the cached key works.
    ws_connected(
        &server,
        &format!("/ws/sessions/{session}/?token={cached}"),
        &[],
    )
    .await;
    whoami(&server, &cached).await;
    let log = server.output_once("JWKS fetch failed");
    assert!(log.contains("keycloak"), "{log}");
}

#[tokio::test]
async fn tokens_crossing_issuers_are_refused() {
    let kc = JwksServer::start(&["rsa-a", "rsa-b"]);
    let kc2 = JwksServer::start(&["rsa-c"]);
    let entries = format!(
        "{}[[auth.external]]\nname = \"flask\"\nissuer = \"flask-app\"\nsecret = \"{FLASK_SECRET}\"\n\
         user_claim = \"sub\"\ntoken_type_claim = \"type\"\n{}{}\
         [[auth.external]]\nname = \"pem\"\nissuer = \"{PEM_ISSUER}\"\nalgorithms = [\"RS256\"]\n\
         public_key = \"{}\"\nuser_claim = \"sub\"\ntoken_type_claim = \"\"\n",
        django_entry(),
        jwks_entry("keycloak", KC_ISSUER, &kc.url()),
        jwks_entry("other-idp", KC2_ISSUER, &kc2.url()),
        fixture("rsa-a.pub.pem").display(),
    );
    let server = TestServer::with(with_entries(&entries));
    let ann = crate::support::signed_in(&server, "ann@example.com").await;
    let own = ann["access"].as_str().unwrap();
    let now = now();

    // Each source's genuine token works (so each refusal below is the
    // attack's).
    let flask_claims = json!({"iss": "flask-app", "sub": "7", "type": "access", "exp": now + 300});
    let genuine = [
        own.to_owned(),
        django_token(json!(5)),
        hs(&flask_claims, Algorithm::HS256, FLASK_SECRET),
        idp_token(KC_ISSUER, "k1", Some("rsa-a"), "rsa-a.key.pem"),
        idp_token(KC2_ISSUER, "k2", Some("rsa-c"), "rsa-c.key.pem"),
        rs256(
            &json!({"iss": PEM_ISSUER, "sub": "p1", "exp": now + 300}),
            None,
            "rsa-a.key.pem",
        ),
    ];
    for token in &genuine {
        whoami(&server, token).await;
    }
    let (kc_fetches, kc2_fetches) = (kc.fetches(), kc2.fetches());

    let mut palaver_claims = claims_of(own);
    palaver_claims["exp"] = json!(now + 300);
    let mut no_iss = palaver_claims.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    let pem_public = String::from_utf8(fixture_bytes("rsa-a.pub.pem")).unwrap();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let kc_no_aud = json!({"iss": KC_ISSUER, "sub": "k1", "exp": now + 300});
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "flask's iss signed with django's secret",
            hs(&flask_claims, Algorithm::HS256, DJANGO_SECRET),
            "token_invalid",
        ),
        (
            "flask's iss signed with keycloak's key",
            rs256(&flask_claims, Some("rsa-a"), "rsa-a.key.pem"),
            "token_invalid",
        ),
        (
            "no iss, signed with palaver's own secret",
            hs(&no_iss, Algorithm::HS256, SECRET),
            "token_invalid",
        ),
        (
            "a simplejwt token signed with palaver's own secret",
            hs(&simplejwt_claims(json!(5), 300), Algorithm::HS256, SECRET),
            "token_invalid",
        ),
        (
            "palaver's own iss signed with django's secret",
            hs(&palaver_claims, Algorithm::HS256, DJANGO_SECRET),
            "token_invalid",
        ),
        (
            "palaver's own iss signed with flask's secret",
            hs(&palaver_claims, Algorithm::HS256, FLASK_SECRET),
            "token_invalid",
        ),
        (
            "alg none without iss",
            format!(
                "{none_header}.{}.",
                URL_SAFE_NO_PAD.encode(simplejwt_claims(json!(5), 300).to_string())
            ),
            "token_invalid",
        ),
        (
            "alg none with keycloak's iss",
            format!(
                "{none_header}.{}.",
                URL_SAFE_NO_PAD.encode(kc_no_aud.to_string())
            ),
            "token_invalid",
        ),
        (
            "HS256 keyed with the PEM source's public key",
            hs(
                &json!({"iss": PEM_ISSUER, "sub": "p1", "exp": now + 300}),
                Algorithm::HS256,
                &pem_public,
            ),
            "token_invalid",
        ),
        (
            "HS256 keyed with keycloak's public key, its kid",
            {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("rsa-a".into());
                let mut claims = kc_no_aud.clone();
                claims["aud"] = json!("palaver");
                jsonwebtoken::encode(
                    &header,
                    &claims,
                    &EncodingKey::from_secret(pem_public.as_bytes()),
                )
                .unwrap()
            },
            "token_invalid",
        ),
        (
            "keycloak without aud",
            rs256(&kc_no_aud, Some("rsa-a"), "rsa-a.key.pem"),
            "token_invalid",
        ),
        (
            "keycloak's iss with the other provider's kid and key",
            idp_token(KC_ISSUER, "k1", Some("rsa-c"), "rsa-c.key.pem"),
            "token_invalid",
        ),
        (
            "the other provider's iss with keycloak's kid and key",
            idp_token(KC2_ISSUER, "k2", Some("rsa-a"), "rsa-a.key.pem"),
            "token_invalid",
        ),
        (
            "an iss nobody is configured for",
            idp_token(
                "https://evil.example.com",
                "k1",
                Some("rsa-a"),
                "rsa-a.key.pem",
            ),
            "token_invalid",
        ),
    ];
    assert_all_refused(&server, cases).await;
    // The other provider's kid was looked for in keycloak's set only (one
    // refetch there), and keycloak's kid in the other provider's set only.
    assert_eq!(kc.fetches(), kc_fetches + 1);
    assert_eq!(kc2.fetches(), kc2_fetches + 1);
    // The genuine tokens still work: nothing above disturbed them.
    for token in &genuine {
        whoami(&server, token).await;
    }
}

#[tokio::test]
async fn a_demo_claim_makes_a_demo_user_under_the_demo_quota() {
    let entry = format!("{}demo_claim = \"is_trial\"\n", django_entry());
    let server = TestServer::with(with_entries(&entry));
    let mut claims = simplejwt_claims(json!(8), 3600);
    claims["is_trial"] = json!(true);
    let trial = hs(&claims, Algorithm::HS256, DJANGO_SECRET);
    let who = whoami(&server, &trial).await;
    assert_eq!(who["is_demo"], true);
    assert_eq!(who["quota"]["request_limit"], 5);
    // The demo ends before the token does: so does what the token grants.
    let demo_end = who["quota"]["expires_at"].as_u64().unwrap();
    assert!(demo_end <= now() + 15 * 60, "{who}");
    let t = ticket(&server, &trial).await;
    let session = new_session(&server, &trial).await;
    let (_ws, connected) =
        ws_connected(&server, &format!("/ws/sessions/{session}/?ticket={t}"), &[]).await;
    assert_eq!(connected["expires_at"], demo_end);
    assert_eq!(connected["user"]["is_demo"], true);
    // Demo users cannot create API keys; their quota is the demo's.
    let res = client()
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(&trial)
        .json(&json!({"name": "k"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
    for _ in 0..4 {
        new_session(&server, &trial).await;
    }
    let res = client()
        .post(server.url("/api/sessions/"))
        .bearer_auth(&trial)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(res, 429, "quota_exceeded").await;
    // A user whose token says false (or nothing) is a regular user.
    let regular = whoami(&server, &django_token(json!(9))).await;
    assert_eq!(
        (regular["is_demo"].as_bool(), &regular["quota"]),
        (Some(false), &Value::Null)
    );
}

#[tokio::test]
async fn the_forge_set_is_refused_for_another_issuer_too() {
    let server = TestServer::with(with_entries(&django_entry()));
    let good = django_token(json!(77));
    whoami(&server, &good).await;
    let sign = |claims: &Value, alg: Algorithm| hs(claims, alg, DJANGO_SECRET);
    let mut cases = forgeries(&good, &sign);
    let mut refresh = claims_of(&good);
    refresh["token_type"] = json!("refresh");
    cases.push((
        "simplejwt refresh token",
        sign(&refresh, Algorithm::HS256),
        "token_invalid",
    ));
    let mut nobody = claims_of(&good);
    nobody.as_object_mut().unwrap().remove("user_id");
    cases.push((
        "no user claim",
        sign(&nobody, Algorithm::HS256),
        "token_invalid",
    ));
    let mut empty = claims_of(&good);
    empty["user_id"] = json!("");
    cases.push((
        "empty user claim",
        sign(&empty, Algorithm::HS256),
        "token_invalid",
    ));
    let mut no_exp = claims_of(&good);
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push(("no exp", sign(&no_exp, Algorithm::HS256), "token_invalid"));
    assert_all_refused(&server, cases).await;
    // The untouched token still works.
    whoami(&server, &good).await;
}

#[tokio::test]
async fn bad_entries_refuse_the_start_and_config_check_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("[[auth.external]]\nname = \"django\"\nsecret = \"{SECRET}\"\n"),
            "auth.external \"django\": secret is palaver's own",
        ),
        (
            "[[auth.external]]\nname = \"django\"\nsecret = \"short\"\n".to_owned(),
            "auth.external \"django\": secret must be at least 32 bytes",
        ),
        (
            format!("{}{}", django_entry(), django_entry().replace("\"django\"", "\"flask\"").replace(DJANGO_SECRET, FLASK_SECRET)),
            "auth.external \"flask\": a second entry with issuer \"\"",
        ),
        (
            "[[auth.external]]\nname = \"kc\"\nissuer = \"x\"\nalgorithms = [\"RS256\"]\njwks_url = \"ftp://idp/certs\"\n".to_owned(),
            "auth.external \"kc\": jwks_url",
        ),
        (
            "[[auth.external]]\nname = \"pem\"\nissuer = \"x\"\nalgorithms = [\"RS256\"]\npublic_key = \"/nonexistent/key.pem\"\n".to_owned(),
            "auth.external \"pem\": public_key",
        ),
        (
            format!(
                "[[auth.external]]\nname = \"pem\"\nissuer = \"x\"\nalgorithms = [\"HS256\"]\npublic_key = \"{}\"\n",
                fixture("rsa-a.pub.pem").display()
            ),
            "auth.external \"pem\": algorithms",
        ),
        (
            format!("[[auth.external]]\nname = \"Django\"\nsecret = \"{DJANGO_SECRET}\"\n"),
            "auth.external #1: name",
        ),
    ];
    for (entries, message) in &cases {
        let config = dir.path().join("config.toml");
        std::fs::write(&config, entries).unwrap();
        let env = [("PALAVER_AUTH__SECRET", SECRET)];
        let out = palaver(
            dir.path(),
            &["config", "check", "--config", config.to_str().unwrap()],
            &env,
            "",
        );
        assert_eq!(out.status.code(), Some(2), "{entries}");
        assert!(
            text(&out.stderr).contains(message),
            "{message}: {}",
            text(&out.stderr)
        );
        // The start is refused alike, naming the entry.
        let refused = TestServer::try_with(
            ServerOptions::default()
                .env("PALAVER_AUTH__SECRET", SECRET)
                .config_toml(entries),
        )
        .err()
        .expect("the start is refused");
        assert!(refused.contains(message), "{message}: {refused}");
    }
}
