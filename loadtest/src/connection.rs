//! One HTTP/1.1 connection held open for a whole run, for the open loop.
//!
//! The open loop measures latency, and on a 2-core machine the client shares the cores with the
//! server it measures: every microsecond the client spends per request is queueing the server's
//! requests behind it. Through reqwest (pool checkout, URL parsing, its middleware), an open-loop
//! request cost the client 50–90 µs of CPU — as much as the server. Like wrk2, the open loop
//! therefore drives a fixed set of connections on hyper's connection-level API: the request head
//! is built from preformatted parts, nothing is pooled, and a connection that fails is reopened
//! for the next request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::target::{error_id, login_body, HttpTarget, Op, Outcome};

/// The same limit as the reqwest client's (`target::http_client`).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Connection {
    /// `host:port` of the server.
    authority: String,
    host: HeaderValue,
    authorization: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// A connection to `target`'s server, opened now if it can be (else by the first request).
    pub async fn open(target: &HttpTarget) -> Connection {
        let authority = target
            .base
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut connection = Connection {
            authority: authority.to_owned(),
            host: HeaderValue::from_str(authority).unwrap_or(HeaderValue::from_static("localhost")),
            authorization: HeaderValue::from_str(&format!("Bearer {}", target.token))
                .unwrap_or(HeaderValue::from_static("")),
            sender: None,
        };
        connection.sender = connection.connect().await.ok();
        connection
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends one request and reads its whole answer; transport failures are outcomes too.
    pub async fn run(&mut self, op: Op, user: &str) -> Outcome {
        let result = match tokio::time::timeout(TIMEOUT, self.exchange(op, user)).await {
            Ok(result) => result.map_err(|_| "TRANSPORT-ERROR"),
            // A server that stopped answering must not hang the run (reqwest's timeout, too).
            Err(_) => Err("TRANSPORT-TIMEOUT"),
        };
        if result.is_err() {
            // Whatever went wrong, the next request starts on a fresh connection.
            self.sender = None;
        }
        result.unwrap_or_else(|id| Err(id.to_owned()))
    }

    /// `Err` for a transport failure, `Ok(outcome)` for any HTTP answer.
    async fn exchange(&mut self, op: Op, user: &str) -> Result<Outcome, String> {
        let (method, path, body) = match (op, op.password()) {
            (_, Some(password)) => (
                Method::POST,
                "/v2/sessions".to_owned(),
                Bytes::from(login_body(user, password)),
            ),
            (Op::Lock, _) => (
                Method::POST,
                format!("/v2/users/{user}/lock"),
                Bytes::from_static(b"{}"),
            ),
            (Op::Unlock, _) => (
                Method::POST,
                format!("/v2/users/{user}/unlock"),
                Bytes::from_static(b"{}"),
            ),
            (_, None) => (Method::GET, format!("/v2/users/{user}"), Bytes::new()),
        };
        let empty = body.is_empty();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().map_err(|e| format!("path {path}: {e}"))?;
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, self.authorization.clone());
        if !empty {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        // A connection the server closed after its last answer (`Connection: close`, idle
        // timeout) is replaced before anything is sent on it, so that is not an error.
        let usable = match self.sender.take() {
            Some(mut held) => held.ready().await.is_ok().then_some(held),
            None => None,
        };
        let mut sender = match usable {
            Some(held) => held,
            None => {
                let mut fresh = self.connect().await?;
                fresh.ready().await.map_err(|e| e.to_string())?;
                fresh
            }
        };
        let response = sender.send_request(request);
        self.sender = Some(sender);
        let response = response.await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status.is_success() {
            return Ok(Ok(()));
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(Err(error_id(&body, status.as_u16())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A server that refuses unlocks with an error body and closes the connection after every
    /// answer, counting the connections it accepts.
    async fn closing_server() -> (String, Arc<AtomicUsize>) {
        let app = Router::new()
            .route(
                "/v2/users/{id}/lock",
                post(|| async { ([("connection", "close")], "{}") }),
            )
            .route(
                "/v2/users/{id}/unlock",
                post(|| async {
                    (
                        hyper::StatusCode::BAD_REQUEST,
                        [("connection", "close")],
                        r#"{"code":9,"details":[{"id":"USER-NOT-LOCKED"}]}"#,
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), accepted)
    }

    #[tokio::test]
    async fn answers_become_outcomes_and_a_closed_connection_is_reopened() {
        let (base, accepted) = closing_server().await;
        let target = HttpTarget {
            client: reqwest::Client::new(),
            base,
            token: "t".into(),
        };
        let mut connection = Connection::open(&target).await;
        assert_eq!(connection.run(Op::Lock, "1").await, Ok(()));
        assert_eq!(
            connection.run(Op::Unlock, "1").await,
            Err("USER-NOT-LOCKED".to_owned())
        );
        assert_eq!(connection.run(Op::Lock, "1").await, Ok(()));
        // Every answer closed its connection: three requests, three connections, no error.
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_server_that_is_gone_is_a_transport_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let target = HttpTarget {
            client: reqwest::Client::new(),
            base,
            token: "t".into(),
        };
        let mut connection = Connection::open(&target).await;
        assert_eq!(
            connection.run(Op::Lock, "1").await,
            Err("TRANSPORT-ERROR".to_owned())
        );
    }
}
