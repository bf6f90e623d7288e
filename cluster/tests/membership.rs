//! Membership on the pinned NATS server: three servers on loopback, Latchkey nodes as in-process
//! memberships, each on its own server's connection.
//!
//! The property checked throughout, by a sampler every 20 ms: no partition is served by two
//! nodes at once — not while a node joins (handoff), not while one leaves, not while one is cut
//! off from NATS past its lease and comes back (the zombie case). Times are printed, not asserted.
//! And when the server leading a bucket of node keys dies, no lease lapses and nothing moves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_cluster::membership::{Config, Membership, NODES};
use latchkey_cluster::partitions::Layout;
use latchkey_cluster::testbed::Testbed;

const LAYOUT: Layout = Layout {
    partitions: 16,
    replicas: 3,
};

/// The nodes under test; a slot is emptied when its node leaves or crashes.
type Nodes = Arc<Mutex<Vec<Option<Membership>>>>;

async fn join(testbed: &Testbed, server: usize, node_id: &str) -> Membership {
    let client = async_nats::connect(testbed.url(server)).await.unwrap();
    Membership::join(client, Config::new(node_id, LAYOUT))
        .await
        .unwrap()
}

/// Three NATS servers and a node per name, node `i` on server `i`'s connection (`RUST_LOG`
/// shows the memberships' logs).
async fn cluster(names: &[&str]) -> (Testbed, Nodes) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let testbed = Testbed::start(3).await.unwrap();
    let nodes: Nodes = Arc::new(Mutex::new(Vec::new()));
    for (i, id) in names.iter().enumerate() {
        let node = join(&testbed, i, id).await;
        nodes.lock().unwrap().push(Some(node));
    }
    (testbed, nodes)
}

