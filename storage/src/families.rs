//! Refresh-token families: one per login (or demo start). A family records
//! which refresh token is current; presenting any other token of the family
//! is reuse. Rotation is one compare-and-swap on the family record, so of two
//! concurrent refreshes with the same token exactly one wins.
//!
//! Only token ids (`jti`) are stored, never a token: a jti alone authenticates
//! nothing.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, Record};
use crate::error::{Result, StorageError};
use crate::ids::UserId;
use crate::keys;
use crate::store::Store;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    pub id: Uuid,
    pub user_id: UserId,
    /// The jti of the one refresh token that may be presented next.
    pub current_jti: Uuid,
    /// Unix seconds after which no token of the family is valid (GC after it).
    pub expires_at: u64,
    pub revoked: bool,
}

impl Record for Family {
    const TREE: &'static str = "families";
    const VERSION: u8 = 1;
}

/// What a rotation attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was current; the family now expects the new jti.
    Rotated(Family),
    /// The presented token was already spent: the family is now revoked.
    Reused(Family),
    /// The family was revoked before.
    Revoked,
    /// No such family (never existed, or expired and collected).
    Unknown,
}

pub struct Families<'a> {
    store: &'a Store,
}

impl<'a> Families<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Families { store }
    }

    /// Records a new family. Durable when it returns.
    pub async fn create(&self, family: &Family) -> Result<()> {
        self.create_nowait(family)?;
        self.store.durable().await
    }

    /// [`Families::create`] without waiting for durability.
    pub fn create_nowait(&self, family: &Family) -> Result<()> {
        self.store
            .trees()
            .families
            .insert(keys::family(family.id), codec::encode(family)?)?;
        Ok(())
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Family>> {
        codec::get(&self.store.trees().families, &keys::family(id))
    }

    /// Whether a token of family `id` must be refused. A family that is not
    /// recorded is not revoked (operator-minted access tokens have none).
    pub fn is_revoked(&self, id: Uuid) -> Result<bool> {
        Ok(self.get(id)?.is_some_and(|f| f.revoked))
    }

    /// Spends `presented` and makes `next` current, atomically; or, if
    /// `presented` is not current, revokes the family (reuse). Durable when
    /// it returns.
    pub async fn rotate(
        &self,
        id: Uuid,
        presented: Uuid,
        next: Uuid,
        expires_at: u64,
    ) -> Result<Rotation> {
        let rotation = self.rotate_nowait(id, presented, next, expires_at)?;
        if matches!(rotation, Rotation::Rotated(_) | Rotation::Reused(_)) {
            self.store.durable().await?;
        }
        Ok(rotation)
    }

    /// [`Families::rotate`] without waiting for durability.
    pub fn rotate_nowait(
        &self,
        id: Uuid,
        presented: Uuid,
        next: Uuid,
        expires_at: u64,
    ) -> Result<Rotation> {
        let tree = &self.store.trees().families;
        let key = keys::family(id);
        loop {
            let Some(current) = tree.get(key)? else {
                return Ok(Rotation::Unknown);
            };
            let mut family: Family = codec::decode(&current)?;
            if family.revoked {
                return Ok(Rotation::Revoked);
            }
            let reused = family.current_jti != presented;
            if reused {
                family.revoked = true;
            } else {
                family.current_jti = next;
                family.expires_at = expires_at;
            }
            let swapped =
                tree.compare_and_swap(key, Some(&current), Some(codec::encode(&family)?))?;
            if swapped.is_ok() {
                return Ok(if reused {
                    Rotation::Reused(family)
                } else {
                    Rotation::Rotated(family)
                });
            }
        }
    }

    /// Revokes a family. `Ok(None)` if it does not exist. Durable when it returns.
    pub async fn revoke(&self, id: Uuid) -> Result<Option<Family>> {
        let (family, changed) = self.revoke_nowait(id)?;
        if changed {
            self.store.durable().await?;
        }
        Ok(family)
    }

    /// [`Families::revoke`] without waiting for durability; also answers
    /// whether anything changed.
    pub fn revoke_nowait(&self, id: Uuid) -> Result<(Option<Family>, bool)> {
        let mut changed = false;
        let family =
            codec::update::<Family>(&self.store.trees().families, &keys::family(id), |f| {
                changed = !f.revoked;
                f.revoked = true;
                changed
            })?;
        Ok((family, changed))
    }

    /// Every family with its key and stored value, for the scans below;
    /// a record that does not decode is skipped (it authenticates nothing).
    fn all(&self) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec, Family)>> + '_ {
        self.store
            .trees()
            .families
            .iter()
            .filter_map(|entry| match entry {
                Err(e) => Some(Err(e.into())),
                Ok((key, value)) => match codec::decode::<Family>(&value) {
                    Ok(family) => Some(Ok((key, value, family))),
                    Err(StorageError::Corrupt { .. }) => None,
                    Err(e) => Some(Err(e)),
                },
            })
    }

    /// Revokes every family of a user (the user is disabled); returns their
    /// ids. Not waited on. Scans every family: an operator's action, not a
    /// request path (families are collected once their tokens expire).
    pub(crate) fn revoke_all_for(&self, user: UserId) -> Result<Vec<Uuid>> {
        let tree = &self.store.trees().families;
        let mut revoked = Vec::new();
        for entry in self.all() {
            let (key, _, family) = entry?;
            if family.user_id != user || family.revoked {
                continue;
            }
            codec::update::<Family>(tree, &key, |f| {
                f.revoked = true;
                true
            })?;
            revoked.push(family.id);
        }
        Ok(revoked)
    }

    /// Deletes families whose tokens have all expired (`expires_at < before`),
    /// revoked or not: no token of theirs can verify any more. Returns how many.
    pub fn collect_expired(&self, before: u64) -> Result<usize> {
        let tree = &self.store.trees().families;
        let mut removed = 0;
        for entry in self.all() {
            let (key, value, family) = entry?;
            if family.expires_at < before
                && tree
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>)?
                    .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(user: UserId) -> Family {
        Family {
            id: Uuid::new_v4(),
            user_id: user,
            current_jti: Uuid::new_v4(),
            expires_at: 2_000_000_000,
            revoked: false,
        }
    }

    #[tokio::test]
    async fn create_get_and_not_revoked() {
        let store = Store::temporary().unwrap();
        let f = family(UserId::new());
        store.families().create(&f).await.unwrap();
        assert_eq!(store.families().get(f.id).unwrap(), Some(f.clone()));
        assert!(!store.families().is_revoked(f.id).unwrap());
        assert!(!store.families().is_revoked(Uuid::new_v4()).unwrap());
    }

    #[tokio::test]
    async fn rotation_then_reuse_revokes() {
        let store = Store::temporary().unwrap();
        let f = family(UserId::new());
        store.families().create(&f).await.unwrap();
        let next = Uuid::new_v4();
        match store
            .families()
            .rotate(f.id, f.current_jti, next, 2_000_000_100)
            .await
            .unwrap()
        {
            Rotation::Rotated(now) => {
                assert_eq!(now.current_jti, next);
                assert_eq!(now.expires_at, 2_000_000_100);
            }
            other => panic!("{other:?}"),
        }
        // The first token again: reuse.
        let again = store
            .families()
            .rotate(f.id, f.current_jti, Uuid::new_v4(), 0)
            .await
            .unwrap();
        assert!(
            matches!(again, Rotation::Reused(ref fam) if fam.revoked),
            "{again:?}"
        );
        assert!(store.families().is_revoked(f.id).unwrap());
        // Even the current token is refused now.
        let after = store
            .families()
            .rotate(f.id, next, Uuid::new_v4(), 0)
            .await
            .unwrap();
        assert_eq!(after, Rotation::Revoked);
        let unknown = store
            .families()
            .rotate(Uuid::new_v4(), next, next, 0)
            .await
            .unwrap();
        assert_eq!(unknown, Rotation::Unknown);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rotations_of_one_token_have_one_winner() {
        let store = Store::temporary().unwrap();
        let f = family(UserId::new());
        store.families().create(&f).await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                let jti = f.current_jti;
                tokio::spawn(async move {
                    store
                        .families()
                        .rotate(f.id, jti, Uuid::new_v4(), 2_000_000_000)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut rotated = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Rotation::Rotated(_)) {
                rotated += 1;
            }
        }
        assert_eq!(rotated, 1);
    }

    #[tokio::test]
    async fn revoke_and_collect() {
        let store = Store::temporary().unwrap();
        let live = family(UserId::new());
        let mut old = family(UserId::new());
        old.expires_at = 100;
        store.families().create(&live).await.unwrap();
        store.families().create(&old).await.unwrap();
        assert!(
            store
                .families()
                .revoke(live.id)
                .await
                .unwrap()
                .unwrap()
                .revoked
        );
        assert!(store.families().is_revoked(live.id).unwrap());
        assert_eq!(store.families().revoke(Uuid::new_v4()).await.unwrap(), None);
        assert_eq!(store.families().collect_expired(1_000).unwrap(), 1);
        assert_eq!(store.families().get(old.id).unwrap(), None);
        assert!(store.families().get(live.id).unwrap().is_some());
    }
}
