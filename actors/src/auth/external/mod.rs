//! Tokens from another issuer (API.md §2, `[[auth.external]]`): a Django
//! app's simplejwt tokens, an identity provider's, verified as strictly as
//! palaver's own.
//!
//! A token is matched to exactly one source by its `iss` alone
//! ([`Sources::route`]): palaver's own `auth.issuer`, or one entry's
//! `issuer`; a token without `iss` only to the one entry whose issuer is
//! empty. Each source then verifies with its own pinned algorithms and its
//! own keys, never another's: a static secret or PEM key, or a JWKS whose
//! keys are cached per entry and `kid` ([`jwks`]). What a source accepts
//! becomes an [`ExternalClaims`]; the caller ([`crate::auth::Auth`]) turns it
//! into a local user.
//!
//! # Layout
//! - `mod.rs`: the settings of an entry, [`Sources`] (built and checked once
//!   at start, shared by `config check`), routing by `iss`.
//! - `source.rs`: [`Source`], one entry's verification: keys, pinned
//!   algorithms, standard claims, the user, token-type and demo claims.
//! - [`jwks`]: a JWKS entry's cached key set and the [`jwks::JwksFetcher`]
//!   actor that fetches it (bounded, deduplicated, never hanging a caller).
//! - `keyset.rs`: [`jwks::KeySet`], the usable keys of one fetched JWKS.

pub mod jwks;
mod keyset;
mod source;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use source::{ExternalClaims, Source};

use super::keys::KeySource;
use super::TokenError;

/// One `[[auth.external]]` entry, as the identity layer needs it (key files
/// read; the secret as bytes).
#[derive(Clone)]
pub struct ExternalSettings {
    /// 1–32 of `[a-z0-9_-]`: `user list`, logs and metric labels show it.
    pub name: String,
    /// The `iss` its tokens carry; empty: they carry none.
    pub issuer: String,
    /// The `aud` its tokens must carry, if any.
    pub audience: Option<String>,
    /// Pinned: a token whose header names another is refused.
    pub algorithms: Vec<Algorithm>,
    pub key: ExternalKey,
    /// The claim that names the user.
    pub user_claim: String,
    /// When set, that claim must be `"access"`.
    pub token_type_claim: Option<String>,
    /// When set and the claim is `true`, the user is a demo user.
    pub demo_claim: Option<String>,
    pub leeway_seconds: u64,
}

/// Where an entry's verification keys come from.
#[derive(Clone)]
pub enum ExternalKey {
    /// HS*: a shared secret (its UTF-8 bytes).
    Secret(Vec<u8>),
    /// RS*/PS*/ES*/EdDSA: one PEM public key (read from `path`).
    PublicKey { path: PathBuf, pem: Vec<u8> },
    /// RS*/PS*/ES*/EdDSA: a JWKS, keys chosen by `kid`, cached `cache`.
    Jwks { url: reqwest::Url, cache: Duration },
}

impl std::fmt::Debug for ExternalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        let key = match &self.key {
            ExternalKey::Secret(_) => "secret [redacted]".to_owned(),
            ExternalKey::PublicKey { path, .. } => format!("public_key {}", path.display()),
            ExternalKey::Jwks { url, .. } => format!("jwks_url {url}"),
        };
        f.debug_struct("ExternalSettings")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .field("key", &key)
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

/// Why an entry cannot work; the message names it (`config check` and the
/// start print it, exit 2).
#[derive(Debug, thiserror::Error)]
#[error("auth.external {entry}: {why}")]
pub struct SourceError {
    /// `"django"` (quoted), or `#2` for an entry without a usable name.
    pub entry: String,
    pub why: String,
}

/// The least a shared secret may have (RFC 7518 §3.2: the hash's size).
pub const MIN_SECRET_BYTES: usize = 32;

/// The most bytes of a user claim's value: an id, not a document.
pub const MAX_EXTERNAL_ID_BYTES: usize = 255;

/// Every configured source, and how a token finds its own.
pub struct Sources {
    own_issuer: String,
    list: Vec<Source>,
    /// A non-empty `issuer` → its entry.
    by_issuer: HashMap<String, usize>,
    /// The one entry whose tokens carry no `iss`.
    without_issuer: Option<usize>,
}

/// Which source a token claims to come from (not verified yet).
pub enum Route<'a> {
    /// palaver's own `auth.issuer` (or, with no entries configured, any
    /// token: palaver's own verification then refuses what is not its own).
    Own,
    External(&'a Source),
}

/// The family of an algorithm (what kind of key verifies it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

pub fn family(alg: Algorithm) -> Family {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Family::Hmac,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 | ES384 => Family::Ec,
        EdDSA => Family::Ed,
    }
}

