//! The configuration: one serde tree with a default for every key, loaded in
//! layers (built-in defaults < `config.toml` < `PALAVER_<SECTION>__<KEY>`
//! environment variables < command-line flags).
//!
//! Every struct denies unknown fields, so a misspelt key stops the start with
//! a message naming the key and where it came from. Secrets are [`Secret`]s,
//! which never print.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use palaver_actors::analysis::{AnalysisSettings, EngineKind};
use palaver_actors::auth::keys::{self, KeyError, KeySource};
use palaver_actors::auth::{AuthSettings, DemoSettings};
use palaver_actors::session::WsLimits;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The file read from the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "config.toml";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub demo: DemoConfig,
    pub quota: QuotaConfig,
    pub ws: WsConfig,
    pub analysis: AnalysisConfig,
    pub storage: StorageConfig,
    pub metrics: MetricsConfig,
    pub logging: LoggingConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub allowed_origins: Vec<String>,
    pub max_json_bytes: usize,
    pub static_dir: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_origins: Vec::new(),
            max_json_bytes: 1 << 20,
            static_dir: None,
            shutdown_grace: Duration::from_secs(10),
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
    /// 0 means one per core.
    pub workers: usize,
    pub queue: usize,
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
            token_delay: Duration::ZERO,
            max_question_chars: 4000,
            finish_on_disconnect: true,
            openai: OpenAiConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    pub base_url: String,
    pub model: String,
    /// The name of the environment variable holding the API key (never the key).
    pub api_key_env: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: "http://127.0.0.1:11434/v1".into(),
            model: "llama3.2".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout: Duration::from_secs(60),
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
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./data"),
            cache_bytes: 64 << 20,
            fsync: false,
            max_upload_bytes: 50 << 20,
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

/// A secret string: readable through [`Secret::expose`], never printed by
/// `Debug`, `Display` or serialization (which is what `config show` uses).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Environment values are parsed as TOML-like scalars, so a numeric
        // secret (`PALAVER_AUTH__SECRET=12345`) arrives as a number.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The command-line flags that override the config.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub bind: Option<SocketAddr>,
    pub data: Option<PathBuf>,
}

