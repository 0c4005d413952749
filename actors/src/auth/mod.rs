//! Identity: tokens, tickets, API keys, login throttles and the [`AuthActor`].
//!
//! Split of work: verification (signature, claims, family, user) runs in the
//! caller through the cloneable [`Auth`] handle, concurrently on every worker
//! thread (measured: a mailbox on the handshake path caps verification at one
//! core). Every write of identity state (users created by demo or
//! registration, token families, rotation, revocation, API keys and their
//! use, the demo sweep and garbage collection) goes through the one
//! [`AuthActor`], the single writer: its handlers make their writes one at a
//! time and only then wait, concurrently, for the flush that makes them
//! durable. It also tells the Supervisor about revocations.
//!
//! # Layout
//! - `mod.rs`: the settings, [`Principal`], [`TokenPair`], small helpers.
//! - `error.rs`: [`AuthError`].
//! - `handle.rs`: the [`Auth`] handle: start, bounded argon2, the actor.
//! - `verify.rs`: verification of every credential form, tickets, re-checks.
//! - `login.rs`: login, demo, registration, refresh, logout.
//! - `api_keys.rs`: API keys: create, delete (and the CLI's offline create).
//! - `mint.rs`: operator-minted access tokens (`palaver token mint`).
//! - `actor.rs`: the [`AuthActor`] and its messages.
//! - [`external`]: tokens from another issuer (`[[auth.external]]`): which
//!   source a token claims, each source's keys (JWKS fetched and cached per
//!   entry) and claims. Their users are provisioned by the AuthActor.
//! - [`keys`], [`tokens`], [`tickets`], [`throttle`]: key material, JWTs,
//!   single-use tickets, sliding-window limiters.

mod actor;
mod api_keys;
mod error;
pub mod external;
mod handle;
pub mod keys;
mod login;
mod mint;
pub mod throttle;
pub mod tickets;
pub mod tokens;
mod verify;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palaver_storage::User;
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use actor::{
    AuthActor, CreateApiKey, CreateDemo, CreateUser, DeleteApiKey, IssueTokens, ProvisionExternal,
    RevokeFamily, Rotate, Sweep, TouchApiKey,
};
pub use api_keys::create_api_key_offline;
pub use error::AuthError;
pub use external::{ExternalKey, ExternalSettings};
pub use handle::Auth;
pub use keys::{KeyError, KeySource};
pub use mint::mint_access;
pub use tickets::{TicketBook, TicketGrant};
pub use tokens::{Claims, TokenError, TokenService, TokenType};

use crate::password;

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
    /// `[[auth.external]]`: the other issuers whose tokens are accepted.
    pub external: Vec<ExternalSettings>,
}

#[derive(Clone, Debug)]
pub struct DemoSettings {
    pub enabled: bool,
    pub lifetime: Duration,
    pub per_ip_per_hour: u32,
    pub gc_after: Duration,
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
    /// An access token from another issuer (`[[auth.external]]`).
    External(ExternalGrant),
}

/// What a verified token from another issuer grants.
#[derive(Clone, Debug)]
pub struct ExternalGrant {
    /// The source's configured name.
    pub source: std::sync::Arc<str>,
    /// The token's `exp` (Unix seconds).
    pub exp: u64,
}

impl Principal {
    /// The token family behind the credential, if any.
    pub fn family(&self) -> Option<Uuid> {
        match &self.via {
            Via::Access(c) => Some(c.fam),
            Via::ApiKey(_) | Via::External(_) => None,
            Via::Ticket(g) => g.family,
        }
    }

    /// The API key behind the credential, if any.
    pub fn api_key(&self) -> Option<Uuid> {
        match &self.via {
            Via::ApiKey(id) => Some(*id),
            Via::Ticket(g) => g.api_key,
            Via::Access(_) | Via::External(_) => None,
        }
    }

    /// When the credential stops being valid (Unix seconds), if ever.
    pub fn expires_at(&self) -> Option<u64> {
        match &self.via {
            Via::Access(c) => Some(c.exp),
            Via::ApiKey(_) => self.user.demo_expires_at,
            Via::Ticket(g) => g.credential_expires_at,
            // Another issuer's token says nothing of a demo's end: the
            // earlier of the two.
            Via::External(g) => Some(
                self.user
                    .demo_expires_at
                    .map_or(g.exp, |end| end.min(g.exp)),
            ),
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

#[cfg(test)]
mod tests;
