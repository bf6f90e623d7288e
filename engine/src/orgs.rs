//! Organizations: creation (AddOrganization) and lookups by id and domain. Organizations are few
//! and never change after creation, so they are cached once read.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use latchkey_storage::WriteBatch;

use crate::access::{Caller, Permission, Reach};
use crate::error::{Error, ErrorId};
use crate::keys;
use crate::registry::read_off_worker;
use crate::time::{now_micros, to_datetime, Micros};
use crate::types::{Details, OrgSelector};
use crate::{required, valid_id, Engine};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OrgRecord {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub created: Micros,
}

impl OrgRecord {
    pub fn details(&self) -> Details {
        Details {
            sequence: 1,
            change_date: to_datetime(self.created),
            resource_owner: self.id.clone(),
            creation_date: to_datetime(self.created),
        }
    }

    /// The index entries and record of a new organization.
    pub fn write(&self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        batch.put(keys::org(&self.id), crate::stored::encode(self));
        batch.put(
            keys::org_name(&self.name.to_lowercase()),
            self.id.as_bytes().to_vec(),
        );
        batch.put(keys::org_domain(&self.domain), self.id.as_bytes().to_vec());
        batch
    }
}

/// `My Org` under `localhost` → `my-org.localhost`.
pub(crate) fn domain_for(name: &str, instance_domain: &str) -> String {
    let mut slug = String::new();
    for c in name.trim().to_lowercase().chars() {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    format!("{}.{instance_domain}", slug.trim_matches('-'))
}

impl Engine {
    /// AddOrganization: instance administrators only.
    pub async fn add_organization(
        &self,
        caller: &Caller,
        name: &str,
        org_id: Option<String>,
    ) -> Result<(String, Details), Error> {
        self.check_open()?;
        if caller.reach(Permission::OrgCreate)? != Reach::Instance {
            return Err(ErrorId::PermissionDenied.into());
        }
        required("name", name, 200)?;
        if let Some(id) = &org_id {
            if !valid_id(id) {
                return Err(ErrorId::InvalidOrgId.into());
            }
        }
        let id = match org_id {
            Some(id) => id,
            None => self.new_id(keys::org)?,
        };
        let name = name.trim().to_owned();
        let record = OrgRecord {
            domain: domain_for(&name, &self.inner.config.instance_domain),
            id,
            name,
            created: now_micros(),
        };
        self.create_org(record).await
    }

    pub(crate) async fn create_org(&self, record: OrgRecord) -> Result<(String, Details), Error> {
        let store = &self.inner.store;
        let _id = self.reserve(keys::org(&record.id), ErrorId::OrgIdTaken)?;
        let name_key = keys::org_name(&record.name.to_lowercase());
        let _name = self.reserve(name_key.clone(), ErrorId::OrgNameTaken)?;
        let found = read_off_worker(
            store,
            &[
                keys::org(&record.id),
                name_key.clone(),
                keys::org_domain(&record.domain),
            ],
        )
        .await?;
        if found[0].is_some() {
            return Err(ErrorId::OrgIdTaken.into());
        }
        if found[1].is_some() || found[2].is_some() {
            return Err(ErrorId::OrgNameTaken.into());
        }
        // In a cluster another node may be creating the same name (or domain) right now.
        let holder = record.id.as_bytes().to_vec();
        let domain_key = keys::org_domain(&record.domain);
        let unique: [&[u8]; 2] = [&name_key, &domain_key];
        for (i, key) in unique.iter().enumerate() {
            if !store.claim_unique(key, &holder).await? {
                for claimed in &unique[..i] {
                    if let Err(e) = store.release_unique(claimed, &holder).await {
                        tracing::warn!("an organization's unique name stays claimed: {e}");
                    }
                }
                return Err(ErrorId::OrgNameTaken.into());
            }
        }
        let written = store
            .submit(&keys::org(&record.id), record.write())
            .wait()
            .await;
        if let Err(e) = written {
            crate::users::release_if_unwritten(store, &e, &unique, &holder).await;
            return Err(e.into());
        }
        let result = (record.id.clone(), record.details());
        self.inner.orgs.insert(record.id.clone(), Arc::new(record));
        Ok(result)
    }

    /// The organization `id`, from the cache or the store (read off the async workers).
    pub(crate) async fn org(&self, id: &str) -> Result<Option<Arc<OrgRecord>>, Error> {
        if let Some(org) = self.inner.orgs.get(id) {
            return Ok(Some(org.clone()));
        }
        let stored = read_off_worker(&self.inner.store, &[keys::org(id)]).await?;
        self.cache_org(id, stored.into_iter().next().flatten())
    }

    /// [`Engine::org`] for code already on the blocking pool (scans).
    pub(crate) fn org_blocking(&self, id: &str) -> Result<Option<Arc<OrgRecord>>, Error> {
        if let Some(org) = self.inner.orgs.get(id) {
            return Ok(Some(org.clone()));
        }
        let stored = self.inner.store.get(&keys::org(id))?;
        self.cache_org(id, stored)
    }

    fn cache_org(
        &self,
        id: &str,
        stored: Option<Vec<u8>>,
    ) -> Result<Option<Arc<OrgRecord>>, Error> {
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let record: OrgRecord = postcard::from_bytes(&bytes)
            .map_err(|e| Error::with(ErrorId::Internal, format!("corrupt organization: {e}")))?;
        let record = Arc::new(record);
        self.inner.orgs.insert(id.to_owned(), record.clone());
        Ok(Some(record))
    }

    /// Every organization's id (on the blocking pool: a scan, if a short one).
    pub(crate) fn all_org_ids(&self) -> Result<Vec<String>, Error> {
        let mut ids = Vec::new();
        for item in self.inner.store.scan_prefix(keys::ORGS) {
            let (_, bytes) = item?;
            let record: OrgRecord = postcard::from_bytes(&bytes).map_err(|e| {
                Error::with(ErrorId::Internal, format!("corrupt organization: {e}"))
            })?;
            ids.push(record.id);
        }
        Ok(ids)
    }

    /// The organization a creation targets, if it exists and `reach` covers it; otherwise the
    /// same NotFound whether it is missing or out of reach.
    pub(crate) async fn target_org(
        &self,
        selector: &OrgSelector,
        reach: &Reach,
    ) -> Result<Arc<OrgRecord>, Error> {
        let id = match selector {
            OrgSelector::Id(id) => id.clone(),
            OrgSelector::Domain(domain) => {
                let key = keys::org_domain(&domain.to_lowercase());
                let bytes = read_off_worker(&self.inner.store, &[key])
                    .await?
                    .into_iter()
                    .next()
                    .flatten()
                    .ok_or(ErrorId::OrgNotFound)?;
                String::from_utf8(bytes).map_err(|_| Error::new(ErrorId::Internal))?
            }
        };
        match self.org(&id).await? {
            Some(org) if reach.covers(&org.id) => Ok(org),
            _ => Err(ErrorId::OrgNotFound.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_slugs() {
        assert_eq!(domain_for("My  Org!", "localhost"), "my-org.localhost");
        assert_eq!(domain_for("ACME", "example.com"), "acme.example.com");
    }
}
