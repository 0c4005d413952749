//! [`Store`]: one sled database, every tree opened here, and the durability
//! handle every repository writes through.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api_keys::ApiKeys;
use crate::committer::{Committer, FlushObserver};
use crate::deletions::Deletion;
use crate::error::{Result, StorageError};
use crate::families::Families;
use crate::messages::Messages;
use crate::quotas::Quotas;
use crate::sessions::Sessions;
use crate::tracks::Tracks;
use crate::users::Users;
use crate::{keys, meta, permissions};

/// What [`Store::open`] needs (the `[storage]` section of the config).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The data directory; sled's files live in `<path>/db`.
    pub path: PathBuf,
    /// Bound on sled's page cache (`storage.cache_bytes`).
    pub cache_bytes: u64,
    /// `fdatasync` the database file once per committed batch.
    pub fsync: bool,
}

/// The handle to the database. Cheap to clone; the database closes when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// The trees, each named for what maps to what.
pub(crate) struct Trees {
    /// `schema_version`, probes: see `meta`.
    pub meta: sled::Tree,
    /// user id → `User`.
    pub users: sled::Tree,
    /// lowercased email → user id.
    pub users_by_email: sled::Tree,
    /// external issuer name ‖ 0 ‖ external id → user id: users provisioned
    /// from another issuer's tokens.
    pub users_by_external: sled::Tree,
    /// demo expiry ‖ user id → (): what the demo sweep scans.
    pub demo_expiry: sled::Tree,
    /// family id → `Family`: refresh-token rotation and revocation.
    pub families: sled::Tree,
    /// key id → `ApiKey`.
    pub api_keys: sled::Tree,
    /// SHA-256 of a key → key id: authentication by key.
    pub api_keys_by_hash: sled::Tree,
    /// user id ‖ key id → (): a user's keys.
    pub api_keys_by_user: sled::Tree,
    /// user id → `QuotaCounter`.
    pub quotas: sled::Tree,
    /// session id → `Session`.
    pub sessions: sled::Tree,
    /// user id ‖ created_at ‖ session id → (): a user's sessions by age.
    pub sessions_by_user: sled::Tree,
    /// session id ‖ seq → `Message`.
    pub messages: sled::Tree,
    /// session id ‖ seq → (): replies still streaming (failed at start).
    pub messages_streaming: sled::Tree,
    /// kind ‖ id → (): deletions under way (finished at open, see `deletions`).
    pub deletions: sled::Tree,
    /// track id → `Track`.
    pub tracks: sled::Tree,
    /// user id ‖ created_at ‖ track id → (): a user's tracks by age.
    pub tracks_by_user: sled::Tree,
    /// track id → `TrackAnalysis`: the cached analysis documents.
    pub track_analyses: sled::Tree,
}

struct Inner {
    // Field order matters for Drop: the committer (which holds a clone of the
    // db) is joined first, so when `Inner` is gone the file lock is released.
    committer: Committer,
    trees: Trees,
    db: sled::Db,
    path: Option<PathBuf>,
    /// Held while a track upload is admitted (see `tracks`).
    tracks_lock: Mutex<()>,
    /// The sessions whose streaming marker this run wrote (see `messages`).
    streaming_marks: crate::messages::StreamingMarks,
}

impl Store {
    /// Opens (creating if needed) the database in `config.path`, runs pending
    /// migrations and starts the group committer. The data directory is made
    /// its owner's alone: directories 0700, files 0600 (existing ones too).
    pub fn open(config: &StoreConfig) -> Result<Store> {
        Self::open_with(config, None)
    }

    /// Like [`Store::open`], with a callback told the duration of every flush.
    pub fn open_with(config: &StoreConfig, observer: Option<FlushObserver>) -> Result<Store> {
        // Owner-only before sled writes a byte (see `permissions`).
        permissions::private_dir(&config.path)?;
        let db_path = config.path.join("db");
        permissions::private_dir(&db_path)?;
        let sled_config = sled::Config::new()
            .path(&db_path)
            .cache_capacity(config.cache_bytes)
            // Durability is the group committer's job: a background flush
            // every 500 ms only competes with it (and stalls replies).
            .flush_every_ms(None);
        let db = open_waiting_for_lock(&sled_config, &config.path)?;
        // sled made its files with the umask's mode; a restored copy may
        // have looser ones (the signing secret's file included).
        permissions::tighten_tree(&config.path);
        let fsync_file = if config.fsync {
            Some(File::open(db_path.join("db"))?)
        } else {
            None
        };
        Self::assemble(db, fsync_file, observer, Some(config.path.clone()))
    }

