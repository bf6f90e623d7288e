//! Automatic unlocks: a lock from failed checks whose policy lifts it after a while is lifted at
//! its deadline, whether or not anyone asks for the user, and also when the deadline passed while
//! the server was down or the user's actor passivated.
//!
//! Each such lock writes a key `keys::auto_unlock(deadline, user)` in the same write that locks;
//! the keys sort by deadline, so the due ones are the first of the prefix — no scan of every user.
//! One task sleeps until the earliest deadline (the actors tell it of new ones), then asks each
//! due user's actor to lift its lock; the actor removes the key in the same write as the unlock
//! (dated at the deadline). Actors also lift a due lock themselves before any request, so a read
//! never shows a lock that should have ended, even between two wake-ups of the task.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use latchkey_storage::Store;
use tokio::sync::Notify;

use crate::error::Error;
use crate::keys;
use crate::registry::Registry;
use crate::time::{now_micros, Micros};
use crate::user::actor::Request;
use crate::Placement;

/// The longest the task sleeps without looking (a missed wake-up costs at most this).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Due unlocks handled per pass.
const BATCH: usize = 256;

/// What the actors tell the task.
pub(crate) struct AutoUnlocks {
    /// The earliest deadline the task knows of (`i64::MAX`: none).
    next: AtomicI64,
    wake: Notify,
}

impl Default for AutoUnlocks {
    fn default() -> Self {
        AutoUnlocks {
            next: AtomicI64::new(i64::MAX),
            wake: Notify::new(),
        }
    }
}

impl AutoUnlocks {
    /// A lock that lifts at `at` was just written.
    pub fn schedule(&self, at: Micros) {
        if self.next.fetch_min(at, Ordering::AcqRel) > at {
            self.wake.notify_one();
        }
    }
}

/// The task: started at open, it first handles what came due while the server was down.
///
/// In cluster mode (`placement`) a node lifts only the locks of users it serves; a user whose
/// partition moves here is picked up within [`MAX_SLEEP`].
pub(crate) fn spawn(
    registry: Arc<Registry>,
    store: Arc<Store>,
    placement: Option<Arc<dyn Placement>>,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            let unlocks = registry.unlocks();
            // Whatever is scheduled from here on wakes the next wait.
            unlocks.next.store(i64::MAX, Ordering::Release);
            let next = match run_due(&registry, &store, &placement).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("automatic unlocks: {e}; trying again shortly");
                    Some(now_micros() + 1_000_000)
                }
            };
            if let Some(next) = next {
                unlocks.schedule(next);
            }
            let at = unlocks.next.load(Ordering::Acquire);
            let wait = Duration::from_micros(at.saturating_sub(now_micros()).max(0) as u64);
            if !wait.is_zero() {
                let _ = tokio::time::timeout(wait.min(MAX_SLEEP), unlocks.wake.notified()).await;
            }
        }
    })
    .abort_handle()
}

/// Lifts every due lock; answers the next deadline, if any.
async fn run_due(
    registry: &Arc<Registry>,
    store: &Arc<Store>,
    placement: &Option<Arc<dyn Placement>>,
) -> Result<Option<Micros>, Error> {
    loop {
        let now = now_micros();
        let scanned = {
            let (store, placement) = (store.clone(), placement.clone());
            tokio::task::spawn_blocking(move || -> Result<Vec<(Micros, String)>, Error> {
                let mut found = Vec::new();
                for item in store.scan_prefix(keys::AUTO_UNLOCKS) {
                    let (key, _) = item?;
                    let Some(entry) = keys::split_auto_unlock(&key) else {
                        continue;
                    };
                    if placement
                        .as_ref()
                        .is_none_or(|placement| placement.owns(&keys::user(&entry.1)))
                    {
                        found.push(entry);
                    }
                    if found.len() > BATCH || found.last().is_some_and(|(at, _)| *at > now) {
                        break;
                    }
                }
                Ok(found)
            })
            .await
            .map_err(|e| Error::with(crate::error::ErrorId::Internal, e.to_string()))??
        };
        let (due, later): (Vec<_>, Vec<_>) = scanned.into_iter().partition(|(at, _)| *at <= now);
        if due.is_empty() {
            return Ok(later.first().map(|(at, _)| *at));
        }
        for (at, user) in due {
            let unlocked = registry
                .call(&user, |reply| Request::AutoUnlock { at, reply })
                .await;
            match unlocked {
                Ok(_) => {}
                // A user that no longer exists keeps no schedule.
                Err(e) if e.id == crate::error::ErrorId::UserNotFound => {
                    let mut batch = latchkey_storage::WriteBatch::default();
                    batch.delete(keys::auto_unlock(at, &user));
                    store.submit(&keys::user(&user), batch).wait().await?;
                }
                Err(e) => {
                    tracing::warn!(%user, "automatic unlock: {e}");
                    return Err(e);
                }
            }
        }
    }
}
