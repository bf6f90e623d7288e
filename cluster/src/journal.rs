//! The engine's store over JetStream: [`ClusterJournal`], the `latchkey_storage::Journal` of a
//! cluster node.
//!
//! The engine runs unchanged over a store opened with this journal. Its writes — one batch per
//! command, under a scope (a user's key, a session's, …) — become fenced appends to the scope's
//! subject in its partition's stream. The node's data directory holds a *view*: every record of
//! every partition, whoever wrote it, applied in stream order by one consumer per partition.
//! The engine reads only the view, so its indexes, counts and lists cover the whole cluster.
//!
//! How the engine's calls map (see `latchkey_storage::Journal` for their contract):
//!
//! - **append** queues the batch behind the scope's earlier ones (one task per scope appends them
//!   in order, since each append's expectation is the previous one's sequence). The first write
//!   of a scope under a partition epoch claims the scope first (`UserLog::claim`). The append
//!   states the sequence it expects; a node that lost the partition — whatever it believes — is
//!   refused by the stream. Its completion resolves once the record is in the stream *and* in
//!   this node's view, so a read after it sees the write.
//! - **settle(scope)** is what the engine calls before it loads a scope (an actor's activation,
//!   a creation's checks): this node must serve the scope's partition; it claims the scope under
//!   the partition's epoch and waits until the view has applied everything up to the claim. So an
//!   actor never starts from state older than the last owner's, and no earlier owner can write
//!   after it.
//! - **settle(None)** waits until the view has applied everything each partition held at the
//!   call: what the engine does at open, before it reads the bootstrap mark.
//!
//! A write that fails marks its scope, as the embedded writer does: queued writes of the scope
//! fail without being appended until the engine settles it. Fenced → nothing was written
//! (STORE-UNAVAILABLE); no answer before the deadline → the outcome is unknown
//! (STORE-OUTCOME-UNKNOWN). The view never holds a write the stream refused, so a reload after a
//! failure starts from the truth.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use latchkey_storage::{Completion, Journal, JournalFuture, StoreError, View, WriteBatch};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use crate::log::{UserLog, CLAIM_HEADER, WRITER_HEADER};
use crate::membership::Membership;
use crate::names::{Claim, Names};
use crate::partitions::{hex, unhex, Layout};
use crate::Error;

/// The first byte of the view's keys that hold, per partition, the stream sequence the view has
/// applied (written with each applied record, so the two never disagree). No engine key uses it.
pub const POSITION_TAG: u8 = b'Z';

/// Who serves which partition, under which epoch: the membership in a cluster, a fixed answer in
/// tests.
pub trait Ownership: Send + Sync + 'static {
    /// The epoch under which this node serves partition `p` now, if it does.
    fn serves(&self, p: u32) -> Option<u64>;
}

impl Ownership for Membership {
    fn serves(&self, p: u32) -> Option<u64> {
        Membership::serves(self, p)
    }
}

/// Serves every partition under one epoch (0: none). For tests and single-owner set-ups where
/// something else decides ownership.
#[derive(Debug, Default)]
pub struct FixedOwnership(AtomicU64);

impl FixedOwnership {
    pub fn new(epoch: u64) -> Self {
        FixedOwnership(AtomicU64::new(epoch))
    }
    pub fn set(&self, epoch: u64) {
        self.0.store(epoch, Ordering::Release);
    }
}

impl Ownership for FixedOwnership {
    fn serves(&self, _p: u32) -> Option<u64> {
        Some(self.0.load(Ordering::Acquire)).filter(|&e| e > 0)
    }
}

/// How a journal is set up.
#[derive(Clone)]
pub struct JournalConfig {
    pub node_id: String,
    pub layout: Layout,
    /// How long an append (or a claim) retries before its outcome is unknown.
    pub append_timeout: Duration,
    /// How old a unique name's claim must be before it counts as abandoned when the view holds
    /// no record of it (`names.rs`): longer than any creation takes to land.
    pub names_grace: Duration,
}

impl JournalConfig {
    /// The settings a node uses: `append_timeout`, and a names grace well past it (three
    /// append timeouts, at least 30 s).
    pub fn new(node_id: impl Into<String>, layout: Layout, append_timeout: Duration) -> Self {
        JournalConfig {
            node_id: node_id.into(),
            layout,
            append_timeout,
            names_grace: (append_timeout * 3).max(Duration::from_secs(30)),
        }
    }
}

