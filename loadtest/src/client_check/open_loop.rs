//! The open-loop half of `client-check`: is the harness's open loop (`--rate`) fast enough to
//! measure latency with?
//!
//! An open loop sends at fixed intended times and counts latency from them, so a client that is
//! late to send, or slow to read an answer, shows its own delay as the server's. On the bare
//! axum baseline, which answers in microseconds, nearly all of the measured latency is the
//! client's and the kernel's: the check drives it at one rate with the harness's open loop and
//! with oha (`oha -q <rate> --latency-correction`, latency from the intended time as well, on as
//! many connections), interleaved, and compares what each sent and the p99 each measured. The
//! bar, as for the closed loop: the harness sends at least 0.9 × what oha completed, and its p99
//! is at most oha's / 0.9 (median of the rounds). oha comes from crates.io (`cargo install
//! oha`); without it the check says so and does not judge.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::runner::{self, Settings};
use crate::target::Target;

/// What one open-loop run measured: requests per second completed, and the p50 and p99 in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Measured {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// True if the bar is met or oha is not installed.
pub(super) async fn check(
    rounds: usize,
    target: &Target,
    base: &str,
    closed: &Settings,
    users: &Arc<Vec<String>>,
    rate: f64,
) -> Result<bool, String> {
    if !super::installed("oha") {
        println!("oha is not installed (cargo install oha): no open-loop comparison");
        return Ok(true);
    }
    let settings = Settings {
        rate: Some(rate),
        warmup: WARMUP,
        ..closed.clone()
    };
    println!(
        "bare axum baseline, open loop at {rate:.0}/s on {} connections, interleaved",
        settings.concurrency
    );
    println!(
        "round   harness req/s  p50 ms  p99 ms   oha req/s  p50 ms  p99 ms   p99 harness / oha"
    );
    let mut sent = Vec::new();
    let mut p99s = Vec::new();
    for round in 1..=rounds {
        let progress = Arc::new(AtomicU64::new(0));
        let run = runner::run(target, &settings, users.clone(), progress, false).await;
        if run.ok == 0 {
            return Err(format!("the harness got no answer: {:?}", run.errors));
        }
        let ours = Measured {
            per_second: run.per_second(),
            p50_ms: run.histogram.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: run.histogram.value_at_quantile(0.99) as f64 / 1000.0,
        };
        let theirs = oha(base, rate, settings.concurrency, settings.duration).await?;
        let p99_ratio = ours.p99_ms / theirs.p99_ms.max(0.001);
        println!(
            "{round:>5}   {:>13.0}  {:>6.2}  {:>6.2}   {:>9.0}  {:>6.2}  {:>6.2}   {p99_ratio:>17.2}",
            ours.per_second,
            ours.p50_ms,
            ours.p99_ms,
            theirs.per_second,
            theirs.p50_ms,
            theirs.p99_ms
        );
        sent.push(ours.per_second / theirs.per_second.max(1.0));
        p99s.push(p99_ratio);
    }
    let sent = super::median(sent);
    let p99 = super::median(p99s);
    let passed = sent >= super::BAR && p99 <= 1.0 / super::BAR;
    println!(
        "median open loop, harness / oha: sent {sent:.2} (bar ≥ 0.90), p99 {p99:.2} (bar ≤ 1.11): {}",
        super::verdict(passed)
    );
    Ok(passed)
}

/// The open loop's warm-up (the same rate, not counted), as in docs/performance.md's open-loop
/// row (`--warmup 5s`). oha has none: its connections open inside its measured time, which can
/// only count against it.
const WARMUP: Duration = Duration::from_secs(5);

/// Runs oha against `base` at `rate` (lock and unlock over the baseline's ids, which it answers
/// alike) and reads its JSON summary.
async fn oha(
    base: &str,
    rate: f64,
    connections: usize,
    duration: Duration,
) -> Result<Measured, String> {
    let mut command = std::process::Command::new("oha");
    command
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
        ])
        .arg("-q")
        .arg(format!("{rate:.0}"))
        .arg("-c")
        .arg(connections.to_string())
        .arg("-z")
        .arg(format!("{}s", duration.as_secs().max(1)))
        .args(["-m", "POST", "-d", "{}", "-T", "application/json"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", crate::servers::TOKEN))
        .arg("--rand-regex-url")
        // oha reads `.` literally in the pattern, so the base goes in as it is.
        .arg(format!("{base}/v2/users/1[0-9]{{5}}/(lock|unlock)"));
    let output = super::run_tool(command).await?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse(&text).ok_or_else(|| {
        format!(
            "no summary in oha's output: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// oha's `--output-format json`: `summary.requestsPerSec` and `latencyPercentiles` (seconds),
/// `None` unless every answer it got was a 200 (a refused request measures something else).
fn parse(json: &str) -> Option<Measured> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let statuses = value["statusCodeDistribution"].as_object()?;
    if statuses.is_empty() || statuses.keys().any(|status| status != "200") {
        return None;
    }
    let seconds = |name: &str| value["latencyPercentiles"][name].as_f64();
    Some(Measured {
        per_second: value["summary"]["requestsPerSec"].as_f64()?,
        p50_ms: seconds("p50")? * 1000.0,
        p99_ms: seconds("p99")? * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ohas_json_summary() {
        let json = r#"{"summary":{"successRate":1.0,"total":10.0,"requestsPerSec":29998.4},
            "latencyPercentiles":{"p10":0.0001,"p50":0.00021,"p99":0.00125,"p99.9":0.004},
            "statusCodeDistribution":{"200":299984}}"#;
        let measured = parse(json).expect("a summary");
        assert_eq!(measured.per_second, 29_998.4);
        assert!((measured.p50_ms - 0.21).abs() < 1e-9);
        assert!((measured.p99_ms - 1.25).abs() < 1e-9);
        let refused = json.replace(r#"{"200":299984}"#, r#"{"200":2,"403":299982}"#);
        assert_eq!(parse(&refused), None);
        assert_eq!(parse("{\"summary\":{}}"), None);
        assert_eq!(parse("not json"), None);
    }
}
