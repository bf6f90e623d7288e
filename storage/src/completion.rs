//! What a write is and how its outcome reaches whoever waits for it: a [`WriteBatch`] is the
//! puts and deletes of one command, applied all or none; its [`Completion`] resolves once the
//! batch is durable (or applied, in `async` mode), or failed. The writer (`writer.rs`) makes and
//! finishes completions; the engine's callers wait on them.
//!
//! A sync write's completion tells its writer when someone starts waiting on it ([`Needed`]):
//! the writer starts a flush then rather than at the apply (`writer.rs` says why).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use tokio::sync::Notify;

use crate::StoreError;

/// Room a batch takes at its first op (and first addition): a command's batch — its event,
/// snapshot, index entries, lockout record, and the counts' new values the writer adds — fits,
/// so it is allocated once instead of growing four or five times.
const FEW_OPS: usize = 16;
const FEW_ADDS: usize = 4;

/// Puts and deletes that must land together (all or none), and additions to counters.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Counter additions, turned into puts of the new values by the writer (`writer.rs`), in
    /// apply order, so concurrent writers' additions never overwrite each other.
    adds: Vec<(Vec<u8>, i64)>,
}

impl WriteBatch {
    /// Adds `delta` to the counter `key` (its first byte must be the layout's counter tag;
    /// a counter that was never written is 0). Only batches submitted to a store may add:
    /// the store's writer resolves additions; a backend applies puts and deletes only.
    pub fn add(&mut self, key: Vec<u8>, delta: i64) {
        if self.adds.capacity() == 0 {
            self.adds.reserve(FEW_ADDS);
        }
        self.adds.push((key, delta));
    }
    pub fn adds(&self) -> &[(Vec<u8>, i64)] {
        &self.adds
    }
    pub(crate) fn take_adds(&mut self) -> Vec<(Vec<u8>, i64)> {
        std::mem::take(&mut self.adds)
    }
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.push((key, Some(value)));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.push((key, None));
    }
    fn push(&mut self, op: (Vec<u8>, Option<Vec<u8>>)) {
        if self.ops.capacity() == 0 {
            self.ops.reserve(FEW_OPS);
        }
        self.ops.push(op);
    }
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }
    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.adds.is_empty()
    }
}

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

struct CompletionState {
    state: AtomicU8,
    error: OnceLock<StoreError>,
    /// The first waiter's waker. Nearly every completion has one waiter, the caller of the
    /// command that wrote it; a waker slot costs it a fraction of a place in `notify`'s list.
    first: AtomicWaker,
    /// Someone took `first` (for good: a waiter that gave up leaves it taken).
    first_taken: AtomicBool,
    /// Every other waiter: callers of reads that observed the write's state.
    notify: Notify,
    /// Whom to tell that a waiter needs this write durable.
    needed: Option<Weak<dyn Needed>>,
}

/// The writer's side of [`Completion::wait`]: a waiter needs a pending write durable. Called
/// before the waiter parks; never blocks beyond the writer's lock.
pub(crate) trait Needed: Send + Sync {
    fn needed(&self);
}

/// The outcome of one submitted write, shared by everyone whose reply depends on it: the caller
/// of the command that wrote it, and callers of later reads that observed its state.
#[derive(Clone)]
pub struct Completion(Arc<CompletionState>);

impl Completion {
    /// A completion its maker finishes later with [`Completion::finish`] (the writer, or a
    /// journal).
    pub fn pending() -> Self {
        Self::with_needed(None)
    }

    /// A pending completion whose waiters tell `writer` they need it.
    pub(crate) fn needed_by(writer: Weak<dyn Needed>) -> Self {
        Self::with_needed(Some(writer))
    }

    fn with_needed(needed: Option<Weak<dyn Needed>>) -> Self {
        Completion(Arc::new(CompletionState {
            state: AtomicU8::new(PENDING),
            error: OnceLock::new(),
            first: AtomicWaker::new(),
            first_taken: AtomicBool::new(false),
            notify: Notify::new(),
            needed,
        }))
    }

    /// A completion that is already durable (nothing to wait for).
    pub fn done() -> Self {
        let c = Self::pending();
        c.0.state.store(DONE, Ordering::Release);
        c
    }

    /// A completion that has failed already.
    pub fn failed(error: StoreError) -> Self {
        let c = Self::pending();
        c.finish(Err(error));
        c
    }

    /// Resolves the completion and wakes its waiters. Only its maker calls this, once.
    pub fn finish(&self, result: Result<(), StoreError>) {
        let state = match result {
            Ok(()) => DONE,
            Err(e) => {
                let _ = self.0.error.set(e);
                FAILED
            }
        };
        self.0.state.store(state, Ordering::Release);
        self.0.first.wake();
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
        if let Some(result) = self.poll_result() {
            return result;
        }
        if let Some(writer) = self.0.needed.as_ref().and_then(Weak::upgrade) {
            writer.needed();
        }
        if !self.0.first_taken.swap(true, Ordering::AcqRel) {
            return std::future::poll_fn(|cx| {
                // Registered before the check, so a finish between the two still wakes us.
                self.0.first.register(cx.waker());
                self.poll_result().map_or(Poll::Pending, Poll::Ready)
            })
            .await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_learns_the_outcome_whichever_way_it_waits() {
        for outcome in [Ok(()), Err(StoreError::Io("disk gone".into()))] {
            let done = Completion::pending();
            let waiters: Vec<_> = (0..4)
                .map(|_| {
                    let done = done.clone();
                    tokio::spawn(async move { done.wait().await })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(20)).await;
            // From another thread, as the flusher does.
            let finisher = done.clone();
            let expected = format!("{outcome:?}");
            std::thread::spawn(move || finisher.finish(outcome))
                .join()
                .unwrap();
            for waiter in waiters {
                let woken = tokio::time::timeout(Duration::from_secs(10), waiter).await;
                let outcome = woken.expect("a waiter was never woken").unwrap();
                assert_eq!(format!("{outcome:?}"), expected);
            }
            // A waiter that comes after the finish.
            assert_eq!(format!("{:?}", done.wait().await), expected);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_that_gave_up_leaves_the_others_woken() {
        let done = Completion::pending();
        // The first waiter takes the waker slot, then gives up (as a caller past its deadline).
        let gave_up = tokio::time::timeout(Duration::from_millis(10), done.wait()).await;
        assert!(gave_up.is_err());
        let later = {
            let done = done.clone();
            tokio::spawn(async move { done.wait().await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        done.finish(Ok(()));
        let woken = tokio::time::timeout(Duration::from_secs(10), later).await;
        let woken = woken.expect("the later waiter was never woken").unwrap();
        assert!(woken.is_ok(), "{woken:?}");
    }
}
