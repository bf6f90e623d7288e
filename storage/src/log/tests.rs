//! The log as a whole over a real sled: replay, recycling, preallocation, checkpoints and their
//! chunks, failed writes, the background thread's priority and its failure.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::{chunk_key, push_entry};
use super::record::{encode_record, seal, MAGIC};
use super::replay::replay;
use super::segment::{create_segment, file_names, list_segments, segment_path};
use super::spares::{list_spares, spare_numbers, spare_path, unfinished_spare_path, MAX_SPARES};
use super::{LoggedBackend, Tables, DEFAULT_CHECKPOINT_ENTRIES, WAL_DIR};
use crate::test_keys::{event, events_of, point};
use crate::{Backend, KvIter, SledBackend, StoreError, WriteBatch, TEST_RUNS};

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
    LoggedBackend::open(sled, dir, TEST_RUNS, Some(b'k'), checkpoint_entries).unwrap()
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

    let mut tables = Tables::new(TEST_RUNS, None);
    replay(&bytes, 7, &mut tables).unwrap();
    assert_eq!(tables.active.len(), 3);
    assert_eq!(tables.lookup(b"b"), Some(None), "a delete is remembered");

    // every cut inside the second record keeps exactly the first
    for cut in first_end..bytes.len() {
        let mut tables = Tables::new(TEST_RUNS, None);
        replay(&bytes[..cut], 7, &mut tables).unwrap();
        assert_eq!(tables.active.len(), 2, "cut at {cut}");
    }
    // a flipped byte in the second record's payload fails its CRC
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    let mut tables = Tables::new(TEST_RUNS, None);
    replay(&corrupt, 7, &mut tables).unwrap();
    assert_eq!(tables.active.len(), 2);
    // records sealed for another segment (a recycled file's stale tail) are not replayed
    let mut tables = Tables::new(TEST_RUNS, None);
    replay(&bytes, 6, &mut tables).unwrap();
    assert!(tables.active.is_empty());
    // a file that is not ours is refused
    assert!(replay(b"NOTALOG!rest", 7, &mut Tables::new(TEST_RUNS, None)).is_err());
    // a header torn at creation is an empty segment
    replay(&MAGIC[..3], 7, &mut Tables::new(TEST_RUNS, None)).unwrap();
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
            let guard = backend.segment.lock();
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
fn reverse_scans_merge_the_memtables_over_sled_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path(), 3);
    backend
        .apply(batch(&[
            ("k1", Some("a")),
            ("k3", Some("a")),
            ("k5", Some("a")),
        ]))
        .unwrap();
    backend.flush().unwrap(); // 3 entries: frozen and checkpointed into sled
    backend
        .apply(batch(&[
            ("k2", Some("b")),
            ("k3", None),
            ("k4", Some("b")),
            ("x", Some("b")),
        ]))
        .unwrap();
    let forward = scan(&backend, "k");
    let backward: Vec<(String, String)> = backend
        .scan_prefix_rev(b"k")
        .map(|item| {
            let (key, value) = item.unwrap();
            (
                String::from_utf8(key).unwrap(),
                String::from_utf8(value).unwrap(),
            )
        })
        .collect();
    let keys: Vec<&str> = forward.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["k1", "k2", "k4", "k5"]);
    assert_eq!(backward, forward.into_iter().rev().collect::<Vec<_>>());
    backend.close().unwrap();
}

#[test]
fn a_graceful_close_checkpoints_so_the_next_open_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
    backend
        .apply(batch(&[
            ("k1", Some("a")),
            ("k2", Some("b")),
            ("u1", Some("c")),
        ]))
        .unwrap();
    backend.apply(batch(&[("k2", None)])).unwrap();
    backend.flush().unwrap();
    backend.close().unwrap();
    drop(backend);
    let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
    assert_eq!(backend.read_tables().active.len(), 0, "nothing replayed");
    assert_eq!(
        get(backend.inner.as_ref(), "k1").as_deref(),
        Some("a"),
        "in sled"
    );
    assert_eq!(get(&backend, "k2"), None);
    assert_eq!(scan(&backend, "k").len() + scan(&backend, "u").len(), 2);
    backend.close().unwrap();
}

#[test]
fn a_close_after_only_reading_leaves_the_directory_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
    backend.apply(batch(&[("k1", Some("a"))])).unwrap();
    backend.flush().unwrap();
    drop(backend); // as after a crash: only the log has it
    for _ in 0..2 {
        let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
        assert_eq!(
            backend.read_tables().active.len(),
            1,
            "replayed from the log"
        );
        assert_eq!(get(&backend, "k1").as_deref(), Some("a"));
        assert_eq!(get(backend.inner.as_ref(), "k1"), None, "sled untouched");
        backend.close().unwrap();
    }
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

