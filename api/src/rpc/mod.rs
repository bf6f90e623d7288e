//! One file per command: each defines an [`Rpc`] — its request and response JSON, its protobuf
//! messages, and the engine call between them. REST (`rest.rs`), Connect (`connect.rs`) and gRPC /
//! gRPC-web (`grpc.rs`) are generic adapters over this trait, so a command's behaviour is written
//! once whatever the transport.
//!
//! The JSON types are the commands' own request and response types. Binary protocols arrive as
//! protobuf; [`run_proto`] transcodes the decoded message to that JSON through the generated
//! protojson impls (and the response back), so every protocol runs exactly the same code and
//! answers with exactly the same errors.

use std::future::Future;
use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::http::{header, HeaderMap};
use prost::Message as _;
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
    type Response: crate::wire::JsonAnswer + Send + 'static;
    /// The request message on the binary protocols (`proto/`).
    type ProtoRequest: prost::Message + Default + Serialize + Send + 'static;
    /// The response message on the binary protocols.
    type ProtoResponse: prost::Message + DeserializeOwned + Send + 'static;

    fn call(
        engine: &Engine,
        caller: &Caller,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Response, Error>> + Send;
}

/// Something done once per RPC: see [`for_each`].
pub trait Visitor {
    fn visit<R: Rpc>(&mut self);
}

/// Every RPC Latchkey serves on its method path (Connect, gRPC, gRPC-web). REST has its own
/// table in `rest.rs` because its paths differ per method.
pub fn for_each(visitor: &mut impl Visitor) {
    visitor.visit::<user_state::UnlockUser>();
    visitor.visit::<user_state::LockUser>();
    visitor.visit::<user_state::DeactivateUser>();
    visitor.visit::<user_state::ReactivateUser>();
    visitor.visit::<user_state::DeleteUser>();
    visitor.visit::<get_user::GetUserById>();
    visitor.visit::<list_users::ListUsers>();
    visitor.visit::<add_human_user::AddHumanUser>();
    visitor.visit::<create_user::CreateUser>();
    visitor.visit::<pats::AddPersonalAccessToken>();
    visitor.visit::<pats::RemovePersonalAccessToken>();
    visitor.visit::<add_organization::AddOrganization>();
    visitor.visit::<create_administrator::CreateAdministrator>();
}

/// The method path of an RPC: `/<package>.<Service>/<Method>` (Connect, gRPC and gRPC-web).
pub fn path<R: Rpc>() -> String {
    format!("/{}/{}", R::SERVICE, R::METHOD)
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

/// The whole body, at most [`BODY_LIMIT`] bytes (413 beyond).
pub async fn read_body(mut body: Body) -> Result<Bytes, Error> {
    use http_body::Body as _;
    // Nearly every body is one frame (its length was announced and it came with the head): take
    // it as is, without collecting through a buffer list. Anything longer is collected.
    if body.size_hint().lower() > BODY_LIMIT as u64 {
        return Err(Error::new(ErrorId::BodyTooLarge));
    }
    let first = match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        None => return Ok(Bytes::new()),
        Some(Err(_)) => return Err(broken_body()),
        Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
    };
    if first.len() > BODY_LIMIT {
        return Err(Error::new(ErrorId::BodyTooLarge));
    }
    if body.is_end_stream() {
        return Ok(first);
    }
    let rest = collect_body(body, BODY_LIMIT - first.len()).await?;
    Ok([first, rest].concat().into())
}

fn broken_body() -> Error {
    Error::with(ErrorId::MalformedBody, "request body could not be read")
}

