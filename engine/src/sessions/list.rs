//! ListSessions: every session the caller may read (rows it may not are left out, not refused),
//! filtered by the queries (all must match), in creation order, paged.

use chrono::{DateTime, Utc};

use crate::access::Caller;
use crate::error::{Error, ErrorId};
use crate::keys;
use crate::time::Micros;
use crate::types::ListUsers;
use crate::Engine;

use super::{may_read, Session, SessionRecord};

/// How a timestamp query compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampMatch {
    Equals,
    Greater,
    GreaterOrEquals,
    Less,
    LessOrEquals,
}

impl TimestampMatch {
    fn matches(self, value: Micros, wanted: Micros) -> bool {
        match self {
            TimestampMatch::Equals => value == wanted,
            TimestampMatch::Greater => value > wanted,
            TimestampMatch::GreaterOrEquals => value >= wanted,
            TimestampMatch::Less => value < wanted,
            TimestampMatch::LessOrEquals => value <= wanted,
        }
    }
}

/// One ListSessions filter.
#[derive(Debug, Clone)]
pub enum SessionQuery {
    Ids(Vec<String>),
    UserId(String),
    CreationDate(DateTime<Utc>, TimestampMatch),
    /// Created by this caller id; `None`: by the caller itself.
    Creator(Option<String>),
    /// With this user agent fingerprint; `None`: matches nothing (Latchkey's callers carry no
    /// agent of their own).
    UserAgent(Option<String>),
    ExpirationDate(DateTime<Utc>, TimestampMatch),
}

impl SessionQuery {
    fn matches(&self, record: &SessionRecord, caller: &Caller) -> bool {
        match self {
            SessionQuery::Ids(ids) => ids.contains(&record.id),
            SessionQuery::UserId(id) => record.user.as_ref().is_some_and(|u| u.id == *id),
            SessionQuery::CreationDate(at, method) => {
                method.matches(record.created, at.timestamp_micros())
            }
            SessionQuery::Creator(id) => {
                record.creator == *id.as_deref().unwrap_or(caller.user_id.as_str())
            }
            SessionQuery::UserAgent(fingerprint) => fingerprint.as_ref().is_some_and(|f| {
                record
                    .user_agent
                    .as_ref()
                    .and_then(|a| a.fingerprint_id.as_ref())
                    == Some(f)
            }),
            SessionQuery::ExpirationDate(at, method) => record
                .expires
                .is_some_and(|expires| method.matches(expires, at.timestamp_micros())),
        }
    }
}

/// A page of sessions and how many matched in all.
#[derive(Debug, Clone)]
pub struct SessionList {
    pub total_result: u64,
    pub timestamp: DateTime<Utc>,
    pub result: Vec<Session>,
}

impl Engine {
    /// ListSessions. Paging as ListUsers: `limit` 0 is 100, at most 1,000.
    pub async fn list_sessions(
        &self,
        caller: &Caller,
        page: ListUsers,
        queries: Vec<SessionQuery>,
    ) -> Result<SessionList, Error> {
        self.check_open()?;
        let limit = match page.limit {
            0 => 100,
            n => n.min(1000),
        } as usize;
        let (store, caller) = (self.inner.store.clone(), caller.clone());
        let mut matching = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let mut matching = Vec::new();
            for item in store.scan_prefix(keys::SESSIONS) {
                let (_, bytes) = item?;
                let record = SessionRecord::decode(&bytes)?;
                if !record.terminated
                    && may_read(&caller, &record)
                    && queries.iter().all(|q| q.matches(&record, &caller))
                {
                    matching.push(record);
                }
            }
            Ok(matching)
        })
        .await
        .map_err(|_| Error::new(ErrorId::Internal))??;
        matching.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        if !page.asc {
            matching.reverse();
        }
        Ok(SessionList {
            total_result: matching.len() as u64,
            timestamp: Utc::now(),
            result: matching
                .iter()
                .skip(page.offset.min(usize::MAX as u64) as usize)
                .take(limit)
                .map(SessionRecord::view)
                .collect(),
        })
    }
}
