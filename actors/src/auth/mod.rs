//! Identity: tokens, tickets, API keys, login throttles and the [`AuthActor`].
//!
//! Split of work: verification (signature, claims, family, user) runs in the
//! caller through the cloneable [`Auth`] handle, concurrently on every worker
//! thread; it only reads. Everything that changes identity state (new token
//! families, rotation, revocation, the demo sweep and garbage collection) goes
//! through the one [`AuthActor`], which also tells the Supervisor about
//! revocations. The handshake path therefore never queues on a mailbox.

mod actor;
pub mod keys;
pub mod throttle;
pub mod tickets;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::Addr;
use palaver_storage::{ApiKey, NewUser, StorageError, Store, User, UserId};
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub use actor::{AuthActor, IssueTokens, RevokeFamily, Rotate, Sweep};
pub use keys::{KeyError, KeySource};
pub use tickets::{TicketBook, TicketGrant};
pub use tokens::{Claims, TokenError, TokenService, TokenType};

use crate::{password, telemetry};
use throttle::{ClientNet, EmailKey, Limiters, WindowLimiter, MAX_KEYS};

/// The longest email address accepted anywhere (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// Refuses an email or password too long to be anything but abuse, before
/// anything else is done with them (no throttle key, no hashing, no lookup).
pub fn check_lengths(email: &str, password: &str) -> Result<(), AuthError> {
    if email.len() > MAX_EMAIL_BYTES {
        return Err(AuthError::BadRequest(format!(
            "email: at most {MAX_EMAIL_BYTES} bytes"
        )));
    }
    if password.len() > password::MAX_PASSWORD_BYTES {
        return Err(AuthError::BadRequest(format!(
            "password: at most {} bytes",
            password::MAX_PASSWORD_BYTES
        )));
    }
    Ok(())
}

/// What the identity layer needs from the configuration.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub keys: KeySource,
    pub issuer: String,
    pub audience: Option<String>,
    pub leeway_seconds: u64,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub ticket_ttl: Duration,
    pub login_failures_per_email: u32,
    pub login_failures_per_ip: u32,
    pub login_window: Duration,
    /// Registrations one client network may make per hour (0 = unlimited).
    pub registrations_per_ip_per_hour: u32,
    /// Registrations everyone together may make per hour (0 = unlimited).
    pub registrations_per_hour: u32,
    pub demo: DemoSettings,
}

#[derive(Clone, Debug)]
pub struct DemoSettings {
    pub enabled: bool,
    pub lifetime: Duration,
    pub per_ip_per_hour: u32,
    pub gc_after: Duration,
}

/// Why a request could not be authenticated, or an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credential was presented")]
    Missing,
    #[error("the credential is invalid")]
    Invalid(&'static str),
    /// The credential names a user that does not exist (any more).
    #[error("the credential's user does not exist")]
    UnknownUser,
    #[error("the token has expired")]
    Expired,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the account is disabled")]
    AccountDisabled,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("too many attempts; try again later")]
    RateLimited { retry_after: Duration },
    #[error("demo mode is disabled on this server")]
    DemoDisabled,
    #[error("demo users cannot do this")]
    DemoForbidden,
    #[error("not found")]
    NotFound,
    #[error("this email is already registered")]
    EmailTaken,
    #[error("too many password checks in progress; try again shortly")]
    Busy,
    #[error("{0}")]
    BadRequest(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("internal: {0}")]
    Internal(String),
}

impl AuthError {
    /// The `reason` label of `palaver_auth_failures_total`, for failures that
    /// are the client's (not storage or internal errors).
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(_) | AuthError::UnknownUser => "invalid",
            AuthError::Expired => "expired",
            AuthError::Revoked => "revoked",
            AuthError::AccountDisabled => "disabled",
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::RateLimited { .. } => "rate_limited",
            _ => return None,
        })
    }
}

/// Counts a failed authentication, then hands the result on.
fn observe<T>(result: Result<T, AuthError>) -> Result<T, AuthError> {
    if let Err(e) = &result {
        if let Some(reason) = e.reason() {
            telemetry::auth_failure(reason);
        }
    }
    result
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => AuthError::Expired,
            TokenError::Invalid(why) => AuthError::Invalid(why),
        }
    }
}

