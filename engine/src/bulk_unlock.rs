//! Bulk unlock: after a credential-stuffing wave, an administrator unlocks every LOCKED user
//! matching a filter (organization, why locked, when) as one tracked job.
//!
//! Starting a job lists the users that are LOCKED within the caller's reach and the filter's
//! organization at that moment (from ListUsers' state index: only locked users are read), and
//! writes the list (in chunks) with the job, in one write; the
//! job covers exactly those users. A task then asks each user's actor to unlock — the actor
//! unlocks only if the user is still LOCKED by a lock the filter matches, so an unlock by anyone
//! else meanwhile is never repeated, and each unlock is one ordinary `user.unlocked` event (reason
//! `bulk unlock <job>`). With the unlock, the actor writes a mark that this job unlocked this
//! user: the job never unlocks a user twice, and its count is exact, across restarts too.
//!
//! Progress is in memory while the job runs (read at any time) and written after every chunk; a
//! job interrupted by a shutdown or crash resumes at open from its last written chunk (the marks
//! tell it which users of that chunk it already unlocked). A start with an idempotency key that an
//! earlier job of the same caller carries answers that job instead of starting another: the key's
//! entry (`I`) is written with the job, and in a cluster it is claimed across the nodes first
//! (`Store::claim_unique`), so two nodes starting the same key at once start one job.
//!
//! In cluster mode a job is written the same way by the node it was started on, and every node
//! unlocks the listed users it serves (`bulk_unlock/across.rs`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use latchkey_storage::{Store, WriteBatch};

use crate::access::{Caller, Permission, Reach};
use crate::error::{Error, ErrorId};
use crate::keys;
use crate::registry::Registry;
use crate::time::{now_micros, to_datetime, Micros};
use crate::types::{LockedBy, UserState};
use crate::user::actor::Request;
use crate::user::lockout::{LockFilter, LockReason, LockoutState};
use crate::user::record::UserRecord;
use crate::Engine;

/// A panic while a job's lock was held cannot leave its state half-changed (each change is
/// one assignment), so the guard is taken back.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

mod across;

/// User ids per stored chunk of a job's list, and per progress write.
const CHUNK: usize = 1024;
/// Unlocks in flight at once.
const WINDOW: usize = 64;
/// How often a start whose idempotency key another node claimed looks for that node's job.
const STARTED_ELSEWHERE_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Which locked users a job unlocks: all conditions set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkUnlockFilter {
    /// Only users of this organization (`None`: every one within the caller's reach).
    pub org_id: Option<String>,
    pub reason: Option<LockedBy>,
    /// Locked at or after this time.
    pub locked_after: Option<DateTime<Utc>>,
    /// Locked before this time.
    pub locked_before: Option<DateTime<Utc>>,
}

/// What a job did with one user, stored as the value of its mark (`keys::bulk_unlocked`).
/// Embedded, only unlocks are marked (a job's progress is its own count); in cluster mode every
/// user handled is, since the mark is how the job learns of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Unlocked,
    /// Not LOCKED (any more), not by a lock the filter matches, or deleted.
    Skipped,
    /// Refused for a reason that a retry would not change (the server log says which).
    Failed,
}

impl Mark {
    pub(crate) fn value(self) -> Vec<u8> {
        match self {
            Mark::Unlocked => Vec::new(),
            Mark::Skipped => vec![1],
            Mark::Failed => vec![2],
        }
    }

