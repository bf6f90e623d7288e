//! ListUsers' indexes and counts, kept in the same atomic write as the user's snapshot, so they
//! can never disagree with it.
//!
//! Every listed (non-deleted) user has one entry per column in `keys::list_index`: creation,
//! organization, state, type, and the lowercased username, given, family, nick and display name
//! and email (machines have "" for the human-only ones, as ListUsers sorts them). An entry's key
//! is the column's value, then the creation time and id: one value's entries are in creation
//! order, a column's entries in that column's sort order (ListUsers' tie-breaks included). The
//! counts (`keys::user_count`) are per organization and for the instance, by state and type —
//! store counters, so two users' commands never lose each other's additions.
//!
//! The user's actor keeps the [`Indexed`] values of its durable record and writes only what a
//! command changes: a lifecycle command rewrites the state's entry and moves two counts.
//! `user_list.rs` reads the indexes; `verify.rs` checks them against the records.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use latchkey_storage::{Store, WriteBatch};

use crate::error::{Error, ErrorId};
use crate::keys;
use crate::time::Micros;
use crate::types::UserState;
use crate::user::record::{Kind, UserRecord};

/// The indexed columns (a key's second byte).
pub mod column {
    pub const CREATED: u8 = b'C';
    pub const ORG: u8 = b'O';
    pub const STATE: u8 = b'S';
    pub const TYPE: u8 = b'T';
    pub const USERNAME: u8 = b'U';
    pub const FIRST_NAME: u8 = b'F';
    pub const LAST_NAME: u8 = b'L';
    pub const NICK_NAME: u8 = b'K';
    pub const DISPLAY_NAME: u8 = b'D';
    pub const EMAIL: u8 = b'E';
    /// The lowercased text columns, in the order of [`super::Indexed::text`].
    pub const TEXT: [u8; 6] = [
        USERNAME,
        FIRST_NAME,
        LAST_NAME,
        NICK_NAME,
        DISPLAY_NAME,
        EMAIL,
    ];
}

/// A state's byte in the indexes and counts, in ListUsers' sort order of states.
pub fn state_byte(state: UserState) -> u8 {
    match state {
        UserState::Active => 0,
        UserState::Inactive => 1,
        UserState::Deleted => 2,
        UserState::Locked => 3,
        UserState::Initial => 4,
    }
}

/// The states a list can show (deleted users are never listed).
pub const LISTED_STATES: [UserState; 4] = [
    UserState::Active,
    UserState::Inactive,
    UserState::Locked,
    UserState::Initial,
];

/// What the indexes hold of one listed user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    org: String,
    state: UserState,
    human: bool,
    /// The username as written, to notice a change without lowercasing it again.
    username: String,
    created: Micros,
    /// Lowercased: username, given, family, nick, display name, email.
    text: [String; 6],
}

impl Indexed {
    /// The index values of `record`; `None` for a deleted user (never listed).
    pub fn of(record: &UserRecord) -> Option<Indexed> {
        if record.state == UserState::Deleted {
            return None;
        }
        let lower = |s: Option<&str>| s.unwrap_or("").to_lowercase();
        let (human, [first, last, nick, display, email]) = match &*record.kind {
            Kind::Human(h) => (
                true,
                [
                    lower(Some(&h.profile.given_name)),
                    lower(Some(&h.profile.family_name)),
                    lower(h.profile.nick_name.as_deref()),
                    lower(h.profile.display_name.as_deref()),
                    lower(Some(&h.email.email)),
                ],
            ),
            Kind::Machine(_) => (false, Default::default()),
        };
        Some(Indexed {
            org: record.org_id.clone(),
            state: record.state,
            human,
            username: record.username.clone(),
            created: record.created,
            text: [
                record.username.to_lowercase(),
                first,
                last,
                nick,
                display,
                email,
            ],
        })
    }

