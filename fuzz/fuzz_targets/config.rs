//! Config parsing: TOML text and `PALAVER_*` environment variables through
//! the real loader (`Config::load_str`: figment's layers, the messages that
//! name a bad key, every check of `validate`, the `[[auth.external]]`
//! entries built and checked as at start), then the redacted rendering
//! `config show` prints, which must never contain a secret.
//!
//! Input: the TOML text, then, after each NUL byte, one environment
//! variable `NAME=value` (the loader sees it as `PALAVER_NAME`); they are
//! removed again after the load.
//!
//! Inputs naming a path under /dev, /proc or /sys are skipped: the loader
//! reads the key files the config names, and a device (or /proc/kmsg)
//! would stand for an operator's typo, not for input palaver gets from
//! anyone else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palaver::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let toml_text = parts.next().unwrap_or_default();
    let mut env = Vec::new();
    for entry in parts {
        let Some((name, value)) = entry.split_once('=') else {
            continue;
        };
        if name.is_empty() || name.contains('=') {
            continue;
        }
        let name = if name.starts_with("PALAVER_") {
            name.to_owned()
        } else {
            format!("PALAVER_{name}")
        };
        env.push((name, value.to_owned()));
    }
    if names_a_device(toml_text) || env.iter().any(|(_, v)| touches_devices(v)) {
        return;
    }
    for (name, value) in &env {
        std::env::set_var(name, value);
    }
    let loaded = Config::load_str(toml_text, &Overrides::default());
    for (name, _) in &env {
        std::env::remove_var(name);
    }
    let Ok(config) = loaded else {
        return;
    };
    let shown = config.to_redacted_toml();
    let debug = format!("{config:?}");
    let mut secrets: Vec<&str> = Vec::new();
    secrets.extend(config.auth.secret.as_ref().map(|s| s.expose()));
    secrets.extend(config.auth.previous_secrets.iter().map(|s| s.expose()));
    secrets.extend(config.metrics.token.as_ref().map(|s| s.expose()));
    secrets.extend(
        config
            .auth
            .external
            .iter()
            .filter_map(|e| e.secret.as_ref().map(|s| s.expose())),
    );
    for secret in secrets {
        // A short one could occur in the text by chance (a key name).
        if secret.len() >= 16 {
            assert!(!shown.contains(secret), "config show prints a secret");
            assert!(!debug.contains(secret), "Debug prints a secret");
        }
    }
    let _ = config.ws_limits();
    let _ = config.store_config();
});

/// Whether any string of the TOML document could name a device path
/// (checked on the parsed strings, so escapes are seen through).
fn names_a_device(text: &str) -> bool {
    match text.parse::<toml::Value>() {
        Ok(value) => any_string(&value, &touches_devices),
        // Not TOML: the loader refuses it before reading any file.
        Err(_) => touches_devices(text),
    }
}

fn touches_devices(s: &str) -> bool {
    ["/dev", "/proc", "/sys"].iter().any(|p| s.contains(p))
}

fn any_string(value: &toml::Value, f: &dyn Fn(&str) -> bool) -> bool {
    match value {
        toml::Value::String(s) => f(s),
        toml::Value::Array(items) => items.iter().any(|v| any_string(v, f)),
        toml::Value::Table(table) => table.iter().any(|(k, v)| f(k) || any_string(v, f)),
        _ => false,
    }
}
