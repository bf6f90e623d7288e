//! Personal access tokens and authentication.
//!
//! A token is 32 random bytes (base64url); only its SHA-256 is stored, under which the token
//! record (owner, expiry) is found. Authentication reads the owner's state from its actor on the
//! token's first use and serves later requests from the caller cache (`auth_cache.rs`), which the
//! owner's actor empties on every change — so locking, deactivating or deleting a machine user
//! cuts its access at once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use latchkey_storage::WriteBatch;

use std::sync::Arc;

use crate::access::{Caller, Permission, Reach};
use crate::auth_cache::CachedCaller;
use crate::error::{Error, ErrorId};
use crate::keys;
use crate::registry::read_off_worker;
use crate::time::{now_micros, to_datetime, Micros};
use crate::types::{Details, NewToken, UserState};
use crate::user::actor::Request;
use crate::user::record::UserRecord;
use crate::user::record::{Kind, TokenRef};
use crate::{check_user_id, valid_id, Engine};

/// Stored under `keys::token(sha256(token))`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub token_id: String,
    pub user_id: String,
    pub expires: Option<Micros>,
    pub created: Micros,
}

pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token (32 bytes from the operating system's generator, base64url): what every
/// issued PAT looks like. (The OS generator, not a user-space one seeded from it: a token is a
/// credential, and tokens are issued rarely enough that the system call costs nothing.)
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The writes that make `token` valid for `user_id`, and the reference the user keeps.
pub(crate) fn token_writes(
    token: &str,
    token_id: String,
    user_id: &str,
    expires: Option<Micros>,
) -> (TokenRef, WriteBatch) {
    let hash = hash_token(token);
    let record = TokenRecord {
        token_id: token_id.clone(),
        user_id: user_id.to_owned(),
        expires,
        created: now_micros(),
    };
    let mut batch = WriteBatch::default();
    batch.put(keys::token(&hash), crate::stored::encode(&record));
    batch.put(keys::token_id(&token_id), hash.to_vec());
    (
        TokenRef {
            id: token_id,
            hash: hash.to_vec(),
        },
        batch,
    )
}

/// Every failure to authenticate, whatever its cause, is this one error.
fn unauthenticated() -> Error {
    Error::new(ErrorId::Unauthenticated)
}

impl Engine {
    /// Resolves a bearer token to its caller: the token must exist, not be expired, not be
    /// revoked, and belong to an ACTIVE machine user. Every failure is the same Unauthenticated.
    /// Served from memory after the first use; the owning user's actor drops the entry on any
    /// change, so locking a machine user cuts its access at once (in cluster mode, on the other
    /// nodes once their views apply the change).
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Caller>, Error> {
        self.check_open()?;
        if token.is_empty() || token.len() > 512 {
            return Err(unauthenticated());
        }
        let cache = self.inner.registry.auth_cache();
        if let Some(hit) = cache.get(token) {
            return match hit.expires {
                Some(at) if at <= now_micros() => Err(unauthenticated()),
                _ => Ok(hit.caller),
            };
        }
        // Boxed: the miss reads the store and the owner's actor, and its state inline would make
        // every request's future (a hit's) that much larger to move.
        Box::pin(self.authenticate_miss(token)).await
    }

    /// [`Engine::authenticate`] of a token the cache does not hold: from the store (under the
    /// token's SHA-256) and the owner.
    async fn authenticate_miss(&self, token: &str) -> Result<Arc<Caller>, Error> {
        let cache = self.inner.registry.auth_cache();
        let store = self.inner.store.clone();
        let key = keys::token(&hash_token(token));
        let bytes = tokio::task::spawn_blocking(move || store.get(&key))
            .await
            .map_err(|_| Error::new(ErrorId::Internal))??
            .ok_or_else(unauthenticated)?;
        let record: TokenRecord = postcard::from_bytes(&bytes).map_err(|_| unauthenticated())?;
        if record.expires.is_some_and(|at| at <= now_micros()) {
            return Err(unauthenticated());
        }
        let user_key = keys::user(&record.user_id);
        let generation = cache.generation(&record.user_id);
        let user = if self.served_elsewhere(&user_key) {
            // Cluster mode: the token's user is another node's. Its record as this node's view
            // holds it: a change made there reaches the view within the view's lag, and the
            // view's applying it drops the cached caller (`Engine::open`).
            let stored = read_off_worker(&self.inner.store, &[user_key]).await?;
            let Some(bytes) = stored.into_iter().next().flatten() else {
                return Err(unauthenticated());
            };
            UserRecord::decode(&bytes)?
        } else {
            self.owners_record(&record.user_id).await?
        };
        let user_id = user.id.clone();
        let caller = caller_of(user, &record.token_id).ok_or_else(unauthenticated)?;
        cache.fill(
            token,
            &user_id,
            generation,
            CachedCaller {
                caller: caller.clone(),
                expires: record.expires,
            },
        );
        Ok(caller)
    }

    /// The owner's actor holds the authoritative (and, once staged, durable) state.
    async fn owners_record(&self, user_id: &str) -> Result<UserRecord, Error> {
        let read = self
            .inner
            .registry
            .call(user_id, |reply| Request::Read {
                reach: Reach::Instance,
                reply,
            })
            .await;
        match read {
            Ok(user) => Ok(user),
            Err(e) if e.id == ErrorId::UserNotFound => Err(ErrorId::Unauthenticated.into()),
            Err(e) => Err(e),
        }
    }

    /// True in cluster mode when another node writes `scope` (this one only reads its view).
    fn served_elsewhere(&self, scope: &[u8]) -> bool {
        self.inner
            .config
            .placement
            .as_ref()
            .is_some_and(|placement| !placement.owns(scope))
    }

    /// AddPersonalAccessToken: issues a token for a machine user. The token is returned once.
    pub async fn add_personal_access_token(
        &self,
        caller: &Caller,
        user_id: &str,
        expiration: Option<DateTime<Utc>>,
    ) -> Result<NewToken, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserWrite)?;
        check_user_id(user_id)?;
        let expires = expiration.map(|e| e.timestamp_micros());
        if expires.is_some_and(|at| at <= now_micros()) {
            return Err(Error::invalid("expirationDate must be in the future"));
        }
        let token = generate_token();
        let token_id = self.inner.ids.next_id();
        let (token_ref, extra) = token_writes(&token, token_id.clone(), user_id, expires);
        let details = self
            .inner
            .registry
            .call(user_id, |reply| Request::AddToken {
                reach: reach.clone(),
                by: caller.user_id.clone(),
                token: token_ref.clone(),
                extra: extra.clone(),
                reply,
            })
            .await?;
        Ok(NewToken {
            token_id,
            token,
            creation_date: to_datetime(details.change_date.timestamp_micros()),
        })
    }

    /// RemovePersonalAccessToken: the token stops working at once.
    pub async fn remove_personal_access_token(
        &self,
        caller: &Caller,
        user_id: &str,
        token_id: &str,
    ) -> Result<Details, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserWrite)?;
        check_user_id(user_id)?;
        if !valid_id(token_id) {
            return Err(Error::invalid("tokenId must be 1 to 200 characters"));
        }
        self.inner
            .registry
            .call(user_id, |reply| Request::RemoveToken {
                reach: reach.clone(),
                by: caller.user_id.clone(),
                token_id: token_id.to_owned(),
                reply,
            })
            .await
    }
}

/// The caller a token of `user` (with id `token_id`) stands for, if the user is active and still
/// holds that token.
fn caller_of(user: UserRecord, token_id: &str) -> Option<Arc<Caller>> {
    let holds_token = match &*user.kind {
        Kind::Machine(machine) => machine.tokens.iter().any(|t| t.id == token_id),
        Kind::Human(_) => false,
    };
    if user.state != UserState::Active || !holds_token {
        return None;
    }
    Some(Arc::new(Caller {
        user_id: user.id,
        org_id: user.org_id,
        grants: user
            .grants
            .into_inner()
            .into_iter()
            .map(Into::into)
            .collect(),
    }))
}
