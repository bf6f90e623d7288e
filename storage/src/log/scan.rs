//! Prefix scans of the logged store: the memtables' entries merged over sled's, in key order,
//! the memtables winning (a delete there hides sled's value). A scan of a run prefix also reads
//! the run's checkpointed chunks and expands them into the entries they hold, so callers only
//! ever see run entries.

use std::collections::BTreeMap;

use super::checkpoint::chunk_key;
use super::record::take_slice;
use super::Tables;
use crate::{Backend, KvIter, Runs, StoreError};

/// Every live entry under `prefix`: `tables` over `inner`.
pub(super) fn scan<'a>(tables: &Tables, inner: &'a dyn Backend, prefix: &[u8]) -> KvIter<'a> {
    let runs = tables.active.runs();
    let overlay = overlay(tables, prefix);
    let sled = entries(inner.scan_prefix(prefix));
    let base: Entries<'_> = if prefix.first() == Some(&runs.tag) {
        let chunks = Expanded {
            runs,
            chunks: inner.scan_prefix(&chunk_key(runs, prefix)),
            current: Vec::new().into_iter(),
            last: None,
        };
        Box::new(Union::new(sled, Box::new(chunks)))
    } else {
        sled
    };
    live(Union::new(Box::new(overlay.into_iter().map(Ok)), base))
}

/// Every live entry under `prefix` in reverse key order: `tables` over `inner`. Point keys only
/// (a run prefix would need its chunks expanded backwards; no caller walks runs in reverse): a
/// run prefix is read forwards and reversed in memory.
pub(super) fn scan_rev<'a>(tables: &Tables, inner: &'a dyn Backend, prefix: &[u8]) -> KvIter<'a> {
    let runs = tables.active.runs();
    if prefix
        .first()
        .is_none_or(|tag| *tag == runs.tag || *tag == runs.chunk_tag)
    {
        let all: Vec<_> = scan(tables, inner, prefix).collect();
        return Box::new(all.into_iter().rev());
    }
    let sled = entries(inner.scan_prefix_rev(prefix));
    live(Union::reversed(
        Box::new(overlay(tables, prefix).into_iter().rev().map(Ok)),
        sled,
    ))
}

/// The memtables' entries under `prefix`, copied (the frozen table's overwritten by the
/// active one's), in key order.
fn overlay(tables: &Tables, prefix: &[u8]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let mut overlay = BTreeMap::new();
    for table in tables.frozen.as_deref().into_iter().chain([&tables.active]) {
        overlay.extend(table.scan(prefix));
    }
    overlay
}

/// The merged entries without the deletes.
fn live(merged: Union<'_>) -> KvIter<'_> {
    Box::new(merged.filter_map(|entry| match entry {
        Ok((key, Some(value))) => Some(Ok((key, value))),
        Ok((_, None)) => None,
        Err(e) => Some(Err(e)),
    }))
}

/// Every live entry of the store: `tables` (copied now) over everything in `inner`, run chunks
/// expanded into their entries.
pub(super) fn scan_all<'a>(tables: &Tables, inner: &'a dyn Backend) -> KvIter<'a> {
    let runs = tables.active.runs();
    let overlay = overlay(tables, &[]);
    // Every key of sled but the chunks, tag by tag (so the chunks are never read twice).
    let plain: Entries<'a> = Box::new(
        (0..=u8::MAX)
            .filter(move |tag| *tag != runs.chunk_tag)
            .flat_map(move |tag| entries(inner.scan_prefix(&[tag]))),
    );
    let chunks = Expanded {
        runs,
        chunks: inner.scan_prefix(&[runs.chunk_tag]),
        current: Vec::new().into_iter(),
        last: None,
    };
    let base = Box::new(Union::new(plain, Box::new(chunks)));
    live(Union::new(Box::new(overlay.into_iter().map(Ok)), base))
}

/// The entries of one chunk as (run key, entry), or `None` if it is corrupt.
fn split_chunk(runs: Runs, key: &[u8], chunk: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let owner = key.get(1..key.len().checked_sub(8)?)?;
    let mut events = Vec::new();
    let mut rest = chunk;
    while !rest.is_empty() {
        let (sequence, tail) = rest.split_first_chunk::<8>()?;
        let (event, tail) = take_slice(tail)?;
        let mut event_key = Vec::with_capacity(1 + owner.len() + 8);
        event_key.push(runs.tag);
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

/// A scan of run chunks as run entries, in key order. A chunk may repeat entries of an earlier
/// one (a segment replayed after its checkpoint was written, checkpointed again): those are
/// skipped.
struct Expanded<'a> {
    runs: Runs,
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
            // The checkpoint record shares the chunks' tag (`checkpointed.rs`); it is no chunk.
            if key.len() == 1 {
                continue;
            }
            match split_chunk(self.runs, &key, &chunk) {
                Some(events) => self.current = events.into_iter(),
                None => {
                    return Some(Err(StoreError::Io(format!(
                        "corrupt run chunk at key {key:?}"
                    ))))
                }
            }
        }
    }
}

/// Sorted union of two scans (both ascending, or both descending when `reversed`); `front` wins
/// on equal keys. Deletes (`None`) are kept, so a front delete hides the back's entry; the caller
/// drops them at the end.
struct Union<'a> {
    front: std::iter::Peekable<Entries<'a>>,
    back: std::iter::Peekable<Entries<'a>>,
    reversed: bool,
}

impl<'a> Union<'a> {
    fn new(front: Entries<'a>, back: Entries<'a>) -> Self {
        Union {
            front: front.peekable(),
            back: back.peekable(),
            reversed: false,
        }
    }

    fn reversed(front: Entries<'a>, back: Entries<'a>) -> Self {
        Union {
            reversed: true,
            ..Union::new(front, back)
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
            (Some(Ok((front, _))), Some(Ok((back, _)))) if self.reversed => back.cmp(front),
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
