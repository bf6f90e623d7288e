//! AddPersonalAccessToken and RemovePersonalAccessToken (machine users only).

use serde::{Deserialize, Serialize};

use latchkey_engine::{Caller, Engine, Error};

use super::{HasUserId, Rpc};
use crate::wire::{parse_timestamp, timestamp, DetailsJson};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddPatRequest {
    #[serde(default, alias = "user_id")]
    pub user_id: String,
    #[serde(alias = "expiration_date")]
    pub expiration_date: Option<String>,
}

impl HasUserId for AddPatRequest {
    fn set_user_id(&mut self, id: String) {
        self.user_id = id;
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddPatResponse {
    pub creation_date: String,
    pub token_id: String,
    pub token: String,
}

impl crate::wire::JsonAnswer for AddPatResponse {}

pub struct AddPersonalAccessToken;

impl Rpc for AddPersonalAccessToken {
    const SERVICE: &'static str = "zitadel.user.v2.UserService";
    const METHOD: &'static str = "AddPersonalAccessToken";
    type Request = AddPatRequest;
    type Response = AddPatResponse;
    type ProtoRequest = crate::proto::zitadel::user::v2::AddPersonalAccessTokenRequest;
    type ProtoResponse = crate::proto::zitadel::user::v2::AddPersonalAccessTokenResponse;

    async fn call(
        engine: &Engine,
        caller: &Caller,
        request: AddPatRequest,
    ) -> Result<AddPatResponse, Error> {
        let expiration = match request.expiration_date.as_deref() {
            None | Some("") => None,
            Some(text) => Some(parse_timestamp("expirationDate", text)?),
        };
        let token = engine
            .add_personal_access_token(caller, &request.user_id, expiration)
            .await?;
        Ok(AddPatResponse {
            creation_date: timestamp(&token.creation_date),
            token_id: token.token_id,
            token: token.token,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovePatRequest {
    #[serde(default, alias = "user_id")]
    pub user_id: String,
    #[serde(default, alias = "token_id")]
    pub token_id: String,
}

/// ZITADEL answers with `deletionDate`; Latchkey adds the user's `details` (spec table).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovePatResponse {
    pub deletion_date: String,
    pub details: DetailsJson,
}

impl crate::wire::JsonAnswer for RemovePatResponse {}

pub struct RemovePersonalAccessToken;

impl Rpc for RemovePersonalAccessToken {
    const SERVICE: &'static str = "zitadel.user.v2.UserService";
    const METHOD: &'static str = "RemovePersonalAccessToken";
    type Request = RemovePatRequest;
    type Response = RemovePatResponse;
    type ProtoRequest = crate::proto::zitadel::user::v2::RemovePersonalAccessTokenRequest;
    type ProtoResponse = crate::proto::zitadel::user::v2::RemovePersonalAccessTokenResponse;

    async fn call(
        engine: &Engine,
        caller: &Caller,
        request: RemovePatRequest,
    ) -> Result<RemovePatResponse, Error> {
        let details = engine
            .remove_personal_access_token(caller, &request.user_id, &request.token_id)
            .await?;
        Ok(RemovePatResponse {
            deletion_date: timestamp(&details.change_date),
            details: (&details).into(),
        })
    }
}