impl Sources {
    /// Checks every entry against the others and against palaver's own
    /// keys, and builds their verifiers. `own_keys` is palaver's signing
    /// configuration: no entry may share its secret (or a retired one).
    pub fn new(
        entries: &[ExternalSettings],
        own_keys: &KeySource,
        own_issuer: &str,
    ) -> Result<Sources, SourceError> {
        let mut sources = Sources {
            own_issuer: own_issuer.to_owned(),
            list: Vec::with_capacity(entries.len()),
            by_issuer: HashMap::new(),
            without_issuer: None,
        };
        let own_secrets: Vec<&[u8]> = match own_keys {
            KeySource::Hs256 { secret, previous } => std::iter::once(secret.as_slice())
                .chain(previous.iter().map(Vec::as_slice))
                .collect(),
            KeySource::Rs256 { .. } | KeySource::EdDsa { .. } => Vec::new(),
        };
        let mut names: Vec<&str> = Vec::new();
        let mut secrets: Vec<(&str, &[u8])> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let fail = |why: String| SourceError {
                entry: if valid_name(&entry.name) {
                    format!("{:?}", entry.name)
                } else {
                    format!("#{}", index + 1)
                },
                why,
            };
            if !valid_name(&entry.name) {
                return Err(fail(format!(
                    "name {:?} must be 1–32 of a-z, 0-9, _ and -",
                    entry.name
                )));
            }
            if names.contains(&entry.name.as_str()) {
                return Err(fail("another entry has the same name".into()));
            }
            names.push(&entry.name);
            if entry.issuer == own_issuer {
                return Err(fail(format!(
                    "issuer {:?} is palaver's own (auth.issuer): each source needs its own",
                    entry.issuer
                )));
            }
            if entry.issuer.is_empty() {
                if sources.without_issuer.is_some() {
                    return Err(fail(
                        "a second entry with issuer \"\": at most one source may issue tokens without `iss`".into(),
                    ));
                }
                sources.without_issuer = Some(index);
            } else if sources
                .by_issuer
                .insert(entry.issuer.clone(), index)
                .is_some()
            {
                return Err(fail(format!(
                    "another entry has issuer {:?}: a token's `iss` must name one source",
                    entry.issuer
                )));
            }
            if let ExternalKey::Secret(secret) = &entry.key {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(fail(format!(
                        "secret must be at least {MIN_SECRET_BYTES} bytes"
                    )));
                }
                if own_secrets.iter().any(|own| same_secret(own, secret)) {
                    return Err(fail(
                        "secret is palaver's own (auth.secret or a previous secret): tokens of the two would be interchangeable".into(),
                    ));
                }
                if let Some((other, _)) = secrets.iter().find(|(_, s)| same_secret(s, secret)) {
                    return Err(fail(format!(
                        "secret is also {other:?}'s: each source needs its own"
                    )));
                }
                secrets.push((&entry.name, secret));
            }
            sources.list.push(Source::new(index, entry).map_err(fail)?);
        }
        Ok(sources)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every source, in configured order.
    pub fn iter(&self) -> impl Iterator<Item = &Source> {
        self.list.iter()
    }

    /// The source a token claims by its `iss`, read from its unverified
    /// payload (the source's own verification follows). With no entries
    /// configured nothing is read: every token is palaver's to verify. An
    /// `iss` naming no source, one that is not a single string, a token
    /// without `iss` when no entry takes such tokens, or a payload that is
    /// not a JSON object are all refused here.
    pub fn route(&self, token: &str) -> Result<Route<'_>, TokenError> {
        if self.list.is_empty() {
            return Ok(Route::Own);
        }
        let payload = peek_payload(token)?;
        let index = match peek_issuer(&payload)?.as_deref() {
            Some(iss) if iss == self.own_issuer => return Ok(Route::Own),
            Some(iss) => self.by_issuer.get(iss).copied(),
            None => self.without_issuer,
        };
        index
            .map(|i| Route::External(&self.list[i]))
            .ok_or(TokenError::Invalid("unknown issuer"))
    }
}

/// A `jwks_url`: http(s), with a host, without credentials (the URL is
/// logged and shown by `config show`).
pub fn parse_jwks_url(raw: &str) -> Result<reqwest::Url, String> {
    crate::parse_http_url(raw, "a JWKS is public")
}

/// The algorithms an entry may name (`none` is not one).
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    name.parse::<Algorithm>().map_err(|_| {
        format!(
            "{name:?} is not an algorithm palaver verifies (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
        )
    })
}

/// `[a-z0-9_-]{1,32}`.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether two secrets are the same, in time independent of where they
/// differ (the comparison of their digests is constant-time).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b): ([u8; 32], [u8; 32]) = (Sha256::digest(a).into(), Sha256::digest(b).into());
    bool::from(a.ct_eq(&b))
}

/// A token's payload, decoded but not verified (only to read `iss`).
fn peek_payload(token: &str) -> Result<Vec<u8>, TokenError> {
    let mut parts = token.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_header), Some(payload), Some(_signature)) => URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Invalid("malformed token")),
        _ => Err(TokenError::Invalid("malformed token")),
    }
}

/// The `iss` of a decoded payload: only which source to ask. Borrowed from
/// the payload when it has no escapes (no allocation on the common path).
fn peek_issuer(payload: &[u8]) -> Result<Option<Cow<'_, str>>, TokenError> {
    #[derive(Deserialize)]
    struct Peek<'a> {
        /// A duplicated `iss` is an error (serde refuses it), so no parser
        /// can read another issuer than this one did.
        #[serde(default, borrow)]
        iss: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<Peek>(payload)
        .map(|peek| peek.iss)
        .map_err(|_| TokenError::Invalid("malformed token"))
}

#[cfg(test)]
mod tests;
