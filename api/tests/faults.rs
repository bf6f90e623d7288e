//! Fault injection over HTTP (engine feature `fault-injection`, test builds only): a user actor
//! panicking mid-command, the store refusing a write, the store applying a write whose fsync
//! fails, and a stalled disk. Each must give a prompt, correct error — never a hang, never a 2xx
//! for a change that is not written — keep memory equal to the store, leave other users working,
//! and recover without a restart once the fault clears.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_engine::{Config, Engine, ErrorId, OpenError};
use latchkey_storage::faults::Faults;
use reqwest::StatusCode;
use serde_json::json;
use support::TestServer;

/// The user's state and sequence as the running server sees it, then as the store holds it
/// (after a graceful restart), which must agree. Returns the server on the same data.
async fn memory_equals_disk(server: TestServer, id: &str) -> (TestServer, (String, u64)) {
    let in_memory = server.state_and_sequence(id).await;
    let log = server.event_log(id).await;
    let sequences: Vec<u64> = log.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (1..=in_memory.1).collect();
    assert_eq!(
        sequences, expected,
        "event log is gap-free up to the snapshot"
    );
    let server = TestServer::reopen(server.stop().await).await;
    assert_eq!(
        server.state_and_sequence(id).await,
        in_memory,
        "disk matches memory"
    );
    (server, in_memory)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_panicking_mid_command_fails_that_call_only() {
    let server = TestServer::start().await;
    let victim = server.create_human("victim@example.com").await;
    let bystander = server.create_human("bystander@example.com").await;
    let (_, before) = server.state_and_sequence(&victim).await;

    // Stall the actor, queue the panic, then the lock: the lock is in the mailbox when the actor
    // dies (or, if it arrives after, goes to a fresh actor).
    assert!(server
        .engine
        .inject_actor_stall(&victim, Duration::from_millis(200)));
    assert!(server.engine.inject_actor_panic(&victim));
    let lock = {
        let (client, url) = (
            server.client.clone(),
            format!("{}/v2/users/{victim}/lock", server.base),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = client
                .post(url)
                .bearer_auth(support::ADMIN_TOKEN)
                .json(&json!({}))
                .send()
                .await
                .expect("request");
            (
                reply.status(),
                reply.json::<serde_json::Value>().await.expect("json"),
                started.elapsed(),
            )
        })
    };
    let (status, body, took) = lock.await.expect("task");
    // Either the lock ran before the panic (200) or it was lost with the actor (500, unknown
    // outcome reported as such); never a hang.
    assert!(took < Duration::from_secs(2), "answered in {took:?}");
    match status {
        StatusCode::OK => assert_eq!(body["details"]["sequence"], (before + 1).to_string()),
        StatusCode::INTERNAL_SERVER_ERROR => {
            assert_eq!(body["details"][0]["id"], "USER-ACTOR-FAILED")
        }
        other => panic!("unexpected {other}: {body}"),
    }
    // The bystander never noticed; the victim is reloaded from disk and works again.
    assert_eq!(
        server
            .post(&format!("/v2/users/{bystander}/lock"), json!({}))
            .await
            .status,
        StatusCode::OK
    );
    let (state, sequence) = server.state_and_sequence(&victim).await;
    let locked_before = status == StatusCode::OK;
    assert_eq!(
        (state.as_str(), sequence),
        if locked_before {
            ("USER_STATE_LOCKED", before + 1)
        } else {
            ("USER_STATE_ACTIVE", before)
        }
    );
    let action = if locked_before { "unlock" } else { "lock" };
    let reply = server
        .post(&format!("/v2/users/{victim}/{action}"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    memory_equals_disk(server, &victim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_is_a_prompt_503_that_changes_nothing_and_heals() {
    let faults = Faults::new();
    let server = TestServer::start_with(|c| c.faults(faults.clone())).await;
    let users: Vec<String> = futures::future::join_all((0..20).map(|i| {
        let server = &server;
        async move { server.create_human(&format!("u{i}@example.com")).await }
    }))
    .await;
    let reader = server.create_human("reader@example.com").await;
    let before = server.state_and_sequence(&users[0]).await;

    faults.fail_apply(true);
    let server = Arc::new(server);
    let started = Instant::now();
    let replies = futures::future::join_all(users.iter().map(|id| {
        let server = server.clone();
        let id = id.clone();
        async move {
            server
                .post(&format!("/v2/users/{id}/lock"), json!({}))
                .await
        }
    }))
    .await;
    assert!(started.elapsed() < Duration::from_secs(2), "prompt");
    for reply in &replies {
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(reply.error_id(), "STORE-UNAVAILABLE");
    }
    // Reads keep working during the fault, and show nothing changed.
    assert_eq!(server.state_and_sequence(&users[0]).await, before);
    assert_eq!(
        server.state_and_sequence(&reader).await.0,
        "USER_STATE_ACTIVE"
    );

    faults.clear();
    for id in &users {
        let reply = server
            .post(&format!("/v2/users/{id}/lock"), json!({}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "healed without restart: {}",
            reply.body
        );
        assert_eq!(reply.sequence(), before.1 + 1, "no sequence was burnt");
    }
    let server = Arc::into_inner(server).expect("sole owner");
    let (_, after) = memory_equals_disk(server, &users[0]).await;
    assert_eq!(after, ("USER_STATE_LOCKED".into(), before.1 + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_reports_an_unknown_outcome_and_memory_follows_the_store() {
    let faults = Faults::new();
    let server = TestServer::start_with(|c| c.faults(faults.clone())).await;
    let id = server.create_human("fsync@example.com").await;
    let (_, before) = server.state_and_sequence(&id).await;

    faults.fail_flush(true);
    let reply = server
        .post(&format!("/v2/users/{id}/lock"), json!({}))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(reply.error_id(), "STORE-OUTCOME-UNKNOWN");
    faults.clear();
    // The change was applied: the reloaded user shows it, and it reaches the disk.
    let (_, (state, sequence)) = memory_equals_disk(server, &id).await;
    assert_eq!(
        (state.as_str(), sequence),
        ("USER_STATE_LOCKED", before + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_disk_times_out_promptly_and_the_write_lands_later() {
    let faults = Faults::new();
    let server = TestServer::start_with(|c| {
        c.faults(faults.clone())
            .call_timeout(Duration::from_millis(500))
    })
    .await;
    let id = server.create_human("slow@example.com").await;
    let bystander = server.create_human("fast@example.com").await;
    let (_, before) = server.state_and_sequence(&id).await;
    server.state_and_sequence(&bystander).await; // active in memory

    // The bounds below are liveness checks against the injected 4 s stall (answered without
    // waiting it out), not performance claims.
    faults.delay_writes(Duration::from_secs(4));
    let started = Instant::now();
    let reply = server
        .post(&format!("/v2/users/{id}/lock"), json!({}))
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
    assert_eq!(reply.error_id(), "CALL-TIMEOUT");
    assert!(took < Duration::from_secs(3), "answered in {took:?}");
    // A read of another user is not stuck behind the disk.
    let started = Instant::now();
    assert_eq!(
        server.state_and_sequence(&bystander).await.0,
        "USER_STATE_ACTIVE"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not stuck behind the disk"
    );

    faults.clear();
    tokio::time::sleep(Duration::from_millis(4200)).await;
    // The timed-out write was not lost or half-done: it landed, once, and memory agrees.
    let (_, (state, sequence)) = memory_equals_disk(server, &id).await;
    assert_eq!(
        (state.as_str(), sequence),
        ("USER_STATE_LOCKED", before + 1)
    );
}

/// A background thread of the store dies: the store is failed, and says so — `/readyz` turns
/// 503 with the reason, every write answers STORE-UNAVAILABLE at once (well inside the call
/// timeout), and nothing more is written, even once the medium works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_flusher_fails_the_store_loudly_and_at_once() {
    let faults = Faults::new();
    let server = TestServer::start_with(|c| c.faults(faults.clone())).await;
    let id = server.create_human("doomed@example.com").await;
    let other = server.create_human("other@example.com").await;
    assert_eq!(server.get("/readyz").await.status, StatusCode::OK);

    faults.panic_flush(true);
    let lock = server
        .post(&format!("/v2/users/{id}/lock"), json!({}))
        .await;
    assert_eq!(
        lock.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        lock.body
    );
    assert_eq!(
        lock.error_id(),
        "STORE-OUTCOME-UNKNOWN",
        "it was applied, not confirmed"
    );
    faults.clear();

    let ready = server
        .send(reqwest::Method::GET, "/readyz", None, None, None)
        .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready
            .body
            .as_str()
            .is_some_and(|text| text.contains("flusher panicked")),
        "{}",
        ready.body
    );
    let started = Instant::now();
    for path in [
        format!("/v2/users/{other}/lock"),
        format!("/v2/users/{id}/unlock"),
    ] {
        let reply = server.post(&path, json!({})).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(reply.error_id(), "STORE-UNAVAILABLE");
    }
    let created = server
        .post(
            "/v2/users/human",
            json!({"profile": {"givenName": "A", "familyName": "B"}, "email": {"email": "late@example.com"}}),
        )
        .await;
    assert_eq!(created.error_id(), "STORE-UNAVAILABLE", "{}", created.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not after the call timeout"
    );
}

/// A close stuck on the disk at shutdown does not hang the shutdown: it fails after
/// `close_timeout` with STORE-UNAVAILABLE while the close goes on, holding the directory, and
/// what was acknowledged is there when the directory is opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_stuck_on_the_disk_fails_the_shutdown_in_time_and_loses_nothing() {
    let faults = Faults::new();
    let server = TestServer::start_with(|c| {
        c.faults(faults.clone())
            .close_timeout(Duration::from_millis(300))
    })
    .await;
    let id = server.create_locked_user("stuck@example.com").await;
    let reply = server
        .post(&format!("/v2/users/{id}/unlock"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let acknowledged = server.state_and_sequence(&id).await;

    // A liveness bound against the injected 6 s stall, not a performance claim.
    faults.delay_writes(Duration::from_secs(6));
    let started = Instant::now();
    let err = server
        .engine
        .shutdown()
        .await
        .expect_err("the close outlasts its timeout");
    assert_eq!(err.id, ErrorId::StoreUnavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up in {:?}",
        started.elapsed()
    );
    faults.clear();
    let dir = server.stop().await;

    // The close goes on and holds the directory until it ends; then it opens as it was.
    let mut refused = 0;
    loop {
        match Engine::open(Config::default().data_dir(dir.path())).await {
            Ok(engine) => {
                engine.shutdown().await.unwrap();
                break;
            }
            Err(OpenError::Store(e)) if e.is_locked() && started.elapsed() < WAIT => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("reopening: {e}"),
        }
    }
    assert!(
        refused > 0,
        "the close was still running when shutdown returned"
    );
    let server = TestServer::reopen(dir).await;
    assert_eq!(server.state_and_sequence(&id).await, acknowledged);
}

/// How long the stalled close may take to end in the test above, with room to spare.
const WAIT: Duration = Duration::from_secs(20);
