//! JWTs: minting and verifying, with the algorithm pinned.
//!
//! Verification checks, every time: the header's algorithm is the configured
//! one (`none` in any spelling fails to parse at all), the `kid` names a key
//! we hold, the signature, `exp` (with leeway), `nbf` if present, `iss`, and
//! `aud` when configured. The token type, family and user are checked by the
//! caller ([`crate::auth::Auth`]), which has storage.

use std::collections::HashMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use palaver_storage::UserId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::{kid_for, KeyError, KeySource};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Access,
    Refresh,
}

/// The claims of every palaver token (API.md §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The user id.
    pub sub: String,
    /// The user id again (the claim djangorestframework-simplejwt uses).
    pub user_id: String,
    pub token_type: TokenType,
    pub jti: Uuid,
    /// The refresh family (one per login).
    pub fam: Uuid,
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub is_demo: bool,
}

impl Claims {
    /// The user id, parsed from `sub`.
    pub fn user(&self) -> Option<UserId> {
        self.sub.parse().ok()
    }
}

/// Why a token did not verify. The reason is for logs and metrics (never
/// the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid: {0}")]
    Invalid(&'static str),
}

pub struct TokenService {
    algorithm: Algorithm,
    encoding: EncodingKey,
    kid: String,
    /// kid → key; the current key and, for HS256, the previous secrets.
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    issuer: String,
    audience: Option<String>,
}

impl TokenService {
    pub fn new(
        keys: &KeySource,
        issuer: &str,
        audience: Option<&str>,
        leeway_seconds: u64,
    ) -> Result<TokenService, KeyError> {
        let invalid = |e: jsonwebtoken::errors::Error| KeyError::Invalid(e.to_string());
        let mut decoding = HashMap::new();
        let (algorithm, encoding, kid) = match keys {
            KeySource::Hs256 { secret, previous } => {
                if secret.len() < 32 {
                    return Err(KeyError::Invalid(
                        "auth.secret must be at least 32 bytes".into(),
                    ));
                }
                let kid = kid_for(secret);
                decoding.insert(kid.clone(), DecodingKey::from_secret(secret));
                if previous.iter().any(|old| old.len() < 32) {
                    return Err(KeyError::Invalid(
                        "auth.previous_secrets: every secret must be at least 32 bytes".into(),
                    ));
                }
                for old in previous {
                    decoding.insert(kid_for(old), DecodingKey::from_secret(old));
                }
                (Algorithm::HS256, EncodingKey::from_secret(secret), kid)
            }
            KeySource::Rs256 {
                private_pem,
                public_pem,
            } => {
                let kid = kid_for(public_pem);
                decoding.insert(
                    kid.clone(),
                    DecodingKey::from_rsa_pem(public_pem).map_err(invalid)?,
                );
                (
                    Algorithm::RS256,
                    EncodingKey::from_rsa_pem(private_pem).map_err(invalid)?,
                    kid,
                )
            }
            KeySource::EdDsa {
                private_pem,
                public_pem,
            } => {
                let kid = kid_for(public_pem);
                decoding.insert(
                    kid.clone(),
                    DecodingKey::from_ed_pem(public_pem).map_err(invalid)?,
                );
                (
                    Algorithm::EdDSA,
                    EncodingKey::from_ed_pem(private_pem).map_err(invalid)?,
                    kid,
                )
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway_seconds;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        match audience {
            Some(aud) => {
                // jsonwebtoken checks `aud` only when a token has one: a
                // configured audience must also be present.
                validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
                validation.set_audience(&[aud]);
            }
            None => {
                validation.set_required_spec_claims(&["exp", "iss", "sub"]);
                validation.validate_aud = false;
            }
        }
        Ok(TokenService {
            algorithm,
            encoding,
            kid,
            decoding,
            validation,
            issuer: issuer.to_owned(),
            audience: audience.map(str::to_owned),
        })
    }

    /// The claims for a new token (the caller picks `exp`).
    #[allow(clippy::too_many_arguments)]
    pub fn claims(
        &self,
        user: UserId,
        is_demo: bool,
        token_type: TokenType,
        fam: Uuid,
        jti: Uuid,
        iat: u64,
        exp: u64,
    ) -> Claims {
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_string(),
            user_id: user.to_string(),
            token_type,
            jti,
            fam,
            iat,
            exp,
            nbf: None,
            is_demo,
        }
    }

    /// Signs claims with the current key, `kid` in the header.
    pub fn encode(&self, claims: &Claims) -> Result<String, KeyError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyError::Invalid(e.to_string()))
    }

    /// Verifies a token's signature and standard claims.
    pub fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("malformed token or unsupported algorithm"))?;
        if header.alg != self.algorithm {
            return Err(TokenError::Invalid("algorithm not allowed"));
        }
        let key = match header.kid.as_deref() {
            Some(kid) => self
                .decoding
                .get(kid)
                .ok_or(TokenError::Invalid("unknown key id"))?,
            None => &self.decoding[&self.kid],
        };
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| classify(&e))
    }
}

