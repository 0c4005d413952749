//! Users: the `users` tree, its `users_by_email` index and, for users
//! provisioned from another issuer's tokens, its `users_by_external` index.
//!
//! Email uniqueness, and one user per external identity, are each enforced
//! by one sled transaction over the trees involved (rare paths, so the
//! transaction's global lock is acceptable here).

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
    /// As entered (trimmed); uniqueness is on its lowercased form. Empty for
    /// a user from another issuer (not in the email index: it never logs in).
    pub email: String,
    /// A PHC string (argon2id); never the password. Empty when the user has
    /// none (demo and external users): no password matches it.
    pub password_hash: String,
    pub is_active: bool,
    pub is_demo: bool,
    /// For demo users: the instant (Unix seconds) after which no token is valid.
    pub demo_expires_at: Option<u64>,
    /// Unix milliseconds.
    pub created_at: u64,
    /// For a user provisioned from another issuer's token: who it is there.
    pub external: Option<ExternalIdentity>,
}

impl Record for User {
    const TREE: &'static str = "users";
    /// 2: `external` added (schema version 2 rewrote every version-1 record).
    const VERSION: u8 = 2;
}

/// A user as another issuer (an `[[auth.external]]` entry) names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExternalIdentity {
    /// The entry's configured name (`[a-z0-9_-]{1,32}`, no NUL byte).
    pub issuer: String,
    /// The value of the entry's user claim, as a string (an integer claim in
    /// decimal).
    pub id: String,
}

impl std::fmt::Display for ExternalIdentity {
    /// `NAME:ID`, the form `palaver user … --external` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.issuer, self.id)
    }
}

/// A user record as schema version 1 stored it (before `external`): read
/// only by the migration to version 2.
#[derive(Deserialize)]
pub(crate) struct UserV1 {
    id: UserId,
    email: String,
    password_hash: String,
    is_active: bool,
    is_demo: bool,
    demo_expires_at: Option<u64>,
    created_at: u64,
}

impl From<UserV1> for User {
    fn from(v1: UserV1) -> User {
        User {
            id: v1.id,
            email: v1.email,
            password_hash: v1.password_hash,
            is_active: v1.is_active,
            is_demo: v1.is_demo,
            demo_expires_at: v1.demo_expires_at,
            created_at: v1.created_at,
            external: None,
        }
    }
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
            external: None,
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

    /// The user another issuer names `identity`, if it was provisioned.
    pub fn find_by_external(&self, identity: &ExternalIdentity) -> Result<Option<User>> {
        let trees = self.store.trees();
        let key = keys::external_user(&identity.issuer, &identity.id);
        let Some(id) = trees.users_by_external.get(key)? else {
            return Ok(None);
        };
        let id = keys::user_from(&id)
            .ok_or_else(|| StorageError::corrupt("users_by_external", "id is not 16 bytes"))?;
        self.get(id)
    }

