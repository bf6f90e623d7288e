//! CreateAdministrator: assigning roles on the instance or an organization to a user.
//! Instance roles need an instance administrator; organization roles need AdminManage on that
//! organization (IAM_OWNER, or ORG_OWNER of it). The target user must be within the caller's reach.

use chrono::{DateTime, Utc};

use crate::access::{Caller, Grant, Permission, Reach, Role};
use crate::error::{Error, ErrorId};
use crate::types::{OrgSelector, Resource};
use crate::user::actor::Request;
use crate::{check_user_id, Engine};

impl Engine {
    pub async fn create_administrator(
        &self,
        caller: &Caller,
        user_id: &str,
        resource: Resource,
        roles: &[String],
    ) -> Result<DateTime<Utc>, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::AdminManage)?;
        check_user_id(user_id)?;
        if roles.is_empty() {
            return Err(Error::with(
                ErrorId::InvalidRole,
                "at least one role is required",
            ));
        }
        let org_id = match &resource {
            Resource::Instance => {
                if reach != Reach::Instance {
                    return Err(ErrorId::PermissionDenied.into());
                }
                None
            }
            Resource::Organization(org) => Some(
                self.target_org(&OrgSelector::Id(org.clone()), &reach)
                    .await?
                    .id
                    .clone(),
            ),
        };
        let mut grants = Vec::with_capacity(roles.len());
        for name in roles {
            let role = Role::parse(name)
                .filter(|r| r.is_instance_role() == org_id.is_none())
                .ok_or_else(|| {
                    Error::with(
                        ErrorId::InvalidRole,
                        format!("role {name} cannot be granted on this resource"),
                    )
                })?;
            grants.push(Grant {
                role,
                org_id: org_id.clone(),
            });
        }
        self.inner
            .registry
            .call(user_id, |reply| Request::AddGrants {
                reach: reach.clone(),
                grants: grants.clone(),
                reply,
            })
            .await?;
        Ok(Utc::now())
    }
}
