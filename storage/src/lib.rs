//! Durable state for Latchkey.
//!
//! The engine keeps every user in memory inside its actor; this crate is what makes that state
//! survive a crash. It knows nothing of users: it stores keys and values, and the caller tells it,
//! in a [`Layout`], the few things it must know about them. It has four parts:
//!
//! - [`Backend`] (in `backend.rs`): the small trait over the durable medium — point reads, prefix
//!   scans, atomic batches, flush. [`SledBackend`] (in `sled_backend.rs`) is the embedded default,
//!   [`RedbBackend`] (in `redb_backend.rs`) the alternative that opens at once at any size;
//!   `medium.rs` chooses between them and tells which one a directory holds, and `lock.rs` is the
//!   directory lock both hold.
//! - the write-ahead log (`log/`): the medium the store actually writes — log segments and a
//!   memtable (`memtable.rs`) in front of sled, checkpointed into it in the background.
//! - the writer (`writer.rs`, `completion.rs`): applies each write in the submitting thread and
//!   group-commits them from one flusher thread (one sync per group in `sync` mode), completing a
//!   [`Completion`] per write so replies can be held until the state they reveal is durable.
//! - the schema check (`schema.rs`): the caller's version recorded in the store and checked at
//!   every open.
//!
//! - backups (`backup.rs`): a store's live entries at one instant in a checksummed file of our
//!   own format, and the restore of one into an empty directory.
//!
//! - journals (`journal.rs`): a store whose writes are made durable elsewhere — a replicated
//!   log in cluster mode — and whose medium holds a view of that log.
//!
//! [`Store`] ties them together and is what the engine holds.

mod backend;
pub mod backup;
mod completion;
mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod journal;
mod lock;
mod log;
mod medium;
mod memtable;
#[cfg(feature = "fjall")]
pub mod other_backends;
mod redb_backend;
mod schema;
mod sled_backend;
mod sync;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use backend::{Backend, KvIter};
pub use completion::{Completion, WriteBatch};
pub use error::{Refusal, StoreError};
pub use journal::{AppliedHook, Journal, JournalFuture, View};
pub use log::{LoggedBackend, CHECKPOINT_CHUNK, DEFAULT_CHECKPOINT_ENTRIES, WAL_DIR};
pub use medium::Medium;
pub use redb_backend::RedbBackend;
pub use schema::Schema;
pub use sled_backend::{SledBackend, DEFAULT_CACHE_BYTES};

use writer::Writer;

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

/// What the store must know of its caller's keys, in the store's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The key the schema version is kept under.
    pub schema_key: Vec<u8>,
    /// The append-only runs among the caller's keys.
    pub runs: Runs,
    /// Point keys under this first byte are kept in order in the log's memtable, for keys the
    /// caller scans often (a scan of the others visits every key in memory).
    pub ordered_tag: Option<u8>,
    /// The first byte of counter keys ([`WriteBatch::add`]): their values are i64 big-endian,
    /// all held in memory by the writer (loaded at open), so keep them few.
    pub counter_tag: u8,
}

/// A counter's value as stored (i64 big-endian); 0 for anything else.
pub(crate) fn counter_value(bytes: &[u8]) -> i64 {
    bytes.try_into().map(i64::from_be_bytes).unwrap_or(0)
}

/// Append-only runs: keys `<tag><owner><sequence as u64 big-endian>`, where `owner` is any bytes
/// that never make one owner's keys a prefix of another's, and each key is written once. The
/// memtable keeps an owner's run together, and a checkpoint stores its consecutive entries as one
/// chunk under `chunk_tag` instead of one key each; scans of a run prefix see the chunks as the
/// entries they hold. `chunk_tag` must be a first byte no other key of the caller uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    pub tag: u8,
    pub chunk_tag: u8,
}

impl Runs {
    /// The key of `owner`'s entry `sequence`.
    pub fn key(&self, owner: &[u8], sequence: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(1 + owner.len() + 8);
        key.push(self.tag);
        key.extend_from_slice(owner);
        key.extend_from_slice(&sequence.to_be_bytes());
        key
    }

