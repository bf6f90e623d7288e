//! Cluster mode as its users see it: three Latchkey nodes (`serve --cluster`) on a three-server
//! NATS cluster (the pinned server, R3), every protocol on every node, requests for a user
//! served by its owner wherever they arrive, racing unlocks across nodes made exactly once,
//! and the users of a node that dies served again by the others; usernames and organization
//! names unique across the nodes, and sessions created by login name on any node; a bulk
//! unlock reaching the users of every node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use latchkey_cluster::journal::ClusterJournal;
use latchkey_cluster::partitions::Layout;
use latchkey_cluster::testbed::Testbed;
use reqwest::StatusCode;
use serde_json::json;
use support::login::PASSWORD;
use support::protocols::{self, Outcome};
use support::TestServer;

const LAYOUT: Layout = Layout {
    partitions: 8,
    replicas: 3,
};

/// Three nodes, node `i` on NATS server `i`, each serving some partitions and every partition
/// served (no handoff in progress).
async fn cluster(testbed: &Testbed) -> Vec<TestServer> {
    cluster_on(|i| testbed.url(i)).await
}

/// [`cluster`], node `i` connected to the NATS servers at `urls(i)`.
async fn cluster_on(urls: impl Fn(usize) -> String) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(TestServer::start_node(&urls(i), &format!("n{i}"), LAYOUT).await);
    }
    let started = Instant::now();
    let served = |nodes: &[TestServer]| -> Vec<usize> {
        nodes
            .iter()
            .map(|n| n.node.as_ref().unwrap().partitions_served())
            .collect()
    };
    while served(&nodes).contains(&0)
        || served(&nodes).iter().sum::<usize>() != LAYOUT.partitions as usize
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "partitions spread over the nodes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes
}

/// The partition of user `id`: that of its records' scope, as the journal places them.
fn partition_of(id: &str) -> u32 {
    ClusterJournal::partition_of(&LAYOUT, &latchkey_engine::snapshot_key(id))
}

/// The three nodes of [`cluster`], each to be crashed or stopped on its own.
fn three(nodes: Vec<TestServer>) -> [TestServer; 3] {
    match nodes.try_into() {
        Ok(three) => three,
        Err(_) => panic!("three nodes"),
    }
}

/// What a client writing one user of a live node saw while another node failed over.
struct Steady {
    /// The longest time between two answered writes.
    longest: Duration,
    writes: usize,
    /// The error ids of the writes not applied.
    errors: Vec<String>,
}

/// Runs `failover` (which returns when the dead node's users are written again) while a client
/// writes `user` through the live `node`, and one second more; what each saw.
async fn with_steady_writes<T>(
    node: &TestServer,
    user: &str,
    failover: impl std::future::Future<Output = T>,
) -> (T, Steady) {
    let done = AtomicBool::new(false);
    let failover = async {
        let out = failover.await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        done.store(true, Ordering::Release);
        out
    };
    tokio::join!(failover, steady_writes(node, user, &done))
}

/// Locks and unlocks `user` through `node` back to back until `done` is set.
async fn steady_writes(node: &TestServer, user: &str, done: &AtomicBool) -> Steady {
    let mut steady = Steady {
        longest: Duration::ZERO,
        writes: 0,
        errors: Vec::new(),
    };
    let mut last = Instant::now();
    let mut lock = true;
    while !done.load(Ordering::Acquire) {
        let verb = if lock { "lock" } else { "unlock" };
        let reply = node
            .post(&format!("/v2/users/{user}/{verb}"), json!({}))
            .await;
        // A refusal for the state says an earlier write whose answer was lost has landed.
        let served = reply.status == StatusCode::OK
            || ["USER-NOT-ACTIVE-OR-INITIAL", "USER-NOT-LOCKED"].contains(&reply.error_id());
        if served {
            steady.longest = steady.longest.max(last.elapsed());
            last = Instant::now();
            steady.writes += 1;
            lock = !lock;
        }
        if reply.status != StatusCode::OK {
            steady.errors.push(reply.error_id().to_owned());
        }
    }
    steady.longest = steady.longest.max(last.elapsed());
    steady
}

