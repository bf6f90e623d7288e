//! The engine over JetStream: two nodes' engines on one NATS cluster (3 servers, R3), each with
//! its own view. What one node acknowledged, another sees after taking over; a zombie that still
//! believes it owns the users is refused by the stream; a node with an empty view rebuilds the
//! same state from the log; and the log's audit shows epochs that never go back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_cluster::log::{UserLog, CLAIM_HEADER, WRITER_HEADER};
use latchkey_cluster::partitions::Layout;
use latchkey_cluster::testbed::Testbed;
use latchkey_cluster::{ClusterJournal, FixedOwnership, JournalConfig};
use latchkey_engine::{
    Config, Durability, Email, Engine, ErrorId, NewHuman, PasswordInput, Profile, UserState,
};

const LAYOUT: Layout = Layout {
    partitions: 4,
    replicas: 3,
};

/// One Latchkey node: its engine over a journal, its view in `dir`, its belief about ownership.
struct Node {
    engine: Engine,
    journal: ClusterJournal,
    ownership: Arc<FixedOwnership>,
}

async fn node(url: &str, name: &str, epoch: u64, dir: &std::path::Path) -> Node {
    let client = async_nats::connect(url).await.unwrap();
    let ownership = Arc::new(FixedOwnership::new(epoch));
    let journal = ClusterJournal::new(
        client,
        JournalConfig::new(name, LAYOUT, Duration::from_secs(10)),
        ownership.clone(),
    );
    let config = Config::default()
        .data_dir(dir)
        .durability(Durability::Async {
            flush_interval: Duration::from_millis(50),
        })
        .journal(Arc::new(journal.clone()));
    let engine = Engine::open(config).await.unwrap();
    Node {
        engine,
        journal,
        ownership,
    }
}

fn human(email: &str) -> NewHuman {
    NewHuman {
        profile: Profile {
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            ..Default::default()
        },
        email: Email {
            email: email.into(),
            is_verified: true,
        },
        password: Some(PasswordInput::Hashed {
            hash: "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy".into(),
            change_required: false,
        }),
        ..Default::default()
    }
}

