//! [`Source`]: one `[[auth.external]]` entry's verification. The header's
//! algorithm must be one of the entry's; the key is the entry's own (its
//! secret, its PEM key, or a key of its JWKS chosen by `kid`); then the
//! signature, `exp` (required, with the entry's leeway), `nbf`, `iss` (when
//! the entry has one), `aud` (required when configured), and the entry's
//! user, token-type and demo claims.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, KeySet};
use super::{family, ExternalKey, ExternalSettings, Family, MAX_EXTERNAL_ID_BYTES};
use crate::auth::tokens::classify;
use crate::auth::TokenError;
use crate::telemetry::ExternalCounters;

/// What a source vouches for in a token it verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalClaims {
    /// The user claim's value (an integer in decimal).
    pub id: String,
    /// The demo claim was `true`.
    pub is_demo: bool,
    /// The token's `exp` (Unix seconds).
    pub exp: u64,
}

pub struct Source {
    name: Arc<str>,
    keys: Keys,
    /// One validation per allowed algorithm (jsonwebtoken checks the
    /// header's algorithm against the list it is given: one, pinned).
    validations: Vec<(Algorithm, Validation)>,
    user_claim: String,
    token_type_claim: Option<String>,
    demo_claim: Option<String>,
    pub(crate) counters: ExternalCounters,
}

enum Keys {
    /// A secret or a PEM key: the one key, whatever `kid` says.
    Static(DecodingKey),
    /// A JWKS: keys by `kid`, fetched and cached per entry.
    Jwks(Arc<JwksCache>),
}

/// A source's key for one token: borrowed from the source, or from the key
/// set current when it was looked up (kept alive while it verifies).
pub(crate) enum KeyFor<'a> {
    Static(&'a DecodingKey),
    Fetched(Arc<KeySet>),
}

impl Source {
    pub(super) fn new(index: usize, entry: &ExternalSettings) -> Result<Source, String> {
        if entry.algorithms.is_empty() {
            return Err("algorithms: name at least one (e.g. [\"HS256\"])".into());
        }
        if entry.user_claim.is_empty() {
            return Err("user_claim must name a claim (e.g. \"user_id\" or \"sub\")".into());
        }
        let families: Vec<Family> = entry.algorithms.iter().map(|a| family(*a)).collect();
        let names = || format!("{:?}", entry.algorithms);
        let keys = match &entry.key {
            ExternalKey::Secret(secret) => {
                if families.iter().any(|f| *f != Family::Hmac) {
                    return Err(format!(
                        "algorithms {}: a secret verifies only HS256, HS384 or HS512",
                        names()
                    ));
                }
                Keys::Static(DecodingKey::from_secret(secret))
            }
            ExternalKey::PublicKey { path, pem } => {
                let first = families[0];
                if families.iter().any(|f| *f != first) || first == Family::Hmac {
                    return Err(format!(
                        "algorithms {}: one PEM key verifies one family (RS*/PS*, ES*, or EdDSA), never HS*",
                        names()
                    ));
                }
                Keys::Static(
                    parse_pem(pem, first)
                        .map_err(|why| format!("public_key {}: {why}", path.display()))?,
                )
            }
            ExternalKey::Jwks { url, cache } => {
                if families.contains(&Family::Hmac) {
                    return Err(format!(
                        "algorithms {}: a JWKS publishes public keys; HS* needs a secret",
                        names()
                    ));
                }
                if cache.is_zero() {
                    return Err("jwks_cache must be greater than 0".into());
                }
                Keys::Jwks(Arc::new(JwksCache::new(
                    index,
                    entry.name.as_str().into(),
                    url.clone(),
                    *cache,
                    entry.algorithms.clone(),
                )))
            }
        };
        let validations = entry
            .algorithms
            .iter()
            .map(|&alg| (alg, validation(entry, alg)))
            .collect();
        Ok(Source {
            name: entry.name.as_str().into(),
            keys,
            validations,
            user_claim: entry.user_claim.clone(),
            token_type_claim: entry.token_type_claim.clone(),
            demo_claim: entry.demo_claim.clone(),
            counters: ExternalCounters::new(&entry.name),
        })
    }