impl From<KeyError> for AuthError {
    fn from(e: KeyError) -> Self {
        AuthError::Internal(e.to_string())
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub via: Via,
}

/// How the caller authenticated.
#[derive(Clone, Debug)]
pub enum Via {
    /// An access JWT.
    Access(Claims),
    /// An API key (its id).
    ApiKey(Uuid),
    /// A WebSocket ticket.
    Ticket(TicketGrant),
}

impl Principal {
    /// The token family behind the credential, if any.
    pub fn family(&self) -> Option<Uuid> {
        match &self.via {
            Via::Access(c) => Some(c.fam),
            Via::ApiKey(_) => None,
            Via::Ticket(g) => g.family,
        }
    }

    /// The API key behind the credential, if any.
    pub fn api_key(&self) -> Option<Uuid> {
        match &self.via {
            Via::ApiKey(id) => Some(*id),
            Via::Ticket(g) => g.api_key,
            Via::Access(_) => None,
        }
    }

    /// When the credential stops being valid (Unix seconds), if ever.
    pub fn expires_at(&self) -> Option<u64> {
        match &self.via {
            Via::Access(c) => Some(c.exp),
            Via::ApiKey(_) => self.user.demo_expires_at,
            Via::Ticket(g) => g.credential_expires_at,
        }
    }
}

/// A freshly issued pair.
#[derive(Clone, Debug)]
pub struct TokenPair {
    pub access: String,
    pub refresh: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: User,
}

/// A random credential string: `prefix` + 43 alphanumeric characters (about
/// 256 bits).
pub(crate) fn secret_string(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, 43)
    )
}

/// A user's credentials work only while the user is active and, for a demo
/// user, before the demo's end.
pub(crate) fn ensure_usable(user: &User) -> Result<(), AuthError> {
    if !user.is_active || user.demo_expires_at.is_some_and(|end| end <= now_secs()) {
        return Err(AuthError::AccountDisabled);
    }
    Ok(())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The prefix of every API key (lets secret scanners recognise them).
pub const API_KEY_PREFIX: &str = "pvk_";

pub fn api_key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The cloneable handle handlers use. Reads happen here, in the caller;
/// writes go to the [`AuthActor`].
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AuthSettings,
    tokens: Arc<TokenService>,
    store: Store,
    tickets: Arc<TicketBook>,
    limiters: Arc<Limiters>,
    /// A hash of a random password, verified against when the email is
    /// unknown so both failures cost the same.
    dummy_hash: String,
    /// Bounds argon2 work for logins in flight (each takes 19 MiB and tens
    /// of ms of a core): past it, `Busy` rather than unbounded memory.
    hashing: Arc<tokio::sync::Semaphore>,
    /// The same for registrations, separately: a flood of registrations
    /// never takes the permits logins need.
    registration_hashing: Arc<tokio::sync::Semaphore>,
    actor: Addr<AuthActor>,
}

impl Auth {
    /// Starts the [`AuthActor`] (in the caller's context: the Supervisor's)
    /// and returns the handle. `revocations` is told of every revocation.
    pub fn start(
        settings: AuthSettings,
        store: Store,
        revocations: actix::Recipient<crate::messages::Revoked>,
    ) -> Result<Auth, AuthError> {
        use actix::Actor;
        let tokens = Arc::new(TokenService::new(
            &settings.keys,
            &settings.issuer,
            settings.audience.as_deref(),
            settings.leeway_seconds,
        )?);
        let dummy_hash =
            password::hash(&secret_string("")).map_err(|e| AuthError::Internal(e.to_string()))?;
        let tickets = Arc::new(TicketBook::default());
        const HOUR: Duration = Duration::from_secs(3600);
        let limiters = Arc::new(Limiters {
            failures_by_email: WindowLimiter::new(
                settings.login_failures_per_email,
                settings.login_window,
                MAX_KEYS,
            ),
            failures_by_ip: WindowLimiter::new(
                settings.login_failures_per_ip,
                settings.login_window,
                MAX_KEYS,
            ),
            demos_by_ip: WindowLimiter::new(settings.demo.per_ip_per_hour, HOUR, MAX_KEYS),
            registrations_by_ip: WindowLimiter::new(
                settings.registrations_per_ip_per_hour,
                HOUR,
                MAX_KEYS,
            ),
            registrations: WindowLimiter::new(settings.registrations_per_hour, HOUR, 1),
        });
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let actor = AuthActor::new(
            settings.clone(),
            tokens.clone(),
            store.clone(),
            tickets.clone(),
            limiters.clone(),
            revocations,
        )
        .start();
        Ok(Auth {
            inner: Arc::new(Inner {
                settings,
                tokens,
                store,
                tickets,
                limiters,
                dummy_hash,
                hashing: Arc::new(tokio::sync::Semaphore::new(cores * 2)),
                registration_hashing: Arc::new(tokio::sync::Semaphore::new(cores)),
                actor,
            }),
        })
    }

