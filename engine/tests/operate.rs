//! Backup, restore and verify of an embedded engine's data directory, as an operator runs them:
//! a real store on a temp dir, users made through the engine, damage planted with the store alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use latchkey_engine::*;
use latchkey_storage::{Store, WriteBatch};

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

/// A data directory with a few users in every state; their ids.
async fn populated(config: &Config) -> Vec<String> {
    let engine = Engine::open(config.clone()).await.unwrap();
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = engine.authenticate(&boot.admin_token).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = engine
            .add_human_user(&admin, human(&format!("u{i}@example.com")))
            .await
            .unwrap()
            .user_id;
        match i {
            1 => drop(engine.lock_user(&admin, &id).await.unwrap()),
            2 => {
                engine.lock_user(&admin, &id).await.unwrap();
                engine.unlock_user(&admin, &id).await.unwrap();
            }
            3 => drop(engine.deactivate_user(&admin, &id).await.unwrap()),
            4 => drop(engine.delete_user(&admin, &id).await.unwrap()),
            _ => {}
        }
        ids.push(id);
    }
    engine.shutdown().await.unwrap();
    ids
}

#[tokio::test]
async fn verify_passes_a_good_store_and_names_each_planted_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().data_dir(dir.path());
    let ids = populated(&config).await;
    let report = verify(&config).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(
        report.users >= 7,
        "the users and the bootstrap admin: {report:?}"
    );
    assert!(
        report.events >= 10 && report.index_entries >= 6,
        "{report:?}"
    );

    // Damage, written past the engine: a lost event, a user's snapshot gone (its events and
    // username index left pointing at nothing), and an event beyond the snapshot's sequence.
    let store = Store::open(&store_config(&config)).unwrap();
    let mut damage = WriteBatch::default();
    damage.delete(event_key(&ids[2], 2));
    damage.delete(snapshot_key(&ids[5]));
    damage.put(event_key(&ids[0], 9), b"not an event".to_vec());
    store.submit(b"damage", damage).wait().await.unwrap();
    // Dropped, not closed: the damage stays in the log, as after a crash (a close would
    // checkpoint it, and checkpoints write events only once: the engine never deletes one).
    drop(store);

    let report = verify(&config).unwrap();
    let about = |id: &str| -> Vec<String> {
        report
            .problems
            .iter()
            .filter(|p| p.subject.contains(id) || p.what.contains(id))
            .map(|p| p.what.clone())
            .collect()
    };
    let gap = about(&ids[2]);
    assert!(
        gap.iter().any(|w| w.contains("has 3 where 2 belongs")),
        "{gap:?}"
    );
    let gone = about(&ids[5]);
    assert!(
        gone.iter().any(|w| w.contains("without a snapshot")),
        "{gone:?}"
    );
    assert!(
        gone.iter().any(|w| w.contains("does not exist")),
        "{gone:?}"
    );
    let beyond = about(&ids[0]);
    assert!(
        beyond.iter().any(|w| w.contains("does not decode")),
        "{beyond:?}"
    );
    for fine in [&ids[1], &ids[3], &ids[4]] {
        assert!(about(fine).is_empty(), "{fine}: {:?}", about(fine));
    }
    assert_eq!(report.problem_count as usize, report.problems.len());
}

#[tokio::test]
async fn an_offline_backup_restores_into_an_equal_store_and_refuses_a_used_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().data_dir(dir.path().join("live"));
    let ids = populated(&config).await;
    let mut file = Vec::new();
    let taken = backup_offline(&config, &mut file).unwrap();
    assert_eq!(check_backup(&file[..]).unwrap().entries, taken.entries);

    let target = Config::default().data_dir(dir.path().join("restored"));
    let restored = restore(&file[..], &target).unwrap();
    assert_eq!(restored.entries, taken.entries);
    assert!(verify(&target).unwrap().is_clean());
    let mut again = Vec::new();
    backup_offline(&target, &mut again).unwrap();
    let entries = |file: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        latchkey_storage::backup::BackupReader::new(file)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        entries(&again),
        entries(&file),
        "the restored store holds the same entries"
    );

    let engine = Engine::open(target.clone()).await.unwrap();
    let org = engine.default_org_id().unwrap();
    let caller = Caller::system(org);
    let user = engine.get_user(&caller, &ids[1]).await.unwrap();
    assert_eq!(user.state, UserState::Locked);
    engine.shutdown().await.unwrap();

    let error = restore(&file[..], &target).unwrap_err().to_string();
    assert!(error.contains("empty or missing"), "{error}");
}

#[tokio::test]
async fn a_store_without_list_indexes_gets_them_built_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().data_dir(dir.path());
    let ids = populated(&config).await;

    // As a store written before the indexes existed: no index entries, counts or mark.
    let store = Store::open(&store_config(&config)).unwrap();
    let mut strip = WriteBatch::default();
    for prefix in [&b"x"[..], b"c"] {
        for entry in store.scan_prefix(prefix) {
            strip.delete(entry.unwrap().0);
        }
    }
    let mark = [&b"M\x00\x0c"[..], b"list-indexes"].concat();
    assert!(
        store.get(&mark).unwrap().is_some(),
        "a new store marks them built"
    );
    strip.delete(mark);
    store.submit(b"strip", strip).wait().await.unwrap();
    store.close().unwrap();
    assert!(
        verify(&config).unwrap().is_clean(),
        "unbuilt indexes are not checked"
    );

    let engine = Engine::open(config.clone()).await.unwrap();
    let admin = Caller::system(engine.default_org_id().unwrap());
    let listed = engine
        .list_users(
            &admin,
            ListUsers {
                queries: vec![UserQuery::Type(UserKindFilter::Human)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Six humans were made; one was deleted.
    assert_eq!(listed.total_result, 5);
    assert_eq!(listed.result.len(), 5);
    assert!(!listed.result.iter().any(|u| u.id == ids[4]));
    engine.shutdown().await.unwrap();
    let report = verify(&config).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.index_entries >= 60, "{report:?}");

    // Damage: an entry lost, one for nobody, a count off by one — each named.
    let store = Store::open(&store_config(&config)).unwrap();
    let (lost, _) = store.scan_prefix(b"x").next().unwrap().unwrap();
    let (count, _) = store.scan_prefix(b"c").next().unwrap().unwrap();
    let mut damage = WriteBatch::default();
    damage.delete(lost.clone());
    damage.put(
        b"xU\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01ghost".to_vec(),
        Vec::new(),
    );
    damage.add(count.clone(), 1);
    store.submit(b"damage", damage).wait().await.unwrap();
    store.close().unwrap();
    let report = verify(&config).unwrap();
    let whats: Vec<&str> = report.problems.iter().map(|p| p.what.as_str()).collect();
    assert_eq!(report.problem_count, 3, "{whats:?}");
    assert!(whats
        .iter()
        .any(|w| w.starts_with("list index entry") && w.ends_with("missing")));
    assert!(whats.contains(&"user ghost is not listed with this value"));
    assert!(whats.iter().any(|w| w.contains("the records count")));

    // Repaired but the stray entry: it alone is named (nothing is missing, one entry too many).
    let store = Store::open(&store_config(&config)).unwrap();
    let mut repair = WriteBatch::default();
    repair.put(lost, Vec::new());
    repair.add(count, -1);
    store.submit(b"repair", repair).wait().await.unwrap();
    store.close().unwrap();
    let report = verify(&config).unwrap();
    let whats: Vec<&str> = report.problems.iter().map(|p| p.what.as_str()).collect();
    assert_eq!(whats, ["user ghost is not listed with this value"]);
}
