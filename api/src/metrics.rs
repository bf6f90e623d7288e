//! Prometheus metrics at `/metrics`.
//!
//! The process-wide recorder is installed once, before the engine opens (metric handles bind to
//! whatever recorder exists when they are created). Every route gets its handles once, when the
//! router is built: a request only increments a counter it already holds and records one latency.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::handler::{Handler, Layered};
use axum::response::Response;
use axum::routing::MethodRouter;
use metrics::{counter, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower::{Layer, Service};

/// Latency buckets (seconds): 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];
/// Commit batch sizes: 1 to 1024 writes per flush.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle. `None` when
/// another recorder was installed first (e.g. by a program embedding Latchkey).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("latchkey_store_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                });
            let handle = match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!("metrics disabled: {e}");
                    return None;
                }
            };
            // Without the exporter's own HTTP listener nobody drains histogram samples between
            // scrapes; do it here so an unscraped server does not grow.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("latchkey-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            Some(handle)
        })
        .clone()
}

/// The `/metrics` body.
pub async fn render() -> String {
    install().map(|h| h.render()).unwrap_or_default()
}

/// Statuses Latchkey produces; anything else is counted as "other".
const STATUSES: [u16; 14] = [
    200, 400, 401, 403, 404, 405, 409, 413, 429, 500, 501, 503, 504, 0,
];

/// One route's handles.
pub struct RouteMetrics {
    requests: [Counter; STATUSES.len()],
    latency: Histogram,
}

impl RouteMetrics {
    pub fn new(route: &'static str, protocol: &'static str) -> Arc<Self> {
        Arc::new(RouteMetrics {
            requests: STATUSES.map(|status| {
                let status = if status == 0 {
                    "other".to_string()
                } else {
                    status.to_string()
                };
                counter!("latchkey_http_requests_total", "route" => route, "protocol" => protocol, "status" => status)
            }),
            latency: histogram!("latchkey_http_request_duration_seconds", "route" => route, "protocol" => protocol),
        })
    }

    pub fn record(&self, status: u16, elapsed: Duration) {
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len() - 1);
        self.requests[slot].increment(1);
        self.latency.record(elapsed);
    }
}

/// A route whose handlers are each counted and timed with handles made here, once: `build` makes
/// the route's `MethodRouter`, wrapping each handler with [`Track::on`]; the route's 405 answer is
/// counted too. The layer goes on the handlers, not on the built `MethodRouter`: axum boxes each
/// request's future once more for a `MethodRouter` layer, not for a handler's.
pub fn tracked<S: Clone + Send + Sync + 'static>(
    route: &'static str,
    protocol: &'static str,
    build: impl FnOnce(&Track) -> MethodRouter<S>,
) -> MethodRouter<S> {
    let track = Track(RouteMetrics::new(route, protocol));
    build(&track).fallback(track.on(crate::server::method_not_allowed))
}

/// One route's metrics as a layer: a plain service around each handler, so counting a request
/// costs no allocation of its own (axum's `from_fn` would box a future per request).
#[derive(Clone)]
pub struct Track(Arc<RouteMetrics>);

impl Track {
    /// `handler`, counted and timed as this route.
    pub fn on<H, T, S>(&self, handler: H) -> Layered<Track, H, T, S>
    where
        H: Handler<T, S>,
        S: Clone + Send + Sync + 'static,
    {
        handler.layer(self.clone())
    }
}

impl<S> Layer<S> for Track {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A handler counted and timed by [`Track`].
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    metrics: Arc<RouteMetrics>,
}

impl<S: Service<Request, Response = Response>> Service<Request> for Tracked<S> {
    type Response = Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        TrackedFuture::new(self.metrics.clone(), self.inner.call(request))
    }
}

pin_project_lite::pin_project! {
    /// A tracked handler's response: recorded when it is ready.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        metrics: Arc<RouteMetrics>,
        started: Instant,
    }
}

impl<F> TrackedFuture<F> {
    /// `inner`, timed from now and counted under `metrics` when it answers.
    pub fn new(metrics: Arc<RouteMetrics>, inner: F) -> Self {
        TrackedFuture {
            inner,
            metrics,
            started: Instant::now(),
        }
    }
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        if let Ok(response) = &output {
            this.metrics
                .record(response.status().as_u16(), this.started.elapsed());
        }
        Poll::Ready(output)
    }
}
