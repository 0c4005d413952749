//! What the fuzz targets share: a real palaver server state (the real
//! config loader, a real store, the real actors), built once per fuzzing
//! process, and a payload made of the fuzzer's bytes.
//!
//! The targets (`fuzz_targets/`) and what each reaches are listed in
//! docs/RELIABILITY.md, "Fuzzing".

use std::cell::OnceCell;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use palaver::app::AppState;
use palaver::config::{Config, Overrides};
use palaver::metrics::Metrics;
use palaver_actors::auth::{mint_access, Principal};
use palaver_storage::{NewUser, Store, User};

/// palaver's own HS256 secret in the fuzzing config.
pub const OWN_SECRET: &str = "fuzz-own-secret-fuzz-own-secret-fuzz-own-secret";
/// The secret of the `[[auth.external]]` entry `django` (tokens without `iss`).
pub const DJANGO_SECRET: &str = "fuzz-django-secret-fuzz-django-secret-fuzz";

/// The server's configuration, read by the real loader (`Config::load_str`):
/// palaver's own HS256 tokens and a Django-style external source, the
/// `echo` engine, one CPU worker.
pub const CONFIG: &str = r#"
[auth]
secret = "fuzz-own-secret-fuzz-own-secret-fuzz-own-secret"
issuer = "palaver"

[[auth.external]]
name = "django"
secret = "fuzz-django-secret-fuzz-django-secret-fuzz"

[analysis]
engine = "echo"
workers = 1

[storage]
cache_bytes = 4194304
"#;

/// A running palaver state with one user and every credential form of it.
pub struct Server {
    /// The actix system the actors run on; futures are run with
    /// `system.block_on` (which also runs the actors).
    pub system: actix_rt::SystemRunner,
    pub state: AppState,
    pub user: User,
    /// A principal of `user` (from `access`), for issuing tickets.
    pub principal: Principal,
    /// palaver's own access and refresh tokens (a real login's family).
    pub access: String,
    pub refresh: String,
    /// An access token minted for an hour by the operator path.
    pub minted: String,
    /// An API key of `user`.
    pub api_key: String,
    /// A token of the `django` source (user_id 42, valid for a day).
    pub external: String,
    /// The store's data directory (under /dev/shm when it exists).
    pub data_dir: PathBuf,
}

thread_local! {
    // libFuzzer calls the target on one thread; the server lives as long
    // as the process.
    static SERVER: OnceCell<&'static Server> = const { OnceCell::new() };
}

/// The process's server, started on first use.
pub fn server() -> &'static Server {
    SERVER.with(|cell| *cell.get_or_init(|| Box::leak(Box::new(start()))))
}

/// A scratch directory of this process, removed by the next process if
/// this one is killed (libFuzzer exits without running destructors).
pub fn scratch_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    // Directories of processes that are gone.
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("palaver-fuzz-"))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("palaver-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn start() -> Server {
    let data_dir = scratch_dir().join("data");
    let overrides = Overrides {
        data: Some(data_dir.clone()),
        ..Overrides::default()
    };
    let config = Config::load_str(CONFIG, &overrides).expect("the fuzzing config loads");
    let store = Store::open(&config.store_config()).expect("store opens");
    let system = actix_rt::System::new();
    let state = system
        .block_on(async { AppState::start(config, store.clone(), Metrics::detached()) })
        .expect("state starts");
    let password = "fuzz-password-123";
    let user = system
        .block_on(store.users().create(NewUser {
            email: "fuzz@example.com".into(),
            password_hash: palaver_actors::password::hash(password).expect("hash"),
            is_demo: false,
            demo_expires_at: None,
        }))
        .expect("user");
    let auth = state.auth.clone();
    let pair = system
        .block_on(auth.login(
            "fuzz@example.com",
            password,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ))
        .expect("login");
    let principal = system
        .block_on(auth.verify_access(&pair.access))
        .expect("own token verifies");
    let (minted, _) = mint_access(auth.tokens(), &user, Duration::from_secs(3600)).expect("mint");
    let (_, api_key) = system
        .block_on(auth.create_api_key(&user, "fuzz"))
        .expect("api key");
    let external = sign(
        DJANGO_SECRET,
        br#"{"alg":"HS256","typ":"JWT"}"#,
        format!(
            r#"{{"token_type":"access","exp":{},"jti":"f","user_id":42}}"#,
            now_secs() + 86_400
        )
        .as_bytes(),
    );
    system
        .block_on(auth.verify_access(&external))
        .expect("external token verifies");
    Server {
        system,
        state,
        user,
        principal,
        access: pair.access,
        refresh: pair.refresh,
        minted,
        api_key,
        external,
        data_dir,
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JWT of exactly these header and claims bytes (base64url, no
/// padding), signed HS256 with `secret` whatever the header says.
pub fn sign(secret: &str, header: &[u8], claims: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .expect("HS256 signs anything");
    format!("{message}.{signature}")
}

/// A request payload that yields `body` in chunks of `chunk` bytes (at
/// least 1), then ends: the body as the network would split it.
pub fn payload(body: &[u8], chunk: usize) -> Payload {
    let chunks: Vec<Result<Bytes, PayloadError>> = body
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Payload::Stream {
        payload: Box::pin(futures_util::stream::iter(chunks)),
    }
}

/// A chunk size from one byte of input: 1, 2, 4, … 4096 bytes.
pub fn chunk_size(selector: u8) -> usize {
    1 << (selector % 13)
}
