//! The storage crate's one error type.

use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open data directory {dir}: {cause}")]
    Open { dir: PathBuf, cause: String },
    #[error(
        "data directory {dir} has unknown schema version {found} (this build understands {})",
        crate::SCHEMA_VERSION
    )]
    UnknownSchema { dir: PathBuf, found: String },
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// The batch was applied but the flush failed: it may or may not be on disk.
    #[error("flush failed after the write was applied; durability unknown: {0}")]
    NotDurable(String),
    #[error(
        "write rejected: an earlier write of the same user failed and it has not been reloaded"
    )]
    Poisoned,
    #[error("store is closed")]
    Closed,
}
