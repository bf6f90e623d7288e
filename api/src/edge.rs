//! The edge: the one service every HTTP request passes before routing.
//!
//! It does three things the router cannot: it gives every request an id — the client's own
//! `x-request-id`, or a new one — that the answer carries and the request's log span records;
//! it sends gRPC and gRPC-web requests to the gRPC router (they share Connect's method paths and
//! differ only by content type); and it answers with `Connection: close` when a router's handler
//! left an HTTP/1.1 request body unread (see `unread_body.rs`; a hot route holds its body and
//! applies the same rule itself). It is a plain tower service around the two routers rather
//! than axum middleware: `from_fn` boxes a future per layer per request, and on the hot path
//! every allocation and hand-off shows (docs/performance.md, "What mattered").

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::Router;
use tower::Service;

use crate::hot_routes::{HotFuture, HotRoutes};
use crate::unread_body::{self, BodyRead};

/// The request id's header, in requests and answers.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The REST/Connect router with the gRPC router beside it.
#[derive(Clone)]
pub struct Edge {
    router: Router,
    grpc: Router,
    hot: Option<HotRoutes>,
    ids: RequestIds,
}

impl Edge {
    pub fn new(router: Router, grpc: Router) -> Self {
        Edge {
            router,
            grpc,
            hot: None,
            ids: RequestIds::default(),
        }
    }

    /// With the hot REST routes (`hot_routes.rs`) tried before the router.
    pub fn with_hot_routes(self, hot: HotRoutes) -> Self {
        Edge {
            hot: Some(hot),
            ..self
        }
    }
}

/// New request ids: this process's start time in hex, then a counter — unique across restarts
/// without a random source per request.
#[derive(Clone)]
struct RequestIds {
    prefix: std::sync::Arc<str>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        RequestIds {
            prefix: format!("{started:x}-").into(),
            next: Default::default(),
        }
    }
}

impl RequestIds {
    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Exactly as long as the id: `Bytes` takes a full `Vec` as it is, where a `Vec` with room
        // to spare costs it a second allocation (its shared header).
        let digits = n.checked_ilog10().map_or(1, |log| log as usize + 1);
        let mut id = Vec::with_capacity(self.prefix.len() + digits);
        id.extend_from_slice(self.prefix.as_bytes());
        crate::wire::push_u64(&mut id, n);
        // Hex digits, a dash and decimal digits: always a valid header value.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }
}

impl Service<Request> for Edge {
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A `Router` is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> EdgeFuture {
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => self.ids.next(),
        };
        // The request's span (server.rs) is entered around this call; off unless at debug.
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("request_id", request_id.to_str().unwrap_or(""));
        }
        let grpc = crate::grpc::is_grpc(&request);
        // A hot route keeps the body until it answers and marks its own answer when the body
        // went unread (`unread_body::close_if_unread`): its body is not watched.
        let hot = match &self.hot {
            Some(hot) if !grpc => hot.call(request),
            _ => Err(request),
        };
        let (inner, body_read) = match hot {
            Ok(future) => (Routed::Hot { future }, None),
            Err(request) => {
                let (request, body_read) = unread_body::watch(request);
                let router = if grpc {
                    &mut self.grpc
                } else {
                    &mut self.router
                };
                let future = router.call(request);
                (Routed::Router { future }, body_read)
            }
        };
        EdgeFuture {
            inner,
            body_read,
            request_id: Some(request_id),
        }
    }
}

pin_project_lite::pin_project! {
    /// Where a request went: a router, or a hot route.
    #[project = RoutedProj]
    enum Routed {
        Router { #[pin] future: RouteFuture<Infallible> },
        Hot { #[pin] future: HotFuture },
    }
}

impl Future for Routed {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RoutedProj::Router { future } => future.poll(cx),
            RoutedProj::Hot { future } => future.poll(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// The routed request's response, with the request id, and marked `Connection: close` if
    /// its body was left unread.
    pub struct EdgeFuture {
        #[pin]
        inner: Routed,
        body_read: Option<BodyRead>,
        request_id: Option<HeaderValue>,
    }
}

impl Future for EdgeFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        if let Some(mut id) = this.request_id.take() {
            // Never indexed by HTTP/2's header compression: every id is new, so a table entry
            // for it would only evict the entries later answers reuse, and an encoder with many
            // ids in its table compares each answer's id with all of them.
            id.set_sensitive(true);
            response.headers_mut().insert(REQUEST_ID, id);
        }
        if this.body_read.as_ref().is_some_and(|read| !read.finished()) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    fn edge() -> Edge {
        let router = Router::new()
            .route("/reads", post(|body: String| async move { body }))
            .route("/ignores", post(|| async { "no" }));
        let grpc = Router::new().route("/reads", post(|| async { "grpc" }));
        Edge::new(router, grpc)
    }

    async fn send(path: &str, content_type: &str, body: &'static str) -> (String, Option<String>) {
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let response = edge().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let connection = response
            .headers()
            .get(header::CONNECTION)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        (String::from_utf8(bytes.to_vec()).unwrap(), connection)
    }

    #[tokio::test]
    async fn only_answers_that_leave_the_body_unread_close_the_connection() {
        assert_eq!(
            send("/reads", "text/plain", "{}").await,
            ("{}".into(), None)
        );
        assert_eq!(
            send("/ignores", "text/plain", "{}").await,
            ("no".into(), Some("close".into()))
        );
        assert_eq!(
            send("/ignores", "text/plain", "").await,
            ("no".into(), None),
            "nothing to read"
        );
    }

    #[test]
    fn a_made_request_id_is_the_prefix_and_the_count_whatever_its_digits() {
        let ids = RequestIds {
            prefix: "abc-".into(),
            next: Default::default(),
        };
        for n in [0, 9, 10, 99, 100, 12_345, u64::MAX] {
            ids.next.store(n, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(ids.next().to_str().unwrap(), format!("abc-{n}"));
        }
    }

    #[tokio::test]
    async fn every_answer_carries_a_request_id_and_a_client_s_own_is_kept() {
        let mut edge = edge();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let request = Request::post("/reads").body(Body::from("x")).unwrap();
            let response = edge.call(request).await.unwrap();
            ids.push(response.headers()[&REQUEST_ID].to_str().unwrap().to_owned());
        }
        assert_ne!(ids[0], ids[1], "{ids:?}");
        assert!(ids.iter().all(|id| id.contains('-')), "{ids:?}");
        let request = Request::post("/reads")
            .header("x-request-id", "client-chose-this")
            .body(Body::from("x"))
            .unwrap();
        let response = edge.call(request).await.unwrap();
        assert_eq!(response.headers()[&REQUEST_ID], "client-chose-this");
    }

    #[tokio::test]
    async fn grpc_content_types_go_to_the_grpc_router() {
        for content_type in [
            "application/grpc",
            "application/grpc-web+proto",
            "Application/GRPC",
        ] {
            let (body, _) = send("/reads", content_type, "").await;
            assert_eq!(body, "grpc", "{content_type}");
        }
        assert_eq!(send("/reads", "application/json", "x").await.0, "x");
    }
}
