//! `latchkey-loadtest client-check`: are the harness's clients fast enough to measure with?
//!
//! On a 2-core machine the load generator shares the cores with the server it measures. A client
//! that spends more per request than the server holds the bare baseline further below its real
//! ceiling than it holds Latchkey below its own, and every ratio comes out too high. The check
//! drives the bare axum baseline with the harness's closed loop (the `uniform` scenario's
//! requests) and with wrk (`wrk -t<cores> -c<concurrency>`, the same requests through a Lua
//! script), interleaved, and reports both and their ratio. The bar: the harness reaches at least
//! 0.9 × wrk. Without wrk installed (Debian's package `wrk`) the check says so and fails.
//!
//! The same for gRPC when h2load is installed (Debian's `nghttp2-client`): the harness's gRPC
//! client against `h2load -c4 -m16` on the bare tonic baseline (`grpc_baseline.rs`), both sending
//! UnlockUser over four h2c connections, with the same bar (checked only where h2load is).
//!
//! And for the open loop (`--rate`) when oha is installed (`open_loop.rs`): the harness and oha
//! at one rate on the bare axum baseline, compared by what each sent and the p99 each measured.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::runner::{self, Scenario, Settings};
use crate::servers;
use crate::target::Target;

mod open_loop;

/// The baseline's users (any ids: it answers every path alike).
const USERS: usize = 2_000;

/// The `uniform` scenario's requests as wrk sends them: lock/unlock over [`USERS`] ids, each
/// user alternating, with the harness's token and body.
const SCRIPT: &str = r#"wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TOKEN"
local n = 0
request = function()
  n = n + 1
  local user = 100000 + n % USERS
  local action = (math.floor(n / USERS) % 2 == 0) and "/lock" or "/unlock"
  return wrk.format(nil, "/v2/users/" .. user .. action)
end
"#;

pub async fn run(
    rounds: usize,
    duration: Duration,
    concurrency: usize,
    open_rate: f64,
) -> Result<bool, String> {
    if !installed("wrk") {
        eprintln!("wrk is not installed (Debian: apt-get install wrk); nothing to compare with");
        return Ok(false);
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let script = dir.path().join("uniform.lua");
    std::fs::write(
        &script,
        SCRIPT
            .replace("TOKEN", servers::TOKEN)
            .replace("USERS", &USERS.to_string()),
    )
    .map_err(|e| e.to_string())?;
    let server = servers::spawn_self(&["serve-baseline", "--listen", "127.0.0.1:0"], None)?;
    let target = Target::http(server.base.clone(), servers::TOKEN.into(), concurrency);
    let users = Arc::new(
        (0..USERS)
            .map(|i| format!("{}", 100_000 + i))
            .collect::<Vec<_>>(),
    );
    let settings = Settings {
        scenario: Scenario::Uniform,
        concurrency,
        duration,
        warmup: Duration::ZERO,
        rate: None,
        users: USERS,
        hot_users: 1,
        read_ratio: 0.0,
        count: None,
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut ratios = Vec::new();
    println!("bare axum baseline, {concurrency} connections, {duration:?} per run, interleaved");
    println!("round   harness req/s   wrk -t{threads} req/s   harness / wrk");
    for round in 1..=rounds {
        let progress = Arc::new(AtomicU64::new(0));
        let ours = runner::run(&target, &settings, users.clone(), progress, false).await;
        if ours.ok == 0 {
            return Err(format!("the harness got no answer: {:?}", ours.errors));
        }
        let theirs = wrk(&server.base, &script, threads, concurrency, duration).await?;
        let ratio = ours.per_second() / theirs.max(1.0);
        println!(
            "{round:>5}   {:>13.0}   {:>14.0}   {ratio:>13.2}",
            ours.per_second(),
            theirs
        );
        ratios.push(ratio);
    }
    let median = median(ratios);
    let passed = median >= BAR;
    println!(
        "median harness / wrk: {median:.2} (bar ≥ 0.90: {})",
        verdict(passed)
    );
    let open_passed =
        open_loop::check(rounds, &target, &server.base, &settings, &users, open_rate).await?;
    server.stop();
    let grpc_passed = grpc(rounds, duration, concurrency, &settings, &users).await?;
    Ok(passed && open_passed && grpc_passed)
}

/// Is the reference generator `tool` on the PATH (it answers `--version`)?
fn installed(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok()
}

/// Runs a reference generator to its end off the async workers, and returns what it printed.
async fn run_tool(mut command: std::process::Command) -> Result<std::process::Output, String> {
    let tool = command.get_program().to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| format!("{tool}: {e}"))?
        .map_err(|e| format!("{tool}: {e}"))
}

/// The median of `values` (the upper one of an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Both clients must reach this share of the reference generator's rate.
const BAR: f64 = 0.9;

fn verdict(passed: bool) -> &'static str {
    if passed {
        "met"
    } else {
        "MISSED"
    }
}

