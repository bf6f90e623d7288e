//! Sessions, as ZITADEL's session API has them: a login creates one with checks (which user,
//! their password), gets an opaque token, and may add checks, metadata or a lifetime later; the
//! token proves possession to read or end the session.
//!
//! The rules (ZITADEL's; `shared/spec` facts): checks run in a fixed order — the user, then the
//! password — and the first failure aborts the request, so a failed check creates or changes no
//! session (the failure itself is still counted by the user's actor, durably). The user is set
//! once per session (another one is "user change not possible"); a password check needs a user,
//! from the same request or an earlier one. Every change that does something rotates the token
//! (the old one stops verifying); a SetSession that changes nothing answers an empty token.
//! Only a hash of the token is stored.
//!
//! Permissions: CreateSession needs `session.write` on the instance; SetSession on the session's
//! user's organization (or the instance); GetSession and ListSessions need nothing for a caller
//! holding the token, the session's creator or its user, else `session.read`; DeleteSession the
//! token, the session's user, or `session.delete`.
//!
//! A session's writes are serialized by one of a fixed set of locks picked by its id (changes of
//! one session are rare and short; a lock per session would have to be collected).

pub(crate) mod list;
mod record;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use latchkey_storage::WriteBatch;

use crate::access::{Caller, Permission, Reach};
use crate::error::{Error, ErrorId};
use crate::keys;
use crate::registry::read_off_worker;
use crate::time::{now_micros, Micros};
use crate::tokens::generate_token;
use crate::types::{Details, UserState, UserType};
use crate::Engine;

pub use list::{SessionQuery, TimestampMatch};
pub(crate) use record::SessionRecord;
use record::{token_hash, SessionUser};

/// How a session's user is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCheck {
    Id(String),
    /// Matched case-insensitively against the user's login name.
    LoginName(String),
}

/// The checks of a CreateSession or SetSession; run in this order.
#[derive(Debug, Clone, Default)]
pub struct SessionChecks {
    pub user: Option<UserCheck>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAgent {
    pub fingerprint_id: Option<String>,
    pub ip: Option<String>,
    pub description: Option<String>,
    pub header: BTreeMap<String, Vec<String>>,
}

/// CreateSession's input.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub checks: SessionChecks,
    pub metadata: BTreeMap<String, Vec<u8>>,
    pub user_agent: Option<UserAgent>,
    /// Microseconds; must be positive. `None`: the session does not expire.
    pub lifetime: Option<i64>,
}

