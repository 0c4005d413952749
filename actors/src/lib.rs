//! palaver-actors: the actors that run palaver, and the domain logic they own.
//!
//! # Layout
//! - [`supervisor`]: started at boot; starts the other actors, spawns every
//!   session actor, closes sockets on revocation and drives graceful shutdown.
//! - [`analysis`]: the AnalysisPool (a StreamActor per reply, bounded by
//!   `analysis.max_streams`; CpuWorker threads for tool calls), its engines
//!   (`echo`, `builtin`, `openai`) and tools.
//! - [`protocol`]: the WebSocket wire types (API.md §7).
//! - [`auth`]: identity: JWTs, refresh rotation, tickets, API keys, login
//!   throttles, the demo sweep, and the AuthActor that writes that state.
//! - [`messages`]: every message type, with its sender, receiver and reply.
//! - [`registry`]: user → live WebSocket connections (owned by the Supervisor).
//! - [`question`]: one question's lifecycle (validate → reserve → admit →
//!   store → submit), the same for the WebSocket and HTTP transports.
//! - [`replies`]: the reply hub: replies streaming to WebSocket clients,
//!   their `seq`-numbered events, the sockets that follow each, resumes.
//! - [`session`]: the SessionActor, one per WebSocket connection.
//! - [`socket`]: the WebSocket wire under it: frames decoded from the
//!   request payload, the byte-bounded outbox that is the response body.
//! - [`quota`]: the QuotaRegistry, single owner of every request counter, and
//!   its QuotaKeeper actor (eviction of idle counters).
//! - [`telemetry`]: every metric, named and described in one place.
//! - [`password`]: argon2id hashing and verification (CPU-heavy: call it on a
//!   blocking thread).
//!
//! Actors never touch sled: they go through `palaver-storage` repositories.

pub mod analysis;
pub mod auth;
pub mod messages;
pub mod password;
pub mod protocol;
pub mod question;
pub mod quota;
pub mod registry;
pub mod replies;
pub mod session;
pub mod socket;
pub mod supervisor;
pub mod telemetry;

pub use supervisor::{Booted, SessionRetention, Supervisor};

/// A configured URL palaver fetches from (an upstream model, a JWKS): http
/// or https, with a host, without credentials in it (URLs are logged and
/// shown by `config show`); `credentials` says where they go instead.
pub(crate) fn parse_http_url(raw: &str, credentials: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} is not an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("must not carry credentials: {credentials}"));
    }
    Ok(url)
}
