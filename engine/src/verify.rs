//! `latchkey verify`: reads a stopped data directory and checks that what it holds agrees with
//! itself — every user's snapshot against its event log, and the indexes against the records, in
//! both directions. It writes nothing. The problems it reports name the user (or the index key)
//! they concern, so an operator knows what to look at before restoring from a backup.
//!
//! What is checked:
//! - a snapshot decodes; its events decode and are exactly 1..=the snapshot's sequence, the
//!   first a creation in the snapshot's organization; the lifecycle events replay to its state;
//! - a live user has its username index entry, its organization, and (machine users) each
//!   token's two index entries; a lockout record with a lock belongs to a LOCKED user;
//! - every username index entry, token record and lockout record belongs to a user that has it;
//!   every event belongs to a user with a snapshot;
//! - ListUsers' indexes (once built): every listed user has exactly its entries, every entry
//!   belongs to a listed user that has it, and the user counts are the counts of the records.

use std::collections::HashMap;

use latchkey_storage::Store;

use crate::error::OpenError;
use crate::keys;
use crate::tokens::TokenRecord;
use crate::types::UserState;
use crate::user::event::{Event, EventKind};
use crate::user::index::{self, Indexed};
use crate::user::lockout::LockoutState;
use crate::user::record::{Kind, UserRecord};
use crate::{store_config, Config};

/// Problems kept in a report (all are counted).
const KEPT_PROBLEMS: usize = 1000;

/// What `verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub users: u64,
    pub events: u64,
    pub index_entries: u64,
    /// Every problem found (only the first [`KEPT_PROBLEMS`] are in `problems`).
    pub problem_count: u64,
    pub problems: Vec<Problem>,
}

/// One disagreement: what it concerns (a user id, or an index key) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub subject: String,
    pub what: String,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, subject: impl Into<String>, what: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < KEPT_PROBLEMS {
            self.problems.push(Problem {
                subject: subject.into(),
                what: what.into(),
            });
        }
    }
}

/// Opens the store in `config.data_dir` (it must not be in use) and checks it. Blocking.
pub fn verify(config: &Config) -> Result<VerifyReport, OpenError> {
    let store = Store::open(&store_config(config))?;
    let report = check(&store);
    store.close()?;
    report
}

fn check(store: &Store) -> Result<VerifyReport, OpenError> {
    let mut report = VerifyReport::default();
    for entry in store.scan_prefix(keys::USERS) {
        let (key, bytes) = entry?;
        report.users += 1;
        let id = key_name(&key);
        match UserRecord::decode(&bytes) {
            Ok(record) => check_user(store, &record, &mut report)?,
            Err(e) => report.problem(id, format!("snapshot does not decode: {e}")),
        }
    }
    check_usernames(store, &mut report)?;
    check_tokens(store, &mut report)?;
    check_lockouts(store, &mut report)?;
    check_orphan_events(store, &mut report)?;
    check_list_indexes(store, &mut report)?;
    Ok(report)
}

/// The id in a key of one part (`u`, `L`), lossily, for reports.
fn key_name(key: &[u8]) -> String {
    match keys::split_parts(key).as_deref() {
        Some([one]) => String::from_utf8_lossy(one).into_owned(),
        _ => format!("{key:?}"),
    }
}

