//! The engine's one error type and the table of stable error ids.
//!
//! Every error a client can see is one row of [`ErrorId`]: a gRPC code, a stable machine-readable
//! id and a default message. Transports map [`Code`] to their own status once, at the edge
//! (REST status + body, Connect error JSON, grpc-status); nothing else in the code picks codes.

use std::fmt;

/// gRPC status codes used on the wire (numbers as in google.rpc.Code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    pub fn number(self) -> i32 {
        self as i32
    }
}

macro_rules! error_ids {
    ($( $variant:ident => ($code:ident, $id:literal, $message:literal), )*) => {
        /// Every stable error id Latchkey returns. This is the table the README documents.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorId { $( $variant, )* }

        impl ErrorId {
            pub const ALL: &'static [ErrorId] = &[ $( ErrorId::$variant, )* ];
            pub fn code(self) -> Code { match self { $( ErrorId::$variant => Code::$code, )* } }
            pub fn id(self) -> &'static str { match self { $( ErrorId::$variant => $id, )* } }
            pub fn message(self) -> &'static str { match self { $( ErrorId::$variant => $message, )* } }
        }
    };
}

error_ids! {
    // domain preconditions (the lifecycle rules, `user/state.rs`)
    UserNotLocked => (FailedPrecondition, "USER-NOT-LOCKED", "user is not locked"),
    UserNotActiveOrInitial => (FailedPrecondition, "USER-NOT-ACTIVE-OR-INITIAL", "user is not active or initial"),
    UserInitialOnlyDelete => (FailedPrecondition, "USER-INITIAL-ONLY-DELETE", "initial user can only be deleted"),
    UserAlreadyInactive => (FailedPrecondition, "USER-ALREADY-INACTIVE", "user already inactive"),
    UserNotInactive => (FailedPrecondition, "USER-NOT-INACTIVE", "user is not inactive"),
    UserNotMachine => (FailedPrecondition, "USER-NOT-MACHINE", "personal access tokens can only be added to machine users"),
    UserNotHuman => (FailedPrecondition, "USER-NOT-HUMAN", "passwords can only be set on human users"),
    // lookups and uniqueness
    UserNotFound => (NotFound, "USER-NOT-FOUND", "user not found"),
    OrgNotFound => (NotFound, "ORG-NOT-FOUND", "organization not found"),
    TokenNotFound => (NotFound, "TOKEN-NOT-FOUND", "personal access token not found"),
    BulkJobNotFound => (NotFound, "BULK-JOB-NOT-FOUND", "bulk unlock job not found"),
    UserIdTaken => (AlreadyExists, "USER-ID-TAKEN", "a user with this id already exists"),
    UsernameTaken => (AlreadyExists, "USERNAME-TAKEN", "username is already taken in this organization"),
    OrgIdTaken => (AlreadyExists, "ORG-ID-TAKEN", "an organization with this id already exists"),
    OrgNameTaken => (AlreadyExists, "ORG-NAME-TAKEN", "an organization with this name already exists"),
    // input
    InvalidUserId => (InvalidArgument, "USER-ID-INVALID", "userId must be 1 to 200 characters"),
    InvalidOrgId => (InvalidArgument, "ORG-ID-INVALID", "organization id must be 1 to 200 characters"),
    InvalidArgument => (InvalidArgument, "ARGUMENT-INVALID", "invalid argument"),
    InvalidPassword => (InvalidArgument, "PASSWORD-INVALID", "password must be 1 to 1000 characters"),
    InvalidPasswordHash => (InvalidArgument, "PASSWORD-HASH-INVALID", "hashedPassword must be a PHC-format argon2 or bcrypt hash"),
    InvalidRole => (InvalidArgument, "ROLE-INVALID", "unknown role for this resource"),
    MalformedBody => (InvalidArgument, "BODY-MALFORMED", "request body is not valid JSON for this method"),
    BodyTooLarge => (ResourceExhausted, "BODY-TOO-LARGE", "request body is too large"),
    UnsupportedMediaType => (InvalidArgument, "CONTENT-TYPE-UNSUPPORTED", "content type not supported here; use application/json or application/proto"),
    RouteNotFound => (NotFound, "ROUTE-NOT-FOUND", "no such route"),
    ListTooBroad => (FailedPrecondition, "LIST-TOO-BROAD", "this list would read more than 100,000 users: narrow it (organization, state, type, or a prefix of username, login name, email or name) or sort by the queried column"),
    MethodNotAllowed => (Unimplemented, "METHOD-NOT-ALLOWED", "method not allowed on this route"),
    // callers
    Unauthenticated => (Unauthenticated, "AUTH-UNAUTHENTICATED", "missing, malformed, unknown, expired or revoked token"),
    PermissionDenied => (PermissionDenied, "AUTH-PERMISSION-DENIED", "caller lacks the permission for this operation"),
    // runtime
    StoreUnavailable => (Unavailable, "STORE-UNAVAILABLE", "the change could not be made durable; nothing was changed"),
    StoreOutcomeUnknown => (Unavailable, "STORE-OUTCOME-UNKNOWN", "the change was applied but could not be confirmed durable; read the user to learn its outcome"),
    ShuttingDown => (Unavailable, "SHUTTING-DOWN", "the engine is shutting down"),
    NoOwner => (Unavailable, "NO-OWNER", "cluster mode: no node serves this user right now (a failover is in progress); nothing was changed, retry"),
    Timeout => (DeadlineExceeded, "CALL-TIMEOUT", "no answer, or no confirmation that the change is durable, within the call timeout; the outcome is unknown"),
    ActorFailed => (Internal, "USER-ACTOR-FAILED", "the user's actor failed while handling the request; it will be reloaded from durable state"),
    Internal => (Internal, "INTERNAL", "internal error"),
    Unsupported => (Unimplemented, "FEATURE-UNSUPPORTED", "this feature is not supported by Latchkey yet"),
    ChecksBusy => (ResourceExhausted, "PASSWORD-CHECKS-BUSY", "too many password checks are waiting; try again shortly"),
    SessionUserChange => (InvalidArgument, "SESSION-USER-CHANGE", "user change not possible"),
    PolicyNotChanged => (FailedPrecondition, "POLICY-NOT-CHANGED", "the policy already has these values"),
    // ZITADEL's own ids, for what its login and SDKs read (the session and lockout API). On the
    // wire their message carries the id, as ZITADEL's does: "Password is invalid (COMMAND-3M0fs)".
    PasswordInvalid => (InvalidArgument, "COMMAND-3M0fs", "Password is invalid"),
    UserLocked => (FailedPrecondition, "COMMAND-JLK35", "User is locked"),
    UserLockedDuringCheck => (FailedPrecondition, "COMMAND-SFA3t", "User is locked"),
    CheckedUserNotActive => (FailedPrecondition, "SESSION-Gj4ko", "Errors.User.NotActive"),
    CheckedUserNotFound => (NotFound, "QUERY-Dfbg2", "User could not be found"),
    PasswordUserNotFound => (FailedPrecondition, "COMMAND-3n77z", "Errors.User.NotFound"),
    PasswordNotSet => (FailedPrecondition, "COMMAND-3nJ4t", "User has not set a password"),
    PasswordUserMissing => (FailedPrecondition, "COMMAND-Sfw3f", "Errors.User.UserIDMissing"),
    PasswordCheckInternal => (Internal, "COMMAND-CahN2", "Errors.Internal"),
    SessionNotFound => (NotFound, "QUERY-SFeaa", "Session does not exist"),
    SessionTokenInvalid => (PermissionDenied, "COMMAND-sGr42", "Errors.Session.Token.Invalid"),
    SessionReadDenied => (PermissionDenied, "QUERY-dsfr3", "Errors.PermissionDenied"),
    SessionTerminated => (FailedPrecondition, "COMMAND-Hewfq", "Errors.Session.Terminated"),
    SessionExpired => (FailedPrecondition, "COMMAND-Hkl3d", "Errors.Session.Expired"),
    SessionLifetimeInvalid => (InvalidArgument, "COMMAND-asEG4", "Errors.Session.PositiveLifetime"),
    OrgPolicyExists => (AlreadyExists, "ORG-0olDf", "Errors.ORG.LockoutPolicy.AlreadyExists"),
    OrgPolicyNotFound => (NotFound, "ORG-ADfs1", "Errors.Org.LockoutPolicy.NotFound"),
    OrgPolicyNotFoundReset => (NotFound, "ORG-D4zuz", "Errors.Org.LockoutPolicy.NotFound"),
    OrgPolicyNotChanged => (FailedPrecondition, "ORG-0JFSr", "Errors.Org.LockoutPolicy.NotChanged"),
    InstancePolicyNotChanged => (FailedPrecondition, "INSTANCE-0psjF", "Errors.IAM.LockoutPolicy.NotChanged"),
}

