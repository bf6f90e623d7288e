//! Events: one per successful command, appended to the user's own stream under its sequence.
//! The snapshot is the source of truth for reads; the stream is the audit log, and its
//! gap-free sequences are what crash tests check the snapshot against. Stored as they are
//! (postcard): the order of `EventKind`'s variants is part of the disk format (`stored.rs`).

use serde::{Deserialize, Serialize};

use crate::time::Micros;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub sequence: u64,
    pub at: Micros,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    HumanAdded { org_id: String, username: String },
    MachineAdded { org_id: String, username: String },
    Locked,
    Unlocked,
    Deactivated,
    Reactivated,
    Removed,
    TokenAdded { token_id: String },
    TokenRemoved { token_id: String },
}

impl Event {
    /// The event's stored form.
    pub fn encode(&self) -> Vec<u8> {
        crate::stored::encode(self)
    }
}

impl EventKind {
    /// The ZITADEL-style event type name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::HumanAdded { .. } => "user.human.added",
            EventKind::MachineAdded { .. } => "user.machine.added",
            EventKind::Locked => "user.locked",
            EventKind::Unlocked => "user.unlocked",
            EventKind::Deactivated => "user.deactivated",
            EventKind::Reactivated => "user.reactivated",
            EventKind::Removed => "user.removed",
            EventKind::TokenAdded { .. } => "user.personal.access.token.added",
            EventKind::TokenRemoved { .. } => "user.personal.access.token.removed",
        }
    }
}
