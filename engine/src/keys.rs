//! The key layout of the store's single keyspace: the one place that knows how the engine's
//! entities are laid out as keys. One keyspace means every command's writes (snapshot, event,
//! indexes) land in one atomic batch. Every entity lives under a one-byte tag so prefix scans never
//! cross entity kinds; variable-length ids are length-prefixed so that the events of user `12`
//! never show up in a scan of user `1`.
//!
//! The store knows only what [`layout`] tells it: where the schema version is kept, and that
//! event keys are append-only runs (`latchkey_storage::Runs`) whose checkpointed chunks go under
//! `E`. Changing anything here changes the disk format: bump [`crate::stored::SCHEMA_VERSION`]
//! (the golden tests in `stored.rs` hold the keys too).
//!
//! | tag | key | value |
//! |---|---|---|
//! | `S` | schema | u32 big-endian |
//! | `M` | meta name | engine-defined (bootstrap marker, ...) |
//! | `u` | user id | user snapshot |
//! | `e` | user id, sequence (u64 BE) | event |
//! | `E` | user id, first sequence (u64 BE) | event chunk: consecutive events of one user, written by the store's checkpoints; scans of `e` prefixes see them as events |
//! | `E` alone | — | the store's record of its last checkpoint (`latchkey_storage`, `log/checkpointed.rs`); never seen by scans |
//! | `n` | org id, lowercased username | user id |
//! | `o` | org id | organization |
//! | `N` | lowercased org name | org id |
//! | `d` | org domain | org id |
//! | `t` | token hash | token record |
//! | `k` | token id | token hash |
//! | `P` | `lockout` | the instance's lockout policy |
//! | `p` | org id | an organization's own lockout policy |
//! | `s` | session id | session |
//! | `L` | user id | a user's lockout state (when and why locked, until when), while it has one |
//! | `A` | unlock time (i64 BE, µs), user id | a scheduled automatic unlock |
//! | `J` | job id | a bulk unlock job (filter, progress) |
//! | `b` | job id, chunk number (u64 BE) | a chunk of the job's user ids, listed when it started |
//! | `B` | job id, user id | the job unlocked this user (written with the unlock) |
//! | `I` | caller's user id, idempotency key | the bulk unlock job started under that key (written with the job; claimed across a cluster first) |
//! | `x` | column, value (order-preserving, see [`list_index`]), creation time (u64 BE), user id | empty: ListUsers' indexes (`user/index.rs`), one entry per listed user and column |
//! | `c` | scope (org id, or empty for the instance), state, type | a maintained count of users (i64 BE; the store's counters) |
//! | `Z` | partition (u32 BE) | cluster mode only: the stream sequence of the partition the node's view has applied (`latchkey-cluster`, `journal.rs`) |

use latchkey_storage::{Layout, Runs};

pub const SCHEMA: &[u8] = b"S";

fn tagged(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tagged_with_room(tag, parts, 0)
}

/// `tagged`, with room for `extra` more bytes (no reallocation when the caller appends them).
fn tagged_with_room(tag: u8, parts: &[&[u8]], extra: usize) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len() + 2).sum();
    let mut key = Vec::with_capacity(1 + len + extra);
    key.push(tag);
    for part in parts {
        // ids are at most 200 chars (800 bytes), so u16 always fits
        key.extend_from_slice(&(part.len() as u16).to_be_bytes());
        key.extend_from_slice(part);
    }
    key
}

pub fn meta(name: &str) -> Vec<u8> {
    tagged(b'M', &[name.as_bytes()])
}
pub fn user(id: &str) -> Vec<u8> {
    tagged(b'u', &[id.as_bytes()])
}
/// The user id of a [`user`] key (also a user's scope); `None` for any other key.
pub fn user_of(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(USERS)?;
    let (len, id) = rest.split_first_chunk::<2>()?;
    (id.len() == usize::from(u16::from_be_bytes(*len)))
        .then(|| std::str::from_utf8(id).ok())
        .flatten()
}
/// Prefix of every user snapshot.
pub const USERS: &[u8] = b"u";
/// Tag of event keys.
pub const EVENT_TAG: u8 = b'e';
/// Tag under which the store keeps checkpointed chunks of events (no other key uses it).
pub const EVENT_CHUNK_TAG: u8 = b'E';

