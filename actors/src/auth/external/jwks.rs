//! A JWKS entry's keys: [`JwksCache`], the key set as last fetched (read by
//! every verification, on its own thread, under a read lock), and
//! [`JwksFetcher`], the one actor that fetches key sets.
//!
//! - Keys are per entry: a set is fetched from its entry's `jwks_url`,
//!   parsed with its entry's algorithms, and read only by that entry's
//!   verifications. A `kid` from another entry's set means nothing here.
//! - A verification that finds its `kid` asks the fetcher for nothing,
//!   except (at most every 30 s) a background refresh once the set is older
//!   than `jwks_cache`.
//! - An unknown `kid` makes the caller wait for one fetch ([`KeyMissing`]),
//!   at most once per [`MISS_REFETCH_INTERVAL`] per entry; callers that meet
//!   a missing key while a fetch runs wait for that same fetch. The fetch
//!   gives up after [`FETCH_TIMEOUT`], and the caller after
//!   [`WAIT_FOR_FETCH`] whatever happens, so a JWKS endpoint that is down or
//!   silent costs a handshake at most that, then a 401.
//! - A failed fetch changes nothing: the keys fetched before keep working.
//!   Each fetch that succeeds replaces the set (a key the issuer withdrew
//!   stops verifying).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use jsonwebtoken::Algorithm;
use tokio::sync::oneshot;

pub use super::keyset::KeySet;
use crate::telemetry::ExternalCounters;

/// An unknown `kid` refetches an entry's JWKS at most this often.
pub const MISS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// One fetch, from connecting to the last byte of the body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a verification waits for the fetch its unknown `kid` asked
/// for (the fetch's own bound, plus room for the fetcher's mailbox).
pub const WAIT_FOR_FETCH: Duration = Duration::from_secs(3);
/// A JWKS larger than this is refused (a key set is a few kilobytes).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// One entry's key set as last fetched, shared by its verifications and
/// the fetcher.
pub struct JwksCache {
    /// The entry's position among the configured sources.
    pub(crate) entry: usize,
    pub(crate) name: Arc<str>,
    url: reqwest::Url,
    /// `jwks_cache`: a set older than this is refreshed in the background.
    max_age: Duration,
    /// The entry's algorithms: keys for none of them are not kept.
    algorithms: Vec<Algorithm>,
    current: RwLock<Arc<KeySet>>,
    /// Fetches ended so far (succeeded or not); bumped after `current` is
    /// replaced, so a caller that read it before the set knows whether a
    /// fetch ended since it looked.
    finished: AtomicU64,
    /// When a verification last asked for a background refresh (so a stale
    /// set under load asks once, not once per verification).
    refresh_asked: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub(crate) fn new(
        entry: usize,
        name: Arc<str>,
        url: reqwest::Url,
        max_age: Duration,
        algorithms: Vec<Algorithm>,
    ) -> JwksCache {
        JwksCache {
            entry,
            name,
            url,
            max_age,
            algorithms,
            current: RwLock::new(Arc::new(KeySet::default())),
            finished: AtomicU64::new(0),
            refresh_asked: Mutex::new(None),
        }
    }

    /// The key set now (a cheap handle: verification holds it while it
    /// verifies, whatever a fetch replaces meanwhile).
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many fetches have ended: read it before [`JwksCache::current`]
    /// and hand it to [`KeyMissing`].
    pub fn fetches_ended(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }

    /// A fetch ended: its set (if it succeeded) is the current one.
    fn fetch_ended(&self, set: Option<KeySet>) {
        if let Some(set) = set {
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        }
        self.finished.fetch_add(1, Ordering::Release);
    }

    /// Whether the set is older than `jwks_cache` and no refresh was asked
    /// for in the last [`MISS_REFETCH_INTERVAL`] (then it counts as asked).
    pub(crate) fn wants_refresh(&self, set: &KeySet) -> bool {
        if !set.older_than(self.max_age) {
            return false;
        }
        let mut asked = self.refresh_asked.lock().unwrap_or_else(|p| p.into_inner());
        if asked.is_some_and(|at| at.elapsed() < MISS_REFETCH_INTERVAL) {
            return false;
        }
        *asked = Some(Instant::now());
        true
    }
}

/// Fetches the JWKS of every entry that has one: at start, when a
/// verification meets an unknown `kid`, and when a set grows stale. One
/// fetch per entry at a time; callers of an entry share its fetch.
pub struct JwksFetcher {
    client: reqwest::Client,
    slots: Vec<Slot>,
}

struct Slot {
    cache: Arc<JwksCache>,
    counters: ExternalCounters,
    /// Callers waiting for the fetch under way (`None`: none under way).
    waiting: Option<Vec<oneshot::Sender<()>>>,
    /// When an unknown `kid` last started a fetch.
    last_miss_fetch: Option<Instant>,
    /// When any fetch last started.
    last_attempt: Option<Instant>,
}

