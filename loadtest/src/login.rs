//! The `login` scenario: password checks through CreateSession, over REST against a spawned
//! server, measured against what bounds them in the same run.
//!
//! 1. Raw Argon2id: the verifications per second this machine does with the server's parameters
//!    (the argon2 crate's defaults, OWASP's) on as many threads as the server's check pool (the
//!    cores). Successful logins must reach 0.9 × that: a login is a hash and little else.
//! 2. Logins: `--concurrency` clients, each logging its own user in again and again.
//! 3. Locked users: the same users locked, the same requests — refused at the user check, with
//!    no hash. They must reach 0.5 × the HTTP ceiling: the bare axum baseline answering the same
//!    requests with the same clients.
//! 4. A hot attacked user: other users' lock/unlock commands at a fixed rate (open loop, latency
//!    from the intended send time), alone and then while 10,000 wrong passwords for one user are
//!    in flight (lockout off, so each one that is admitted costs a hash). Their p99 must stay
//!    within 2 × the idle p99: the attacked user's checks wait in its own queue, one hash at a
//!    time, and beyond that queue are refused at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Serialize;

use crate::cli::{Cli, ProtocolArg};
use crate::recorder::{Recorder, RunResult};
use crate::runner::{self, Scenario, Settings};
use crate::scrape::machine;
use crate::servers;
use crate::target::{Op, Target, LOGIN_PASSWORD};

/// Wrong passwords in flight against the attacked user.
const ATTACKERS: usize = 10_000;

/// How long the attack runs before the measurement: past the server's call timeout (5 s), so
/// every attacker has had a check time out and sent the next one, and what is measured is the
/// steady state of 10,000 guesses in flight rather than their first wave arriving together.
const ATTACK_WARM_UP: Duration = Duration::from_secs(6);

#[derive(Debug, Serialize)]
pub struct LoginReport {
    pub command: String,
    pub machine: String,
    pub duration_seconds: f64,
    pub concurrency: usize,
    pub check_threads: usize,
    pub raw_argon2_per_second: f64,
    pub logins_per_second: f64,
    pub login_errors: Vec<(String, u64)>,
    pub login_ratio: f64,
    pub refused_per_second: f64,
    pub refused_ids: Vec<(String, u64)>,
    pub http_ceiling_per_second: f64,
    pub refused_ratio: f64,
    pub unlock_rate: f64,
    pub idle_p99_ms: f64,
    pub attacked_p99_ms: f64,
    pub attacked_ratio: f64,
    pub attack_outcomes: Vec<(String, u64)>,
    pub other_errors: Vec<(String, u64)>,
    pub passed: bool,
}

impl LoginReport {
    pub fn summary(&self) -> String {
        let bar = |ok: bool| if ok { "met" } else { "MISSED" };
        format!(
            "login scenario ({:.0} s per phase, {} clients, {} check threads, {})\n\
             raw Argon2id verifications/s      {:>10.1}\n\
             successful logins/s               {:>10.1}  = {:.2} × raw (bar ≥ 0.90: {})\n\
             refused logins of locked users/s  {:>10.0}\n\
             HTTP ceiling (bare axum)/s        {:>10.0}  refused = {:.2} × ceiling (bar ≥ 0.50: {})\n\
             other users' lock/unlock p99 at {:.0}/s: idle {:.2} ms, attacked {:.2} ms = {:.2} × idle (bar ≤ 2.00: {})\n\
             attacker outcomes: {:?}\n\
             login errors: {:?}; other users' errors: {:?}",
            self.duration_seconds,
            self.concurrency,
            self.check_threads,
            self.machine,
            self.raw_argon2_per_second,
            self.logins_per_second,
            self.login_ratio,
            bar(self.login_ratio >= 0.9),
            self.refused_per_second,
            self.http_ceiling_per_second,
            self.refused_ratio,
            bar(self.refused_ratio >= 0.5),
            self.unlock_rate,
            self.idle_p99_ms,
            self.attacked_p99_ms,
            self.attacked_ratio,
            bar(self.attacked_ratio <= 2.0),
            self.attack_outcomes,
            self.login_errors,
            self.other_errors,
        )
    }
}

