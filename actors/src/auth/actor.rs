//! The AuthActor: the single writer of identity state. It creates token
//! families, rotates refresh tokens (reuse revokes the family), revokes on
//! logout, runs the demo sweep and collects expired state, and tells the
//! Supervisor about every revocation so it can close the affected sockets.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use palaver_storage::{Family, Rotation, Store, User, UserId};
use uuid::Uuid;

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

/// From the `Auth` handle after a successful login or demo start: opens a
/// new token family for `user`. Answers the first token pair.
pub struct IssueTokens {
    pub user: User,
}

impl Message for IssueTokens {
    type Result = Result<TokenPair, AuthError>;
}

impl Handler<IssueTokens> for AuthActor {
    type Result = ResponseFuture<Result<TokenPair, AuthError>>;

    fn handle(&mut self, msg: IssueTokens, _: &mut Self::Context) -> Self::Result {
        let (tokens, lifetimes, store) =
            (self.tokens.clone(), self.lifetimes(), self.store.clone());
        Box::pin(async move {
            let fam = Uuid::new_v4();
            let jti = Uuid::new_v4();
            let (pair, family_exp) = mint_pair(&tokens, lifetimes, &msg.user, fam, jti)?;
            store
                .families()
                .create(&Family {
                    id: fam,
                    user_id: msg.user.id,
                    current_jti: jti,
                    expires_at: family_exp,
                    revoked: false,
                })
                .await?;
            Ok(issued(pair))
        })
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
        let (tokens, lifetimes, store) =
            (self.tokens.clone(), self.lifetimes(), self.store.clone());
        let revocations = self.revocations.clone();
        Box::pin(async move {
            let claims = msg.claims;
            let user_id = claims
                .user()
                .ok_or(AuthError::Invalid("malformed subject"))?;
            let user = store
                .users()
                .get(user_id)?
                .ok_or(AuthError::Invalid("unknown user"))?;
            ensure_usable(&user)?;
            let next = Uuid::new_v4();
            let (pair, family_exp) = mint_pair(&tokens, lifetimes, &user, claims.fam, next)?;
            match store
                .families()
                .rotate(claims.fam, claims.jti, next, family_exp)
                .await?
            {
                Rotation::Rotated(_) => Ok(issued(pair)),
                Rotation::Reused(family) => {
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
        let store = self.store.clone();
        let revocations = self.revocations.clone();
        Box::pin(async move {
            if let Some(family) = store.families().revoke(msg.family).await? {
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
