//! Cluster mode's foundations: the store Latchkey's nodes share on NATS JetStream.
//!
//! In cluster mode a user's events live in a replicated JetStream stream instead of the node's
//! own write-ahead log, and the stream — not a lease or our own belief about who owns whom — is
//! what keeps two nodes from both writing one user: every append names the stream sequence of the
//! user's last message it has seen (`log.rs`), and the stream's leader refuses it when another
//! append got there first. `docs/cluster.md` has the design and what of it exists.
//!
//! - `nats_server.rs` — the pinned `nats-server` (2.15.1), installed from PyPI under a hash on
//!   first use; the only server the fence has been verified on.
//! - `testbed.rs` — NATS clusters on loopback for tests and the harness: start, kill -9, pause,
//!   resume, restart a server.
//! - `partitions.rs` — users to partitions, partitions to streams and subjects.
//! - `log.rs` — the fenced append and the read of a user's last message.
//! - `membership.rs` — live nodes, each node's lease, the coordinator, the partition table and
//!   its epochs.
//! - `names.rs` — usernames and organization names unique across the cluster (a KV bucket
//!   written by compare-and-set).
//! - `journal.rs` — the engine's store over the streams: writes as fenced appends, the node's
//!   data directory as a view every partition's records are applied to.
//! - `import.rs` — a store's entries appended into an empty cluster (`latchkey migrate`),
//!   resumable, with its unique names claimed.
//! - `error.rs` — this crate's one error type.

pub mod error;
pub mod import;
pub mod journal;
pub mod log;
pub mod membership;
pub mod names;
pub mod nats_server;
pub mod partitions;
pub mod testbed;

pub use error::Error;
pub use journal::{ClusterJournal, FixedOwnership, JournalConfig, Ownership};
