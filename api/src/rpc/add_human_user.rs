//! AddHumanUser (`POST /v2/users/human`), and the human-user input shared with CreateUser.

use serde::{Deserialize, Serialize};

use latchkey_engine::{
    Caller, Email, Engine, Error, ErrorId, NewHuman, OrgSelector, PasswordInput, Phone, Profile,
};

use super::Rpc;
use crate::wire::{DetailsJson, GenderJson};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationJson {
    #[serde(alias = "org_id")]
    pub org_id: Option<String>,
    #[serde(alias = "org_domain")]
    pub org_domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetHumanProfileJson {
    #[serde(default, alias = "given_name")]
    pub given_name: String,
    #[serde(default, alias = "family_name")]
    pub family_name: String,
    #[serde(alias = "nick_name")]
    pub nick_name: Option<String>,
    #[serde(alias = "display_name")]
    pub display_name: Option<String>,
    #[serde(alias = "preferred_language")]
    pub preferred_language: Option<String>,
    pub gender: Option<GenderJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetHumanEmailJson {
    #[serde(default)]
    pub email: String,
    #[serde(alias = "is_verified")]
    pub is_verified: Option<bool>,
    #[serde(alias = "send_code")]
    pub send_code: Option<serde_json::Value>,
    #[serde(alias = "return_code")]
    pub return_code: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetHumanPhoneJson {
    #[serde(default)]
    pub phone: String,
    #[serde(alias = "is_verified")]
    pub is_verified: Option<bool>,
    #[serde(alias = "return_code")]
    pub return_code: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordJson {
    #[serde(default)]
    pub password: String,
    #[serde(default, alias = "change_required")]
    pub change_required: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HashedPasswordJson {
    #[serde(default)]
    pub hash: String,
    #[serde(default, alias = "change_required")]
    pub change_required: bool,
}

/// The human part of AddHumanUser and CreateUser.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanInputJson {
    pub profile: Option<SetHumanProfileJson>,
    pub email: Option<SetHumanEmailJson>,
    pub phone: Option<SetHumanPhoneJson>,
    pub password: Option<PasswordJson>,
    #[serde(alias = "hashed_password")]
    pub hashed_password: Option<HashedPasswordJson>,
    #[serde(default)]
    pub metadata: Vec<serde_json::Value>,
    #[serde(default, alias = "idp_links")]
    pub idp_links: Vec<serde_json::Value>,
    #[serde(alias = "totp_secret")]
    pub totp_secret: Option<String>,
}

fn unsupported(what: &str) -> Error {
    Error::with(
        ErrorId::Unsupported,
        format!("{what} is not supported by Latchkey yet"),
    )
}

impl HumanInputJson {
    /// Maps to the engine's input; refuses what Latchkey cannot honour instead of dropping it.
    pub fn into_new_human(
        self,
        user_id: Option<String>,
        username: Option<String>,
        organization: Option<OrgSelector>,
    ) -> Result<NewHuman, Error> {
        if !self.metadata.is_empty() {
            return Err(unsupported("metadata"));
        }
        if !self.idp_links.is_empty() {
            return Err(unsupported("idpLinks"));
        }
        if self.totp_secret.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("totpSecret"));
        }
        let profile = self
            .profile
            .ok_or_else(|| Error::invalid("profile is required"))?;
        let email = self
            .email
            .ok_or_else(|| Error::invalid("email is required"))?;
        if email.return_code.is_some() {
            return Err(unsupported("email.returnCode (verification codes)"));
        }
        if self.phone.as_ref().is_some_and(|p| p.return_code.is_some()) {
            return Err(unsupported("phone.returnCode (verification codes)"));
        }
        let password = match (self.password, self.hashed_password) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "give either password or hashedPassword, not both",
                ))
            }
            (Some(p), None) => Some(PasswordInput::Plain {
                password: p.password,
                change_required: p.change_required,
            }),
            (None, Some(h)) => Some(PasswordInput::Hashed {
                hash: h.hash,
                change_required: h.change_required,
            }),
            (None, None) => None,
        };
        Ok(NewHuman {
            user_id,
            username,
            organization,
            profile: Profile {
                given_name: profile.given_name,
                family_name: profile.family_name,
                nick_name: profile.nick_name,
                display_name: profile.display_name,
                preferred_language: profile.preferred_language,
                gender: profile.gender.unwrap_or_default().into(),
            },
            email: Email {
                email: email.email,
                is_verified: email.is_verified.unwrap_or(false),
            },
            phone: self.phone.map(|p| Phone {
                phone: p.phone,
                is_verified: p.is_verified.unwrap_or(false),
            }),
            password,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddHumanUserRequest {
    #[serde(alias = "user_id")]
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub organization: Option<OrganizationJson>,
    #[serde(flatten)]
    pub human: HumanInputJson,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddHumanUserResponse {
    pub user_id: String,
    pub details: DetailsJson,
}

impl crate::wire::JsonAnswer for AddHumanUserResponse {}

pub struct AddHumanUser;

impl Rpc for AddHumanUser {
    const SERVICE: &'static str = "zitadel.user.v2.UserService";
    const METHOD: &'static str = "AddHumanUser";
    type Request = AddHumanUserRequest;
    type Response = AddHumanUserResponse;
    type ProtoRequest = crate::proto::zitadel::user::v2::AddHumanUserRequest;
    type ProtoResponse = crate::proto::zitadel::user::v2::AddHumanUserResponse;

    async fn call(
        engine: &Engine,
        caller: &Caller,
        request: AddHumanUserRequest,
    ) -> Result<AddHumanUserResponse, Error> {
        let organization = match request.organization {
            None => None,
            Some(OrganizationJson {
                org_id: Some(id), ..
            }) if !id.is_empty() => Some(OrgSelector::Id(id)),
            Some(OrganizationJson {
                org_domain: Some(domain),
                ..
            }) if !domain.is_empty() => Some(OrgSelector::Domain(domain)),
            Some(_) => None,
        };
        let input =
            request
                .human
                .into_new_human(request.user_id, request.username, organization)?;
        let created = engine.add_human_user(caller, input).await?;
        Ok(AddHumanUserResponse {
            user_id: created.user_id,
            details: (&created.details).into(),
        })
    }
}
