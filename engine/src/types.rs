//! The engine's public data types: what commands take and return. Protocol-neutral; each
//! transport maps them to its own wire shape. None of them is ever written to disk as it is (they
//! have no serde impls on purpose): the store holds the mirror types of `stored.rs`.

use chrono::{DateTime, Utc};

/// The v2 user states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserState {
    Active,
    Inactive,
    Deleted,
    Locked,
    Initial,
}

/// What every manipulation returns, and reads return for the last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    /// Sequence of the event this describes (1 = creation, +1 per event, no gaps).
    pub sequence: u64,
    pub change_date: DateTime<Utc>,
    /// The organization that owns the resource.
    pub resource_owner: String,
    pub creation_date: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gender {
    #[default]
    Unspecified,
    Female,
    Male,
    Diverse,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub given_name: String,
    pub family_name: String,
    pub nick_name: Option<String>,
    pub display_name: Option<String>,
    pub preferred_language: Option<String>,
    pub gender: Gender,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Email {
    pub email: String,
    pub is_verified: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Phone {
    pub phone: String,
    pub is_verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HumanUser {
    pub profile: Profile,
    pub email: Email,
    pub phone: Option<Phone>,
    pub password_change_required: bool,
    pub password_changed: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineUser {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserType {
    Human(HumanUser),
    Machine(MachineUser),
}

/// Who or what locked a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockedBy {
    /// An administrator's LockUser.
    Admin,
    /// The lockout policy's limit of wrong passwords.
    FailedPasswords,
}

/// A lock in force: why, since when, and until when if it lifts by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockInfo {
    pub reason: LockedBy,
    pub at: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

/// A user's lockout state, as reads show it (a Latchkey extension of ZITADEL's user).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lockout {
    /// Wrong passwords since the last successful check, password change or unlock.
    pub failed_password_attempts: u32,
    /// The lock, while the user is LOCKED.
    pub lock: Option<LockInfo>,
    /// Automatic unlocks in a row with no successful check between them.
    pub temporary_lockouts: u32,
}

/// A user as reads return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub details: Details,
    pub state: UserState,
    pub username: String,
    pub login_names: Vec<String>,
    pub preferred_login_name: String,
    pub user_type: UserType,
    pub lockout: Lockout,
}

/// How a new human user's password is given.
#[derive(Debug, Clone)]
pub enum PasswordInput {
    /// Plain text: hashed with Argon2id off the async workers; only the hash is stored.
    Plain {
        password: String,
        change_required: bool,
    },
    /// A PHC-format argon2 or bcrypt hash, stored as-is.
    Hashed { hash: String, change_required: bool },
}

/// Which organization a request targets.
#[derive(Debug, Clone)]
pub enum OrgSelector {
    Id(String),
    Domain(String),
}

/// AddHumanUser's input.
#[derive(Debug, Clone, Default)]
pub struct NewHuman {
    pub user_id: Option<String>,
    pub username: Option<String>,
    /// Default: the caller's organization.
    pub organization: Option<OrgSelector>,
    pub profile: Profile,
    pub email: Email,
    pub phone: Option<Phone>,
    pub password: Option<PasswordInput>,
}

/// CreateUser's machine input.
#[derive(Debug, Clone, Default)]
pub struct NewMachine {
    pub organization_id: String,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub name: String,
    pub description: Option<String>,
}

/// A freshly created user.
#[derive(Debug, Clone)]
pub struct Created {
    pub user_id: String,
    pub details: Details,
}

/// A freshly issued personal access token. `token` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token_id: String,
    pub token: String,
    pub creation_date: DateTime<Utc>,
}

/// Text matching of list queries (TextQueryMethod).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TextMatch {
    #[default]
    Equals,
    EqualsIgnoreCase,
    StartsWith,
    StartsWithIgnoreCase,
    Contains,
    ContainsIgnoreCase,
    EndsWith,
    EndsWithIgnoreCase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKindFilter {
    Human,
    Machine,
}

/// One ListUsers filter; a list of them is combined with AND.
#[derive(Debug, Clone)]
pub enum UserQuery {
    UserName(String, TextMatch),
    FirstName(String, TextMatch),
    LastName(String, TextMatch),
    NickName(String, TextMatch),
    DisplayName(String, TextMatch),
    Email(String, TextMatch),
    Phone(String),
    LoginName(String, TextMatch),
    State(UserState),
    Type(UserKindFilter),
    OrganizationId(String),
    InUserIds(Vec<String>),
    InUserEmails(Vec<String>),
    Or(Vec<UserQuery>),
    And(Vec<UserQuery>),
    Not(Box<UserQuery>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortBy {
    #[default]
    CreationDate,
    UserName,
    FirstName,
    LastName,
    NickName,
    DisplayName,
    Email,
    State,
    Type,
}

#[derive(Debug, Clone, Default)]
pub struct ListUsers {
    pub offset: u64,
    /// 0 means the default (100); capped at 1000.
    pub limit: u32,
    pub asc: bool,
    pub sort_by: SortBy,
    pub queries: Vec<UserQuery>,
}

#[derive(Debug, Clone)]
pub struct UserList {
    pub total_result: u64,
    pub processed_sequence: u64,
    pub timestamp: DateTime<Utc>,
    pub sort_by: SortBy,
    pub result: Vec<User>,
}

/// Where an administrator role applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Instance,
    Organization(String),
}
