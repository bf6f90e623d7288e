//! AddOrganization (`POST /v2/organizations`), instance administrators only.

use latchkey_engine::{Error, ErrorId};

use super::{Call, Rpc};
use crate::proto::zitadel::org::v2 as org;
use crate::wire::details;

pub struct AddOrganization;

impl Rpc for AddOrganization {
    type Request = org::AddOrganizationRequest;
    type Response = org::AddOrganizationResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: org::AddOrganizationRequest,
    ) -> Result<org::AddOrganizationResponse, Error> {
        if !request.admins.is_empty() {
            return Err(Error::with(
                ErrorId::Unsupported,
                "admins in AddOrganization are not supported yet; use CreateAdministrator",
            ));
        }
        let (organization_id, done) = engine
            .add_organization(
                caller,
                &request.name,
                request.org_id.filter(|id| !id.is_empty()),
            )
            .await?;
        Ok(org::AddOrganizationResponse {
            details: Some(details(done)),
            organization_id,
            created_admins: Vec::new(),
        })
    }
}
