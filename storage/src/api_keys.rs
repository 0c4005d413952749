//! API keys: stored only as a SHA-256 hash of the key (keys are long random
//! strings, so a fast hash is enough: there is nothing to brute-force).
//!
//! Three trees: the record by key id, the hash index used to authenticate,
//! and a per-user index for listing. The hash index is written last and
//! removed first, so a crash mid-way never leaves a key that authenticates
//! without its record.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, Record};
use crate::error::{Result, StorageError};
use crate::ids::UserId;
use crate::keys;
use crate::store::Store;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub user_id: UserId,
    pub name: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds; updated at most once a minute.
    pub last_used_at: Option<u64>,
}

impl Record for ApiKey {
    const TREE: &'static str = "api_keys";
    const VERSION: u8 = 1;
}

pub struct ApiKeys<'a> {
    store: &'a Store,
}

impl<'a> ApiKeys<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        ApiKeys { store }
    }

    /// Stores a key. Durable when it returns.
    pub async fn create(&self, key: &ApiKey) -> Result<()> {
        self.create_nowait(key)?;
        self.store.durable().await
    }

    /// [`ApiKeys::create`] without waiting for durability.
    pub fn create_nowait(&self, key: &ApiKey) -> Result<()> {
        let t = self.store.trees();
        t.api_keys
            .insert(keys::api_key(key.id), codec::encode(key)?)?;
        t.api_keys_by_user
            .insert(keys::user_api_key(key.user_id, key.id), &[])?;
        t.api_keys_by_hash.insert(key.hash, key.id.as_bytes())?;
        Ok(())
    }

    pub fn get(&self, id: Uuid) -> Result<Option<ApiKey>> {
        codec::get(&self.store.trees().api_keys, &keys::api_key(id))
    }

    /// The key whose hash is `hash`, if any.
    pub fn find_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>> {
        let Some(id) = self.store.trees().api_keys_by_hash.get(hash)? else {
            return Ok(None);
        };
        let id = keys::uuid_from(&id)
            .ok_or_else(|| StorageError::corrupt("api_keys_by_hash", "id is not 16 bytes"))?;
        self.get(id)
    }

    /// A user's keys, oldest first.
    pub fn list_for(&self, user: UserId) -> Result<Vec<ApiKey>> {
        let t = self.store.trees();
        let mut out = Vec::new();
        for entry in t.api_keys_by_user.scan_prefix(keys::user(user)) {
            let (key, _) = entry?;
            let id = keys::user_api_key_from(&key)
                .ok_or_else(|| StorageError::corrupt("api_keys_by_user", "bad key"))?;
            if let Some(k) = self.get(id)? {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Every key, for the operator's listing.
    pub fn list_all(&self) -> Result<Vec<ApiKey>> {
        self.store
            .trees()
            .api_keys
            .iter()
            .values()
            .map(|v| codec::decode(&v?))
            .collect()
    }

    /// Records a use, unless one was recorded in the last minute (keeps the
    /// authentication path nearly write-free). Not waited on for durability:
    /// a lost `last_used_at` is harmless.
    pub fn touch(&self, key: &ApiKey, now_millis: u64) -> Result<()> {
        if key
            .last_used_at
            .is_some_and(|t| now_millis.saturating_sub(t) < 60_000)
        {
            return Ok(());
        }
        codec::update::<ApiKey>(&self.store.trees().api_keys, &keys::api_key(key.id), |k| {
            k.last_used_at = Some(now_millis);
            true
        })?;
        Ok(())
    }

    /// Removes a key from its three trees, the hash index first (so it
    /// stops authenticating before anything else goes).
    fn remove(&self, key: &ApiKey) -> Result<()> {
        let t = self.store.trees();
        t.api_keys_by_hash.remove(key.hash)?;
        t.api_keys_by_user
            .remove(keys::user_api_key(key.user_id, key.id))?;
        t.api_keys.remove(keys::api_key(key.id))?;
        Ok(())
    }

    /// Deletes a key; `false` if there was none. Durable when it returns.
    pub async fn delete(&self, id: Uuid) -> Result<bool> {
        let deleted = self.delete_nowait(id)?;
        if deleted {
            self.store.durable().await?;
        }
        Ok(deleted)
    }

    /// [`ApiKeys::delete`] without waiting for durability.
    pub fn delete_nowait(&self, id: Uuid) -> Result<bool> {
        let Some(key) = self.get(id)? else {
            return Ok(false);
        };
        self.remove(&key)?;
        Ok(true)
    }

    /// Deletes every key of a user (when the user goes). Durable when it returns.
    pub async fn delete_all_for(&self, user: UserId) -> Result<usize> {
        let removed = self.remove_all_for(user)?;
        self.store.durable().await?;
        Ok(removed)
    }

    /// Removes every key of a user; not waited on.
    pub(crate) fn remove_all_for(&self, user: UserId) -> Result<usize> {
        let all = self.list_for(user)?;
        for key in &all {
            self.remove(key)?;
        }
        Ok(all.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: UserId, n: u8) -> ApiKey {
        ApiKey {
            id: Uuid::now_v7(),
            user_id: user,
            name: format!("key {n}"),
            hash: [n; 32],
            created_at: 1,
            last_used_at: None,
        }
    }

    #[tokio::test]
    async fn create_find_list_delete() {
        let store = Store::temporary().unwrap();
        let (ann, bob) = (UserId::new(), UserId::new());
        let (a1, a2, b1) = (key(ann, 1), key(ann, 2), key(bob, 3));
        for k in [&a1, &a2, &b1] {
            store.api_keys().create(k).await.unwrap();
        }
        assert_eq!(
            store.api_keys().find_by_hash(&[2; 32]).unwrap(),
            Some(a2.clone())
        );
        assert_eq!(store.api_keys().find_by_hash(&[9; 32]).unwrap(), None);
        assert_eq!(
            store.api_keys().list_for(ann).unwrap(),
            vec![a1.clone(), a2.clone()]
        );
        assert_eq!(store.api_keys().list_for(bob).unwrap(), vec![b1.clone()]);
        assert_eq!(store.api_keys().list_all().unwrap().len(), 3);

        assert!(store.api_keys().delete(a1.id).await.unwrap());
        assert!(!store.api_keys().delete(a1.id).await.unwrap());
        assert_eq!(store.api_keys().find_by_hash(&[1; 32]).unwrap(), None);
        assert_eq!(store.api_keys().list_for(ann).unwrap(), vec![a2.clone()]);

        assert_eq!(store.api_keys().delete_all_for(ann).await.unwrap(), 1);
        assert!(store.api_keys().list_for(ann).unwrap().is_empty());
        assert_eq!(store.api_keys().list_for(bob).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn touch_records_use_at_most_once_a_minute() {
        let store = Store::temporary().unwrap();
        let k = key(UserId::new(), 1);
        store.api_keys().create(&k).await.unwrap();
        store.api_keys().touch(&k, 1_000_000).unwrap();
        let used = store.api_keys().get(k.id).unwrap().unwrap();
        assert_eq!(used.last_used_at, Some(1_000_000));
        store.api_keys().touch(&used, 1_030_000).unwrap();
        assert_eq!(
            store.api_keys().get(k.id).unwrap().unwrap().last_used_at,
            Some(1_000_000)
        );
        store.api_keys().touch(&used, 1_070_000).unwrap();
        assert_eq!(
            store.api_keys().get(k.id).unwrap().unwrap().last_used_at,
            Some(1_070_000)
        );
    }
}
