//! Connect unary: `POST /<package>.<Service>/<Method>` with the whole request message as the body,
//! as JSON (`application/json`) or protobuf (`application/proto`); errors always in Connect's
//! JSON error format. The routes are the RPC table's method paths. gRPC and gRPC-web share these
//! paths; the edge (`edge.rs`) sends those requests to `grpc.rs` by their content type before
//! they get here.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message as _;

use latchkey_engine::{Error, ErrorId};

use crate::error::{ApiError, Protocol};
use crate::metrics::tracked;
use crate::rpc::{self, Routed};
use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    struct Routes(Router<AppState>);
    impl rpc::Visitor for Routes {
        fn visit<R: Routed>(&mut self) {
            let router = std::mem::take(&mut self.0);
            self.0 = router.route(
                &R::INFO.path(),
                tracked(R::INFO.method, "connect", |t| post(t.on(handle::<R>))),
            );
        }
    }
    let mut routes = Routes(Router::new());
    rpc::for_each(&mut routes);
    routes.0
}

/// The two Connect unary codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Json,
    Proto,
}

/// `application/json` or `application/proto` (a missing type is taken as JSON).
fn codec(headers: &HeaderMap) -> Result<Codec, Error> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Codec::Json);
    };
    let media = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(Codec::Json),
        "application/proto" => Ok(Codec::Proto),
        _ => Err(Error::with(
            ErrorId::UnsupportedMediaType,
            format!("content type {media:?} is not supported; use application/json or application/proto"),
        )),
    }
}

async fn handle<R: Routed>(State(app): State<AppState>, request: Request) -> Response {
    // The headers are read in place (axum's `HeaderMap` extractor clones them).
    let (parts, mut body) = request.into_parts();
    let headers = &parts.headers;
    let result = match codec(headers) {
        Ok(Codec::Json) => rpc::run_json::<R>(&app, headers, &mut body, |_| Ok(()))
            .await
            .and_then(|answer| crate::wire::json_response(|out| R::write_json(&answer, out))),
        Ok(Codec::Proto) => match rpc::read_body(&mut body).await {
            Ok(bytes) => rpc::run_proto::<R>(&app, headers, &bytes)
                .await
                .map(|answer| proto_response(answer.encode_to_vec())),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    // Connect errors are JSON whatever the request's codec.
    result.unwrap_or_else(|e| ApiError::new(Protocol::Connect, e).into_response())
}

fn proto_response(message: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/proto"),
        )],
        message,
    )
        .into_response()
}
