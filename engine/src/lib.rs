//! Latchkey's identity engine.
//!
//! [`Engine`] is the handle a server or any Rust binary holds. Every user is a ractor actor
//! (`user/actor.rs`) that serializes its own state transitions; the registry (`registry.rs`)
//! activates actors on demand from the durable store and passivates idle ones; the supervisor
//! (`supervisor.rs`) drops failed actors so the next message reloads them from disk. Permission
//! checks live in `access.rs`; the transition rules in `user/state.rs`; every client-visible error
//! in the table of `error.rs`.
//!
//! An unlock, end to end: `Engine::unlock_user` (`users.rs`) checks the caller's reach →
//! `Registry::call` → `UserActor` applies the transition and hands snapshot + event to the
//! store's writer (`latchkey_storage`) → the caller waits until that write is durable.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use latchkey_engine::{Caller, Config, Engine};
//! let engine = Engine::open(Config::default().data_dir("./data")).await?;
//! let caller = Caller::system(engine.default_org_id().unwrap_or_default());
//! let details = engine.unlock_user(&caller, "69629023906488334").await?;
//! println!("unlocked at sequence {}", details.sequence);
//! engine.shutdown().await?;
//! # Ok(()) }
//! ```

mod access;
mod admins;
mod auth_cache;
mod backup;
mod bootstrap;
mod bulk_unlock;
mod error;
mod history;
mod ids;
mod keys;
mod list_users;
mod locked;
mod lockout;
mod metrics;
pub mod migrate;
mod orgs;
mod password;
mod passwords;
mod registry;
mod sessions;
mod stored;
mod supervisor;
mod time;
mod timer_anchor;
mod tokens;
mod types;
mod unlocks;
mod user;
mod users;
mod verifier;
mod verify;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use ractor::{Actor, ActorRef};

use latchkey_storage::{Schema, Store, StoreConfig};

pub use access::{Caller, Grant, Permission, Reach, Role};
pub use backup::{backup_offline, check_backup, restore, BackupSummary, BACKUP_FORMAT};
pub use bootstrap::Bootstrapped;
pub use bulk_unlock::{BulkUnlockFilter, BulkUnlockJob, JobState};
pub use error::{Code, Error, ErrorId, OpenError};
pub use history::{EventInfo, EventList, EventPage};
pub use latchkey_storage::{Durability, Medium, DEFAULT_CHECKPOINT_ENTRIES};
pub use lockout::{LockoutPolicy, PolicySource, PolicyUpdate, PolicyView};
pub use passwords::Tarpit;
pub use sessions::list::SessionList;
pub use sessions::{
    Factors, NewSession, PasswordFactor, Session, SessionChange, SessionChecks, SessionCreated,
    SessionQuery, SessionSet, TimestampMatch, UserAgent, UserCheck, UserFactor,
};
pub use stored::SCHEMA_VERSION;
pub use tokens::generate_token;
pub use types::*;
pub use verify::{verify, Problem, VerifyReport};

use ids::IdGenerator;
use lockout::Policies;
use orgs::OrgRecord;
use registry::Registry;
use supervisor::Supervisor;

/// How to open an [`Engine`].
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// An actor with no message for this long is passivated (its state stays on disk).
    pub idle_timeout: Duration,
    /// How long a caller waits for a user's actor before DeadlineExceeded.
    pub call_timeout: Duration,
    /// How long [`Engine::shutdown`] waits for the store to close (sync its log, checkpoint the
    /// memtable into sled, flush sled). Past it the shutdown fails with STORE-UNAVAILABLE and the
    /// close is left running on a thread of its own: every acknowledged write is already in the
    /// synced log, so should the process then exit, the next open replays it as after a crash.
    pub close_timeout: Duration,
    /// The embedded store the write-ahead log checkpoints into (sled by default, or redb). A
    /// data directory holds one for good: opening it with the other is refused.
    pub medium: Medium,
    /// Bound of the store's page cache in bytes (kept roughly by sled; with the active actors,
    /// what memory grows to on a large store).
    pub cache_bytes: u64,
    /// Keys the store's write-ahead log holds in memory before checkpointing them into sled.
    pub checkpoint_entries: usize,
    /// Suffix of organization domains (`<org-name>.<instance_domain>`), used in login names.
    pub instance_domain: String,
    /// Files the embedding program keeps in the data directory (names; the server keeps its
    /// `admin.pat` there): a directory holding only these and no store yet is opened as a new one.
    pub kept_files: Vec<String>,
    /// Password hashes verified at once (default: the machine's cores).
    pub check_threads: usize,
    /// Password checks that may wait for a thread before more are refused (PASSWORD-CHECKS-BUSY).
    pub check_queue: usize,
    /// The delay after a wrong password, growing with the user's failures (ZITADEL's tarpit).
    pub tarpit: Tarpit,
    /// Cluster mode: where writes are made durable instead of the store's own log (see
    /// `latchkey_storage::Journal`); the data directory then holds the journal's view.
    pub journal: Option<Arc<dyn latchkey_storage::Journal>>,
    /// Cluster mode: which scopes this node may write now. New entities get ids whose scope it
    /// does (`Engine::new_id`), so a creation is served where it arrives.
    pub placement: Option<Arc<dyn Placement>>,
    /// Test-only: faults to inject into the store's medium (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub faults: Option<latchkey_storage::faults::Faults>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./latchkey-data"),
            durability: Durability::Sync,
            idle_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(30),
            medium: Medium::default(),
            cache_bytes: latchkey_storage::DEFAULT_CACHE_BYTES,
            checkpoint_entries: latchkey_storage::DEFAULT_CHECKPOINT_ENTRIES,
            instance_domain: "localhost".into(),
            kept_files: Vec::new(),
            check_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            check_queue: 64,
            tarpit: Tarpit::default(),
            journal: None,
            placement: None,
            #[cfg(feature = "fault-injection")]
            faults: None,
        }
    }
}

