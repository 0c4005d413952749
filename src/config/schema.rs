//! The sections of the configuration, each with a default for every key
//! (the shipped `config.toml` documents exactly these).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub allowed_origins: Vec<String>,
    pub max_json_bytes: usize,
    pub static_dir: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Connections open at once from one client network (an IPv4 address,
    /// an IPv6 /64), HTTP and WebSocket; 0: unbounded.
    pub max_connections_per_ip: u32,
    /// How long a client may take to send a request's head (the request
    /// line and headers), on a new connection or between two requests of
    /// a kept-alive one.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a JSON request body may take to arrive whole.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a track upload's body may take to arrive whole.
    #[serde(with = "humantime_serde")]
    pub upload_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_origins: Vec::new(),
            max_json_bytes: 1 << 20,
            static_dir: None,
            shutdown_grace: Duration::from_secs(10),
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(10 * 60),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    EdDSA,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub secret: Option<Secret>,
    pub algorithm: JwtAlgorithm,
    pub private_key: Option<PathBuf>,
    pub public_key: Option<PathBuf>,
    pub previous_secrets: Vec<Secret>,
    pub issuer: String,
    pub audience: Option<String>,
    pub leeway_seconds: u64,
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub ticket_ttl: Duration,
    pub login_failures_per_email: u32,
    pub login_failures_per_ip: u32,
    #[serde(with = "humantime_serde")]
    pub login_window: Duration,
    pub allow_registration: bool,
    pub registrations_per_ip_per_hour: u32,
    pub registrations_per_hour: u32,
    /// `[[auth.external]]`: other issuers whose access tokens are accepted
    /// (last: TOML puts arrays of tables after plain keys).
    pub external: Vec<ExternalAuthConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: None,
            algorithm: JwtAlgorithm::HS256,
            private_key: None,
            public_key: None,
            previous_secrets: Vec::new(),
            issuer: "palaver".into(),
            audience: None,
            leeway_seconds: 5,
            access_ttl: Duration::from_secs(30 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            ticket_ttl: Duration::from_secs(30),
            login_failures_per_email: 5,
            login_failures_per_ip: 50,
            login_window: Duration::from_secs(15 * 60),
            allow_registration: false,
            registrations_per_ip_per_hour: 10,
            registrations_per_hour: 100,
            external: Vec::new(),
        }
    }
}

/// One `[[auth.external]]` table (API.md §2): an issuer whose access tokens
/// palaver accepts. Empty strings mean "not set", as in the contract's
/// example; exactly one of `secret`, `public_key`, `jwks_url` is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalAuthConfig {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<String>,
    pub secret: Option<Secret>,
    pub public_key: String,
    pub jwks_url: String,
    #[serde(with = "humantime_serde")]
    pub jwks_cache: Duration,
    pub user_claim: String,
    pub token_type_claim: String,
    pub demo_claim: String,
    pub leeway_seconds: u64,
}

impl Default for ExternalAuthConfig {
    fn default() -> Self {
        ExternalAuthConfig {
            name: String::new(),
            issuer: String::new(),
            audience: String::new(),
            algorithms: vec!["HS256".into()],
            secret: None,
            public_key: String::new(),
            jwks_url: String::new(),
            jwks_cache: Duration::from_secs(3600),
            user_claim: "user_id".into(),
            token_type_claim: "token_type".into(),
            demo_claim: String::new(),
            leeway_seconds: 5,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    pub request_limit: u32,
    pub per_ip_per_hour: u32,
    #[serde(with = "humantime_serde")]
    pub gc_after: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: true,
            lifetime: Duration::from_secs(15 * 60),
            request_limit: 5,
            per_ip_per_hour: 20,
            gc_after: Duration::from_secs(3600),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    pub user_request_limit: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            user_request_limit: 0,
            window: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectWith {
    Close,
    Http,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    pub reject_with: RejectWith,
    pub max_connections_per_user: u32,
    pub max_messages_per_minute: u32,
    pub max_message_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub expiry_warning: Duration,
    pub max_buffered_bytes: usize,
    /// How long a finished reply's events stay resumable.
    #[serde(with = "humantime_serde")]
    pub resume_window: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            reject_with: RejectWith::Close,
            max_connections_per_user: 10,
            max_messages_per_minute: 120,
            max_message_bytes: 64 << 10,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            expiry_warning: Duration::from_secs(60),
            max_buffered_bytes: 1 << 20,
            resume_window: Duration::from_secs(3600),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Builtin,
    Echo,
    Openai,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    pub engine: Engine,
    /// CPU worker threads; 0 means one per core.
    pub workers: usize,
    /// CPU jobs that may wait for a worker.
    pub queue: usize,
    /// Replies streaming at once.
    pub max_streams: usize,
    #[serde(with = "humantime_serde")]
    pub token_delay: Duration,
    pub max_question_chars: usize,
    pub finish_on_disconnect: bool,
    pub openai: OpenAiConfig,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            engine: Engine::Builtin,
            workers: 0,
            queue: 256,
            max_streams: 256,
            token_delay: Duration::ZERO,
            max_question_chars: 4000,
            finish_on_disconnect: true,
            openai: OpenAiConfig::default(),
        }
    }
}

/// `[analysis.openai]`: an OpenAI-compatible upstream (API.md §8).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    pub base_url: String,
    pub model: String,
    /// The name of the environment variable holding the API key (never the
    /// key); empty or unset variable: no `Authorization` header.
    pub api_key_env: String,
    pub system_prompt: String,
    pub max_history_messages: usize,
    pub max_tool_rounds: u32,
    pub tools: bool,
    /// Unset: the server's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub first_token_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub total_timeout: Duration,
}

/// What the model is told first, unless `system_prompt` says otherwise.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are the assistant of a chat. Answer clearly and \
concisely. When a question is about this conversation itself, use the tools.";

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: "http://127.0.0.1:11434/v1".into(),
            model: "llama3.2".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            max_history_messages: 40,
            max_tool_rounds: 4,
            tools: true,
            temperature: None,
            connect_timeout: Duration::from_secs(5),
            first_token_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(5 * 60),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub cache_bytes: u64,
    pub fsync: bool,
    pub max_upload_bytes: u64,
    /// Tracks one user may keep (an upload past it is 409 `track_limit`).
    pub max_tracks_per_user: usize,
    /// Sessions idle (no new message, no rename) for longer are deleted with
    /// their messages; 0 = kept until their owner deletes them.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// The longest track accepted and analysed, counted as stereo 48 kHz
    /// audio (the bound is on samples: `Config::max_track_samples`).
    #[serde(with = "humantime_serde")]
    pub max_track_duration: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./data"),
            cache_bytes: 64 << 20,
            fsync: false,
            max_upload_bytes: 50 << 20,
            max_tracks_per_user: 20,
            retention: Duration::ZERO,
            max_track_duration: Duration::from_secs(3 * 3600),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub bind: Option<SocketAddr>,
    pub token: Option<Secret>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `palaver=debug,actix_web=info`, ...); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}
