//! Durable state for Latchkey.
//!
//! The engine keeps every user in memory inside its actor; this crate is what makes that state
//! survive a crash. It has three parts:
//!
//! - [`Backend`] (in `backend.rs`): the small trait over the durable medium — point reads, prefix
//!   scans, atomic batches, flush. [`SledBackend`] (in `sled_backend.rs`) is the embedded default.
//! - [`keys`]: the one place that knows how entities are laid out as keys in the single keyspace.
//!   One keyspace means every command's writes (snapshot, event, indexes) land in one atomic batch.
//! - the writer (`writer.rs`): applies each write in the submitting thread and group-commits them
//!   from one flusher thread (one sync per group in `sync` mode), completing a [`Completion`] per
//!   write so replies can be held until the state they reveal is durable.
//! - the write-ahead log (`wal.rs`): the embedded medium — log segments and a memtable in front of
//!   sled, checkpointed into it in the background.
//!
//! [`Store`] ties them together and is what the engine holds.

mod backend;
mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod keys;
mod memtable;
mod sled_backend;
mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use backend::{Backend, KvIter};
pub use error::StoreError;
pub use sled_backend::{SledBackend, DEFAULT_CACHE_BYTES};
pub use wal::{LoggedBackend, DEFAULT_CHECKPOINT_ENTRIES, WAL_DIR};
pub use writer::{Completion, WriteBatch};

use writer::Writer;

/// The on-disk schema this build understands. Bumped whenever the key layout or the record
/// encodings change incompatibly; a directory with another version is refused at open.
/// 2: the write-ahead log in `wal/` (`wal.rs`); a schema-1 directory (same keys, no log) is
/// upgraded in place when opened.
pub const SCHEMA_VERSION: u32 = 2;

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only after the batch holding the write is fsync'd (the default).
    #[default]
    Sync,
    /// Acknowledge once the write is applied in memory; flush every `flush_interval`.
    /// A crash loses at most the writes of the last interval (plus the flush time).
    Async { flush_interval: Duration },
}

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Bound of sled's page cache in bytes.
    pub cache_bytes: u64,
    /// Keys the write-ahead log's memtable holds before it is checkpointed into sled (see
    /// `wal.rs`): more means fewer, larger checkpoints and more memory and replay at open.
    pub checkpoint_entries: usize,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            durability: Durability::Sync,
            cache_bytes: sled_backend::DEFAULT_CACHE_BYTES,
            checkpoint_entries: DEFAULT_CHECKPOINT_ENTRIES,
        }
    }
}

/// The durable store: reads go straight to the backend, writes go through the group-commit writer.
pub struct Store {
    backend: Arc<dyn Backend>,
    writer: Writer,
    data_dir: PathBuf,
}

