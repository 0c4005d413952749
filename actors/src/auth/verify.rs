//! Verification of every credential form (access JWT, palaver's own or
//! another issuer's; API key; ticket), in the caller; tickets issued and
//! consumed; the handshake's re-check.
//!
//! palaver's own tokens, API keys and tickets verify without waiting on
//! anything (a signature and sled reads). A token from another issuer may
//! wait, rarely and boundedly: for its JWKS when its `kid` is not cached yet
//! (one fetch, shared, at most `jwks::WAIT_FOR_FETCH`), and for the
//! AuthActor the first time its user is seen (the user is provisioned).

use std::time::Duration;

use palaver_storage::{ExternalIdentity, User, UserId};
use subtle::ConstantTimeEq;

use super::error::observe;
use super::external::jwks::{KeyMissing, RefreshStale, WAIT_FOR_FETCH};
use super::external::{Route, Source};
use super::{
    api_key_hash, ensure_usable, now_secs, Auth, AuthError, Claims, ExternalGrant, Principal,
    ProvisionExternal, TicketGrant, TokenError, TokenType, TouchApiKey, Via, API_KEY_PREFIX,
};
use crate::telemetry;

impl Auth {
    /// Verifies an access JWT, palaver's own or another issuer's (matched
    /// by its `iss`): signature and claims, token type; for palaver's own,
    /// family not revoked; user present and active (another issuer's user
    /// is provisioned the first time).
    pub async fn verify_access(&self, token: &str) -> Result<Principal, AuthError> {
        observe(match self.inner.sources.route(token) {
            Ok(Route::Own) => self.verify_own(token),
            Ok(Route::External(source)) => self.verify_external(source, token).await,
            Err(e) => Err(e.into()),
        })
    }

    /// palaver's own access token.
    fn verify_own(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.inner.tokens.decode(token)?;
        if claims.token_type != TokenType::Access {
            return Err(AuthError::Invalid("not an access token"));
        }
        if self.inner.store.families().is_revoked(claims.fam)? {
            return Err(AuthError::Revoked);
        }
        let user = self.active_user(claims.user())?;
        Ok(Principal {
            user,
            via: Via::Access(claims),
        })
    }

    /// Another issuer's access token, verified by its source; its user
    /// found, or provisioned by the AuthActor the first time.
    async fn verify_external(&self, source: &Source, token: &str) -> Result<Principal, AuthError> {
        let verified = self.verify_external_inner(source, token).await;
        source
            .counters
            .verified(verified.as_ref().err().map(AuthError::reason));
        verified
    }

