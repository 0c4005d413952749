//! Operator-minted access tokens (`palaver token mint`).

use std::time::Duration;

use palaver_storage::User;
use uuid::Uuid;

use super::{now_secs, AuthError, TokenService, TokenType};

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
