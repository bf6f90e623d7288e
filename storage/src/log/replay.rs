//! Recovery: every remaining segment, oldest first, replayed into the memtable. Records hold
//! absolute values, so replaying a segment whose checkpoint completed but which was not yet
//! retired is harmless. A segment is read up to its first torn or corrupt record: only records
//! whose sync never completed can be torn, and those were never acknowledged — and after a failed
//! write or sync, every record since the last good sync is written again, whole, into a fresh
//! segment.

use std::path::Path;

use super::record::{decode_record, MAGIC};
use super::segment::{list_segments, segment_path};
use super::Tables;

/// Replays every segment in `wal_dir` into `tables`; returns the segment numbers found.
pub(super) fn replay_all(wal_dir: &Path, tables: &mut Tables) -> Result<Vec<u64>, String> {
    let segments = list_segments(wal_dir)?;
    for &segment in &segments {
        let bytes = std::fs::read(segment_path(wal_dir, segment))
            .map_err(|e| format!("reading log segment {segment}: {e}"))?;
        replay(&bytes, segment, tables)
            .map_err(|cause| format!("log segment {segment}: {cause}"))?;
    }
    Ok(segments)
}

/// Applies every intact record of one segment to `tables`, stopping at the first torn one.
pub(super) fn replay(segment: &[u8], number: u64, tables: &mut Tables) -> Result<(), String> {
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
