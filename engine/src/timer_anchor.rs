//! Keeps arming a call's timeout from waking a parked tokio worker.
//!
//! Every call arms a timer (one deadline for the actor's answer and its durability) due
//! `call_timeout` later. tokio's timer driver remembers, when a worker parks, when it must wake
//! next; a timer registered *earlier* than that — or at all, when no timer was pending — makes the
//! registering thread wake the parked worker (an eventfd write, then a context switch on the
//! other core), even if the timer is due seconds later. Under load the workers park and wake
//! thousands of times a second, so many calls found no timer pending: in a closed-loop HTTP run
//! ≈ 0.13 such wake-ups per request, more than every other wake-up source but the network.
//!
//! The anchor is a task whose own timer is always due within half a `call_timeout`. With it
//! pending, the driver's next wake-up is never later than a new call's deadline, so arming one
//! wakes nobody. Its cost is one wake-up per period (docs/performance.md, "What mattered").

use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

/// The shortest period: below it the anchor's own wake-ups would start to count.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Starts the anchor on the current runtime; abort the handle to stop it.
pub(crate) fn spawn(call_timeout: Duration) -> AbortHandle {
    let period = period(call_timeout);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
        }
    })
    .abort_handle()
}

/// Shorter than the call timeout (so the anchor is always due before a new call's deadline),
/// but not so short that the anchor itself wakes the runtime often.
fn period(call_timeout: Duration) -> Duration {
    (call_timeout / 2).max(MIN_PERIOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_is_due_before_any_new_calls_deadline() {
        for ms in [20, 100, 5_000, 60_000] {
            let call_timeout = Duration::from_millis(ms);
            assert!(period(call_timeout) < call_timeout, "{ms} ms");
        }
        // Absurdly short call timeouts get no anchor faster than MIN_PERIOD.
        assert_eq!(period(Duration::from_millis(1)), MIN_PERIOD);
    }

    #[tokio::test]
    async fn an_aborted_anchor_stops() {
        let anchor = spawn(Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!anchor.is_finished());
        anchor.abort();
        for _ in 0..100 {
            if anchor.is_finished() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the anchor task outlived its abort");
    }
}
