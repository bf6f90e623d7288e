//! `latchkey-loadtest scale`: the scale-of-state check. Creates N users through the engine (a
//! precomputed password hash, so Argon2 is not what is measured), then starts the server on that
//! data as a separate process and measures what an operator sees: how long until it is ready,
//! its memory with N users on disk and none in memory, the first request on a cold user (which
//! activates it from disk), memory with many users active, and memory once passivation has
//! emptied the registry again; and ListUsers' first and deep pages (`list_timings.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_engine::{Caller, Config, Engine, Medium};

use crate::list_timings;
use crate::runner::prepare_users;
use crate::servers::{self, TOKEN};
use crate::target::{Op, Target};

pub struct ScaleArgs {
    pub users: usize,
    pub touched: usize,
    pub idle_timeout: Duration,
    /// The server's --cache-mb.
    pub cache_mb: u64,
    /// The server's --store.
    pub medium: Medium,
    /// Whether to take an offline backup, restore and verify it at the end.
    pub backup: bool,
    /// Where the users are made and kept (default: a temporary directory).
    pub data_dir: Option<std::path::PathBuf>,
}

/// Resident set size of a process (kB → bytes), from /proc.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

/// One metric from the server's `/metrics` (the harness's own scrape).
async fn gauge(http: &Target, name: &str) -> Option<f64> {
    crate::scrape::scrape(http).await.get(name).copied()
}

