//! Uploaded audio tracks: their records, their files, their cached analysis.
//!
//! A track's bytes live in `<data>/tracks/<track id>`; an upload is written
//! to `<data>/tracks/incoming/` first ([`Tracks::stage`]) and renamed into
//! place only when it is accepted, then recorded ([`Tracks::create`]). The
//! order of every change keeps the start-up check ([`Store::open`]) able to
//! tidy what a crash leaves: an unfinished upload is a file in `incoming/`
//! (removed), a track whose record never landed or was removed before its
//! file is a file with no record (removed), an analysis written for a track
//! deleted meanwhile is an analysis with no record (removed).
//!
//! The analysis (API.md §6) is stored as the JSON documents the API serves
//! (`analysis` and `overview`), in a tree of its own so that listing tracks
//! never reads them: this crate does not know what an analysis contains.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, Record};
use crate::error::{Result, StorageError};
use crate::ids::UserId;
use crate::keys;
use crate::permissions;
use crate::store::Store;

/// Where a track's analysis stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnalysisStatus {
    /// Accepted; the analysis has not finished (or was cut by a restart and
    /// runs again).
    Pending,
    /// The analysis is in `track_analyses`.
    Ready,
    /// The file could not be analysed; why, in words.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub id: Uuid,
    pub user_id: UserId,
    /// The name the client gave, cleaned (see [`clean_filename`]).
    pub filename: String,
    pub size_bytes: u64,
    /// `wav`, `flac`, `mp3`, `ogg` or `m4a`: what the bytes decoded as.
    pub format: String,
    pub duration_seconds: f64,
    pub sample_rate: u32,
    pub channels: u16,
    /// Unix milliseconds.
    pub created_at: u64,
    pub analysis: AnalysisStatus,
}

impl Record for Track {
    const TREE: &'static str = "tracks";
    const VERSION: u8 = 1;
}

/// What an accepted upload is, as its probe found it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTrack {
    pub user_id: UserId,
    pub filename: String,
    pub size_bytes: u64,
    pub format: String,
    pub duration_seconds: f64,
    pub sample_rate: u32,
    pub channels: u16,
}

/// A track's analysis: the two JSON documents API.md §6 serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackAnalysis {
    /// The `analysis` object.
    pub analysis: String,
    /// The `overview` document.
    pub overview: String,
}

impl Record for TrackAnalysis {
    const TREE: &'static str = "track_analyses";
    const VERSION: u8 = 1;
}

/// An upload being written: a file in `<data>/tracks/incoming/`, removed
/// when this is dropped unless [`Tracks::create`] moved it into place.
pub struct Staged {
    path: PathBuf,
    kept: bool,
}

impl Staged {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The directory names under the data directory.
const TRACKS_DIR: &str = "tracks";
const INCOMING_DIR: &str = "incoming";

pub struct Tracks<'a> {
    store: &'a Store,
}

