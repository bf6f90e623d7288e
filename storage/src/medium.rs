//! Which embedded store the write-ahead log checkpoints into, and how a data directory tells
//! which one it holds.
//!
//! Two are built in: sled (the default, `sled_backend.rs`) and redb (`redb_backend.rs`), both
//! behind the [`Backend`](crate::Backend) trait. A directory holds one of them for good — the
//! formats differ; moving between them is a backup and a restore — so each checks, before it
//! writes anything, that the directory is new, or holds its own store, and refuses the other's
//! (or anything foreign) with a message that says what is there.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use crate::lock::{DirLock, LOCK_FILE};
use crate::{Backend, RedbBackend, Refusal, SledBackend, StoreError};

/// The embedded store under the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Medium {
    /// sled 0.34: opens by recovering its log and loading its page table, both of which grow
    /// with the store (docs/storage-engines.md).
    #[default]
    Sled,
    /// redb 4: a copy-on-write B-tree in one file; opens in a millisecond at any size and keeps
    /// only its bounded cache in memory.
    Redb,
}

impl Medium {
    pub const ALL: [Medium; 2] = [Medium::Sled, Medium::Redb];

    pub fn name(self) -> &'static str {
        match self {
            Medium::Sled => "sled",
            Medium::Redb => "redb",
        }
    }

    /// The file whose presence says a directory holds this store.
    fn marker(self) -> &'static str {
        match self {
            Medium::Sled => "conf",
            Medium::Redb => crate::redb_backend::FILE,
        }
    }

    /// Opens (or creates) this store in `dir`, its cache bounded to `cache_bytes`; refuses a
    /// directory that holds anything else ([`refuse_foreign`]) or that another process holds.
    pub fn open(
        self,
        dir: &Path,
        cache_bytes: u64,
        kept_files: &[String],
    ) -> Result<Arc<dyn Backend>, StoreError> {
        Ok(match self {
            Medium::Sled => Arc::new(SledBackend::open_with(dir, cache_bytes, kept_files)?),
            Medium::Redb => Arc::new(RedbBackend::open_with(dir, cache_bytes, kept_files)?),
        })
    }

    /// The store `dir` holds, if any.
    pub fn detect(dir: &Path) -> Option<Medium> {
        Medium::ALL
            .into_iter()
            .find(|medium| dir.join(medium.marker()).exists())
    }
}

impl fmt::Display for Medium {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Medium {
    type Err = String;

    fn from_str(s: &str) -> Result<Medium, String> {
        Medium::ALL
            .into_iter()
            .find(|medium| medium.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown store {s:?} (expected sled or redb)"))
    }
}

/// What either store does before it opens anything in `dir`: creates the directory, refuses it
/// unless it is new or holds `medium`'s store ([`refuse_foreign`]), and locks it. Errors name
/// the directory: `StoreError::Refused` when it is another's (nothing damaged), else `Open`.
pub(crate) fn claim_dir(
    dir: &Path,
    medium: Medium,
    kept_files: &[String],
) -> Result<DirLock, StoreError> {
    let open_err = StoreError::opening(dir);
    std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
    refuse_foreign(dir, medium, kept_files)?;
    DirLock::acquire(dir)
}

/// Refuses to open `medium` in `dir` unless the directory holds that store, or no store and
/// nothing but the lock file and the caller's `kept_files`. Both stores would otherwise treat a
/// directory without their files as a new, empty store and start writing into it: pointing
/// `--data-dir` at the wrong place, or at the other store's data, must not do that.
fn refuse_foreign(dir: &Path, medium: Medium, kept_files: &[String]) -> Result<(), StoreError> {
    let refused = StoreError::refusing(dir);
    let open_err = StoreError::opening(dir);
    match Medium::detect(dir) {
        Some(found) if found == medium => return Ok(()),
        Some(found) => {
            return Err(refused(Refusal::OtherStore {
                found,
                asked: medium,
            }))
        }
        None => {}
    }
    let entries = std::fs::read_dir(dir).map_err(|e| open_err(e.to_string()))?;
    for entry in entries {
        let name = entry.map_err(|e| open_err(e.to_string()))?.file_name();
        let name = name.to_string_lossy();
        if name != LOCK_FILE && !kept_files.iter().any(|kept| *kept == name) {
            return Err(refused(Refusal::Foreign {
                name: name.into_owned(),
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for medium in Medium::ALL {
            assert_eq!(medium.name().parse::<Medium>(), Ok(medium));
        }
        assert_eq!("REDB".parse::<Medium>(), Ok(Medium::Redb));
        assert!("rocksdb"
            .parse::<Medium>()
            .unwrap_err()
            .contains("sled or redb"));
    }

    /// What the log needs of a checkpoint target, of each: atomic batches, point reads, ordered
    /// prefix scans both ways, deletes, and everything back after a reopen.
    #[test]
    fn each_medium_keeps_what_was_flushed_across_a_reopen() {
        for medium in Medium::ALL {
            let dir = tempfile::tempdir().unwrap();
            {
                let backend = medium.open(dir.path(), 8 << 20, &[]).unwrap();
                let mut batch = crate::WriteBatch::default();
                for key in ["b2", "a1", "b1", "b3", "c1"] {
                    batch.put(key.as_bytes().to_vec(), key.to_uppercase().into_bytes());
                }
                backend.apply(batch).unwrap();
                let mut batch = crate::WriteBatch::default();
                batch.delete(b"b2".to_vec());
                backend.apply(batch).unwrap();
                backend.flush().unwrap();
                backend.close().unwrap();
            }
            assert_eq!(Medium::detect(dir.path()), Some(medium));
            let backend = medium.open(dir.path(), 8 << 20, &[]).unwrap();
            assert_eq!(
                backend.get(b"a1").unwrap(),
                Some(b"A1".to_vec()),
                "{medium}"
            );
            assert_eq!(backend.get(b"b2").unwrap(), None, "{medium}");
            let keys =
                |iter: crate::KvIter<'_>| -> Vec<Vec<u8>> { iter.map(|e| e.unwrap().0).collect() };
            assert_eq!(keys(backend.scan_prefix(b"b")), [b"b1", b"b3"], "{medium}");
            assert_eq!(
                keys(backend.scan_prefix_rev(b"b")),
                [b"b3", b"b1"],
                "{medium}"
            );
            backend.close().unwrap();
        }
    }

    #[test]
    fn a_directory_of_the_other_store_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Medium::detect(dir.path()), None);
        refuse_foreign(dir.path(), Medium::Redb, &[]).unwrap();
        std::fs::write(dir.path().join("conf"), b"").unwrap();
        assert_eq!(Medium::detect(dir.path()), Some(Medium::Sled));
        refuse_foreign(dir.path(), Medium::Sled, &[]).unwrap();
        let err = refuse_foreign(dir.path(), Medium::Redb, &[]).unwrap_err();
        assert!(err.is_refusal() && !err.is_locked(), "{err}");
        let err = err.to_string();
        assert!(err.contains("holds a sled store"), "{err}");
        assert!(err.contains("--store sled"), "{err}");
    }
}
