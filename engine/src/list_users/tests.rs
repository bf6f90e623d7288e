//! ListUsers from the indexes against the definition — every stored user filtered, sorted and
//! paged — on random histories, and the index checks of `verify` after each.

use super::*;
use crate::access::{Grant, Role};
use crate::{Config, Engine};

/// A small deterministic generator (xorshift), so a failure repeats with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "ab", "Ab", "abc", "ABD", "b", "ba", "bä", "c", "ca", "a\u{0}b",
];

fn text_method(rng: &mut Rng) -> TextMatch {
    *rng.pick(&[
        TextMatch::Equals,
        TextMatch::EqualsIgnoreCase,
        TextMatch::StartsWith,
        TextMatch::StartsWithIgnoreCase,
        TextMatch::Contains,
        TextMatch::ContainsIgnoreCase,
        TextMatch::EndsWith,
        TextMatch::EndsWithIgnoreCase,
    ])
}

fn random_query(rng: &mut Rng, orgs: &[String], ids: &[String], depth: usize) -> UserQuery {
    let word = rng.pick(WORDS).to_string();
    let prefix: String = word.chars().take(1 + rng.below(2)).collect();
    let value = if rng.below(2) == 0 { word } else { prefix };
    match rng.below(if depth > 0 { 14 } else { 17 }) {
        0 => UserQuery::UserName(value, text_method(rng)),
        1 => UserQuery::FirstName(value, text_method(rng)),
        2 => UserQuery::LastName(value, text_method(rng)),
        3 => UserQuery::NickName(value, text_method(rng)),
        4 => UserQuery::DisplayName(value, text_method(rng)),
        5 => UserQuery::Email(format!("{value}@"), text_method(rng)),
        6 => UserQuery::LoginName(format!("{value}@o"), text_method(rng)),
        7 | 8 => UserQuery::State(*rng.pick(&[
            UserState::Active,
            UserState::Inactive,
            UserState::Locked,
            UserState::Initial,
            UserState::Deleted,
        ])),
        9 => UserQuery::Type(*rng.pick(&[UserKindFilter::Human, UserKindFilter::Machine])),
        10 | 11 => UserQuery::OrganizationId(rng.pick(orgs).clone()),
        12 => UserQuery::InUserIds((0..rng.below(6)).map(|_| rng.pick(ids).clone()).collect()),
        13 => {
            UserQuery::InUserEmails(vec![format!("{}@x.example", rng.pick(WORDS)).to_uppercase()])
        }
        14 => UserQuery::Or(vec![
            random_query(rng, orgs, ids, depth + 1),
            random_query(rng, orgs, ids, depth + 1),
        ]),
        15 => UserQuery::Not(Box::new(random_query(rng, orgs, ids, depth + 1))),
        _ => UserQuery::And(vec![
            random_query(rng, orgs, ids, depth + 1),
            random_query(rng, orgs, ids, depth + 1),
        ]),
    }
}

/// The definition: every stored, listed user in reach that matches, sorted, paged.
fn by_definition(engine: &Engine, reach: &Reach, request: &ListUsers) -> (u64, Vec<String>) {
    let mut matching = Vec::new();
    for item in engine.inner.store.scan_prefix(keys::USERS) {
        let (_, bytes) = item.unwrap();
        let record = UserRecord::decode(&bytes).unwrap();
        if record.state == UserState::Deleted || !reach.covers(&record.org_id) {
            continue;
        }
        let org = engine.org_blocking(&record.org_id).unwrap();
        if request
            .queries
            .iter()
            .all(|q| matches(&record, org.as_deref(), q))
        {
            matching.push(record);
        }
    }
    sort(&mut matching, request.sort_by, request.asc);
    let limit = match request.limit {
        0 => 100,
        n => n as usize,
    };
    let page = matching
        .iter()
        .skip(request.offset as usize)
        .take(limit)
        .map(|r| r.id.clone())
        .collect();
    (matching.len() as u64, page)
}

