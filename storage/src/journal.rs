//! A journal: when a store's writes are made durable somewhere else than its own medium.
//!
//! Embedded, a [`crate::Store`] is its own truth: the writer applies a batch to the medium and
//! group-commits the log. In cluster mode (`latchkey-cluster`) the truth is a replicated log on
//! NATS JetStream, and the store's medium holds a *view* of it: every record of the log, whoever
//! wrote it, applied in log order. A store opened with a [`Journal`] therefore sends its writes to
//! the journal instead of its writer; the journal applies them — and every other node's — to the
//! view through the [`View`] handle it receives at open. The engine above does not change: it
//! still submits batches per scope, waits on their completions and settles a scope before it
//! reloads it; the journal gives those calls their cluster meaning (see [`Journal::settle`]).
//!
//! Batches travel through the journal in the byte form of [`WriteBatch::encode`], with their
//! counter additions unresolved, so each view resolves them against its own counters in log order.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use crate::writer::Writer;
use crate::{Backend, Completion, StoreError, WriteBatch};

/// A future a journal returns (boxed: the trait is used as `dyn`).
pub type JournalFuture<'a, T = ()> =
    Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where a store's writes are made durable when its medium only holds a view of them.
pub trait Journal: Send + Sync + 'static {
    /// Called once, when the store opens, with the handle through which the journal applies
    /// records to the store's medium. Records of one scope must be applied in log order.
    fn attach(&self, view: View) -> Result<(), StoreError>;

    /// Makes `batch` durable under `scope`. The completion resolves once the journal holds it
    /// and the view has applied it (so a read after the completion sees it), or failed. A write
    /// that fails marks its scope: later writes of the scope fail without being appended until
    /// [`Journal::settle`] clears it, exactly as the embedded writer does.
    fn append(&self, scope: &[u8], batch: WriteBatch) -> Completion;

    /// `Some(scope)`: every write of `scope` submitted before has completed, its failure mark is
    /// cleared, and the view holds every record of `scope` the journal holds — so a read of the
    /// scope's keys that follows sees the truth, and this node may write the scope next.
    /// `None`: every write submitted before has completed, and the view holds everything the
    /// journal held when the call was made.
    fn settle<'a>(&'a self, scope: Option<&'a [u8]>) -> JournalFuture<'a>;

    /// Claims `key` — a key the caller's next write puts, which no other writer may put for
    /// another holder — for `holder` among every writer of the journal. False: another holder
    /// has it. The caller checks its own view first; this is what makes the check hold across
    /// writers that each see only their own view. The default (a journal with one writer)
    /// accepts.
    fn claim_unique<'a>(&'a self, _key: &'a [u8], _holder: &'a [u8]) -> JournalFuture<'a, bool> {
        Box::pin(async { Ok(true) })
    }

    /// Gives up `holder`'s claim on `key` (the write that put it deleted it, or never landed).
    /// Another holder's claim is left alone.
    fn release_unique<'a>(&'a self, _key: &'a [u8], _holder: &'a [u8]) -> JournalFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

impl fmt::Debug for dyn Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Journal")
    }
}

/// Told the scope of every record a journal's view applies, once it is readable
/// ([`crate::Store::on_journal_apply`]).
pub type AppliedHook = Box<dyn Fn(&[u8]) + Send + Sync>;

/// A journal's handle on the store's medium: applies records and reads what they left.
#[derive(Clone)]
pub struct View {
    pub(crate) writer: Arc<Writer>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) applied: Arc<OnceLock<AppliedHook>>,
}

impl View {
    /// Applies one record of the journal (counter additions resolved against the view's own
    /// counters). Fails when the medium refuses it; the scope is then marked as in the writer.
    pub fn apply(&self, scope: &[u8], batch: WriteBatch) -> Completion {
        self.apply_records(&[scope], batch)
    }

    /// Applies consecutive records of the journal as one write: `batch` holds their ops and
    /// additions in log order (each record [`WriteBatch::decode_into`] it), `scopes` their
    /// scopes. A view applies what a burst of deliveries brought at once this way, so the
    /// writer's lock, its log record and the caller's own bookkeeping are paid per burst, not
    /// per record. The writer marks the first scope if the medium refuses the write.
    pub fn apply_records<S: AsRef<[u8]>>(&self, scopes: &[S], batch: WriteBatch) -> Completion {
        let Some(first) = scopes.first() else {
            return Completion::done();
        };
        let done = self.writer.submit(first.as_ref(), batch);
        // `submit` applied it to the memtable: a read from here on sees the records.
        if let Some(hook) = self.applied.get() {
            for scope in scopes {
                hook(scope.as_ref());
            }
        }
        done
    }

