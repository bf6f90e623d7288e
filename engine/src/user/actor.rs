//! The per-user actor: the only place a user's state changes.
//!
//! ractor delivers one message at a time, so commands on one user are linearizable without
//! locks. A command is applied in memory, its write is handed to the store's writer (which
//! returns a [`Completion`] at once), and the reply carries that completion. The caller — not the
//! actor — waits for it, so the actor is already handling the next command while the previous
//! one is being flushed (pipelined commit). Replies that only observed state (reads, refused
//! commands) carry the completion of the last write, so nobody sees a state a crash could take
//! back.
//!
//! Password checks (`checks.rs`) are serialized per user too, but the actor does not wait for a
//! hash: it hands the verification to the bounded verifier pool and goes on with other messages
//! (an administrator's unlock is never stuck behind slow checks); the next check of the same user
//! starts only once the previous one's outcome is applied. A lock whose deadline has passed is
//! lifted before any request is handled (`lockout.rs` has the rules).
//!
//! Passivation: a ticker checks for idleness; an idle actor whose last write is durable and that
//! has no check in flight asks the registry to drop it (refused while any caller holds a message
//! for it) and stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use latchkey_storage::{Completion, WriteBatch};

use crate::keys;

use crate::access::{Grant, Reach};
use crate::bulk_unlock::Mark;
use crate::error::{Error, ErrorId};
use crate::registry::Registry;
use crate::time::{now_micros, Micros};
use crate::types::{Details, UserState};
use crate::user::checks::{CheckQueue, PendingCheck};
use crate::user::event::EventKind;
use crate::user::index::{self, Indexed};
use crate::user::lockout::{Lock, LockFilter, LockReason, LockoutState};
use crate::user::published::{Published, ReadView};
use crate::user::record::{Kind, PasswordRecord, TokenRef, UserRecord};
use crate::user::state::{transition, Lifecycle};
use crate::verifier::Verified;

/// A reply whose `result` may only be shown once `durable` has completed.
pub(crate) struct Staged<T> {
    pub result: Result<T, Error>,
    pub durable: Completion,
}

/// What the actor's mailbox carries: a caller's request stamped with its send time (for the
/// mailbox-wait metric), or the actor's own housekeeping.
pub(crate) enum UserMsg {
    Request {
        sent: Instant,
        request: Request,
    },
    /// Idle check (from the actor's own ticker).
    Tick,
    /// A password check's hash verification finished (from the verifier pool).
    Verified {
        outcome: Verified,
        check: PendingCheck,
    },
    /// A wrong password's tarpit has passed: the user's waiting checks may go on.
    ChecksDue,
    /// Test hook: panic inside the handler.
    #[cfg(feature = "fault-injection")]
    Panic,
    /// Test hook: keep the actor busy for a while.
    #[cfg(feature = "fault-injection")]
    Stall(Duration),
}

/// A caller's request; each carries the port its staged reply goes to.
pub(crate) enum Request {
    Lifecycle {
        command: Lifecycle,
        reach: Reach,
        by: String,
        reply: RpcReplyPort<Staged<Details>>,
    },
    Read {
        reach: Reach,
        reply: RpcReplyPort<Staged<UserRecord>>,
    },
    /// The record with its lockout state (GetUserByID), as published for later reads.
    View {
        reach: Reach,
        reply: RpcReplyPort<Staged<Arc<ReadView>>>,
    },
    AddToken {
        reach: Reach,
        by: String,
        token: TokenRef,
        /// The token record and its id index, written with the event.
        extra: WriteBatch,
        reply: RpcReplyPort<Staged<Details>>,
    },
    RemoveToken {
        reach: Reach,
        by: String,
        token_id: String,
        reply: RpcReplyPort<Staged<Details>>,
    },
    AddGrants {
        reach: Reach,
        grants: Vec<Grant>,
        reply: RpcReplyPort<Staged<()>>,
    },
    /// A password check: the user's record when the password matches.
    CheckPassword {
        password: String,
        by: String,
        reply: RpcReplyPort<Staged<UserRecord>>,
    },
    /// SetPassword: the new password (its hash), the counter reset, a lock kept.
    SetPassword {
        reach: Reach,
        by: String,
        password: PasswordRecord,
        reply: RpcReplyPort<Staged<Details>>,
    },
    /// A bulk unlock job's unlock: only if the user is still LOCKED by a lock `filter` matches;
    /// `marker` is written with the unlock. `mark_every` (cluster mode): a user left alone gets
    /// its mark too, and a user already marked is left as its mark says. Answers what the job
    /// did with the user.
    BulkUnlock {
        job_id: String,
        filter: LockFilter,
        marker: Vec<u8>,
        mark_every: bool,
        by: String,
        reply: RpcReplyPort<Staged<Mark>>,
    },
    /// The automatic unlock scheduled for `at` is due (from the unlock scheduler): lift it if it
    /// is still this user's lock. Answers whether the user was unlocked.
    AutoUnlock {
        at: Micros,
        reply: RpcReplyPort<Staged<bool>>,
    },
}

