//! Histories of concurrent operations on users, and a linearizability checker for them.
//!
//! Each recorded [`Operation`] has an invocation and a response time (one clock for all clients)
//! and what the client saw. The checker asks, per user, whether some total order of the operations
//! that respects real time (an operation that returned before another was invoked comes first)
//! explains every result under the sequential specification below — Wing & Gong's search with
//! Lowe's memoization of (set of linearized operations, model state).
//!
//! Crashes: an operation without an answer (connection cut by SIGKILL, a 5xx, a timeout) has an
//! [`Outcome::Unknown`] result and its response time is set to the kill: it either took effect at
//! some point between its invocation and the kill, or not at all. The model is kept as the *set*
//! of states consistent with the history so far, which makes that choice without backtracking.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// The lifecycle states the operations below can reach (users are never deleted here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Initial,
    Active,
    Locked,
    Inactive,
}

impl State {
    pub fn from_wire(name: &str) -> Option<State> {
        Some(match name {
            "USER_STATE_INITIAL" => State::Initial,
            "USER_STATE_ACTIVE" => State::Active,
            "USER_STATE_LOCKED" => State::Locked,
            "USER_STATE_INACTIVE" => State::Inactive,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lock,
    Unlock,
    Deactivate,
    Reactivate,
    Get,
}

impl Op {
    pub const ALL: [Op; 5] = [
        Op::Lock,
        Op::Unlock,
        Op::Deactivate,
        Op::Reactivate,
        Op::Get,
    ];

    /// The REST path suffix of a command (`None` for Get).
    pub fn action(self) -> Option<&'static str> {
        match self {
            Op::Lock => Some("lock"),
            Op::Unlock => Some("unlock"),
            Op::Deactivate => Some("deactivate"),
            Op::Reactivate => Some("reactivate"),
            Op::Get => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A command took effect; the user's sequence after it.
    Ok { sequence: u64 },
    /// A read: state and sequence.
    Read { state: State, sequence: u64 },
    /// FailedPrecondition: the command was not allowed and changed nothing.
    Refused,
    /// No answer: took effect before the response time, or never.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub user: String,
    pub op: Op,
    pub invoked: Duration,
    pub returned: Duration,
    pub outcome: Outcome,
    /// The HTTP status, or 0 when no response arrived.
    pub status: u16,
}

/// The sequential specification (the product's transition table for these commands).
pub fn transition(op: Op, state: State) -> Option<State> {
    use State::*;
    match (op, state) {
        (Op::Lock, Active | Initial) => Some(Locked),
        (Op::Unlock, Locked) => Some(Active),
        (Op::Deactivate, Active | Locked) => Some(Inactive),
        (Op::Reactivate, Inactive) => Some(Active),
        _ => None,
    }
}

/// Every (state, sequence) the user may be in; sorted, no duplicates.
type Model = Vec<(State, u64)>;

/// The model after `operation`, or `None` when no state in `model` explains its result.
fn step(model: &Model, operation: &Operation) -> Option<Model> {
    let mut next: Model = Vec::new();
    for &(state, sequence) in model {
        let after = transition(operation.op, state);
        match (&operation.outcome, operation.op) {
            (
                Outcome::Read {
                    state: s,
                    sequence: n,
                },
                Op::Get,
            ) if (state, sequence) == (*s, *n) => {
                next.push((state, sequence));
            }
            (Outcome::Ok { sequence: n }, op) if op != Op::Get => {
                if let Some(after) = after {
                    if sequence + 1 == *n {
                        next.push((after, *n));
                    }
                }
            }
            (Outcome::Refused, op) if op != Op::Get && after.is_none() => {
                next.push((state, sequence));
            }
            (Outcome::Unknown, _) => {
                next.push((state, sequence));
                if let Some(after) = after {
                    next.push((after, sequence + 1));
                }
            }
            _ => {}
        }
    }
    next.sort_unstable();
    next.dedup();
    (!next.is_empty()).then_some(next)
}

/// Checks every user's history from its initial state. Returns how many operations were checked.
pub fn check(
    initial: &BTreeMap<String, (State, u64)>,
    history: &[Operation],
) -> Result<usize, String> {
    let mut per_user: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        // An unanswered read has no effect and says nothing.
        if operation.op == Op::Get && operation.outcome == Outcome::Unknown {
            continue;
        }
        per_user.entry(&operation.user).or_default().push(operation);
    }
    let mut checked = 0;
    for (user, operations) in per_user {
        let start = *initial
            .get(user)
            .ok_or_else(|| format!("no initial state for {user}"))?;
        check_user(vec![start], &operations).map_err(|e| format!("user {user}: {e}"))?;
        checked += operations.len();
    }
    Ok(checked)
}

const NIL: usize = usize::MAX;

/// Wing–Gong–Lowe over one user's operations.
fn check_user(initial: Model, operations: &[&Operation]) -> Result<(), String> {
    let n = operations.len();
    for operation in operations {
        if operation.returned < operation.invoked {
            return Err(format!(
                "operation returns before it is invoked: {operation:?}"
            ));
        }
    }
    // Events in time order; at equal times calls first (treated as concurrent: permissive).
    let mut events: Vec<(Duration, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, operation) in operations.iter().enumerate() {
        events.push((operation.invoked, false, i));
        events.push((operation.returned, true, i));
    }
    events.sort_by_key(|&(at, is_return, i)| (at, is_return, i));
    // A doubly linked list over the events; node 0 is the head sentinel, node k is events[k - 1].
    let len = events.len();
    let mut next: Vec<usize> = (1..=len + 1).collect();
    next[len] = NIL;
    let mut prev: Vec<usize> = (0..=len).map(|k| k.wrapping_sub(1)).collect();
    let mut return_of = vec![0; n];
    for (k, &(_, is_return, i)) in events.iter().enumerate() {
        if is_return {
            return_of[i] = k + 1;
        }
    }
    let op_at = |node: usize| events[node - 1].2;
    let is_return_at = |node: usize| events[node - 1].1;

    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        next[prev[node]] = next[node];
        if next[node] != NIL {
            prev[next[node]] = prev[node];
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        if next[node] != NIL {
            prev[next[node]] = node;
        }
        next[prev[node]] = node;
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Model)> = HashSet::new();
    let mut stack: Vec<(usize, Model)> = Vec::new();
    let mut model = initial;
    let mut entry = next[0];
    let mut steps: u64 = 0;
    let budget: u64 = 50_000_000;
    while next[0] != NIL {
        steps += 1;
        if steps > budget {
            return Err(format!(
                "checker gave up after {budget} steps ({n} operations)"
            ));
        }
        let i = op_at(entry);
        if !is_return_at(entry) {
            if let Some(after) = step(&model, operations[i]) {
                let mut with = linearized.clone();
                with[i / 64] |= 1 << (i % 64);
                if cache.insert((with.clone(), after.clone())) {
                    stack.push((entry, std::mem::replace(&mut model, after)));
                    linearized = with;
                    lift(&mut next, &mut prev, entry);
                    lift(&mut next, &mut prev, return_of[i]);
                    entry = next[0];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // `i` returned before any order could place it: undo the last choice.
            let Some((call, before)) = stack.pop() else {
                return Err(format!(
                    "not linearizable: no order explains {:?} {:?} → {:?} (invoked {:?}, returned {:?}); possible states before it: {:?}",
                    operations[i].op,
                    operations[i].user,
                    operations[i].outcome,
                    operations[i].invoked,
                    operations[i].returned,
                    model
                ));
            };
            let j = op_at(call);
            linearized[j / 64] &= !(1 << (j % 64));
            model = before;
            unlift(&mut next, &mut prev, return_of[j]);
            unlift(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Ok(())
}

/// One client's loop: random commands and reads on `users` until `stop`, each recorded.
/// Requests that never reached the server (connection refused) are not recorded.
pub async fn client_loop(
    client: reqwest::Client,
    base: String,
    token: &'static str,
    users: std::sync::Arc<Vec<String>>,
    clock: std::time::Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seed: u64,
) -> Vec<Operation> {
    let mut rng = super::Rng::new(seed);
    let mut out = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let user = rng.pick(&users).clone();
        let op = *rng.pick(&Op::ALL);
        let request = match op.action() {
            Some(action) => client
                .post(format!("{base}/v2/users/{user}/{action}"))
                .json(&serde_json::json!({})),
            None => client.get(format!("{base}/v2/users/{user}")),
        };
        let invoked = clock.elapsed();
        let result = request.bearer_auth(token).send().await;
        let mut status = 0;
        let outcome = match result {
            Err(e) if e.is_connect() => {
                // Nothing was sent: the server is down; wait for the next cycle.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(_) => Outcome::Unknown,
            Ok(response) => {
                status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let sequence = body["details"]["sequence"]
                    .as_str()
                    .and_then(|s| s.parse().ok());
                match (status, op, sequence) {
                    (200, Op::Get, Some(sequence)) => {
                        match body["user"]["state"].as_str().and_then(State::from_wire) {
                            Some(state) => Outcome::Read { state, sequence },
                            None => Outcome::Unknown,
                        }
                    }
                    (200, _, Some(sequence)) => Outcome::Ok { sequence },
                    (400, op, _) if op != Op::Get && body["code"] == 9 => Outcome::Refused,
                    _ => Outcome::Unknown,
                }
            }
        };
        out.push(Operation {
            user,
            op,
            invoked,
            returned: clock.elapsed(),
            outcome,
            status,
        });
    }
    out
}

/// Reads every user once (e.g. right after a restart); the reads, and the states they saw.
pub async fn read_users(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    users: &[String],
    clock: std::time::Instant,
) -> (
    Vec<Operation>,
    std::collections::BTreeMap<String, (State, u64)>,
) {
    let (mut reads, mut states) = (Vec::new(), std::collections::BTreeMap::new());
    for user in users {
        let invoked = clock.elapsed();
        let body: serde_json::Value = client
            .get(format!("{base}/v2/users/{user}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("read after restart")
            .json()
            .await
            .expect("json");
        let state = State::from_wire(body["user"]["state"].as_str().unwrap_or("")).expect("state");
        let sequence: u64 = body["details"]["sequence"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("sequence");
        states.insert(user.clone(), (state, sequence));
        reads.push(Operation {
            user: user.clone(),
            op: Op::Get,
            invoked,
            returned: clock.elapsed(),
            outcome: Outcome::Read { state, sequence },
            status: 200,
        });
    }
    (reads, states)
}

/// Creates `n` ACTIVE human users (with a password hash) and returns their ids.
pub async fn create_users(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let mut users = Vec::new();
    for i in 0..n {
        let reply: serde_json::Value = client
            .post(format!("{base}/v2/users/human"))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "profile": {"givenName": "C", "familyName": "K"},
                "email": {"email": format!("{prefix}{i}@example.com")},
                "hashedPassword": {"hash": super::HASH},
            }))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        users.push(reply["userId"].as_str().expect("userId").to_owned());
    }
    users
}
