//! The log's memtable: what was written since the last checkpoint, held in memory in front of
//! sled (see `log/`).
//!
//! Every command inserts twice here (its snapshot and its event) while holding the log's lock,
//! so inserting must be cheap. An ordered tree of ~100k heap-allocated keys was not: each insert
//! chased pointers through a dozen compares, ≈ 15 % of the embedded hot path's CPU. So the table
//! is two hash maps instead: point keys by key, and the entries of append-only runs (the
//! engine's events; [`Runs`]) by owner (the run key without its sequence), each owner's entries
//! in sequence order. A checkpoint then writes one chunk per owner straight from its run, and an
//! owner's run is found without a search. An owner's entries share one buffer, so dropping a
//! checkpointed table frees one allocation per owner, not one per entry. The ordered reads — prefix scans and checkpoints —
//! are rare; a scan sorts what it takes.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::sync::Mutex;
use crate::Runs;

/// A value, or `None` for a delete (it must hide what sled still holds).
pub(crate) type Value = Option<Vec<u8>>;

pub(crate) struct Table {
    runs: Runs,
    points: HashMap<Vec<u8>, Value, RandomState>,
    /// Point keys under `ordered_tag` (the engine's list indexes), by hash like the others,
    /// and also in key order: the caller scans them often, and a scan of the hash map visits
    /// every point. Inserting does no ordered search — a lock or unlock rewrites its user's two
    /// state entries, which the table almost always holds, and a tree insert under the writer's
    /// lock compared ≈ 20 long keys (≈ 5 % of the embedded write path's CPU). A key new to the
    /// table is only noted; the first ordered read after it (a scan, a checkpoint) sorts what
    /// was noted into the order.
    ordered_tag: Option<u8>,
    ordered: HashMap<Arc<[u8]>, Value, RandomState>,
    order: Mutex<Order>,
    /// Owner → its run.
    events: HashMap<Vec<u8>, Run, RandomState>,
    event_count: usize,
}

/// The ordered keys of a table: those sorted, and those inserted since the last ordered read.
#[derive(Default)]
struct Order {
    sorted: BTreeSet<Arc<[u8]>>,
    unsorted: Vec<Arc<[u8]>>,
}

impl Order {
    /// Moves the noted keys into the order. A scan pays it, holding the tables' read lock, so
    /// writers wait meanwhile: at most what was inserted since the last ordered read (after an
    /// import, up to a table's worth — the frozen table is settled by its checkpoint, the
    /// replayed one at open).
    fn settle(&mut self) -> &BTreeSet<Arc<[u8]>> {
        if self.unsorted.len() > self.sorted.len() / 16 {
            // Many (a checkpoint after an import): one sort and a linear merge.
            let mut noted: BTreeSet<_> = self.unsorted.drain(..).collect();
            self.sorted.append(&mut noted);
        } else {
            self.sorted.extend(self.unsorted.drain(..));
        }
        &self.sorted
    }
}

/// One owner's run: its entries' bytes one after another, and where each sequence's are (`None`:
/// deleted), sorted by sequence. Sequences arrive in order, so an insert is almost always a push;
/// anything else (replay, an overwrite) finds its place by binary search. An overwritten event
/// leaves its old bytes behind until the table is dropped.
#[derive(Default)]
pub(crate) struct Run {
    bytes: Vec<u8>,
    at: Vec<(u64, Option<(usize, usize)>)>,
}

impl Run {
    /// True if `sequence` is new to the run.
    fn insert(&mut self, sequence: u64, value: Value) -> bool {
        let place = value.map(|value| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(&value);
            (start, value.len())
        });
        if self.at.last().is_none_or(|(last, _)| *last < sequence) {
            self.at.push((sequence, place));
            return true;
        }
        match self.at.binary_search_by_key(&sequence, |(s, _)| *s) {
            Ok(i) => {
                self.at[i].1 = place;
                false
            }
            Err(i) => {
                self.at.insert(i, (sequence, place));
                true
            }
        }
    }

    fn get(&self, sequence: u64) -> Option<Option<&[u8]>> {
        let i = self.at.binary_search_by_key(&sequence, |(s, _)| *s).ok()?;
        Some(self.value(self.at[i].1))
    }

    fn value(&self, place: Option<(usize, usize)>) -> Option<&[u8]> {
        place.map(|(start, len)| &self.bytes[start..start + len])
    }

    /// Sequence and event (`None`: deleted), in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Option<&[u8]>)> {
        self.at
            .iter()
            .map(|(sequence, place)| (*sequence, self.value(*place)))
    }
}

impl Table {
    pub fn new(runs: Runs) -> Self {
        Table {
            runs,
            points: HashMap::default(),
            ordered_tag: None,
            ordered: HashMap::default(),
            order: Mutex::default(),
            events: HashMap::default(),
            event_count: 0,
        }
    }

    /// Keeps the point keys under `tag` in order (see `ordered`).
    pub fn with_ordered(mut self, tag: Option<u8>) -> Self {
        self.ordered_tag = tag;
        self
    }

