//! Password checks inside the user's actor: race-free lockout by construction.
//!
//! A user's checks run one at a time: while one check's hash is being verified (on the verifier
//! pool, off the actor), later checks of the same user wait here in order. Each check's outcome is
//! applied before the next starts, so with a limit of k, k wrong passwords lock the user and every
//! later check is refused — without verifying a hash — however many arrive at once: never more
//! than k verifications between two unlocks (ZITADEL's GHSA-7h8m-vrxx-vr4m cannot happen). The
//! actor itself never waits for a hash: its other messages (an administrator's unlock, reads,
//! other commands) are handled while a verification runs, and an outcome that finds the user
//! locked meanwhile is refused (COMMAND-SFA3t) instead of applied.
//!
//! After a wrong password the user's next verification waits out ZITADEL's tarpit delay for the
//! failure count (0 s below 10 failures, growing to 10 s). ZITADEL delays only the failing
//! request's answer, so an attacker who sends guesses in parallel is not slowed at all; here the
//! delay holds the user's queue, so parallel guesses get no more hashes per second than guesses
//! sent one by one, and an attacked user costs the machine almost nothing. (The failing answer is
//! still delayed too, as ZITADEL's is: `passwords.rs`.) Checks that need no hash — a locked user —
//! are answered at once even while the queue is held.
//!
//! The order of a check, as ZITADEL's: the user must exist as a human (COMMAND-3n77z); a locked
//! user is refused with its count (COMMAND-JLK35) before any hash; a user without a password
//! (COMMAND-3nJ4t); then the verification. A wrong password adds one to the count and, at the
//! policy's limit, locks in the same write (`lockout.rs`); the caller is told the count
//! (COMMAND-3M0fs). A match resets the count.

use std::collections::VecDeque;
use std::time::Instant;

use ractor::{ActorRef, RpcReplyPort};

use latchkey_storage::WriteBatch;

use crate::error::{Error, ErrorId};
use crate::metrics::CheckOutcome;
use crate::time::now_micros;
use crate::types::UserState;
use crate::user::actor::{Staged, UserActor, UserActorState, UserMsg};
use crate::user::event::EventKind;
use crate::user::lockout::{after_failure, LockoutState};
use crate::user::record::{Kind, UserRecord};
use crate::verifier::Verified;

/// Checks of one user waiting behind the one being verified. Beyond this many, a check is refused
/// at once (PASSWORD-CHECKS-BUSY). Waiting costs no hash and a few hundred bytes: a check whose
/// caller has given up (its call timed out) is dropped when its turn comes, and once the user is
/// locked every waiting check is answered without one. The bound is above what one attacker keeps
/// in flight (10,000 in the load test): a check refused at once is sent again at once, so a low
/// bound turns waiting guesses into a flood of requests.
const MAX_WAITING: usize = 16_384;

/// A check waiting for its turn or its verification.
pub(crate) struct PendingCheck {
    pub password: String,
    /// Who asks (the login client): recorded with the check's events.
    pub by: String,
    pub reply: RpcReplyPort<Staged<UserRecord>>,
}

#[derive(Default)]
pub(crate) struct CheckQueue {
    /// A verification is in flight.
    running: bool,
    /// After a wrong password, no verification of this user starts before this time (the
    /// tarpit's delay for its failure count).
    resume_at: Option<Instant>,
    waiting: VecDeque<PendingCheck>,
}

impl CheckQueue {
    pub fn is_idle(&self) -> bool {
        !self.running && self.waiting.is_empty()
    }

    /// No verification may start now: one runs, or the tarpit holds the user.
    fn held(&self) -> bool {
        self.running || self.resume_at.is_some_and(|at| at > Instant::now())
    }
}

impl UserActor {
    /// A new check: queued behind one in flight, or started.
    pub(crate) fn check_password(
        &self,
        myself: &ActorRef<UserMsg>,
        state: &mut UserActorState,
        check: PendingCheck,
    ) {
        if state.checks.held() || !state.checks.waiting.is_empty() {
            if !state.checks.running && refusal(&state.record).is_err() {
                // Held by the tarpit, but this one needs no hash: answer it now.
                self.start_check(myself, state, check);
                return;
            }
            if state.checks.waiting.len() >= MAX_WAITING {
                // Checks whose callers gave up (timed out) would be dropped at their turn; make
                // room by dropping them now.
                state.checks.waiting.retain(|c| !c.reply.is_closed());
            }
            if state.checks.waiting.len() >= MAX_WAITING {
                self.answer(state, check, Err(ErrorId::ChecksBusy.into()));
            } else {
                state.checks.waiting.push_back(check);
            }
            return;
        }
        self.start_check(myself, state, check);
    }

    /// Answers `check` at once when the user's state decides it, else starts its verification.
    fn start_check(
        &self,
        myself: &ActorRef<UserMsg>,
        state: &mut UserActorState,
        check: PendingCheck,
    ) {
        if check.reply.is_closed() {
            return; // its caller is gone: nobody to answer, no hash to spend
        }
        let hash = match refusal(&state.record) {
            Err(e) => {
                self.answer(state, check, Err(e));
                return;
            }
            Ok(hash) => hash,
        };
        match self.registry.verifier().start(hash, check.password.clone()) {
            Err(busy) => self.answer(state, check, Err(busy)),
            Ok(verification) => {
                state.checks.running = true;
                let myself = myself.clone();
                tokio::spawn(async move {
                    let outcome = verification.await;
                    // The actor may be gone (it failed): the check's caller then learns so.
                    let _ = myself.send_message(UserMsg::Verified { outcome, check });
                });
            }
        }
    }

