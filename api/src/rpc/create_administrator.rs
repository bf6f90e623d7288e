//! CreateAdministrator (`POST /v2beta/administrators`): roles on the instance or an organization.

use serde::{Deserialize, Serialize};

use latchkey_engine::{Caller, Engine, Error, ErrorId, Resource};

use super::Rpc;
use crate::wire::timestamp;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceJson {
    pub instance: Option<bool>,
    #[serde(alias = "organization_id")]
    pub organization_id: Option<String>,
    #[serde(alias = "project_id")]
    pub project_id: Option<String>,
    #[serde(alias = "project_grant")]
    pub project_grant: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAdministratorRequest {
    #[serde(default, alias = "user_id")]
    pub user_id: String,
    pub resource: Option<ResourceJson>,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAdministratorResponse {
    pub creation_date: String,
}

impl crate::wire::JsonAnswer for CreateAdministratorResponse {}

pub struct CreateAdministrator;

impl Rpc for CreateAdministrator {
    const SERVICE: &'static str = "zitadel.internal_permission.v2beta.InternalPermissionService";
    const METHOD: &'static str = "CreateAdministrator";
    type Request = CreateAdministratorRequest;
    type Response = CreateAdministratorResponse;
    type ProtoRequest =
        crate::proto::zitadel::internal_permission::v2beta::CreateAdministratorRequest;
    type ProtoResponse =
        crate::proto::zitadel::internal_permission::v2beta::CreateAdministratorResponse;

    async fn call(
        engine: &Engine,
        caller: &Caller,
        request: CreateAdministratorRequest,
    ) -> Result<CreateAdministratorResponse, Error> {
        let resource = request
            .resource
            .ok_or_else(|| Error::invalid("resource is required"))?;
        let resource = match resource {
            ResourceJson {
                instance: Some(true),
                ..
            } => Resource::Instance,
            ResourceJson {
                organization_id: Some(org),
                ..
            } if !org.is_empty() => Resource::Organization(org),
            ResourceJson {
                project_id: Some(_),
                ..
            }
            | ResourceJson {
                project_grant: Some(_),
                ..
            } => {
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
        Ok(CreateAdministratorResponse {
            creation_date: timestamp(&created),
        })
    }
}
