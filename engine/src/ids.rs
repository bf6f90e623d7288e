//! Generated ids: numeric strings, time-ordered (snowflake-style: milliseconds since the Unix
//! epoch in the high bits, a counter in the low 16), unique within a process and across restarts
//! as long as the clock does not go backwards by more than the restart takes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct IdGenerator {
    last: AtomicU64,
}

impl Default for IdGenerator {
    fn default() -> Self {
        IdGenerator {
            last: AtomicU64::new(0),
        }
    }
}

impl IdGenerator {
    pub fn next_id(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            << 16;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next.to_string(),
                Err(seen) => last = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn unique_numeric_and_increasing_across_threads() {
        let gen = Arc::new(IdGenerator::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let gen = gen.clone();
                std::thread::spawn(move || (0..10_000).map(|_| gen.next_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            let ids = h.join().unwrap();
            let nums: Vec<u64> = ids.iter().map(|i| i.parse().unwrap()).collect();
            assert!(nums.windows(2).all(|w| w[0] < w[1]));
            all.extend(ids);
        }
        assert_eq!(all.len(), 40_000);
    }
}
