//! redb as the log's checkpoint target (`--store redb`): one copy-on-write B-tree file,
//! `latchkey.redb`, in the data directory, under the same directory lock as sled.
//!
//! Why it is offered beside sled (docs/storage-engines.md): it opens in a millisecond at any
//! size — a B-tree file needs no recovery — where sled recovers its log and loads a page table
//! that grows with the store (seconds and hundreds of MiB at millions of users), and its memory
//! is its cache, bounded by `--cache-mb`.
//!
//! How the log's contract maps onto it: a batch is one write transaction committed without
//! durability (atomic, visible to readers at once, not yet on disk); `flush` commits an empty
//! transaction with durability, which makes every earlier one durable. That flush also records
//! the allocator state (redb's quick repair), so the open after a crash does not walk the whole
//! file to rebuild it: it goes back to the last flushed commit, and the log replays the rest.
//! Each read runs in its own read transaction — a consistent snapshot — so a prefix scan sees one
//! commit from first to last entry, whatever the checkpoint thread commits meanwhile.

use std::path::Path;

use redb::{Durability, ReadableDatabase, TableDefinition};

use crate::lock::{Held, HeldRef};
use crate::medium::{claim_dir, Medium};
use crate::{Backend, KvIter, StoreError, WriteBatch};

/// The store's file inside the data directory.
pub(crate) const FILE: &str = "latchkey.redb";

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("latchkey");

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("redb: {e}"))
}

pub struct RedbBackend {
    db: Held<redb::Database>,
}

impl RedbBackend {
    pub fn open(dir: &Path) -> Result<RedbBackend, StoreError> {
        Self::open_with(dir, crate::DEFAULT_CACHE_BYTES, &[])
    }

    /// Opens (or creates) the store in `dir` with redb's cache bounded to `cache_bytes`.
    /// `kept_files` are the caller's files that may stand in a directory without a store.
    pub fn open_with(
        dir: &Path,
        cache_bytes: u64,
        kept_files: &[String],
    ) -> Result<RedbBackend, StoreError> {
        let open_err = StoreError::opening(dir);
        let lock = claim_dir(dir, Medium::Redb, kept_files)?;
        let db = redb::Database::builder()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create(dir.join(FILE))
            .map_err(|e| open_err(format!("redb: {e}")))?;
        let txn = db
            .begin_write()
            .map_err(|e| open_err(format!("redb: {e}")))?;
        txn.open_table(TABLE)
            .map_err(|e| open_err(format!("redb: {e}")))?;
        txn.commit().map_err(|e| open_err(format!("redb: {e}")))?;
        Ok(RedbBackend {
            db: Held::new(db, lock),
        })
    }

    fn db(&self) -> Result<HeldRef<'_, redb::Database>, StoreError> {
        self.db.get()
    }

    /// Entries from `start` on (or, reversed, up to `end`), within the prefix's range, in one
    /// read transaction.
    fn range(&self, prefix: &[u8], reverse: bool) -> KvIter<'_> {
        let prefix = prefix.to_vec();
        let end = successor(&prefix);
        let range = self
            .db()
            .and_then(|db| db.begin_read().map_err(io))
            .and_then(|txn| txn.open_table(TABLE).map_err(io))
            .and_then(|table| {
                let range = match &end {
                    Some(end) => table.range::<&[u8]>(prefix.as_slice()..end.as_slice()),
                    None => table.range::<&[u8]>(prefix.as_slice()..),
                };
                range.map_err(io)
            });
        match range {
            Ok(range) if reverse => Box::new(range.rev().map(entry)),
            Ok(range) => Box::new(range.map(entry)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }
}

type Item<'a> = Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

fn entry(item: Item<'_>) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    item.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
        .map_err(io)
}

/// The first key after every key that starts with `prefix`; `None` when there is none (the
/// prefix is empty or all 0xff).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Backend for RedbBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read().map_err(io)?;
        let table = txn.open_table(TABLE).map_err(io)?;
        Ok(table.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        self.range(prefix, false)
    }

    fn scan_prefix_rev(&self, prefix: &[u8]) -> KvIter<'_> {
        self.range(prefix, true)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut txn = self.db()?.begin_write().map_err(io)?;
        txn.set_durability(Durability::None).map_err(io)?;
        {
            let mut table = txn.open_table(TABLE).map_err(io)?;
            for (key, value) in batch.into_ops() {
                match value {
                    Some(value) => table.insert(key.as_slice(), value.as_slice()).map(drop),
                    None => table.remove(key.as_slice()).map(drop),
                }
                .map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }

    fn flush(&self) -> Result<(), StoreError> {
        flush(&*self.db()?)
    }

    fn close(&self) -> Result<(), StoreError> {
        match self.db.release() {
            Some((db, _lock)) => flush(&db),
            None => Ok(()),
        }
    }
}

/// An empty durable commit: every earlier (non-durable) one is on disk when it returns.
fn flush(db: &redb::Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(io)?;
    txn.set_durability(Durability::Immediate).map_err(io)?;
    txn.set_quick_repair(true);
    txn.commit().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successors_bound_prefix_ranges() {
        assert_eq!(successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff\xff"), None);
        assert_eq!(successor(b""), None);
    }

    #[test]
    fn prefix_scans_both_ways_stay_within_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        for key in [
            &b"a\xff"[..],
            b"b",
            b"b\x00",
            b"b\xff\x01",
            b"c",
            b"\xff\xff",
        ] {
            batch.put(key.to_vec(), key.to_vec());
        }
        backend.apply(batch).unwrap();
        let keys = |iter: KvIter<'_>| -> Vec<Vec<u8>> { iter.map(|e| e.unwrap().0).collect() };
        assert_eq!(
            keys(backend.scan_prefix(b"b")),
            [&b"b"[..], b"b\x00", b"b\xff\x01"]
        );
        assert_eq!(
            keys(backend.scan_prefix_rev(b"b")),
            [&b"b\xff\x01"[..], b"b\x00", b"b"]
        );
        assert_eq!(keys(backend.scan_prefix_rev(b"\xff")), [&b"\xff\xff"[..]]);
        assert_eq!(keys(backend.scan_prefix(b"")).len(), 6);
        backend.close().unwrap();
    }

    #[test]
    fn the_directory_is_locked_until_close_and_a_closed_store_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let first = RedbBackend::open(dir.path()).unwrap();
        let err = RedbBackend::open(dir.path()).err().expect("held");
        assert!(
            err.to_string().contains("locked by another process"),
            "{err}"
        );
        first.close().unwrap();
        assert!(matches!(first.get(b"k"), Err(StoreError::Closed)));
        let second = RedbBackend::open(dir.path()).unwrap();
        second.close().unwrap();
    }

    #[test]
    fn a_sled_directory_is_not_opened_as_redb_nor_the_reverse() {
        let sled_dir = tempfile::tempdir().unwrap();
        crate::SledBackend::open(sled_dir.path())
            .unwrap()
            .close()
            .unwrap();
        let err = RedbBackend::open(sled_dir.path()).err().expect("refused");
        assert!(err.to_string().contains("holds a sled store"), "{err}");
        assert!(!sled_dir.path().join(FILE).exists(), "nothing written");

        let redb_dir = tempfile::tempdir().unwrap();
        RedbBackend::open(redb_dir.path()).unwrap().close().unwrap();
        let err = crate::SledBackend::open(redb_dir.path())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("holds a redb store"), "{err}");
        assert!(!redb_dir.path().join("conf").exists(), "nothing written");
    }
}
