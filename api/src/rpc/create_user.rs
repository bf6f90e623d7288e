//! CreateUser (`POST /v2/users/new`): a human or a machine user in a given organization.

use latchkey_engine::{Error, NewMachine, OrgSelector};

use super::add_human_user::HumanInput;
use super::{Call, Rpc};
use crate::proto::zitadel::user::v2 as user;
use crate::proto::zitadel::user::v2::create_user_request;

pub struct CreateUser;

impl Rpc for CreateUser {
    type Request = user::CreateUserRequest;
    type Response = user::CreateUserResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: user::CreateUserRequest,
    ) -> Result<user::CreateUserResponse, Error> {
        let created = match request.user_type {
            Some(create_user_request::UserType::Human(human)) => {
                let input = HumanInput {
                    profile: human.profile,
                    email: human.email,
                    phone: human.phone,
                    password: human.password_type.map(Into::into),
                    metadata: !human.metadata.is_empty(),
                    idp_links: !human.idp_links.is_empty(),
                    totp_secret: human.totp_secret,
                }
                .into_new_human(
                    request.user_id,
                    request.username,
                    Some(OrgSelector::Id(request.organization_id)),
                )?;
                engine.add_human_user(caller, input).await?
            }
            Some(create_user_request::UserType::Machine(machine)) => {
                let input = NewMachine {
                    organization_id: request.organization_id,
                    user_id: request.user_id,
                    username: request.username,
                    name: machine.name,
                    description: machine.description,
                };
                engine.create_machine_user(caller, input).await?
            }
            None => {
                return Err(Error::invalid(
                    "exactly one of human or machine is required",
                ))
            }
        };
        Ok(user::CreateUserResponse {
            id: created.user_id,
            creation_date: Some(created.details.creation_date.into()),
            email_code: None,
            phone_code: None,
        })
    }
}