impl Store {
    /// Opens (or creates) the sled store in `config.data_dir`, checks its schema version and starts
    /// the writer thread. Fails with a message naming the directory when it is locked by another
    /// process, unreadable, or of an unknown schema.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        Self::with_backend(Self::open_backend(config)?, config)
    }

    /// The medium [`Store::open`] uses: sled with the write-ahead log in front of it (replayed
    /// here). Exposed so tests can wrap it before handing it to [`Store::with_backend`].
    pub fn open_backend(config: &StoreConfig) -> Result<Arc<dyn Backend>, StoreError> {
        let sled: Arc<dyn Backend> = Arc::new(SledBackend::open_with_cache(
            &config.data_dir,
            config.cache_bytes,
        )?);
        wal::upgrade_schema(sled.as_ref())?;
        Ok(Arc::new(LoggedBackend::open(
            sled,
            &config.data_dir,
            config.checkpoint_entries,
        )?))
    }

    /// Opens a store over any backend (used by tests that inject faults into the medium).
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        config: &StoreConfig,
    ) -> Result<Store, StoreError> {
        check_schema(backend.as_ref(), &config.data_dir)?;
        let writer = Writer::start(backend.clone(), config.durability)?;
        Ok(Store {
            backend,
            writer,
            data_dir: config.data_dir.clone(),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn durability(&self) -> Durability {
        self.writer.durability()
    }

    /// Point read of what has been applied (in `sync` mode a 2xx is only sent once that is durable).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get(key)
    }

    /// Every applied key/value under `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        self.backend.scan_prefix(prefix)
    }

    /// Hands a batch to the writer. The returned completion resolves once the batch is durable
    /// (sync) or applied (async), or failed. `scope` names the owner (a user key): after a failed
    /// batch, later writes of the same scope fail too until [`Store::settle`] resets it, so a
    /// lost write can never be followed by one that built on it.
    pub fn submit(&self, scope: &[u8], batch: WriteBatch) -> Completion {
        self.writer.submit(scope, batch)
    }

    /// Waits until every write submitted before this call has completed, and clears the failure
    /// mark of `scope`. After it returns, reads of `scope`'s keys show exactly what is on disk.
    /// Returns at once when no write is in flight.
    pub async fn settle(&self, scope: Option<&[u8]>) -> Result<(), StoreError> {
        self.writer.settle(scope).await
    }

    /// True when nothing is being written into sled (no checkpoint running), so a point read
    /// cannot wait behind a sled batch. Writes themselves only touch the log's memory.
    pub fn is_idle(&self) -> bool {
        !self.backend.busy_in_background()
    }

    /// Flushes everything, stops the writer and releases the directory. Idempotent; the writer
    /// part is also done on drop.
    pub fn close(&self) -> Result<(), StoreError> {
        let writer = self.writer.close();
        let backend = self.backend.close();
        writer.and(backend)
    }
}

fn check_schema(backend: &dyn Backend, dir: &Path) -> Result<(), StoreError> {
    match backend.get(keys::SCHEMA)? {
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::UnknownSchema {
                    dir: dir.to_path_buf(),
                    found: format!("{bytes:?}"),
                })?;
            if found != SCHEMA_VERSION {
                return Err(StoreError::UnknownSchema {
                    dir: dir.to_path_buf(),
                    found: found.to_string(),
                });
            }
            Ok(())
        }
        None => {
            if backend.scan_prefix(b"").next().is_some() {
                return Err(StoreError::UnknownSchema {
                    dir: dir.to_path_buf(),
                    found: "none (data without a schema marker)".into(),
                });
            }
            let mut batch = WriteBatch::default();
            batch.put(keys::SCHEMA.to_vec(), SCHEMA_VERSION.to_be_bytes().to_vec());
            backend.apply(batch)?;
            backend.flush()?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_survive_reopen_and_schema_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        {
            let store = Store::open(&config).unwrap();
            let mut batch = WriteBatch::default();
            batch.put(b"a".to_vec(), b"1".to_vec());
            store.submit(b"a", batch).wait().await.unwrap();
            store.close().unwrap();
        }
        let store = Store::open(&config).unwrap();
        assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
        // a second open of the same directory is refused while the first holds it
        let err = Store::open(&config)
            .err()
            .expect("locked dir must be refused");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        store.close().unwrap();
    }

    #[test]
    fn a_foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let err = Store::open(&StoreConfig::new(dir.path()))
            .err()
            .expect("must refuse");
        assert!(
            err.to_string().contains("not a Latchkey data directory"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing written"
        );
    }

    #[tokio::test]
    async fn unknown_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = SledBackend::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put(keys::SCHEMA.to_vec(), 99u32.to_be_bytes().to_vec());
            backend.apply(batch).unwrap();
            backend.flush().unwrap();
        }
        let err = Store::open(&StoreConfig::new(dir.path()))
            .err()
            .expect("must refuse");
        assert!(matches!(err, StoreError::UnknownSchema { .. }), "{err}");
        assert!(err.to_string().contains("99"), "{err}");
    }
}