    /// A point read of what the view has applied.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get(key)
    }

    /// Clears `scope`'s failure mark in the view once everything applied before is durable.
    pub async fn settle(&self, scope: Option<&[u8]>) -> Result<(), StoreError> {
        self.writer.settle(scope).await
    }
}

/// The byte form of a batch in a journal: `ops` then `adds`, each a u32 count followed by its
/// items; a key or value is a u32 length and its bytes; an op's value is preceded by 1 (put) or
/// 0 (delete); an addition's delta is an i64. All integers big-endian.
impl WriteBatch {
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .ops()
            .iter()
            .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
            .chain(self.adds().iter().map(|(k, _)| 12 + k.len()))
            .sum();
        let mut out = Vec::with_capacity(8 + size);
        out.extend_from_slice(&(self.ops().len() as u32).to_be_bytes());
        for (key, value) in self.ops() {
            put_bytes(&mut out, key);
            match value {
                Some(value) => {
                    out.push(1);
                    put_bytes(&mut out, value);
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(&(self.adds().len() as u32).to_be_bytes());
        for (key, delta) in self.adds() {
            put_bytes(&mut out, key);
            out.extend_from_slice(&delta.to_be_bytes());
        }
        out
    }

    /// The batch [`WriteBatch::encode`] wrote; an error for anything else (truncated, trailing
    /// bytes, a bad op tag).
    pub fn decode(bytes: &[u8]) -> Result<WriteBatch, StoreError> {
        let mut batch = WriteBatch::default();
        WriteBatch::decode_into(bytes, &mut batch)?;
        Ok(batch)
    }

    /// Decodes what [`WriteBatch::encode`] wrote after what `batch` holds already (its ops and
    /// additions follow the earlier ones). On an error `batch` may hold part of the record.
    pub fn decode_into(bytes: &[u8], batch: &mut WriteBatch) -> Result<(), StoreError> {
        let mut input = Input(bytes);
        for _ in 0..input.u32()? {
            let key = input.bytes()?.to_vec();
            match input.take(1)? {
                [1] => batch.put(key, input.bytes()?.to_vec()),
                [0] => batch.delete(key),
                _ => return Err(bad("an op is neither a put nor a delete")),
            }
        }
        for _ in 0..input.u32()? {
            let key = input.bytes()?.to_vec();
            let delta = i64::from_be_bytes(input.array()?);
            batch.add(key, delta);
        }
        if !input.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn bad(what: &str) -> StoreError {
    StoreError::Io(format!("a journal record cannot be decoded: {what}"))
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        self.take(N)?.try_into().map_err(|_| bad("truncated"))
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Mutex;
    use crate::{test_config, Store};

    /// A journal in memory: a list of records, each applied to the view as it is appended.
    #[derive(Default)]
    struct Listed {
        view: Mutex<Option<View>>,
        records: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
        settled: Mutex<Vec<Option<Vec<u8>>>>,
    }

    impl Journal for Listed {
        fn attach(&self, view: View) -> Result<(), StoreError> {
            *self.view.lock() = Some(view);
            Ok(())
        }
        fn append(&self, scope: &[u8], batch: WriteBatch) -> Completion {
            let bytes = batch.encode();
            self.records.lock().push((scope.to_vec(), bytes.clone()));
            let view = self.view.lock().clone();
            match (view, WriteBatch::decode(&bytes)) {
                (Some(view), Ok(batch)) => view.apply(scope, batch),
                _ => Completion::failed(StoreError::Closed),
            }
        }
        fn settle<'a>(&'a self, scope: Option<&'a [u8]>) -> JournalFuture<'a> {
            self.settled.lock().push(scope.map(<[u8]>::to_vec));
            Box::pin(async { Ok(()) })
        }
    }

    /// A store opened over a [`Listed`] journal in a temporary directory (kept while the
    /// returned guard lives).
    fn journaled_store() -> (tempfile::TempDir, Arc<Listed>, Store) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Listed::default());
        let mut config = test_config(dir.path());
        config.journal = Some(journal.clone());
        let store = Store::open(&config).unwrap();
        (dir, journal, store)
    }

    #[tokio::test]
    async fn a_journaled_store_writes_through_its_journal_and_reads_its_view() {
        let (_dir, journal, store) = journaled_store();
        assert!(store.is_journaled());
        for n in 0..3 {
            let mut batch = WriteBatch::default();
            batch.put(b"a".to_vec(), vec![n]);
            batch.add(b"c-n".to_vec(), 2);
            store.submit(b"scope-a", batch).wait().await.unwrap();
        }
        store.settle(Some(b"scope-a")).await.unwrap();
        // What went into the journal is the batch as submitted: the addition unresolved.
        let records = journal.records.lock().clone();
        assert_eq!(records.len(), 3);
        let first = WriteBatch::decode(&records[0].1).unwrap();
        assert_eq!(records[0].0, b"scope-a");
        assert_eq!(first.adds(), [(b"c-n".to_vec(), 2)]);
        // What the view holds is the records applied in order, counters resolved.
        assert_eq!(store.get(b"a").unwrap(), Some(vec![2]));
        assert_eq!(store.counter(b"c-n"), 6);
        assert_eq!(*journal.settled.lock(), [Some(b"scope-a".to_vec())]);
        store.close().unwrap();
    }

    #[tokio::test]
    async fn records_applied_as_one_write_keep_their_order_and_each_scope_is_told() {
        let (_dir, journal, store) = journaled_store();
        let told = Arc::new(Mutex::new(Vec::new()));
        assert!(store.on_journal_apply(Box::new({
            let told = told.clone();
            move |scope: &[u8]| told.lock().push(scope.to_vec())
        })));
        let mut batch = WriteBatch::default();
        for (n, delta) in [(1u8, 2i64), (2, 3)] {
            let mut record = WriteBatch::default();
            record.put(b"k".to_vec(), vec![n]);
            record.add(b"c-n".to_vec(), delta);
            WriteBatch::decode_into(&record.encode(), &mut batch).unwrap();
        }
        let view = journal.view.lock().clone().unwrap();
        let scopes: [&[u8]; 2] = [b"scope-a", b"scope-b"];
        view.apply_records(&scopes, batch).wait().await.unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(vec![2]));
        assert_eq!(store.counter(b"c-n"), 5);
        assert_eq!(*told.lock(), [b"scope-a".to_vec(), b"scope-b".to_vec()]);
        store.close().unwrap();
    }

    #[test]
    fn a_batch_survives_its_byte_form_and_damage_is_refused() {
        let mut batch = WriteBatch::default();
        batch.put(b"u1".to_vec(), b"snapshot".to_vec());
        batch.delete(b"n-old".to_vec());
        batch.put(b"empty".to_vec(), Vec::new());
        batch.add(b"c-total".to_vec(), -3);
        let bytes = batch.encode();
        let back = WriteBatch::decode(&bytes).unwrap();
        assert_eq!(back.ops(), batch.ops());
        assert_eq!(back.adds(), batch.adds());
        // Records decoded one after another into one batch keep their order.
        let mut second = WriteBatch::default();
        second.put(b"u1".to_vec(), b"newer".to_vec());
        second.add(b"c-total".to_vec(), 5);
        let mut both = WriteBatch::default();
        WriteBatch::decode_into(&batch.encode(), &mut both).unwrap();
        WriteBatch::decode_into(&second.encode(), &mut both).unwrap();
        assert_eq!(both.ops().len(), 4);
        assert_eq!(both.ops()[3], (b"u1".to_vec(), Some(b"newer".to_vec())));
        assert_eq!(
            both.adds(),
            [(b"c-total".to_vec(), -3), (b"c-total".to_vec(), 5)]
        );
        let empty = WriteBatch::decode(&WriteBatch::default().encode()).unwrap();
        assert!(empty.is_empty());
        for cut in 0..bytes.len() {
            assert!(WriteBatch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(WriteBatch::decode(&longer).is_err());
        let mut bad_tag = bytes;
        bad_tag[4 + 4 + 2] = 7; // the first op's put/delete tag
        assert!(WriteBatch::decode(&bad_tag).is_err());
    }
}
