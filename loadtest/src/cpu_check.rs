//! `latchkey-loadtest cpu-check`: how fast this machine's cores run, probe by probe — the
//! question under every comparison of two runs made at different moments.
//!
//! On a virtual machine the same instructions do not always take the same CPU time: the host
//! may run something on the other hyperthread of the core a vCPU sits on, or change the clock,
//! and the guest sees neither as stolen time. A ratio to a baseline measured seconds later, or
//! CPU per command compared between a 1-node and a 4-node cluster run, moves with it. This runs
//! two fixed pieces of work every `--every`, each timed by the thread's own CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`, so time spent waiting for a core does not count, only how fast
//! the work ran once it had one):
//! - *core*: integer arithmetic over a 64-KiB table, the core's own speed with its L1 cache;
//! - *memory*: a chain of dependent reads through a 16-MiB table, each read a cache miss past
//!   the core's own caches — what a server pays for state it has not touched for a while
//!   (a user's actor and records, docs/performance.md).
//!
//! Together they take ≈ 10 ms on a fast moment of this machine: at the default 500-ms interval,
//! ≈ 2 % of one core taken from whatever runs beside. It prints one line per probe (seconds
//! since the Unix epoch, then each piece's milliseconds of CPU) and at the end each piece's
//! distribution: the fastest probe, the median, the slowest and the slowest over the fastest.
//! `loadtest/cluster.sh` runs it beside each cluster run and reports the probes of its measured
//! window; `--cpu-probe` runs the same probes beside each measured run of the harness (after
//! its warm-up), and the report gives their medians for Latchkey's run and the baseline's.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Entries of the core piece's table: 64 KiB of `u64`, in L1 or L2 on any core.
const TABLE: usize = 8192;
/// Steps of the core piece.
const STEPS: u64 = 2_500_000;
/// Entries of the memory piece's chain: 16 MiB of `u64`, past any one core's caches.
const CHAIN: usize = 2 << 20;
/// Reads of the memory piece.
const READS: usize = 40_000;

pub fn run(every: Duration, duration: Duration) -> Result<(), String> {
    let chain = chain(CHAIN);
    println!("# fixed work every {every:?} for {duration:?}: unix seconds, core ms, memory ms");
    let (mut cores, mut memories) = (Vec::new(), Vec::new());
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let started = Instant::now();
        let (core, memory) = probe(&chain)?;
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs_f64();
        println!("{at:.3} {core:.3} {memory:.3}");
        cores.push(core);
        memories.push(memory);
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
    for (name, probes) in [("core", &mut cores), ("memory", &mut memories)] {
        match spread(probes) {
            Some(s) => println!(
                "# {name}: {} probes, fastest {:.3} ms, median {:.3}, slowest {:.3} ({:.2} × the fastest)",
                probes.len(),
                s.fastest,
                s.median,
                s.slowest,
                s.slowest / s.fastest
            ),
            None => println!("# {name}: no probe ran"),
        }
    }
    Ok(())
}

/// The medians of the probes made beside one measured run (`--cpu-probe`): how fast the cores
/// ran while it was measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cores {
    pub core_ms: f64,
    pub memory_ms: f64,
    pub probes: usize,
}

/// Probes on a thread of their own, every `EVERY` from `after` on, until [`Beside::finish`].
pub struct Beside {
    /// Dropped to stop the thread.
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Vec<(f64, f64)>>,
}

const EVERY: Duration = Duration::from_millis(500);

impl Beside {
    /// Starts probing once `after` (a run's warm-up) has passed.
    pub fn start(after: Duration) -> Beside {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let chain = chain(CHAIN);
            let mut probes = Vec::new();
            let mut next = Instant::now() + after;
            while let Err(RecvTimeoutError::Timeout) =
                stopped.recv_timeout(next.saturating_duration_since(Instant::now()))
            {
                next += EVERY;
                if let Ok(one) = probe(&chain) {
                    probes.push(one);
                }
            }
            probes
        });
        Beside { stop, thread }
    }

    /// Stops probing; the medians of what was probed (none: `None`).
    pub fn finish(self) -> Option<Cores> {
        let Beside { stop, thread } = self;
        drop(stop);
        let probes = thread.join().ok()?;
        let (mut core, mut memory): (Vec<f64>, Vec<f64>) = probes.into_iter().unzip();
        Some(Cores {
            probes: core.len(),
            core_ms: spread(&mut core)?.median,
            memory_ms: spread(&mut memory)?.median,
        })
    }
}

