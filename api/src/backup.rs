//! `GET /latchkey/v1/backup`: an online backup, streamed to the caller (`latchkey backup
//! --server …` writes it to a file). IAM_OWNER only. The engine writes the backup on a blocking
//! thread into a channel; the answer's head is sent only once the backup's point is taken (the
//! first bytes are written after it), so every write acknowledged before the request is in it
//! and no write that starts after the head arrived is. A backup that fails midway ends the
//! body early: the file is then short of its checksum, and the command refuses it.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use latchkey_engine::{Error, ErrorId};

use crate::error::{ApiError, Protocol};
use crate::server::AppState;

/// The route.
pub const PATH: &str = "/latchkey/v1/backup";
/// Bytes sent per body frame.
const CHUNK: usize = 256 * 1024;

pub async fn backup(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match start(app, headers).await {
        Ok(response) => response,
        Err(error) => ApiError::new(Protocol::Rest, error).into_response(),
    }
}

async fn start(app: AppState, headers: HeaderMap) -> Result<Response, Error> {
    let caller = crate::rpc::authenticate(&app.engine, &headers).await?;
    app.engine.authorize_backup(&caller)?;
    let (chunks, body) = mpsc::channel(4);
    let (started, head) = oneshot::channel();
    let engine = app.engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            chunks,
            buffer: Vec::with_capacity(CHUNK),
            started: Some(started),
        };
        match engine.write_backup(&mut out) {
            Ok(summary) => tracing::info!(
                entries = summary.entries,
                bytes = summary.bytes,
                "online backup sent"
            ),
            Err(error) => {
                tracing::warn!("online backup failed: {error}");
                match out.started.take() {
                    Some(started) => drop(started.send(Err(error))),
                    // The body ends early; the client's checksum check refuses it.
                    None => drop(out.chunks.blocking_send(Err(std::io::Error::other(error)))),
                }
            }
        }
    });
    match head.await {
        Ok(Ok(created_ms)) => {
            let mut response = Body::new(ChunkBody(body)).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            let disposition = format!("attachment; filename=\"latchkey-{created_ms}.backup\"");
            if let Ok(value) = HeaderValue::from_str(&disposition) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            Ok(response)
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ErrorId::Internal.into()),
    }
}

type Chunk = Result<Bytes, std::io::Error>;

/// The blocking side: buffers the backup's bytes and sends them in chunks; tells the handler
/// when the first bytes arrive (the point is taken by then).
struct ChannelWriter {
    chunks: mpsc::Sender<Chunk>,
    buffer: Vec<u8>,
    started: Option<oneshot::Sender<Result<u64, Error>>>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.chunks.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(started) = self.started.take() {
            let created_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if started.send(Ok(created_ms)).is_err() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the request was dropped",
                ));
            }
        }
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

/// The async side: the chunks as a response body.
struct ChunkBody(mpsc::Receiver<Chunk>);

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(http_body::Frame::data)))
    }
}
