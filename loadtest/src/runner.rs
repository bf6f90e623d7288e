//! The measurement loops. Closed loop: `concurrency` clients, each sending its next request as
//! soon as the previous one answered (maximum throughput). Open loop: requests are sent at fixed
//! intended times (`rate`), and latency is measured from the *intended* send time, so a server
//! that falls behind shows its queueing instead of hiding it (no coordinated omission).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::recorder::{Check, Recorder, RunResult};
use crate::schedule::Schedule;
use crate::target::{Op, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Many clients race to unlock the same few locked users; each cycle re-locks them.
    UnlockStorm,
    /// Lock/unlock pairs spread over many users (every command succeeds and writes).
    Uniform,
    /// Reads and lock/unlock writes over many users (`--read-ratio`).
    Mixed,
    /// Bulk user creation (precomputed password hash).
    Create,
    /// First touch of passivated users (cold activation).
    Cold,
    /// One user alone, alternating lock/unlock with `--concurrency` commands in flight (embedded).
    Hot,
    /// Password checks through CreateSession: logins, refused logins of locked users, and other
    /// users' commands while one user is attacked (`login.rs`; --spawn, REST).
    Login,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub scenario: Scenario,
    pub concurrency: usize,
    pub duration: Duration,
    /// Run this long before the measured `duration` starts (same clients and users; an open
    /// loop at the same rate), so a fresh store's first seconds are not part of the numbers.
    pub warmup: Duration,
    pub rate: Option<f64>,
    pub users: usize,
    pub hot_users: usize,
    pub read_ratio: f64,
    pub count: Option<u64>,
}

/// A tiny deterministic PRNG per client (xorshift64*): mixes reads and writes reproducibly.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Creates `n` users through `target` with `concurrency` clients; `locked`: lock each too.
pub async fn prepare_users(
    target: &Target,
    n: usize,
    concurrency: usize,
    tag: &str,
    locked: bool,
    warm: bool,
) -> Result<Vec<String>, String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.clamp(1, 64) {
        let (target, next, tag) = (target.clone(), next.clone(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return Ok::<_, String>(ids);
                }
                let id = target.create_user(i, &tag).await?;
                // Touch each user so steady-state runs do not measure first activations
                // (the `cold` scenario measures those, with `warm` false).
                if locked {
                    target.run(Op::Lock, &id).await?;
                } else if warm {
                    target.run(Op::Get, &id).await?;
                }
                ids.push(id);
            }
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for task in tasks {
        ids.extend(task.await.map_err(|e| e.to_string())??);
    }
    Ok(ids)
}

/// Runs `settings.scenario` against `target` with users prepared by the caller.
pub async fn run(
    target: &Target,
    settings: &Settings,
    users: Arc<Vec<String>>,
    progress: Arc<AtomicU64>,
    checks_apply: bool,
) -> RunResult {
    match (settings.scenario, settings.rate) {
        (Scenario::UnlockStorm, _) => storm(target, settings, users, progress, checks_apply).await,
        (Scenario::Uniform | Scenario::Mixed, Some(rate)) => {
            open_loop(target, settings, users, rate, progress, checks_apply).await
        }
        (Scenario::Uniform | Scenario::Mixed, None) => {
            closed_loop(target, settings, users, progress, checks_apply).await
        }
        (Scenario::Create, _) => create(target, settings, progress).await,
        (Scenario::Cold, _) => cold(target, settings, users, progress).await,
        (Scenario::Hot, _) => hot(target, settings, users, progress, checks_apply).await,
        // Its phases are run by `login.rs`; as one loop it is a closed loop of logins.
        (Scenario::Login, _) => {
            crate::login::closed_loop(target, &users, Op::Login, settings.duration).await
        }
    }
}