/// The `Journal` of a cluster node. Cheap to clone.
#[derive(Clone)]
pub struct ClusterJournal {
    inner: Arc<Inner>,
}

struct Inner {
    log: UserLog,
    js: jetstream::Context,
    config: JournalConfig,
    ownership: Arc<dyn Ownership>,
    runtime: tokio::runtime::Handle,
    view: OnceLock<View>,
    /// Per partition, the stream sequence the view has applied.
    applied: Arc<Vec<watch::Sender<u64>>>,
    scopes: Mutex<HashMap<Vec<u8>, Scope>>,
    /// Why the view stopped following the log, once it has: every write fails from then on.
    failed: Arc<OnceLock<String>>,
    consumers: Mutex<Vec<AbortHandle>>,
    /// The bucket of unique names, opened at its first use.
    names: tokio::sync::OnceCell<Names>,
    /// A write's two waits: the stream's acknowledgement, then this node's view applying it.
    append_time: metrics::Histogram,
    view_wait: metrics::Histogram,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for consumer in self
            .consumers
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
        {
            consumer.abort();
        }
    }
}

/// One scope's writes in flight, and what this node knows of the scope in the log.
#[derive(Default)]
struct Scope {
    queue: VecDeque<Work>,
    /// A task is appending the queue.
    running: bool,
    /// A write failed; later ones fail until a settle.
    failed: bool,
    /// The epoch this node claimed the scope under, and the scope's last sequence since.
    claimed: Option<(u64, u64)>,
}

/// Why a write failed, and the claim to keep if the scope stays usable (see `drain`).
struct Refused {
    error: StoreError,
    claimed: Option<(u64, u64)>,
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        Refused {
            error,
            claimed: None,
        }
    }
}

enum Work {
    /// A batch (encoded) and whoever waits for it.
    Write(Bytes, Completion),
    /// A settle of the scope.
    Settle(oneshot::Sender<Result<(), StoreError>>),
    /// Answered once every write queued before it is done.
    Barrier(oneshot::Sender<()>),
}

impl ClusterJournal {
    /// A journal over `client`'s JetStream, serving what `ownership` says. The partitions'
    /// streams must exist (`Layout::ensure_streams`). Call from within the Tokio runtime.
    pub fn new(
        client: async_nats::Client,
        config: JournalConfig,
        ownership: Arc<dyn Ownership>,
    ) -> Self {
        let applied = (0..config.layout.partitions)
            .map(|_| watch::channel(0).0)
            .collect();
        ClusterJournal {
            inner: Arc::new(Inner {
                log: UserLog::new(client.clone(), config.layout),
                js: jetstream::new(client),
                config,
                ownership,
                runtime: tokio::runtime::Handle::current(),
                view: OnceLock::new(),
                applied: Arc::new(applied),
                scopes: Mutex::new(HashMap::new()),
                failed: Arc::new(OnceLock::new()),
                consumers: Mutex::new(Vec::new()),
                names: tokio::sync::OnceCell::new(),
                append_time: metrics::histogram!("latchkey_cluster_append_seconds"),
                view_wait: metrics::histogram!("latchkey_cluster_view_wait_seconds"),
            }),
        }
    }

    /// The partition of a store scope (the same for every node and version).
    pub fn partition_of(layout: &Layout, scope: &[u8]) -> u32 {
        layout.partition_of(&hex(scope))
    }

    /// Stops following the log (as a crash would; what is in the view stays).
    pub fn stop(&self) {
        for consumer in self.inner.lock_consumers().drain(..) {
            consumer.abort();
        }
    }
}

