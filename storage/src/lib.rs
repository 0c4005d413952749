//! palaver-storage: typed repositories over one embedded sled database.
//!
//! # Layout
//! - [`store`]: [`Store`] opens the database and every tree in one place, and
//!   hands out the repositories.
//! - [`committer`]: the single group committer that makes acknowledged writes
//!   durable (one flush in flight, ever).
//! - [`keys`]: every key encoding (big-endian composites), nothing else builds keys.
//! - [`codec`]: every value encoding (a version byte, then postcard).
//! - [`ids`]: newtype ids.
//! - [`permissions`]: the data directory is its owner's alone (0700 / 0600).
//! - [`meta`]: the `meta` tree: schema version and migrations run at open.
//! - [`users`]: users, the case-insensitive email index, the external-identity
//!   index, the demo-expiry index.
//! - [`families`]: refresh-token families (rotation, reuse, revocation).
//! - [`api_keys`]: API keys, stored as hashes.
//! - [`sessions`]: sessions (conversations), listed per user newest first.
//! - [`messages`]: a session's messages, by sequence number.
//! - [`reply_events`]: a finished reply's events (tokens kept as lengths of
//!   its text), kept in its message, for resumes.
//! - [`quotas`]: per-user request counters (written through by the QuotaRegistry).
//! - [`tracks`]: uploaded tracks, their files under `<data>/tracks/` and
//!   their cached analysis.
//! - [`deletions`]: deletions that survive a crash, and the start-up check for
//!   records whose user is gone.
//!
//! This crate knows nothing of actix, HTTP or the wire protocol.

pub mod api_keys;
pub mod codec;
pub mod committer;
pub mod deletions;
mod error;
pub mod families;
pub mod ids;
pub mod keys;
pub mod messages;
pub mod meta;
pub mod permissions;
pub mod quotas;
pub mod reply_events;
pub mod sessions;
pub mod store;
mod time;
pub mod tracks;
pub mod users;

pub use api_keys::ApiKey;
pub use error::{Result, StorageError};
pub use families::{Family, Rotation};
pub use ids::UserId;
pub use messages::Exchange;
pub use quotas::QuotaCounter;
pub use reply_events::{LoggedEvent, Replay, ReplyUsage};
pub use sessions::{Activity, Message, MessageStatus, Page, Role, Session, ToolUse};
pub use store::{Store, StoreConfig};
pub use time::now_millis;
pub use tracks::{AnalysisStatus, NewTrack, Track, TrackAnalysis};
pub use users::{ExternalIdentity, NewUser, User};
