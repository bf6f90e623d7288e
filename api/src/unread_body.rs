//! Keep-alive safety for answers sent before the request body was read.
//!
//! Many answers never read the body: a 401 before the body is looked at, a 404/405, a 413 once
//! the limit is hit. hyper then closes the HTTP/1.1 connection after the response (it cannot
//! know where the next request starts) — but without saying so, a client that pooled the
//! connection sends its next request into the closing socket and gets a transport error. The
//! edge (`edge.rs`) watches the body with [`watch`] and answers with `Connection: close` when it
//! was left unread, so clients open a fresh connection instead of failing. A handler that keeps
//! the body itself until it answers (the hot routes, `hot_routes.rs`) applies the same rule with
//! [`close_if_unread`] instead, without the wrapper.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Version};
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// Whether a watched request body has been read to its end.
pub struct BodyRead(Arc<AtomicBool>);

impl BodyRead {
    pub fn finished(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

fn is_http1(version: Version) -> bool {
    matches!(version, Version::HTTP_10 | Version::HTTP_11)
}

/// Marks `response` `Connection: close` if it answers an HTTP/1.x request whose `body` was not
/// read to its end: what the edge does for a watched body, for a handler that still holds it.
pub fn close_if_unread(version: Version, body: &Body, response: &mut Response) {
    if is_http1(version) && !http_body::Body::is_end_stream(body) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Wraps an HTTP/1.x request's body so the edge can tell afterwards whether it was read to its
/// end. `None` when there is nothing to watch: HTTP/2 (streams end on their own) or no body.
pub fn watch(request: Request) -> (Request, Option<BodyRead>) {
    if !is_http1(request.version()) || http_body::Body::is_end_stream(request.body()) {
        return (request, None);
    }
    let finished = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(Tracked {
            inner: body,
            finished: finished.clone(),
        })
    });
    (request, Some(BodyRead(finished)))
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
