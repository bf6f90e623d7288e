//! Usernames unique across the cluster (`names.rs`): a creation claims its username in the
//! `lk_names` bucket; a claim whose creation never landed is taken over once it is older than
//! the grace, a claim whose record is in the log never is, and a deletion releases its claim.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use latchkey_cluster::names::Names;
use latchkey_cluster::partitions::Layout;
use latchkey_cluster::testbed::Testbed;
use latchkey_cluster::{ClusterJournal, FixedOwnership, JournalConfig};
use latchkey_engine::{
    username_key, Config, Durability, Email, Engine, ErrorId, NewHuman, PasswordInput, Profile,
};
use latchkey_storage::Journal;

const LAYOUT: Layout = Layout {
    partitions: 2,
    replicas: 1,
};

const GRACE: Duration = Duration::from_millis(1500);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_stands_while_its_creation_may_land_or_has_landed_and_is_released_by_a_deletion() {
    let testbed = Testbed::start(1).await.unwrap();
    let client = async_nats::connect(testbed.url(0)).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    LAYOUT.ensure_streams(&js).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = JournalConfig::new("a", LAYOUT, Duration::from_secs(10));
    config.names_grace = GRACE;
    let journal = ClusterJournal::new(client, config, Arc::new(FixedOwnership::new(1)));
    let engine = Engine::open(
        Config::default()
            .data_dir(dir.path())
            .durability(Durability::Async {
                flush_interval: Duration::from_millis(50),
            })
            .journal(Arc::new(journal.clone())),
    )
    .await
    .unwrap();
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = engine.authenticate(&boot.admin_token).await.unwrap();
    let org = admin.org_id.clone();
    let names = Names::open(&js, LAYOUT.replicas).await.unwrap();

    // A claim whose creation never landed (its node died between the claim and the write).
    let ghost = username_key(&org, "ghost@example.com");
    assert!(journal
        .claim_unique(&ghost, b"never-written")
        .await
        .unwrap());
    let refused = engine
        .add_human_user(&admin, human("ghost@example.com"))
        .await
        .unwrap_err();
    assert_eq!(refused.id, ErrorId::UsernameTaken, "a young claim stands");
    tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
    let created = engine
        .add_human_user(&admin, human("Ghost@example.com"))
        .await
        .unwrap();
    assert_eq!(
        names.holder(&ghost).await.unwrap().as_deref(),
        Some(created.user_id.as_bytes()),
        "an old claim with no record is taken over"
    );

    // A claim whose creation landed stands, however old.
    tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
    assert!(!journal.claim_unique(&ghost, b"someone-else").await.unwrap());
    assert!(
        journal
            .claim_unique(&ghost, created.user_id.as_bytes())
            .await
            .unwrap(),
        "a holder's repeated claim is its own"
    );

    // Deleting the user releases its claim: the name is free at once.
    engine.delete_user(&admin, &created.user_id).await.unwrap();
    assert_eq!(names.holder(&ghost).await.unwrap(), None);
    engine
        .add_human_user(&admin, human("ghost@example.com"))
        .await
        .unwrap();
    engine.shutdown().await.unwrap();
}
