//! Each crate's view of the configuration: the storage crate's
//! `StoreConfig`, the identity layer's settings (with its keys loaded), the
//! analysis pool's and the WebSocket limits.

use palaver_actors::analysis::{AnalysisSettings, EngineKind};
use palaver_actors::auth::keys::{self, KeyError, KeySource};
use palaver_actors::auth::{AuthSettings, DemoSettings};
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
    pub(super) fn engine(&self) -> Result<EngineKind, ConfigError> {
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
            max_streams: a.max_streams,
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
}
