//! Both halves of schema handling: the version the caller's keys and records are written in is
//! recorded in the store and checked at every open, so a build never reads a layout it does not
//! understand — and stores from before the write-ahead log are brought forward in place.
//!
//! The caller owns the version (its records are what changes); the store keeps it under the
//! layout's schema key, big-endian.

use std::path::Path;

use crate::{Backend, Layout, StoreError, WriteBatch};

/// The caller's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// The version this build writes and reads.
    pub version: u32,
    /// Older versions this build reads as they are (the same keys and records, or fewer of them):
    /// opened here, they are upgraded in place by recording `version`.
    pub upgrade_from: Vec<u32>,
}

impl Schema {
    pub fn new(version: u32) -> Self {
        Schema {
            version,
            upgrade_from: Vec::new(),
        }
    }
}

/// Brings a new store, or one at a version in `upgrade_from`, to `schema.version`, writing the
/// marker straight into sled (under the log) so that an older build — which would ignore the log,
/// or keys it does not know — refuses the directory instead of silently missing its newest writes.
pub(crate) fn upgrade(
    inner: &dyn Backend,
    layout: &Layout,
    schema: &Schema,
) -> Result<(), StoreError> {
    let found = inner.get(&layout.schema_key)?;
    let upgrade = match found.as_deref().map(version_of) {
        Some(Some(version)) => schema.upgrade_from.contains(&version),
        Some(None) => false, // unreadable: the check reports it
        None => inner.scan_prefix(b"").next().is_none(),
    };
    if upgrade {
        let mut batch = WriteBatch::default();
        batch.put(
            layout.schema_key.clone(),
            schema.version.to_be_bytes().to_vec(),
        );
        inner.apply(batch)?;
        inner.flush()?;
    }
    Ok(())
}

/// Refuses a store of another version, or one that holds data without a version.
pub(crate) fn check(
    backend: &dyn Backend,
    layout: &Layout,
    schema: &Schema,
    dir: &Path,
) -> Result<(), StoreError> {
    let unknown = |found: String| StoreError::UnknownSchema {
        dir: dir.to_path_buf(),
        found,
        expected: schema.version,
    };
    match backend.get(&layout.schema_key)? {
        Some(bytes) => match version_of(&bytes) {
            Some(version) if version == schema.version => Ok(()),
            Some(version) => Err(unknown(version.to_string())),
            None => Err(unknown(format!("{bytes:?}"))),
        },
        None => {
            if backend.scan_prefix(b"").next().is_some() {
                return Err(unknown("none (data without a schema marker)".into()));
            }
            let mut batch = WriteBatch::default();
            batch.put(
                layout.schema_key.clone(),
                schema.version.to_be_bytes().to_vec(),
            );
            backend.apply(batch)?;
            backend.flush()?;
            Ok(())
        }
    }
}

fn version_of(bytes: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(bytes).ok().map(u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{test_config, test_layout, SledBackend, Store};

    fn put_version(backend: &dyn Backend, version: u32) {
        let mut batch = WriteBatch::default();
        batch.put(b"S".to_vec(), version.to_be_bytes().to_vec());
        backend.apply(batch).unwrap();
        backend.flush().unwrap();
    }

    #[test]
    fn a_new_store_gets_the_version_and_listed_old_ones_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledBackend::open(dir.path()).unwrap();
        let schema = Schema {
            version: 7,
            upgrade_from: vec![6],
        };
        upgrade(&sled, &test_layout(), &schema).unwrap();
        assert_eq!(sled.get(b"S").unwrap(), Some(7u32.to_be_bytes().to_vec()));
        for (found, after) in [(6u32, 7u32), (5, 5), (99, 99)] {
            put_version(&sled, found);
            upgrade(&sled, &test_layout(), &schema).unwrap();
            assert_eq!(
                sled.get(b"S").unwrap(),
                Some(after.to_be_bytes().to_vec()),
                "from {found}"
            );
        }
    }

    #[test]
    fn an_unknown_version_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = SledBackend::open(dir.path()).unwrap();
            put_version(&backend, 99);
            backend.close().unwrap();
        }
        let err = Store::open(&test_config(dir.path()))
            .err()
            .expect("must refuse");
        assert!(matches!(err, StoreError::UnknownSchema { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("99") && text.contains('7'), "{text}");
    }

    #[test]
    fn data_without_a_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = SledBackend::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put(b"k".to_vec(), b"v".to_vec());
            backend.apply(batch).unwrap();
            backend.close().unwrap();
        }
        let err = Store::open(&test_config(dir.path()))
            .err()
            .expect("must refuse");
        assert!(err.to_string().contains("without a schema marker"), "{err}");
    }
}
