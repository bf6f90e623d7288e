//! REST routes (grpc-gateway style): the v2 paths, path ids winning over body ids, errors as
//! grpc-gateway `google.rpc.Status` bodies.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;

use latchkey_engine::{Error, ErrorId};

use crate::error::{ApiError, Protocol};
use crate::metrics::{tracked, Track};
use crate::rpc::{self, HasUserId, Rpc};
use crate::server::AppState;
use crate::wire::{json_response, JsonAnswer};

pub fn routes() -> Router<AppState> {
    use crate::rpc::*;
    type Build = fn(&Track) -> MethodRouter<AppState>;
    let table: [(&'static str, Build); 12] = [
        ("/v2/users", post_plain::<list_users::ListUsers>),
        (
            "/v2/users/human",
            post_plain::<add_human_user::AddHumanUser>,
        ),
        ("/v2/users/new", post_plain::<create_user::CreateUser>),
        ("/v2/users/{userId}", |t| {
            get(t.on(with_user::<get_user::GetUserById>))
                .delete(t.on(with_user::<user_state::DeleteUser>))
        }),
        (
            "/v2/users/{userId}/unlock",
            post_user::<user_state::UnlockUser>,
        ),
        ("/v2/users/{userId}/lock", post_user::<user_state::LockUser>),
        (
            "/v2/users/{userId}/deactivate",
            post_user::<user_state::DeactivateUser>,
        ),
        (
            "/v2/users/{userId}/reactivate",
            post_user::<user_state::ReactivateUser>,
        ),
        (
            "/v2/users/{userId}/pats",
            post_user::<pats::AddPersonalAccessToken>,
        ),
        ("/v2/users/{userId}/pats/{tokenId}", |t| {
            delete(t.on(remove_pat))
        }),
        (
            "/v2/organizations",
            post_plain::<add_organization::AddOrganization>,
        ),
        (
            "/v2beta/administrators",
            post_plain::<create_administrator::CreateAdministrator>,
        ),
    ];
    table
        .into_iter()
        .fold(Router::new(), |router, (path, build)| {
            router.route(path, tracked(path, "rest", build))
        })
}

/// `POST` of `R` with its whole request in the body.
fn post_plain<R: Rpc>(track: &Track) -> MethodRouter<AppState> {
    post(track.on(plain::<R>))
}

/// `POST` of `R` on a `{userId}` path.
fn post_user<R: Rpc>(track: &Track) -> MethodRouter<AppState>
where
    R::Request: HasUserId,
{
    post(track.on(with_user::<R>))
}

fn respond<T: JsonAnswer>(result: Result<T, Error>) -> Response {
    match result.and_then(|body| json_response(&body)) {
        Ok(response) => response,
        Err(e) => ApiError::new(Protocol::Rest, e).into_response(),
    }
}

fn bad_path(rejection: PathRejection) -> Error {
    Error::with(
        ErrorId::InvalidArgument,
        format!("invalid path: {rejection}"),
    )
}

// Handlers take the whole request last and read its headers in place (axum's `HeaderMap`
// extractor clones them).
async fn plain<R: Rpc>(State(app): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    respond(rpc::run::<R>(&app.engine, &parts.headers, body, |_| {}).await)
}

async fn with_user<R: Rpc>(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response
where
    R::Request: HasUserId,
{
    let user_id = match path {
        Ok(Path(id)) => id,
        Err(rejection) => return respond::<()>(Err(bad_path(rejection))),
    };
    let (parts, body) = request.into_parts();
    respond(
        rpc::run::<R>(&app.engine, &parts.headers, body, |r| {
            r.set_user_id(user_id)
        })
        .await,
    )
}

async fn remove_pat(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let (user_id, token_id) = match path {
        Ok(Path(ids)) => ids,
        Err(rejection) => return respond::<()>(Err(bad_path(rejection))),
    };
    let (parts, body) = request.into_parts();
    respond(
        rpc::run::<rpc::pats::RemovePersonalAccessToken>(&app.engine, &parts.headers, body, |r| {
            r.user_id = user_id;
            r.token_id = token_id;
        })
        .await,
    )
}