    async fn verify_external_inner(
        &self,
        source: &Source,
        token: &str,
    ) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("malformed token or unsupported algorithm"))?;
        // Pinned before any key is looked up (or fetched).
        source.validation(header.alg)?;
        let kid = header.kid.as_deref();
        // Read before the set is: whether a fetch ended since we looked.
        let seen = source.jwks().map_or(0, |cache| cache.fetches_ended());
        let key = match source.key_now(kid, header.alg) {
            Some(key) => key,
            None => {
                self.fetch_missing_key(source, seen).await;
                source
                    .key_now(kid, header.alg)
                    .ok_or(TokenError::Invalid("unknown key id"))?
            }
        };
        let claims = source.verify(token, kid, header.alg, &key)?;
        drop(key);
        self.refresh_if_stale(source);
        let identity = ExternalIdentity {
            issuer: source.name().to_string(),
            id: claims.id,
        };
        let user = match self.inner.store.users().find_by_external(&identity)? {
            Some(user) => user,
            None => {
                self.send(ProvisionExternal {
                    identity,
                    is_demo: claims.is_demo,
                })
                .await?
            }
        };
        ensure_usable(&user)?;
        Ok(Principal {
            user,
            via: Via::External(ExternalGrant {
                source: source.name().clone(),
                exp: claims.exp,
            }),
        })
    }

    /// Waits (boundedly) for a fetch of the source's JWKS: its token names a
    /// key the cached set lacks. Nothing for a source without a JWKS.
    async fn fetch_missing_key(&self, source: &Source, seen: u64) {
        let (Some(cache), Some(fetcher)) = (source.jwks(), &self.inner.jwks) else {
            return;
        };
        let asked = fetcher
            .send(KeyMissing {
                entry: cache.entry,
                seen,
            })
            .timeout(WAIT_FOR_FETCH)
            .await;
        if asked.is_err() {
            tracing::warn!(source = %source.name(), "JWKS fetch not answered in time");
        }
    }

    /// Asks for a background refresh of the source's JWKS once it is older
    /// than its `jwks_cache` (never waited on).
    fn refresh_if_stale(&self, source: &Source) {
        if let (Some(cache), Some(fetcher)) = (source.jwks(), &self.inner.jwks) {
            if cache.wants_refresh(&cache.current()) {
                fetcher.do_send(RefreshStale { entry: cache.entry });
            }
        }
    }

    /// Verifies a refresh token's signature, claims and type (its family is
    /// the AuthActor's to check). Another issuer's tokens are refreshed and
    /// revoked by that issuer, never here.
    pub(super) fn decode_refresh(&self, token: &str) -> Result<Claims, AuthError> {
        if let Route::External(_) = self.inner.sources.route(token)? {
            return Err(AuthError::Invalid(
                "a token from another issuer is refreshed and revoked by that issuer",
            ));
        }
        let claims = self.inner.tokens.decode(token)?;
        if claims.token_type != TokenType::Refresh {
            return Err(AuthError::Invalid("not a refresh token"));
        }
        Ok(claims)
    }

    /// Verifies an API key.
    pub fn verify_api_key(&self, key: &str) -> Result<Principal, AuthError> {
        observe(self.verify_api_key_inner(key))
    }

    fn verify_api_key_inner(&self, key: &str) -> Result<Principal, AuthError> {
        if !key.starts_with(API_KEY_PREFIX) {
            return Err(AuthError::Invalid("malformed API key"));
        }
        let hash = api_key_hash(key);
        let record = self
            .inner
            .store
            .api_keys()
            .find_by_hash(&hash)?
            .ok_or(AuthError::Invalid("unknown API key"))?;
        // The lookup already matched the hash; compare again in constant time
        // so the decision never rests on a short-circuiting comparison.
        if !bool::from(record.hash.ct_eq(&hash)) {
            return Err(AuthError::Invalid("unknown API key"));
        }
        let user = self.active_user(Some(record.user_id))?;
        // Recorded at most once a minute, by the single writer.
        let now = palaver_storage::now_millis();
        if record
            .last_used_at
            .is_none_or(|t| now.saturating_sub(t) >= 60_000)
        {
            self.inner.actor.do_send(TouchApiKey {
                key: record.clone(),
                at: now,
            });
        }
        Ok(Principal {
            user,
            via: Via::ApiKey(record.id),
        })
    }

    /// Consumes a single-use ticket.
    pub fn consume_ticket(&self, ticket: &str) -> Result<Principal, AuthError> {
        observe(self.consume_ticket_inner(ticket))
    }

    fn consume_ticket_inner(&self, ticket: &str) -> Result<Principal, AuthError> {
        let grant = self
            .inner
            .tickets
            .consume(ticket)
            .ok_or(AuthError::Invalid("unknown, used or expired ticket"))?;
        // A ticket never outlives the credential that asked for it.
        if grant
            .credential_expires_at
            .is_some_and(|at| at <= now_secs())
        {
            return Err(AuthError::Expired);
        }
        if let Some(fam) = grant.family {
            if self.inner.store.families().is_revoked(fam)? {
                return Err(AuthError::Revoked);
            }
        }
        let user = self.active_user(Some(grant.user_id))?;
        Ok(Principal {
            user,
            via: Via::Ticket(grant),
        })
    }

    /// Issues a ticket bound to the principal's user and family
    /// (`RateLimited` when the user holds too many unused ones).
    pub fn issue_ticket(&self, principal: &Principal) -> Result<(String, Duration), AuthError> {
        if principal.expires_at().is_some_and(|at| at <= now_secs()) {
            // Verified within the leeway, but already past its expiry.
            return Err(AuthError::Expired);
        }
        let ttl = self.inner.settings.ticket_ttl;
        let grant = TicketGrant {
            user_id: principal.user.id,
            family: principal.family(),
            credential_expires_at: principal.expires_at(),
            api_key: principal.api_key(),
        };
        let ticket = self
            .inner
            .tickets
            .issue(grant, ttl)
            .map_err(|_| AuthError::RateLimited { retry_after: ttl })?;
        telemetry::token_issued("ticket");
        Ok((ticket, ttl))
    }

    /// Checks again that a principal's credential still stands: its family
    /// not revoked, its API key (or the ticket's) not deleted, its user
    /// active. The handshake calls it once the connection is registered, so
    /// a revocation or deletion that raced the verification is never missed
    /// (it either sees the registered connection, or this sees its write).
    pub fn recheck(&self, principal: &Principal) -> Result<(), AuthError> {
        let store = &self.inner.store;
        if let Some(fam) = principal.family() {
            if store.families().is_revoked(fam)? {
                return Err(AuthError::Revoked);
            }
        }
        if let Some(key) = principal.api_key() {
            if store.api_keys().get(key)?.is_none() {
                return Err(AuthError::Revoked);
            }
        }
        self.active_user(Some(principal.user.id)).map(drop)
    }

    fn active_user(&self, id: Option<UserId>) -> Result<User, AuthError> {
        let id = id.ok_or(AuthError::Invalid("malformed subject"))?;
        let user = self
            .inner
            .store
            .users()
            .get(id)?
            .ok_or(AuthError::UnknownUser)?;
        ensure_usable(&user)?;
        Ok(user)
    }
}