/// Why jsonwebtoken refused a token, as a [`TokenError`] (for palaver's
/// own tokens and every other issuer's alike).
pub(crate) fn classify(e: &jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::Invalid("not valid yet"),
        ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer"),
        ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience"),
        ErrorKind::InvalidSignature => TokenError::Invalid("bad signature"),
        ErrorKind::InvalidAlgorithm => TokenError::Invalid("algorithm not allowed"),
        ErrorKind::MissingRequiredClaim(_) => TokenError::Invalid("missing claim"),
        _ => TokenError::Invalid("malformed token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(secret: &[u8]) -> TokenService {
        TokenService::new(
            &KeySource::Hs256 {
                secret: secret.to_vec(),
                previous: vec![],
            },
            "palaver",
            None,
            5,
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sample(s: &TokenService, exp: u64) -> Claims {
        s.claims(
            UserId::new(),
            false,
            TokenType::Access,
            Uuid::new_v4(),
            Uuid::new_v4(),
            now(),
            exp,
        )
    }

    #[test]
    fn round_trip() {
        let s = service(&[7; 64]);
        let claims = sample(&s, now() + 60);
        let token = s.encode(&claims).unwrap();
        assert_eq!(s.decode(&token).unwrap(), claims);
    }

    #[test]
    fn expiry_honours_leeway() {
        let s = service(&[7; 64]);
        let inside = s.encode(&sample(&s, now() - 2)).unwrap();
        assert!(s.decode(&inside).is_ok());
        let outside = s.encode(&sample(&s, now() - 30)).unwrap();
        assert_eq!(s.decode(&outside), Err(TokenError::Expired));
    }

    #[test]
    fn previous_secrets_verify_but_unknown_keys_do_not() {
        let old = service(&[1; 64]);
        let token = old.encode(&sample(&old, now() + 60)).unwrap();
        let rotated = TokenService::new(
            &KeySource::Hs256 {
                secret: vec![2; 64],
                previous: vec![vec![1; 64]],
            },
            "palaver",
            None,
            5,
        )
        .unwrap();
        assert!(rotated.decode(&token).is_ok());
        assert_eq!(
            service(&[3; 64]).decode(&token),
            Err(TokenError::Invalid("unknown key id"))
        );
    }

    #[test]
    fn a_configured_audience_is_required() {
        let with_aud = |aud: Option<&str>| {
            TokenService::new(
                &KeySource::Hs256 {
                    secret: vec![7; 64],
                    previous: vec![],
                },
                "palaver",
                aud,
                5,
            )
            .unwrap()
        };
        let strict = with_aud(Some("clients"));
        // Same key, same issuer, no `aud` claim at all.
        let bare = with_aud(None);
        let without = bare.encode(&sample(&bare, now() + 60)).unwrap();
        assert_eq!(
            strict.decode(&without),
            Err(TokenError::Invalid("missing claim"))
        );
        let other = with_aud(Some("others"));
        let wrong = other.encode(&sample(&other, now() + 60)).unwrap();
        assert_eq!(
            strict.decode(&wrong),
            Err(TokenError::Invalid("wrong audience"))
        );
        let right = strict.encode(&sample(&strict, now() + 60)).unwrap();
        assert!(strict.decode(&right).is_ok());
    }

    #[test]
    fn short_previous_secrets_are_refused() {
        let err = TokenService::new(
            &KeySource::Hs256 {
                secret: vec![1; 64],
                previous: vec![vec![2; 64], b"short".to_vec()],
            },
            "palaver",
            None,
            5,
        )
        .err()
        .expect("a 5-byte retired secret must be refused");
        assert!(err.to_string().contains("previous_secrets"), "{err}");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenService::new(
            &KeySource::Hs256 {
                secret: vec![1; 8],
                previous: vec![]
            },
            "palaver",
            None,
            5
        )
        .is_err());
    }
}
