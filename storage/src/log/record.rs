//! The log's records: one per applied batch, appended to the current segment, sealed with a CRC
//! that covers the segment's number — so the stale records a recycled segment still holds after
//! its new end fail their check and end a replay like a torn tail.
//!
//! Record: `[payload length u32 LE][CRC-32 of (segment number u64 LE, payload) u32 LE][payload]`.
//! Payload: `[op count u32 LE]`, then per op `[0 = delete | 1 = put][key length u32 LE][key]`
//! and, for a put, `[value length u32 LE][value]`.

use crate::WriteBatch;

/// The first bytes of every segment file.
pub(super) const MAGIC: &[u8; 8] = b"LKWAL001";

/// Appends `batch` as one record to `out`; the CRC is filled in by [`seal`] once the segment
/// the record lands in is known.
pub(super) fn encode_record(batch: &WriteBatch, out: &mut Vec<u8>) {
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
}

fn record_crc(segment: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&segment.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Fills in the CRC of every record in `records` for segment `segment`.
pub(super) fn seal(records: &mut [u8], segment: u64) {
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

/// The puts (`Some`) and deletes (`None`) of one record.
pub(super) type Ops<'a> = Vec<(&'a [u8], Option<&'a [u8]>)>;

/// One record and what follows it; `None` when the record is torn or corrupt.
pub(super) fn decode_record(bytes: &[u8], segment: u64) -> Option<(Ops<'_>, &[u8])> {
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

pub(super) fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

/// A `u32` length, then that many bytes.
pub(super) fn take_slice(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = take_u32(bytes)?;
    let len = len as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}
