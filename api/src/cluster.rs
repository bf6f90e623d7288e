//! Cluster mode at the edge: every request is served by the node that owns its user.
//!
//! A node joins the cluster (`latchkey_cluster::membership`), opens its engine over the cluster
//! journal (`latchkey_cluster::journal`: writes fenced in the partitions' streams, the data
//! directory a view of all of them), and answers the RPCs of every protocol. The RPC table knows
//! which requests name a user or a session ([`crate::rpc::Rpc::scope`]); for those, [`Router`]
//! looks up the scope's partition in the membership table:
//!
//! - served here → the call runs here, as embedded;
//! - served by another node → the request message (protobuf) and the caller's headers go to that
//!   node over NATS request/reply (`lk.rpc.<node>`); its [`respond`] loop runs the same RPC and
//!   sends back the response message or the error. Every protocol therefore works on every node;
//! - served by nobody right now (a failover in progress), or the owner answered that it no longer
//!   serves it, or the owner is not reachable: looked up again every 50 ms until the call
//!   timeout, then NO-OWNER. A forwarded call with no answer in time is CALL-TIMEOUT: it may have
//!   run.
//!
//! A session created by login name is routed the same way once the name is looked up in the
//! node's view ([`crate::rpc::placement`]). Requests that name no user (creations, lists,
//! policies) run where they arrive: new ids are chosen in the node's own partitions
//! (`Engine::new_id`), names are claimed cluster-wide (`latchkey_cluster::names`), and lists read
//! the node's view after catching it up with the streams.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap as NatsHeaders, Message};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures::StreamExt;
use latchkey_cluster::membership::{Config as MembershipConfig, Membership};
use latchkey_cluster::partitions::Layout;
use latchkey_cluster::{ClusterJournal, JournalConfig, Ownership};
use latchkey_engine::{Caller, Engine, Error, ErrorId, Placement};
use prost::Message as _;

use crate::rpc::{self, Call, Routed, Visitor};

/// How long a lookup waits before it looks again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Reply headers.
const STATUS: &str = "Lk-Status";
const METHOD: &str = "Lk-Method";
const ERROR: &str = "Lk-Error";
const DETAIL: &str = "Lk-Detail";
const ATTEMPTS: &str = "Lk-Failed-Attempts";
/// How long the caller still waits, in milliseconds: the owner does not start the call later.
const WITHIN: &str = "Lk-Within-Ms";

/// Where a scope is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Here,
    There(String),
    Nobody,
}

/// This node's view of who serves what, and the way to them.
pub struct Router {
    client: async_nats::Client,
    membership: Arc<Membership>,
    pub layout: Layout,
    node_id: String,
    timeout: Duration,
}

