//! The storage crate's one error type.

use std::path::PathBuf;

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Another process (usually the running server) holds sled's file lock.
    #[error(
        "the database at {} is in use by another palaver process (is the server running? stop it first)",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("that email address is already taken")]
    EmailTaken,
    /// A user already holds `storage.max_tracks_per_user` tracks.
    #[error("the user already has {limit} tracks")]
    TrackLimit { limit: usize },
    #[error("record not found")]
    NotFound,
    #[error("invalid cursor")]
    BadCursor,
    /// A stored value that cannot be decoded. Built only through
    /// [`StorageError::corrupt`], which also logs it.
    #[error("corrupt record in tree `{tree}`: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error(
        "the database has schema version {found}, newer than this palaver supports ({supported}); upgrade palaver"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("durable commit failed: {0}")]
    Commit(String),
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    /// The one constructor for corrupt data: logs what and where, so a bad
    /// record on disk is visible to the operator, then returns the error.
    pub fn corrupt(tree: &'static str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        tracing::error!(tree, %detail, "corrupt record in storage");
        StorageError::Corrupt { tree, detail }
    }
}

impl From<sled::transaction::TransactionError<StorageError>> for StorageError {
    fn from(e: sled::transaction::TransactionError<StorageError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StorageError::Sled(e),
        }
    }
}