    /// A run key's owner part (tag included) and sequence; `None` for any other key.
    pub(crate) fn split<'k>(&self, key: &'k [u8]) -> Option<(&'k [u8], u64)> {
        if key.first() != Some(&self.tag) || key.len() <= 1 + 8 {
            return None;
        }
        let (owner, sequence) = key.split_at(key.len() - 8);
        Some((owner, u64::from_be_bytes(sequence.try_into().ok()?)))
    }
}

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// The embedded store the log checkpoints into. A directory holds one for good; opening it
    /// with the other is refused.
    pub medium: Medium,
    /// Bound of the embedded store's cache in bytes.
    pub cache_bytes: u64,
    /// Keys the write-ahead log's memtable holds before it is checkpointed into sled (see
    /// `log/`): more means fewer, larger checkpoints and more memory and replay at open.
    pub checkpoint_entries: usize,
    pub layout: Layout,
    pub schema: Schema,
    /// Files the caller keeps in the data directory beside the store (names): a directory that
    /// holds only these and no store yet is a new store, not a foreign directory.
    pub kept_files: Vec<String>,
    /// Where writes are made durable when not in the store's own log (cluster mode): the
    /// medium then holds the journal's view, see `journal.rs`.
    pub journal: Option<Arc<dyn Journal>>,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>, layout: Layout, schema: Schema) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            durability: Durability::Sync,
            medium: Medium::default(),
            cache_bytes: sled_backend::DEFAULT_CACHE_BYTES,
            checkpoint_entries: DEFAULT_CHECKPOINT_ENTRIES,
            layout,
            schema,
            kept_files: Vec::new(),
            journal: None,
        }
    }
}

