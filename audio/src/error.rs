//! The crate's one error type.

/// Why a file could not be probed or analysed.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The bytes are not audio in an accepted format (or yield no audio).
    #[error("not audio: {0}")]
    NotAudio(String),
    /// The file holds more audio than the caller's bound (frames ×
    /// channels, see [`crate::analyze_at_most`]).
    #[error(
        "more audio than this server analyses: over {max_samples} samples (frames × channels)"
    )]
    TooLong { max_samples: u64 },
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
}