impl Config {
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }
    pub fn medium(mut self, medium: Medium) -> Self {
        self.medium = medium;
        self
    }
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }
    pub fn checkpoint_entries(mut self, entries: usize) -> Self {
        self.checkpoint_entries = entries;
        self
    }
    pub fn check_threads(mut self, threads: usize) -> Self {
        self.check_threads = threads.max(1);
        self
    }
    pub fn check_queue(mut self, queue: usize) -> Self {
        self.check_queue = queue;
        self
    }
    pub fn tarpit(mut self, tarpit: Tarpit) -> Self {
        self.tarpit = tarpit;
        self
    }
    /// Adds a file the embedding program keeps in the data directory (see [`Config::kept_files`]).
    pub fn keep_file(mut self, name: impl Into<String>) -> Self {
        self.kept_files.push(name.into());
        self
    }
    /// Cluster mode: writes go to `journal`, and the data directory holds its view.
    pub fn journal(mut self, journal: Arc<dyn latchkey_storage::Journal>) -> Self {
        self.journal = Some(journal);
        self
    }
    /// Cluster mode: new ids are chosen among the scopes `placement` says this node writes.
    pub fn placement(mut self, placement: Arc<dyn Placement>) -> Self {
        self.placement = Some(placement);
        self
    }
    /// Test-only: the store's medium fails or stalls as `faults` says (see
    /// `latchkey_storage::faults`).
    #[cfg(feature = "fault-injection")]
    pub fn faults(mut self, faults: latchkey_storage::faults::Faults) -> Self {
        self.faults = Some(faults);
        self
    }
}

/// Cluster mode: which of the store's scopes (a user's key, a session's, …) this node writes.
pub trait Placement: Send + Sync + 'static {
    /// The epoch under which this node serves `scope` now, if it does. An epoch changes whenever
    /// the scope's partition changes hands, so a user actor loaded under another epoch than the
    /// current one may hold state another node changed since: it is reloaded.
    fn epoch(&self, scope: &[u8]) -> Option<u64>;

    fn owns(&self, scope: &[u8]) -> bool {
        self.epoch(scope).is_some()
    }
}

impl std::fmt::Debug for dyn Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Placement")
    }
}

/// Cluster mode: how often policies are reloaded from the view (a policy changed on another
/// node applies here within this, plus the view's lag).
const POLICY_FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// How many generated ids [`Engine::new_id`] tries for one this node's placement accepts.
const ID_TRIES: usize = 10_000;

/// Closes `store` on a thread of its own, waiting at most `limit` ([`Config::close_timeout`]).
/// Not on tokio's blocking pool: a runtime being dropped waits for its blocking tasks, so a
/// close that never returns (sled 0.34's flush has been seen to wait forever on a condvar, its
/// I/O threads idle) would hang the embedding program's exit.
async fn close_within(store: Arc<Store>, limit: Duration) -> Result<(), Error> {
    let (closed, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("latchkey-close".into())
        .spawn(move || {
            let _ = closed.send(store.close());
        })
        .map_err(|e| {
            tracing::error!("closing the store: cannot start its thread: {e}");
            Error::new(ErrorId::Internal)
        })?;
    match tokio::time::timeout(limit, result).await {
        Ok(Ok(closed)) => Ok(closed?),
        Ok(Err(_)) => Err(Error::new(ErrorId::Internal)), // the close panicked
        Err(_) => Err(Error::with(
            ErrorId::StoreUnavailable,
            format!(
                "closing the store did not finish within {limit:?}; it goes on in the background \
                 and holds the data directory until it ends (if the process exits first, the \
                 next open replays the log)"
            ),
        )),
    }
}

/// Counters about the actor population.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineStats {
    pub active_actors: usize,
    pub activations: u64,
    pub passivations: u64,
    pub actor_failures: u64,
    /// Password hashes verified since open.
    pub password_verifications: u64,
    /// GetUserByID answers given from an actor's published view, without a hop to the actor.
    pub reads_from_view: u64,
}

