//! The QuotaRegistry: the single owner of every request counter, called
//! directly by whoever admits a request (the HTTP middleware, a session
//! actor) on its own thread. Each user's counter lives in one shard of a
//! sharded map, and the check, the increment and the write-through to
//! storage happen under that shard's lock in one synchronous step, so
//! exactly `limit` requests are admitted however many arrive at once, from
//! however many threads. A restart or a crash never resets a count: every
//! change is written to storage before the admission is answered, and made
//! durable before the request is acknowledged.
//!
//! Admission was an actor first; the round trip to its mailbox on another
//! thread was 11 % of a counted request's latency, the lock is not
//! measurable (see docs/BENCHMARKS.md, "Quota admission"). So admission is a
//! call on this handle, and the registry's own actor, the [`QuotaKeeper`]
//! (`keeper.rs`), takes what needs an owner over time: evicting the counters
//! of idle users and of windows that ended (memory stays proportional to
//! the users active lately, not to every user seen since start).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use palaver_storage::{QuotaCounter, StorageError, Store, UserId};

mod keeper;
pub use keeper::{Evict, Evicted, QuotaKeeper, IDLE_AFTER, SWEEP_EVERY};

/// The limit a user is under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// A demo user: `limit` requests for the demo's whole life.
    Demo {
        limit: u32,
        /// Unix seconds when the demo ends.
        ends_at: u64,
        /// The demo's lifetime in seconds (the policy's window, `w`).
        lifetime: u64,
    },
    /// A regular user: `limit` requests per `window` seconds (limit > 0).
    User { limit: u32, window: u64 },
}

impl Policy {
    /// The policy's name in the RateLimit header fields.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Demo { .. } => "demo",
            Policy::User { .. } => "user",
        }
    }

    pub fn limit(&self) -> u32 {
        match *self {
            Policy::Demo { limit, .. } | Policy::User { limit, .. } => limit,
        }
    }

    /// The window in seconds (`w`).
    pub fn window(&self) -> u64 {
        match *self {
            Policy::Demo { lifetime, .. } => lifetime,
            Policy::User { window, .. } => window,
        }
    }
}

/// Where a user stands after (or without) an admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub policy: Policy,
    pub count: u32,
    /// Seconds until the count resets (or the demo ends).
    pub reset_in: u64,
}

impl Standing {
    pub fn limit(&self) -> u32 {
        self.policy.limit()
    }

    pub fn remaining(&self) -> u32 {
        self.limit().saturating_sub(self.count)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted (written, not yet flushed: see [`QuotaRegistry::admit`]).
    Admitted(Standing),
    /// Over the limit; nothing counted.
    Rejected(Standing),
}

/// The registry handle: cheap to clone, shared by the HTTP middleware, the
/// session actors and the supervisor.
#[derive(Clone)]
pub struct QuotaRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Counters of users seen lately (the keeper evicts idle ones), loaded
    /// from storage on first use; a user always maps to the same shard,
    /// whose lock is held across the check, the increment and the
    /// write-through.
    shards: Box<[Mutex<Shard>]>,
}

type Shard = HashMap<UserId, Held>;

/// A counter in memory, with what eviction needs to know.
struct Held {
    counter: QuotaCounter,
    /// Unix seconds of the last admission, refund or peek.
    last_used: u64,
    /// Unix seconds when the count stops mattering: the demo's end, or the
    /// end of a regular user's window.
    ends_at: u64,
    /// A regular user's window: once it ends, the stored count is void too
    /// (a demo's count lives until the demo user is deleted).
    windowed: bool,
}

/// Enough shards that two users rarely share a lock on a many-core machine;
/// a lock is held for a map lookup and one sled insert (a few µs).
const SHARDS: usize = 64;

impl QuotaRegistry {
    pub fn new(store: Store) -> Self {
        QuotaRegistry {
            inner: Arc::new(Inner {
                store,
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            }),
        }
    }

