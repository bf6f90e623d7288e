//! Golden bytes: every record type and key as this schema version writes them. If one of these
//! fails, the disk format changed: either undo the change, or bump [`SCHEMA_VERSION`] (with an
//! upgrade path for existing stores) and record the new version's bytes here.

use super::*;
use crate::keys;
use crate::orgs::OrgRecord;
use crate::tokens::TokenRecord;
use crate::types::UserState;
use crate::user::event::{Event, EventKind};
use crate::user::record::{HumanRecord, Kind, MachineRecord, PasswordRecord, TokenRef, UserRecord};

const AT: i64 = 1_764_527_656_304_768;

/// A human user with every field set (also the record tests' fixture).
pub(crate) fn human() -> UserRecord {
    let kind = Kind::Human(HumanRecord {
        profile: Profile {
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            nick_name: Some("ada".into()),
            display_name: None,
            preferred_language: Some("en".into()),
            gender: Gender::Female,
        },
        email: Email {
            email: "ada@example.com".into(),
            is_verified: true,
        },
        phone: Some(Phone {
            phone: "+41 44 000 00 00".into(),
            is_verified: false,
        }),
        password: Some(PasswordRecord {
            hash: "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy".into(),
            change_required: true,
            changed: AT - 1_000_000,
        }),
    });
    let mut record = UserRecord::new(
        "117694849381826560".into(),
        "117694849381826561".into(),
        UserState::Locked,
        "ada",
        kind,
        AT,
    );
    record.sequence = 3;
    record.changed = AT + 1_000;
    record.failed_password_attempts = 2;
    record.grants.push(Grant {
        role: Role::OrgUserViewer,
        org_id: Some("117694849381826561".into()),
    });
    record
}

/// A machine user with a token and instance grants (also the record tests' fixture).
pub(crate) fn machine() -> UserRecord {
    let kind = Kind::Machine(MachineRecord {
        name: "ci".into(),
        description: "deploys".into(),
        tokens: vec![TokenRef {
            id: "t1".into(),
            hash: vec![1, 2, 3],
        }],
    });
    let mut record = UserRecord::new("m1".into(), "o1".into(), UserState::Active, "ci", kind, AT);
    record.sequence = 2;
    for role in [Role::IamOwner, Role::OrgOwner, Role::OrgUserManager] {
        record.grants.push(Grant { role, org_id: None });
    }
    record
}

/// Every user state, in a record each.
fn states() -> Vec<(String, Vec<u8>)> {
    [
        UserState::Active,
        UserState::Inactive,
        UserState::Deleted,
        UserState::Locked,
        UserState::Initial,
    ]
    .into_iter()
    .map(|state| {
        let mut record = machine();
        record.state = state;
        (format!("state {state:?}"), record.encode())
    })
    .collect()
}

fn events() -> Vec<(String, Vec<u8>)> {
    let kinds = [
        EventKind::HumanAdded {
            org_id: "o1".into(),
            username: "ada".into(),
        },
        EventKind::MachineAdded {
            org_id: "o1".into(),
            username: "ci".into(),
        },
        EventKind::Locked,
        EventKind::Unlocked,
        EventKind::Deactivated,
        EventKind::Reactivated,
        EventKind::Removed,
        EventKind::TokenAdded {
            token_id: "t1".into(),
        },
        EventKind::TokenRemoved {
            token_id: "t1".into(),
        },
        EventKind::PasswordCheckFailed { failed_attempts: 3 },
        EventKind::PasswordCheckSucceeded,
        EventKind::LockedAfterFailures {
            failed_attempts: 3,
            until: Some(AT + 60_000_000),
        },
        EventKind::UnlockedAutomatically,
        EventKind::PasswordChanged,
        EventKind::UnlockedInBulk {
            job_id: "j1".into(),
        },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let event = Event {
                sequence: i as u64 + 1,
                at: AT + i as i64,
                kind,
                by: "m1".into(),
            };
            // The first nine kinds are named by their type alone; later ones share types
            // (`user.locked`, `user.unlocked`) and carry their position too.
            let name = if i < 9 {
                format!("event {}", event.kind.name())
            } else {
                format!("event {} ({i})", event.kind.name())
            };
            (name, event.encode())
        })
        .collect()
}