impl ErrorId {
    /// ZITADEL's own ids (with lower-case letters; Latchkey's are upper-case): their wire
    /// message ends in the id, as ZITADEL writes it.
    pub fn is_zitadel(self) -> bool {
        self.id().bytes().any(|b| b.is_ascii_lowercase())
    }
}

/// An error with its stable id and the message a client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub id: ErrorId,
    /// Overrides the table's message when set (e.g. naming the offending field).
    pub detail: Option<String>,
    /// Password checks: the user's failed attempts, sent as ZITADEL's `CredentialsCheckError`
    /// (what its login reads to say "n of max attempts").
    pub failed_attempts: Option<u32>,
}

impl Error {
    pub fn new(id: ErrorId) -> Self {
        Error {
            id,
            detail: None,
            failed_attempts: None,
        }
    }
    pub fn with(id: ErrorId, detail: impl Into<String>) -> Self {
        Error {
            id,
            detail: Some(detail.into()),
            failed_attempts: None,
        }
    }
    /// A password check's refusal, carrying the user's failed attempts.
    pub fn credentials(id: ErrorId, failed_attempts: u32) -> Self {
        Error {
            id,
            detail: None,
            failed_attempts: Some(failed_attempts),
        }
    }
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::with(ErrorId::InvalidArgument, detail)
    }
    pub fn code(&self) -> Code {
        self.id.code()
    }
    pub fn message(&self) -> &str {
        self.detail.as_deref().unwrap_or(self.id.message())
    }
    /// The status message on the wire: the message, followed by the id for ZITADEL's own ids.
    pub fn wire_message(&self) -> std::borrow::Cow<'_, str> {
        if self.id.is_zitadel() {
            format!("{} ({})", self.message(), self.id.id()).into()
        } else {
            self.message().into()
        }
    }
}