async fn random_history(
    engine: &Engine,
    admin: &Caller,
    rng: &mut Rng,
) -> (Vec<String>, Vec<String>) {
    let mut orgs = vec![admin.org_id.clone()];
    for i in 0..2 {
        let (id, _) = engine
            .add_organization(admin, &format!("org{i}"), None)
            .await
            .unwrap();
        orgs.push(id);
    }
    let mut ids = Vec::new();
    for i in 0..120 {
        let org = rng.pick(&orgs).clone();
        let username = format!("{}{i}", rng.pick(WORDS));
        let created = if rng.below(5) == 0 {
            engine
                .create_machine_user(
                    admin,
                    NewMachine {
                        organization_id: org,
                        username: Some(username),
                        name: rng.pick(WORDS).to_string(),
                        ..Default::default()
                    },
                )
                .await
        } else {
            let optional = |rng: &mut Rng| (rng.below(2) == 0).then(|| rng.pick(WORDS).to_string());
            let nick_name = optional(rng);
            let display_name = optional(rng);
            engine
                .add_human_user(
                    admin,
                    NewHuman {
                        username: (rng.below(4) != 0).then_some(username),
                        organization: Some(OrgSelector::Id(org)),
                        profile: Profile {
                            given_name: rng.pick(WORDS).to_string(),
                            family_name: rng.pick(WORDS).to_string(),
                            nick_name,
                            display_name,
                            ..Default::default()
                        },
                        email: Email {
                            email: format!("{}{i}@x.example", rng.pick(WORDS)),
                            is_verified: false,
                        },
                        password: (rng.below(3) != 0).then(|| PasswordInput::Hashed {
                            hash: "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
                                .into(),
                            change_required: false,
                        }),
                        ..Default::default()
                    },
                )
                .await
        };
        ids.push(created.unwrap().user_id);
        // Every lifecycle command, on random users, allowed or not.
        for _ in 0..rng.below(3) {
            let id = rng.pick(&ids).clone();
            let _ = match rng.below(5) {
                0 => engine.lock_user(admin, &id).await,
                1 => engine.unlock_user(admin, &id).await,
                2 => engine.deactivate_user(admin, &id).await,
                3 => engine.reactivate_user(admin, &id).await,
                _ => engine.delete_user(admin, &id).await,
            };
        }
    }
    (orgs, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_answer_as_a_full_scan_on_random_histories() {
    for seed in [0x9E37_79B9_7F4A_7C15u64, 0xD1B5_4A32_D192_ED03] {
        let dir = tempfile::tempdir().unwrap();
        // A small memtable: the indexes are read from sled and the log's tables together.
        let mut config = Config::default().data_dir(dir.path());
        config.checkpoint_entries = 300;
        let engine = Engine::open(config.clone()).await.unwrap();
        let boot = engine.bootstrap(None).await.unwrap().unwrap();
        let admin = engine.authenticate(&boot.admin_token).await.unwrap();
        let mut rng = Rng(seed);
        let (orgs, ids) = random_history(&engine, &admin, &mut rng).await;
        let viewer = Caller {
            user_id: "viewer".into(),
            org_id: orgs[1].clone(),
            grants: vec![Grant {
                role: Role::OrgUserViewer,
                org_id: Some(orgs[1].clone()),
            }],
        };
        for round in 0..400 {
            let caller = if round % 4 == 3 { &viewer } else { &admin };
            let request = ListUsers {
                offset: *rng.pick(&[0, 0, 1, 3, 10, 40, 200]),
                limit: *rng.pick(&[0, 1, 5, 20]),
                asc: rng.below(2) == 0,
                sort_by: *rng.pick(&[
                    SortBy::CreationDate,
                    SortBy::CreationDate,
                    SortBy::UserName,
                    SortBy::FirstName,
                    SortBy::LastName,
                    SortBy::NickName,
                    SortBy::DisplayName,
                    SortBy::Email,
                    SortBy::State,
                    SortBy::Type,
                ]),
                queries: (0..rng.below(3))
                    .map(|_| random_query(&mut rng, &orgs, &ids, 0))
                    .collect(),
            };
            let reach = caller.reach(Permission::UserRead).unwrap();
            let (total, page) = by_definition(&engine, &reach, &request);
            let listed = engine.list_users(caller, request.clone()).await.unwrap();
            let listed_ids: Vec<String> = listed.result.iter().map(|u| u.id.clone()).collect();
            assert_eq!(
                (listed.total_result, &listed_ids),
                (total, &page),
                "seed {seed:#x} round {round}: {request:?}"
            );
        }
        engine.shutdown().await.unwrap();
        let report = crate::verify::verify(&config).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert!(report.index_entries > 100, "{report:?}");
    }
}

#[tokio::test]
async fn a_page_that_needs_more_reads_than_the_cap_is_refused_as_too_broad() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(Config::default().data_dir(dir.path()))
        .await
        .unwrap();
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = engine.authenticate(&boot.admin_token).await.unwrap();
    for i in 0..200 {
        let username = if i == 199 {
            "zz-last".to_owned()
        } else {
            format!("user{i}")
        };
        engine
            .create_machine_user(
                &admin,
                NewMachine {
                    organization_id: admin.org_id.clone(),
                    username: Some(username),
                    name: "bot".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let list = |asc, limit, offset, queries| {
        engine.list_users(
            &admin,
            ListUsers {
                asc,
                limit,
                offset,
                queries,
                ..Default::default()
            },
        )
    };
    let last_only = || vec![UserQuery::UserName("z-l".into(), TextMatch::Contains)];
    // Oldest first: the one match is the 200th user met, past the 150 reads allowed.
    let err = list(true, 10, 0, last_only()).await.unwrap_err();
    assert_eq!(err.id, ErrorId::ListTooBroad);
    // Newest first it is met at once; the total then counts what the cap let it read.
    let found = list(false, 1, 0, last_only()).await.unwrap();
    assert_eq!(found.result.len(), 1);
    assert_eq!(found.total_result, 1);
    // An offset is stepped over on the index alone, up to its own cap.
    assert_eq!(list(true, 5, 140, vec![]).await.unwrap().result.len(), 5);
    let err = list(true, 5, 190, vec![]).await.unwrap_err();
    assert_eq!(err.id, ErrorId::ListTooBroad);
    // The counts answer the total of an unfiltered list without reading anyone.
    assert_eq!(list(true, 1, 0, vec![]).await.unwrap().total_result, 201);
    engine.shutdown().await.unwrap();
}

#[test]
fn text_query_methods() {
    assert!(text_matches(
        "Ada@Example.com",
        "ada@example.com",
        TextMatch::EqualsIgnoreCase
    ));
    assert!(!text_matches(
        "Ada@Example.com",
        "ada@example.com",
        TextMatch::Equals
    ));
    assert!(text_matches("ada.lovelace", "ada", TextMatch::StartsWith));
    assert!(text_matches(
        "ada.lovelace",
        "LOVE",
        TextMatch::ContainsIgnoreCase
    ));
    assert!(text_matches("ada.lovelace", "lace", TextMatch::EndsWith));
    assert!(!text_matches("ada.lovelace", "LACE", TextMatch::EndsWith));
}

#[test]
fn nested_ands_flatten_into_one_list() {
    let queries = vec![
        UserQuery::State(UserState::Active),
        UserQuery::And(vec![
            UserQuery::Type(UserKindFilter::Human),
            UserQuery::And(vec![UserQuery::OrganizationId("o".into())]),
        ]),
    ];
    assert_eq!(conjuncts(&queries).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_during_writes_and_checkpoints_show_only_matching_users_and_settle_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().data_dir(dir.path());
    config.checkpoint_entries = 64; // checkpoints run while the lists walk
    let engine = Engine::open(config).await.unwrap();
    let boot = engine.bootstrap(None).await.unwrap().unwrap();
    let admin = engine.authenticate(&boot.admin_token).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let created = engine
            .create_machine_user(
                &admin,
                NewMachine {
                    organization_id: admin.org_id.clone(),
                    username: Some(format!("bot{i}")),
                    name: "bot".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        ids.push(created.user_id);
    }
    let writers: Vec<_> = ids
        .chunks(10)
        .map(|chunk| {
            let (engine, admin, chunk) = (engine.clone(), admin.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for round in 0..30 {
                    for id in &chunk {
                        if round % 2 == 0 {
                            engine.lock_user(&admin, id).await.unwrap();
                        } else {
                            engine.unlock_user(&admin, id).await.unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    let locked = || ListUsers {
        limit: 1000,
        queries: vec![UserQuery::State(UserState::Locked)],
        ..Default::default()
    };
    let mut lists = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        let listed = engine.list_users(&admin, locked()).await.unwrap();
        assert!(listed.result.iter().all(|u| u.state == UserState::Locked));
        assert!(listed.total_result <= 40);
        lists += 1;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(lists > 0);
    // Quiet again: 30 rounds end unlocked; the list and its count agree with the records.
    let listed = engine.list_users(&admin, locked()).await.unwrap();
    assert_eq!((listed.total_result, listed.result.len()), (0, 0));
    let all = engine
        .list_users(&admin, ListUsers::default())
        .await
        .unwrap();
    assert_eq!(all.total_result, 41);
    engine.shutdown().await.unwrap();
}
