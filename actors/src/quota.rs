//! The QuotaRegistry: the single owner of every request counter. Because one
//! actor decides, admit-and-count is atomic by construction: the check and the
//! increment happen in one synchronous step of its handler, so exactly `limit`
//! requests are admitted however many arrive at once. Every change is written
//! through to storage before the admission is acknowledged, so a restart or a
//! crash never resets a count.

use std::collections::HashMap;

use actix::prelude::*;
use palaver_storage::{QuotaCounter, StorageError, Store, UserId};

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
    /// Counted (written, not yet flushed: see [`Admit`]).
    Admitted(Standing),
    /// Over the limit; nothing counted.
    Rejected(Standing),
}

pub struct QuotaRegistry {
    store: Store,
    /// Counters of users seen since start; loaded from storage on first use.
    counters: HashMap<UserId, QuotaCounter>,
}

impl QuotaRegistry {
    pub fn new(store: Store) -> Self {
        QuotaRegistry {
            store,
            counters: HashMap::new(),
        }
    }

    /// The user's counter, loaded if needed, with a regular user's window
    /// rolled over when it has passed.
    fn counter(
        &mut self,
        user: UserId,
        policy: Policy,
        now: u64,
    ) -> Result<&mut QuotaCounter, StorageError> {
        let counter = match self.counters.entry(user) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let stored = self.store.quotas().get(user)?;
                e.insert(stored.unwrap_or(QuotaCounter {
                    count: 0,
                    window_start: now,
                }))
            }
        };
        if let Policy::User { window, .. } = policy {
            if now >= counter.window_start.saturating_add(window) {
                *counter = QuotaCounter {
                    count: 0,
                    window_start: now,
                };
            }
        }
        Ok(counter)
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

impl Actor for QuotaRegistry {
    type Context = Context<Self>;
}

/// From the HTTP admission middleware and the session actors, before a
/// counted request runs: count it if the user is under the limit. Answers
/// `Admitted` as soon as the count is recorded (in memory and written to
/// storage, not yet flushed), or `Rejected`. Before acknowledging the request
/// to its client, the caller makes the count durable with
/// `store.durable_since(mark)`, a mark taken after this answer: usually the
/// request's own durable write already covered it.
#[derive(Message)]
#[rtype(result = "Result<Admission, StorageError>")]
pub struct Admit {
    pub user: UserId,
    pub policy: Policy,
    /// Unix seconds (passed in so a test can move time).
    pub now: u64,
}

impl Handler<Admit> for QuotaRegistry {
    type Result = ResponseFuture<Result<Admission, StorageError>>;

    fn handle(&mut self, msg: Admit, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let decided = (|| {
            let counter = self.counter(msg.user, msg.policy, msg.now)?;
            if counter.count >= msg.policy.limit() {
                crate::telemetry::quota_rejection(msg.policy.name());
                return Ok(Admission::Rejected(standing(msg.policy, counter, msg.now)));
            }
            counter.count += 1;
            let snapshot = *counter;
            if let Err(e) = store.quotas().put(msg.user, &snapshot) {
                counter.count -= 1;
                return Err(e);
            }
            Ok(Admission::Admitted(standing(
                msg.policy, &snapshot, msg.now,
            )))
        })();
        Box::pin(async move { decided })
    }
}

/// From the HTTP admission middleware when a counted request's handler failed
/// with a 5xx: gives the request back. Answers when durable.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct Refund {
    pub user: UserId,
    pub policy: Policy,
    pub now: u64,
}

impl Handler<Refund> for QuotaRegistry {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: Refund, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let written = (|| {
            let counter = self.counter(msg.user, msg.policy, msg.now)?;
            counter.count = counter.count.saturating_sub(1);
            store.quotas().put(msg.user, counter)
        })();
        Box::pin(async move {
            written?;
            store.durable().await
        })
    }
}

/// From `/api/auth/me/` and the WebSocket `connected` event: where the user
/// stands, without counting anything.
#[derive(Message)]
#[rtype(result = "Result<Standing, StorageError>")]
pub struct Peek {
    pub user: UserId,
    pub policy: Policy,
    pub now: u64,
}

impl Handler<Peek> for QuotaRegistry {
    type Result = Result<Standing, StorageError>;

    fn handle(&mut self, msg: Peek, _: &mut Self::Context) -> Self::Result {
        let counter = self.counter(msg.user, msg.policy, msg.now)?;
        Ok(standing(msg.policy, counter, msg.now))
    }
}

