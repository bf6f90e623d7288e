//! The session service: CreateSession, SetSession, GetSession, DeleteSession (ListSessions is in
//! `list_sessions.rs`). Latchkey performs the user and the password check; a request with any
//! other check or a challenge is refused with FEATURE-UNSUPPORTED as a whole — never run in part
//! with the unknown check ignored, which would hand out a session with fewer factors verified
//! than the client asked for. The rules (check order, token rotation, who may read) are the
//! engine's (`engine/src/sessions/`).

use std::collections::BTreeMap;

use latchkey_engine::{
    self as engine, Error, ErrorId, NewSession, SessionChange, SessionChecks, UserCheck,
};

use super::{Call, Rpc};
use crate::proto::zitadel::session::v2 as session;
use crate::wire::details;

/// A check or challenge Latchkey does not perform: the whole request is refused.
fn unsupported(what: &str) -> Error {
    Error::with(
        ErrorId::Unsupported,
        format!("{what} is not supported by Latchkey yet; send the request without it"),
    )
}

fn checks(checks: Option<session::Checks>) -> Result<SessionChecks, Error> {
    let Some(checks) = checks else {
        return Ok(SessionChecks::default());
    };
    let others = [
        (checks.web_auth_n.is_some(), "checks.webAuthN"),
        (checks.idp_intent.is_some(), "checks.idpIntent"),
        (checks.totp.is_some(), "checks.totp"),
        (checks.otp_sms.is_some(), "checks.otpSms"),
        (checks.otp_email.is_some(), "checks.otpEmail"),
        (checks.recovery_code.is_some(), "checks.recoveryCode"),
    ];
    if let Some((_, name)) = others.iter().find(|(set, _)| *set) {
        return Err(unsupported(name));
    }
    let user = match checks.user {
        None => None,
        Some(user) => Some(match user.search {
            Some(session::check_user::Search::UserId(id)) => UserCheck::Id(id),
            Some(session::check_user::Search::LoginName(name)) => UserCheck::LoginName(name),
            None => return Err(Error::invalid("checks.user must set userId or loginName")),
        }),
    };
    let password = match checks.password {
        None => None,
        Some(p) if p.password.is_empty() || p.password.chars().count() > 200 => {
            return Err(Error::invalid(
                "checks.password.password must be 1 to 200 characters",
            ))
        }
        Some(p) => Some(p.password),
    };
    Ok(SessionChecks { user, password })
}

fn challenges(challenges: Option<&session::RequestChallenges>) -> Result<(), Error> {
    match challenges {
        Some(c) if c.web_auth_n.is_some() => Err(unsupported("challenges.webAuthN")),
        Some(c) if c.otp_sms.is_some() => Err(unsupported("challenges.otpSms")),
        Some(c) if c.otp_email.is_some() => Err(unsupported("challenges.otpEmail")),
        _ => Ok(()),
    }
}

/// A `google.protobuf.Duration` as microseconds (the engine refuses one that is not positive).
fn lifetime(duration: Option<pbjson_types::Duration>) -> Option<i64> {
    duration.map(|d| {
        d.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(d.nanos) / 1_000)
    })
}

fn user_agent_in(agent: session::UserAgent) -> engine::UserAgent {
    engine::UserAgent {
        fingerprint_id: agent.fingerprint_id,
        ip: agent.ip,
        description: agent.description,
        header: agent
            .header
            .into_iter()
            .map(|(name, values)| (name, values.values))
            .collect(),
    }
}

fn user_agent_out(agent: engine::UserAgent) -> session::UserAgent {
    session::UserAgent {
        fingerprint_id: agent.fingerprint_id,
        ip: agent.ip,
        description: agent.description,
        header: agent
            .header
            .into_iter()
            .map(|(name, values)| (name, session::user_agent::HeaderValues { values }))
            .collect(),
    }
}

/// A session as the `Session` message.
pub fn session_message(s: engine::Session) -> session::Session {
    session::Session {
        id: s.id,
        creation_date: Some(s.creation_date.into()),
        change_date: Some(s.change_date.into()),
        sequence: s.sequence,
        factors: Some(session::Factors {
            user: s.factors.user.map(|u| session::UserFactor {
                verified_at: Some(u.verified_at.into()),
                id: u.id,
                login_name: u.login_name,
                display_name: u.display_name,
                organization_id: u.organization_id,
            }),
            password: s.factors.password.map(|p| session::PasswordFactor {
                verified_at: Some(p.verified_at.into()),
            }),
            ..Default::default()
        }),
        metadata: s.metadata.into_iter().collect(),
        user_agent: s.user_agent.map(user_agent_out),
        expiration_date: s.expiration_date.map(Into::into),
    }
}

fn metadata(map: impl IntoIterator<Item = (String, Vec<u8>)>) -> BTreeMap<String, Vec<u8>> {
    map.into_iter().collect()
}

pub struct CreateSession;

impl Rpc for CreateSession {
    type Request = session::CreateSessionRequest;
    type Response = session::CreateSessionResponse;

    /// A session checking a user given by id is created where that user is served (its
    /// password check runs in the user's actor); by login name, where it arrives.
    fn scope(_call: &Call<'_>, request: &session::CreateSessionRequest) -> Option<Vec<u8>> {
        let search = request.checks.as_ref()?.user.as_ref()?.search.as_ref()?;
        match search {
            session::check_user::Search::UserId(id) => Some(latchkey_engine::snapshot_key(id)),
            session::check_user::Search::LoginName(_) => None,
        }
    }

