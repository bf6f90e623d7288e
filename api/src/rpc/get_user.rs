//! GetUserByID, and the `User` message shared with ListUsers.
//!
//! The answer's JSON is written here directly ([`push_user`], ListUsers' pages too), in the same
//! bytes as the protojson impls (the tests below compare them for every field): through serde,
//! each of a user's ≈ 40 keys and strings went through serde_json's escaping and formatter
//! machinery, ≈ 14,000 instructions of a GetUserByID's ≈ 41,000.

use serde::ser::Error as _;

use latchkey_engine::{self as engine, Error};

use super::{Call, Rpc};
use crate::proto::zitadel::user::v2 as user;
use crate::wire::{
    details, push_details, push_json_str, push_json_timestamp, push_u64, JsonObject,
};

/// `zitadel.user.v2.User` of an engine user, filled as ZITADEL fills it: the human's profile
/// carries every optional field (empty when unset) and a display name of given and family name
/// when none was set.
pub fn user_message(u: engine::User) -> user::User {
    let kind = match u.user_type {
        engine::UserType::Human(h) => {
            let display = h.profile.display_name.clone().unwrap_or_else(|| {
                // Not `format!`: its machinery cost more than the rest of this conversion.
                let (given, family) = (&h.profile.given_name, &h.profile.family_name);
                let mut display = String::with_capacity(given.len() + 1 + family.len());
                display.push_str(given);
                display.push(' ');
                display.push_str(family);
                display
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

    fn write_json(response: &Self::Response, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut fields = JsonObject::open(out);
        if let Some(d) = &response.details {
            fields.key(br#""details":"#);
            push_details(fields.out, d)?;
        }
        if let Some(u) = &response.user {
            fields.key(br#""user":"#);
            push_user(fields.out, u)?;
        }
        fields.close();
        Ok(())
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

/// A `zitadel.user.v2.User` object, as its protojson impl writes it: zero values left out,
/// enums by name, an unknown enum number an error.
pub(crate) fn push_user(out: &mut Vec<u8>, u: &user::User) -> serde_json::Result<()> {
    let mut fields = JsonObject::open(out);
    if !u.user_id.is_empty() {
        fields.key(br#""userId":"#);
        push_json_str(fields.out, &u.user_id)?;
    }
    if let Some(d) = &u.details {
        fields.key(br#""details":"#);
        push_details(fields.out, d)?;
    }
    if u.state != 0 {
        fields.key(br#""state":"#);
        push_enum(fields.out, u.state, user::UserState::try_from, |s| {
            s.as_str_name()
        })?;
    }
    push_names(
        &mut fields,
        &u.username,
        &u.login_names,
        &u.preferred_login_name,
    )?;
    if let Some(lockout) = &u.lockout {
        fields.key(br#""lockout":"#);
        push_lockout(fields.out, lockout)?;
    }
    match &u.r#type {
        Some(user::user::Type::Human(human)) => {
            fields.key(br#""human":"#);
            push_human(fields.out, human)?;
        }
        Some(user::user::Type::Machine(machine)) => {
            fields.key(br#""machine":"#);
            push_machine(fields.out, machine)?;
        }
        None => {}
    }
    fields.close();
    Ok(())
}

/// `username`, `loginNames` and `preferredLoginName`, in that order (User's and HumanUser's).
fn push_names(
    fields: &mut JsonObject<'_>,
    username: &str,
    login_names: &[String],
    preferred_login_name: &str,
) -> serde_json::Result<()> {
    if !username.is_empty() {
        fields.key(br#""username":"#);
        push_json_str(fields.out, username)?;
    }
    if !login_names.is_empty() {
        fields.key(br#""loginNames":["#);
        for (i, name) in login_names.iter().enumerate() {
            if i > 0 {
                fields.out.push(b',');
            }
            push_json_str(fields.out, name)?;
        }
        fields.out.push(b']');
    }
    if !preferred_login_name.is_empty() {
        fields.key(br#""preferredLoginName":"#);
        push_json_str(fields.out, preferred_login_name)?;
    }
    Ok(())
}

fn push_human(out: &mut Vec<u8>, h: &user::HumanUser) -> serde_json::Result<()> {
    let mut fields = JsonObject::open(out);
    if !h.user_id.is_empty() {
        fields.key(br#""userId":"#);
        push_json_str(fields.out, &h.user_id)?;
    }
    if h.state != 0 {
        fields.key(br#""state":"#);
        push_enum(fields.out, h.state, user::UserState::try_from, |s| {
            s.as_str_name()
        })?;
    }
    push_names(
        &mut fields,
        &h.username,
        &h.login_names,
        &h.preferred_login_name,
    )?;
    if let Some(p) = &h.profile {
        fields.key(br#""profile":"#);
        push_profile(fields.out, p)?;
    }
    if let Some(e) = &h.email {
        fields.key(br#""email":"#);
        push_contact(fields.out, br#""email":"#, &e.email, e.is_verified)?;
    }
    if let Some(p) = &h.phone {
        fields.key(br#""phone":"#);
        push_contact(fields.out, br#""phone":"#, &p.phone, p.is_verified)?;
    }
    if h.password_change_required {
        fields.key(br#""passwordChangeRequired":true"#);
    }
    if let Some(at) = &h.password_changed {
        fields.key(br#""passwordChanged":"#);
        push_json_timestamp(fields.out, at)?;
    }
    if let Some(at) = &h.mfa_init_skipped {
        fields.key(br#""mfaInitSkipped":"#);
        push_json_timestamp(fields.out, at)?;
    }
    fields.close();
    Ok(())
}

fn push_profile(out: &mut Vec<u8>, p: &user::HumanProfile) -> serde_json::Result<()> {
    let mut fields = JsonObject::open(out);
    if !p.given_name.is_empty() {
        fields.key(br#""givenName":"#);
        push_json_str(fields.out, &p.given_name)?;
    }
    if !p.family_name.is_empty() {
        fields.key(br#""familyName":"#);
        push_json_str(fields.out, &p.family_name)?;
    }
    if let Some(v) = &p.nick_name {
        fields.key(br#""nickName":"#);
        push_json_str(fields.out, v)?;
    }
    if let Some(v) = &p.display_name {
        fields.key(br#""displayName":"#);
        push_json_str(fields.out, v)?;
    }
    if let Some(v) = &p.preferred_language {
        fields.key(br#""preferredLanguage":"#);
        push_json_str(fields.out, v)?;
    }
    if let Some(g) = p.gender {
        fields.key(br#""gender":"#);
        push_enum(fields.out, g, user::Gender::try_from, |g| g.as_str_name())?;
    }
    if !p.avatar_url.is_empty() {
        fields.key(br#""avatarUrl":"#);
        push_json_str(fields.out, &p.avatar_url)?;
    }
    fields.close();
    Ok(())
}

/// HumanEmail's and HumanPhone's shape: the address under `key`, then `isVerified`.
fn push_contact(
    out: &mut Vec<u8>,
    key: &[u8],
    address: &str,
    is_verified: bool,
) -> serde_json::Result<()> {
    let mut fields = JsonObject::open(out);
    if !address.is_empty() {
        fields.key(key);
        push_json_str(fields.out, address)?;
    }
    if is_verified {
        fields.key(br#""isVerified":true"#);
    }
    fields.close();
    Ok(())
}

fn push_machine(out: &mut Vec<u8>, m: &user::MachineUser) -> serde_json::Result<()> {
    let mut fields = JsonObject::open(out);
    if !m.name.is_empty() {
        fields.key(br#""name":"#);
        push_json_str(fields.out, &m.name)?;
    }
    if !m.description.is_empty() {
        fields.key(br#""description":"#);
        push_json_str(fields.out, &m.description)?;
    }
    if m.has_secret {
        fields.key(br#""hasSecret":true"#);
    }
    if m.access_token_type != 0 {
        fields.key(br#""accessTokenType":"#);
        push_enum(
            fields.out,
            m.access_token_type,
            user::AccessTokenType::try_from,
            |t| t.as_str_name(),
        )?;
    }
    fields.close();
    Ok(())
}

fn push_lockout(out: &mut Vec<u8>, l: &user::Lockout) -> serde_json::Result<()> {
    let mut fields = JsonObject::open(out);
    if l.failed_password_attempts != 0 {
        fields.key(br#""failedPasswordAttempts":"#);
        push_u64(fields.out, l.failed_password_attempts.into());
    }
    if l.lock_reason != 0 {
        fields.key(br#""lockReason":"#);
        push_enum(fields.out, l.lock_reason, user::LockReason::try_from, |r| {
            r.as_str_name()
        })?;
    }
    if let Some(at) = &l.locked_at {
        fields.key(br#""lockedAt":"#);
        push_json_timestamp(fields.out, at)?;
    }
    if let Some(at) = &l.locked_until {
        fields.key(br#""lockedUntil":"#);
        push_json_timestamp(fields.out, at)?;
    }
    if l.temporary_lockouts != 0 {
        fields.key(br#""temporaryLockouts":"#);
        push_u64(fields.out, l.temporary_lockouts.into());
    }
    fields.close();
    Ok(())
}

/// An enum field by its name; a number the enum does not know is the impls' error.
pub(crate) fn push_enum<E>(
    out: &mut Vec<u8>,
    number: i32,
    known: impl FnOnce(i32) -> Result<E, prost::UnknownEnumValue>,
    name: impl FnOnce(E) -> &'static str,
) -> serde_json::Result<()> {
    let value = known(number)
        .map_err(|_| serde_json::Error::custom(format!("Invalid variant {number}")))?;
    push_json_str(out, name(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::zitadel::object::v2 as object;
    use crate::wire::Timestamp;

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn details() -> object::Details {
        object::Details {
            sequence: 7,
            change_date: at(1_700_000_000, 123_000),
            resource_owner: "org-1".into(),
            creation_date: at(1_600_000_000, 0),
        }
    }

    /// Every field set, written with struct literals so that a field added to the protos
    /// fails to compile here until the writer knows it.
    fn human(names: [&str; 4]) -> user::User {
        let [given, family, nick, email] = names;
        user::User {
            user_id: "u-1".into(),
            details: Some(details()),
            state: user::UserState::Locked as i32,
            username: "ada".into(),
            login_names: vec!["ada@example.com".into(), email.into()],
            preferred_login_name: "ada@example.com".into(),
            lockout: Some(user::Lockout {
                failed_password_attempts: 3,
                lock_reason: user::LockReason::FailedPasswords as i32,
                locked_at: at(1_700_000_100, 5),
                locked_until: at(1_700_000_400, 0),
                temporary_lockouts: 2,
            }),
            r#type: Some(user::user::Type::Human(user::HumanUser {
                user_id: "u-1".into(),
                state: user::UserState::Active as i32,
                username: "ada".into(),
                login_names: vec![email.into()],
                preferred_login_name: email.into(),
                profile: Some(user::HumanProfile {
                    given_name: given.into(),
                    family_name: family.into(),
                    nick_name: Some(nick.into()),
                    display_name: Some(format!("{given} {family}")),
                    preferred_language: Some("de".into()),
                    gender: Some(user::Gender::Diverse as i32),
                    avatar_url: "https://example.com/a.png".into(),
                }),
                email: Some(user::HumanEmail {
                    email: email.into(),
                    is_verified: true,
                }),
                phone: Some(user::HumanPhone {
                    phone: "+41 79 000 00 00".into(),
                    is_verified: true,
                }),
                password_change_required: true,
                password_changed: at(1_650_000_000, 999_999_999),
                mfa_init_skipped: at(1_650_000_001, 1),
            })),
        }
    }

    fn machine(description: &str, has_secret: bool) -> user::User {
        user::User {
            user_id: "m-1".into(),
            details: Some(details()),
            state: user::UserState::Active as i32,
            username: "robot".into(),
            login_names: vec!["robot".into()],
            preferred_login_name: "robot".into(),
            lockout: None,
            r#type: Some(user::user::Type::Machine(user::MachineUser {
                name: "Robot".into(),
                description: description.into(),
                has_secret,
                access_token_type: user::AccessTokenType::Jwt as i32,
            })),
        }
    }

    fn answers() -> Vec<user::GetUserByIdResponse> {
        let mut users = vec![
            human(["Ada", "Lovelace", "", "ada@example.com"]),
            // Strings that need escaping, and ones that do not but are not ASCII.
            human(["A\"da", "Love\\lace", "tab\there\u{1}", "line\nbreak@x"]),
            human(["Zoë", "Ångström 🦀", "\u{7f}", "ü@example.com"]),
            machine("", false),
            machine("does things", true),
            user::User::default(),
        ];
        // Zero values everywhere below the top: each is left out.
        let mut sparse = human(["", "", "", ""]);
        sparse.lockout = Some(user::Lockout::default());
        if let Some(user::user::Type::Human(h)) = &mut sparse.r#type {
            h.profile = Some(user::HumanProfile::default());
            h.email = Some(user::HumanEmail::default());
            h.phone = Some(user::HumanPhone::default());
            h.login_names.clear();
            h.password_change_required = false;
            h.password_changed = None;
            h.mfa_init_skipped = None;
        }
        users.push(sparse);
        let mut answers: Vec<_> = users
            .into_iter()
            .map(|u| user::GetUserByIdResponse {
                details: Some(details()),
                user: Some(u),
            })
            .collect();
        answers.push(user::GetUserByIdResponse::default());
        answers.push(user::GetUserByIdResponse {
            details: Some(object::Details::default()),
            user: None,
        });
        answers
    }

    #[test]
    fn the_answer_is_written_as_the_protojson_impls_write_it() {
        for answer in answers() {
            let mut ours = Vec::new();
            GetUserById::write_json(&answer, &mut ours).unwrap();
            let theirs = serde_json::to_vec(&answer).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
    }

    #[test]
    fn a_page_of_users_is_written_as_the_protojson_impls_write_it() {
        use super::super::list_users::ListUsers;
        let users: Vec<_> = answers().into_iter().filter_map(|a| a.user).collect();
        let pages = [
            user::ListUsersResponse::default(),
            user::ListUsersResponse {
                details: Some(object::ListDetails {
                    total_result: 12_345_678_901,
                    processed_sequence: 42,
                    timestamp: at(1_700_000_000, 1),
                }),
                sorting_column: user::UserFieldName::DisplayName as i32,
                result: users.clone(),
            },
            user::ListUsersResponse {
                details: Some(object::ListDetails::default()),
                sorting_column: 0,
                result: users[..1].to_vec(),
            },
        ];
        for page in pages {
            let mut ours = Vec::new();
            ListUsers::write_json(&page, &mut ours).unwrap();
            let theirs = serde_json::to_vec(&page).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
    }

    #[test]
    fn an_unknown_enum_number_is_an_error_as_in_the_impls() {
        let mut answer = user::GetUserByIdResponse {
            details: None,
            user: Some(machine("", false)),
        };
        if let Some(u) = &mut answer.user {
            u.state = 99;
        }
        assert!(serde_json::to_vec(&answer).is_err());
        assert!(GetUserById::write_json(&answer, &mut Vec::new()).is_err());
    }
}