pub(crate) struct UserActor {
    pub registry: Arc<Registry>,
}

pub(crate) struct UserActorArgs {
    pub id: String,
    pub record: UserRecord,
    pub lockout: LockoutState,
    /// Shared with the user's registry slot (`published.rs`).
    pub published: Arc<Published>,
}

pub(crate) struct UserActorState {
    pub(crate) id: String,
    /// `keys::user(id)`: the writer scope and snapshot key.
    scope: Vec<u8>,
    pub(crate) record: UserRecord,
    /// Why and until when the user is locked (stored beside the snapshot).
    pub(crate) lockout: LockoutState,
    pub(crate) checks: CheckQueue,
    /// What ListUsers' indexes hold of the record (`index.rs`), kept in step by every commit.
    indexed: Option<Indexed>,
    last_write: Completion,
    last_activity: Instant,
    /// This user has an entry in the registry's map of locked users (`locked.rs`).
    listed_locked: bool,
    /// The last read's answer, for readers that skip the hop (`published.rs`).
    published: Arc<Published>,
}

impl UserActorState {
    /// The record if the caller may see it; the same NotFound for "missing", "deleted" and
    /// "outside your reach".
    fn visible(&mut self, reach: &Reach) -> Result<&mut UserRecord, Error> {
        let record = &mut self.record;
        if record.visible_to(reach) {
            Ok(record)
        } else {
            Err(ErrorId::UserNotFound.into())
        }
    }

    /// Appends the next event to the record (already changed by the command) and hands snapshot,
    /// event and `extra` to the writer as one atomic batch.
    pub(crate) fn commit(
        &mut self,
        registry: &Registry,
        kind: EventKind,
        at: Micros,
        by: &str,
        extra: WriteBatch,
    ) -> Result<Details, Error> {
        self.commit_all(registry, [kind], at, by, extra)
    }

    /// [`UserActorState::commit`] of several events at once (a failure that also locks).
    pub(crate) fn commit_all(
        &mut self,
        registry: &Registry,
        // Any collection, so that a command's one event needs no vector of its own.
        kinds: impl IntoIterator<Item = EventKind>,
        at: Micros,
        by: &str,
        mut extra: WriteBatch,
    ) -> Result<Details, Error> {
        let record = &mut self.record;
        for kind in kinds {
            let event = record.record_event(kind, at, by);
            extra.put(keys::event(&record.id, event.sequence), event.encode());
        }
        // Before encoding: encoding keeps the kind's bytes, which `refresh` reads as "unchanged".
        index::refresh(&mut self.indexed, record, &mut extra);
        extra.put(keys::user(&record.id), record.encode());
        let details = record.details();
        self.submit(registry, extra);
        Ok(details)
    }

    /// Replaces the lockout state, adding to `extra` what that changes on disk: the state's own
    /// key, and the scheduled automatic unlock (removed with an old deadline, made for a new one,
    /// which the scheduler is told of).
    pub(crate) fn set_lockout(
        &mut self,
        registry: &Registry,
        next: LockoutState,
        extra: &mut WriteBatch,
    ) {
        let old = self.lockout.lock.and_then(|l| l.until);
        let new = next.lock.and_then(|l| l.until);
        if old != new {
            if let Some(at) = old {
                extra.delete(keys::auto_unlock(at, &self.id));
            }
            if let Some(at) = new {
                extra.put(keys::auto_unlock(at, &self.id), Vec::new());
                registry.unlocks().schedule(at);
            }
        }
        if next != self.lockout {
            let key = keys::lockout(&self.id);
            if next.is_default() {
                extra.delete(key);
            } else {
                extra.put(key, crate::stored::encode(&next));
            }
        }
        self.lockout = next;
    }