fn samples() -> Vec<(String, Vec<u8>)> {
    let mut all = vec![
        ("human user".to_owned(), human().encode()),
        ("machine user".to_owned(), machine().encode()),
    ];
    all.extend(states());
    all.extend(events());
    let org = OrgRecord {
        id: "o1".into(),
        name: "Acme".into(),
        domain: "acme.localhost".into(),
        created: AT,
    };
    all.push(("organization".into(), encode(&org)));
    let token = TokenRecord {
        token_id: "t1".into(),
        user_id: "m1".into(),
        expires: Some(AT + 86_400_000_000),
        created: AT,
    };
    all.push(("token".into(), encode(&token)));
    let policy = crate::lockout::PolicyRecord {
        owner: "o1".into(),
        max_password_attempts: 5,
        max_otp_attempts: 3,
        auto_unlock_after: 900_000_000,
        max_temporary_lockouts: 2,
        sequence: 4,
        created: AT,
        changed: AT + 1,
    };
    all.push(("lockout policy".into(), encode(&policy)));
    let lockout = crate::user::lockout::LockoutState {
        lock: Some(crate::user::lockout::Lock {
            reason: crate::user::lockout::LockReason::FailedPasswords,
            at: AT,
            until: Some(AT + 900_000_000),
        }),
        temporary_lockouts: 1,
    };
    all.push(("lockout state".into(), encode(&lockout)));
    let admin_lock = crate::user::lockout::LockoutState {
        lock: Some(crate::user::lockout::Lock {
            reason: crate::user::lockout::LockReason::Admin,
            at: AT,
            until: None,
        }),
        temporary_lockouts: 0,
    };
    all.push(("lockout state, admin".into(), encode(&admin_lock)));
    all.push((
        "session".into(),
        encode(&crate::sessions::golden_session(AT)),
    ));
    all.push((
        "bulk unlock job".into(),
        encode(&crate::bulk_unlock::golden_job(AT)),
    ));
    all.push((
        "bulk unlock chunk".into(),
        encode(&vec!["u1".to_owned(), "u2".to_owned()]),
    ));
    for (name, mark) in [
        (
            "bulk unlock mark, unlocked",
            crate::bulk_unlock::Mark::Unlocked,
        ),
        (
            "bulk unlock mark, skipped",
            crate::bulk_unlock::Mark::Skipped,
        ),
        ("bulk unlock mark, failed", crate::bulk_unlock::Mark::Failed),
    ] {
        all.push((name.into(), mark.value()));
    }
    for (name, key) in [
        ("key schema", keys::SCHEMA.to_vec()),
        ("key meta", keys::meta("default-org")),
        ("key user", keys::user("u1")),
        ("key event", keys::event("u1", 258)),
        ("key events of", keys::events_of("u1")),
        ("key username", keys::username("o1", "ada")),
        ("key org", keys::org("o1")),
        ("key org name", keys::org_name("acme")),
        ("key org domain", keys::org_domain("acme.localhost")),
        ("key token", keys::token(&[0xAB; 4])),
        ("key token id", keys::token_id("t1")),
        (
            "key instance lockout policy",
            keys::instance_lockout_policy(),
        ),
        ("key org lockout policy", keys::org_lockout_policy("o1")),
        ("key session", keys::session("s1")),
        ("key lockout state", keys::lockout("u1")),
        ("key automatic unlock", keys::auto_unlock(AT, "u1")),
        ("key bulk unlock job", keys::bulk_job("j1")),
        ("key bulk unlock chunk", keys::bulk_chunk("j1", 2)),
        ("key bulk unlocked", keys::bulk_unlocked("j1", "u1")),
        (
            "key bulk unlock idempotency",
            keys::bulk_idempotency("u1", "k1"),
        ),
        ("key list index", keys::list_index(b'U', b"ada\0", AT, "u1")),
        ("key user count", keys::user_count("o1", 3, true)),
    ] {
        all.push((name.into(), key));
    }
    all
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Schema 3's bytes, by sample (schema 2's are its first rows, but for events, which now end in
/// who caused them; `events_of_older_schemas_read_without_a_caller` holds the older form).
const V3: &[(&str, &str)] = &[
    ("human user", "12313137363934383439333831383236353630123131373639343834393338313832363536310303616461038082b4c283b5a206d091b4c283b5a206020003416461084c6f76656c6163650103616461000102656e010f616461406578616d706c652e636f6d0101102b34312034342030303020303020303000013c243262243130244e39716f38754c4f69636b6778325a4d525a6f4d7965496a5a416763666c377039326c644778616436384c4a5a644c31376c6857790180f9b9c183b5a20601030112313137363934383439333831383236353631"),
    ("machine user", "026d31026f3100026369028082b4c283b5a2068082b4c283b5a2060001026369076465706c6f7973010274310301020303000001000200"),
    ("state Active", "026d31026f3100026369028082b4c283b5a2068082b4c283b5a2060001026369076465706c6f7973010274310301020303000001000200"),
    ("state Inactive", "026d31026f3101026369028082b4c283b5a2068082b4c283b5a2060001026369076465706c6f7973010274310301020303000001000200"),
    ("state Deleted", "026d31026f3102026369028082b4c283b5a2068082b4c283b5a2060001026369076465706c6f7973010274310301020303000001000200"),
    ("state Locked", "026d31026f3103026369028082b4c283b5a2068082b4c283b5a2060001026369076465706c6f7973010274310301020303000001000200"),
    ("state Initial", "026d31026f3104026369028082b4c283b5a2068082b4c283b5a2060001026369076465706c6f7973010274310301020303000001000200"),
    ("event user.human.added", "018082b4c283b5a20600026f3103616461026d31"),
    ("event user.machine.added", "028282b4c283b5a20601026f31026369026d31"),
    ("event user.locked", "038482b4c283b5a20602026d31"),
    ("event user.unlocked", "048682b4c283b5a20603026d31"),
    ("event user.deactivated", "058882b4c283b5a20604026d31"),
    ("event user.reactivated", "068a82b4c283b5a20605026d31"),
    ("event user.removed", "078c82b4c283b5a20606026d31"),
    ("event user.personal.access.token.added", "088e82b4c283b5a20607027431026d31"),
    ("event user.personal.access.token.removed", "099082b4c283b5a20608027431026d31"),
    ("event user.human.password.check.failed (9)", "0a9282b4c283b5a2060903026d31"),
    ("event user.human.password.check.succeeded (10)", "0b9482b4c283b5a2060a026d31"),
    ("event user.locked (11)", "0c9682b4c283b5a2060b0301809ed0fb83b5a206026d31"),
    ("event user.unlocked (12)", "0d9882b4c283b5a2060c026d31"),
    ("event user.human.password.changed (13)", "0e9a82b4c283b5a2060d026d31"),
    ("event user.unlocked (14)", "0f9c82b4c283b5a2060e026a31026d31"),
    ("organization", "026f310441636d650e61636d652e6c6f63616c686f73748082b4c283b5a206"),
    ("token", "027431026d31018082ef9f87baa2068082b4c283b5a206"),
    ("lockout policy", "026f31050380d293ad0302048082b4c283b5a2068282b4c283b5a206"),
    ("lockout state", "01018082b4c283b5a2060180a6db9c8ab5a20601"),
    ("lockout state, admin", "01008082b4c283b5a2060000"),
    ("session", "027331026d318082b4c283b5a2068282b4c283b5a2060204abababab01027531026f31126164614061636d652e6c6f63616c686f73740c416461204c6f76656c6163658082b4c283b5a206018282b4c283b5a20601016b0201020101016601093132372e302e302e3100010661636365707401032a2f2a018092d1ab9eb5a20600"),
    ("bulk unlock job", "026a31026d3106776176652d310101026f3101026f310101018082b4c283b5a206008082b4c283b5a206018282b4c283b5a2060a0a0701"),
    ("bulk unlock chunk", "02027531027532"),
    ("bulk unlock mark, unlocked", ""),
    ("bulk unlock mark, skipped", "01"),
    ("bulk unlock mark, failed", "02"),
    ("key schema", "53"),
    ("key meta", "4d000b64656661756c742d6f7267"),
    ("key user", "7500027531"),
    ("key event", "65000275310000000000000102"),
    ("key events of", "6500027531"),
    ("key username", "6e00026f310003616461"),
    ("key org", "6f00026f31"),
    ("key org name", "4e000461636d65"),
    ("key org domain", "64000e61636d652e6c6f63616c686f7374"),
    ("key token", "740004abababab"),
    ("key token id", "6b00027431"),
    ("key instance lockout policy", "5000076c6f636b6f7574"),
    ("key org lockout policy", "7000026f31"),
    ("key session", "7300027331"),
    ("key lockout state", "4c00027531"),
    ("key automatic unlock", "410008000644d41c26808000027531"),
    ("key bulk unlock job", "4a00026a31"),
    ("key bulk unlock chunk", "6200026a3100080000000000000002"),
    ("key bulk unlocked", "4200026a3100027531"),
];

/// Schema 4: schema 3's bytes, the keys of ListUsers' indexes and the user counts, and the
/// bulk unlock idempotency key (added later in schema 4: a job written without it is found by
/// its record, `bulk_unlock.rs`).
const V4_ADDED: &[(&str, &str)] = &[
    ("key bulk unlock idempotency", "490002753100026b31"),
    ("key list index", "785561646100ff0000000644d41c2680807531"),
    ("key user count", "6300026f3100020301"),
];

#[test]
fn the_disk_format_is_what_this_schema_version_says() {
    let golden: Vec<(&str, &str)> = match SCHEMA_VERSION {
        4 => V3.iter().chain(V4_ADDED).copied().collect(),
        v => panic!("schema version {v} has no golden bytes: record them in stored/golden.rs"),
    };
    let samples = samples();
    if std::env::var_os("LATCHKEY_PRINT_GOLDEN").is_some() {
        for (name, bytes) in &samples {
            println!("    ({name:?}, \"{}\"),", hex(bytes));
        }
    }
    assert_eq!(samples.len(), golden.len(), "a sample without golden bytes");
    for ((name, bytes), (golden_name, golden_hex)) in samples.iter().zip(&golden) {
        assert_eq!(name, golden_name);
        assert_eq!(
            hex(bytes),
            *golden_hex,
            "{name}: the disk format changed without a schema version bump"
        );
    }
}

/// Events as schemas 1 and 2 wrote them (no `by`) still read, with no caller.
#[test]
fn events_of_older_schemas_read_without_a_caller() {
    let old = [
        (
            "018082b4c283b5a20600026f3103616461",
            1,
            EventKind::HumanAdded {
                org_id: "o1".into(),
                username: "ada".into(),
            },
        ),
        ("038482b4c283b5a20602", 3, EventKind::Locked),
        (
            "099082b4c283b5a20608027431",
            9,
            EventKind::TokenRemoved {
                token_id: "t1".into(),
            },
        ),
    ];
    for (hex_bytes, sequence, kind) in old {
        let bytes: Vec<u8> = (0..hex_bytes.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex_bytes[i..i + 2], 16).unwrap())
            .collect();
        let event = Event::decode(&bytes).unwrap();
        assert_eq!(
            (event.sequence, event.kind, event.by.as_str()),
            (sequence, kind, "")
        );
    }
    let current = events();
    for (name, bytes) in current {
        let event = Event::decode(&bytes).unwrap();
        assert_eq!(event.by, "m1", "{name}");
        assert_eq!(event.encode(), bytes);
    }
    // Neither form with bytes left over: corrupt, not misread.
    let mut longer = events()[2].1.clone();
    longer.push(0);
    assert!(Event::decode(&longer).is_err());
}

#[test]
fn golden_records_decode_to_what_was_encoded() {
    for record in [human(), machine()] {
        assert_eq!(UserRecord::decode(&record.encode()).unwrap(), record);
    }
}