/// From the Supervisor when a user is deleted: drop the cached counter (the
/// stored one went with the user).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget {
    pub user: UserId,
}

impl Handler<Forget> for QuotaRegistry {
    type Result = ();

    fn handle(&mut self, msg: Forget, _: &mut Self::Context) {
        self.counters.remove(&msg.user);
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

    fn admit(user: UserId, policy: Policy, now: u64) -> Admit {
        Admit { user, policy, now }
    }

    #[actix_rt::test]
    async fn exactly_the_limit_is_admitted_under_concurrency() {
        let store = Store::temporary().unwrap();
        let registry = QuotaRegistry::new(store).start();
        for _round in 0..20 {
            let user = UserId::new();
            let answers: Vec<_> = (0..50)
                .map(|_| registry.send(admit(user, DEMO, NOW)))
                .collect();
            let mut admitted = 0;
            let mut rejected = 0;
            for answer in answers {
                match answer.await.unwrap().unwrap() {
                    Admission::Admitted(_) => admitted += 1,
                    Admission::Rejected(s) => {
                        assert_eq!((s.count, s.limit(), s.remaining()), (5, 5, 0));
                        rejected += 1;
                    }
                }
            }
            assert_eq!((admitted, rejected), (5, 45));
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
        let user = UserId::new();
        {
            let store = Store::open(&config).unwrap();
            let registry = QuotaRegistry::new(store).start();
            for _ in 0..3 {
                let a = registry
                    .send(admit(user, DEMO, NOW))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(matches!(a, Admission::Admitted(_)));
            }
            registry
                .send(Forget {
                    user: UserId::new(),
                })
                .await
                .unwrap();
            // Stop the actor and drop every store handle: a restart.
            drop(registry);
        }
        // The actor's store clone is released once its mailbox closes.
        let mut tries = 0;
        let store = loop {
            match Store::open(&config) {
                Ok(store) => break store,
                Err(StorageError::Locked { .. }) if tries < 100_000 => {
                    tries += 1;
                    actix_rt::task::yield_now().await
                }
                Err(e) => panic!("{e}"),
            }
        };
        let registry = QuotaRegistry::new(store).start();
        let peek = registry
            .send(Peek {
                user,
                policy: DEMO,
                now: NOW,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peek.count, 3);
        let results: Vec<_> = (0..4)
            .map(|_| registry.send(admit(user, DEMO, NOW)))
            .collect();
        let mut admitted = 0;
        for r in results {
            if let Admission::Admitted(_) = r.await.unwrap().unwrap() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 2, "3 before the restart + 2 = the limit of 5");
    }

    #[actix_rt::test]
    async fn refunds_give_a_request_back() {
        let registry = QuotaRegistry::new(Store::temporary().unwrap()).start();
        let user = UserId::new();
        for _ in 0..5 {
            registry
                .send(admit(user, DEMO, NOW))
                .await
                .unwrap()
                .unwrap();
        }
        assert!(matches!(
            registry
                .send(admit(user, DEMO, NOW))
                .await
                .unwrap()
                .unwrap(),
            Admission::Rejected(_)
        ));
        registry
            .send(Refund {
                user,
                policy: DEMO,
                now: NOW,
            })
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            registry.send(admit(user, DEMO, NOW)).await.unwrap().unwrap(),
            Admission::Admitted(s) if s.count == 5 && s.reset_in == 900
        ));
    }

    #[actix_rt::test]
    async fn a_user_window_rolls_over() {
        let registry = QuotaRegistry::new(Store::temporary().unwrap()).start();
        let user = UserId::new();
        let policy = Policy::User {
            limit: 2,
            window: 60,
        };
        for _ in 0..2 {
            registry
                .send(admit(user, policy, NOW))
                .await
                .unwrap()
                .unwrap();
        }
        let Admission::Rejected(s) = registry
            .send(admit(user, policy, NOW + 30))
            .await
            .unwrap()
            .unwrap()
        else {
            panic!("over the limit inside the window");
        };
        assert_eq!(s.reset_in, 30);
        let Admission::Admitted(s) = registry
            .send(admit(user, policy, NOW + 60))
            .await
            .unwrap()
            .unwrap()
        else {
            panic!("a new window admits again");
        };
        assert_eq!((s.count, s.reset_in), (1, 60));
    }
}
