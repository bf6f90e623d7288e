//! Lockout policies: how many wrong passwords lock a user, and whether (and when) the lock lifts by
//! itself. There is the instance's default and, optionally, an organization's own; a check uses
//! the organization's if it has one, else the instance's, resolved when the check runs. Both are
//! off (0) until an administrator sets them, as in ZITADEL.
//!
//! Policies are few and rarely written: every one is read into memory at open and kept there
//! (`Policies`), so a password check never reads the store for its policy. Writes are serialized
//! by one lock, made durable, and only then shown in memory.

use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::AbortHandle;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use latchkey_storage::{Store, WriteBatch};

use crate::access::{Caller, Permission, Reach};
use crate::error::{Error, ErrorId};
use crate::keys;
use crate::time::{now_micros, to_datetime, Micros};
use crate::types::Details;
use crate::Engine;

/// A lockout policy's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Wrong passwords that lock a user (0: never).
    pub max_password_attempts: u64,
    /// Wrong one-time codes that lock a user (0: never). Kept and served; Latchkey checks no
    /// one-time codes yet.
    pub max_otp_attempts: u64,
    /// A lock from failed checks lifts by itself after this long (`None`: only an administrator
    /// unlocks). A Latchkey extension.
    pub auto_unlock_after: Option<Duration>,
    /// After this many automatic unlocks in a row with no successful check between them, the next
    /// lock is permanent (0: no limit). A Latchkey extension.
    pub max_temporary_lockouts: u32,
}

/// A write of a policy, as the admin and management APIs send it: the two counts always (they are
/// ZITADEL's fields), the extensions only when given — so a ZITADEL client that knows nothing of
/// them changes the counts without clearing an automatic unlock someone else set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyUpdate {
    pub max_password_attempts: u64,
    pub max_otp_attempts: u64,
    /// `Some(ZERO)`: no automatic unlock; `None`: unchanged (off for a new policy).
    pub auto_unlock_after: Option<Duration>,
    /// `None`: unchanged (0 for a new policy).
    pub max_temporary_lockouts: Option<u32>,
}

impl PolicyUpdate {
    /// `current` with this update applied.
    pub fn apply(&self, current: LockoutPolicy) -> LockoutPolicy {
        LockoutPolicy {
            max_password_attempts: self.max_password_attempts,
            max_otp_attempts: self.max_otp_attempts,
            auto_unlock_after: match self.auto_unlock_after {
                None => current.auto_unlock_after,
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
            },
            max_temporary_lockouts: self
                .max_temporary_lockouts
                .unwrap_or(current.max_temporary_lockouts),
        }
    }
}

/// Every setting given: the policy becomes exactly `policy`.
impl From<LockoutPolicy> for PolicyUpdate {
    fn from(policy: LockoutPolicy) -> Self {
        PolicyUpdate {
            max_password_attempts: policy.max_password_attempts,
            max_otp_attempts: policy.max_otp_attempts,
            auto_unlock_after: Some(policy.auto_unlock_after.unwrap_or_default()),
            max_temporary_lockouts: Some(policy.max_temporary_lockouts),
        }
    }
}

/// Which policy applies to an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    Instance,
    Organization,
}

/// A policy as the settings and policy APIs answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyView {
    pub policy: LockoutPolicy,
    pub source: PolicySource,
    pub details: Details,
}

/// Stored under `keys::instance_lockout_policy` / `keys::org_lockout_policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PolicyRecord {
    pub owner: String,
    pub max_password_attempts: u64,
    pub max_otp_attempts: u64,
    /// Microseconds; 0: no automatic unlock.
    pub auto_unlock_after: u64,
    pub max_temporary_lockouts: u32,
    pub sequence: u64,
    pub created: Micros,
    pub changed: Micros,
}