    /// An empty table of the same layout.
    pub fn empty_like(&self) -> Table {
        Table::new(self.runs).with_ordered(self.ordered_tag)
    }

    fn is_ordered(&self, key: &[u8]) -> bool {
        self.ordered_tag
            .is_some_and(|tag| key.first() == Some(&tag))
    }

    /// Puts the ordered keys noted since the last ordered read in order.
    pub fn settle_order(&mut self) {
        self.order.get_mut().settle();
    }

    /// The layout of the runs this table keeps.
    pub fn runs(&self) -> Runs {
        self.runs
    }

    /// `Some(value)` if the table has the key (`Some(None)`: deleted here).
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        match self.runs.split(key) {
            Some((owner, sequence)) => {
                let event = self.events.get(owner)?.get(sequence)?;
                Some(event.map(<[u8]>::to_vec))
            }
            None if self.is_ordered(key) => self.ordered.get(key).cloned(),
            None => self.points.get(key).cloned(),
        }
    }

    pub fn insert(&mut self, key: Vec<u8>, value: Value) {
        let Some((owner, sequence)) = self.runs.split(&key) else {
            if self.is_ordered(&key) {
                match self.ordered.get_mut(key.as_slice()) {
                    Some(held) => *held = value,
                    None => {
                        let key: Arc<[u8]> = key.into();
                        self.order.get_mut().unsorted.push(key.clone());
                        self.ordered.insert(key, value);
                    }
                }
            } else {
                self.points.insert(key, value);
            }
            return;
        };
        let run = match self.events.get_mut(owner) {
            Some(run) => run,
            None => self.events.entry(owner.to_vec()).or_default(),
        };
        if run.insert(sequence, value) {
            self.event_count += 1;
        }
    }

    /// Entries (keys, not users).
    pub fn len(&self) -> usize {
        self.points.len() + self.ordered.len() + self.event_count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries whose key starts with `prefix`, in key order.
    pub fn scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Value)> {
        let in_ordered: Vec<(Vec<u8>, Value)> = self
            .order
            .lock()
            .settle()
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|key| key.starts_with(prefix))
            .filter_map(|key| Some((key.to_vec(), self.ordered.get(key)?.clone())))
            .collect();
        if !prefix.is_empty() && self.is_ordered(prefix) {
            return in_ordered; // no other key starts with the ordered tag
        }
        let mut found: Vec<(Vec<u8>, Value)> = self
            .points
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        for (owner, run) in &self.events {
            // An owner's keys all start with the owner: they can match only if the two agree.
            let common = owner.len().min(prefix.len());
            if owner[..common] != prefix[..common] {
                continue;
            }
            for (sequence, value) in run.iter() {
                let key = event_key(owner, sequence);
                if key.starts_with(prefix) {
                    found.push((key, value.map(<[u8]>::to_vec)));
                }
            }
        }
        found.extend(in_ordered);
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Every point entry: the ordered ones in key order, the rest in no particular order.
    pub fn points(&self) -> impl Iterator<Item = (&[u8], &Value)> {
        // In key order: sled takes a run of neighbouring keys much faster than the same keys
        // in hash order.
        let sorted: Vec<Arc<[u8]>> = self.order.lock().settle().iter().cloned().collect();
        let ordered = sorted
            .into_iter()
            .filter_map(|key| self.ordered.get_key_value(&*key))
            .map(|(key, value)| (&**key, value));
        self.points
            .iter()
            .map(|(key, value)| (key.as_slice(), value))
            .chain(ordered)
    }

    /// Every owner's run, in sequence order (owners in no particular order).
    pub fn event_runs(&self) -> impl Iterator<Item = (&[u8], &Run)> {
        self.events
            .iter()
            .map(|(owner, run)| (owner.as_slice(), run))
    }
}

