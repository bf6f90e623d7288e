//! The log's background thread: checkpoints and spares.
//!
//! When the memtable grows big enough, the next flush freezes it and starts a new segment; this
//! thread copies the frozen table into sled in small batches, flushes sled, and only then retires
//! the segments the table came from and drops it. Until then reads see it (active table, then
//! frozen table, then sled), so no state is ever invisible. Several writes of one key between
//! checkpoints cost sled one insert, and the entries of one run in a checkpoint are stored as one
//! chunk (under the run layout's chunk tag): run entries are written once and never change, so
//! one sled insert per owner per checkpoint instead of one per command. In between, the thread
//! zero-fills spare segments (`spares.rs`).
//!
//! A checkpoint starts only once the log is synced past every record of its table (a table is
//! frozen right after a sync, but records applied in between are in it): sled keeps what it is
//! given op by op, so an unsynced record copied in part would outlive a crash the log forgets.
//!
//! A checkpoint that fails is retried (the log still holds its data); a panic ends the thread and
//! marks the log failed (`failure`), which fails the store: the memtable could no longer be
//! drained, and memory would grow without bound.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::sync::RwLock;

use super::pause::Pause;
use super::spares::{prepare_spare, retire_segments_upto};
use super::{Synced, Tables};
use crate::memtable::{event_key, Table};
use crate::{Backend, Runs, StoreError, WriteBatch};

/// Ops handed to the store's [`Backend::apply_each`] at a time while checkpointing (and by the
/// harness's `checkpoint-targets`, to measure what the log does). Small, for sled, whose writes
/// hold its readers back. redb takes the same: a whole checkpoint in one transaction instead
/// measured the same (1,000,000 users: steady checkpoints 1,138 against 1,106 ms, fill 8.7
/// against 8.2 s).
pub const CHECKPOINT_CHUNK: usize = 1024;
/// How long a failed checkpoint waits before it tries again.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);

pub(super) struct Checkpoint {
    /// The newest segment whose records are all in `table` (or older).
    pub upto: u64,
    pub table: Arc<Table>,
    /// The log position (`Synced`) of the table's last record: nothing is copied into sled
    /// before the log is synced that far.
    pub durable_at: u64,
}

/// Work for the background thread.
pub(super) enum Job {
    Checkpoint(Checkpoint),
    /// Write a zero-filled spare of `bytes`, named after segment `number` (the one being written,
    /// so the name is new: no spare of a current segment exists).
    PrepareSpare {
        number: u64,
        bytes: u64,
    },
}

struct CheckpointMetrics {
    seconds: metrics::Histogram,
    entries: metrics::Counter,
    failures: metrics::Counter,
}

/// What the background thread works with.
pub(super) struct Background {
    pub inner: Arc<dyn Backend>,
    pub tables: Arc<RwLock<Tables>>,
    pub wal_dir: PathBuf,
    pub closing: Arc<AtomicBool>,
    pub spares: Arc<AtomicUsize>,
    pub preparing: Arc<AtomicBool>,
    /// Set, with the reason, if the thread ends by a panic.
    pub failure: Arc<OnceLock<String>>,
    /// Backups running (`pause.rs`): no checkpoint starts while one reads.
    pub pause: Arc<Pause>,
    /// How far the log is synced.
    pub synced: Arc<Synced>,
}

impl Background {
    /// The thread's body: jobs until the log closes, or a panic (then the log is failed).
    pub fn run(self, rx: mpsc::Receiver<Job>) {
        lower_priority();
        let metrics = CheckpointMetrics {
            seconds: metrics::histogram!("latchkey_store_checkpoint_seconds"),
            entries: metrics::counter!("latchkey_store_checkpoint_entries_total"),
            failures: metrics::counter!("latchkey_store_checkpoint_failures_total"),
        };
        for job in rx {
            match catch_unwind(AssertUnwindSafe(|| self.run_job(job, &metrics))) {
                Ok(true) => {}
                Ok(false) => return,
                Err(panic) => {
                    let reason = format!(
                        "the checkpoint thread panicked: {}",
                        crate::writer::panic_text(&panic)
                    );
                    tracing::error!("{reason}");
                    let _ = self.failure.set(reason);
                    return;
                }
            }
        }
    }

