//! User commands and reads on the [`Engine`]: the lifecycle transitions, GetUserByID
//! (ListUsers: `list_users.rs`),
//! and creation of human and machine users. Each checks the caller's permission first (403
//! before any lookup), then hands the user-specific part to the user's actor.

use latchkey_storage::WriteBatch;

use crate::keys;

use crate::access::{Caller, Permission, Reach};
use crate::error::{Error, ErrorId};
use crate::orgs::OrgRecord;
use crate::password::{hash_password, validate_hash};
use crate::registry::read_off_worker;
use crate::time::now_micros;
use crate::types::*;
use crate::user::actor::Request;
use crate::user::lockout::LockoutState;
use crate::user::record::{HumanRecord, Kind, MachineRecord, PasswordRecord, UserRecord};
use crate::user::state::Lifecycle;
use crate::{check_user_id, required, valid_id, Engine};

impl Engine {
    /// LockUser: ACTIVE or INITIAL → LOCKED.
    pub async fn lock_user(&self, caller: &Caller, user_id: &str) -> Result<Details, Error> {
        self.lifecycle(caller, user_id, Lifecycle::Lock).await
    }

    /// UnlockUser: LOCKED → ACTIVE, failed-attempt counters reset. Exactly once under any
    /// concurrency: the user's actor applies one unlock, every other sees "user is not locked".
    pub async fn unlock_user(&self, caller: &Caller, user_id: &str) -> Result<Details, Error> {
        self.lifecycle(caller, user_id, Lifecycle::Unlock).await
    }

    /// DeactivateUser: ACTIVE or LOCKED → INACTIVE.
    pub async fn deactivate_user(&self, caller: &Caller, user_id: &str) -> Result<Details, Error> {
        self.lifecycle(caller, user_id, Lifecycle::Deactivate).await
    }

    /// ReactivateUser: INACTIVE → ACTIVE.
    pub async fn reactivate_user(&self, caller: &Caller, user_id: &str) -> Result<Details, Error> {
        self.lifecycle(caller, user_id, Lifecycle::Reactivate).await
    }

    /// DeleteUser: any existing state → DELETED; frees the username and revokes its tokens.
    pub async fn delete_user(&self, caller: &Caller, user_id: &str) -> Result<Details, Error> {
        self.lifecycle(caller, user_id, Lifecycle::Delete).await
    }

    async fn lifecycle(
        &self,
        caller: &Caller,
        user_id: &str,
        command: Lifecycle,
    ) -> Result<Details, Error> {
        self.check_open()?;
        let permission = match command {
            Lifecycle::Delete => Permission::UserDelete,
            _ => Permission::UserWrite,
        };
        let reach = caller.reach(permission)?;
        check_user_id(user_id)?;
        let details = self
            .inner
            .registry
            .call(user_id, |reply| Request::Lifecycle {
                command,
                reach: reach.clone(),
                by: caller.user_id.clone(),
                reply,
            })
            .await?;
        if command == Lifecycle::Delete {
            // Boxed: rare, and inline it would be moved with every lock's and unlock's future.
            Box::pin(self.release_username(user_id)).await;
        }
        Ok(details)
    }

    /// In a cluster, gives up a deleted user's claim on its username (`Store::release_unique`),
    /// so another node may create it again. Best effort: a claim left behind is taken over once
    /// it is older than the names grace, since no record holds the name any more.
    async fn release_username(&self, user_id: &str) {
        let store = &self.inner.store;
        if !store.is_journaled() {
            return;
        }
        let released = async {
            let found = read_off_worker(store, &[keys::user(user_id)]).await?;
            if let Some(bytes) = found.into_iter().flatten().next() {
                let record = UserRecord::decode(&bytes)?;
                store
                    .release_unique(&record.username_key(), user_id.as_bytes())
                    .await?;
            }
            Ok::<(), Error>(())
        };
        if let Err(e) = released.await {
            tracing::warn!(user_id, "the deleted user's username stays claimed: {e}");
        }
    }

