//! The write-ahead log in front of sled: what makes a group commit cheap.
//!
//! Applying a batch to sled and flushing sled once per batch cost ≈ 20 µs of CPU per command
//! (tree updates, page copies, sled's I/O thread pool), more than the whole HTTP round trip. So a
//! batch now goes to two cheap places instead:
//!
//! - the **log**: one record (length, CRC-32, the puts and deletes) appended to a buffer; a flush
//!   writes the buffer to the current segment file under `wal/` and `fdatasync`s it — one write and
//!   one sync per group commit, on the writer's flusher thread;
//! - the **memtable** (`memtable.rs`): the keys written since the last checkpoint, in hash maps
//!   (points by key, events by user), which reads consult before sled (so a read sees every
//!   applied batch, as it did with sled alone).
//!
//! When the memtable grows past [`DEFAULT_CHECKPOINT_ENTRIES`] keys (configurable) or
//! [`CHECKPOINT_BYTES`], the next flush freezes it and starts a new segment; the checkpoint
//! thread copies the frozen table into sled in small batches, flushes sled, and only then retires
//! the segments the table came from and drops it. Until then reads see it (active table, then
//! frozen table, then sled), so no state is ever invisible. Several writes of one key between
//! checkpoints cost sled one insert, and the events of one user in a checkpoint are stored as one
//! chunk (`E` keys): events are written once and never change, so one sled insert per user per
//! checkpoint instead of one per command. Scans of event prefixes expand the chunks, so callers
//! only ever see events.
//!
//! Segments are recycled: a checkpointed segment becomes a spare (at most [`MAX_SPARES`]) that
//! the next rotation renames and overwrites from the start. Overwriting blocks a file already has
//! lets `fdatasync` skip writing the file's size and extents (one disk round trip less): ≈ 140 µs
//! per sync instead of ≈ 200–240 µs for appends, measured on ext4; under load 0.20 instead of
//! 0.36 ms per flush. Each record's CRC covers its segment's number, so the stale records of a
//! spare's previous life after the new end fail their check and end the replay like a torn tail.
//! A new store has no spares until its first checkpoints, so once a segment holds
//! [`PREALLOCATE_AFTER`] bytes the background thread zero-fills one ([`SPARE_BYTES`], in small
//! paced pieces so commits never queue behind it), and the next flush moves the log into it if
//! the current segment is growing its file. Zeros end a replay like a torn tail.
//!
//! Recovery: open sled (which holds every completed checkpoint), then replay every remaining
//! segment in order into the memtable. Records hold absolute values, so replaying a segment whose
//! checkpoint completed but which was not yet retired is harmless. A segment is read up to its
//! first torn or corrupt record: only records whose sync never completed can be torn, and those
//! were never acknowledged — and after a failed write or sync, every record since the last good
//! sync is written again, whole, into a fresh segment.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::memtable::{event_key, Table};
use crate::{keys, Backend, KvIter, StoreError, WriteBatch};

/// The log's folder inside the data directory.
pub const WAL_DIR: &str = "wal";
/// Memtable entries at which it is checkpointed into sled, unless configured otherwise.
pub const DEFAULT_CHECKPOINT_ENTRIES: usize = 131_072;
/// Memtable bytes (keys + values) at which it is checkpointed into sled.
const CHECKPOINT_BYTES: usize = 32 << 20;
/// Ops per sled batch while checkpointing: small, so sled's global lock is never held for long
/// by the checkpoint (reads of sled wait for it).
const CHECKPOINT_CHUNK: usize = 1024;
/// How long a failed checkpoint waits before it tries again.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);
/// The first bytes of every segment file.
const MAGIC: &[u8; 8] = b"LKWAL001";
/// Checkpointed segments kept for reuse.
const MAX_SPARES: usize = 2;
/// Size of a zero-filled spare: room for one memtable's worth of records (a segment reaches
/// ≈ 37 MB under HTTP `uniform` before its freeze).
const SPARE_BYTES: u64 = 64 << 20;
/// Bytes a segment must hold before the log keeps a zero-filled spare ready: a store that writes
/// little never pays for one.
const PREALLOCATE_AFTER: u64 = 1 << 20;
/// Zero-filled spares are written (and synced) in pieces this big, with a pause after each, so
/// the disk never has a long burst of them queued in front of a commit's sync (4 MiB pieces
/// written back to back made commits wait 60–100 ms; 256 KiB with 1 ms pauses still 50–130 ms
/// when the machine was near saturation). 64 MiB take ≈ 1.3 s.
const ZEROING_PIECE: usize = 256 << 10;
const ZEROING_PAUSE: Duration = Duration::from_millis(4);

/// Key → value, or `None` for a delete that sled has not seen yet.
#[derive(Default)]
struct Tables {
    active: Table,
    active_bytes: usize,
    /// Being copied into sled by the checkpoint thread.
    frozen: Option<Arc<Table>>,
}

impl Tables {
    fn lookup(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(value) = self.active.get(key) {
            return Some(value);
        }
        self.frozen.as_ref()?.get(key)
    }

    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.active_bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        self.active.insert(key, value);
    }
}

/// Records appended since the last successful sync, in order. Appending is all `apply` does to
/// the log, so it never waits for the disk.
#[derive(Default)]
struct Buffer {
    unsynced: Vec<u8>,
    closed: bool,
}

/// The segment file being written; only the flushing thread touches it.
struct Segment {
    dir: PathBuf,
    file: File,
    number: u64,
    /// Bytes written so far (header included): where the next records go.
    written: u64,
    /// The file's size when it became this segment: below it, writes overwrite blocks the file
    /// already has (a recycled or zero-filled spare); past it, they grow the file.
    capacity: u64,
    /// A write or sync failed: the next flush writes the whole unsynced tail into a fresh segment
    /// (the failed one may hold any prefix of it, or garbage in the page cache's place).
    broken: bool,
    /// Spare files ready in the directory (shared with the checkpoint thread, which makes them).
    spares: Arc<AtomicUsize>,
}