/// Who serves each partition now, by slot.
fn servers_of(nodes: &Nodes) -> Vec<Vec<usize>> {
    let nodes = nodes.lock().unwrap();
    (0..LAYOUT.partitions)
        .map(|p| {
            nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.as_ref().is_some_and(|n| n.serves(p).is_some()))
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

/// Samples every 20 ms until stopped; panics (failing the test at `finish`) on a partition
/// served twice.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(nodes: &Nodes) -> Sampler {
        let (nodes, stop, samples) = (
            nodes.clone(),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let task = tokio::spawn({
            let (stop, samples) = (stop.clone(), samples.clone());
            async move {
                while !stop.load(Ordering::Acquire) {
                    for (p, servers) in servers_of(&nodes).iter().enumerate() {
                        assert!(servers.len() <= 1, "partition {p} served by {servers:?}");
                    }
                    samples.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Sampler {
            stop,
            samples,
            task,
        }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        self.samples.load(Ordering::Relaxed)
    }
}

/// Waits until every partition is served by exactly one of the nodes in `slots`, and each of
/// them serves some; returns how long that took.
async fn settled(nodes: &Nodes, slots: &[usize], what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let servers = servers_of(nodes);
        let all_once = servers
            .iter()
            .all(|s| s.len() == 1 && slots.contains(&s[0]));
        let shares = slots
            .iter()
            .all(|slot| servers.iter().any(|s| s.contains(slot)));
        if all_once && shares {
            println!("{what}: settled in {:?}", start.elapsed());
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(45) {
            let nodes = nodes.lock().unwrap();
            let states: Vec<_> = nodes
                .iter()
                .flatten()
                .map(|n| {
                    let views: Vec<_> = (0..LAYOUT.partitions)
                        .filter(|&p| servers[p as usize].len() != 1)
                        .map(|p| (p, n.entry(p)))
                        .collect();
                    (
                        n.node_id().to_owned(),
                        n.lease_holds(),
                        n.coordinating(),
                        views,
                    )
                })
                .collect();
            panic!("{what}: not settled: {servers:?}; (node, lease, coordinating, views of the unsettled): {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_by_handoff_on_join_and_leave_never_served_twice() {
    let (testbed, nodes) = cluster(&["n1", "n2"]).await;
    settled(&nodes, &[0, 1], "two nodes").await;
    let sampler = Sampler::start(&nodes);

    // A third node joins: it takes its share from live owners, by handoff.
    let epochs_before: Vec<_> = {
        let nodes = nodes.lock().unwrap();
        let n1 = nodes[0].as_ref().unwrap();
        (0..LAYOUT.partitions)
            .map(|p| n1.entry(p).unwrap())
            .collect()
    };
    let n3 = join(&testbed, 2, "n3").await;
    nodes.lock().unwrap().push(Some(n3));
    settled(&nodes, &[0, 1, 2], "n3 joined").await;
    {
        let nodes = nodes.lock().unwrap();
        let n3 = nodes[2].as_ref().unwrap();
        for p in 0..LAYOUT.partitions {
            if let Some(epoch) = n3.serves(p) {
                // Each moved partition has a newer epoch than before the join.
                assert!(epoch > epochs_before[p as usize].epoch);
            }
        }
    }

    // n1 leaves gracefully: its partitions move without waiting for its key to expire.
    let n1 = nodes.lock().unwrap()[0].take().unwrap();
    n1.leave().await.unwrap();
    settled(&nodes, &[1, 2], "n1 left").await;

    let samples = sampler.finish().await;
    println!("{samples} samples, no partition served twice");
    assert!(samples > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_stops_serving_before_its_partitions_move_and_rejoins_cleanly() {
    let (testbed, nodes) = cluster(&["n1", "n2", "n3"]).await;
    settled(&nodes, &[0, 1, 2], "three nodes").await;
    let sampler = Sampler::start(&nodes);

    // n3's server freezes: n3 can neither renew nor hear of table changes. Its lease lapses on its
    // own clock, and only after that can its key expire and its partitions move.
    testbed.pause(2);
    let paused = Instant::now();
    let lapse = Config::new("n3", LAYOUT);
    let lapse = lapse.ttl - lapse.margin;
    tokio::time::sleep(lapse + Duration::from_millis(100)).await;
    {
        let nodes = nodes.lock().unwrap();
        let n3 = nodes[2].as_ref().unwrap();
        assert!(!n3.lease_holds());
        assert!((0..LAYOUT.partitions).all(|p| n3.serves(p).is_none()));
    }
    settled(&nodes, &[0, 1], "n3 cut off").await;
    println!(
        "n3's partitions served again {:?} after the pause",
        paused.elapsed()
    );
    let epochs_cut_off: Vec<u64> = {
        let nodes = nodes.lock().unwrap();
        (0..LAYOUT.partitions)
            .map(|p| nodes.iter().flatten().find_map(|n| n.serves(p)).unwrap())
            .collect()
    };

    // n3's server wakes: n3 renews, catches up with the table before serving anything, and takes
    // its share back by handoff.
    testbed.resume(2);
    settled(&nodes, &[0, 1, 2], "n3 back").await;
    {
        let nodes = nodes.lock().unwrap();
        let n3 = nodes[2].as_ref().unwrap();
        for p in 0..LAYOUT.partitions {
            if let Some(epoch) = n3.serves(p) {
                // Served under a table entry written after its partitions moved away.
                assert!(epoch > epochs_cut_off[p as usize], "partition {p}");
            }
        }
    }

    // n2 crashes: its key stays until the TTL, then its partitions go straight to the others.
    let crashed = Instant::now();
    drop(nodes.lock().unwrap()[1].take());
    settled(&nodes, &[0, 2], "n2 crashed").await;
    println!(
        "n2's partitions served again {:?} after the crash",
        crashed.elapsed()
    );

    let samples = sampler.finish().await;
    println!("{samples} samples, no partition served twice");
    assert!(samples > 10);
}

/// The server leading the stream of the first node bucket dies. While JetStream elects another
/// leader, no renewal lands in that bucket; the second one, led by another server, keeps every
/// node's lease: no lease lapses, no partition moves, every one is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_buckets_leader_dying_lapses_no_lease_and_moves_no_partition() {
    let mut testbed = Testbed::start(3).await.unwrap();
    let nodes: Nodes = Arc::new(Mutex::new(Vec::new()));
    for id in ["n1", "n2", "n3"] {
        // Every node knows every server, so one whose server dies reconnects to another.
        let client = async_nats::connect(testbed.urls()).await.unwrap();
        let node = Membership::join(client, Config::new(id, LAYOUT))
            .await
            .unwrap();
        nodes.lock().unwrap().push(Some(node));
    }
    settled(&nodes, &[0, 1, 2], "three nodes").await;
    let [first, second] = NODES.map(|bucket| format!("KV_{bucket}"));

    // One server leads both buckets: the coordinator moves the second one's leader away.
    let leader = testbed.leader_of(&first).await.unwrap();
    testbed.move_leader(&second, leader).await.unwrap();
    let apart = Instant::now();
    while testbed.leader_of(&second).await.unwrap() == leader {
        assert!(
            apart.elapsed() < Duration::from_secs(30),
            "bucket leaders kept apart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("bucket leaders apart again after {:?}", apart.elapsed());
    let leader = testbed.leader_of(&first).await.unwrap();
    let epochs: Vec<Option<u64>> = {
        let nodes = nodes.lock().unwrap();
        (0..LAYOUT.partitions)
            .map(|p| nodes.iter().flatten().find_map(|n| n.serves(p)))
            .collect()
    };

    let sampler = Sampler::start(&nodes);
    testbed.kill(leader);
    let killed = Instant::now();
    let mut lapses = Vec::new();
    while killed.elapsed() < Duration::from_secs(12) {
        for n in nodes.lock().unwrap().iter().flatten() {
            if !n.lease_holds() {
                lapses.push((n.node_id().to_owned(), killed.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{first}'s leader (server {leader}) killed; {second} led by server {}",
        testbed.leader_of(&second).await.unwrap()
    );
    assert!(lapses.is_empty(), "leases lapsed: {lapses:?}");
    let now: Vec<Option<u64>> = {
        let nodes = nodes.lock().unwrap();
        (0..LAYOUT.partitions)
            .map(|p| nodes.iter().flatten().find_map(|n| n.serves(p)))
            .collect()
    };
    assert_eq!(
        now, epochs,
        "every partition served under its epoch throughout"
    );
    let samples = sampler.finish().await;
    assert!(samples > 10);
}

/// A node that comes back — here restarted under its name before its key expired, so the table
/// still names it everywhere — serves nothing under the entries written before its return: it
/// rewrites them first (compare-and-set), and a move the coordinator decided while it was gone
/// could not land after that rewrite. So every partition is served under a newer epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_serves_only_under_entries_written_after_its_return() {
    let (testbed, nodes) = cluster(&["n1"]).await;
    settled(&nodes, &[0], "one node").await;
    let before: Vec<u64> = {
        let nodes = nodes.lock().unwrap();
        let n1 = nodes[0].as_ref().unwrap();
        (0..LAYOUT.partitions)
            .map(|p| n1.serves(p).unwrap())
            .collect()
    };
    drop(nodes.lock().unwrap()[0].take());
    let again = join(&testbed, 0, "n1").await;
    nodes.lock().unwrap()[0] = Some(again);
    settled(&nodes, &[0], "n1 back").await;
    let nodes = nodes.lock().unwrap();
    let n1 = nodes[0].as_ref().unwrap();
    for p in 0..LAYOUT.partitions {
        let epoch = n1.serves(p).unwrap();
        assert!(
            epoch > before[p as usize],
            "partition {p}: {epoch} after {}",
            before[p as usize]
        );
    }
}