    /// The entry's configured name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The entry's JWKS cache, if it has one.
    pub(crate) fn jwks(&self) -> Option<&Arc<JwksCache>> {
        match &self.keys {
            Keys::Jwks(cache) => Some(cache),
            Keys::Static(_) => None,
        }
    }

    /// The validation for a token whose header names `alg`, if the entry
    /// allows it.
    pub(crate) fn validation(&self, alg: Algorithm) -> Result<&Validation, TokenError> {
        self.validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or(TokenError::Invalid("algorithm not allowed"))
    }

    /// The key for a token (`kid` and algorithm from its header), from what
    /// the entry holds now: `None` when its JWKS has no such key (yet).
    pub(crate) fn key_now(&self, kid: Option<&str>, alg: Algorithm) -> Option<KeyFor<'_>> {
        match &self.keys {
            Keys::Static(key) => Some(KeyFor::Static(key)),
            Keys::Jwks(cache) => {
                let set = cache.current();
                set.find(kid, alg).is_some().then_some(KeyFor::Fetched(set))
            }
        }
    }

    /// Verifies the signature and every claim with `key` (from
    /// [`Source::key_now`]).
    pub(crate) fn verify(
        &self,
        token: &str,
        kid: Option<&str>,
        alg: Algorithm,
        key: &KeyFor<'_>,
    ) -> Result<ExternalClaims, TokenError> {
        let validation = self.validation(alg)?;
        let decoding = match key {
            KeyFor::Static(key) => *key,
            KeyFor::Fetched(set) => set
                .find(kid, alg)
                .ok_or(TokenError::Invalid("unknown key id"))?,
        };
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, decoding, validation)
            .map_err(|e| classify(&e))?
            .claims;
        self.claims(&claims)
    }

    /// The entry's own claims, once the standard ones passed.
    fn claims(&self, claims: &Map<String, Value>) -> Result<ExternalClaims, TokenError> {
        let id = match claims.get(&self.user_claim) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_EXTERNAL_ID_BYTES => {
                s.clone()
            }
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                return Err(TokenError::Invalid(
                    "the user claim is missing or not a non-empty string or an integer",
                ))
            }
        };
        if let Some(claim) = &self.token_type_claim {
            if claims.get(claim).and_then(Value::as_str) != Some("access") {
                return Err(TokenError::Invalid("not an access token"));
            }
        }
        let is_demo = match self.demo_claim.as_ref().and_then(|c| claims.get(c)) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(TokenError::Invalid("the demo claim is not a boolean")),
        };
        // jsonwebtoken required and checked `exp` (a number: it may be
        // fractional).
        let exp = match claims.get("exp") {
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            _ => None,
        }
        .ok_or(TokenError::Invalid("missing claim"))?;
        Ok(ExternalClaims { id, is_demo, exp })
    }
}

/// The validation of an entry's tokens signed with `alg`.
fn validation(entry: &ExternalSettings, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = entry.leeway_seconds;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if !entry.issuer.is_empty() {
        v.set_issuer(&[&entry.issuer]);
        required.push("iss");
    }
    match &entry.audience {
        Some(aud) => {
            // jsonwebtoken checks `aud` only when present: a configured
            // audience must also be there.
            v.set_audience(&[aud]);
            required.push("aud");
        }
        // An `aud` the entry did not ask for is not palaver's business
        // (identity providers set one for their own clients).
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// A PEM public key of `family`. A private key is refused: a file meant to
/// verify must not hold what signs.
fn parse_pem(pem: &[u8], family: Family) -> Result<DecodingKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_owned())?;
    if text.contains("PRIVATE KEY-----") {
        return Err("holds a private key; give the public key".into());
    }
    if !text.contains("PUBLIC KEY-----") {
        return Err("not a PEM public key (-----BEGIN PUBLIC KEY-----)".into());
    }
    let parsed = match family {
        Family::Rsa => DecodingKey::from_rsa_pem(pem),
        Family::Ec => DecodingKey::from_ec_pem(pem),
        Family::Ed => DecodingKey::from_ed_pem(pem),
        Family::Hmac => return Err("HS* keys are secrets, not PEM files".into()),
    };
    parsed.map_err(|e| format!("not a {family:?} public key ({e})"))
}
