//! The embedded default backend: one sled tree (the default one) holding every keyspace, so a
//! whole group-commit batch is a single atomic `apply_batch`.

use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::{Backend, KvIter, StoreError, WriteBatch};

/// sled's own default: 1 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 1024 * 1024 * 1024;
/// How long opening waits for a lock that may still be held by a handle just dropped here.
const LOCK_WAIT: Duration = Duration::from_secs(1);

pub struct SledBackend {
    /// `None` once closed, so the directory lock is released even while the store is referenced.
    db: RwLock<Option<sled::Db>>,
}

impl SledBackend {
    pub fn open(dir: &Path) -> Result<SledBackend, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens with sled's page cache bounded to `cache_bytes` (sled keeps the bound roughly).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<SledBackend, StoreError> {
        let open_err = |cause: String| StoreError::Open {
            dir: dir.to_path_buf(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        refuse_foreign(dir).map_err(open_err)?;
        let config = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            // We flush ourselves: once per batch (sync) or on our own timer (async).
            .flush_every_ms(None);
        // sled releases the directory's lock from its own I/O threads shortly after the last
        // handle is dropped, so a store closed or dropped in this process a moment ago can still
        // hold it: wait for that before saying another process does.
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    if Instant::now() >= deadline {
                        return Err(open_err(
                            "it is locked by another process (is another latchkey running on it?)"
                                .into(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(open_err(e.to_string())),
            }
        };
        Ok(SledBackend {
            db: RwLock::new(Some(db)),
        })
    }

    fn db(&self) -> Result<DbGuard<'_>, StoreError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_some() {
            Ok(DbGuard(guard))
        } else {
            Err(StoreError::Closed)
        }
    }
}

struct DbGuard<'a>(RwLockReadGuard<'a, Option<sled::Db>>);

impl std::ops::Deref for DbGuard<'_> {
    type Target = sled::Db;
    fn deref(&self) -> &sled::Db {
        // Constructed only when the option is Some.
        self.0.as_ref().unwrap_or_else(|| unreachable!())
    }
}

/// sled treats a directory without its files as a new, empty store and starts writing into it.
/// Pointing `--data-dir` at the wrong place must not do that: a non-empty directory needs sled's
/// `conf` file to be opened. Latchkey's own `admin.pat` alone does not count as foreign.
fn refuse_foreign(dir: &Path) -> Result<(), String> {
    if dir.join("conf").exists() {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    for entry in entries {
        let name = entry.map_err(|e| e.to_string())?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("admin.pat") {
            return Err(format!(
                "it is not a Latchkey data directory (it holds {name:?} but no store); \
                 choose an empty or new directory"
            ));
        }
    }
    Ok(())
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

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.into_ops() {
            match value {
                Some(v) => sled_batch.insert(key, v),
                None => sled_batch.remove(key),
            }
        }
        self.db()?.apply_batch(sled_batch).map_err(io)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db()?.flush().map(|_| ()).map_err(io)
    }

    fn close(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        match slot.take() {
            Some(db) => db.flush().map(|_| ()).map_err(io),
            None => Ok(()),
        }
    }
}
