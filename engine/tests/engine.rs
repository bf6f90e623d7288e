//! The engine embedded, as a library user would hold it: a real store on a temp dir, real actors,
//! real concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_engine::*;

struct Kit {
    _dir: Option<tempfile::TempDir>,
    path: std::path::PathBuf,
    engine: Engine,
    admin: Arc<Caller>,
    org: String,
}

async fn open_at(path: &std::path::Path, idle: Duration) -> Engine {
    // An engine dropped without shutdown releases the directory once its actors have stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Engine::open(Config::default().data_dir(path).idle_timeout(idle)).await {
            Ok(engine) => return engine,
            Err(e) if Instant::now() < deadline && e.to_string().contains("locked") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("open: {e}"),
        }
    }
}

async fn kit_with_idle(idle: Duration) -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let engine = open_at(&path, idle).await;
    let boot = engine
        .bootstrap(None)
        .await
        .unwrap()
        .expect("fresh store bootstraps");
    let admin = engine.authenticate(&boot.admin_token).await.unwrap();
    Kit {
        _dir: Some(dir),
        path,
        engine,
        admin,
        org: boot.org_id,
    }
}

async fn kit() -> Kit {
    kit_with_idle(Duration::from_secs(60)).await
}

fn human(email: &str) -> NewHuman {
    NewHuman {
        profile: Profile {
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            ..Default::default()
        },
        email: Email {
            email: email.into(),
            is_verified: true,
        },
        password: Some(PasswordInput::Hashed {
            hash: "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy".into(),
            change_required: false,
        }),
        ..Default::default()
    }
}

impl Kit {
    /// A new active human user's id.
    async fn user(&self, email: &str) -> String {
        self.engine
            .add_human_user(&self.admin, human(email))
            .await
            .unwrap()
            .user_id
    }

    async fn locked_user(&self, email: &str) -> String {
        let id = self.user(email).await;
        self.engine.lock_user(&self.admin, &id).await.unwrap();
        id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_unlocks_succeed_exactly_once() {
    let kit = kit().await;
    let id = kit.locked_user("race@example.com").await;
    let before = kit
        .engine
        .get_user(&kit.admin, &id)
        .await
        .unwrap()
        .details
        .sequence;
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (engine, admin, id) = (kit.engine.clone(), kit.admin.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            engine.unlock_user(&admin, &id).await
        }));
    }
    let mut ok = 0;
    let mut not_locked = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.id == ErrorId::UserNotLocked => not_locked += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, not_locked), (1, 999));
    let user = kit.engine.get_user(&kit.admin, &id).await.unwrap();
    assert_eq!(user.state, UserState::Active);
    assert_eq!(user.details.sequence, before + 1);
}

/// One caller's commands on a running user's actor are applied in the order it issued them,
/// even when it does not await one before issuing the next (docs/runtime.md): a lock and then an
/// unlock, issued together round after round, both succeed — also while a view of the user is
/// published for readers, which no command may be answered from ahead of the mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_of_one_caller_apply_in_issue_order() {
    let kit = kit().await;
    let id = kit.user("pipelined@example.com").await;
    let before = kit.engine.get_user(&kit.admin, &id).await.unwrap();
    for _ in 0..50 {
        kit.engine.get_user(&kit.admin, &id).await.unwrap(); // the actor publishes its view
        let (locked, unlocked) = tokio::join!(
            biased; // the lock's message enters the mailbox first
            kit.engine.lock_user(&kit.admin, &id),
            kit.engine.unlock_user(&kit.admin, &id),
        );
        locked.unwrap();
        unlocked.unwrap();
    }
    let after = kit.engine.get_user(&kit.admin, &id).await.unwrap();
    assert_eq!(after.state, UserState::Active);
    assert_eq!(after.details.sequence, before.details.sequence + 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_of_one_username_give_one_success() {
    let kit = kit().await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (engine, admin) = (kit.engine.clone(), kit.admin.clone());
        tasks.push(tokio::spawn(async move {
            let mut input = human("Same@Example.com");
            input.username = Some(if rand_bool() { "same" } else { "SAME" }.into());
            engine.add_human_user(&admin, input).await
        }));
    }
    let results: Vec<_> = futures::future::join_all(tasks).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(ok, 1);
    for r in results {
        if let Err(e) = r.unwrap() {
            assert_eq!(e.id, ErrorId::UsernameTaken);
            assert_eq!(e.code(), Code::AlreadyExists);
        }
    }
}

fn rand_bool() -> bool {
    Instant::now().elapsed().subsec_nanos().is_multiple_of(2)
}

