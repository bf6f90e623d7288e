//! The state commands: LockUser, UnlockUser, DeactivateUser, ReactivateUser, DeleteUser.
//! Each takes `{userId}` and returns `{details}`; the rules are in the engine's transition table.

use latchkey_engine::{Caller, Engine, Error};

use super::Rpc;
use crate::wire::{DetailsResponse, UserIdRequest};

macro_rules! state_rpc {
    ($name:ident, $method:literal, $call:ident) => {
        pub struct $name;
        impl Rpc for $name {
            const SERVICE: &'static str = "zitadel.user.v2.UserService";
            const METHOD: &'static str = $method;
            type Request = UserIdRequest;
            type Response = DetailsResponse;
            async fn call(
                engine: &Engine,
                caller: &Caller,
                request: UserIdRequest,
            ) -> Result<DetailsResponse, Error> {
                engine.$call(caller, &request.user_id).await.map(Into::into)
            }
        }
    };
}

state_rpc!(UnlockUser, "UnlockUser", unlock_user);
state_rpc!(LockUser, "LockUser", lock_user);
state_rpc!(DeactivateUser, "DeactivateUser", deactivate_user);
state_rpc!(ReactivateUser, "ReactivateUser", reactivate_user);
state_rpc!(DeleteUser, "DeleteUser", delete_user);