impl JwksFetcher {
    /// The fetcher of these caches (each with its entry's counters), with
    /// its own HTTP client.
    pub fn new(caches: Vec<(Arc<JwksCache>, ExternalCounters)>) -> Result<JwksFetcher, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .tcp_nodelay(true)
            // The configured URL is the one trusted: a redirect could lead
            // anywhere (from https to http, too).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("palaver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        let slots = caches
            .into_iter()
            .map(|(cache, counters)| Slot {
                cache,
                counters,
                waiting: None,
                last_miss_fetch: None,
                last_attempt: None,
            })
            .collect();
        Ok(JwksFetcher { client, slots })
    }

    fn slot_of(&self, entry: usize) -> Option<usize> {
        self.slots.iter().position(|s| s.cache.entry == entry)
    }

    /// Starts a fetch for `slot` (none may be under way).
    fn start_fetch(&mut self, slot: usize, ctx: &mut Context<Self>) {
        let s = &mut self.slots[slot];
        s.waiting = Some(Vec::new());
        s.last_attempt = Some(Instant::now());
        let cache = s.cache.clone();
        let fetch = fetch(
            self.client.clone(),
            cache.url.clone(),
            cache.algorithms.clone(),
        );
        ctx.spawn(fetch.into_actor(self).map(move |result, act, _| {
            let s = &mut act.slots[slot];
            match result {
                Ok(set) => {
                    tracing::info!(source = %s.cache.name, keys = set.len(), "JWKS fetched");
                    s.counters.jwks_fetched(true, Some(set.len()));
                    s.cache.fetch_ended(Some(set));
                }
                Err(why) => {
                    // The keys fetched before stay in use.
                    tracing::warn!(source = %s.cache.name, error = %why, "JWKS fetch failed; keeping the keys fetched before");
                    s.counters.jwks_fetched(false, None);
                    s.cache.fetch_ended(None);
                }
            }
            for waiter in s.waiting.take().unwrap_or_default() {
                let _ = waiter.send(());
            }
        }));
    }
}

impl Actor for JwksFetcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The first load, so the first tokens need not wait for it.
        for slot in 0..self.slots.len() {
            self.start_fetch(slot, ctx);
        }
    }
}

/// From a verification (in the caller, `Auth`) whose token names a `kid`
/// its entry's set lacks: answers once a fetch of that set ended (the one
/// under way, if any), or at once if a fetch ended since the caller looked
/// or an unknown `kid` started one within [`MISS_REFETCH_INTERVAL`]. The
/// caller then looks again.
pub struct KeyMissing {
    pub entry: usize,
    /// [`JwksCache::fetches_ended`] before the caller looked.
    pub seen: u64,
}

impl Message for KeyMissing {
    type Result = ();
}

impl Handler<KeyMissing> for JwksFetcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: KeyMissing, ctx: &mut Context<Self>) -> Self::Result {
        let Some(slot) = self.slot_of(msg.entry) else {
            return Box::pin(async {});
        };
        let s = &mut self.slots[slot];
        let (tx, rx) = oneshot::channel();
        match &mut s.waiting {
            // A fetch is under way: its result is the newest there will be.
            Some(waiting) => waiting.push(tx),
            // A fetch ended after the caller looked: let it look again.
            None if s.cache.fetches_ended() != msg.seen => return Box::pin(async {}),
            None if s
                .last_miss_fetch
                .is_some_and(|at| at.elapsed() < MISS_REFETCH_INTERVAL) =>
            {
                return Box::pin(async {});
            }
            None => {
                s.last_miss_fetch = Some(Instant::now());
                self.start_fetch(slot, ctx);
                if let Some(waiting) = &mut self.slots[slot].waiting {
                    waiting.push(tx);
                }
            }
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// From a verification that used a set older than `jwks_cache`: refreshes
/// it in the background (unless a fetch is under way or one started in the
/// last [`MISS_REFETCH_INTERVAL`]). No answer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RefreshStale {
    pub entry: usize,
}

impl Handler<RefreshStale> for JwksFetcher {
    type Result = ();

    fn handle(&mut self, msg: RefreshStale, ctx: &mut Context<Self>) {
        let Some(slot) = self.slot_of(msg.entry) else {
            return;
        };
        let s = &self.slots[slot];
        let recent = s
            .last_attempt
            .is_some_and(|at| at.elapsed() < MISS_REFETCH_INTERVAL);
        if s.waiting.is_none() && !recent {
            self.start_fetch(slot, ctx);
        }
    }
}

/// One fetch of a JWKS, bounded in time ([`FETCH_TIMEOUT`]) and size.
async fn fetch(
    client: reqwest::Client,
    url: reqwest::Url,
    algorithms: Vec<Algorithm>,
) -> Result<KeySet, String> {
    let describe = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("no answer within {FETCH_TIMEOUT:?}")
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            // Without the URL: the entry names it in the configuration.
            e.without_url().to_string()
        }
    };
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(describe)?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("the answer is larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    KeySet::parse(&body, &algorithms)
}
