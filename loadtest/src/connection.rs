//! One HTTP/1.1 connection held open for a whole run: the harness's HTTP client, closed and open
//! loop alike.
//!
//! The client shares the machine's two cores with the server it measures, so every microsecond it
//! spends per request is taken from the server, and a slow client caps the ceiling more than it
//! caps Latchkey — which flatters the ratio. Through reqwest (pool checkout, URL parsing, header
//! maps, its middleware) the harness drove the bare baseline at ≈ 0.4 × what wrk drives it at;
//! through hyper's connection API, at ≈ 0.6 ×. So, like wrk, a connection here writes a request
//! preformatted into one buffer with one `write` and reads the answer with as few `read`s as it
//! takes, parsing only the status line and the headers that frame the body (httparse); nothing is
//! pooled, no task is spawned per connection, and a connection that fails or that the server
//! closes is reopened for the next request. `docs/performance.md` records this client against
//! wrk on the same baseline in the same run (`latchkey-loadtest client-check`).

use std::io::Write as _;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::{error_id, login_body, HttpTarget, Op, Outcome};

/// The same limit as the reqwest client's (`target::http_client`).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest answer accepted (the harness's answers are a few hundred bytes).
const MAX_ANSWER: usize = 1 << 20;

pub struct Connection {
    /// `host:port` of the server.
    authority: String,
    /// The headers every request carries, preformatted: `Host` and `Authorization`.
    common: Vec<u8>,
    stream: Option<TcpStream>,
    /// The request being sent, built in place.
    out: Vec<u8>,
    /// Bytes read and not yet consumed.
    input: Vec<u8>,
}

/// How a framed answer ends.
struct Framed {
    status: u16,
    head: usize,
    body: usize,
    close: bool,
}

impl Connection {
    /// A connection to `target`'s server, opened now if it can be (else by the first request).
    pub async fn open(target: &HttpTarget) -> Connection {
        let authority = target
            .base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let common = format!(
            "Host: {authority}\r\nAuthorization: Bearer {}\r\n",
            target.token
        )
        .into_bytes();
        let mut connection = Connection {
            authority,
            common,
            stream: None,
            out: Vec::with_capacity(512),
            input: Vec::with_capacity(4096),
        };
        connection.stream = connection.connect().await.ok();
        connection
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(&self.authority).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
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
            self.stream = None;
        }
        result.unwrap_or_else(|id| Err(id.to_owned()))
    }

    /// Writes `op`'s request into `out`.
    fn build(&mut self, op: Op, user: &str) {
        let out = &mut self.out;
        out.clear();
        let body: Option<std::borrow::Cow<'static, str>> = match (op, op.password()) {
            (_, Some(password)) => {
                out.extend_from_slice(b"POST /v2/sessions HTTP/1.1\r\n");
                Some(login_body(user, password).into())
            }
            (Op::Lock, _) => {
                let _ = write!(out, "POST /v2/users/{user}/lock HTTP/1.1\r\n");
                Some("{}".into())
            }
            (Op::Unlock, _) => {
                let _ = write!(out, "POST /v2/users/{user}/unlock HTTP/1.1\r\n");
                Some("{}".into())
            }
            (_, None) => {
                let _ = write!(out, "GET /v2/users/{user} HTTP/1.1\r\n");
                None
            }
        };
        out.extend_from_slice(&self.common);
        match body {
            Some(body) => {
                let _ = write!(
                    out,
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
            None => out.extend_from_slice(b"\r\n"),
        }
    }

    /// `Err` for a transport failure, `Ok(outcome)` for any HTTP answer.
    async fn exchange(&mut self, op: Op, user: &str) -> Result<Outcome, String> {
        self.build(op, user);
        let (mut stream, mut reused) = match self.stream.take() {
            Some(stream) => (stream, true),
            None => (self.connect().await.map_err(|e| e.to_string())?, false),
        };
        if let Err(e) = stream.write_all(&self.out).await {
            if !reused {
                return Err(e.to_string());
            }
            // The server closed the kept-alive connection before this request: nothing
            // reached it, so send it again on a fresh one.
            stream = self.connect().await.map_err(|e| e.to_string())?;
            reused = false;
            stream
                .write_all(&self.out)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.input.clear();
        let framed = loop {
            if let Some(framed) = frame(&self.input)? {
                if self.input.len() >= framed.head + framed.body {
                    break framed;
                }
            }
            if self.input.len() >= MAX_ANSWER {
                return Err("answer too large".into());
            }
            if self.input.capacity() - self.input.len() < 1024 {
                self.input.reserve(4096);
            }
            let read = stream
                .read_buf(&mut self.input)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 {
                if reused && self.input.is_empty() {
                    // Closed while idle, before it read this request (a server reads nothing
                    // once it has decided to close): send it again on a fresh connection.
                    stream = self.connect().await.map_err(|e| e.to_string())?;
                    reused = false;
                    stream
                        .write_all(&self.out)
                        .await
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                return Err("connection closed before the answer ended".into());
            }
        };
        if !framed.close {
            self.stream = Some(stream);
        }
        if (200..300).contains(&framed.status) {
            return Ok(Ok(()));
        }
        let body = &self.input[framed.head..framed.head + framed.body];
        let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        Ok(Err(error_id(&body, framed.status)))
    }
}

/// The answer's framing once its head is complete: status, head length, body length (from
/// `Content-Length`; the servers measured never send chunked answers, and one is refused rather
/// than misread), and whether the server closes the connection after it.
fn frame(input: &[u8]) -> Result<Option<Framed>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(input).map_err(|e| e.to_string())? {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => return Ok(None),
    };
    let mut body = 0;
    let mut close = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("bad content-length")?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked answers are not read by this client".into());
        } else if header.name.eq_ignore_ascii_case("connection") {
            close = header.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(Framed {
        status: response.code.unwrap_or(0),
        head,
        body,
        close,
    }))
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
