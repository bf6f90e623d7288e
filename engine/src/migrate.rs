//! Migration into a cluster: an embedded store's entries regrouped by the scope the engine writes
//! them under, so that a cluster's streams hold them as if the engine had written them there.
//!
//! In cluster mode every write is a batch under a scope (a user's snapshot key, an organization's,
//! a session's, …) appended to that scope's subject in its partition's stream, and each node's
//! view applies every partition in its own stream order. Where a key is put decides where its
//! later updates and deletions land: a username entry put under some other scope's partition could
//! be applied *after* the deletion its user's partition holds, in a view rebuilt from the streams,
//! and come back. So [`plan`] puts every entry under the scope whose writes change it afterwards —
//! this file is the one place that knows which, next to `keys.rs` (a new key kind must be added
//! here, or a migration refuses it by its tag).
//!
//! Counters are migrated as additions (the views start from zero), and the keys that must be
//! unique across the cluster (usernames, organization names and domains) are listed with their
//! holders, to be claimed in the cluster's name bucket. The stream side is
//! `latchkey_cluster::import`; the command is `latchkey migrate` (`api/src/migrate.rs`).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use latchkey_storage::WriteBatch;
use sha2::{Digest, Sha256};

use crate::keys;
use crate::stored::SCHEMA_VERSION;
use crate::tokens::TokenRecord;
use crate::{Config, OpenError};

/// An embedded store's entries as a cluster's streams must hold them.
#[derive(Debug, Default)]
pub struct Migration {
    /// Per scope, every entry written under it (puts only).
    pub scopes: BTreeMap<Vec<u8>, WriteBatch>,
    /// The counters, as additions of their values, under [`Migration::COUNTERS_SCOPE`].
    pub counters: WriteBatch,
    /// Keys unique across the cluster and the id that holds each (what a creation claims).
    pub unique: Vec<(Vec<u8>, Vec<u8>)>,
    /// What was read, by kind.
    pub users: u64,
    pub organizations: u64,
    pub sessions: u64,
    pub entries: u64,
    /// SHA-256 of every entry (keys and values, in order), in hex: the same data gives the same
    /// id, so an interrupted migration is resumed only with what it started with.
    pub source_id: String,
}

impl Migration {
    /// The scope the counters' additions are written under (no engine write uses it).
    pub fn counters_scope() -> Vec<u8> {
        keys::meta("migrated-counters")
    }

    /// Every scope's batch, the counters' additions last (under [`Migration::counters_scope`]).
    pub fn into_batches(self) -> Vec<(Vec<u8>, WriteBatch)> {
        let mut batches: Vec<_> = self.scopes.into_iter().collect();
        if !self.counters.adds().is_empty() {
            batches.push((Self::counters_scope(), self.counters));
        }
        batches
    }
}

/// The migration of a backup file (`latchkey backup`), checked whole before it is used.
pub fn plan_backup(input: impl Read) -> Result<Migration, OpenError> {
    plan(latchkey_storage::backup::BackupReader::new(input)?)
}

/// The migration of the stopped data directory of `config`, read as an offline backup in
/// memory (fails if a server holds it).
pub fn plan_data_dir(config: &Config) -> Result<Migration, OpenError> {
    let mut bytes = Vec::new();
    crate::backup_offline(config, &mut bytes)?;
    plan_backup(&bytes[..])
}

fn refuse(what: impl Into<String>) -> OpenError {
    OpenError::Engine(what.into())
}

fn user_scope(id: &[u8]) -> Vec<u8> {
    keys::user(&String::from_utf8_lossy(id))
}

fn org_scope(id: &[u8]) -> Vec<u8> {
    keys::org(&String::from_utf8_lossy(id))
}

