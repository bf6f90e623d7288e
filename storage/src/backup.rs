//! Backups: every live entry of a store at one instant, in a file of Latchkey's own format — so a
//! backup is also the way from one on-disk engine to another (it knows nothing of sled).
//!
//! ```text
//! "LATCHKEY-BACKUP\n"                  16 bytes
//! format version                       u32 LE (1)
//! created, ms since the Unix epoch     u64 LE
//! per entry, in key order:             key length u32 LE, value length u32 LE, key, value
//! end of entries                       u32::MAX
//! entry count                          u64 LE
//! CRC-32 of every byte before it       u32 LE
//! ```
//!
//! A reader checks the magic, the version, that keys strictly increase, and the count and the
//! checksum at the end; only then is a restore kept ([`restore`] writes into a directory of its own
//! and moves it into place last). Restoring inserts the entries into sled one by one (no atomic
//! batches: nothing reads the staging directory, and sled's batches slow down as the tree grows)
//! and stores an owner's events as one chunk, as a checkpoint does; the log is not involved.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::log::{chunk_key, push_entry};
use crate::{schema, Backend, KvIter, StoreConfig, StoreError, WriteBatch};

const MAGIC: &[u8; 16] = b"LATCHKEY-BACKUP\n";
/// The format this build writes; readers refuse any other.
pub const BACKUP_FORMAT: u32 = 1;
const END: u32 = u32::MAX;

type Entry = (Vec<u8>, Vec<u8>);

/// What a backup or a restore wrote or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSummary {
    pub entries: u64,
    pub bytes: u64,
    /// When the backup was taken, ms since the Unix epoch.
    pub created_ms: u64,
}

fn invalid(why: impl std::fmt::Display) -> StoreError {
    StoreError::Backup(why.to_string())
}

/// A writer that checksums and counts what passes through it.
struct Summed<W> {
    out: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Summed<W> {
    fn put(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.crc.update(data);
        self.bytes += data.len() as u64;
        self.out
            .write_all(data)
            .map_err(|e| StoreError::Io(format!("writing the backup: {e}")))
    }
}

/// Writes `entries` (in key order) as a backup into `out`.
pub fn write_backup(
    entries: KvIter<'_>,
    created_ms: u64,
    out: impl Write,
) -> Result<BackupSummary, StoreError> {
    let mut out = Summed {
        out,
        crc: crc32fast::Hasher::new(),
        bytes: 0,
    };
    out.put(MAGIC)?;
    out.put(&BACKUP_FORMAT.to_le_bytes())?;
    out.put(&created_ms.to_le_bytes())?;
    let mut count = 0u64;
    for entry in entries {
        let (key, value) = entry?;
        let too_long = || invalid("an entry is longer than 4 GiB");
        let key_len = u32::try_from(key.len()).map_err(|_| too_long())?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_long())?;
        if key_len == END {
            return Err(too_long());
        }
        out.put(&key_len.to_le_bytes())?;
        out.put(&value_len.to_le_bytes())?;
        out.put(&key)?;
        out.put(&value)?;
        count += 1;
    }
    out.put(&END.to_le_bytes())?;
    out.put(&count.to_le_bytes())?;
    let crc = out.crc.clone().finalize();
    out.put(&crc.to_le_bytes())?;
    out.out
        .flush()
        .map_err(|e| StoreError::Io(format!("writing the backup: {e}")))?;
    Ok(BackupSummary {
        entries: count,
        bytes: out.bytes,
        created_ms,
    })
}

/// Reads a backup entry by entry; the last `next` checks the count and the checksum, so an
/// entry is only trusted once the iterator has ended without an error.
pub struct BackupReader<R> {
    input: R,
    crc: crc32fast::Hasher,
    count: u64,
    last: Option<Vec<u8>>,
    created_ms: u64,
    done: bool,
}

