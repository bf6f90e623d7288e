//! The state commands: LockUser, UnlockUser, DeactivateUser, ReactivateUser, DeleteUser.
//! Each takes `{userId}` and returns `{details}`; the rules are in the engine's transition table.

use latchkey_engine::{Caller, Engine, Error};

use super::Rpc;
use crate::proto::zitadel::user::v2 as user;
use crate::wire::{DetailsResponse, UserIdRequest};

macro_rules! state_rpc {
    ($name:ident, $method:literal, $call:ident, $proto_request:ident, $proto_response:ident) => {
        pub struct $name;
        impl Rpc for $name {
            const SERVICE: &'static str = "zitadel.user.v2.UserService";
            const METHOD: &'static str = $method;
            type Request = UserIdRequest;
            type Response = DetailsResponse;
            type ProtoRequest = user::$proto_request;
            type ProtoResponse = user::$proto_response;
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

state_rpc!(
    UnlockUser,
    "UnlockUser",
    unlock_user,
    UnlockUserRequest,
    UnlockUserResponse
);
state_rpc!(
    LockUser,
    "LockUser",
    lock_user,
    LockUserRequest,
    LockUserResponse
);
state_rpc!(
    DeactivateUser,
    "DeactivateUser",
    deactivate_user,
    DeactivateUserRequest,
    DeactivateUserResponse
);
state_rpc!(
    ReactivateUser,
    "ReactivateUser",
    reactivate_user,
    ReactivateUserRequest,
    ReactivateUserResponse
);
state_rpc!(
    DeleteUser,
    "DeleteUser",
    delete_user,
    DeleteUserRequest,
    DeleteUserResponse
);