impl Segment {
    fn rotate(&mut self) -> Result<(), StoreError> {
        let next = self.number + 1;
        let (file, capacity) = create_segment(&self.dir, next, &self.spares)?;
        self.file = file;
        self.number = next;
        self.written = MAGIC.len() as u64;
        self.capacity = capacity;
        self.broken = false;
        Ok(())
    }

    /// Writes `records` (sealed for this segment) at the current end and syncs them.
    fn append(&mut self, records: &mut [u8]) -> std::io::Result<()> {
        seal(records, self.number);
        self.file.write_all(records)?;
        self.written += records.len() as u64;
        self.file.sync_data()
    }

    /// Writes now grow the file, so each sync also writes the file's size (one more disk round
    /// trip per commit).
    fn appending(&self) -> bool {
        self.written >= self.capacity
    }
}

struct Checkpoint {
    /// The newest segment whose records are all in `table` (or older).
    upto: u64,
    table: Arc<Table>,
}

/// Work for the background thread.
enum Job {
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

/// A [`Backend`] that logs batches and keeps them in a memtable, checkpointing into `inner`.
pub struct LoggedBackend {
    inner: Arc<dyn Backend>,
    tables: Arc<RwLock<Tables>>,
    buffer: Mutex<Buffer>,
    /// Held for a whole flush, so flushes are serialized; `None` once closed.
    segment: Mutex<Option<Segment>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// A zero-filled spare is being written.
    preparing: Arc<AtomicBool>,
    spares: Arc<AtomicUsize>,
    spare_bytes: u64,
    preallocate_after: u64,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    closing: Arc<AtomicBool>,
    checkpoint_entries: usize,
    memtable_entries: metrics::Gauge,
}

impl LoggedBackend {
    /// Replays `dir/wal` over `inner` and starts a fresh segment and the checkpoint thread.
    pub fn open(
        inner: Arc<dyn Backend>,
        dir: &Path,
        checkpoint_entries: usize,
    ) -> Result<LoggedBackend, StoreError> {
        let wal_dir = dir.join(WAL_DIR);
        let open_err = |cause: String| StoreError::Open {
            dir: dir.to_path_buf(),
            cause,
        };
        std::fs::create_dir_all(&wal_dir).map_err(|e| open_err(e.to_string()))?;
        let mut tables = Tables::default();
        let segments = list_segments(&wal_dir).map_err(open_err)?;
        for &segment in &segments {
            let bytes = std::fs::read(segment_path(&wal_dir, segment))
                .map_err(|e| open_err(format!("reading log segment {segment}: {e}")))?;
            replay(&bytes, segment, &mut tables)
                .map_err(|cause| open_err(format!("log segment {segment}: {cause}")))?;
        }
        remove_unfinished_spares(&wal_dir).map_err(open_err)?;
        // Above every number a file here ever had, so no stale record can pass a new seal.
        let spare_numbers = spare_numbers(&wal_dir).map_err(open_err)?;
        let number = segments
            .iter()
            .chain(&spare_numbers)
            .max()
            .map_or(1, |last| last + 1);
        let spares = Arc::new(AtomicUsize::new(spare_numbers.len()));
        let preparing = Arc::new(AtomicBool::new(false));
        let (file, capacity) = create_segment(&wal_dir, number, &spares)?;
        let memtable_entries = metrics::gauge!("latchkey_store_memtable_entries");
        memtable_entries.set(tables.active.len() as f64);
        let tables = Arc::new(RwLock::new(tables));
        let closing = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let checkpointer = {
            let background = Background {
                inner: inner.clone(),
                tables: tables.clone(),
                wal_dir: wal_dir.clone(),
                closing: closing.clone(),
                spares: spares.clone(),
                preparing: preparing.clone(),
            };
            std::thread::Builder::new()
                .name("latchkey-checkpoint".into())
                .spawn(move || background.run(rx))
                .map_err(|e| StoreError::Io(format!("cannot start checkpoint thread: {e}")))?
        };
        Ok(LoggedBackend {
            inner,
            tables,
            buffer: Mutex::new(Buffer::default()),
            segment: Mutex::new(Some(Segment {
                dir: wal_dir,
                file,
                number,
                written: MAGIC.len() as u64,
                capacity,
                broken: false,
                spares: spares.clone(),
            })),
            jobs: Mutex::new(Some(tx)),
            preparing,
            spares,
            spare_bytes: SPARE_BYTES,
            preallocate_after: PREALLOCATE_AFTER,
            checkpointer: Mutex::new(Some(checkpointer)),
            closing,
            checkpoint_entries: checkpoint_entries.max(1),
            memtable_entries,
        })
    }