/// SetSession's input.
#[derive(Debug, Clone, Default)]
pub struct SessionChange {
    pub checks: SessionChecks,
    /// An empty value removes the key.
    pub metadata: BTreeMap<String, Vec<u8>>,
    /// Microseconds from now; must be positive. `None`: unchanged.
    pub lifetime: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFactor {
    pub verified_at: DateTime<Utc>,
    pub id: String,
    pub login_name: String,
    pub display_name: String,
    pub organization_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFactor {
    pub verified_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Factors {
    pub user: Option<UserFactor>,
    pub password: Option<PasswordFactor>,
}

/// A session as reads return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub creation_date: DateTime<Utc>,
    pub change_date: DateTime<Utc>,
    pub sequence: u64,
    pub factors: Factors,
    pub metadata: BTreeMap<String, Vec<u8>>,
    pub user_agent: Option<UserAgent>,
    pub expiration_date: Option<DateTime<Utc>>,
}

/// A new session: its token is shown once.
#[derive(Debug, Clone)]
pub struct SessionCreated {
    pub details: Details,
    pub session_id: String,
    pub session_token: String,
}

/// A changed session: the new token, empty when nothing changed.
#[derive(Debug, Clone)]
pub struct SessionSet {
    pub details: Details,
    pub session_token: String,
}

/// Locks serializing the writes of sessions (by id).
pub(crate) struct SessionLocks([Mutex<()>; 64]);

impl Default for SessionLocks {
    fn default() -> Self {
        SessionLocks(std::array::from_fn(|_| Mutex::new(())))
    }
}

impl SessionLocks {
    fn of(&self, id: &str) -> &Mutex<()> {
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.0[(hash % self.0.len() as u64) as usize]
    }
}

/// The outcome of a request's checks: who was checked and when.
struct Checked {
    user: Option<SessionUser>,
    password_at: Option<Micros>,
}

impl Engine {
    /// CreateSession: runs the checks, then creates the session and its token.
    pub async fn create_session(
        &self,
        caller: &Caller,
        input: NewSession,
    ) -> Result<SessionCreated, Error> {
        self.check_open()?;
        if caller.reach(Permission::SessionWrite)? != Reach::Instance {
            return Err(ErrorId::PermissionDenied.into());
        }
        let expires = expiry(input.lifetime)?;
        let checked = self
            .run_checks(&input.checks, None, &caller.user_id)
            .await?;
        let now = now_micros();
        let token = generate_token();
        let record = SessionRecord {
            id: self.new_id(keys::session)?,
            creator: caller.user_id.clone(),
            created: now,
            changed: now,
            sequence: 1,
            token_hash: token_hash(&token),
            user: checked.user,
            password_verified_at: checked.password_at,
            metadata: input
                .metadata
                .into_iter()
                .filter(|(_, value)| !value.is_empty())
                .collect(),
            user_agent: input.user_agent.map(Into::into),
            expires: expires.map(|after| now.saturating_add(after)),
            terminated: false,
        };
        self.write_session(&record).await?;
        Ok(SessionCreated {
            details: record.details(),
            session_id: record.id,
            session_token: token,
        })
    }

    /// SetSession: more checks, metadata or a new lifetime; a new token if anything changed.
    pub async fn set_session(
        &self,
        caller: &Caller,
        session_id: &str,
        change: SessionChange,
    ) -> Result<SessionSet, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::SessionWrite)?;
        check_session_id(session_id)?;
        let _serialized = self.inner.session_locks.of(session_id).lock().await;
        self.inner.store.prepare(&keys::session(session_id)).await?;
        let mut record = self
            .session_record(session_id)
            .await?
            .ok_or(ErrorId::SessionNotFound)?;
        let now = now_micros();
        if record.terminated {
            return Err(ErrorId::SessionTerminated.into());
        }
        if record.expired(now) {
            return Err(ErrorId::SessionExpired.into());
        }
        if !covers(&reach, record.org()) {
            return Err(ErrorId::PermissionDenied.into());
        }
        let lifetime = expiry(change.lifetime)?;
        let checked = self
            .run_checks(&change.checks, record.user.as_ref(), &caller.user_id)
            .await?;
        let mut changed = false;
        if let Some(user) = checked.user {
            record.user = Some(user);
            changed = true;
        }
        if let Some(at) = checked.password_at {
            record.password_verified_at = Some(at);
            changed = true;
        }
        for (key, value) in change.metadata {
            let at = record.metadata.binary_search_by(|(k, _)| k.cmp(&key));
            match (at, value.is_empty()) {
                (Ok(i), true) => {
                    record.metadata.remove(i);
                    changed = true;
                }
                (Ok(i), false) if record.metadata[i].1 != value => {
                    record.metadata[i].1 = value;
                    changed = true;
                }
                (Err(i), false) => {
                    record.metadata.insert(i, (key, value));
                    changed = true;
                }
                _ => {}
            }
        }
        if let Some(after) = lifetime {
            record.expires = Some(now.saturating_add(after));
            changed = true;
        }
        if !changed {
            return Ok(SessionSet {
                details: record.details(),
                session_token: String::new(),
            });
        }
        let token = generate_token();
        record.token_hash = token_hash(&token);
        record.sequence += 1;
        record.changed = now;
        self.write_session(&record).await?;
        Ok(SessionSet {
            details: record.details(),
            session_token: token,
        })
    }

