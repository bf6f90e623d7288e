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
    // lookups and uniqueness
    UserNotFound => (NotFound, "USER-NOT-FOUND", "user not found"),
    OrgNotFound => (NotFound, "ORG-NOT-FOUND", "organization not found"),
    TokenNotFound => (NotFound, "TOKEN-NOT-FOUND", "personal access token not found"),
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
    MethodNotAllowed => (Unimplemented, "METHOD-NOT-ALLOWED", "method not allowed on this route"),
    // callers
    Unauthenticated => (Unauthenticated, "AUTH-UNAUTHENTICATED", "missing, malformed, unknown, expired or revoked token"),
    PermissionDenied => (PermissionDenied, "AUTH-PERMISSION-DENIED", "caller lacks the permission for this operation"),
    // runtime
    StoreUnavailable => (Unavailable, "STORE-UNAVAILABLE", "the change could not be made durable; nothing was changed"),
    StoreOutcomeUnknown => (Unavailable, "STORE-OUTCOME-UNKNOWN", "the change was applied but could not be confirmed durable; read the user to learn its outcome"),
    ShuttingDown => (Unavailable, "SHUTTING-DOWN", "the engine is shutting down"),
    Timeout => (DeadlineExceeded, "CALL-TIMEOUT", "no answer, or no confirmation that the change is durable, within the call timeout; the outcome is unknown"),
    ActorFailed => (Internal, "USER-ACTOR-FAILED", "the user's actor failed while handling the request; it will be reloaded from durable state"),
    Internal => (Internal, "INTERNAL", "internal error"),
    Unsupported => (Unimplemented, "FEATURE-UNSUPPORTED", "this feature is not supported by Latchkey yet"),
}

/// An error with its stable id and the message a client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub id: ErrorId,
    /// Overrides the table's message when set (e.g. naming the offending field).
    pub detail: Option<String>,
}

impl Error {
    pub fn new(id: ErrorId) -> Self {
        Error { id, detail: None }
    }
    pub fn with(id: ErrorId, detail: impl Into<String>) -> Self {
        Error {
            id,
            detail: Some(detail.into()),
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
    fn ids_are_unique_and_upper_kebab() {
        let mut seen = HashSet::new();
        for id in ErrorId::ALL {
            assert!(seen.insert(id.id()), "duplicate id {}", id.id());
            assert!(id
                .id()
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '-' || c.is_ascii_digit()));
        }
    }
}
