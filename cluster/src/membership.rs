//! Which node serves which partition: heartbeats, the node's lease, the coordinator and the
//! partition table, all in JetStream key-value buckets.
//!
//! - **Live nodes** (`lk_nodes` and `lk_nodes_2`): each node puts its key in both buckets every
//!   `renew_every`; a bucket's `max_age` is the TTL, so a node that stops renewing — dead,
//!   paused, cut off — disappears `ttl` after its last renewal reached the server. A node is
//!   live while *either* bucket holds its key. Two buckets, because a bucket is one stream with
//!   one leader: when that leader's server dies, no renewal lands until JetStream has elected
//!   another (4–9 s), and with one bucket every node's lease lapsed meanwhile. The coordinator
//!   keeps the two streams' leaders on different servers ([`spread_lease_leaders`]).
//! - **The node's lease**: a node may serve only until `ttl − margin` after it *sent* its last
//!   renewal that succeeded, in either bucket. The server's TTL of that renewal starts later than
//!   the send, so a node always knows its lease is gone before anyone else may think it dead:
//!   the coordinator counts a node dead only when it has read both buckets and neither holds it.
//! - **The coordinator** (`lk_coord`): whoever creates the key `coordinator` and keeps updating
//!   it with its revision (compare-and-set); it lapses like a node key.
//! - **The partition table** (`lk_parts`): key `p<k>` names the owner, or a handoff from one node
//!   to another. The coordinator assigns partitions by rendezvous hashing with bounded loads over
//!   the live nodes (every node holds its share; a join or a leave moves only the partitions
//!   that must move) and writes every change by
//!   compare-and-set; **the entry's revision is the partition's epoch**. A live owner gives a
//!   partition up by handoff: the coordinator marks it `from>to`, the owner stops serving it at
//!   once and writes `to` itself (compare-and-set again). A dead owner's partitions — its key
//!   expired, so its lease lapsed — go straight to their new owner.
//!
//! A node serves partition `p` only while the table, as its watch last delivered it, names it as
//! `p`'s owner and its lease holds ([`Membership::serves`]). A node whose lease lapsed — paused,
//! cut off from NATS — may have missed table changes meanwhile, so when a renewal succeeds after a
//! lapse it serves again only once its watch has delivered the table as it stood after that
//! renewal, and only under entries written after it: the ones from before are rewritten first
//! by compare-and-set ([`reclaim`]), which a late move of the coordinator's cannot pass. That
//! is what keeps reads from being
//! served by two nodes; writes do not rely on it — a stale owner's append is refused by the
//! stream (`log.rs`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::partitions::{fnv1a, Layout};
use crate::Error;

/// The buckets of the node keys (see the module's doc).
pub const NODES: [&str; 2] = ["lk_nodes", "lk_nodes_2"];
const COORD: &str = "lk_coord";
/// The bucket of the partition table.
pub const PARTS: &str = "lk_parts";

/// Partition `p`'s key in the partition table.
pub fn table_key(p: u32) -> String {
    format!("p{p}")
}
const COORDINATOR_KEY: &str = "coordinator";

/// How a node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    pub layout: Layout,
    /// How long a node's key (and the coordinator's) outlives its last renewal.
    pub ttl: Duration,
    /// How often a node renews its key (and the coordinator its lease).
    pub renew_every: Duration,
    /// How much earlier than `ttl` a node considers its own lease gone (clock rates may differ).
    pub margin: Duration,
    /// How often the coordinator compares the table with the live nodes.
    pub poll_every: Duration,
}

impl Config {
    /// The defaults: TTL 3 s, renewal every second, a margin of 0.5 s, a poll every 0.5 s.
    pub fn new(node_id: impl Into<String>, layout: Layout) -> Self {
        Config {
            node_id: node_id.into(),
            layout,
            ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
            margin: Duration::from_millis(500),
            poll_every: Duration::from_millis(500),
        }
    }
}

/// A partition table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// `node` owns the partition.
    Owned(String),
    /// `from` is giving the partition to `to`; neither serves it meanwhile.
    Handoff { from: String, to: String },
}