    fn read_tables(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_tables(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_buffer(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_segment(&self) -> MutexGuard<'_, Option<Segment>> {
        self.segment.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes and syncs everything appended so far. On failure the bytes go back in front of
    /// the buffer and the segment is marked broken, so the next flush rewrites them whole.
    fn sync(&self, segment: &mut Segment) -> Result<(), StoreError> {
        let mut data = std::mem::take(&mut self.lock_buffer().unsynced);
        let written = if segment.broken {
            segment.rotate()
        } else {
            Ok(())
        }
        .and_then(|()| {
            if data.is_empty() {
                return Ok(());
            }
            segment.append(&mut data).map_err(|e| {
                segment.broken = true;
                StoreError::Io(format!("write-ahead log segment {}: {e}", segment.number))
            })
        });
        if written.is_err() && !data.is_empty() {
            let mut buffer = self.lock_buffer();
            let newer = std::mem::replace(&mut buffer.unsynced, data);
            buffer.unsynced.extend_from_slice(&newer);
        }
        written
    }

    /// After a good sync: freezes the memtable for a checkpoint when it is big enough and no
    /// checkpoint is running, and starts a new segment. Every segment up to the old one then
    /// holds only records of the frozen table or older ones; records appended since the sync are
    /// in the frozen table too and go to the new segment (replaying them twice is harmless).
    fn maybe_freeze(&self, segment: &mut Segment) -> Result<(), StoreError> {
        {
            let tables = self.read_tables();
            let big = tables.active.len() >= self.checkpoint_entries
                || tables.active_bytes >= CHECKPOINT_BYTES;
            if !big || tables.frozen.is_some() {
                return Ok(());
            }
        }
        let upto = segment.number;
        segment.rotate()?;
        let table = {
            let mut tables = self.write_tables();
            let table = Arc::new(std::mem::take(&mut tables.active));
            tables.active_bytes = 0;
            tables.frozen = Some(table.clone());
            table
        };
        self.send(Job::Checkpoint(Checkpoint { upto, table }));
        Ok(())
    }

    fn send(&self, job: Job) -> bool {
        let sender = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        sender.as_ref().is_some_and(|s| s.send(job).is_ok())
    }

    /// Once the log is busy, keeps a zero-filled spare ready, and moves to it as soon as the
    /// current segment grows its file: a sync of an appended file also writes the file's size,
    /// one more disk round trip per commit (flush 0.36 → 0.20 ms under the open-loop load).
    fn keep_preallocated(&self, segment: &mut Segment) -> Result<(), StoreError> {
        if segment.written < self.preallocate_after {
            return Ok(());
        }
        if self.spares.load(Ordering::Acquire) == 0 {
            if !self.preparing.swap(true, Ordering::AcqRel) {
                let job = Job::PrepareSpare {
                    number: segment.number,
                    bytes: self.spare_bytes,
                };
                if !self.send(job) {
                    self.preparing.store(false, Ordering::Release);
                }
            }
            return Ok(());
        }
        if segment.appending() {
            segment.rotate()?;
        }
        Ok(())
    }

    /// Lets a running checkpoint finish (or give up retrying) and stops the thread, which
    /// releases its handle on sled.
    fn stop_checkpoints(&self) {
        self.closing.store(true, Ordering::Release);
        drop(self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(thread) = self
            .checkpointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}

impl Backend for LoggedBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.read_tables().lookup(key) {
            return Ok(value);
        }
        // Not in a table: sled holds its newest value (a frozen table is dropped only after
        // it is in sled).
        self.inner.get(key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        let overlay = {
            let tables = self.read_tables();
            let mut overlay = BTreeMap::new();
            let tables_in_order = tables.frozen.as_deref().into_iter().chain([&tables.active]);
            for table in tables_in_order {
                overlay.extend(table.scan(prefix));
            }
            overlay
        };
        let sled = entries(self.inner.scan_prefix(prefix));
        let base: Entries<'_> = if prefix.first() == Some(&keys::EVENT_TAG) {
            let chunks = Expanded {
                chunks: self.inner.scan_prefix(&chunk_key(prefix)),
                current: Vec::new().into_iter(),
                last: None,
            };
            Box::new(Union::new(sled, Box::new(chunks)))
        } else {
            sled
        };
        let merged = Union::new(Box::new(overlay.into_iter().map(Ok)), base);
        Box::new(merged.filter_map(|entry| match entry {
            Ok((key, Some(value))) => Some(Ok((key, value))),
            Ok((_, None)) => None,
            Err(e) => Some(Err(e)),
        }))
    }

    /// Memory only: one record appended to the buffer, the ops into the memtable, in the same
    /// order (both under the buffer's lock).
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut buffer = self.lock_buffer();
        if buffer.closed {
            return Err(StoreError::Closed);
        }
        encode_record(&batch, &mut buffer.unsynced);
        let entries = {
            let mut tables = self.write_tables();
            for (key, value) in batch.into_ops() {
                tables.insert(key, value);
            }
            tables.active.len() + tables.frozen.as_ref().map_or(0, |t| t.len())
        };
        drop(buffer);
        self.memtable_entries.set(entries as f64);
        Ok(())
    }

    fn busy_in_background(&self) -> bool {
        self.read_tables().frozen.is_some()
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut guard = self.lock_segment();
        let segment = guard.as_mut().ok_or(StoreError::Closed)?;
        self.sync(segment)?;
        // The flush itself succeeded; the next one tries these again.
        if let Err(e) = self.maybe_freeze(segment) {
            tracing::error!("starting a checkpoint: {e}");
        }
        if let Err(e) = self.keep_preallocated(segment) {
            tracing::warn!("moving the log to a preallocated segment: {e}");
        }
        Ok(())
    }

    fn close(&self) -> Result<(), StoreError> {
        let synced = {
            let mut guard = self.lock_segment();
            let Some(mut segment) = guard.take() else {
                return Ok(());
            };
            self.lock_buffer().closed = true;
            self.sync(&mut segment)
        };
        self.stop_checkpoints();
        synced.and(self.inner.close())
    }
}

impl Drop for LoggedBackend {
    /// Without `close`: what was synced is in the log, the rest is lost as in a crash; the
    /// checkpoint thread still stops, so the directory lock goes with the last handle.
    fn drop(&mut self) {
        self.stop_checkpoints();
    }
}

/// What the background thread works with.
struct Background {
    inner: Arc<dyn Backend>,
    tables: Arc<RwLock<Tables>>,
    wal_dir: PathBuf,
    closing: Arc<AtomicBool>,
    spares: Arc<AtomicUsize>,
    preparing: Arc<AtomicBool>,
}

impl Background {
    /// The checkpoint thread: copies each frozen table into sled, flushes sled, then retires the
    /// segments the table came from and drops it; in between, writes zero-filled spares.
    fn run(self, rx: mpsc::Receiver<Job>) {
        lower_priority();
        let metrics = CheckpointMetrics {
            seconds: metrics::histogram!("latchkey_store_checkpoint_seconds"),
            entries: metrics::counter!("latchkey_store_checkpoint_entries_total"),
            failures: metrics::counter!("latchkey_store_checkpoint_failures_total"),
        };
        for job in rx {
            match job {
                Job::Checkpoint(checkpoint) => {
                    if !self.checkpoint(checkpoint, &metrics) {
                        return;
                    }
                }
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
                }
            }
        }
    }

    /// `false` when the store is closing before the checkpoint could complete.
    fn checkpoint(&self, checkpoint: Checkpoint, metrics: &CheckpointMetrics) -> bool {
        let started = Instant::now();
        loop {
            match copy_into(self.inner.as_ref(), &checkpoint.table) {
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
        match retire_segments_upto(&self.wal_dir, checkpoint.upto) {
            Ok(new_spares) => {
                self.spares.fetch_add(new_spares, Ordering::AcqRel);
            }
            // Harmless: a checkpointed segment replays to the same state.
            Err(e) => tracing::warn!("retiring checkpointed log segments: {e}"),
        }
        self.tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .frozen = None;
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

fn copy_into(inner: &dyn Backend, table: &Table) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    let apply_when_full = |batch: &mut WriteBatch| -> Result<(), StoreError> {
        if batch.ops().len() >= CHECKPOINT_CHUNK {
            inner.apply(std::mem::take(batch))?;
        }
        Ok(())
    };
    for (key, value) in table.points() {
        match value {
            Some(value) => batch.put(key.clone(), value.clone()),
            None => batch.delete(key.clone()),
        }
        apply_when_full(&mut batch)?;
    }
    for (owner, run) in table.event_runs() {
        // One chunk per run of the user's events. (The engine never deletes an event; a deleted
        // one ends a run and is deleted as a single key.)
        let mut chunk: Option<(Vec<u8>, Vec<u8>)> = None;
        for (sequence, value) in run.iter() {
            match value {
                Some(value) => {
                    let (_, events) = chunk.get_or_insert_with(|| {
                        (chunk_key(&event_key(owner, sequence)), Vec::new())
                    });
                    push_event(events, sequence, value);
                }
                None => {
                    if let Some((chunk_key, events)) = chunk.take() {
                        batch.put(chunk_key, events);
                    }
                    batch.delete(event_key(owner, sequence));
                }
            }
        }
        if let Some((chunk_key, events)) = chunk {
            batch.put(chunk_key, events);
        }
        apply_when_full(&mut batch)?;
    }
    if !batch.is_empty() {
        inner.apply(batch)?;
    }
    inner.flush()
}

/// The chunk key for a run of events starting at `first` (an event key or an event prefix).
fn chunk_key(first: &[u8]) -> Vec<u8> {
    let mut key = first.to_vec();
    key[0] = keys::EVENT_CHUNK_TAG;
    key
}

// Chunk: per event [sequence u64 BE, as in the event key][length u32 LE][event].
fn push_event(chunk: &mut Vec<u8>, sequence: u64, value: &[u8]) {
    chunk.extend_from_slice(&sequence.to_be_bytes());
    chunk.extend_from_slice(&(value.len() as u32).to_le_bytes());
    chunk.extend_from_slice(value);
}

/// The events of one chunk as (event key, event), or `None` if it is corrupt.
fn split_chunk(key: &[u8], chunk: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let owner = key.get(1..key.len().checked_sub(8)?)?;
    let mut events = Vec::new();
    let mut rest = chunk;
    while !rest.is_empty() {
        let (sequence, tail) = rest.split_first_chunk::<8>()?;
        let (event, tail) = take_slice(tail)?;
        let mut event_key = Vec::with_capacity(1 + owner.len() + 8);
        event_key.push(keys::EVENT_TAG);
        event_key.extend_from_slice(owner);
        event_key.extend_from_slice(sequence);
        events.push((event_key, event.to_vec()));
        rest = tail;
    }
    Some(events)
}

type Entry = Result<(Vec<u8>, Option<Vec<u8>>), StoreError>;
type Entries<'a> = Box<dyn Iterator<Item = Entry> + Send + 'a>;

fn entries(scan: KvIter<'_>) -> Entries<'_> {
    Box::new(scan.map(|item| item.map(|(key, value)| (key, Some(value)))))
}

/// A scan of event chunks as events, in key order. A chunk may repeat events of an earlier one
/// (a segment replayed after its checkpoint was written, checkpointed again): those are skipped.
struct Expanded<'a> {
    chunks: KvIter<'a>,
    current: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    last: Option<Vec<u8>>,
}

impl Iterator for Expanded<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            if let Some((key, event)) = self.current.next() {
                if self.last.as_ref().is_some_and(|last| &key <= last) {
                    continue;
                }
                self.last = Some(key.clone());
                return Some(Ok((key, Some(event))));
            }
            let (key, chunk) = match self.chunks.next()? {
                Ok(item) => item,
                Err(e) => return Some(Err(e)),
            };
            match split_chunk(&key, &chunk) {
                Some(events) => self.current = events.into_iter(),
                None => {
                    return Some(Err(StoreError::Io(format!(
                        "corrupt event chunk at key {key:?}"
                    ))))
                }
            }
        }
    }
}

/// Sorted union of two scans; `front` wins on equal keys. Deletes (`None`) are kept, so a
/// front delete hides the back's entry; the caller drops them at the end.
struct Union<'a> {
    front: std::iter::Peekable<Entries<'a>>,
    back: std::iter::Peekable<Entries<'a>>,
}

impl<'a> Union<'a> {
    fn new(front: Entries<'a>, back: Entries<'a>) -> Self {
        Union {
            front: front.peekable(),
            back: back.peekable(),
        }
    }
}

impl Iterator for Union<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let order = match (self.front.peek(), self.back.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) | (Some(_), None) => Less,
            (_, Some(Err(_))) | (None, Some(_)) => Greater,
            (Some(Ok((front, _))), Some(Ok((back, _)))) => front.cmp(back),
        };
        match order {
            Less => self.front.next(),
            Greater => self.back.next(),
            Equal => {
                self.back.next(); // shadowed
                self.front.next()
            }
        }
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016}.log"))
}

