//! CreateAdministrator (`POST /v2beta/administrators`): roles on the instance or an organization.

use latchkey_engine::{Error, ErrorId, Resource};

use super::{Call, Rpc};
use crate::proto::zitadel::internal_permission::v2beta::{self as permission, resource_type};

pub struct CreateAdministrator;

impl Rpc for CreateAdministrator {
    type Request = permission::CreateAdministratorRequest;
    type Response = permission::CreateAdministratorResponse;

    /// The grant is written with the user.
    fn scope(_call: &Call<'_>, request: &Self::Request) -> Option<Vec<u8>> {
        Some(latchkey_engine::snapshot_key(&request.user_id))
    }

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: permission::CreateAdministratorRequest,
    ) -> Result<permission::CreateAdministratorResponse, Error> {
        let resource = request
            .resource
            .ok_or_else(|| Error::invalid("resource is required"))?;
        let resource = match resource.resource {
            Some(resource_type::Resource::Instance(true)) => Resource::Instance,
            Some(resource_type::Resource::OrganizationId(org)) if !org.is_empty() => {
                Resource::Organization(org)
            }
            Some(
                resource_type::Resource::ProjectId(_) | resource_type::Resource::ProjectGrant(_),
            ) => {
                return Err(Error::with(
                    ErrorId::Unsupported,
                    "project administrators are not supported; use instance or organizationId",
                ))
            }
            _ => {
                return Err(Error::invalid(
                    "resource must be instance or organizationId",
                ))
            }
        };
        let created = engine
            .create_administrator(caller, &request.user_id, resource, &request.roles)
            .await?;
        Ok(permission::CreateAdministratorResponse {
            creation_date: Some(created.into()),
        })
    }
}
