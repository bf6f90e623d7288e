//! AddPersonalAccessToken and RemovePersonalAccessToken (machine users only).

use serde::{Deserialize, Serialize};

use latchkey_engine::{Caller, Engine, Error};

use super::{HasUserId, Rpc};
use crate::wire::{parse_timestamp, timestamp, DetailsResponse};

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

pub struct AddPersonalAccessToken;

impl Rpc for AddPersonalAccessToken {
    const SERVICE: &'static str = "zitadel.user.v2.UserService";
    const METHOD: &'static str = "AddPersonalAccessToken";
    type Request = AddPatRequest;
    type Response = AddPatResponse;

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

pub struct RemovePersonalAccessToken;

impl Rpc for RemovePersonalAccessToken {
    const SERVICE: &'static str = "zitadel.user.v2.UserService";
    const METHOD: &'static str = "RemovePersonalAccessToken";
    type Request = RemovePatRequest;
    type Response = DetailsResponse;

    async fn call(
        engine: &Engine,
        caller: &Caller,
        request: RemovePatRequest,
    ) -> Result<DetailsResponse, Error> {
        engine
            .remove_personal_access_token(caller, &request.user_id, &request.token_id)
            .await
            .map(Into::into)
    }
}
