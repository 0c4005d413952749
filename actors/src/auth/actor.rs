//! The AuthActor: the single writer of identity state. It creates users
//! (demo, registration, and users from another issuer's tokens) and token
//! families, rotates refresh tokens
//! (reuse revokes the family), revokes on logout, creates and deletes API
//! keys and records their use, runs the demo sweep and collects expired
//! state, and tells the Supervisor about every revocation so it can close
//! the affected sockets.
//!
//! One at a time: every handler makes its writes synchronously in `handle`
//! (microseconds: sled inserts and compare-and-swaps, no flush), so writes
//! never interleave; the future it returns only waits for the group
//! commit's flush, concurrently with other handlers' waits, so many writes
//! share one flush. The sweep's purges run likewise in one step of the
//! actor. Password hashing and verification stay in the callers (they are
//! CPU work, bounded by their own permits).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use palaver_storage::{
    ApiKey, ExternalIdentity, Family, NewUser, Rotation, StorageError, Store, User, UserId,
};
use uuid::Uuid;

use super::api_keys::new_key;
use super::throttle::Limiters;
use super::{
    ensure_usable, now_secs, AuthError, AuthSettings, Claims, TicketBook, TokenPair, TokenService,
    TokenType,
};
use crate::messages::{RevokeReason, Revoked};
use crate::telemetry;

pub struct AuthActor {
    settings: AuthSettings,
    tokens: Arc<TokenService>,
    store: Store,
    /// Collected on every sweep.
    tickets: Arc<TicketBook>,
    /// Collected on every sweep.
    limiters: Arc<Limiters>,
    /// Told of every revocation (the Supervisor).
    revocations: Recipient<Revoked>,
    /// A sweep is running (sweeps never overlap).
    sweeping: bool,
}

impl AuthActor {
    pub(crate) fn new(
        settings: AuthSettings,
        tokens: Arc<TokenService>,
        store: Store,
        tickets: Arc<TicketBook>,
        limiters: Arc<Limiters>,
        revocations: Recipient<Revoked>,
    ) -> Self {
        AuthActor {
            settings,
            tokens,
            store,
            tickets,
            limiters,
            revocations,
            sweeping: false,
        }
    }

    /// Sweeps often enough that an expired demo user is gone well within
    /// `demo.gc_after` of its expiry.
    fn sweep_interval(&self) -> Duration {
        (self.settings.demo.gc_after / 2).clamp(Duration::from_millis(500), Duration::from_secs(60))
    }
}

impl AuthActor {
    fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            access: self.settings.access_ttl,
            refresh: self.settings.refresh_ttl,
        }
    }
}

impl Actor for AuthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.sweep_interval(), |_, ctx| ctx.notify(Sweep));
    }
}

/// How long the tokens of a pair live (all the minting needs of the
/// settings: the futures copy these, not the keys).
#[derive(Clone, Copy)]
struct Lifetimes {
    access: Duration,
    refresh: Duration,
}

/// Mints an access + refresh pair for `user` in family `fam`; both expire at
/// the latest at the end of a demo user's lifetime. Answers the pair and
/// when its last token expires: the family's record must outlive both, or a
/// revoked family's access tokens would verify again once the record is
/// collected (with `access_ttl > refresh_ttl`). Counted as issued only once
/// the write that allows them succeeded ([`issued`]).
fn mint_pair(
    tokens: &TokenService,
    lifetimes: Lifetimes,
    user: &User,
    fam: Uuid,
    refresh_jti: Uuid,
) -> Result<(TokenPair, u64), AuthError> {
    let now = now_secs();
    let cap = |ttl: Duration| {
        let exp = now + ttl.as_secs().max(1);
        user.demo_expires_at.map_or(exp, |end| exp.min(end))
    };
    let (access_exp, refresh_exp) = (cap(lifetimes.access), cap(lifetimes.refresh));
    let access = tokens.encode(&tokens.claims(
        user.id,
        user.is_demo,
        TokenType::Access,
        fam,
        Uuid::new_v4(),
        now,
        access_exp,
    ))?;
    let refresh = tokens.encode(&tokens.claims(
        user.id,
        user.is_demo,
        TokenType::Refresh,
        fam,
        refresh_jti,
        now,
        refresh_exp,
    ))?;
    let pair = TokenPair {
        access,
        refresh,
        expires_in: access_exp.saturating_sub(now),
        user: user.clone(),
    };
    Ok((pair, access_exp.max(refresh_exp)))
}

