//! The cluster under faults (the nemesis run): three in-process Latchkey nodes and one Latchkey
//! process on three NATS servers, clients on every node racing lock, unlock, deactivate,
//! reactivate and reads on a few hot users, while faults strike one after another:
//!
//! - an in-process node crashes and a new one takes its name with an empty view;
//! - a NATS server freezes (SIGSTOP) past a node's lease and wakes (server 2 cuts n2 off: n2
//!   reaches no other);
//! - the leader of a partition's stream is killed (SIGKILL) and restarted;
//! - the Latchkey process is paused (SIGSTOP) past its lease and woken: a zombie, whose writes
//!   admitted before the pause reach the streams only to be refused (at least one in a run,
//!   asserted: the fence's path was exercised);
//! - the Latchkey process is killed (SIGKILL) and restarted on its data directory.
//!
//! Then every user is read, the whole history is checked for linearizability per user, and the
//! log is audited: after a claim only its claimant writes, and epochs never go back.
//!
//! `cargo test` runs a zombie pause, a node crash, a server freeze and a leader kill, in that
//! order. `LATCHKEY_NEMESIS_SEED=<n>` draws `LATCHKEY_NEMESIS_FAULTS` (default 5) faults from
//! that seed instead: the long runs of docs/reliability.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_cluster::log::{epoch_of, UserLog, CLAIM_HEADER, WRITER_HEADER};
use latchkey_cluster::partitions::Layout;
use latchkey_cluster::testbed::Testbed;
use support::history::{check, client_loop, read_users, Operation, Outcome, State};
use support::{binary, Rng, TestServer, ADMIN_TOKEN};

/// How long after its client gave up an unanswered operation may still take effect: a call
/// timeout for the forwarded call and one for its append, with room to spare.
const UNKNOWN_MAY_LAND_WITHIN: Duration = Duration::from_secs(15);

/// How long a frozen server or process stays frozen: past a node's lease (3 s) and the move of
/// its partitions.
const FROZEN: Duration = Duration::from_secs(6);

const LAYOUT: Layout = Layout {
    partitions: 8,
    replicas: 3,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    CrashNode,
    FreezeServer,
    KillLeader,
    PauseProcess,
    KillProcess,
}

const FAULTS: [Fault; 5] = [
    Fault::CrashNode,
    Fault::FreezeServer,
    Fault::KillLeader,
    Fault::PauseProcess,
    Fault::KillProcess,
];

/// The faults of this run, and the seed that draws their targets.
fn schedule() -> (u64, Vec<Fault>) {
    let Some(seed) = std::env::var("LATCHKEY_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    else {
        // The pause first, while the cluster is healthy: after a leader kill, JetStream can stay
        // without a leader for a KV stream long enough that the zombie's writes never reach
        // the streams at all (docs/cluster.md, "Not built yet").
        return (
            1,
            vec![
                Fault::PauseProcess,
                Fault::CrashNode,
                Fault::FreezeServer,
                Fault::KillLeader,
            ],
        );
    };
    let count = std::env::var("LATCHKEY_NEMESIS_FAULTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut rng = Rng::new(seed);
    (seed, (0..count).map(|_| *rng.pick(&FAULTS)).collect())
}

/// The Latchkey process (`latchkey serve --cluster`), node `z`, logging at `LATCHKEY_NEMESIS_LOG`
/// (default `info`) into `dir/z.log`, its data in `dir/data`.
fn start_process(all: &str, dir: &Path) -> binary::Running {
    use std::io::{BufRead, BufReader, Write};
    let level = std::env::var("LATCHKEY_NEMESIS_LOG").unwrap_or_else(|_| "info".into());
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("z.log"))
        .unwrap();
    let mut child = std::process::Command::new(binary::BIN)
        .args(["--listen", "127.0.0.1:0", "--log", &level])
        .args(["--cluster", all, "--node-id", "z"])
        .args(["--cluster-partitions", "8", "--cluster-replicas", "3"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let Some(line) = lines.next() else {
            let log = std::fs::read_to_string(dir.join("z.log")).unwrap_or_default();
            panic!("z exited early:\n{log}");
        };
        let line = line.unwrap();
        writeln!(log, "{line}").unwrap();
        if let Some(at) = line.find("listening on http://") {
            let rest = &line[at + "listening on ".len()..];
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
        }
    });
    binary::Running { child, base }
}