/// Events are the store's append-only runs: tag, length-prefixed user id, sequence.
pub const EVENT_RUNS: Runs = Runs {
    tag: EVENT_TAG,
    chunk_tag: EVENT_CHUNK_TAG,
};

/// What the store must know of this layout.
pub fn layout() -> Layout {
    Layout {
        schema_key: SCHEMA.to_vec(),
        runs: EVENT_RUNS,
        ordered_tag: Some(LIST_INDEXES[0]),
        counter_tag: COUNTER_TAG,
    }
}

/// Tag of ListUsers' index entries.
pub const LIST_INDEXES: &[u8] = b"x";
/// Tag of the maintained user counts.
pub const COUNTER_TAG: u8 = b'c';

/// A ListUsers index entry: `x`, the column's byte, the value, the creation time, the user id.
/// The value is written so that byte order is the value's order and a value's prefix is a
/// key prefix: every 0 byte becomes 0 255, and 0 0 ends it. Within one value, entries sort by
/// creation time, then id — the tie-breaks of ListUsers' sort — so a walk of one value's range
/// is in creation order and a walk of a column is in that column's sort order.
pub fn list_index(column: u8, value: &[u8], created: i64, id: &str) -> Vec<u8> {
    let mut key = list_index_value(column, value, true);
    key.extend_from_slice(&(created.max(0) as u64).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// The prefix of every [`list_index`] entry of `column` whose value is `value` (`whole`) or
/// starts with it.
pub fn list_index_value(column: u8, value: &[u8], whole: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + value.len() + 2 + 8 + 20);
    key.push(LIST_INDEXES[0]);
    key.push(column);
    for byte in value {
        key.push(*byte);
        if *byte == 0 {
            key.push(255);
        }
    }
    if whole {
        key.extend_from_slice(&[0, 0]);
    }
    key
}

/// The user id at the end of a [`list_index`] entry.
pub fn list_index_user(key: &[u8]) -> Option<&str> {
    let tail = list_index_tail(key)?;
    std::str::from_utf8(key.get(tail + 8..)?).ok()
}

/// Where a [`list_index`] entry's creation time (then id) starts: after the value's end.
pub fn list_index_tail(key: &[u8]) -> Option<usize> {
    let mut at = 2;
    loop {
        match (key.get(at)?, key.get(at + 1)?) {
            (0, 0) => break,
            (0, _) => at += 2,
            _ => at += 1,
        }
    }
    (key.len() >= at + 2 + 8).then_some(at + 2)
}

/// A maintained count of users: in `scope` (an org id, or "" for the whole instance), of one
/// state and type.
pub fn user_count(scope: &str, state: u8, human: bool) -> Vec<u8> {
    tagged(COUNTER_TAG, &[scope.as_bytes(), &[state, u8::from(human)]])
}

/// A [`user_count`] key turned into the same count's key for another state.
pub fn set_count_state(key: &mut [u8], state: u8) {
    // The key ends with its last part: state, then type.
    if let Some(at) = key.len().checked_sub(2) {
        key[at] = state;
    }
}

/// Prefix of one user's event log.
pub fn events_of(id: &str) -> Vec<u8> {
    tagged(b'e', &[id.as_bytes()])
}
pub fn event(id: &str, sequence: u64) -> Vec<u8> {
    let mut key = tagged_with_room(EVENT_TAG, &[id.as_bytes()], 8);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}
pub fn username(org: &str, lowercased_username: &str) -> Vec<u8> {
    tagged(b'n', &[org.as_bytes(), lowercased_username.as_bytes()])
}
pub fn org(id: &str) -> Vec<u8> {
    tagged(b'o', &[id.as_bytes()])
}
/// Every organization.
pub const ORGS: &[u8] = b"o";
pub fn org_name(lowercased_name: &str) -> Vec<u8> {
    tagged(b'N', &[lowercased_name.as_bytes()])
}
pub fn org_domain(domain: &str) -> Vec<u8> {
    tagged(b'd', &[domain.as_bytes()])
}
pub fn token(hash: &[u8]) -> Vec<u8> {
    tagged(b't', &[hash])
}
/// The instance's lockout policy.
pub fn instance_lockout_policy() -> Vec<u8> {
    tagged(b'P', &[b"lockout"])
}
/// An organization's own lockout policy.
pub fn org_lockout_policy(org: &str) -> Vec<u8> {
    tagged(b'p', &[org.as_bytes()])
}
pub const ORG_LOCKOUT_POLICIES: &[u8] = b"p";
pub fn session(id: &str) -> Vec<u8> {
    tagged(b's', &[id.as_bytes()])
}
pub const SESSIONS: &[u8] = b"s";
/// A user's lockout state.
pub fn lockout(user: &str) -> Vec<u8> {
    tagged(b'L', &[user.as_bytes()])
}
/// Scheduled automatic unlocks, in time order: the unlock time is the first part.
pub fn auto_unlock(at: i64, user: &str) -> Vec<u8> {
    // Unlock times are after the epoch, so their big-endian bytes sort as the times do.
    tagged(b'A', &[&at.max(0).to_be_bytes(), user.as_bytes()])
}
pub const AUTO_UNLOCKS: &[u8] = b"A";
/// The user and unlock time of an [`auto_unlock`] key.
pub fn split_auto_unlock(key: &[u8]) -> Option<(i64, String)> {
    let rest = key.strip_prefix(AUTO_UNLOCKS)?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let (at, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
    let at = i64::from_be_bytes(at.try_into().ok()?);
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let user = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
    Some((at, String::from_utf8(user.to_vec()).ok()?))
}
/// A bulk unlock job.
pub fn bulk_job(id: &str) -> Vec<u8> {
    tagged(b'J', &[id.as_bytes()])
}
pub const BULK_JOBS: &[u8] = b"J";
/// Chunk `n` of a bulk unlock job's user ids.
pub fn bulk_chunk(job: &str, n: u64) -> Vec<u8> {
    tagged(b'b', &[job.as_bytes(), &n.to_be_bytes()])
}
/// The mark that a bulk unlock job unlocked a user (in cluster mode: handled it; the value
/// says how, `bulk_unlock::Mark`).
pub fn bulk_unlocked(job: &str, user: &str) -> Vec<u8> {
    tagged(b'B', &[job.as_bytes(), user.as_bytes()])
}
/// The job `by` started under idempotency key `key`.
pub fn bulk_idempotency(by: &str, key: &str) -> Vec<u8> {
    tagged(b'I', &[by.as_bytes(), key.as_bytes()])
}
/// The prefix of every [`bulk_unlocked`] mark of `job`.
pub fn bulk_marks(job: &str) -> Vec<u8> {
    tagged(b'B', &[job.as_bytes()])
}
pub fn token_id(id: &str) -> Vec<u8> {
    tagged(b'k', &[id.as_bytes()])
}
/// Prefixes of the indexes `verify.rs` checks against the records.
pub const USERNAMES: &[u8] = b"n";
pub const TOKENS: &[u8] = b"t";
pub const LOCKOUTS: &[u8] = b"L";
/// Every event (of every user).
pub const EVENTS: &[u8] = &[EVENT_TAG];

/// The first length-prefixed part of a key made by `tagged` (its entity's id), whatever
/// follows it (an event key's sequence is not a part).
pub fn first_part(key: &[u8]) -> Option<&[u8]> {
    let (len, tail) = key.get(1..)?.split_first_chunk::<2>()?;
    tail.get(..usize::from(u16::from_be_bytes(*len)))
}

/// The length-prefixed parts of a key made by `tagged` (its tag dropped); `None` if it was not.
pub fn split_parts(key: &[u8]) -> Option<Vec<&[u8]>> {
    let mut rest = key.get(1..)?;
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let (part, tail) = tail.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
        parts.push(part);
        rest = tail;
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_key_names_its_user_and_no_other_key_does() {
        assert_eq!(user_of(&user("u-1")), Some("u-1"));
        assert_eq!(user_of(&token_id("u-1")), None);
        assert_eq!(user_of(&event("u-1", 3)), None);
        assert_eq!(user_of(b"u"), None);
    }

    #[test]
    fn a_count_key_points_at_another_state_in_place() {
        for scope in ["", "o1", "a-much-longer-organization-id"] {
            for (from, to) in [(0, 3), (3, 0), (1, 4)] {
                for human in [true, false] {
                    let mut key = user_count(scope, from, human);
                    set_count_state(&mut key, to);
                    assert_eq!(key, user_count(scope, to, human));
                }
            }
        }
    }

    #[test]
    fn keys_split_back_into_their_parts() {
        let key = username("org1", "alice");
        assert_eq!(split_parts(&key), Some(vec![&b"org1"[..], b"alice"]));
        assert_eq!(split_parts(&lockout("u1")), Some(vec![&b"u1"[..]]));
        // an event key: the id, then the sequence's 8 bytes read as a part's length fail
        assert!(split_parts(&event("u1", 7)).is_none());
        assert!(split_parts(b"n\x00\x09short").is_none());
    }

    #[test]
    fn list_index_entries_sort_by_value_then_creation_and_split_back() {
        let key = |value: &str, created, id| list_index(b'U', value.as_bytes(), created, id);
        let ordered = [
            key("", 9, "z"),
            key("a", 5, "y"),
            key("a", 7, "a"),
            key("a\0", 1, "a"),
            key("ab", 1, "a"),
            key("b", 0, "a"),
        ];
        assert!(ordered.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(list_index_user(&key("a\0b", 3, "user-7")), Some("user-7"));
        // a value's prefix is a prefix of its keys; the whole value only of its own
        assert!(key("abc", 1, "u").starts_with(&list_index_value(b'U', b"ab", false)));
        assert!(!key("abc", 1, "u").starts_with(&list_index_value(b'U', b"ab", true)));
        assert!(key("ab", 1, "u").starts_with(&list_index_value(b'U', b"ab", true)));
        assert!(!key("ab", 1, "u").starts_with(&list_index_value(b'F', b"ab", false)));
    }

    #[test]
    fn event_prefixes_do_not_cross_users() {
        let of_1 = events_of("1");
        assert!(event("1", 7).starts_with(&of_1));
        assert!(!event("12", 7).starts_with(&of_1));
    }

    #[test]
    fn automatic_unlocks_sort_by_time_and_split_back() {
        let early = auto_unlock(1_000, "zz");
        let late = auto_unlock(1_000_000, "aa");
        assert!(early < late);
        assert!(early.starts_with(AUTO_UNLOCKS));
        assert_eq!(split_auto_unlock(&late), Some((1_000_000, "aa".to_owned())));
        assert_eq!(split_auto_unlock(&user("aa")), None);
    }

    #[test]
    fn event_keys_are_the_stores_run_keys() {
        let owner = &events_of("12")[1..];
        assert_eq!(event("12", 7), EVENT_RUNS.key(owner, 7));
    }

    #[test]
    fn events_sort_by_sequence() {
        assert!(event("a", 2) < event("a", 10));
        assert!(event("a", 255) < event("a", 256));
    }
}
