//! StartBulkUnlock (`POST /latchkey/v1/bulk_unlocks`) and GetBulkUnlock
//! (`GET /latchkey/v1/bulk_unlocks/{jobId}`): unlock every LOCKED user a filter names as one
//! tracked job, and read its progress. A Latchkey extension (`proto/latchkey/v1`); the job's
//! rules are in `engine/src/bulk_unlock.rs`.

use latchkey_engine::{self as engine, Error, JobState, LockedBy};

use super::{Call, Rpc};
use crate::proto::latchkey::v1 as latchkey;

fn filter_in(filter: latchkey::BulkUnlockFilter) -> Result<engine::BulkUnlockFilter, Error> {
    let reason = match crate::wire::known::<latchkey::LockReasonFilter>(
        "filter.lockReason",
        filter.lock_reason,
    )? {
        latchkey::LockReasonFilter::Any => None,
        latchkey::LockReasonFilter::Admin => Some(LockedBy::Admin),
        latchkey::LockReasonFilter::FailedPasswords => Some(LockedBy::FailedPasswords),
    };
    let time = |field: &str, at: Option<crate::wire::Timestamp>| match at {
        None => Ok(None),
        Some(at) => at
            .to_datetime()
            .map(Some)
            .ok_or_else(|| Error::invalid(format!("{field} must be an RFC 3339 timestamp"))),
    };
    Ok(engine::BulkUnlockFilter {
        org_id: (!filter.organization_id.is_empty()).then_some(filter.organization_id),
        reason,
        locked_after: time("filter.lockedAfter", filter.locked_after)?,
        locked_before: time("filter.lockedBefore", filter.locked_before)?,
    })
}

fn job_message(job: engine::BulkUnlockJob) -> latchkey::BulkUnlockJob {
    let f = job.filter;
    latchkey::BulkUnlockJob {
        job_id: job.id,
        state: match job.state {
            JobState::Running => latchkey::BulkUnlockState::Running,
            JobState::Done => latchkey::BulkUnlockState::Done,
        } as i32,
        filter: Some(latchkey::BulkUnlockFilter {
            organization_id: f.org_id.unwrap_or_default(),
            lock_reason: match f.reason {
                None => latchkey::LockReasonFilter::Any,
                Some(LockedBy::Admin) => latchkey::LockReasonFilter::Admin,
                Some(LockedBy::FailedPasswords) => latchkey::LockReasonFilter::FailedPasswords,
            } as i32,
            locked_after: f.locked_after.map(Into::into),
            locked_before: f.locked_before.map(Into::into),
        }),
        creation_date: Some(job.creation_date.into()),
        finish_date: job.finish_date.map(Into::into),
        users_scanned: job.scanned,
        users_total: job.total,
        unlocked: job.unlocked,
        failed: job.failed,
        editor_user_id: job.by,
    }
}

pub struct StartBulkUnlock;

impl Rpc for StartBulkUnlock {
    type Request = latchkey::StartBulkUnlockRequest;
    type Response = latchkey::StartBulkUnlockResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: latchkey::StartBulkUnlockRequest,
    ) -> Result<latchkey::StartBulkUnlockResponse, Error> {
        let filter = filter_in(request.filter.unwrap_or_default())?;
        let key = (!request.idempotency_key.is_empty()).then_some(request.idempotency_key);
        let job = engine.start_bulk_unlock(caller, filter, key).await?;
        Ok(latchkey::StartBulkUnlockResponse {
            job: Some(job_message(job)),
        })
    }
}

pub struct GetBulkUnlock;

impl Rpc for GetBulkUnlock {
    type Request = latchkey::GetBulkUnlockRequest;
    type Response = latchkey::GetBulkUnlockResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: latchkey::GetBulkUnlockRequest,
    ) -> Result<latchkey::GetBulkUnlockResponse, Error> {
        let job = engine.bulk_unlock(caller, &request.job_id).await?;
        Ok(latchkey::GetBulkUnlockResponse {
            job: Some(job_message(job)),
        })
    }

    fn set_path(request: &mut latchkey::GetBulkUnlockRequest, name: &str, value: &str) -> bool {
        match name {
            "jobId" => request.job_id = value.to_owned(),
            _ => return false,
        }
        true
    }
}
