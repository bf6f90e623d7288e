//! The storage crate's one error type.

use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open data directory {dir}: {cause}")]
    Open { dir: PathBuf, cause: String },
    #[error(
        "data directory {dir} has unknown schema version {found} (this build understands {expected})"
    )]
    UnknownSchema {
        dir: PathBuf,
        found: String,
        expected: u32,
    },
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// The batch was applied but the flush failed: it may or may not be on disk.
    #[error("flush failed after the write was applied; durability unknown: {0}")]
    NotDurable(String),
    #[error(
        "write rejected: an earlier write of the same scope failed and the scope has not been settled"
    )]
    Poisoned,
    /// A background thread of the store failed for good; nothing more is written.
    #[error("the store has failed and takes no more writes: {0}")]
    Failed(String),
    /// A backup file that cannot be read back whole (damaged, truncated, another format).
    #[error("invalid backup: {0}")]
    Backup(String),
    #[error("store is closed")]
    Closed,
    /// A journal refused the write before anything was written, because this node does not (or
    /// no longer) write the scope: another node owns it. Retrying there is safe.
    #[error("not written here: {0}")]
    NotServed(String),
}

impl StoreError {
    /// `StoreError::Open` for `dir`, as a `map_err` takes it: `.map_err(StoreError::opening(dir))`.
    pub(crate) fn opening(dir: &std::path::Path) -> impl Fn(String) -> StoreError + Copy + '_ {
        move |cause| StoreError::Open {
            dir: dir.to_path_buf(),
            cause,
        }
    }
}