    /// Lifts a lock whose deadline has passed, dated at the deadline (which may be long past
    /// when the server was down or the actor passivated). True if it did.
    pub(crate) fn unlock_if_due(&mut self, registry: &Registry, now: Micros) -> bool {
        let Some(due) = self.lockout.due(now) else {
            return false;
        };
        if self.record.state != UserState::Locked {
            return false;
        }
        let mut extra = WriteBatch::default();
        let next = LockoutState {
            lock: None,
            temporary_lockouts: self.lockout.temporary_lockouts.saturating_add(1),
        };
        self.set_lockout(registry, next, &mut extra);
        self.record.state = UserState::Active;
        self.record.failed_password_attempts = 0;
        let _ = self.commit(registry, EventKind::UnlockedAutomatically, due, "", extra);
        true
    }

    /// Hands `batch` to the writer; a machine user's cached callers are dropped at once, so the
    /// next request with one of its tokens re-reads this (durable) state.
    fn submit(&mut self, registry: &Registry, batch: WriteBatch) {
        self.last_write = registry.store().submit(&self.scope, batch);
        self.sync_locked(registry);
        if matches!(*self.record.kind, Kind::Machine(_)) {
            registry.auth_cache().invalidate(&self.id);
        }
    }

    /// Tells the map of locked users (`locked.rs`) what this user's state is now, with the write
    /// that made it so: checks refuse from the map only once that write is durable.
    fn sync_locked(&mut self, registry: &Registry) {
        if self.record.state == UserState::Locked {
            let until = self.lockout.lock.and_then(|lock| lock.until);
            self.listed_locked = registry
                .locked()
                .lock(&self.id, until, self.last_write.clone());
        } else if self.listed_locked {
            registry.locked().unlock(&self.id);
            self.listed_locked = false;
        }
    }

    pub(crate) fn staged<T>(&self, result: Result<T, Error>) -> Staged<T> {
        Staged {
            result,
            durable: self.last_write.clone(),
        }
    }
}

impl Actor for UserActor {
    type Msg = UserMsg;
    type State = UserActorState;
    type Arguments = UserActorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<UserMsg>,
        args: UserActorArgs,
    ) -> Result<UserActorState, ActorProcessingErr> {
        let period = (self.registry.idle_timeout() / 2).max(Duration::from_millis(10));
        myself.send_interval(period, || UserMsg::Tick);
        let mut state = UserActorState {
            scope: keys::user(&args.id),
            id: args.id,
            indexed: Indexed::of(&args.record),
            record: args.record,
            lockout: args.lockout,
            checks: CheckQueue::default(),
            last_write: Completion::done(),
            last_activity: Instant::now(),
            // A predecessor may have left an entry (its unlock failed, or it was evicted).
            listed_locked: true,
            published: args.published,
        };
        state.sync_locked(&self.registry);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<UserMsg>,
        message: UserMsg,
        state: &mut UserActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            UserMsg::Request { sent, request } => {
                let now = Instant::now();
                let waited = now.saturating_duration_since(sent);
                self.registry.metrics().mailbox_wait.record(waited);
                state.last_activity = now;
                // Before anything may change the user, readers lose the published view.
                if !matches!(request, Request::View { .. } | Request::Read { .. }) {
                    state.published.clear();
                }
                // (A view with a due lock is never served from, so this clear may follow the lift.)
                if state.unlock_if_due(&self.registry, now_micros()) {
                    state.published.clear();
                }
                self.handle_request(&myself, state, request);
            }
            UserMsg::Verified { outcome, check } => {
                state.published.clear();
                state.last_activity = Instant::now();
                self.verified(&myself, state, outcome, check);
            }
            UserMsg::ChecksDue => {
                state.published.clear();
                self.next_checks(&myself, state);
            }
            UserMsg::Tick => {
                if state.unlock_if_due(&self.registry, now_micros()) {
                    state.published.clear();
                }
                let idle = state.last_activity.elapsed() >= self.registry.idle_timeout();
                let settled = state.last_write.poll_result().is_some();
                let checking = !state.checks.is_idle();
                if idle
                    && settled
                    && !checking
                    && self.registry.try_passivate(&state.id, myself.get_id())
                {
                    myself.stop(Some("passivated".into()));
                }
            }
            #[cfg(feature = "fault-injection")]
            #[allow(clippy::panic)] // the fault this test hook injects
            UserMsg::Panic => panic!("injected panic in user actor {}", state.id),
            #[cfg(feature = "fault-injection")]
            UserMsg::Stall(duration) => tokio::time::sleep(duration).await,
        }
        Ok(())
    }
}