/// Counts a pair that is handed out.
fn issued(pair: TokenPair) -> TokenPair {
    telemetry::token_issued("access");
    telemetry::token_issued("refresh");
    pair
}

/// Answers `value` once every write made so far is durable: the write was
/// made (one at a time) in the handler; only the wait runs concurrently.
async fn when_durable<T>(store: Store, value: Result<T, AuthError>) -> Result<T, AuthError> {
    let value = value?;
    store.durable().await?;
    Ok(value)
}

impl AuthActor {
    /// Opens a new token family for `user` (written, not yet durable) and
    /// mints its first pair.
    fn open_family(&self, user: &User) -> Result<TokenPair, AuthError> {
        let fam = Uuid::new_v4();
        let jti = Uuid::new_v4();
        let (pair, family_exp) = mint_pair(&self.tokens, self.lifetimes(), user, fam, jti)?;
        self.store.families().create_nowait(&Family {
            id: fam,
            user_id: user.id,
            current_jti: jti,
            expires_at: family_exp,
            revoked: false,
        })?;
        Ok(pair)
    }
}

/// From the `Auth` handle after a successful login: opens a new token
/// family for `user`. Answers the first token pair, once durable.
pub struct IssueTokens {
    pub user: User,
}

impl Message for IssueTokens {
    type Result = Result<TokenPair, AuthError>;
}

impl Handler<IssueTokens> for AuthActor {
    type Result = ResponseFuture<Result<TokenPair, AuthError>>;

    fn handle(&mut self, msg: IssueTokens, _: &mut Self::Context) -> Self::Result {
        let pair = self.open_family(&msg.user);
        let store = self.store.clone();
        Box::pin(async move { when_durable(store, pair).await.map(issued) })
    }
}

/// From the `Auth` handle on `POST /api/auth/demo/` (throttled by the
/// caller): creates a demo user living until `expires_at` and opens its
/// first token family. Answers its pair, once durable.
pub struct CreateDemo {
    pub expires_at: u64,
}

impl Message for CreateDemo {
    type Result = Result<TokenPair, AuthError>;
}

impl Handler<CreateDemo> for AuthActor {
    type Result = ResponseFuture<Result<TokenPair, AuthError>>;

    fn handle(&mut self, msg: CreateDemo, _: &mut Self::Context) -> Self::Result {
        let id = Uuid::new_v4().simple().to_string();
        let pair = self
            .store
            .users()
            .create_nowait(NewUser {
                email: format!("demo-{id}@demo.invalid"),
                // No password can match an empty hash: demo users cannot log in.
                password_hash: String::new(),
                is_demo: true,
                demo_expires_at: Some(msg.expires_at),
            })
            .map_err(AuthError::from)
            .and_then(|user| {
                tracing::info!(user_id = %user.id, "demo user created");
                telemetry::demo_user_created();
                self.open_family(&user)
            });
        let store = self.store.clone();
        Box::pin(async move { when_durable(store, pair).await.map(issued) })
    }
}

/// From the `Auth` handle on registration (throttled, password hashed by
/// the caller): creates a regular user. Answers it once durable, or
/// `EmailTaken`.
pub struct CreateUser {
    pub email: String,
    pub password_hash: String,
}

impl Message for CreateUser {
    type Result = Result<User, AuthError>;
}

impl Handler<CreateUser> for AuthActor {
    type Result = ResponseFuture<Result<User, AuthError>>;

    fn handle(&mut self, msg: CreateUser, _: &mut Self::Context) -> Self::Result {
        let user = self
            .store
            .users()
            .create_nowait(NewUser {
                email: msg.email,
                password_hash: msg.password_hash,
                is_demo: false,
                demo_expires_at: None,
            })
            .map_err(|e| match e {
                StorageError::EmailTaken => AuthError::EmailTaken,
                other => other.into(),
            });
        if let Ok(user) = &user {
            tracing::info!(user_id = %user.id, "user registered");
        }
        Box::pin(when_durable(self.store.clone(), user))
    }
}

/// From the `Auth` handle when another issuer's token verified and no user
/// has its identity yet: provisions one (no email, no password; a demo user
/// for `demo.lifetime` when the entry's demo claim said so). Concurrent
/// first verifications all get the one user: the first message creates it,
/// the others find it (and the storage transaction would say so even
/// without this actor). Answers the user once durable.
pub struct ProvisionExternal {
    pub identity: ExternalIdentity,
    pub is_demo: bool,
}

