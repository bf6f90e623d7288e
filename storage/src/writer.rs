//! The group-commit writer: one OS thread that owns every write to the backend.
//!
//! Actors never touch the disk. They hand a [`WriteBatch`] to [`Writer::submit`] and get a
//! [`Completion`] back at once, so an actor can apply its next command while the previous one is
//! still being written (pipelined commit). The thread drains everything queued, applies it as one
//! atomic batch, flushes once (in `sync` mode), then completes every write of the batch. Under
//! load many actors share one fsync; alone, a write waits for at most one flush.
//!
//! The flush is a blocking sled call, so it runs here and never on the async workers (with sled
//! 0.34, `flush_async` awaited by many tasks at once was measured to stall).
//!
//! Failure: a failed batch fails every write in it and marks each writer's scope (its user) as
//! poisoned. Later writes of a poisoned scope fail without being applied — they were computed
//! from state that never reached the disk — until [`Writer::settle`] clears the scope, which the
//! engine does before it reloads that user from disk. A batch whose apply succeeded but whose
//! flush failed fails with [`StoreError::NotDurable`]: its change is in the store (and will be on
//! disk after the next successful flush), so its callers learn that the outcome is unknown, not
//! that nothing changed; the reload then shows the change, and memory equals the store.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use crate::{Backend, Durability, StoreError};

/// Puts and deletes that must land together (all or none).
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    fn append(&mut self, other: WriteBatch) {
        if self.ops.is_empty() {
            self.ops = other.ops;
        } else {
            self.ops.extend(other.ops);
        }
    }
}

/// How long a busy writer waits for more writes before it flushes (see `WriterThread::gather`).
const COMMIT_WINDOW: Duration = Duration::from_micros(150);

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

struct CompletionState {
    state: AtomicU8,
    error: OnceLock<StoreError>,
    notify: Notify,
}

/// The outcome of one submitted write, shared by everyone whose reply depends on it: the caller
/// of the command that wrote it, and callers of later reads that observed its state.
#[derive(Clone)]
pub struct Completion(Arc<CompletionState>);

impl Completion {
    fn pending() -> Self {
        Completion(Arc::new(CompletionState {
            state: AtomicU8::new(PENDING),
            error: OnceLock::new(),
            notify: Notify::new(),
        }))
    }

    /// A completion that is already durable (nothing to wait for).
    pub fn done() -> Self {
        let c = Self::pending();
        c.0.state.store(DONE, Ordering::Release);
        c
    }

    fn finish(&self, result: Result<(), StoreError>) {
        let state = match result {
            Ok(()) => DONE,
            Err(e) => {
                let _ = self.0.error.set(e);
                FAILED
            }
        };
        self.0.state.store(state, Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// `None` while pending, then the outcome.
    pub fn poll_result(&self) -> Option<Result<(), StoreError>> {
        match self.0.state.load(Ordering::Acquire) {
            PENDING => None,
            DONE => Some(Ok(())),
            _ => Some(Err(self
                .0
                .error
                .get()
                .cloned()
                .unwrap_or(StoreError::Io("write failed".into())))),
        }
    }

    /// Resolves once the write is durable (sync) / applied (async), or failed.
    pub async fn wait(&self) -> Result<(), StoreError> {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a finish between the check and the await is not missed.
            notified.as_mut().enable();
            if let Some(result) = self.poll_result() {
                return result;
            }
            notified.await;
        }
    }
}

enum Request {
    Write {
        scope: Vec<u8>,
        batch: WriteBatch,
        done: Completion,
    },
    Settle {
        scope: Option<Vec<u8>>,
        done: oneshot::Sender<()>,
    },
    Close(mpsc::Sender<Result<(), StoreError>>),
}

struct Shared {
    /// Writes submitted and not yet completed.
    in_flight: AtomicUsize,
    /// Number of poisoned scopes (mirrors the writer thread's set).
    poisoned: AtomicUsize,
    closed: AtomicBool,
}

pub(crate) struct Writer {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    durability: Durability,
}

impl Writer {
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        durability: Durability,
        max_batch: usize,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            poisoned: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("latchkey-writer".into())
            .spawn(move || {
                WriterThread {
                    metrics: WriterMetrics::new(durability),
                    rx,
                    backend,
                    durability,
                    max_batch,
                    shared: thread_shared,
                    poisoned: HashSet::new(),
                    dirty_since: None,
                }
                .run()
            })
            .map_err(|e| StoreError::Io(format!("cannot start writer thread: {e}")))?;
        Ok(Writer {
            tx,
            shared,
            thread: Mutex::new(Some(thread)),
            durability,
        })
    }

    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    pub(crate) fn submit(&self, scope: &[u8], batch: WriteBatch) -> Completion {
        let done = Completion::pending();
        if self.shared.closed.load(Ordering::Acquire) {
            done.finish(Err(StoreError::Closed));
            return done;
        }
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let request = Request::Write {
            scope: scope.to_vec(),
            batch,
            done: done.clone(),
        };
        if self.tx.send(request).is_err() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            done.finish(Err(StoreError::Closed));
        }
        done
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    pub(crate) async fn settle(&self, scope: Option<&[u8]>) -> Result<(), StoreError> {
        if self.shared.in_flight.load(Ordering::Acquire) == 0
            && self.shared.poisoned.load(Ordering::Acquire) == 0
        {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        let request = Request::Settle {
            scope: scope.map(<[u8]>::to_vec),
            done,
        };
        self.tx.send(request).map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)
    }