    /// Any other value reads as an unlock: the only mark stores had before the other two.
    pub(crate) fn decode(value: &[u8]) -> Mark {
        match value {
            [1] => Mark::Skipped,
            [2] => Mark::Failed,
            _ => Mark::Unlocked,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Done,
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkUnlockJob {
    pub id: String,
    pub state: JobState,
    pub filter: BulkUnlockFilter,
    pub creation_date: DateTime<Utc>,
    pub finish_date: Option<DateTime<Utc>>,
    /// Users of the list handled so far, of `total`.
    pub scanned: u64,
    pub total: u64,
    /// Users this job unlocked.
    pub unlocked: u64,
    /// Users whose unlock failed (the server log says why).
    pub failed: u64,
    pub by: String,
}

/// Stored under `keys::bulk_job`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    pub id: String,
    pub by: String,
    pub idempotency_key: String,
    /// The organizations the caller could reach (`None`: the instance).
    pub scope: Option<Vec<String>>,
    pub org_id: Option<String>,
    pub filter: LockFilter,
    pub created: Micros,
    pub finished: Option<Micros>,
    pub total: u64,
    /// How many users of the list are handled (a multiple of `CHUNK` until the end).
    pub next: u64,
    pub unlocked: u64,
    pub failed: u64,
}

impl JobRecord {
    fn view(&self, scanned: u64) -> BulkUnlockJob {
        BulkUnlockJob {
            id: self.id.clone(),
            state: if self.finished.is_some() {
                JobState::Done
            } else {
                JobState::Running
            },
            filter: BulkUnlockFilter {
                org_id: self.org_id.clone(),
                reason: self.filter.reason.map(|r| match r {
                    LockReason::Admin => LockedBy::Admin,
                    LockReason::FailedPasswords => LockedBy::FailedPasswords,
                }),
                locked_after: self.filter.locked_after.map(to_datetime),
                locked_before: self.filter.locked_before.map(to_datetime),
            },
            creation_date: to_datetime(self.created),
            finish_date: self.finished.map(to_datetime),
            scanned,
            total: self.total,
            unlocked: self.unlocked,
            failed: self.failed,
            by: self.by.clone(),
        }
    }

    /// May a caller reaching `reach` see this job? Its scope must be within the caller's.
    fn visible_to(&self, reach: &Reach) -> bool {
        match (&self.scope, reach) {
            (_, Reach::Instance) => true,
            (None, Reach::Orgs(_)) => false,
            (Some(orgs), reach) => orgs.iter().all(|o| reach.covers(o)),
        }
    }

    fn decode(bytes: &[u8]) -> Result<JobRecord, Error> {
        postcard::from_bytes(bytes)
            .map_err(|e| Error::with(ErrorId::Internal, format!("corrupt bulk unlock job: {e}")))
    }
}

/// A running job's state in memory: the record as last written plus what happened since.
struct Running {
    record: JobRecord,
    /// Users handled, in this chunk too.
    scanned: u64,
}

/// Every job this process knows of while it runs, and the tasks running them.
#[derive(Default)]
pub(crate) struct BulkUnlocks {
    running: DashMap<String, Arc<Mutex<Running>>>,
    /// Serializes starts: an idempotency key is looked up and claimed as one step.
    starting: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Cluster mode: wakes this node's runner when a job was started here.
    wake: Arc<tokio::sync::Notify>,
}

impl BulkUnlocks {
    /// Resumes every job the store holds unfinished (at open).
    pub fn resume(
        self: &Arc<Self>,
        registry: &Arc<Registry>,
        store: &Arc<Store>,
    ) -> Result<(), Error> {
        for item in store.scan_prefix(keys::BULK_JOBS) {
            let (_, bytes) = item?;
            let record = JobRecord::decode(&bytes)?;
            if record.finished.is_none() {
                tracing::info!(job = %record.id, "resuming bulk unlock");
                self.run(registry.clone(), store.clone(), record);
            }
        }
        Ok(())
    }

    /// Cluster mode: starts this node's runner, which works on every unfinished job in the
    /// view (`across.rs`) — those interrupted here too, so nothing is resumed at open.
    pub fn run_across_nodes(
        &self,
        registry: Arc<Registry>,
        store: Arc<Store>,
        placement: Arc<dyn crate::Placement>,
    ) {
        let task = across::spawn(registry, store, placement, self.wake.clone());
        lock(&self.tasks).push(task);
    }

    fn run(self: &Arc<Self>, registry: Arc<Registry>, store: Arc<Store>, record: JobRecord) {
        let id = record.id.clone();
        let running = Arc::new(Mutex::new(Running {
            scanned: record.next,
            record,
        }));
        self.running.insert(id.clone(), running.clone());
        let jobs = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = run(&registry, &store, &running).await {
                // Stopped (a shutdown, a failing store): the job resumes at the next open.
                tracing::warn!(job = %id, "bulk unlock stopped: {e}");
            }
            jobs.running.remove(&id);
        });
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }

    /// Stops every job's task (at shutdown); they resume at the next open.
    pub fn stop_all(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// Works through the job's list from where its record says, chunk by chunk.
async fn run(
    registry: &Arc<Registry>,
    store: &Arc<Store>,
    running: &Mutex<Running>,
) -> Result<(), Error> {
    let (id, by, filter, total) = {
        let r = &lock(running).record;
        (r.id.clone(), r.by.clone(), r.filter, r.total)
    };
    loop {
        let next = lock(running).record.next;
        if next >= total {
            break;
        }
        let chunk = next / CHUNK as u64;
        let ids = read_chunk(store, &id, chunk).await?;
        let mut calls = JoinSet::new();
        let mut ids = ids.into_iter();
        loop {
            while calls.len() < WINDOW {
                let Some(user) = ids.next() else { break };
                let (registry, store) = (registry.clone(), store.clone());
                let (job, by) = (id.clone(), by.clone());
                calls.spawn(async move {
                    unlock_one(&registry, &store, &job, &by, filter, &user).await
                });
            }
            let Some(done) = calls.join_next().await else {
                break;
            };
            let outcome = done.map_err(|_| Error::new(ErrorId::Internal))?;
            // Progress shows at once; it is written at the chunk's end (the marks make a redone
            // chunk count the same).
            let mut r = lock(running);
            match outcome {
                Outcome::Unlocked => r.record.unlocked += 1,
                Outcome::Skipped => {}
                Outcome::Failed => r.record.failed += 1,
                Outcome::Stopped(e) => return Err(e),
            }
            r.scanned += 1;
        }
        let record = {
            let mut r = lock(running);
            r.record.next = (next + CHUNK as u64).min(total);
            r.scanned = r.record.next;
            if r.record.next >= total {
                r.record.finished = Some(now_micros());
            }
            r.record.clone()
        };
        write_job(store, &record).await?;
    }
    let record = {
        let mut r = lock(running);
        if r.record.finished.is_none() {
            r.record.finished = Some(now_micros());
        }
        r.record.clone()
    };
    write_job(store, &record).await
}

enum Outcome {
    Unlocked,
    Skipped,
    Failed,
    /// The engine is stopping: the job stops and resumes at the next open.
    Stopped(Error),
}

async fn unlock_one(
    registry: &Arc<Registry>,
    store: &Arc<Store>,
    job: &str,
    by: &str,
    filter: LockFilter,
    user: &str,
) -> Outcome {
    let marker = keys::bulk_unlocked(job, user);
    // Unlocked by this job before an interruption: counted, never unlocked twice.
    match crate::registry::read_off_worker(store, std::slice::from_ref(&marker)).await {
        Ok(found) if found.first().is_some_and(Option::is_some) => return Outcome::Unlocked,
        Ok(_) => {}
        Err(e) => return Outcome::Stopped(e),
    }
    match ask(registry, job, by, filter, user, false).await {
        Ok(Mark::Unlocked) => Outcome::Unlocked,
        Ok(Mark::Skipped) => Outcome::Skipped,
        Ok(Mark::Failed) => Outcome::Failed,
        Err(e) if e.id == ErrorId::UserNotFound => Outcome::Skipped,
        Err(e) if matches!(e.id, ErrorId::ShuttingDown | ErrorId::StoreUnavailable) => {
            Outcome::Stopped(e)
        }
        Err(e) => {
            tracing::warn!(%job, %user, "bulk unlock of a user failed: {e}");
            Outcome::Failed
        }
    }
}

/// Asks `user`'s actor to unlock it for `job` (`mark_every`: see `Request::BulkUnlock`).
async fn ask(
    registry: &Arc<Registry>,
    job: &str,
    by: &str,
    filter: LockFilter,
    user: &str,
    mark_every: bool,
) -> Result<Mark, Error> {
    registry
        .call(user, |reply| Request::BulkUnlock {
            job_id: job.to_owned(),
            filter,
            marker: keys::bulk_unlocked(job, user),
            mark_every,
            by: by.to_owned(),
            reply,
        })
        .await
}

async fn read_chunk(store: &Arc<Store>, job: &str, n: u64) -> Result<Vec<String>, Error> {
    let found = crate::registry::read_off_worker(store, &[keys::bulk_chunk(job, n)]).await?;
    let bytes = found.into_iter().next().flatten().ok_or_else(|| {
        Error::with(
            ErrorId::Internal,
            format!("bulk unlock {job}: chunk {n} missing"),
        )
    })?;
    postcard::from_bytes(&bytes)
        .map_err(|e| Error::with(ErrorId::Internal, format!("corrupt bulk unlock chunk: {e}")))
}

async fn write_job(store: &Arc<Store>, record: &JobRecord) -> Result<(), Error> {
    let key = keys::bulk_job(&record.id);
    let mut batch = WriteBatch::default();
    batch.put(key.clone(), crate::stored::encode(record));
    store.submit(&key, batch).wait().await?;
    Ok(())
}

impl Engine {
    /// Starts a bulk unlock of the users LOCKED now that `filter` matches, within the caller's
    /// `user.write` reach; answers the job as it starts.
    pub async fn start_bulk_unlock(
        &self,
        caller: &Caller,
        filter: BulkUnlockFilter,
        idempotency_key: Option<String>,
    ) -> Result<BulkUnlockJob, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserWrite)?;
        if let Some(org) = &filter.org_id {
            match self.org(org).await? {
                Some(found) if reach.covers(&found.id) => {}
                _ => return Err(ErrorId::OrgNotFound.into()),
            }
        }
        if let (Some(after), Some(before)) = (filter.locked_after, filter.locked_before) {
            if after >= before {
                return Err(Error::invalid("lockedAfter must be before lockedBefore"));
            }
        }
        let key = idempotency_key.unwrap_or_default();
        if key.chars().count() > 200 {
            return Err(Error::invalid(
                "idempotencyKey must be at most 200 characters",
            ));
        }
        let jobs = self.inner.bulk_unlocks.clone();
        let _starting = jobs.starting.lock().await;
        let store = self.inner.store.clone();
        // Everything acknowledged is applied before the list is taken (and, in cluster mode,
        // the view holds every job written anywhere before this call, for the key's lookup).
        store.settle(None).await?;
        // The key's entry, when the start carries one: written with the job.
        let claim = (!key.is_empty()).then(|| keys::bulk_idempotency(&caller.user_id, &key));
        if claim.is_some() {
            if let Some(earlier) = earlier_job(&store, &caller.user_id, &key).await? {
                return self.bulk_unlock(caller, &earlier).await;
            }
        }
        let id = self.new_id(keys::bulk_job)?;
        if let Some(claim) = &claim {
            // In a cluster another node may be starting a job under the same key right now:
            // of the two, one claims the key, and the other answers that one's job.
            if !store.claim_unique(claim, id.as_bytes()).await? {
                let earlier = self.started_elsewhere(claim).await?;
                return self.bulk_unlock(caller, &earlier).await;
            }
        }
        let lock_filter = LockFilter {
            reason: filter.reason.map(|r| match r {
                LockedBy::Admin => LockReason::Admin,
                LockedBy::FailedPasswords => LockReason::FailedPasswords,
            }),
            locked_after: filter.locked_after.map(|t| t.timestamp_micros()),
            locked_before: filter.locked_before.map(|t| t.timestamp_micros()),
        };
        let users = {
            let (store, reach, org) = (store.clone(), reach.clone(), filter.org_id.clone());
            tokio::task::spawn_blocking(move || {
                locked_users(&store, &reach, org.as_deref(), &lock_filter)
            })
            .await
            .map_err(|_| Error::new(ErrorId::Internal))??
        };
        let record = JobRecord {
            id,
            by: caller.user_id.clone(),
            idempotency_key: key,
            scope: match &reach {
                Reach::Instance => None,
                Reach::Orgs(orgs) => Some(orgs.clone()),
            },
            org_id: filter.org_id,
            filter: lock_filter,
            created: now_micros(),
            finished: None,
            total: users.len() as u64,
            next: 0,
            unlocked: 0,
            failed: 0,
        };
        let job_key = keys::bulk_job(&record.id);
        let mut batch = WriteBatch::default();
        for (n, chunk) in users.chunks(CHUNK).enumerate() {
            batch.put(
                keys::bulk_chunk(&record.id, n as u64),
                crate::stored::encode(&chunk.to_vec()),
            );
        }
        batch.put(job_key.clone(), crate::stored::encode(&record));
        if let Some(claim) = &claim {
            batch.put(claim.clone(), record.id.as_bytes().to_vec());
        }
        if let Err(e) = store.submit(&job_key, batch).wait().await {
            if let Some(claim) = &claim {
                let holder = record.id.as_bytes();
                crate::users::release_if_unwritten(&store, &e, &[claim], holder).await;
            }
            return Err(e.into());
        }
        let view = record.view(0);
        if self.inner.config.placement.is_some() {
            jobs.wake.notify_one();
        } else {
            jobs.run(self.inner.registry.clone(), store, record);
        }
        Ok(view)
    }