    /// An in-memory database removed on drop, for tests.
    pub fn temporary() -> Result<Store> {
        let db = sled::Config::new().temporary(true).open()?;
        Self::assemble(db, None, None, None)
    }

    fn assemble(
        db: sled::Db,
        fsync_file: Option<File>,
        observer: Option<FlushObserver>,
        path: Option<PathBuf>,
    ) -> Result<Store> {
        let trees = Trees {
            meta: db.open_tree("meta")?,
            users: db.open_tree("users")?,
            users_by_email: db.open_tree("users_by_email")?,
            users_by_external: db.open_tree("users_by_external")?,
            demo_expiry: db.open_tree("demo_expiry")?,
            families: db.open_tree("families")?,
            api_keys: db.open_tree("api_keys")?,
            api_keys_by_hash: db.open_tree("api_keys_by_hash")?,
            api_keys_by_user: db.open_tree("api_keys_by_user")?,
            quotas: db.open_tree("quotas")?,
            sessions: db.open_tree("sessions")?,
            sessions_by_user: db.open_tree("sessions_by_user")?,
            messages: db.open_tree("messages")?,
            messages_streaming: db.open_tree("messages_streaming")?,
            deletions: db.open_tree("deletions")?,
            tracks: db.open_tree("tracks")?,
            tracks_by_user: db.open_tree("tracks_by_user")?,
            track_analyses: db.open_tree("track_analyses")?,
        };
        meta::migrate(&db, &trees)?;
        let committer = Committer::start(db.clone(), fsync_file, observer)?;
        let store = Store {
            inner: Arc::new(Inner {
                committer,
                trees,
                db,
                path,
                tracks_lock: Mutex::new(()),
                streaming_marks: Default::default(),
            }),
        };
        store.recover()?;
        Ok(store)
    }

    /// The data directory, if the store is on disk.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    pub fn users(&self) -> Users<'_> {
        Users::new(self)
    }

    pub fn families(&self) -> Families<'_> {
        Families::new(self)
    }

    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys::new(self)
    }

    pub fn sessions(&self) -> Sessions<'_> {
        Sessions::new(self)
    }

    pub fn messages(&self) -> Messages<'_> {
        Messages::new(self)
    }

    pub fn quotas(&self) -> Quotas<'_> {
        Quotas::new(self)
    }

    pub fn tracks(&self) -> Tracks<'_> {
        Tracks::new(self)
    }

    /// The directory files are kept in (uploaded tracks): the data
    /// directory. A temporary store has none, so it keeps no tracks.
    pub(crate) fn files_dir(&self) -> Result<&Path> {
        self.inner.path.as_deref().ok_or_else(|| {
            StorageError::Io(std::io::Error::other(
                "a temporary store has no directory for track files",
            ))
        })
    }

    /// Track uploads are admitted one at a time (the per-user bound).
    pub(crate) fn streaming_marks(&self) -> &crate::messages::StreamingMarks {
        &self.inner.streaming_marks
    }

    pub(crate) fn tracks_lock(&self) -> &Mutex<()> {
        &self.inner.tracks_lock
    }

    /// Deletes a user and everything it owns (sessions with their messages,
    /// tracks with their files, API keys, quota counter; its
    /// token families die with it, as no token of a missing user verifies).
    /// Durable when it returns; `false` if there was no such user.
    pub async fn purge_user(&self, id: crate::UserId) -> Result<bool> {
        // Marked first: a crash in the middle is finished at the next open.
        let mark = Deletion::User(id);
        self.begin_deletion(mark)?;
        let (existed, tracks) = self.remove_user_records(id)?;
        self.end_deletion(mark)?;
        // One flush for everything.
        self.durable().await?;
        // The track files once no record names them.
        self.tracks().remove_files(&tracks);
        Ok(existed)
    }

    /// Removes a user and every record it owns; not waited on. Answers
    /// `false` if there was no such user, and the tracks whose files go
    /// once the removal is durable.
    pub(crate) fn remove_user_records(&self, id: crate::UserId) -> Result<(bool, Vec<uuid::Uuid>)> {
        self.quotas().remove(id)?;
        self.sessions().remove_all_for(id)?;
        self.api_keys().remove_all_for(id)?;
        let tracks = self.tracks().remove_all_for(id)?;
        Ok((self.users().remove(id)?, tracks))
    }

    /// Disables a user for good: every token family it has is revoked and
    /// every API key deleted, so enabling it again brings back none of the
    /// credentials it had (a stolen one included): it logs in afresh.
    /// Answers how many families were revoked and keys deleted. Durable
    /// when it returns.
    pub async fn disable_user(&self, id: crate::UserId) -> Result<(usize, usize)> {
        let families = self.families().revoke_all_for(id)?.len();
        let keys = self.api_keys().remove_all_for(id)?;
        self.users().set_active(id, false).await?;
        Ok((families, keys))
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    pub(crate) fn trees(&self) -> &Trees {
        &self.inner.trees
    }

    /// Resolves once every write made before this call survives `kill -9`
    /// (and power loss with `storage.fsync`).
    pub async fn durable(&self) -> Result<()> {
        self.inner.committer.wait().await
    }

    /// A durability mark: take it right after a write, then
    /// [`Store::durable_since`] resolves once that write is durable, at once
    /// if another writer's flush already covered it. This lets a write ride
    /// on the flush of a later one (a quota count on its request's own write).
    pub fn durability_mark(&self) -> u64 {
        self.inner.committer.mark()
    }

    pub async fn durable_since(&self, mark: u64) -> Result<()> {
        self.inner.committer.wait_since(mark).await
    }

    /// Proves the database accepts writes: writes a probe and waits for it to
    /// be durable (what `/ready` asks).
    pub async fn check_writable(&self) -> Result<()> {
        self.inner
            .trees
            .meta
            .insert(keys::META_READY_PROBE, &crate::now_millis().to_be_bytes())?;
        self.durable().await
    }

    /// Synchronous flush, for shutdown paths outside an async context.
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<u32> {
        meta::schema_version(&self.inner.trees)
    }
}