/// The NATS server z is connected to now: the last one its log says it connected to.
fn z_server(dir: &Path, urls: &[String]) -> Option<usize> {
    let log = std::fs::read_to_string(dir.join("z.log")).ok()?;
    let port = log
        .lines()
        .rev()
        .find_map(|line| line.split("connected successfully server=").nth(1))?
        .split_whitespace()
        .next()?
        .to_owned();
    urls.iter()
        .position(|url| url.ends_with(&format!(":{port}")))
}

fn signal(process: &binary::Running, signal: i32) {
    // SAFETY: plain kill(2) on our own child's pid.
    let done = unsafe { libc::kill(process.child.id() as i32, signal) };
    assert_eq!(done, 0, "kill({signal})");
}

/// The process's `latchkey_cluster_fenced_writes_total` (0 before the first).
async fn fenced_writes(client: &reqwest::Client, base: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("latchkey_cluster_fenced_writes_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// How many partitions the process serves (its `latchkey_cluster_partitions_served` gauge).
async fn partitions_served(client: &reqwest::Client, base: &str) -> usize {
    let Ok(reply) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    reply
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("latchkey_cluster_partitions_served "))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap_or(0.0) as usize)
}

/// `LATCHKEY_NEMESIS_KEEP_LOG=<path>`: z's log is copied there when the run ends, failed or not,
/// and each NATS server's log beside it (`<path>.n1.log`, …).
struct KeepLog {
    z: std::path::PathBuf,
    nats: std::path::PathBuf,
}

impl Drop for KeepLog {
    fn drop(&mut self) {
        if let Ok(to) = std::env::var("LATCHKEY_NEMESIS_KEEP_LOG") {
            let _ = std::fs::copy(&self.z, &to);
            for i in 1..=3 {
                let name = format!("n{i}.log");
                let _ = std::fs::copy(self.nats.join(&name), format!("{to}.{name}"));
            }
        }
    }
}