impl Journal for ClusterJournal {
    fn attach(&self, view: View) -> Result<(), StoreError> {
        let inner = &self.inner;
        if inner.view.set(view.clone()).is_err() {
            return Err(StoreError::Io(
                "the journal is attached to a store already".into(),
            ));
        }
        let mut consumers = inner.lock_consumers();
        for p in 0..inner.config.layout.partitions {
            let from = match view.get(&position_key(p))? {
                Some(bytes) => u64::from_be_bytes(
                    bytes
                        .try_into()
                        .map_err(|_| StoreError::Io("a view position is not a u64".into()))?,
                ),
                None => 0,
            };
            if let Some(applied) = inner.applied.get(p as usize) {
                applied.send_replace(from);
            }
            let follower = Follower {
                js: inner.js.clone(),
                view: view.clone(),
                applied: inner.applied.clone(),
                failed: inner.failed.clone(),
                p,
            };
            consumers.push(inner.runtime.spawn(follower.run(from)).abort_handle());
        }
        Ok(())
    }

    fn append(&self, scope: &[u8], batch: WriteBatch) -> Completion {
        if let Some(reason) = self.inner.failed.get() {
            return Completion::failed(StoreError::Failed(reason.clone()));
        }
        let done = Completion::pending();
        let work = Work::Write(Bytes::from(batch.encode()), done.clone());
        let mut scopes = self.inner.lock_scopes();
        let state = scopes.entry(scope.to_vec()).or_default();
        if state.failed {
            return Completion::failed(StoreError::Poisoned);
        }
        self.enqueue(scope, state, work);
        done
    }

    fn settle<'a>(&'a self, scope: Option<&'a [u8]>) -> JournalFuture<'a> {
        Box::pin(async move {
            match scope {
                Some(scope) => {
                    let (tx, rx) = oneshot::channel();
                    {
                        let mut scopes = self.inner.lock_scopes();
                        let state = scopes.entry(scope.to_vec()).or_default();
                        self.enqueue(scope, state, Work::Settle(tx));
                    }
                    rx.await.map_err(|_| StoreError::Closed)?
                }
                None => self.catch_up().await,
            }
        })
    }

    fn claim_unique<'a>(&'a self, key: &'a [u8], holder: &'a [u8]) -> JournalFuture<'a, bool> {
        Box::pin(self.claim_name(key, holder))
    }

    fn release_unique<'a>(&'a self, key: &'a [u8], holder: &'a [u8]) -> JournalFuture<'a> {
        Box::pin(async move {
            let deadline = Instant::now() + self.inner.config.append_timeout;
            self.names()
                .await?
                .release(key, holder, deadline)
                .await
                .map_err(store_error)
        })
    }
}

impl ClusterJournal {
    /// The bucket of unique names.
    async fn names(&self) -> Result<&Names, StoreError> {
        let inner = &self.inner;
        inner
            .names
            .get_or_try_init(|| Names::open(&inner.js, inner.config.layout.replicas))
            .await
            .map_err(store_error)
    }

    /// Claims the unique `key` for `holder` (`names.rs`). Another holder's claim stands while it
    /// is younger than the grace, or while the view — caught up with every partition — holds
    /// `key` (the holder's creation landed). Past that it belongs to nobody and is taken over.
    async fn claim_name(&self, key: &[u8], holder: &[u8]) -> Result<bool, StoreError> {
        let deadline = Instant::now() + self.inner.config.append_timeout;
        let names = self.names().await?;
        loop {
            let revision = match names
                .claim(key, holder, deadline)
                .await
                .map_err(store_error)?
            {
                Claim::Won => return Ok(true),
                Claim::Held { revision, age, .. } if age >= self.inner.config.names_grace => {
                    revision
                }
                Claim::Held { .. } => return Ok(false),
            };
            self.catch_up().await?;
            let view = self.inner.view.get().ok_or(StoreError::Closed)?;
            if view.get(key)?.is_some() {
                return Ok(false);
            }
            if names
                .take_over(key, holder, revision, deadline)
                .await
                .map_err(store_error)?
            {
                tracing::info!(
                    node = self.inner.config.node_id,
                    key = hex(key),
                    "unique name taken over from a claim whose creation never landed"
                );
                return Ok(true);
            }
        }
    }

    fn enqueue(&self, scope: &[u8], state: &mut Scope, work: Work) {
        state.queue.push_back(work);
        if !state.running {
            state.running = true;
            let journal = self.clone();
            let scope = scope.to_vec();
            self.inner
                .runtime
                .spawn(async move { journal.drain(scope).await });
        }
    }

