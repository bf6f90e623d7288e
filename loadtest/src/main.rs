//! `latchkey-loadtest`: drives Latchkey embedded (the engine in-process), over HTTP, or a server
//! it spawns itself, and measures a baseline in the same run — the bare HTTP stack for HTTP
//! targets, the bare store for the embedded one — because the ratio, not an absolute figure, is
//! what survives a noisy shared machine. See docs/performance.md for the recorded runs.

mod ceiling;
mod connection;
mod report;
mod runner;
mod scale;
mod servers;
mod target;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use latchkey_engine::{Caller, Config, Durability, Engine};

use report::{Report, Side};
use runner::{Check, Scenario, Settings};
use target::Target;

/// The same allocator as the `latchkey` binary, for the spawned server and the baseline alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "latchkey-loadtest",
    about = "Load tests for Latchkey, with a same-run baseline"
)]
struct Cli {
    #[command(subcommand)]
    internal: Option<Internal>,
    /// `embedded` (the engine in-process) or a running server, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "embedded")]
    target: String,
    /// Start a Latchkey server on a temp dir for the run (overrides --target).
    #[arg(long)]
    spawn: bool,
    #[arg(long, value_enum, default_value = "uniform")]
    scenario: Scenario,
    /// Concurrent clients (closed loop), most requests in flight (open loop), or commands in
    /// flight (`hot`).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop: requests per second, latency from the intended send time.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// `uniform` / `mixed` (and their baseline), closed or open loop: run this long first,
    /// unmeasured, on the same target and users (an open loop at the same rate), so the numbers
    /// are the steady state. A fresh store appends to new log files and zero-fills its first
    /// preallocated ones meanwhile, which makes its first seconds slower.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Users for uniform / mixed / cold.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Locked users the unlock storm races on.
    #[arg(long, default_value_t = 1)]
    hot_users: usize,
    /// Share of reads in `mixed`.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// `create`: stop after this many users.
    #[arg(long)]
    count: Option<u64>,
    #[arg(long, value_enum, default_value = "sync")]
    durability: DurabilityArg,
    /// Also measure the baseline (bare axum handler for HTTP, bare store for embedded).
    #[arg(long)]
    baseline: bool,
    /// Run everything this many times, each on a fresh target, and report the run with the
    /// median ratio (every run's ratio is listed): one run's ratio moves by ±0.05–0.1 on a
    /// shared 2-core machine. An open loop (`--rate`) reports the run with the median p99 and
    /// lists every run's. Correctness checks must pass in every run.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Token for an external --target (defaults to $LATCHKEY_TOKEN).
    #[arg(long, env = "LATCHKEY_TOKEN", default_value = "")]
    token: String,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    Sync,
    Async,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// (internal) run the Latchkey server: what --spawn starts. Takes exactly the `latchkey`
    /// binary's command line.
    #[command(hide = true)]
    ServeLatchkey {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// (internal) run the bare axum baseline server.
    #[command(hide = true)]
    ServeBaseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Scale of state: create --users through the engine, restart the server on them, measure
    /// readiness, memory (ready / many active / after passivation) and a cold first request.
    Scale {
        #[arg(long, default_value_t = 1_000_000)]
        users: usize,
        /// Users read over HTTP to fill the registry before the idle check.
        #[arg(long, default_value_t = 20_000)]
        touched: usize,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        idle_timeout: Duration,
        /// The server's store cache bound (MiB).
        #[arg(long, default_value_t = 1024)]
        cache_mb: u64,
    },
}

fn main() -> ExitCode {
    // The same process settings as the `latchkey` binary, for every server and client it runs.
    latchkey_api::run::disable_transparent_huge_pages();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("latchkey-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.internal {
        Some(Internal::ServeLatchkey { args }) => {
            let line = std::iter::once("latchkey".to_owned()).chain(args);
            match latchkey_api::config::Cli::try_parse_from(line) {
                Ok(server) => {
                    let args = server.serve_args();
                    latchkey_api::run::init_logging(&args.log);
                    runtime
                        .block_on(latchkey_api::run::run(args))
                        .map(|()| true)
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Some(Internal::ServeBaseline { listen }) => runtime
            .block_on(servers::serve_baseline(listen))
            .map(|()| true)
            .map_err(|e| e.to_string()),
        Some(Internal::Scale {
            users,
            touched,
            idle_timeout,
            cache_mb,
        }) => runtime.block_on(scale::run(scale::ScaleArgs {
            users,
            touched,
            idle_timeout,
            cache_mb,
        })),
        None => runtime.block_on(load_test(&cli)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("latchkey-loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

impl Cli {
    fn durability(&self) -> Durability {
        match self.durability {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Async => Durability::Async {
                flush_interval: Duration::from_millis(10),
            },
        }
    }

    fn idle_timeout(&self) -> Duration {
        if self.scenario == Scenario::Cold {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(60)
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            scenario: self.scenario,
            concurrency: self.concurrency.max(1),
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
            users: self.users.max(1),
            hot_users: self.hot_users.max(1),
            read_ratio: self.read_ratio.clamp(0.0, 1.0),
            count: self.count,
        }
    }
}

/// What the run is pointed at, and what keeps it alive.
enum Setup {
    Embedded(Engine, tempfile::TempDir),
    Spawned(servers::Spawned, tempfile::TempDir),
    External,
}

async fn load_test(cli: &Cli) -> Result<bool, String> {
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

/// The run with the median ratio (for an open loop: the median Latchkey p99, its headline; the
/// later one of the middle two for an even count), carrying every run's ratio or p99 and every
/// other run's failed checks.
fn pick_median(mut runs: Vec<Report>) -> Report {
    let open_loop = runs.first().is_some_and(|r| r.rate.is_some());
    let keys: Vec<f64> = runs
        .iter()
        .map(|r| {
            if open_loop {
                r.latchkey.latency.p99_ms
            } else {
                r.ratio.unwrap_or(0.0)
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|a, b| keys[*a].total_cmp(&keys[*b]));
    let chosen = order[order.len() / 2];
    let mut failed = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        if i != chosen {
            failed.extend(run.checks.iter().filter(|c| !c.passed).map(|c| Check {
                name: format!("{} (run {})", c.name, i + 1),
                ..c.clone()
            }));
        }
    }
    let ratios: Vec<f64> = runs.iter().filter_map(|r| r.ratio).collect();
    let mut report = runs.swap_remove(chosen);
    report.checks.extend(failed);
    if keys.len() > 1 {
        if open_loop {
            report.p99s_ms = keys;
        } else {
            report.ratios = ratios;
        }
    }
    report
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
    let users = Arc::new(prepare(&target, &setup, &settings, "lk").await?);
    let before = scrape(&target).await;
    eprintln!(
        "running {:?} for {:?} ...",
        settings.scenario, settings.duration
    );
    let latchkey = measured(&settings, |progress| {
        runner::run(&target, &settings, users.clone(), progress, true)
    })
    .await;
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
        durability: format!("{:?}", cli.durability).to_lowercase(),
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
            ],
            Some(dir.path()),
        )?;
        let target = Target::http(server.base.clone(), servers::TOKEN.into(), cli.concurrency);
        let name = format!("spawned {}", server.base);
        return Ok((target, Setup::Spawned(server, dir), name));
    }
    if cli.target == "embedded" {
        // The same metrics the server exports, recorded in-process for the server-side view.
        latchkey_api::metrics::install();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = Config::default()
            .data_dir(dir.path())
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
    let target = Target::http(
        cli.target.trim_end_matches('/').to_owned(),
        cli.token.clone(),
        cli.concurrency,
    );
    Ok((target, Setup::External, cli.target.clone()))
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
        Scenario::Create => return Ok(Vec::new()),
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

async fn run_baseline(
    cli: &Cli,
    settings: &Settings,
    embedded: bool,
) -> Result<runner::RunResult, String> {
    if embedded {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        return measured(settings, |progress| async move {
            ceiling::measure(dir.path(), cli.durability(), settings, progress).await
        })
        .await;
    }
    let server = servers::spawn_self(&["serve-baseline", "--listen", "127.0.0.1:0"], None)?;
    let target = Target::http(server.base.clone(), servers::TOKEN.into(), cli.concurrency);
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
    let result = measured(settings, |progress| {
        runner::run(&target, settings, users.clone(), progress, false)
    })
    .await;
    server.stop();
    Ok(result)
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

/// Numeric series of `/metrics` (or the in-process recorder, embedded), keyed by full name.
async fn scrape(target: &Target) -> BTreeMap<String, f64> {
    let text = match target {
        Target::Embedded { .. } => latchkey_api::metrics::render().await,
        Target::Http(http) => match http
            .client
            .get(format!("{}/metrics", http.base))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => return BTreeMap::new(),
        },
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The server's own view of the run: what the store did per flush.
fn server_view(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    let mut view = BTreeMap::new();
    let batches = delta("latchkey_store_batch_size_count");
    if batches > 0.0 {
        view.insert("store commits (flushes)".into(), batches);
        view.insert(
            "store writes".into(),
            delta("latchkey_store_batch_size_sum"),
        );
        view.insert(
            "mean commit batch size".into(),
            delta("latchkey_store_batch_size_sum") / batches,
        );
        let flushes = delta("latchkey_store_flush_seconds_count");
        if flushes > 0.0 {
            view.insert(
                "mean flush ms".into(),
                delta("latchkey_store_flush_seconds_sum") / flushes * 1000.0,
            );
            let fast = delta("latchkey_store_flush_seconds_bucket{le=\"0.01\"}");
            view.insert("flushes slower than 10 ms".into(), flushes - fast);
        }
    }
    view
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1024
                    / 1024
            })
        })
        .unwrap_or(0);
    format!("{cpus} cores, {model}, {mem} GiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner::Probe;

    fn report(ratio: f64, check_passed: bool) -> Report {
        let run = Probe::finish(Vec::new(), Duration::from_secs(1));
        Report {
            scenario: "uniform".into(),
            target: "embedded".into(),
            durability: "sync".into(),
            concurrency: 1,
            rate: None,
            warmup_seconds: 0.0,
            machine: String::new(),
            command: format!("run with ratio {ratio}"),
            latchkey: Side::from_run("latchkey", &run),
            baseline: Some(Side::from_run("store", &run)),
            ratio: Some(ratio),
            ratios: Vec::new(),
            p99s_ms: Vec::new(),
            checks: vec![Check {
                name: "every command succeeded".into(),
                passed: check_passed,
                detail: String::new(),
            }],
            server: BTreeMap::new(),
        }
    }

    #[test]
    fn the_median_run_is_reported_with_every_ratio_and_every_failure() {
        let picked = pick_median(vec![
            report(0.55, true),
            report(0.48, false),
            report(0.62, true),
        ]);
        assert_eq!(picked.command, "run with ratio 0.55");
        assert_eq!(picked.ratios, vec![0.55, 0.48, 0.62]);
        // The second run failed a check: the whole repetition fails, and says which run.
        assert!(!picked.passed());
        assert_eq!(picked.checks[1].name, "every command succeeded (run 2)");
    }

    #[test]
    fn an_open_loop_reports_the_run_with_the_median_p99() {
        let open = |p99: f64| {
            let mut r = report(1.0, true);
            r.rate = Some(1000.0);
            r.latchkey.latency.p99_ms = p99;
            r.command = format!("run with p99 {p99}");
            r
        };
        let picked = pick_median(vec![open(9.5), open(2.5), open(3.0)]);
        assert_eq!(picked.command, "run with p99 3");
        assert_eq!(picked.p99s_ms, vec![9.5, 2.5, 3.0]);
        // Its throughput ratio (≈ 1 in an open loop) is not what was ranked.
        assert!(picked.ratios.is_empty());
        assert!(picked.passed());
    }

    #[test]
    fn a_single_run_is_reported_as_it_is() {
        let picked = pick_median(vec![report(0.5, true)]);
        assert!(picked.ratios.is_empty());
        assert!(picked.passed());
        assert_eq!(picked.checks.len(), 1);
    }
}