pub async fn run(cli: &Cli) -> Result<bool, String> {
    if !cli.spawn || cli.protocol != ProtocolArg::Rest {
        return Err("the login scenario runs with --spawn over REST".into());
    }
    let duration = cli.duration;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hash = tokio::task::spawn_blocking(|| {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(LOGIN_PASSWORD.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;

    eprintln!("raw Argon2id on {threads} threads for {duration:?} ...");
    let raw = raw_argon2(&hash, threads, duration).await?;

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let durability = format!("{:?}", cli.durability).to_lowercase();
    let server = servers::spawn_self(
        &[
            "serve-latchkey",
            "--listen",
            "127.0.0.1:0",
            "--durability",
            &durability,
        ],
        Some(dir.path()),
    )?;
    let target = Target::http(server.base.clone(), servers::TOKEN.into(), ATTACKERS);
    let clients = cli.concurrency.max(1);
    let tag = format!("login{}", std::process::id());
    let mut users = Vec::with_capacity(clients);
    for n in 0..clients {
        users.push(target.create_user_with(n as u64, &tag, &hash).await?);
    }
    let users = Arc::new(users);

    eprintln!("logins for {duration:?} ...");
    let logins = closed_loop(&target, &users, Op::Login, duration).await;
    for user in users.iter() {
        target.run(Op::Lock, user).await?;
    }
    eprintln!("logins of locked users for {duration:?} ...");
    let refused = closed_loop(&target, &users, Op::Login, duration).await;

    // Each measurement toggles its own users (a run ends with some of them locked).
    let others_n = cli.users.clamp(1, 1000);
    let others = Arc::new(
        runner::prepare_users(&target, others_n, 16, &format!("{tag}o"), false, true).await?,
    );
    let others_attacked = Arc::new(
        runner::prepare_users(&target, others_n, 16, &format!("{tag}a"), false, true).await?,
    );
    let rate = cli.rate.unwrap_or(200.0);
    let settings = Settings {
        scenario: Scenario::Uniform,
        concurrency: 256,
        duration,
        warmup: Duration::ZERO,
        rate: Some(rate),
        users: others_n,
        hot_users: 1,
        read_ratio: 0.0,
        count: None,
    };
    eprintln!("other users' commands at {rate}/s, idle, for {duration:?} ...");
    let idle = runner::run(&target, &settings, others.clone(), progress(), true).await;

    let hot = target.create_user_with(u64::MAX, &tag, &hash).await?;
    eprintln!("opening {ATTACKERS} attacker connections (a process of their own) ...");
    // The attack lasts the warm-up, the measurement and a second more.
    let attack = attack(
        &server.base,
        &hot,
        ATTACK_WARM_UP + duration + Duration::from_secs(1),
    )?;
    tokio::time::sleep(ATTACK_WARM_UP).await;
    eprintln!("other users' commands at {rate}/s, under attack, for {duration:?} ...");
    let attacked = runner::run(&target, &settings, others_attacked, progress(), true).await;
    let attack_outcomes = attack.finish().await;
    server.stop();

    eprintln!("HTTP ceiling (bare axum) for {duration:?} ...");
    let baseline = servers::spawn_self(&["serve-baseline", "--listen", "127.0.0.1:0"], None)?;
    let ceiling_target = Target::http(baseline.base.clone(), servers::TOKEN.into(), clients);
    let ceiling = closed_loop(&ceiling_target, &users, Op::Login, duration).await;
    baseline.stop();

    let refused_ids: Vec<(String, u64)> = refused.errors.clone().into_iter().collect();
    let refused_right = refused.ok == 0 && refused_ids.iter().all(|(id, _)| id == "SESSION-Gj4ko");
    let p99 = |r: &RunResult| r.histogram.value_at_quantile(0.99) as f64 / 1000.0;
    let mut report = LoginReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine(),
        duration_seconds: duration.as_secs_f64(),
        concurrency: clients,
        check_threads: threads,
        raw_argon2_per_second: raw,
        logins_per_second: logins.ok_per_second(),
        login_errors: logins.errors.clone().into_iter().collect(),
        login_ratio: logins.ok_per_second() / raw.max(1e-9),
        refused_per_second: refused.per_second(),
        refused_ids,
        http_ceiling_per_second: ceiling.per_second(),
        refused_ratio: refused.per_second() / ceiling.per_second().max(1e-9),
        unlock_rate: rate,
        idle_p99_ms: p99(&idle),
        attacked_p99_ms: p99(&attacked),
        attacked_ratio: p99(&attacked) / p99(&idle).max(1e-9),
        attack_outcomes,
        other_errors: idle
            .errors
            .iter()
            .chain(attacked.errors.iter())
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        passed: false,
    };
    report.passed = report.login_errors.is_empty()
        && refused_right
        && report.other_errors.is_empty()
        && report.login_ratio >= 0.9
        && report.refused_ratio >= 0.5
        && report.attacked_ratio <= 2.0;
    println!("{}", report.summary());
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(report.passed)
}

fn progress() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

/// Verifications per second of `hash` on `threads` threads for `duration`.
async fn raw_argon2(hash: &str, threads: usize, duration: Duration) -> Result<f64, String> {
    let hash = hash.to_owned();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let done = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let Ok(parsed) = PasswordHash::new(&hash) else {
                        return;
                    };
                    while start.elapsed() < duration {
                        if Argon2::default()
                            .verify_password(LOGIN_PASSWORD.as_bytes(), &parsed)
                            .is_ok()
                        {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
    .await
    .map_err(|e| e.to_string())
}

/// One client per user, each sending `op` for its own user as soon as the last one answered.
pub async fn closed_loop(
    target: &Target,
    users: &Arc<Vec<String>>,
    op: Op,
    duration: Duration,
) -> RunResult {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for (client, user) in users.iter().enumerate() {
        let (task_target, user) = (target.clone(), user.clone());
        tasks.push(target.spawn_client(client, async move {
            let mut session = task_target.session(client).await;
            let mut recorder = Recorder::new(start, progress());
            while Instant::now() < end {
                let sent = Instant::now();
                let outcome = session.run(op, &user).await;
                recorder.record(sent, &outcome);
            }
            recorder
        }));
    }
    let mut recorders = Vec::new();
    for task in tasks {
        if let Ok(recorder) = task.await {
            recorders.push(recorder);
        }
    }
    Recorder::finish(recorders, start.elapsed())
}

/// The attacker process: `connections` clients, each sending wrong passwords for `user` until
/// `duration` has passed since all were connected. Says "attacking" on stderr once connected;
/// prints the outcome counts as JSON on stdout at the end.
pub async fn attacker(
    base: String,
    user: String,
    connections: usize,
    duration: Duration,
) -> Result<bool, String> {
    let target = Target::http(base, servers::TOKEN.into(), connections);
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    let start = Arc::new(tokio::sync::OnceCell::new());
    let mut tasks = Vec::with_capacity(connections);
    for client in 0..connections {
        let (task_target, user, opened, start) =
            (target.clone(), user.clone(), opened.clone(), start.clone());
        tasks.push(target.spawn_client(client, async move {
            let mut session = task_target.session(client).await;
            opened.add_permits(1);
            let started: Instant = *start.get_or_init(|| async { Instant::now() }).await;
            let mut outcomes = std::collections::BTreeMap::new();
            while started.elapsed() < duration {
                let id = match session.run(Op::WrongLogin, &user).await {
                    Ok(()) => "OK".to_owned(),
                    Err(id) => id,
                };
                *outcomes.entry(id).or_insert(0u64) += 1;
            }
            outcomes
        }));
    }
    let _ = opened
        .acquire_many(u32::try_from(connections).unwrap_or(u32::MAX))
        .await;
    let _ = start.set(Instant::now());
    eprintln!("attacking with {connections} connections");
    let mut all = std::collections::BTreeMap::new();
    for task in tasks {
        if let Ok(outcomes) = task.await {
            for (id, n) in outcomes {
                *all.entry(id).or_insert(0) += n;
            }
        }
    }
    println!(
        "{}",
        serde_json::to_string(&all).map_err(|e| e.to_string())?
    );
    Ok(true)
}

/// A running attacker process.
struct Attack {
    child: std::process::Child,
}

/// Starts the attacker process on `hot` and waits until its connections are open.
fn attack(base: &str, hot: &str, duration: Duration) -> Result<Attack, String> {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .args(["attack", "--base", base, "--user", hot, "--connections"])
        .arg(ATTACKERS.to_string())
        .arg("--duration")
        .arg(format!("{}ms", duration.as_millis()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the attacker: {e}"))?;
    let stderr = child.stderr.take().ok_or("no attacker stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("attacking") => break,
            Some(Ok(_)) => {}
            _ => return Err("the attacker stopped before it was connected".into()),
        }
    }
    Ok(Attack { child })
}

impl Attack {
    /// Waits for the attacker to end; its outcome counts.
    async fn finish(self) -> Vec<(String, u64)> {
        let output = tokio::task::spawn_blocking(move || self.child.wait_with_output()).await;
        let Ok(Ok(output)) = output else {
            return vec![("ATTACKER-FAILED".into(), 1)];
        };
        serde_json::from_slice::<std::collections::BTreeMap<String, u64>>(&output.stdout)
            .map(|all| all.into_iter().collect())
            .unwrap_or_else(|_| vec![("ATTACKER-OUTPUT-UNREADABLE".into(), 1)])
    }
}
