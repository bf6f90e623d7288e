//! Names unique across the cluster: usernames, organization names and domains.
//!
//! Embedded, the engine keeps a name unique by checking its store under an in-memory
//! reservation. In a cluster two nodes each check their own view and can both find a name free,
//! so before a creation writes a unique key, the node claims the key in the KV bucket `lk_names`
//! by compare-and-set: of any number of nodes creating the same key, the bucket's stream takes
//! one `create`. The entry's value is the holder (the new user's or organization's id), so a
//! creation retried with the same id finds its own claim.
//!
//! The claim and the creation's write are two appends to two streams, not one atomic batch. A
//! claim can therefore outlive a creation that never landed (its node died in between, or the
//! write was refused), and the release after a deletion can be lost. The journal settles that
//! (`ClusterJournal::claim_unique`): an entry older than the grace — longer than any creation
//! takes to land — whose key the view, caught up with every partition, does not hold belongs to
//! nobody, and is taken over by compare-and-set on its revision.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind, UpdateErrorKind},
};
use bytes::Bytes;

use crate::partitions::hex;
use crate::Error;

/// The bucket of cluster-wide unique keys.
pub const BUCKET: &str = "lk_names";

/// The pause before a request the bucket could not answer is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this holder's (claimed now, or by an earlier attempt of the same holder).
    Won,
    /// Another holder's entry, `age` old, at `revision`.
    Held {
        holder: Bytes,
        revision: u64,
        age: Duration,
    },
}

/// The bucket of unique keys.
#[derive(Clone)]
pub struct Names {
    kv: kv::Store,
}

impl Names {
    /// Opens the bucket, creating it (R = `replicas`) the first time.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Names, Error> {
        let kv = crate::membership::bucket(js, BUCKET, Duration::ZERO, replicas).await?;
        Ok(Names { kv })
    }

    /// Claims `key` for `holder`, retrying what is transient until `deadline`.
    pub async fn claim(
        &self,
        key: &[u8],
        holder: &[u8],
        deadline: Instant,
    ) -> Result<Claim, Error> {
        let name = hex(key);
        loop {
            match self.kv.create(&name, Bytes::copy_from_slice(holder)).await {
                Ok(_) => return Ok(Claim::Won),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    match self.kv.entry(name.as_str()).await {
                        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                            if entry.value.as_ref() == holder {
                                return Ok(Claim::Won);
                            }
                            return Ok(Claim::Held {
                                holder: entry.value,
                                revision: entry.revision,
                                age: age(entry.created.unix_timestamp_nanos()),
                            });
                        }
                        // Released in between (or a read that lagged): create again.
                        Ok(_) => {}
                        Err(e) => retry_or_fail(&e, deadline).await?,
                    }
                }
                Err(e) => retry_or_fail(&e, deadline).await?,
            }
        }
    }

    /// Takes over `key`'s entry at `revision` for `holder`. False when the entry changed since
    /// (someone else took it over, or it was released): claim again.
    pub async fn take_over(
        &self,
        key: &[u8],
        holder: &[u8],
        revision: u64,
        deadline: Instant,
    ) -> Result<bool, Error> {
        let name = hex(key);
        loop {
            match self
                .kv
                .update(&name, Bytes::copy_from_slice(holder), revision)
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => return Ok(false),
                Err(e) => retry_or_fail(&e, deadline).await?,
            }
        }
    }

    /// Releases `key` if `holder` holds it (after the holder's deletion, or a creation refused
    /// before anything was written). Another holder's entry is left alone.
    pub async fn release(&self, key: &[u8], holder: &[u8], deadline: Instant) -> Result<(), Error> {
        let name = hex(key);
        loop {
            let entry = match self.kv.entry(name.as_str()).await {
                Ok(Some(entry)) => entry,
                Ok(None) => return Ok(()),
                Err(e) => {
                    retry_or_fail(&e, deadline).await?;
                    continue;
                }
            };
            if entry.operation != kv::Operation::Put || entry.value.as_ref() != holder {
                return Ok(());
            }
            match self
                .kv
                .delete_expect_revision(&name, Some(entry.revision))
                .await
            {
                Ok(()) => return Ok(()),
                // Changed in between: look again.
                Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => {}
                Err(e) => retry_or_fail(&e, deadline).await?,
            }
        }
    }

    /// The holder of `key` now, if any (for tests and tools).
    pub async fn holder(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        match self.kv.entry(hex(key)).await.map_err(Error::nats)? {
            Some(entry) if entry.operation == kv::Operation::Put => Ok(Some(entry.value)),
            _ => Ok(None),
        }
    }
}

/// How long ago `created` (nanoseconds since the Unix epoch, the server's clock) was; zero for
/// a time ahead of this machine's clock.
fn age(created: i128) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    Duration::from_nanos(u64::try_from(now - created).unwrap_or(0))
}

/// Pauses before another attempt, or fails with `e` once `deadline` has passed.
async fn retry_or_fail(e: &impl std::fmt::Display, deadline: Instant) -> Result<(), Error> {
    if Instant::now() + RETRY_PAUSE >= deadline {
        return Err(Error::Nats(format!("unique-name bucket: {e}")));
    }
    tokio::time::sleep(RETRY_PAUSE).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_is_never_negative() {
        assert_eq!(age(i128::MAX), Duration::ZERO);
        assert!(age(0) > Duration::from_secs(365 * 24 * 3600));
    }
}