/// `n` clients on the node at `base` until `stop`.
fn clients(
    client: &reqwest::Client,
    base: &str,
    n: u64,
    seed: u64,
    users: &Arc<Vec<String>>,
    clock: Instant,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Operation>>> {
    (0..n)
        .map(|i| {
            tokio::spawn(client_loop(
                client.clone(),
                base.to_owned(),
                ADMIN_TOKEN,
                users.clone(),
                clock,
                stop.clone(),
                seed + i,
            ))
        })
        .collect()
}

/// Where a history the checker refused went wrong: the checker names the operation its search
/// ended on, not the cause. The first time cut (every operation invoked by then, those still
/// running counted as unanswered) that no order explains, and the operations around it.
fn explain(initial: &BTreeMap<String, (State, u64)>, history: &[Operation], error: &str) -> String {
    let mut ops: Vec<_> = history
        .iter()
        .filter(|o| error.contains(&o.user))
        .cloned()
        .collect();
    ops.sort_by_key(|o| o.invoked);
    let mut at = Duration::ZERO;
    while at < Duration::from_secs(120) {
        at += Duration::from_millis(20);
        let cut: Vec<_> = ops
            .iter()
            .filter(|o| o.invoked <= at)
            .map(|o| {
                let mut o = o.clone();
                if o.returned > at {
                    o.outcome = Outcome::Unknown;
                    o.returned = at;
                }
                o
            })
            .collect();
        if check(initial, &cut).is_err() {
            break;
        }
    }
    let mut out = format!("the first cut no order explains ends at {at:?}:\n");
    let answered_before: Vec<_> = ops
        .iter()
        .filter(|o| o.outcome != Outcome::Unknown && o.returned < at)
        .collect();
    let from = answered_before
        .iter()
        .rev()
        .nth(8)
        .map_or(Duration::ZERO, |o| o.invoked);
    for o in ops.iter().filter(|o| o.invoked >= from && o.invoked <= at) {
        out.push_str(&format!(
            "  {:?} {:?}..{:?} {:?} ({})\n",
            o.op, o.invoked, o.returned, o.outcome, o.status
        ));
    }
    out
}

/// A user's scope in the log: the hex of its store key (keys::user: the tag, the id's length as
/// a u16 and the id).
fn scope_of(user: &str) -> String {
    let key = [
        b"u".as_slice(),
        &(user.len() as u16).to_be_bytes(),
        user.as_bytes(),
    ]
    .concat();
    latchkey_cluster::partitions::hex(&key)
}

/// Waits until another node than z holds each of `users`: the last record of each is a claim
/// or a write not of z. Bounded by `within`.
async fn taken_from_z(log: &UserLog, users: &[String], within: Duration) {
    let since = Instant::now();
    'users: for user in users {
        while since.elapsed() < within {
            if let Ok(Some(last)) = log.last(&scope_of(user)).await {
                let mark = last
                    .headers
                    .get(CLAIM_HEADER)
                    .or_else(|| last.headers.get(WRITER_HEADER))
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                if !mark.starts_with("z/") {
                    continue 'users;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits (at most `within`) until z writes again: a record of z's on one of its users newer than
/// every last record of theirs now. After a leader kill z may serve nothing for seconds (its
/// lease lapsed while the nodes' bucket had no leader, its partitions not yet back), and a pause
/// then would catch no write of its in flight. False if z did not write within `within`.
async fn z_writing(log: &UserLog, users: &[String], within: Duration) -> bool {
    let mut newest = HashMap::new();
    for user in users {
        if let Ok(Some(last)) = log.last(&scope_of(user)).await {
            newest.insert(user.clone(), last.sequence);
        }
    }
    let since = Instant::now();
    while since.elapsed() < within {
        for user in users {
            if let Ok(Some(last)) = log.last(&scope_of(user)).await {
                let by_z = last
                    .headers
                    .get(WRITER_HEADER)
                    .is_some_and(|v| v.as_str().starts_with("z/"));
                if by_z && newest.get(user).is_none_or(|seen| last.sequence > *seen) {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The log of the user `error` names, one line per record: its sequence, who wrote it under
/// which epoch (or claimed it), and the user sequences of the events it carries.
async fn log_of(all: &str, users: &[String], error: &str) -> String {
    let Some(user) = users.iter().find(|u| error.contains(u.as_str())) else {
        return "no user named".into();
    };
    let log = UserLog::new(
        async_nats::connect(all.split(',').collect::<Vec<_>>())
            .await
            .unwrap(),
        LAYOUT,
    );
    let scope = scope_of(user);
    let subject = LAYOUT.user_subject(&scope);
    let p = LAYOUT.partition_of(&scope);
    let mut out = String::new();
    for record in log.scan(p).await.unwrap() {
        if record.subject != subject {
            continue;
        }
        let header = |name: &str| record.headers.get(name).map(|v| v.as_str().to_owned());
        let events: Vec<u64> = latchkey_storage::WriteBatch::decode(&record.payload)
            .map(|batch| {
                batch
                    .ops()
                    .iter()
                    .filter(|(key, _)| key.first() == Some(&b'e') && key.len() >= 8)
                    .map(|(key, _)| u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "  {} claim={:?} writer={:?} events={events:?}\n",
            record.sequence,
            header(CLAIM_HEADER),
            header(WRITER_HEADER)
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_leave_every_user_linearizable_and_the_log_fenced() {
    let (seed, faults) = schedule();
    println!("seed {seed}: {faults:?}");
    let mut rng = Rng::new(seed);
    let mut testbed = Testbed::start(3).await.unwrap();
    let all = testbed.urls().join(",");
    // n0 and n1 reach every NATS server; n2 only server 2, so freezing that server cuts n2 off.
    let urls = [all.clone(), all.clone(), testbed.url(2)];
    let mut nodes = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        nodes.push(TestServer::start_node(url, &format!("n{i}"), LAYOUT).await);
    }
    let z_dir = tempfile::tempdir().unwrap();
    let _keep = KeepLog {
        z: z_dir.path().join("z.log"),
        nats: testbed.dir().to_owned(),
    };
    let mut z = start_process(&all, z_dir.path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let settle = Instant::now();
    loop {
        let served: usize = nodes
            .iter()
            .map(|n| n.node.as_ref().unwrap().partitions_served())
            .sum();
        // z serves the rest once all four hold the partitions the table gives them.
        let z_served = partitions_served(&http, &z.base).await;
        if served + z_served == LAYOUT.partitions as usize && z_served > 0 {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(30),
            "partitions spread"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two hot users per node, each created in its node's partitions, and four of z's; z's
    // clients work on z's own (so z has writes in flight when it is paused), the others' on
    // all twelve.
    let mut users = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            users.push(node.create_human(&format!("hot{i}{j}@example.com")).await);
        }
    }
    let mut z_users = Vec::new();
    for j in 0..4 {
        let created: serde_json::Value = http
            .post(format!("{}/v2/users/human", z.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&binary::human(&format!("hotz{j}@example.com")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        z_users.push(created["userId"].as_str().expect("userId").to_owned());
    }
    users.extend(z_users.iter().cloned());
    let mut initial = BTreeMap::new();
    for id in &users {
        let (state, sequence) = nodes[0].state_and_sequence(id).await;
        initial.insert(id.clone(), (State::from_wire(&state).unwrap(), sequence));
    }
    let (users, z_users) = (Arc::new(users), Arc::new(z_users));
    let (clock, stop) = (Instant::now(), Arc::new(AtomicBool::new(false)));
    let mut running = Vec::new();
    // The zombie's writes the streams refused, over every pause of the run.
    let (mut paused, mut zombie_fenced) = (0, 0);
    for (i, node) in nodes.iter().enumerate() {
        let seed = 100 * i as u64;
        running.extend(clients(
            &node.client,
            &node.base,
            2,
            seed,
            &users,
            clock,
            &stop,
        ));
    }
    running.extend(clients(&http, &z.base, 8, 900, &z_users, clock, &stop));
    let log = UserLog::new(
        async_nats::connect(all.split(',').collect::<Vec<_>>())
            .await
            .unwrap(),
        LAYOUT,
    );

    let mut next_seed = 1000;
    for fault in &faults {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match fault {
            Fault::CrashNode => {
                let i = rng.below(nodes.len());
                println!("{:?}: n{i} crashes", clock.elapsed());
                let crashed = nodes.remove(i);
                crashed.crash();
                let node = TestServer::start_node(&urls[i], &format!("n{i}"), LAYOUT).await;
                running.extend(clients(
                    &node.client,
                    &node.base,
                    2,
                    next_seed,
                    &users,
                    clock,
                    &stop,
                ));
                nodes.insert(i, node);
            }
            Fault::FreezeServer => {
                let i = rng.below(3);
                println!("{:?}: NATS server {i} frozen", clock.elapsed());
                testbed.pause(i);
                tokio::time::sleep(FROZEN).await;
                testbed.resume(i);
            }
            Fault::KillLeader => {
                let p = rng.below(LAYOUT.partitions as usize) as u32;
                let i = testbed.leader_of(&Layout::stream_name(p)).await.unwrap();
                println!(
                    "{:?}: NATS server {i}, leader of partition {p}, killed",
                    clock.elapsed()
                );
                testbed.kill(i);
                tokio::time::sleep(Duration::from_secs(3)).await;
                testbed.restart(i).await.unwrap();
            }
            Fault::PauseProcess => {
                // A pause exercises the fence only if z wakes with writes it admitted but had not
                // appended; when the append in flight had already reached the server, z's wait
                // for it passes its deadline while z is frozen and the writes queued behind it
                // are refused by z itself (docs/cluster.md). That happens in about one pause in
                // five, so z is paused again, up to three times, until one is fenced.
                for attempt in 0..3 {
                    if !z_writing(&log, &z_users, Duration::from_secs(30)).await {
                        println!("{:?}: z wrote nothing for 30 s", clock.elapsed());
                    }
                    let before = fenced_writes(&http, &z.base).await;
                    println!("{:?}: z paused", clock.elapsed());
                    // More clients on z's users for the pause, and z's NATS server stalled for a
                    // moment first: z is paused with writes it admitted queued behind an append in
                    // flight. (Without them its queue is mostly empty at any instant, and whether a
                    // pause catches a write between admission and append is luck.)
                    let burst_stop = Arc::new(AtomicBool::new(false));
                    let burst = clients(
                        &http,
                        &z.base,
                        8,
                        next_seed + 50 + 10 * attempt,
                        &z_users,
                        clock,
                        &burst_stop,
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let server = z_server(z_dir.path(), &testbed.urls());
                    if let Some(i) = server {
                        testbed.pause(i);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    signal(&z, libc::SIGSTOP);
                    if let Some(i) = server {
                        testbed.resume(i);
                    }
                    // Frozen past its lease, until other nodes have taken its users over.
                    tokio::time::sleep(FROZEN).await;
                    let pause = Instant::now();
                    taken_from_z(&log, &z_users, Duration::from_secs(30)).await;
                    println!("z's users taken over after {:?}", pause.elapsed() + FROZEN);
                    signal(&z, libc::SIGCONT);
                    burst_stop.store(true, Ordering::Relaxed);
                    running.extend(burst);
                    // The writes it had queued are appended under its old claim as it wakes, and
                    // the streams refuse them: the fence, not the node, stops the zombie.
                    let woke = Instant::now();
                    let mut after = fenced_writes(&http, &z.base).await;
                    while after <= before && woke.elapsed() < Duration::from_secs(10) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        after = fenced_writes(&http, &z.base).await;
                    }
                    println!("z woke: {} of its writes fenced", after - before);
                    if let Some(i) = server.filter(|_| after == before) {
                        // What the server did with z's connection meanwhile (slow consumer, …).
                        for line in testbed.log(i).lines().filter(|l| {
                            l.contains("Slow Consumer")
                                || l.contains("Stale")
                                || l.contains("Closed")
                        }) {
                            println!("  server {i}: {line}");
                        }
                    }
                    zombie_fenced += after - before;
                    paused += 1;
                    if zombie_fenced > 0 {
                        break;
                    }
                }
            }
            Fault::KillProcess => {
                println!("{:?}: z killed", clock.elapsed());
                z.kill9();
                z = start_process(&all, z_dir.path());
                running.extend(clients(
                    &http, &z.base, 8, next_seed, &z_users, clock, &stop,
                ));
            }
        }
        next_seed += 100;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);

    let mut history = Vec::new();
    for client in running {
        history.extend(client.await.unwrap());
    }
    // Every user read once more, through a node that lived through it all, once the cluster
    // has recovered (a read may wait for a partition's new leader).
    let n0 = &nodes[0];
    let recovered = Instant::now();
    loop {
        let (client, base, users) = (n0.client.clone(), n0.base.clone(), users.clone());
        let attempt = async move {
            let reads = read_users(&client, &base, ADMIN_TOKEN, &users, clock);
            tokio::time::timeout(Duration::from_secs(10), reads).await
        };
        // A read answered with an error panics in its own task: try again.
        match tokio::spawn(attempt).await {
            Ok(Ok((reads, _))) => {
                history.extend(reads);
                break;
            }
            _ => assert!(
                recovered.elapsed() < Duration::from_secs(60),
                "reads after the faults"
            ),
        }
    }
    // An operation without a definite answer (a 503 or 504 after the call timeout, a cut
    // connection) may still take effect after its client gave up — a write still in flight,
    // retried until its own deadline — so it stays concurrent with what follows for a while.
    // (Jepsen keeps such operations open for ever; here that makes the search too large.)
    for operation in &mut history {
        if operation.outcome == Outcome::Unknown {
            operation.returned += UNKNOWN_MAY_LAND_WITHIN;
        }
    }
    let answered = history
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok { .. }))
        .count();
    let unknown = history
        .iter()
        .filter(|o| o.outcome == Outcome::Unknown)
        .count();
    println!(
        "{} operations: {answered} commands acknowledged, {unknown} without a definite answer",
        history.len()
    );
    let checked = match check(&initial, &history) {
        Ok(checked) => checked,
        Err(e) => {
            let ops = explain(&initial, &history, &e);
            let log = log_of(&all, &users, &e).await;
            panic!("not linearizable: {e}\n{ops}\nthe user's log:\n{log}")
        }
    };
    assert!(answered > 100, "only {answered} acknowledged commands");
    assert!(checked > 200, "only {checked} operations checked");

    // The audit of every partition's log.
    let mut claims = 0;
    for p in 0..LAYOUT.partitions {
        let mut holder: HashMap<String, (String, u64)> = HashMap::new();
        // The restarted server may still be catching up: a scan that times out is tried again.
        let mut scanned = log.scan(p).await;
        let since = Instant::now();
        while scanned.is_err() && since.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            scanned = log.scan(p).await;
        }
        for record in scanned.unwrap() {
            let header = |name: &str| record.headers.get(name).map(|v| v.as_str().to_owned());
            let (mark, is_claim) = match (header(CLAIM_HEADER), header(WRITER_HEADER)) {
                (Some(claim), _) => (claim, true),
                (None, Some(writer)) => (writer, false),
                (None, None) => panic!("record {} names no writer", record.sequence),
            };
            let epoch = epoch_of(&record.headers).unwrap();
            let node = mark.split_once('/').unwrap().0.to_owned();
            match holder.get(&record.subject) {
                Some((by, held)) if is_claim => assert!(
                    epoch > *held || (epoch == *held && node == *by),
                    "{}: a claim of {mark} after {by}/{held}",
                    record.subject
                ),
                Some((by, held)) => assert!(
                    node == *by && epoch == *held,
                    "{}: a write of {mark} while {by}/{held} holds it",
                    record.subject
                ),
                None => assert!(is_claim, "{}: a write before any claim", record.subject),
            }
            if is_claim {
                claims += 1;
                holder.insert(record.subject.clone(), (node, epoch));
            }
        }
    }
    assert!(claims > users.len(), "users changed hands: {claims} claims");
    assert!(
        paused == 0 || zombie_fenced > 0,
        "the zombie's queued writes reached the streams and were fenced ({paused} pauses)"
    );
    for node in nodes {
        node.crash();
    }
    z.kill9();
}
