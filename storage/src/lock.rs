//! The data directory's lock: a file Latchkey owns, locked exclusively for as long as a store is
//! open on the directory, so a second server (or a tool) on the same directory is refused before it
//! touches sled or the write-ahead log. The operating system drops the lock with the process, so a
//! crash never leaves a stale one behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::sync::{RwLock, RwLockReadGuard};
use crate::{Refusal, StoreError};

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "latchkey.lock";

/// Held while the store is open; dropping it releases the directory.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `dir` (which must exist).
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let open_err = StoreError::opening(dir);
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| open_err(format!("cannot open its lock file {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(StoreError::refusing(dir)(Refusal::Locked)),
            Err(TryLockError::Error(e)) => {
                Err(open_err(format!("cannot lock {}: {e}", path.display())))
            }
        }
    }
}

/// An open store and the directory's lock, released together by [`Held::release`] — at once,
/// even while the store is still referenced (later calls then fail with `Closed`).
pub(crate) struct Held<T> {
    open: RwLock<Option<(T, DirLock)>>,
}

impl<T> Held<T> {
    pub(crate) fn new(store: T, lock: DirLock) -> Self {
        Held {
            open: RwLock::new(Some((store, lock))),
        }
    }

    /// The open store, or `Closed`; it cannot be released while the guard lives.
    pub(crate) fn get(&self) -> Result<HeldRef<'_, T>, StoreError> {
        let guard = self.open.read();
        if guard.is_some() {
            Ok(HeldRef(guard))
        } else {
            Err(StoreError::Closed)
        }
    }

    /// Takes the store and the lock out (once): the caller flushes, then drops both.
    pub(crate) fn release(&self) -> Option<(T, DirLock)> {
        self.open.write().take()
    }
}

pub(crate) struct HeldRef<'a, T>(RwLockReadGuard<'a, Option<(T, DirLock)>>);

impl<T> std::ops::Deref for HeldRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Constructed only when the option is Some.
        &self.0.as_ref().unwrap_or_else(|| unreachable!()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let refused = DirLock::acquire(dir.path()).unwrap_err();
        assert!(refused.is_locked() && refused.is_refusal(), "{refused}");
        assert!(refused.to_string().contains("locked by another process"));
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }
}
