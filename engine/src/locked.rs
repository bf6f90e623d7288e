//! The users known to be LOCKED, readable without asking their actors.
//!
//! A credential-stuffing wave sends check after check for users that are already locked, and the
//! answer never changes until someone unlocks them. Asking the actor for it costs two mailbox
//! hops and a wake-up of the actor's task per check; this map answers the same question with a
//! shard read. Only actors write it, in the same step as the state change they submit
//! (`UserActorState::submit`) and when they start (`pre_start`), so an entry is never newer than
//! the actor's own state; each entry carries the completion of the write that locked the user.
//!
//! A check refuses from the map only when that completion is durable (no reply may show a
//! state a crash could take back) and no automatic unlock is due; otherwise — the lock still
//! being flushed, its write failed, its deadline passed, or no entry — the check goes to the
//! actor as before, which lifts a due lock and keeps every rule in one place. An unlock removes
//! the entry when it is submitted, before it is durable: the checks in between go to the actor,
//! which orders them with the unlock.
//!
//! Entries stay when an actor passivates (the user is still locked on disk); the map holds at
//! most [`MAX_ENTRIES`], beyond which locked users are answered by their actors.

use dashmap::DashMap;
use foldhash::fast::RandomState;
use latchkey_storage::Completion;

use crate::time::Micros;

/// Locked users the map remembers at most (≈ 100 bytes each).
pub(crate) const MAX_ENTRIES: usize = 262_144;

struct Entry {
    /// When an automatic unlock is due, if one is scheduled.
    until: Option<Micros>,
    /// The write that locked the user (or `done` for a lock read from disk).
    durable: Completion,
}

#[derive(Default)]
pub(crate) struct LockedUsers {
    map: DashMap<String, Entry, RandomState>,
}

impl LockedUsers {
    /// Records `id` as locked by the write `durable` (until `until`, if set). False when the map
    /// is full and the user was not recorded.
    pub fn lock(&self, id: &str, until: Option<Micros>, durable: Completion) -> bool {
        if let Some(mut entry) = self.map.get_mut(id) {
            *entry = Entry { until, durable };
            return true;
        }
        if self.map.len() >= MAX_ENTRIES {
            return false;
        }
        self.map.insert(id.to_owned(), Entry { until, durable });
        true
    }

    /// `id` is not (or no longer) locked.
    pub fn unlock(&self, id: &str) {
        self.map.remove(id);
    }

    /// True when `id` is durably LOCKED with no automatic unlock due at `now`: a check may be
    /// refused without its actor. False means "ask the actor".
    pub fn refuses(&self, id: &str, now: Micros) -> bool {
        let Some(entry) = self.map.get(id) else {
            return false;
        };
        let due = entry.until.is_some_and(|until| until <= now);
        !due && matches!(entry.durable.poll_result(), Some(Ok(())))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_durable_lock_without_a_due_deadline_refuses() {
        let locked = LockedUsers::default();
        assert!(!locked.refuses("u", 0), "unknown users go to their actor");

        assert!(locked.lock("u", None, Completion::done()));
        assert!(
            locked.refuses("u", i64::MAX),
            "no deadline: locked until unlocked"
        );

        assert!(locked.lock("u", Some(100), Completion::done()));
        assert!(locked.refuses("u", 99));
        assert!(
            !locked.refuses("u", 100),
            "a due automatic unlock is the actor's"
        );

        locked.unlock("u");
        assert!(!locked.refuses("u", 0));
        assert_eq!(locked.len(), 0);
    }
}
