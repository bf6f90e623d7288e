//! One load test from start to end: open the target (embedded, spawned or external), prepare
//! its users, run the scenario under a progress bar, scrape the server's own view, run the
//! baseline, and — with `--repeat` — do it all again on fresh targets and report the median run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};

use latchkey_engine::{Caller, Config, Engine};

use crate::cli::{Cli, ProtocolArg};
use crate::cpu_check::Beside;
use crate::grpc_target::GrpcTarget;
use crate::median::pick_median;
use crate::recorder::RunResult;
use crate::report::{Report, Side};
use crate::runner::{self, Scenario, Settings};
use crate::scrape::{cpu_per_request, machine, scrape, server_view, usage, Usage};
use crate::target::Target;
use crate::{ceiling, servers};

/// What the run is pointed at, and what keeps it alive.
enum Setup {
    Embedded(Engine, tempfile::TempDir),
    Spawned(servers::Spawned, tempfile::TempDir),
    External,
}

pub async fn load_test(cli: &Cli) -> Result<bool, String> {
    if cli.scenario == Scenario::Login {
        return crate::login::run(cli).await;
    }
    let repeat = cli.repeat.max(1);
    let mut runs = Vec::with_capacity(repeat);
    for round in 1..=repeat {
        if repeat > 1 {
            eprintln!("== run {round} of {repeat}");
        }
        runs.push(one_run(cli).await?);
    }
    let report = pick_median(runs);
    println!("{}", report.summary());
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &cli.report {
        std::fs::write(path, report.html()).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(report.passed())
}

/// One run of the scenario and, with `--baseline`, its baseline, on a fresh target.
async fn one_run(cli: &Cli) -> Result<Report, String> {
    let settings = cli.settings();
    let embedded = !cli.spawn && cli.target == "embedded";
    if cli.scenario == Scenario::Hot && !embedded {
        return Err(
            "the hot scenario needs --target embedded (HTTP does not keep command order)".into(),
        );
    }
    if !settings.warmup.is_zero()
        && !matches!(settings.scenario, Scenario::Uniform | Scenario::Mixed)
    {
        return Err("--warmup applies to uniform and mixed runs".into());
    }
    let (target, setup, target_name) = open_target(cli).await?;
    let users = match (&cli.create_on, &setup) {
        (None, _) => prepare(&target, &setup, &settings, "lk").await?,
        (Some(base), Setup::External) => {
            let creator = server_target(cli, base.trim_end_matches('/').into(), &cli.token).await?;
            prepare(&creator, &setup, &settings, "lk").await?
        }
        (Some(_), _) => return Err("--create-on needs an external --target".into()),
    };
    let users = Arc::new(users);
    let before = scrape(&target).await;
    let pid = match &setup {
        Setup::Spawned(server, _) => Some(server.pid()),
        _ => None,
    };
    eprintln!(
        "running {:?} for {:?} ...",
        settings.scenario, settings.duration
    );
    let probes = cli.cpu_probe.then(|| Beside::start(settings.warmup));
    let (cpu_before, mut latchkey) = tokio::join!(
        usage_after_warmup(pid, settings.warmup),
        measured(&settings, |progress| {
            runner::run(&target, &settings, users.clone(), progress, true)
        })
    );
    latchkey.server_cpu = cpu_per_request(cpu_before, pid.and_then(usage), latchkey.requests());
    latchkey.cores = probes.and_then(Beside::finish);
    let after = scrape(&target).await;
    let server = server_view(&before, &after);

    let baseline = if cli.baseline {
        eprintln!("running the baseline ...");
        Some(run_baseline(cli, &settings, embedded).await?)
    } else {
        None
    };
    match setup {
        Setup::Embedded(engine, _dir) => engine.shutdown().await.map_err(|e| e.to_string())?,
        Setup::Spawned(server, _dir) => server.stop(),
        Setup::External => {}
    }

    let ratio = baseline
        .as_ref()
        .map(|b| latchkey.per_second() / b.per_second().max(1e-9));
    let report = Report {
        scenario: cli
            .scenario
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default(),
        target: target_name,
        durability: format!("{:?} ({})", cli.durability, cli.store).to_lowercase(),
        concurrency: settings.concurrency,
        rate: cli.rate,
        warmup_seconds: settings.warmup.as_secs_f64(),
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        checks: latchkey.checks.clone(),
        latchkey: Side::from_run("latchkey", &latchkey),
        baseline: baseline
            .as_ref()
            .map(|b| Side::from_run(if embedded { "store" } else { "baseline" }, b)),
        ratio,
        ratios: Vec::new(),
        p99s_ms: Vec::new(),
        server,
    };
    Ok(report)
}

async fn open_target(cli: &Cli) -> Result<(Target, Setup, String), String> {
    if cli.spawn {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let durability = format!("{:?}", cli.durability).to_lowercase();
        let idle = format!("{}ms", cli.idle_timeout().as_millis());
        let server = servers::spawn_self(
            &[
                "serve-latchkey",
                "--listen",
                "127.0.0.1:0",
                "--durability",
                &durability,
                "--idle-timeout",
                &idle,
                "--store",
                cli.store.name(),
            ],
            Some(dir.path()),
        )?;
        let target = server_target(cli, server.base.clone(), servers::TOKEN).await?;
        let name = format!("spawned {}{}", server.base, protocol_note(cli));
        return Ok((target, Setup::Spawned(server, dir), name));
    }
    if cli.target == "embedded" {
        if cli.protocol != ProtocolArg::Rest {
            return Err("--protocol applies to servers (--spawn or an http:// target)".into());
        }
        // The same metrics the server exports, recorded in-process for the server-side view.
        latchkey_api::metrics::install();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = Config::default()
            .data_dir(dir.path())
            .medium(cli.store)
            .durability(cli.durability())
            .idle_timeout(cli.idle_timeout());
        let engine = Engine::open(config).await.map_err(|e| e.to_string())?;
        let boot = engine
            .bootstrap(None)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("fresh directory was already bootstrapped")?;
        let target = Target::Embedded {
            engine: engine.clone(),
            caller: Arc::new(Caller::system(boot.org_id)),
        };
        return Ok((target, Setup::Embedded(engine, dir), "embedded".into()));
    }
    if cli.token.is_empty() {
        return Err("an external --target needs --token or LATCHKEY_TOKEN".into());
    }
    let base = cli.target.trim_end_matches('/').to_owned();
    let target = server_target(cli, base, &cli.token).await?;
    let name = format!("{}{}", cli.target, protocol_note(cli));
    Ok((target, Setup::External, name))
}

/// A server at `base`, reached over `--protocol`.
async fn server_target(cli: &Cli, base: String, token: &str) -> Result<Target, String> {
    Ok(match cli.protocol {
        ProtocolArg::Rest => Target::http(base, token.into(), cli.concurrency),
        ProtocolArg::Grpc => Target::Grpc(Arc::new(GrpcTarget::connect(base, token).await?)),
    })
}

fn protocol_note(cli: &Cli) -> &'static str {
    match cli.protocol {
        ProtocolArg::Rest => "",
        ProtocolArg::Grpc => " (gRPC)",
    }
}