/// The names of the files in the log's folder.
fn file_names(dir: &Path) -> Result<Vec<String>, String> {
    std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .map(|entry| {
            let name = entry.map_err(|e| e.to_string())?.file_name();
            Ok(name.to_string_lossy().into_owned())
        })
        .collect()
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, String> {
    let mut segments: Vec<u64> = file_names(dir)?
        .iter()
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .collect();
    segments.sort_unstable();
    Ok(segments)
}

fn spare_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("spare-{number:016}"))
}

fn list_spares(dir: &Path) -> Result<Vec<PathBuf>, String> {
    Ok(spare_numbers(dir)?
        .into_iter()
        .map(|number| spare_path(dir, number))
        .collect())
}

/// The numbers spares had as segments (their stale records are sealed with them).
fn spare_numbers(dir: &Path) -> Result<Vec<u64>, String> {
    Ok(file_names(dir)?
        .iter()
        .filter_map(|name| name.strip_prefix("spare-")?.parse().ok())
        .collect())
}

/// Makes segment `number` (a renamed spare, else a new file), writes its header and makes its
/// directory entry durable, so records synced into it later cannot vanish with the entry.
/// Returns the file and its size (what can be overwritten without growing it).
fn create_segment(
    dir: &Path,
    number: u64,
    spares: &AtomicUsize,
) -> Result<(File, u64), StoreError> {
    let io = |e: std::io::Error| StoreError::Io(format!("creating log segment {number}: {e}"));
    let path = segment_path(dir, number);
    let recycled = list_spares(dir)
        .unwrap_or_default()
        .into_iter()
        .any(|spare| std::fs::rename(spare, &path).is_ok());
    if recycled {
        let _ = spares.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    } else {
        // None was there (e.g. removed by hand): a stale count would rotate every few flushes.
        spares.store(0, Ordering::Release);
    }
    // Nothing acknowledged can be in a file of this number yet (numbers only grow, and a failed
    // rotation wrote nothing into it), so opening an existing one is safe.
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(!recycled)
        .open(&path)
        .map_err(io)?;
    let capacity = file.metadata().map_err(io)?.len();
    file.write_all(MAGIC).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    let kind = if recycled { "reused" } else { "new" };
    metrics::counter!("latchkey_store_log_segments_total", "file" => kind).increment(1);
    Ok((file, capacity))
}

