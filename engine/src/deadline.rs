//! Call deadlines without a timer per call.
//!
//! Every command waits for its actor's answer and for the durability of the state that answer
//! depends on, under one deadline (`Config::call_timeout`), so a stalled actor or disk cannot
//! hang a caller. A tokio timer per command costs a registration and a removal in the runtime's
//! timer wheel on the hot path; on the embedded `uniform` run that was ≈ 7 % of the process's
//! CPU, about the gap to the store ceiling the engine is measured against (docs/performance.md).
//! Deadlines here are coarse instead: a call puts a [`Watch`] on a shared list (one push), and
//! one sweeper task per engine wakes every `tick` to expire the calls past their deadline and to
//! forget the finished ones. A call times out between `timeout` and `timeout + tick` after it
//! began (later only if the runtime itself is too busy to run the sweeper on time).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use futures::task::AtomicWaker;

const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const EXPIRED: u8 = 2;

/// One call's deadline, shared by the call and the sweeper.
struct Watch {
    /// The sweep (counted from the engine's start) at which the call has run out of time.
    due: u64,
    state: AtomicU8,
    waker: AtomicWaker,
}

/// Marks the watch finished when the call ends (answered, expired or dropped), so the next
/// sweep forgets it.
struct Finished<'a>(&'a Watch);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let _ =
            self.0
                .state
                .compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire);
    }
}

pub(crate) struct Deadlines {
    watches: Mutex<Vec<Arc<Watch>>>,
    /// Sweeps so far: the coarse clock deadlines are counted in.
    sweeps: AtomicU64,
    /// Sweeps a call may span: enough that at least `timeout` passes before it expires.
    span: u64,
    tick: Duration,
}

impl Deadlines {
    /// Deadlines of `timeout`, checked every `timeout / 8` (at least 1 ms, at most 50 ms).
    pub fn new(timeout: Duration) -> Self {
        let tick = (timeout / 8).clamp(Duration::from_millis(1), Duration::from_millis(50));
        // A call may begin just after a sweep: `timeout / tick` sweeps later, less than
        // `timeout` may have passed, so it gets one sweep more.
        let span = timeout.as_nanos().div_ceil(tick.as_nanos()) as u64 + 1;
        Deadlines {
            watches: Mutex::new(Vec::new()),
            sweeps: AtomicU64::new(0),
            span,
            tick,
        }
    }

    /// Starts the sweeper on the current runtime; it ends once the deadlines are dropped.
    pub fn start(self: &Arc<Self>) {
        let deadlines: Weak<Deadlines> = Arc::downgrade(self);
        let tick = self.tick;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await; // the first tick is immediate
            loop {
                interval.tick().await;
                match deadlines.upgrade() {
                    Some(deadlines) => deadlines.sweep(),
                    None => return,
                }
            }
        });
    }

    /// Runs `work` to completion, or `None` once its deadline has passed (`work` is dropped).
    pub async fn within<F: Future>(&self, work: F) -> Option<F::Output> {
        let watch = Arc::new(Watch {
            due: self.sweeps.load(Ordering::Acquire) + self.span,
            state: AtomicU8::new(RUNNING),
            waker: AtomicWaker::new(),
        });
        self.lock().push(watch.clone());
        let _finished = Finished(&watch);
        let mut work = pin!(work);
        poll_fn(|cx| {
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            // Registered before the check, so an expiry between the two is not missed.
            watch.waker.register(cx.waker());
            if watch.state.load(Ordering::Acquire) == EXPIRED {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// One tick of the coarse clock: expires the calls that are due, forgets finished ones.
    fn sweep(&self) {
        let now = self.sweeps.fetch_add(1, Ordering::AcqRel) + 1;
        // Taken out so calls can register while this sweep walks the list.
        let watches = std::mem::take(&mut *self.lock());
        let mut running = Vec::with_capacity(watches.len() / 2);
        for watch in watches {
            if watch.state.load(Ordering::Acquire) != RUNNING {
                continue;
            }
            if watch.due > now {
                running.push(watch);
            } else if watch
                .state
                .compare_exchange(RUNNING, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                watch.waker.wake();
            }
        }
        self.lock().append(&mut running);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Watch>>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn work_that_finishes_in_time_gives_its_output() {
        let deadlines = Arc::new(Deadlines::new(Duration::from_millis(200)));
        deadlines.start();
        let output = deadlines
            .within(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                7
            })
            .await;
        assert_eq!(output, Some(7));
    }

    #[tokio::test]
    async fn work_that_hangs_is_cut_off_after_the_timeout_not_before() {
        let timeout = Duration::from_millis(80);
        let deadlines = Arc::new(Deadlines::new(timeout));
        deadlines.start();
        let started = Instant::now();
        let output = deadlines.within(std::future::pending::<()>()).await;
        assert_eq!(output, None);
        assert!(
            started.elapsed() >= timeout,
            "expired after {:?}, before its timeout",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn finished_and_expired_calls_are_forgotten_by_the_next_sweep() {
        let deadlines = Arc::new(Deadlines::new(Duration::from_secs(60)));
        for _ in 0..3 {
            assert_eq!(deadlines.within(async { 1 }).await, Some(1));
        }
        assert_eq!(deadlines.watched(), 3);
        deadlines.sweep();
        assert_eq!(deadlines.watched(), 0);

        // A call still running stays watched until its deadline, then is woken and dropped.
        let pending = {
            let deadlines = deadlines.clone();
            tokio::spawn(async move { deadlines.within(std::future::pending::<()>()).await })
        };
        while deadlines.watched() == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 1..deadlines.span {
            deadlines.sweep();
        }
        assert_eq!(deadlines.watched(), 1, "not due yet");
        assert!(!pending.is_finished());
        deadlines.sweep();
        assert_eq!(deadlines.watched(), 0);
        assert_eq!(pending.await.ok(), Some(None));
    }

    #[test]
    fn a_deadline_spans_enough_sweeps_to_cover_its_timeout() {
        for (timeout_ms, tick_ms, span) in [(5_000, 50, 101), (200, 25, 9), (4, 1, 5)] {
            let deadlines = Deadlines::new(Duration::from_millis(timeout_ms));
            assert_eq!(deadlines.tick, Duration::from_millis(tick_ms));
            assert_eq!(deadlines.span, span);
            // the sweep at `span` comes at least (span - 1) ticks after the call began
            assert!((span - 1) * tick_ms >= timeout_ms);
        }
    }
}
