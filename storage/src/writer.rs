//! Group commit: how a write becomes durable without costing a disk round trip per command.
//!
//! Actors never wait for the disk. [`Writer::submit`] applies an actor's [`WriteBatch`] to the
//! backend at once, in the actor's own thread (for the write-ahead log that is one record appended
//! to a buffer and a memtable insert: memory only), and returns a [`Completion`], so the actor can
//! apply its next command while the previous one is still being made durable (pipelined commit).
//! One flusher thread syncs: in `sync` mode it takes every write applied since its last flush,
//! flushes once (one `fdatasync` of the log) and completes them all; writes applied while it
//! flushes form the next group. Under load many actors share one flush and nobody wakes the
//! flusher (it is already busy); alone, a write waits for one flush. In `async` mode a write is
//! complete once applied and the flusher flushes every `flush_interval`.
//!
//! When the flusher wakes: a flush starts when someone *waits* on a write
//! ([`Completion::wait`] tells the writer), not when the write is applied. Between the two the
//! actor answers and its caller is scheduled, and the writes applied meanwhile join the group;
//! a write pays only those microseconds. It made groups ≈ 1.5 × larger and closed-loop
//! throughput 2–13 % higher in interleaved pairs (docs/performance.md, "What mattered"). A
//! write nobody waits on is flushed anyway: after each flush the flusher naps for [`NAP`] and
//! takes what was applied meanwhile; after a nap in which nothing was applied it sleeps, and
//! the next apply wakes it at once. (The waiter does not flush on its own worker, though that
//! would save two wake-ups: a stalled disk would then stall the worker and its I/O with it.)
//!
//! Blocking I/O (the sync, new log segments, checkpoints) happens only on the flusher and the
//! log's checkpoint thread, never on the async workers.
//!
//! Failure of a write: a write the backend refuses fails at once and marks its scope as
//! poisoned. Later writes of a poisoned scope fail without being applied — they were computed
//! from state that never reached the store — until [`Writer::settle`] clears the scope, which the
//! engine does before it reloads that scope's owner. A failed flush fails every write of its group
//! with [`StoreError::NotDurable`] and poisons their scopes: the changes are in the store (and will
//! be on disk after the next successful flush), so callers learn that the outcome is unknown, not
//! that nothing changed; the reload then shows the change, and memory equals the store.
//!
//! Failure of the store: if the flusher panics, or the backend reports that a background part of
//! it failed for good, the writer is *failed*: the group being flushed ends NotDurable, every later
//! submit and settle fails at once with [`StoreError::Failed`] (never waiting out a timeout), and
//! [`Writer::failure`] says why until the process restarts.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex, MutexGuard};
use foldhash::fast::RandomState;
use tokio::sync::oneshot;

use crate::completion::Needed;
use crate::{Backend, Completion, Durability, StoreError, WriteBatch};

/// Where a settle's outcome goes.
type Settled = oneshot::Sender<Result<(), StoreError>>;

/// Every counter's value, by key.
type Counters = HashMap<Vec<u8>, i64, RandomState>;

/// How long the flusher, idle after a flush, waits for the next waiter before it sleeps until
/// woken: the longest a write that no one waits on stays unflushed after its apply (sync mode).
pub(crate) const NAP: Duration = Duration::from_millis(2);

/// What the flusher is doing, so whoever has work for it knows whether to wake it.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Flusher {
    #[default]
    Busy,
    /// Waiting at most [`NAP`]: woken by a waiter (or a settle), not by an apply.
    Napping,
    /// Waiting until woken, by anyone with work for it.
    Asleep,
}

/// What the flusher has to do, guarded by one mutex that also orders every apply.
#[derive(Default)]
struct Queue {
    /// Applied, not yet flushed (sync mode), in apply order.
    pending: Pending,
    /// Settle barriers, answered after the flush of every write applied before them.
    settles: Vec<(Option<Vec<u8>>, Settled)>,
    poisoned: HashSet<Vec<u8>, RandomState>,
    /// Async mode: when the oldest unflushed write was applied.
    dirty_since: Option<Instant>,
    flusher: Flusher,
    /// Sync writes applied so far: a nap in which this did not move ends in sleep.
    applied: u64,
    closing: bool,
    /// Why the store failed for good, once it has.
    failed: Option<String>,
    /// Every counter's value as of the last applied batch (`WriteBatch::add`): additions are
    /// resolved here, under the lock that orders applies, into puts of the new values — so the
    /// log holds values, replay needs no arithmetic, and two writers never lose an addition.
    counters: Counters,
}