impl Message for ProvisionExternal {
    type Result = Result<User, AuthError>;
}

impl Handler<ProvisionExternal> for AuthActor {
    type Result = ResponseFuture<Result<User, AuthError>>;

    fn handle(&mut self, msg: ProvisionExternal, _: &mut Self::Context) -> Self::Result {
        let demo_end = msg
            .is_demo
            .then(|| now_secs() + self.settings.demo.lifetime.as_secs().max(1));
        let user = self
            .store
            .users()
            .find_or_create_external_nowait(&msg.identity, demo_end)
            .map_err(AuthError::from)
            .map(|(user, created)| {
                if created {
                    // The issuer's id for the user may be personal (an
                    // email): logged is palaver's id and the source.
                    tracing::info!(user_id = %user.id, source = %msg.identity.issuer, demo = user.is_demo, "user from another issuer provisioned");
                    if user.is_demo {
                        telemetry::demo_user_created();
                    }
                }
                user
            });
        // Also when it existed: it may have been created a moment ago by a
        // write whose flush is still under way.
        Box::pin(when_durable(self.store.clone(), user))
    }
}

/// From the `Auth` handle with the verified claims of a presented refresh
/// token: spends it and answers its successor, or, if it was spent already,
/// revokes the family and answers `Revoked`.
pub struct Rotate {
    pub claims: Claims,
}

impl Message for Rotate {
    type Result = Result<TokenPair, AuthError>;
}

impl Handler<Rotate> for AuthActor {
    type Result = ResponseFuture<Result<TokenPair, AuthError>>;

    fn handle(&mut self, msg: Rotate, _: &mut Self::Context) -> Self::Result {
        let claims = msg.claims;
        let rotated: Result<_, AuthError> = (|| {
            let user_id = claims
                .user()
                .ok_or(AuthError::Invalid("malformed subject"))?;
            let user = self
                .store
                .users()
                .get(user_id)?
                .ok_or(AuthError::Invalid("unknown user"))?;
            ensure_usable(&user)?;
            let next = Uuid::new_v4();
            let (pair, family_exp) =
                mint_pair(&self.tokens, self.lifetimes(), &user, claims.fam, next)?;
            let rotation = self
                .store
                .families()
                .rotate_nowait(claims.fam, claims.jti, next, family_exp)?;
            Ok((pair, rotation))
        })();
        let revocations = self.revocations.clone();
        let store = self.store.clone();
        Box::pin(async move {
            let (pair, rotation) = rotated?;
            match rotation {
                Rotation::Rotated(_) => {
                    store.durable().await?;
                    Ok(issued(pair))
                }
                Rotation::Reused(family) => {
                    store.durable().await?;
                    telemetry::refresh_reuse();
                    tracing::warn!(user_id = %family.user_id, family = %family.id, "refresh token reuse: family revoked");
                    revocations.do_send(Revoked {
                        user_id: family.user_id,
                        family: Some(family.id),
                        reason: RevokeReason::RefreshReuse,
                    });
                    Err(AuthError::Revoked)
                }
                Rotation::Revoked | Rotation::Unknown => Err(AuthError::Revoked),
            }
        })
    }
}

/// From the `Auth` handle on logout: revokes a family. Answers `Ok` also when
/// the family is already revoked or gone.
pub struct RevokeFamily {
    pub family: Uuid,
    pub user_id: Option<UserId>,
}

impl Message for RevokeFamily {
    type Result = Result<(), AuthError>;
}

impl Handler<RevokeFamily> for AuthActor {
    type Result = ResponseFuture<Result<(), AuthError>>;

    fn handle(&mut self, msg: RevokeFamily, _: &mut Self::Context) -> Self::Result {
        let revoked = self.store.families().revoke_nowait(msg.family);
        let (store, revocations) = (self.store.clone(), self.revocations.clone());
        Box::pin(async move {
            let (family, changed) = revoked?;
            if changed {
                store.durable().await?;
            }
            if let Some(family) = family {
                revocations.do_send(Revoked {
                    user_id: family.user_id,
                    family: Some(family.id),
                    reason: RevokeReason::Logout,
                });
            } else if let Some(user_id) = msg.user_id {
                tracing::debug!(%user_id, "logout of an unknown family");
            }
            Ok(())
        })
    }
}

