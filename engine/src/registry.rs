//! The registry: which users are live as actors, activation on demand, and passivation.
//!
//! `slots` maps a user id to a [`Slot`]: a once-cell holding the actor, and the number of callers
//! that currently hold a message for it. The counter is raised while the map's shard lock is
//! held, and passivation removes a slot only under the write lock and only when the counter is
//! zero — so a message is never sent to an actor that is about to stop unprocessed.
//!
//! Activation first settles the store for the user (every write submitted before has completed,
//! a failed user's poison mark is cleared), then loads the snapshot, so a new actor never starts
//! from a state older than its predecessor's durable one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use foldhash::fast::RandomState;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorId, ActorRef, RpcReplyPort};
use tokio::sync::OnceCell;

use latchkey_storage::{Store, StoreError};

use crate::keys;

use crate::access::Reach;
use crate::auth_cache::AuthCache;
use crate::error::{Error, ErrorId};
use crate::locked::LockedUsers;
use crate::lockout::Policies;
use crate::metrics::EngineMetrics;
use crate::passwords::Tarpit;
use crate::time::now_micros;
use crate::unlocks::AutoUnlocks;
use crate::user::actor::{Request, Staged, UserActor, UserActorArgs, UserMsg};
use crate::user::lockout::LockoutState;
use crate::user::published::{Published, ReadView};
use crate::user::record::UserRecord;
use crate::verifier::Verifier;

struct Slot {
    actor: OnceCell<ActorRef<UserMsg>>,
    /// Callers holding a message for this actor (sent or about to be).
    in_flight: AtomicUsize,
    /// Cluster mode: the epoch of the user's partition when the actor was loaded.
    epoch: AtomicU64,
    /// The actor's last read answer, while it holds (`user/published.rs`).
    published: Arc<Published>,
}

/// How a call to an actor ended, within its deadline.
enum Answer<T> {
    /// The reply, and whether the state it depends on is durable.
    Staged(Result<T, Error>, Result<(), StoreError>),
    /// The actor dropped the reply port (it failed): outcome unknown.
    Failed,
    /// The message was not enqueued (the actor had stopped): safe to retry.
    NotSent,
}

/// Lowers a slot's in-flight count when the caller is done with it.
struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) struct Registry {
    slots: DashMap<String, Arc<Slot>, RandomState>,
    /// Reverse map for supervision events, which name the actor, not the user.
    users_by_actor: DashMap<ActorId, String, RandomState>,
    store: Arc<Store>,
    supervisor: OnceLock<ActorCell>,
    idle_timeout: Duration,
    call_timeout: Duration,
    metrics: EngineMetrics,
    auth: AuthCache,
    policies: Arc<Policies>,
    verifier: Verifier,
    tarpit: Tarpit,
    unlocks: AutoUnlocks,
    locked: LockedUsers,
    placement: Option<Arc<dyn crate::Placement>>,
}

/// What the registry shares with every actor besides the store.
pub(crate) struct Shared {
    pub policies: Arc<Policies>,
    pub verifier: Verifier,
    pub tarpit: Tarpit,
    /// Cluster mode: who serves which user now (`crate::Placement`).
    pub placement: Option<Arc<dyn crate::Placement>>,
}

