//! `--repeat`: of several runs of the same test, the one with the median ratio (or, for an open
//! loop, the median p99) is reported, carrying every run's figure and every run's failed checks.

use crate::recorder::Check;
use crate::report::Report;

/// The run with the median ratio (for an open loop: the median Latchkey p99, its headline; the
/// later one of the middle two for an even count), carrying every run's ratio or p99 and every
/// other run's failed checks.
pub fn pick_median(mut runs: Vec<Report>) -> Report {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::recorder::Probe;
    use crate::report::Side;

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
