//! GetUserByID, and the `User` message shared with ListUsers.

use serde::Serialize;

use latchkey_engine::{self as engine, Caller, Engine, Error};

use super::Rpc;
use crate::wire::{
    timestamp, AccessTokenTypeJson, DetailsJson, GenderJson, UserIdRequest, UserStateJson,
};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserJson {
    pub user_id: String,
    pub details: DetailsJson,
    pub state: UserStateJson,
    pub username: String,
    pub login_names: Vec<String>,
    pub preferred_login_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub human: Option<HumanJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanJson {
    pub profile: ProfileJson,
    pub email: EmailJson,
    pub phone: PhoneJson,
    pub password_change_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_changed: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileJson {
    pub given_name: String,
    pub family_name: String,
    pub nick_name: String,
    pub display_name: String,
    pub preferred_language: String,
    pub gender: GenderJson,
    pub avatar_url: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailJson {
    pub email: String,
    pub is_verified: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneJson {
    pub phone: String,
    pub is_verified: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineJson {
    pub name: String,
    pub description: String,
    pub has_secret: bool,
    pub access_token_type: AccessTokenTypeJson,
}

impl From<engine::User> for UserJson {
    fn from(user: engine::User) -> Self {
        let (human, machine) = match user.user_type {
            engine::UserType::Human(h) => {
                let display = h.profile.display_name.clone().unwrap_or_else(|| {
                    format!("{} {}", h.profile.given_name, h.profile.family_name)
                });
                let phone = h.phone.unwrap_or_default();
                (
                    Some(HumanJson {
                        profile: ProfileJson {
                            given_name: h.profile.given_name,
                            family_name: h.profile.family_name,
                            nick_name: h.profile.nick_name.unwrap_or_default(),
                            display_name: display,
                            preferred_language: h.profile.preferred_language.unwrap_or_default(),
                            gender: h.profile.gender.into(),
                            avatar_url: String::new(),
                        },
                        email: EmailJson {
                            email: h.email.email,
                            is_verified: h.email.is_verified,
                        },
                        phone: PhoneJson {
                            phone: phone.phone,
                            is_verified: phone.is_verified,
                        },
                        password_change_required: h.password_change_required,
                        password_changed: h.password_changed.as_ref().map(timestamp),
                    }),
                    None,
                )
            }
            engine::UserType::Machine(m) => (
                None,
                Some(MachineJson {
                    name: m.name,
                    description: m.description,
                    has_secret: false,
                    access_token_type: AccessTokenTypeJson::Bearer,
                }),
            ),
        };
        UserJson {
            user_id: user.id,
            details: (&user.details).into(),
            state: user.state.into(),
            username: user.username,
            login_names: user.login_names,
            preferred_login_name: user.preferred_login_name,
            human,
            machine,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GetUserByIdResponse {
    pub details: DetailsJson,
    pub user: UserJson,
}

impl crate::wire::JsonAnswer for GetUserByIdResponse {}

pub struct GetUserById;

impl Rpc for GetUserById {
    const SERVICE: &'static str = "zitadel.user.v2.UserService";
    const METHOD: &'static str = "GetUserByID";
    type Request = UserIdRequest;
    type Response = GetUserByIdResponse;
    type ProtoRequest = crate::proto::zitadel::user::v2::GetUserByIdRequest;
    type ProtoResponse = crate::proto::zitadel::user::v2::GetUserByIdResponse;

    async fn call(
        engine: &Engine,
        caller: &Caller,
        request: UserIdRequest,
    ) -> Result<GetUserByIdResponse, Error> {
        let user = engine.get_user(caller, &request.user_id).await?;
        Ok(GetUserByIdResponse {
            details: (&user.details).into(),
            user: user.into(),
        })
    }
}
