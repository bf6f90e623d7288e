//! A user's history: its event log as stored, one entry per change, with who caused it and why —
//! what an administrator reads to learn why a user is locked. Read with `user.read` on the user's
//! organization, like GetUserByID (the same 403 and 404), and paged.

use chrono::{DateTime, Utc};

use crate::access::{Caller, Permission};
use crate::error::{Error, ErrorId};
use crate::keys;
use crate::time::to_datetime;
use crate::user::actor::Request;
use crate::user::record::decode_event;
use crate::{check_user_id, Engine};

/// One entry of a user's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    pub sequence: u64,
    pub event_type: &'static str,
    pub created_at: DateTime<Utc>,
    /// Why, where the type alone does not say (`administrator`, `automatic`, `failed password
    /// checks`).
    pub reason: Option<String>,
    /// The caller's user id; empty for what Latchkey did itself (an automatic unlock) and for
    /// events older than the record of callers.
    pub by: String,
}

/// Which part of the log to read. `limit` 0 is 100, at most 1,000.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventPage {
    pub offset: u64,
    pub limit: u32,
    /// Oldest first; newest first otherwise.
    pub asc: bool,
}

/// A page of the log and how many events it has in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventList {
    pub total_result: u64,
    pub result: Vec<EventInfo>,
}

impl Engine {
    /// The user's whole event log, oldest first (for audits and consistency checks).
    pub async fn event_log(&self, caller: &Caller, user_id: &str) -> Result<Vec<EventInfo>, Error> {
        let page = EventPage {
            offset: 0,
            limit: u32::MAX,
            asc: true,
        };
        Ok(self
            .read_events(caller, user_id, page, usize::MAX)
            .await?
            .result)
    }

    /// ListUserEvents: a page of the user's history.
    pub async fn user_events(
        &self,
        caller: &Caller,
        user_id: &str,
        page: EventPage,
    ) -> Result<EventList, Error> {
        let limit = match page.limit {
            0 => 100,
            n => n.min(1000),
        } as usize;
        self.read_events(caller, user_id, page, limit).await
    }

    async fn read_events(
        &self,
        caller: &Caller,
        user_id: &str,
        page: EventPage,
        limit: usize,
    ) -> Result<EventList, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserRead)?;
        check_user_id(user_id)?;
        // The actor answers only for a user within reach, and only once the state it shows is
        // durable: the log read after it holds every event up to that snapshot.
        let record = self
            .inner
            .registry
            .call(user_id, |reply| Request::Read {
                reach: reach.clone(),
                reply,
            })
            .await?;
        // Sequences run 1..=n without gaps, so the page's keys are known without a count.
        let total = record.sequence;
        let skip = page.offset.min(total);
        let take = (total - skip).min(limit as u64);
        let (first, last) = if page.asc {
            (skip + 1, skip + take)
        } else {
            (total - skip - take + 1, total - skip)
        };
        let store = self.inner.store.clone();
        let prefix = keys::events_of(user_id);
        let mut result = tokio::task::spawn_blocking(move || -> Result<Vec<EventInfo>, Error> {
            let mut events = Vec::new();
            if take == 0 {
                return Ok(events);
            }
            // A scan from the page's first key would skip the rest unread; events are few per user
            // (a locked user's refused checks write none), so the log is scanned and filtered.
            for item in store.scan_prefix(&prefix) {
                let (_, bytes) = item?;
                let event = decode_event(&bytes)?;
                if event.sequence < first {
                    continue;
                }
                if event.sequence > last {
                    break;
                }
                events.push(EventInfo {
                    sequence: event.sequence,
                    event_type: event.kind.name(),
                    created_at: to_datetime(event.at),
                    reason: event.kind.reason(),
                    by: event.by,
                });
            }
            Ok(events)
        })
        .await
        .map_err(|_| Error::new(ErrorId::Internal))??;
        if !page.asc {
            result.reverse();
        }
        Ok(EventList {
            total_result: total,
            result,
        })
    }
}
