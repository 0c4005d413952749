//! The configuration: one serde tree with a default for every key, loaded in
//! layers (built-in defaults < `config.toml` < `PALAVER_<SECTION>__<KEY>`
//! environment variables < command-line flags).
//!
//! Every struct denies unknown fields, so a misspelt key stops the start with
//! a message naming the key and where it came from. Secrets are [`Secret`]s,
//! which never print.
//!
//! # Layout
//! - `mod.rs`: [`Config`], loading the layers, error messages that name the key.
//! - [`schema`]: the sections and their defaults (what `config.toml` documents).
//! - [`secret`]: [`Secret`], a string that never prints.
//! - `validate.rs`: the checks beyond types, shared by `serve` and `config check`.
//! - `settings.rs`: each crate's view of the config (storage, identity, pool, sockets).

mod schema;
mod secret;
mod settings;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Data, Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use schema::*;
pub use secret::Secret;

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
        Self::load_layers(file.map(Toml::file_exact), overrides)
    }

    /// What [`Config::load`] does, with the file's text given instead of
    /// its path (`overrides.config_file` is not read): the same layers
    /// (text < environment < flags) and the same checks. The entry point of
    /// the config fuzz target (`fuzz/`).
    pub fn load_str(toml: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_layers(Some(Toml::string(toml)), overrides)
    }

    fn load_layers(file: Option<Data<Toml>>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(file);
        }
        refuse_env_values_figment_cannot_read(std::env::vars_os())?;
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

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    pub fn data_dir(&self) -> &Path {
        &self.storage.path
    }
}

const ENV_PREFIX: &str = "PALAVER_";

/// Refuses the `PALAVER_*` values figment 0.10.19 cannot read, naming the
/// variable (never the value) and saying what to write instead. Two kinds,
/// both found by the config fuzz target (crash 3 in docs/RELIABILITY.md):
///
/// - Its unescaping of a quoted value (`"..."`, alone or inside `[...]` or
///   `{...}`) slices the text at a character count taken as a byte offset,
///   so a backslash escape after a non-ASCII character either panics (the
///   start ends with `exit 101`) or silently drops characters (a secret
///   comes out shorter than it was written).
/// - Its value parser recurses once per `[` or `{`, with no limit: a value
///   nested a few thousand deep overflows the stack and the process aborts.
///   The TOML file's parser has a limit and answers with an error.
fn refuse_env_values_figment_cannot_read(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<(), ConfigError> {
    let lines: Vec<String> = vars
        .filter_map(|(name, value)| {
            let name = name.to_string_lossy().trim().to_owned();
            let prefixed = name
                .get(..ENV_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX));
            if !prefixed {
                return None;
            }
            let why = figment_cannot_read(&value.to_string_lossy())?;
            Some(format!("{name} (environment): {why}"))
        })
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Invalid(lines.join("; ")))
}

/// The most `[` and `{` an environment value may hold; the config's
/// deepest key needs two levels, and a list of `[[auth.external]]` entries
/// one more per entry.
const MAX_ENV_BRACKETS: usize = 64;

/// Why figment would misread this value, if it would: a quote (so some
/// part may be read as a quoted string) and a backslash somewhere after a
/// non-ASCII character; or more than [`MAX_ENV_BRACKETS`] brackets. The
/// brackets are counted, not their nesting: which of them the parser takes
/// as text depends on its quoting rules (`"..."`, and `'x'` for any one
/// character, a quote included), and a count bounds the nesting whatever
/// they are.
fn figment_cannot_read(value: &str) -> Option<String> {
    let misescaped = value.contains('"')
        && value
            .find(|c: char| !c.is_ascii())
            .is_some_and(|first| value[first..].contains('\\'));
    if misescaped {
        return Some(
            "a quoted value with a backslash escape after a non-ASCII character, which \
             the config loader (figment 0.10.19) misreads; write the non-ASCII characters \
             as \\u escapes, leave the value unquoted, or set the key in config.toml"
                .to_owned(),
        );
    }
    let brackets = value.chars().filter(|c| matches!(c, '[' | '{')).count();
    (brackets > MAX_ENV_BRACKETS).then(|| {
        format!(
            "more than {MAX_ENV_BRACKETS} `[` or `{{`: the config loader (figment 0.10.19) \
             parses nested brackets with no depth limit and could overflow its stack; \
             set the key in config.toml"
        )
    })
}

