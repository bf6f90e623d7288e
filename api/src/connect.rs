//! Connect unary over HTTP/1.1 with JSON bodies: `POST /<package>.<Service>/<Method>`, the whole
//! request message as the body, errors in Connect's JSON error format.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use latchkey_engine::{Error, ErrorId};

use crate::error::{ApiError, Protocol};
use crate::metrics::tracked;
use crate::rpc::{self, Rpc};
use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    use crate::rpc::*;
    Router::new()
        .merge(route::<user_state::UnlockUser>())
        .merge(route::<user_state::LockUser>())
        .merge(route::<user_state::DeactivateUser>())
        .merge(route::<user_state::ReactivateUser>())
        .merge(route::<user_state::DeleteUser>())
        .merge(route::<get_user::GetUserById>())
        .merge(route::<list_users::ListUsers>())
        .merge(route::<add_human_user::AddHumanUser>())
        .merge(route::<create_user::CreateUser>())
        .merge(route::<pats::AddPersonalAccessToken>())
        .merge(route::<pats::RemovePersonalAccessToken>())
        .merge(route::<add_organization::AddOrganization>())
        .merge(route::<create_administrator::CreateAdministrator>())
}

/// The Connect path of an RPC.
pub fn path<R: Rpc>() -> String {
    format!("/{}/{}", R::SERVICE, R::METHOD)
}

fn route<R: Rpc>() -> Router<AppState> {
    Router::new().route(
        &path::<R>(),
        tracked(R::METHOD, "connect", post(handle::<R>)),
    )
}

/// Connect JSON needs `application/json` (a missing type is taken as JSON).
fn check_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/json" {
        Ok(())
    } else {
        Err(Error::with(
            ErrorId::Unsupported,
            format!("content type {media:?} is not supported; use application/json"),
        ))
    }
}

async fn handle<R: Rpc>(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = match check_content_type(&headers) {
        Ok(()) => rpc::run::<R>(&app.engine, &headers, body, |_| {}).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(response) => Json(response).into_response(),
        Err(e) => ApiError::new(Protocol::Connect, e).into_response(),
    }
}
