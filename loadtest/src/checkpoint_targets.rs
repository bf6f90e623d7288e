//! `latchkey-loadtest checkpoint-targets`: sled against redb 4 and fjall 3 as the target of the
//! write-ahead log's checkpoints, through the store's own `Backend` trait. Each store is filled
//! the way checkpoints fill it — batches of 1,024 operations, then a flush, per checkpoint of
//! `--checkpoint` entries (a new user is a snapshot, a username index entry and an event chunk:
//! the engine's shapes and sizes, random bytes so compression gains nothing) — up to `--entries`;
//! then checkpoints that update random existing users (the steady state of a busy server); then
//! the store is reopened and read at random keys. What each costs is what decides the target:
//! checkpoint time as the store grows, open time, point reads (activations), disk size.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_storage::{Backend, RedbBackend, SledBackend, WriteBatch};

pub struct Args {
    pub entries: usize,
    pub checkpoint: usize,
    pub cache_mb: u64,
    /// Ops per `apply_each` (the log's is `CHECKPOINT_CHUNK`).
    pub chunk: usize,
    /// Only these stores (names as in the table, any case); all when empty.
    pub only: Vec<String>,
}
/// Users per update checkpoint in the steady-state phase.
const UPDATE_CHECKPOINTS: usize = 5;
const READS: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sled,
    Redb,
    Fjall,
}

fn open(kind: Kind, dir: &Path, cache_bytes: u64) -> Result<Arc<dyn Backend>, String> {
    let e = |e: latchkey_storage::StoreError| e.to_string();
    Ok(match kind {
        Kind::Sled => Arc::new(SledBackend::open_with(dir, cache_bytes, &[]).map_err(e)?),
        Kind::Redb => Arc::new(RedbBackend::open_with(dir, cache_bytes, &[]).map_err(e)?),
        Kind::Fjall => Arc::new(
            latchkey_storage::other_backends::FjallBackend::open(dir, cache_bytes).map_err(e)?,
        ),
    })
}

/// A small deterministic generator (no dependency for a benchmark's bytes).
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn user_id(n: usize) -> String {
    format!("{}", 117_000_000_000_000_000u64 + n as u64)
}

fn tagged(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![tag];
    for part in parts {
        key.extend_from_slice(&(part.len() as u16).to_be_bytes());
        key.extend_from_slice(part);
    }
    key
}

fn snapshot_key(n: usize) -> Vec<u8> {
    tagged(b'u', &[user_id(n).as_bytes()])
}

/// One checkpoint's worth of writes: applied in chunks as the log's checkpoint does, then
/// flushed. Returns its time.
fn checkpoint(
    backend: &dyn Backend,
    chunk: usize,
    ops: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut batch = WriteBatch::default();
    for (key, value) in ops {
        batch.put(key, value);
        if batch.ops().len() >= chunk {
            backend
                .apply_each(std::mem::take(&mut batch))
                .map_err(|e| e.to_string())?;
        }
    }
    if !batch.is_empty() {
        backend.apply_each(batch).map_err(|e| e.to_string())?;
    }
    backend.flush().map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

fn new_users(first: usize, count: usize, bytes: &mut Bytes) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut ops = Vec::with_capacity(count * 3);
    for n in first..first + count {
        let id = user_id(n);
        ops.push((snapshot_key(n), bytes.fill(180)));
        ops.push((
            tagged(
                b'n',
                &[
                    b"117000000000000000",
                    format!("user{n}@example.com").as_bytes(),
                ],
            ),
            id.clone().into_bytes(),
        ));
        let mut chunk_key = tagged(b'E', &[id.as_bytes()]);
        chunk_key.extend_from_slice(&1u64.to_be_bytes());
        ops.push((chunk_key, bytes.fill(110)));
    }
    ops
}

fn updates(users: usize, count: usize, round: u64, bytes: &mut Bytes) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut ops = Vec::with_capacity(count * 2);
    for _ in 0..count {
        let n = bytes.next() as usize % users;
        ops.push((snapshot_key(n), bytes.fill(180)));
        let mut chunk_key = tagged(b'E', &[user_id(n).as_bytes()]);
        chunk_key.extend_from_slice(&(round + 2).to_be_bytes());
        ops.push((chunk_key, bytes.fill(60)));
    }
    ops.sort();
    ops.dedup_by(|a, b| a.0 == b.0);
    ops
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn measure(kind: Kind, args: &Args) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cache = args.cache_mb << 20;
    let backend = open(kind, dir.path(), cache)?;
    let users_per_checkpoint = (args.checkpoint / 3).max(1);
    let users = args.entries / 3;
    let mut bytes = Bytes(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let mut times = Vec::new();
    let mut made = 0;
    while made < users {
        let count = users_per_checkpoint.min(users - made);
        times.push(checkpoint(
            backend.as_ref(),
            args.chunk,
            new_users(made, count, &mut bytes),
        )?);
        made += count;
    }
    let filled = started.elapsed();
    let mut steady = Vec::new();
    for round in 0..UPDATE_CHECKPOINTS as u64 {
        let ops = updates(users, users_per_checkpoint, round, &mut bytes);
        steady.push(checkpoint(backend.as_ref(), args.chunk, ops)?);
    }
    backend.close().map_err(|e| e.to_string())?;
    drop(backend);
    let size = crate::scale::walk(dir.path());
    let opened_at = Instant::now();
    let backend = open(kind, dir.path(), cache)?;
    let opened = opened_at.elapsed();
    let mut reads = Vec::with_capacity(READS);
    for _ in 0..READS {
        let key = snapshot_key(bytes.next() as usize % users);
        let started = Instant::now();
        let found = backend.get(&key).map_err(|e| e.to_string())?;
        reads.push(started.elapsed());
        if found.is_none() {
            return Err(format!("{kind:?}: a written key is missing"));
        }
    }
    reads.sort();
    backend.close().map_err(|e| e.to_string())?;
    let first = times.first().copied().unwrap_or_default();
    let last = times.last().copied().unwrap_or_default();
    steady.sort();
    Ok(vec![
        format!("{kind:?}"),
        format!("{:.1} s", filled.as_secs_f64()),
        ms(first),
        ms(last),
        ms(steady[steady.len() / 2]),
        ms(opened),
        format!("{:.1} µs", reads[READS / 2].as_secs_f64() * 1e6),
        format!("{:.1} µs", reads[READS * 99 / 100].as_secs_f64() * 1e6),
        format!("{:.0} MiB", size as f64 / (1 << 20) as f64),
    ])
}

pub fn run(args: Args) -> Result<bool, String> {
    println!(
        "checkpoint targets: {} entries ({} users), checkpoints of {} entries in chunks of {} ops, cache {} MiB",
        args.entries,
        args.entries / 3,
        args.checkpoint,
        args.chunk,
        args.cache_mb
    );
    println!(
        "| store | fill | first checkpoint | last fill checkpoint | steady checkpoint (median of {UPDATE_CHECKPOINTS}, random users) | reopen | point read p50 | p99 | disk |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for kind in [Kind::Sled, Kind::Redb, Kind::Fjall] {
        let name = format!("{kind:?}");
        if !args.only.is_empty() && !args.only.iter().any(|o| o.eq_ignore_ascii_case(&name)) {
            continue;
        }
        eprintln!("{kind:?} ...");
        let row = measure(kind, &args)?;
        println!("| {} |", row.join(" | "));
    }
    Ok(true)
}