    fn login_name(request: &session::CreateSessionRequest) -> Option<&str> {
        let search = request.checks.as_ref()?.user.as_ref()?.search.as_ref()?;
        match search {
            session::check_user::Search::LoginName(name) => Some(name),
            session::check_user::Search::UserId(_) => None,
        }
    }

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: session::CreateSessionRequest,
    ) -> Result<session::CreateSessionResponse, Error> {
        let checks = checks(request.checks)?;
        challenges(request.challenges.as_ref())?;
        let created = engine
            .create_session(
                caller,
                NewSession {
                    checks,
                    metadata: metadata(request.metadata),
                    user_agent: request.user_agent.map(user_agent_in),
                    lifetime: lifetime(request.lifetime),
                },
            )
            .await?;
        Ok(session::CreateSessionResponse {
            details: Some(details(created.details)),
            session_id: created.session_id,
            session_token: created.session_token,
            challenges: None,
        })
    }
}

pub struct SetSession;

impl Rpc for SetSession {
    type Request = session::SetSessionRequest;
    type Response = session::SetSessionResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: session::SetSessionRequest,
    ) -> Result<session::SetSessionResponse, Error> {
        // `sessionToken` is deprecated in ZITADEL and ignored there: so here.
        let checks = checks(request.checks)?;
        challenges(request.challenges.as_ref())?;
        let set = engine
            .set_session(
                caller,
                &request.session_id,
                SessionChange {
                    checks,
                    metadata: metadata(request.metadata),
                    lifetime: lifetime(request.lifetime),
                },
            )
            .await?;
        Ok(session::SetSessionResponse {
            details: Some(details(set.details)),
            session_token: set.session_token,
            challenges: None,
        })
    }

    fn scope(_call: &Call<'_>, request: &session::SetSessionRequest) -> Option<Vec<u8>> {
        Some(latchkey_engine::session_scope(&request.session_id))
    }

    fn set_path(request: &mut session::SetSessionRequest, name: &str, value: &str) -> bool {
        match name {
            "sessionId" => request.session_id = value.to_owned(),
            _ => return false,
        }
        true
    }
}

pub struct GetSession;

impl Rpc for GetSession {
    type Request = session::GetSessionRequest;
    type Response = session::GetSessionResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: session::GetSessionRequest,
    ) -> Result<session::GetSessionResponse, Error> {
        let found = engine
            .get_session(
                caller,
                &request.session_id,
                request.session_token.as_deref(),
            )
            .await?;
        Ok(session::GetSessionResponse {
            session: Some(session_message(found)),
        })
    }

    fn scope(_call: &Call<'_>, request: &session::GetSessionRequest) -> Option<Vec<u8>> {
        Some(latchkey_engine::session_scope(&request.session_id))
    }

    fn set_path(request: &mut session::GetSessionRequest, name: &str, value: &str) -> bool {
        match name {
            "sessionId" => request.session_id = value.to_owned(),
            _ => return false,
        }
        true
    }

    fn set_query(
        request: &mut session::GetSessionRequest,
        name: &str,
        value: &str,
    ) -> Result<(), Error> {
        if name == "sessionToken" || name == "session_token" {
            request.session_token = Some(value.to_owned());
        }
        Ok(())
    }
}

pub struct DeleteSession;

impl Rpc for DeleteSession {
    type Request = session::DeleteSessionRequest;
    type Response = session::DeleteSessionResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: session::DeleteSessionRequest,
    ) -> Result<session::DeleteSessionResponse, Error> {
        let done = engine
            .delete_session(
                caller,
                &request.session_id,
                request.session_token.as_deref(),
            )
            .await?;
        Ok(session::DeleteSessionResponse {
            details: Some(details(done)),
        })
    }

    fn scope(_call: &Call<'_>, request: &session::DeleteSessionRequest) -> Option<Vec<u8>> {
        Some(latchkey_engine::session_scope(&request.session_id))
    }

    fn set_path(request: &mut session::DeleteSessionRequest, name: &str, value: &str) -> bool {
        match name {
            "sessionId" => request.session_id = value.to_owned(),
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_latchkey_does_not_perform_refuses_the_request() {
        let request = session::Checks {
            user: Some(session::CheckUser {
                search: Some(session::check_user::Search::UserId("u".into())),
            }),
            totp: Some(session::CheckTotp {
                code: "123456".into(),
            }),
            ..Default::default()
        };
        let error = checks(Some(request)).unwrap_err();
        assert_eq!(error.id, ErrorId::Unsupported);
        assert!(error.to_string().contains("checks.totp"), "{error}");
    }

    #[test]
    fn a_challenge_refuses_the_request() {
        let asked = session::RequestChallenges {
            otp_sms: Some(session::request_challenges::Otpsms { return_code: true }),
            ..Default::default()
        };
        assert_eq!(
            challenges(Some(&asked)).unwrap_err().id,
            ErrorId::Unsupported
        );
        assert!(challenges(Some(&session::RequestChallenges::default())).is_ok());
    }

    #[test]
    fn lifetimes_are_microseconds() {
        let d = |seconds, nanos| Some(pbjson_types::Duration { seconds, nanos });
        assert_eq!(lifetime(d(18_000, 0)), Some(18_000_000_000));
        assert_eq!(lifetime(d(0, 1_500)), Some(1));
        assert_eq!(lifetime(d(-1, 0)), Some(-1_000_000));
        assert_eq!(lifetime(None), None);
    }
}