    /// GetUserByID.
    pub async fn get_user(&self, caller: &Caller, user_id: &str) -> Result<User, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserRead)?;
        check_user_id(user_id)?;
        let view = self.inner.registry.view(user_id, &reach).await?;
        self.user_view(&view.record, &view.lockout).await
    }

    /// A user's record and lockout state as its actor holds them (durable), within `reach`.
    pub(crate) async fn user_record(
        &self,
        user_id: &str,
        reach: Reach,
    ) -> Result<(UserRecord, LockoutState), Error> {
        let view = self.inner.registry.view(user_id, &reach).await?;
        Ok((view.record.clone(), view.lockout))
    }

    /// The public view of a user's record (its organization's domain gives its login names).
    pub(crate) async fn user_view(
        &self,
        record: &UserRecord,
        lockout: &LockoutState,
    ) -> Result<User, Error> {
        let org = self.org(&record.org_id).await?;
        Ok(view(record, lockout, org.as_deref()))
    }

    /// AddHumanUser: ACTIVE when a password (or hash) is given, INITIAL otherwise.
    pub async fn add_human_user(&self, caller: &Caller, input: NewHuman) -> Result<Created, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserWrite)?;
        if let Some(id) = &input.user_id {
            check_user_id(id)?;
        }
        required("profile.givenName", &input.profile.given_name, 200)?;
        required("profile.familyName", &input.profile.family_name, 200)?;
        required("email.email", &input.email.email, 200)?;
        if !valid_email(&input.email.email) {
            return Err(Error::invalid("email.email is not a valid email address"));
        }
        if let Some(username) = &input.username {
            required("username", username, 200)?;
        }
        let selector = input
            .organization
            .clone()
            .unwrap_or_else(|| OrgSelector::Id(caller.org_id.clone()));
        let org = self.target_org(&selector, &reach).await?;
        let now = now_micros();
        let password = match input.password {
            None => None,
            Some(PasswordInput::Plain {
                password,
                change_required,
            }) => Some(PasswordRecord {
                hash: hash_password(password).await?,
                change_required,
                changed: now,
            }),
            Some(PasswordInput::Hashed {
                hash,
                change_required,
            }) => {
                validate_hash(&hash)?;
                Some(PasswordRecord {
                    hash,
                    change_required,
                    changed: now,
                })
            }
        };
        let state = if password.is_some() {
            UserState::Active
        } else {
            UserState::Initial
        };
        let username = input.username.unwrap_or_else(|| input.email.email.clone());
        let kind = Kind::Human(HumanRecord {
            profile: input.profile.into(),
            email: input.email.into(),
            phone: input.phone.filter(|p| !p.phone.is_empty()).map(Into::into),
            password,
        });
        let id = match input.user_id {
            Some(id) => id,
            None => self.new_id(keys::user)?,
        };
        let record = UserRecord::new(id, org.id.clone(), state, &username, kind, now);
        self.create_user(record, &caller.user_id).await
    }

    /// CreateUser with a machine: always ACTIVE. The username defaults to the name.
    pub async fn create_machine_user(
        &self,
        caller: &Caller,
        input: NewMachine,
    ) -> Result<Created, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserWrite)?;
        if let Some(id) = &input.user_id {
            check_user_id(id)?;
        }
        required("machine.name", &input.name, 200)?;
        if let Some(username) = &input.username {
            required("username", username, 200)?;
        }
        if !valid_id(&input.organization_id) {
            return Err(ErrorId::InvalidOrgId.into());
        }
        let org = self
            .target_org(&OrgSelector::Id(input.organization_id.clone()), &reach)
            .await?;
        let now = now_micros();
        let username = input.username.unwrap_or_else(|| input.name.clone());
        let kind = Kind::Machine(MachineRecord {
            name: input.name,
            description: input.description.unwrap_or_default(),
            tokens: Vec::new(),
        });
        let id = match input.user_id {
            Some(id) => id,
            None => self.new_id(keys::user)?,
        };
        let record = UserRecord::new(id, org.id.clone(), UserState::Active, &username, kind, now);
        self.create_user(record, &caller.user_id).await
    }

    /// Creates `record` race-free without an actor: the user id and the username are claimed in
    /// memory for the duration, checked against the durable store, and written with the user in
    /// one atomic batch. No actor is spawned; the first command activates one from disk. (A
    /// command racing the creation finds no user, which is linearizable: the creation had not
    /// been acknowledged yet.)
    pub(crate) async fn create_user(
        &self,
        mut record: UserRecord,
        by: &str,
    ) -> Result<Created, Error> {
        let store = &self.inner.store;
        let user_key = keys::user(&record.id);
        let username_key = record.username_key();
        let _id_claim = self.reserve(user_key.clone(), ErrorId::UserIdTaken)?;
        let _name_claim = self.reserve(username_key.clone(), ErrorId::UsernameTaken)?;
        // Every write submitted before is applied, so the checks below see the durable truth.
        store.settle(Some(&user_key)).await?;
        let found = read_off_worker(store, &[user_key.clone(), username_key.clone()]).await?;
        if found[0].is_some() {
            return Err(ErrorId::UserIdTaken.into());
        }
        if found[1].is_some() {
            return Err(ErrorId::UsernameTaken.into());
        }
        // In a cluster another node may be creating the same username right now.
        let holder = record.id.as_bytes().to_vec();
        if !store.claim_unique(&username_key, &holder).await? {
            return Err(ErrorId::UsernameTaken.into());
        }
        let mut extra = WriteBatch::default();
        extra.put(username_key.clone(), holder.clone());
        let event = record.creation_event(by);
        let written = store
            .submit(&user_key, record.write_new(&event, extra))
            .wait()
            .await;
        if let Err(e) = written {
            release_if_unwritten(store, &e, &[&username_key], &holder).await;
            return Err(e.into());
        }
        Ok(Created {
            user_id: record.id.clone(),
            details: record.details(),
        })
    }
}

