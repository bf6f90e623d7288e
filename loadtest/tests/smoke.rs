//! A short run of the harness, embedded and spawned, as part of `cargo test`: it must start, run
//! its scenario, pass its correctness checks and write its JSON and HTML outputs. Numbers are not
//! asserted here (they belong to docs/performance.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey-loadtest");

fn run(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let html = dir.path().join("out.html");
    let output = Command::new(BIN)
        .args(args)
        .args(["--duration", "1s", "--json"])
        .arg(&json)
        .arg("--report")
        .arg(&html)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("Latency by percentile"),
        "{page}"
    );
    report
}

/// A JSON array of numbers (ratios, p99s, a per-tick series).
fn numbers(value: &serde_json::Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// A small embedded `uniform` run (64 users), plus `extra` arguments.
fn embedded_uniform(extra: &[&str]) -> serde_json::Value {
    let small = [
        "--target",
        "embedded",
        "--scenario",
        "uniform",
        "--users",
        "64",
    ];
    run(&[&small[..], extra].concat())
}

/// The small embedded `uniform` run as an open loop at 400/s.
fn embedded_open_loop(extra: &[&str]) -> serde_json::Value {
    embedded_uniform(&[&["--rate", "400"][..], extra].concat())
}

/// The small embedded `uniform` run, closed loop of 8 clients, with its store baseline.
fn embedded_uniform_with_baseline(extra: &[&str]) -> serde_json::Value {
    embedded_uniform(&[&["--concurrency", "8", "--baseline"][..], extra].concat())
}

#[test]
fn embedded_uniform_with_store_baseline() {
    let report = embedded_uniform_with_baseline(&[]);
    assert!(report["latchkey"]["ok"].as_u64().unwrap() > 0);
    assert!(report["baseline"]["requests"].as_u64().unwrap() > 0);
    assert!(report["ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(report["checks"][0]["passed"], true);
}

#[test]
fn a_warm_up_runs_before_the_measured_window() {
    let report = embedded_uniform_with_baseline(&["--warmup", "1s"]);
    assert_eq!(report["warmup_seconds"], 1.0, "{report}");
    for side in ["latchkey", "baseline"] {
        assert!(report[side]["ok"].as_u64().unwrap() > 0, "{report}");
        // 100 ms buckets of the measured second only (with the warm-up it would be ≈ 20)
        let buckets = report[side]["throughput"].as_array().unwrap().len();
        assert!((8..=13).contains(&buckets), "{side}: {buckets} buckets");
        let seconds = report[side]["seconds"].as_f64().unwrap();
        assert!(seconds < 1.5, "{side}: measured {seconds} s");
    }
    assert_eq!(report["checks"][0]["passed"], true);

    // Only uniform and mixed warm up: elsewhere the flag is refused, not ignored.
    let refused = Command::new(BIN)
        .args([
            "--target",
            "embedded",
            "--scenario",
            "hot",
            "--warmup",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--warmup"));
}

#[test]
fn repeated_runs_report_the_median_ratio() {
    let report = embedded_uniform_with_baseline(&["--repeat", "3"]);
    let mut ratios = numbers(&report["ratios"]);
    assert_eq!(ratios.len(), 3, "{report}");
    ratios.sort_by(f64::total_cmp);
    // The report shows the median run: its ratio is the middle one, and its own numbers agree.
    let ratio = report["ratio"].as_f64().unwrap();
    assert_eq!(ratio, ratios[1], "{report}");
    let own = report["latchkey"]["per_second"].as_f64().unwrap()
        / report["baseline"]["per_second"].as_f64().unwrap();
    assert!((own - ratio).abs() < 1e-9, "{own} vs {ratio}");
    assert_eq!(report["checks"][0]["passed"], true);
}

#[test]
fn open_loop_sends_every_scheduled_request_and_times_them() {
    let report = embedded_open_loop(&[]);
    let side = &report["latchkey"];
    // 1 s at 400/s: every intended request is sent once and answered.
    assert_eq!(side["requests"].as_u64(), Some(400), "{side}");
    assert_eq!(side["ok"].as_u64(), Some(400), "{side}");
    // The slowest-per-tick series covers the run and agrees with the histogram's maximum.
    let slowest = numbers(&side["slowest_ms"]);
    assert!(slowest.len() >= 8, "{slowest:?}");
    assert_eq!(slowest.len(), side["throughput"].as_array().unwrap().len());
    let max = side["latency"]["max_ms"].as_f64().unwrap();
    assert!(
        slowest.iter().all(|ms| *ms <= max + 0.01),
        "{slowest:?} > {max}"
    );
}

#[test]
fn an_open_loop_warms_up_and_repeats_by_its_p99() {
    let report = embedded_open_loop(&["--warmup", "500ms", "--repeat", "3"]);
    assert_eq!(report["warmup_seconds"], 0.5, "{report}");
    // The half second at 400/s before the measured one is sent but not counted.
    let side = &report["latchkey"];
    assert_eq!(side["requests"].as_u64(), Some(400), "{side}");
    assert_eq!(side["ok"].as_u64(), Some(400), "{side}");
    let buckets = side["throughput"].as_array().unwrap().len();
    assert!((8..=13).contains(&buckets), "{buckets} buckets");
    // Three runs, and the one shown is the one with the median p99.
    let mut p99s = numbers(&report["p99s_ms"]);
    assert_eq!(p99s.len(), 3, "{report}");
    p99s.sort_by(f64::total_cmp);
    assert_eq!(
        side["latency"]["p99_ms"].as_f64(),
        Some(p99s[1]),
        "{report}"
    );
    let checks = report["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "every warm-up request succeeded" && c["passed"] == true),
        "{checks:?}"
    );
}

#[test]
fn spawned_open_loop_over_its_own_connections_reads_and_writes() {
    let report = run(&[
        "--spawn",
        "--scenario",
        "mixed",
        "--read-ratio",
        "0.5",
        "--users",
        "64",
        "--concurrency",
        "8",
        "--rate",
        "300",
        "--baseline",
    ]);
    // Over HTTP, through 8 held connections, against Latchkey and the baseline: every request
    // of the second is sent once and answered with success (reads and writes alike).
    for side in ["latchkey", "baseline"] {
        let side = &report[side];
        assert_eq!(side["requests"].as_u64(), Some(300), "{side}");
        assert_eq!(side["ok"].as_u64(), Some(300), "{side}");
    }
}

#[test]
fn spawned_unlock_storm_has_one_winner_per_cycle() {
    let report = run(&[
        "--spawn",
        "--scenario",
        "unlock-storm",
        "--concurrency",
        "16",
        "--baseline",
    ]);
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    // the losers were refused with the documented id
    assert!(
        report["latchkey"]["errors"]["USER-NOT-LOCKED"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(report["server"]["mean commit batch size"].as_f64().unwrap() >= 1.0);
}

#[test]
fn embedded_hot_user_alternates_strictly() {
    let report = run(&[
        "--target",
        "embedded",
        "--scenario",
        "hot",
        "--concurrency",
        "32",
    ]);
    assert_eq!(report["checks"][0]["passed"], true, "{report}");
}

#[test]
fn scale_check_passes_on_a_small_population() {
    // The short version of `latchkey-loadtest scale` (1,000,000 users in docs/reliability.md).
    let output = Command::new(BIN)
        .args([
            "scale",
            "--users",
            "3000",
            "--touched",
            "500",
            "--idle-timeout",
            "500ms",
        ])
        .output()
        .expect("run scale");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Exit 1 means a bar was missed; timing bars are not this test's business (they belong to
    // docs/reliability.md), the behaviour is: one activation for the cold user, and an empty
    // registry after the idle timeout.
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("restart → /readyz 200"), "{stdout}");
    assert!(stdout.contains("HTTP 200"), "{stdout}");
    assert!(stdout.contains("1 activation: ok"), "{stdout}");
    assert!(
        stdout.contains("passivation empties the registry: ok"),
        "{stdout}"
    );
}

#[test]
fn spawned_grpc_storm_against_bare_tonic_reads_errors_and_server_cpu() {
    let report = run(&[
        "--spawn",
        "--protocol",
        "grpc",
        "--scenario",
        "unlock-storm",
        "--concurrency",
        "8",
        "--baseline",
    ]);
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    // The losers' refusals are read from grpc-status-details-bin over h2, by their id.
    assert!(
        report["latchkey"]["errors"]["USER-NOT-LOCKED"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        report["latchkey"]
    );
    // The bare tonic baseline answered every call.
    let baseline = &report["baseline"];
    assert!(baseline["ok"].as_u64().unwrap() > 0, "{baseline}");
    assert_eq!(baseline["requests"], baseline["ok"], "{baseline}");
    // Both servers are spawned processes: their CPU per request is reported.
    for side in ["latchkey", "baseline"] {
        let cpu = &report[side]["server_cpu"];
        assert!(cpu["user_us"].as_f64().unwrap() >= 0.0, "{side}: {cpu}");
    }
}

#[test]
fn spawned_server_cpu_is_counted_over_the_measured_window_only() {
    // A warm-up three times the measured second: counted from before the warm-up, the CPU
    // charged to the measured requests would be the server's over four seconds.
    let report = run(&[
        "--spawn",
        "--scenario",
        "uniform",
        "--users",
        "64",
        "--concurrency",
        "8",
        "--warmup",
        "3s",
        "--baseline",
        "--cpu-probe",
    ]);
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    for side in ["latchkey", "baseline"] {
        let side = &report[side];
        let cpu = &side["server_cpu"];
        let per_request = cpu["user_us"].as_f64().unwrap() + cpu["system_us"].as_f64().unwrap();
        let charged = per_request * side["requests"].as_f64().unwrap() / 1e6;
        // No process uses more than every core for the whole window (1 s, and some slack for
        // the readings around it).
        assert!(charged <= cores * 1.5, "{charged} s of CPU charged: {side}");
        // --cpu-probe: the cores' speed was probed beside each side's measured second.
        let probed = &side["cores"];
        assert!(probed["probes"].as_u64().unwrap() >= 1, "{probed}");
        assert!(probed["core_ms"].as_f64().unwrap() > 0.0, "{probed}");
        assert!(probed["memory_ms"].as_f64().unwrap() > 0.0, "{probed}");
    }
}

#[test]
fn cpu_check_prints_a_line_per_probe_and_the_spread() {
    let output = Command::new(BIN)
        .args(["cpu-check", "--every", "50ms", "--duration", "300ms"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let probes: Vec<Vec<f64>> = stdout
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split(' ').map(|f| f.parse().unwrap()).collect())
        .collect();
    // Unix seconds, then the core and memory pieces' milliseconds of CPU, each above zero.
    assert!(!probes.is_empty(), "{stdout}");
    assert!(
        probes
            .iter()
            .all(|p| p.len() == 3 && p[1] > 0.0 && p[2] > 0.0),
        "{stdout}"
    );
    for piece in ["core", "memory"] {
        assert!(
            stdout.contains(&format!("# {piece}: {} probes", probes.len())),
            "{stdout}"
        );
    }
}