/// After a checkpoint: segments up to `upto` become spares (up to [`MAX_SPARES`]) or go.
/// Returns how many became spares.
fn retire_segments_upto(dir: &Path, upto: u64) -> Result<usize, String> {
    let mut spares = list_spares(dir)?.len();
    let mut new_spares = 0;
    for segment in list_segments(dir)? {
        if segment <= upto {
            let path = segment_path(dir, segment);
            if spares < MAX_SPARES {
                std::fs::rename(&path, spare_path(dir, segment)).map_err(|e| e.to_string())?;
                spares += 1;
                new_spares += 1;
            } else {
                std::fs::remove_file(path).map_err(|e| e.to_string())?;
            }
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| e.to_string())?;
    Ok(new_spares)
}

/// A spare being zero-filled (renamed to `spare-…` once complete).
fn unfinished_spare_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("zeroing-{number:016}"))
}

/// Writes a zero-filled spare of `bytes` named after segment `number`. Zeros end a replay like a
/// torn tail (a zero length's CRC never matches), so the spare needs no header of its own.
/// `Ok(false)`: not made (the name is taken, or the store is closing).
fn prepare_spare(
    dir: &Path,
    number: u64,
    bytes: u64,
    closing: &AtomicBool,
) -> std::io::Result<bool> {
    let path = spare_path(dir, number);
    if path.exists() {
        return Ok(false);
    }
    let unfinished = unfinished_spare_path(dir, number);
    let mut file = File::create(&unfinished)?;
    let zeros = vec![0u8; ZEROING_PIECE];
    let mut left = bytes;
    while left > 0 {
        if closing.load(Ordering::Acquire) {
            drop(file);
            std::fs::remove_file(&unfinished)?;
            return Ok(false);
        }
        let piece = left.min(ZEROING_PIECE as u64) as usize;
        file.write_all(&zeros[..piece])?;
        file.sync_data()?;
        left -= piece as u64;
        std::thread::sleep(ZEROING_PAUSE);
    }
    std::fs::rename(&unfinished, &path)?;
    Ok(true)
}

