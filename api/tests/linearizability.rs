//! Linearizability: the checker (`support/history.rs`) against histories built by hand — it must
//! accept the legal ones and reject each kind of violation — and then against real concurrent
//! HTTP traffic on a few hot users. The same checker runs on the crash histories in `crash.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::history::{check, client_loop, Op, Operation, Outcome, State};
use support::{TestServer, ADMIN_TOKEN};

fn op(op: Op, from_ms: u64, to_ms: u64, outcome: Outcome) -> Operation {
    Operation {
        user: "u".into(),
        op,
        invoked: Duration::from_millis(from_ms),
        returned: Duration::from_millis(to_ms),
        outcome,
        status: 200,
    }
}

fn ok(sequence: u64) -> Outcome {
    Outcome::Ok { sequence }
}

fn read(state: State, sequence: u64) -> Outcome {
    Outcome::Read { state, sequence }
}

fn verdict(start: (State, u64), history: &[Operation]) -> Result<usize, String> {
    check(&BTreeMap::from([("u".to_string(), start)]), history)
}

#[test]
fn a_sequential_legal_history_passes() {
    let history = [
        op(Op::Lock, 0, 1, ok(2)),
        op(Op::Lock, 2, 3, Outcome::Refused),
        op(Op::Unlock, 4, 5, ok(3)),
        op(Op::Get, 6, 7, read(State::Active, 3)),
        op(Op::Deactivate, 8, 9, ok(4)),
        op(Op::Reactivate, 10, 11, ok(5)),
    ];
    assert_eq!(verdict((State::Active, 1), &history), Ok(6));
}

#[test]
fn overlapping_operations_may_take_either_order() {
    // The read overlaps the lock: it may see before or after.
    for seen in [read(State::Active, 1), read(State::Locked, 2)] {
        let history = [op(Op::Lock, 0, 10, ok(2)), op(Op::Get, 1, 9, seen)];
        assert!(verdict((State::Active, 1), &history).is_ok());
    }
    // Ten concurrent unlocks, one wins.
    let mut history = vec![op(Op::Unlock, 0, 10, ok(3))];
    history.extend((0..9).map(|i| op(Op::Unlock, i, 10 + i, Outcome::Refused)));
    assert!(verdict((State::Locked, 2), &history).is_ok());
}

#[test]
fn two_winners_of_one_unlock_are_rejected() {
    let history = [op(Op::Unlock, 0, 10, ok(3)), op(Op::Unlock, 1, 9, ok(3))];
    assert!(verdict((State::Locked, 2), &history).is_err());
    let history = [op(Op::Unlock, 0, 10, ok(3)), op(Op::Unlock, 1, 9, ok(4))];
    assert!(verdict((State::Locked, 2), &history).is_err());
}

#[test]
fn a_stale_read_is_rejected() {
    let history = [
        op(Op::Lock, 0, 1, ok(2)),
        op(Op::Get, 2, 3, read(State::Active, 1)),
    ];
    assert!(verdict((State::Active, 1), &history).is_err());
}

#[test]
fn a_refusal_that_no_state_explains_is_rejected() {
    let history = [op(Op::Lock, 0, 1, Outcome::Refused)];
    assert!(verdict((State::Active, 1), &history).is_err());
}

#[test]
fn an_unanswered_command_may_or_may_not_have_happened_but_only_once() {
    let crashed = op(Op::Lock, 0, 5, Outcome::Unknown);
    for after in [read(State::Active, 1), read(State::Locked, 2)] {
        let history = [crashed.clone(), op(Op::Get, 6, 7, after)];
        assert!(verdict((State::Active, 1), &history).is_ok());
    }
    let history = [crashed.clone(), op(Op::Get, 6, 7, read(State::Locked, 3))];
    assert!(verdict((State::Active, 1), &history).is_err());
}

#[test]
fn an_acknowledged_command_lost_in_a_crash_is_rejected() {
    let history = [
        op(Op::Lock, 0, 1, ok(2)),
        // killed at 5, restarted, read:
        op(Op::Get, 6, 7, read(State::Active, 1)),
    ];
    assert!(verdict((State::Active, 1), &history).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_http_traffic_on_hot_users_is_linearizable() {
    let server = TestServer::start().await;
    let mut users = Vec::new();
    for i in 0..3 {
        users.push(server.create_human(&format!("hot{i}@example.com")).await);
    }
    let mut initial = BTreeMap::new();
    for id in &users {
        let (state, sequence) = server.state_and_sequence(id).await;
        initial.insert(
            id.clone(),
            (State::from_wire(&state).expect("state"), sequence),
        );
    }
    let users = Arc::new(users);
    let stop = Arc::new(AtomicBool::new(false));
    let clock = Instant::now();
    let clients: Vec<_> = (0..12)
        .map(|seed| {
            tokio::spawn(client_loop(
                server.client.clone(),
                server.base.clone(),
                ADMIN_TOKEN,
                users.clone(),
                clock,
                stop.clone(),
                seed,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    for client in clients {
        history.extend(client.await.expect("client"));
    }
    assert!(
        history.iter().all(|o| o.outcome != Outcome::Unknown),
        "no failures without faults"
    );
    let checked = check(&initial, &history).expect("linearizable");
    assert!(checked > 300, "only {checked} operations");
    let successes = history
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok { .. }))
        .count();
    assert!(successes > 30, "only {successes} successful commands");
}
