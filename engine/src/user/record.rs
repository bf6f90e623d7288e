//! What is stored for a user: the snapshot the actor works on, and how one change of it becomes
//! one atomic write (snapshot + event + index updates). Every field is written in the disk
//! format's own types (`stored.rs`), never in the engine's public ones.

use serde::{Deserialize, Serialize};

use latchkey_storage::WriteBatch;

use crate::error::{Error, ErrorId};
use crate::keys;
use crate::stored::{self, Email, Grant, Phone, Profile};
use crate::time::{to_datetime, Micros};
use crate::types::{Details, HumanUser, MachineUser, UserState, UserType};
use crate::user::encoded::Encoded;
use crate::user::event::{Event, EventKind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub org_id: String,
    #[serde(with = "stored::state")]
    pub state: UserState,
    pub username: String,
    /// Sequence of the last event (1 = creation).
    pub sequence: u64,
    pub created: Micros,
    pub changed: Micros,
    pub failed_password_attempts: u32,
    // The fields a lifecycle command leaves alone, with their encoding kept (`encoded.rs`).
    // These two must stay the last fields: `encode` writes them after the others.
    pub kind: Encoded<Kind>,
    pub grants: Encoded<Vec<Grant>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Human(HumanRecord),
    Machine(MachineRecord),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HumanRecord {
    pub profile: Profile,
    pub email: Email,
    pub phone: Option<Phone>,
    pub password: Option<PasswordRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordRecord {
    /// PHC string; the plain password is never stored.
    pub hash: String,
    pub change_required: bool,
    pub changed: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub name: String,
    pub description: String,
    /// Personal access tokens: id and the hash under which the token is stored.
    pub tokens: Vec<TokenRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRef {
    pub id: String,
    pub hash: Vec<u8>,
}

impl UserRecord {
    /// Whether a caller of this reach may see the user: the same NotFound for "missing",
    /// "deleted" and "outside your reach".
    pub(crate) fn visible_to(&self, reach: &crate::access::Reach) -> bool {
        self.state != UserState::Deleted && reach.covers(&self.org_id)
    }

    /// A new user before its creation event (sequence 0; the creation makes it 1).
    pub fn new(
        id: String,
        org_id: String,
        state: UserState,
        username: &str,
        kind: Kind,
        now: Micros,
    ) -> Self {
        UserRecord {
            id,
            org_id,
            state,
            username: username.trim().to_owned(),
            sequence: 0,
            created: now,
            changed: now,
            failed_password_attempts: 0,
            kind: kind.into(),
            grants: Vec::new().into(),
        }
    }

    /// The snapshot's postcard encoding (the same bytes as serializing the whole record):
    /// the small fields encoded now, then the kept encodings of `kind` and `grants`.
    pub fn encode(&self) -> Vec<u8> {
        let head = (
            &self.id,
            &self.org_id,
            stored::State::from(self.state),
            &self.username,
            self.sequence,
            self.created,
            self.changed,
            self.failed_password_attempts,
        );
        let (kind, grants) = (self.kind.bytes(), self.grants.bytes());
        let head_bytes = self.id.len() + self.org_id.len() + self.username.len() + 40;
        let out = Vec::with_capacity(head_bytes + kind.len() + grants.len());
        // As `stored::encode`: plain data into a Vec cannot fail.
        #[allow(clippy::expect_used)]
        let mut out = postcard::to_extend(&head, out).expect("encoding into a Vec cannot fail");
        out.extend_from_slice(kind);
        out.extend_from_slice(grants);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<UserRecord, Error> {
        postcard::from_bytes(bytes)
            .map_err(|e| Error::with(ErrorId::Internal, format!("corrupt user record: {e}")))
    }

    pub fn details(&self) -> Details {
        Details {
            sequence: self.sequence,
            change_date: to_datetime(self.changed),
            resource_owner: self.org_id.clone(),
            creation_date: to_datetime(self.created),
        }
    }

    pub fn username_key(&self) -> Vec<u8> {
        keys::username(&self.org_id, &self.username.to_lowercase())
    }

    /// The creation event of this (new) user.
    pub fn creation_event(&mut self, by: &str) -> Event {
        let kind = match &*self.kind {
            Kind::Human(_) => EventKind::HumanAdded {
                org_id: self.org_id.clone(),
                username: self.username.clone(),
            },
            Kind::Machine(_) => EventKind::MachineAdded {
                org_id: self.org_id.clone(),
                username: self.username.clone(),
            },
        };
        self.sequence = 0;
        self.record_event(kind, self.created, by)
    }

    /// Advances the sequence and returns the event for `kind`.
    pub fn record_event(&mut self, kind: EventKind, at: Micros, by: &str) -> Event {
        self.sequence += 1;
        self.changed = at;
        Event {
            sequence: self.sequence,
            at,
            kind,
            by: by.to_owned(),
        }
    }

    /// The atomic write of a new user: its snapshot, its creation event and its index entries
    /// and counts, plus `extra`.
    pub fn write_new(&self, event: &Event, mut extra: WriteBatch) -> WriteBatch {
        let indexed = crate::user::index::Indexed::of(self);
        crate::user::index::write_changes(None, indexed.as_ref(), &self.id, &mut extra);
        extra.put(keys::user(&self.id), self.encode());
        extra.put(keys::event(&self.id, event.sequence), event.encode());
        extra
    }

    pub fn user_type(&self) -> UserType {
        match &*self.kind {
            Kind::Human(h) => UserType::Human(HumanUser {
                profile: h.profile.clone().into(),
                email: h.email.clone().into(),
                phone: h.phone.clone().map(Into::into),
                password_change_required: h.password.as_ref().is_some_and(|p| p.change_required),
                password_changed: h.password.as_ref().map(|p| to_datetime(p.changed)),
            }),
            Kind::Machine(m) => UserType::Machine(MachineUser {
                name: m.name.clone(),
                description: m.description.clone(),
            }),
        }
    }
}

pub fn decode_event(bytes: &[u8]) -> Result<Event, Error> {
    Event::decode(bytes).map_err(|e| Error::with(ErrorId::Internal, format!("corrupt event: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::golden::{human, machine};
    use crate::stored::Role;

    /// The assembled encoding is exactly the whole record's, and decodes back to it.
    fn assert_encodes_whole(record: &UserRecord) {
        let bytes = record.encode();
        assert_eq!(bytes, postcard::to_allocvec(record).unwrap());
        assert_eq!(&UserRecord::decode(&bytes).unwrap(), record);
    }

    #[test]
    fn a_snapshot_reusing_kept_encodings_is_byte_for_byte_the_record() {
        for mut record in [human(), machine()] {
            assert_encodes_whole(&record);
            // A lifecycle command: only the small fields change, the kept bytes are reused.
            record.record_event(EventKind::Locked, 9, "m1");
            record.state = UserState::Locked;
            record.failed_password_attempts = 3;
            assert_encodes_whole(&record);
            // Changes to the kept fields are seen, however they are reached.
            record.grants.push(Grant {
                role: Role::OrgUserManager,
                org_id: Some("o1".into()),
            });
            assert_encodes_whole(&record);
            match &mut *record.kind {
                Kind::Human(h) => h.email.email = "lovelace@example.com".into(),
                Kind::Machine(m) => m.tokens.clear(),
            }
            assert_encodes_whole(&record);
            if let Some(grant) = record.grants.first_mut() {
                grant.org_id = None;
            }
            assert_encodes_whole(&record);
        }
    }
}