fn check_user(
    store: &Store,
    record: &UserRecord,
    report: &mut VerifyReport,
) -> Result<(), OpenError> {
    let id = record.id.as_str();
    let mut expected = 1u64;
    let mut replayed: Option<UserState> = None;
    let mut created_in: Option<String> = None;
    for entry in store.scan_prefix(&keys::events_of(id)) {
        let (_, bytes) = entry?;
        report.events += 1;
        let event = match Event::decode(&bytes) {
            Ok(event) => event,
            Err(e) => {
                report.problem(id, format!("event {expected} does not decode: {e}"));
                expected += 1;
                continue;
            }
        };
        if event.sequence != expected {
            report.problem(
                id,
                format!("event log has {} where {expected} belongs", event.sequence),
            );
        }
        expected = event.sequence + 1;
        match &event.kind {
            EventKind::HumanAdded { org_id, .. } | EventKind::MachineAdded { org_id, .. } => {
                created_in = Some(org_id.clone())
            }
            kind => replayed = state_after(kind).or(replayed),
        }
    }
    let last = expected - 1;
    if last != record.sequence {
        report.problem(
            id,
            format!(
                "snapshot at sequence {} but the event log ends at {last}",
                record.sequence
            ),
        );
    }
    match created_in {
        None => report.problem(id, "no creation event"),
        Some(org) if org != record.org_id => report.problem(
            id,
            format!(
                "created in organization {org}, snapshot says {}",
                record.org_id
            ),
        ),
        Some(_) => {}
    }
    let consistent = match replayed {
        // Only the creation: the user starts ACTIVE or INITIAL.
        None => matches!(record.state, UserState::Active | UserState::Initial),
        Some(state) => state == record.state,
    };
    if !consistent {
        report.problem(
            id,
            format!(
                "events replay to {:?}, snapshot says {:?}",
                replayed.unwrap_or(UserState::Active),
                record.state
            ),
        );
    }
    if record.state == UserState::Deleted {
        return Ok(());
    }
    match store.get(&record.username_key())? {
        Some(owner) if owner == id.as_bytes() => {}
        Some(owner) => report.problem(
            id,
            format!(
                "username {:?} is indexed to {}",
                record.username,
                String::from_utf8_lossy(&owner)
            ),
        ),
        None => report.problem(
            id,
            format!("username {:?} is missing from the index", record.username),
        ),
    }
    if store.get(&keys::org(&record.org_id))?.is_none() {
        report.problem(id, format!("organization {} does not exist", record.org_id));
    }
    if let Kind::Machine(machine) = &*record.kind {
        for token in &machine.tokens {
            let owner = store
                .get(&keys::token(&token.hash))?
                .and_then(|bytes| postcard::from_bytes::<TokenRecord>(&bytes).ok());
            if !owner.is_some_and(|t| t.user_id == id && t.token_id == token.id) {
                report.problem(id, format!("token {} has no token record", token.id));
            }
            if store.get(&keys::token_id(&token.id))?.as_deref() != Some(&token.hash[..]) {
                report.problem(
                    id,
                    format!("token {} is missing from the id index", token.id),
                );
            }
        }
    }
    let lockout = store
        .get(&keys::lockout(id))?
        .map(|bytes| LockoutState::decode(Some(&bytes)));
    match lockout {
        Some(Err(e)) => report.problem(id, format!("lockout record: {e}")),
        Some(Ok(state)) if state.lock.is_some() && record.state != UserState::Locked => report
            .problem(
                id,
                format!("a lock is recorded but the user is {:?}", record.state),
            ),
        _ => {}
    }
    Ok(())
}

/// The state a lifecycle event leaves the user in; `None` for events that keep it.
fn state_after(kind: &EventKind) -> Option<UserState> {
    match kind {
        EventKind::Locked | EventKind::LockedAfterFailures { .. } => Some(UserState::Locked),
        EventKind::Unlocked
        | EventKind::UnlockedAutomatically
        | EventKind::UnlockedInBulk { .. }
        | EventKind::Reactivated => Some(UserState::Active),
        EventKind::Deactivated => Some(UserState::Inactive),
        EventKind::Removed => Some(UserState::Deleted),
        EventKind::HumanAdded { .. }
        | EventKind::MachineAdded { .. }
        | EventKind::TokenAdded { .. }
        | EventKind::TokenRemoved { .. }
        | EventKind::PasswordCheckFailed { .. }
        | EventKind::PasswordCheckSucceeded
        | EventKind::PasswordChanged => None,
    }
}

fn user(store: &Store, id: &[u8]) -> Result<Option<UserRecord>, OpenError> {
    let id = String::from_utf8_lossy(id);
    Ok(store
        .get(&keys::user(&id))?
        .and_then(|bytes| UserRecord::decode(&bytes).ok()))
}

/// Every username entry points at a live user whose username it is.
fn check_usernames(store: &Store, report: &mut VerifyReport) -> Result<(), OpenError> {
    for entry in store.scan_prefix(keys::USERNAMES) {
        let (key, id) = entry?;
        report.index_entries += 1;
        let subject = match keys::split_parts(&key).as_deref() {
            Some([org, name]) => format!(
                "username index {}/{}",
                String::from_utf8_lossy(org),
                String::from_utf8_lossy(name)
            ),
            _ => format!("username index {key:?}"),
        };
        match user(store, &id)? {
            Some(record) if record.state != UserState::Deleted && record.username_key() == key => {}
            Some(_) => report.problem(
                subject,
                format!(
                    "points at {}, which is deleted or has another username",
                    String::from_utf8_lossy(&id)
                ),
            ),
            None => report.problem(
                subject,
                format!(
                    "points at {}, which does not exist",
                    String::from_utf8_lossy(&id)
                ),
            ),
        }
    }
    Ok(())
}