impl From<ErrorId> for Error {
    fn from(id: ErrorId) -> Self {
        Error::new(id)
    }
}

impl From<latchkey_storage::StoreError> for Error {
    fn from(e: latchkey_storage::StoreError) -> Self {
        match e {
            latchkey_storage::StoreError::Closed => Error::new(ErrorId::ShuttingDown),
            // Logged once by the store when it failed; not again for every refused request.
            latchkey_storage::StoreError::Failed(_) => Error::new(ErrorId::StoreUnavailable),
            // Cluster mode: the user is (now) another node's; nothing was written.
            latchkey_storage::StoreError::NotServed(cause) => {
                tracing::debug!("{cause}");
                Error::new(ErrorId::NoOwner)
            }
            latchkey_storage::StoreError::NotDurable(cause) => {
                tracing::warn!("store flush failed: {cause}");
                Error::new(ErrorId::StoreOutcomeUnknown)
            }
            other => {
                tracing::warn!("store error: {other}");
                Error::new(ErrorId::StoreUnavailable)
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.id.id())
    }
}

impl std::error::Error for Error {}

/// Failures of [`crate::Engine::open`]: the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] latchkey_storage::StoreError),
    #[error("{0}")]
    Engine(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_kebab() {
        let mut seen = HashSet::new();
        for id in ErrorId::ALL {
            assert!(seen.insert(id.id()), "duplicate id {}", id.id());
            assert!(id
                .id()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'));
            // Latchkey's ids are upper-case; ZITADEL's carry lower-case letters.
            assert!(id
                .id()
                .split('-')
                .next()
                .is_some_and(|prefix| prefix.chars().all(|c| c.is_ascii_uppercase())));
        }
        assert_eq!(
            Error::credentials(ErrorId::PasswordInvalid, 3).wire_message(),
            "Password is invalid (COMMAND-3M0fs)"
        );
        assert_eq!(
            Error::new(ErrorId::UserNotLocked).wire_message(),
            "user is not locked"
        );
    }
}