impl<'a> Tracks<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Tracks { store }
    }

    /// `<data>/tracks`, or an error for a store with no data directory
    /// (a temporary one keeps its files in a directory of its own).
    fn dir(&self) -> Result<PathBuf> {
        Ok(self.store.files_dir()?.join(TRACKS_DIR))
    }

    /// Where an accepted track's bytes are.
    pub fn file(&self, id: Uuid) -> Result<PathBuf> {
        Ok(self.dir()?.join(id.hyphenated().to_string()))
    }

    /// A new, empty, owner-only file for an upload to be written to, and the
    /// handle that removes it unless it is accepted.
    pub fn stage(&self) -> Result<(Staged, File)> {
        let incoming = self.dir()?.join(INCOMING_DIR);
        permissions::private_dir(&incoming)?;
        let path = incoming.join(format!("{}.part", Uuid::new_v4().simple()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(permissions::FILE_MODE)
            .open(&path)?;
        Ok((Staged { path, kept: false }, file))
    }

    /// Accepts an upload: moves the staged file into place and records the
    /// track (analysis pending). Refused when the user already has `limit`
    /// tracks; uploads of one user are admitted one at a time, so the bound
    /// is exact. Durable when it returns.
    pub async fn create(&self, mut staged: Staged, new: NewTrack, limit: usize) -> Result<Track> {
        let track = {
            let _one_at_a_time = self
                .store
                .tracks_lock()
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let t = self.store.trees();
            let held = t
                .tracks_by_user
                .scan_prefix(keys::user(new.user_id))
                .count();
            if held >= limit {
                return Err(StorageError::TrackLimit { limit });
            }
            let track = Track {
                id: Uuid::now_v7(),
                user_id: new.user_id,
                filename: new.filename,
                size_bytes: new.size_bytes,
                format: new.format,
                duration_seconds: new.duration_seconds,
                sample_rate: new.sample_rate,
                channels: new.channels,
                created_at: crate::now_millis(),
                analysis: AnalysisStatus::Pending,
            };
            // File first: a record never names a missing file, and a crash
            // between the two leaves a file with no record, removed at start.
            fs::rename(&staged.path, self.file(track.id)?)?;
            staged.kept = true;
            t.tracks
                .insert(keys::track(track.id), codec::encode(&track)?)?;
            t.tracks_by_user.insert(
                keys::user_track(track.user_id, track.created_at, track.id),
                &[],
            )?;
            track
        };
        self.store.durable().await?;
        Ok(track)
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Track>> {
        codec::get(&self.store.trees().tracks, &keys::track(id))
    }

    /// The track if it exists and belongs to `user` (another user's track
    /// is indistinguishable from a missing one).
    pub fn get_owned(&self, user: UserId, id: Uuid) -> Result<Option<Track>> {
        Ok(self.get(id)?.filter(|t| t.user_id == user))
    }

    /// A user's tracks, newest first (their number is bounded per user).
    pub fn list(&self, user: UserId) -> Result<Vec<Track>> {
        let t = self.store.trees();
        let mut tracks = Vec::new();
        for key in t.tracks_by_user.scan_prefix(keys::user(user)).keys().rev() {
            let key = key?;
            let id = keys::user_track_id(&key)
                .ok_or_else(|| StorageError::corrupt("tracks_by_user", "bad key"))?;
            if let Some(track) = self.get(id)? {
                tracks.push(track);
            }
        }
        Ok(tracks)
    }

    /// Every track whose analysis is pending (at start: those a restart
    /// cut short run again).
    pub fn pending(&self) -> Result<Vec<Track>> {
        let mut pending = Vec::new();
        for value in self.store.trees().tracks.iter().values() {
            let track: Track = codec::decode(&value?)?;
            if track.analysis == AnalysisStatus::Pending {
                pending.push(track);
            }
        }
        Ok(pending)
    }

    /// Stores the outcome of a track's analysis: `Ok` the documents, `Err`
    /// why it failed. `false` (and nothing kept) when the track was deleted
    /// meanwhile. Durable when it returns.
    pub async fn finish_analysis(
        &self,
        id: Uuid,
        outcome: std::result::Result<TrackAnalysis, String>,
    ) -> Result<bool> {
        let t = self.store.trees();
        let status = match &outcome {
            Ok(documents) => {
                // Written before the status says so, removed again if the
                // track is gone: a reader never sees `Ready` without it.
                t.track_analyses
                    .insert(keys::track(id), codec::encode(documents)?)?;
                AnalysisStatus::Ready
            }
            Err(reason) => AnalysisStatus::Failed(reason.clone()),
        };
        let updated = codec::update::<Track>(&t.tracks, &keys::track(id), |track| {
            track.analysis = status.clone();
            true
        })?;
        if updated.is_none() {
            t.track_analyses.remove(keys::track(id))?;
        }
        self.store.durable().await?;
        Ok(updated.is_some())
    }

    /// The analysis documents of a track whose status is `Ready`.
    pub fn analysis(&self, id: Uuid) -> Result<Option<TrackAnalysis>> {
        codec::get(&self.store.trees().track_analyses, &keys::track(id))
    }

    /// Deletes a track: its record, its analysis, then its file. `false` if
    /// there was no such track. Durable when it returns.
    pub async fn delete(&self, id: Uuid) -> Result<bool> {
        let Some(track) = self.get(id)? else {
            return Ok(false);
        };
        self.remove(&track)?;
        self.store.durable().await?;
        // After the records are durable: a crash before this leaves a file
        // with no record, which the next start removes.
        self.remove_file(id);
        Ok(true)
    }

    /// Removes a track's records (not waited on); its file stays until
    /// [`Tracks::remove_file`].
    fn remove(&self, track: &Track) -> Result<()> {
        let t = self.store.trees();
        t.tracks_by_user
            .remove(keys::user_track(track.user_id, track.created_at, track.id))?;
        t.tracks.remove(keys::track(track.id))?;
        t.track_analyses.remove(keys::track(track.id))?;
        Ok(())
    }

    fn remove_file(&self, id: Uuid) {
        let Ok(path) = self.file(id) else { return };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a deleted track's file")
            }
        }
    }

    /// Removes every track record of a user (when the user goes); not
    /// waited on. Answers the tracks whose files the caller removes with
    /// [`Tracks::remove_files`] once the removal is durable (a crash before
    /// that leaves files with no record, collected at the next start).
    pub(crate) fn remove_all_for(&self, user: UserId) -> Result<Vec<Uuid>> {
        let t = self.store.trees();
        let mut removed = Vec::new();
        for key in t.tracks_by_user.scan_prefix(keys::user(user)).keys() {
            let key = key?;
            t.tracks_by_user.remove(&key)?;
            if let Some(id) = keys::user_track_id(&key) {
                t.tracks.remove(keys::track(id))?;
                t.track_analyses.remove(keys::track(id))?;
                removed.push(id);
            }
        }
        Ok(removed)
    }

    /// Removes the files of tracks whose records are gone (durably).
    pub(crate) fn remove_files(&self, ids: &[Uuid]) {
        for &id in ids {
            self.remove_file(id);
        }
    }

    /// The start-up check's record half: tracks of users that do not exist
    /// and analyses of tracks that do not exist. Answers how many records it
    /// removed. Not waited on.
    pub(crate) fn collect_records(&self) -> Result<usize> {
        let t = self.store.trees();
        let mut removed = 0;
        // Tracks of users that are gone (a race with the user's deletion).
        let mut orphaned = Vec::new();
        for value in t.tracks.iter().values() {
            let track: Track = codec::decode(&value?)?;
            if !t.users.contains_key(keys::user(track.user_id))? {
                orphaned.push(track);
            }
        }
        for track in &orphaned {
            self.remove(track)?;
            removed += 1;
        }
        for key in t.track_analyses.iter().keys() {
            let key = key?;
            if !t.tracks.contains_key(&key)? {
                t.track_analyses.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The start-up check's file half, run once the records are durable:
    /// unfinished uploads and files no track owns. Answers how many files
    /// it removed.
    pub(crate) fn collect_files(&self) -> Result<usize> {
        let t = self.store.trees();
        let Ok(dir) = self.dir() else {
            return Ok(0);
        };
        let mut removed = remove_all_in(&dir.join(INCOMING_DIR));
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(e.into()),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let known = match name.to_str().and_then(|n| Uuid::try_parse(n).ok()) {
                Some(id) => t.tracks.contains_key(keys::track(id))?,
                None => name == INCOMING_DIR,
            };
            if !known && entry.file_type().is_ok_and(|k| k.is_file()) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(
                        path = %entry.path().display(),
                        error = %e,
                        "cannot remove a file no track owns"
                    ),
                }
            }
        }
        Ok(removed)
    }
}

