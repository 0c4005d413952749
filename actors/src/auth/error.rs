//! [`AuthError`]: why a request could not be authenticated, or an identity
//! operation failed; and the failure counter.

use std::time::Duration;

use palaver_storage::StorageError;

use super::{KeyError, TokenError};
use crate::telemetry;

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
pub(super) fn observe<T>(result: Result<T, AuthError>) -> Result<T, AuthError> {
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
