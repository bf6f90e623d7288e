//! Keep-alive safety for answers sent before the request body was read.
//!
//! Many answers never read the body: a 401 before the body is looked at, a 404/405, a 413 once
//! the limit is hit. hyper then closes the HTTP/1.1 connection after the response (it cannot
//! know where the next request starts) — but without saying so, a client that pooled the
//! connection sends its next request into the closing socket and gets a transport error. This
//! middleware notices an unread body and answers with `Connection: close`, so clients open a
//! fresh connection instead of failing.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

pub async fn close_if_unread(request: Request, next: Next) -> Response {
    let http1 = matches!(request.version(), Version::HTTP_10 | Version::HTTP_11);
    if !http1 || http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(Tracked {
            inner: body,
            finished: finished.clone(),
        })
    });
    let mut response = next.run(request).await;
    if !finished.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A body that records when it has been read to its end.
struct Tracked {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route("/reads", post(|body: String| async move { body }))
            .route("/ignores", post(|| async { "no" }))
            .layer(axum::middleware::from_fn(close_if_unread))
    }

    async fn connection_header(path: &str, body: &'static str) -> Option<String> {
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .body(Body::from(body))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        response
            .headers()
            .get(header::CONNECTION)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn only_answers_that_leave_the_body_unread_close_the_connection() {
        assert_eq!(connection_header("/reads", "{}").await, None);
        assert_eq!(
            connection_header("/ignores", "{}").await.as_deref(),
            Some("close")
        );
        assert_eq!(
            connection_header("/ignores", "").await,
            None,
            "nothing to read"
        );
    }
}
