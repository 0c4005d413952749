//! The [`Auth`] handle: cloneable, shared by every worker thread. It starts
//! the [`AuthActor`], bounds argon2 work, and carries what verification
//! reads; the methods live in `verify.rs`, `login.rs` and `api_keys.rs`.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use palaver_storage::Store;

use super::external::jwks::JwksFetcher;
use super::external::Sources;
use super::throttle::{Limiters, WindowLimiter, MAX_KEYS};
use super::{
    password, secret_string, AuthActor, AuthError, AuthSettings, TicketBook, TokenService,
};

/// The cloneable handle handlers use. Reads happen here, in the caller;
/// writes go to the [`AuthActor`].
#[derive(Clone)]
pub struct Auth {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) settings: AuthSettings,
    pub(super) tokens: Arc<TokenService>,
    /// The other issuers (`[[auth.external]]`), and which one a token claims.
    pub(super) sources: Sources,
    /// Fetches the JWKS of the sources that have one (none: no such source).
    pub(super) jwks: Option<Addr<JwksFetcher>>,
    pub(super) store: Store,
    pub(super) tickets: Arc<TicketBook>,
    pub(super) limiters: Arc<Limiters>,
    /// A hash of a random password, verified against when the email is
    /// unknown so both failures cost the same.
    pub(super) dummy_hash: String,
    /// Bounds argon2 work for logins in flight (each takes 19 MiB and tens
    /// of ms of a core): past it, `Busy` rather than unbounded memory.
    pub(super) hashing: Arc<tokio::sync::Semaphore>,
    /// The same for registrations, separately: a flood of registrations
    /// never takes the permits logins need.
    pub(super) registration_hashing: Arc<tokio::sync::Semaphore>,
    pub(super) actor: Addr<AuthActor>,
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
        let sources = Sources::new(&settings.external, &settings.keys, &settings.issuer)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let fetched: Vec<_> = sources
            .iter()
            .filter_map(|s| s.jwks().map(|cache| (cache.clone(), s.counters.clone())))
            .collect();
        let jwks = if fetched.is_empty() {
            None
        } else {
            Some(
                JwksFetcher::new(fetched)
                    .map_err(AuthError::Internal)?
                    .start(),
            )
        };
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
                sources,
                jwks,
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

    pub(super) async fn argon2_with<T: Send + 'static>(
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

    pub(super) async fn send<M, R>(&self, msg: M) -> Result<R, AuthError>
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