    /// Runs argon2 work for a login on a blocking thread, at most a few at
    /// a time.
    pub async fn argon2<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        Self::argon2_with(&self.inner.hashing, work).await
    }

    async fn argon2_with<T: Send + 'static>(
        permits: &Arc<tokio::sync::Semaphore>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| AuthError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// The actor, for messages such as [`Sweep`].
    pub fn actor(&self) -> &Addr<AuthActor> {
        &self.inner.actor
    }

    pub fn tokens(&self) -> &TokenService {
        &self.inner.tokens
    }

    /// Verifies an access JWT: signature and claims, token type, family not
    /// revoked, user present and active.
    pub fn verify_access(&self, token: &str) -> Result<Principal, AuthError> {
        observe(self.verify_access_inner(token))
    }

    fn verify_access_inner(&self, token: &str) -> Result<Principal, AuthError> {
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

    /// Verifies a refresh token's signature, claims and type (its family is
    /// the AuthActor's to check).
    fn decode_refresh(&self, token: &str) -> Result<Claims, AuthError> {
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
        if let Err(e) = self
            .inner
            .store
            .api_keys()
            .touch(&record, palaver_storage::now_millis())
        {
            tracing::warn!(error = %e, "cannot record API key use");
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

    /// Email + password login, throttled per email and per client IP.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<TokenPair, AuthError> {
        observe(self.login_inner(email, password, ip).await)
    }

    async fn login_inner(
        &self,
        email: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<TokenPair, AuthError> {
        check_lengths(email, password)?;
        let inner = &self.inner;
        let limits = &inner.limiters;
        let ip = ClientNet::from(ip);
        // Every attempt counts as a failure until proven otherwise, checked
        // and recorded in one step: concurrent guesses cannot all slip in
        // under the limit. The client first: one client cycling through
        // emails is stopped before it leaves a key per email.
        limits
            .failures_by_ip
            .try_hit(&ip)
            .map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        let email_key = EmailKey::of(email);
        if let Err(retry_after) = limits.failures_by_email.try_hit(&email_key) {
            limits.failures_by_ip.unhit(&ip);
            return Err(AuthError::RateLimited { retry_after });
        }
        let user = inner.store.users().find_by_email(email)?;
        // Unknown email: verify against the dummy hash, so both failures take
        // the same time and give the same answer.
        let hash = user
            .as_ref()
            .filter(|u| !u.is_demo)
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| inner.dummy_hash.clone());
        let password = password.to_owned();
        let matches = self
            .argon2(move || password::verify(&password, &hash))
            .await;
        let matches = match matches {
            Ok(m) => m,
            Err(e) => {
                // Not an attempt (the server was too busy to check): take it back.
                limits.failures_by_email.unhit(&email_key);
                limits.failures_by_ip.unhit(&ip);
                return Err(e);
            }
        };
        let user = match (matches, user) {
            (true, Some(user)) if !user.is_demo => user,
            _ => return Err(AuthError::InvalidCredentials),
        };
        limits.failures_by_email.clear(&email_key);
        limits.failures_by_ip.unhit(&ip);
        if !user.is_active {
            return Err(AuthError::AccountDisabled);
        }
        self.send(IssueTokens { user }).await
    }

    /// Starts a demo: a throwaway user with a hard lifetime, and its tokens.
    pub async fn demo(&self, ip: IpAddr) -> Result<TokenPair, AuthError> {
        let inner = &self.inner;
        if !inner.settings.demo.enabled {
            return Err(AuthError::DemoDisabled);
        }
        inner
            .limiters
            .demos_by_ip
            .try_hit(&ClientNet::from(ip))
            .map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        let expires_at = now_secs() + inner.settings.demo.lifetime.as_secs().max(1);
        let id = Uuid::new_v4().simple().to_string();
        let user = inner
            .store
            .users()
            .create(NewUser {
                email: format!("demo-{id}@demo.invalid"),
                // No password can match an empty hash: demo users cannot log in.
                password_hash: String::new(),
                is_demo: true,
                demo_expires_at: Some(expires_at),
            })
            .await?;
        tracing::info!(user_id = %user.id, "demo user created");
        telemetry::demo_user_created();
        self.send(IssueTokens { user }).await
    }

    /// Self-service registration (`auth.allow_registration`, checked by the
    /// caller with the email and password policies): throttled per client
    /// network and overall, hashed with permits of its own.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<User, AuthError> {
        check_lengths(email, password)?;
        let limits = &self.inner.limiters;
        let ip = ClientNet::from(ip);
        limits
            .registrations_by_ip
            .try_hit(&ip)
            .map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        if let Err(retry_after) = limits.registrations.try_hit(&()) {
            limits.registrations_by_ip.unhit(&ip);
            return Err(AuthError::RateLimited { retry_after });
        }
        let users = self.inner.store.users();
        if users.find_by_email(email)?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let password = password.to_owned();
        let hash = Self::argon2_with(&self.inner.registration_hashing, move || {
            password::hash(&password)
        })
        .await?
        .map_err(|e| AuthError::BadRequest(format!("password: {e}")))?;
        let user = users
            .create(NewUser {
                email: email.to_owned(),
                password_hash: hash,
                is_demo: false,
                demo_expires_at: None,
            })
            .await
            .map_err(|e| match e {
                StorageError::EmailTaken => AuthError::EmailTaken,
                other => other.into(),
            })?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(user)
    }

    /// Rotates a refresh token (reuse revokes its family).
    pub async fn refresh(&self, token: &str) -> Result<TokenPair, AuthError> {
        observe(self.refresh_inner(token).await)
    }

    async fn refresh_inner(&self, token: &str) -> Result<TokenPair, AuthError> {
        let claims = self.decode_refresh(token)?;
        self.send(Rotate { claims }).await
    }

    /// Revokes the family of a refresh token.
    pub async fn logout(&self, token: &str) -> Result<(), AuthError> {
        let claims = self.decode_refresh(token)?;
        self.send(RevokeFamily {
            family: claims.fam,
            user_id: claims.user(),
        })
        .await
    }

    /// Creates an API key for a user (see [`create_api_key`]).
    pub async fn create_api_key(
        &self,
        user: &User,
        name: &str,
    ) -> Result<(ApiKey, String), AuthError> {
        create_api_key(&self.inner.store, user, name).await
    }

    /// Deletes one of the user's keys; another user's key is `NotFound`.
    pub async fn delete_api_key(&self, user: &User, id: Uuid) -> Result<(), AuthError> {
        match self.inner.store.api_keys().get(id)? {
            Some(key) if key.user_id == user.id => {
                self.inner.store.api_keys().delete(id).await?;
                // Its unused tickets go with it.
                self.inner.tickets.forget_api_key(id);
                Ok(())
            }
            _ => Err(AuthError::NotFound),
        }
    }

    async fn send<M, R>(&self, msg: M) -> Result<R, AuthError>
    where
        M: actix::Message<Result = Result<R, AuthError>> + Send + 'static,
        R: Send + 'static,
        AuthActor: actix::Handler<M>,
    {
        self.inner
            .actor
            .send(msg)
            .await
            .map_err(|e| AuthError::Internal(format!("auth actor unavailable: {e}")))?
    }
}