/// The engine handle. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    registry: Arc<Registry>,
    supervisor: ActorRef<()>,
    ids: IdGenerator,
    /// Uniqueness keys (username, org name, org id) claimed by a creation in progress.
    reservations: DashMap<Vec<u8>, ()>,
    orgs: DashMap<String, Arc<OrgRecord>>,
    config: Config,
    closed: AtomicBool,
    /// The bootstrap organization, once read: it never changes after bootstrap, and `/readyz`
    /// asks for it on every probe.
    default_org: OnceLock<String>,
    timer_anchor: tokio::task::AbortHandle,
    policies: Arc<Policies>,
    session_locks: sessions::SessionLocks,
    /// The automatic-unlock task.
    unlocks: tokio::task::AbortHandle,
    /// Cluster mode: the reload of policies other nodes change.
    policy_follower: Option<tokio::task::AbortHandle>,
    bulk_unlocks: Arc<bulk_unlock::BulkUnlocks>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.timer_anchor.abort();
        self.unlocks.abort();
        if let Some(follower) = &self.policy_follower {
            follower.abort();
        }
        self.bulk_unlocks.stop_all();
        // Dropped without shutdown (e.g. an embedder's panic): stop the actors so the store is
        // released; everything acknowledged is already durable.
        self.supervisor.stop_children(None);
        self.supervisor.stop(None);
    }
}

