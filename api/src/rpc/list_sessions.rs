//! ListSessions (`POST /v2/sessions/search`): the sessions the caller may read, filtered by the
//! queries (combined with AND), by creation date: oldest first with `asc`, else newest first (as
//! ZITADEL). A query Latchkey does not know is refused, never ignored.

use latchkey_engine::{Error, ListUsers as Page, SessionQuery, SortBy, TimestampMatch};

use super::sessions::session_message;
use super::{Call, Rpc};
use crate::proto::zitadel::object::v2 as object;
use crate::proto::zitadel::session::v2::{self as session, search_query::Query};
use crate::proto::zitadel::v1::TimestampQueryMethod;
use crate::wire::{known, Timestamp};

fn timestamp(
    field: &str,
    at: Option<Timestamp>,
    method: i32,
) -> Result<(chrono::DateTime<chrono::Utc>, TimestampMatch), Error> {
    let at = at
        .and_then(Timestamp::to_datetime)
        .ok_or_else(|| Error::invalid(format!("{field} must be an RFC 3339 timestamp")))?;
    let method = match known::<TimestampQueryMethod>("method", method)? {
        TimestampQueryMethod::Equals => TimestampMatch::Equals,
        TimestampQueryMethod::Greater => TimestampMatch::Greater,
        TimestampQueryMethod::GreaterOrEquals => TimestampMatch::GreaterOrEquals,
        TimestampQueryMethod::Less => TimestampMatch::Less,
        TimestampQueryMethod::LessOrEquals => TimestampMatch::LessOrEquals,
    };
    Ok((at, method))
}

fn convert(query: session::SearchQuery) -> Result<SessionQuery, Error> {
    let query = query.query.ok_or_else(|| {
        Error::invalid(
            "a search query must set exactly one known query (an unknown query is refused)",
        )
    })?;
    Ok(match query {
        Query::IdsQuery(q) => SessionQuery::Ids(q.ids),
        Query::UserIdQuery(q) => SessionQuery::UserId(q.id),
        Query::CreationDateQuery(q) => {
            let (at, method) = timestamp("creationDate", q.creation_date, q.method)?;
            SessionQuery::CreationDate(at, method)
        }
        Query::ExpirationDateQuery(q) => {
            let (at, method) = timestamp("expirationDate", q.expiration_date, q.method)?;
            SessionQuery::ExpirationDate(at, method)
        }
        Query::CreatorQuery(q) => SessionQuery::Creator(q.id),
        Query::UserAgentQuery(q) => SessionQuery::UserAgent(q.fingerprint_id),
    })
}

pub struct ListSessions;

impl Rpc for ListSessions {
    type Request = session::ListSessionsRequest;
    type Response = session::ListSessionsResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: session::ListSessionsRequest,
    ) -> Result<session::ListSessionsResponse, Error> {
        known::<session::SessionFieldName>("sortingColumn", request.sorting_column)?;
        let query = request.query.unwrap_or_default();
        let queries = request
            .queries
            .into_iter()
            .map(convert)
            .collect::<Result<Vec<_>, _>>()?;
        let page = Page {
            offset: query.offset,
            limit: query.limit,
            asc: query.asc,
            sort_by: SortBy::CreationDate,
            queries: Vec::new(),
        };
        let list = engine.list_sessions(caller, page, queries).await?;
        Ok(session::ListSessionsResponse {
            details: Some(object::ListDetails {
                total_result: list.total_result,
                processed_sequence: 0,
                timestamp: Some(list.timestamp.into()),
            }),
            sessions: list.result.into_iter().map(session_message).collect(),
        })
    }
}
