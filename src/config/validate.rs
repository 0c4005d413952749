//! The checks beyond types: values that parse but cannot work. `serve` and
//! `config check` run the same ones (both exit 2 on a failure).

use palaver_actors::analysis::openai::parse_base_url;
use palaver_actors::auth::external::Sources;
use palaver_actors::auth::keys::{self, KeySource};
use palaver_actors::auth::TokenService;

use super::{Config, ConfigError, Engine, JwtAlgorithm};

impl Config {
    /// Why RS256 and EdDSA will not start without their key files.
    pub(super) const NEEDS_KEY_FILES: &'static str =
        "auth.algorithm: RS256 and EdDSA need auth.private_key and auth.public_key";

    /// Checks that go beyond types: values that parse but cannot work.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.server.max_json_bytes == 0 {
            return bad("server.max_json_bytes", "must be greater than 0");
        }
        for (key, value) in [
            ("server.header_timeout", self.server.header_timeout),
            ("server.body_timeout", self.server.body_timeout),
            ("server.upload_timeout", self.server.upload_timeout),
        ] {
            if value.is_zero() {
                return bad(key, "must be greater than 0");
            }
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
        if self.auth.algorithm != JwtAlgorithm::HS256 {
            // The key files must exist and parse: read them now rather than
            // fail later at start (a generated HS256 secret is made at start).
            let settings = self.auth_settings()?;
            TokenService::new(
                &settings.keys,
                &settings.issuer,
                settings.audience.as_deref(),
                settings.leeway_seconds,
            )
            .map_err(|e| ConfigError::Invalid(format!("auth key files: {e}")))?;
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
        self.validate_external()?;
        self.validate_openai()?;
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
        if self.ws.resume_window.is_zero() {
            return bad("ws.resume_window", "must be greater than 0");
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
        if self.analysis.max_streams == 0 {
            return bad("analysis.max_streams", "must be greater than 0");
        }
        if self.storage.max_upload_bytes == 0 {
            return bad("storage.max_upload_bytes", "must be greater than 0");
        }
        if self.storage.max_tracks_per_user == 0 {
            return bad("storage.max_tracks_per_user", "must be greater than 0");
        }
        if !self.storage.retention.is_zero()
            && self.storage.retention < std::time::Duration::from_secs(1)
        {
            return bad("storage.retention", "must be 0s (keep) or at least 1s");
        }
        if self.storage.max_track_duration < std::time::Duration::from_secs(1) {
            return bad("storage.max_track_duration", "must be at least 1s");
        }
        if self.storage.cache_bytes < (1 << 20) {
            return bad("storage.cache_bytes", "must be at least 1 MiB");
        }
        if let Err(e) = crate::logging::filter(&self.logging.level) {
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

    /// `[[auth.external]]`: every entry on its own (its key read and
    /// parsed) and against the others and palaver's own keys: the same
    /// check the start makes (`Sources::new`).
    fn validate_external(&self) -> Result<(), ConfigError> {
        if self.auth.external.is_empty() {
            return Ok(());
        }
        let entries = self.external_settings()?;
        Sources::new(&entries, &self.own_keys_to_compare()?, &self.auth.issuer)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }

    /// palaver's own HS256 secrets, as far as they are known without
    /// starting: the configured secret, or the generated one if the data
    /// directory holds it already (nothing is generated here), and the
    /// previous secrets. With RS256/EdDSA palaver has no secret.
    fn own_keys_to_compare(&self) -> Result<KeySource, ConfigError> {
        let previous = self
            .auth
            .previous_secrets
            .iter()
            .map(|s| s.expose().as_bytes().to_vec())
            .collect();
        if self.auth.algorithm != JwtAlgorithm::HS256 {
            return Ok(KeySource::Rs256 {
                private_pem: Vec::new(),
                public_pem: Vec::new(),
            });
        }
        let secret = match &self.auth.secret {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            None => match std::fs::read(self.data_dir().join(keys::SECRET_FILE)) {
                Ok(secret) => secret,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(ConfigError::Invalid(format!(
                        "auth: cannot read {}: {e}",
                        self.data_dir().join(keys::SECRET_FILE).display()
                    )))
                }
            },
        };
        Ok(KeySource::Hs256 { secret, previous })
    }

    /// `[analysis.openai]`: checked whatever the engine (a typo is caught
    /// before someone switches to it); the key only when it will be used.
    fn validate_openai(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError::Invalid(format!(
                "analysis.openai.{key}: {why}"
            )))
        };
        let o = &self.analysis.openai;
        if let Err(why) = parse_base_url(&o.base_url) {
            return bad("base_url", &why);
        }
        if self.analysis.engine == Engine::Openai && o.model.trim().is_empty() {
            return bad("model", "the upstream needs a model name");
        }
        if o.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return bad("temperature", "must be between 0 and 2 (or unset)");
        }
        for (key, value) in [
            ("connect_timeout", o.connect_timeout),
            ("first_token_timeout", o.first_token_timeout),
            ("idle_timeout", o.idle_timeout),
            ("total_timeout", o.total_timeout),
        ] {
            if value.is_zero() {
                return bad(key, "must be greater than 0");
            }
        }
        if self.analysis.engine == Engine::Openai {
            self.openai_api_key()?;
        }
        Ok(())
    }
}