/// The users a scenario works on, created (and locked, for the storm) before measuring.
async fn prepare(
    target: &Target,
    setup: &Setup,
    settings: &Settings,
    tag: &str,
) -> Result<Vec<String>, String> {
    let tag = format!("{tag}{}", std::process::id());
    let (count, locked) = match settings.scenario {
        Scenario::UnlockStorm => (settings.hot_users, true),
        Scenario::Uniform | Scenario::Mixed => (settings.users.max(settings.concurrency), false),
        Scenario::Cold => (settings.users, false),
        Scenario::Hot => (1, false),
        // `login.rs` makes its own users (with a hash of its password).
        Scenario::Create | Scenario::Login => return Ok(Vec::new()),
    };
    eprintln!("preparing {count} users ...");
    let warm = settings.scenario != Scenario::Cold;
    let users =
        runner::prepare_users(target, count, settings.concurrency, &tag, locked, warm).await?;
    if settings.scenario == Scenario::Cold {
        wait_for_passivation(target, setup).await;
    }
    Ok(users)
}

async fn wait_for_passivation(target: &Target, setup: &Setup) {
    eprintln!("waiting for every actor to passivate ...");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let active = match setup {
            Setup::Embedded(engine, _) => engine.stats().active_actors as f64,
            _ => scrape(target)
                .await
                .get("latchkey_actors_active")
                .copied()
                .unwrap_or(0.0),
        };
        if active <= 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("warning: actors still active after 120 s; cold numbers include warm users");
}