/// Writes applied and not yet flushed, in apply order: each one's completion and scope. The
/// scopes share one buffer, so queueing a write copies its scope without an allocation of its
/// own (they are needed only to poison them after a failed flush).
#[derive(Default)]
struct Pending {
    scopes: Vec<u8>,
    /// Each write's completion and where its scope ends in `scopes`.
    writes: Vec<(usize, Completion)>,
}

impl Pending {
    fn push(&mut self, scope: &[u8], done: Completion) {
        self.scopes.extend_from_slice(scope);
        self.writes.push((self.scopes.len(), done));
    }

    fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Empty, keeping its buffers.
    fn clear(&mut self) {
        self.scopes.clear();
        self.writes.clear();
    }

    fn len(&self) -> usize {
        self.writes.len()
    }

    /// Each write's scope and completion, in apply order.
    fn iter(&self) -> impl Iterator<Item = (&[u8], &Completion)> {
        let starts = std::iter::once(0).chain(self.writes.iter().map(|(end, _)| *end));
        starts
            .zip(&self.writes)
            .map(|(start, (end, done))| (&self.scopes[start..*end], done))
    }

    /// Queues `later`'s writes after these.
    fn append(&mut self, later: Pending) {
        let offset = self.scopes.len();
        self.scopes.extend_from_slice(&later.scopes);
        self.writes.extend(
            later
                .writes
                .into_iter()
                .map(|(end, done)| (end + offset, done)),
        );
    }
}

struct Shared {
    backend: Arc<dyn Backend>,
    durability: Durability,
    /// The first byte of every counter's key (`Layout::counter_tag`).
    counter_tag: u8,
    queue: Mutex<Queue>,
    wake: Condvar,
    metrics: WriterMetrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock()
    }

    fn wake_flusher(&self, queue: &mut Queue) {
        if queue.flusher != Flusher::Busy {
            queue.flusher = Flusher::Busy;
            self.wake.notify_one();
        }
    }
}

