//! API keys: created and deleted through the [`AuthActor`] (the single
//! writer); the CLI creates them offline, with the server stopped.

use palaver_storage::{ApiKey, Store, User};
use uuid::Uuid;

use super::{
    api_key_hash, secret_string, Auth, AuthError, CreateApiKey, DeleteApiKey, API_KEY_PREFIX,
};
use crate::telemetry;

impl Auth {
    /// Creates an API key for a user: the record, and the key, shown once
    /// and never stored (only its hash is). Demo users cannot have keys.
    pub async fn create_api_key(
        &self,
        user: &User,
        name: &str,
    ) -> Result<(ApiKey, String), AuthError> {
        let name = valid_name(user, name)?;
        self.send(CreateApiKey {
            user_id: user.id,
            name,
        })
        .await
    }

    /// Deletes one of the user's keys (and the unused tickets it asked for);
    /// another user's key is `NotFound`.
    pub async fn delete_api_key(&self, user: &User, id: Uuid) -> Result<(), AuthError> {
        self.send(DeleteApiKey {
            user_id: user.id,
            key_id: id,
        })
        .await
    }
}

/// The key's name, trimmed, if the user may have keys and the name fits.
fn valid_name(user: &User, name: &str) -> Result<String, AuthError> {
    if user.is_demo {
        return Err(AuthError::DemoForbidden);
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AuthError::BadRequest(
            "name: must be 1 to 100 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// A new key for `user`: its record and the key itself.
pub(super) fn new_key(user: palaver_storage::UserId, name: String) -> (ApiKey, String) {
    let key = secret_string(API_KEY_PREFIX);
    let record = ApiKey {
        id: Uuid::now_v7(),
        user_id: user,
        name,
        hash: api_key_hash(&key),
        created_at: palaver_storage::now_millis(),
        last_used_at: None,
    };
    (record, key)
}

/// Creates an API key with the server stopped (`palaver apikey create`: the
/// CLI holds the database, so no `AuthActor` is running).
pub async fn create_api_key_offline(
    store: &Store,
    user: &User,
    name: &str,
) -> Result<(ApiKey, String), AuthError> {
    let (record, key) = new_key(user.id, valid_name(user, name)?);
    store.api_keys().create(&record).await?;
    telemetry::token_issued("api_key");
    Ok((record, key))
}