#[tokio::test]
async fn deleted_users_free_their_username_and_vanish() {
    let kit = kit().await;
    let id = kit.user("gone@example.com").await;
    kit.engine.delete_user(&kit.admin, &id).await.unwrap();
    for result in [
        kit.engine.get_user(&kit.admin, &id).await.map(|_| ()),
        kit.engine.unlock_user(&kit.admin, &id).await.map(|_| ()),
        kit.engine.delete_user(&kit.admin, &id).await.map(|_| ()),
    ] {
        assert_eq!(result.unwrap_err().id, ErrorId::UserNotFound);
    }
    kit.engine
        .add_human_user(&kit.admin, human("gone@example.com"))
        .await
        .unwrap();
    // the id itself stays taken
    let mut again = human("other@example.com");
    again.user_id = Some(id);
    assert_eq!(
        kit.engine
            .add_human_user(&kit.admin, again)
            .await
            .unwrap_err()
            .id,
        ErrorId::UserIdTaken
    );
}

#[tokio::test]
async fn state_after_creation_depends_on_password() {
    let kit = kit().await;
    let mut no_password = human("initial@example.com");
    no_password.password = None;
    let id = kit
        .engine
        .add_human_user(&kit.admin, no_password)
        .await
        .unwrap()
        .user_id;
    let user = kit.engine.get_user(&kit.admin, &id).await.unwrap();
    assert_eq!(user.state, UserState::Initial);
    assert_eq!(user.details.sequence, 1);
    assert_eq!(user.username, "initial@example.com");
    let mut plain = human("plain@example.com");
    plain.password = Some(PasswordInput::Plain {
        password: "Secr3t!pass".into(),
        change_required: true,
    });
    let id = kit
        .engine
        .add_human_user(&kit.admin, plain)
        .await
        .unwrap()
        .user_id;
    let user = kit.engine.get_user(&kit.admin, &id).await.unwrap();
    assert_eq!(user.state, UserState::Active);
    match user.user_type {
        UserType::Human(h) => assert!(h.password_change_required),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn permissions_deny_before_lookup_and_hide_other_orgs() {
    let kit = kit().await;
    let (org_b, _) = kit
        .engine
        .add_organization(&kit.admin, "Org B", None)
        .await
        .unwrap();
    let in_default = kit.locked_user("a@example.com").await;
    let make_caller = |org: &str, role: Role| Caller {
        user_id: "x".into(),
        org_id: org.into(),
        grants: vec![Grant {
            role,
            org_id: Some(org.into()),
        }],
    };
    let viewer = make_caller(&kit.org, Role::OrgUserViewer);
    assert_eq!(
        kit.engine
            .unlock_user(&viewer, "no-such-user")
            .await
            .unwrap_err()
            .id,
        ErrorId::PermissionDenied
    );
    let manager_b = make_caller(&org_b, Role::OrgUserManager);
    let outside = kit
        .engine
        .unlock_user(&manager_b, &in_default)
        .await
        .unwrap_err();
    let missing = kit
        .engine
        .unlock_user(&manager_b, "no-such-user")
        .await
        .unwrap_err();
    assert_eq!(outside, missing);
    assert_eq!(outside.id, ErrorId::UserNotFound);
    // the manager of the right org succeeds
    let manager_a = make_caller(&kit.org, Role::OrgUserManager);
    kit.engine
        .unlock_user(&manager_a, &in_default)
        .await
        .unwrap();
    // list shows only reachable users
    let listed = kit
        .engine
        .list_users(&manager_b, ListUsers::default())
        .await
        .unwrap();
    assert_eq!(listed.total_result, 0);
}

#[tokio::test]
async fn tokens_authenticate_until_their_user_is_locked_or_token_removed() {
    let kit = kit().await;
    let bot = kit
        .engine
        .create_machine_user(
            &kit.admin,
            NewMachine {
                organization_id: kit.org.clone(),
                name: "bot".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .user_id;
    let token = kit
        .engine
        .add_personal_access_token(&kit.admin, &bot, None)
        .await
        .unwrap();
    assert_eq!(
        kit.engine.authenticate(&token.token).await.unwrap().user_id,
        bot
    );
    kit.engine.lock_user(&kit.admin, &bot).await.unwrap();
    assert_eq!(
        kit.engine.authenticate(&token.token).await.unwrap_err().id,
        ErrorId::Unauthenticated
    );
    kit.engine.unlock_user(&kit.admin, &bot).await.unwrap();
    kit.engine.authenticate(&token.token).await.unwrap();
    kit.engine
        .remove_personal_access_token(&kit.admin, &bot, &token.token_id)
        .await
        .unwrap();
    assert_eq!(
        kit.engine.authenticate(&token.token).await.unwrap_err().id,
        ErrorId::Unauthenticated
    );
    let expired = kit
        .engine
        .add_personal_access_token(
            &kit.admin,
            &bot,
            Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_engine_keeps_every_acknowledged_change() {
    let kit = kit().await;
    let mut expected = Vec::new();
    for i in 0..20 {
        let id = kit.locked_user(&format!("d{i}@example.com")).await;
        if i % 2 == 0 {
            kit.engine.unlock_user(&kit.admin, &id).await.unwrap();
        }
        let user = kit.engine.get_user(&kit.admin, &id).await.unwrap();
        expected.push((id, user.state, user.details.sequence));
    }
    let Kit {
        _dir, path, engine, ..
    } = kit;
    drop(engine); // no shutdown
    let engine = open_at(&path, Duration::from_secs(60)).await;
    assert!(
        engine.bootstrap(None).await.unwrap().is_none(),
        "bootstrap runs once"
    );
    let admin = Caller::system(engine.default_org_id().unwrap());
    let admin = &admin;
    for (id, state, sequence) in expected {
        let user = engine.get_user(admin, &id).await.unwrap();
        assert_eq!(
            (user.state, user.details.sequence),
            (state, sequence),
            "{id}"
        );
        let log = engine.event_log(admin, &id).await.unwrap();
        let seqs: Vec<u64> = log.iter().map(|e| e.sequence).collect();
        assert_eq!(
            seqs,
            (1..=sequence).collect::<Vec<_>>(),
            "gap-free log for {id}"
        );
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_actor_fails_its_caller_promptly_and_recovers_from_disk() {
    let kit = kit().await;
    let victim = kit.locked_user("victim@example.com").await;
    let bystander = kit.locked_user("bystander@example.com").await;
    let before = kit.engine.get_user(&kit.admin, &victim).await.unwrap();

    assert!(kit.engine.inject_actor_panic(&victim));
    // A command queued behind the panic gets an error, not a hang.
    let started = Instant::now();
    let result = kit.engine.unlock_user(&kit.admin, &victim).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    if let Err(e) = &result {
        assert_eq!(e.id, ErrorId::ActorFailed);
    }
    // The next request succeeds against state reloaded from disk.
    let after = kit.engine.get_user(&kit.admin, &victim).await.unwrap();
    let expected_seq = before.details.sequence + u64::from(result.is_ok());
    assert_eq!(after.details.sequence, expected_seq);
    if result.is_err() {
        assert_eq!(after.state, UserState::Locked);
        kit.engine.unlock_user(&kit.admin, &victim).await.unwrap();
    }
    // Other users were not disturbed.
    kit.engine
        .unlock_user(&kit.admin, &bystander)
        .await
        .unwrap();
    let stats = wait_for(|| kit.engine.stats().actor_failures >= 1, &kit.engine).await;
    assert!(stats.actor_failures >= 1);
}

async fn wait_for(cond: impl Fn() -> bool, engine: &Engine) -> EngineStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_passivate_and_come_back_with_their_state() {
    let kit = kit_with_idle(Duration::from_millis(100)).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(kit.locked_user(&format!("p{i}@example.com")).await);
    }
    assert!(kit.engine.stats().active_actors >= 10);
    let stats = wait_for(|| kit.engine.stats().active_actors == 0, &kit.engine).await;
    assert_eq!(stats.active_actors, 0, "{stats:?}");
    assert!(stats.passivations >= 10);
    for id in &ids {
        let user = kit.engine.get_user(&kit.admin, id).await.unwrap();
        assert_eq!((user.state, user.details.sequence), (UserState::Locked, 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_racing_passivation_are_never_lost() {
    // An idle timeout this short makes actors passivate between almost every pair of commands.
    let kit = Arc::new(kit_with_idle(Duration::from_millis(20)).await);
    let id = kit.locked_user("flap@example.com").await;
    for round in 0..200u64 {
        if round % 2 == 0 {
            kit.engine.unlock_user(&kit.admin, &id).await.unwrap();
        } else {
            kit.engine.lock_user(&kit.admin, &id).await.unwrap();
        }
        if round % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let user = kit.engine.get_user(&kit.admin, &id).await.unwrap();
    assert_eq!(user.details.sequence, 2 + 200);
    assert!(kit.engine.stats().passivations > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_actor_times_callers_out_without_blocking_others() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        Config::default()
            .data_dir(dir.path())
            .call_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = engine.authenticate(&boot.admin_token).await.unwrap();
    let slow = engine
        .add_human_user(&admin, human("slow@example.com"))
        .await
        .unwrap()
        .user_id;
    let other = engine
        .add_human_user(&admin, human("other@example.com"))
        .await
        .unwrap()
        .user_id;
    engine.get_user(&admin, &slow).await.unwrap(); // creation spawns no actor; this does
    assert!(engine.inject_actor_stall(&slow, Duration::from_secs(1)));
    let err = engine.lock_user(&admin, &slow).await.unwrap_err();
    assert_eq!(
        (err.id, err.code()),
        (ErrorId::Timeout, Code::DeadlineExceeded)
    );
    // another user is not held up by the stalled one
    engine.lock_user(&admin, &other).await.unwrap();
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_durability_keeps_everything_across_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        Config::default()
            .data_dir(dir.path())
            .durability(Durability::Async {
                flush_interval: Duration::from_millis(5),
            })
    };
    let engine = Engine::open(config()).await.unwrap();
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = engine.authenticate(&boot.admin_token).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..10 {
        let id = engine
            .add_human_user(&admin, human(&format!("a{i}@example.com")))
            .await
            .unwrap()
            .user_id;
        let details = engine.lock_user(&admin, &id).await.unwrap();
        expected.push((id, details.sequence));
    }
    engine.shutdown().await.unwrap();
    assert_eq!(
        engine
            .lock_user(&admin, &expected[0].0)
            .await
            .unwrap_err()
            .id,
        ErrorId::ShuttingDown
    );
    let engine = Engine::open(config()).await.unwrap();
    for (id, sequence) in expected {
        let user = engine.get_user(&admin, &id).await.unwrap();
        assert_eq!(
            (user.state, user.details.sequence),
            (UserState::Locked, sequence)
        );
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_logs_are_read_with_the_callers_permission() {
    let kit = kit().await;
    let id = kit.locked_user("audited@example.com").await;
    let log = kit.engine.event_log(&kit.admin, &id).await.unwrap();
    let kinds: Vec<_> = log.iter().map(|e| e.event_type).collect();
    assert_eq!(kinds, ["user.human.added", "user.locked"]);

    let caller = |grants: Vec<Grant>| Caller {
        user_id: "auditor".into(),
        org_id: "elsewhere".into(),
        grants,
    };
    let viewer_elsewhere = caller(vec![Grant {
        role: Role::OrgUserViewer,
        org_id: Some("elsewhere".into()),
    }]);
    let err = kit
        .engine
        .event_log(&viewer_elsewhere, &id)
        .await
        .unwrap_err();
    assert_eq!(
        err.id,
        ErrorId::UserNotFound,
        "out of reach reads as missing"
    );
    let err = kit
        .engine
        .event_log(&caller(Vec::new()), &id)
        .await
        .unwrap_err();
    assert_eq!(err.id, ErrorId::PermissionDenied);
    let viewer_here = caller(vec![Grant {
        role: Role::OrgUserViewer,
        org_id: Some(kit.org.clone()),
    }]);
    assert_eq!(kit.engine.event_log(&viewer_here, &id).await.unwrap(), log);
    kit.engine.shutdown().await.unwrap();
}

/// Reads of organizations (a creation's target, by id or domain) are made off the async workers
/// while the store is busy: with one worker and every read stalled, a ticking task never waits as
/// long as one read takes.
#[tokio::test(flavor = "current_thread")]
async fn organization_lookups_leave_the_async_worker_free() {
    let dir = tempfile::tempdir().unwrap();
    let faults = latchkey_storage::faults::Faults::new();
    let config = || {
        Config::default()
            .data_dir(dir.path())
            .faults(faults.clone())
    };
    let engine = Engine::open(config()).await.unwrap();
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = Caller::system(boot.org_id);
    let (org, _) = engine.add_organization(&admin, "Acme", None).await.unwrap();
    let user = engine
        .create_machine_user(
            &admin,
            NewMachine {
                organization_id: org.clone(),
                name: "robot".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .user_id;
    engine.shutdown().await.unwrap();
    // A fresh engine: nothing of the organization is cached.
    let engine = Engine::open(config()).await.unwrap();
    let read = Duration::from_millis(300);
    faults.report_busy(true);
    faults.delay_reads(read);
    let ticks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                ticks.lock().unwrap().push(Instant::now());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Let the ticker run before the call starts, so a block at the call's very start shows.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    engine
        .create_administrator(
            &admin,
            &user,
            Resource::Organization(org),
            &["ORG_USER_VIEWER".to_owned()],
        )
        .await
        .unwrap();
    assert!(started.elapsed() >= read, "the lookup did read the store");
    ticker.abort();
    let ticks = ticks.lock().unwrap().clone();
    let longest = ticks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest < read / 2,
        "the async worker was blocked for {longest:?} (a store read on it)"
    );
    faults.clear();
    engine.shutdown().await.unwrap();
}
