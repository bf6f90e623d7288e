//! The key layout of the single keyspace. Every entity lives under a one-byte tag so prefix
//! scans never cross entity kinds; variable-length ids are length-prefixed so that the events of
//! user `12` never show up in a scan of user `1`.
//!
//! | tag | key | value |
//! |---|---|---|
//! | `S` | schema | u32 big-endian |
//! | `M` | meta name | engine-defined (bootstrap marker, ...) |
//! | `u` | user id | user snapshot |
//! | `e` | user id, sequence (u64 BE) | event |
//! | `E` | user id, first sequence (u64 BE) | event chunk: consecutive events of one user, written by the log's checkpoints (`wal.rs`); scans of `e` prefixes see them as events |
//! | `n` | org id, lowercased username | user id |
//! | `o` | org id | organization |
//! | `N` | lowercased org name | org id |
//! | `d` | org domain | org id |
//! | `t` | token hash | token record |
//! | `k` | token id | token hash |

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
/// Tag of event chunks in sled (storage-internal).
pub const EVENT_CHUNK_TAG: u8 = b'E';

/// Prefix of one user's event log.
pub fn events_of(id: &str) -> Vec<u8> {
    tagged(b'e', &[id.as_bytes()])
}
pub fn event(id: &str, sequence: u64) -> Vec<u8> {
    let mut key = tagged_with_room(EVENT_TAG, &[id.as_bytes()], 8);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}
/// The sequence number at the end of an event key.
pub fn event_sequence(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8).map(|start| &key[start..])?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}
pub fn username(org: &str, lowercased_username: &str) -> Vec<u8> {
    tagged(b'n', &[org.as_bytes(), lowercased_username.as_bytes()])
}
pub fn org(id: &str) -> Vec<u8> {
    tagged(b'o', &[id.as_bytes()])
}
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
        assert_eq!(event_sequence(&event("12", 7)), Some(7));
    }

    #[test]
    fn events_sort_by_sequence() {
        assert!(event("a", 2) < event("a", 10));
        assert!(event("a", 255) < event("a", 256));
    }
}