impl UserActor {
    fn handle_request(
        &self,
        myself: &ActorRef<UserMsg>,
        state: &mut UserActorState,
        request: Request,
    ) {
        match request {
            Request::Lifecycle {
                command,
                reach,
                by,
                reply,
            } => {
                let result = self.lifecycle(state, command, &reach, &by);
                let _ = reply.send(state.staged(result));
            }
            Request::Read { reach, reply } => {
                let result = state.visible(&reach).map(|r| r.clone());
                let _ = reply.send(state.staged(result));
            }
            Request::View { reach, reply } => {
                // Published before the reply, so the caller's next read finds it.
                let view = state.published.get().unwrap_or_else(|| {
                    state.published.publish(ReadView {
                        record: state.record.clone(),
                        lockout: state.lockout,
                        durable: state.last_write.clone(),
                    })
                });
                let _ = reply.send(state.staged(view.for_caller(&reach)));
            }
            Request::AddToken {
                reach,
                by,
                token,
                extra,
                reply,
            } => {
                let result = self.add_token(state, &reach, &by, token, extra);
                let _ = reply.send(state.staged(result));
            }
            Request::RemoveToken {
                reach,
                by,
                token_id,
                reply,
            } => {
                let result = self.remove_token(state, &reach, &by, &token_id);
                let _ = reply.send(state.staged(result));
            }
            Request::AddGrants {
                reach,
                grants,
                reply,
            } => {
                let result = self.add_grants(state, &reach, grants);
                let _ = reply.send(state.staged(result));
            }
            Request::SetPassword {
                reach,
                by,
                password,
                reply,
            } => {
                let result = self.set_password(state, &reach, &by, password);
                let _ = reply.send(state.staged(result));
            }
            Request::CheckPassword {
                password,
                by,
                reply,
            } => {
                let check = PendingCheck {
                    password,
                    by,
                    reply,
                };
                self.check_password(myself, state, check);
            }
            Request::BulkUnlock {
                job_id,
                filter,
                marker,
                mark_every,
                by,
                reply,
            } => {
                let result = self.bulk_unlock(state, job_id, &filter, marker, mark_every, &by);
                let _ = reply.send(state.staged(result));
            }
            Request::AutoUnlock { at, reply } => {
                // Due ones were lifted before this request; one still held here is stale.
                let lifted = state.lockout.lock.and_then(|l| l.until) != Some(at);
                if lifted {
                    let mut extra = WriteBatch::default();
                    extra.delete(keys::auto_unlock(at, &state.id));
                    state.submit(&self.registry, extra);
                }
                let _ = reply.send(state.staged(Ok(lifted)));
            }
        }
    }

    fn lifecycle(
        &self,
        state: &mut UserActorState,
        command: Lifecycle,
        reach: &Reach,
        by: &str,
    ) -> Result<Details, Error> {
        let now = now_micros();
        let record = state.visible(reach)?;
        let next = transition(record.state, command)?;
        let mut extra = WriteBatch::default();
        let kind = match command {
            Lifecycle::Lock => EventKind::Locked,
            Lifecycle::Unlock => {
                record.failed_password_attempts = 0;
                EventKind::Unlocked
            }
            Lifecycle::Deactivate => EventKind::Deactivated,
            Lifecycle::Reactivate => EventKind::Reactivated,
            Lifecycle::Delete => {
                // Free the username and revoke every token with the user.
                extra.delete(record.username_key());
                if let Kind::Machine(m) = &mut *record.kind {
                    for token in m.tokens.drain(..) {
                        extra.delete(keys::token(&token.hash));
                        extra.delete(keys::token_id(&token.id));
                    }
                }
                EventKind::Removed
            }
        };
        record.state = next;
        // The lock is kept exactly while the user is LOCKED; an administrator's unlock also ends
        // the run of automatic ones.
        let lockout = match command {
            Lifecycle::Lock => LockoutState {
                lock: Some(Lock {
                    reason: LockReason::Admin,
                    at: now,
                    until: None,
                }),
                ..state.lockout
            },
            Lifecycle::Unlock | Lifecycle::Delete => LockoutState::default(),
            Lifecycle::Deactivate | Lifecycle::Reactivate => LockoutState {
                lock: None,
                ..state.lockout
            },
        };
        state.set_lockout(&self.registry, lockout, &mut extra);
        state.commit(&self.registry, kind, now, by, extra)
    }

