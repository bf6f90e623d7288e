//! fjall, a maintained LSM store with a stable format, behind the [`Backend`] trait for the
//! comparison with sled and redb as the checkpoints' target (`docs/storage-engines.md`; measured
//! by `latchkey-loadtest checkpoint-targets`). Opt-in feature `fjall`: the server opens sled or
//! redb (`medium.rs`). It writes a batch atomically and makes it durable only at `flush`, as the
//! checkpoint thread expects of its target.

#[cfg(feature = "fjall")]
pub use self::fjall_store::FjallBackend;

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

    #[test]
    fn fjall_is_a_checkpoint_target() {
        behaves(|dir| Box::new(super::FjallBackend::open(dir, 8 << 20).unwrap()));
    }
}
