//! Two maintained embedded stores with stable formats behind the [`Backend`] trait, for the
//! comparison with sled as the checkpoints' target (`docs/storage-engines.md`; measured by
//! `latchkey-loadtest checkpoint-targets`). Opt-in features (`redb`, `fjall`): sled stays the
//! server's store. Each writes a batch atomically and makes it durable only at `flush`, as the
//! checkpoint thread expects of sled.

#[cfg(feature = "fjall")]
pub use self::fjall_store::FjallBackend;
#[cfg(feature = "redb")]
pub use self::redb_store::RedbBackend;

#[cfg(feature = "redb")]
mod redb_store {
    use std::path::Path;

    use redb::{Durability, ReadableDatabase, TableDefinition};

    use crate::{Backend, KvIter, StoreError, WriteBatch};

    const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("latchkey");

    fn io(e: impl std::fmt::Display) -> StoreError {
        StoreError::Io(format!("redb: {e}"))
    }

    /// redb 4: a copy-on-write B-tree in one file; a batch is one write transaction committed
    /// without durability, `flush` an empty transaction committed with it.
    pub struct RedbBackend {
        db: redb::Database,
    }

    impl RedbBackend {
        pub fn open(dir: &Path) -> Result<RedbBackend, StoreError> {
            std::fs::create_dir_all(dir).map_err(io)?;
            let db = redb::Database::create(dir.join("latchkey.redb")).map_err(io)?;
            let txn = db.begin_write().map_err(io)?;
            txn.open_table(TABLE).map_err(io)?;
            txn.commit().map_err(io)?;
            Ok(RedbBackend { db })
        }
    }

    impl Backend for RedbBackend {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            let txn = self.db.begin_read().map_err(io)?;
            let table = txn.open_table(TABLE).map_err(io)?;
            Ok(table.get(key).map_err(io)?.map(|v| v.value().to_vec()))
        }

        fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
            let prefix = prefix.to_vec();
            let range = self
                .db
                .begin_read()
                .map_err(io)
                .and_then(|txn| txn.open_table(TABLE).map_err(io))
                .and_then(|table| table.range::<&[u8]>(prefix.as_slice()..).map_err(io));
            match range {
                Ok(range) => Box::new(
                    range
                        .map(|item| {
                            item.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                                .map_err(io)
                        })
                        .take_while(move |item| {
                            item.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix))
                        }),
                ),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        }

        fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
            let mut txn = self.db.begin_write().map_err(io)?;
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
            let mut txn = self.db.begin_write().map_err(io)?;
            txn.set_durability(Durability::Immediate).map_err(io)?;
            txn.commit().map_err(io)
        }
    }
}

#[cfg(feature = "fjall")]
mod fjall_store {
    use std::path::Path;

    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    use crate::{Backend, KvIter, StoreError, WriteBatch};

    fn io(e: impl std::fmt::Display) -> StoreError {
        StoreError::Io(format!("fjall: {e}"))
    }

    /// fjall 3: an LSM tree with its own journal; a batch is one atomic write batch (journal
    /// buffered), `flush` persists the journal with an fsync.
    pub struct FjallBackend {
        db: Database,
        keyspace: Keyspace,
    }

    impl FjallBackend {
        pub fn open(dir: &Path, cache_bytes: u64) -> Result<FjallBackend, StoreError> {
            let db = Database::builder(dir)
                .cache_size(cache_bytes)
                .open()
                .map_err(io)?;
            let keyspace = db
                .keyspace("latchkey", KeyspaceCreateOptions::default)
                .map_err(io)?;
            Ok(FjallBackend { db, keyspace })
        }
    }

    impl Backend for FjallBackend {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.keyspace.get(key).map_err(io)?.map(|v| v.to_vec()))
        }

        fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
            Box::new(self.keyspace.prefix(prefix).map(|guard| {
                guard
                    .into_inner()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(io)
            }))
        }

        fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
            let mut fjall_batch = self.db.batch();
            for (key, value) in batch.into_ops() {
                match value {
                    Some(value) => fjall_batch.insert(&self.keyspace, key, value),
                    None => fjall_batch.remove(&self.keyspace, key),
                }
            }
            fjall_batch.commit().map_err(io)
        }

        fn flush(&self) -> Result<(), StoreError> {
            self.db.persist(PersistMode::SyncAll).map_err(io)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Backend, WriteBatch};

    /// What the log needs of a checkpoint target: atomic batches, point reads, ordered prefix
    /// scans, deletes, and everything back after a reopen.
    fn behaves(open: impl Fn(&std::path::Path) -> Box<dyn Backend>) {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = open(dir.path());
            let mut batch = WriteBatch::default();
            for key in ["b2", "a1", "b1", "b3", "c1"] {
                batch.put(key.as_bytes().to_vec(), key.to_uppercase().into_bytes());
            }
            backend.apply(batch).unwrap();
            let mut batch = WriteBatch::default();
            batch.delete(b"b2".to_vec());
            backend.apply(batch).unwrap();
            backend.flush().unwrap();
            backend.close().unwrap();
        }
        let backend = open(dir.path());
        assert_eq!(backend.get(b"a1").unwrap(), Some(b"A1".to_vec()));
        assert_eq!(backend.get(b"b2").unwrap(), None);
        let scanned: Vec<Vec<u8>> = backend.scan_prefix(b"b").map(|e| e.unwrap().0).collect();
        assert_eq!(scanned, vec![b"b1".to_vec(), b"b3".to_vec()]);
    }

    #[cfg(feature = "redb")]
    #[test]
    fn redb_is_a_checkpoint_target() {
        behaves(|dir| Box::new(super::RedbBackend::open(dir).unwrap()));
    }

    #[cfg(feature = "fjall")]
    #[test]
    fn fjall_is_a_checkpoint_target() {
        behaves(|dir| Box::new(super::FjallBackend::open(dir, 8 << 20).unwrap()));
    }
}
