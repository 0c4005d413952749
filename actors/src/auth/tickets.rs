//! Single-use WebSocket tickets, held in memory only.
//!
//! A ticket is a random string handed to an authenticated client, valid for
//! `auth.ticket_ttl` (30 s) and usable once. The book keeps only a SHA-256 of
//! each ticket; consuming removes the entry, so a second use finds nothing.
//! Keeping them in memory rather than in storage is deliberate: a restart
//! forgets every outstanding ticket, so a used one can never be replayed from
//! a state that missed its consumption (the worst a restart does is make a
//! client ask for a new ticket).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use palaver_storage::UserId;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::secret_string;

/// Who a ticket admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketGrant {
    pub user_id: UserId,
    /// The token family of the credential that asked for it (none for an API key).
    pub family: Option<Uuid>,
    /// When the credential that asked for it expires (Unix seconds), if it does.
    pub credential_expires_at: Option<u64>,
    /// The API key that asked for it, if one did.
    pub api_key: Option<Uuid>,
}

struct Entry {
    grant: TicketGrant,
    expires: Instant,
}

/// Outstanding (unexpired, unused) tickets one user may hold: enough for
/// many tabs reconnecting at once, too few to fill memory by asking in a loop.
pub const MAX_TICKETS_PER_USER: usize = 64;

#[derive(Default)]
pub struct TicketBook {
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    /// SHA-256 of a ticket → what it admits.
    entries: HashMap<[u8; 32], Entry>,
    /// A user's outstanding tickets (at most [`MAX_TICKETS_PER_USER`]), so
    /// issuing one looks at that user's tickets, not at everyone's.
    by_user: HashMap<UserId, Vec<[u8; 32]>>,
}

impl Book {
    /// Drops `digest` from its user's list (the entry is gone).
    fn unlink(&mut self, user: UserId, digest: &[u8; 32]) {
        if let Some(list) = self.by_user.get_mut(&user) {
            list.retain(|d| d != digest);
            if list.is_empty() {
                self.by_user.remove(&user);
            }
        }
    }
}

/// A user holds [`MAX_TICKETS_PER_USER`] outstanding tickets already.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyTickets;

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

impl TicketBook {
    /// Issues a ticket for `grant`, valid for `ttl`, unless the user already
    /// holds [`MAX_TICKETS_PER_USER`] unexpired ones. Costs O(that bound),
    /// however many tickets others hold.
    pub fn issue(&self, grant: TicketGrant, ttl: Duration) -> Result<String, TooManyTickets> {
        let now = Instant::now();
        let mut book = self.lock();
        let Book { entries, by_user } = &mut *book;
        let list = by_user.entry(grant.user_id).or_default();
        // The user's expired tickets give their places back now.
        list.retain(|d| match entries.get(d) {
            Some(e) if e.expires > now => true,
            Some(_) => {
                entries.remove(d);
                false
            }
            None => false,
        });
        if list.len() >= MAX_TICKETS_PER_USER {
            return Err(TooManyTickets);
        }
        let ticket = secret_string("pvt_");
        let key = digest(&ticket);
        list.push(key);
        entries.insert(
            key,
            Entry {
                grant,
                expires: now + ttl,
            },
        );
        Ok(ticket)
    }

    /// Consumes a ticket: its grant the first time, while unexpired; `None`
    /// ever after.
    pub fn consume(&self, ticket: &str) -> Option<TicketGrant> {
        let key = digest(ticket);
        let mut book = self.lock();
        let entry = book.entries.remove(&key)?;
        book.unlink(entry.grant.user_id, &key);
        (entry.expires > Instant::now()).then_some(entry.grant)
    }

    /// Drops the unused tickets an API key asked for (the key is deleted).
    pub fn forget_api_key(&self, id: Uuid) {
        let mut book = self.lock();
        let gone: Vec<_> = book
            .entries
            .iter()
            .filter(|(_, e)| e.grant.api_key == Some(id))
            .map(|(k, e)| (*k, e.grant.user_id))
            .collect();
        for (key, user) in gone {
            book.entries.remove(&key);
            book.unlink(user, &key);
        }
    }

    /// Drops expired tickets; returns how many.
    pub fn collect_expired(&self) -> usize {
        let now = Instant::now();
        let mut book = self.lock();
        let before = book.entries.len();
        book.entries.retain(|_, e| e.expires > now);
        let Book { entries, by_user } = &mut *book;
        by_user.retain(|_, list| {
            list.retain(|d| entries.contains_key(d));
            !list.is_empty()
        });
        before - entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic while holding this lock cannot leave the book inconsistent
        // in a way that matters: an entry without its list slot is still
        // single-use, and a stale slot is dropped on the user's next issue.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> TicketGrant {
        TicketGrant {
            user_id: UserId::new(),
            family: Some(Uuid::new_v4()),
            credential_expires_at: None,
            api_key: None,
        }
    }

    #[test]
    fn a_ticket_works_once() {
        let book = TicketBook::default();
        let g = grant();
        let t = book.issue(g.clone(), Duration::from_secs(30)).unwrap();
        assert!(t.starts_with("pvt_") && t.len() > 40);
        assert_eq!(book.consume(&t), Some(g));
        assert_eq!(book.consume(&t), None);
        assert_eq!(book.consume("pvt_made_up"), None);
    }

    #[test]
    fn forgetting_a_key_drops_only_its_tickets() {
        let book = TicketBook::default();
        let key = Uuid::new_v4();
        let by_key = TicketGrant {
            api_key: Some(key),
            ..grant()
        };
        let t_key = book.issue(by_key, Duration::from_secs(30)).unwrap();
        let t_other = book.issue(grant(), Duration::from_secs(30)).unwrap();
        book.forget_api_key(key);
        assert_eq!(book.consume(&t_key), None);
        assert!(book.consume(&t_other).is_some());
    }

    #[test]
    fn a_user_holds_a_bounded_number_of_tickets() {
        let book = TicketBook::default();
        let g = grant();
        let tickets: Vec<_> = (0..MAX_TICKETS_PER_USER)
            .map(|_| book.issue(g.clone(), Duration::from_secs(30)).unwrap())
            .collect();
        assert_eq!(
            book.issue(g.clone(), Duration::from_secs(30)),
            Err(TooManyTickets)
        );
        assert!(
            book.issue(grant(), Duration::from_secs(30)).is_ok(),
            "others are not affected"
        );
        book.consume(&tickets[0]).unwrap();
        assert!(
            book.issue(g.clone(), Duration::from_secs(30)).is_ok(),
            "a used one frees its place"
        );
    }

    #[test]
    fn expired_tickets_free_their_places_at_the_next_issue() {
        let book = TicketBook::default();
        let g = grant();
        for _ in 0..MAX_TICKETS_PER_USER {
            book.issue(g.clone(), Duration::ZERO).unwrap();
        }
        assert!(book.issue(g, Duration::from_secs(30)).is_ok());
        assert_eq!(book.lock().entries.len(), 1, "the expired ones went");
    }

    #[test]
    fn expired_tickets_are_refused_and_collected() {
        let book = TicketBook::default();
        let t = book.issue(grant(), Duration::ZERO).unwrap();
        book.issue(grant(), Duration::ZERO).unwrap();
        let live = book.issue(grant(), Duration::from_secs(30)).unwrap();
        assert_eq!(book.consume(&t), None);
        assert_eq!(book.collect_expired(), 1);
        assert_eq!(book.collect_expired(), 0);
        assert!(book.consume(&live).is_some());
    }
}