/// Creates an API key for a user; returns the record and the key, which is
/// shown once and never stored (only its hash is). Demo users cannot have keys.
pub async fn create_api_key(
    store: &Store,
    user: &User,
    name: &str,
) -> Result<(ApiKey, String), AuthError> {
    if user.is_demo {
        return Err(AuthError::DemoForbidden);
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AuthError::BadRequest(
            "name: must be 1 to 100 characters".into(),
        ));
    }
    let key = secret_string(API_KEY_PREFIX);
    let record = ApiKey {
        id: Uuid::now_v7(),
        user_id: user.id,
        name: name.to_owned(),
        hash: api_key_hash(&key),
        created_at: palaver_storage::now_millis(),
        last_used_at: None,
    };
    store.api_keys().create(&record).await?;
    // A user deleted meanwhile keeps no key (what a race leaves anyway is
    // collected at the next start: docs/DECISIONS.md, "Purges").
    if store.users().get(user.id)?.is_none() {
        store.api_keys().delete(record.id).await?;
        return Err(AuthError::UnknownUser);
    }
    telemetry::token_issued("api_key");
    tracing::info!(user_id = %user.id, key_id = %record.id, "API key created");
    Ok((record, key))
}

/// An access token for an operator (`palaver token mint`), in a family of its
/// own that no refresh token belongs to. Capped at a demo user's end.
pub fn mint_access(
    tokens: &TokenService,
    user: &User,
    ttl: Duration,
) -> Result<(String, u64), AuthError> {
    let now = now_secs();
    let mut exp = now + ttl.as_secs().max(1);
    if let Some(end) = user.demo_expires_at {
        exp = exp.min(end);
    }
    let claims = tokens.claims(
        user.id,
        user.is_demo,
        TokenType::Access,
        Uuid::new_v4(),
        Uuid::new_v4(),
        now,
        exp,
    );
    Ok((tokens.encode(&claims)?, exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn booted() -> (Auth, Store) {
        let store = Store::temporary().unwrap();
        let booted = crate::supervisor::tests::boot(store.clone());
        (booted.auth, store)
    }

    async fn user(store: &Store, email: &str) -> User {
        store
            .users()
            .create(NewUser {
                email: email.into(),
                password_hash: password::hash("password-123").unwrap(),
                is_demo: false,
                demo_expires_at: None,
            })
            .await
            .unwrap()
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    use std::net::Ipv4Addr;

    #[actix_rt::test]
    async fn tickets_are_single_use_and_follow_revocation() {
        let (auth, store) = booted().await;
        user(&store, "ann@example.com").await;
        let pair = auth
            .login("ann@example.com", "password-123", IP)
            .await
            .unwrap();
        let principal = auth.verify_access(&pair.access).unwrap();

        let (ticket, ttl) = auth.issue_ticket(&principal).unwrap();
        assert_eq!(ttl, Duration::from_secs(30));
        let admitted = auth.consume_ticket(&ticket).unwrap();
        assert_eq!(admitted.user.id, principal.user.id);
        assert_eq!(admitted.family(), principal.family());
        assert_eq!(admitted.expires_at(), principal.expires_at());
        assert!(matches!(
            auth.consume_ticket(&ticket),
            Err(AuthError::Invalid(_))
        ));

        // A ticket of a family logged out meanwhile is refused.
        let (ticket, _) = auth.issue_ticket(&principal).unwrap();
        auth.logout(&pair.refresh).await.unwrap();
        assert!(matches!(
            auth.consume_ticket(&ticket),
            Err(AuthError::Revoked)
        ));
        assert!(matches!(
            auth.verify_access(&pair.access),
            Err(AuthError::Revoked)
        ));
    }

    #[actix_rt::test]
    async fn disabled_users_fail_verification_with_every_credential() {
        let (auth, store) = booted().await;
        let ann = user(&store, "ann@example.com").await;
        let pair = auth
            .login("ann@example.com", "password-123", IP)
            .await
            .unwrap();
        let (_, key) = auth.create_api_key(&ann, "k").await.unwrap();
        let (ticket, _) = auth
            .issue_ticket(&auth.verify_access(&pair.access).unwrap())
            .unwrap();
        store.users().set_active(ann.id, false).await.unwrap();
        assert!(matches!(
            auth.verify_access(&pair.access),
            Err(AuthError::AccountDisabled)
        ));
        assert!(matches!(
            auth.verify_api_key(&key),
            Err(AuthError::AccountDisabled)
        ));
        assert!(matches!(
            auth.consume_ticket(&ticket),
            Err(AuthError::AccountDisabled)
        ));
        assert!(matches!(
            auth.refresh(&pair.refresh).await,
            Err(AuthError::AccountDisabled)
        ));
        assert!(matches!(
            auth.login("ann@example.com", "password-123", IP).await,
            Err(AuthError::AccountDisabled)
        ));
    }

    #[actix_rt::test]
    async fn minted_tokens_verify_and_are_capped_for_demo_users() {
        let (auth, store) = booted().await;
        let ann = user(&store, "ann@example.com").await;
        let (token, exp) = mint_access(auth.tokens(), &ann, Duration::from_secs(3600)).unwrap();
        assert!(exp >= now_secs() + 3599);
        assert_eq!(auth.verify_access(&token).unwrap().user.id, ann.id);

        let demo = auth.demo(IP).await.unwrap();
        let end = demo.user.demo_expires_at.unwrap();
        let (_, exp) = mint_access(auth.tokens(), &demo.user, Duration::from_secs(86400)).unwrap();
        assert_eq!(exp, end);
    }

    #[actix_rt::test]
    async fn a_revoked_familys_record_outlives_its_longest_token() {
        // Access tokens outliving refresh tokens: the family's record must
        // stay until the access token expires, or its revocation is lost.
        let store = Store::temporary().unwrap();
        let mut settings = crate::supervisor::tests::settings();
        settings.access_ttl = Duration::from_secs(7200);
        settings.refresh_ttl = Duration::from_secs(60);
        let auth = crate::supervisor::tests::boot_with(store.clone(), settings).auth;
        user(&store, "ann@example.com").await;
        let pair = auth
            .login("ann@example.com", "password-123", IP)
            .await
            .unwrap();
        auth.logout(&pair.refresh).await.unwrap();
        // A collection just after the refresh token's expiry.
        store.families().collect_expired(now_secs() + 120).unwrap();
        assert!(matches!(
            auth.verify_access(&pair.access),
            Err(AuthError::Revoked)
        ));
    }

    #[actix_rt::test]
    async fn a_ticket_never_outlives_its_credential() {
        let (auth, store) = booted().await;
        let ann = user(&store, "ann@example.com").await;
        let grant = |credential_expires_at| TicketGrant {
            user_id: ann.id,
            family: None,
            credential_expires_at,
            api_key: None,
        };
        let ttl = Duration::from_secs(30);
        let late = auth
            .inner
            .tickets
            .issue(grant(Some(now_secs() - 1)), ttl)
            .unwrap();
        assert!(matches!(
            auth.consume_ticket(&late),
            Err(AuthError::Expired)
        ));
        let fine = auth
            .inner
            .tickets
            .issue(grant(Some(now_secs() + 60)), ttl)
            .unwrap();
        assert!(auth.consume_ticket(&fine).is_ok());

        // Nor is one issued for a credential past its expiry (verified
        // within the leeway).
        let mut principal = Principal {
            user: ann.clone(),
            via: Via::Ticket(grant(Some(now_secs() - 2))),
        };
        assert!(matches!(
            auth.issue_ticket(&principal),
            Err(AuthError::Expired)
        ));
        principal.via = Via::Ticket(grant(Some(now_secs() + 60)));
        assert!(auth.issue_ticket(&principal).is_ok());
    }

    #[actix_rt::test]
    async fn recheck_sees_deleted_keys_revoked_families_and_disabled_users() {
        let (auth, store) = booted().await;
        let ann = user(&store, "ann@example.com").await;
        let (record, key) = auth.create_api_key(&ann, "k").await.unwrap();
        let by_key = auth.verify_api_key(&key).unwrap();
        let pair = auth
            .login("ann@example.com", "password-123", IP)
            .await
            .unwrap();
        let by_token = auth.verify_access(&pair.access).unwrap();
        let (ticket, _) = auth.issue_ticket(&by_key).unwrap();
        let by_ticket = auth.consume_ticket(&ticket).unwrap();
        for p in [&by_key, &by_token, &by_ticket] {
            assert!(auth.recheck(p).is_ok());
        }

        auth.delete_api_key(&ann, record.id).await.unwrap();
        assert!(matches!(auth.recheck(&by_key), Err(AuthError::Revoked)));
        assert!(matches!(auth.recheck(&by_ticket), Err(AuthError::Revoked)));
        assert!(auth.recheck(&by_token).is_ok());

        auth.logout(&pair.refresh).await.unwrap();
        assert!(matches!(auth.recheck(&by_token), Err(AuthError::Revoked)));

        let bob = user(&store, "bob@example.com").await;
        let (_, key) = auth.create_api_key(&bob, "k").await.unwrap();
        let by_key = auth.verify_api_key(&key).unwrap();
        store.users().set_active(bob.id, false).await.unwrap();
        assert!(matches!(
            auth.recheck(&by_key),
            Err(AuthError::AccountDisabled)
        ));
    }

    #[actix_rt::test]
    async fn overlong_credentials_are_refused_before_anything_is_kept() {
        let (auth, store) = booted().await;
        user(&store, "ann@example.com").await;
        for _ in 0..100 {
            let email = format!("{}@example.com", "x".repeat(300));
            let err = auth.login(&email, "password-123", IP).await.unwrap_err();
            assert!(
                matches!(&err, AuthError::BadRequest(m) if m.starts_with("email:")),
                "{err:?}"
            );
            let err = auth
                .login("ann@example.com", &"p".repeat(1025), IP)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, AuthError::BadRequest(m) if m.starts_with("password:")),
                "{err:?}"
            );
        }
        let limits = &auth.inner.limiters;
        assert!(limits.failures_by_ip.is_empty() && limits.failures_by_email.is_empty());
        // Under the limits they count as before.
        let err = auth.login("ann@example.com", "wrong-pass", IP).await;
        assert!(matches!(err, Err(AuthError::InvalidCredentials)));
        assert_eq!(limits.failures_by_email.len(), 1);
        // A successful login clears its email's failures (the client's
        // stay: one good account must not reset a guessing client).
        auth.login("ann@example.com", "password-123", IP)
            .await
            .unwrap();
        assert!(limits.failures_by_email.is_empty());
        assert_eq!(limits.failures_by_ip.len(), 1);
    }

    #[actix_rt::test]
    async fn the_client_limit_is_checked_before_the_email_limit() {
        let store = Store::temporary().unwrap();
        let mut settings = crate::supervisor::tests::settings();
        settings.login_failures_per_ip = 3;
        let auth = crate::supervisor::tests::boot_with(store.clone(), settings).auth;
        for n in 0..3 {
            let err = auth
                .login(&format!("u{n}@example.com"), "wrong-pass", IP)
                .await;
            assert!(matches!(err, Err(AuthError::InvalidCredentials)));
        }
        // A client over its limit leaves no per-email entry for new emails.
        for n in 3..50 {
            let err = auth
                .login(&format!("u{n}@example.com"), "wrong-pass", IP)
                .await;
            assert!(matches!(err, Err(AuthError::RateLimited { .. })));
        }
        assert_eq!(auth.inner.limiters.failures_by_email.len(), 3);
    }

    #[actix_rt::test]
    async fn the_sweep_deletes_expired_demo_users_only() {
        let (auth, store) = booted().await;
        let live = auth.demo(IP).await.unwrap().user;
        let expired = store
            .users()
            .create(NewUser {
                email: "demo-old@demo.invalid".into(),
                password_hash: String::new(),
                is_demo: true,
                demo_expires_at: Some(now_secs() - 1),
            })
            .await
            .unwrap();
        auth.actor().send(Sweep).await.unwrap();
        assert!(store.users().get(expired.id).unwrap().is_none());
        assert!(store.users().get(live.id).unwrap().is_some());
    }
}
