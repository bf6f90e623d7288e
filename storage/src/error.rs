//! The storage crate's one error type.

use std::path::PathBuf;

use crate::Medium;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open data directory {dir}: {cause}")]
    Open { dir: PathBuf, cause: String },
    /// The directory was refused before anything in it was read: nothing there is damaged.
    #[error("cannot open data directory {dir}: {why}")]
    Refused { dir: PathBuf, why: Refusal },
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

/// Why a data directory was refused at open (`StoreError::Refused`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it is locked by another process (is another latchkey running on it?)")]
    Locked,
    #[error(
        "it holds a {found} store, not a {asked} one (open it with --store {found}, or move the \
         data with `latchkey backup` and `latchkey restore --store {asked}`)"
    )]
    OtherStore { found: Medium, asked: Medium },
    #[error(
        "it is not a Latchkey data directory (it holds {name:?} but no store); choose an empty \
         or new directory"
    )]
    Foreign { name: String },
}

impl StoreError {
    /// The directory was refused or is of another schema version: the store is not damaged,
    /// so restoring a backup is not the advice to give.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::Refused { .. } | StoreError::UnknownSchema { .. }
        )
    }

    /// Another process holds the directory.
    pub fn is_locked(&self) -> bool {
        matches!(
            self,
            StoreError::Refused {
                why: Refusal::Locked,
                ..
            }
        )
    }

    /// `StoreError::Refused` for `dir`, as a `map_err` takes it.
    pub(crate) fn refusing(dir: &std::path::Path) -> impl Fn(Refusal) -> StoreError + Copy + '_ {
        move |why| StoreError::Refused {
            dir: dir.to_path_buf(),
            why,
        }
    }

    /// `StoreError::Open` for `dir`, as a `map_err` takes it: `.map_err(StoreError::opening(dir))`.
    pub(crate) fn opening(dir: &std::path::Path) -> impl Fn(String) -> StoreError + Copy + '_ {
        move |cause| StoreError::Open {
            dir: dir.to_path_buf(),
            cause,
        }
    }
}