/// Why the configuration could not be loaded. The message names the key
/// and the source (file, environment variable or flag).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} not found", .0.display())]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the layers. The working directory's `config.toml` is optional;
    /// a `--config` file must exist.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match &overrides.config_file {
            Some(path) if !path.is_file() => return Err(ConfigError::MissingFile(path.clone())),
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };
        let mut figment = Figment::new();
        if let Some(file) = &file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        if let Some(bind) = overrides.bind {
            figment = figment.merge(Serialized::global("server.bind", bind.to_string()));
        }
        if let Some(data) = &overrides.data {
            figment = figment.merge(Serialized::global("storage.path", data));
        }
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// Why RS256 and EdDSA will not start without their key files.
    const NEEDS_KEY_FILES: &'static str =
        "auth.algorithm: RS256 and EdDSA need auth.private_key and auth.public_key";

    /// Checks that go beyond types: values that parse but cannot work.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.server.max_json_bytes == 0 {
            return bad("server.max_json_bytes", "must be greater than 0");
        }
        if self.auth.access_ttl.is_zero() || self.auth.refresh_ttl.is_zero() {
            return bad(
                "auth.access_ttl / auth.refresh_ttl",
                "must be greater than 0",
            );
        }
        if self.auth.ticket_ttl.is_zero() {
            return bad("auth.ticket_ttl", "must be greater than 0");
        }
        if self.auth.algorithm != JwtAlgorithm::HS256
            && (self.auth.private_key.is_none() || self.auth.public_key.is_none())
        {
            return Err(ConfigError::Invalid(Self::NEEDS_KEY_FILES.into()));
        }
        if let (JwtAlgorithm::HS256, Some(secret)) = (self.auth.algorithm, &self.auth.secret) {
            if secret.expose().len() < 32 {
                return bad(
                    "auth.secret",
                    "must be at least 32 bytes (or leave it unset to generate one)",
                );
            }
        }
        if self
            .auth
            .previous_secrets
            .iter()
            .any(|s| s.expose().len() < 32)
        {
            return bad(
                "auth.previous_secrets",
                "every retired secret must be at least 32 bytes",
            );
        }
        self.engine()?;
        if self.demo.lifetime.is_zero() {
            return bad("demo.lifetime", "must be greater than 0");
        }
        if !self.quota.window.is_zero() && self.quota.window.as_secs() == 0 {
            return bad("quota.window", "must be at least 1s");
        }
        if self.ws.max_message_bytes == 0 || self.ws.max_buffered_bytes == 0 {
            return bad(
                "ws.max_message_bytes / ws.max_buffered_bytes",
                "must be greater than 0",
            );
        }
        if self.ws.ping_interval.is_zero() || self.ws.idle_timeout <= self.ws.ping_interval {
            return bad(
                "ws.idle_timeout",
                "must be longer than ws.ping_interval (and both > 0)",
            );
        }
        if self.analysis.queue == 0 {
            return bad("analysis.queue", "must be greater than 0");
        }
        if self.storage.cache_bytes < (1 << 20) {
            return bad("storage.cache_bytes", "must be at least 1 MiB");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            return bad("logging.level", &e.to_string());
        }
        for origin in &self.server.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.trim_end_matches('/') != origin
            {
                return bad(
                    "server.allowed_origins",
                    &format!("{origin:?} is not an origin like \"https://chat.example.com\""),
                );
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The storage crate's view of `[storage]`.
    pub fn store_config(&self) -> palaver_storage::StoreConfig {
        palaver_storage::StoreConfig {
            path: self.storage.path.clone(),
            cache_bytes: self.storage.cache_bytes,
            fsync: self.storage.fsync,
        }
    }

    /// The identity layer's settings, with its keys loaded: the configured
    /// secret, or the one generated into the data directory, or key files.
    pub fn auth_settings(&self) -> Result<AuthSettings, ConfigError> {
        let a = &self.auth;
        let key_error = |e: KeyError| ConfigError::Invalid(format!("auth: {e}"));
        let keys = match a.algorithm {
            JwtAlgorithm::HS256 => KeySource::Hs256 {
                secret: match &a.secret {
                    Some(secret) => secret.expose().as_bytes().to_vec(),
                    None => keys::load_or_create_secret(self.data_dir()).map_err(key_error)?,
                },
                previous: a
                    .previous_secrets
                    .iter()
                    .map(|s| s.expose().as_bytes().to_vec())
                    .collect(),
            },
            JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA => {
                let (Some(private), Some(public)) = (&a.private_key, &a.public_key) else {
                    return Err(ConfigError::Invalid(Self::NEEDS_KEY_FILES.into()));
                };
                let private_pem = keys::read_pem(private).map_err(key_error)?;
                let public_pem = keys::read_pem(public).map_err(key_error)?;
                if a.algorithm == JwtAlgorithm::RS256 {
                    KeySource::Rs256 {
                        private_pem,
                        public_pem,
                    }
                } else {
                    KeySource::EdDsa {
                        private_pem,
                        public_pem,
                    }
                }
            }
        };
        Ok(AuthSettings {
            keys,
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            leeway_seconds: a.leeway_seconds,
            access_ttl: a.access_ttl,
            refresh_ttl: a.refresh_ttl,
            ticket_ttl: a.ticket_ttl,
            login_failures_per_email: a.login_failures_per_email,
            login_failures_per_ip: a.login_failures_per_ip,
            login_window: a.login_window,
            registrations_per_ip_per_hour: a.registrations_per_ip_per_hour,
            registrations_per_hour: a.registrations_per_hour,
            demo: DemoSettings {
                enabled: self.demo.enabled,
                lifetime: self.demo.lifetime,
                per_ip_per_hour: self.demo.per_ip_per_hour,
                gc_after: self.demo.gc_after,
            },
        })
    }

    /// The configured engine, if this build has it.
    fn engine(&self) -> Result<EngineKind, ConfigError> {
        match self.analysis.engine {
            Engine::Builtin => Ok(EngineKind::Builtin),
            Engine::Echo => Ok(EngineKind::Echo),
            Engine::Openai => Err(ConfigError::Invalid(
                "analysis.engine: \"openai\" is not available in this version; use \"builtin\" or \"echo\"".into(),
            )),
        }
    }

    /// The analysis pool's settings.
    pub fn analysis_settings(&self) -> Result<AnalysisSettings, ConfigError> {
        let a = &self.analysis;
        let engine = self.engine()?;
        let workers = if a.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            a.workers
        };
        Ok(AnalysisSettings {
            engine,
            workers,
            queue: a.queue,
            token_delay: a.token_delay,
            finish_on_disconnect: a.finish_on_disconnect,
        })
    }

    /// The limits every WebSocket session enforces.
    pub fn ws_limits(&self) -> WsLimits {
        let w = &self.ws;
        WsLimits {
            max_messages_per_minute: w.max_messages_per_minute,
            max_message_bytes: w.max_message_bytes,
            max_buffered_bytes: w.max_buffered_bytes,
            ping_interval: w.ping_interval,
            idle_timeout: w.idle_timeout,
            expiry_warning: w.expiry_warning,
            max_question_chars: self.analysis.max_question_chars,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.storage.path
    }
}

