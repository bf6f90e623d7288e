//! The cluster crate's one error type. The engine maps it to its own ids at its edge.

/// What a cluster operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pinned NATS server could not be found or installed.
    #[error("nats-server: {0}")]
    Install(String),
    /// A NATS server of the testbed could not be started or did not become ready.
    #[error("nats testbed: {0}")]
    Testbed(String),
    /// The append was refused by the stream: another append to the same user got there first
    /// (JetStream 10071 "wrong last sequence", or 10164 while that append is in flight). The
    /// writer's view of the user is stale; nothing was written.
    #[error("append to {subject} fenced: expected last sequence {expected} (JetStream {code})")]
    Fenced {
        subject: String,
        expected: u64,
        code: u64,
    },
    /// The append's outcome is unknown past its deadline (no acknowledgement). Retrying with the
    /// same request id tells which: the stream keeps a window of ids and acknowledges a repeat as
    /// a duplicate of the first.
    #[error("append to {subject} not acknowledged before its deadline: outcome unknown")]
    OutcomeUnknown { subject: String },
    /// A claim refused because the user's last record was written under a newer epoch: a node
    /// that owns the partition now has claimed the user, and this node's belief is stale.
    /// Nothing was written.
    #[error(
        "claim of {subject} under epoch {epoch} refused: the user is held under epoch {newer}"
    )]
    Superseded {
        subject: String,
        epoch: u64,
        newer: u64,
    },
    /// An operation refused for what the cluster holds (e.g. a migration into a cluster that is
    /// not empty). Nothing was written.
    #[error("{0}")]
    Refused(String),
    /// Any other refusal or failure of the NATS client or server.
    #[error("nats: {0}")]
    Nats(String),
}

impl Error {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        Error::Nats(e.to_string())
    }
}