/// The run key of `owner`'s (tag included) entry `sequence`.
pub(crate) fn event_key(owner: &[u8], sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(owner.len() + 8);
    key.extend_from_slice(owner);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_keys::{event, events_of, point};
    use crate::TEST_RUNS;

    fn v(text: &str) -> Value {
        Some(text.as_bytes().to_vec())
    }

    #[test]
    fn points_and_events_are_found_and_overwritten() {
        let mut table = Table::new(TEST_RUNS);
        table.insert(point("1"), v("snapshot 1"));
        table.insert(event("1", 1), v("created"));
        table.insert(event("1", 2), v("locked"));
        table.insert(point("1"), v("snapshot 2"));
        table.insert(event("1", 2), v("locked again"));
        table.insert(b"n-ada".to_vec(), None);
        assert_eq!(table.len(), 4);
        assert_eq!(table.get(&point("1")), Some(v("snapshot 2")));
        assert_eq!(table.get(&event("1", 1)), Some(v("created")));
        assert_eq!(table.get(&event("1", 2)), Some(v("locked again")));
        table.insert(event("1", 1), None);
        assert_eq!(table.get(&event("1", 1)), Some(None));
        assert_eq!(table.len(), 4);
        assert_eq!(table.get(b"n-ada"), Some(None));
        assert_eq!(table.get(&event("1", 3)), None);
        assert_eq!(table.get(&point("2")), None);
    }

    #[test]
    fn scans_return_exactly_the_prefixed_keys_in_key_order() {
        let mut table = Table::new(TEST_RUNS);
        let mut all = Vec::new();
        for id in ["1", "12", "2", "10"] {
            for sequence in [3u64, 1, 256, 2] {
                let key = event(id, sequence);
                table.insert(key.clone(), v(id));
                all.push(key);
            }
            let key = point(id);
            table.insert(key.clone(), v(id));
            all.push(key);
        }
        all.sort();
        let keys_of = |prefix: &[u8]| -> Vec<Vec<u8>> {
            table.scan(prefix).into_iter().map(|(key, _)| key).collect()
        };
        // everything, in byte order
        assert_eq!(keys_of(b""), all);
        // one owner's run: not those of owners whose ids start alike ("1" vs "10", "12")
        let of_1: Vec<_> = [1u64, 2, 3, 256].map(|s| event("1", s)).to_vec();
        assert_eq!(keys_of(&events_of("1")), of_1);
        // every run entry, and every point
        let events: Vec<_> = all
            .iter()
            .filter(|k| k[0] == TEST_RUNS.tag)
            .cloned()
            .collect();
        assert_eq!(keys_of(&[TEST_RUNS.tag]), events);
        assert_eq!(keys_of(b"u").len(), 4);
        // a prefix reaching into the sequence
        let mut partial = events_of("1");
        partial.extend_from_slice(&[0; 6]);
        partial.push(1); // sequences 256..=511
        assert_eq!(keys_of(&partial), vec![event("1", 256)]);
    }

    #[test]
    fn ordered_points_are_found_scanned_and_listed_with_the_rest() {
        let mut table = Table::new(TEST_RUNS).with_ordered(Some(b'x'));
        for key in ["x3", "x1", "xx", "u1", "x2"] {
            table.insert(key.as_bytes().to_vec(), v(key));
        }
        table.insert(b"x2".to_vec(), None);
        assert_eq!(table.get(b"x1"), Some(v("x1")));
        assert_eq!(table.get(b"x2"), Some(None));
        assert_eq!(table.len(), 5);
        let keys = |prefix: &[u8]| -> Vec<Vec<u8>> {
            table.scan(prefix).into_iter().map(|(key, _)| key).collect()
        };
        assert_eq!(keys(b"x"), [&b"x1"[..], b"x2", b"x3", b"xx"]);
        assert_eq!(keys(b"x3"), [b"x3"]);
        assert_eq!(keys(b"").len(), 5);
        assert_eq!(table.points().count(), 5);
        // A rewritten ordered key stays one entry, in its place, with its last value.
        table.insert(b"x2".to_vec(), v("again"));
        assert_eq!(table.len(), 5);
        assert_eq!(table.scan(b"x")[1], (b"x2".to_vec(), v("again")));
        assert!(table.empty_like().is_empty());
    }

    #[test]
    fn ordered_keys_noted_between_reads_join_the_order() {
        let mut table = Table::new(TEST_RUNS).with_ordered(Some(b'x'));
        let mut all = std::collections::BTreeSet::new();
        fn add(table: &mut Table, all: &mut std::collections::BTreeSet<Vec<u8>>, n: u64) {
            let key = format!("x{:04}", n.wrapping_mul(7919) % 1000).into_bytes();
            table.insert(key.clone(), v("x"));
            all.insert(key);
        }
        for n in 0..100 {
            add(&mut table, &mut all, n); // all noted: the first read sorts them at once
        }
        let keys = |table: &Table| -> Vec<Vec<u8>> {
            table.scan(b"x").into_iter().map(|(key, _)| key).collect()
        };
        assert_eq!(keys(&table), all.iter().cloned().collect::<Vec<_>>());
        for n in 100..103 {
            add(&mut table, &mut all, n); // a few: inserted one by one at the next read
        }
        add(&mut table, &mut all, 5); // one the table holds: rewritten, not noted again
        assert_eq!(table.len(), 103);
        let ordered: Vec<Vec<u8>> = table.points().map(|(key, _)| key.to_vec()).collect();
        assert_eq!(ordered, all.iter().cloned().collect::<Vec<_>>());
        assert_eq!(keys(&table), ordered);
    }

    #[test]
    fn only_run_keys_are_split() {
        let key = event("42", 7);
        let (owner, sequence) = TEST_RUNS.split(&key).unwrap();
        assert_eq!((owner, sequence), (events_of("42").as_slice(), 7));
        assert_eq!(event_key(owner, sequence), key);
        assert!(TEST_RUNS.split(&point("42")).is_none());
    }
}