/// Spares whose zero-filling a crash or close interrupted.
fn remove_unfinished_spares(dir: &Path) -> Result<(), String> {
    for name in file_names(dir)? {
        if name.starts_with("zeroing-") {
            std::fs::remove_file(dir.join(name)).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

// Record: [payload length u32 LE][CRC-32 of (segment number u64 LE, payload) u32 LE][payload]
// Payload: [op count u32 LE] then per op [0 = delete | 1 = put][key length u32 LE][key]
//          and for a put [value length u32 LE][value].

fn encode_record(batch: &WriteBatch, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&(batch.ops().len() as u32).to_le_bytes());
    for (key, value) in batch.ops() {
        out.push(u8::from(value.is_some()));
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        if let Some(value) = value {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }
    let len = (out.len() - start - 8) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    // The CRC is filled in by `seal` once the segment the record lands in is known.
}

fn record_crc(segment: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&segment.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Fills in the CRC of every record in `records` for segment `segment`.
fn seal(records: &mut [u8], segment: u64) {
    let mut at = 0;
    while let Some(len) = records
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| u32::from_le_bytes(b) as usize)
    {
        let payload = at + 8..at + 8 + len;
        let Some(bytes) = records.get(payload.clone()) else {
            return;
        };
        let crc = record_crc(segment, bytes).to_le_bytes();
        records[at + 4..at + 8].copy_from_slice(&crc);
        at = payload.end;
    }
}

/// Applies every intact record of one segment to `tables`, stopping at the first torn one.
fn replay(segment: &[u8], number: u64, tables: &mut Tables) -> Result<(), String> {
    if segment.len() < MAGIC.len() {
        return Ok(()); // created, header never synced: nothing in it was acknowledged
    }
    if &segment[..MAGIC.len()] != MAGIC {
        return Err("not a Latchkey log segment (unknown header)".into());
    }
    let mut rest = &segment[MAGIC.len()..];
    while let Some((ops, tail)) = decode_record(rest, number) {
        for (key, value) in ops {
            tables.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        }
        rest = tail;
    }
    Ok(())
}

type Ops<'a> = Vec<(&'a [u8], Option<&'a [u8]>)>;

/// One record and what follows it; `None` when the record is torn or corrupt.
fn decode_record(bytes: &[u8], segment: u64) -> Option<(Ops<'_>, &[u8])> {
    let (len, rest) = take_u32(bytes)?;
    let (crc, rest) = take_u32(rest)?;
    let payload = rest.get(..len as usize)?;
    if record_crc(segment, payload) != crc {
        return None;
    }
    let (count, mut body) = take_u32(payload)?;
    let mut ops = Vec::with_capacity((count as usize).min(4096));
    for _ in 0..count {
        let (&kind, rest) = body.split_first()?;
        let (key, rest) = take_slice(rest)?;
        let (value, rest) = match kind {
            0 => (None, rest),
            1 => {
                let (value, rest) = take_slice(rest)?;
                (Some(value), rest)
            }
            _ => return None,
        };
        ops.push((key, value));
        body = rest;
    }
    body.is_empty().then_some((ops, &rest[len as usize..]))
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

fn take_slice(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = take_u32(bytes)?;
    let len = len as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Brings a store written before the log existed (schema 1: same keys, no `wal/`) or a new one
/// to the current schema, writing the marker straight into sled so that an older build, which
/// would ignore the log, refuses the directory instead of silently missing its newest writes.
pub(crate) fn upgrade_schema(inner: &dyn Backend) -> Result<(), StoreError> {
    let current = crate::SCHEMA_VERSION.to_be_bytes();
    let found = inner.get(keys::SCHEMA)?;
    let upgrade = match found.as_deref() {
        Some(v) => v == 1u32.to_be_bytes(),
        None => inner.scan_prefix(b"").next().is_none(),
    };
    if upgrade {
        let mut batch = WriteBatch::default();
        batch.put(keys::SCHEMA.to_vec(), current.to_vec());
        inner.apply(batch)?;
        inner.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SledBackend;

    fn batch(ops: &[(&str, Option<&str>)]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in ops {
            match value {
                Some(value) => batch.put(key.as_bytes().to_vec(), value.as_bytes().to_vec()),
                None => batch.delete(key.as_bytes().to_vec()),
            }
        }
        batch
    }

    fn open(dir: &Path, checkpoint_entries: usize) -> LoggedBackend {
        let sled: Arc<dyn Backend> = Arc::new(SledBackend::open(dir).unwrap());
        LoggedBackend::open(sled, dir, checkpoint_entries).unwrap()
    }

    fn scan(backend: &dyn Backend, prefix: &str) -> Vec<(String, String)> {
        backend
            .scan_prefix(prefix.as_bytes())
            .map(|item| {
                let (k, v) = item.unwrap();
                (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
            })
            .collect()
    }

    fn get(backend: &dyn Backend, key: &str) -> Option<String> {
        backend
            .get(key.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    /// Waits until the checkpoint thread has dropped the frozen table.
    fn wait_for_checkpoint(backend: &LoggedBackend) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while backend.read_tables().frozen.is_some() {
            assert!(Instant::now() < deadline, "checkpoint did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn records_round_trip_and_torn_or_corrupt_tails_end_a_segment() {
        let mut bytes = MAGIC.to_vec();
        encode_record(&batch(&[("a", Some("1")), ("b", None)]), &mut bytes);
        let first_end = bytes.len();
        encode_record(&batch(&[("c", Some("3"))]), &mut bytes);
        seal(&mut bytes[MAGIC.len()..], 7);

        let mut tables = Tables::default();
        replay(&bytes, 7, &mut tables).unwrap();
        assert_eq!(tables.active.len(), 3);
        assert_eq!(tables.lookup(b"b"), Some(None), "a delete is remembered");

        // every cut inside the second record keeps exactly the first
        for cut in first_end..bytes.len() {
            let mut tables = Tables::default();
            replay(&bytes[..cut], 7, &mut tables).unwrap();
            assert_eq!(tables.active.len(), 2, "cut at {cut}");
        }
        // a flipped byte in the second record's payload fails its CRC
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xFF;
        let mut tables = Tables::default();
        replay(&corrupt, 7, &mut tables).unwrap();
        assert_eq!(tables.active.len(), 2);
        // records sealed for another segment (a recycled file's stale tail) are not replayed
        let mut tables = Tables::default();
        replay(&bytes, 6, &mut tables).unwrap();
        assert!(tables.active.is_empty());
        // a file that is not ours is refused
        assert!(replay(b"NOTALOG!rest", 7, &mut Tables::default()).is_err());
        // a header torn at creation is an empty segment
        replay(&MAGIC[..3], 7, &mut Tables::default()).unwrap();
    }

    #[test]
    fn retired_segments_are_recycled_and_their_stale_records_stay_dead() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join(WAL_DIR);
        {
            let backend = open(dir.path(), 4);
            // Long values, so a recycled segment has stale records past the new end.
            let long = "x".repeat(300);
            for i in 0..40 {
                let key = format!("k{i:02}");
                backend
                    .apply(batch(&[(key.as_str(), Some(long.as_str()))]))
                    .unwrap();
                backend.flush().unwrap();
                wait_for_checkpoint(&backend);
            }
            assert!(
                !list_spares(&wal).unwrap().is_empty(),
                "checkpointed segments are kept as spares"
            );
            assert!(list_spares(&wal).unwrap().len() <= MAX_SPARES);
            // short writes into (recycled) segments, synced but never checkpointed
            for i in 0..3 {
                let key = format!("short{i}");
                backend.apply(batch(&[(key.as_str(), Some("s"))])).unwrap();
                backend.flush().unwrap();
            }
            drop(backend); // crash: the log is all that holds the short writes
        }
        let backend = open(dir.path(), 4);
        for i in 0..3 {
            assert_eq!(get(&backend, &format!("short{i}")).as_deref(), Some("s"));
        }
        assert_eq!(scan(&backend, "k").len(), 40);
        backend.close().unwrap();
    }

    #[test]
    fn a_new_segment_takes_a_spare_and_keeps_the_spare_count_true() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(spare_path(dir.path(), 3), vec![0u8; 4096]).unwrap();
        let spares = AtomicUsize::new(1);
        let (_, capacity) = create_segment(dir.path(), 5, &spares).unwrap();
        assert_eq!(capacity, 4096, "the spare's blocks can be overwritten");
        assert_eq!(spares.load(Ordering::Acquire), 0);
        assert!(spare_numbers(dir.path()).unwrap().is_empty());
        // A count that says a spare exists when none does (one removed by hand) is reset,
        // so the log does not keep rotating in the hope of one.
        spares.store(2, Ordering::Release);
        let (_, capacity) = create_segment(dir.path(), 6, &spares).unwrap();
        assert_eq!(capacity, 0, "a new file grows with every write");
        assert_eq!(spares.load(Ordering::Acquire), 0);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![5, 6]);
    }

    #[test]
    fn a_busy_log_moves_to_a_zero_filled_segment_and_replays_across_its_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join(WAL_DIR);
        open(dir.path(), 1 << 20).close().unwrap();
        // What a crash in the middle of zero-filling leaves behind.
        std::fs::write(unfinished_spare_path(&wal, 7), b"partial").unwrap();
        let value = "v".repeat(1000);
        let mut written = 0;
        {
            let mut backend = open(dir.path(), 1 << 20);
            assert!(!unfinished_spare_path(&wal, 7).exists());
            backend.spare_bytes = 256 << 10;
            backend.preallocate_after = 8 << 10;
            let current = |backend: &LoggedBackend| {
                let guard = backend.lock_segment();
                let segment = guard.as_ref().unwrap();
                (segment.number, segment.appending())
            };
            let (first, appending) = current(&backend);
            assert!(appending, "a new store's first segment is a new file");
            let mut write = |backend: &LoggedBackend| {
                let key = format!("k{written:04}");
                backend
                    .apply(batch(&[(key.as_str(), Some(value.as_str()))]))
                    .unwrap();
                backend.flush().unwrap();
                written += 1;
            };
            // Past the threshold the background thread zero-fills a spare, and a flush after
            // that moves the log into it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while current(&backend).0 == first {
                assert!(
                    Instant::now() < deadline,
                    "the log never left its first segment"
                );
                write(&backend);
                std::thread::sleep(Duration::from_millis(2));
            }
            let (second, appending) = current(&backend);
            assert!(!appending, "the new segment overwrites zeros");
            for _ in 0..5 {
                write(&backend);
            }
            let size = std::fs::metadata(segment_path(&wal, second)).unwrap().len();
            assert_eq!(size, 256 << 10, "writes stay inside the preallocated file");
            drop(backend); // crash: only the log holds the writes
        }
        let backend = open(dir.path(), 1 << 20);
        assert_eq!(scan(&backend, "k").len(), written);
        let names = file_names(&wal).unwrap();
        assert!(
            !names.iter().any(|n| n.starts_with("zeroing-")),
            "{names:?}"
        );
        backend.close().unwrap();
    }

    #[test]
    fn reads_merge_the_memtable_over_sled_and_a_reopen_replays_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sled = SledBackend::open(dir.path()).unwrap();
            sled.apply(batch(&[
                ("k1", Some("sled")),
                ("k2", Some("sled")),
                ("k4", Some("sled")),
            ]))
            .unwrap();
            sled.flush().unwrap();
            sled.close().unwrap();
        }
        let expected = vec![
            ("k1".to_string(), "log".to_string()),
            ("k3".to_string(), "log".to_string()),
            ("k4".to_string(), "sled".to_string()),
        ];
        {
            let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
            backend
                .apply(batch(&[
                    ("k1", Some("log")),
                    ("k2", None),
                    ("k3", Some("log")),
                ]))
                .unwrap();
            backend
                .apply(batch(&[("x", Some("other prefix"))]))
                .unwrap();
            assert_eq!(get(&backend, "k1").as_deref(), Some("log"));
            assert_eq!(get(&backend, "k2"), None, "the delete hides sled's value");
            assert_eq!(get(&backend, "k4").as_deref(), Some("sled"));
            assert_eq!(scan(&backend, "k"), expected);
            backend.flush().unwrap();
            // No checkpoint ran: sled alone still has the old state.
            assert_eq!(get(backend.inner.as_ref(), "k1").as_deref(), Some("sled"));
            drop(backend); // no close: as after a crash, only the synced log counts
        }
        let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
        assert_eq!(scan(&backend, "k"), expected);
        assert_eq!(get(&backend, "x").as_deref(), Some("other prefix"));
        backend.close().unwrap();
    }

    #[test]
    fn unsynced_records_are_lost_but_synced_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
            backend.apply(batch(&[("a", Some("synced"))])).unwrap();
            backend.flush().unwrap();
            backend
                .apply(batch(&[("b", Some("never synced"))]))
                .unwrap();
            drop(backend);
        }
        let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
        assert_eq!(get(&backend, "a").as_deref(), Some("synced"));
        assert_eq!(get(&backend, "b"), None);
    }

    #[test]
    fn checkpoints_move_the_memtable_into_sled_and_remove_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path(), 10);
        for i in 0..25 {
            let key = format!("k{i:02}");
            let value = format!("v{i}");
            backend
                .apply(batch(&[(key.as_str(), Some(value.as_str()))]))
                .unwrap();
            backend.flush().unwrap();
            wait_for_checkpoint(&backend);
        }
        backend.apply(batch(&[("k00", None)])).unwrap();
        backend.flush().unwrap();
        // Two checkpoints ran (at 10 and 20 keys): their keys are in sled itself.
        assert_eq!(get(backend.inner.as_ref(), "k05").as_deref(), Some("v5"));
        assert_eq!(get(backend.inner.as_ref(), "k15").as_deref(), Some("v15"));
        let segments = list_segments(&dir.path().join(WAL_DIR)).unwrap();
        assert!(
            segments.len() <= 2,
            "checkpointed segments are removed: {segments:?}"
        );
        let all = scan(&backend, "k");
        assert_eq!(all.len(), 24);
        assert_eq!(all[0], ("k01".to_string(), "v1".to_string()));
        backend.close().unwrap();

        let backend = open(dir.path(), 10);
        assert_eq!(scan(&backend, "k"), all, "same state after reopen");
        assert_eq!(get(&backend, "k00"), None);
        backend.close().unwrap();
    }

    fn event_batch(user: &str, sequence: u64) -> WriteBatch {
        let mut batch = WriteBatch::default();
        batch.put(
            keys::event(user, sequence),
            format!("{user}-{sequence}").into_bytes(),
        );
        batch.put(keys::user(user), sequence.to_be_bytes().to_vec());
        batch
    }

    fn events(backend: &dyn Backend, prefix: &[u8]) -> Vec<String> {
        backend
            .scan_prefix(prefix)
            .map(|item| String::from_utf8(item.unwrap().1).unwrap())
            .collect()
    }

    #[test]
    fn checkpoints_store_each_users_events_as_chunks_and_scans_see_events() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path(), 8);
        for sequence in 1..=30 {
            for user in ["a", "ab"] {
                backend.apply(event_batch(user, sequence)).unwrap();
            }
            backend.flush().unwrap();
            wait_for_checkpoint(&backend);
        }
        let expected =
            |user: &str| -> Vec<String> { (1..=30).map(|s| format!("{user}-{s}")).collect() };
        for user in ["a", "ab"] {
            assert_eq!(events(&backend, &keys::events_of(user)), expected(user));
        }
        let all = events(&backend, &[keys::EVENT_TAG]);
        assert_eq!(all.len(), 60);
        // In sled itself the checkpointed events are chunks, never single event keys.
        let sled = backend.inner.clone();
        let chunks = sled.scan_prefix(&[keys::EVENT_CHUNK_TAG]).count();
        assert!(chunks > 0 && chunks < 30, "{chunks} chunks for 60 events");
        assert_eq!(sled.scan_prefix(&[keys::EVENT_TAG]).count(), 0);
        backend.close().unwrap();

        let backend = open(dir.path(), 8);
        for user in ["a", "ab"] {
            assert_eq!(events(&backend, &keys::events_of(user)), expected(user));
        }
        backend.close().unwrap();
    }

    #[test]
    fn event_scans_merge_single_events_and_overlapping_chunks_once_each() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sled = SledBackend::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            // a schema-1 single event, then two chunks where the second repeats 3 and 4 (a
            // segment checkpointed twice)
            batch.put(keys::event("u", 1), b"u-1".to_vec());
            let mut first = Vec::new();
            let mut second = Vec::new();
            for s in 2..=4 {
                push_event(&mut first, s, format!("u-{s}").as_bytes());
            }
            for s in 3..=6 {
                push_event(&mut second, s, format!("u-{s}").as_bytes());
            }
            batch.put(chunk_key(&keys::event("u", 2)), first);
            batch.put(chunk_key(&keys::event("u", 3)), second);
            sled.apply(batch).unwrap();
            sled.close().unwrap();
        }
        let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
        backend.apply(event_batch("u", 7)).unwrap();
        let expected: Vec<String> = (1..=7).map(|s| format!("u-{s}")).collect();
        assert_eq!(events(&backend, &keys::events_of("u")), expected);
        backend.close().unwrap();
    }

    #[test]
    fn a_failed_write_is_rewritten_whole_into_a_fresh_segment() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
        backend.apply(batch(&[("a", Some("1"))])).unwrap();
        backend.flush().unwrap();
        backend.apply(batch(&[("b", Some("2"))])).unwrap();
        backend.apply(batch(&[("c", Some("3"))])).unwrap();
        {
            // Simulate a write that got half of the pending bytes out and then failed.
            let pending = backend.lock_buffer().unsynced.clone();
            let mut guard = backend.lock_segment();
            let segment = guard.as_mut().unwrap();
            segment
                .file
                .write_all(&pending[..pending.len() / 2])
                .unwrap();
            segment.broken = true;
        }
        backend.flush().unwrap();
        drop(backend);
        let segments = list_segments(&dir.path().join(WAL_DIR)).unwrap();
        assert_eq!(segments.len(), 2, "{segments:?}");
        let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
        for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
            assert_eq!(get(&backend, key).as_deref(), Some(value), "{key}");
        }
        backend.close().unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_checkpoint_thread_runs_at_a_lower_priority() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
        // /proc/self/task/<tid>/stat: "tid (comm) state ..."; nice is the 19th field.
        let nice_of = |comm: &str| -> Option<i64> {
            std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
                let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
                let (name, rest) = stat.split_once(" (")?.1.split_once(") ")?;
                (name == comm).then(|| rest.split(' ').nth(16)?.parse().ok())?
            })
        };
        // The thread sets its own priority as it starts: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match nice_of("latchkey-checkp") {
                Some(10) => break,
                found if Instant::now() > deadline => panic!("checkpoint thread nice: {found:?}"),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        backend.close().unwrap();
    }

    #[test]
    fn a_schema_1_store_is_upgraded_and_others_are_left_to_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledBackend::open(dir.path()).unwrap();
        upgrade_schema(&sled).unwrap();
        assert_eq!(
            sled.get(keys::SCHEMA).unwrap(),
            Some(crate::SCHEMA_VERSION.to_be_bytes().to_vec()),
            "a new store gets the current version"
        );
        for (found, after) in [(1u32, crate::SCHEMA_VERSION), (99, 99)] {
            let mut batch = WriteBatch::default();
            batch.put(keys::SCHEMA.to_vec(), found.to_be_bytes().to_vec());
            sled.apply(batch).unwrap();
            upgrade_schema(&sled).unwrap();
            assert_eq!(
                sled.get(keys::SCHEMA).unwrap(),
                Some(after.to_be_bytes().to_vec())
            );
        }
    }
}
