//! The durable medium behind a small trait, so the writer does not care whether it talks to sled
//! or to a test double that fails on purpose.

use crate::{StoreError, WriteBatch};

pub type KvIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + Send + 'a>;

pub trait Backend: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_>;
    /// [`Backend::scan_prefix`] in reverse key order. By default the forward scan read whole and
    /// reversed; the real media walk backwards.
    fn scan_prefix_rev(&self, prefix: &[u8]) -> KvIter<'_> {
        let all: Vec<_> = self.scan_prefix(prefix).collect();
        Box::new(all.into_iter().rev())
    }
    /// Every live entry as it stood at one instant (between two applied batches), in key order,
    /// as the caller wrote them (the log's run chunks seen as their entries); writes go on
    /// meanwhile. What a backup reads.
    fn snapshot(&self) -> Result<KvIter<'_>, StoreError> {
        Ok(self.scan_prefix(&[]))
    }
    /// Applies every put and delete of `batch` atomically: all or none.
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError>;
    /// Applies `batch`'s puts and deletes in order, not atomically: after a crash before the
    /// next flush any of them may be missing. For writes that can be repeated — the log's
    /// checkpoints, replayed until a flush made them durable — where sled's atomic batches would
    /// cost every reader (`sled_backend.rs`). By default [`Backend::apply`].
    fn apply_each(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.apply(batch)
    }
    /// Makes everything applied so far durable (fsync).
    fn flush(&self) -> Result<(), StoreError>;
    /// True while the medium writes into its underlying store in the background (the log's
    /// checkpoint into sled): a read that misses memory may then wait behind that write.
    fn busy_in_background(&self) -> bool {
        false
    }
    /// True while the medium holds writers back because its background part is behind (the
    /// log's memtable at its bound while a checkpoint runs): async writes then wait for the
    /// flush like sync ones, so they are held too.
    fn is_holding(&self) -> bool {
        false
    }
    /// Why the medium can take no more writes, if a background part of it failed for good (the
    /// log's checkpoint thread panicked).
    fn failure(&self) -> Option<String> {
        None
    }
    /// Flushes and releases the medium (e.g. the directory lock); later calls fail with `Closed`.
    fn close(&self) -> Result<(), StoreError> {
        self.flush()
    }
}