    /// Works through `scope`'s queue in order until it is empty.
    async fn drain(&self, scope: Vec<u8>) {
        loop {
            let (work, claimed) = {
                let mut scopes = self.inner.lock_scopes();
                let Some(state) = scopes.get_mut(&scope) else {
                    return;
                };
                match state.queue.pop_front() {
                    Some(work) => (work, state.claimed),
                    None => {
                        state.running = false;
                        return;
                    }
                }
            };
            match work {
                Work::Write(payload, done) => {
                    let outcome = self.write(&scope, claimed, payload).await;
                    let mut scopes = self.inner.lock_scopes();
                    let state = scopes.entry(scope.clone()).or_default();
                    match outcome {
                        Ok(claimed) => {
                            state.claimed = Some(claimed);
                            done.finish(Ok(()));
                        }
                        Err(Refused { error, claimed }) => {
                            tracing::debug!(
                                node = self.inner.config.node_id,
                                scope = hex(&scope),
                                kept = ?claimed,
                                "write refused: {error}"
                            );
                            // Every failure marks the scope, as the embedded writer does: the
                            // writer's memory may hold the refused change, or state older than
                            // the log, and whatever it submits next is computed from it. Only a
                            // settle (an actor reloading, `Store::prepare`) clears the mark. A
                            // refusal at a new claim keeps the claim, so that settle need not
                            // claim again.
                            state.failed = true;
                            state.claimed = claimed;
                            done.finish(Err(error));
                            // Queued writes were computed from the failed one's state.
                            for work in &mut state.queue {
                                if let Work::Write(_, done) = work {
                                    done.finish(Err(StoreError::Poisoned));
                                }
                            }
                            state.queue.retain(|w| !matches!(w, Work::Write(..)));
                        }
                    }
                }
                Work::Settle(reply) => {
                    let outcome = self.claim(&scope, claimed).await;
                    let mut scopes = self.inner.lock_scopes();
                    let state = scopes.entry(scope.clone()).or_default();
                    let _ = reply.send(outcome.map(|(epoch, last, _)| {
                        state.failed = false;
                        state.claimed = Some((epoch, last));
                    }));
                }
                Work::Barrier(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }

    /// Makes sure this node holds `scope` under the current epoch of its partition, and that the
    /// view holds everything before the claim. Returns (epoch, the scope's last sequence, the
    /// sequence of its last record before a claim made now — 0 if none was made or it had none).
    async fn claim(
        &self,
        scope: &[u8],
        claimed: Option<(u64, u64)>,
    ) -> Result<(u64, u64, u64), StoreError> {
        let inner = &self.inner;
        let p = Self::partition_of(&inner.config.layout, scope);
        let epoch = inner.serving(p)?;
        if let Some((held, last)) = claimed {
            if held == epoch {
                return Ok((epoch, last, 0));
            }
        }
        let deadline = Instant::now() + inner.config.append_timeout;
        let claim = inner
            .log
            .claim(&hex(scope), &inner.config.node_id, epoch, deadline)
            .await
            .map_err(store_error)?;
        metrics::counter!("latchkey_cluster_claims_total").increment(1);
        self.caught_up(p, claim.sequence, view_deadline(deadline))
            .await?;
        let previous = claim.previous.map_or(0, |last| last.sequence);
        tracing::debug!(
            node = inner.config.node_id,
            scope = hex(scope),
            epoch,
            sequence = claim.sequence,
            previous,
            "claimed"
        );
        Ok((epoch, claim.sequence, previous))
    }

    /// Appends one batch of `scope`; returns the claim it was written under, with its sequence.
    async fn write(
        &self,
        scope: &[u8],
        claimed: Option<(u64, u64)>,
        payload: Bytes,
    ) -> Result<(u64, u64), Refused> {
        let inner = &self.inner;
        let subject_scope = hex(scope);
        let p = inner.config.layout.partition_of(&subject_scope);
        let served = inner.ownership.serves(p);
        let (epoch, expected) = match claimed {
            // Under the claim this node holds, the write is appended whatever the node now
            // believes of its lease, which may have lapsed while the write queued (the node
            // paused, cut off). The stream decides, not that belief: if another node claimed
            // the scope since, the append is fenced; if not, the log holds nothing after the
            // claim but this node's own records, the state the write was made from is the
            // truth, and the write is as valid as when it was admitted.
            Some((epoch, last)) if served.is_none_or(|now| now == epoch) => (epoch, last),
            _ => {
                // The first write of the scope under this epoch with no settle before it: the
                // batch was made from state loaded under an earlier claim (an actor that lived
                // through a change of owner) or read without one. If the scope has any record
                // before the new claim, that state may be older than the log: the write is
                // refused, nothing is written, the scope is marked failed, and the writer
                // reloads (the engine evicts the actor; a writer outside an actor prepares the
                // scope and reads it again). A scope with no record yet (a creation) has nothing
                // to be stale about.
                let (epoch, last, previous) =
                    self.claim(scope, None).await.map_err(Refused::from)?;
                if previous > 0 {
                    return Err(Refused {
                        error: StoreError::NotServed(format!(
                            "partition {p} changed hands since this write's state was read; retry"
                        )),
                        claimed: Some((epoch, last)),
                    });
                }
                (epoch, last)
            }
        };
        let node = &inner.config.node_id;
        let mut headers = HeaderMap::new();
        headers.insert(WRITER_HEADER, format!("{node}/{epoch}").as_str());
        let id = inner.log.request_id(&format!("w/{node}/{epoch}"));
        let started = Instant::now();
        let deadline = started + inner.config.append_timeout;
        let appended = inner
            .log
            .append(&subject_scope, expected, &id, &headers, payload, deadline)
            .await
            .map_err(|e| Refused::from(store_error(e)))?;
        let acknowledged = Instant::now();
        inner.append_time.record(acknowledged - started);
        self.caught_up(p, appended.sequence, view_deadline(deadline))
            .await
            .map_err(Refused::from)?;
        inner.view_wait.record(acknowledged.elapsed());
        tracing::debug!(
            node,
            scope = subject_scope,
            epoch,
            expected,
            sequence = appended.sequence,
            duplicate = appended.duplicate,
            "appended"
        );
        Ok((epoch, appended.sequence))
    }

    /// Waits until the view has applied partition `p` up to `sequence`.
    async fn caught_up(&self, p: u32, sequence: u64, deadline: Instant) -> Result<(), StoreError> {
        let Some(applied) = self.inner.applied.get(p as usize) else {
            return Err(StoreError::Io(format!("no partition {p}")));
        };
        let mut applied = applied.subscribe();
        let reached =
            tokio::time::timeout_at(deadline.into(), applied.wait_for(|&a| a >= sequence))
                .await
                .is_ok_and(|r| r.is_ok());
        match reached {
            true => Ok(()),
            _ => match self.inner.failed.get() {
                Some(reason) => Err(StoreError::Failed(reason.clone())),
                None => Err(StoreError::NotDurable(format!(
                    "the view did not reach sequence {sequence} of partition {p} in time"
                ))),
            },
        }
    }

    /// settle(None): every write queued before is done, and the view has applied every
    /// partition up to its last sequence at the call.
    async fn catch_up(&self) -> Result<(), StoreError> {
        let barriers: Vec<_> = {
            let mut scopes = self.inner.lock_scopes();
            let busy: Vec<Vec<u8>> = scopes
                .iter()
                .filter(|(_, s)| s.running)
                .map(|(k, _)| k.clone())
                .collect();
            busy.into_iter()
                .filter_map(|scope| {
                    let state = scopes.get_mut(&scope)?;
                    let (tx, rx) = oneshot::channel();
                    self.enqueue(&scope, state, Work::Barrier(tx));
                    Some(rx)
                })
                .collect()
        };
        for barrier in barriers {
            let _ = barrier.await;
        }
        let deadline = Instant::now() + self.inner.config.append_timeout;
        let lasts = futures::future::join_all(
            (0..self.inner.config.layout.partitions).map(|p| self.last_sequence(p)),
        )
        .await;
        for (p, last) in lasts.into_iter().enumerate() {
            self.caught_up(p as u32, last?, deadline).await?;
        }
        Ok(())
    }

    async fn last_sequence(&self, p: u32) -> Result<u64, StoreError> {
        let mut stream = self
            .inner
            .js
            .get_stream(Layout::stream_name(p))
            .await
            .map_err(|e| store_error(Error::nats(e)))?;
        let info = stream
            .info()
            .await
            .map_err(|e| store_error(Error::nats(e)))?;
        Ok(info.state.last_sequence)
    }
}

impl Inner {
    fn lock_scopes(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Scope>> {
        self.scopes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_consumers(&self) -> std::sync::MutexGuard<'_, Vec<AbortHandle>> {
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The epoch this node serves `p` under, or why it may not write it.
    fn serving(&self, p: u32) -> Result<u64, StoreError> {
        if let Some(reason) = self.failed.get() {
            return Err(StoreError::Failed(reason.clone()));
        }
        self.ownership.serves(p).ok_or_else(|| {
            StoreError::NotServed(format!(
                "node {} does not serve partition {p}",
                self.config.node_id
            ))
        })
    }
}

/// One partition's consumer: applies its records to the view in stream order.
///
/// It reads through an ordered consumer, which lives on one server. When that server dies, the
/// consumer delivers nothing more, and a new one is placed by JetStream's meta leader — which
/// may be the server that died, so creating it can take as long as the meta group's election.
/// Meanwhile, while something waits for the partition, the follower reads what the stream holds
/// by sequence from the stream's leader ([`Follower::catch_up`]), which needs no consumer, so
/// the writes and claims of a partition whose stream still has a leader are not held up.
struct Follower {
    js: jetstream::Context,
    view: View,
    applied: Arc<Vec<watch::Sender<u64>>>,
    failed: Arc<OnceLock<String>>,
    p: u32,
}

/// One record of a partition as delivered or read back: what the view needs of it.
struct Record<'a> {
    sequence: u64,
    subject: &'a str,
    headers: Option<&'a HeaderMap>,
    payload: &'a [u8],
}

/// The view could not apply a record and stops for good (`failed` says why).
struct ViewFailed;

impl Follower {
    async fn run(self, from: u64) {
        let mut position = from;
        loop {
            match self.follow(&mut position).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!("partition {} follower: {e}; following again", self.p);
                }
            }
            if self.failed.get().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Follows the stream from `position + 1`, advancing `position`; returns an error to be
    /// started again (the stream not reachable), `Ok` when the view failed for good.
    async fn follow(&self, position: &mut u64) -> Result<(), Error> {
        let stream = tokio::time::timeout(
            STREAM_WITHIN,
            self.js.get_stream(Layout::stream_name(self.p)),
        )
        .await
        .map_err(|_| Error::Nats(format!("partition {}: no stream info", self.p)))?
        .map_err(Error::nats)?;
        // Whatever the consumer's creation waits for, what waits for the view is served by
        // reads by sequence meanwhile.
        let creating = crate::partitions::read_from(&stream, *position + 1);
        tokio::pin!(creating);
        let consumer = loop {
            tokio::select! {
                created = &mut creating => break created?,
                _ = tokio::time::sleep(CATCH_UP_EVERY) => {
                    if self.catch_up(&stream, position).await.is_err() {
                        return Ok(());
                    }
                }
            }
        };
        let mut bursts = consumer.ready_chunks(MAX_BURST);
        let mut quiet = Duration::ZERO;
        loop {
            let burst = match tokio::time::timeout(STALL_CHECK, bursts.next()).await {
                Ok(Some(burst)) => burst,
                Ok(None) => break,
                Err(_) => {
                    quiet += STALL_CHECK;
                    self.check_stall(&stream, position, &mut quiet).await?;
                    continue;
                }
            };
            quiet = Duration::ZERO;
            let mut records = Vec::with_capacity(burst.len());
            let mut broken = None;
            for message in &burst {
                let record = message.as_ref().map_err(Error::nats).and_then(|message| {
                    Ok(Record {
                        sequence: message.info().map_err(Error::nats)?.stream_sequence,
                        subject: message.subject.as_str(),
                        headers: message.headers.as_ref(),
                        payload: &message.payload,
                    })
                });
                match record {
                    Ok(record) => records.push(record),
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            match self.apply(&records, position) {
                Err(ViewFailed) => return Ok(()),
                Ok(Some(e)) => return Err(e),
                Ok(None) => {}
            }
            if let Some(e) = broken {
                return Err(e);
            }
        }
        Err(Error::Nats("the consumer ended".into()))
    }

    /// Applies `records` (in stream order) to the view as one write (`View::apply_records`) and
    /// advances `position`. Records at or before `position` (delivered again) are skipped. A
    /// record past `position + 1` means records went missing (a consumer recreated after a
    /// server failed): what came before it is applied, and the error says to follow again from
    /// the first missing one — a partition's stream never deletes, so its sequences have no
    /// holes, and the view must not pass over any.
    fn apply(&self, records: &[Record], position: &mut u64) -> Result<Option<Error>, ViewFailed> {
        let mut scopes = Vec::with_capacity(records.len());
        let mut batch = WriteBatch::default();
        let mut last = *position;
        let mut broken = None;
        for record in records {
            if record.sequence <= last {
                continue;
            }
            if record.sequence != last + 1 {
                broken = Some(Error::Nats(format!(
                    "partition {}: record {} delivered after {last}",
                    self.p, record.sequence
                )));
                break;
            }
            if let Err(reason) = Self::decode(record, &mut scopes, &mut batch) {
                // Nothing of the burst is applied: the view stops before it.
                tracing::error!(
                    "partition {}: record {} cannot be applied, the view stops: {reason}",
                    self.p,
                    record.sequence
                );
                let _ = self.failed.set(reason);
                return Err(ViewFailed);
            }
            last = record.sequence;
        }
        if last > *position {
            batch.put(position_key(self.p), last.to_be_bytes().to_vec());
            if let Some(Err(e)) = self.view.apply_records(&scopes, batch).poll_result() {
                if matches!(e, StoreError::Closed) {
                    // The node is shutting down: its engine closed the view before this
                    // follower's abort took effect. Nothing is wrong with the records.
                    tracing::debug!("partition {}: the view is closed", self.p);
                    return Err(ViewFailed);
                }
                tracing::error!(
                    "partition {}: records up to {last} cannot be applied, the view stops: {e}",
                    self.p
                );
                let _ = self.failed.set(e.to_string());
                return Err(ViewFailed);
            }
            *position = last;
            if let Some(applied) = self.applied.get(self.p as usize) {
                applied.send_replace(last);
            }
        }
        Ok(broken)
    }

    /// True while a claim, a write or a read waits for this partition's view.
    fn waited_on(&self) -> bool {
        self.applied
            .get(self.p as usize)
            .is_some_and(|applied| applied.receiver_count() > 0)
    }

    /// After `quiet` without a delivery: an error (follow again, from a new consumer) when the
    /// stream holds records past `position`, once they are read by sequence. The client
    /// recreates an ordered consumer whose server died by itself, but with pauses of up to 10 s
    /// between attempts while the stream elects a leader; a claim or a write waiting for the
    /// view would wait that long. So the stream is asked every [`STALL_CHECK`] while something
    /// waits for this partition, and every [`IDLE_CHECK`] otherwise.
    async fn check_stall(
        &self,
        stream: &jetstream::stream::Stream,
        position: &mut u64,
        quiet: &mut Duration,
    ) -> Result<(), Error> {
        if !self.waited_on() && *quiet < IDLE_CHECK {
            return Ok(());
        }
        *quiet = Duration::ZERO;
        let before = *position;
        let Some(last) = self.read_back(stream, position).await else {
            // The view failed for good: the consumer's next delivery is not applied either.
            return Ok(());
        };
        if last > before {
            return Err(Error::Nats(format!(
                "partition {}: nothing delivered while the stream held records up to {last} \
                 and the view {before}",
                self.p
            )));
        }
        Ok(())
    }

    /// While something waits for this partition: reads the records the stream holds past
    /// `position` by sequence from its leader and applies them. Err when the view failed.
    async fn catch_up(
        &self,
        stream: &jetstream::stream::Stream,
        position: &mut u64,
    ) -> Result<(), ViewFailed> {
        if !self.waited_on() {
            return Ok(());
        }
        match self.read_back(stream, position).await {
            Some(_) => Ok(()),
            None => Err(ViewFailed),
        }
    }

    /// Asks the stream's leader for its last sequence and applies the records from
    /// `position + 1` up to it, read by sequence (gets answered by the leader: a replica may be
    /// behind). Returns the stream's last sequence as read (`position` when it did not answer
    /// within [`STALL_CHECK`]: no leader yet, asked again at the next check), `None` when the
    /// view failed for good.
    async fn read_back(
        &self,
        stream: &jetstream::stream::Stream,
        position: &mut u64,
    ) -> Option<u64> {
        let last = match tokio::time::timeout(STALL_CHECK, stream.clone().info()).await {
            Ok(Ok(info)) => info.state.last_sequence,
            _ => return Some(*position),
        };
        while *position < last {
            let upto = last.min(*position + MAX_BURST as u64);
            let mut messages = Vec::new();
            for sequence in *position + 1..=upto {
                match tokio::time::timeout(STALL_CHECK, stream.get_raw_message(sequence)).await {
                    Ok(Ok(message)) => messages.push(message),
                    _ => break,
                }
            }
            let read = messages.len();
            let records: Vec<Record> = messages
                .iter()
                .map(|message| Record {
                    sequence: message.sequence,
                    subject: message.subject.as_str(),
                    headers: Some(&message.headers),
                    payload: &message.payload,
                })
                .collect();
            match self.apply(&records, position) {
                Err(ViewFailed) => return None,
                Ok(Some(e)) => {
                    tracing::warn!("partition {}: {e}", self.p);
                    break;
                }
                Ok(None) => {}
            }
            if read == 0 || *position < upto {
                break;
            }
        }
        Some(last)
    }

    /// Adds a record's scope to `scopes` and its ops and additions to `batch` (a claim has
    /// none: it only moves the scope's sequence).
    fn decode(
        record: &Record,
        scopes: &mut Vec<Vec<u8>>,
        batch: &mut WriteBatch,
    ) -> Result<(), String> {
        let scope = record
            .subject
            .rsplit('.')
            .next()
            .and_then(unhex)
            .ok_or_else(|| format!("subject {} names no scope", record.subject))?;
        let is_claim = record
            .headers
            .is_some_and(|h| h.get(CLAIM_HEADER).is_some());
        if !is_claim {
            WriteBatch::decode_into(record.payload, batch).map_err(|e| e.to_string())?;
        }
        scopes.push(scope);
        Ok(())
    }
}

/// How long a follower waits for a delivery before it asks the stream whether it is behind,
/// when something waits for the partition (a claim, a write, a read); and how long it waits for
/// the stream's answers.
const STALL_CHECK: Duration = Duration::from_millis(500);

/// How long a follower waits for its stream's info before it starts again.
const STREAM_WITHIN: Duration = Duration::from_secs(2);

/// How often a follower reads by sequence what waits for the view while its consumer is being
/// created.
const CATCH_UP_EVERY: Duration = Duration::from_millis(100);

/// The same, when nothing waits: a view that falls behind unnoticed serves stale lists.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// The most records a follower applies as one write: what one burst of deliveries brought,
/// bounded so one write stays small.
const MAX_BURST: usize = 256;

/// How long the view has, at least, to apply a record the stream acknowledged: past the
/// append's own deadline if need be (a process that was frozen reads the acknowledgement and the
/// record at once when it wakes; neither is lost for being late).
const VIEW_GRACE: Duration = Duration::from_secs(2);

fn view_deadline(deadline: Instant) -> Instant {
    deadline.max(Instant::now() + VIEW_GRACE)
}

/// The view's key holding partition `p`'s applied sequence.
fn position_key(p: u32) -> Vec<u8> {
    let mut key = vec![POSITION_TAG];
    key.extend_from_slice(&p.to_be_bytes());
    key
}

fn store_error(e: Error) -> StoreError {
    match e {
        Error::OutcomeUnknown { .. } => StoreError::NotDurable(e.to_string()),
        // Another node claimed the scope: nothing was written, its owner is elsewhere.
        Error::Fenced { .. } | Error::Superseded { .. } => {
            metrics::counter!("latchkey_cluster_fenced_writes_total").increment(1);
            StoreError::NotServed(e.to_string())
        }
        other => StoreError::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_key_is_outside_the_engines_keys() {
        assert_eq!(position_key(3), b"Z\0\0\0\x03");
    }
}