/// Removes every file in `dir` (unfinished uploads); how many.
fn remove_all_in(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|k| k.is_file()))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// The longest file name kept, in characters.
pub const MAX_FILENAME_CHARS: usize = 200;

/// A client's file name made safe to show and store: its last path
/// component, control characters dropped, at most [`MAX_FILENAME_CHARS`];
/// `"upload"` when nothing is left. It never names a file on disk.
pub fn clean_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_CHARS)
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
        "upload".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deletions::tests::{open, user};
    use std::io::Write;

    fn new_track(user: UserId, name: &str) -> NewTrack {
        NewTrack {
            user_id: user,
            filename: name.into(),
            size_bytes: 5,
            format: "wav".into(),
            duration_seconds: 1.5,
            sample_rate: 44_100,
            channels: 2,
        }
    }

    async fn upload(store: &Store, user: UserId, name: &str) -> Track {
        let (staged, mut file) = store.tracks().stage().unwrap();
        file.write_all(b"bytes").unwrap();
        store
            .tracks()
            .create(staged, new_track(user, name), 10)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_accepted_upload_is_moved_into_place_and_listed_by_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (ann, bob) = (
            user(&store, "ann@example.com").await,
            user(&store, "bob@example.com").await,
        );
        let first = upload(&store, ann, "a.wav").await;
        let second = upload(&store, ann, "b.wav").await;
        upload(&store, bob, "c.wav").await;
        let file = store.tracks().file(first.id).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"bytes");
        assert!(fs::read_dir(dir.path().join("tracks/incoming"))
            .unwrap()
            .next()
            .is_none());
        let listed: Vec<_> = store
            .tracks()
            .list(ann)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, vec![second.id, first.id]);
        assert_eq!(store.tracks().get_owned(bob, first.id).unwrap(), None);
        assert_eq!(
            store.tracks().get_owned(ann, first.id).unwrap(),
            Some(first.clone())
        );
        assert!(store.tracks().delete(first.id).await.unwrap());
        assert!(!file.exists());
        assert!(!store.tracks().delete(first.id).await.unwrap());
        assert_eq!(store.tracks().list(ann).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_or_dropped_upload_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ann = user(&store, "ann@example.com").await;
        let (staged, _) = store.tracks().stage().unwrap();
        let path = staged.path().to_path_buf();
        assert!(path.exists());
        drop(staged);
        assert!(!path.exists());
        for i in 0..2 {
            let (staged, _) = store.tracks().stage().unwrap();
            store
                .tracks()
                .create(staged, new_track(ann, &format!("{i}")), 2)
                .await
                .unwrap();
        }
        let (staged, _) = store.tracks().stage().unwrap();
        let path = staged.path().to_path_buf();
        let refused = store
            .tracks()
            .create(staged, new_track(ann, "third"), 2)
            .await;
        assert!(matches!(
            refused,
            Err(StorageError::TrackLimit { limit: 2 })
        ));
        assert!(!path.exists());
        assert_eq!(store.tracks().list(ann).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn concurrent_uploads_never_pass_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ann = user(&store, "ann@example.com").await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let (staged, _) = store.tracks().stage().unwrap();
                store
                    .tracks()
                    .create(staged, new_track(ann, &format!("{i}")), 5)
                    .await
                    .is_ok()
            }));
        }
        let mut accepted = 0;
        for task in tasks {
            accepted += usize::from(task.await.unwrap());
        }
        assert_eq!(accepted, 5);
        assert_eq!(store.tracks().list(ann).unwrap().len(), 5);
    }

    #[tokio::test]
    async fn an_analysis_is_kept_only_for_a_track_that_still_exists() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ann = user(&store, "ann@example.com").await;
        let kept = upload(&store, ann, "kept.wav").await;
        let gone = upload(&store, ann, "gone.wav").await;
        assert_eq!(store.tracks().pending().unwrap().len(), 2);
        let documents = TrackAnalysis {
            analysis: "{\"a\":1}".into(),
            overview: "{}".into(),
        };
        assert!(store
            .tracks()
            .finish_analysis(kept.id, Ok(documents.clone()))
            .await
            .unwrap());
        assert_eq!(
            store.tracks().get(kept.id).unwrap().unwrap().analysis,
            AnalysisStatus::Ready
        );
        assert_eq!(store.tracks().analysis(kept.id).unwrap(), Some(documents));
        store.tracks().delete(gone.id).await.unwrap();
        assert!(!store
            .tracks()
            .finish_analysis(
                gone.id,
                Ok(TrackAnalysis {
                    analysis: "{}".into(),
                    overview: "{}".into()
                })
            )
            .await
            .unwrap());
        assert_eq!(store.tracks().analysis(gone.id).unwrap(), None);
        assert!(store.tracks().pending().unwrap().is_empty());
        let failed = upload(&store, ann, "bad.wav").await;
        store
            .tracks()
            .finish_analysis(failed.id, Err("no audio".into()))
            .await
            .unwrap();
        assert_eq!(
            store.tracks().get(failed.id).unwrap().unwrap().analysis,
            AnalysisStatus::Failed("no audio".into())
        );
    }

    #[tokio::test]
    async fn a_purged_user_takes_its_tracks_and_files_along() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (ann, bob) = (
            user(&store, "ann@example.com").await,
            user(&store, "bob@example.com").await,
        );
        let a = upload(&store, ann, "a.wav").await;
        let b = upload(&store, bob, "b.wav").await;
        assert!(store.purge_user(ann).await.unwrap());
        assert_eq!(store.tracks().get(a.id).unwrap(), None);
        assert!(!store.tracks().file(a.id).unwrap().exists());
        assert!(store.tracks().file(b.id).unwrap().exists());
        assert_eq!(store.tracks().list(bob).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn what_a_crash_leaves_behind_is_tidied_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, stray_upload, stray_file, ghost_track) = {
            let store = open(dir.path());
            let ann = user(&store, "ann@example.com").await;
            let kept = upload(&store, ann, "kept.wav").await;
            // An upload cut mid-write (its Staged never dropped).
            let (staged, mut file) = store.tracks().stage().unwrap();
            file.write_all(b"half").unwrap();
            let stray_upload = staged.path().to_path_buf();
            std::mem::forget(staged);
            // A file renamed into place whose record never landed.
            let stray_file = store.tracks().file(Uuid::now_v7()).unwrap();
            fs::write(&stray_file, b"x").unwrap();
            // A track of a user deleted meanwhile, and an analysis of no track.
            let ghost = UserId::new();
            let ghost_track = upload(&store, ghost, "ghost.wav").await;
            store
                .trees()
                .track_analyses
                .insert(
                    keys::track(Uuid::now_v7()),
                    codec::encode(&TrackAnalysis {
                        analysis: "{}".into(),
                        overview: "{}".into(),
                    })
                    .unwrap(),
                )
                .unwrap();
            store.flush().unwrap();
            (kept, stray_upload, stray_file, ghost_track)
        };
        let store = open(dir.path());
        assert!(!stray_upload.exists());
        assert!(!stray_file.exists());
        assert_eq!(store.tracks().get(ghost_track.id).unwrap(), None);
        assert!(!store.tracks().file(ghost_track.id).unwrap().exists());
        assert!(store.trees().track_analyses.is_empty());
        assert_eq!(store.tracks().get(kept.id).unwrap(), Some(kept.clone()));
        assert!(store.tracks().file(kept.id).unwrap().exists());
    }

    #[test]
    fn file_names_are_cleaned() {
        assert_eq!(clean_filename("song.wav"), "song.wav");
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\music\\a b.flac"), "a b.flac");
        assert_eq!(clean_filename("a\u{0}\nb.mp3"), "ab.mp3");
        assert_eq!(clean_filename(""), "upload");
        assert_eq!(clean_filename(".."), "upload");
        assert_eq!(
            clean_filename(&"x".repeat(500)).chars().count(),
            MAX_FILENAME_CHARS
        );
    }
}
