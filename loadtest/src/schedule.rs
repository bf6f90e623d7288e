//! The open loop's clock: which requests have come due, released as permits that free clients
//! take.
//!
//! Request `i` is due at `begin + i / rate`. Something must notice that time has passed and
//! release what came due. A timer thread alone did it at first, and it was the open loop's own
//! source of latency: on a machine whose two cores are busy with the server and the clients, a
//! sleeping thread can wait several milliseconds (10 ms seen) for a core after its sleep ends,
//! and every request due meanwhile is counted late — the harness's p99 read 20–60 ms in one
//! round of three where oha read under 1 ms. So every client also releases whatever came due
//! when it finishes a request: while clients are busy the clock advances on threads that are
//! already running, and the timer thread only matters when every client is idle — when the
//! cores are not busy either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// The timer thread's shortest sleep: at most one wake per quantum releases everything that has
/// come due since (waking for every request, ≈ 30 µs apart at 33k/s, cost the client more CPU
/// than the server it measured).
const QUANTUM: Duration = Duration::from_micros(200);

pub struct Schedule {
    begin: Instant,
    rate: f64,
    total: u64,
    /// Requests released so far (permits added): only ever grows.
    released: AtomicU64,
    /// Requests taken by clients so far.
    taken: AtomicU64,
    due: Semaphore,
}

impl Schedule {
    /// Requests at `rate` per second from `begin`, for `span`.
    pub fn new(begin: Instant, rate: f64, span: Duration) -> Schedule {
        let rate = rate.max(1.0);
        Schedule {
            begin,
            rate,
            total: (span.as_secs_f64() * rate) as u64,
            released: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            due: Semaphore::new(0),
        }
    }

    /// When request `i` is due.
    pub fn intended(&self, i: u64) -> Instant {
        self.begin + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Releases every request due by now that is not released yet; true once all are.
    pub fn release_due(&self) -> bool {
        let elapsed = Instant::now().saturating_duration_since(self.begin);
        let came_due = ((elapsed.as_secs_f64() * self.rate) as u64 + 1).min(self.total);
        let mut released = self.released.load(Ordering::Acquire);
        while came_due > released {
            match self.released.compare_exchange_weak(
                released,
                came_due,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.due.add_permits((came_due - released) as usize);
                    released = came_due;
                }
                Err(current) => released = current,
            }
        }
        released >= self.total
    }

    /// Waits for a released request and takes it; `None` once the schedule is over.
    pub async fn next(&self) -> Option<u64> {
        self.due.acquire().await.ok()?.forget();
        let i = self.taken.fetch_add(1, Ordering::Relaxed);
        (i < self.total).then_some(i)
    }

    /// The timer thread's loop: releases what comes due until everything is, then one permit
    /// per client, so each finds nothing left and stops.
    pub fn run_timer(&self, clients: usize) {
        while !self.release_due() {
            let next = self.intended(self.released.load(Ordering::Acquire));
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.max(QUANTUM));
        }
        self.due.add_permits(clients);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_what_came_due_once_whoever_asks() {
        let begin = Instant::now() - Duration::from_millis(10);
        let schedule = Schedule::new(begin, 1000.0, Duration::from_secs(1000));
        schedule.release_due();
        let first = schedule.released.load(Ordering::Acquire);
        // 10 ms at 1,000/s: about eleven requests (request 0 is due at `begin`).
        assert!((11..100).contains(&first), "{first}");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| schedule.release_due());
            }
        });
        let released = schedule.released.load(Ordering::Acquire);
        assert!(released >= first);
        assert_eq!(schedule.due.available_permits() as u64, released);
    }

    #[test]
    fn a_finished_schedule_ends_every_client() {
        let schedule = Schedule::new(Instant::now(), 100_000.0, Duration::from_micros(500));
        schedule.run_timer(3);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        runtime.block_on(async {
            while let Some(i) = schedule.next().await {
                got.push(i);
            }
        });
        assert!((49..=50).contains(&schedule.total));
        assert_eq!(got, (0..schedule.total).collect::<Vec<_>>());
    }
}
