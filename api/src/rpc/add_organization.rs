//! AddOrganization (`POST /v2/organizations`), instance administrators only.

use serde::{Deserialize, Serialize};

use latchkey_engine::{Caller, Engine, Error, ErrorId};

use super::Rpc;
use crate::wire::DetailsJson;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddOrganizationRequest {
    #[serde(default)]
    pub name: String,
    #[serde(alias = "org_id")]
    pub org_id: Option<String>,
    #[serde(default)]
    pub admins: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddOrganizationResponse {
    pub details: DetailsJson,
    pub organization_id: String,
    pub created_admins: Vec<serde_json::Value>,
}

impl crate::wire::JsonAnswer for AddOrganizationResponse {}

pub struct AddOrganization;

impl Rpc for AddOrganization {
    const SERVICE: &'static str = "zitadel.org.v2.OrganizationService";
    const METHOD: &'static str = "AddOrganization";
    type Request = AddOrganizationRequest;
    type Response = AddOrganizationResponse;
    type ProtoRequest = crate::proto::zitadel::org::v2::AddOrganizationRequest;
    type ProtoResponse = crate::proto::zitadel::org::v2::AddOrganizationResponse;

    async fn call(
        engine: &Engine,
        caller: &Caller,
        request: AddOrganizationRequest,
    ) -> Result<AddOrganizationResponse, Error> {
        if !request.admins.is_empty() {
            return Err(Error::with(
                ErrorId::Unsupported,
                "admins in AddOrganization are not supported yet; use CreateAdministrator",
            ));
        }
        let (organization_id, details) = engine
            .add_organization(
                caller,
                &request.name,
                request.org_id.filter(|id| !id.is_empty()),
            )
            .await?;
        Ok(AddOrganizationResponse {
            details: (&details).into(),
            organization_id,
            created_admins: Vec::new(),
        })
    }
}