    /// Counts a request if the user is under the limit. Answers `Admitted`
    /// as soon as the count is recorded (in memory and written to storage,
    /// not yet flushed), or `Rejected` with nothing counted. Before
    /// acknowledging the request to its client, the caller makes the count
    /// durable with `store.durable_since(mark)`, a mark taken after this
    /// call: usually the request's own durable write already covered it.
    pub fn admit(&self, user: UserId, policy: Policy, now: u64) -> Result<Admission, StorageError> {
        let mut shard = self.shard(user);
        let counter = self.counter(&mut shard, user, policy, now)?;
        if counter.count >= policy.limit() {
            crate::telemetry::quota_rejection(policy.name());
            return Ok(Admission::Rejected(standing(policy, counter, now)));
        }
        let next = QuotaCounter {
            count: counter.count + 1,
            ..*counter
        };
        self.inner.store.quotas().put(user, &next)?;
        *counter = next;
        Ok(Admission::Admitted(standing(policy, &next, now)))
    }

    /// Gives a counted request back (its handler failed with a 5xx, or the
    /// question could not be stored). Written, not yet flushed: the caller
    /// waits for `store.durable()` if it acknowledges anything.
    /// A refund never creates a counter: one found neither in memory nor
    /// in storage has nothing to give back (its user was deleted while the
    /// request ran; writing it would leave a counter of a missing user).
    pub fn refund(&self, user: UserId, policy: Policy, now: u64) -> Result<(), StorageError> {
        let mut shard = self.shard(user);
        if !shard.contains_key(&user) && self.inner.store.quotas().get(user)?.is_none() {
            return Ok(());
        }
        let counter = self.counter(&mut shard, user, policy, now)?;
        let next = QuotaCounter {
            count: counter.count.saturating_sub(1),
            ..*counter
        };
        self.inner.store.quotas().put(user, &next)?;
        *counter = next;
        Ok(())
    }

    /// Where the user stands, without counting anything (`/api/auth/me/`
    /// and the WebSocket `connected` event).
    pub fn peek(&self, user: UserId, policy: Policy, now: u64) -> Result<Standing, StorageError> {
        let mut shard = self.shard(user);
        let counter = self.counter(&mut shard, user, policy, now)?;
        Ok(standing(policy, counter, now))
    }

    /// Drops a deleted user's counter. The stored one went with the user;
    /// it is removed again under the lock, in case an admission in flight
    /// when the user was purged wrote it back.
    pub fn forget(&self, user: UserId) {
        let mut shard = self.shard(user);
        shard.remove(&user);
        if let Err(e) = self.inner.store.quotas().remove(user) {
            tracing::error!(error = %e, "cannot remove a deleted user's quota counter");
        }
    }

    fn shard(&self, user: UserId) -> MutexGuard<'_, Shard> {
        // A v7 UUID's low bits are random.
        let index = (user.0.as_u128() % SHARDS as u128) as usize;
        // Nothing inside the critical sections panics; if something ever
        // did, the counters it guards are still whole (each is replaced in
        // one assignment after its write succeeded).
        self.inner.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The user's counter, loaded if needed, with a regular user's window
    /// rolled over when it has passed.
    fn counter<'a>(
        &self,
        shard: &'a mut Shard,
        user: UserId,
        policy: Policy,
        now: u64,
    ) -> Result<&'a mut QuotaCounter, StorageError> {
        let held = match shard.entry(user) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let stored = self.inner.store.quotas().get(user)?;
                e.insert(Held {
                    counter: stored.unwrap_or(QuotaCounter {
                        count: 0,
                        window_start: now,
                    }),
                    last_used: now,
                    ends_at: now,
                    windowed: false,
                })
            }
        };
        if let Policy::User { window, .. } = policy {
            if now >= held.counter.window_start.saturating_add(window) {
                held.counter = QuotaCounter {
                    count: 0,
                    window_start: now,
                };
            }
        }
        held.last_used = now;
        held.windowed = matches!(policy, Policy::User { .. });
        held.ends_at = match policy {
            Policy::Demo { ends_at, .. } => ends_at,
            Policy::User { window, .. } => held.counter.window_start.saturating_add(window),
        };
        Ok(&mut held.counter)
    }

    /// How many counters are in memory, and the bytes their tables hold
    /// (capacity × entry size plus hashbrown's control byte per bucket):
    /// for the benchmark's memory figure.
    pub fn footprint(&self) -> (usize, usize) {
        let entry = std::mem::size_of::<(UserId, Held)>() + 1;
        self.inner
            .shards
            .iter()
            .fold((0, 0), |(held, bytes), shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                (held + shard.len(), bytes + shard.capacity() * entry)
            })
    }

    /// Drops from memory the counters of users idle for `idle` seconds and
    /// of windows that ended (a demo that is over, a regular user's window
    /// that passed: its stored record goes too, as its count is void).
    /// An evicted counter is read back from storage on the user's next
    /// request. Each shard is locked in turn, briefly.
    pub fn evict(&self, now: u64, idle: u64) -> Evicted {
        let mut evicted = Evicted::default();
        for shard in self.inner.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let store = &self.inner.store;
            shard.retain(|user, held| {
                if held.ends_at <= now {
                    if held.windowed {
                        // A regular user's window that passed: void.
                        if let Err(e) = store.quotas().remove(*user) {
                            tracing::warn!(error = %e, "cannot drop an ended quota window");
                            return true;
                        }
                    }
                    evicted.ended += 1;
                    return false;
                }
                if now.saturating_sub(held.last_used) >= idle {
                    evicted.idle += 1;
                    return false;
                }
                evicted.kept += 1;
                true
            });
            if shard.capacity() > 4 * shard.len().max(64) {
                shard.shrink_to_fit();
            }
        }
        evicted
    }
}