/// A table frozen right after a sync holds the records applied in between; the checkpoint must
/// not copy them into sled before their own sync, or a crash would leave sled holding writes the
/// log forgot (in part: sled keeps a checkpoint's ops one by one).
#[test]
fn a_checkpoint_waits_for_the_sync_of_its_newest_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let backend = open(dir.path(), 1);
        backend.apply(batch(&[("a", Some("synced"))])).unwrap();
        {
            let mut guard = backend.segment.lock();
            let segment = guard.as_mut().unwrap();
            backend.sync(segment).unwrap();
            backend
                .apply(batch(&[("b", Some("applied after the sync"))]))
                .unwrap();
            backend.maybe_freeze(segment).unwrap();
        }
        assert!(backend.read_tables().frozen.is_some(), "frozen with b");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(get(backend.inner.as_ref(), "a"), None, "nothing copied yet");
        assert_eq!(get(backend.inner.as_ref(), "b"), None);
        assert!(backend.read_tables().frozen.is_some(), "still waiting");

        backend.flush().unwrap();
        wait_for_checkpoint(&backend);
        assert_eq!(
            get(backend.inner.as_ref(), "b").as_deref(),
            Some("applied after the sync")
        );
        backend
            .apply(batch(&[("c", Some("never synced"))]))
            .unwrap();
        drop(backend); // a crash: c was never synced
    }
    let backend = open(dir.path(), 1);
    assert_eq!(
        get(&backend, "b").as_deref(),
        Some("applied after the sync")
    );
    assert_eq!(get(&backend, "c"), None);
}

/// A checkpoint waiting for a sync that never comes lets the store close (the log keeps it).
#[test]
fn a_close_is_not_held_by_a_checkpoint_waiting_for_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path(), 1);
    backend.apply(batch(&[("a", Some("1"))])).unwrap();
    {
        let mut guard = backend.segment.lock();
        let segment = guard.as_mut().unwrap();
        backend.sync(segment).unwrap();
        backend.apply(batch(&[("b", Some("2"))])).unwrap();
        backend.maybe_freeze(segment).unwrap();
    }
    drop(backend); // no sync: the waiting thread must notice the close and end
    let backend = open(dir.path(), 1);
    assert_eq!(get(&backend, "a").as_deref(), Some("1"));
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
        event(user, sequence),
        format!("{user}-{sequence}").into_bytes(),
    );
    batch.put(point(user), sequence.to_be_bytes().to_vec());
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
        assert_eq!(events(&backend, &events_of(user)), expected(user));
    }
    let all = events(&backend, &[TEST_RUNS.tag]);
    assert_eq!(all.len(), 60);
    // In sled itself the checkpointed events are chunks, never single event keys.
    let sled = backend.inner.clone();
    let chunks = sled.scan_prefix(&[TEST_RUNS.chunk_tag]).count();
    assert!(chunks > 0 && chunks < 30, "{chunks} chunks for 60 events");
    assert_eq!(sled.scan_prefix(&[TEST_RUNS.tag]).count(), 0);
    backend.close().unwrap();

    let backend = open(dir.path(), 8);
    for user in ["a", "ab"] {
        assert_eq!(events(&backend, &events_of(user)), expected(user));
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
        batch.put(event("u", 1), b"u-1".to_vec());
        let mut first = Vec::new();
        let mut second = Vec::new();
        for s in 2..=4 {
            push_entry(&mut first, s, format!("u-{s}").as_bytes());
        }
        for s in 3..=6 {
            push_entry(&mut second, s, format!("u-{s}").as_bytes());
        }
        batch.put(chunk_key(TEST_RUNS, &event("u", 2)), first);
        batch.put(chunk_key(TEST_RUNS, &event("u", 3)), second);
        sled.apply(batch).unwrap();
        sled.close().unwrap();
    }
    let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
    backend.apply(event_batch("u", 7)).unwrap();
    let expected: Vec<String> = (1..=7).map(|s| format!("u-{s}")).collect();
    assert_eq!(events(&backend, &events_of("u")), expected);
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
        let pending = backend.buffer.lock().unsynced.clone();
        let mut guard = backend.segment.lock();
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

/// sled, whose writes (the checkpoint thread's) panic while `armed`, or wait while the gate is
/// closed.
struct Interfering {
    inner: SledBackend,
    armed: AtomicBool,
    closed: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Interfering {
    fn new(dir: &Path, armed: bool, closed: bool) -> Arc<Interfering> {
        Arc::new(Interfering {
            inner: SledBackend::open(dir).unwrap(),
            armed: AtomicBool::new(armed),
            closed: std::sync::Mutex::new(closed),
            opened: std::sync::Condvar::new(),
        })
    }

    fn open_gate(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }
}

impl Backend for Interfering {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        self.inner.scan_prefix(prefix)
    }
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if self.armed.load(Ordering::SeqCst) {
            panic!("injected panic in a checkpoint write");
        }
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
        drop(closed);
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }
}