async fn collect_body(body: Body, limit: usize) -> Result<Bytes, Error> {
    to_bytes(body, limit).await.map_err(|e| {
        // An oversized body is the limit's own error type; anything else is a broken stream.
        if e.into_inner().is::<http_body_util::LengthLimitError>() {
            Error::new(ErrorId::BodyTooLarge)
        } else {
            broken_body()
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

/// The binary protocols' entry: authenticates from `headers`, decodes `bytes` as the method's
/// protobuf request, runs the same call as the JSON protocols, encodes the response.
pub async fn run_proto<R: Rpc>(
    engine: &Engine,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Vec<u8>, Error> {
    let caller = authenticate(engine, headers).await?;
    let message = R::ProtoRequest::decode(bytes).map_err(|e| {
        Error::with(
            ErrorId::MalformedBody,
            format!("request body is not a valid protobuf message for this method: {e}"),
        )
    })?;
    // Fails only on enum numbers the proto does not define; JSON would refuse those too.
    let json = serde_json::to_vec(&message)
        .map_err(|e| Error::invalid(format!("request has an invalid value: {e}")))?;
    let request: R::Request = decode(&json)?;
    let response = R::call(engine, &caller, request).await?;
    to_proto::<R>(&response).map(|message| message.encode_to_vec())
}

/// The protobuf form of a response. Our JSON is protojson, so this cannot fail unless a
/// response type and `proto/` disagree — which `api/tests/grpc.rs` would catch: it calls every
/// method over gRPC.
pub fn to_proto<R: Rpc>(response: &R::Response) -> Result<R::ProtoResponse, Error> {
    serde_json::to_value(response)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            Error::with(
                ErrorId::Internal,
                format!(
                    "{} response does not fit its protobuf message: {e}",
                    R::METHOD
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    //! Request decoding under random input (the part of the server a fuzzer would target; a
    //! `cargo fuzz` target needs a nightly toolchain, which the build does not use): every
    //! method's JSON decoding and protobuf decoding + transcoding, fed seeded random and
    //! mutated bytes, must return Ok or an InvalidArgument-class error — never panic.

    use super::*;
    use latchkey_engine::Code;

    struct Fuzz {
        seed: u64,
        cases: usize,
    }

    impl Fuzz {
        fn next(&mut self) -> u64 {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            self.seed
        }

        fn input(&mut self, seeds: &[&[u8]]) -> Vec<u8> {
            let mut bytes = seeds[(self.next() % seeds.len() as u64) as usize].to_vec();
            for _ in 0..(self.next() % 8) {
                let at = (self.next() as usize) % (bytes.len() + 1);
                match self.next() % 4 {
                    0 if at < bytes.len() => bytes[at] = self.next() as u8,
                    1 => bytes.insert(at, self.next() as u8),
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            bytes
        }
    }

    const SEEDS: &[&[u8]] = &[
        br#"{"userId":"1234","profile":{"givenName":"A","familyName":"B"},"email":{"email":"a@b.c","isVerified":true}}"#,
        br#"{"query":{"offset":"1","limit":2,"asc":true},"queries":[{"stateQuery":{"state":"USER_STATE_LOCKED"}},{"orQuery":{"queries":[{"userNameQuery":{"userName":"a","method":1}}]}}]}"#,
        br#"{"organizationId":"o","machine":{"name":"m"},"human":{"profile":{}}}"#,
        br#"{"userId":"u","resource":{"organizationId":"o"},"roles":["ORG_OWNER"],"expirationDate":"2030-01-01T00:00:00Z"}"#,
        b"\x0a\x04abcd\x12\x02\x08\x01\x22\x03\x0a\x01x\x5a\x02\x0a\x00",
        b"\x0a\x01\x31",
        b"",
    ];

    impl Visitor for Fuzz {
        fn visit<R: Rpc>(&mut self) {
            for _ in 0..self.cases {
                let input = self.input(SEEDS);
                if let Err(e) = decode::<R::Request>(&input) {
                    assert_eq!(e.code(), Code::InvalidArgument, "{}: {e}", R::METHOD);
                }
                if let Ok(message) = R::ProtoRequest::decode(input.as_slice()) {
                    // Transcoding can refuse (e.g. an undefined enum number), never panic.
                    if let Ok(json) = serde_json::to_vec(&message) {
                        if let Err(e) = decode::<R::Request>(&json) {
                            assert_eq!(e.code(), Code::InvalidArgument, "{}: {e}", R::METHOD);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn request_decoding_never_panics_on_random_input() {
        for_each(&mut Fuzz {
            seed: 0x00DE_C0DE,
            cases: 2_000,
        });
    }

    fn streamed(pieces: &[&'static str]) -> Body {
        let frames: Vec<Result<Bytes, std::io::Error>> = pieces
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        Body::from_stream(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn bodies_are_read_whole_in_one_frame_or_many() {
        assert_eq!(read_body(Body::from("{}")).await.unwrap(), "{}");
        assert_eq!(read_body(Body::empty()).await.unwrap(), "");
        assert_eq!(
            read_body(streamed(&["{\"user", "Id\":", "\"1\"}"]))
                .await
                .unwrap(),
            "{\"userId\":\"1\"}"
        );
        assert_eq!(read_body(streamed(&["", "{}"])).await.unwrap(), "{}");
    }

    #[tokio::test]
    async fn bodies_past_the_limit_are_refused_whole_or_streamed() {
        let big = vec![b'x'; BODY_LIMIT + 1];
        let err = read_body(Body::from(big)).await.unwrap_err();
        assert_eq!(err.id, ErrorId::BodyTooLarge);
        let half: &'static str = Box::leak("y".repeat(BODY_LIMIT / 2 + 1).into_boxed_str());
        let err = read_body(streamed(&[half, half])).await.unwrap_err();
        assert_eq!(err.id, ErrorId::BodyTooLarge);
        let exact: &'static str = Box::leak("z".repeat(BODY_LIMIT / 2).into_boxed_str());
        assert_eq!(
            read_body(streamed(&[exact, exact])).await.unwrap().len(),
            BODY_LIMIT
        );
    }

    /// The edge closes HTTP/1.1 connections whose body was left unread; a body read here must
    /// count as read, or every answer would close its connection.
    #[tokio::test]
    async fn a_body_read_here_counts_as_read_for_keep_alive() {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/v2/users/1/unlock")
            .header(header::CONTENT_LENGTH, "2")
            .body(Body::from("{}"))
            .unwrap();
        let (request, read) = crate::unread_body::watch(request);
        let read = read.expect("an HTTP/1.1 body is watched");
        assert!(!read.finished());
        assert_eq!(read_body(request.into_body()).await.unwrap(), "{}");
        assert!(read.finished());
    }
}
