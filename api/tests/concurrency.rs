//! Real concurrency over real HTTP: linearizable per user, independent across users.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_unlocks_of_one_user_give_exactly_one_success() {
    let server = Arc::new(TestServer::start().await);
    let id = server.create_locked_user("hot@example.com").await;
    let (_, before) = server.state_and_sequence(&id).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (server, id, barrier) = (server.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                server
                    .post(&format!("/v2/users/{id}/unlock"), json!({}))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut precondition = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::BAD_REQUEST if reply.body["code"] == 9 => precondition += 1,
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!((ok, precondition), (1, 999));
    let (state, after) = server.state_and_sequence(&id).await;
    assert_eq!(state, "USER_STATE_ACTIVE");
    assert_eq!(after, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_unlock_pairs_over_many_users_keep_sequences_exact() {
    let server = Arc::new(TestServer::start().await);
    let mut users = Vec::new();
    for i in 0..100 {
        users.push(server.create_human(&format!("u{i}@example.com")).await);
    }
    // 1,000 concurrent pairs, 10 per user, racing each other
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (server, id) = (server.clone(), users[i % 100].clone());
            tokio::spawn(async move {
                let mut successes = 0u64;
                for action in ["lock", "unlock"] {
                    let reply = server
                        .post(&format!("/v2/users/{id}/{action}"), json!({}))
                        .await;
                    match reply.status {
                        StatusCode::OK => successes += 1,
                        StatusCode::BAD_REQUEST => assert_eq!(reply.body["code"], 9),
                        other => panic!("unexpected {other}: {}", reply.body),
                    }
                }
                (id, successes)
            })
        })
        .collect();
    let mut successes = std::collections::HashMap::new();
    for task in tasks {
        let (id, n) = task.await.unwrap();
        *successes.entry(id).or_insert(0u64) += n;
    }
    for id in &users {
        let (_, sequence) = server.state_and_sequence(id).await;
        assert_eq!(sequence, 1 + successes[id], "user {id}");
        let log = server.event_log(id).await;
        assert_eq!(
            log.len() as u64,
            sequence,
            "one event per successful command"
        );
    }
}