    pub(crate) fn close(&self) -> Result<(), StoreError> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (ack, result) = mpsc::channel();
        let outcome = match self.tx.send(Request::Close(ack)) {
            Ok(()) => result.recv().unwrap_or(Err(StoreError::Closed)),
            Err(_) => Err(StoreError::Closed),
        };
        if let Ok(mut thread) = self.thread.lock() {
            if let Some(handle) = thread.take() {
                let _ = handle.join();
            }
        }
        outcome
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
    apply_seconds: metrics::Histogram,
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
            apply_seconds: metrics::histogram!("latchkey_store_apply_seconds"),
            flush_seconds: metrics::histogram!("latchkey_store_flush_seconds"),
            writes: metrics::counter!("latchkey_store_writes_total"),
            failed_writes: metrics::counter!("latchkey_store_failed_writes_total"),
        }
    }
}

struct WriterThread {
    metrics: WriterMetrics,
    rx: mpsc::Receiver<Request>,
    backend: Arc<dyn Backend>,
    durability: Durability,
    max_batch: usize,
    shared: Arc<Shared>,
    poisoned: HashSet<Vec<u8>>,
    /// Async mode: when the oldest unflushed write was applied.
    dirty_since: Option<Instant>,
}

impl WriterThread {
    fn run(mut self) {
        let mut requests = Vec::with_capacity(self.max_batch);
        let mut last_batch = 0;
        loop {
            let first = match self.next_request() {
                Some(request) => request,
                None => {
                    // every sender is gone: make what was applied durable and stop
                    let _ = self.flush_if_dirty();
                    return;
                }
            };
            requests.push(first);
            self.gather(&mut requests, last_batch);
            last_batch = requests.len();
            if self.process(&mut requests) {
                return;
            }
        }
    }

