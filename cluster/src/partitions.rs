//! Users to partitions, partitions to streams.
//!
//! A cluster has a fixed number of partitions, chosen when it is created. A user belongs to
//! partition `fnv1a(user id) mod P` forever; each partition is one replicated JetStream stream
//! (`LK_P00`, `LK_P01`, …) — one Raft group with its own leader, so the leaders, and the work of
//! ordering appends, spread over the NATS servers. A user's events are the messages of its own
//! subject in its partition's stream (`lk.p<k>.u.<user id>`), which is what the per-subject
//! fence of `log.rs` compares against.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::{self, stream};

use crate::Error;

/// How long a stream remembers request ids (`Nats-Msg-Id`): a retry within it is acknowledged as
/// a duplicate of the first append instead of being applied again.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// What every partition's stream name starts with.
const STREAM_PREFIX: &str = "LK_P";

/// The layout of a cluster: how many partitions and how many replicas of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub partitions: u32,
    pub replicas: usize,
}

impl Layout {
    /// The partition of `user_id`. Stable across versions and machines (FNV-1a, not the
    /// standard library's randomly keyed hasher).
    pub fn partition_of(&self, user_id: &str) -> u32 {
        let hash = fnv1a(user_id.bytes());
        // The remainder is below `partitions`, which is a u32.
        (hash % u64::from(self.partitions.max(1))) as u32
    }

    /// The stream of partition `p`.
    pub fn stream_name(p: u32) -> String {
        format!("{STREAM_PREFIX}{p:02}")
    }

    /// The partition whose stream is `name`, if it is one's.
    pub fn partition_of_stream(name: &str) -> Option<u32> {
        name.strip_prefix(STREAM_PREFIX)?.parse().ok()
    }

    /// The subject of `user_id`'s events.
    pub fn user_subject(&self, user_id: &str) -> String {
        format!("lk.p{}.u.{user_id}", self.partition_of(user_id))
    }

    /// The stream configuration of partition `p`.
    pub fn stream_config(&self, p: u32) -> stream::Config {
        stream::Config {
            name: Self::stream_name(p),
            subjects: vec![format!("lk.p{p}.>")],
            num_replicas: self.replicas,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        }
    }

    /// Creates every partition's stream that does not exist yet; an existing one must have this
    /// layout's replica count.
    pub async fn ensure_streams(&self, js: &jetstream::Context) -> Result<(), Error> {
        for p in 0..self.partitions {
            let mut stream = js
                .get_or_create_stream(self.stream_config(p))
                .await
                .map_err(Error::nats)?;
            let info = stream.info().await.map_err(Error::nats)?;
            if info.config.num_replicas != self.replicas {
                return Err(Error::Refused(format!(
                    "stream {} has {} replicas, the layout says {}",
                    info.config.name, info.config.num_replicas, self.replicas
                )));
            }
        }
        Ok(())
    }
}

/// How long one pull of a reader lasts at most. The client asks for idle heartbeats at half of
/// it and recreates the consumer after two missed ones, so a reader whose consumer died with its
/// server (an ordered consumer has one replica) reads again within about twice this, instead of
/// the client's default of a minute.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// The messages of `stream` (a partition's) from sequence `start` on, in stream order, through an
/// ordered consumer: one the client recreates where it left off when a delivery goes missing, so
/// none is skipped or repeated. How a view follows a partition and an audit reads one back.
pub async fn read_from(stream: &stream::Stream, start: u64) -> Result<pull::Ordered, Error> {
    stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            max_expires: PULL_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(Error::nats)?
        .messages()
        .await
        .map_err(Error::nats)
}
/// FNV-1a, 64 bits: a hash that never changes between versions or machines.
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Bytes as a subject token (subjects cannot hold arbitrary bytes) or a digest's text:
/// lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The bytes [`hex`] wrote; `None` for anything else.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would take a sign ("+1").
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_through_hex_subject_tokens() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        let scope = b"u\x00\x0312\xff.*>";
        assert_eq!(hex(scope), "7500033132ff2e2a3e");
        assert_eq!(unhex(&hex(scope)).as_deref(), Some(&scope[..]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+1"), None);
    }

    #[test]
    fn a_users_partition_is_fixed_and_users_spread_over_all() {
        let layout = Layout {
            partitions: 16,
            replicas: 3,
        };
        // Pinned values: a change here would move every user of an existing cluster.
        assert_eq!(layout.partition_of("312238829193593001"), 0);
        assert_eq!(
            layout.user_subject("312238829193593001"),
            "lk.p0.u.312238829193593001"
        );
        let mut counts = [0u32; 16];
        for n in 0..16_000u64 {
            counts[layout.partition_of(&(300_000_000_000_000_000 + n).to_string()) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn stream_names_sort_in_partition_order() {
        assert_eq!(Layout::stream_name(3), "LK_P03");
        assert_eq!(Layout::stream_name(63), "LK_P63");
        assert_eq!(Layout::partition_of_stream("LK_P03"), Some(3));
        assert_eq!(Layout::partition_of_stream("KV_lk_parts"), None);
    }
}