async fn state(node: &TestServer, id: &str) -> String {
    let reply = node.get(&format!("/v2/users/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["user"]["state"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_every_user_over_every_protocol_and_survives_a_node_death() {
    let testbed = Testbed::start(3).await.unwrap();
    let nodes = cluster(&testbed).await;
    let messages = protocols::messages();
    let lock = &messages["/zitadel.user.v2.UserService/LockUser"];
    let unlock = &messages["/zitadel.user.v2.UserService/UnlockUser"];

    // Users created on every node; each locked on one node and unlocked on another, over
    // each protocol, and read back from all three.
    let mut users = Vec::new();
    for (k, protocol) in protocols::ALL.iter().enumerate() {
        for created_on in 0..3 {
            let id = nodes[created_on]
                .create_human(&format!("u{k}-{created_on}@example.com"))
                .await;
            let request = json!({ "userId": id });
            protocols::call(&nodes[(created_on + 1) % 3], *protocol, lock, &request)
                .await
                .ok("lock on another node");
            for node in &nodes {
                assert_eq!(state(node, &id).await, "USER_STATE_LOCKED", "{protocol:?}");
            }
            protocols::call(&nodes[(created_on + 2) % 3], *protocol, unlock, &request)
                .await
                .ok("unlock on a third node");
            assert_eq!(state(&nodes[created_on], &id).await, "USER_STATE_ACTIVE");
            users.push(id);
        }
    }

    // A locked user, unlocked by 30 racing requests spread over the three nodes: one succeeds.
    let id = nodes[0].create_locked_user("race@example.com").await;
    let racers = (0..30).map(|i| {
        let node = &nodes[i % 3];
        let path = format!("/v2/users/{id}/unlock");
        async move { node.post(&path, json!({})).await }
    });
    let replies = futures::future::join_all(racers).await;
    let won = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused = replies
        .iter()
        .filter(|r| r.error_id() == "USER-NOT-LOCKED")
        .count();
    assert_eq!(
        (won, refused),
        (1, 29),
        "exactly one unlock across the cluster"
    );

    // What an operator watches: calls forwarded, users claimed, partitions served, and where a
    // write waited (the stream's acknowledgement, then this node's view).
    let reply = nodes[0].get("/metrics").await;
    let metrics = reply.body.as_str().unwrap();
    for series in [
        "latchkey_cluster_forwards_total",
        "latchkey_cluster_claims_total",
        "latchkey_cluster_append_seconds_count",
        "latchkey_cluster_view_wait_seconds_count",
    ] {
        assert!(support::metric_value(metrics, series) > 0.0, "{series}");
    }

    // The list, asked of any node, holds every user created anywhere.
    let reply = nodes[2].post("/v2/users", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let total: usize = reply.body["details"]["totalResult"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        total,
        users.len() + 2,
        "the users and the admin, from any node"
    );

    // Node n1 dies. Its users are served again by the others once its lease expires.
    let [n0, n1, n2] = three(nodes);
    let owned_by_n1: Vec<String> = users
        .iter()
        .filter(|id| {
            let router = &n1.node.as_ref().unwrap().router;
            router.owner(&latchkey_engine::snapshot_key(id)) == latchkey_api::cluster::Owner::Here
        })
        .cloned()
        .collect();
    assert!(!owned_by_n1.is_empty(), "n1 served some users");
    // A user n2 serves, written throughout: the failover must not hold it up.
    let bystander = n2.create_human("bystander@example.com").await;
    n1.crash();
    let died = Instant::now();
    let first = &owned_by_n1[0];
    let request = json!({ "userId": first });
    let failover = async {
        loop {
            match protocols::call(&n0, protocols::Protocol::Grpc, lock, &request).await {
                Outcome::Ok(_) => break,
                Outcome::Err { id, .. } => {
                    assert!(
                        ["NO-OWNER", "CALL-TIMEOUT", "STORE-UNAVAILABLE"].contains(&id.as_str()),
                        "a failover answer: {id}"
                    );
                    assert!(died.elapsed() < Duration::from_secs(60), "failover");
                }
            }
        }
        died.elapsed()
    };
    let (resumed, steady) = with_steady_writes(&n2, &bystander, failover).await;
    println!(
        "writes to the dead node's users resumed after {resumed:?}; a user of a live node: \
         {} writes, the longest gap {:?}",
        steady.writes, steady.longest
    );
    assert!(
        steady.errors.is_empty(),
        "a live node's user: {:?}",
        steady.errors
    );
    for id in &owned_by_n1 {
        let expected = if id == first {
            "USER_STATE_LOCKED"
        } else {
            "USER_STATE_ACTIVE"
        };
        assert_eq!(state(&n2, id).await, expected, "{id} after the failover");
    }
    let reply = n2
        .post(&format!("/v2/users/{first}/unlock"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    n0.stop().await;
    n2.stop().await;
}

/// Races `count` calls of `make(i)` over the nodes (`i % 3`): (succeeded, refused with `taken`).
async fn race<F, Fut>(count: usize, taken: &str, make: F) -> (usize, usize)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = support::Reply>,
{
    let replies = futures::future::join_all((0..count).map(make)).await;
    let won = replies.iter().filter(|r| r.status.is_success()).count();
    let refused = replies.iter().filter(|r| r.error_id() == taken).count();
    assert_eq!(
        won + refused,
        count,
        "only successes and {taken}: {:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    (won, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_across_the_cluster_and_a_login_name_reaches_its_user_from_any_node() {
    let testbed = Testbed::start(3).await.unwrap();
    let nodes = cluster(&testbed).await;

    // One username, created by 30 requests racing over the three nodes: one user.
    for round in 0..3 {
        let email = format!("same-{round}@example.com");
        let (won, _) = race(30, "USERNAME-TAKEN", |i| {
            let (node, email) = (&nodes[i % 3], email.clone());
            async move {
                node.post(
                    "/v2/users/human",
                    json!({
                        "username": email,
                        "profile": {"givenName": "Same", "familyName": "Name"},
                        "email": {"email": email, "isVerified": true},
                    }),
                )
                .await
            }
        })
        .await;
        assert_eq!(won, 1, "exactly one user named {email} across the cluster");
    }

    // One organization name, raced the same way.
    let (won, _) = race(12, "ORG-NAME-TAKEN", |i| {
        let node = &nodes[i % 3];
        async move {
            node.post("/v2/organizations", json!({ "name": "Acme Racing" }))
                .await
        }
    })
    .await;
    assert_eq!(won, 1, "exactly one organization named Acme Racing");

    // A deleted user's username is free again, on any node.
    let id = nodes[0].create_human("reused@example.com").await;
    let reply = nodes[1]
        .call_as(
            support::ADMIN_TOKEN,
            reqwest::Method::DELETE,
            &format!("/v2/users/{id}"),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let again = nodes[2].create_human("reused@example.com").await;
    assert_ne!(again, id);

    // Sessions by login name with a password check, created on every node for users owned by
    // each: the check runs in the user's actor, on its owner.
    let mut users = Vec::new();
    for (created_on, node) in nodes.iter().enumerate() {
        let email = format!("login-{created_on}@example.com");
        users.push((email.clone(), node.create_login_user(&email).await));
    }
    // A login name is looked up in the node's view, which a user created on another node a
    // moment ago may not have reached yet (docs/cluster.md). ListUsers first catches the view
    // up with every partition, so after it each node knows every name created before it.
    for node in &nodes {
        let listed = node.post("/v2/users", json!({})).await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    }
    let forwards_before = forwards(&nodes).await;
    for node in &nodes {
        for (email, id) in &users {
            let reply = node
                .post(
                    "/v2/sessions",
                    json!({"checks": {
                        "user": {"loginName": email},
                        "password": {"password": PASSWORD}
                    }}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            let session = reply.body["sessionId"].as_str().unwrap();
            let token = reply.body["sessionToken"].as_str().unwrap();
            let read = node
                .get(&format!("/v2/sessions/{session}?sessionToken={token}"))
                .await;
            assert_eq!(read.status, StatusCode::OK, "{}", read.body);
            assert_eq!(read.body["session"]["factors"]["user"]["id"], json!(id));
        }
    }
    assert!(
        forwards(&nodes).await > forwards_before,
        "sessions for other nodes' users were forwarded to them"
    );
    // A login name nobody has: the same miss on every node.
    for node in &nodes {
        let reply = node
            .post(
                "/v2/sessions",
                json!({"checks": {"user": {"loginName": "nobody@example.com"}}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    }
    for node in nodes {
        node.stop().await;
    }
}

/// Calls forwarded by all nodes so far.
async fn forwards(nodes: &[TestServer]) -> f64 {
    let mut total = 0.0;
    for node in nodes {
        let reply = node.get("/metrics").await;
        total += support::metric_value(
            reply.body.as_str().unwrap(),
            "latchkey_cluster_forwards_total",
        );
    }
    total
}

/// `latchkey migrate` (the real binary) into a fresh cluster: `(succeeded, stdout + stderr)`.
fn migrate(from: &std::path::Path, testbed: &Testbed) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["migrate", "--from"])
        .arg(from)
        .args(["--to", &testbed.urls().join(",")])
        .args(["--cluster-partitions", &LAYOUT.partitions.to_string()])
        .args(["--cluster-replicas", &LAYOUT.replicas.to_string()])
        .args(["--log", "warn"])
        .output()
        .expect("run latchkey migrate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_data_directory_migrates_into_a_cluster_and_every_node_serves_it() {
    // An embedded server with a bit of everything: users in each state, an organization, a
    // machine user's token, a session, a custom lockout policy, an event history.
    let embedded = TestServer::start().await;
    let org = embedded.create_org("Migrated Org").await;
    let active = embedded.create_login_user("active@example.com").await;
    let locked = embedded.create_locked_user("locked@example.com").await;
    let deactivated = embedded.create_human("deactivated@example.com").await;
    let reply = embedded
        .post(&format!("/v2/users/{deactivated}/deactivate"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let (machine, machine_token) = embedded
        .machine_with_role(&org, "robot", Some("ORG_OWNER"))
        .await;
    let (session, session_token) = embedded.session_of(&active).await;
    embedded
        .set_lockout(json!({"maxPasswordAttempts": 7}))
        .await;
    let users = [&active, &locked, &deactivated, &machine];
    let mut before = Vec::new();
    for id in users {
        before.push((
            embedded.state_and_sequence(id).await,
            embedded.event_log(id).await.len(),
        ));
    }
    let listed = |reply: support::Reply| -> usize {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["details"]["totalResult"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let total = listed(embedded.post("/v2/users", json!({})).await);
    let dir = embedded.stop().await;

    let testbed = Testbed::start(3).await.unwrap();
    let (ok, text) = migrate(dir.path(), &testbed);
    assert!(ok, "{text}");
    assert!(text.contains(" 0 found from an earlier run"), "{text}");
    // Run again (as after an interruption): everything is found, nothing appended twice.
    let (ok, again) = migrate(dir.path(), &testbed);
    assert!(ok, "{again}");
    assert!(again.contains(" 0 records appended"), "{again}");

    let nodes = cluster(&testbed).await;
    for node in &nodes {
        for (id, ((state, sequence), events)) in users.iter().zip(&before) {
            assert_eq!(
                node.state_and_sequence(id).await,
                (state.clone(), *sequence),
                "{id}"
            );
            let history = node
                .post(&format!("/latchkey/v1/users/{id}/events"), json!({}))
                .await;
            assert_eq!(
                history.body["details"]["totalResult"],
                json!(events.to_string()),
                "{id}'s history: {}",
                history.body
            );
        }
        assert_eq!(listed(node.post("/v2/users", json!({})).await), total);
        // The embedded admin token and the machine user's token work on every node.
        let reply = node
            .get_as(&machine_token, &format!("/v2/users/{machine}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let reply = node
            .get(&format!(
                "/v2/sessions/{session}?sessionToken={session_token}"
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let reply = node.get("/v2/settings/lockout").await;
        assert_eq!(
            reply.body["settings"]["maxPasswordAttempts"], "7",
            "{}",
            reply.body
        );
    }
    // The migrated names are taken cluster-wide, and claimed for their holders.
    let reply = nodes[1]
        .post("/v2/organizations", json!({ "name": "Migrated Org" }))
        .await;
    assert_eq!(reply.error_id(), "ORG-NAME-TAKEN", "{}", reply.body);
    let client = async_nats::connect(testbed.url(0)).await.unwrap();
    let names = latchkey_cluster::names::Names::open(&async_nats::jetstream::new(client), 3)
        .await
        .unwrap();
    let holder = names
        .holder(&latchkey_engine::username_key(&org, "robot"))
        .await
        .unwrap();
    assert_eq!(holder.as_deref(), Some(machine.as_bytes()));
    // The migrated users change through their new owners.
    let reply = nodes[2]
        .post(&format!("/v2/users/{locked}/unlock"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(state(&nodes[0], &locked).await, "USER_STATE_ACTIVE");

    // Once the nodes have written, the cluster is no longer a migration's to fill.
    let (ok, refused) = migrate(dir.path(), &testbed);
    assert!(!ok, "{refused}");
    assert!(
        refused.contains("migrate into an empty cluster"),
        "{refused}"
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_policies_of_a_dead_node_are_changed_by_their_new_owner() {
    let testbed = Testbed::start(3).await.unwrap();
    let nodes = cluster(&testbed).await;
    let victim = |scope: &[u8]| {
        nodes[1].node.as_ref().unwrap().router.owner(scope) == latchkey_api::cluster::Owner::Here
    };
    // A session and an organization's own lockout policy, both held by n1, both written there
    // (the calls reach n0 and are forwarded).
    let mut session = None;
    for i in 0..40 {
        // A user of n1's (created there): its sessions are created there too.
        let user = nodes[1]
            .create_login_user(&format!("session-{i}@example.com"))
            .await;
        let (id, token) = nodes[0].session_of(&user).await;
        if victim(&latchkey_engine::session_scope(&id)) {
            session = Some((id, token));
            break;
        }
    }
    let (session, token) = session.expect("a session held by n1");
    let mut policy = None;
    for i in 0..40 {
        let org = nodes[i % 3].create_org(&format!("Policy Org {i}")).await;
        if victim(&latchkey_engine::org_policy_scope(&org)) {
            let (_, owner) = nodes[0]
                .machine_with_role(&org, &format!("owner-{i}"), Some("ORG_OWNER"))
                .await;
            let reply = nodes[0]
                .call_as(
                    &owner,
                    reqwest::Method::POST,
                    "/management/v1/policies/lockout",
                    json!({"maxPasswordAttempts": 4}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            policy = Some((org, owner));
            break;
        }
    }
    let (org, owner) = policy.expect("an organization's policy held by n1");

    // n1 dies. The new owner of each scope settles it (claims it, its view caught up) before it
    // reads and rewrites the record: without that, its write is refused and the call never
    // succeeds.
    let [n0, n1, n2] = three(nodes);
    n1.crash();
    let died = Instant::now();
    let until_served = |reply: &support::Reply, what: &str| -> bool {
        if reply.status.is_success() {
            return true;
        }
        assert!(
            ["NO-OWNER", "CALL-TIMEOUT", "STORE-UNAVAILABLE"].contains(&reply.error_id()),
            "{what}: a failover answer, not {}",
            reply.body
        );
        assert!(
            died.elapsed() < Duration::from_secs(60),
            "{what} after n1 died"
        );
        false
    };
    let token = loop {
        let reply = n0
            .call_as(
                support::ADMIN_TOKEN,
                reqwest::Method::PATCH,
                &format!("/v2/sessions/{session}"),
                json!({"sessionToken": token, "metadata": {"step": "Mg=="}}),
            )
            .await;
        if until_served(&reply, "SetSession") {
            // A change rotates the session's token.
            break reply.body["sessionToken"].as_str().unwrap().to_owned();
        }
    };
    let read = n2
        .get(&format!("/v2/sessions/{session}?sessionToken={token}"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(
        read.body["session"]["metadata"]["step"], "Mg==",
        "{}",
        read.body
    );
    loop {
        let reply = n2
            .call_as(
                &owner,
                reqwest::Method::PUT,
                "/management/v1/policies/lockout",
                json!({"maxPasswordAttempts": 6}),
            )
            .await;
        if until_served(&reply, "the organization's policy") {
            break;
        }
    }
    let read = n0
        .get(&format!("/v2/settings/lockout?ctx.orgId={org}"))
        .await;
    assert_eq!(
        read.body["settings"]["maxPasswordAttempts"], "6",
        "{}",
        read.body
    );
    println!(
        "changed by their new owners {:?} after n1 died",
        died.elapsed()
    );
    n0.stop().await;
    n2.stop().await;
}

/// A node dies together with the NATS server leading its user's partition: writes to that user
/// resume on another node once the node's lease has expired and the stream has a new leader
/// (the bar: 12 s). The nodes know every NATS server, so those attached to the dead one
/// reconnect to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_dead_nodes_users_resume_when_their_streams_leader_dies_with_it() {
    let mut testbed = Testbed::start(3).await.unwrap();
    let all = testbed.urls().join(",");
    let nodes = cluster_on(|_| all.clone()).await;
    // Created through n1, so n1 serves it.
    let user = nodes[1].create_human("stranded@example.com").await;
    let partition = partition_of(&user);
    let leader = testbed
        .leader_of(&Layout::stream_name(partition))
        .await
        .unwrap();
    // A user n2 serves whose partition's stream another server leads: written throughout, it
    // must not be held up (a partition the dead server led waits for JetStream's election).
    let bystander = nodes[2].create_human("bystander@example.com").await;
    let stream = Layout::stream_name(partition_of(&bystander));
    while testbed.leader_of(&stream).await.unwrap() == leader {
        testbed
            .move_leader(&stream, (leader + 1) % 3)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let [n0, n1, n2] = three(nodes);
    n1.crash();
    testbed.kill(leader);
    let died = Instant::now();
    let path = format!("/v2/users/{user}/lock");
    let failover = async {
        let mut last = String::new();
        loop {
            let reply = n0.post(&path, json!({})).await;
            if reply.error_id() != last {
                last = reply.error_id().to_owned();
                println!("{:?}: {last}", died.elapsed());
            }
            match (reply.status, reply.error_id()) {
                // Locked now, or by an earlier attempt whose answer was lost.
                (StatusCode::OK, _) | (_, "USER-NOT-ACTIVE-OR-INITIAL") => break,
                (
                    _,
                    "NO-OWNER" | "CALL-TIMEOUT" | "STORE-UNAVAILABLE" | "STORE-OUTCOME-UNKNOWN",
                ) => {}
                _ => panic!("a failover answer: {}", reply.body),
            }
            assert!(died.elapsed() < Duration::from_secs(60), "failover");
        }
        died.elapsed()
    };
    let (resumed, steady) = with_steady_writes(&n2, &bystander, failover).await;
    println!(
        "with NATS server {leader}, the leader of partition {partition}, killed too: writes \
         to the dead node's user resumed after {resumed:?}; a user of a live node on another \
         server's partition: {} writes, the longest gap {:?}, errors {:?}",
        steady.writes, steady.longest, steady.errors
    );
    assert!(
        steady.errors.is_empty(),
        "a live node's user: {:?}",
        steady.errors
    );
    assert_eq!(state(&n2, &user).await, "USER_STATE_LOCKED");
    n0.stop().await;
    n2.stop().await;
}

/// A bulk unlock started on one node unlocks the listed users wherever they are served, each
/// exactly once, even when a node dies in the middle: its users are unlocked by their next
/// owner, and one unlocked by hand meanwhile is left to that unlock. A retry with the same
/// idempotency key on another node answers the same job, and the job's progress reads the same
/// from every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_unlock_reaches_the_users_of_every_node_once_even_when_one_dies() {
    let testbed = Testbed::start(3).await.unwrap();
    let nodes = cluster(&testbed).await;
    // Locked users created on every node (so held by every node), and one active user.
    let mut locked = Vec::new();
    for i in 0..24 {
        let id = nodes[i % 3]
            .create_locked_user(&format!("wave-{i}@example.com"))
            .await;
        let (_, sequence) = nodes[0].state_and_sequence(&id).await;
        locked.push((id, sequence));
    }
    let active = nodes[1].create_human("active@example.com").await;

    let start = json!({"idempotencyKey": "wave-1"});
    let started = nodes[0]
        .post("/latchkey/v1/bulk_unlocks", start.clone())
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_eq!(started.body["job"]["usersTotal"], "24", "{}", started.body);
    let job = started.body["job"]["jobId"].as_str().unwrap().to_owned();
    let again = nodes[1].post("/latchkey/v1/bulk_unlocks", start).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["job"]["jobId"], job.as_str(), "{}", again.body);
    // Starts with one new key on every node at once start one job: the nodes claim the key
    // across the cluster. (Its filter matches no one, so it leaves the users to the first job.)
    let raced =
        json!({"idempotencyKey": "wave-2", "filter": {"lockedBefore": "2001-01-01T00:00:00Z"}});
    let answers = futures::future::join_all(
        nodes
            .iter()
            .map(|node| node.post("/latchkey/v1/bulk_unlocks", raced.clone())),
    )
    .await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(
            answer.body["job"]["jobId"], answers[0].body["job"]["jobId"],
            "{}",
            answer.body
        );
    }
    assert_ne!(answers[0].body["job"]["jobId"], job.as_str());

    // n2 dies at once: whatever of its users it did not get to, their next owner unlocks.
    let [n0, n1, n2] = three(nodes);
    n2.crash();
    // One of n2's users is unlocked by hand meanwhile, racing the job on the new owner: one of
    // the two unlocks it, the other finds it unlocked (the job marks it skipped).
    let (raced, _) = &locked[2];
    let by_hand = loop {
        let reply = n0
            .post(&format!("/v2/users/{raced}/unlock"), json!({}))
            .await;
        match (reply.status, reply.error_id()) {
            (StatusCode::OK, _) => break true,
            (_, "USER-NOT-LOCKED") => break false,
            (_, "NO-OWNER" | "CALL-TIMEOUT") => {}
            _ => panic!("unlock by hand: {}", reply.body),
        }
    };
    println!("unlocked by hand before the job: {by_hand}");
    let path = format!("/latchkey/v1/bulk_unlocks/{job}");
    let since = Instant::now();
    let done = loop {
        let read = n1.get(&path).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
        let job = read.body["job"].clone();
        assert!(
            job["unlocked"].as_str().unwrap().parse::<u64>().unwrap() <= 24,
            "{job}"
        );
        if job["state"] == "BULK_UNLOCK_STATE_DONE" {
            break job;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the job done within 60 s: {job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let by_job = if by_hand { "23" } else { "24" };
    assert_eq!(
        done["unlocked"], by_job,
        "unlocked by hand: {by_hand}; {done}"
    );
    assert_eq!(done["usersScanned"], "24", "{done}");
    assert!(
        done.get("failed").is_none(),
        "none failed (0 is left out): {done}"
    );
    assert!(done["finishDate"].is_string(), "{done}");
    let elsewhere = n0.get(&path).await;
    assert_eq!(elsewhere.body["job"], done, "{}", elsewhere.body);
    for (id, sequence) in &locked {
        // Unlocked exactly once: one event after the lock.
        assert_eq!(
            n0.state_and_sequence(id).await,
            ("USER_STATE_ACTIVE".to_owned(), sequence + 1),
            "{id}"
        );
    }
    assert_eq!(state(&n1, &active).await, "USER_STATE_ACTIVE");
}

/// A machine user's token works on every node, and locking the user on its own node cuts its
/// access on the others too: they cache the caller, and their views applying the lock drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_user_locked_on_its_node_loses_access_on_every_node() {
    let testbed = Testbed::start(3).await.unwrap();
    let nodes = cluster(&testbed).await;
    // Created on n1, so n1 serves it; its token is used on n0, which caches the caller.
    let (robot, token) = nodes[1]
        .machine_with_role(&nodes[1].org, "robot", Some("ORG_OWNER"))
        .await;
    // ListUsers runs on the node it reaches (a read of a user would be forwarded to n1 and
    // authenticated there).
    let n0 = &nodes[0];
    let list = || n0.call_as(&token, reqwest::Method::POST, "/v2/users", json!({}));
    let since = Instant::now();
    while list().await.status != StatusCode::OK {
        // The view of n0 may not hold the token yet.
        assert!(since.elapsed() < Duration::from_secs(5), "the token on n0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        let reply = list().await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    // Locked through n2 (forwarded to n1): refused on n0 once its view has the lock.
    let locked = nodes[2]
        .post(&format!("/v2/users/{robot}/lock"), json!({}))
        .await;
    assert_eq!(locked.status, StatusCode::OK, "{}", locked.body);
    let since = Instant::now();
    loop {
        let reply = list().await;
        if reply.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "n0 still accepts the locked user's token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("refused on n0 {:?} after the lock", since.elapsed());
    let unlocked = nodes[0]
        .post(&format!("/v2/users/{robot}/unlock"), json!({}))
        .await;
    assert_eq!(unlocked.status, StatusCode::OK, "{}", unlocked.body);
    let since = Instant::now();
    while list().await.status != StatusCode::OK {
        assert!(since.elapsed() < Duration::from_secs(5), "the token again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