impl<R: Read> BackupReader<R> {
    pub fn new(input: R) -> Result<Self, StoreError> {
        let mut reader = BackupReader {
            input,
            crc: crc32fast::Hasher::new(),
            count: 0,
            last: None,
            created_ms: 0,
            done: false,
        };
        let magic: [u8; 16] = reader.take_array()?;
        if &magic != MAGIC {
            return Err(invalid("not a Latchkey backup (wrong magic bytes)"));
        }
        let format = u32::from_le_bytes(reader.take_array()?);
        if format != BACKUP_FORMAT {
            return Err(invalid(format!(
                "backup format {format}; this build reads format {BACKUP_FORMAT}"
            )));
        }
        reader.created_ms = u64::from_le_bytes(reader.take_array()?);
        Ok(reader)
    }

    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    fn take_into(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                invalid("the backup ends early (truncated)")
            } else {
                StoreError::Io(format!("reading the backup: {e}"))
            }
        })?;
        self.crc.update(buf);
        Ok(())
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut buf = [0u8; N];
        self.take_into(&mut buf)?;
        Ok(buf)
    }

    fn take_vec(&mut self, len: u32) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; len as usize];
        self.take_into(&mut buf)?;
        Ok(buf)
    }

    fn next_entry(&mut self) -> Result<Option<Entry>, StoreError> {
        let key_len = u32::from_le_bytes(self.take_array()?);
        if key_len == END {
            let count = u64::from_le_bytes(self.take_array()?);
            let expected = self.crc.clone().finalize();
            let mut crc = [0u8; 4];
            self.input
                .read_exact(&mut crc)
                .map_err(|_| invalid("the backup ends early (no checksum)"))?;
            if u32::from_le_bytes(crc) != expected {
                return Err(invalid("checksum mismatch: the backup file is damaged"));
            }
            if count != self.count {
                return Err(invalid(format!(
                    "the backup says {count} entries but holds {}",
                    self.count
                )));
            }
            let mut rest = [0u8; 1];
            if self.input.read(&mut rest).unwrap_or(0) != 0 {
                return Err(invalid("bytes after the end of the backup"));
            }
            return Ok(None);
        }
        let value_len = u32::from_le_bytes(self.take_array()?);
        let key = self.take_vec(key_len)?;
        let value = self.take_vec(value_len)?;
        if self.last.as_ref().is_some_and(|last| *last >= key) {
            return Err(invalid("keys out of order: the backup file is damaged"));
        }
        self.last = Some(key.clone());
        self.count += 1;
        Ok(Some((key, value)))
    }
}

impl<R: Read> Iterator for BackupReader<R> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let entry = self.next_entry();
        if !matches!(entry, Ok(Some(_))) {
            self.done = true;
        }
        entry.transpose()
    }
}

/// Checks a whole backup file without writing anything.
pub fn check_backup(input: impl Read) -> Result<BackupSummary, StoreError> {
    let mut reader = BackupReader::new(input)?;
    let mut bytes = 0u64;
    for entry in reader.by_ref() {
        let (key, value) = entry?;
        bytes += (key.len() + value.len()) as u64;
    }
    Ok(BackupSummary {
        entries: reader.count,
        bytes,
        created_ms: reader.created_ms,
    })
}