    /// The job another node started under the idempotency key `claim` holds, once this node's
    /// view has it; STORE-UNAVAILABLE (nothing started here) if it has not landed within the
    /// call timeout.
    async fn started_elsewhere(&self, claim: &[u8]) -> Result<String, Error> {
        let store = &self.inner.store;
        let deadline = tokio::time::Instant::now() + self.inner.config.call_timeout;
        loop {
            store.settle(None).await?;
            let found = crate::registry::read_off_worker(store, &[claim.to_vec()]).await?;
            if let Some(id) = found.into_iter().next().flatten() {
                return job_id(id);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::with(
                    ErrorId::StoreUnavailable,
                    "a bulk unlock with this idempotency key is being started on another node; retry",
                ));
            }
            tokio::time::sleep(STARTED_ELSEWHERE_POLL).await;
        }
    }

    /// A job's progress (GetBulkUnlock), for callers whose `user.write` reach covers its scope.
    pub async fn bulk_unlock(&self, caller: &Caller, job_id: &str) -> Result<BulkUnlockJob, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserWrite)?;
        if !crate::valid_id(job_id) {
            return Err(Error::invalid("jobId must be 1 to 200 characters"));
        }
        if let Some(running) = self
            .inner
            .bulk_unlocks
            .running
            .get(job_id)
            .map(|r| r.clone())
        {
            let r = lock(&running);
            if r.record.visible_to(&reach) {
                return Ok(r.record.view(r.scanned));
            }
            return Err(ErrorId::BulkJobNotFound.into());
        }
        let across_nodes = self.inner.config.placement.is_some();
        if across_nodes {
            // The job may have been started on another node a moment ago.
            self.inner.store.settle(None).await?;
        }
        let found =
            crate::registry::read_off_worker(&self.inner.store, &[keys::bulk_job(job_id)]).await?;
        let Some(bytes) = found.into_iter().next().flatten() else {
            return Err(ErrorId::BulkJobNotFound.into());
        };
        let mut record = JobRecord::decode(&bytes)?;
        if !record.visible_to(&reach) {
            return Err(ErrorId::BulkJobNotFound.into());
        }
        if across_nodes && record.finished.is_none() {
            // Its progress is the marks the nodes wrote so far.
            let tally = across::tally(&self.inner.store, &record.id).await?;
            record.unlocked = tally.unlocked;
            record.failed = tally.failed;
            return Ok(record.view(tally.handled));
        }
        Ok(record.view(record.next))
    }
}