impl Assignment {
    fn encode(&self) -> Bytes {
        match self {
            Assignment::Owned(node) => Bytes::from(node.clone()),
            Assignment::Handoff { from, to } => Bytes::from(format!("{from}>{to}")),
        }
    }

    fn decode(bytes: &[u8]) -> Option<Assignment> {
        let text = std::str::from_utf8(bytes).ok()?;
        if text.is_empty() {
            return None;
        }
        Some(match text.split_once('>') {
            Some((from, to)) => Assignment::Handoff {
                from: from.to_owned(),
                to: to.to_owned(),
            },
            None => Assignment::Owned(text.to_owned()),
        })
    }
}

/// One partition as a node's watch last delivered it: the assignment and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub assignment: Assignment,
    pub epoch: u64,
}

struct Shared {
    config: Config,
    /// The partition table as the watch delivered it.
    table: Mutex<Vec<Option<Entry>>>,
    /// Until when this node may serve (its lease).
    lease: Lease,
    /// The highest table revision the watch has delivered.
    seen: AtomicU64,
    /// The table revision the watch must have delivered before this node serves (set when the
    /// node's lease is taken up again after a lapse, and at the start).
    required: AtomicU64,
    /// Set when the node leaves or stops: it serves nothing from then on.
    stopped: AtomicBool,
    /// Until when this node holds the coordinator's lease.
    coordinating: Lease,
}

/// A lease held by this node: a deadline the task renewing it sets and readers check.
#[derive(Default)]
struct Lease(Mutex<Option<Instant>>);

impl Lease {
    /// After a renewal sent at `sent` succeeded (`None`: it failed, the lease is gone): the
    /// lease runs `ttl − margin` from the send, so it lapses before the server's TTL can.
    fn renewed(&self, sent: Option<Instant>, config: &Config) {
        let until = sent.map(|sent| sent + config.ttl.saturating_sub(config.margin));
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = until;
    }

    fn holds(&self) -> bool {
        let until = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|until| Instant::now() < until)
    }
}

