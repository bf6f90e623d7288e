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
    HumanAdded {
        org_id: String,
        username: String,
    },
    MachineAdded {
        org_id: String,
        username: String,
    },
    Locked,
    Unlocked,
    Deactivated,
    Reactivated,
    Removed,
    TokenAdded {
        token_id: String,
    },
    TokenRemoved {
        token_id: String,
    },
    // New kinds go last: a kind's position is its stored form.
    /// A wrong password; the user's counter after it.
    PasswordCheckFailed {
        failed_attempts: u32,
    },
    PasswordCheckSucceeded,
    /// Locked by the lockout policy, after `failed_attempts` wrong passwords; until when, if the
    /// lock lifts by itself.
    LockedAfterFailures {
        failed_attempts: u32,
        until: Option<Micros>,
    },
    /// A lock from failed checks lifted by itself at its deadline.
    UnlockedAutomatically,
    PasswordChanged,
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
            EventKind::PasswordCheckFailed { .. } => "user.human.password.check.failed",
            EventKind::PasswordCheckSucceeded => "user.human.password.check.succeeded",
            EventKind::LockedAfterFailures { .. } => "user.locked",
            EventKind::UnlockedAutomatically => "user.unlocked",
            EventKind::PasswordChanged => "user.human.password.changed",
        }
    }

    /// Why this event happened, where the type alone does not say.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            EventKind::Locked => Some("administrator"),
            EventKind::LockedAfterFailures { .. } => Some("failed password checks"),
            EventKind::Unlocked => Some("administrator"),
            EventKind::UnlockedAutomatically => Some("automatic"),
            _ => None,
        }
    }
}
