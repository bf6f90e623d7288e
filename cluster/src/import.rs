//! Importing a store into an empty cluster: the stream side of `latchkey migrate`.
//!
//! The engine regroups an embedded store's entries by the scope it writes each under
//! (`latchkey_engine::migrate`); here each scope's entries become records of that scope's subject,
//! exactly as a node's journal writes them, so every node's view applies them and a node that
//! loads a user later claims it after them. The records carry the writer `import/0`: epoch 0 is
//! older than every partition epoch (a revision of the partition table, from 1), so the first
//! claim of a migrated user by a node's partition epoch follows them and fences nothing of theirs.
//! Unique names are claimed in the name bucket for their holders first, so a creation on any
//! node finds them taken.
//!
//! An import is resumable and never applies a record twice: each record carries the migration's
//! source (a hash of the data) and its part (`Lk-Import: <source>/<part>/<parts>`), and a run
//! first reads back every partition. A cluster whose streams hold anything else — another
//! source's records, a node's writes — is refused before anything is written (a name held by
//! another id, before any record is appended): a migration goes into an empty cluster, before its
//! nodes start.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use latchkey_storage::WriteBatch;

use crate::log::{UserLog, WRITER_HEADER};
use crate::names::{Claim, Names};
use crate::partitions::{hex, Layout};
use crate::Error;

/// The header of an imported record: `<source>/<part>/<parts>`.
pub const IMPORT_HEADER: &str = "Lk-Import";

/// The writer of imported records (`<node>/<epoch>`): epoch 0, before every partition epoch.
pub const IMPORTER: &str = "import/0";

/// Most bytes of entries one record carries (NATS refuses messages over 1 MiB by default); a
/// scope with more is split into consecutive records.
const RECORD_BYTES: usize = 256 * 1024;

/// Appends in flight at once (scopes are independent; one scope's parts go in order).
const IN_FLIGHT: usize = 64;

/// What an import wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Scopes whose records are all in the streams now.
    pub scopes: u64,
    /// Records appended by this run.
    pub appended: u64,
    /// Records an earlier run of the same source had appended already.
    pub found: u64,
    /// Unique names claimed (or found claimed for the same holder).
    pub names: u64,
}

/// Imports `scopes` (each scope's entries as one batch) and claims `unique` (key, holder) into
/// the cluster at `client`, under `source` (the data's id: a rerun with the same source resumes,
/// another is refused). Each append retries what is transient for `timeout`.
pub async fn import(
    client: async_nats::Client,
    layout: Layout,
    source: &str,
    scopes: Vec<(Vec<u8>, WriteBatch)>,
    unique: &[(Vec<u8>, Vec<u8>)],
    timeout: Duration,
) -> Result<Imported, Error> {
    let js = async_nats::jetstream::new(client.clone());
    layout.ensure_streams(&js).await?;
    let log = UserLog::new(client, layout);
    let done = imported_before(&log, layout, source).await?;
    let mut summary = Imported::default();

    let names = Names::open(&js, layout.replicas).await?;
    for (key, holder) in unique {
        match names.claim(key, holder, Instant::now() + timeout).await? {
            Claim::Won => summary.names += 1,
            Claim::Held { holder: other, .. } => {
                return Err(Error::Refused(format!(
                    "the unique name {} is held by {} in the cluster: migrate into an empty \
                     cluster",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(&other),
                )))
            }
        }
    }

    let counts = futures::stream::iter(scopes.into_iter().map(|(scope, batch)| {
        let (log, done) = (&log, &done);
        async move {
            let subject_scope = hex(&scope);
            let parts = split(&batch);
            let (mut next, mut expected) = done
                .get(&layout.user_subject(&subject_scope))
                .map_or((0, 0), |&(part, sequence)| (part + 1, sequence));
            let found = next as u64;
            let mut appended = 0;
            while next < parts.len() {
                let mut headers = HeaderMap::new();
                headers.insert(WRITER_HEADER, IMPORTER);
                let mark = format!("{source}/{next}/{}", parts.len());
                headers.insert(IMPORT_HEADER, mark.as_str());
                let written = log
                    .append(
                        &subject_scope,
                        expected,
                        &log.request_id("import"),
                        &headers,
                        parts[next].clone(),
                        Instant::now() + timeout,
                    )
                    .await?;
                expected = written.sequence;
                appended += 1;
                next += 1;
            }
            Ok::<_, Error>((appended, found))
        }
    }))
    .buffer_unordered(IN_FLIGHT)
    .try_collect::<Vec<_>>()
    .await?;
    for (appended, found) in counts {
        summary.scopes += 1;
        summary.appended += appended;
        summary.found += found;
    }
    Ok(summary)
}

/// Per subject, the last part an earlier import of `source` appended and its sequence. Any
/// record that is not one is a refusal: the cluster is not empty.
async fn imported_before(
    log: &UserLog,
    layout: Layout,
    source: &str,
) -> Result<HashMap<String, (usize, u64)>, Error> {
    let mut done = HashMap::new();
    for p in 0..layout.partitions {
        for record in log.scan(p).await? {
            let part = record
                .headers
                .get(IMPORT_HEADER)
                .and_then(|mark| mark.as_str().strip_prefix(source)?.strip_prefix('/'))
                .and_then(|rest| rest.split('/').next()?.parse::<usize>().ok());
            let Some(part) = part else {
                let writer = record
                    .headers
                    .get(WRITER_HEADER)
                    .or_else(|| record.headers.get(crate::log::CLAIM_HEADER))
                    .map_or("an unknown writer", |w| w.as_str());
                return Err(Error::Refused(format!(
                    "partition {p} already holds records ({} by {writer}) that are not this \
                     migration's: migrate into an empty cluster, before its nodes start",
                    record.subject
                )));
            };
            done.insert(record.subject, (part, record.sequence));
        }
    }
    Ok(done)
}

/// `batch` as the records of one scope: its entries in order, cut where a record would pass
/// [`RECORD_BYTES`]; the counter additions in the first.
fn split(batch: &WriteBatch) -> Vec<Bytes> {
    let mut parts = Vec::new();
    let mut current = WriteBatch::default();
    for (key, delta) in batch.adds() {
        current.add(key.clone(), *delta);
    }
    let (mut size, mut entries) = (0, 0);
    for (key, value) in batch.ops() {
        let len = key.len() + value.as_ref().map_or(0, Vec::len);
        if entries > 0 && size + len > RECORD_BYTES {
            parts.push(std::mem::take(&mut current).encode().into());
            (size, entries) = (0, 0);
        }
        match value {
            Some(value) => current.put(key.clone(), value.clone()),
            None => current.delete(key.clone()),
        }
        size += len;
        entries += 1;
    }
    parts.push(current.encode().into());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_scope_is_split_in_order_and_a_small_one_is_one_record() {
        let mut small = WriteBatch::default();
        small.put(b"a".to_vec(), vec![1; 10]);
        small.add(b"c".to_vec(), 4);
        assert_eq!(split(&small), vec![Bytes::from(small.encode())]);

        let mut large = WriteBatch::default();
        for i in 0..10u8 {
            large.put(vec![b'e', i], vec![i; 100 * 1024]);
        }
        let parts = split(&large);
        assert_eq!(parts.len(), 5, "two 100 KiB entries a record");
        let entries: Vec<_> = parts
            .iter()
            .flat_map(|p| WriteBatch::decode(p).unwrap().ops().to_vec())
            .collect();
        assert_eq!(entries, large.ops().to_vec(), "every entry, in order");
    }
}
