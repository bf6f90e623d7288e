//! AddPersonalAccessToken and RemovePersonalAccessToken (machine users only).

use latchkey_engine::Error;

use super::{Call, Rpc};
use crate::proto::zitadel::user::v2 as user;
use crate::wire::details;

pub struct AddPersonalAccessToken;

impl Rpc for AddPersonalAccessToken {
    type Request = user::AddPersonalAccessTokenRequest;
    type Response = user::AddPersonalAccessTokenResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: user::AddPersonalAccessTokenRequest,
    ) -> Result<user::AddPersonalAccessTokenResponse, Error> {
        let expiration =
            match request.expiration_date {
                None => None,
                Some(at) => Some(at.to_datetime().ok_or_else(|| {
                    Error::invalid("expirationDate must be an RFC 3339 timestamp")
                })?),
            };
        let token = engine
            .add_personal_access_token(caller, &request.user_id, expiration)
            .await?;
        Ok(user::AddPersonalAccessTokenResponse {
            creation_date: Some(token.creation_date.into()),
            token_id: token.token_id,
            token: token.token,
        })
    }

    fn scope(_call: &Call<'_>, request: &user::AddPersonalAccessTokenRequest) -> Option<Vec<u8>> {
        Some(latchkey_engine::snapshot_key(&request.user_id))
    }

    fn set_path(
        request: &mut user::AddPersonalAccessTokenRequest,
        name: &str,
        value: &str,
    ) -> bool {
        match name {
            "userId" => request.user_id = value.to_owned(),
            _ => return false,
        }
        true
    }
}

/// ZITADEL answers with `deletionDate`; Latchkey adds the user's `details` (field 2).
pub struct RemovePersonalAccessToken;

impl Rpc for RemovePersonalAccessToken {
    type Request = user::RemovePersonalAccessTokenRequest;
    type Response = user::RemovePersonalAccessTokenResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: user::RemovePersonalAccessTokenRequest,
    ) -> Result<user::RemovePersonalAccessTokenResponse, Error> {
        let done = engine
            .remove_personal_access_token(caller, &request.user_id, &request.token_id)
            .await?;
        Ok(user::RemovePersonalAccessTokenResponse {
            deletion_date: Some(done.change_date.into()),
            details: Some(details(done)),
        })
    }

    fn scope(
        _call: &Call<'_>,
        request: &user::RemovePersonalAccessTokenRequest,
    ) -> Option<Vec<u8>> {
        Some(latchkey_engine::snapshot_key(&request.user_id))
    }

    fn set_path(
        request: &mut user::RemovePersonalAccessTokenRequest,
        name: &str,
        value: &str,
    ) -> bool {
        match name {
            "userId" => request.user_id = value.to_owned(),
            "tokenId" => request.token_id = value.to_owned(),
            _ => return false,
        }
        true
    }
}