/// Restores a backup into `config.data_dir`, which must be missing or empty. Everything is
/// written into a directory beside it first and moved into place only once the whole file read
/// back with its checksum and the schema version checked; a failed restore leaves nothing behind.
pub fn restore(input: impl Read, config: &StoreConfig) -> Result<BackupSummary, StoreError> {
    let dir = &config.data_dir;
    let open_err = StoreError::opening(dir);
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(open_err(
                    "restore needs an empty or missing data directory".into(),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(open_err(e.to_string())),
    }
    let staging = staging_dir(dir);
    if staging.exists() {
        return Err(open_err(format!(
            "{} exists (left by an interrupted restore?); remove it first",
            staging.display()
        )));
    }
    let restored = restore_into(input, config, &staging);
    match restored {
        Ok(summary) => {
            move_into_place(&staging, dir).map_err(open_err)?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn staging_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".restoring");
    dir.with_file_name(name)
}

/// Entries loaded into the staging store per call: sled takes them one insert each, redb in one
/// transaction (a transaction per entry would cost redb a commit each).
const LOAD_CHUNK: usize = 4096;

fn restore_into(
    input: impl Read,
    config: &StoreConfig,
    staging: &Path,
) -> Result<BackupSummary, StoreError> {
    let target = config
        .medium
        .open(staging, config.cache_bytes, &config.kept_files)?;
    let mut reader = BackupReader::new(input)?;
    let runs = config.layout.runs;
    // Bulk loading, where atomicity is not needed (a failed restore leaves nothing): sled's
    // atomic batches slow down as the tree grows — 3,000,000 sorted entries of ≈ 140 bytes took
    // 71 s in batches of 4,096 and 25 s one by one on the performance machine — so `apply_each`.
    let mut batch = WriteBatch::default();
    let mut load = |key: Vec<u8>, value: Vec<u8>| -> Result<(), StoreError> {
        batch.put(key, value);
        if batch.ops().len() >= LOAD_CHUNK {
            target.apply_each(std::mem::take(&mut batch))?;
        }
        Ok(())
    };
    // The run being gathered into one chunk: its owner, chunk key and entries.
    let mut chunk: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = None;
    let mut bytes = 0u64;
    for entry in reader.by_ref() {
        let (key, value) = entry?;
        bytes += (key.len() + value.len()) as u64;
        match runs.split(&key) {
            Some((owner, sequence)) => {
                if chunk
                    .as_ref()
                    .is_some_and(|(current, _, _)| current != owner)
                {
                    if let Some((_, chunk_key, entries)) = chunk.take() {
                        load(chunk_key, entries)?;
                    }
                }
                let (_, _, entries) = chunk
                    .get_or_insert_with(|| (owner.to_vec(), chunk_key(runs, &key), Vec::new()));
                push_entry(entries, sequence, &value);
            }
            None => load(key, value)?,
        }
    }
    if let Some((_, chunk_key, entries)) = chunk {
        load(chunk_key, entries)?;
    }
    target.apply_each(batch)?;
    target.flush()?;
    schema::upgrade(target.as_ref(), &config.layout, &config.schema)?;
    schema::check(
        target.as_ref(),
        &config.layout,
        &config.schema,
        &config.data_dir,
    )?;
    target.close()?;
    Ok(BackupSummary {
        entries: reader.count,
        bytes,
        created_ms: reader.created_ms,
    })
}

fn move_into_place(staging: &Path, dir: &Path) -> Result<(), String> {
    if dir.exists() {
        // Empty (checked before): rename(2) cannot replace a directory that is not.
        std::fs::remove_dir(dir).map_err(|e| e.to_string())?;
    }
    std::fs::rename(staging, dir).map_err(|e| e.to_string())?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(parent) = std::fs::File::open(parent) {
            let _ = parent.sync_all();
        }
    }
    Ok(())
}

/// Every live entry of `backend` at one instant, written as a backup to `out`.
pub fn backup(backend: &dyn Backend, out: impl Write) -> Result<BackupSummary, StoreError> {
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    write_backup(backend.snapshot()?, created_ms, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..100u32)
            .map(|i| (format!("k{i:04}").into_bytes(), vec![i as u8; i as usize]))
            .collect()
    }

    fn written(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let iter: KvIter<'_> = Box::new(entries.iter().cloned().map(Ok));
        let summary = write_backup(iter, 42, &mut out).unwrap();
        assert_eq!(summary.entries, entries.len() as u64);
        assert_eq!(summary.bytes, out.len() as u64);
        out
    }

    #[test]
    fn a_backup_reads_back_entry_for_entry() {
        let entries = sample();
        let file = written(&entries);
        let reader = BackupReader::new(&file[..]).unwrap();
        assert_eq!(reader.created_ms(), 42);
        let read: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(read, entries);
        assert_eq!(check_backup(&file[..]).unwrap().entries, 100);
    }

    #[test]
    fn damage_anywhere_is_refused() {
        let file = written(&sample());
        // Every byte flipped in turn (a sample of them: all of the header and trailer).
        let positions = (0..40)
            .chain((40..file.len()).step_by(97))
            .chain(file.len() - 16..file.len());
        for at in positions {
            let mut damaged = file.clone();
            damaged[at] ^= 0x40;
            assert!(check_backup(&damaged[..]).is_err(), "flip at {at} accepted");
        }
        for cut in [0, 10, 30, file.len() / 2, file.len() - 1] {
            assert!(check_backup(&file[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(
            check_backup(&longer[..]).is_err(),
            "trailing bytes accepted"
        );
        let error = check_backup(&b"PGDMP plain dump"[..])
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a Latchkey backup"), "{error}");
    }

    #[test]
    fn keys_out_of_order_are_refused_even_with_a_good_checksum() {
        let mut entries = sample();
        entries.swap(3, 4);
        let file = written(&entries);
        let error = check_backup(&file[..]).unwrap_err().to_string();
        assert!(error.contains("out of order"), "{error}");
    }

    /// A backup taken while a writer runs (with checkpoints every few dozen keys) holds exactly
    /// the writes of one prefix of the writer's history: the counter, every point written up
    /// to it and none after, every run entry up to it — and restores into a store that opens.
    #[test]
    fn a_backup_under_writes_and_checkpoints_is_one_instant_and_restores() {
        use crate::test_keys::{event, events_of, point};
        use crate::{test_config, Store, WriteBatch};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir.path().join("live"));
        config.checkpoint_entries = 64;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = Arc::new(Store::open(&config).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, stop) = (store.clone(), stop.clone());
            let handle = runtime.handle().clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let mut batch = WriteBatch::default();
                    batch.put(point("counter"), n.to_be_bytes().to_vec());
                    batch.put(point(&format!("v{n}")), b"x".to_vec());
                    // an older point deleted: a backup must not miss a key deleted after it
                    if n > 10 {
                        batch.delete(point(&format!("v{}", n - 10)));
                    }
                    batch.put(event("run", n), n.to_be_bytes().to_vec());
                    handle.block_on(store.submit(b"w", batch).wait()).unwrap();
                }
                n
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut files = Vec::new();
        for _ in 0..3 {
            let mut file = Vec::new();
            store.backup(&mut file).unwrap();
            files.push(file);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().unwrap();
        assert!(written > 200, "the writer ran: {written}");
        for (i, file) in files.iter().enumerate() {
            let entries: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
                BackupReader::new(&file[..])
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
            let counter = entries.get(&point("counter")).expect("counter");
            let n = u64::from_be_bytes(counter[..].try_into().unwrap());
            assert!(n > 0 && n <= written);
            for k in 1..=n + 5 {
                let expected = k + 10 > n && k <= n;
                assert_eq!(
                    entries.contains_key(&point(&format!("v{k}"))),
                    expected,
                    "backup {i} at {n}: point v{k}"
                );
            }
            let run: Vec<u64> = entries
                .keys()
                .filter(|key| key.starts_with(&events_of("run")))
                .map(|key| u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap()))
                .collect();
            assert_eq!(run, (1..=n).collect::<Vec<_>>(), "backup {i}: run entries");
            // restored: the same entries, in a store that opens — sled's backups into either
            // store (a migration to redb is a backup and a restore)
            let mut target = test_config(&dir.path().join(format!("restored{i}")));
            target.checkpoint_entries = 64;
            target.medium = crate::Medium::ALL[i % crate::Medium::ALL.len()];
            let summary = restore(&file[..], &target).unwrap();
            assert_eq!(summary.entries, entries.len() as u64);
            assert!(!staging_dir(&target.data_dir).exists());
            assert_eq!(crate::Medium::detect(&target.data_dir), Some(target.medium));
            let restored = Store::open(&target).unwrap();
            let mut again = Vec::new();
            restored.backup(&mut again).unwrap();
            let reread: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
                BackupReader::new(&again[..])
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
            assert_eq!(reread, entries, "restore {i} holds what the backup held");
            restored.close().unwrap();
        }
        store.close().unwrap();
    }

    #[test]
    fn restore_refuses_a_used_directory_and_leaves_nothing_after_a_bad_file() {
        use crate::test_config;
        let dir = tempfile::tempdir().unwrap();
        let used = dir.path().join("used");
        std::fs::create_dir_all(&used).unwrap();
        std::fs::write(used.join("something"), b"x").unwrap();
        let file = written(&sample());
        let error = restore(&file[..], &test_config(&used))
            .unwrap_err()
            .to_string();
        assert!(error.contains("empty or missing"), "{error}");
        let target = dir.path().join("fresh");
        let mut damaged = file.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 1;
        assert!(restore(&damaged[..], &test_config(&target)).is_err());
        assert!(
            !target.exists() && !staging_dir(&target).exists(),
            "nothing left behind"
        );
    }
}