/// The durable store: reads go straight to the backend, writes go through the group-commit writer.
pub struct Store {
    backend: Arc<dyn Backend>,
    writer: Arc<Writer>,
    data_dir: PathBuf,
    journal: Option<Arc<dyn Journal>>,
    /// The hook told of every record the journal's view applies, once set.
    applied: Arc<OnceLock<journal::AppliedHook>>,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, checks its schema version and starts
    /// the writer thread. Fails with a message naming the directory when it is locked by another
    /// process, unreadable, or of an unknown schema.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        Self::with_backend(Self::open_backend(config)?, config)
    }

    /// The medium [`Store::open`] uses: the configured embedded store with the write-ahead log
    /// in front of it (replayed here). Exposed so tests can wrap it before handing it to
    /// [`Store::with_backend`].
    pub fn open_backend(config: &StoreConfig) -> Result<Arc<dyn Backend>, StoreError> {
        let target =
            config
                .medium
                .open(&config.data_dir, config.cache_bytes, &config.kept_files)?;
        schema::upgrade(target.as_ref(), &config.layout, &config.schema)?;
        Ok(Arc::new(LoggedBackend::open(
            target,
            &config.data_dir,
            config.layout.runs,
            config.layout.ordered_tag,
            config.checkpoint_entries,
        )?))
    }

    /// Opens a store over any backend (used by tests that inject faults into the medium).
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        config: &StoreConfig,
    ) -> Result<Store, StoreError> {
        schema::check(
            backend.as_ref(),
            &config.layout,
            &config.schema,
            &config.data_dir,
        )?;
        let writer = Arc::new(Writer::start(
            backend.clone(),
            config.durability,
            config.layout.counter_tag,
        )?);
        let applied = Arc::new(OnceLock::new());
        if let Some(journal) = &config.journal {
            journal.attach(View {
                writer: writer.clone(),
                backend: backend.clone(),
                applied: applied.clone(),
            })?;
        }
        Ok(Store {
            applied,
            backend,
            writer,
            data_dir: config.data_dir.clone(),
            journal: config.journal.clone(),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn durability(&self) -> Durability {
        self.writer.durability()
    }

    /// True when writes go to a [`Journal`] and the medium holds its view (cluster mode).
    pub fn is_journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// Point read of what has been applied (in `sync` mode a 2xx is only sent once that is durable).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get(key)
    }

    /// Every applied key/value under `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        self.backend.scan_prefix(prefix)
    }

    /// The counter `key`'s value as of the last applied batch (0 if it was never written).
    pub fn counter(&self, key: &[u8]) -> i64 {
        self.writer.counter(key)
    }

    /// Every counter with its value as of the last applied batch, in no particular order.
    pub fn counters(&self) -> Vec<(Vec<u8>, i64)> {
        self.writer.counters()
    }

    /// [`Store::scan_prefix`] in reverse key order.
    pub fn scan_prefix_rev(&self, prefix: &[u8]) -> KvIter<'_> {
        self.backend.scan_prefix_rev(prefix)
    }

    /// Hands a batch to the writer. The returned completion resolves once the batch is durable
    /// (sync) or applied (async), or failed. `scope` names the batch's owner (the engine uses a
    /// user's key): after a failed batch, later writes of the same scope fail too until
    /// [`Store::settle`] resets it, so a lost write can never be followed by one built on it.
    ///
    /// With a [`Journal`], the batch goes to the journal, and its completion resolves once the
    /// journal holds it and this store's view has applied it.
    pub fn submit(&self, scope: &[u8], batch: WriteBatch) -> Completion {
        match &self.journal {
            Some(journal) => journal.append(scope, batch),
            None => self.writer.submit(scope, batch),
        }
    }

    /// Waits until every write submitted before this call has completed, and clears the failure
    /// mark of `scope`. After it returns, reads of `scope`'s keys show exactly what is on disk.
    /// Returns at once when no write is in flight.
    ///
    /// With a [`Journal`], see [`Journal::settle`]: the view then also holds every record of
    /// `scope` (or, for `None`, of the whole journal) that other writers made before the call.
    pub async fn settle(&self, scope: Option<&[u8]>) -> Result<(), StoreError> {
        match &self.journal {
            Some(journal) => journal.settle(scope).await,
            None => self.writer.settle(scope).await,
        }
    }

    /// With a [`Journal`]: `hook` is told the scope of every record the view applies from now
    /// on (of every writer, this node's too), right after a read can see it — so a cache of
    /// what the view holds can drop what a record changed. Set once; false if it was set.
    pub fn on_journal_apply(&self, hook: journal::AppliedHook) -> bool {
        self.applied.set(hook).is_ok()
    }

    /// What a read-modify-write of `scope` outside an actor does before it reads. With a
    /// [`Journal`] it settles the scope: this node holds it, the view has every record of it,
    /// and a failure mark left by an earlier refused write is cleared (the read that follows is
    /// the truth, so what is written from it may be). Embedded, the store is its own truth and
    /// nothing is done.
    pub async fn prepare(&self, scope: &[u8]) -> Result<(), StoreError> {
        match &self.journal {
            Some(journal) => journal.settle(Some(scope)).await,
            None => Ok(()),
        }
    }

    /// Claims the unique key `key` for `holder` across every writer of a [`Journal`] before a
    /// write that puts it ([`Journal::claim_unique`]); false when another holder has it.
    /// Embedded, the store's own read under the caller's reservation is the whole truth, and
    /// this accepts.
    pub async fn claim_unique(&self, key: &[u8], holder: &[u8]) -> Result<bool, StoreError> {
        match &self.journal {
            Some(journal) => journal.claim_unique(key, holder).await,
            None => Ok(true),
        }
    }

    /// Gives up `holder`'s claim on `key` ([`Journal::release_unique`]); nothing embedded.
    pub async fn release_unique(&self, key: &[u8], holder: &[u8]) -> Result<(), StoreError> {
        match &self.journal {
            Some(journal) => journal.release_unique(key, holder).await,
            None => Ok(()),
        }
    }

    /// Writes every live entry, as it stood at one instant, to `out` as a backup
    /// (`backup.rs`). Blocking: run it off the async workers. Writes go on meanwhile;
    /// checkpoints wait until it is done.
    pub fn backup(&self, out: impl std::io::Write) -> Result<backup::BackupSummary, StoreError> {
        backup::backup(self.backend.as_ref(), out)
    }

    /// True when nothing is being written into sled (no checkpoint running), so a point read
    /// cannot wait behind a sled batch. Writes themselves only touch the log's memory.
    pub fn is_idle(&self) -> bool {
        !self.backend.busy_in_background()
    }

    /// Why the store takes no more writes, if it has failed: a background thread (the flusher or
    /// the checkpoint) panicked or hit an error it cannot recover from. Writes are then refused
    /// at once with [`StoreError::Failed`] until the process restarts.
    pub fn failure(&self) -> Option<String> {
        self.writer.failure().or_else(|| self.backend.failure())
    }

    /// Flushes everything, stops the writer and releases the directory. Idempotent; the writer
    /// part is also done on drop.
    pub fn close(&self) -> Result<(), StoreError> {
        let writer = self.writer.close();
        let backend = self.backend.close();
        writer.and(backend)
    }
}

/// A layout and schema for the crate's own tests: runs under `e`, chunks under `E`.
#[cfg(test)]
pub(crate) fn test_config(dir: &Path) -> StoreConfig {
    StoreConfig::new(dir, test_layout(), Schema::new(7))
}

#[cfg(test)]
pub(crate) fn test_layout() -> Layout {
    Layout {
        schema_key: b"S".to_vec(),
        runs: TEST_RUNS,
        ordered_tag: None,
        counter_tag: b'c',
    }
}