/// Regroups a store's entries (in key order, as a backup holds them) by the scope the engine
/// writes each under. Refuses a store of another schema version, a cluster node's view, and any
/// key this build does not know.
pub fn plan(
    entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), latchkey_storage::StoreError>>,
) -> Result<Migration, OpenError> {
    let mut migration = Migration::default();
    let mut hash = Sha256::new();
    // A PAT's id entry (`k`) names its hash; the hash's record (`t`, later in key order) names
    // the user whose writes change both.
    let mut token_users: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut token_ids: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut schema = None;
    for entry in entries {
        let (key, value) = entry?;
        hash.update((key.len() as u64).to_be_bytes());
        hash.update(&key);
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(&value);
        migration.entries += 1;
        let unreadable = || refuse(format!("an entry cannot be read: key {key:?}"));
        let scope = match key.first().copied() {
            Some(b'S') if key == keys::SCHEMA => {
                schema = Some(value);
                continue;
            }
            Some(keys::COUNTER_TAG) => {
                let value = value.try_into().map(i64::from_be_bytes);
                let value = value.map_err(|_| unreadable())?;
                migration.counters.add(key, value);
                continue;
            }
            Some(b'Z') => {
                return Err(refuse(
                    "this data directory is a cluster node's view, not an embedded store",
                ))
            }
            Some(b'u') => {
                migration.users += 1;
                key.clone()
            }
            Some(b'e' | b'L') => user_scope(keys::first_part(&key).ok_or_else(unreadable)?),
            Some(b'A') => {
                let (_, user) = keys::split_auto_unlock(&key).ok_or_else(unreadable)?;
                keys::user(&user)
            }
            Some(b'x') => keys::user(keys::list_index_user(&key).ok_or_else(unreadable)?),
            Some(b'n') => {
                migration.unique.push((key.clone(), value.clone()));
                user_scope(&value)
            }
            Some(b't') => {
                let record: TokenRecord = postcard::from_bytes(&value).map_err(|_| unreadable())?;
                let user = record.user_id.into_bytes();
                token_users.insert(key.clone(), user.clone());
                user_scope(&user)
            }
            Some(b'k') => {
                token_ids.push((key.clone(), value));
                continue;
            }
            Some(b'B') => {
                let parts = keys::split_parts(&key).ok_or_else(unreadable)?;
                user_scope(parts.get(1).ok_or_else(unreadable)?)
            }
            Some(b'o') => {
                migration.organizations += 1;
                key.clone()
            }
            Some(b'N' | b'd') => {
                migration.unique.push((key.clone(), value.clone()));
                org_scope(&value)
            }
            Some(b's') => {
                migration.sessions += 1;
                key.clone()
            }
            Some(b'P' | b'p' | b'J' | b'M') => key.clone(),
            Some(b'b') => keys::bulk_job(&String::from_utf8_lossy(
                keys::first_part(&key).ok_or_else(unreadable)?,
            )),
            Some(tag) => {
                return Err(refuse(format!(
                    "an entry of a kind this build cannot migrate (tag {:?})",
                    char::from(tag)
                )))
            }
            None => return Err(unreadable()),
        };
        migration.scopes.entry(scope).or_default().put(key, value);
    }
    for (key, hash) in token_ids {
        let user = token_users.get(&keys::token(&hash)).ok_or_else(|| {
            refuse(format!(
                "the token id {key:?} names a token the store does not hold"
            ))
        })?;
        migration
            .scopes
            .entry(user_scope(user))
            .or_default()
            .put(key, hash);
    }
    let expected = SCHEMA_VERSION.to_be_bytes();
    match schema {
        Some(found) if found == expected => {}
        Some(found) => {
            return Err(refuse(format!(
                "the store is of schema {found:?}, this build migrates schema {SCHEMA_VERSION}: \
                 open it once with this build's server first"
            )))
        }
        None if migration.entries == 0 => return Err(refuse("the store is empty")),
        None => return Err(refuse("the store records no schema version")),
    }
    migration.source_id = hash
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(migration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(mut list: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Migration, OpenError> {
        list.sort();
        plan(list.into_iter().map(Ok))
    }

    fn schema() -> (Vec<u8>, Vec<u8>) {
        (keys::SCHEMA.to_vec(), SCHEMA_VERSION.to_be_bytes().to_vec())
    }

    fn scope_of(migration: &Migration, key: &[u8]) -> Vec<u8> {
        let found: Vec<_> = migration
            .scopes
            .iter()
            .filter(|(_, batch)| batch.ops().iter().any(|(k, _)| k == key))
            .map(|(scope, _)| scope.clone())
            .collect();
        assert_eq!(found.len(), 1, "{key:?} is under exactly one scope");
        found[0].clone()
    }

    #[test]
    fn every_entry_goes_under_the_scope_whose_writes_change_it() {
        let token = TokenRecord {
            token_id: "tok1".into(),
            user_id: "u1".into(),
            expires: None,
            created: 1,
        };
        let hash = [7u8; 32];
        let user_keys = [
            keys::user("u1"),
            keys::event("u1", 1),
            keys::event("u1", 2),
            keys::lockout("u1"),
            keys::auto_unlock(1_000, "u1"),
            keys::list_index(b'U', b"alice", 5, "u1"),
            keys::username("o1", "alice"),
            keys::token(&hash),
            keys::token_id("tok1"),
            keys::bulk_unlocked("job1", "u1"),
        ];
        let mut list: Vec<_> = user_keys
            .iter()
            .map(|k| (k.clone(), b"u1".to_vec()))
            .collect();
        list.retain(|(k, _)| k[0] != b't' && k[0] != b'k');
        list.push((keys::token(&hash), crate::stored::encode(&token)));
        list.push((keys::token_id("tok1"), hash.to_vec()));
        list.extend([
            schema(),
            (keys::org("o1"), b"org".to_vec()),
            (keys::org_name("acme"), b"o1".to_vec()),
            (keys::org_domain("acme.example"), b"o1".to_vec()),
            (keys::org_lockout_policy("o1"), b"policy".to_vec()),
            (keys::session("s1"), b"session".to_vec()),
            (keys::bulk_job("job1"), b"job".to_vec()),
            (keys::bulk_chunk("job1", 0), b"ids".to_vec()),
            (keys::meta("default-org"), b"o1".to_vec()),
            (keys::user_count("", 1, true), 3i64.to_be_bytes().to_vec()),
        ]);
        let migration = entries(list).unwrap();
        for key in &user_keys {
            assert_eq!(scope_of(&migration, key), keys::user("u1"), "{key:?}");
        }
        for key in [
            keys::org("o1"),
            keys::org_name("acme"),
            keys::org_domain("acme.example"),
        ] {
            assert_eq!(scope_of(&migration, &key), keys::org("o1"));
        }
        for key in [
            keys::org_lockout_policy("o1"),
            keys::session("s1"),
            keys::bulk_job("job1"),
        ] {
            assert_eq!(scope_of(&migration, &key), key);
        }
        assert_eq!(
            scope_of(&migration, &keys::bulk_chunk("job1", 0)),
            keys::bulk_job("job1")
        );
        assert_eq!(
            migration.counters.adds(),
            &[(keys::user_count("", 1, true), 3)]
        );
        let mut unique = migration.unique.clone();
        unique.sort();
        assert_eq!(
            unique,
            vec![
                (keys::org_name("acme"), b"o1".to_vec()),
                (keys::org_domain("acme.example"), b"o1".to_vec()),
                (keys::username("o1", "alice"), b"u1".to_vec()),
            ]
        );
        assert_eq!(
            (migration.users, migration.organizations, migration.sessions),
            (1, 1, 1)
        );
        assert_eq!(migration.source_id.len(), 24);
    }

    #[test]
    fn the_same_entries_give_the_same_source_and_others_another() {
        let one = vec![schema(), (keys::user("u1"), b"a".to_vec())];
        let other = vec![schema(), (keys::user("u1"), b"b".to_vec())];
        let id = |l: Vec<_>| entries(l).unwrap().source_id;
        assert_eq!(id(one.clone()), id(one.clone()));
        assert_ne!(id(one), id(other));
    }

    #[test]
    fn what_cannot_be_migrated_is_refused() {
        let refused = |list: Vec<(Vec<u8>, Vec<u8>)>| entries(list).unwrap_err().to_string();
        assert!(refused(vec![schema(), (b"Z\0\0\0\x01".to_vec(), vec![])]).contains("view"));
        assert!(refused(vec![schema(), (b"?x".to_vec(), vec![])]).contains("tag '?'"));
        assert!(
            refused(vec![(keys::SCHEMA.to_vec(), 3u32.to_be_bytes().to_vec())]).contains("schema")
        );
        assert!(refused(vec![]).contains("empty"));
        // A token id whose token is missing: its scope cannot be known.
        assert!(refused(vec![schema(), (keys::token_id("t"), vec![1; 32])]).contains("token id"));
    }
}
