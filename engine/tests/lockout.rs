//! The lockout loop through the engine, as a login drives it: sessions with a user and password
//! check → failures counted → lock at the policy's limit → refused without a hash → unlock →
//! success. Hashes are bcrypt at cost 4 so the tests spend no time hashing, and the tarpit is off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use std::sync::Arc;
use std::time::Duration;

use latchkey_engine::*;

const PASSWORD: &str = "correct horse";

struct Kit {
    _dir: tempfile::TempDir,
    engine: Engine,
    admin: Caller,
}

async fn kit() -> Kit {
    kit_with(|config| config).await
}

async fn kit_with(configure: impl FnOnce(Config) -> Config) -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .data_dir(dir.path())
        .tarpit(Tarpit::OFF)
        .check_threads(2);
    let engine = Engine::open(configure(config)).await.unwrap();
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    Kit {
        _dir: dir,
        admin: Caller::system(boot.org_id),
        engine,
    }
}

impl Kit {
    async fn user(&self, email: &str) -> String {
        self.user_with_hash(email, bcrypt::hash(PASSWORD, 4).unwrap())
            .await
    }

    /// A human user whose password has this hash (of [`PASSWORD`]).
    async fn user_with_hash(&self, email: &str, hash: String) -> String {
        self.engine
            .add_human_user(
                &self.admin,
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
                        hash,
                        change_required: false,
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .user_id
    }

    async fn max_attempts(&self, max: u64) {
        self.policy(LockoutPolicy {
            max_password_attempts: max,
            ..Default::default()
        })
        .await;
    }

    /// The instance's default lockout policy.
    async fn policy(&self, policy: LockoutPolicy) {
        self.engine
            .set_default_lockout_policy(&self.admin, policy.into())
            .await
            .unwrap();
    }

    /// A session whose user check passed, with no password checked yet.
    async fn session_of(&self, user: &str) -> SessionCreated {
        self.engine
            .create_session(
                &self.admin,
                NewSession {
                    checks: SessionChecks {
                        user: Some(UserCheck::Id(user.into())),
                        password: None,
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    async fn login(&self, user: &str, password: &str) -> Result<SessionCreated, Error> {
        self.engine
            .create_session(
                &self.admin,
                NewSession {
                    checks: SessionChecks {
                        user: Some(UserCheck::Id(user.into())),
                        password: Some(password.into()),
                    },
                    ..Default::default()
                },
            )
            .await
    }

    async fn state(&self, user: &str) -> UserState {
        self.engine.get_user(&self.admin, user).await.unwrap().state
    }

    async fn events(&self, user: &str) -> Vec<&'static str> {
        let log = self.engine.event_log(&self.admin, user).await.unwrap();
        log.iter().map(|e| e.event_type).collect()
    }

    fn verifications(&self) -> u64 {
        self.engine.stats().password_verifications
    }
}

fn refusal(result: Result<SessionCreated, Error>) -> (ErrorId, Option<u32>) {
    let e = result.expect_err("refused");
    (e.id, e.failed_attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_locks_with_the_crossing_failure_and_then_no_hash_is_checked() {
    let kit = kit().await;
    kit.max_attempts(3).await;
    let user = kit.user("ada@example.com").await;
    for expected in 1..=3 {
        assert_eq!(
            refusal(kit.login(&user, "wrong").await),
            (ErrorId::PasswordInvalid, Some(expected)),
            "the crossing failure still answers 'wrong password' with failed_attempts = max"
        );
    }
    assert_eq!(kit.state(&user).await, UserState::Locked);
    let log = kit.events(&user).await;
    assert_eq!(log.iter().filter(|e| **e == "user.locked").count(), 1);
    assert_eq!(
        log.iter()
            .filter(|e| **e == "user.human.password.check.failed")
            .count(),
        3
    );
    let verified = kit.verifications();
    // The right password no longer gets in, and costs no hash: the user check answers first.
    assert_eq!(
        refusal(kit.login(&user, PASSWORD).await),
        (ErrorId::CheckedUserNotActive, None)
    );
    assert_eq!(kit.verifications(), verified, "no hash while locked");
    // A password check on a session whose user was checked before the lock: COMMAND-JLK35 with
    // the count, still without a hash.
    kit.engine.unlock_user(&kit.admin, &user).await.unwrap();
    let session = kit.session_of(&user).await;
    kit.engine.lock_user(&kit.admin, &user).await.unwrap();
    let locked = kit
        .engine
        .set_session(
            &kit.admin,
            &session.session_id,
            SessionChange {
                checks: SessionChecks {
                    user: None,
                    password: Some(PASSWORD.into()),
                },
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (locked.id, locked.failed_attempts),
        (ErrorId::UserLocked, Some(0))
    );
    assert_eq!(kit.verifications(), verified, "no hash while locked");
    // Unlock resets the count; the right password gets in and also resets it.
    kit.engine.unlock_user(&kit.admin, &user).await.unwrap();
    assert_eq!(
        refusal(kit.login(&user, "wrong").await),
        (ErrorId::PasswordInvalid, Some(1))
    );
    let created = kit.login(&user, PASSWORD).await.unwrap();
    assert!(!created.session_token.is_empty());
    assert_eq!(
        refusal(kit.login(&user, "wrong").await),
        (ErrorId::PasswordInvalid, Some(1)),
        "a success reset the count"
    );
    kit.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_parallel_wrong_passwords_cost_exactly_the_limit() {
    let kit = Arc::new(kit().await);
    kit.max_attempts(5).await;
    let user = kit.user("target@example.com").await;
    let before = kit.verifications();
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (kit, user, barrier) = (kit.clone(), user.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                kit.login(&user, "wrong").await.map(|_| ()).unwrap_err()
            })
        })
        .collect();
    let (mut invalid, mut locked) = (Vec::new(), 0);
    for task in tasks {
        let e = task.await.unwrap();
        match e.id {
            ErrorId::PasswordInvalid => invalid.push(e.failed_attempts.unwrap()),
            ErrorId::UserLocked
            | ErrorId::UserLockedDuringCheck
            | ErrorId::CheckedUserNotActive => locked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    invalid.sort_unstable();
    assert_eq!(invalid, [1, 2, 3, 4, 5]);
    assert_eq!(locked, 995);
    assert_eq!(
        kit.verifications() - before,
        5,
        "one hash per counted failure"
    );
    let log = kit.events(&user).await;
    assert_eq!(log.iter().filter(|e| **e == "user.locked").count(), 1);
    assert_eq!(kit.state(&user).await, UserState::Locked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_checks_over_many_users_never_pass_any_users_limit() {
    // A queue long enough for every user's check at once: none is refused as busy here.
    let kit = Arc::new(kit_with(|c| c.check_queue(1024)).await);
    kit.max_attempts(3).await;
    let mut users = Vec::new();
    for i in 0..100 {
        users.push(kit.user(&format!("u{i}@example.com")).await);
    }
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (kit, user) = (kit.clone(), users[i % users.len()].clone());
            tokio::spawn(async move { (user.clone(), kit.login(&user, "wrong").await.err()) })
        })
        .collect();
    let mut invalid = std::collections::HashMap::<String, u32>::new();
    let mut other = std::collections::BTreeMap::<String, u32>::new();
    for task in tasks {
        let (user, error) = task.await.unwrap();
        let error = error.unwrap();
        if error.id == ErrorId::PasswordInvalid {
            *invalid.entry(user).or_default() += 1;
        } else {
            *other.entry(error.id.id().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(
        other.keys().collect::<Vec<_>>(),
        ["COMMAND-JLK35"],
        "{other:?}"
    );
    for user in &users {
        assert_eq!(invalid.get(user), Some(&3), "{user}");
        assert_eq!(kit.state(user).await, UserState::Locked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_from_failures_lifts_itself_and_escalates_to_permanent() {
    let kit = kit().await;
    kit.policy(LockoutPolicy {
        max_password_attempts: 1,
        auto_unlock_after: Some(Duration::from_millis(300)),
        max_temporary_lockouts: 2,
        ..Default::default()
    })
    .await;
    let user = kit.user("auto@example.com").await;
    for round in 0..2 {
        kit.login(&user, "wrong").await.unwrap_err();
        assert_eq!(kit.state(&user).await, UserState::Locked, "round {round}");
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while kit.state(&user).await != UserState::Active {
            assert!(std::time::Instant::now() < deadline, "never unlocked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Two automatic unlocks in a row with no success between: the third lock is permanent.
    kit.login(&user, "wrong").await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(kit.state(&user).await, UserState::Locked);
    let log = kit.engine.event_log(&kit.admin, &user).await.unwrap();
    let automatic: Vec<_> = log
        .iter()
        .filter(|e| e.reason.as_deref() == Some("automatic"))
        .collect();
    assert_eq!(automatic.len(), 2);
    // An administrator's unlock ends it, and starts the count of temporary lockouts again.
    kit.engine.unlock_user(&kit.admin, &user).await.unwrap();
    kit.login(&user, PASSWORD).await.unwrap();
    kit.engine.shutdown().await.unwrap();
}

/// A lock that lands while a hash is being verified wins: the right password is refused
/// (COMMAND-SFA3t) and no success is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_during_the_verification_refuses_even_the_right_password() {
    let kit = kit().await;
    // A slower hash (bcrypt cost 12: ≈ 200 ms) leaves time to lock meanwhile.
    let id = kit
        .user_with_hash("slower@example.com", bcrypt::hash(PASSWORD, 12).unwrap())
        .await;
    let session = kit.session_of(&id).await;
    let check = {
        let (engine, admin, session) = (kit.engine.clone(), kit.admin.clone(), session.session_id);
        tokio::spawn(async move {
            engine
                .set_session(
                    &admin,
                    &session,
                    SessionChange {
                        checks: SessionChecks {
                            user: None,
                            password: Some(PASSWORD.into()),
                        },
                        ..Default::default()
                    },
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The administrator is not stuck behind the check in flight.
    let started = std::time::Instant::now();
    kit.engine.lock_user(&kit.admin, &id).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let refused = check.await.unwrap().unwrap_err();
    assert_eq!(refused.id, ErrorId::UserLockedDuringCheck);
    let log = kit.events(&id).await;
    assert!(
        !log.contains(&"user.human.password.check.succeeded"),
        "{log:?}"
    );
}

/// The deadline of an automatic unlock passes while the server is down: the user is ACTIVE
/// when it comes back, with one `user.unlocked` dated at the deadline — also for an actor that
/// was passivated before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_unlocks_survive_a_restart_and_passivation() {
    let dir = tempfile::tempdir().unwrap();
    let open = |idle: Duration| {
        Engine::open(
            Config::default()
                .data_dir(dir.path())
                .tarpit(Tarpit::OFF)
                .idle_timeout(idle),
        )
    };
    let engine = open(Duration::from_secs(60)).await.unwrap();
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = Caller::system(boot.org_id);
    let kit = Kit {
        _dir: tempfile::tempdir().unwrap(),
        engine,
        admin,
    };
    kit.policy(LockoutPolicy {
        max_password_attempts: 1,
        auto_unlock_after: Some(Duration::from_millis(800)),
        ..Default::default()
    })
    .await;
    let restarted = kit.user("restart@example.com").await;
    let passivated = kit.user("idle@example.com").await;
    for user in [&restarted, &passivated] {
        kit.login(user, "wrong").await.unwrap_err();
        assert_eq!(kit.state(user).await, UserState::Locked);
    }
    let locked_at = chrono::Utc::now();
    kit.engine.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // Back after the deadline, with actors passivated after 50 ms of idleness.
    let engine = open(Duration::from_millis(50)).await.unwrap();
    let kit = Kit { engine, ..kit };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    // The scheduler lifts both without being asked; wait until the store shows it.
    loop {
        let log = kit.engine.event_log(&kit.admin, &passivated).await.unwrap();
        if log.iter().any(|e| e.reason.as_deref() == Some("automatic")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not unlocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for user in [&restarted, &passivated] {
        assert_eq!(kit.state(user).await, UserState::Active);
        let log = kit.engine.event_log(&kit.admin, user).await.unwrap();
        let unlocks: Vec<_> = log
            .iter()
            .filter(|e| e.event_type == "user.unlocked")
            .collect();
        assert_eq!(unlocks.len(), 1, "{user}");
        let at = unlocks[0].created_at;
        let offset = (at - locked_at).num_milliseconds();
        assert!(
            (0..=1_000).contains(&offset),
            "dated {offset} ms after the lock"
        );
    }
    kit.engine.shutdown().await.unwrap();
}

/// The tarpit holds the user, not only the request: after a wrong password, the user's next
/// verification waits out the delay, however many guesses are in flight. With a delay of an hour
/// after the first failure, twenty parallel wrong passwords cost one hash; the other nineteen wait
/// until their deadline. A check that needs no hash (the user locked meanwhile) is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_wait_out_the_tarpit_of_the_user() {
    let hour = Duration::from_secs(3600);
    let kit = Arc::new(
        kit_with(|c| {
            c.call_timeout(Duration::from_millis(800)).tarpit(Tarpit {
                min_failed: 0,
                step_size: 1,
                step: hour,
                max: hour,
            })
        })
        .await,
    );
    let user = kit.user("guessed@example.com").await;
    let before = kit.verifications();
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (kit, user, barrier) = (kit.clone(), user.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // The first failure's own answer sleeps the tarpit too; don't wait for it.
                tokio::time::timeout(Duration::from_secs(3), kit.login(&user, "wrong")).await
            })
        })
        .collect();
    let (mut held, mut answered_late) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(Err(e)) if e.id == ErrorId::Timeout => held += 1,
            Err(_elapsed) => answered_late += 1, // the failure, sleeping its tarpit
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((held, answered_late), (19, 1));
    assert_eq!(
        kit.verifications() - before,
        1,
        "one hash for twenty guesses"
    );

    // Locked meanwhile: refused at once, with no hash, though the tarpit still holds the user.
    kit.engine.lock_user(&kit.admin, &user).await.unwrap();
    assert_eq!(
        refusal(kit.login(&user, PASSWORD).await).0,
        ErrorId::CheckedUserNotActive
    );
    assert_eq!(kit.verifications() - before, 1);
    kit.engine.shutdown().await.ok();
}

/// Checks of a locked user are refused from the engine's map of locked users once the lock is
/// durable: with the user's actor passivated, a hundred refused logins activate nothing (and
/// cost no hash). An unlock goes through the actor and removes the user from the map, so the next
/// login gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_of_a_locked_user_wake_no_actor_and_an_unlock_lets_the_next_one_in() {
    let kit = kit_with(|config| config.idle_timeout(Duration::from_millis(50))).await;
    kit.max_attempts(1).await;
    let user = kit.user("stuffed@example.com").await;
    assert_eq!(
        refusal(kit.login(&user, "wrong").await),
        (ErrorId::PasswordInvalid, Some(1))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while kit.engine.stats().active_actors > 0 {
        assert!(std::time::Instant::now() < deadline, "never passivated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = kit.engine.stats();
    for _ in 0..100 {
        assert_eq!(
            refusal(kit.login(&user, PASSWORD).await),
            (ErrorId::CheckedUserNotActive, None)
        );
    }
    let after = kit.engine.stats();
    assert_eq!(after.activations, before.activations, "no actor woken");
    assert_eq!(after.password_verifications, before.password_verifications);

    kit.engine.unlock_user(&kit.admin, &user).await.unwrap();
    kit.login(&user, PASSWORD).await.expect("unlocked: in");
    kit.engine.shutdown().await.unwrap();
}

/// A lock whose write the store refused never happened: the map must not refuse the user on
/// the strength of it. The next login goes to the (reloaded) actor and gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_that_failed_to_persist_refuses_nobody() {
    let faults = latchkey_storage::faults::Faults::new();
    let kit = kit_with(|config| config.faults(faults.clone())).await;
    let user = kit.user("unlucky@example.com").await;
    faults.fail_apply(true);
    let refused = kit.engine.lock_user(&kit.admin, &user).await.unwrap_err();
    assert_eq!(refused.id, ErrorId::StoreUnavailable);
    faults.clear();
    kit.login(&user, PASSWORD)
        .await
        .expect("the failed lock locked nobody");
    assert_eq!(kit.state(&user).await, UserState::Active);
    kit.engine.shutdown().await.unwrap();
}

/// GetUserByID of an active user is answered from the view its actor published
/// (`user/published.rs`) while nothing changed, and never from a view older than a change:
/// a counted failure, a lock, an unlock, and a lock whose automatic unlock fell due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_without_the_actor_see_every_change() {
    let kit = kit().await;
    kit.policy(LockoutPolicy {
        max_password_attempts: 2,
        auto_unlock_after: Some(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    let user = kit.user("views@example.com").await;
    let from_view = || kit.engine.stats().reads_from_view;
    let read = || async { kit.engine.get_user(&kit.admin, &user).await.unwrap() };

    let before = from_view();
    assert_eq!(read().await.state, UserState::Active); // through the actor, which publishes
    assert_eq!(read().await.state, UserState::Active);
    assert_eq!(from_view(), before + 1, "the second read skips the actor");

    kit.login(&user, "wrong").await.unwrap_err();
    assert_eq!(read().await.lockout.failed_password_attempts, 1);
    kit.engine.lock_user(&kit.admin, &user).await.unwrap();
    assert_eq!(read().await.state, UserState::Locked);
    kit.engine.unlock_user(&kit.admin, &user).await.unwrap();
    assert_eq!(read().await.state, UserState::Active);
    assert_eq!(read().await.lockout.failed_password_attempts, 0);

    // Locked by failures for 300 ms: the view shows the lock until it falls due, then the read
    // goes to the actor, which lifts it first.
    kit.login(&user, "wrong").await.unwrap_err();
    kit.login(&user, "wrong").await.unwrap_err();
    assert_eq!(read().await.state, UserState::Locked);
    let served = from_view();
    assert_eq!(read().await.state, UserState::Locked);
    assert_eq!(from_view(), served + 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(read().await.state, UserState::Active);

    // Outside the caller's reach, a published view answers NotFound like the actor.
    let (org_b, _) = kit
        .engine
        .add_organization(&kit.admin, "elsewhere", None)
        .await
        .unwrap();
    let viewer_b = Caller {
        user_id: "viewer-b".into(),
        org_id: org_b.clone(),
        grants: vec![Grant {
            role: Role::OrgUserViewer,
            org_id: Some(org_b),
        }],
    };
    read().await;
    let served = from_view();
    let err = kit.engine.get_user(&viewer_b, &user).await.unwrap_err();
    assert_eq!(err.id, ErrorId::UserNotFound);
    assert_eq!(from_view(), served + 1);
}