impl Router {
    pub fn new(
        client: async_nats::Client,
        membership: Arc<Membership>,
        layout: Layout,
        timeout: Duration,
    ) -> Self {
        Router {
            client,
            node_id: membership.node_id().to_owned(),
            membership,
            layout,
            timeout,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Where `scope` is served right now.
    pub fn owner(&self, scope: &[u8]) -> Owner {
        self.owner_of_partition(ClusterJournal::partition_of(&self.layout, scope))
    }

    /// Where partition `p` is served right now.
    pub fn owner_of_partition(&self, p: u32) -> Owner {
        use latchkey_cluster::membership::Assignment;
        if self.membership.serves(p).is_some() {
            return Owner::Here;
        }
        match self.membership.entry(p).map(|e| e.assignment) {
            Some(Assignment::Owned(node)) if node != self.node_id => Owner::There(node),
            _ => Owner::Nobody,
        }
    }

    /// Runs `request` where its scope is served: here, or forwarded to the owner.
    pub async fn call<R: Routed>(
        &self,
        engine: &Engine,
        caller: &Caller,
        headers: &HeaderMap,
        scope: &[u8],
        request: R::Request,
    ) -> Result<R::Response, Error> {
        let deadline = Instant::now() + self.timeout;
        let mut payload = None;
        loop {
            match self.owner(scope) {
                Owner::Here => {
                    // Refused before anything was written (the partition moved meanwhile, or a
                    // newer owner claimed the user): look again. `request` is kept for that.
                    match run_here::<R>(engine, caller, headers, request.clone()).await {
                        Err(e) if e.id == ErrorId::NoOwner => {}
                        done => return done,
                    }
                }
                Owner::There(node) => {
                    let bytes = payload.get_or_insert_with(|| Bytes::from(request.encode_to_vec()));
                    match self
                        .forward(&node, R::INFO.path(), headers, bytes.clone(), deadline)
                        .await?
                    {
                        Forwarded::Answer(bytes) => return rpc::decode_proto(&bytes),
                        Forwarded::Failed(e) => return Err(e),
                        Forwarded::NotServed => {}
                    }
                }
                Owner::Nobody => {}
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                metrics::counter!("latchkey_cluster_no_owner_total").increment(1);
                return Err(ErrorId::NoOwner.into());
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// One forwarded call: the answer, the owner's refusal, or "not served there" (nobody
    /// listening, or the node no longer serves it: nothing ran, look again).
    async fn forward(
        &self,
        node: &str,
        method: String,
        headers: &HeaderMap,
        payload: Bytes,
        deadline: Instant,
    ) -> Result<Forwarded, Error> {
        let mut nats = NatsHeaders::new();
        nats.insert(METHOD, method.as_str());
        let within = deadline.saturating_duration_since(Instant::now());
        nats.insert(WITHIN, within.as_millis().to_string().as_str());
        for (name, value) in headers {
            if let Ok(value) = value.to_str() {
                nats.append(name.as_str(), value);
            }
        }
        let request = async_nats::Request::new()
            .headers(nats)
            .payload(payload)
            .timeout(Some(deadline.saturating_duration_since(Instant::now())));
        metrics::counter!("latchkey_cluster_forwards_total").increment(1);
        match self.client.send_request(subject(node), request).await {
            Ok(reply) => Ok(read_reply(&reply)),
            Err(e) => match e.kind() {
                async_nats::RequestErrorKind::NoResponders => Ok(Forwarded::NotServed),
                async_nats::RequestErrorKind::TimedOut => Err(ErrorId::Timeout.into()),
                // The connection failed around the request: it may have reached the owner and
                // run there, so it is not sent again — the outcome is unknown.
                _ => {
                    tracing::warn!("forwarding to node {node}: {e}");
                    Err(Error::with(
                        ErrorId::Timeout,
                        format!("forwarding to node {node} failed; the outcome is unknown: {e}"),
                    ))
                }
            },
        }
    }
}

impl Placement for Router {
    fn epoch(&self, scope: &[u8]) -> Option<u64> {
        self.membership
            .serves(ClusterJournal::partition_of(&self.layout, scope))
    }
}

/// The subject node `node` answers forwarded calls on.
fn subject(node: &str) -> String {
    format!("lk.rpc.{node}")
}

enum Forwarded {
    Answer(Bytes),
    Failed(Error),
    NotServed,
}

fn read_reply(reply: &Message) -> Forwarded {
    let header = |name: &str| {
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    match header(STATUS).as_deref() {
        Some("ok") => Forwarded::Answer(reply.payload.clone()),
        Some("moved") => Forwarded::NotServed,
        _ => {
            let id = header(ERROR)
                .and_then(|id| ErrorId::ALL.iter().copied().find(|e| e.id() == id))
                .unwrap_or(ErrorId::Internal);
            let mut error = match header(DETAIL) {
                Some(detail) => Error::with(id, detail),
                None => Error::new(id),
            };
            error.failed_attempts = header(ATTEMPTS).and_then(|n| n.parse().ok());
            Forwarded::Failed(error)
        }
    }
}

/// Calls here.
async fn run_here<R: Routed>(
    engine: &Engine,
    caller: &Caller,
    headers: &HeaderMap,
    request: R::Request,
) -> Result<R::Response, Error> {
    R::call(
        Call {
            engine,
            caller,
            headers,
        },
        request,
    )
    .await
}

type Reply = Result<Option<Bytes>, Error>;
type Handler =
    fn(Engine, Arc<Router>, HeaderMap, Bytes) -> Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Every RPC's handler of forwarded calls, by method path.
fn handlers() -> &'static HashMap<String, Handler> {
    static HANDLERS: OnceLock<HashMap<String, Handler>> = OnceLock::new();
    HANDLERS.get_or_init(|| {
        struct Collect(HashMap<String, Handler>);
        impl Visitor for Collect {
            fn visit<R: Routed>(&mut self) {
                self.0.insert(R::INFO.path(), handle::<R>);
            }
        }
        let mut collect = Collect(HashMap::new());
        rpc::for_each(&mut collect);
        collect.0
    })
}

/// A forwarded call of `R`: `None` when its scope is not served here (nothing ran).
fn handle<R: Routed>(
    engine: Engine,
    router: Arc<Router>,
    headers: HeaderMap,
    payload: Bytes,
) -> Pin<Box<dyn Future<Output = Reply> + Send>> {
    Box::pin(async move {
        let request: R::Request = rpc::decode_proto(&payload)?;
        let caller = rpc::authenticate(&engine, &headers).await?;
        let call = Call {
            engine: &engine,
            caller: &caller,
            headers: &headers,
        };
        if let Some(scope) = rpc::placement::<R>(&call, &request).await {
            if router.owner(&scope) != Owner::Here {
                return Ok(None);
            }
        }
        match run_here::<R>(&engine, &caller, &headers, request).await {
            Ok(response) => Ok(Some(Bytes::from(response.encode_to_vec()))),
            Err(e) if e.id == ErrorId::NoOwner => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// Answers the calls other nodes forward to this one, until the connection closes.
pub async fn respond(router: Arc<Router>, engine: Engine) -> Result<(), String> {
    let mut calls = router
        .client
        .subscribe(subject(&router.node_id))
        .await
        .map_err(|e| format!("cannot subscribe to forwarded calls: {e}"))?;
    while let Some(message) = calls.next().await {
        let (router, engine) = (router.clone(), engine.clone());
        tokio::spawn(async move {
            let Some(reply_to) = message.reply.clone() else {
                return;
            };
            let reply = answer(router.clone(), engine, &message).await;
            let mut headers = NatsHeaders::new();
            let payload = match reply {
                Ok(Some(bytes)) => {
                    headers.insert(STATUS, "ok");
                    bytes
                }
                Ok(None) => {
                    headers.insert(STATUS, "moved");
                    Bytes::new()
                }
                Err(e) => {
                    headers.insert(STATUS, "error");
                    headers.insert(ERROR, e.id.id());
                    if let Some(detail) = &e.detail {
                        headers.insert(DETAIL, detail.as_str());
                    }
                    if let Some(n) = e.failed_attempts {
                        headers.insert(ATTEMPTS, n.to_string().as_str());
                    }
                    Bytes::new()
                }
            };
            if let Err(e) = router
                .client
                .publish_with_headers(reply_to, headers, payload)
                .await
            {
                tracing::warn!("answering a forwarded call: {e}");
            }
        });
    }
    Ok(())
}

async fn answer(router: Arc<Router>, engine: Engine, message: &Message) -> Reply {
    let nats = message.headers.clone().unwrap_or_default();
    let method = nats
        .get(METHOD)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    let within = nats
        .get(WITHIN)
        .and_then(|v| v.as_str().parse().ok())
        .map(Duration::from_millis);
    let Some(handler) = handlers().get(&method) else {
        return Err(Error::with(
            ErrorId::RouteNotFound,
            format!("no method {method}"),
        ));
    };
    let mut headers = HeaderMap::new();
    for (name, values) in nats.iter() {
        let name: &str = name.as_ref();
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                headers.append(name.clone(), value);
            }
        }
    }
    let call = handler(engine, router, headers, message.payload.clone());
    match within {
        // Past the caller's deadline nobody waits for the answer: a call not yet started (its
        // user still loading) is dropped rather than run after the caller gave up.
        Some(within) => tokio::time::timeout(within, call)
            .await
            .unwrap_or_else(|_| Err(ErrorId::Timeout.into())),
        None => call.await,
    }
}

/// The node's ownership as gauges, every second.
async fn report(membership: Arc<Membership>, layout: Layout) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let served = (0..layout.partitions)
            .filter(|&p| membership.serves(p).is_some())
            .count();
        metrics::gauge!("latchkey_cluster_partitions_served").set(served as f64);
        metrics::gauge!("latchkey_cluster_lease_held")
            .set(f64::from(u8::from(membership.lease_holds())));
    }
}

/// A running cluster node: its engine over the journal, its router, its membership.
pub struct ClusterNode {
    pub engine: Engine,
    pub router: Arc<Router>,
    membership: Arc<Membership>,
    journal: ClusterJournal,
    /// Answering forwarded calls, reporting gauges.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Where a node joins and how.
pub struct NodeConfig {
    /// The NATS servers, comma-separated.
    pub nats: String,
    pub node_id: String,
    pub layout: Layout,
    /// The engine's configuration; the journal and placement are added here.
    pub engine: latchkey_engine::Config,
}

/// How long a leaving node waits for NATS to take its leave.
const LEAVE_WITHIN: Duration = Duration::from_secs(5);

/// Connects to the NATS servers `nats` (comma-separated URLs) as `name`.
pub(crate) async fn connect(nats: &str, name: String) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connect(nats.split(',').map(str::trim).collect::<Vec<_>>())
        .await
        .map_err(|e| format!("cannot connect to NATS at {nats}: {e}"))
}

/// How long a starting node keeps asking JetStream to create its streams and buckets. Right
/// after a NATS server restarts, JetStream's API can time out for a while (its meta group
/// electing a leader, streams catching up); a node started then waits instead of exiting.
const START_WITHIN: Duration = Duration::from_secs(60);

/// `attempt` until it succeeds or [`START_WITHIN`] has passed since `starting`.
async fn retry_while_starting<T, F, Fut>(
    starting: Instant,
    what: &str,
    mut attempt: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, latchkey_cluster::Error>>,
{
    use latchkey_cluster::Error::Refused;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            // A refusal (the streams exist with another layout) is not going to change.
            Err(e) if starting.elapsed() < START_WITHIN && !matches!(e, Refused(_)) => {
                tracing::warn!("cannot {what} yet, trying again: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("cannot {what}: {e}")),
        }
    }
}

/// How long a starting node waits to be given partitions before it opens anyway.
const FIRST_PARTITION_WAIT: Duration = Duration::from_secs(10);

/// How often a node's view writes its log to disk, whatever `--durability` says. A write is
/// durable once the stream's majority holds it; the view's log only spares a restart the replay
/// of the streams, and a view that lost its tail in a crash resumes from the last position it
/// holds (each position is written with the records it covers). Syncing every 10 ms cost ≈ 9 %
/// of a node's CPU for following the other nodes' writes.
const VIEW_FLUSH_INTERVAL: Duration = Duration::from_millis(250);

impl ClusterNode {
    /// Connects, creates the partitions' streams if needed, joins, waits (a while) to serve a
    /// partition, opens the engine over the journal (its view caught up with the streams) and
    /// starts answering forwarded calls.
    pub async fn start(config: NodeConfig) -> Result<ClusterNode, String> {
        let NodeConfig {
            nats,
            node_id,
            layout,
            engine,
        } = config;
        let client = connect(&nats, format!("latchkey {node_id}")).await?;
        // Which server the node talks to decides how many hops each append takes to its
        // stream's leader (`latchkey-nats leaders` says where those are).
        tracing::info!(
            server = client.server_info().server_name,
            "connected to NATS"
        );
        let js = async_nats::jetstream::new(client.clone());
        let starting = Instant::now();
        retry_while_starting(starting, "create the partitions' streams", || {
            layout.ensure_streams(&js)
        })
        .await?;
        let membership = Arc::new(
            retry_while_starting(starting, "join the cluster", || {
                Membership::join(client.clone(), MembershipConfig::new(&node_id, layout))
            })
            .await?,
        );
        let waiting = Instant::now();
        while (0..layout.partitions).all(|p| membership.serves(p).is_none())
            && waiting.elapsed() < FIRST_PARTITION_WAIT
        {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let call_timeout = engine.call_timeout;
        let router = Arc::new(Router::new(
            client.clone(),
            membership.clone(),
            layout,
            call_timeout,
        ));
        let ownership: Arc<dyn Ownership> = membership.clone();
        let journal = ClusterJournal::new(
            client,
            JournalConfig::new(node_id.clone(), layout, call_timeout),
            ownership,
        );
        let engine = Engine::open(
            engine
                .durability(latchkey_engine::Durability::Async {
                    flush_interval: VIEW_FLUSH_INTERVAL,
                })
                .journal(Arc::new(journal.clone()))
                .placement(router.clone()),
        )
        .await
        .map_err(|e| format!("cannot open the engine over the cluster: {e}"))?;
        let responder = tokio::spawn({
            let (router, engine) = (router.clone(), engine.clone());
            async move {
                if let Err(e) = respond(router, engine).await {
                    tracing::error!("{e}");
                }
            }
        });
        let gauges = tokio::spawn(report(membership.clone(), layout));
        tracing::info!(node = %node_id, "joined the cluster at {nats}");
        Ok(ClusterNode {
            engine,
            router,
            membership,
            journal,
            tasks: vec![responder, gauges],
        })
    }

    /// Leaves gracefully: stops serving, hands its partitions over (within a coordinator
    /// poll), stops answering and following the streams.
    pub async fn leave(&self) -> Result<(), String> {
        // Bounded: with NATS unreachable the node stops anyway (its lease then expires).
        let left = match tokio::time::timeout(LEAVE_WITHIN, self.membership.leave()).await {
            Ok(left) => left.map_err(|e| e.to_string()),
            Err(_) => Err(format!("NATS did not answer within {LEAVE_WITHIN:?}")),
        };
        self.membership.stop();
        for task in &self.tasks {
            task.abort();
        }
        self.journal.stop();
        left.map_err(|e| format!("leaving the cluster: {e}"))
    }

    /// Bootstraps the cluster (its first node's first start), tried again while the write is
    /// refused with nothing written (`STORE-UNAVAILABLE`: this node serves no partition yet —
    /// the coordinator assigns them within a poll, longer while JetStream recovers), for up to
    /// a minute. `None`: the cluster was bootstrapped before.
    pub async fn bootstrap(
        &self,
        token: Option<String>,
    ) -> Result<Option<latchkey_engine::Bootstrapped>, Error> {
        let starting = Instant::now();
        loop {
            match self.engine.bootstrap(token.clone()).await {
                Err(e)
                    if e.id == ErrorId::StoreUnavailable && starting.elapsed() < START_WITHIN =>
                {
                    tracing::warn!("cannot bootstrap the cluster yet, trying again: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                done => return done,
            }
        }
    }

    /// How many partitions this node serves now.
    pub fn partitions_served(&self) -> usize {
        let layout = self.router.layout;
        (0..layout.partitions)
            .filter(|&p| self.membership.serves(p).is_some())
            .count()
    }

    /// Stops at once, as a crash would: its partitions move once its lease expires.
    pub fn stop(&self) {
        self.membership.stop();
        for task in &self.tasks {
            task.abort();
        }
        self.journal.stop();
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop();
    }
}