/// After a creation's write failed: gives up its unique claims if nothing was written (a
/// refusal). An unknown outcome keeps them: the creation may have landed.
pub(crate) async fn release_if_unwritten(
    store: &latchkey_storage::Store,
    error: &latchkey_storage::StoreError,
    keys: &[&[u8]],
    holder: &[u8],
) {
    use latchkey_storage::StoreError;
    if !matches!(error, StoreError::NotServed(_) | StoreError::Poisoned) {
        return;
    }
    for key in keys {
        if let Err(e) = store.release_unique(key, holder).await {
            tracing::warn!("a refused creation's unique name stays claimed: {e}");
        }
    }
}

impl Engine {
    /// The id of the user a login name names, as a session's check finds it; `None` for no
    /// such user (or a name that cannot be one). In cluster mode, what routes a session created
    /// by login name to its user's node (from this node's view).
    pub async fn user_id_by_login_name(&self, login_name: &str) -> Option<String> {
        let check = crate::sessions::UserCheck::LoginName(login_name.to_owned());
        self.find_user(&check).await.ok()
    }

    /// The id of the user a session's check names: by id, or by login name — `name@org-domain`,
    /// or a username that is itself an email address, in any organization — case-insensitively.
    /// The same NotFound (QUERY-Dfbg2) for every miss.
    pub(crate) async fn find_user(
        &self,
        check: &crate::sessions::UserCheck,
    ) -> Result<String, Error> {
        use crate::sessions::UserCheck;
        let not_found = || Error::new(ErrorId::CheckedUserNotFound);
        let login = match check {
            UserCheck::Id(id) => {
                check_user_id(id)?;
                return Ok(id.clone());
            }
            UserCheck::LoginName(name) => name.trim().to_lowercase(),
        };
        if !valid_id(&login) {
            return Err(Error::invalid(
                "checks.user.loginName must be 1 to 200 characters",
            ));
        }
        let store = self.inner.store.clone();
        let engine = self.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<String>, Error> {
            let found = |key: Vec<u8>| -> Result<Option<String>, Error> {
                Ok(store
                    .get(&key)?
                    .and_then(|bytes| String::from_utf8(bytes).ok()))
            };
            if let Some((name, domain)) = login.rsplit_once('@') {
                if !name.contains('@') {
                    if let Some(org) = found(keys::org_domain(domain))? {
                        if let Some(id) = found(keys::username(&org, name))? {
                            return Ok(Some(id));
                        }
                    }
                }
            }
            // A username that is an email address is its own login name.
            if login.contains('@') {
                for org in engine.all_org_ids()? {
                    if let Some(id) = found(keys::username(&org, &login))? {
                        return Ok(Some(id));
                    }
                }
            }
            Ok(None)
        })
        .await
        .map_err(|_| Error::new(ErrorId::Internal))??
        .ok_or_else(not_found)
    }
}

/// A user as reads return it; `org` gives the login name its domain.
pub(crate) fn view(record: &UserRecord, lockout: &LockoutState, org: Option<&OrgRecord>) -> User {
    let login_name = match org {
        Some(org) => login_name(&record.username, org),
        None => record.username.clone(),
    };
    User {
        id: record.id.clone(),
        details: record.details(),
        state: record.state,
        username: record.username.clone(),
        login_names: vec![login_name.clone()],
        preferred_login_name: login_name,
        user_type: record.user_type(),
        lockout: lockout.view(record.failed_password_attempts),
    }
}

pub(crate) fn login_name(username: &str, org: &OrgRecord) -> String {
    if username.contains('@') {
        username.to_owned()
    } else {
        format!("{username}@{}", org.domain)
    }
}

fn valid_email(email: &str) -> bool {
    match email.trim().split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_local_part_and_domain() {
        assert!(valid_email("a@b"));
        for bad in ["", "ab", "@b", "a@", "a@b@c"] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
