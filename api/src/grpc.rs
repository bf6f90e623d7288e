//! gRPC over HTTP/2 cleartext and gRPC-web over HTTP/1.1, on the same port and the same method
//! paths as Connect (`/<package>.<Service>/<Method>`).
//!
//! The edge (`edge.rs`) sits in front of the routers and sends every request whose content
//! type is `application/grpc…` here; everything else (REST, Connect, health endpoints) never sees this
//! module. Each method of the RPC table is a tonic unary service over raw bytes that hands the
//! message to [`rpc::run_proto`] — prost decodes it, and the call and its errors are the same as
//! on every other protocol. gRPC-web
//! requests are translated to gRPC by `tonic-web` in front of each service. The standard gRPC
//! health service and server reflection (v1 and v1alpha) are served too, so grpcurl-style tools
//! work without a local copy of the protos.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::Router;
use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::Status;
use tonic_web::GrpcWebLayer;
use tower::Layer;

use latchkey_engine::{Error, ErrorId};

use crate::error::{grpc_status, http_status};
use crate::metrics::RouteMetrics;
use crate::rpc::{self, Routed, BODY_LIMIT};
use crate::server::AppState;

/// Is this a gRPC or gRPC-web request (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web`, `application/grpc-web-text`, …)?
pub fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().get(.."application/grpc".len()))
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("application/grpc"))
}

/// Every gRPC method, plus health and reflection, each also reachable over gRPC-web.
pub fn router(app: AppState) -> Router {
    struct Methods {
        router: Router,
        app: AppState,
    }
    impl rpc::Visitor for Methods {
        fn visit<R: Routed>(&mut self) {
            let method = Method::<R> {
                app: self.app.clone(),
                metrics: RouteMetrics::new(R::INFO.method, "grpc"),
                rpc: PhantomData,
            };
            let router = std::mem::take(&mut self.router);
            self.router = router.route_service(&R::INFO.path(), GrpcWebLayer::new().layer(method));
        }
    }
    let mut methods = Methods {
        router: Router::new(),
        app,
    };
    rpc::for_each(&mut methods);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    // The server as a whole ("") is serving as soon as it routes; per-service statuses name
    // what it serves. Setting them is async (a tokio lock), hence the task.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            for service in rpc::services() {
                health_reporter
                    .set_service_status(service, tonic_health::ServingStatus::Serving)
                    .await;
            }
        });
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1();
    let reflection_v1alpha = reflection().build_v1alpha();

    let mut router = methods.router;
    router = mount(router, health);
    if let Ok(service) = reflection_v1 {
        router = mount(router, service);
    } else {
        tracing::warn!("gRPC reflection v1 unavailable");
    }
    if let Ok(service) = reflection_v1alpha {
        router = mount(router, service);
    } else {
        tracing::warn!("gRPC reflection v1alpha unavailable");
    }
    // Unknown methods get gRPC's Unimplemented, in gRPC-web framing when asked that way.
    let unknown = tower::service_fn(|request: http::Request<tonic::body::Body>| async move {
        let status = Status::unimplemented(format!("unknown gRPC method {}", request.uri().path()));
        Ok::<_, Infallible>(status.into_http::<tonic::body::Body>())
    });
    router.fallback_service(GrpcWebLayer::new().layer(unknown))
}

/// Mounts a tonic-generated service at `/<its name>/*`, with gRPC-web in front.
fn mount<S>(router: Router, service: S) -> Router
where
    S: NamedService
        + Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    router.route_service(
        &format!("/{}/{{*method}}", S::NAME),
        GrpcWebLayer::new().layer(service),
    )
}

/// One RPC as a gRPC unary method.
struct Method<R> {
    app: AppState,
    metrics: Arc<RouteMetrics>,
    rpc: PhantomData<fn() -> R>,
}

impl<R> Clone for Method<R> {
    fn clone(&self) -> Self {
        Method {
            app: self.app.clone(),
            metrics: self.metrics.clone(),
            rpc: PhantomData,
        }
    }
}

