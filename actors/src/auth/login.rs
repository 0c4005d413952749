//! Login, demo start, registration, refresh and logout: the throttles and
//! password checks run in the caller; the writes go to the [`AuthActor`].

use std::net::IpAddr;

use palaver_storage::User;

use super::error::observe;
use super::throttle::{ClientNet, EmailKey};
use super::{
    check_lengths, now_secs, password, Auth, AuthError, CreateDemo, CreateUser, IssueTokens,
    RevokeFamily, Rotate, TokenPair,
};

impl Auth {
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
        self.send(CreateDemo { expires_at }).await
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
        if self.inner.store.users().find_by_email(email)?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let password = password.to_owned();
        let hash = Self::argon2_with(&self.inner.registration_hashing, move || {
            password::hash(&password)
        })
        .await?
        .map_err(|e| AuthError::BadRequest(format!("password: {e}")))?;
        self.send(CreateUser {
            email: email.to_owned(),
            password_hash: hash,
        })
        .await
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
}