/// The id of the job `by` started under idempotency key `key`, if any: the key's entry names
/// it. A job written without the entry (by an older build) is found by its record.
async fn earlier_job(store: &Arc<Store>, by: &str, key: &str) -> Result<Option<String>, Error> {
    let (store, by, key) = (store.clone(), by.to_owned(), key.to_owned());
    tokio::task::spawn_blocking(move || -> Result<Option<String>, Error> {
        if let Some(id) = store.get(&keys::bulk_idempotency(&by, &key))? {
            return job_id(id).map(Some);
        }
        for item in store.scan_prefix(keys::BULK_JOBS) {
            let (_, bytes) = item?;
            let record = JobRecord::decode(&bytes)?;
            if record.idempotency_key == key && record.by == by {
                return Ok(Some(record.id));
            }
        }
        Ok(None)
    })
    .await
    .map_err(|_| Error::new(ErrorId::Internal))?
}

/// The job id an idempotency key's entry holds.
fn job_id(entry: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(entry).map_err(|_| Error::new(ErrorId::Internal))
}

/// The ids of the users LOCKED now within `reach` (and `org`), whose lock `filter` matches.
fn locked_users(
    store: &Store,
    reach: &Reach,
    org: Option<&str>,
    filter: &LockFilter,
) -> Result<Vec<String>, Error> {
    // The LOCKED users are one range of ListUsers' state index (`user/index.rs`), in creation
    // order: only they are read, not every user.
    let mut users = Vec::new();
    for item in store.scan_prefix(&crate::user::index::state_range(UserState::Locked)) {
        let (key, _) = item?;
        let id = crate::user::index::entry_user(&key)?;
        let Some(bytes) = store.get(&keys::user(id))? else {
            continue;
        };
        let record = UserRecord::decode(&bytes)?;
        if record.state != UserState::Locked
            || !reach.covers(&record.org_id)
            || org.is_some_and(|o| o != record.org_id)
        {
            continue;
        }
        let lockout = LockoutState::decode(store.get(&keys::lockout(&record.id))?.as_deref())?;
        if filter.matches(&lockout.lock_or_admin(record.changed)) {
            users.push(record.id);
        }
    }
    Ok(users)
}