impl Registry {
    pub fn new(
        store: Arc<Store>,
        idle_timeout: Duration,
        call_timeout: Duration,
        shared: Shared,
    ) -> Self {
        Registry {
            slots: DashMap::default(),
            users_by_actor: DashMap::default(),
            store,
            supervisor: OnceLock::new(),
            idle_timeout,
            call_timeout,
            metrics: EngineMetrics::new(),
            auth: AuthCache::default(),
            policies: shared.policies,
            verifier: shared.verifier,
            tarpit: shared.tarpit,
            unlocks: AutoUnlocks::default(),
            locked: LockedUsers::default(),
            placement: shared.placement,
        }
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The delay after a wrong password (ZITADEL's tarpit).
    pub fn tarpit(&self) -> Tarpit {
        self.tarpit
    }

    pub fn unlocks(&self) -> &AutoUnlocks {
        &self.unlocks
    }

    /// The users known to be locked (`locked.rs`), written by their actors.
    pub fn locked(&self) -> &LockedUsers {
        &self.locked
    }

    pub fn set_supervisor(&self, cell: ActorCell) {
        let _ = self.supervisor.set(cell);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn auth_cache(&self) -> &AuthCache {
        &self.auth
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub fn active_actors(&self) -> usize {
        self.slots.len()
    }

    /// Sends a message to `id`'s actor (activating it if needed) and waits until the reply may
    /// be shown: the actor answered and the state the answer depends on is durable.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        id: &str,
        build: impl Fn(RpcReplyPort<Staged<T>>) -> Request,
    ) -> Result<T, Error> {
        self.call_within(id, self.call_timeout, build).await
    }

    /// GetUserByID's read: answered from the view the user's actor published when there is one
    /// that may be answered from (`user/published.rs`), else through the actor.
    pub async fn view(self: &Arc<Self>, id: &str, reach: &Reach) -> Result<Arc<ReadView>, Error> {
        if self.placement.is_none() {
            let published = self.slots.get(id).and_then(|slot| slot.published.get());
            // The actor lifts a due lock before it answers; a view still showing one is stale.
            if let Some(view) = published.filter(|v| v.lockout.due(now_micros()).is_none()) {
                let durable = match view.durable.poll_result() {
                    Some(settled) => settled,
                    None => tokio::time::timeout(self.call_timeout, view.durable.wait())
                        .await
                        .map_err(|_| Error::from(ErrorId::Timeout))?,
                };
                // After a failed write the actor's path below reloads the user and says so.
                if durable.is_ok() {
                    self.metrics.read_from_view();
                    return view.for_caller(reach);
                }
            }
        }
        self.call(id, |reply| Request::View {
            reach: reach.clone(),
            reply,
        })
        .await
    }

    /// [`call`](Self::call) with its own deadline instead of the configured call timeout.
    pub async fn call_within<T: Send + 'static>(
        self: &Arc<Self>,
        id: &str,
        deadline: Duration,
        build: impl Fn(RpcReplyPort<Staged<T>>) -> Request,
    ) -> Result<T, Error> {
        // A send can only fail when the actor died and the supervisor has not yet dropped it;
        // that message was never enqueued, so it is safe to retry on a fresh actor.
        for _ in 0..3 {
            let guard = self.hold(id);
            let slot = guard.0.clone();
            let actor = match slot
                .actor
                // Boxed, as the evictions below: activation is rare and its state large, and
                // inline it would be moved with every call's future.
                .get_or_try_init(|| Box::pin(self.activate(id, &slot)))
                .await
            {
                Ok(actor) => actor.clone(),
                Err(e) => {
                    drop(guard);
                    self.slots.remove_if(id, |_, s| {
                        Arc::ptr_eq(s, &slot)
                            && s.actor.get().is_none()
                            && s.in_flight.load(Ordering::Acquire) == 0
                    });
                    return Err(e);
                }
            };
            if let Some(placement) = &self.placement {
                let now = placement.epoch(&keys::user(id));
                if now != Some(slot.epoch.load(Ordering::Acquire)) {
                    // Cluster mode: the user's partition changed hands since this actor loaded
                    // it (moved away, perhaps back): another node may have changed the user.
                    tracing::debug!(
                        user = id,
                        loaded = slot.epoch.load(Ordering::Acquire),
                        now = ?now,
                        "user actor evicted: its partition changed hands"
                    );
                    drop(guard);
                    Box::pin(self.evict(id, &actor)).await;
                    match now {
                        Some(_) => continue,
                        None => return Err(ErrorId::NoOwner.into()),
                    }
                }
            }
            let envelope = |reply| UserMsg::Request {
                sent: Instant::now(),
                request: build(reply),
            };
            // One deadline for the answer and its durability: a stalled actor or disk cannot
            // hang the caller, and each call arms one timer, not two. Past it the outcome is
            // unknown (the write may still land; if it fails, the scope is poisoned and the next
            // call reloads the user).
            let answered = tokio::time::timeout(deadline, async {
                let staged = match actor.call(envelope, None).await {
                    Ok(CallResult::Success(staged)) => staged,
                    // The actor dropped our reply port: it failed while our message was queued
                    // or being handled. Its outcome is unknown, so report, don't retry.
                    Ok(_) => return Answer::Failed,
                    Err(_) => return Answer::NotSent,
                };
                // Reads and refusals of a user with no write in flight are settled already.
                let durable = match staged.durable.poll_result() {
                    Some(settled) => settled,
                    None => staged.durable.wait().await,
                };
                Answer::Staged(staged.result, durable)
            })
            .await;
            drop(guard);
            return match answered {
                Err(_) => Err(ErrorId::Timeout.into()),
                Ok(Answer::Failed) => Err(ErrorId::ActorFailed.into()),
                Ok(Answer::NotSent) => {
                    self.drop_slot(id, &actor);
                    continue;
                }
                Ok(Answer::Staged(result, Ok(()))) => result,
                Ok(Answer::Staged(_, Err(e))) => {
                    // The actor's memory holds a change that never reached the disk: replace it.
                    tracing::debug!(user = id, "user actor evicted: a write failed: {e}");
                    Box::pin(self.evict(id, &actor)).await;
                    Err(e.into())
                }
            };
        }
        Err(ErrorId::ActorFailed.into())
    }

    /// Finds or creates `id`'s slot and counts this caller in, under the shard lock.
    fn hold(&self, id: &str) -> InFlight {
        if let Some(slot) = self.slots.get(id) {
            slot.in_flight.fetch_add(1, Ordering::AcqRel);
            return InFlight(slot.clone());
        }
        let slot = self.slots.entry(id.to_owned()).or_insert_with(|| {
            Arc::new(Slot {
                actor: OnceCell::new(),
                in_flight: AtomicUsize::new(0),
                epoch: AtomicU64::new(0),
                published: Arc::default(),
            })
        });
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(slot.clone())
    }

    /// Starts `id`'s actor from its durable snapshot; a user that does not exist gets no actor.
    async fn activate(self: &Arc<Self>, id: &str, slot: &Slot) -> Result<ActorRef<UserMsg>, Error> {
        let scope = keys::user(id);
        if let Some(placement) = &self.placement {
            // Read before the settle claims the user: if the epoch moves on in between, the
            // first call sees the difference and loads the user again.
            let epoch = placement.epoch(&scope).ok_or(ErrorId::NoOwner)?;
            slot.epoch.store(epoch, Ordering::Release);
        }
        self.store.settle(Some(&scope)).await?;
        let mut stored = read_off_worker(&self.store, &[scope, keys::lockout(id)])
            .await?
            .into_iter();
        let record = match stored.next().flatten() {
            Some(bytes) => UserRecord::decode(&bytes)?,
            None => return Err(ErrorId::UserNotFound.into()),
        };
        let lockout = LockoutState::decode(stored.next().flatten().as_deref())?;
        tracing::debug!(
            user = id,
            epoch = slot.epoch.load(Ordering::Acquire),
            sequence = record.sequence,
            "user loaded"
        );
        let supervisor = self
            .supervisor
            .get()
            .cloned()
            .ok_or(ErrorId::ShuttingDown)?;
        let registry = self.clone();
        let (actor, _) = Actor::spawn_linked(
            None,
            UserActor { registry },
            UserActorArgs {
                id: id.to_owned(),
                record,
                lockout,
                published: slot.published.clone(),
            },
            supervisor,
        )
        .await
        .map_err(|e| Error::with(ErrorId::Internal, format!("cannot start user actor: {e}")))?;
        self.users_by_actor.insert(actor.get_id(), id.to_owned());
        self.metrics.activated();
        Ok(actor)
    }

    /// Called by an idle actor: drops its slot unless a caller holds a message for it.
    pub fn try_passivate(&self, id: &str, actor: ActorId) -> bool {
        let removed = self
            .slots
            .remove_if(id, |_, slot| {
                slot.in_flight.load(Ordering::Acquire) == 0
                    && slot.actor.get().map(|a| a.get_id()) == Some(actor)
            })
            .is_some();
        if removed {
            self.metrics.deactivated(true);
        }
        removed
    }

    /// Supervision: an actor ended; drop it if it is still registered.
    pub fn forget(&self, actor: ActorId, failed: bool) {
        if failed {
            self.metrics.failed();
        }
        if let Some((_, id)) = self.users_by_actor.remove(&actor) {
            if self.drop_slot_of(&id, actor) {
                self.metrics.deactivated(false);
            }
        }
    }

    /// Removes `id`'s slot if it still holds `actor`; true if it did.
    fn drop_slot_of(&self, id: &str, actor: ActorId) -> bool {
        self.slots
            .remove_if(id, |_, slot| {
                slot.actor.get().map(|a| a.get_id()) == Some(actor)
            })
            .is_some()
    }

    fn drop_slot(&self, id: &str, actor: &ActorRef<UserMsg>) {
        if self.drop_slot_of(id, actor.get_id()) {
            self.metrics.deactivated(false);
        }
    }

    /// Stops `actor` and waits for it to end, so its replacement loads only after every write of
    /// the old one has completed.
    async fn evict(&self, id: &str, actor: &ActorRef<UserMsg>) {
        let _ = actor
            .stop_and_wait(Some("write failed".into()), Some(self.call_timeout))
            .await;
        self.drop_slot(id, actor);
    }

    /// Stops every user actor (shutdown).
    pub async fn stop_all(&self) {
        let actors: Vec<_> = self
            .slots
            .iter()
            .filter_map(|s| s.actor.get().cloned())
            .collect();
        for actor in &actors {
            let _ = actor
                .stop_and_wait(Some("shutdown".into()), Some(self.call_timeout))
                .await;
            self.metrics.deactivated(false);
        }
        self.slots.clear();
    }

    #[cfg(feature = "fault-injection")]
    pub fn actor_of(&self, id: &str) -> Option<ActorRef<UserMsg>> {
        self.slots.get(id).and_then(|s| s.actor.get().cloned())
    }
}

/// Point reads that never stall an async worker. While a checkpoint writes into sled, sled reads
/// wait for a lock it holds during each batch: then they run on the blocking pool. Otherwise
/// they read inline (no hand-off cost; most hit the log's memtable).
pub(crate) async fn read_off_worker(
    store: &Arc<Store>,
    keys: &[Vec<u8>],
) -> Result<Vec<Option<Vec<u8>>>, Error> {
    if store.is_idle() {
        return keys
            .iter()
            .map(|key| store.get(key).map_err(Error::from))
            .collect();
    }
    let (store, keys) = (store.clone(), keys.to_vec());
    tokio::task::spawn_blocking(move || {
        keys.iter()
            .map(|key| store.get(key).map_err(Error::from))
            .collect()
    })
    .await
    .map_err(|_| Error::new(ErrorId::Internal))?
}
