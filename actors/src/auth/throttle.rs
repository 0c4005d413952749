//! Sliding-window limiters for login failures (per email, per client
//! network), demo creation and registration (per client network, and
//! registrations overall). In memory: a restart forgives, which is
//! acceptable for throttles (quotas, which must not forget, are persisted
//! elsewhere).
//!
//! Nothing a client sends can grow these tables without bound: keys are
//! fixed-size (an email is keyed by its SHA-256, an address by
//! [`ClientNet`]), an entry with no hit in its window is never kept, and
//! every table holds at most a fixed number of keys, evicting the least
//! recently hit one when full (docs/DECISIONS.md, "Throttles").

use std::collections::VecDeque;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;
use sha2::{Digest, Sha256};

/// Keys each per-client or per-email table holds at most. At the limits'
/// defaults an entry is under 1 KiB, so a full table stays a few tens of
/// MiB at worst; filling one takes that many distinct client networks.
pub const MAX_KEYS: usize = 50_000;

/// Every limiter of the identity layer, shared by the handle (which checks
/// and records) and the actor (which collects stale entries).
pub struct Limiters {
    pub failures_by_email: WindowLimiter<EmailKey>,
    pub failures_by_ip: WindowLimiter<ClientNet>,
    pub demos_by_ip: WindowLimiter<ClientNet>,
    pub registrations_by_ip: WindowLimiter<ClientNet>,
    /// Registrations from everyone together.
    pub registrations: WindowLimiter<()>,
}

impl Limiters {
    pub fn collect(&self) {
        self.failures_by_email.collect();
        self.failures_by_ip.collect();
        self.demos_by_ip.collect();
        self.registrations_by_ip.collect();
        self.registrations.collect();
    }
}

/// What a per-IP limit counts: an IPv4 address, or the /64 of an IPv6
/// address (one subscriber's allocation: a client holding a /64 has 2^64
/// addresses to rotate through). An IPv4-mapped IPv6 address is its IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientNet {
    V4(Ipv4Addr),
    V6Prefix([u8; 8]),
}

impl From<IpAddr> for ClientNet {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientNet::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientNet::V4(v4),
                None => {
                    let octets = v6.octets();
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&octets[..8]);
                    ClientNet::V6Prefix(prefix)
                }
            },
        }
    }
}

/// The per-email limiter's key: a SHA-256 of the normalised address, so an
/// entry costs 32 bytes whatever the client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EmailKey([u8; 32]);

impl EmailKey {
    pub fn of(email: &str) -> Self {
        let normalized = palaver_storage::keys::normalize_email(email);
        EmailKey(Sha256::digest(normalized.as_bytes()).into())
    }
}

pub struct WindowLimiter<K: Hash + Eq> {
    limit: u32,
    window: Duration,
    hits: Mutex<LruCache<K, VecDeque<Instant>>>,
}

impl<K: Eq + Hash + Clone> WindowLimiter<K> {
    /// At most `limit` hits per key within `window` (0 = unlimited), for at
    /// most `capacity` keys at once.
    pub fn new(limit: u32, window: Duration, capacity: usize) -> Self {
        WindowLimiter {
            limit,
            window,
            hits: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Checks and records in one step: of many concurrent attempts, no more
    /// than the limit pass. `Err(retry_after)` records nothing. A new key
    /// in a full table evicts the least recently hit one.
    pub fn try_hit(&self, key: &K) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut hits = self.lock();
        if let Some(q) = hits.get_mut(key) {
            prune(q, now, self.window);
            if let Some(oldest) = q.front().filter(|_| q.len() as u32 >= self.limit) {
                return Err((*oldest + self.window).saturating_duration_since(now));
            }
            q.push_back(now);
        } else {
            hits.push(key.clone(), VecDeque::from([now]));
        }
        Ok(())
    }

    /// Takes back the latest hit of `key` (an attempt that turned out fine);
    /// a key left with no hit is dropped.
    pub fn unhit(&self, key: &K) {
        let mut hits = self.lock();
        if let Some(q) = hits.peek_mut(key) {
            q.pop_back();
            if q.is_empty() {
                hits.pop(key);
            }
        }
    }

    /// Forgets `key` (a successful login clears its failures).
    pub fn clear(&self, key: &K) {
        self.lock().pop(key);
    }

    /// Drops keys with no hit in the window; returns how many remain.
    pub fn collect(&self) -> usize {
        let now = Instant::now();
        let mut hits = self.lock();
        let stale: Vec<K> = hits
            .iter_mut()
            .filter_map(|(k, q)| {
                prune(q, now, self.window);
                q.is_empty().then(|| k.clone())
            })
            .collect();
        for k in &stale {
            hits.pop(k);
        }
        hits.len()
    }

    /// How many keys the table holds now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<K, VecDeque<Instant>>> {
        // Every operation leaves the table whole (single inserts and removals).
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
    use std::net::Ipv6Addr;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn limits_within_the_window() {
        let l = WindowLimiter::new(3, Duration::from_secs(60), 16);
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
    fn unhit_takes_back_the_latest_and_keeps_no_empty_entry() {
        let l = WindowLimiter::new(2, Duration::from_secs(60), 16);
        assert!(l.try_hit(&"a").is_ok());
        assert!(l.try_hit(&"a").is_ok());
        assert!(l.try_hit(&"a").is_err());
        l.unhit(&"a");
        assert!(l.try_hit(&"a").is_ok());
        assert!(l.try_hit(&"a").is_err());
        l.unhit(&"a");
        l.unhit(&"a");
        assert!(l.is_empty(), "an entry with no hit is dropped at once");
        l.unhit(&"never seen");
        assert!(l.is_empty());
    }

    #[test]
    fn hits_age_out() {
        let l = WindowLimiter::new(1, Duration::ZERO, 16);
        assert!(l.try_hit(&1).is_ok());
        assert!(l.try_hit(&1).is_ok());
        assert_eq!(l.collect(), 0);
    }

    #[test]
    fn zero_disables() {
        let l = WindowLimiter::new(0, Duration::from_secs(60), 16);
        for _ in 0..5 {
            assert!(l.try_hit(&1).is_ok());
        }
        assert!(l.is_empty(), "an unlimited limiter records nothing");
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_least_recently_hit() {
        let l = WindowLimiter::new(1, HOUR, 100);
        for k in 0..10_000 {
            assert!(l.try_hit(&k).is_ok());
        }
        assert_eq!(l.len(), 100);
        // The newest keys are still limited; the oldest were evicted.
        assert!(l.try_hit(&9_999).is_err());
        assert!(l.try_hit(&0).is_ok());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientNet::from(a), ClientNet::from(b));
        assert_ne!(ClientNet::from(a), ClientNet::from(other));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(
            ClientNet::from(mapped),
            ClientNet::from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)))
        );
        assert_ne!(
            ClientNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ClientNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );

        let l = WindowLimiter::new(2, HOUR, 16);
        assert!(l.try_hit(&ClientNet::from(a)).is_ok());
        assert!(l.try_hit(&ClientNet::from(b)).is_ok());
        let c: IpAddr = "2001:db8:1:2:1234::9".parse().unwrap();
        assert!(
            l.try_hit(&ClientNet::from(c)).is_err(),
            "a third address of the same /64 is the same client"
        );
    }

    #[test]
    fn email_keys_are_fixed_size_and_normalised() {
        let long = "x".repeat(1 << 20);
        assert_eq!(std::mem::size_of_val(&EmailKey::of(&long)), 32);
        assert_eq!(
            EmailKey::of("Ann@Example.com"),
            EmailKey::of("ann@example.com")
        );
    }
}
