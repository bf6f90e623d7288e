//! What a measured run records: each client's own tallies — an HDR latency histogram, its
//! outcomes by error id, completions and the slowest request per [`TICK`] — merged into one
//! [`RunResult`] at the end, so the hot path takes no shared lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::target::Outcome;

/// Width of one throughput-timeline bucket.
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// What one measured run produced.
pub struct RunResult {
    pub elapsed: Duration,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Latency in microseconds.
    pub histogram: Histogram<u64>,
    /// Completions per [`TICK`].
    pub timeline: Vec<u64>,
    /// The slowest latency (µs) of the requests that completed in each [`TICK`].
    pub slowest: Vec<u64>,
    pub checks: Vec<Check>,
    /// A spawned server's CPU per request over the run (set by the orchestrator).
    pub server_cpu: Option<crate::report::ServerCpu>,
    /// How fast the cores ran meanwhile (`--cpu-probe`; set by the orchestrator).
    pub cores: Option<crate::cpu_check::Cores>,
}

impl RunResult {
    pub fn requests(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn ok_per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One client's tallies (merged at the end: no shared locks on the hot path). Requests sent
/// before `start` are the warm-up: not measured, but their failures are counted.
pub struct Recorder {
    start: Instant,
    pub(crate) warmup_failures: u64,
    histogram: Histogram<u64>,
    timeline: Vec<u64>,
    slowest: Vec<u64>,
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    progress: Arc<AtomicU64>,
}

impl Recorder {
    pub fn new(start: Instant, progress: Arc<AtomicU64>) -> Self {
        Recorder {
            start,
            warmup_failures: 0,
            // 1 µs .. 60 s, 3 significant digits
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
            }),
            timeline: Vec::new(),
            slowest: Vec::new(),
            ok: 0,
            errors: BTreeMap::new(),
            progress,
        }
    }

    pub fn record(&mut self, since: Instant, outcome: &Outcome) {
        if since < self.start {
            self.warmup_failures += u64::from(outcome.is_err());
            return;
        }
        let now = Instant::now();
        let micros = now.saturating_duration_since(since).as_micros() as u64;
        self.histogram.saturating_record(micros.max(1));
        let tick =
            (now.saturating_duration_since(self.start).as_nanos() / TICK.as_nanos()) as usize;
        if self.timeline.len() <= tick {
            self.timeline.resize(tick + 1, 0);
            self.slowest.resize(tick + 1, 0);
        }
        self.timeline[tick] += 1;
        self.slowest[tick] = self.slowest[tick].max(micros);
        match outcome {
            Ok(()) => self.ok += 1,
            Err(id) => *self.errors.entry(id.clone()).or_insert(0) += 1,
        }
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn merge(
        results: Vec<Recorder>,
        elapsed: Duration,
        checks: Vec<Check>,
    ) -> RunResult {
        let mut merged = RunResult {
            elapsed,
            ok: 0,
            errors: BTreeMap::new(),
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid bounds")),
            timeline: Vec::new(),
            slowest: Vec::new(),
            checks,
            server_cpu: None,
            cores: None,
        };
        for r in results {
            merged.ok += r.ok;
            for (k, v) in r.errors {
                *merged.errors.entry(k).or_insert(0) += v;
            }
            let _ = merged.histogram.add(&r.histogram);
            if merged.timeline.len() < r.timeline.len() {
                merged.timeline.resize(r.timeline.len(), 0);
                merged.slowest.resize(r.timeline.len(), 0);
            }
            for (i, n) in r.timeline.iter().enumerate() {
                merged.timeline[i] += n;
            }
            for (i, micros) in r.slowest.iter().enumerate() {
                merged.slowest[i] = merged.slowest[i].max(*micros);
            }
        }
        merged
    }
}

/// The recorder, for measurements outside this module (the store ceiling).
pub type Probe = Recorder;

impl Recorder {
    pub fn finish(recorders: Vec<Recorder>, elapsed: Duration) -> RunResult {
        Recorder::merge(recorders, elapsed, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_requests_are_not_measured_but_their_failures_count() {
        let start = Instant::now() + Duration::from_secs(60);
        let mut recorder = Recorder::new(start, Arc::new(AtomicU64::new(0)));
        let before = Instant::now();
        recorder.record(before, &Ok(()));
        recorder.record(before, &Err("USER-NOT-FOUND".into()));
        assert_eq!(recorder.warmup_failures, 1);
        let run = Recorder::merge(vec![recorder], Duration::from_secs(1), Vec::new());
        assert_eq!(run.requests(), 0);
        assert!(run.timeline.is_empty());
    }
}
