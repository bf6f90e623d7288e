//! The edge: the one service every HTTP request passes before routing.
//!
//! It does two things the router cannot: it sends gRPC and gRPC-web requests to the gRPC router
//! (they share Connect's method paths and differ only by content type), and it answers with
//! `Connection: close` when a handler left an HTTP/1.1 request body unread (see
//! `unread_body.rs`). It is a plain tower service around the two routers rather than axum
//! middleware: `from_fn` boxes a future per layer per request, and on the hot path every
//! allocation and hand-off shows (docs/performance.md, "What mattered").

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::Router;
use tower::Service;

use crate::unread_body::{self, BodyRead};

/// The REST/Connect router with the gRPC router beside it.
#[derive(Clone)]
pub struct Edge {
    router: Router,
    grpc: Router,
}

impl Edge {
    pub fn new(router: Router, grpc: Router) -> Self {
        Edge { router, grpc }
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
        let (request, body_read) = unread_body::watch(request);
        let router = if crate::grpc::is_grpc(&request) {
            &mut self.grpc
        } else {
            &mut self.router
        };
        EdgeFuture {
            inner: router.call(request),
            body_read,
        }
    }
}

pin_project_lite::pin_project! {
    /// The routed request's response, marked `Connection: close` if its body was left unread.
    pub struct EdgeFuture {
        #[pin]
        inner: RouteFuture<Infallible>,
        body_read: Option<BodyRead>,
    }
}

impl Future for EdgeFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
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