/// Each client owns a disjoint share of the users and toggles them in turn (reads mixed in for
/// `mixed`), so every write is a valid transition: any refusal is a correctness failure.
async fn closed_loop(
    target: &Target,
    settings: &Settings,
    users: Arc<Vec<String>>,
    progress: Arc<AtomicU64>,
    checks_apply: bool,
) -> RunResult {
    let start = Instant::now() + settings.warmup;
    let end = start + settings.duration;
    let clients = settings.concurrency.min(users.len()).max(1);
    let read_ratio = if settings.scenario == Scenario::Mixed {
        settings.read_ratio
    } else {
        0.0
    };
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (task_target, users, progress) = (target.clone(), users.clone(), progress.clone());
        tasks.push(target.spawn_client(client, async move {
            // Over HTTP, a connection of its own (`connection.rs`): the fast client.
            let mut session = task_target.session(client).await;
            let mut recorder = Recorder::new(start, progress);
            let mine: Vec<&String> = users.iter().skip(client).step_by(clients).collect();
            let mut locked = vec![false; mine.len()];
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (client as u64 + 1));
            let mut i = 0usize;
            while Instant::now() < end {
                let k = i % mine.len();
                let op = if rng.next_f64() < read_ratio {
                    Op::Get
                } else {
                    locked[k] = !locked[k];
                    if locked[k] {
                        Op::Lock
                    } else {
                        Op::Unlock
                    }
                };
                let sent = Instant::now();
                let outcome = session.run(op, mine[k]).await;
                recorder.record(sent, &outcome);
                i += 1;
            }
            recorder
        }));
    }
    let recorders = join(tasks).await;
    let elapsed = start.elapsed();
    let failures: u64 = recorders
        .iter()
        .map(|r| r.errors.values().sum::<u64>() + r.warmup_failures)
        .sum();
    let checks = no_failures("every command succeeded", failures, checks_apply);
    Recorder::merge(recorders, elapsed, checks)
}

/// Requests at fixed intended times; latency counted from the intended time.
///
/// Like wrk2: `concurrency` clients, each with its own connection (HTTP) held for the whole run.
/// The schedule (`schedule.rs`) releases each request when it comes due; a free client takes
/// the next one. When every client is busy, due requests wait — and that wait is
/// part of their latency, so a server that falls behind shows its queueing.
async fn open_loop(
    target: &Target,
    settings: &Settings,
    users: Arc<Vec<String>>,
    rate: f64,
    progress: Arc<AtomicU64>,
    checks_apply: bool,
) -> RunResult {
    let clients = settings.concurrency.max(1);
    let mut sessions = Vec::with_capacity(clients);
    for client in 0..clients {
        sessions.push(target.session(client).await);
    }
    // The schedule starts at `begin`; requests due before `start` are the warm-up (same rate,
    // same users, not measured).
    let begin = Instant::now();
    let start = begin + settings.warmup;
    let read_ratio = if settings.scenario == Scenario::Mixed {
        settings.read_ratio
    } else {
        0.0
    };
    let schedule = Arc::new(Schedule::new(
        begin,
        rate,
        settings.warmup + settings.duration,
    ));
    // A thread of its own keeps time while every client is idle: tokio's timer has 1 ms
    // granularity, which would bunch the sends and add up to 1 ms of lateness to every latency.
    let timer = {
        let schedule = schedule.clone();
        std::thread::spawn(move || schedule.run_timer(clients))
    };
    let n = users.len().max(1);
    let mut tasks = Vec::with_capacity(clients);
    for (client, mut session) in sessions.into_iter().enumerate() {
        let (users, schedule) = (users.clone(), schedule.clone());
        let mut recorder = Recorder::new(start, progress.clone());
        tasks.push(target.spawn_client(client, async move {
            while let Some(i) = schedule.next().await {
                // Request i is round i / n for user i % n. Rounds pair up: a lock and the unlock
                // after it, or (drawn per pair, so a user's locks and unlocks stay in turn) two
                // reads.
                let (user, round) = (i as usize % n, i as usize / n);
                let pair = (round / 2 * n + user) as u64;
                let op = if unit_interval(pair) < read_ratio {
                    Op::Get
                } else if round.is_multiple_of(2) {
                    Op::Lock
                } else {
                    Op::Unlock
                };
                let outcome = session.run(op, &users[user]).await;
                recorder.record(schedule.intended(i), &outcome);
                schedule.release_due();
            }
            recorder
        }));
    }
    let recorders = join(tasks).await;
    let elapsed = start.elapsed();
    let _ = tokio::task::spawn_blocking(move || timer.join()).await;
    // Measured failures are in the error table (an overloaded server may refuse a command whose
    // predecessor is still in flight); a warm-up that failed makes the steady state suspect.
    let checks = if settings.warmup.is_zero() {
        Vec::new()
    } else {
        let failures = recorders.iter().map(|r| r.warmup_failures).sum();
        no_failures("every warm-up request succeeded", failures, checks_apply)
    };
    Recorder::merge(recorders, elapsed, checks)
}