#[cfg(test)]
pub(crate) const TEST_RUNS: Runs = Runs {
    tag: b'e',
    chunk_tag: b'E',
};

/// Keys laid out as the engine lays them out, for the crate's own tests: owners length-prefixed
/// (so "1" never prefixes "12"), runs under [`TEST_RUNS`], point keys under `u`.
#[cfg(test)]
pub(crate) mod test_keys {
    use super::TEST_RUNS;

    pub fn owner(id: &str) -> Vec<u8> {
        let mut owner = (id.len() as u16).to_be_bytes().to_vec();
        owner.extend_from_slice(id.as_bytes());
        owner
    }

    pub fn event(id: &str, sequence: u64) -> Vec<u8> {
        TEST_RUNS.key(&owner(id), sequence)
    }

    pub fn events_of(id: &str) -> Vec<u8> {
        let mut prefix = vec![TEST_RUNS.tag];
        prefix.extend_from_slice(&owner(id));
        prefix
    }

    pub fn point(id: &str) -> Vec<u8> {
        let mut key = b"u".to_vec();
        key.extend_from_slice(&owner(id));
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_survive_reopen_and_a_held_directory_is_refused() {
        for medium in Medium::ALL {
            writes_survive_reopen_and_a_held_directory_is_refused_on(medium).await;
        }
    }

    async fn writes_survive_reopen_and_a_held_directory_is_refused_on(medium: Medium) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.medium = medium;
        {
            let store = Store::open(&config).unwrap();
            let mut batch = WriteBatch::default();
            batch.put(b"a".to_vec(), b"1".to_vec());
            store.submit(b"a", batch).wait().await.unwrap();
            store.close().unwrap();
        }
        let store = Store::open(&config).unwrap();
        assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
        // the other store is refused on this directory, naming what it holds
        let mut other = config.clone();
        other.medium = Medium::ALL.into_iter().find(|m| *m != medium).unwrap();
        let err = Store::open(&other).err().expect("another store is refused");
        assert!(
            err.to_string().contains(&format!("holds a {medium} store")),
            "{err}"
        );
        // a second open of the same directory is refused while the first holds it
        let err = Store::open(&config)
            .err()
            .expect("locked dir must be refused");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        assert!(
            err.to_string().contains("locked by another process"),
            "{err}"
        );
        store.close().unwrap();
        // released by close, while the handle still lives
        Store::open(&config).unwrap().close().unwrap();
        drop(store);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counter_additions_from_racing_writers_all_count_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        {
            let store = Arc::new(Store::open(&config).unwrap());
            let mut writers = Vec::new();
            for w in 0..8u8 {
                let store = store.clone();
                writers.push(tokio::spawn(async move {
                    for _ in 0..100 {
                        let mut batch = WriteBatch::default();
                        batch.add(b"c-total".to_vec(), 1);
                        batch.add(b"c-down".to_vec(), -2);
                        store.submit(&[w], batch).wait().await.unwrap();
                    }
                }));
            }
            for writer in writers {
                writer.await.unwrap();
            }
            assert_eq!(store.counter(b"c-total"), 800);
            assert_eq!(store.counter(b"c-never"), 0);
            store.close().unwrap();
        }
        let store = Store::open(&config).unwrap();
        assert_eq!(store.counter(b"c-total"), 800, "loaded at open");
        assert_eq!(store.counter(b"c-down"), -1600);
        assert_eq!(
            store.get(b"c-total").unwrap(),
            Some(800i64.to_be_bytes().to_vec())
        );
        let mut all = store.counters();
        all.sort();
        assert_eq!(
            all,
            [(b"c-down".to_vec(), -1600), (b"c-total".to_vec(), 800)]
        );
        store.close().unwrap();
    }

    #[test]
    fn run_keys_split_into_owner_and_sequence() {
        let key = TEST_RUNS.key(b"\x00\x0242", 7);
        assert_eq!(TEST_RUNS.split(&key), Some((&b"e\x00\x0242"[..], 7)));
        assert!(TEST_RUNS.split(b"u\x00\x0242\0\0\0\0\0\0\0\x07").is_none());
        assert!(TEST_RUNS.split(&[b'e'; 9]).is_none(), "no owner");
        assert!(TEST_RUNS.key(b"a", 2) < TEST_RUNS.key(b"a", 10));
        assert!(TEST_RUNS.key(b"a", 255) < TEST_RUNS.key(b"a", 256));
    }
}
