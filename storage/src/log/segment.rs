//! Segment files: `wal/<number>.log`, numbered upwards, each opened with [`MAGIC`]. The segment
//! being written is held by the flushing thread alone; a new one is a renamed spare when there is
//! one (`spares.rs`), whose blocks a sync then overwrites instead of growing a file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::record::{seal, MAGIC};
use super::spares::list_spares;
use crate::StoreError;

/// The segment file being written; only the flushing thread touches it.
pub(super) struct Segment {
    pub dir: PathBuf,
    pub file: File,
    pub number: u64,
    /// Bytes written so far (header included): where the next records go.
    pub written: u64,
    /// The file's size when it became this segment: below it, writes overwrite blocks the file
    /// already has (a recycled or zero-filled spare); past it, they grow the file.
    pub capacity: u64,
    /// A write or sync failed: the next flush writes the whole unsynced tail into a fresh segment
    /// (the failed one may hold any prefix of it, or garbage in the page cache's place).
    pub broken: bool,
    /// Spare files ready in the directory (shared with the checkpoint thread, which makes them).
    pub spares: Arc<AtomicUsize>,
}

impl Segment {
    /// Segment `number` in `dir`, made by [`create_segment`].
    pub fn create(dir: PathBuf, number: u64, spares: Arc<AtomicUsize>) -> Result<Self, StoreError> {
        let (file, capacity) = create_segment(&dir, number, &spares)?;
        Ok(Segment {
            dir,
            file,
            number,
            written: MAGIC.len() as u64,
            capacity,
            broken: false,
            spares,
        })
    }

    pub fn rotate(&mut self) -> Result<(), StoreError> {
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
    pub fn append(&mut self, records: &mut [u8]) -> std::io::Result<()> {
        seal(records, self.number);
        self.file.write_all(records)?;
        self.written += records.len() as u64;
        self.file.sync_data()
    }

    /// Writes now grow the file, so each sync also writes the file's size (one more disk round
    /// trip per commit).
    pub fn appending(&self) -> bool {
        self.written >= self.capacity
    }
}

pub(super) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016}.log"))
}

/// The names of the files in the log's folder.
pub(super) fn file_names(dir: &Path) -> Result<Vec<String>, String> {
    std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .map(|entry| {
            let name = entry.map_err(|e| e.to_string())?.file_name();
            Ok(name.to_string_lossy().into_owned())
        })
        .collect()
}

pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>, String> {
    let mut segments: Vec<u64> = file_names(dir)?
        .iter()
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .collect();
    segments.sort_unstable();
    Ok(segments)
}

/// Makes segment `number` (a renamed spare, else a new file), writes its header and makes its
/// directory entry durable, so records synced into it later cannot vanish with the entry.
/// Returns the file and its size (what can be overwritten without growing it).
pub(super) fn create_segment(
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
