//! The store ceiling: the storage crate alone writing records shaped like a command's (one
//! snapshot + one event per write, same group-commit writer, same durability), from the same
//! number of concurrent clients — no actors, no HTTP. The embedded target's ratio to this is what
//! the engine costs on top of the disk.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use latchkey_engine::{event_key, snapshot_key, store_config, Config, Medium};
use latchkey_storage::{Durability, Store, WriteBatch};

use crate::recorder::RunResult;
use crate::runner::Settings;

/// About the encoded size of a human user's snapshot.
const SNAPSHOT_BYTES: usize = 180;
const EVENT_BYTES: usize = 24;

pub async fn measure(
    dir: &Path,
    medium: Medium,
    durability: Durability,
    settings: &Settings,
    progress: Arc<AtomicU64>,
) -> Result<RunResult, String> {
    let config = store_config(
        &Config::default()
            .data_dir(dir)
            .medium(medium)
            .durability(durability),
    );
    let store = Arc::new(Store::open(&config).map_err(|e| e.to_string())?);
    // Warm-up as in the closed loop: the same clients write before the measured window.
    let start = Instant::now() + settings.warmup;
    let end = start + settings.duration;
    let clients = settings.concurrency.max(1);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (store, progress) = (store.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut recorder = crate::recorder::Probe::new(start, progress);
            let users: Vec<String> = (0..16).map(|u| format!("ceiling-{client}-{u}")).collect();
            let mut sequence = 0u64;
            while Instant::now() < end {
                let user = &users[sequence as usize % users.len()];
                sequence += 1;
                let mut batch = WriteBatch::default();
                batch.put(snapshot_key(user), vec![0xA5; SNAPSHOT_BYTES]);
                batch.put(event_key(user, sequence), vec![0x5A; EVENT_BYTES]);
                let sent = Instant::now();
                let outcome = store
                    .submit(&snapshot_key(user), batch)
                    .wait()
                    .await
                    .map_err(|e| e.to_string());
                recorder.record(sent, &outcome);
            }
            recorder
        }));
    }
    let mut recorders = Vec::new();
    for task in tasks {
        recorders.push(task.await.map_err(|e| e.to_string())?);
    }
    let elapsed = start.elapsed();
    let closing = store.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(crate::recorder::Probe::finish(recorders, elapsed))
}