impl Engine {
    /// Opens the store in `config.data_dir` (creating it if needed) and starts the supervisor.
    pub async fn open(config: Config) -> Result<Engine, OpenError> {
        let store_config = store_config(&config);
        #[cfg(feature = "fault-injection")]
        let faults = config.faults.clone();
        let store = tokio::task::spawn_blocking(move || {
            #[cfg(feature = "fault-injection")]
            let store = match faults {
                Some(faults) => {
                    let backend = Store::open_backend(&store_config)?;
                    Store::with_backend(faults.wrap(backend), &store_config)?
                }
                None => Store::open(&store_config)?,
            };
            #[cfg(not(feature = "fault-injection"))]
            let store = Store::open(&store_config)?;
            Ok::<_, OpenError>(Arc::new(store))
        })
        .await
        .map_err(|e| OpenError::Engine(format!("store open task failed: {e}")))??;
        if store.is_journaled() {
            // The view catches up with the journal first: the bootstrap mark, the policies and
            // every user written by other nodes are read from it below and from then on.
            store.settle(None).await?;
        }
        let reader = store.clone();
        let (default_org, policies) = tokio::task::spawn_blocking(move || {
            let default_org = reader
                .get(&keys::meta(bootstrap::DEFAULT_ORG))?
                .map(|bytes| {
                    String::from_utf8(bytes).map_err(|_| {
                        OpenError::Engine("the store's default organization id is not UTF-8".into())
                    })
                })
                .transpose()?;
            let policies = Policies::load(&reader)
                .map_err(|e| OpenError::Engine(format!("reading lockout policies: {e}")))?;
            Ok::<_, OpenError>((default_org, policies))
        })
        .await
        .map_err(|e| OpenError::Engine(format!("store read task failed: {e}")))??;
        user::index::build_if_missing(&store)
            .await
            .map_err(|e| OpenError::Engine(format!("building the list indexes: {e}")))?;
        let policies = Arc::new(policies);
        let policy_follower = store
            .is_journaled()
            .then(|| policies.follow(store.clone(), POLICY_FOLLOW_EVERY));
        let registry = Arc::new(Registry::new(
            store.clone(),
            config.idle_timeout,
            config.call_timeout,
            registry::Shared {
                policies: policies.clone(),
                verifier: verifier::Verifier::new(config.check_threads, config.check_queue),
                tarpit: config.tarpit,
                placement: config.placement.clone(),
            },
        ));
        let (supervisor, _) = Actor::spawn(None, Supervisor, registry.clone())
            .await
            .map_err(|e| OpenError::Engine(format!("cannot start supervisor: {e}")))?;
        registry.set_supervisor(supervisor.get_cell());
        if config.placement.is_some() {
            // Callers of users other nodes serve are cached from the view; every record the
            // view applies to a user drops that user's cached callers (`auth_cache.rs`). Weak:
            // the store must not keep the registry (and so itself) alive.
            let weak = Arc::downgrade(&registry);
            store.on_journal_apply(Box::new(move |scope| {
                if let Some(user) = keys::user_of(scope) {
                    if let Some(registry) = weak.upgrade() {
                        registry.auth_cache().invalidate(user);
                    }
                }
            }));
        }
        let timer_anchor = timer_anchor::spawn(config.call_timeout);
        let unlocks = unlocks::spawn(registry.clone(), store.clone(), config.placement.clone());
        let bulk_unlocks = Arc::new(bulk_unlock::BulkUnlocks::default());
        match &config.placement {
            None => bulk_unlocks
                .resume(&registry, &store)
                .map_err(|e| OpenError::Engine(format!("resuming bulk unlocks: {e}")))?,
            Some(placement) => {
                bulk_unlocks.run_across_nodes(registry.clone(), store.clone(), placement.clone())
            }
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                registry,
                supervisor,
                ids: IdGenerator::default(),
                reservations: DashMap::new(),
                orgs: DashMap::new(),
                config,
                closed: AtomicBool::new(false),
                default_org: default_org.map(OnceLock::from).unwrap_or_default(),
                timer_anchor,
                policies,
                session_locks: Default::default(),
                unlocks,
                policy_follower,
                bulk_unlocks,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A fresh id for a new entity whose store scope is `scope(id)`. Embedded, the next id; in
    /// cluster mode the next one whose scope this node writes (with P partitions spread over N
    /// nodes, about N tries), so the creation needs no hop. A node that writes no scope (its
    /// lease lapsed, no partition yet) is unavailable.
    pub(crate) fn new_id(&self, scope: impl Fn(&str) -> Vec<u8>) -> Result<String, Error> {
        let Some(placement) = &self.inner.config.placement else {
            return Ok(self.inner.ids.next_id());
        };
        (0..ID_TRIES)
            .map(|_| self.inner.ids.next_id())
            .find(|id| placement.owns(&scope(id)))
            .ok_or_else(|| {
                Error::with(
                    ErrorId::StoreUnavailable,
                    "this node serves no partition right now",
                )
            })
    }

    /// The organization created by [`Engine::bootstrap`], once there is one. Read from the
    /// store at open and set by the bootstrap, so asking (every `/readyz` probe does) never
    /// touches the store.
    pub fn default_org_id(&self) -> Option<String> {
        self.inner.default_org.get().cloned()
    }

    /// Why the engine takes no more writes, if its store has failed for good (a background
    /// thread of the store panicked): every write then answers STORE-UNAVAILABLE at once, and the
    /// server's `/readyz` says not ready, until the process restarts.
    pub fn store_failure(&self) -> Option<String> {
        self.inner.store.failure()
    }

    pub fn stats(&self) -> EngineStats {
        let m = self.inner.registry.metrics();
        EngineStats {
            active_actors: self.inner.registry.active_actors(),
            activations: m.activation_count.load(Ordering::Relaxed),
            passivations: m.passivation_count.load(Ordering::Relaxed),
            actor_failures: m.failure_count.load(Ordering::Relaxed),
            password_verifications: self.inner.registry.verifier().verifications(),
            reads_from_view: m.reads_from_view_count.load(Ordering::Relaxed),
        }
    }

    /// Stops every actor, flushes and closes the store and releases the data directory (it can be
    /// reopened at once, even while this handle lives). Later calls fail with SHUTTING-DOWN. A
    /// close that outlasts [`Config::close_timeout`] fails this with STORE-UNAVAILABLE and keeps
    /// the directory until it ends.
    pub async fn shutdown(&self) -> Result<(), Error> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Jobs stop before the actors, so none counts an unlock refused by the shutdown.
        self.inner.bulk_unlocks.stop_all();
        self.inner.registry.stop_all().await;
        let _ = self
            .inner
            .supervisor
            .stop_and_wait(None, Some(self.inner.config.call_timeout))
            .await;
        self.inner.timer_anchor.abort();
        self.inner.unlocks.abort();
        close_within(self.inner.store.clone(), self.inner.config.close_timeout).await
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(ErrorId::ShuttingDown.into())
        } else {
            Ok(())
        }
    }

