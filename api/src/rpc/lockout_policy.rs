//! The lockout policy, on the three surfaces ZITADEL has it: settings v2 GetLockoutSettings
//! (read, org or instance by `ctx`), admin v1 Get/UpdateLockoutPolicy (the instance's default)
//! and management v1 Get/GetDefault/AddCustom/UpdateCustom/ResetLockoutPolicyToDefault (an
//! organization's own, the organization named by `x-zitadel-orgid` or the caller's). The rules —
//! which policy applies, who may change it, the errors — are the engine's (`engine/src/lockout.rs`).
//!
//! Latchkey's extensions travel in fields numbered from 1000: `autoUnlockAfter` and
//! `maxTemporaryLockouts`.

use std::time::Duration;

use latchkey_engine::{Error, PolicySource, PolicyUpdate, PolicyView};

use super::{Call, Rpc};
use crate::proto::zitadel::admin::v1 as admin;
use crate::proto::zitadel::management::v1 as management;
use crate::proto::zitadel::object::v2::request_context::ResourceOwner;
use crate::proto::zitadel::policy::v1 as policy;
use crate::proto::zitadel::settings::v2 as settings;
use crate::proto::zitadel::v1::ObjectDetails;
use crate::wire::details;

fn duration_out(d: Option<Duration>) -> Option<pbjson_types::Duration> {
    d.map(|d| pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    })
}

fn duration_in(d: Option<pbjson_types::Duration>) -> Result<Option<Duration>, Error> {
    let Some(d) = d else { return Ok(None) };
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(seconds), Ok(nanos)) if nanos < 1_000_000_000 => {
            Ok(Some(Duration::new(seconds, nanos)))
        }
        _ => Err(Error::invalid(
            "autoUnlockAfter must be a duration of zero or more",
        )),
    }
}

fn update(
    max_password_attempts: u32,
    max_otp_attempts: u32,
    auto_unlock_after: Option<pbjson_types::Duration>,
    max_temporary_lockouts: Option<u32>,
) -> Result<PolicyUpdate, Error> {
    Ok(PolicyUpdate {
        max_password_attempts: u64::from(max_password_attempts),
        max_otp_attempts: u64::from(max_otp_attempts),
        auto_unlock_after: duration_in(auto_unlock_after)?,
        max_temporary_lockouts,
    })
}

fn object_details(d: latchkey_engine::Details) -> ObjectDetails {
    ObjectDetails {
        sequence: d.sequence,
        creation_date: Some(d.creation_date.into()),
        change_date: Some(d.change_date.into()),
        resource_owner: d.resource_owner,
    }
}

/// `zitadel.policy.v1.LockoutPolicy`.
fn policy_message(view: PolicyView) -> policy::LockoutPolicy {
    policy::LockoutPolicy {
        details: Some(object_details(view.details)),
        max_password_attempts: view.policy.max_password_attempts,
        max_otp_attempts: view.policy.max_otp_attempts,
        is_default: view.source == PolicySource::Instance,
        auto_unlock_after: duration_out(view.policy.auto_unlock_after),
        max_temporary_lockouts: view.policy.max_temporary_lockouts,
    }
}

pub struct GetLockoutSettings;

impl Rpc for GetLockoutSettings {
    type Request = settings::GetLockoutSettingsRequest;
    type Response = settings::GetLockoutSettingsResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: settings::GetLockoutSettingsRequest,
    ) -> Result<settings::GetLockoutSettingsResponse, Error> {
        // Unset: the caller's organization (ZITADEL's ResourceOwnerFromReq).
        let org = match request.ctx.and_then(|ctx| ctx.resource_owner) {
            None => Some(caller.org_id.as_str().to_owned()),
            Some(ResourceOwner::OrgId(org)) => Some(org),
            Some(ResourceOwner::Instance(true)) => None,
            Some(ResourceOwner::Instance(false)) => {
                return Err(Error::invalid("ctx.instance must be true when set"))
            }
        };
        let view = engine.lockout_policy(caller, org.as_deref()).await?;
        let owner = match view.source {
            PolicySource::Instance => settings::ResourceOwnerType::Instance,
            PolicySource::Organization => settings::ResourceOwnerType::Org,
        };
        Ok(settings::GetLockoutSettingsResponse {
            settings: Some(settings::LockoutSettings {
                max_password_attempts: view.policy.max_password_attempts,
                resource_owner_type: owner as i32,
                max_otp_attempts: view.policy.max_otp_attempts,
                auto_unlock_after: duration_out(view.policy.auto_unlock_after),
                max_temporary_lockouts: view.policy.max_temporary_lockouts,
            }),
            details: Some(details(view.details)),
        })
    }

    fn set_query(
        request: &mut settings::GetLockoutSettingsRequest,
        name: &str,
        value: &str,
    ) -> Result<(), Error> {
        let owner = match name {
            "ctx.orgId" | "ctx.org_id" => ResourceOwner::OrgId(value.to_owned()),
            "ctx.instance" => ResourceOwner::Instance(
                value
                    .parse()
                    .map_err(|_| Error::invalid("ctx.instance must be true or false"))?,
            ),
            _ => return Ok(()),
        };
        request
            .ctx
            .get_or_insert_with(Default::default)
            .resource_owner = Some(owner);
        Ok(())
    }
}

pub struct AdminGetLockoutPolicy;

impl Rpc for AdminGetLockoutPolicy {
    type Request = admin::GetLockoutPolicyRequest;
    type Response = admin::GetLockoutPolicyResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        _: admin::GetLockoutPolicyRequest,
    ) -> Result<admin::GetLockoutPolicyResponse, Error> {
        let view = engine.default_lockout_policy(caller).await?;
        Ok(admin::GetLockoutPolicyResponse {
            policy: Some(policy_message(view)),
        })
    }
}

