//! Bulk unlocks in cluster mode: every node unlocks the listed users it serves.
//!
//! A job is written, with its list, by the node it was started on (under the job's own scope),
//! and every node's view holds it moments later. Each node runs one task that, every second
//! and at once when a job starts there, reads the unfinished jobs in its view and asks the
//! actors of the listed users this node serves to unlock them. The actor marks every user it
//! handles — unlocked, or left alone because it is no longer locked the way the filter says —
//! in the user's own scope, in the same write as the unlock. So the mark moves with the user
//! when its partition changes hands: a user handled by its previous owner is not handled again
//! (the actor reads the mark once its scope has settled, where this task's read of the view may
//! lag), and the users of a node that dies mid-job are handled by their next owner.
//!
//! A job's progress is the count of its marks in a view (`tally`); the node serving the job's
//! scope writes it finished, with the counts, once every listed user has a mark.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use latchkey_storage::{Store, WriteBatch};

use super::{ask, read_chunk, write_job, JobRecord, Mark, CHUNK, WINDOW};
use crate::error::{Error, ErrorId};
use crate::keys;
use crate::registry::{read_off_worker, Registry};
use crate::time::now_micros;
use crate::user::lockout::LockFilter;
use crate::Placement;

/// How often the runner looks for work it was not woken for: jobs started on other nodes,
/// partitions that moved here, users whose unlock is to be tried again.
const EVERY: Duration = Duration::from_secs(1);

/// This node's runner (stopped with the engine).
pub(super) fn spawn(
    registry: Arc<Registry>,
    store: Arc<Store>,
    placement: Arc<dyn Placement>,
    wake: Arc<Notify>,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            if let Err(e) = round(&registry, &store, placement.as_ref()).await {
                tracing::warn!("bulk unlocks: {e}; trying again shortly");
            }
            let _ = tokio::time::timeout(EVERY, wake.notified()).await;
        }
    })
    .abort_handle()
}

/// One pass over every unfinished job in the view.
async fn round(
    registry: &Arc<Registry>,
    store: &Arc<Store>,
    placement: &dyn Placement,
) -> Result<(), Error> {
    let jobs = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<JobRecord>, Error> {
            let mut jobs = Vec::new();
            for item in store.scan_prefix(keys::BULK_JOBS) {
                let (_, bytes) = item?;
                let record = JobRecord::decode(&bytes)?;
                if record.finished.is_none() {
                    jobs.push(record);
                }
            }
            Ok(jobs)
        })
        .await
        .map_err(|_| Error::new(ErrorId::Internal))??
    };
    for job in jobs {
        for n in 0..job.total.div_ceil(CHUNK as u64) {
            let mine: Vec<String> = read_chunk(store, &job.id, n)
                .await?
                .into_iter()
                .filter(|user| placement.owns(&keys::user(user)))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let marks: Vec<Vec<u8>> = mine
                .iter()
                .map(|user| keys::bulk_unlocked(&job.id, user))
                .collect();
            let found = read_off_worker(store, &marks).await?;
            let todo = mine
                .into_iter()
                .zip(found)
                .filter(|(_, mark)| mark.is_none())
                .map(|(user, _)| user);
            handle(registry, store, &job, todo).await;
        }
        if placement.owns(&keys::bulk_job(&job.id)) {
            let tally = tally(store, &job.id).await?;
            if tally.handled >= job.total {
                finish(store, job, tally).await?;
            }
        }
    }
    Ok(())
}

/// Handles `users` of `job`, [`WINDOW`] at a time.
async fn handle(
    registry: &Arc<Registry>,
    store: &Arc<Store>,
    job: &JobRecord,
    mut users: impl Iterator<Item = String>,
) {
    let mut calls = JoinSet::new();
    loop {
        while calls.len() < WINDOW {
            let Some(user) = users.next() else { break };
            let (registry, store) = (registry.clone(), store.clone());
            let (id, by, filter) = (job.id.clone(), job.by.clone(), job.filter);
            calls
                .spawn(async move { handle_one(&registry, &store, &id, &by, filter, &user).await });
        }
        if calls.join_next().await.is_none() {
            break;
        }
    }
}

/// Asks `user`'s actor to unlock it for `job`. A user the actor could not answer for is
/// marked here: deleted (skipped) or refused for good (failed). One whose call failed for a
/// passing reason — a failover, a store that did not answer, the call's timeout — is tried
/// again in the next round (the actor's own read of the mark keeps that from unlocking twice).
async fn handle_one(
    registry: &Arc<Registry>,
    store: &Arc<Store>,
    job: &str,
    by: &str,
    filter: LockFilter,
    user: &str,
) {
    let mark = match ask(registry, job, by, filter, user, true).await {
        Ok(_) => return,
        Err(e) if e.id == ErrorId::UserNotFound => Mark::Skipped,
        Err(e) if passing(e.id) => return,
        Err(e) => {
            tracing::warn!(%job, %user, "bulk unlock of a user failed: {e}");
            Mark::Failed
        }
    };
    let scope = keys::user(user);
    let written = async {
        // This node must hold the user's scope, with every record of it in the view.
        store.prepare(&scope).await?;
        let mut batch = WriteBatch::default();
        batch.put(keys::bulk_unlocked(job, user), mark.value());
        store.submit(&scope, batch).wait().await
    };
    if let Err(e) = written.await {
        tracing::debug!(%job, %user, "bulk unlock mark not written, tried again: {e}");
    }
}

/// Errors after which the same call may succeed.
fn passing(id: ErrorId) -> bool {
    matches!(
        id,
        ErrorId::NoOwner
            | ErrorId::Timeout
            | ErrorId::StoreUnavailable
            | ErrorId::StoreOutcomeUnknown
            | ErrorId::ShuttingDown
            | ErrorId::ActorFailed
    )
}

/// A job's marks counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    /// Users with a mark, whatever it says.
    pub handled: u64,
    pub unlocked: u64,
    pub failed: u64,
}

/// Counts `job`'s marks in this node's view.
pub(super) async fn tally(store: &Arc<Store>, job: &str) -> Result<Tally, Error> {
    let (store, prefix) = (store.clone(), keys::bulk_marks(job));
    tokio::task::spawn_blocking(move || -> Result<Tally, Error> {
        let mut tally = Tally::default();
        for item in store.scan_prefix(&prefix) {
            let (_, value) = item?;
            tally.handled += 1;
            match Mark::decode(&value) {
                Mark::Unlocked => tally.unlocked += 1,
                Mark::Failed => tally.failed += 1,
                Mark::Skipped => {}
            }
        }
        Ok(tally)
    })
    .await
    .map_err(|_| Error::new(ErrorId::Internal))?
}

/// Writes `job` finished with `tally`'s counts, unless a node that held its scope before did.
async fn finish(store: &Arc<Store>, mut job: JobRecord, tally: Tally) -> Result<(), Error> {
    let key = keys::bulk_job(&job.id);
    store.prepare(&key).await?;
    let current = read_off_worker(store, std::slice::from_ref(&key)).await?;
    if let Some(bytes) = current.into_iter().next().flatten() {
        if JobRecord::decode(&bytes)?.finished.is_some() {
            return Ok(());
        }
    }
    job.next = job.total;
    job.unlocked = tally.unlocked;
    job.failed = tally.failed;
    job.finished = Some(now_micros());
    write_job(store, &job).await
}
