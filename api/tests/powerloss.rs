//! Power loss: the real binary on a filesystem that forgets unsynced writes (`support/lazyfs.rs`),
//! killed at random moments under load with the power cut at the same instant, then restarted.
//! Every write acknowledged before the cut must be there, the store must open, and the data
//! directory must verify clean. Unlike the kill -9 suite, this drops what only the page cache
//! held — the log's unsynced appends and sled's unflushed pages alike.
//!
//! Needs `/dev/fuse` and root (it mounts without fusermount); where they are missing, it says so
//! and checks nothing. The long run:
//!   LATCHKEY_POWERLOSS_CYCLES=40 cargo test --release -p latchkey-api --test powerloss -- --ignored --nocapture

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

#[path = "support/lazyfs.rs"]
mod lazyfs;
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::binary::{self, sequence, BIN};

/// An acknowledged answer, or `None` (refused, or cut off by the kill).
async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Option<Value> {
    match binary::try_post(http, base, path, body).await? {
        (200, answer) => Some(answer),
        _ => None,
    }
}

/// What the clients had acknowledged: per toggled user the highest sequence, and created users.
#[derive(Default)]
struct Acknowledged {
    sequences: BTreeMap<String, u64>,
    created: Vec<String>,
}

/// One client until `stop`: lock/unlock its user, and now and then create one; only what was
/// acknowledged is recorded (a request the kill cut off may or may not have been applied).
async fn client(
    base: String,
    user: String,
    n: usize,
    cycle: usize,
    stop: Arc<AtomicBool>,
) -> Acknowledged {
    let http = reqwest::Client::new();
    let mut seen = Acknowledged::default();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        if i % 5 == 0 {
            let body = binary::human(&format!("c{cycle}-{n}-{i}@example.com"));
            match post(&http, &base, "/v2/users/human", body).await {
                Some(reply) => seen
                    .created
                    .push(reply["userId"].as_str().unwrap().to_owned()),
                None => break,
            }
            continue;
        }
        let action = if i % 2 == 0 { "lock" } else { "unlock" };
        match post(
            &http,
            &base,
            &format!("/v2/users/{user}/{action}"),
            json!({}),
        )
        .await
        {
            Some(reply) => {
                seen.sequences.insert(user.clone(), sequence(&reply));
            }
            // refused (already locked/unlocked after a lost write) or cut off by the kill
            None => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
    seen
}

async fn user_sequence(http: &reqwest::Client, base: &str, id: &str) -> Option<u64> {
    match binary::get(http, base, &format!("/v2/users/{id}")).await {
        (404, _) => None,
        (200, user) => Some(sequence(&user)),
        (status, answer) => panic!("{id}: {status} {answer}"),
    }
}

struct Report {
    cycles: usize,
    acknowledged: usize,
    /// Writes the filesystem held unsynced at the cuts and dropped (in sync mode mostly none:
    /// every log append is synced before it is acknowledged, and sled's writes at each
    /// checkpoint — before the fix, a checkpoint's sled writes were lost here).
    lost_unsynced_writes: usize,
}

/// `store` is the `--store` the server runs on (sled or redb).
async fn power_loss_run(store: &str, cycles: usize, seed: u64) -> Option<Report> {
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let mounted = match lazyfs::LazyFs::mount(&mountpoint) {
        Ok(mounted) => mounted,
        Err(why) => {
            eprintln!("power-loss test skipped: {why}");
            return None;
        }
    };
    let data = mountpoint.join("data");
    // Small checkpoints: the store is written (and its unsynced pages lost) in every cycle.
    let flags = ["--checkpoint-entries", "300", "--store", store];
    let mut server = binary::start(&data, "sync", &flags);
    let http = reqwest::Client::new();
    let mut users = Vec::new();
    for n in 0..8 {
        let body = binary::human(&format!("toggle{n}@example.com"));
        let reply = post(&http, &server.base, "/v2/users/human", body)
            .await
            .unwrap();
        users.push(reply["userId"].as_str().unwrap().to_owned());
    }
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    let mut created: Vec<String> = Vec::new();
    let mut report = Report {
        cycles,
        acknowledged: 0,
        lost_unsynced_writes: 0,
    };
    let mut random = seed;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(n, user)| {
                tokio::spawn(client(
                    server.base.clone(),
                    user.clone(),
                    n,
                    cycle,
                    stop.clone(),
                ))
            })
            .collect();
        random = random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let run = Duration::from_millis(300 + (random >> 33) % 700);
        tokio::time::sleep(run).await;
        // The power goes: the process and every unsynced byte at the same instant.
        server.kill9();
        report.lost_unsynced_writes += mounted.fs.power_cut();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let seen = task.await.unwrap();
            for (user, sequence) in seen.sequences {
                let entry = acknowledged.entry(user).or_default();
                *entry = (*entry).max(sequence);
                report.acknowledged += 1;
            }
            report.acknowledged += seen.created.len();
            created.extend(seen.created);
        }
        server = binary::start(&data, "sync", &flags);
        for (user, &sequence) in &acknowledged {
            let now = user_sequence(&http, &server.base, user).await;
            assert!(
                now.is_some_and(|now| now >= sequence),
                "cycle {cycle}: {user} acknowledged at sequence {sequence}, after the power cut {now:?}"
            );
        }
        for user in &created {
            assert!(
                user_sequence(&http, &server.base, user).await.is_some(),
                "cycle {cycle}: created user {user} acknowledged, lost in the power cut"
            );
        }
    }
    server.sigterm();
    assert!(server.wait().success());
    let out = std::process::Command::new(BIN)
        .arg("verify")
        .args(["--store", store])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify after the power cuts: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(mounted);
    Some(report)
}

fn check(report: Option<Report>) {
    let Some(report) = report else { return };
    eprintln!(
        "{} power cuts: {} acknowledged writes kept, {} unsynced writes dropped",
        report.cycles, report.acknowledged, report.lost_unsynced_writes
    );
    assert!(report.acknowledged > 50, "the clients wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_power_cuts_and_the_store_opens() {
    check(power_loss_run("sled", 4, 0x90E7).await);
}

/// The same on `--store redb`: its checkpoint commits are made durable only by the empty durable
/// commit that ends each checkpoint, before the log's segments go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_power_cuts_on_redb() {
    check(power_loss_run("redb", 4, 0x2EDB).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: run with --ignored (see the module docs)"]
async fn many_power_cuts() {
    let cycles = std::env::var("LATCHKEY_POWERLOSS_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(40);
    check(power_loss_run("sled", cycles, 0xC0FFEE).await);
    check(power_loss_run("redb", cycles, 0xC0FFEF).await);
}