    /// Each column with its value.
    fn columns(&self) -> [(u8, Cow<'_, [u8]>); 10] {
        let text = |i: usize| (column::TEXT[i], Cow::Borrowed(self.text[i].as_bytes()));
        [
            (column::CREATED, Cow::Borrowed(&[][..])),
            (column::ORG, Cow::Borrowed(self.org.as_bytes())),
            (column::STATE, Cow::Owned(vec![state_byte(self.state)])),
            (column::TYPE, Cow::Owned(vec![type_byte(self.human)])),
            text(0),
            text(1),
            text(2),
            text(3),
            text(4),
            text(5),
        ]
    }

    /// Every index entry of user `id`.
    pub fn entries(&self, id: &str) -> Vec<Vec<u8>> {
        self.columns()
            .iter()
            .map(|(column, value)| keys::list_index(*column, value, self.created, id))
            .collect()
    }

    /// The counts this user is part of: its organization's and the instance's.
    pub fn counts(&self) -> [Vec<u8>; 2] {
        let state = state_byte(self.state);
        [
            keys::user_count(&self.org, state, self.human),
            keys::user_count("", state, self.human),
        ]
    }
}

/// The prefix of the index entries of every user in `state`, in creation order.
pub fn state_range(state: UserState) -> Vec<u8> {
    keys::list_index_value(column::STATE, &[state_byte(state)], true)
}

/// The user id at the end of an index entry; an error for a key that is none.
pub fn entry_user(key: &[u8]) -> Result<&str, Error> {
    keys::list_index_user(key).ok_or_else(|| corrupt_entry(key))
}

pub fn corrupt_entry(key: &[u8]) -> Error {
    Error::with(ErrorId::Internal, format!("corrupt list index key {key:?}"))
}

/// A type's byte: humans sort before machines.
pub fn type_byte(human: bool) -> u8 {
    u8::from(!human)
}

/// Adds to `batch` what turns the indexes of `old` into those of `new`: entries deleted and
/// written where a column's value changed, counts moved.
pub fn write_changes(
    old: Option<&Indexed>,
    new: Option<&Indexed>,
    id: &str,
    batch: &mut WriteBatch,
) {
    match (old, new) {
        (None, None) => {}
        (Some(old), None) => {
            for key in old.entries(id) {
                batch.delete(key);
            }
            for key in old.counts() {
                batch.add(key, -1);
            }
        }
        (None, Some(new)) => {
            for key in new.entries(id) {
                batch.put(key, Vec::new());
            }
            for key in new.counts() {
                batch.add(key, 1);
            }
        }
        (Some(old), Some(new)) => {
            for ((column, before), (_, after)) in old.columns().iter().zip(new.columns().iter()) {
                // (a user's creation time never changes)
                if before != after {
                    batch.delete(keys::list_index(*column, before, old.created, id));
                    batch.put(
                        keys::list_index(*column, after, new.created, id),
                        Vec::new(),
                    );
                }
            }
            let (before, after) = (old.counts(), new.counts());
            if before != after {
                for key in before {
                    batch.add(key, -1);
                }
                for key in after {
                    batch.add(key, 1);
                }
            }
        }
    }
}

/// Brings `indexed` (what the indexes hold of the user) to `record`, adding the changes to
/// `batch`. A command that left the kind, organization and username alone — every lifecycle
/// command — can change only the state, so only that is compared and rewritten.
pub fn refresh(indexed: &mut Option<Indexed>, record: &UserRecord, batch: &mut WriteBatch) {
    if let Some(current) = indexed.as_mut() {
        let same_fields = record.kind.is_kept()
            && current.org == record.org_id
            && current.username == record.username;
        if same_fields && record.state != UserState::Deleted {
            if current.state != record.state {
                // The hot path of every lock and unlock: the state's entry and the counts only.
                let state_entry = |state| {
                    keys::list_index(
                        column::STATE,
                        &[state_byte(state)],
                        current.created,
                        &record.id,
                    )
                };
                batch.delete(state_entry(current.state));
                batch.put(state_entry(record.state), Vec::new());
                // The counts' keys differ only in their state byte: built once, copied, and
                // the copies pointed at the new state (a key's build is ≈ 3 × its copy).
                let before = current.counts();
                let mut after = before.clone();
                current.state = record.state;
                for key in &mut after {
                    keys::set_count_state(key, state_byte(record.state));
                }
                for key in before {
                    batch.add(key, -1);
                }
                for key in after {
                    batch.add(key, 1);
                }
            }
            return;
        }
    }
    let next = Indexed::of(record);
    write_changes(indexed.as_ref(), next.as_ref(), &record.id, batch);
    *indexed = next;
}

/// The meta entry saying every user is in the indexes and counts.
const BUILT: &str = "list-indexes";

/// Whether the store's indexes and counts are built (a store of an older schema has none until
/// its first open by a server). Blocking.
pub(crate) fn is_built(store: &Store) -> Result<bool, latchkey_storage::StoreError> {
    Ok(store.get(&keys::meta(BUILT))?.is_some())
}

/// Builds the indexes and counts of a store written before they existed (an older schema), once:
/// every user's entries in batches, then the counts with the mark that they are built, in one
/// batch — a build cut short leaves no count behind and starts again at the next open.
///
/// A journaled store (cluster mode) is never built here: its view is the journal's records
/// applied in order, and every record since the first carries its index entries and counts.
pub(crate) async fn build_if_missing(store: &Arc<Store>) -> Result<(), Error> {
    if store.is_journaled() {
        return Ok(());
    }
    let reader = store.clone();
    let built = tokio::task::spawn_blocking(move || is_built(&reader))
        .await
        .map_err(|_| Error::new(ErrorId::Internal))??;
    if built {
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<WriteBatch>(4);
    let reader = store.clone();
    let scan = tokio::task::spawn_blocking(move || -> Result<HashMap<Vec<u8>, i64>, Error> {
        let mut counts = HashMap::new();
        let mut batch = WriteBatch::default();
        for item in reader.scan_prefix(keys::USERS) {
            let (_, bytes) = item?;
            let record = UserRecord::decode(&bytes)?;
            let Some(indexed) = Indexed::of(&record) else {
                continue;
            };
            for key in indexed.entries(&record.id) {
                batch.put(key, Vec::new());
            }
            for key in indexed.counts() {
                *counts.entry(key).or_insert(0) += 1;
            }
            if batch.ops().len() >= 10_000 && tx.blocking_send(std::mem::take(&mut batch)).is_err()
            {
                return Ok(counts); // the writing side failed; its error is the one reported
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok(counts)
    });
    let scope = keys::meta(BUILT);
    while let Some(batch) = rx.recv().await {
        store.submit(&scope, batch).wait().await?;
    }
    let counts = scan.await.map_err(|_| Error::new(ErrorId::Internal))??;
    let mut last = WriteBatch::default();
    for (key, count) in counts {
        let delta = count - store.counter(&key);
        last.add(key, delta);
    }
    last.put(keys::meta(BUILT), Vec::new());
    store.submit(&scope, last).wait().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::record::{HumanRecord, MachineRecord};

    fn human(state: UserState) -> UserRecord {
        let kind = Kind::Human(HumanRecord {
            profile: crate::stored::Profile {
                given_name: "Ada".into(),
                family_name: "Lovelace".into(),
                nick_name: None,
                display_name: Some("Ada L".into()),
                preferred_language: None,
                gender: Default::default(),
            },
            email: crate::stored::Email {
                email: "Ada@Example.com".into(),
                is_verified: false,
            },
            phone: None,
            password: None,
        });
        UserRecord::new("u1".into(), "o1".into(), state, "Ada", kind, 42)
    }

    fn puts(batch: &WriteBatch) -> Vec<Vec<u8>> {
        let mut keys: Vec<_> = batch
            .ops()
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_new_user_gets_every_column_and_both_counts() {
        let record = human(UserState::Active);
        let mut batch = WriteBatch::default();
        write_changes(None, Indexed::of(&record).as_ref(), "u1", &mut batch);
        assert_eq!(puts(&batch).len(), 10);
        assert!(puts(&batch).contains(&keys::list_index(
            column::EMAIL,
            b"ada@example.com",
            42,
            "u1"
        )));
        assert_eq!(
            batch.adds(),
            [
                (keys::user_count("o1", 0, true), 1),
                (keys::user_count("", 0, true), 1)
            ]
        );
        let machine = UserRecord::new(
            "m1".into(),
            "o1".into(),
            UserState::Active,
            "bot",
            Kind::Machine(MachineRecord {
                name: "Bot".into(),
                description: String::new(),
                tokens: Vec::new(),
            }),
            7,
        );
        let entries = Indexed::of(&machine).unwrap().entries("m1");
        assert!(entries.contains(&keys::list_index(column::FIRST_NAME, b"", 7, "m1")));
        assert!(entries.contains(&keys::list_index(column::TYPE, &[1], 7, "m1")));
    }

    #[test]
    fn a_state_change_rewrites_the_state_entry_and_moves_the_counts() {
        let mut record = human(UserState::Active);
        let _ = record.kind.bytes(); // as after a commit: the kind's encoding is kept
        let mut indexed = Indexed::of(&record);
        record.state = UserState::Locked;
        let mut batch = WriteBatch::default();
        refresh(&mut indexed, &record, &mut batch);
        assert_eq!(
            batch.ops(),
            [
                (keys::list_index(column::STATE, &[0], 42, "u1"), None),
                (
                    keys::list_index(column::STATE, &[3], 42, "u1"),
                    Some(Vec::new())
                ),
            ]
        );
        assert_eq!(batch.adds().len(), 4);
        assert_eq!(indexed, Indexed::of(&record));
        // deletion removes every entry and the counts
        record.state = UserState::Deleted;
        let mut batch = WriteBatch::default();
        refresh(&mut indexed, &record, &mut batch);
        assert_eq!(batch.ops().iter().filter(|(_, v)| v.is_none()).count(), 10);
        assert!(batch.adds().iter().all(|(_, delta)| *delta == -1));
        assert_eq!(indexed, None);
    }

    #[test]
    fn a_changed_profile_rewrites_only_its_columns() {
        let mut record = human(UserState::Active);
        let mut indexed = Indexed::of(&record);
        if let Kind::Human(h) = &mut *record.kind {
            h.profile.given_name = "Augusta".into();
        }
        let mut batch = WriteBatch::default();
        refresh(&mut indexed, &record, &mut batch);
        assert_eq!(
            puts(&batch),
            [keys::list_index(column::FIRST_NAME, b"augusta", 42, "u1")]
        );
        assert!(batch.adds().is_empty());
    }
}
