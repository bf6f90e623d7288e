//! Test-only fault injection into the durable medium (feature `fault-injection`; never in the
//! default build): a [`FaultyBackend`] wraps the real backend and, as its [`Faults`] handle says,
//! refuses batches (nothing applied), applies them but fails the flush (the fsync or full-disk
//! case: applied, durability unknown), panics in the flush (a bug under the writer), delays
//! flushes (a stalled disk) or reads, or says it is busy in the background.
//!
//! Faults switch on and off while the store runs, so tests can check that Latchkey answers
//! promptly and correctly during the fault and recovers without a restart once it clears.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{Backend, KvIter, StoreError, WriteBatch};

/// The switches, shared between a test and the backend it wraps.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Switches>);

#[derive(Debug, Default)]
struct Switches {
    fail_apply: AtomicBool,
    fail_flush: AtomicBool,
    panic_flush: AtomicBool,
    delay_micros: AtomicU64,
    read_delay_micros: AtomicU64,
    busy: AtomicBool,
}

impl Faults {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every batch is refused before anything is applied.
    pub fn fail_apply(&self, on: bool) {
        self.0.fail_apply.store(on, Ordering::SeqCst);
    }

    /// Batches are applied but every flush fails.
    pub fn fail_flush(&self, on: bool) {
        self.0.fail_flush.store(on, Ordering::SeqCst);
    }

    /// Every flush panics (a bug in the medium, or one under it): the flusher thread must not
    /// die silently.
    pub fn panic_flush(&self, on: bool) {
        self.0.panic_flush.store(on, Ordering::SeqCst);
    }

    /// Every flush waits this long before it starts (zero: no delay): a stalled disk.
    pub fn delay_writes(&self, delay: Duration) {
        self.0
            .delay_micros
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Every point read waits this long (zero: no delay): a read stuck behind the medium.
    pub fn delay_reads(&self, delay: Duration) {
        self.0
            .read_delay_micros
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// The medium says it is busy in the background (as during a checkpoint), so readers that
    /// care move their reads off the async workers.
    pub fn report_busy(&self, on: bool) {
        self.0.busy.store(on, Ordering::SeqCst);
    }

    /// Clears every fault.
    pub fn clear(&self) {
        self.fail_apply(false);
        self.fail_flush(false);
        self.panic_flush(false);
        self.delay_writes(Duration::ZERO);
        self.delay_reads(Duration::ZERO);
        self.report_busy(false);
    }

    /// Wraps `backend` so these switches apply to it.
    pub fn wrap(&self, backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
        Arc::new(FaultyBackend {
            inner: backend,
            faults: self.clone(),
        })
    }
}

pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    faults: Faults,
}

impl Backend for FaultyBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let delay = self.faults.0.read_delay_micros.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        self.inner.get(key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        self.inner.scan_prefix(prefix)
    }

    fn scan_prefix_rev(&self, prefix: &[u8]) -> KvIter<'_> {
        self.inner.scan_prefix_rev(prefix)
    }

    fn snapshot(&self) -> Result<KvIter<'_>, StoreError> {
        self.inner.snapshot()
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if self.faults.0.fail_apply.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected fault: write refused".into()));
        }
        self.inner.apply(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let delay = self.faults.0.delay_micros.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if self.faults.0.fail_flush.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected fault: flush failed".into()));
        }
        if self.faults.0.panic_flush.load(Ordering::SeqCst) {
            #[allow(clippy::panic)] // the fault this switch injects
            {
                panic!("injected fault: flush panicked");
            }
        }
        self.inner.flush()
    }

    fn busy_in_background(&self) -> bool {
        self.faults.0.busy.load(Ordering::SeqCst) || self.inner.busy_in_background()
    }

    fn is_holding(&self) -> bool {
        self.inner.is_holding()
    }

    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }

    fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }
}
