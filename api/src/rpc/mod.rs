//! One file per command: each defines an [`Rpc`] — its request and response JSON and the engine
//! call between them. REST (`rest.rs`) and Connect (`connect.rs`) are generic adapters over this
//! trait, so a command's behaviour is written once whatever the transport.

use std::future::Future;
use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use serde::Serialize;

use latchkey_engine::{Caller, Engine, Error, ErrorId};

pub mod add_human_user;
pub mod add_organization;
pub mod create_administrator;
pub mod create_user;
pub mod get_user;
pub mod list_users;
pub mod pats;
pub mod user_state;

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1024 * 1024;

pub trait Rpc: Send + Sync + 'static {
    /// Full service name, e.g. `zitadel.user.v2.UserService`.
    const SERVICE: &'static str;
    /// Method name, e.g. `UnlockUser`.
    const METHOD: &'static str;
    type Request: DeserializeOwned + Default + Send + 'static;
    type Response: Serialize + Send + 'static;

    fn call(
        engine: &Engine,
        caller: &Caller,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Response, Error>> + Send;
}

/// Requests whose user id can come from the REST path.
pub trait HasUserId {
    fn set_user_id(&mut self, id: String);
}

impl HasUserId for crate::wire::UserIdRequest {
    fn set_user_id(&mut self, id: String) {
        self.user_id = id;
    }
}

/// `Authorization: Bearer <token>` → the caller.
pub async fn authenticate(engine: &Engine, headers: &HeaderMap) -> Result<Arc<Caller>, Error> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ErrorId::Unauthenticated)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(ErrorId::Unauthenticated)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ErrorId::Unauthenticated.into());
    }
    engine.authenticate(token.trim()).await
}

pub async fn read_body(body: Body) -> Result<Bytes, Error> {
    to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        // hyper reports an oversized body through the limit; anything else is a broken stream
        let text = e.to_string();
        if text.contains("length limit")
            || std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
        {
            Error::new(ErrorId::BodyTooLarge)
        } else {
            Error::with(ErrorId::MalformedBody, "request body could not be read")
        }
    })
}

/// An empty body is the empty message (`{}`); otherwise JSON, unknown fields ignored.
pub fn decode<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Error::with(
            ErrorId::MalformedBody,
            format!("request body is not valid JSON for this method: {e}"),
        )
    })
}

/// Authenticates, reads and decodes the body, lets the transport fill in path values, calls.
pub async fn run<R: Rpc>(
    engine: &Engine,
    headers: &HeaderMap,
    body: Body,
    fill: impl FnOnce(&mut R::Request),
) -> Result<R::Response, Error> {
    let caller = authenticate(engine, headers).await?;
    let bytes = read_body(body).await?;
    let mut request: R::Request = decode(&bytes)?;
    fill(&mut request);
    R::call(engine, &caller, request).await
}