/// A draw in [0, 1) for `i` (splitmix64): which open-loop requests are reads does not depend on
/// which client sends them.
fn unit_interval(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Cycles: every client unlocks its hot user at once (exactly one may succeed per user), then
/// one client per user re-locks it. Barriers keep the cycles in step.
async fn storm(
    target: &Target,
    settings: &Settings,
    users: Arc<Vec<String>>,
    progress: Arc<AtomicU64>,
    checks_apply: bool,
) -> RunResult {
    let start = Instant::now();
    let end = start + settings.duration;
    let clients = settings.concurrency.max(users.len());
    let barrier = Arc::new(Barrier::new(clients));
    let go = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (task_target, users, progress, barrier, go) = (
            target.clone(),
            users.clone(),
            progress.clone(),
            barrier.clone(),
            go.clone(),
        );
        tasks.push(target.spawn_client(client, async move {
            let mut session = task_target.session(client).await;
            let mut recorder = Recorder::new(start, progress);
            let user = &users[client % users.len()];
            // (cycle, succeeded) for this client's unlocks
            let mut wins = Vec::new();
            let mut relock_failures = 0u64;
            loop {
                if barrier.wait().await.is_leader() {
                    go.store(Instant::now() < end, Ordering::SeqCst);
                }
                barrier.wait().await;
                if !go.load(Ordering::SeqCst) {
                    break;
                }
                let sent = Instant::now();
                let outcome = session.run(Op::Unlock, user).await;
                wins.push(outcome.is_ok());
                recorder.record(sent, &outcome);
                barrier.wait().await;
                if client < users.len() && session.run(Op::Lock, user).await.is_err() {
                    relock_failures += 1;
                }
            }
            (recorder, wins, relock_failures)
        }));
    }
    let mut recorders = Vec::new();
    let mut per_cycle: Vec<Vec<u32>> = Vec::new();
    let mut relock_failures = 0;
    let hot = users.len();
    for (client, task) in tasks.into_iter().enumerate() {
        let Ok((recorder, wins, failures)) = task.await else {
            continue;
        };
        recorders.push(recorder);
        relock_failures += failures;
        for (cycle, won) in wins.into_iter().enumerate() {
            if per_cycle.len() <= cycle {
                per_cycle.push(vec![0; hot]);
            }
            per_cycle[cycle][client % hot] += u32::from(won);
        }
    }
    let elapsed = start.elapsed();
    let bad_cycles = per_cycle
        .iter()
        .filter(|users| users.iter().any(|wins| *wins != 1))
        .count();
    let checks = if checks_apply {
        vec![
            Check {
                name: "exactly one successful unlock per user per cycle".into(),
                passed: bad_cycles == 0 && !per_cycle.is_empty(),
                detail: format!("{} cycles, {bad_cycles} violating", per_cycle.len()),
            },
            Check {
                name: "every re-lock succeeded".into(),
                passed: relock_failures == 0,
                detail: format!("{relock_failures} failed"),
            },
        ]
    } else {
        Vec::new()
    };
    Recorder::merge(recorders, elapsed, checks)
}