    /// Claims a uniqueness key for the duration of a creation; AlreadyExists-style `taken` if
    /// another creation holds it.
    fn reserve(&self, key: Vec<u8>, taken: ErrorId) -> Result<Reservation<'_>, Error> {
        match self.inner.reservations.entry(key.clone()) {
            dashmap::mapref::entry::Entry::Occupied(_) => Err(taken.into()),
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(());
                Ok(Reservation {
                    map: &self.inner.reservations,
                    key,
                })
            }
        }
    }

    /// Test hook: makes `user_id`'s live actor panic. Returns false when it is not active.
    #[cfg(feature = "fault-injection")]
    pub fn inject_actor_panic(&self, user_id: &str) -> bool {
        self.inner
            .registry
            .actor_of(user_id)
            .map(|a| a.send_message(user::actor::UserMsg::Panic).is_ok())
            .unwrap_or(false)
    }

    /// Test hook: keeps `user_id`'s live actor busy for `duration`. False when it is not active.
    #[cfg(feature = "fault-injection")]
    pub fn inject_actor_stall(&self, user_id: &str, duration: Duration) -> bool {
        self.inner
            .registry
            .actor_of(user_id)
            .map(|a| {
                a.send_message(user::actor::UserMsg::Stall(duration))
                    .is_ok()
            })
            .unwrap_or(false)
    }
}

/// The store configuration [`Engine::open`] uses for `config`: the engine's key layout and schema
/// on `config`'s directory and settings. For tools that measure or inspect the store alone (the
/// load-test harness's store ceiling, tests that compare stores byte for byte).
pub fn store_config(config: &Config) -> StoreConfig {
    let mut store = StoreConfig::new(
        &config.data_dir,
        keys::layout(),
        Schema {
            version: stored::SCHEMA_VERSION,
            upgrade_from: stored::UPGRADES_FROM.to_vec(),
        },
    );
    store.durability = config.durability;
    store.medium = config.medium;
    store.cache_bytes = config.cache_bytes;
    store.checkpoint_entries = config.checkpoint_entries;
    store.kept_files = config.kept_files.clone();
    store.journal = config.journal.clone();
    store
}

/// A key of an append-only run as the engine lays out its events: `owner`'s entry `sequence`.
/// With [`store_config`], what a harness needs to write records shaped like the engine's.
pub fn event_key(owner: &str, sequence: u64) -> Vec<u8> {
    keys::event(owner, sequence)
}

/// The key that holds `username`'s owner in organization `org` (case-insensitively): what a
/// creation claims as unique (`Store::claim_unique`).
pub fn username_key(org: &str, username: &str) -> Vec<u8> {
    keys::username(org, &username.to_lowercase())
}

/// The engine's snapshot key of user `id`: also the store scope of everything written for it.
pub fn snapshot_key(id: &str) -> Vec<u8> {
    keys::user(id)
}

/// The store scope of the instance's lockout policy.
pub fn instance_policy_scope() -> Vec<u8> {
    keys::instance_lockout_policy()
}

/// The store scope of organization `org`'s own lockout policy.
pub fn org_policy_scope(org: &str) -> Vec<u8> {
    keys::org_lockout_policy(org)
}

/// The store scope of session `id`'s writes.
pub fn session_scope(id: &str) -> Vec<u8> {
    keys::session(id)
}

struct Reservation<'a> {
    map: &'a DashMap<Vec<u8>, ()>,
    key: Vec<u8>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.map.remove(&self.key);
    }
}

/// Checks a user or org id: 1 to 200 characters.
pub(crate) fn valid_id(id: &str) -> bool {
    // Up to 200 bytes is up to 200 characters: count characters only for longer ids.
    !id.is_empty() && (id.len() <= 200 || id.chars().count() <= 200)
}

/// A user id from a request: 1 to 200 characters, else USER-ID-INVALID.
pub(crate) fn check_user_id(id: &str) -> Result<(), Error> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ErrorId::InvalidUserId.into())
    }
}

/// Checks a required text field: 1 to `max` characters after trimming.
pub(crate) fn required(field: &str, value: &str, max: usize) -> Result<(), Error> {
    let n = value.trim().chars().count();
    if n == 0 || n > max {
        return Err(Error::invalid(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_id;

    #[test]
    fn ids_are_limited_in_characters_not_bytes() {
        assert!(!valid_id(""));
        assert!(valid_id(&"1".repeat(200)));
        assert!(!valid_id(&"1".repeat(201)));
        // two bytes per character: 400 bytes, still 200 characters
        assert!(valid_id(&"é".repeat(200)));
        assert!(!valid_id(&"é".repeat(201)));
    }
}
