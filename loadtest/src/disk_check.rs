//! `latchkey-loadtest disk-check`: how long a commit's `fdatasync` takes on this machine's disk,
//! with the cores idle and with busy threads beside it — the floor under every sync-mode latency.
//!
//! A sync-mode write is answered after its group's `fdatasync`, so a slow sync is every waiting
//! write's tail. Whether the tail comes from the disk or from Latchkey is not visible from the
//! server alone; this writes 4 KiB and syncs it in a loop on a preallocated file (what the log
//! does with a recycled segment) in three settings, one after another:
//! - idle: nothing else running;
//! - a busy thread on the syncing thread's core (both pinned to core 0);
//! - a busy thread on another core (the syncing thread on core 0, the busy one on core 1).
//!
//! If the disk alone syncs in well under a millisecond in every setting, a server's slow flushes
//! under load come from the machine under load, not from the disk's own latency.
//!
//! It prints the distribution of each setting and how many syncs took over 10 ms.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const FILE_BYTES: u64 = 64 << 20;
const WRITE: usize = 4096;

pub fn run(dir: &Path, duration: Duration) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "fdatasync of a 4 KiB overwrite in a preallocated file under {}, {duration:?} per setting",
        dir.display()
    );
    println!("setting                      syncs/s   p50 ms   p99 ms  p99.9 ms   max ms   > 10 ms");
    let mut settings = vec![("idle", None), ("busy thread, same core", Some(0))];
    if cores > 1 {
        settings.push(("busy thread, other core", Some(1)));
    } else {
        println!("(one core: the other-core setting is skipped)");
    }
    for (name, busy_core) in settings {
        let stop = Arc::new(AtomicBool::new(false));
        let busy = busy_core.map(|core| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin(core);
                let mut spins = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            })
        });
        let measured = syncs(dir, duration);
        stop.store(true, Ordering::Relaxed);
        if let Some(busy) = busy {
            let _ = busy.join();
        }
        let h = measured?;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name:<26} {:>9.0} {:>8.3} {:>8.3} {:>9.3} {:>8.3} {:>9}",
            h.len() as f64 / duration.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0,
            h.len() - h.count_between(0, 10_000),
        );
    }
    Ok(())
}

/// Syncs on core 0 for `duration`; latencies in microseconds.
fn syncs(dir: &Path, duration: Duration) -> Result<Histogram<u64>, String> {
    let handle = {
        let dir = dir.to_path_buf();
        std::thread::spawn(move || -> Result<Histogram<u64>, String> {
            pin(0);
            // A named file, as the log's segments are.
            let named = tempfile::NamedTempFile::new_in(&dir).map_err(|e| e.to_string())?;
            let file = named.as_file();
            let zeros = vec![0_u8; 1 << 20];
            for at in (0..FILE_BYTES).step_by(zeros.len()) {
                file.write_all_at(&zeros, at).map_err(|e| e.to_string())?;
            }
            file.sync_all().map_err(|e| e.to_string())?;
            let mut h = Histogram::new(3).map_err(|e| e.to_string())?;
            let block = vec![b'x'; WRITE];
            let mut at = 0;
            let end = Instant::now() + duration;
            while Instant::now() < end {
                file.write_all_at(&block, at).map_err(|e| e.to_string())?;
                at = (at + WRITE as u64) % FILE_BYTES;
                let started = Instant::now();
                file.sync_data().map_err(|e| e.to_string())?;
                h.saturating_record(started.elapsed().as_micros() as u64);
            }
            Ok(h)
        })
    };
    handle
        .join()
        .map_err(|_| "the syncing thread panicked".to_string())?
}

/// Pins the calling thread to `core`; says so on stderr when it cannot (a process confined to
/// other cores, another OS), since the setting then ran with the thread wherever it was put.
fn pin(core: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it for core < 1024.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    #[cfg(not(target_os = "linux"))]
    let pinned = false;
    if !pinned {
        eprintln!("(could not pin a thread to core {core}: this setting ran it unpinned)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_syncs_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let h = syncs(dir.path(), Duration::from_millis(50)).unwrap();
        assert!(!h.is_empty(), "no sync was timed");
        // The file it synced is gone: nothing is left behind in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