impl PolicyRecord {
    pub fn policy(&self) -> LockoutPolicy {
        LockoutPolicy {
            max_password_attempts: self.max_password_attempts,
            max_otp_attempts: self.max_otp_attempts,
            auto_unlock_after: (self.auto_unlock_after > 0)
                .then(|| Duration::from_micros(self.auto_unlock_after)),
            max_temporary_lockouts: self.max_temporary_lockouts,
        }
    }

    fn details(&self) -> Details {
        Details {
            sequence: self.sequence,
            change_date: to_datetime(self.changed),
            resource_owner: self.owner.clone(),
            creation_date: to_datetime(self.created),
        }
    }

    fn set(&mut self, policy: &LockoutPolicy, now: Micros) {
        self.max_password_attempts = policy.max_password_attempts;
        self.max_otp_attempts = policy.max_otp_attempts;
        self.auto_unlock_after = policy
            .auto_unlock_after
            .map_or(0, |d| d.as_micros().min(u128::from(u64::MAX)) as u64);
        self.max_temporary_lockouts = policy.max_temporary_lockouts;
        self.sequence += 1;
        self.changed = now;
    }
}

/// Every policy, in memory.
#[derive(Default)]
pub(crate) struct Policies {
    instance: RwLock<Option<Arc<PolicyRecord>>>,
    orgs: DashMap<String, Arc<PolicyRecord>>,
    /// Serializes writes (rare), so a read-change-write of one policy cannot race another.
    writing: tokio::sync::Mutex<()>,
    /// Cluster mode: the store's view, which password checks read the policy from (another
    /// node may have changed it a moment ago).
    view: std::sync::OnceLock<Arc<Store>>,
}

impl Policies {
    /// Every stored policy (at open, on the blocking pool).
    pub fn load(store: &Store) -> Result<Policies, Error> {
        let policies = Policies::default();
        if let Some(bytes) = store.get(&keys::instance_lockout_policy())? {
            *policies.write_instance() = Some(Arc::new(decode(&bytes)?));
        }
        for item in store.scan_prefix(keys::ORG_LOCKOUT_POLICIES) {
            let (_, bytes) = item?;
            let record: PolicyRecord = decode(&bytes)?;
            policies.orgs.insert(record.owner.clone(), Arc::new(record));
        }
        Ok(policies)
    }

    /// Cluster mode: other nodes change policies too, and this node learns of it through its
    /// view. Password checks read the view from now on; the copy in memory (what the policy
    /// RPCs answer from, after catching up) is reloaded from the store every `every` (under the
    /// write lock, so a change made here is never overwritten by an older read).
    pub fn follow(self: &Arc<Self>, store: Arc<Store>, every: std::time::Duration) -> AbortHandle {
        let _ = self.view.set(store.clone());
        let policies = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _writing = policies.writing.lock().await;
                let reader = store.clone();
                match tokio::task::spawn_blocking(move || Policies::load(&reader)).await {
                    Ok(Ok(loaded)) => policies.replace(loaded),
                    Ok(Err(e)) => tracing::warn!("reloading lockout policies: {e}"),
                    Err(e) => tracing::warn!("reloading lockout policies: {e}"),
                }
            }
        })
        .abort_handle()
    }

    fn replace(&self, loaded: Policies) {
        *self.write_instance() = loaded.instance();
        self.orgs.retain(|org, _| loaded.orgs.contains_key(org));
        for (org, record) in loaded.orgs {
            self.orgs.insert(org, record);
        }
    }

    fn write_instance(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<PolicyRecord>>> {
        self.instance
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn instance(&self) -> Option<Arc<PolicyRecord>> {
        self.instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The policy a check of a user in `org` uses: the organization's own, else the instance's.
    /// In cluster mode it is read from the view (two point reads), so a change made on another
    /// node applies as soon as this node's view has it.
    pub fn effective(&self, org: &str) -> LockoutPolicy {
        if let Some(store) = self.view.get() {
            let read = |key: Vec<u8>| -> Option<PolicyRecord> {
                let bytes = store.get(&key).ok()??;
                decode(&bytes).ok()
            };
            if let Some(own) = read(keys::org_lockout_policy(org)) {
                return own.policy();
            }
            return read(keys::instance_lockout_policy())
                .map(|p| p.policy())
                .unwrap_or_default();
        }
        match self.orgs.get(org) {
            Some(own) => own.policy(),
            None => self.instance().map(|p| p.policy()).unwrap_or_default(),
        }
    }
}

fn decode(bytes: &[u8]) -> Result<PolicyRecord, Error> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::with(ErrorId::Internal, format!("corrupt lockout policy: {e}")))
}