    /// Collects what is queued behind the first request. When the previous batch showed
    /// concurrency (several writers), it also waits up to [`COMMIT_WINDOW`] for more: one flush
    /// then serves more commands, which costs far less CPU than flushing (and waking sled's I/O
    /// threads) for each small batch. A lone writer never waits.
    fn gather(&self, requests: &mut Vec<Request>, last_batch: usize) {
        let window_ends = (last_batch >= 4).then(|| Instant::now() + COMMIT_WINDOW);
        while requests.len() < self.max_batch {
            match self.rx.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => {
                    let Some(ends) = window_ends else { break };
                    let left = ends.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match self.rx.recv_timeout(left) {
                        Ok(request) => requests.push(request),
                        Err(_) => break,
                    }
                }
            }
        }
    }

    /// Blocks for the next request; in async mode wakes up to flush when the interval is due.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            let deadline = match (self.durability, self.dirty_since) {
                (Durability::Async { flush_interval }, Some(since)) => Some(since + flush_interval),
                _ => None,
            };
            match deadline {
                None => return self.rx.recv().ok(),
                Some(deadline) => {
                    let timeout = deadline.saturating_duration_since(Instant::now());
                    match self.rx.recv_timeout(timeout) {
                        Ok(request) => return Some(request),
                        Err(RecvTimeoutError::Timeout) => {
                            if let Err(e) = self.flush_if_dirty() {
                                tracing::error!("periodic flush failed: {e}");
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => return None,
                    }
                }
            }
        }
    }

    fn flush_if_dirty(&mut self) -> Result<(), StoreError> {
        if self.dirty_since.take().is_some() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.backend.flush();
        self.metrics.flush_seconds.record(started.elapsed());
        result
    }

    /// Applies one batch; returns true when the writer must stop.
    fn process(&mut self, requests: &mut Vec<Request>) -> bool {
        let mut batch = WriteBatch::default();
        let mut writes: Vec<(Vec<u8>, Completion)> = Vec::with_capacity(requests.len());
        let mut settles = Vec::new();
        let mut close = None;
        for request in requests.drain(..) {
            match request {
                Request::Write {
                    scope,
                    batch: b,
                    done,
                } => {
                    if self.poisoned.contains(&scope) {
                        done.finish(Err(StoreError::Poisoned));
                        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                    } else {
                        batch.append(b);
                        writes.push((scope, done));
                    }
                }
                Request::Settle { scope, done } => settles.push((scope, done)),
                Request::Close(ack) => close = Some(ack),
            }
        }

        if !writes.is_empty() {
            self.metrics.batch_size.record(writes.len() as f64);
            let started = Instant::now();
            let applied = self.backend.apply(&batch);
            self.metrics.apply_seconds.record(started.elapsed());
            let outcome = match (applied, self.durability) {
                // Applied but not confirmed on disk: callers must not be told "nothing changed".
                (Ok(()), Durability::Sync) => self
                    .flush()
                    .map_err(|e| StoreError::NotDurable(e.to_string())),
                (Ok(()), Durability::Async { .. }) => {
                    self.dirty_since.get_or_insert_with(Instant::now);
                    Ok(())
                }
                (Err(e), _) => Err(e),
            };
            let count = writes.len();
            match outcome {
                Ok(()) => {
                    self.metrics.writes.increment(count as u64);
                    for (_, done) in writes {
                        done.finish(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!("store write of {count} commands failed: {e}");
                    self.metrics.failed_writes.increment(count as u64);
                    for (scope, done) in writes {
                        done.finish(Err(e.clone()));
                        self.poisoned.insert(scope);
                    }
                }
            }
            self.shared.in_flight.fetch_sub(count, Ordering::AcqRel);
        }

        // A settle answers after the batch's outcome is known; its caller reloads from disk, so
        // the scope it names starts clean.
        for (scope, done) in settles {
            if let Some(scope) = scope {
                self.poisoned.remove(&scope);
            }
            let _ = done.send(());
        }
        self.shared
            .poisoned
            .store(self.poisoned.len(), Ordering::Release);

        if let Durability::Async { flush_interval } = self.durability {
            if self
                .dirty_since
                .is_some_and(|since| since.elapsed() >= flush_interval)
            {
                if let Err(e) = self.flush_if_dirty() {
                    tracing::error!("periodic flush failed: {e}");
                }
            }
        }

        if let Some(ack) = close {
            let _ = ack.send(self.flush_if_dirty().and_then(|()| self.flush()));
            // Fail whatever raced in after the close.
            while let Ok(request) = self.rx.try_recv() {
                match request {
                    Request::Write { done, .. } => {
                        done.finish(Err(StoreError::Closed));
                        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                    Request::Settle { done, .. } => drop(done),
                    Request::Close(ack) => {
                        let _ = ack.send(Ok(()));
                    }
                }
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex as StdMutex;

    /// An in-memory backend that can be told to fail.
    #[derive(Default)]
    struct FlakyBackend {
        data: StdMutex<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
        fail: AtomicBool,
        flushes: AtomicUsize,
    }

    impl Backend for FlakyBackend {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.data.lock().unwrap().get(key).cloned())
        }
        fn scan_prefix(&self, prefix: &[u8]) -> crate::KvIter<'_> {
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
        fn apply(&self, batch: &WriteBatch) -> Result<(), StoreError> {
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
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn put(key: &str) -> WriteBatch {
        let mut b = WriteBatch::default();
        b.put(key.as_bytes().to_vec(), b"v".to_vec());
        b
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_flushes() {
        let backend = Arc::new(FlakyBackend::default());
        let writer = Arc::new(Writer::start(backend.clone(), Durability::Sync, 1024).unwrap());
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
        let writer = Writer::start(backend.clone(), Durability::Sync, 1024).unwrap();
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
    async fn async_mode_flushes_on_its_timer_and_on_close() {
        let backend = Arc::new(FlakyBackend::default());
        let durability = Durability::Async {
            flush_interval: std::time::Duration::from_millis(5),
        };
        let writer = Writer::start(backend.clone(), durability, 1024).unwrap();
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
}
