//! The server's own view of a run, from its `/metrics` (or the in-process recorder when the
//! engine is embedded): what the store did per flush; and the machine a report was made on.

use std::collections::BTreeMap;

use crate::target::Target;

/// Numeric series of `/metrics` (or the in-process recorder, embedded), keyed by full name.
pub async fn scrape(target: &Target) -> BTreeMap<String, f64> {
    let text = match target.base() {
        None => latchkey_api::metrics::render().await,
        Some((client, base)) => match client.get(format!("{base}/metrics")).send().await {
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
pub fn server_view(
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

pub fn machine() -> String {
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

/// What a process has used so far, all its threads: CPU seconds (user, kernel) and context
/// switches (each a thread that went to sleep or was preempted — a wake-up to come).
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub user: f64,
    pub system: f64,
    pub switches: u64,
}

/// A process's [`Usage`]: CPU from `/proc/<pid>/stat` (fields 14 and 15, in clock ticks of 1/100 s
/// — Linux's `USER_HZ` on every architecture the harness runs on), context switches summed over
/// its threads' `/proc/<pid>/task/*/status` (a thread that ended takes its count with it; a
/// server's threads live as long as it does). `None` where there is no `/proc`.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        switches += context_switches(&status);
    }
    // `rest` starts at field 3, so field n is at index n - 3.
    Some(Usage {
        user: ticks(11)? / 100.0,
        system: ticks(12)? / 100.0,
        switches,
    })
}

/// Voluntary and involuntary context switches of one `/proc/…/status`.
fn context_switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|line| line.contains("ctxt_switches:"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// A server's CPU and context switches per request between two [`usage`] readings.
pub fn cpu_per_request(
    before: Option<Usage>,
    after: Option<Usage>,
    requests: u64,
) -> Option<crate::report::ServerCpu> {
    let (before, after) = (before?, after?);
    let requests = requests.max(1) as f64;
    Some(crate::report::ServerCpu {
        user_us: (after.user - before.user) * 1e6 / requests,
        system_us: (after.system - before.system) * 1e6 / requests,
        switches: after.switches.saturating_sub(before.switches) as f64 / requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_usage() {
        let used = usage(std::process::id()).expect("/proc/self");
        assert!(used.user >= 0.0 && used.system >= 0.0);
        // This thread sleeps, so it is switched out at least once (a thread that has ended takes
        // its count with it, so it must be a live one).
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(usage(std::process::id()).unwrap().switches > 0);
        let at = |user, system, switches| {
            Some(Usage {
                user,
                system,
                switches,
            })
        };
        let cpu = cpu_per_request(at(1.0, 0.5, 1_000), at(2.0, 1.0, 301_000), 100_000).unwrap();
        assert!((cpu.user_us - 10.0).abs() < 1e-9 && (cpu.system_us - 5.0).abs() < 1e-9);
        assert!((cpu.switches - 3.0).abs() < 1e-9);
    }

    #[test]
    fn counts_both_kinds_of_context_switches() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(context_switches(status), 15);
    }
}
