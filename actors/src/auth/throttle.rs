//! Sliding-window limiters for login failures (per email, per IP) and demo
//! creation (per IP). In memory: a restart forgives, which is acceptable for
//! throttles (quotas, which must not forget, are persisted elsewhere).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Every limiter of the identity layer, shared by the handle (which checks
/// and records) and the actor (which collects stale entries).
pub struct Limiters {
    pub failures_by_email: WindowLimiter<String>,
    pub failures_by_ip: WindowLimiter<IpAddr>,
    pub demos_by_ip: WindowLimiter<IpAddr>,
}

impl Limiters {
    pub fn collect(&self) {
        self.failures_by_email.collect();
        self.failures_by_ip.collect();
        self.demos_by_ip.collect();
    }
}

pub struct WindowLimiter<K> {
    limit: u32,
    window: Duration,
    hits: Mutex<HashMap<K, VecDeque<Instant>>>,
}

impl<K: Eq + Hash + Clone> WindowLimiter<K> {
    pub fn new(limit: u32, window: Duration) -> Self {
        WindowLimiter {
            limit,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Checks and records in one step: of many concurrent attempts, no more
    /// than the limit pass. `Err(retry_after)` records nothing.
    pub fn try_hit(&self, key: &K) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut hits = self.lock();
        let q = hits.entry(key.clone()).or_default();
        prune(q, now, self.window);
        if q.len() as u32 >= self.limit {
            let oldest = *q.front().expect("non-empty: len >= limit > 0");
            return Err((oldest + self.window).saturating_duration_since(now));
        }
        q.push_back(now);
        Ok(())
    }

    /// Takes back the latest hit of `key` (an attempt that turned out fine).
    pub fn unhit(&self, key: &K) {
        if let Some(q) = self.lock().get_mut(key) {
            q.pop_back();
        }
    }

    /// Forgets `key` (a successful login clears its failures).
    pub fn clear(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Drops keys with no hit in the window; returns how many remain.
    pub fn collect(&self) -> usize {
        let now = Instant::now();
        let mut hits = self.lock();
        hits.retain(|_, q| {
            prune(q, now, self.window);
            !q.is_empty()
        });
        hits.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, VecDeque<Instant>>> {
        self.hits.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_within_the_window() {
        let l = WindowLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.try_hit(&"a").is_ok());
        }
        let retry = l.try_hit(&"a").unwrap_err();
        assert!(retry <= Duration::from_secs(60) && retry > Duration::from_secs(58));
        assert!(l.try_hit(&"b").is_ok(), "keys are independent");
        l.clear(&"a");
        assert!(l.try_hit(&"a").is_ok());
    }

    #[test]
    fn unhit_takes_back_the_latest() {
        let l = WindowLimiter::new(2, Duration::from_secs(60));
        assert!(l.try_hit(&"a").is_ok());
        assert!(l.try_hit(&"a").is_ok());
        assert!(l.try_hit(&"a").is_err());
        l.unhit(&"a");
        assert!(l.try_hit(&"a").is_ok());
        assert!(l.try_hit(&"a").is_err());
    }

    #[test]
    fn hits_age_out() {
        let l = WindowLimiter::new(1, Duration::ZERO);
        assert!(l.try_hit(&1).is_ok());
        assert!(l.try_hit(&1).is_ok());
        assert_eq!(l.collect(), 0);
    }

    #[test]
    fn zero_disables() {
        let l = WindowLimiter::new(0, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(l.try_hit(&1).is_ok());
        }
    }
}
