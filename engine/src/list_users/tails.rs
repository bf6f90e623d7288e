//! A text query's index range put in creation order, compactly.
//!
//! ListUsers' default sort is by creation, but a text column's index (username, names, email)
//! is in the column's order. To walk such a range in creation order, the walk gathers the tail
//! of each entry's key (creation time, then id) and sorts them. A broad query can gather up to
//! [`SKIP_CAP`](super::SKIP_CAP) of them, so they live in one byte arena with one span per
//! entry — two allocations, not two per entry — which keeps such a query's memory to its size
//! and hands it back to the allocator in two large pieces, where per-entry buffers left the
//! allocator holding fragmented pages after the call.

/// Entry tails (eight bytes of creation time, then the id), sortable and walkable both ways.
#[derive(Debug, Default)]
pub(super) struct Tails {
    arena: Vec<u8>,
    /// (start, end) of each tail in `arena`.
    spans: Vec<(u32, u32)>,
}

impl Tails {
    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Adds one tail; false if the arena would outgrow its 32-bit offsets (the caller treats
    /// that as too many, as it does a count past its cap).
    pub(super) fn push(&mut self, tail: &[u8]) -> bool {
        let start = self.arena.len();
        let (Ok(from), Ok(to)) = (u32::try_from(start), u32::try_from(start + tail.len())) else {
            return false;
        };
        self.arena.extend_from_slice(tail);
        self.spans.push((from, to));
        true
    }

    fn tail(&self, (from, to): (u32, u32)) -> &[u8] {
        &self.arena[from as usize..to as usize]
    }

    /// Sorts into creation order (the tails compare as bytes: a big-endian time, then the id).
    pub(super) fn sort(&mut self) {
        let mut spans = std::mem::take(&mut self.spans);
        spans.sort_unstable_by(|a, b| self.tail(*a).cmp(self.tail(*b)));
        self.spans = spans;
    }

    /// The ids in order, or in reverse order unless `asc`.
    pub(super) fn ids(self, asc: bool) -> impl Iterator<Item = String> {
        let Tails { arena, spans } = self;
        let mut order = spans.into_iter();
        std::iter::from_fn(move || {
            let (from, to) = if asc {
                order.next()?
            } else {
                order.next_back()?
            };
            let id = arena
                .get(from as usize + 8..to as usize)
                .unwrap_or_default();
            Some(String::from_utf8_lossy(id).into_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(time: u64, id: &str) -> Vec<u8> {
        let mut t = time.to_be_bytes().to_vec();
        t.extend_from_slice(id.as_bytes());
        t
    }

    #[test]
    fn sorted_tails_walk_in_creation_order_then_id_both_ways() {
        let sorted = || {
            let mut tails = Tails::default();
            for (time, id) in [(30, "c"), (10, "zz"), (20, "b"), (10, "a"), (256, "d")] {
                assert!(tails.push(&tail(time, id)));
            }
            tails.sort();
            tails
        };
        assert_eq!(sorted().len(), 5);
        let ascending: Vec<String> = sorted().ids(true).collect();
        let descending: Vec<String> = sorted().ids(false).collect();
        assert_eq!(ascending, ["a", "zz", "b", "c", "d"]);
        assert_eq!(descending, ["d", "c", "b", "zz", "a"]);
    }
}