/// Every token record belongs to a live machine user that holds the token.
fn check_tokens(store: &Store, report: &mut VerifyReport) -> Result<(), OpenError> {
    for entry in store.scan_prefix(keys::TOKENS) {
        let (key, bytes) = entry?;
        report.index_entries += 1;
        let Ok(token) = postcard::from_bytes::<TokenRecord>(&bytes) else {
            report.problem(format!("token record {key:?}"), "does not decode");
            continue;
        };
        let subject = format!("token {}", token.token_id);
        let held = user(store, token.user_id.as_bytes())?.is_some_and(|record| {
            record.state != UserState::Deleted
                && match &*record.kind {
                    Kind::Machine(m) => m
                        .tokens
                        .iter()
                        .any(|t| t.id == token.token_id && keys::token(&t.hash) == key),
                    Kind::Human(_) => false,
                }
        });
        if !held {
            report.problem(
                subject,
                format!("user {} does not hold this token", token.user_id),
            );
        }
    }
    Ok(())
}

/// Every lockout record belongs to an existing user.
fn check_lockouts(store: &Store, report: &mut VerifyReport) -> Result<(), OpenError> {
    for entry in store.scan_prefix(keys::LOCKOUTS) {
        let (key, _) = entry?;
        report.index_entries += 1;
        let id = key_name(&key);
        if user(store, id.as_bytes())?.is_none() {
            report.problem(id, "a lockout record for a user that does not exist");
        }
    }
    Ok(())
}

/// Every event belongs to a user with a snapshot (the users' own logs were read above).
fn check_orphan_events(store: &Store, report: &mut VerifyReport) -> Result<(), OpenError> {
    let mut last_owner: Option<Vec<u8>> = None;
    for entry in store.scan_prefix(keys::EVENTS) {
        let (key, _) = entry?;
        let owner = &key[..key.len().saturating_sub(8)];
        if last_owner.as_deref() == Some(owner) {
            continue;
        }
        last_owner = Some(owner.to_vec());
        let id = key_name(owner);
        if store.get(&keys::user(&id))?.is_none() {
            report.problem(id, "events of a user without a snapshot");
        }
    }
    Ok(())
}

/// ListUsers' indexes and counts against the records, both ways. A store whose indexes are
/// not built yet (written by an older schema; the next server start builds them) has none to
/// check.
fn check_list_indexes(store: &Store, report: &mut VerifyReport) -> Result<(), OpenError> {
    if !index::is_built(store)? {
        return Ok(());
    }
    let problems_before = report.problem_count;
    let mut counts: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut expected = 0u64;
    for entry in store.scan_prefix(keys::USERS) {
        let (_, bytes) = entry?;
        let Ok(record) = UserRecord::decode(&bytes) else {
            continue; // reported with the snapshots
        };
        let Some(indexed) = Indexed::of(&record) else {
            continue;
        };
        for key in indexed.entries(&record.id) {
            expected += 1;
            if store.get(&key)?.is_none() {
                report.problem(&record.id, format!("list index entry {key:?} missing"));
            }
        }
        for key in indexed.counts() {
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    let mut found = 0u64;
    for entry in store.scan_prefix(keys::LIST_INDEXES) {
        entry?;
        found += 1;
    }
    report.index_entries += found;
    // Every expected entry is there and there are no more of them: the index is exactly the
    // records' (expected entries are distinct). Otherwise each entry is checked against its
    // user, to name the ones that belong to no one — a user's record read once per entry.
    if found != expected || report.problem_count > problems_before {
        for entry in store.scan_prefix(keys::LIST_INDEXES) {
            let (key, _) = entry?;
            let Some(id) = keys::list_index_user(&key) else {
                report.problem(format!("list index {key:?}"), "not a list index key");
                continue;
            };
            let belongs = user(store, id.as_bytes())?
                .and_then(|record| Indexed::of(&record).map(|i| i.entries(&record.id)))
                .is_some_and(|entries| entries.contains(&key));
            if !belongs {
                report.problem(
                    format!("list index {key:?}"),
                    format!("user {id} is not listed with this value"),
                );
            }
        }
    }
    let mut stored: HashMap<Vec<u8>, i64> = store.counters().into_iter().collect();
    stored.retain(|_, count| *count != 0);
    for (key, count) in &counts {
        let found = stored.remove(key).unwrap_or(0);
        if found != *count {
            report.problem(
                format!("user count {key:?}"),
                format!("holds {found}, the records count {count}"),
            );
        }
    }
    for (key, found) in stored {
        report.problem(
            format!("user count {key:?}"),
            format!("holds {found}, the records count 0"),
        );
    }
    Ok(())
}
