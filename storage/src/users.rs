//! Users: the `users` tree and its `users_by_email` index.
//!
//! Email uniqueness is enforced by one sled transaction over both trees (a
//! rare path, so the transaction's global lock is acceptable here).

use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use crate::codec::{self, Record};
use crate::error::{Result, StorageError};
use crate::ids::UserId;
use crate::keys;
use crate::store::Store;

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    /// As entered (trimmed); uniqueness is on its lowercased form.
    pub email: String,
    /// A PHC string (argon2id); never the password.
    pub password_hash: String,
    pub is_active: bool,
    pub is_demo: bool,
    /// For demo users: the instant (Unix seconds) after which no token is valid.
    pub demo_expires_at: Option<u64>,
    /// Unix milliseconds.
    pub created_at: u64,
}

impl Record for User {
    const TREE: &'static str = "users";
    const VERSION: u8 = 1;
}

/// What it takes to create a user.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub email: String,
    pub password_hash: String,
    pub is_demo: bool,
    pub demo_expires_at: Option<u64>,
}

/// The users repository (borrowed from a [`Store`]).
pub struct Users<'a> {
    store: &'a Store,
}

impl<'a> Users<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Users { store }
    }

    /// Creates a user; [`StorageError::EmailTaken`] if the email (in any
    /// letter case) belongs to someone already. Durable when it returns.
    pub async fn create(&self, new: NewUser) -> Result<User> {
        let user = self.create_nowait(new)?;
        self.store.durable().await?;
        Ok(user)
    }

    /// [`Users::create`] without waiting for durability: pair with
    /// [`Store::durable`] before acknowledging it.
    pub fn create_nowait(&self, new: NewUser) -> Result<User> {
        let user = User {
            id: UserId::new(),
            email: new.email.trim().to_string(),
            password_hash: new.password_hash,
            is_active: true,
            is_demo: new.is_demo,
            demo_expires_at: new.demo_expires_at,
            created_at: crate::now_millis(),
        };
        let value = codec::encode(&user)?;
        let email_key = keys::email(&user.email);
        let expiry_key = user
            .demo_expires_at
            .map(|at| keys::demo_expiry(at, user.id));
        let trees = self.store.trees();
        (&trees.users, &trees.users_by_email, &trees.demo_expiry).transaction(
            |(users, by_email, demo)| {
                if by_email.get(&email_key)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(
                        StorageError::EmailTaken,
                    ));
                }
                by_email.insert(email_key.as_slice(), user.id.as_bytes())?;
                users.insert(&keys::user(user.id), value.as_slice())?;
                if let Some(key) = &expiry_key {
                    demo.insert(key, &[])?;
                }
                Ok(())
            },
        )?;
        Ok(user)
    }

    pub fn get(&self, id: UserId) -> Result<Option<User>> {
        codec::get(&self.store.trees().users, &keys::user(id))
    }

    /// Looks a user up by email, in any letter case.
    pub fn find_by_email(&self, email: &str) -> Result<Option<User>> {
        let trees = self.store.trees();
        let Some(id) = trees.users_by_email.get(keys::email(email))? else {
            return Ok(None);
        };
        let id = keys::user_from(&id)
            .ok_or_else(|| StorageError::corrupt("users_by_email", "id is not 16 bytes"))?;
        self.get(id)
    }

    /// Every user, oldest first.
    pub fn list(&self) -> Result<Vec<User>> {
        self.store
            .trees()
            .users
            .iter()
            .values()
            .map(|v| codec::decode(&v?))
            .collect()
    }

    /// Demo users whose demo ended before `before` (Unix seconds), oldest
    /// first: what the sweep deletes.
    pub fn demo_expired_before(&self, before: u64) -> Result<Vec<UserId>> {
        let end = keys::demo_expiry(before, UserId::from_bytes([0; 16]));
        self.store
            .trees()
            .demo_expiry
            .range(..end)
            .keys()
            .map(|k| {
                let k = k?;
                keys::demo_expiry_from(&k)
                    .map(|(_, id)| id)
                    .ok_or_else(|| StorageError::corrupt("demo_expiry", "bad key"))
            })
            .collect()
    }

    /// How many demo users exist (expired or not).
    pub fn demo_count(&self) -> usize {
        self.store.trees().demo_expiry.len()
    }

    pub fn count(&self) -> usize {
        self.store.trees().users.len()
    }

    /// Enables or disables a user. Durable when it returns.
    pub async fn set_active(&self, id: UserId, active: bool) -> Result<User> {
        self.update(id, |u| u.is_active = active).await
    }

    /// Replaces a user's password hash. Durable when it returns.
    pub async fn set_password_hash(&self, id: UserId, hash: String) -> Result<User> {
        self.update(id, move |u| u.password_hash = hash.clone())
            .await
    }

    /// Deletes a user and frees its email. `false` if there was no such user.
    /// Durable when it returns.
    pub async fn delete(&self, id: UserId) -> Result<bool> {
        let removed = self.remove(id)?;
        if removed {
            self.store.durable().await?;
        }
        Ok(removed)
    }

    /// Removes a user and its email and demo-expiry entries (one rare-path
    /// transaction); not waited on.
    pub(crate) fn remove(&self, id: UserId) -> Result<bool> {
        let trees = self.store.trees();
        let removed = (&trees.users, &trees.users_by_email, &trees.demo_expiry).transaction(
            |(users, by_email, demo)| {
                let Some(old) = users.remove(&keys::user(id))? else {
                    return Ok(false);
                };
                let user: User =
                    codec::decode(&old).map_err(ConflictableTransactionError::Abort)?;
                by_email.remove(keys::email(&user.email))?;
                if let Some(at) = user.demo_expires_at {
                    demo.remove(&keys::demo_expiry(at, id))?;
                }
                Ok(true)
            },
        )?;
        Ok(removed)
    }

    /// Read-modify-write of one user record with compare-and-swap, so a
    /// concurrent update is never lost.
    async fn update(&self, id: UserId, change: impl Fn(&mut User)) -> Result<User> {
        let updated = codec::update(&self.store.trees().users, &keys::user(id), |u| {
            change(u);
            true
        })?
        .ok_or(StorageError::NotFound)?;
        self.store.durable().await?;
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_user(email: &str) -> NewUser {
        NewUser {
            email: email.into(),
            password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into(),
            is_demo: false,
            demo_expires_at: None,
        }
    }

    #[tokio::test]
    async fn create_then_get_and_find() {
        let store = Store::temporary().unwrap();
        let user = store
            .users()
            .create(new_user(" Ann@Example.com "))
            .await
            .unwrap();
        assert_eq!(user.email, "Ann@Example.com");
        assert!(user.is_active && !user.is_demo);
        assert_eq!(store.users().get(user.id).unwrap(), Some(user.clone()));
        assert_eq!(
            store.users().find_by_email("ann@EXAMPLE.com").unwrap(),
            Some(user.clone())
        );
        assert_eq!(
            store.users().find_by_email("bob@example.com").unwrap(),
            None
        );
        assert_eq!(store.users().get(UserId::new()).unwrap(), None);
    }

    #[tokio::test]
    async fn email_is_unique_in_any_case() {
        let store = Store::temporary().unwrap();
        store
            .users()
            .create(new_user("ann@example.com"))
            .await
            .unwrap();
        let err = store
            .users()
            .create(new_user("ANN@example.com"))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::EmailTaken), "{err:?}");
        assert_eq!(store.users().count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creation_of_one_email_has_exactly_one_winner() {
        let store = Store::temporary().unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = store.clone();
                let email = if i % 2 == 0 {
                    "race@example.com"
                } else {
                    "RACE@example.com"
                };
                tokio::spawn(async move { store.users().create(new_user(email)).await })
            })
            .collect();
        let mut won = 0;
        let mut taken = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(StorageError::EmailTaken) => taken += 1,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!((won, taken), (1, 31));
        assert_eq!(store.users().list().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn list_is_oldest_first_and_count_agrees() {
        let store = Store::temporary().unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                store
                    .users()
                    .create(new_user(&format!("u{i}@example.com")))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let listed: Vec<_> = store
            .users()
            .list()
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(listed, ids);
        assert_eq!(store.users().count(), 5);
    }

    #[tokio::test]
    async fn set_active_and_password_hash_persist() {
        let store = Store::temporary().unwrap();
        let user = store
            .users()
            .create(new_user("a@example.com"))
            .await
            .unwrap();
        let disabled = store.users().set_active(user.id, false).await.unwrap();
        assert!(!disabled.is_active);
        assert!(!store.users().get(user.id).unwrap().unwrap().is_active);
        store.users().set_active(user.id, true).await.unwrap();
        store
            .users()
            .set_password_hash(user.id, "new-hash".into())
            .await
            .unwrap();
        let now = store.users().get(user.id).unwrap().unwrap();
        assert!(now.is_active);
        assert_eq!(now.password_hash, "new-hash");
        let missing = store
            .users()
            .set_active(UserId::new(), false)
            .await
            .unwrap_err();
        assert!(matches!(missing, StorageError::NotFound));
    }

    #[tokio::test]
    async fn delete_frees_the_email() {
        let store = Store::temporary().unwrap();
        let user = store
            .users()
            .create(new_user("gone@example.com"))
            .await
            .unwrap();
        assert!(store.users().delete(user.id).await.unwrap());
        assert!(!store.users().delete(user.id).await.unwrap());
        assert_eq!(store.users().get(user.id).unwrap(), None);
        assert_eq!(
            store.users().find_by_email("gone@example.com").unwrap(),
            None
        );
        store
            .users()
            .create(new_user("gone@example.com"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn demo_fields_round_trip() {
        let store = Store::temporary().unwrap();
        let mut new = new_user("demo-1@demo.invalid");
        new.is_demo = true;
        new.demo_expires_at = Some(1_900_000_000);
        let user = store.users().create(new).await.unwrap();
        let back = store.users().get(user.id).unwrap().unwrap();
        assert!(back.is_demo);
        assert_eq!(back.demo_expires_at, Some(1_900_000_000));
    }

    #[tokio::test]
    async fn demo_expiry_index_follows_demo_users() {
        let store = Store::temporary().unwrap();
        let mut ids = Vec::new();
        for (i, at) in [100u64, 200, 300].into_iter().enumerate() {
            let mut new = new_user(&format!("demo-{i}@demo.invalid"));
            new.is_demo = true;
            new.demo_expires_at = Some(at);
            ids.push(store.users().create(new).await.unwrap().id);
        }
        store
            .users()
            .create(new_user("regular@example.com"))
            .await
            .unwrap();
        assert_eq!(store.users().demo_count(), 3);
        assert_eq!(store.users().demo_expired_before(100).unwrap(), vec![]);
        assert_eq!(
            store.users().demo_expired_before(201).unwrap(),
            ids[..2].to_vec()
        );
        store.users().delete(ids[0]).await.unwrap();
        assert_eq!(
            store.users().demo_expired_before(1000).unwrap(),
            ids[1..].to_vec()
        );
        assert_eq!(store.users().demo_count(), 2);
    }
}
