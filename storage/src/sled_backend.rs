//! The embedded default backend: one sled tree (the default one) holding every keyspace. It
//! holds the directory's lock (`lock.rs`) for as long as it is open, which also covers the
//! write-ahead log in `wal/`.
//!
//! sled's atomic batches are avoided where atomicity is not needed: the first `apply_batch` in a
//! process turns on sled's global concurrency control for good, after which every read and every
//! step of every iterator takes a process-wide lock that each batch holds exclusively — a list
//! walk then waits behind each checkpoint batch (≈ 100 ms per ListUsers at a million users). The
//! log's checkpoints are repeatable (`apply_each`: one insert per op), single-op batches are
//! plain inserts, and only a real multi-op atomic batch uses `apply_batch`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::lock::{Held, HeldRef};
use crate::medium::{claim_dir, Medium};
use crate::{Backend, KvIter, StoreError, WriteBatch};

/// sled's own default: 1 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 1024 * 1024 * 1024;
/// How long opening waits for sled's own lock while a handle just dropped in this process still
/// releases it (sled does that from its I/O threads, shortly after the last handle goes).
const SLED_RELEASE_WAIT: Duration = Duration::from_secs(1);

pub struct SledBackend {
    /// Released at close, so the directory is free even while the store is referenced.
    db: Held<sled::Db>,
    dir: std::path::PathBuf,
}

impl SledBackend {
    pub fn open(dir: &Path) -> Result<SledBackend, StoreError> {
        Self::open_with(dir, DEFAULT_CACHE_BYTES, &[])
    }

    /// Opens with sled's page cache bounded to `cache_bytes` (sled keeps the bound roughly).
    /// `kept_files` are the caller's files that may stand in a directory without a store.
    pub fn open_with(
        dir: &Path,
        cache_bytes: u64,
        kept_files: &[String],
    ) -> Result<SledBackend, StoreError> {
        let open_err = StoreError::opening(dir);
        let lock = claim_dir(dir, Medium::Sled, kept_files)?;
        let config = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            // We flush ourselves: once per batch (sync) or on our own timer (async).
            .flush_every_ms(None);
        // With the directory locked by us, sled's own lock can only be held by a handle this
        // process just dropped: its I/O failures are retried for a moment before they count.
        let deadline = Instant::now() + SLED_RELEASE_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(open_err(e.to_string())),
            }
        };
        Ok(SledBackend {
            db: Held::new(db, lock),
            dir: dir.to_path_buf(),
        })
    }

    fn db(&self) -> Result<HeldRef<'_, sled::Db>, StoreError> {
        self.db.get()
    }
}

/// Makes what sled has written durable. sled 0.34 "flushes" its log with `sync_file_range`,
/// which starts and waits for the data pages' writeback but neither writes the file's size (its
/// log grows by appending) nor flushes the device's cache — not durable across a power cut. The
/// power-loss suite (`api/tests/powerloss.rs`) lost acknowledged users that way: a checkpoint
/// retired log segments whose records sled had not really made durable. So every flush of sled
/// ends with an `fsync` of its files (the log `db`, `conf`, snapshots, blobs) and the directory,
/// and only then may the log's segments go. A checkpoint is rare; one more fsync is nothing.
fn sync_files(dir: &Path) -> Result<(), StoreError> {
    let sync = |path: &Path| -> Result<(), StoreError> {
        std::fs::File::open(path)
            .and_then(|file| file.sync_all())
            .map_err(|e| StoreError::Io(format!("syncing {}: {e}", path.display())))
    };
    for name in ["db", "conf"] {
        let path = dir.join(name);
        if path.exists() {
            sync(&path)?;
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::Io(e.to_string()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("snap.") {
            sync(&entry.path())?;
        }
    }
    let blobs = dir.join("blobs");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for entry in entries.flatten() {
            sync(&entry.path())?;
        }
        sync(&blobs)?;
    }
    sync(dir)
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db()?.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        match self.db() {
            // sled's iterator owns what it needs; the guard can go.
            Ok(db) => Box::new(
                db.scan_prefix(prefix)
                    .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io)),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn scan_prefix_rev(&self, prefix: &[u8]) -> KvIter<'_> {
        match self.db() {
            Ok(db) => Box::new(
                db.scan_prefix(prefix)
                    .rev()
                    .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io)),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.ops().len() <= 1 {
            // One insert or remove is atomic by itself.
            return self.apply_each(batch);
        }
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.into_ops() {
            match value {
                Some(v) => sled_batch.insert(key, v),
                None => sled_batch.remove(key),
            }
        }
        self.db()?.apply_batch(sled_batch).map_err(io)
    }

    fn apply_each(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let db = self.db()?;
        for (key, value) in batch.into_ops() {
            match value {
                Some(v) => db.insert(key, v).map(drop).map_err(io)?,
                None => db.remove(key).map(drop).map_err(io)?,
            }
        }
        Ok(())
    }

    /// sled's flush, then an fsync of sled's files (see [`sync_files`]).
    fn flush(&self) -> Result<(), StoreError> {
        self.db()?.flush().map_err(io)?;
        sync_files(&self.dir)
    }

    fn close(&self) -> Result<(), StoreError> {
        match self.db.release() {
            Some((db, _lock)) => {
                db.flush().map_err(io)?;
                sync_files(&self.dir)
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_directory_is_refused_and_kept_files_are_not_foreign() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let err = SledBackend::open(dir.path()).err().expect("must refuse");
        assert!(
            err.to_string().contains("not a Latchkey data directory"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing written"
        );
        let kept = ["notes.txt".to_owned()];
        let backend = SledBackend::open_with(dir.path(), DEFAULT_CACHE_BYTES, &kept).unwrap();
        backend.close().unwrap();
    }

    #[test]
    fn closing_releases_the_directory_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledBackend::open(dir.path()).unwrap();
        let err = SledBackend::open(dir.path()).err().expect("held");
        assert!(
            err.to_string().contains("locked by another process"),
            "{err}"
        );
        first.close().unwrap();
        let second = SledBackend::open(dir.path()).unwrap();
        second.close().unwrap();
        drop(first);
    }
}
