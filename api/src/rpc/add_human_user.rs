//! AddHumanUser (`POST /v2/users/human`), and the human-user input shared with CreateUser.

use latchkey_engine::{
    Email, Error, ErrorId, NewHuman, OrgSelector, PasswordInput, Phone, Profile,
};

use super::{Call, Rpc};
use crate::proto::zitadel::object::v2::organization::Org;
use crate::proto::zitadel::user::v2::{self as user, add_human_user_request::PasswordType};
use crate::proto::zitadel::user::v2::{set_human_email, set_human_phone};
use crate::wire::{details, known};

/// The human part of AddHumanUser and CreateUser, gathered from either message.
pub struct HumanInput {
    pub profile: Option<user::SetHumanProfile>,
    pub email: Option<user::SetHumanEmail>,
    pub phone: Option<user::SetHumanPhone>,
    pub password: Option<PasswordInput>,
    /// Fields Latchkey cannot honour yet: refused when given, never dropped.
    pub metadata: bool,
    pub idp_links: bool,
    pub totp_secret: Option<String>,
}

fn unsupported(what: &str) -> Error {
    Error::with(
        ErrorId::Unsupported,
        format!("{what} is not supported by Latchkey yet"),
    )
}

fn plain(password: user::Password) -> PasswordInput {
    PasswordInput::Plain {
        password: password.password,
        change_required: password.change_required,
    }
}

fn hashed(password: user::HashedPassword) -> PasswordInput {
    PasswordInput::Hashed {
        hash: password.hash,
        change_required: password.change_required,
    }
}

/// The two messages that take a human's password carry it in a oneof each.
macro_rules! password_from {
    ($($oneof:path),*) => {$(
        impl From<$oneof> for PasswordInput {
            fn from(given: $oneof) -> Self {
                use $oneof as Given;
                match given {
                    Given::Password(p) => plain(p),
                    Given::HashedPassword(h) => hashed(h),
                }
            }
        }
    )*};
}

password_from!(PasswordType, user::create_user_request::human::PasswordType);

impl HumanInput {
    /// Maps to the engine's input; refuses what Latchkey cannot honour instead of dropping it.
    pub fn into_new_human(
        self,
        user_id: Option<String>,
        username: Option<String>,
        organization: Option<OrgSelector>,
    ) -> Result<NewHuman, Error> {
        if self.metadata {
            return Err(unsupported("metadata"));
        }
        if self.idp_links {
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
        if matches!(
            email.verification,
            Some(set_human_email::Verification::ReturnCode(_))
        ) {
            return Err(unsupported("email.returnCode (verification codes)"));
        }
        if self.phone.as_ref().is_some_and(|p| {
            matches!(
                p.verification,
                Some(set_human_phone::Verification::ReturnCode(_))
            )
        }) {
            return Err(unsupported("phone.returnCode (verification codes)"));
        }
        let gender = match profile.gender {
            Some(number) => known::<user::Gender>("profile.gender", number)?.into(),
            None => Default::default(),
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
                gender,
            },
            email: Email {
                email: email.email,
                is_verified: matches!(
                    email.verification,
                    Some(set_human_email::Verification::IsVerified(true))
                ),
            },
            phone: self.phone.map(|p| Phone {
                phone: p.phone,
                is_verified: matches!(
                    p.verification,
                    Some(set_human_phone::Verification::IsVerified(true))
                ),
            }),
            password: self.password,
        })
    }
}

pub struct AddHumanUser;

impl Rpc for AddHumanUser {
    type Request = user::AddHumanUserRequest;
    type Response = user::AddHumanUserResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: user::AddHumanUserRequest,
    ) -> Result<user::AddHumanUserResponse, Error> {
        let organization = match request.organization.and_then(|o| o.org) {
            Some(Org::OrgId(id)) if !id.is_empty() => Some(OrgSelector::Id(id)),
            Some(Org::OrgDomain(domain)) if !domain.is_empty() => Some(OrgSelector::Domain(domain)),
            _ => None,
        };
        let input = HumanInput {
            profile: request.profile,
            email: request.email,
            phone: request.phone,
            password: request.password_type.map(Into::into),
            metadata: !request.metadata.is_empty(),
            idp_links: !request.idp_links.is_empty(),
            totp_secret: request.totp_secret,
        }
        .into_new_human(request.user_id, request.username, organization)?;
        let created = engine.add_human_user(caller, input).await?;
        Ok(user::AddHumanUserResponse {
            user_id: created.user_id,
            details: Some(details(created.details)),
            email_code: None,
            phone_code: None,
        })
    }
}