async fn create(target: &Target, settings: &Settings, progress: Arc<AtomicU64>) -> RunResult {
    let start = Instant::now();
    let end = start + settings.duration;
    let limit = settings.count.unwrap_or(u64::MAX);
    let next = Arc::new(AtomicU64::new(0));
    let tag = format!("c{}", std::process::id());
    let mut tasks = Vec::new();
    for _ in 0..settings.concurrency.max(1) {
        let (target, next, progress, tag) =
            (target.clone(), next.clone(), progress.clone(), tag.clone());
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::new(start, progress);
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let sent = Instant::now();
                let outcome = target.create_user(n, &tag).await.map(|_| ());
                recorder.record(sent, &outcome);
            }
            recorder
        }));
    }
    let recorders = join(tasks).await;
    let elapsed = start.elapsed();
    let created: u64 = recorders.iter().map(|r| r.ok).sum();
    let checks = match settings.count {
        Some(count) => vec![Check {
            name: format!("created {count} users"),
            passed: created == count,
            detail: format!("{created} created in {:.1} s", elapsed.as_secs_f64()),
        }],
        None => Vec::new(),
    };
    Recorder::merge(recorders, elapsed, checks)
}

/// Every prepared (and passivated) user is read once: each read activates an actor from disk.
async fn cold(
    target: &Target,
    settings: &Settings,
    users: Arc<Vec<String>>,
    progress: Arc<AtomicU64>,
) -> RunResult {
    let start = Instant::now();
    let clients = settings.concurrency.max(1);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (target, users, progress) = (target.clone(), users.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::new(start, progress);
            for user in users.iter().skip(client).step_by(clients) {
                let sent = Instant::now();
                let outcome = target.run(Op::Get, user).await;
                recorder.record(sent, &outcome);
            }
            recorder
        }));
    }
    let recorders = join(tasks).await;
    Recorder::merge(recorders, start.elapsed(), Vec::new())
}

/// One user, `concurrency` commands in flight from one task in order: the actor sees them
/// alternate, so every command is a valid transition that writes. Embedded only: ordering
/// across HTTP connections is not preserved.
async fn hot(
    target: &Target,
    settings: &Settings,
    users: Arc<Vec<String>>,
    progress: Arc<AtomicU64>,
    checks_apply: bool,
) -> RunResult {
    use futures::stream::{self, StreamExt};
    let start = Instant::now();
    let end = start + settings.duration;
    let user = users.first().cloned().unwrap_or_default();
    let window = settings.concurrency.max(1);
    let mut recorder = Recorder::new(start, progress);
    let ops = (0u64..).map_while(|i| (Instant::now() < end).then_some(i));
    let mut results = stream::iter(ops)
        .map(|i| {
            let (target, user) = (target.clone(), user.clone());
            async move {
                let op = if i % 2 == 0 { Op::Lock } else { Op::Unlock };
                let sent = Instant::now();
                (sent, target.run(op, &user).await)
            }
        })
        .buffered(window);
    while let Some((sent, outcome)) = results.next().await {
        recorder.record(sent, &outcome);
    }
    drop(results);
    let failures: u64 = recorder.errors.values().sum();
    let checks = no_failures(
        "every command succeeded (strict alternation)",
        failures,
        checks_apply,
    );
    Recorder::merge(vec![recorder], start.elapsed(), checks)
}

/// The check of scenarios in which every command is a valid transition: none may fail.
/// (Baseline runs pass `apply` false: a fixed-response server has nothing to check.)
fn no_failures(name: &str, failures: u64, apply: bool) -> Vec<Check> {
    if !apply {
        return Vec::new();
    }
    vec![Check {
        name: name.into(),
        passed: failures == 0,
        detail: format!("{failures} failed"),
    }]
}

async fn join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(value) = task.await {
            out.push(value);
        }
    }
    out
}
