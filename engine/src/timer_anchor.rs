//! Keeps arming a call's timeout from waking a parked tokio worker.
//!
//! Every call arms timers (ractor's reply timeout, then the durability wait), each due
//! `call_timeout` later. tokio's timer driver remembers, when a worker parks, when it must wake
//! next; a timer registered *earlier* than that — or at all, when no timer was pending — makes the
//! registering thread wake the parked worker (an eventfd write, then a context switch on the
//! other core), even if the timer is due seconds later. Under load the workers park and wake
//! thousands of times a second, so most calls found no timer pending: in a closed-loop HTTP run
//! ≈ 0.12 such wake-ups per request, more than every other wake-up source but the network.
//!
//! The anchor is a task whose own timer is always due within half a `call_timeout`. With it
//! pending, the driver's next wake-up is never later than a new call's deadline, so arming one
//! wakes nobody. Its cost is one wake-up per period (docs/performance.md, eighth session).

use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

/// The shortest period: below it the anchor's own wake-ups would start to count.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Starts the anchor on the current runtime; abort the handle to stop it.
pub(crate) fn spawn(call_timeout: Duration) -> AbortHandle {
    let period = (call_timeout / 2).max(MIN_PERIOD);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
        }
    })
    .abort_handle()
}
