//! The lifecycle transition table — the one place these rules live (the README's "Lifecycle
//! rules" documents them).
//!
//! | command | allowed from | result | otherwise |
//! |---|---|---|---|
//! | lock | ACTIVE, INITIAL | LOCKED | "user is not active or initial" |
//! | unlock | LOCKED | ACTIVE (failed attempts reset) | "user is not locked" |
//! | deactivate | ACTIVE, LOCKED | INACTIVE | INITIAL: "initial user can only be deleted"; INACTIVE: "user already inactive" |
//! | reactivate | INACTIVE | ACTIVE | "user is not inactive" |
//! | delete | any existing | DELETED | — |
//!
//! A DELETED user does not exist for any command (NotFound); that check happens before this table.

use crate::error::ErrorId;
use crate::types::UserState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Lock,
    Unlock,
    Deactivate,
    Reactivate,
    Delete,
}

/// The state `command` leads to from `from`, or why it is refused.
pub fn transition(from: UserState, command: Lifecycle) -> Result<UserState, ErrorId> {
    use Lifecycle::*;
    use UserState::*;
    if from == Deleted {
        return Err(ErrorId::UserNotFound);
    }
    match (command, from) {
        (Lock, Active | Initial) => Ok(Locked),
        (Lock, _) => Err(ErrorId::UserNotActiveOrInitial),
        (Unlock, Locked) => Ok(Active),
        (Unlock, _) => Err(ErrorId::UserNotLocked),
        (Deactivate, Active | Locked) => Ok(Inactive),
        (Deactivate, Initial) => Err(ErrorId::UserInitialOnlyDelete),
        (Deactivate, _) => Err(ErrorId::UserAlreadyInactive),
        (Reactivate, Inactive) => Ok(Active),
        (Reactivate, _) => Err(ErrorId::UserNotInactive),
        (Delete, _) => Ok(Deleted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Lifecycle::*;
    use UserState::*;

    /// Every command from every state, against the README's table of lifecycle rules.
    #[test]
    fn table() {
        let expected: &[(Lifecycle, UserState, Result<UserState, &str>)] = &[
            (Lock, Active, Ok(Locked)),
            (Lock, Initial, Ok(Locked)),
            (Lock, Locked, Err("USER-NOT-ACTIVE-OR-INITIAL")),
            (Lock, Inactive, Err("USER-NOT-ACTIVE-OR-INITIAL")),
            (Lock, Deleted, Err("USER-NOT-FOUND")),
            (Unlock, Locked, Ok(Active)),
            (Unlock, Active, Err("USER-NOT-LOCKED")),
            (Unlock, Initial, Err("USER-NOT-LOCKED")),
            (Unlock, Inactive, Err("USER-NOT-LOCKED")),
            (Unlock, Deleted, Err("USER-NOT-FOUND")),
            (Deactivate, Active, Ok(Inactive)),
            (Deactivate, Locked, Ok(Inactive)),
            (Deactivate, Initial, Err("USER-INITIAL-ONLY-DELETE")),
            (Deactivate, Inactive, Err("USER-ALREADY-INACTIVE")),
            (Deactivate, Deleted, Err("USER-NOT-FOUND")),
            (Reactivate, Inactive, Ok(Active)),
            (Reactivate, Active, Err("USER-NOT-INACTIVE")),
            (Reactivate, Locked, Err("USER-NOT-INACTIVE")),
            (Reactivate, Initial, Err("USER-NOT-INACTIVE")),
            (Reactivate, Deleted, Err("USER-NOT-FOUND")),
            (Delete, Active, Ok(Deleted)),
            (Delete, Inactive, Ok(Deleted)),
            (Delete, Locked, Ok(Deleted)),
            (Delete, Initial, Ok(Deleted)),
            (Delete, Deleted, Err("USER-NOT-FOUND")),
        ];
        assert_eq!(expected.len(), 25, "5 commands x 5 states");
        for (command, from, want) in expected {
            let got = transition(*from, *command).map_err(|e| e.id());
            assert_eq!(&got, want, "{command:?} from {from:?}");
        }
    }

    #[test]
    fn precondition_messages_match_the_spec() {
        assert_eq!(ErrorId::UserNotLocked.message(), "user is not locked");
        assert_eq!(
            ErrorId::UserNotActiveOrInitial.message(),
            "user is not active or initial"
        );
        assert_eq!(
            ErrorId::UserInitialOnlyDelete.message(),
            "initial user can only be deleted"
        );
        assert_eq!(
            ErrorId::UserAlreadyInactive.message(),
            "user already inactive"
        );
        assert_eq!(ErrorId::UserNotInactive.message(), "user is not inactive");
    }
}