const ENV_PREFIX: &str = "PALAVER_";

/// Turns figment's error into one line per problem, naming the key and the
/// source: `demo.request_limit in config.toml: invalid type ...` or
/// `PALAVER_DEMO__REQUEST_LIMIT (environment): ...`.
fn describe(error: figment::Error) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            if let figment::error::Kind::UnknownField(field, _) = &e.kind {
                path.push(field.clone());
            }
            let dotted = path.join(".");
            let place = match &e.metadata {
                Some(md) => match &md.source {
                    Some(source) => format!("key `{dotted}` in {source}"),
                    None if md.name.contains("environment") => {
                        format!(
                            "{ENV_PREFIX}{} (environment)",
                            path.join("__").to_uppercase()
                        )
                    }
                    None => format!("key `{dotted}` ({})", md.name),
                },
                None => format!("key `{dotted}`"),
            };
            format!("{place}: {}", e.kind)
        })
        .collect();
    ConfigError::Invalid(lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped `config.toml` documents every key with its default: it
    /// must parse, and give exactly the built-in defaults.
    #[test]
    fn shipped_config_toml_equals_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
        let from_file: Config = Figment::new()
            .merge(Toml::file_exact(path))
            .extract()
            .map_err(describe)
            .unwrap();
        assert_eq!(
            from_file.to_redacted_toml(),
            Config::default().to_redacted_toml()
        );
    }

    /// Every key of the defaults appears in `config.toml`, set or commented.
    #[test]
    fn shipped_config_toml_mentions_every_key() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let all = [
            "bind",
            "allowed_origins",
            "max_json_bytes",
            "static_dir",
            "shutdown_grace",
            "secret",
            "algorithm",
            "private_key",
            "public_key",
            "previous_secrets",
            "issuer",
            "audience",
            "leeway_seconds",
            "access_ttl",
            "refresh_ttl",
            "ticket_ttl",
            "login_failures_per_email",
            "login_failures_per_ip",
            "login_window",
            "allow_registration",
            "enabled",
            "lifetime",
            "request_limit",
            "per_ip_per_hour",
            "gc_after",
            "user_request_limit",
            "window",
            "reject_with",
            "max_connections_per_user",
            "max_messages_per_minute",
            "max_message_bytes",
            "ping_interval",
            "idle_timeout",
            "expiry_warning",
            "max_buffered_bytes",
            "engine",
            "workers",
            "queue",
            "token_delay",
            "max_question_chars",
            "finish_on_disconnect",
            "base_url",
            "model",
            "api_key_env",
            "timeout",
            "path",
            "cache_bytes",
            "fsync",
            "max_upload_bytes",
            "token",
            "format",
            "level",
        ];
        for key in all {
            let set = format!("\n{key} = ");
            let commented = format!("\n# {key} = ");
            assert!(
                text.contains(&set) || text.contains(&commented),
                "config.toml lacks {key}"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let mut config = Config::default();
        config.auth.secret = Some(Secret::new("hunter2-very-secret"));
        config.auth.previous_secrets = vec![Secret::new("old-secret-value")];
        config.metrics.token = Some(Secret::new("scrape-token-value"));
        for text in [config.to_redacted_toml(), format!("{config:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("old-secret-value"), "{text}");
            assert!(!text.contains("scrape-token-value"), "{text}");
            assert!(text.contains(REDACTED));
        }
    }

    #[test]
    fn durations_are_human_strings() {
        let config: Config = Figment::new()
            .merge(Toml::string(
                "[auth]\naccess_ttl = \"4s\"\nrefresh_ttl = \"7d\"",
            ))
            .extract()
            .unwrap();
        assert_eq!(config.auth.access_ttl, Duration::from_secs(4));
        assert_eq!(config.auth.refresh_ttl, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let unknown = Figment::new()
            .merge(Toml::string("[server]\nbindd = \"x\""))
            .extract::<Config>()
            .map_err(describe)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("server.bindd"), "{unknown}");
        let bad = Figment::new()
            .merge(Toml::string("[demo]\nrequest_limit = \"many\""))
            .extract::<Config>()
            .map_err(describe)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("demo.request_limit"), "{bad}");
    }

    #[test]
    fn validation_catches_unworkable_values() {
        let mut config = Config::default();
        config.ws.idle_timeout = config.ws.ping_interval;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ws.idle_timeout"));
        let mut config = Config::default();
        config.server.allowed_origins = vec!["*.example.com".into()];
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.auth.algorithm = JwtAlgorithm::RS256;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.algorithm"));
        assert!(Config::default().validate().is_ok());
    }
}