/// How long an open waits for the database's lock to be released.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens the database, waiting up to [`LOCK_WAIT`] while its file lock is
/// held: a `Store` dropped in this process releases it only once sled's IO
/// threads have let go of their last handle on the file, which can be just
/// after the drop returns (a reopen right after raced it). Another process
/// holding the lock is still `Locked`, two seconds later.
fn open_waiting_for_lock(config: &sled::Config, dir: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open().map_err(|e| classify_open_error(e, dir)) {
            Err(StorageError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn classify_open_error(e: sled::Error, dir: &Path) -> StorageError {
    // sled 0.34 reports a held lock as an I/O error with this text.
    match &e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StorageError::Locked {
                path: dir.to_path_buf(),
            }
        }
        _ => StorageError::Sled(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            path: dir.to_path_buf(),
            cache_bytes: 8 << 20,
            fsync: true,
        }
    }

    #[tokio::test]
    async fn a_second_open_reports_the_lock_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(&config(dir.path())).unwrap();
        let err = Store::open(&config(dir.path()))
            .err()
            .expect("second open must fail");
        assert!(matches!(err, StorageError::Locked { .. }), "{err:?}");
        assert!(err
            .to_string()
            .contains("in use by another palaver process"));
    }

    #[tokio::test]
    async fn dropping_the_store_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        store.check_writable().await.unwrap();
        drop(store);
        let again = Store::open(&config(dir.path())).unwrap();
        assert_eq!(
            again.schema_version().unwrap(),
            meta::CURRENT_SCHEMA_VERSION
        );
    }

    #[tokio::test]
    async fn flush_observer_sees_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let store = Store::open_with(
            &config(dir.path()),
            Some(Box::new(move |d| {
                let _ = tx.send(d);
            })),
        )
        .unwrap();
        store.check_writable().await.unwrap();
        assert!(rx.try_recv().is_ok(), "a flush was observed");
    }

    #[tokio::test]
    async fn a_later_flush_covers_an_earlier_mark() {
        let store = Store::temporary().unwrap();
        store.trees().meta.insert(b"a", b"1").unwrap();
        let mark = store.durability_mark();
        // Another writer's flush, started after the mark, covers the write:
        store.durable().await.unwrap();
        assert!(store.inner.committer.completed() > mark);
        store.durable_since(mark).await.unwrap();
        // Without one, waiting causes a flush.
        store.trees().meta.insert(b"b", b"2").unwrap();
        let mark = store.durability_mark();
        store.durable_since(mark).await.unwrap();
        assert!(store.inner.committer.completed() > mark);
    }

    #[tokio::test]
    async fn temporary_store_accepts_writes() {
        let store = Store::temporary().unwrap();
        store.check_writable().await.unwrap();
        assert!(store.path().is_none());
    }
}