    /// A verification finished: its outcome is applied, then the next waiting check starts.
    pub(crate) fn verified(
        &self,
        myself: &ActorRef<UserMsg>,
        state: &mut UserActorState,
        outcome: Verified,
        check: PendingCheck,
    ) {
        state.checks.running = false;
        let result = self.apply(state, outcome, &check.by);
        if let Err(e) = &result {
            if e.id == ErrorId::PasswordInvalid && state.record.state != UserState::Locked {
                self.hold(myself, state, e.failed_attempts.unwrap_or(0));
            }
        }
        self.answer(state, check, result);
        self.next_checks(myself, state);
    }

    /// Holds the user's next verification back by the tarpit's delay for `failed` failures:
    /// guesses sent in parallel get no more hashes per second than guesses sent one by one.
    fn hold(&self, myself: &ActorRef<UserMsg>, state: &mut UserActorState, failed: u32) {
        let delay = self.registry.tarpit().delay(failed);
        if delay.is_zero() {
            return;
        }
        state.checks.resume_at = Some(Instant::now() + delay);
        let myself = myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = myself.send_message(UserMsg::ChecksDue);
        });
    }

    /// Starts waiting checks until one is being verified or the tarpit holds the user (also when
    /// the tarpit's delay may have passed: `UserMsg::ChecksDue`).
    pub(crate) fn next_checks(&self, myself: &ActorRef<UserMsg>, state: &mut UserActorState) {
        while !state.checks.held() {
            let Some(next) = state.checks.waiting.pop_front() else {
                break;
            };
            self.start_check(myself, state, next);
        }
    }

    /// Answers a check (counted in `latchkey_password_checks_total`).
    fn answer(
        &self,
        state: &UserActorState,
        check: PendingCheck,
        result: Result<UserRecord, Error>,
    ) {
        self.registry.metrics().checked(CheckOutcome::of(&result));
        let _ = check.reply.send(state.staged(result));
    }

    fn apply(
        &self,
        state: &mut UserActorState,
        outcome: Verified,
        by: &str,
    ) -> Result<UserRecord, Error> {
        let record = &state.record;
        // Changed while the hash was verified: the state now decides (the recheck ZITADEL added
        // for GHSA-7h8m-vrxx-vr4m).
        match record.state {
            UserState::Locked => {
                return Err(Error::credentials(
                    ErrorId::UserLockedDuringCheck,
                    record.failed_password_attempts,
                ))
            }
            UserState::Deleted => return Err(ErrorId::PasswordUserNotFound.into()),
            _ => {}
        }
        let now = now_micros();
        match outcome {
            Verified::Match => {
                state.record.failed_password_attempts = 0;
                // A successful check ends a run of automatic unlocks.
                let mut extra = WriteBatch::default();
                let next = LockoutState {
                    temporary_lockouts: 0,
                    ..state.lockout
                };
                state.set_lockout(&self.registry, next, &mut extra);
                state.commit(
                    &self.registry,
                    EventKind::PasswordCheckSucceeded,
                    now,
                    by,
                    extra,
                )?;
                Ok(state.record.clone())
            }
            Verified::Mismatch => {
                let policy = self.registry.policies().effective(&state.record.org_id);
                let failure = after_failure(
                    state.record.failed_password_attempts,
                    &state.lockout,
                    &policy,
                    now,
                );
                state.record.failed_password_attempts = failure.failed_attempts;
                let mut kinds = vec![EventKind::PasswordCheckFailed {
                    failed_attempts: failure.failed_attempts,
                }];
                let mut extra = WriteBatch::default();
                if let Some(lock) = failure.lock {
                    state.record.state = UserState::Locked;
                    kinds.push(EventKind::LockedAfterFailures {
                        failed_attempts: failure.failed_attempts,
                        until: lock.until,
                    });
                    let next = LockoutState {
                        lock: Some(lock),
                        ..state.lockout
                    };
                    state.set_lockout(&self.registry, next, &mut extra);
                }
                state.commit_all(&self.registry, kinds, now, by, extra)?;
                if failure.lock.is_some() {
                    self.registry.metrics().locked_out();
                }
                Err(Error::credentials(
                    ErrorId::PasswordInvalid,
                    failure.failed_attempts,
                ))
            }
            Verified::Failed(cause) => {
                tracing::error!(user = %state.id, "password verification failed: {cause}");
                Err(ErrorId::PasswordCheckInternal.into())
            }
        }
    }
}

/// Why a check of this user is answered without a verification, or the hash to verify.
fn refusal(record: &UserRecord) -> Result<String, Error> {
    let Kind::Human(human) = &*record.kind else {
        return Err(ErrorId::PasswordUserNotFound.into());
    };
    match record.state {
        UserState::Deleted => Err(ErrorId::PasswordUserNotFound.into()),
        UserState::Locked => Err(Error::credentials(
            ErrorId::UserLocked,
            record.failed_password_attempts,
        )),
        _ => human
            .password
            .as_ref()
            .map(|p| p.hash.clone())
            .ok_or_else(|| ErrorId::PasswordNotSet.into()),
    }
}