#[test]
fn a_panicking_checkpoint_marks_the_log_failed_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Interfering::new(dir.path(), true, false);
    let backend = LoggedBackend::open(inner.clone(), dir.path(), TEST_RUNS, None, 2).unwrap();
    assert_eq!(backend.failure(), None);
    backend
        .apply(batch(&[("a", Some("1")), ("b", Some("2"))]))
        .unwrap();
    backend.flush().unwrap(); // freezes the table: the checkpoint panics
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        if let Some(reason) = backend.failure() {
            break reason;
        }
        assert!(Instant::now() < deadline, "the panic was not noticed");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(reason.contains("injected panic"), "{reason}");
    // A flush past the memtable's bound is not held behind the dead checkpoint.
    for n in 0..20 {
        backend
            .apply(batch(&[(&format!("k{n}"), Some("v"))]))
            .unwrap();
    }
    backend.flush().unwrap();
    assert!(!backend.is_holding());
    // Nothing was lost: the frozen table still answers, and the log still holds it.
    assert_eq!(get(&backend, "a").as_deref(), Some("1"));
    inner.armed.store(false, Ordering::SeqCst);
    backend.close().unwrap();
    drop(backend);
    let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
    assert_eq!(get(&backend, "b").as_deref(), Some("2"));
    backend.close().unwrap();
}

/// A store whose sled lost a checkpoint the log already retired does not open: the log says how
/// far it was checkpointed, sled's own record says less.
#[test]
fn a_store_that_lost_a_checkpoint_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let backend = open(dir.path(), 10);
        for i in 0..25 {
            let key = format!("k{i:02}");
            backend.apply(batch(&[(key.as_str(), Some("v"))])).unwrap();
            backend.flush().unwrap();
            wait_for_checkpoint(&backend);
        }
        backend.close().unwrap();
    }
    // A clean reopen passes the check; the record is not a chunk to scans of the run tag.
    {
        let backend = open(dir.path(), 10);
        assert_eq!(scan(&backend, "k").len(), 25);
        assert!(backend.scan_prefix(b"e").all(|entry| entry.is_ok()));
        assert!(backend.snapshot().unwrap().all(|entry| entry.is_ok()));
        backend.close().unwrap();
    }
    // sled loses its last checkpoint's record (as if its writes never reached the disk)
    {
        let sled = SledBackend::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        batch.delete(vec![TEST_RUNS.chunk_tag]);
        sled.apply(batch).unwrap();
        sled.close().unwrap();
    }
    let sled: Arc<dyn Backend> = Arc::new(SledBackend::open(dir.path()).unwrap());
    let error = LoggedBackend::open(sled, dir.path(), TEST_RUNS, None, 10)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("lost a checkpoint"), "{error}");
    assert!(error.contains("latchkey restore"), "{error}");
}

/// Writes that outrun a checkpoint are held, not buffered without bound: past
/// `HOLD_AFTER_CHECKPOINTS` checkpoints' worth of keys, a flush (and so the acknowledgement of
/// what it synced) waits for the running checkpoint, and says so meanwhile; not under it; and
/// once the checkpoint is done, the next flush freezes the grown table.
#[test]
fn a_flush_is_held_while_the_memtable_is_past_its_bound_behind_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Interfering::new(dir.path(), false, true);
    let backend =
        Arc::new(LoggedBackend::open(inner.clone(), dir.path(), TEST_RUNS, None, 2).unwrap());
    backend
        .apply(batch(&[("a", Some("1")), ("b", Some("2"))]))
        .unwrap();
    // Freezes: the checkpoint waits at the gate.
    backend.flush().unwrap();
    // Under the bound (2 × 8 keys): flushes go through behind the stuck checkpoint.
    for n in 0..10 {
        backend
            .apply(batch(&[(&format!("k{n}"), Some("v"))]))
            .unwrap();
        backend.flush().unwrap();
    }
    assert!(!backend.is_holding());
    for n in 10..20 {
        backend
            .apply(batch(&[(&format!("k{n}"), Some("v"))]))
            .unwrap();
    }
    let flushing = {
        let backend = backend.clone();
        std::thread::spawn(move || backend.flush())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !backend.is_holding() {
        assert!(Instant::now() < deadline, "the flush was not held");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Reads are not held.
    assert_eq!(get(backend.as_ref(), "k15").as_deref(), Some("v"));
    // Held at most for a while: the group goes through although the checkpoint is stuck, and
    // writers stay held (async ones wait for flushes) until the grown table can be frozen.
    flushing.join().unwrap().unwrap();
    assert!(backend.is_holding());
    assert!(backend.read_tables().active.len() >= 10, "not frozen yet");
    inner.open_gate();
    wait_for_checkpoint(&backend);
    backend.flush().unwrap(); // the first checkpoint is done: the grown table is frozen
    assert!(backend.read_tables().active.is_empty());
    assert!(!backend.is_holding());
    wait_for_checkpoint(&backend);
    backend.close().unwrap();
    drop(backend);
    let backend = open(dir.path(), DEFAULT_CHECKPOINT_ENTRIES);
    assert_eq!(get(&backend, "k19").as_deref(), Some("v"));
    backend.close().unwrap();
}