fn default_record(owner: &str, now: Micros) -> PolicyRecord {
    PolicyRecord {
        owner: owner.to_owned(),
        max_password_attempts: 0,
        max_otp_attempts: 0,
        auto_unlock_after: 0,
        max_temporary_lockouts: 0,
        sequence: 0,
        created: now,
        changed: now,
    }
}

impl Engine {
    /// The policy that applies to `org` (its own, else the instance's) — GetLockoutSettings and
    /// management's GetLockoutPolicy. `None`: the instance's (settings v2 `ctx.instance`).
    pub async fn lockout_policy(
        &self,
        caller: &Caller,
        org: Option<&str>,
    ) -> Result<PolicyView, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::PolicyRead)?;
        self.current_policies(None).await?;
        let policies = &self.inner.policies;
        if let Some(org) = org {
            self.reachable_org(org, &reach).await?;
            if let Some(own) = policies.orgs.get(org) {
                return Ok(PolicyView {
                    policy: own.policy(),
                    source: PolicySource::Organization,
                    details: own.details(),
                });
            }
        }
        Ok(self.instance_view())
    }

    /// Cluster mode: the policies as the whole cluster acknowledged them before this call (the
    /// view caught up with every partition, then reloaded), for the policy RPCs; password
    /// checks use the copy reloaded every second. Embedded: the copy in memory is the truth.
    /// `writing`: the key of the policy about to be changed, settled first (`Store::prepare`).
    async fn current_policies(&self, writing: Option<&[u8]>) -> Result<(), Error> {
        let store = &self.inner.store;
        if !store.is_journaled() {
            return Ok(());
        }
        if let Some(key) = writing {
            store.prepare(key).await?;
        }
        store.settle(None).await?;
        let reader = store.clone();
        let loaded = tokio::task::spawn_blocking(move || Policies::load(&reader))
            .await
            .map_err(|_| Error::new(ErrorId::Internal))??;
        self.inner.policies.replace(loaded);
        Ok(())
    }

    fn instance_view(&self) -> PolicyView {
        let record = self
            .inner
            .policies
            .instance()
            .unwrap_or_else(|| Arc::new(default_record("", 0)));
        PolicyView {
            policy: record.policy(),
            source: PolicySource::Instance,
            details: record.details(),
        }
    }

    /// The instance's default policy (admin GetLockoutPolicy, management
    /// GetDefaultLockoutPolicy).
    pub async fn default_lockout_policy(&self, caller: &Caller) -> Result<PolicyView, Error> {
        self.check_open()?;
        caller.reach(Permission::PolicyRead)?;
        self.current_policies(None).await?;
        Ok(self.instance_view())
    }

    /// Sets the instance's default (admin UpdateLockoutPolicy): instance administrators only.
    pub async fn set_default_lockout_policy(
        &self,
        caller: &Caller,
        update: PolicyUpdate,
    ) -> Result<Details, Error> {
        self.check_open()?;
        if caller.reach(Permission::InstancePolicyWrite)? != Reach::Instance {
            return Err(ErrorId::PermissionDenied.into());
        }
        let policies = &self.inner.policies;
        let _writing = policies.writing.lock().await;
        let key = keys::instance_lockout_policy();
        self.current_policies(Some(&key)).await?;
        let now = now_micros();
        let mut record = policies
            .instance()
            .map(|p| (*p).clone())
            .unwrap_or_else(|| default_record("", now));
        let policy = update.apply(record.policy());
        if record.sequence > 0 && record.policy() == policy {
            return Err(ErrorId::InstancePolicyNotChanged.into());
        }
        record.set(&policy, now);
        self.write_policy(&key, Some(&record)).await?;
        let details = record.details();
        *policies.write_instance() = Some(Arc::new(record));
        Ok(details)
    }

    /// Gives `org` its own policy (management AddCustomLockoutPolicy); refused if it has one.
    pub async fn add_org_lockout_policy(
        &self,
        caller: &Caller,
        org: &str,
        update: PolicyUpdate,
    ) -> Result<Details, Error> {
        self.change_org_policy(caller, org, |existing, now| match existing {
            Some(_) => Err(ErrorId::OrgPolicyExists.into()),
            None => {
                let mut record = default_record(org, now);
                record.set(&update.apply(LockoutPolicy::default()), now);
                Ok(Some(record))
            }
        })
        .await
    }

    /// Changes `org`'s own policy (management UpdateCustomLockoutPolicy).
    pub async fn update_org_lockout_policy(
        &self,
        caller: &Caller,
        org: &str,
        update: PolicyUpdate,
    ) -> Result<Details, Error> {
        self.change_org_policy(caller, org, |existing, now| {
            let mut record = existing.ok_or(ErrorId::OrgPolicyNotFound)?;
            let policy = update.apply(record.policy());
            if record.policy() == policy {
                return Err(ErrorId::OrgPolicyNotChanged.into());
            }
            record.set(&policy, now);
            Ok(Some(record))
        })
        .await
    }

    /// Removes `org`'s own policy: the instance's applies again (ResetLockoutPolicyToDefault).
    pub async fn reset_org_lockout_policy(
        &self,
        caller: &Caller,
        org: &str,
    ) -> Result<Details, Error> {
        self.change_org_policy(caller, org, |existing, _| match existing {
            Some(_) => Ok(None),
            None => Err(ErrorId::OrgPolicyNotFoundReset.into()),
        })
        .await
    }

    /// Reads, changes and writes `org`'s policy under the write lock; `change` answers the new
    /// record, or `None` to remove it.
    async fn change_org_policy(
        &self,
        caller: &Caller,
        org: &str,
        change: impl FnOnce(Option<PolicyRecord>, Micros) -> Result<Option<PolicyRecord>, Error>,
    ) -> Result<Details, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::PolicyWrite)?;
        self.reachable_org(org, &reach).await?;
        let policies = &self.inner.policies;
        let _writing = policies.writing.lock().await;
        let key = keys::org_lockout_policy(org);
        self.current_policies(Some(&key)).await?;
        let now = now_micros();
        let existing = policies.orgs.get(org).map(|p| (**p).clone());
        let next = change(existing.clone(), now)?;
        self.write_policy(&key, next.as_ref()).await?;
        let details = match (&next, existing) {
            (Some(record), _) => record.details(),
            (None, Some(mut removed)) => {
                removed.sequence += 1;
                removed.changed = now;
                removed.details()
            }
            (None, None) => default_record(org, now).details(),
        };
        match next {
            Some(record) => {
                policies.orgs.insert(org.to_owned(), Arc::new(record));
            }
            None => {
                policies.orgs.remove(org);
            }
        }
        Ok(details)
    }

    async fn write_policy(&self, key: &[u8], record: Option<&PolicyRecord>) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        match record {
            Some(record) => batch.put(key.to_vec(), crate::stored::encode(record)),
            None => batch.delete(key.to_vec()),
        }
        self.inner.store.submit(key, batch).wait().await?;
        Ok(())
    }

    /// `org` if it exists and `reach` covers it, else the same NotFound for both.
    async fn reachable_org(&self, org: &str, reach: &Reach) -> Result<(), Error> {
        match self.org(org).await? {
            Some(found) if reach.covers(&found.id) => Ok(()),
            _ => Err(ErrorId::OrgNotFound.into()),
        }
    }
}
