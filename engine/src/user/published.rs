//! What a user's actor last answered GetUserByID with, shared with readers for as long as nothing
//! about the user has changed since — so reading an active user does not need a hop to its
//! actor, a wake-up of its task and a reply back (see `Registry::view`).
//!
//! The actor is the only writer. It publishes as it answers a read, and it clears before
//! it handles anything that may change the user (every message but a read), so a published view
//! is always the actor's current state. A reader answers from it under the same rules as the
//! actor's own read: only once the write it reflects is durable (the view carries that write's
//! completion), never with a lock whose automatic unlock is due (the actor would lift it first),
//! and only within the caller's reach.
//!
//! Why this is linearizable: a write clears the view before it changes the state, and is
//! acknowledged only after that; a read that starts after the acknowledgement finds no view older
//! than the write. A read that found the old view just before the clear overlapped the write and
//! may be ordered before it. Views only move forward, since the actor publishes its own state in
//! message order.
//!
//! Embedded mode only: in cluster mode a user's partition may move to another node, which the
//! actor's path checks on every call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use latchkey_storage::Completion;

use crate::access::Reach;
use crate::error::{Error, ErrorId};

use crate::user::lockout::LockoutState;
use crate::user::record::UserRecord;

/// One answer to GetUserByID, and the write it depends on.
pub(crate) struct ReadView {
    pub record: UserRecord,
    pub lockout: LockoutState,
    pub durable: Completion,
}

impl ReadView {
    /// This view for a caller of `reach`: the same NotFound as the actor's for a user the caller
    /// may not see.
    pub fn for_caller(self: Arc<Self>, reach: &Reach) -> Result<Arc<Self>, Error> {
        if self.record.visible_to(reach) {
            Ok(self)
        } else {
            Err(ErrorId::UserNotFound.into())
        }
    }
}

/// The cell a user's registry slot and its actor share.
#[derive(Default)]
pub(crate) struct Published {
    /// Whether `view` holds anything: the actor's writes check this, not the lock, and most
    /// find nothing to clear.
    set: AtomicBool,
    view: RwLock<Option<Arc<ReadView>>>,
}

impl Published {
    /// The published view, if any.
    pub fn get(&self) -> Option<Arc<ReadView>> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The actor only, with its current state, as it answers a read.
    pub fn publish(&self, view: ReadView) -> Arc<ReadView> {
        let view = Arc::new(view);
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = Some(view.clone());
        self.set.store(true, Ordering::Release);
        view
    }

    /// The actor only, before anything that may change the user.
    pub fn clear(&self) {
        if self.set.load(Ordering::Acquire) {
            self.set.store(false, Ordering::Release);
            *self.view.write().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ReadView {
        ReadView {
            record: crate::stored::golden::human(),
            lockout: LockoutState::default(),
            durable: Completion::done(),
        }
    }

    #[test]
    fn a_cleared_view_is_gone_and_a_published_one_is_shared() {
        let published = Published::default();
        assert!(published.get().is_none());
        published.publish(view());
        let first = published.get().unwrap_or_else(|| panic!("published"));
        let second = published.get().unwrap_or_else(|| panic!("published"));
        assert!(Arc::ptr_eq(&first, &second));
        published.clear();
        assert!(published.get().is_none());
    }
}