    /// `false` when the store is closing and the thread should end.
    fn run_job(&self, job: Job, metrics: &CheckpointMetrics) -> bool {
        match job {
            Job::Checkpoint(checkpoint) => self.checkpoint(checkpoint, metrics),
            Job::PrepareSpare { number, bytes } => {
                match prepare_spare(&self.wal_dir, number, bytes, &self.closing) {
                    Ok(true) => {
                        self.spares.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(false) => {}
                    // Harmless: the log keeps appending to its current segment.
                    Err(e) => tracing::warn!("preparing a log segment: {e}"),
                }
                self.preparing.store(false, Ordering::Release);
                true
            }
        }
    }

    /// Copies the frozen table into sled, retires its segments and drops it; `false` when the
    /// store is closing before the checkpoint could complete.
    fn checkpoint(&self, checkpoint: Checkpoint, metrics: &CheckpointMetrics) -> bool {
        // Write-ahead: the frozen table's newest records may still be waiting for their sync.
        if !self.synced.wait_for(checkpoint.durable_at, &self.closing) {
            return false;
        }
        if !self.pause.begin_checkpoint(&self.closing) {
            return false;
        }
        let done = self.copy_and_retire(checkpoint, metrics);
        self.pause.end_checkpoint();
        done
    }

    fn copy_and_retire(&self, checkpoint: Checkpoint, metrics: &CheckpointMetrics) -> bool {
        let started = Instant::now();
        loop {
            match copy_into(self.inner.as_ref(), &checkpoint.table, checkpoint.upto) {
                Ok(()) => break,
                Err(e) => {
                    metrics.failures.increment(1);
                    tracing::error!(
                        "checkpoint into the store failed (the log keeps the data; retrying): {e}"
                    );
                    if self.closing.load(Ordering::Acquire) {
                        // The segments stay; the next open replays them.
                        return false;
                    }
                    std::thread::sleep(CHECKPOINT_RETRY);
                }
            }
        }
        // sled now holds it, synced: say so before the log lets go of it (`checkpointed.rs`).
        if let Err(e) = super::checkpointed::record(&self.wal_dir, checkpoint.upto) {
            tracing::error!("recording a checkpoint (its log segments stay): {e}");
            self.tables.write().frozen = None;
            return true;
        }
        match retire_segments_upto(&self.wal_dir, checkpoint.upto) {
            Ok(new_spares) => {
                self.spares.fetch_add(new_spares, Ordering::AcqRel);
            }
            // Harmless: a checkpointed segment replays to the same state.
            Err(e) => tracing::warn!("retiring checkpointed log segments: {e}"),
        }
        self.tables.write().frozen = None;
        metrics.seconds.record(started.elapsed());
        metrics.entries.increment(checkpoint.table.len() as u64);
        true
    }
}

/// Checkpoints are background work (a large one is ≈ 200 ms of CPU): at nice 10 the scheduler
/// gives the request threads precedence whenever both want a core.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux, PRIO_PROCESS with who = 0 sets the calling thread's nice value only.
        // SAFETY: plain system call with constant arguments; failure is harmless.
        let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) } != 0;
        if failed {
            tracing::debug!("could not lower the checkpoint thread's priority");
        }
    }
}

/// Writes `table` into `inner` op by op (repeatable: the log keeps its segments until the flush
/// returned), then the record that the log up to segment `upto` is checkpointed, and flushes.
pub(super) fn copy_into(inner: &dyn Backend, table: &Table, upto: u64) -> Result<(), StoreError> {
    let runs = table.runs();
    let mut batch = WriteBatch::default();
    let apply_when_full = |batch: &mut WriteBatch| -> Result<(), StoreError> {
        if batch.ops().len() >= CHECKPOINT_CHUNK {
            inner.apply_each(std::mem::take(batch))?;
        }
        Ok(())
    };
    for (key, value) in table.points() {
        match value {
            Some(value) => batch.put(key.to_vec(), value.clone()),
            None => batch.delete(key.to_vec()),
        }
        apply_when_full(&mut batch)?;
    }
    for (owner, run) in table.event_runs() {
        // One chunk per stretch of the owner's entries. (The engine never deletes an event; a
        // deleted entry ends a stretch and is deleted as a single key.)
        let mut chunk: Option<(Vec<u8>, Vec<u8>)> = None;
        for (sequence, value) in run.iter() {
            match value {
                Some(value) => {
                    let (_, entries) = chunk.get_or_insert_with(|| {
                        (chunk_key(runs, &event_key(owner, sequence)), Vec::new())
                    });
                    push_entry(entries, sequence, value);
                }
                None => {
                    if let Some((chunk_key, entries)) = chunk.take() {
                        batch.put(chunk_key, entries);
                    }
                    batch.delete(event_key(owner, sequence));
                }
            }
        }
        if let Some((chunk_key, entries)) = chunk {
            batch.put(chunk_key, entries);
        }
        apply_when_full(&mut batch)?;
    }
    // Last, so that sled holds the record only after what it records (not that open relies on
    // it: the log is retired only once this flush returned).
    batch.put(
        super::checkpointed::marker_key(runs),
        upto.to_be_bytes().to_vec(),
    );
    inner.apply_each(batch)?;
    inner.flush()
}

/// The chunk key for a stretch of run entries starting at `first` (a run key or a run prefix).
pub(crate) fn chunk_key(runs: Runs, first: &[u8]) -> Vec<u8> {
    let mut key = first.to_vec();
    if let Some(tag) = key.first_mut() {
        *tag = runs.chunk_tag;
    }
    key
}

// Chunk: per entry [sequence u64 BE, as in the run key][length u32 LE][entry].
pub(crate) fn push_entry(chunk: &mut Vec<u8>, sequence: u64, value: &[u8]) {
    chunk.extend_from_slice(&sequence.to_be_bytes());
    chunk.extend_from_slice(&(value.len() as u32).to_le_bytes());
    chunk.extend_from_slice(value);
}