    fn add_token(
        &self,
        state: &mut UserActorState,
        reach: &Reach,
        by: &str,
        token: TokenRef,
        extra: WriteBatch,
    ) -> Result<Details, Error> {
        let record = state.visible(reach)?;
        let Kind::Machine(machine) = &mut *record.kind else {
            return Err(ErrorId::UserNotMachine.into());
        };
        let kind = EventKind::TokenAdded {
            token_id: token.id.clone(),
        };
        machine.tokens.push(token);
        state.commit(&self.registry, kind, now_micros(), by, extra)
    }

    fn remove_token(
        &self,
        state: &mut UserActorState,
        reach: &Reach,
        by: &str,
        token_id: &str,
    ) -> Result<Details, Error> {
        let record = state.visible(reach)?;
        let Kind::Machine(machine) = &mut *record.kind else {
            return Err(ErrorId::TokenNotFound.into());
        };
        let Some(at) = machine.tokens.iter().position(|t| t.id == token_id) else {
            return Err(ErrorId::TokenNotFound.into());
        };
        let token = machine.tokens.remove(at);
        let mut extra = WriteBatch::default();
        extra.delete(keys::token(&token.hash));
        extra.delete(keys::token_id(&token.id));
        let kind = EventKind::TokenRemoved { token_id: token.id };
        state.commit(&self.registry, kind, now_micros(), by, extra)
    }

    /// A new password resets the failure count; a locked user stays locked (ZITADEL's rule: the
    /// lock is lifted by an unlock, not by whoever knows how to change the password), and an
    /// initial user (created without one) becomes active.
    fn set_password(
        &self,
        state: &mut UserActorState,
        reach: &Reach,
        by: &str,
        mut password: PasswordRecord,
    ) -> Result<Details, Error> {
        let now = now_micros();
        let record = state.visible(reach)?;
        let Kind::Human(human) = &mut *record.kind else {
            return Err(ErrorId::UserNotHuman.into());
        };
        password.changed = now;
        human.password = Some(password);
        record.failed_password_attempts = 0;
        if record.state == UserState::Initial {
            record.state = UserState::Active;
        }
        state.commit(
            &self.registry,
            EventKind::PasswordChanged,
            now,
            by,
            WriteBatch::default(),
        )
    }

    fn bulk_unlock(
        &self,
        state: &mut UserActorState,
        job_id: String,
        filter: &LockFilter,
        marker: Vec<u8>,
        mark_every: bool,
        by: &str,
    ) -> Result<Mark, Error> {
        if mark_every {
            // The user may have been handled by the node that served it before: the view holds
            // every record of this user now (the actor was loaded after its scope settled), so
            // the mark read here is current where the job's own read of it may not have been.
            if let Some(found) = self.registry.store().get(&marker)? {
                return Ok(Mark::decode(&found));
            }
        }
        let record = &mut state.record;
        let matches = record.state == UserState::Locked
            && filter.matches(&state.lockout.lock_or_admin(record.changed));
        if !matches {
            if mark_every {
                let mut batch = WriteBatch::default();
                batch.put(marker, Mark::Skipped.value());
                state.submit(&self.registry, batch);
            }
            return Ok(Mark::Skipped);
        }
        record.state = UserState::Active;
        record.failed_password_attempts = 0;
        let mut extra = WriteBatch::default();
        extra.put(marker, Mark::Unlocked.value());
        state.set_lockout(&self.registry, LockoutState::default(), &mut extra);
        let kind = EventKind::UnlockedInBulk { job_id };
        state.commit(&self.registry, kind, now_micros(), by, extra)?;
        Ok(Mark::Unlocked)
    }

    /// Role assignments change the snapshot but are not user lifecycle events, so the user's
    /// sequence does not move (as in ZITADEL, where memberships live on the org/instance).
    fn add_grants(
        &self,
        state: &mut UserActorState,
        reach: &Reach,
        grants: Vec<Grant>,
    ) -> Result<(), Error> {
        let record = state.visible(reach)?;
        let mut changed = false;
        for grant in grants {
            let grant = grant.into();
            if !record.grants.contains(&grant) {
                record.grants.push(grant);
                changed = true;
            }
        }
        if changed {
            let mut batch = WriteBatch::default();
            batch.put(keys::user(&record.id), record.encode());
            state.submit(&self.registry, batch);
        }
        Ok(())
    }
}
