//! What is stored for a session (`keys::session`), and the session as reads return it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorId};
use crate::time::{to_datetime, Micros};
use crate::types::Details;

use super::{Factors, PasswordFactor, Session, UserAgent, UserFactor};

/// The checked user of a session, as it was when checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionUser {
    pub id: String,
    pub org_id: String,
    pub login_name: String,
    pub display_name: String,
    pub verified_at: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredUserAgent {
    pub fingerprint_id: Option<String>,
    pub ip: Option<String>,
    pub description: Option<String>,
    pub header: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub id: String,
    /// The caller that created it (a machine user's id).
    pub creator: String,
    pub created: Micros,
    pub changed: Micros,
    pub sequence: u64,
    /// SHA-256 of the current token; the token itself is never stored.
    pub token_hash: Vec<u8>,
    pub user: Option<SessionUser>,
    pub password_verified_at: Option<Micros>,
    /// Sorted by key.
    pub metadata: Vec<(String, Vec<u8>)>,
    pub user_agent: Option<StoredUserAgent>,
    pub expires: Option<Micros>,
    /// Deleted (kept, so that SetSession can say "terminated").
    pub terminated: bool,
}

pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl SessionRecord {
    pub fn decode(bytes: &[u8]) -> Result<SessionRecord, Error> {
        postcard::from_bytes(bytes)
            .map_err(|e| Error::with(ErrorId::Internal, format!("corrupt session: {e}")))
    }

    /// Does `token` belong to this session now? (Constant-time over the hash.)
    pub fn holds(&self, token: &str) -> bool {
        let given = token_hash(token);
        given.len() == self.token_hash.len()
            && given
                .iter()
                .zip(&self.token_hash)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    pub fn expired(&self, now: Micros) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// The organization whose permissions govern it: its user's, or none (the instance).
    pub fn org(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.org_id.as_str())
    }

    pub fn details(&self) -> Details {
        Details {
            sequence: self.sequence,
            change_date: to_datetime(self.changed),
            resource_owner: String::new(),
            creation_date: to_datetime(self.created),
        }
    }

    pub fn view(&self) -> Session {
        Session {
            id: self.id.clone(),
            creation_date: to_datetime(self.created),
            change_date: to_datetime(self.changed),
            sequence: self.sequence,
            factors: Factors {
                user: self.user.as_ref().map(|u| UserFactor {
                    verified_at: to_datetime(u.verified_at),
                    id: u.id.clone(),
                    login_name: u.login_name.clone(),
                    display_name: u.display_name.clone(),
                    organization_id: u.org_id.clone(),
                }),
                password: self.password_verified_at.map(|at| PasswordFactor {
                    verified_at: to_datetime(at),
                }),
            },
            metadata: self.metadata.iter().cloned().collect(),
            user_agent: self.user_agent.as_ref().map(|a| UserAgent {
                fingerprint_id: a.fingerprint_id.clone(),
                ip: a.ip.clone(),
                description: a.description.clone(),
                header: a.header.iter().cloned().collect(),
            }),
            expiration_date: self.expires.map(to_datetime),
        }
    }
}

impl From<UserAgent> for StoredUserAgent {
    fn from(agent: UserAgent) -> Self {
        StoredUserAgent {
            fingerprint_id: agent.fingerprint_id,
            ip: agent.ip,
            description: agent.description,
            header: agent.header.into_iter().collect(),
        }
    }
}
