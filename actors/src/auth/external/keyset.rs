//! [`KeySet`]: the keys of one fetched JWKS that an entry can use, and how a
//! JWK becomes one: only signature keys, only for the entry's algorithms,
//! only what ring verifies; a token's `kid` and algorithm choose among them.

use std::str::FromStr;
use std::time::Instant;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::{family, Family};

/// Keys kept from one set; the rest are ignored.
const MAX_KEYS: usize = 64;

/// The keys of one fetched JWKS that this entry can use.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<SetKey>,
    /// When it was fetched (`None`: never fetched yet).
    fetched_at: Option<Instant>,
}

struct SetKey {
    kid: Option<String>,
    key: DecodingKey,
    family: Family,
    /// The key's own `alg`, when it names one.
    alg: Option<Algorithm>,
    /// For EC keys: the only algorithm its curve signs.
    curve_alg: Option<Algorithm>,
}

impl SetKey {
    fn fits(&self, alg: Algorithm) -> bool {
        self.family == family(alg)
            && self.alg.is_none_or(|a| a == alg)
            && self.curve_alg.is_none_or(|a| a == alg)
    }
}

impl KeySet {
    /// The key for a token's `kid` and algorithm. A token without `kid` is
    /// verified only when one key of the set fits its algorithm.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&DecodingKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg))
                .map(|k| &k.key),
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Some(&only.key),
                    _ => None,
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether it was fetched longer than `max_age` ago (never fetched: no).
    pub fn older_than(&self, max_age: std::time::Duration) -> bool {
        self.fetched_at.is_some_and(|at| at.elapsed() > max_age)
    }

    /// Parses a JWKS document, keeping the signature keys that fit one of
    /// `algorithms` (at most [`MAX_KEYS`]); other keys (encryption keys,
    /// symmetric keys, unknown types and curves) are skipped, not fatal.
    pub fn parse(body: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document ({e})"))?;
        let mut keys = Vec::new();
        for value in document.keys {
            if keys.len() == MAX_KEYS {
                tracing::warn!(
                    kept = MAX_KEYS,
                    "JWKS: more keys than palaver keeps; the rest are ignored"
                );
                break;
            }
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if let Some(key) = usable(&jwk, algorithms) {
                keys.push(key);
            }
        }
        Ok(KeySet {
            keys,
            fetched_at: Some(Instant::now()),
        })
    }
}

/// A JWK as a verification key for one of `algorithms`, if it is one.
fn usable(jwk: &Jwk, algorithms: &[Algorithm]) -> Option<SetKey> {
    let common = &jwk.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let (key_family, curve_alg) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Family::Rsa, None),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => (Family::Ec, Some(Algorithm::ES256)),
            EllipticCurve::P384 => (Family::Ec, Some(Algorithm::ES384)),
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (Family::Ed, None)
        }
        // Symmetric keys have no place in a published key set.
        _ => return None,
    };
    let alg = match &common.key_algorithm {
        Some(a) => Some(Algorithm::from_str(&a.to_string()).ok()?),
        None => None,
    };
    let wanted = algorithms.iter().any(|&a| {
        family(a) == key_family && alg.is_none_or(|k| k == a) && curve_alg.is_none_or(|c| c == a)
    });
    if !wanted {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(SetKey {
        kid: common.key_id.clone(),
        key,
        family: key_family,
        alg,
        curve_alg,
    })
}
