//! SetPassword (`POST /v2/users/{userId}/password`): a new password, as an administrator or with
//! the current one. The rules (the current password counts as a check, the count is reset, a lock
//! stays) are the engine's (`engine/src/passwords.rs`).

use latchkey_engine::{Error, ErrorId, PasswordInput};

use super::{Call, Rpc};
use crate::proto::zitadel::user::v2::{self as user, set_password_request::Verification};
use crate::wire::{details, write_details_answer};

pub struct SetPassword;

impl Rpc for SetPassword {
    type Request = user::SetPasswordRequest;
    type Response = user::SetPasswordResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: user::SetPasswordRequest,
    ) -> Result<user::SetPasswordResponse, Error> {
        let new = request
            .new_password
            .ok_or_else(|| Error::invalid("newPassword is required"))?;
        let current = match request.verification {
            None => None,
            Some(Verification::CurrentPassword(current)) => Some(current),
            Some(Verification::VerificationCode(_)) => {
                return Err(Error::with(
                    ErrorId::Unsupported,
                    "verificationCode is not supported by Latchkey yet (it sends no password \
                     reset codes); set the password as an administrator or with currentPassword",
                ))
            }
        };
        let input = PasswordInput::Plain {
            password: new.password,
            change_required: new.change_required,
        };
        let done = engine
            .set_password(caller, &request.user_id, input, current.as_deref())
            .await?;
        Ok(user::SetPasswordResponse {
            details: Some(details(done)),
        })
    }

    fn scope(_call: &Call<'_>, request: &user::SetPasswordRequest) -> Option<Vec<u8>> {
        Some(latchkey_engine::snapshot_key(&request.user_id))
    }

    fn set_path(request: &mut user::SetPasswordRequest, name: &str, value: &str) -> bool {
        match name {
            "userId" => request.user_id = value.to_owned(),
            _ => return false,
        }
        true
    }

    fn write_json(
        response: &user::SetPasswordResponse,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        write_details_answer(response.details.as_ref(), out)
    }
}
