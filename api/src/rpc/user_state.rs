//! The state commands: LockUser, UnlockUser, DeactivateUser, ReactivateUser, DeleteUser.
//! Each takes `{userId}` and answers `{details}`; the rules are in the engine's transition table.

use latchkey_engine::Error;

use super::{Call, Rpc};
use crate::proto::zitadel::user::v2 as user;
use crate::wire::{details, write_details_answer};

macro_rules! state_rpc {
    ($name:ident, $call:ident, $request:ident, $response:ident) => {
        pub struct $name;
        impl Rpc for $name {
            type Request = user::$request;
            type Response = user::$response;

            async fn call(
                Call { engine, caller, .. }: Call<'_>,
                request: user::$request,
            ) -> Result<user::$response, Error> {
                let done = engine.$call(caller, &request.user_id).await?;
                Ok(user::$response {
                    details: Some(details(done)),
                })
            }

            fn scope(_call: &Call<'_>, request: &user::$request) -> Option<Vec<u8>> {
                Some(latchkey_engine::snapshot_key(&request.user_id))
            }

            fn set_path(request: &mut user::$request, name: &str, value: &str) -> bool {
                match name {
                    "userId" => request.user_id = value.to_owned(),
                    _ => return false,
                }
                true
            }

            fn write_json(response: &user::$response, out: &mut Vec<u8>) -> serde_json::Result<()> {
                write_details_answer(response.details.as_ref(), out)
            }
        }
    };
}

state_rpc!(
    UnlockUser,
    unlock_user,
    UnlockUserRequest,
    UnlockUserResponse
);
state_rpc!(LockUser, lock_user, LockUserRequest, LockUserResponse);
state_rpc!(
    DeactivateUser,
    deactivate_user,
    DeactivateUserRequest,
    DeactivateUserResponse
);
state_rpc!(
    ReactivateUser,
    reactivate_user,
    ReactivateUserRequest,
    ReactivateUserResponse
);
state_rpc!(
    DeleteUser,
    delete_user,
    DeleteUserRequest,
    DeleteUserResponse
);
