//! The HTTP server: one service for REST, Connect, gRPC and gRPC-web (HTTP/1.1 and h2c) — the
//! edge in front of two routers —, health endpoints, JSON-shaped 404/405, and graceful shutdown
//! (stop accepting, finish in-flight requests, then flush and close the engine).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use std::sync::Arc;

use latchkey_engine::{Engine, ErrorId};

use crate::edge::Edge;
use crate::error::{ApiError, Protocol};

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// Cluster mode: where requests for another node's users go (`cluster.rs`).
    pub router: Option<Arc<crate::cluster::Router>>,
}

impl AppState {
    pub fn embedded(engine: Engine) -> Self {
        AppState {
            engine,
            router: None,
        }
    }
}

/// Every route Latchkey serves, over `engine`: the [`Edge`] in front of the REST/Connect and gRPC
/// routers, with request tracing and the body-limit opt-out around it. Call
/// [`crate::metrics::install`] before opening the engine to have its metrics exported too.
///
/// Everything that applies to every request wraps the routers as a service rather than being a
/// router layer: axum boxes each request's future once more for every layer on a route.
pub fn router(engine: Engine) -> impl App {
    app(engine, true)
}

/// What [`router`] and [`app`] return: the service a listener serves.
pub trait App:
    Service<Request, Response = Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// [`router`], with or without the management routes (`/healthz`, `/readyz`, `/metrics`): they
/// move to [`management_router`]'s own listener when `--management-listen` is given.
pub fn app(engine: Engine, with_management: bool) -> impl App {
    app_for(AppState::embedded(engine), with_management)
}

/// [`app`] over any state: a cluster node's (`cluster.rs`) forwards requests for users other
/// nodes serve.
pub fn app_for(state: AppState, with_management: bool) -> impl App {
    let grpc = crate::grpc::router(state.clone());
    let hot = crate::hot_routes::HotRoutes::new(state.clone());
    let mut router = Router::new()
        .merge(crate::rest::routes())
        .merge(crate::connect::routes())
        .route(crate::backup::PATH, get(crate::backup::backup))
        .route(crate::openapi::PATH, get(crate::openapi::serve));
    if with_management {
        router = router.merge(management_routes());
    }
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    // Bodies are read with our own limit (`rpc::read_body`, `rpc::BODY_LIMIT`), so the 413 has
    // our error shape; no handler takes an axum body extractor, so axum's `DefaultBodyLimit`
    // has nothing to govern (and it cost each request an extensions map: ≈ 720 instructions,
    // docs/performance.md).
    ServiceBuilder::new()
        .option_layer(request_lines())
        .service(Edge::new(router, grpc).with_hot_routes(hot))
}

/// One log line per request, at debug, 5xx answers included: a wave of them (call timeouts while
/// an attacker's guesses wait) must not become a wave of error lines that costs more than the
/// requests. Their causes are logged once where they arise (a failed store, a panicking actor)
/// and every answer is counted in the metrics.
///
/// Only when tower-http's debug level is on as the service is built (`latchkey serve` sets up
/// logging first; an embedder installs its subscriber before calling [`router`]): the layer and
/// the answer body's re-boxing cost ≈ 1,000 instructions and an allocation per request even with
/// its span off, and the level is not changed at run time.
fn request_lines<S>() -> Option<impl tower::Layer<S, Service: App> + Clone>
where
    S: App,
{
    tracing::enabled!(target: "tower_http::trace", Level::DEBUG).then(|| {
        ServiceBuilder::new().map_response(axum_body).layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
    })
}

/// The span each request's log lines carry, at debug under tower-http's target like the request
/// line itself (so `--log info,tower_http=debug` shows the request lines with their ids). The
/// edge (`edge.rs`) records the request id into it.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        target: "tower_http::trace",
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = tracing::field::Empty,
    )
}

fn management_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
}

/// The management listener's routes alone (plain HTTP, no token): health and metrics.
pub fn management_router(engine: Engine) -> Router {
    management_routes()
        .fallback(not_found)
        .with_state(AppState::embedded(engine))
}

/// tower-http's tracing wraps the response body; axum's server takes its own body type.
fn axum_body<B>(response: axum::http::Response<B>) -> Response
where
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    response.map(Body::new)
}

async fn readyz(State(app): State<AppState>) -> Response {
    if let Some(reason) = app.engine.store_failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store failed: {reason}"),
        )
            .into_response();
    }
    if app.engine.default_org_id().is_some() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not bootstrapped").into_response()
    }
}

fn protocol_of(request: &Request) -> Protocol {
    if request.uri().path().starts_with("/zitadel.") {
        Protocol::Connect
    } else {
        Protocol::Rest
    }
}

async fn not_found(request: Request) -> Response {
    ApiError::new(protocol_of(&request), ErrorId::RouteNotFound).into_response()
}

pub(crate) async fn method_not_allowed(request: Request) -> Response {
    ApiError::new(protocol_of(&request), ErrorId::MethodNotAllowed).into_response()
}

/// Serves `engine` on `listener` until `shutdown` resolves, then drains in-flight requests and
/// shuts the engine down (flushing the store).
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(engine.clone());
    serve_with(engine, app, nodelay(listener), shutdown).await
}

/// `listener` with Nagle's algorithm off on every connection: replies are small and
/// latency-bound, so no segment is held back.
pub fn nodelay(listener: TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    })
}

/// [`serve`] with any service from [`app`] on any listener (TLS: `tls::TlsListener`).
pub async fn serve_with<L>(
    engine: Engine,
    app: impl App,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let served = axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    if let Err(e) = engine.shutdown().await {
        tracing::error!("engine shutdown: {e}");
    }
    served
}

/// Installs the SIGINT/SIGTERM handlers now, and returns a future that resolves on either.
/// Installing before the server announces itself means a signal can never arrive in a window
/// where it would kill the process instead of shutting it down gracefully.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
            tracing::info!("shutdown signal received: finishing in-flight requests");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown signal received: finishing in-flight requests");
        })
    }
}