/// Runs the check; `Ok(true)` when every bar is met.
pub async fn run(args: ScaleArgs) -> Result<bool, String> {
    let temporary = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = args.data_dir.as_deref().unwrap_or(temporary.path());
    eprintln!("creating {} users through the engine ...", args.users);
    let creator = Config::default()
        .data_dir(dir)
        .medium(args.medium)
        .idle_timeout(args.idle_timeout);
    let engine = Engine::open(creator).await.map_err(|e| e.to_string())?;
    let boot = engine
        .bootstrap(Some(TOKEN.into()))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("fresh directory was already bootstrapped")?;
    let target = Target::Embedded {
        engine: engine.clone(),
        caller: Arc::new(Caller::system(boot.org_id)),
    };
    let started = Instant::now();
    let ids = prepare_users(&target, args.users, 64, "scale", false, false).await?;
    let created_in = started.elapsed();
    eprintln!("a second organization with 1 % as many users, every 100th user locked ...");
    let Target::Embedded { caller, .. } = &target else {
        return Err("the scale check creates through the engine".into());
    };
    let populated = list_timings::populate(&engine, caller, &ids).await?;
    let creator_rss = rss(std::process::id());
    engine.shutdown().await.map_err(|e| e.to_string())?;
    drop(target);
    let disk: u64 = walk(dir);

    eprintln!("starting the server on that data ...");
    let idle = format!("{}ms", args.idle_timeout.as_millis());
    let cache = args.cache_mb.to_string();
    let spawned_at = Instant::now();
    let server = servers::spawn_self(
        &[
            "serve-latchkey",
            "--listen",
            "127.0.0.1:0",
            "--idle-timeout",
            &idle,
            "--cache-mb",
            &cache,
            "--store",
            args.medium.name(),
        ],
        Some(dir),
    )?;
    let client = reqwest::Client::new();
    let ready_in = loop {
        let ready = client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break spawned_at.elapsed();
        }
        if spawned_at.elapsed() > Duration::from_secs(60) {
            return Err("server not ready within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let rss_ready = rss(server.pid());
    let http = Target::http(server.base.clone(), TOKEN.into(), 32);

    // Authenticate once first (that activates the admin's own actor), so the cold request below
    // is the only activation counted.
    client
        .post(format!("{}/v2/users", server.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"query": {"limit": 1}}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("timing ListUsers ...");
    let lists = list_timings::measure(&server.base, TOKEN, args.users, &populated).await?;
    let activations_before = gauge(&http, "latchkey_actor_activations_total")
        .await
        .unwrap_or(0.0);
    let cold = &ids[ids.len() / 2];
    let sent = Instant::now();
    let first = client
        .get(format!("{}/v2/users/{cold}", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let first_latency = sent.elapsed();
    let first_status = first.status().as_u16();
    let activated = gauge(&http, "latchkey_actor_activations_total")
        .await
        .unwrap_or(0.0)
        - activations_before;

    // Two rounds over different users: with passivation, the second round reuses the memory
    // the first one freed instead of adding to it.
    let step = (ids.len() / (2 * args.touched).max(1)).max(1);
    let sample: Vec<String> = ids
        .iter()
        .step_by(step)
        .take(2 * args.touched)
        .cloned()
        .collect();
    let mut rounds = Vec::new();
    for (round, users) in sample.chunks(args.touched.max(1)).take(2).enumerate() {
        eprintln!(
            "round {}: activating {} users over HTTP ...",
            round + 1,
            users.len()
        );
        let mut tasks = Vec::new();
        for chunk in users.chunks(users.len().div_ceil(32).max(1)) {
            let (http, chunk) = (http.clone(), chunk.to_vec());
            tasks.push(tokio::spawn(async move {
                for id in chunk {
                    http.run(Op::Get, &id).await?;
                }
                Ok::<_, String>(())
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        let active_hot = gauge(&http, "latchkey_actors_active").await;
        let rss_hot = rss(server.pid());
        eprintln!("waiting for passivation ({:?}) ...", args.idle_timeout);
        let deadline = Instant::now() + args.idle_timeout * 3 + Duration::from_secs(5);
        let mut active_idle = active_hot;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            active_idle = gauge(&http, "latchkey_actors_active").await;
            if active_idle == Some(0.0) {
                break;
            }
        }
        rounds.push((
            users.len(),
            active_hot,
            rss_hot,
            active_idle,
            rss(server.pid()),
        ));
    }
    server.stop();

    let operated = if args.backup {
        eprintln!("backing the store up and restoring it ...");
        let data = dir.to_path_buf();
        let medium = args.medium;
        let operated = tokio::task::spawn_blocking(move || backup_and_restore(&data, medium))
            .await
            .map_err(|e| e.to_string())??;
        Some(operated)
    } else {
        None
    };

    let ready_ok = ready_in < Duration::from_secs(2);
    let first_ok = first_status == 200 && activated == 1.0;
    let idle_ok = rounds.iter().all(|r| r.3 == Some(0.0));
    // Bounded: the second round's idle RSS is within 25% of the first's.
    let bounded_ok = match (
        rounds.first().and_then(|r| r.4),
        rounds.get(1).and_then(|r| r.4),
    ) {
        (Some(first), Some(second)) => (second as f64) <= first as f64 * 1.25,
        _ => false,
    };
    println!(
        "scale of state: {} users (server --store {} --cache-mb {})",
        args.users, args.medium, args.cache_mb
    );
    println!(
        "  created through the engine in {:.1} s ({:.0} users/s); store on disk {}; creating process RSS {} (incl. the harness's id list)",
        created_in.as_secs_f64(),
        args.users as f64 / created_in.as_secs_f64(),
        mib(Some(disk)),
        mib(creator_rss)
    );
    println!(
        "  restart → /readyz 200 in {:.0} ms (bar < 2000 ms): {}",
        ready_in.as_secs_f64() * 1e3,
        pass(ready_ok)
    );
    let idle_rss_ok = rss_ready.is_some_and(|rss| rss <= IDLE_RSS_BAR);
    println!(
        "  server RSS when ready (no user in memory): {} (bar ≤ {}): {}",
        mib(rss_ready),
        mib(Some(IDLE_RSS_BAR)),
        pass(idle_rss_ok)
    );
    println!(
        "  first request on a cold user: HTTP {first_status} in {:.2} ms, {activated} activation: {}",
        first_latency.as_secs_f64() * 1e3,
        pass(first_ok)
    );
    for (i, (n, active_hot, rss_hot, active_idle, rss_idle)) in rounds.iter().enumerate() {
        println!(
            "  round {}: {n} other users read → {:?} actors active, RSS {}; after the idle timeout {:?} active, RSS {}",
            i + 1,
            active_hot,
            mib(*rss_hot),
            active_idle,
            mib(*rss_idle)
        );
    }
    let hot_rss_ok = rounds
        .iter()
        .all(|r| r.2.is_some_and(|rss| rss <= ACTIVE_RSS_BAR));
    println!(
        "  passivation empties the registry: {}; idle memory bounded (round 2 within 25% of round 1): {}; RSS with the users active ≤ {}: {}",
        pass(idle_ok),
        pass(bounded_ok),
        mib(Some(ACTIVE_RSS_BAR)),
        pass(hot_rss_ok)
    );
    let judged = args.users >= 1_000_000;
    let lists_ok = lists
        .iter()
        .all(|t| !t.barred || (!t.refused && t.p99 <= list_timings::BAR));
    println!(
        "  ListUsers over HTTP, {} runs each (bar at ≥ 1,000,000 users: p99 ≤ {} ms for the first pages marked *):",
        list_timings::RUNS,
        list_timings::BAR.as_millis()
    );
    for t in &lists {
        let outcome = if t.refused {
            "refused: LIST-TOO-BROAD".to_owned()
        } else {
            format!("{} returned of {}", t.returned, t.total)
        };
        println!(
            "    {}{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {outcome}",
            if t.barred { "* " } else { "  " },
            t.name,
            t.p50.as_secs_f64() * 1e3,
            t.p99.as_secs_f64() * 1e3,
            t.max.as_secs_f64() * 1e3,
        );
    }
    println!(
        "  ListUsers bar: {}",
        if judged {
            pass(lists_ok)
        } else {
            "not judged below 1,000,000 users"
        }
    );
    let restore_ok = match &operated {
        Some(operated) => {
            let ok = operated.restore < Duration::from_secs(60) && operated.verified_clean;
            println!(
                "  offline backup {:.1} s ({}, {} entries); restore into an empty directory {:.1} s (bar < 60 s); verify of the restored store {:.1} s, {}: {}",
                operated.backup.as_secs_f64(),
                mib(Some(operated.bytes)),
                operated.entries,
                operated.restore.as_secs_f64(),
                operated.verify.as_secs_f64(),
                if operated.verified_clean { "clean" } else { "PROBLEMS" },
                pass(ok)
            );
            ok
        }
        None => {
            println!("  backup, restore and verify: not run (--no-backup)");
            true
        }
    };
    let memory_ok = idle_rss_ok && hot_rss_ok;
    Ok(ready_ok
        && first_ok
        && idle_ok
        && bounded_ok
        && memory_ok
        && restore_ok
        && (!judged || lists_ok))
}

/// The memory bars (at ten million users on disk): an idle server, and one with its
/// users active (100,000 there: `--touched 100000`).
const IDLE_RSS_BAR: u64 = 512 << 20;
const ACTIVE_RSS_BAR: u64 = 1536 << 20;

struct Operated {
    backup: Duration,
    restore: Duration,
    verify: Duration,
    bytes: u64,
    entries: u64,
    verified_clean: bool,
}

/// `latchkey backup` (offline) of `data`, `latchkey restore` of that file, `latchkey verify` of
/// the result, each timed — what the commands run.
fn backup_and_restore(data: &std::path::Path, medium: Medium) -> Result<Operated, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = work.path().join("scale.backup");
    let started = Instant::now();
    let out = std::io::BufWriter::new(std::fs::File::create(&file).map_err(|e| e.to_string())?);
    let taken =
        latchkey_engine::backup_offline(&Config::default().data_dir(data).medium(medium), out)
            .map_err(|e| e.to_string())?;
    let backup = started.elapsed();
    let restored = Config::default()
        .data_dir(work.path().join("restored"))
        .medium(medium);
    let started = Instant::now();
    let input = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(&file).map_err(|e| e.to_string())?,
    );
    latchkey_engine::restore(input, &restored).map_err(|e| e.to_string())?;
    let restore = started.elapsed();
    let started = Instant::now();
    let report = latchkey_engine::verify(&restored).map_err(|e| e.to_string())?;
    Ok(Operated {
        backup,
        restore,
        verify: started.elapsed(),
        bytes: taken.bytes,
        entries: taken.entries,
        verified_clean: report.is_clean(),
    })
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}

/// Bytes of every file below `dir`.
pub(crate) fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