/// Turns figment's error into one line per problem, naming the key and the
/// source: `demo.request_limit in config.toml: invalid type ...` or
/// `PALAVER_DEMO__REQUEST_LIMIT (environment): ...`.
fn describe(error: figment::Error) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            if let figment::error::Kind::UnknownField(field, _) = &e.kind {
                // Inside an array of tables figment names the field already.
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
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
    use super::secret::REDACTED;
    use super::*;
    use std::time::Duration;

    /// Fuzz crash 3: figment unescapes a quoted value at character counts
    /// taken as byte offsets. The values it would misread are refused
    /// before it sees them, naming the variable and never the value; the
    /// rest (unquoted, ASCII, escapes before any non-ASCII) pass. Each case
    /// is also given to figment's own value parser, to show the refused
    /// ones really are misread (a panic or other text) and the passed ones
    /// read right. The variables are given to the check, not set: tests
    /// run in parallel.
    #[test]
    fn env_values_figment_would_misread_are_refused_by_name() {
        use figment::value::Value;
        let check = |name: &str, value: &str| {
            refuse_env_values_figment_cannot_read(std::iter::once((name.into(), value.into())))
        };
        let figment_reads = |value: &str| {
            let value = value.to_owned();
            std::panic::catch_unwind(move || value.parse::<Value>().ok()).ok()
        };
        let strings = |v: Option<Value>| -> Vec<String> {
            match v {
                Some(Value::String(_, s)) => vec![s],
                Some(Value::Array(_, items)) => {
                    items.into_iter().filter_map(|i| i.into_string()).collect()
                }
                _ => vec![],
            }
        };
        for (value, meant) in [
            ("\"é\\n\"", vec!["é\n"]),
            ("\"secret-é1\\tmore\"", vec!["secret-é1\tmore"]),
            ("[\"a\", \"ü\\\\y\"]", vec!["a", "ü\\y"]),
        ] {
            let Err(ConfigError::Invalid(said)) = check("PALAVER_AUTH__SECRET", value) else {
                panic!("{value:?} passed");
            };
            assert!(
                said.starts_with("PALAVER_AUTH__SECRET (environment)"),
                "{said}"
            );
            assert!(!said.contains(value), "{said}");
            assert!(check(" palaver_auth__secret", value).is_err(), "{value:?}");
            let read = figment_reads(value);
            assert!(
                read.clone().is_none_or(|v| strings(v) != meant),
                "figment reads {value:?} right now: {read:?}; the check can go"
            );
        }
        for (value, meant) in [
            ("é\\n", "é\\n"),
            ("\"a\\né\"", "a\né"),
            ("\"\\u00e9\\n\"", "é\n"),
            ("\"ééé\"", "ééé"),
            ("plain", "plain"),
        ] {
            assert!(check("PALAVER_AUTH__SECRET", value).is_ok(), "{value:?}");
            assert_eq!(
                strings(figment_reads(value).flatten()),
                [meant],
                "{value:?}"
            );
        }
        assert!(check("OTHER_SECRET", "\"é\\n\"").is_ok());
    }

    /// The other half of crash 3: figment's parser recurses per bracket
    /// (a few thousand overflow the stack, which no test can catch), so
    /// values with more than [`MAX_ENV_BRACKETS`] are refused, quoted or
    /// not: `'"'` is a one-character literal to figment, so a quote cannot
    /// be trusted to start text, and `["]",["]",[...` nests though the
    /// brackets never look nested.
    #[test]
    fn env_values_with_too_many_brackets_are_refused() {
        let check = |value: String| {
            refuse_env_values_figment_cannot_read(std::iter::once((
                "PALAVER_SERVER__BIND".into(),
                value.into(),
            )))
        };
        let nested = |open: &str, close: &str, n: usize| open.repeat(n) + &close.repeat(n);
        assert!(check(nested("[", "]", MAX_ENV_BRACKETS)).is_ok());
        assert!(check(nested("{a=", "}", MAX_ENV_BRACKETS)).is_ok());
        assert!(check(format!("[{}]", r#"{issuer="x"},"#.repeat(20))).is_ok());
        for many in [
            nested("[", "]", MAX_ENV_BRACKETS + 1),
            "{a=".repeat(MAX_ENV_BRACKETS + 1),
            "[{".repeat(MAX_ENV_BRACKETS / 2 + 1),
            r#"["]","#.repeat(MAX_ENV_BRACKETS + 1),
            format!("['\"',{}", "[".repeat(MAX_ENV_BRACKETS)),
            format!("\"{}\"", "[".repeat(10_000)),
        ] {
            let Err(ConfigError::Invalid(said)) = check(many.clone()) else {
                panic!("{} brackets passed", many.len());
            };
            assert!(
                said.starts_with("PALAVER_SERVER__BIND (environment): more than"),
                "{said}"
            );
        }
        assert!(check("]]]]".repeat(1_000)).is_ok());
    }

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
            // [[auth.external]] (commented: no entry by default)
            "name",
            "algorithms",
            "jwks_url",
            "jwks_cache",
            "user_claim",
            "token_type_claim",
            "demo_claim",
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
            "resume_window",
            "engine",
            "workers",
            "queue",
            "max_streams",
            "token_delay",
            "max_question_chars",
            "finish_on_disconnect",
            "base_url",
            "model",
            "api_key_env",
            "system_prompt",
            "max_history_messages",
            "max_tool_rounds",
            "tools",
            "temperature",
            "connect_timeout",
            "first_token_timeout",
            "idle_timeout",
            "total_timeout",
            "path",
            "cache_bytes",
            "fsync",
            "max_upload_bytes",
            "max_tracks_per_user",
            "retention",
            "max_track_duration",
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
    fn external_entries_parse_and_every_bad_one_is_named() {
        const OWN: &str = "palaver-secret-palaver-secret-palaver-secret";
        const DJANGO: &str = "django-secret-django-secret-django-secret";
        let load = |entries: &str| -> Result<Config, ConfigError> {
            let text = format!("[auth]\nsecret = \"{OWN}\"\n{entries}");
            let config: Config = Figment::new()
                .merge(Toml::string(&text))
                .extract()
                .map_err(describe)?;
            config.validate()?;
            Ok(config)
        };
        let django = format!("[[auth.external]]\nname = \"django\"\nsecret = \"{DJANGO}\"\n");
        let keycloak =
            "[[auth.external]]\nname = \"kc\"\nissuer = \"https://kc.example.com/realms/main\"\n\
                        algorithms = [\"RS256\"]\njwks_url = \"https://kc.example.com/certs\"\n\
                        user_claim = \"sub\"\ntoken_type_claim = \"\"\n";
        let config = load(&format!("{django}{keycloak}")).unwrap();
        let settings = config.external_settings().unwrap();
        assert_eq!(settings.len(), 2);
        assert_eq!(settings[0].user_claim, "user_id");
        assert_eq!(settings[0].token_type_claim.as_deref(), Some("token_type"));
        assert_eq!(settings[1].token_type_claim, None);
        assert_eq!(settings[1].audience, None);
        for shown in [
            config.to_redacted_toml(),
            format!("{config:?}"),
            format!("{settings:?}"),
        ] {
            assert!(!shown.contains(DJANGO), "{shown}");
        }

        let refused = |entries: &str, needles: &[&str]| {
            let message = load(entries).expect_err("refused").to_string();
            for needle in needles {
                assert!(message.contains(needle), "{needle}: {message}");
            }
        };
        refused(
            &django.replace("django\"", "Django App\""),
            &["auth.external #1", "name"],
        );
        refused(&format!("{django}{django}"), &["\"django\"", "same name"]);
        refused(
            &format!("{django}jwks_url = \"https://x.example.com/certs\"\n"),
            &["\"django\"", "exactly one of"],
        );
        refused(
            &format!("{django}algorithms = [\"none\"]\n"),
            &["\"django\"", "algorithms", "\"none\""],
        );
        refused(
            &django.replace(DJANGO, OWN),
            &["\"django\"", "palaver's own"],
        );
        refused(
            &django.replace(DJANGO, "short"),
            &["\"django\"", "32 bytes"],
        );
        refused(
            &keycloak.replace("https://kc.example.com/certs", "ftp://kc.example.com/certs"),
            &["\"kc\"", "jwks_url"],
        );
        refused(
            &keycloak.replace(
                "jwks_url = \"https://kc.example.com/certs\"",
                "public_key = \"/nonexistent/idp.pub\"",
            ),
            &["\"kc\"", "/nonexistent/idp.pub"],
        );
        refused(
            &format!(
                "{django}{}",
                django
                    .replace("\"django\"", "\"flask\"")
                    .replace(DJANGO, &DJANGO.replace('d', "D"))
            ),
            &["\"flask\"", "at most one"],
        );
        refused(
            &format!("{django}jwks_cach = \"1h\"\n"),
            &["auth.external", "jwks_cach"],
        );
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

    /// The default config with `change` applied; its validation's error.
    fn refusal(change: impl FnOnce(&mut Config)) -> String {
        let mut config = Config::default();
        change(&mut config);
        match config.validate() {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted an unworkable value"),
        }
    }

    #[test]
    fn validation_catches_unworkable_values() {
        let named = |change: fn(&mut Config), key: &str| {
            let refused = refusal(change);
            assert!(refused.contains(key), "{key}: {refused}");
        };
        named(
            |c| c.ws.idle_timeout = c.ws.ping_interval,
            "ws.idle_timeout",
        );
        named(
            |c| c.ws.resume_window = std::time::Duration::ZERO,
            "ws.resume_window",
        );
        refusal(|c| c.server.allowed_origins = vec!["*.example.com".into()]);
        named(|c| c.auth.algorithm = JwtAlgorithm::RS256, "auth.algorithm");
        for base_url in [
            "ftp://127.0.0.1/v1",
            "localhost:11434/v1",
            "http://k:s@host/v1",
        ] {
            let refused = refusal(|c| c.analysis.openai.base_url = base_url.into());
            assert!(refused.contains("analysis.openai.base_url"), "{refused}");
        }
        named(
            |c| c.analysis.openai.idle_timeout = Duration::ZERO,
            "analysis.openai.idle_timeout",
        );
        named(
            |c| c.analysis.openai.temperature = Some(3.5),
            "analysis.openai.temperature",
        );
        named(|c| c.analysis.max_streams = 0, "analysis.max_streams");
        let mut openai = Config::default();
        openai.analysis.engine = Engine::Openai;
        assert!(openai.validate().is_ok());
        assert!(Config::default().validate().is_ok());
    }
}
