//! ListUserEvents (`POST /latchkey/v1/users/{userId}/events`): a page of a user's history — what
//! happened, when, who did it and why. A Latchkey extension (`proto/latchkey/v1`); the rules are
//! in `engine/src/history.rs`.

use latchkey_engine::{Error, EventPage};

use super::{Call, Rpc};
use crate::proto::latchkey::v1 as latchkey;
use crate::proto::zitadel::object::v2 as object;

pub struct ListUserEvents;

impl Rpc for ListUserEvents {
    type Request = latchkey::ListUserEventsRequest;
    type Response = latchkey::ListUserEventsResponse;

    async fn call(
        Call { engine, caller, .. }: Call<'_>,
        request: latchkey::ListUserEventsRequest,
    ) -> Result<latchkey::ListUserEventsResponse, Error> {
        let query = request.query.unwrap_or_default();
        let page = EventPage {
            offset: query.offset,
            limit: query.limit,
            asc: query.asc,
        };
        let list = engine.user_events(caller, &request.user_id, page).await?;
        Ok(latchkey::ListUserEventsResponse {
            details: Some(object::ListDetails {
                total_result: list.total_result,
                processed_sequence: list.total_result,
                timestamp: Some(chrono::Utc::now().into()),
            }),
            events: list
                .result
                .into_iter()
                .map(|e| latchkey::UserEvent {
                    sequence: e.sequence,
                    event_type: e.event_type.to_owned(),
                    creation_date: Some(e.created_at.into()),
                    editor_user_id: e.by,
                    reason: e.reason.unwrap_or_default(),
                })
                .collect(),
        })
    }

    fn scope(_call: &Call<'_>, request: &latchkey::ListUserEventsRequest) -> Option<Vec<u8>> {
        Some(latchkey_engine::snapshot_key(&request.user_id))
    }

    fn set_path(request: &mut latchkey::ListUserEventsRequest, name: &str, value: &str) -> bool {
        match name {
            "userId" => request.user_id = value.to_owned(),
            _ => return false,
        }
        true
    }
}