/// One probe: the core piece's and the memory piece's milliseconds of CPU.
fn probe(chain: &[u64]) -> Result<(f64, f64), String> {
    Ok((timed(|| work(STEPS))?, timed(|| walk(chain, READS))?))
}

/// The CPU time `piece` takes, in milliseconds.
fn timed(piece: impl FnOnce() -> u64) -> Result<f64, String> {
    let start = thread_cpu()?;
    std::hint::black_box(piece());
    Ok((thread_cpu()? - start).as_secs_f64() * 1000.0)
}

/// One cycle through `len` slots in a pseudo-random order (Sattolo's shuffle): each slot holds
/// the next one's index, so a walk's reads depend on each other and no prefetcher guesses them.
fn chain(len: usize) -> Vec<u64> {
    let mut next: Vec<u64> = (0..len as u64).collect();
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    for i in (1..len).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        next.swap(i, (x % i as u64) as usize);
    }
    next
}

/// `reads` dependent reads along `chain`; the slot it ends on.
fn walk(chain: &[u64], reads: usize) -> u64 {
    let mut at = 0_u64;
    for _ in 0..reads {
        at = chain[at as usize];
    }
    at
}

/// The fixed work: a xorshift generator stirring a small table. Its result depends on every
/// step, so none of it can be left out.
fn work(steps: u64) -> u64 {
    let mut table = vec![0_u64; TABLE];
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let slot = &mut table[(x as usize) % TABLE];
        *slot = slot.wrapping_add(x);
    }
    table.iter().fold(x, |acc, v| acc ^ v)
}

/// This thread's CPU time so far.
fn thread_cpu() -> Result<Duration, String> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return Err(format!(
            "clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// Fastest, median and slowest of some probes.
#[derive(Debug, PartialEq)]
struct Spread {
    fastest: f64,
    median: f64,
    slowest: f64,
}

fn spread(probes: &mut [f64]) -> Option<Spread> {
    if probes.is_empty() {
        return None;
    }
    probes.sort_by(f64::total_cmp);
    Some(Spread {
        fastest: probes[0],
        median: probes[probes.len() / 2],
        slowest: probes[probes.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_is_deterministic_and_depends_on_its_length() {
        assert_eq!(work(1_000), work(1_000));
        assert_ne!(work(1_000), work(1_001));
    }

    #[test]
    fn the_thread_clock_counts_work_not_sleep() {
        let start = thread_cpu().unwrap();
        std::hint::black_box(work(STEPS));
        let one = thread_cpu().unwrap() - start;
        assert!(one > Duration::ZERO);
        // The thread's clock advances with its own work only: a sleep adds nothing.
        let before = thread_cpu().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(thread_cpu().unwrap() - before < Duration::from_millis(25));
    }

    #[test]
    fn the_chain_is_one_cycle_through_every_slot() {
        let chain = chain(1000);
        let mut seen = vec![false; chain.len()];
        let mut at = 0;
        for _ in 0..chain.len() {
            assert!(!seen[at], "slot {at} came round before the cycle closed");
            seen[at] = true;
            at = chain[at] as usize;
        }
        assert_eq!(at, 0);
        assert!(seen.iter().all(|s| *s));
        assert_eq!(walk(&chain, chain.len()), 0);
    }

    #[test]
    fn the_spread_names_the_fastest_median_and_slowest() {
        assert_eq!(spread(&mut []), None);
        let mut probes = [5.0, 3.0, 9.0, 4.0, 7.0];
        assert_eq!(
            spread(&mut probes),
            Some(Spread {
                fastest: 3.0,
                median: 5.0,
                slowest: 9.0
            })
        );
    }
}
