//! REST routes (grpc-gateway style), derived from the RPC table: each row's verb and path, path
//! segments winning over body fields, errors as grpc-gateway `google.rpc.Status` bodies.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;

use latchkey_engine::{Error, ErrorId};

use crate::error::{ApiError, Protocol};
use crate::metrics::{tracked, Track};
use crate::rpc::{self, Routed, Verb, Visitor};
use crate::server::AppState;
use crate::wire::json_response;

/// Adds one RPC's handler to its path's router.
type AddMethod = Box<dyn FnOnce(MethodRouter<AppState>, &Track) -> MethodRouter<AppState>>;

pub fn routes() -> Router<AppState> {
    /// Each REST path with the handlers of the RPCs served on it (one per verb).
    struct Paths(BTreeMap<&'static str, Vec<AddMethod>>);
    impl Visitor for Paths {
        fn visit<R: Routed>(&mut self) {
            let filter = match R::INFO.verb {
                Verb::Get => MethodFilter::GET,
                Verb::Post => MethodFilter::POST,
                Verb::Put => MethodFilter::PUT,
                Verb::Patch => MethodFilter::PATCH,
                Verb::Delete => MethodFilter::DELETE,
            };
            let add: AddMethod = if R::INFO.path_params().next().is_some() {
                Box::new(move |router, track| router.on(filter, track.on(with_path::<R>)))
            } else {
                Box::new(move |router, track| router.on(filter, track.on(plain::<R>)))
            };
            self.0.entry(R::INFO.rest).or_default().push(add);
        }
    }
    let mut paths = Paths(BTreeMap::new());
    rpc::for_each(&mut paths);
    paths
        .0
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            let route = tracked(path, "rest", |track| {
                methods
                    .into_iter()
                    .fold(MethodRouter::new(), |route, add| add(route, track))
            });
            router.route(path, route)
        })
}

fn respond<R: Routed>(result: Result<R::Response, Error>) -> Response {
    match result.and_then(|answer| json_response(|out| R::write_json(&answer, out))) {
        Ok(mut response) => {
            if R::INFO.rest_status != 200 {
                if let Ok(status) = StatusCode::from_u16(R::INFO.rest_status) {
                    *response.status_mut() = status;
                }
            }
            response
        }
        Err(e) => ApiError::new(Protocol::Rest, e).into_response(),
    }
}

/// A GET's query string onto its request (grpc-gateway: `?sessionToken=…&ctx.orgId=…`).
fn fill_query<R: Routed>(request: &mut R::Request, query: Option<&str>) -> Result<(), Error> {
    if R::INFO.verb != Verb::Get {
        return Ok(());
    }
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        R::set_query(request, &name, &value)?;
    }
    Ok(())
}

// Handlers take the whole request last and read its headers in place (axum's `HeaderMap`
// extractor clones them).

/// An RPC whose path has no segments: the whole request is the body.
async fn plain<R: Routed>(State(app): State<AppState>, request: Request) -> Response {
    let (parts, mut body) = request.into_parts();
    let query = parts.uri.query();
    respond::<R>(
        rpc::run_json::<R>(&app, &parts.headers, &mut body, |request| {
            fill_query::<R>(request, query)
        })
        .await,
    )
}

/// An RPC whose path carries ids: they are set on the request after the body is decoded.
async fn with_path<R: Routed>(
    State(app): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
) -> Response {
    let params = match params {
        Ok(params) => params,
        Err(rejection) => {
            let error = Error::with(
                ErrorId::InvalidArgument,
                format!("invalid path: {rejection}"),
            );
            return ApiError::new(Protocol::Rest, error).into_response();
        }
    };
    let (parts, mut body) = request.into_parts();
    answer_with_path::<R>(&app, &params, &parts, &mut body).await
}

/// The answer to an RPC whose path carries ids, given them by name: axum's router's (above), or
/// the hot routes' (`hot_routes.rs`), which take them from the path themselves.
pub(crate) async fn answer_with_path<'p, R: Routed>(
    app: &AppState,
    params: impl IntoIterator<Item = (&'p str, &'p str)>,
    parts: &Parts,
    body: &mut Body,
) -> Response {
    let query = parts.uri.query();
    let result = rpc::run_json::<R>(app, &parts.headers, body, |request| {
        fill_query::<R>(request, query)?;
        for (name, value) in params {
            if !R::set_path(request, name, value) {
                return Err(Error::with(
                    ErrorId::Internal,
                    format!("{} takes no path segment {name}", R::INFO.method),
                ));
            }
        }
        Ok(())
    })
    .await;
    respond::<R>(result)
}
