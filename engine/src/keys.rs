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
//! | `n` | org id, lowercased username | user id |
//! | `o` | org id | organization |
//! | `N` | lowercased org name | org id |
//! | `d` | org domain | org id |
//! | `t` | token hash | token record |
//! | `k` | token id | token hash |

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
pub fn org_name(lowercased_name: &str) -> Vec<u8> {
    tagged(b'N', &[lowercased_name.as_bytes()])
}
pub fn org_domain(domain: &str) -> Vec<u8> {
    tagged(b'd', &[domain.as_bytes()])
}
pub fn token(hash: &[u8]) -> Vec<u8> {
    tagged(b't', &[hash])
}
pub fn token_id(id: &str) -> Vec<u8> {
    tagged(b'k', &[id.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_prefixes_do_not_cross_users() {
        let of_1 = events_of("1");
        assert!(event("1", 7).starts_with(&of_1));
        assert!(!event("12", 7).starts_with(&of_1));
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
