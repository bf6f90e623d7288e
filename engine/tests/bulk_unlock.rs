//! Bulk unlock through the engine: 10,000 locked users unlocked by one job, its progress seen
//! while it runs, the engine stopped in the middle of the job and opened again — and in the end
//! every user ACTIVE with exactly one unlock event, none unlocked twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_engine::*;

const USERS: usize = 10_000;

async fn open(dir: &std::path::Path) -> Engine {
    Engine::open(Config::default().data_dir(dir)).await.unwrap()
}

/// `n` locked users (by an administrator), their ids in the order a job lists them.
async fn locked_users(engine: &Engine, admin: &Caller, n: usize) -> Vec<String> {
    let hash = Arc::new(bcrypt::hash("pw", 4).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..64 {
        let (engine, admin, hash) = (engine.clone(), admin.clone(), hash.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..n).step_by(64) {
                let created = engine
                    .add_human_user(
                        &admin,
                        NewHuman {
                            profile: Profile {
                                given_name: "Bulk".into(),
                                family_name: format!("User {i}"),
                                ..Default::default()
                            },
                            email: Email {
                                email: format!("bulk{i}@example.com"),
                                is_verified: true,
                            },
                            password: Some(PasswordInput::Hashed {
                                hash: hash.to_string(),
                                change_required: false,
                            }),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                engine.lock_user(&admin, &created.user_id).await.unwrap();
                ids.push(created.user_id);
            }
            ids
        });
    }
    let mut ids: Vec<String> = tasks.join_all().await.into_iter().flatten().collect();
    // A job lists users in key order; ids of one length sort as their text does.
    ids.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    ids
}

async fn wait_for(
    engine: &Engine,
    admin: &Caller,
    job: &str,
    done: impl Fn(&BulkUnlockJob) -> bool,
) -> BulkUnlockJob {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = engine.bulk_unlock(admin, job).await.unwrap();
        if done(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "job stuck: {seen:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_locked_users_unlocked_by_one_job_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = Caller::system(boot.org_id.clone());
    let users = locked_users(&engine, &admin, USERS).await;

    // One user of the job's second chunk answers late: the job is then surely in that chunk,
    // its first written, when the engine stops.
    assert!(engine.inject_actor_stall(&users[1500], Duration::from_secs(3)));
    let job = engine
        .start_bulk_unlock(&admin, BulkUnlockFilter::default(), None)
        .await
        .unwrap();
    assert_eq!(
        (job.state, job.total, job.unlocked),
        (JobState::Running, USERS as u64, 0)
    );

    // Progress is readable while it runs.
    let midway = wait_for(&engine, &admin, &job.id, |j| j.scanned > 0).await;
    assert_eq!(midway.state, JobState::Running);
    assert!(midway.scanned < midway.total, "{midway:?}");
    let stuck = wait_for(&engine, &admin, &job.id, |j| j.unlocked > 1100).await;
    assert_eq!(stuck.state, JobState::Running, "{stuck:?}");

    engine.shutdown().await.unwrap();
    drop(engine);
    let engine = open(dir.path()).await;
    let done = wait_for(&engine, &admin, &job.id, |j| j.state == JobState::Done).await;
    assert_eq!(
        (done.scanned, done.unlocked, done.failed),
        (USERS as u64, USERS as u64, 0),
        "{done:?}"
    );
    assert!(done.finish_date.is_some());

    // Every user ACTIVE, with exactly one unlock event, by this job.
    let still_locked = engine
        .list_users(
            &admin,
            ListUsers {
                queries: vec![UserQuery::State(UserState::Locked)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(still_locked.total_result, 0);
    let reason = format!("bulk unlock {}", job.id);
    let mut checks = tokio::task::JoinSet::new();
    for chunk in users.chunks(USERS / 16) {
        let (engine, admin, chunk, reason) = (
            engine.clone(),
            admin.clone(),
            chunk.to_vec(),
            reason.clone(),
        );
        checks.spawn(async move {
            for user in chunk {
                let log = engine.event_log(&admin, &user).await.unwrap();
                let unlocks: Vec<_> = log
                    .iter()
                    .filter(|e| e.event_type == "user.unlocked")
                    .collect();
                assert_eq!(unlocks.len(), 1, "{user}: {log:?}");
                assert_eq!(unlocks[0].reason.as_deref(), Some(reason.as_str()));
            }
        });
    }
    checks.join_all().await;
    engine.shutdown().await.unwrap();
}

/// Only the locks the filter names are lifted; a user unlocked meanwhile is left alone; a second
/// start with the same idempotency key is the same job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_unlocks_what_its_filter_names_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = Caller::system(boot.org_id.clone());
    engine
        .set_default_lockout_policy(
            &admin,
            LockoutPolicy {
                max_password_attempts: 1,
                ..Default::default()
            }
            .into(),
        )
        .await
        .unwrap();
    let by_admin = locked_users(&engine, &admin, 3).await;
    let before = chrono::Utc::now();
    // Three more, locked by a wrong password (a session's password check).
    let mut by_failures = Vec::new();
    for i in 0..3 {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let created = engine
            .add_human_user(
                &admin,
                NewHuman {
                    profile: Profile {
                        given_name: "F".into(),
                        family_name: "F".into(),
                        ..Default::default()
                    },
                    email: Email {
                        email: format!("failed{i}@example.com"),
                        is_verified: true,
                    },
                    password: Some(PasswordInput::Hashed {
                        hash,
                        change_required: false,
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let wrong = NewSession {
            checks: SessionChecks {
                user: Some(UserCheck::Id(created.user_id.clone())),
                password: Some("wrong".into()),
            },
            ..Default::default()
        };
        assert!(engine.create_session(&admin, wrong).await.is_err());
        by_failures.push(created.user_id);
    }
    let filter = BulkUnlockFilter {
        reason: Some(LockedBy::FailedPasswords),
        locked_after: Some(before),
        ..Default::default()
    };
    let job = engine
        .start_bulk_unlock(&admin, filter.clone(), Some("wave-1".into()))
        .await
        .unwrap();
    assert_eq!(job.total, 3);
    let again = engine
        .start_bulk_unlock(&admin, filter, Some("wave-1".into()))
        .await
        .unwrap();
    assert_eq!(again.id, job.id);
    let done = wait_for(&engine, &admin, &job.id, |j| j.state == JobState::Done).await;
    assert_eq!(done.unlocked, 3);
    for user in &by_failures {
        assert_eq!(
            engine.get_user(&admin, user).await.unwrap().state,
            UserState::Active
        );
    }
    for user in &by_admin {
        assert_eq!(
            engine.get_user(&admin, user).await.unwrap().state,
            UserState::Locked
        );
    }

    // A job over the administrator's locks; one of them is unlocked by hand first — the job
    // finds it ACTIVE and leaves it (one unlock event, the administrator's).
    engine.unlock_user(&admin, &by_admin[0]).await.unwrap();
    let job = engine
        .start_bulk_unlock(&admin, BulkUnlockFilter::default(), None)
        .await
        .unwrap();
    assert_eq!(job.total, 2);
    let done = wait_for(&engine, &admin, &job.id, |j| j.state == JobState::Done).await;
    assert_eq!(done.unlocked, 2);
    let log = engine.event_log(&admin, &by_admin[0]).await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.event_type == "user.unlocked")
            .count(),
        1
    );

    let missing = engine.bulk_unlock(&admin, "nope").await.unwrap_err();
    assert_eq!(missing.id, ErrorId::BulkJobNotFound);
    engine.shutdown().await.unwrap();
}