pub struct AdminUpdateLockoutPolicy;

impl Rpc for AdminUpdateLockoutPolicy {
    type Request = admin::UpdateLockoutPolicyRequest;
    type Response = admin::UpdateLockoutPolicyResponse;

    fn scope(_call: &Call<'_>, _request: &Self::Request) -> Option<Vec<u8>> {
        Some(latchkey_engine::instance_policy_scope())
    }

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        r: admin::UpdateLockoutPolicyRequest,
    ) -> Result<admin::UpdateLockoutPolicyResponse, Error> {
        let update = update(
            r.max_password_attempts,
            r.max_otp_attempts,
            r.auto_unlock_after,
            r.max_temporary_lockouts,
        )?;
        let done = engine.set_default_lockout_policy(caller, update).await?;
        Ok(admin::UpdateLockoutPolicyResponse {
            details: Some(object_details(done)),
        })
    }
}

pub struct GetLockoutPolicy;

impl Rpc for GetLockoutPolicy {
    type Request = management::GetLockoutPolicyRequest;
    type Response = management::GetLockoutPolicyResponse;

    async fn call(
        call: Call<'_>,
        _: management::GetLockoutPolicyRequest,
    ) -> Result<management::GetLockoutPolicyResponse, Error> {
        let org = call.org_context()?;
        let view = call.engine.lockout_policy(call.caller, Some(org)).await?;
        let is_default = view.source == PolicySource::Instance;
        Ok(management::GetLockoutPolicyResponse {
            policy: Some(policy_message(view)),
            is_default,
        })
    }
}

pub struct GetDefaultLockoutPolicy;

impl Rpc for GetDefaultLockoutPolicy {
    type Request = management::GetDefaultLockoutPolicyRequest;
    type Response = management::GetDefaultLockoutPolicyResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        _: management::GetDefaultLockoutPolicyRequest,
    ) -> Result<management::GetDefaultLockoutPolicyResponse, Error> {
        let view = engine.default_lockout_policy(caller).await?;
        Ok(management::GetDefaultLockoutPolicyResponse {
            policy: Some(policy_message(view)),
        })
    }
}

pub struct AddCustomLockoutPolicy;

impl Rpc for AddCustomLockoutPolicy {
    type Request = management::AddCustomLockoutPolicyRequest;
    type Response = management::AddCustomLockoutPolicyResponse;

    fn scope(call: &Call<'_>, _request: &Self::Request) -> Option<Vec<u8>> {
        call.org_context()
            .ok()
            .map(latchkey_engine::org_policy_scope)
    }

    async fn call(
        call: Call<'_>,
        r: management::AddCustomLockoutPolicyRequest,
    ) -> Result<management::AddCustomLockoutPolicyResponse, Error> {
        let update = update(
            r.max_password_attempts,
            r.max_otp_attempts,
            r.auto_unlock_after,
            r.max_temporary_lockouts,
        )?;
        let org = call.org_context()?;
        let done = call
            .engine
            .add_org_lockout_policy(call.caller, org, update)
            .await?;
        Ok(management::AddCustomLockoutPolicyResponse {
            details: Some(object_details(done)),
        })
    }
}

pub struct UpdateCustomLockoutPolicy;

impl Rpc for UpdateCustomLockoutPolicy {
    type Request = management::UpdateCustomLockoutPolicyRequest;
    type Response = management::UpdateCustomLockoutPolicyResponse;

    fn scope(call: &Call<'_>, _request: &Self::Request) -> Option<Vec<u8>> {
        call.org_context()
            .ok()
            .map(latchkey_engine::org_policy_scope)
    }

    async fn call(
        call: Call<'_>,
        r: management::UpdateCustomLockoutPolicyRequest,
    ) -> Result<management::UpdateCustomLockoutPolicyResponse, Error> {
        let update = update(
            r.max_password_attempts,
            r.max_otp_attempts,
            r.auto_unlock_after,
            r.max_temporary_lockouts,
        )?;
        let org = call.org_context()?;
        let done = call
            .engine
            .update_org_lockout_policy(call.caller, org, update)
            .await?;
        Ok(management::UpdateCustomLockoutPolicyResponse {
            details: Some(object_details(done)),
        })
    }
}

pub struct ResetLockoutPolicyToDefault;

impl Rpc for ResetLockoutPolicyToDefault {
    type Request = management::ResetLockoutPolicyToDefaultRequest;
    type Response = management::ResetLockoutPolicyToDefaultResponse;

    fn scope(call: &Call<'_>, _request: &Self::Request) -> Option<Vec<u8>> {
        call.org_context()
            .ok()
            .map(latchkey_engine::org_policy_scope)
    }

    async fn call(
        call: Call<'_>,
        _: management::ResetLockoutPolicyToDefaultRequest,
    ) -> Result<management::ResetLockoutPolicyToDefaultResponse, Error> {
        let org = call.org_context()?;
        let done = call
            .engine
            .reset_org_lockout_policy(call.caller, org)
            .await?;
        Ok(management::ResetLockoutPolicyToDefaultResponse {
            details: Some(object_details(done)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_and_negative_ones_are_refused() {
        let d = |seconds, nanos| Some(pbjson_types::Duration { seconds, nanos });
        let got = duration_in(d(90, 500)).unwrap();
        assert_eq!(got, Some(Duration::new(90, 500)));
        assert_eq!(duration_out(got), d(90, 500));
        assert!(duration_in(d(-1, 0)).is_err());
        assert!(duration_in(d(0, -5)).is_err());
        assert_eq!(duration_in(None).unwrap(), None);
    }
}
