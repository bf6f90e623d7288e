//! First start: on an empty store, create the default organization, an instance-admin machine
//! user (IAM_OWNER) and a personal access token for it — all in one atomic write, so a crash
//! mid-bootstrap leaves nothing half-made and the next start simply bootstraps again.

use crate::keys;

use crate::access::{Grant, Role};
use crate::error::Error;
use crate::orgs::{domain_for, OrgRecord};
use crate::time::now_micros;
use crate::tokens::{generate_token, token_writes};
use crate::types::UserState;
use crate::user::event::EventKind;
use crate::user::record::{Kind, MachineRecord, UserRecord};
use crate::Engine;

pub(crate) const DEFAULT_ORG: &str = "default-org";
const ADMIN_USER: &str = "admin-user";

/// What the first start created.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub org_id: String,
    pub admin_user_id: String,
    /// The admin's token: the one given, or a fresh random one. Shown once.
    pub admin_token: String,
}

impl Engine {
    /// Bootstraps an empty store. Returns `None` when it was bootstrapped before (a later
    /// start never changes the admin token).
    pub async fn bootstrap(&self, token: Option<String>) -> Result<Option<Bootstrapped>, Error> {
        self.check_open()?;
        let store = &self.inner.store;
        if self.default_org_id().is_some() {
            return Ok(None);
        }
        let now = now_micros();
        let org = OrgRecord {
            id: self.new_id(keys::org)?,
            name: "Latchkey".into(),
            domain: domain_for("Latchkey", &self.inner.config.instance_domain),
            created: now,
        };
        let user_id = self.new_id(keys::user)?;
        let token = token
            .filter(|t| !t.is_empty())
            .unwrap_or_else(generate_token);
        let (token_ref, mut batch) = token_writes(&token, self.inner.ids.next_id(), &user_id, None);
        let kind = Kind::Machine(MachineRecord {
            name: "Instance administrator".into(),
            description: "created at bootstrap".into(),
            tokens: vec![token_ref.clone()],
        });
        let mut user = UserRecord::new(
            user_id.clone(),
            org.id.clone(),
            UserState::Active,
            "admin",
            kind,
            now,
        );
        user.grants.push(
            Grant {
                role: Role::IamOwner,
                org_id: None,
            }
            .into(),
        );
        let added = user.record_event(
            EventKind::MachineAdded {
                org_id: org.id.clone(),
                username: user.username.clone(),
            },
            now,
            "",
        );
        let token_added = user.record_event(
            EventKind::TokenAdded {
                token_id: token_ref.id.clone(),
            },
            now,
            "",
        );
        batch = user.write_new(&added, batch);
        batch.put(
            keys::event(&user.id, token_added.sequence),
            token_added.encode(),
        );
        batch.put(user.username_key(), user.id.as_bytes().to_vec());
        for (key, value) in org.write().ops() {
            if let Some(value) = value {
                batch.put(key.clone(), value.clone());
            }
        }
        batch.put(keys::meta(DEFAULT_ORG), org.id.as_bytes().to_vec());
        batch.put(keys::meta(ADMIN_USER), user.id.as_bytes().to_vec());
        store.submit(&keys::user(&user.id), batch).wait().await?;
        // Only now: a failed write leaves the engine unbootstrapped, to be tried again.
        let _ = self.inner.default_org.set(org.id.clone());
        Ok(Some(Bootstrapped {
            org_id: org.id,
            admin_user_id: user_id,
            admin_token: token,
        }))
    }
}