fn standing(policy: Policy, counter: &QuotaCounter, now: u64) -> Standing {
    let reset_at = match policy {
        Policy::Demo { ends_at, .. } => ends_at,
        Policy::User { window, .. } => counter.window_start.saturating_add(window),
    };
    Standing {
        policy,
        count: counter.count,
        reset_in: reset_at.saturating_sub(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: Policy = Policy::Demo {
        limit: 5,
        ends_at: 1_000_900,
        lifetime: 900,
    };
    const NOW: u64 = 1_000_000;

    #[test]
    fn exactly_the_limit_is_admitted_among_threads() {
        let registry = QuotaRegistry::new(Store::temporary().unwrap());
        for _round in 0..20 {
            let user = UserId::new();
            // 8 threads × 10 attempts released together.
            let barrier = std::sync::Barrier::new(8);
            let answers: Vec<Admission> = std::thread::scope(|scope| {
                let threads: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            (0..10)
                                .map(|_| registry.admit(user, DEMO, NOW).unwrap())
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .flat_map(|t| t.join().unwrap())
                    .collect()
            });
            let mut admitted: Vec<u32> = answers
                .iter()
                .filter_map(|a| match a {
                    Admission::Admitted(s) => Some(s.count),
                    Admission::Rejected(s) => {
                        assert_eq!((s.count, s.limit(), s.remaining()), (5, 5, 0));
                        None
                    }
                })
                .collect();
            admitted.sort_unstable();
            // Each admission saw its own count: 1 to 5, once each.
            assert_eq!(admitted, [1, 2, 3, 4, 5]);
            assert_eq!(registry.peek(user, DEMO, NOW).unwrap().count, 5);
        }
    }

    #[actix_rt::test]
    async fn counts_survive_a_new_registry_over_the_same_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = palaver_storage::StoreConfig {
            path: dir.path().to_path_buf(),
            cache_bytes: 8 << 20,
            fsync: false,
        };
        let user;
        {
            let store = Store::open(&config).unwrap();
            // A real user: the start-up check drops counters of missing ones.
            user = store
                .users()
                .create(palaver_storage::NewUser {
                    email: "demo@demo.invalid".into(),
                    password_hash: String::new(),
                    is_demo: true,
                    demo_expires_at: Some(NOW + 900),
                })
                .await
                .unwrap()
                .id;
            let registry = QuotaRegistry::new(store.clone());
            for _ in 0..3 {
                let a = registry.admit(user, DEMO, NOW).unwrap();
                assert!(matches!(a, Admission::Admitted(_)));
            }
            store.flush().unwrap();
            // Dropping every store handle: a restart.
        }
        let registry = QuotaRegistry::new(Store::open(&config).unwrap());
        assert_eq!(registry.peek(user, DEMO, NOW).unwrap().count, 3);
        let admitted = (0..4)
            .filter(|_| matches!(registry.admit(user, DEMO, NOW), Ok(Admission::Admitted(_))))
            .count();
        assert_eq!(admitted, 2, "3 before the restart + 2 = the limit of 5");
    }

    #[test]
    fn refunds_give_a_request_back() {
        let registry = QuotaRegistry::new(Store::temporary().unwrap());
        let user = UserId::new();
        for _ in 0..5 {
            registry.admit(user, DEMO, NOW).unwrap();
        }
        assert!(matches!(
            registry.admit(user, DEMO, NOW).unwrap(),
            Admission::Rejected(_)
        ));
        registry.refund(user, DEMO, NOW).unwrap();
        assert!(matches!(
            registry.admit(user, DEMO, NOW).unwrap(),
            Admission::Admitted(s) if s.count == 5 && s.reset_in == 900
        ));
    }

    #[test]
    fn forgetting_drops_the_counter_everywhere() {
        let store = Store::temporary().unwrap();
        let registry = QuotaRegistry::new(store.clone());
        let user = UserId::new();
        registry.admit(user, DEMO, NOW).unwrap();
        assert!(
            store.quotas().get(user).unwrap().is_some(),
            "written through"
        );
        registry.forget(user);
        assert_eq!(store.quotas().get(user).unwrap(), None);
        // A refund in flight when the user went writes nothing back.
        registry.refund(user, DEMO, NOW).unwrap();
        assert_eq!(store.quotas().get(user).unwrap(), None);
        assert_eq!(registry.peek(user, DEMO, NOW).unwrap().count, 0);
    }

    #[actix_rt::test]
    async fn the_keeper_evicts_idle_and_ended_counters_and_they_come_back() {
        use actix::Actor;
        let store = Store::temporary().unwrap();
        let registry = QuotaRegistry::new(store.clone());
        let keeper = QuotaKeeper::new(registry.clone()).start();
        let (idle, active, ended) = (UserId::new(), UserId::new(), UserId::new());
        let user = Policy::User {
            limit: 10,
            window: 100,
        };
        registry.admit(idle, DEMO, NOW).unwrap();
        registry.admit(idle, DEMO, NOW).unwrap();
        registry.admit(ended, user, NOW).unwrap();
        registry.admit(active, DEMO, NOW + 590).unwrap();
        let evict = |now| {
            keeper.send(Evict {
                now,
                idle: std::time::Duration::from_secs(600),
            })
        };
        let done = evict(NOW + 600).await.unwrap();
        assert_eq!(
            done,
            Evicted {
                kept: 1,
                idle: 1,
                ended: 1
            }
        );
        // The idle demo user's count was kept in storage and comes back.
        assert_eq!(store.quotas().get(idle).unwrap().unwrap().count, 2);
        assert_eq!(registry.peek(idle, DEMO, NOW + 601).unwrap().count, 2);
        // The ended window's count is void: gone from storage too.
        assert_eq!(store.quotas().get(ended).unwrap(), None);
        // Past the demo's end its counter leaves memory (storage keeps it
        // until the user is purged).
        let done = evict(NOW + 901).await.unwrap();
        assert_eq!(done.kept, 0);
        assert!(store.quotas().get(active).unwrap().is_some());
    }

    #[test]
    fn a_user_window_rolls_over() {
        let registry = QuotaRegistry::new(Store::temporary().unwrap());
        let user = UserId::new();
        let policy = Policy::User {
            limit: 2,
            window: 60,
        };
        for _ in 0..2 {
            registry.admit(user, policy, NOW).unwrap();
        }
        let Admission::Rejected(s) = registry.admit(user, policy, NOW + 30).unwrap() else {
            panic!("over the limit inside the window");
        };
        assert_eq!(s.reset_in, 30);
        let Admission::Admitted(s) = registry.admit(user, policy, NOW + 60).unwrap() else {
            panic!("a new window admits again");
        };
        assert_eq!((s.count, s.reset_in), (1, 60));
    }
}
