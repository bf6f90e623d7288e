//! A user's lockout: the rules a password check follows, as pure functions the actor applies.
//!
//! ZITADEL's rules: one failure counter per user (`UserRecord::failed_password_attempts`); +1 per
//! wrong password; reset by a successful check, a password change and an unlock; at
//! `count >= max` (max > 0) the failure and the lock are one write. Latchkey's additions (the
//! policy's extensions): a lock from failed checks may lift by itself after `auto_unlock_after`,
//! unless the user was already unlocked that way `max_temporary_lockouts` times in a row with no
//! successful check between — then the lock is permanent, as Keycloak and Okta escalate.
//!
//! Why and until when a user is locked is kept beside the snapshot under its own key
//! (`keys::lockout`), so the user's record keeps its format.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorId};
use crate::lockout::LockoutPolicy;
use crate::time::{to_datetime, Micros};
use crate::types::{LockInfo, LockedBy, Lockout};

/// Why a user is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockReason {
    /// An administrator's LockUser.
    Admin,
    /// The lockout policy's limit of wrong passwords.
    FailedPasswords,
}

/// A lock in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub reason: LockReason,
    pub at: Micros,
    /// When it lifts by itself; `None`: only an administrator unlocks.
    pub until: Option<Micros>,
}

/// Which locks a bulk unlock lifts (stored with its job): all that match every condition set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFilter {
    pub reason: Option<LockReason>,
    pub locked_after: Option<Micros>,
    pub locked_before: Option<Micros>,
}

impl LockFilter {
    pub fn matches(&self, lock: &Lock) -> bool {
        self.reason.is_none_or(|r| r == lock.reason)
            && self.locked_after.is_none_or(|after| lock.at >= after)
            && self.locked_before.is_none_or(|before| lock.at < before)
    }
}

/// What is stored under `keys::lockout` while it is not the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutState {
    pub lock: Option<Lock>,
    /// Automatic unlocks in a row with no successful check between them.
    pub temporary_lockouts: u32,
}

impl LockoutState {
    /// Nothing worth storing: the key can go.
    pub fn is_default(&self) -> bool {
        *self == LockoutState::default()
    }

    /// The state stored under `keys::lockout` (absent: the default).
    pub fn decode(stored: Option<&[u8]>) -> Result<LockoutState, Error> {
        match stored {
            None => Ok(LockoutState::default()),
            Some(bytes) => postcard::from_bytes(bytes)
                .map_err(|e| Error::with(ErrorId::Internal, format!("corrupt lockout state: {e}"))),
        }
    }

    /// As reads show it, with the user's failure count.
    pub fn view(&self, failed_password_attempts: u32) -> Lockout {
        Lockout {
            failed_password_attempts,
            lock: self.lock.map(|lock| LockInfo {
                reason: match lock.reason {
                    LockReason::Admin => LockedBy::Admin,
                    LockReason::FailedPasswords => LockedBy::FailedPasswords,
                },
                at: to_datetime(lock.at),
                until: lock.until.map(to_datetime),
            }),
            temporary_lockouts: self.temporary_lockouts,
        }
    }

    /// The lock of a LOCKED user last changed at `changed`: a user locked before locks were
    /// recorded (schema 2) was locked by an administrator, then.
    pub fn lock_or_admin(&self, changed: Micros) -> Lock {
        self.lock.unwrap_or(Lock {
            reason: LockReason::Admin,
            at: changed,
            until: None,
        })
    }

    /// The automatic unlock due at or before `now`, if any.
    pub fn due(&self, now: Micros) -> Option<Micros> {
        self.lock?.until.filter(|until| *until <= now)
    }
}

/// What a wrong password leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The counter after this failure (what the caller is told).
    pub failed_attempts: u32,
    /// The lock this failure sets, if it reached the policy's limit.
    pub lock: Option<Lock>,
}

/// A wrong password by a user with `count` earlier failures, under `policy`, at `now`.
pub fn after_failure(
    count: u32,
    state: &LockoutState,
    policy: &LockoutPolicy,
    now: Micros,
) -> Failure {
    let failed_attempts = count.saturating_add(1);
    let limit = policy.max_password_attempts;
    if limit == 0 || u64::from(failed_attempts) < limit {
        return Failure {
            failed_attempts,
            lock: None,
        };
    }
    let escalated = policy.max_temporary_lockouts > 0
        && state.temporary_lockouts >= policy.max_temporary_lockouts;
    let until = match policy.auto_unlock_after {
        Some(after) if !escalated => {
            let after = i64::try_from(after.as_micros()).unwrap_or(i64::MAX);
            Some(now.saturating_add(after))
        }
        _ => None,
    };
    Failure {
        failed_attempts,
        lock: Some(Lock {
            reason: LockReason::FailedPasswords,
            at: now,
            until,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(max: u64, auto: Option<u64>, temporary: u32) -> LockoutPolicy {
        LockoutPolicy {
            max_password_attempts: max,
            max_otp_attempts: 0,
            auto_unlock_after: auto.map(Duration::from_secs),
            max_temporary_lockouts: temporary,
        }
    }

    #[test]
    fn the_failure_that_reaches_the_limit_locks_and_earlier_ones_count() {
        let state = LockoutState::default();
        let p = policy(3, None, 0);
        assert_eq!(after_failure(0, &state, &p, 10).lock, None);
        assert_eq!(after_failure(1, &state, &p, 10).failed_attempts, 2);
        let third = after_failure(2, &state, &p, 10);
        assert_eq!(third.failed_attempts, 3);
        assert_eq!(
            third.lock,
            Some(Lock {
                reason: LockReason::FailedPasswords,
                at: 10,
                until: None
            })
        );
        // No limit: the counter only grows.
        assert_eq!(
            after_failure(99, &state, &policy(0, None, 0), 10).lock,
            None
        );
    }

    #[test]
    fn automatic_unlocks_end_after_the_allowed_number_in_a_row() {
        let p = policy(1, Some(60), 2);
        let mut state = LockoutState::default();
        for round in 0..2 {
            state.temporary_lockouts = round;
            let lock = after_failure(0, &state, &p, 1_000).lock.unwrap();
            assert_eq!(lock.until, Some(1_000 + 60_000_000), "round {round}");
        }
        state.temporary_lockouts = 2;
        assert_eq!(
            after_failure(0, &state, &p, 1_000).lock.unwrap().until,
            None
        );
        // Without a limit on temporary lockouts, every lock lifts by itself.
        state.temporary_lockouts = 50;
        let unlimited = policy(1, Some(60), 0);
        assert!(after_failure(0, &state, &unlimited, 0)
            .lock
            .unwrap()
            .until
            .is_some());
    }

    #[test]
    fn only_a_lock_with_a_passed_deadline_is_due() {
        let mut state = LockoutState::default();
        assert_eq!(state.due(100), None);
        state.lock = Some(Lock {
            reason: LockReason::FailedPasswords,
            at: 0,
            until: Some(50),
        });
        assert_eq!(state.due(49), None);
        assert_eq!(state.due(50), Some(50));
        state.lock = Some(Lock {
            reason: LockReason::Admin,
            at: 0,
            until: None,
        });
        assert_eq!(state.due(i64::MAX), None);
    }
}