/// A job with every field set, for the golden bytes (`stored/golden.rs`).
#[cfg(test)]
pub(crate) fn golden_job(at: Micros) -> JobRecord {
    JobRecord {
        id: "j1".into(),
        by: "m1".into(),
        idempotency_key: "wave-1".into(),
        scope: Some(vec!["o1".into()]),
        org_id: Some("o1".into()),
        filter: LockFilter {
            reason: Some(LockReason::FailedPasswords),
            locked_after: Some(at),
            locked_before: None,
        },
        created: at,
        finished: Some(at + 1),
        total: 10,
        next: 10,
        unlocked: 7,
        failed: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start finds the earlier job of its key by the key's entry, and a job written without
    /// one (by an older build) by its record.
    #[tokio::test]
    async fn an_earlier_job_is_found_by_its_key_entry_or_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config::default().data_dir(dir.path());
        let store = Arc::new(Store::open(&crate::store_config(&config)).unwrap());
        let old = golden_job(1_000);
        let mut batch = WriteBatch::default();
        batch.put(keys::bulk_job(&old.id), crate::stored::encode(&old));
        batch.put(keys::bulk_idempotency("m1", "wave-2"), b"j2".to_vec());
        let scope = keys::bulk_job(&old.id);
        store.submit(&scope, batch).wait().await.unwrap();

        let find = |by: &str, key: &str| {
            let (store, by, key) = (store.clone(), by.to_owned(), key.to_owned());
            async move { earlier_job(&store, &by, &key).await.unwrap() }
        };
        assert_eq!(find("m1", "wave-1").await.as_deref(), Some("j1"));
        assert_eq!(find("m1", "wave-2").await.as_deref(), Some("j2"));
        assert_eq!(find("m2", "wave-1").await, None, "another caller's key");
        assert_eq!(find("m1", "wave-3").await, None);
        store.close().unwrap();
    }
}
