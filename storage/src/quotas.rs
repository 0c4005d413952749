//! Quota counters: one record per user with a limit, written through on every
//! admission and refund, so a restart or a crash never resets a count. The
//! QuotaRegistry writes them (and removing a user removes its counter); it
//! keeps them in memory and reads a record only the first time it sees a user
//! after a start.

use serde::{Deserialize, Serialize};

use crate::codec::{self, Record};
use crate::error::Result;
use crate::ids::UserId;
use crate::keys;
use crate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaCounter {
    /// Counted requests admitted in the current window.
    pub count: u32,
    /// Unix seconds when the current window started (0 for a demo's one
    /// window, which ends with the demo).
    pub window_start: u64,
}

impl Record for QuotaCounter {
    const TREE: &'static str = "quotas";
    const VERSION: u8 = 1;
}

pub struct Quotas<'a> {
    store: &'a Store,
}

impl<'a> Quotas<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Quotas { store }
    }

    pub fn get(&self, user: UserId) -> Result<Option<QuotaCounter>> {
        codec::get(&self.store.trees().quotas, &keys::user(user))
    }

    /// Writes a counter without waiting for durability; pair with
    /// [`Store::durable`] before acknowledging what it counts.
    pub fn put(&self, user: UserId, counter: &QuotaCounter) -> Result<()> {
        self.store
            .trees()
            .quotas
            .insert(keys::user(user), codec::encode(counter)?)?;
        Ok(())
    }

    /// Removes a user's counter (the user is gone). Not waited on.
    pub fn remove(&self, user: UserId) -> Result<()> {
        self.store.trees().quotas.remove(keys::user(user))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_remove() {
        let store = Store::temporary().unwrap();
        let user = UserId::new();
        assert_eq!(store.quotas().get(user).unwrap(), None);
        let c = QuotaCounter {
            count: 3,
            window_start: 17,
        };
        store.quotas().put(user, &c).unwrap();
        store.durable().await.unwrap();
        assert_eq!(store.quotas().get(user).unwrap(), Some(c));
        store.quotas().remove(user).unwrap();
        assert_eq!(store.quotas().get(user).unwrap(), None);
    }

    #[tokio::test]
    async fn purging_a_user_removes_the_counter() {
        let store = Store::temporary().unwrap();
        let user = UserId::new();
        store
            .quotas()
            .put(
                user,
                &QuotaCounter {
                    count: 1,
                    window_start: 0,
                },
            )
            .unwrap();
        store.purge_user(user).await.unwrap();
        assert_eq!(store.quotas().get(user).unwrap(), None);
    }
}
