//! The disk format's own types, and its version.
//!
//! Records are postcard-encoded: a struct as its fields one after another, an enum as its
//! variant's index. So the order of fields and variants *is* the format. The engine's public types
//! (`UserState`, `Profile`, `Grant`, …) are free to change; what reaches the disk goes through the
//! mirror types here, which change only with the format — and with [`SCHEMA_VERSION`]. The
//! golden tests below pin the bytes of every record type and key for the current version: a
//! change of the format that forgets to bump the version fails them, and a bump without new
//! golden bytes fails them too.
//!
//! The records themselves: `user/record.rs` (snapshot), `user/event.rs` (events), `orgs.rs`,
//! `tokens.rs`; the keys: `keys.rs`.

use serde::{Deserialize, Serialize};

use crate::access;
use crate::types;

/// The on-disk schema this build writes and reads; a store of another version is refused at open
/// (so an older build never silently ignores what a newer one wrote).
/// 2: events in the write-ahead log's runs (a version-1 store has the same keys and records
/// without the log).
/// 3: lockout policies, sessions, users' lockout state and scheduled unlocks, the events of
/// password checks, bulk unlock jobs, and who caused each event (`Event::by`, after the kind) —
/// new keys, new event kinds, and events that older ones read beside (`Event::decode`), so a
/// version-2 store reads as it is.
/// 4: ListUsers' indexes and the user counts (`user/index.rs`), built at the first open of an
/// older store.
pub const SCHEMA_VERSION: u32 = 4;
/// Older versions this build reads as they are (the store records the new version at open).
pub const UPGRADES_FROM: &[u32] = &[1, 2, 3];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Active,
    Inactive,
    Deleted,
    Locked,
    Initial,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gender {
    #[default]
    Unspecified,
    Female,
    Male,
    Diverse,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub given_name: String,
    pub family_name: String,
    pub nick_name: Option<String>,
    pub display_name: Option<String>,
    pub preferred_language: Option<String>,
    pub gender: Gender,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub email: String,
    pub is_verified: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    pub phone: String,
    pub is_verified: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    IamOwner,
    OrgOwner,
    OrgUserManager,
    OrgUserViewer,
    IamLoginClient,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    pub org_id: Option<String>,
}

/// A record's stored bytes. postcard fails only for data it cannot express (maps or sequences of
/// unknown length; none in the records) or when its output cannot grow — a `Vec` always can.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Room for an event or a lockout state at once (grown from empty, a 60-byte event was
    // reallocated three times).
    #[allow(clippy::expect_used)]
    postcard::to_extend(value, Vec::with_capacity(ENCODE_ROOM))
        .expect("records are plain data; encoding into a Vec cannot fail")
}

/// The first allocation of an encoded record.
const ENCODE_ROOM: usize = 128;

/// `#[serde(with = "crate::stored::state")]`: a public [`types::UserState`] field kept in memory
/// as it is and written as a [`State`].
pub mod state {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::State;
    use crate::types::UserState;

    pub fn serialize<S: Serializer>(state: &UserState, serializer: S) -> Result<S::Ok, S::Error> {
        State::from(*state).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UserState, D::Error> {
        State::deserialize(deserializer).map(UserState::from)
    }
}

/// Pairs of types that convert into each other field by field, variant by variant.
macro_rules! mirror_enum {
    ($stored:ident <-> $public:path { $($variant:ident),* $(,)? }) => {
        impl From<$public> for $stored {
            fn from(value: $public) -> Self {
                use $public as P;
                match value { $(P::$variant => $stored::$variant,)* }
            }
        }
        impl From<$stored> for $public {
            fn from(value: $stored) -> Self {
                use $public as P;
                match value { $($stored::$variant => P::$variant,)* }
            }
        }
    };
}

mirror_enum!(State <-> types::UserState { Active, Inactive, Deleted, Locked, Initial });
mirror_enum!(Gender <-> types::Gender { Unspecified, Female, Male, Diverse });
mirror_enum!(Role <-> access::Role { IamOwner, OrgOwner, OrgUserManager, OrgUserViewer, IamLoginClient });

macro_rules! mirror_struct {
    ($stored:ident <-> $public:path { $($field:ident),* $(,)? }) => {
        impl From<$public> for $stored {
            fn from(value: $public) -> Self {
                $stored { $($field: value.$field.into(),)* }
            }
        }
        impl From<$stored> for $public {
            fn from(value: $stored) -> Self {
                use $public as P;
                P { $($field: value.$field.into(),)* }
            }
        }
    };
}

mirror_struct!(Profile <-> types::Profile {
    given_name,
    family_name,
    nick_name,
    display_name,
    preferred_language,
    gender,
});
mirror_struct!(Email <-> types::Email { email, is_verified });
mirror_struct!(Phone <-> types::Phone { phone, is_verified });
mirror_struct!(Grant <-> access::Grant { role, org_id });

#[cfg(test)]
pub(crate) mod golden;