/// The gRPC half: the harness's gRPC client and h2load on the bare tonic baseline, interleaved.
/// True if the bar is met or h2load is not installed.
async fn grpc(
    rounds: usize,
    duration: Duration,
    concurrency: usize,
    settings: &Settings,
    users: &Arc<Vec<String>>,
) -> Result<bool, String> {
    if !installed("h2load") {
        println!("h2load is not installed (Debian: nghttp2-client): no gRPC comparison");
        return Ok(true);
    }
    let server = servers::spawn_self(&["serve-grpc-baseline", "--listen", "127.0.0.1:0"], None)?;
    let target = Target::Grpc(Arc::new(
        crate::grpc_target::GrpcTarget::connect(server.base.clone(), servers::TOKEN).await?,
    ));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let frame = dir.path().join("unlock.grpc");
    // UnlockUserRequest { user_id: "100000" } in one uncompressed gRPC frame.
    std::fs::write(&frame, b"\x00\x00\x00\x00\x08\x0a\x06100000").map_err(|e| e.to_string())?;
    println!("bare tonic baseline, {concurrency} streams over 4 h2c connections, interleaved");
    println!("round   harness req/s   h2load req/s   harness / h2load");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let progress = Arc::new(AtomicU64::new(0));
        let ours = runner::run(&target, settings, users.clone(), progress, false).await;
        let mut command = std::process::Command::new("h2load");
        command
            .args(["-c4", "-t2", "-m"])
            .arg((concurrency / 4).max(1).to_string())
            .arg("-D")
            .arg(duration.as_secs().max(1).to_string())
            .arg("-d")
            .arg(&frame)
            .args([
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-H",
                &format!("authorization: Bearer {}", servers::TOKEN),
            ])
            .arg(format!(
                "{}/zitadel.user.v2.UserService/UnlockUser",
                server.base
            ));
        let output = run_tool(command).await?;
        let text = String::from_utf8_lossy(&output.stdout);
        let theirs =
            h2load_rate(&text).ok_or_else(|| format!("no req/s in h2load's output: {text}"))?;
        let ratio = ours.per_second() / theirs.max(1.0);
        println!(
            "{round:>5}   {:>13.0}   {:>12.0}   {ratio:>16.2}",
            ours.per_second(),
            theirs
        );
        ratios.push(ratio);
    }
    server.stop();
    let median = median(ratios);
    let passed = median >= BAR;
    println!(
        "median gRPC harness / h2load: {median:.2} (bar ≥ 0.90: {})",
        verdict(passed)
    );
    Ok(passed)
}

/// h2load's "finished in 10.00s, 93135.00 req/s, 7.11MB/s".
fn h2load_rate(output: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.starts_with("finished in"))?;
    let rate = line.split(", ").nth(1)?.strip_suffix(" req/s")?;
    rate.parse().ok()
}

/// Runs wrk and reads its `Requests/sec`.
async fn wrk(
    base: &str,
    script: &std::path::Path,
    threads: usize,
    connections: usize,
    duration: Duration,
) -> Result<f64, String> {
    let mut command = std::process::Command::new("wrk");
    command
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("-s")
        .arg(script)
        .arg(base);
    let output = run_tool(command).await?;
    let text = String::from_utf8_lossy(&output.stdout);
    requests_per_second(&text).ok_or_else(|| format!("no Requests/sec in wrk's output: {text}"))
}

fn requests_per_second(wrk_output: &str) -> Option<f64> {
    wrk_output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_rate() {
        let output = "Running 8s test @ http://127.0.0.1:1\n  2 threads and 64 connections\n\
                      Requests/sec: 149506.76\nTransfer/sec:     19.82MB\n";
        assert_eq!(requests_per_second(output), Some(149_506.76));
        assert_eq!(requests_per_second("nothing"), None);
        let h2load = "starting benchmark...\nfinished in 10.00s, 93135.00 req/s, 7.11MB/s\n";
        assert_eq!(h2load_rate(h2load), Some(93_135.0));
    }
}