/// A node's membership: its heartbeat, its view of the partition table, and the coordinator's
/// work when it holds that lease. Dropping it stops everything at once (as a crash would: its key
/// stays until the TTL); [`Membership::leave`] leaves gracefully.
pub struct Membership {
    shared: Arc<Shared>,
    nodes: [kv::Store; 2],
    coord: kv::Store,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Membership {
    /// Joins the cluster behind `client` (creating the buckets the first time), and starts the
    /// heartbeat, the table watch and the coordinator's loop.
    pub async fn join(client: async_nats::Client, config: Config) -> Result<Membership, Error> {
        let js = jetstream::new(client);
        let replicas = config.layout.replicas;
        let nodes = [
            bucket(&js, NODES[0], config.ttl, replicas).await?,
            bucket(&js, NODES[1], config.ttl, replicas).await?,
        ];
        let coord = bucket(&js, COORD, config.ttl, replicas).await?;
        let parts = bucket(&js, PARTS, Duration::ZERO, replicas).await?;
        let shared = Arc::new(Shared {
            table: Mutex::new(vec![None; config.layout.partitions as usize]),
            config,
            lease: Lease::default(),
            seen: AtomicU64::new(0),
            required: AtomicU64::new(u64::MAX),
            stopped: AtomicBool::new(false),
            coordinating: Lease::default(),
        });
        let watch = parts.watch_with_history(">").await.map_err(Error::nats)?;
        renew(&shared, &nodes, &parts).await?;
        let tasks = vec![
            tokio::spawn(heartbeat(shared.clone(), nodes.clone(), parts.clone())),
            tokio::spawn(follow_table(shared.clone(), parts.clone(), watch)),
            tokio::spawn(coordinate(
                shared.clone(),
                js,
                nodes.clone(),
                coord.clone(),
                parts,
            )),
        ];
        Ok(Membership {
            shared,
            nodes,
            coord,
            tasks: Mutex::new(tasks),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.shared.config.node_id
    }

    /// The epoch under which this node serves partition `p` right now, if it does: the table
    /// names it the owner and its lease holds.
    pub fn serves(&self, p: u32) -> Option<u64> {
        let shared = &self.shared;
        if shared.stopped.load(Ordering::Acquire)
            || !self.lease_holds()
            || shared.seen.load(Ordering::Acquire) < shared.required.load(Ordering::Acquire)
        {
            return None;
        }
        let table = self
            .shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let required = shared.required.load(Ordering::Acquire);
        match table.get(p as usize)? {
            Some(Entry {
                assignment: Assignment::Owned(node),
                epoch,
            }) if *node == self.shared.config.node_id && *epoch > required => Some(*epoch),
            _ => None,
        }
    }

    /// Partition `p` as this node's watch last delivered it.
    pub fn entry(&self, p: u32) -> Option<Entry> {
        let table = self
            .shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table.get(p as usize).cloned().flatten()
    }

    /// True while this node's lease holds (its last renewal was sent less than `ttl − margin` ago).
    pub fn lease_holds(&self) -> bool {
        self.shared.lease.holds()
    }

    /// True while this node holds the coordinator's lease.
    pub fn coordinating(&self) -> bool {
        !self.shared.stopped.load(Ordering::Acquire) && self.shared.coordinating.holds()
    }

    /// Leaves the cluster: stops serving at once, stops renewing, and purges its keys (and the
    /// coordinator's, if it holds it) so its partitions move without waiting for the TTL.
    pub async fn leave(&self) -> Result<(), Error> {
        let coordinating = self.coordinating();
        self.stop();
        for nodes in &self.nodes {
            purge(nodes, &self.shared.config.node_id).await?;
        }
        if coordinating {
            purge(&self.coord, COORDINATOR_KEY).await?;
        }
        Ok(())
    }

    /// Stops serving, renewing and coordinating at once, as a crash would: the node's key stays
    /// until its TTL, then its partitions move. (Dropping the membership does the same.)
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        for task in tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes `key` from `bucket` at once (its history with it), as its TTL would later.
async fn purge(bucket: &kv::Store, key: &str) -> Result<(), Error> {
    bucket
        .stream
        .purge()
        .filter(format!("{}{key}", bucket.prefix))
        .await
        .map(|_| ())
        .map_err(Error::nats)
}

/// Opens the bucket `name`, creating it the first time.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, Error> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: name.to_owned(),
            history: 1,
            max_age: ttl,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another node created it in between.
        Err(_) => js.get_key_value(name).await.map_err(Error::nats),
    }
}

/// Renews this node's key in both buckets at once; the lease runs from the moment the renewals
/// were sent if either succeeded. Each renewal waits at most `renew_every`: a bucket whose
/// stream has no leader must not hold back the lease the other one gives.
///
/// If the lease had lapsed before the renewal came back, the coordinator may have moved this
/// node's partitions meanwhile, and this node's watch may be behind. A write to the table's
/// bucket (the key `sync.<node>`) marks where the table stands now — reading the stream's last
/// sequence would not do: a server that was paused may still answer as the leader it was — and
/// the node serves again only once its watch has delivered that write.
async fn renew(shared: &Shared, nodes: &[kv::Store; 2], parts: &kv::Store) -> Result<(), Error> {
    let sent = Instant::now();
    let node = &shared.config.node_id;
    let within = shared.config.renew_every;
    let put = |nodes: &kv::Store| {
        let nodes = nodes.clone();
        async move {
            match tokio::time::timeout(within, nodes.put(node, Bytes::new())).await {
                Ok(put) => put.map(|_| ()).map_err(Error::nats),
                Err(_) => Err(Error::nats(format!(
                    "{}: no answer within {within:?}",
                    nodes.name
                ))),
            }
        }
    };
    let (first, second) = tokio::join!(put(&nodes[0]), put(&nodes[1]));
    match (first, second) {
        (Err(e), Err(_)) => return Err(e),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => {
            tracing::debug!(%node, "one of the node's keys not renewed: {e}");
        }
        (Ok(()), Ok(())) => {}
    }
    if !shared.lease.holds() {
        let mark = format!("sync.{node}");
        let newest = parts.put(mark, Bytes::new()).await.map_err(Error::nats)?;
        shared.required.store(newest, Ordering::Release);
    }
    shared.lease.renewed(Some(sent), &shared.config);
    Ok(())
}

async fn heartbeat(shared: Arc<Shared>, nodes: [kv::Store; 2], parts: kv::Store) {
    let mut tick = tokio::time::interval(shared.config.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = renew(&shared, &nodes, &parts).await {
            tracing::warn!(node = %shared.config.node_id, "cannot renew the node's lease: {e}");
        }
    }
}

/// Applies the table's changes as the watch delivers them. A watch can stall without an error
/// (its consumer sat on a server that froze or died), and a stalled watch is replaced — the new
/// one delivers every entry again, which applying twice is harmless. Replaced when:
/// - the watch reports an error or ends;
/// - the node waits to serve again after its lease lapsed, and the watch has not delivered the
///   mark written at the renewal (`required`) within half a second — a live watch delivers it in
///   milliseconds, and every request of the node waits for it;
/// - or, checked every second, the watch is still behind the table's newest revision as read
///   from its stream's leader at the previous check.
///
/// A replacement that gets no answer within [`WATCH_WITHIN`] (the bucket's stream electing a
/// leader) is tried again at the next check instead of waiting out the client's timeout.
async fn follow_table(shared: Arc<Shared>, parts: kv::Store, mut watch: kv::Watch) {
    let node = &shared.config.node_id;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut newest_before = 0;
    let mut ticks = 0u64;
    let mut was_waiting = false;
    let mut broken = false;
    loop {
        tokio::select! {
            entry = watch.next(), if !broken => match entry {
                Some(Ok(entry)) => on_table_change(&shared, &parts, entry).await,
                Some(Err(e)) => {
                    tracing::warn!(%node, "table watch: {e}");
                    broken = true;
                }
                None => broken = true,
            },
            _ = check.tick() => {
                ticks += 1;
                let full_check = ticks.is_multiple_of(2);
                let seen = shared.seen.load(Ordering::Acquire);
                let waiting = seen < shared.required.load(Ordering::Acquire);
                if broken || (waiting && was_waiting) || (full_check && seen < newest_before) {
                    tracing::warn!(%node, "table watch stalled; restarting it");
                    match tokio::time::timeout(WATCH_WITHIN, parts.watch_with_history(">")).await {
                        Ok(Ok(fresh)) => {
                            watch = fresh;
                            broken = false;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%node, "table watch: {e}");
                            broken = true;
                        }
                        Err(_) => broken = true,
                    }
                    was_waiting = false;
                } else {
                    was_waiting = waiting;
                }
                // A rewrite refused for want of an answer is tried again.
                reclaim(&shared, &parts).await;
                if full_check {
                    let mut stream = parts.stream.clone();
                    if let Ok(Ok(info)) = tokio::time::timeout(WATCH_WITHIN, stream.info()).await {
                        newest_before = info.state.last_sequence;
                    }
                }
            }
        }
    }
}

/// How long the table's watch may take to be created, or its stream to say its newest revision.
const WATCH_WITHIN: Duration = Duration::from_secs(1);

/// Records a table change; a handoff away from this node is acknowledged at once (it serves
/// the partition no more from the moment the change is recorded).
async fn on_table_change(shared: &Shared, parts: &kv::Store, entry: kv::Entry) {
    shared.seen.fetch_max(entry.revision, Ordering::AcqRel);
    let Some(p) = entry
        .key
        .strip_prefix('p')
        .and_then(|k| k.parse::<usize>().ok())
    else {
        // Perhaps this node's own mark: what it held before is taken up again.
        reclaim(shared, parts).await;
        return;
    };
    let assignment = match entry.operation {
        kv::Operation::Put => Assignment::decode(&entry.value),
        kv::Operation::Delete | kv::Operation::Purge => None,
    };
    {
        let mut table = shared.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = table.get_mut(p) {
            *slot = assignment.clone().map(|assignment| Entry {
                assignment,
                epoch: entry.revision,
            });
        }
    }
    if let Some(Assignment::Handoff { from, to }) = assignment {
        if from == shared.config.node_id && !shared.stopped.load(Ordering::Acquire) {
            let given = Assignment::Owned(to).encode();
            // A failed compare-and-set means the table moved on; the coordinator decides again.
            let _ = parts.update(&entry.key, given, entry.revision).await;
        }
    }
    reclaim(shared, parts).await;
}

/// Takes up again, by compare-and-set, the partitions the table gives this node under entries
/// older than its `sync` mark (`required`): entries from before its lease lapsed, or from
/// before it started. It serves none of them until the rewritten entry comes back
/// ([`Membership::serves`] wants an epoch past the mark).
///
/// Why: a coordinator pass that read the live nodes while this node's keys had expired may
/// write a move of its partitions *after* the mark, and until this node's watch delivered that
/// move it would serve a partition whose new owner is claiming it. The move is a
/// compare-and-set on the entry's revision, and so is this rewrite: whichever lands first wins,
/// and the other is refused.
async fn reclaim(shared: &Shared, parts: &kv::Store) {
    let required = shared.required.load(Ordering::Acquire);
    if shared.seen.load(Ordering::Acquire) < required || shared.stopped.load(Ordering::Acquire) {
        return;
    }
    let me = &shared.config.node_id;
    let stale: Vec<(u32, u64)> = shared
        .table
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .enumerate()
        .filter_map(|(p, entry)| match entry {
            Some(Entry {
                assignment: Assignment::Owned(owner),
                epoch,
            }) if owner == me && *epoch < required => Some((u32::try_from(p).ok()?, *epoch)),
            _ => None,
        })
        .collect();
    for (p, epoch) in stale {
        // Refused when the entry changed meanwhile (a move, or this rewrite already made).
        let _ = parts
            .update(table_key(p), Assignment::Owned(me.clone()).encode(), epoch)
            .await;
    }
}

/// The coordinator's loop, run by every node: take the lease when it is free, keep it while
/// held, bring the table in line with the live nodes, and (every few passes) keep the leaders of
/// the two node buckets apart.
async fn coordinate(
    shared: Arc<Shared>,
    js: jetstream::Context,
    nodes: [kv::Store; 2],
    coord: kv::Store,
    parts: kv::Store,
) {
    let mut held: Option<u64> = None;
    let mut tick = tokio::time::interval(shared.config.poll_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passes = 0u64;
    loop {
        tick.tick().await;
        let me = Bytes::from(shared.config.node_id.clone());
        let sent = Instant::now();
        held = match held {
            Some(revision) => coord.update(COORDINATOR_KEY, me, revision).await.ok(),
            None => coord.create(COORDINATOR_KEY, me).await.ok(),
        };
        shared
            .coordinating
            .renewed(held.map(|_| sent), &shared.config);
        if held.is_some() {
            if let Err(e) = rebalance(&shared, &nodes, &parts).await {
                tracing::warn!(node = %shared.config.node_id, "rebalancing failed: {e}");
            }
            if passes.is_multiple_of(SPREAD_EVERY) {
                if let Err(e) = spread_lease_leaders(&js, &nodes).await {
                    tracing::debug!(node = %shared.config.node_id, "lease leaders not spread: {e}");
                }
            }
            passes += 1;
        }
    }
}

/// Every how many coordinator passes the node buckets' leaders are compared.
const SPREAD_EVERY: u64 = 4;

/// When one server leads both node buckets' streams, asks the second stream's leader to step
/// down in favour of another of its replicas that is up to date, so that one server's death
/// leaves one bucket able to take renewals. (Leaders move after every failure; this is checked
/// again every few passes.)
async fn spread_lease_leaders(
    js: &jetstream::Context,
    nodes: &[kv::Store; 2],
) -> Result<(), Error> {
    let mut infos = Vec::with_capacity(2);
    for bucket in nodes {
        let mut stream = bucket.stream.clone();
        let info = tokio::time::timeout(WATCH_WITHIN, stream.info())
            .await
            .map_err(|_| Error::nats(format!("{}: no answer", bucket.name)))?
            .map_err(Error::nats)?;
        infos.push(info.cluster.clone().unwrap_or_default());
    }
    let (first, second) = (&infos[0], &infos[1]);
    let Some(leader) = first.leader.as_deref() else {
        return Ok(());
    };
    if second.leader.as_deref() != Some(leader) {
        return Ok(());
    }
    let Some(other) = second
        .replicas
        .iter()
        .find(|peer| peer.name != leader && peer.current && !peer.offline)
    else {
        return Ok(());
    };
    let stream = &nodes[1].stream.cached_info().config.name;
    move_leader(js, stream, &other.name).await?;
    tracing::info!(%stream, from = %leader, to = %other.name, "moved the leader of a node bucket");
    Ok(())
}

/// Asks `stream`'s leader to step down in favour of the server called `to` (a replica of the
/// stream that is up to date).
pub(crate) async fn move_leader(
    js: &jetstream::Context,
    stream: &str,
    to: &str,
) -> Result<(), Error> {
    let request = serde_json::json!({ "placement": { "preferred": to } });
    let answer: serde_json::Value = js
        .request(format!("STREAM.LEADER.STEPDOWN.{stream}"), &request)
        .await
        .map_err(Error::nats)?;
    match answer.get("error") {
        None => Ok(()),
        Some(error) => Err(Error::Nats(format!("{stream}: {error}"))),
    }
}

/// One pass of the coordinator: every partition toward its owner among the live nodes
/// ([`assignment`]), each change a compare-and-set on the entry as this node's watch delivered
/// it (a stale view loses the compare-and-set and is decided again in the next pass).
///
/// The live nodes are those whose key either bucket holds, and a pass runs only when both
/// answered: a node renewing only in the bucket that did not answer would otherwise look dead
/// while its lease holds. They come from each bucket stream's info, which its leader answers.
/// Reads of single keys (direct gets) are avoided here: any replica may take them, and a
/// paused replica keeps its share of them unanswered until the request times out.
async fn rebalance(
    shared: &Shared,
    nodes: &[kv::Store; 2],
    parts: &kv::Store,
) -> Result<(), Error> {
    let layout = &shared.config.layout;
    let mut live = HashSet::new();
    for nodes in nodes {
        tokio::time::timeout(LIVE_WITHIN, live_in(nodes, &mut live))
            .await
            .map_err(|_| {
                Error::nats(format!("{}: no answer within {LIVE_WITHIN:?}", nodes.name))
            })??;
    }
    let live: Vec<String> = live.into_iter().collect();
    let table = shared
        .table
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    // Who holds each partition now: its owner, or the node a handoff gives it to.
    let holders: Vec<Option<&str>> = (0..layout.partitions as usize)
        .map(|p| match table.get(p).and_then(Option::as_ref) {
            Some(entry) => match &entry.assignment {
                Assignment::Owned(owner) => Some(owner.as_str()),
                Assignment::Handoff { to, .. } => Some(to.as_str()),
            },
            None => None,
        })
        .collect();
    let desired_table = assignment(&live, &holders);
    for p in 0..layout.partitions {
        let Some(desired) = desired_table[p as usize] else {
            return Ok(());
        };
        let key = table_key(p);
        let current = table
            .get(p as usize)
            .cloned()
            .flatten()
            .map(|entry| (entry.assignment, entry.epoch));
        let alive = |node: &str| live.iter().any(|n| n == node);
        let next = match &current {
            None => Some(Assignment::Owned(desired.to_owned())),
            Some((Assignment::Owned(owner), _)) if owner == desired => None,
            Some((Assignment::Owned(owner), _)) if !alive(owner) => {
                Some(Assignment::Owned(desired.to_owned()))
            }
            Some((Assignment::Owned(owner), _)) => Some(Assignment::Handoff {
                from: owner.clone(),
                to: desired.to_owned(),
            }),
            Some((Assignment::Handoff { from, .. }, _)) if !alive(from) => {
                Some(Assignment::Owned(desired.to_owned()))
            }
            Some((Assignment::Handoff { from, to }, _)) if to != desired => {
                Some(Assignment::Handoff {
                    from: from.clone(),
                    to: desired.to_owned(),
                })
            }
            // The owner has not acknowledged the handoff yet.
            Some((Assignment::Handoff { .. }, _)) => None,
        };
        let Some(next) = next else { continue };
        // A lost compare-and-set (another coordinator, a handoff acknowledged in between) is
        // decided again in the next pass.
        let written = match current {
            None => parts
                .create(&key, next.encode())
                .await
                .map(|_| ())
                .map_err(Error::nats),
            Some((_, revision)) => parts
                .update(&key, next.encode(), revision)
                .await
                .map(|_| ())
                .map_err(Error::nats),
        };
        match written {
            Ok(()) => tracing::info!(partition = p, ?next, ?live, "partition reassigned"),
            Err(e) => tracing::debug!(partition = p, ?next, ?live, "table change not written: {e}"),
        }
    }
    Ok(())
}

/// How long the coordinator waits for a node bucket to list its keys.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

/// Adds the nodes whose key the bucket `nodes` holds to `live`.
async fn live_in(nodes: &kv::Store, live: &mut HashSet<String>) -> Result<(), Error> {
    let mut subjects = nodes
        .stream
        .info_with_subjects(format!("{}>", nodes.prefix))
        .await
        .map_err(Error::nats)?;
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject.map_err(Error::nats)?;
        if let Some(node) = subject.strip_prefix(nodes.prefix.as_str()) {
            live.insert(node.to_owned());
        }
    }
    Ok(())
}

/// The owner of each partition among `nodes`, given who holds each now (`current`, one entry per
/// partition; holders not among `nodes` count as none), or `None` for all when there is no node.
///
/// Every node gets its share: with P = q·N + r, r nodes hold q + 1 partitions and the others q
/// (the r that hold the most now, ties by name). A node keeps what it holds up to its share —
/// the partitions it scores highest — so a join or a leave moves only what must move: the
/// newcomer's share, the leaver's partitions, what a node holds beyond its new share. The rest
/// goes by rendezvous hashing with bounded loads: the (node, partition) pairs are taken from
/// the highest score down, each giving its partition to its node while the node has room. With
/// nothing held yet, that alone decides; and every coordinator with the same table and the same
/// live nodes computes the same answer (the order of `nodes` does not matter).
pub fn assignment<'a>(nodes: &'a [String], current: &[Option<&str>]) -> Vec<Option<&'a str>> {
    let mut owners: Vec<Option<&str>> = vec![None; current.len()];
    if nodes.is_empty() {
        return owners;
    }
    let (q, r) = (current.len() / nodes.len(), current.len() % nodes.len());
    let mut by_holding: Vec<(&str, usize)> = nodes
        .iter()
        .map(|node| {
            let held = current
                .iter()
                .filter(|c| **c == Some(node.as_str()))
                .count();
            (node.as_str(), held)
        })
        .collect();
    by_holding.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut room: std::collections::HashMap<&str, usize> = by_holding
        .iter()
        .enumerate()
        .map(|(i, (node, _))| (*node, q + usize::from(i < r)))
        .collect();
    // Every pair, best first; the node's name and the partition break ties.
    let mut pairs: Vec<(u64, &str, usize)> = nodes
        .iter()
        .flat_map(|node| (0..current.len()).map(move |p| (score(node, p as u32), node.as_str(), p)))
        .collect();
    pairs.sort_unstable_by(|a, b| b.cmp(a));
    // First what each node holds now, then everything else.
    for keep in [true, false] {
        for &(_, node, p) in &pairs {
            if owners[p].is_some() || (keep && current[p] != Some(node)) {
                continue;
            }
            if let Some(left) = room.get_mut(node).filter(|left| **left > 0) {
                *left -= 1;
                owners[p] = Some(node);
            }
        }
    }
    owners
}

