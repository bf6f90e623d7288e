//! GetUserByID, and the `User` message shared with ListUsers.

use latchkey_engine::{self as engine, Error};

use super::{Call, Rpc};
use crate::proto::zitadel::user::v2 as user;
use crate::wire::details;

/// `zitadel.user.v2.User` of an engine user, filled as ZITADEL fills it: the human's profile
/// carries every optional field (empty when unset) and a display name of given and family name
/// when none was set.
pub fn user_message(u: engine::User) -> user::User {
    let kind = match u.user_type {
        engine::UserType::Human(h) => {
            let display =
                h.profile.display_name.clone().unwrap_or_else(|| {
                    format!("{} {}", h.profile.given_name, h.profile.family_name)
                });
            let phone = h.phone.unwrap_or_default();
            user::user::Type::Human(user::HumanUser {
                profile: Some(user::HumanProfile {
                    given_name: h.profile.given_name,
                    family_name: h.profile.family_name,
                    nick_name: Some(h.profile.nick_name.unwrap_or_default()),
                    display_name: Some(display),
                    preferred_language: Some(h.profile.preferred_language.unwrap_or_default()),
                    gender: Some(user::Gender::from(h.profile.gender) as i32),
                    avatar_url: String::new(),
                }),
                email: Some(user::HumanEmail {
                    email: h.email.email,
                    is_verified: h.email.is_verified,
                }),
                phone: Some(user::HumanPhone {
                    phone: phone.phone,
                    is_verified: phone.is_verified,
                }),
                password_change_required: h.password_change_required,
                password_changed: h.password_changed.map(Into::into),
                ..Default::default()
            })
        }
        engine::UserType::Machine(m) => user::user::Type::Machine(user::MachineUser {
            name: m.name,
            description: m.description,
            has_secret: false,
            access_token_type: user::AccessTokenType::Bearer as i32,
        }),
    };
    let lock = u.lockout.lock;
    let lockout = user::Lockout {
        failed_password_attempts: u.lockout.failed_password_attempts,
        lock_reason: match lock.map(|l| l.reason) {
            None => user::LockReason::Unspecified,
            Some(engine::LockedBy::Admin) => user::LockReason::Admin,
            Some(engine::LockedBy::FailedPasswords) => user::LockReason::FailedPasswords,
        } as i32,
        locked_at: lock.map(|l| l.at.into()),
        locked_until: lock.and_then(|l| l.until).map(Into::into),
        temporary_lockouts: u.lockout.temporary_lockouts,
    };
    user::User {
        // Left out while there is nothing to say (no failures, no lock), as zero values are.
        lockout: (lockout != user::Lockout::default()).then_some(lockout),
        user_id: u.id,
        details: Some(details(u.details)),
        state: user::UserState::from(u.state) as i32,
        username: u.username,
        login_names: u.login_names,
        preferred_login_name: u.preferred_login_name,
        r#type: Some(kind),
    }
}

pub struct GetUserById;

impl Rpc for GetUserById {
    type Request = user::GetUserByIdRequest;
    type Response = user::GetUserByIdResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: user::GetUserByIdRequest,
    ) -> Result<user::GetUserByIdResponse, Error> {
        let found = engine.get_user(caller, &request.user_id).await?;
        Ok(user::GetUserByIdResponse {
            details: Some(details(found.details.clone())),
            user: Some(user_message(found)),
        })
    }

    fn scope(_call: &Call<'_>, request: &user::GetUserByIdRequest) -> Option<Vec<u8>> {
        Some(latchkey_engine::snapshot_key(&request.user_id))
    }

    fn set_path(request: &mut user::GetUserByIdRequest, name: &str, value: &str) -> bool {
        match name {
            "userId" => request.user_id = value.to_owned(),
            _ => return false,
        }
        true
    }
}