    /// The user another issuer names `identity`: the one provisioned
    /// already, or a new one (no email, no password; a demo user until
    /// `demo_expires_at` when that is set). One transaction over the user
    /// and its index, so concurrent first verifications make one user.
    /// Answers the user and whether it was created now. Not waited on: pair
    /// with [`Store::durable`].
    pub fn find_or_create_external_nowait(
        &self,
        identity: &ExternalIdentity,
        demo_expires_at: Option<u64>,
    ) -> Result<(User, bool)> {
        let fresh = User {
            id: UserId::new(),
            email: String::new(),
            password_hash: String::new(),
            is_active: true,
            is_demo: demo_expires_at.is_some(),
            demo_expires_at,
            created_at: crate::now_millis(),
            external: Some(identity.clone()),
        };
        let value = codec::encode(&fresh)?;
        let index_key = keys::external_user(&identity.issuer, &identity.id);
        let expiry_key = demo_expires_at.map(|at| keys::demo_expiry(at, fresh.id));
        let trees = self.store.trees();
        let found = (&trees.users, &trees.users_by_external, &trees.demo_expiry).transaction(
            |(users, by_external, demo)| {
                if let Some(id) = by_external.get(&index_key)? {
                    // Provisioned already: that user (its record goes with
                    // its index entry, in one transaction).
                    let record = users.get(&id[..])?.ok_or_else(|| {
                        ConflictableTransactionError::Abort(StorageError::corrupt(
                            "users_by_external",
                            "names a user that does not exist",
                        ))
                    })?;
                    let user: User =
                        codec::decode(&record).map_err(ConflictableTransactionError::Abort)?;
                    return Ok(Some(user));
                }
                by_external.insert(index_key.as_slice(), fresh.id.as_bytes())?;
                users.insert(&keys::user(fresh.id), value.as_slice())?;
                if let Some(key) = &expiry_key {
                    demo.insert(key, &[])?;
                }
                Ok(None)
            },
        )?;
        Ok(match found {
            Some(user) => (user, false),
            None => (fresh, true),
        })
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

    /// Removes a user and its email (or external identity) and demo-expiry
    /// entries (one rare-path transaction); not waited on.
    pub(crate) fn remove(&self, id: UserId) -> Result<bool> {
        let trees = self.store.trees();
        let removed = (
            &trees.users,
            &trees.users_by_email,
            &trees.users_by_external,
            &trees.demo_expiry,
        )
            .transaction(|(users, by_email, by_external, demo)| {
                let Some(old) = users.remove(&keys::user(id))? else {
                    return Ok(false);
                };
                let user: User =
                    codec::decode(&old).map_err(ConflictableTransactionError::Abort)?;
                match &user.external {
                    Some(who) => {
                        by_external.remove(keys::external_user(&who.issuer, &who.id))?;
                    }
                    None => {
                        by_email.remove(keys::email(&user.email))?;
                    }
                }
                if let Some(at) = user.demo_expires_at {
                    demo.remove(&keys::demo_expiry(at, id))?;
                }
                Ok(true)
            })?;
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

    fn ext(issuer: &str, id: &str) -> ExternalIdentity {
        ExternalIdentity {
            issuer: issuer.into(),
            id: id.into(),
        }
    }

    #[tokio::test]
    async fn an_external_identity_is_provisioned_once() {
        let store = Store::temporary().unwrap();
        let who = ext("django", "42");
        assert_eq!(store.users().find_by_external(&who).unwrap(), None);
        let (user, created) = store
            .users()
            .find_or_create_external_nowait(&who, None)
            .unwrap();
        assert!(created && user.is_active && !user.is_demo);
        assert_eq!(user.external, Some(who.clone()));
        assert_eq!((user.email.as_str(), user.password_hash.as_str()), ("", ""));
        let (again, created) = store
            .users()
            .find_or_create_external_nowait(&who, Some(1_900_000_000))
            .unwrap();
        assert!(!created);
        assert_eq!(again, user, "the first record stands");
        assert_eq!(store.users().find_by_external(&who).unwrap(), Some(user));
        // Another issuer's user of the same id is someone else.
        let (other, created) = store
            .users()
            .find_or_create_external_nowait(&ext("keycloak", "42"), Some(1_900_000_000))
            .unwrap();
        assert!(created && other.is_demo);
        assert_eq!(other.demo_expires_at, Some(1_900_000_000));
        assert_eq!(store.users().demo_count(), 1);
        // No email: the email index is untouched.
        assert_eq!(store.users().find_by_email("").unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_verifications_make_one_user() {
        let store = Store::temporary().unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .users()
                        .find_or_create_external_nowait(&ext("django", "7"), None)
                        .unwrap()
                })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        let mut created = 0;
        for task in tasks {
            let (user, new) = task.await.unwrap();
            ids.insert(user.id);
            created += usize::from(new);
        }
        assert_eq!((ids.len(), created), (1, 1));
        assert_eq!(store.users().count(), 1);
    }

    #[tokio::test]
    async fn deleting_an_external_user_frees_its_identity() {
        let store = Store::temporary().unwrap();
        let who = ext("django", "42");
        let (user, _) = store
            .users()
            .find_or_create_external_nowait(&who, Some(100))
            .unwrap();
        assert!(store.users().delete(user.id).await.unwrap());
        assert_eq!(store.users().find_by_external(&who).unwrap(), None);
        assert_eq!(store.users().demo_count(), 0);
        let (fresh, created) = store
            .users()
            .find_or_create_external_nowait(&who, None)
            .unwrap();
        assert!(created && fresh.id != user.id);
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
