//! Each crate's view of the configuration: the storage crate's
//! `StoreConfig`, the identity layer's settings (with its keys loaded), the
//! analysis pool's and the WebSocket limits.

use std::sync::Arc;

use palaver_actors::analysis::openai::{ApiKey, OpenAi, OpenAiSettings};
use palaver_actors::analysis::{AnalysisSettings, EngineKind};
use palaver_actors::auth::external::{parse_algorithm, parse_jwks_url, valid_name};
use palaver_actors::auth::keys::{self, KeyError, KeySource};
use palaver_actors::auth::{AuthSettings, DemoSettings, ExternalKey, ExternalSettings};
use palaver_actors::session::WsLimits;

use super::{Config, ConfigError, Engine, JwtAlgorithm};

impl Config {
    /// The storage crate's view of `[storage]`.
    pub fn store_config(&self) -> palaver_storage::StoreConfig {
        palaver_storage::StoreConfig {
            path: self.storage.path.clone(),
            cache_bytes: self.storage.cache_bytes,
            fsync: self.storage.fsync,
        }
    }

    /// `storage.max_track_duration` as a number of samples (frames ×
    /// channels): that long of stereo 48 kHz audio. What an analysis costs
    /// grows with the samples, so a track with more channels or a higher
    /// rate may be proportionally shorter.
    pub fn max_track_samples(&self) -> u64 {
        const STEREO_48K: u64 = 2 * 48_000;
        self.storage
            .max_track_duration
            .as_secs()
            .saturating_mul(STEREO_48K)
    }

    /// `storage.retention` as the supervisor's sweep takes it.
    pub fn session_retention(&self) -> palaver_actors::SessionRetention {
        palaver_actors::SessionRetention {
            idle_for: Some(self.storage.retention).filter(|d| !d.is_zero()),
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
            external: self.external_settings()?,
        })
    }

    /// `[[auth.external]]` as the identity layer needs it: algorithms
    /// parsed, the one key source chosen, key files read. What entries mean
    /// together (names, issuers, secrets, key kinds) is checked by
    /// `palaver_actors::auth::external::Sources::new`.
    pub fn external_settings(&self) -> Result<Vec<ExternalSettings>, ConfigError> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        self.auth
            .external
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let label = if valid_name(&e.name) {
                    format!("{:?}", e.name)
                } else {
                    format!("#{}", index + 1)
                };
                let bad =
                    |why: String| ConfigError::Invalid(format!("auth.external {label}: {why}"));
                let algorithms = e
                    .algorithms
                    .iter()
                    .map(|a| parse_algorithm(a).map_err(|why| bad(format!("algorithms: {why}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                let secret = e.secret.as_ref().filter(|s| !s.expose().is_empty());
                let key = match (secret, e.public_key.as_str(), e.jwks_url.as_str()) {
                    (Some(secret), "", "") => {
                        ExternalKey::Secret(secret.expose().as_bytes().to_vec())
                    }
                    (None, path, "") if !path.is_empty() => {
                        let path = std::path::PathBuf::from(path);
                        let pem =
                            keys::read_pem(&path).map_err(|e| bad(format!("public_key: {e}")))?;
                        ExternalKey::PublicKey { path, pem }
                    }
                    (None, "", url) if !url.is_empty() => ExternalKey::Jwks {
                        url: parse_jwks_url(url).map_err(|why| bad(format!("jwks_url: {why}")))?,
                        cache: e.jwks_cache,
                    },
                    _ => {
                        return Err(bad(
                            "set exactly one of secret (HS*), public_key or jwks_url".into(),
                        ))
                    }
                };
                Ok(ExternalSettings {
                    name: e.name.clone(),
                    issuer: e.issuer.clone(),
                    audience: non_empty(&e.audience),
                    algorithms,
                    key,
                    user_claim: e.user_claim.clone(),
                    token_type_claim: non_empty(&e.token_type_claim),
                    demo_claim: non_empty(&e.demo_claim),
                    leeway_seconds: e.leeway_seconds,
                })
            })
            .collect()
    }

    /// The configured engine.
    fn engine(&self) -> EngineKind {
        match self.analysis.engine {
            Engine::Builtin => EngineKind::Builtin,
            Engine::Echo => EngineKind::Echo,
            Engine::Openai => EngineKind::Openai,
        }
    }

    /// The analysis pool's settings; with `engine = "openai"`, the engine's
    /// HTTP client built and its key read from the environment (once).
    pub fn analysis_settings(&self) -> Result<AnalysisSettings, ConfigError> {
        let a = &self.analysis;
        let engine = self.engine();
        let workers = if a.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            a.workers
        };
        let openai = match engine {
            EngineKind::Openai => {
                let settings = self.openai_settings()?;
                let engine = OpenAi::new(settings)
                    .map_err(|e| ConfigError::Invalid(format!("analysis.openai: {e}")))?;
                tracing::info!(
                    endpoint = engine.endpoint(),
                    model = %engine.settings().model,
                    api_key = if engine.settings().api_key.is_some() { "set" } else { "none" },
                    api_key_env = %engine.settings().api_key_env,
                    "analysis engine: openai"
                );
                Some(Arc::new(engine))
            }
            _ => None,
        };
        Ok(AnalysisSettings {
            engine,
            workers,
            queue: a.queue,
            max_streams: a.max_streams,
            token_delay: a.token_delay,
            finish_on_disconnect: a.finish_on_disconnect,
            max_track_samples: self.max_track_samples(),
            openai,
        })
    }

    /// The key named by `analysis.openai.api_key_env`, read from the
    /// environment: `None` when no variable is named, or it is unset or
    /// empty. The error never quotes the value.
    pub(super) fn openai_api_key(&self) -> Result<Option<ApiKey>, ConfigError> {
        let name = &self.analysis.openai.api_key_env;
        if name.is_empty() {
            return Ok(None);
        }
        match std::env::var(name) {
            Ok(key) if key.is_empty() => Ok(None),
            Ok(key) => ApiKey::new(key).map(Some).map_err(|why| {
                ConfigError::Invalid(format!(
                    "analysis.openai.api_key_env: the variable {name} {why}"
                ))
            }),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Invalid(format!(
                "analysis.openai.api_key_env: the variable {name} is not UTF-8"
            ))),
        }
    }

    /// The `openai` engine's view of `[analysis.openai]`.
    pub fn openai_settings(&self) -> Result<OpenAiSettings, ConfigError> {
        let o = &self.analysis.openai;
        Ok(OpenAiSettings {
            base_url: o.base_url.clone(),
            model: o.model.clone(),
            api_key_env: o.api_key_env.clone(),
            api_key: self.openai_api_key()?,
            system_prompt: o.system_prompt.clone(),
            max_history_messages: o.max_history_messages,
            max_tool_rounds: o.max_tool_rounds,
            tools: o.tools,
            temperature: o.temperature,
            connect_timeout: o.connect_timeout,
            first_token_timeout: o.first_token_timeout,
            idle_timeout: o.idle_timeout,
            total_timeout: o.total_timeout,
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
            resume_window: w.resume_window,
        }
    }
}