/// How much `node` wants partition `p`: a hash of the two.
fn score(node: &str, p: u32) -> u64 {
    let mut h = fnv1a(node.bytes().chain([b'/']).chain(p.to_le_bytes()));
    // Finalize (splitmix64) so close node names do not give close scores.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    fn owners(nodes: &[String], partitions: u32) -> Vec<String> {
        assignment(nodes, &vec![None; partitions as usize])
            .into_iter()
            .map(|owner| owner.unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_node_gets_its_share_and_no_more() {
        for n in 1..=7 {
            for partitions in [1, 5, 16, 64, 100] {
                let nodes = names(n);
                let owners = owners(&nodes, partitions);
                let (q, r) = (partitions as usize / n, partitions as usize % n);
                let held: Vec<usize> = nodes
                    .iter()
                    .map(|node| owners.iter().filter(|o| *o == node).count())
                    .collect();
                // r nodes hold q + 1, the others q.
                assert_eq!(held.iter().filter(|&&c| c == q + 1).count(), r, "{held:?}");
                assert_eq!(held.iter().filter(|&&c| c == q).count(), n - r, "{held:?}");
            }
        }
        assert_eq!(assignment(&[], &[Some("n1"), None]), vec![None; 2]);
    }

    #[test]
    fn the_order_the_nodes_are_listed_in_does_not_matter() {
        let nodes = names(5);
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(owners(&nodes, 64), owners(&reversed, 64));
    }

    /// `table` re-decided for `nodes`, and how many partitions changed hands.
    fn redecide(nodes: &[String], table: &[String]) -> (Vec<String>, usize) {
        let current: Vec<Option<&str>> = table.iter().map(|o| Some(o.as_str())).collect();
        let next: Vec<String> = assignment(nodes, &current)
            .into_iter()
            .map(|owner| owner.unwrap().to_owned())
            .collect();
        let moved = table.iter().zip(&next).filter(|(a, b)| a != b).count();
        (next, moved)
    }

    #[test]
    fn a_join_or_a_leave_moves_only_what_must_move() {
        for partitions in [16, 64] {
            for n in 1..=7 {
                let before = owners(&names(n), partitions);
                // A join: the newcomer's share moves to it, and nothing else.
                let (after, moved) = redecide(&names(n + 1), &before);
                let newcomer = format!("n{}", n + 1);
                let taken = after.iter().filter(|o| **o == newcomer).count();
                assert_eq!(moved, taken, "{n}+1 nodes, {partitions} partitions");
                assert_eq!(taken, partitions as usize / (n + 1), "the newcomer's share");
                // Decided again with nothing changed: nothing moves.
                assert_eq!(redecide(&names(n + 1), &after), (after.clone(), 0));
                // A leave (n1's): only its partitions move.
                if n > 1 {
                    let rest: Vec<String> = names(n).into_iter().skip(1).collect();
                    let (_, moved) = redecide(&rest, &before);
                    let left = before.iter().filter(|o| *o == "n1").count();
                    assert_eq!(moved, left, "{n}-1 nodes, {partitions} partitions");
                }
            }
        }
    }

    #[test]
    fn a_lopsided_table_is_evened_out() {
        let nodes = names(4);
        let (even, moved) = redecide(&nodes, &vec!["n1".to_owned(); 16]);
        assert_eq!(moved, 12);
        for node in &nodes {
            assert_eq!(even.iter().filter(|o| *o == node).count(), 4, "{even:?}");
        }
    }

    #[test]
    fn assignments_read_back_as_written() {
        for a in [
            Assignment::Owned("n1".into()),
            Assignment::Handoff {
                from: "n1".into(),
                to: "n2".into(),
            },
        ] {
            assert_eq!(Assignment::decode(&a.encode()), Some(a));
        }
        assert_eq!(Assignment::decode(b""), None);
    }
}
