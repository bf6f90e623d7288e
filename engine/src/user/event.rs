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
    /// Who caused it: the caller's user id; empty for what Latchkey did itself (an automatic
    /// unlock) and for events written before callers were recorded (schemas 1 and 2).
    pub by: String,
}

/// An event as schemas 1 and 2 wrote it: without `by`.
#[derive(Deserialize)]
struct EventWithoutBy {
    sequence: u64,
    at: Micros,
    kind: EventKind,
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
    /// Unlocked by a bulk unlock job.
    UnlockedInBulk {
        job_id: String,
    },
}

impl Event {
    /// The event's stored form.
    pub fn encode(&self) -> Vec<u8> {
        crate::stored::encode(self)
    }

    /// An event as any schema this build reads wrote it. An older event ends where its kind
    /// ends, so it never decodes as a whole current one (that needs `by` after the kind), and a
    /// current one never leaves bytes over: exactly one of the two forms fits.
    pub fn decode(bytes: &[u8]) -> Result<Event, postcard::Error> {
        if let Ok((event, [])) = postcard::take_from_bytes::<Event>(bytes) {
            return Ok(event);
        }
        match postcard::take_from_bytes::<EventWithoutBy>(bytes)? {
            (old, []) => Ok(Event {
                sequence: old.sequence,
                at: old.at,
                kind: old.kind,
                by: String::new(),
            }),
            _ => Err(postcard::Error::DeserializeBadEncoding),
        }
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
            EventKind::UnlockedInBulk { .. } => "user.unlocked",
        }
    }

    /// Why this event happened, where the type alone does not say.
    pub fn reason(&self) -> Option<String> {
        match self {
            EventKind::Locked | EventKind::Unlocked => Some("administrator".into()),
            EventKind::LockedAfterFailures { .. } => Some("failed password checks".into()),
            EventKind::UnlockedAutomatically => Some("automatic".into()),
            EventKind::UnlockedInBulk { job_id } => Some(format!("bulk unlock {job_id}")),
            _ => None,
        }
    }
}