async fn run_baseline(cli: &Cli, settings: &Settings, embedded: bool) -> Result<RunResult, String> {
    if embedded {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let probes = cli.cpu_probe.then(|| Beside::start(settings.warmup));
        let mut result = measured(settings, |progress| async move {
            ceiling::measure(dir.path(), cli.store, cli.durability(), settings, progress).await
        })
        .await;
        if let Ok(result) = &mut result {
            result.cores = probes.and_then(Beside::finish);
        }
        return result;
    }
    let (server, target) = match cli.protocol {
        ProtocolArg::Grpc => {
            let server =
                servers::spawn_self(&["serve-grpc-baseline", "--listen", "127.0.0.1:0"], None)?;
            let grpc = GrpcTarget::connect(server.base.clone(), servers::TOKEN).await?;
            (server, Target::Grpc(Arc::new(grpc)))
        }
        _ => {
            let server = servers::spawn_self(&["serve-baseline", "--listen", "127.0.0.1:0"], None)?;
            let http = Target::http(server.base.clone(), servers::TOKEN.into(), cli.concurrency);
            (server, http)
        }
    };
    let count = match settings.scenario {
        Scenario::UnlockStorm => settings.hot_users,
        Scenario::Create => 0,
        _ => settings.users.max(settings.concurrency),
    };
    let users = Arc::new(
        (0..count)
            .map(|i| format!("{}", 100_000 + i))
            .collect::<Vec<_>>(),
    );
    let probes = cli.cpu_probe.then(|| Beside::start(settings.warmup));
    let (cpu_before, mut result) = tokio::join!(
        usage_after_warmup(Some(server.pid()), settings.warmup),
        measured(settings, |progress| {
            runner::run(&target, settings, users.clone(), progress, false)
        })
    );
    result.cores = probes.and_then(Beside::finish);
    result.server_cpu = cpu_per_request(cpu_before, usage(server.pid()), result.requests());
    server.stop();
    Ok(result)
}

/// A spawned server's usage as the measured window opens, read beside the run: the warm-up's
/// requests are not counted, so its CPU must not be either (read before it, every CPU figure
/// per request came out (warm-up + duration) / duration too high).
async fn usage_after_warmup(pid: Option<u32>, warmup: Duration) -> Option<Usage> {
    tokio::time::sleep(warmup).await;
    pid.and_then(usage)
}

/// Runs `work` under a progress bar fed by the recorders' completion counter.
async fn measured<F, Fut, T>(settings: &Settings, work: F) -> T
where
    F: FnOnce(Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let progress = Arc::new(AtomicU64::new(0));
    let bar = ProgressBar::new((settings.warmup + settings.duration).as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let done = progress.load(Ordering::Relaxed);
                bar.set_position(start.elapsed().as_millis() as u64);
                bar.set_message(format!(
                    "{done} requests, {:.0}/s now",
                    (done - last) as f64 * 4.0
                ));
                last = done;
            }
        })
    };
    let result = work(progress).await;
    ticker.abort();
    bar.finish_and_clear();
    result
}