impl Needed for Shared {
    /// A caller waits for a sync write: the flusher starts (unless it is busy, when the write is
    /// in its flush or its next one).
    fn needed(&self) {
        let mut queue = self.lock();
        if !queue.pending.is_empty() {
            self.wake_flusher(&mut queue);
        }
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        durability: Durability,
        counter_tag: u8,
    ) -> Result<Writer, StoreError> {
        let counters = read_counters(backend.as_ref(), counter_tag)?;
        let shared = Arc::new(Shared {
            backend,
            durability,
            counter_tag,
            queue: Mutex::new(Queue {
                counters,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            metrics: WriterMetrics::new(durability),
        });
        let flusher = shared.clone();
        let thread = std::thread::Builder::new()
            .name("latchkey-flusher".into())
            .spawn(move || run_flusher(&flusher))
            .map_err(|e| StoreError::Io(format!("cannot start flusher thread: {e}")))?;
        Ok(Writer {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(crate) fn durability(&self) -> Durability {
        self.shared.durability
    }

    /// Why the writer takes no more writes, once it has failed.
    pub(crate) fn failure(&self) -> Option<String> {
        self.shared.lock().failed.clone()
    }

    pub(crate) fn counter(&self, key: &[u8]) -> i64 {
        self.shared.lock().counters.get(key).copied().unwrap_or(0)
    }

    pub(crate) fn counters(&self) -> Vec<(Vec<u8>, i64)> {
        let queue = self.shared.lock();
        queue
            .counters
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Applies `batch` now (unless its scope is poisoned) and returns its completion.
    pub(crate) fn submit(&self, scope: &[u8], mut batch: WriteBatch) -> Completion {
        let shared = &self.shared;
        let mut queue = shared.lock();
        if queue.closing {
            return Completion::failed(StoreError::Closed);
        }
        if let Some(reason) = &queue.failed {
            return Completion::failed(StoreError::Failed(reason.clone()));
        }
        if queue.poisoned.contains(scope) {
            return Completion::failed(StoreError::Poisoned);
        }
        resolve_counters(&mut queue.counters, batch.take_adds(), &mut batch);
        if let Err(e) = shared.backend.apply(batch) {
            // Nothing was applied: the counters go back to what the store holds, read back
            // from it (rare, so the additions' keys moved into the batch instead of copied).
            match read_counters(shared.backend.as_ref(), shared.counter_tag) {
                Ok(counters) => queue.counters = counters,
                Err(read) => fail(
                    &mut queue,
                    format!("the counters could not be read back after a refused write: {read}"),
                ),
            }
            tracing::error!("store write refused: {e}");
            shared.metrics.failed_writes.increment(1);
            queue.poisoned.insert(scope.to_vec());
            return Completion::failed(e);
        }
        match shared.durability {
            // Held back by the medium: acknowledged after a flush, as in sync mode.
            Durability::Async { .. } if !shared.backend.is_holding() => {
                shared.metrics.writes.increment(1);
                if queue.dirty_since.is_none() {
                    queue.dirty_since = Some(Instant::now());
                    shared.wake_flusher(&mut queue);
                }
                Completion::done()
            }
            // Flushed when someone waits on it; a napping flusher takes it at the nap's end.
            Durability::Sync => {
                let writer: std::sync::Weak<dyn Needed> = Arc::downgrade(shared) as _;
                let done = Completion::needed_by(writer);
                queue.pending.push(scope, done.clone());
                queue.applied += 1;
                if queue.flusher == Flusher::Asleep {
                    shared.wake_flusher(&mut queue);
                }
                done
            }
            Durability::Async { .. } => {
                let done = Completion::pending();
                queue.pending.push(scope, done.clone());
                shared.wake_flusher(&mut queue);
                done
            }
        }
    }

    /// Waits until every write applied before this call has completed, and clears `scope`'s
    /// poison mark.
    pub(crate) async fn settle(&self, scope: Option<&[u8]>) -> Result<(), StoreError> {
        let wait = {
            let mut queue = self.shared.lock();
            if let Some(reason) = &queue.failed {
                return Err(StoreError::Failed(reason.clone()));
            }
            if queue.pending.is_empty() {
                // Nothing unflushed (or async, where applied is complete): settle here.
                if let Some(scope) = scope {
                    queue.poisoned.remove(scope);
                }
                return Ok(());
            }
            if queue.closing {
                return Err(StoreError::Closed);
            }
            let (done, wait) = oneshot::channel();
            queue.settles.push((scope.map(<[u8]>::to_vec), done));
            self.shared.wake_flusher(&mut queue);
            wait
        };
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Flushes what is applied, stops the flusher and fails later submits with `Closed`.
    pub(crate) fn close(&self) -> Result<(), StoreError> {
        {
            let mut queue = self.shared.lock();
            if queue.closing {
                return Ok(());
            }
            queue.closing = true;
            queue.flusher = Flusher::Busy;
            self.shared.wake.notify_one();
        }
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
        self.shared.backend.flush()
    }
}

/// Every counter's value as `backend` holds it.
fn read_counters(backend: &dyn Backend, counter_tag: u8) -> Result<Counters, StoreError> {
    let mut counters = Counters::default();
    for entry in backend.scan_prefix(&[counter_tag]) {
        let (key, value) = entry?;
        counters.insert(key, crate::counter_value(&value));
    }
    Ok(counters)
}

/// Turns `adds` into puts of the counters' new values in `batch`, updating `counters`.
fn resolve_counters(counters: &mut Counters, adds: Vec<(Vec<u8>, i64)>, batch: &mut WriteBatch) {
    for (key, delta) in adds {
        let value = match counters.get_mut(&key) {
            Some(value) => value,
            None => counters.entry(key.clone()).or_insert(0),
        };
        *value = value.wrapping_add(delta);
        let bytes = value.to_be_bytes().to_vec();
        batch.put(key, bytes);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!("closing the store writer: {e}");
        }
    }
}

/// The writer's metrics, registered once when it starts.
struct WriterMetrics {
    batch_size: metrics::Histogram,
    flush_seconds: metrics::Histogram,
    writes: metrics::Counter,
    failed_writes: metrics::Counter,
}

impl WriterMetrics {
    fn new(durability: Durability) -> Self {
        let mode = match durability {
            Durability::Sync => "sync",
            Durability::Async { .. } => "async",
        };
        metrics::gauge!("latchkey_durability_mode", "mode" => mode).set(1.0);
        WriterMetrics {
            batch_size: metrics::histogram!("latchkey_store_batch_size"),
            flush_seconds: metrics::histogram!("latchkey_store_flush_seconds"),
            writes: metrics::counter!("latchkey_store_writes_total"),
            failed_writes: metrics::counter!("latchkey_store_failed_writes_total"),
        }
    }
}

/// One flush of the backend, timed. A panic inside it, or a backend that has failed for good,
/// is the store's failure: `Err(reason)` — the store must not be written any more.
fn flush(shared: &Shared) -> Result<Result<(), StoreError>, String> {
    if let Some(reason) = shared.backend.failure() {
        return Err(reason);
    }
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| shared.backend.flush()))
        .map_err(|panic| format!("the flusher panicked: {}", panic_text(&panic)))?;
    shared.metrics.flush_seconds.record(started.elapsed());
    Ok(result)
}

/// A panic's message, when it has one.
pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Marks the writer failed: logged once, every later submit and settle refused at once.
fn fail(queue: &mut Queue, reason: String) {
    if queue.failed.is_none() {
        tracing::error!("{reason}; the store takes no more writes until the process restarts");
        queue.failed = Some(reason.clone());
    }
    for (_, done) in std::mem::take(&mut queue.pending).iter() {
        done.finish(Err(StoreError::NotDurable(reason.clone())));
    }
    for (_, done) in queue.settles.drain(..) {
        let _ = done.send(Err(StoreError::Failed(reason.clone())));
    }
}

/// The flusher thread: one flush per group of applied writes (sync), or per interval (async).
fn run_flusher(shared: &Shared) {
    // No waiting for a group to grow: the writes applied during one sync are the next group.
    // (A 300 µs window after groups of ≥ 4 made the groups twice as big but, on the 2-core
    // machine measured, did not raise closed-loop throughput and added its 0.3 ms to every
    // write under moderate load: open-loop p99 at half peak ≈ 4.5 ms with it, ≈ 3 ms without.)
    // The last group's buffers, emptied: the next group is queued into them, so they do not
    // grow again from nothing after every flush.
    let mut spare = Pending::default();
    loop {
        let (mut writes, settles) = {
            let mut queue = shared.lock();
            // Writes applied as of the last nap's start: the first wait after a flush is a nap.
            let mut napped_at = None;
            loop {
                if !queue.pending.is_empty() || !queue.settles.is_empty() {
                    break;
                }
                if queue.closing {
                    return; // `close` flushes what async mode left unflushed
                }
                match (shared.durability, queue.dirty_since) {
                    (Durability::Sync, _) if napped_at != Some(queue.applied) => {
                        napped_at = Some(queue.applied);
                        queue.flusher = Flusher::Napping;
                        shared.wake.wait_for(&mut queue, NAP);
                    }
                    (Durability::Async { flush_interval }, Some(since)) => {
                        let left =
                            (since + flush_interval).saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            queue.dirty_since = None;
                            let outcome = MutexGuard::unlocked(&mut queue, || flush(shared));
                            match outcome {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => tracing::error!("periodic flush failed: {e}"),
                                Err(reason) => fail(&mut queue, reason),
                            }
                        } else {
                            queue.flusher = Flusher::Asleep;
                            shared.wake.wait_for(&mut queue, left);
                        }
                    }
                    _ => {
                        queue.flusher = Flusher::Asleep;
                        shared.wake.wait(&mut queue);
                    }
                }
                queue.flusher = Flusher::Busy;
            }
            (
                std::mem::replace(&mut queue.pending, std::mem::take(&mut spare)),
                std::mem::take(&mut queue.settles),
            )
        };

        if !writes.is_empty() {
            let count = writes.len();
            shared.metrics.batch_size.record(count as f64);
            match flush(shared) {
                Ok(Ok(())) => {
                    shared.metrics.writes.increment(count as u64);
                    for (_, done) in writes.iter() {
                        done.finish(Ok(()));
                    }
                }
                // Applied but not confirmed on disk: callers must not be told "nothing changed".
                Ok(Err(e)) => {
                    let e = StoreError::NotDurable(e.to_string());
                    tracing::error!("flush of {count} commands failed: {e}");
                    shared.metrics.failed_writes.increment(count as u64);
                    let mut queue = shared.lock();
                    for (scope, done) in writes.iter() {
                        done.finish(Err(e.clone()));
                        queue.poisoned.insert(scope.to_vec());
                    }
                }
                Err(reason) => {
                    // Failed first: whoever learns of this group's outcome finds the store failed.
                    let mut queue = shared.lock();
                    queue.settles.extend(settles);
                    let later = std::mem::replace(&mut queue.pending, writes);
                    queue.pending.append(later);
                    fail(&mut queue, reason);
                    continue;
                }
            }
        }

        // A settle answers after the flush of what was applied before it; its caller reloads
        // from the store, so the scope it names starts clean.
        if !settles.is_empty() {
            let mut queue = shared.lock();
            for (scope, done) in settles {
                if let Some(scope) = scope {
                    queue.poisoned.remove(&scope);
                }
                let _ = done.send(Ok(()));
            }
        }
        writes.clear();
        spare = writes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex as StdMutex;

    /// An in-memory backend that can be told to fail.
    #[derive(Default)]
    struct FlakyBackend {
        data: StdMutex<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
        fail: AtomicBool,
        fail_scan: AtomicBool,
        fail_flush: AtomicBool,
        panic_flush: AtomicBool,
        flush_delay_ms: std::sync::atomic::AtomicU64,
        flushes: AtomicUsize,
        holding: AtomicBool,
    }

    impl Backend for FlakyBackend {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.data.lock().unwrap().get(key).cloned())
        }
        fn scan_prefix(&self, prefix: &[u8]) -> crate::KvIter<'_> {
            if self.fail_scan.load(Ordering::SeqCst) {
                return Box::new(std::iter::once(Err(StoreError::Io("injected".into()))));
            }
            let items: Vec<_> = self
                .data
                .lock()
                .unwrap()
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| Ok((k.clone(), v.clone())))
                .collect();
            Box::new(items.into_iter())
        }
        fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Io("injected".into()));
            }
            let mut data = self.data.lock().unwrap();
            for (k, v) in batch.ops() {
                match v {
                    Some(v) => data.insert(k.clone(), v.clone()),
                    None => data.remove(k),
                };
            }
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            let delay = self.flush_delay_ms.load(Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(delay));
            self.flushes.fetch_add(1, Ordering::SeqCst);
            if self.fail_flush.load(Ordering::SeqCst) {
                return Err(StoreError::Io("injected flush failure".into()));
            }
            if self.panic_flush.load(Ordering::SeqCst) {
                panic!("injected flush panic");
            }
            Ok(())
        }
        fn is_holding(&self) -> bool {
            self.holding.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn pending_writes_keep_their_scopes_in_order_when_requeued() {
        let scopes = |pending: &Pending| -> Vec<Vec<u8>> {
            pending.iter().map(|(scope, _)| scope.to_vec()).collect()
        };
        // As the flusher requeues a group whose flush failed the store: before what came since.
        let mut queue = Pending::default();
        queue.push(b"u1", Completion::pending());
        queue.push(b"", Completion::pending());
        queue.push(b"user-2", Completion::pending());
        let mut since = Pending::default();
        since.push(b"u3", Completion::pending());
        queue.append(since);
        assert_eq!(queue.len(), 4);
        assert_eq!(
            scopes(&queue),
            [b"u1".to_vec(), vec![], b"user-2".to_vec(), b"u3".to_vec()]
        );
    }

    fn put(key: &str) -> WriteBatch {
        let mut b = WriteBatch::default();
        b.put(key.as_bytes().to_vec(), b"v".to_vec());
        b
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_flushes() {
        let backend = Arc::new(FlakyBackend::default());
        let writer = Arc::new(Writer::start(backend.clone(), Durability::Sync, b'c').unwrap());
        let mut tasks = Vec::new();
        for i in 0..2000 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                writer.submit(b"s", put(&format!("k{i}"))).wait().await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(backend.data.lock().unwrap().len(), 2000);
        let flushes = backend.flushes.load(Ordering::SeqCst);
        assert!(
            flushes < 2000,
            "expected group commit, got {flushes} flushes"
        );
    }

    #[tokio::test]
    async fn failed_write_poisons_its_scope_until_settled() {
        let backend = Arc::new(FlakyBackend::default());
        let writer = Writer::start(backend.clone(), Durability::Sync, b'c').unwrap();
        backend.fail.store(true, Ordering::SeqCst);
        assert!(writer.submit(b"u1", put("a")).wait().await.is_err());
        backend.fail.store(false, Ordering::SeqCst);
        // same scope: refused, since it may build on the lost write
        let err = writer.submit(b"u1", put("b")).wait().await.unwrap_err();
        assert!(matches!(err, StoreError::Poisoned));
        // other scopes are unaffected
        writer.submit(b"u2", put("c")).wait().await.unwrap();
        writer.settle(Some(b"u1")).await.unwrap();
        writer.submit(b"u1", put("d")).wait().await.unwrap();
        let data = backend.data.lock().unwrap();
        assert!(!data.contains_key(b"a".as_slice()) && !data.contains_key(b"b".as_slice()));
        assert!(data.contains_key(b"c".as_slice()) && data.contains_key(b"d".as_slice()));
    }

    #[tokio::test]
    async fn a_refused_write_leaves_its_counters_as_the_store_holds_them() {
        let backend = Arc::new(FlakyBackend::default());
        let writer = Writer::start(backend.clone(), Durability::Sync, b'c').unwrap();
        let add = |delta| {
            let mut batch = WriteBatch::default();
            batch.add(b"cn".to_vec(), delta);
            batch.add(b"cn".to_vec(), delta);
            batch
        };
        writer.submit(b"u1", add(1)).wait().await.unwrap();
        backend.fail.store(true, Ordering::SeqCst);
        assert!(writer.submit(b"u2", add(5)).wait().await.is_err());
        backend.fail.store(false, Ordering::SeqCst);
        assert_eq!(writer.counter(b"cn"), 2);
        writer.submit(b"u3", add(-1)).wait().await.unwrap();
        assert_eq!(writer.counter(b"cn"), 0);
        let stored = backend.data.lock().unwrap().get(b"cn".as_slice()).cloned();
        assert_eq!(stored, Some(0i64.to_be_bytes().to_vec()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_that_cannot_be_read_back_after_a_refused_write_fail_the_store() {
        let backend = Arc::new(FlakyBackend::default());
        let writer = Writer::start(backend.clone(), Durability::Sync, b'c').unwrap();
        let mut add = WriteBatch::default();
        add.add(b"cn".to_vec(), 1);
        backend.fail.store(true, Ordering::SeqCst);
        backend.fail_scan.store(true, Ordering::SeqCst);
        assert!(writer.submit(b"u1", add.clone()).wait().await.is_err());
        backend.fail.store(false, Ordering::SeqCst);
        backend.fail_scan.store(false, Ordering::SeqCst);
        // The counters in memory may be wrong now: nothing more is written.
        let reason = writer.failure().expect("the store failed");
        assert!(reason.contains("counters"), "{reason}");
        let next = writer.submit(b"u2", add).wait().await;
        assert!(matches!(next, Err(StoreError::Failed(_))), "{next:?}");
    }

    #[tokio::test]
    async fn a_failed_flush_is_an_unknown_outcome_and_poisons_until_settled() {
        let backend = Arc::new(FlakyBackend::default());
        let writer = Writer::start(backend.clone(), Durability::Sync, b'c').unwrap();
        backend.fail_flush.store(true, Ordering::SeqCst);
        let err = writer.submit(b"u1", put("a")).wait().await.unwrap_err();
        assert!(matches!(err, StoreError::NotDurable(_)), "{err}");
        backend.fail_flush.store(false, Ordering::SeqCst);
        // applied, so the store shows it (it is durable once a later flush succeeds)
        assert!(backend.data.lock().unwrap().contains_key(b"a".as_slice()));
        let err = writer.submit(b"u1", put("b")).wait().await.unwrap_err();
        assert!(matches!(err, StoreError::Poisoned));
        writer.submit(b"u2", put("c")).wait().await.unwrap();
        writer.settle(Some(b"u1")).await.unwrap();
        writer.submit(b"u1", put("d")).wait().await.unwrap();
    }

    /// The flusher starts for waiters, but a write that no one waits on — an automatic unlock
    /// made on an actor's tick, a write whose caller went away — is made durable all the same:
    /// by the flusher's nap after a flush, or by waking it from sleep.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_no_one_waits_on_are_flushed_anyway() {
        let backend = Arc::new(FlakyBackend::default());
        let writer = Writer::start(backend.clone(), Durability::Sync, b'c').unwrap();
        // Long after start the flusher is asleep: an apply wakes it. Right after that flush it
        // naps: an apply then is taken at the nap's end.
        tokio::time::sleep(NAP * 10).await;
        for key in ["while asleep", "while napping"] {
            let write = writer.submit(b"s", put(key));
            // Liveness bound, far beyond a nap and a flush of the in-memory backend.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            while write.poll_result().is_none() {
                assert!(Instant::now() < deadline, "{key}: never flushed");
                tokio::task::yield_now().await;
            }
            assert!(matches!(write.poll_result(), Some(Ok(()))), "{key}");
        }
        assert!(backend.flushes.load(Ordering::SeqCst) >= 1);
        writer.close().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn settle_returns_only_after_earlier_writes_completed() {
        let backend = Arc::new(FlakyBackend::default());
        backend.flush_delay_ms.store(50, Ordering::SeqCst);
        let writer = Writer::start(backend.clone(), Durability::Sync, b'c').unwrap();
        let pending: Vec<_> = (0..5)
            .map(|i| writer.submit(b"s", put(&format!("k{i}"))))
            .collect();
        // each flush takes 50 ms, so the last write cannot be durable yet
        assert!(pending.last().unwrap().poll_result().is_none());
        writer.settle(None).await.unwrap();
        for completion in &pending {
            assert!(
                matches!(completion.poll_result(), Some(Ok(()))),
                "settle returned before a write it follows was durable"
            );
        }
    }

    #[tokio::test]
    async fn async_mode_flushes_on_its_timer_and_on_close() {
        let backend = Arc::new(FlakyBackend::default());
        let durability = Durability::Async {
            flush_interval: std::time::Duration::from_millis(5),
        };
        let writer = Writer::start(backend.clone(), durability, b'c').unwrap();
        writer.submit(b"s", put("a")).wait().await.unwrap();
        let mut flushed = false;
        for _ in 0..200 {
            if backend.flushes.load(Ordering::SeqCst) > 0 {
                flushed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(flushed, "the periodic flush never ran");
        writer.close().unwrap();
        let err = writer.submit(b"s", put("b")).wait().await.unwrap_err();
        assert!(matches!(err, StoreError::Closed));
    }

    /// While the medium holds writers back, an async write is acknowledged only after a flush
    /// (which the medium holds), as a sync one; otherwise at once.
    #[tokio::test]
    async fn async_writes_wait_for_the_flush_while_the_medium_holds_writers() {
        let backend = Arc::new(FlakyBackend::default());
        let durability = Durability::Async {
            flush_interval: std::time::Duration::from_secs(3600),
        };
        let writer = Writer::start(backend.clone(), durability, b'c').unwrap();
        assert!(matches!(
            writer.submit(b"s", put("a")).poll_result(),
            Some(Ok(()))
        ));
        assert_eq!(backend.flushes.load(Ordering::SeqCst), 0, "no flush needed");
        backend.holding.store(true, Ordering::SeqCst);
        writer.submit(b"s", put("b")).wait().await.unwrap();
        assert!(
            backend.flushes.load(Ordering::SeqCst) >= 1,
            "acknowledged only after a flush"
        );
        writer.close().unwrap();
    }

    #[tokio::test]
    async fn a_panicking_flush_fails_the_store_at_once_and_says_why() {
        let backend = Arc::new(FlakyBackend::default());
        let writer = Writer::start(backend.clone(), Durability::Sync, b'c').unwrap();
        writer.submit(b"u1", put("a")).wait().await.unwrap();
        assert_eq!(writer.failure(), None);
        backend.panic_flush.store(true, Ordering::SeqCst);
        let err = writer.submit(b"u1", put("b")).wait().await.unwrap_err();
        assert!(matches!(err, StoreError::NotDurable(_)), "{err}");
        let reason = writer.failure().expect("failed");
        assert!(reason.contains("injected flush panic"), "{reason}");
        // Everything after is refused at once, applied nowhere, even once the medium works.
        backend.panic_flush.store(false, Ordering::SeqCst);
        let started = Instant::now();
        let err = writer.submit(b"u2", put("c")).wait().await.unwrap_err();
        assert!(matches!(err, StoreError::Failed(_)), "{err}");
        assert!(matches!(
            writer.settle(Some(b"u2")).await,
            Err(StoreError::Failed(_))
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(!backend.data.lock().unwrap().contains_key(b"c".as_slice()));
    }
}