/// From the `Auth` handle (name checked by the caller): creates an API key
/// for a user that still exists. Answers the record and the key, once
/// durable. Run by the single writer, a key can never be created for a user
/// the sweep is deleting: the purge's removals run in one step of this
/// actor, before or after this handler, never across it.
pub struct CreateApiKey {
    pub user_id: UserId,
    pub name: String,
}

impl Message for CreateApiKey {
    type Result = Result<(ApiKey, String), AuthError>;
}

impl Handler<CreateApiKey> for AuthActor {
    type Result = ResponseFuture<Result<(ApiKey, String), AuthError>>;

    fn handle(&mut self, msg: CreateApiKey, _: &mut Self::Context) -> Self::Result {
        let created: Result<_, AuthError> = (|| {
            if self.store.users().get(msg.user_id)?.is_none() {
                return Err(AuthError::UnknownUser);
            }
            let (record, key) = new_key(msg.user_id, msg.name);
            self.store.api_keys().create_nowait(&record)?;
            Ok((record, key))
        })();
        let store = self.store.clone();
        Box::pin(async move {
            let created = when_durable(store, created).await?;
            telemetry::token_issued("api_key");
            tracing::info!(user_id = %created.0.user_id, key_id = %created.0.id, "API key created");
            Ok(created)
        })
    }
}

/// From the `Auth` handle: deletes one of `user_id`'s keys and the unused
/// tickets it asked for. Answers once durable; another user's key or a
/// missing one is `NotFound`.
pub struct DeleteApiKey {
    pub user_id: UserId,
    pub key_id: Uuid,
}

impl Message for DeleteApiKey {
    type Result = Result<(), AuthError>;
}

impl Handler<DeleteApiKey> for AuthActor {
    type Result = ResponseFuture<Result<(), AuthError>>;

    fn handle(&mut self, msg: DeleteApiKey, _: &mut Self::Context) -> Self::Result {
        let deleted: Result<_, AuthError> = (|| match self.store.api_keys().get(msg.key_id)? {
            Some(key) if key.user_id == msg.user_id => {
                self.store.api_keys().delete_nowait(msg.key_id)?;
                self.tickets.forget_api_key(msg.key_id);
                Ok(())
            }
            _ => Err(AuthError::NotFound),
        })();
        Box::pin(when_durable(self.store.clone(), deleted))
    }
}

/// From the `Auth` handle when an API key authenticated and its last
/// recorded use is over a minute old: records the use. No answer (a lost
/// `last_used_at` is harmless, so it is not waited on).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TouchApiKey {
    pub key: ApiKey,
    pub at: u64,
}

impl Handler<TouchApiKey> for AuthActor {
    type Result = ();

    fn handle(&mut self, msg: TouchApiKey, _: &mut Self::Context) {
        if let Err(e) = self.store.api_keys().touch(&msg.key, msg.at) {
            tracing::warn!(error = %e, "cannot record API key use");
        }
    }
}

/// From the actor's own timer (and tests): deletes expired demo users with
/// everything they own, drops expired families and tickets, and trims the
/// throttles. Answers when done (at once if a sweep is already running).
pub struct Sweep;

impl Message for Sweep {
    type Result = ();
}

impl Handler<Sweep> for AuthActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Sweep, _: &mut Self::Context) -> Self::Result {
        if self.sweeping {
            return Box::pin(actix::fut::ready(()));
        }
        self.sweeping = true;
        self.tickets.collect_expired();
        self.limiters.collect();
        let store = self.store.clone();
        let revocations = self.revocations.clone();
        let leeway = self.settings.leeway_seconds;
        let work = async move {
            let now = now_secs();
            let expired = match store.users().demo_expired_before(now) {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(error = %e, "demo sweep: cannot list expired demo users");
                    Vec::new()
                }
            };
            for id in expired {
                match store.purge_user(id).await {
                    Ok(_) => {
                        tracing::info!(user_id = %id, "demo user expired and deleted");
                        revocations.do_send(Revoked {
                            user_id: id,
                            family: None,
                            reason: RevokeReason::UserDeleted,
                        });
                    }
                    Err(e) => {
                        tracing::error!(user_id = %id, error = %e, "demo sweep: delete failed")
                    }
                }
            }
            telemetry::demo_users(store.users().demo_count());
            if let Err(e) = store.families().collect_expired(now.saturating_sub(leeway)) {
                tracing::error!(error = %e, "cannot collect expired token families");
            }
        };
        Box::pin(work.into_actor(self).map(|_, act, _| act.sweeping = false))
    }
}
