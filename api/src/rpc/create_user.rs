//! CreateUser (`POST /v2/users/new`): a human or a machine user in a given organization.

use serde::{Deserialize, Serialize};

use latchkey_engine::{Caller, Engine, Error, NewMachine, OrgSelector};

use super::add_human_user::HumanInputJson;
use super::Rpc;
use crate::wire::timestamp;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineInputJson {
    #[serde(default)]
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserRequest {
    #[serde(default, alias = "organization_id")]
    pub organization_id: String,
    #[serde(alias = "user_id")]
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub human: Option<HumanInputJson>,
    pub machine: Option<MachineInputJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserResponse {
    pub id: String,
    pub creation_date: String,
}

impl crate::wire::JsonAnswer for CreateUserResponse {}

pub struct CreateUser;

impl Rpc for CreateUser {
    const SERVICE: &'static str = "zitadel.user.v2.UserService";
    const METHOD: &'static str = "CreateUser";
    type Request = CreateUserRequest;
    type Response = CreateUserResponse;
    type ProtoRequest = crate::proto::zitadel::user::v2::CreateUserRequest;
    type ProtoResponse = crate::proto::zitadel::user::v2::CreateUserResponse;

    async fn call(
        engine: &Engine,
        caller: &Caller,
        request: CreateUserRequest,
    ) -> Result<CreateUserResponse, Error> {
        let created = match (request.human, request.machine) {
            (Some(human), None) => {
                let input = human.into_new_human(
                    request.user_id,
                    request.username,
                    Some(OrgSelector::Id(request.organization_id)),
                )?;
                engine.add_human_user(caller, input).await?
            }
            (None, Some(machine)) => {
                let input = NewMachine {
                    organization_id: request.organization_id,
                    user_id: request.user_id,
                    username: request.username,
                    name: machine.name,
                    description: machine.description,
                };
                engine.create_machine_user(caller, input).await?
            }
            _ => {
                return Err(Error::invalid(
                    "exactly one of human or machine is required",
                ))
            }
        };
        Ok(CreateUserResponse {
            id: created.user_id,
            creation_date: timestamp(&created.details.creation_date),
        })
    }
}