    /// GetSession.
    pub async fn get_session(
        &self,
        caller: &Caller,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Session, Error> {
        self.check_open()?;
        check_session_id(session_id)?;
        let record = self
            .session_record(session_id)
            .await?
            .filter(|r| !r.terminated)
            .ok_or(ErrorId::SessionNotFound)?;
        match token {
            Some(token) if !record.holds(token) => return Err(ErrorId::SessionReadDenied.into()),
            Some(_) => {}
            None if !may_read(caller, &record) => return Err(ErrorId::SessionReadDenied.into()),
            None => {}
        }
        Ok(record.view())
    }

    /// DeleteSession: ends the session (an ended or unknown one answers details too, once the
    /// caller may end it).
    pub async fn delete_session(
        &self,
        caller: &Caller,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Details, Error> {
        self.check_open()?;
        check_session_id(session_id)?;
        let _serialized = self.inner.session_locks.of(session_id).lock().await;
        self.inner.store.prepare(&keys::session(session_id)).await?;
        let record = self.session_record(session_id).await?;
        let allowed = match (token, &record) {
            (Some(token), Some(record)) => record.holds(token),
            (Some(_), None) => false,
            (None, Some(record)) if is_sessions_user(caller, record) => true,
            (None, record) => caller
                .reach(Permission::SessionDelete)
                .is_ok_and(|reach| covers(&reach, record.as_ref().and_then(|r| r.org()))),
        };
        if !allowed {
            return Err(if token.is_some() {
                ErrorId::SessionTokenInvalid.into()
            } else {
                ErrorId::PermissionDenied.into()
            });
        }
        let Some(mut record) = record.filter(|r| !r.terminated) else {
            let now = crate::time::to_datetime(now_micros());
            return Ok(Details {
                sequence: 0,
                change_date: now,
                resource_owner: String::new(),
                creation_date: now,
            });
        };
        record.terminated = true;
        record.sequence += 1;
        record.changed = now_micros();
        self.write_session(&record).await?;
        Ok(record.details())
    }

    /// Runs `checks` in ZITADEL's order; `current`: the session's user, if it has one.
    async fn run_checks(
        &self,
        checks: &SessionChecks,
        current: Option<&SessionUser>,
        by: &str,
    ) -> Result<Checked, Error> {
        let mut user = None;
        if let Some(check) = &checks.user {
            let id = self.find_user(check).await?;
            if current.is_some_and(|c| c.id != id) {
                return Err(ErrorId::SessionUserChange.into());
            }
            // A user durably locked is refused without its actor (`locked.rs`): the answer a
            // credential-stuffing wave gets again and again costs a map read.
            if self.inner.registry.locked().refuses(&id, now_micros()) {
                return Err(ErrorId::CheckedUserNotActive.into());
            }
            // The user's record through its actor (durable state, as GetUserByID reads it); the
            // state decides before anything else is built, so a locked user — the answer an
            // attacker gets again and again — costs no user view.
            let (record, lockout) =
                self.user_record(&id, Reach::Instance)
                    .await
                    .map_err(|e| match e.id {
                        ErrorId::UserNotFound => ErrorId::CheckedUserNotFound.into(),
                        _ => e,
                    })?;
            if !matches!(record.state, UserState::Active | UserState::Initial) {
                return Err(ErrorId::CheckedUserNotActive.into());
            }
            let found = self.user_view(&record, &lockout).await?;
            let display_name = match &found.user_type {
                UserType::Human(h) => h.profile.display_name.clone().unwrap_or_else(|| {
                    format!("{} {}", h.profile.given_name, h.profile.family_name)
                }),
                UserType::Machine(m) => m.name.clone(),
            };
            user = Some(SessionUser {
                id: found.id,
                org_id: found.details.resource_owner,
                login_name: found.preferred_login_name,
                display_name,
                verified_at: now_micros(),
            });
        }
        let mut password_at = None;
        if let Some(password) = &checks.password {
            let id = user
                .as_ref()
                .or(current)
                .map(|u| u.id.clone())
                .ok_or(ErrorId::PasswordUserMissing)?;
            self.check_password(&id, password, by).await?;
            password_at = Some(now_micros());
        }
        Ok(Checked { user, password_at })
    }

    pub(crate) async fn session_record(&self, id: &str) -> Result<Option<SessionRecord>, Error> {
        read_off_worker(&self.inner.store, &[keys::session(id)])
            .await?
            .into_iter()
            .next()
            .flatten()
            .map(|bytes| SessionRecord::decode(&bytes))
            .transpose()
    }

    async fn write_session(&self, record: &SessionRecord) -> Result<(), Error> {
        let key = keys::session(&record.id);
        let mut batch = WriteBatch::default();
        batch.put(key.clone(), crate::stored::encode(record));
        self.inner.store.submit(&key, batch).wait().await?;
        Ok(())
    }
}

/// A session with every field set, for the disk format's golden bytes.
#[cfg(test)]
pub(crate) fn golden_session(at: Micros) -> SessionRecord {
    SessionRecord {
        id: "s1".into(),
        creator: "m1".into(),
        created: at,
        changed: at + 1,
        sequence: 2,
        token_hash: vec![0xAB; 4],
        user: Some(SessionUser {
            id: "u1".into(),
            org_id: "o1".into(),
            login_name: "ada@acme.localhost".into(),
            display_name: "Ada Lovelace".into(),
            verified_at: at,
        }),
        password_verified_at: Some(at + 1),
        metadata: vec![("k".into(), vec![1, 2])],
        user_agent: Some(record::StoredUserAgent {
            fingerprint_id: Some("f".into()),
            ip: Some("127.0.0.1".into()),
            description: None,
            header: vec![("accept".into(), vec!["*/*".into()])],
        }),
        expires: Some(at + 3_600_000_000),
        terminated: false,
    }
}

/// A lifetime in microseconds, which must be positive.
fn expiry(lifetime: Option<i64>) -> Result<Option<Micros>, Error> {
    match lifetime {
        Some(after) if after <= 0 => Err(ErrorId::SessionLifetimeInvalid.into()),
        other => Ok(other),
    }
}

fn check_session_id(id: &str) -> Result<(), Error> {
    if crate::valid_id(id) {
        Ok(())
    } else {
        Err(Error::invalid("sessionId must be 1 to 200 characters"))
    }
}

/// Does `reach` cover a session of `org` (`None`: a session without a user, the instance's)?
fn covers(reach: &Reach, org: Option<&str>) -> bool {
    match org {
        Some(org) => reach.covers(org),
        None => *reach == Reach::Instance,
    }
}

fn is_sessions_user(caller: &Caller, record: &SessionRecord) -> bool {
    record.user.as_ref().is_some_and(|u| u.id == caller.user_id)
}

/// May `caller` read `record` without its token: its creator, its user, or `session.read`.
pub(crate) fn may_read(caller: &Caller, record: &SessionRecord) -> bool {
    record.creator == caller.user_id
        || is_sessions_user(caller, record)
        || caller
            .reach(Permission::SessionRead)
            .is_ok_and(|reach| covers(&reach, record.org()))
}