impl<R: Routed, B> Service<http::Request<B>> for Method<R>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let unary = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let metrics = unary.metrics.clone();
            let mut grpc = Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .apply_max_message_size_config(Some(BODY_LIMIT), Some(BODY_LIMIT * 16));
            let response = grpc.unary(unary, request).await;
            Ok(refused_framing(response, &metrics, started))
        })
    }
}

impl<R: Routed> UnaryService<Bytes> for Method<R> {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (app, metrics) = (self.app.clone(), self.metrics.clone());
        Box::pin(async move {
            let started = Instant::now();
            let (metadata, _, message) = request.into_parts();
            let result = rpc::run_proto::<R>(&app, &metadata.into_headers(), &message).await;
            // Counted under the HTTP status REST would have answered, so dashboards can sum
            // protocols; gRPC itself always answers 200 with the code in `grpc-status`.
            let status = result
                .as_ref()
                .map_or_else(|e| http_status(e.code()).as_u16(), |_| 200);
            metrics.record(status, started.elapsed());
            match result {
                Ok(answer) => Ok(tonic::Response::new(Bytes::from(answer.encode_to_vec()))),
                Err(e) => Err(grpc_status(&e)),
            }
        })
    }
}

/// tonic answers a request whose gRPC framing it cannot read (a bad compression flag, a frame
/// cut short) with Internal before any method runs. That is the client's error: it becomes
/// BODY-MALFORMED (InvalidArgument), like a bad protobuf message. Such answers are told apart
/// from a method's own by what they lack: every error a method returns carries Latchkey's
/// `grpc-status-details-bin`.
fn refused_framing(
    response: http::Response<tonic::body::Body>,
    metrics: &RouteMetrics,
    started: Instant,
) -> http::Response<tonic::body::Body> {
    // By header names made once: looked up by `&str`, each name was parsed and hashed again
    // for every answer (≈ 500 instructions of a gRPC unlock's).
    const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    const DETAILS: http::HeaderName = http::HeaderName::from_static("grpc-status-details-bin");
    let headers = response.headers();
    // An answer (its status in the trailers), or one of our own errors.
    if !headers.contains_key(GRPC_STATUS) || headers.contains_key(DETAILS) {
        return response;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    let error = match status.code() {
        tonic::Code::Internal | tonic::Code::Unknown => Error::with(
            ErrorId::MalformedBody,
            format!(
                "request is not a readable gRPC message: {}",
                status.message()
            ),
        ),
        // tonic's other refusals (too large, unknown compression) already name the client's
        // error; count them and pass them on.
        code => {
            metrics.record(http_status_of(code), started.elapsed());
            return response;
        }
    };
    metrics.record(http_status(error.code()).as_u16(), started.elapsed());
    let mut replaced = grpc_status(&error).into_http::<tonic::body::Body>();
    // Keep the gRPC-web framing tonic-web chose.
    if let Some(content_type) = response.headers().get(http::header::CONTENT_TYPE) {
        replaced
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type.clone());
    }
    replaced
}

/// The HTTP status REST would answer for a gRPC code tonic chose.
fn http_status_of(code: tonic::Code) -> u16 {
    match code {
        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => 413,
        tonic::Code::Unimplemented => 501,
        tonic::Code::InvalidArgument => 400,
        _ => 500,
    }
}

/// Passes message bytes through untouched: decoding belongs to [`rpc::run_proto`] (prost), so a
/// bad message gets Latchkey's BODY-MALFORMED like a bad JSON body does.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(content_type: &str) -> Request {
        http::Request::builder()
            .header(http::header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn grpc_is_told_apart_by_content_type_alone() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "Application/GRPC",
        ] {
            assert!(is_grpc(&with_type(grpc)), "{grpc}");
        }
        for other in [
            "application/json",
            "application/proto",
            "application/gr",
            "",
        ] {
            assert!(!is_grpc(&with_type(other)), "{other}");
        }
    }
}