/// The journal's debug lines, kept to tell a write the stream fenced from one the node refused
/// itself (both are NO-OWNER to the caller). The only test in this binary sets it globally.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_takes_over_what_another_acknowledged_and_the_old_one_is_fenced() {
    let journal_log = Captured::default();
    let writer = journal_log.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "latchkey_cluster::journal=debug",
        ))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let testbed = Testbed::start(3).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(testbed.url(0)).await.unwrap());
    LAYOUT.ensure_streams(&js).await.unwrap();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    // Node a owns everything under epoch 1: bootstrap, users, locks and unlocks.
    let a = node(&testbed.url(1), "a", 1, dirs[0].path()).await;
    let boot = a.engine.bootstrap(None).await.unwrap().unwrap();
    let admin = a.engine.authenticate(&boot.admin_token).await.unwrap();
    let mut users = Vec::new();
    for n in 0..6 {
        let created = a
            .engine
            .add_human_user(&admin, human(&format!("u{n}@example.com")))
            .await
            .unwrap();
        users.push(created.user_id);
    }
    for id in &users[..4] {
        a.engine.lock_user(&admin, id).await.unwrap();
    }
    a.engine.unlock_user(&admin, &users[0]).await.unwrap();
    let expected = |id: &str| match users.iter().position(|u| u == id) {
        Some(1..=3) => UserState::Locked,
        _ => UserState::Active,
    };

    // Node b takes over under epoch 2, while a still believes it owns everything (a zombie).
    let b = node(&testbed.url(2), "b", 2, dirs[1].path()).await;
    assert!(
        b.engine.bootstrap(None).await.unwrap().is_none(),
        "b's view holds a's bootstrap: no second bootstrap"
    );
    let admin_b = b.engine.authenticate(&boot.admin_token).await.unwrap();
    for id in &users {
        let user = b.engine.get_user(&admin_b, id).await.unwrap();
        assert_eq!(user.state, expected(id), "user {id} as a acknowledged it");
    }
    b.engine.unlock_user(&admin_b, &users[1]).await.unwrap();

    // The zombie's actor for users[1] is live and holds its old expectation: refused by the
    // stream, nothing written.
    let refused = a.engine.unlock_user(&admin, &users[1]).await;
    let refused = a
        .engine
        .lock_user(&admin, &users[1])
        .await
        .err()
        .or(refused.err());
    assert_eq!(
        refused.map(|e| e.id),
        Some(ErrorId::NoOwner),
        "a write of the zombie is refused"
    );
    // A user b claimed that a still holds a claim on: a's view may be behind (a real zombie's
    // lease has lapsed, so it would not serve the read), but any write it makes is refused.
    b.engine.lock_user(&admin_b, &users[4]).await.unwrap();
    let refused = a.engine.delete_user(&admin, &users[4]).await.unwrap_err();
    assert_eq!(refused.id, ErrorId::NoOwner);
    // A user a never held: its claim under epoch 1 after b's epoch-2 records is refused.
    let from_b = b
        .engine
        .add_human_user(&admin_b, human("b@example.com"))
        .await
        .unwrap()
        .user_id;
    let refused = a.engine.get_user(&admin, &from_b).await.unwrap_err();
    assert_eq!(refused.id, ErrorId::NoOwner);
    // Once a learns it lost everything, a write it had admitted under a claim it holds (its
    // actor for users[0] is live; the lease lapsing while the write queued) still goes to the
    // stream, which refuses it: the fence decides, not a's belief.
    a.ownership.set(0);
    let logged_before = journal_log.text().len();
    let fenced = a.engine.lock_user(&admin, &users[0]).await.unwrap_err();
    assert_eq!(fenced.id, ErrorId::NoOwner);
    let log = journal_log.text()[logged_before..].to_owned();
    assert!(
        log.lines()
            .any(|line| line.contains("write refused") && line.contains("fenced")),
        "the stream refused a's write:\n{log}"
    );
    // A user a must load first is refused before the stream is touched.
    let refused = a.engine.lock_user(&admin, &users[5]).await.unwrap_err();
    assert_eq!(refused.id, ErrorId::NoOwner);

    // What b did is what a third node with an empty view rebuilds from the log.
    let after = |id: &str| match users.iter().position(|u| u == id) {
        Some(2..=4) => UserState::Locked,
        _ => UserState::Active,
    };
    a.journal.stop();
    b.journal.stop();
    let c = node(&testbed.url(0), "c", 3, dirs[2].path()).await;
    let admin_c = c.engine.authenticate(&boot.admin_token).await.unwrap();
    for id in &users {
        let user = c.engine.get_user(&admin_c, id).await.unwrap();
        assert_eq!(user.state, after(id), "user {id} rebuilt from the log");
    }
    c.engine.get_user(&admin_c, &from_b).await.unwrap();
    drop(b);

    // The audit: per scope, the writers' epochs never go back, and after a claim only its
    // claimant writes until the next claim.
    let log = UserLog::new(async_nats::connect(testbed.url(0)).await.unwrap(), LAYOUT);
    let mut claims = 0;
    for p in 0..LAYOUT.partitions {
        let mut holder: HashMap<String, (String, u64)> = HashMap::new();
        for record in log.scan(p).await.unwrap() {
            let header = |name: &str| record.headers.get(name).map(|v| v.as_str().to_owned());
            let (mark, is_claim) = match (header(CLAIM_HEADER), header(WRITER_HEADER)) {
                (Some(claim), _) => (claim, true),
                (None, Some(writer)) => (writer, false),
                (None, None) => panic!("record {} names no writer", record.sequence),
            };
            let (node, epoch) = mark.split_once('/').unwrap();
            let epoch: u64 = epoch.parse().unwrap();
            let scope = record.subject.clone();
            match holder.get(&scope) {
                Some((held_by, held)) if is_claim => assert!(epoch > *held || node == held_by),
                Some((held_by, held)) => assert!(
                    node == held_by && epoch == *held,
                    "{scope}: a write of {mark} after the claim of {held_by}/{held}"
                ),
                None => assert!(is_claim, "{scope}: a write before any claim"),
            }
            if is_claim {
                claims += 1;
                holder.insert(scope, (node.to_owned(), epoch));
            }
        }
    }
    assert!(
        claims >= users.len() * 2,
        "a's, b's and c's claims are in the log"
    );
    drop(c);
    drop(a);
}
