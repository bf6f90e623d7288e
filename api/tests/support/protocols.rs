//! Any RPC over any of the five protocols Latchkey speaks, by its row of the RPC table: REST,
//! Connect JSON, Connect binary, gRPC (h2c) and gRPC-web. The request is given as protojson; for
//! the binary protocols it is encoded with the method's own generated message type (found by
//! visiting the table), and the answer decoded back to JSON, so every protocol is checked the
//! same way. (gRPC calls carry the bytes through the server's own pass-through codec.)

use std::collections::HashMap;

use latchkey_api::grpc::RawCodec;
use latchkey_api::rpc::{self, MethodInfo, Routed, Rpc, Verb};
use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;

use super::{TestServer, ADMIN_TOKEN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    ConnectJson,
    ConnectProto,
    Grpc,
    GrpcWeb,
}

pub const ALL: [Protocol; 5] = [
    Protocol::Rest,
    Protocol::ConnectJson,
    Protocol::ConnectProto,
    Protocol::Grpc,
    Protocol::GrpcWeb,
];

/// A method's message types, as functions between protojson and protobuf bytes.
#[derive(Clone, Copy)]
pub struct Messages {
    pub info: MethodInfo,
    request_to_proto: fn(&Value) -> Vec<u8>,
    response_to_json: fn(&[u8]) -> Value,
}

fn request_to_proto<R: Rpc>(json: &Value) -> Vec<u8> {
    let message: R::Request = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("not a request message: {json}: {e}"));
    message.encode_to_vec()
}

fn response_to_json<R: Rpc>(bytes: &[u8]) -> Value {
    let message = R::Response::decode(bytes).expect("a response message");
    serde_json::to_value(&message).expect("protojson")
}

/// Every method of the table, by its path (`/<package>.<Service>/<Method>`: method names alone
/// repeat across services).
pub fn messages() -> HashMap<String, Messages> {
    struct Collect(HashMap<String, Messages>);
    impl rpc::Visitor for Collect {
        fn visit<R: Routed>(&mut self) {
            self.0.insert(
                R::INFO.path(),
                Messages {
                    info: R::INFO,
                    request_to_proto: request_to_proto::<R>,
                    response_to_json: response_to_json::<R>,
                },
            );
        }
    }
    let mut all = Collect(HashMap::new());
    rpc::for_each(&mut all);
    all.0
}

/// How a call ended: the answer as JSON, or the error's code (gRPC number) and stable id.
#[derive(Debug)]
pub enum Outcome {
    Ok(Value),
    Err { code: i64, id: String },
}

impl Outcome {
    pub fn ok(self, what: &str) -> Value {
        match self {
            Outcome::Ok(value) => value,
            Outcome::Err { code, id } => panic!("{what}: failed with code {code} ({id})"),
        }
    }
}

/// Calls `messages`' method with `request` (protojson) over `protocol`.
pub async fn call(
    server: &TestServer,
    protocol: Protocol,
    messages: &Messages,
    request: &Value,
) -> Outcome {
    let info = &messages.info;
    match protocol {
        Protocol::Rest => {
            let mut path = info.rest.to_owned();
            for name in info.path_params() {
                let value = request[name].as_str().expect("a path value in the request");
                path = path.replace(&format!("{{{name}}}"), value);
            }
            let method = reqwest::Method::from_bytes(info.verb.as_str().as_bytes()).unwrap();
            let body = (info.verb != Verb::Get).then(|| request.to_string());
            if info.verb == Verb::Get {
                // grpc-gateway takes a GET's other fields from the query string.
                let mut query = Vec::new();
                flatten("", request, &mut query);
                let params: Vec<String> = query
                    .into_iter()
                    .filter(|(name, _)| !info.path_params().any(|p| p == name))
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                if !params.is_empty() {
                    path = format!("{path}?{}", params.join("&"));
                }
            }
            let reply = server
                .send(method, &path, Some(ADMIN_TOKEN), body.as_deref(), None)
                .await;
            let id = reply_id(&reply);
            if reply.status.is_success() {
                assert_eq!(
                    reply.status.as_u16(),
                    info.rest_status,
                    "{} answers REST with its own success status",
                    info.method
                );
                return Outcome::Ok(reply.body);
            }
            json_outcome(reply.status, reply.body, id)
        }
        Protocol::ConnectJson => {
            let reply = server
                .connect(ADMIN_TOKEN, &info.path()[1..], request.clone())
                .await;
            json_outcome(reply.status, reply.body.clone(), reply_id(&reply))
        }
        Protocol::ConnectProto => {
            let response = server
                .client
                .post(format!("{}{}", server.base, info.path()))
                .header("content-type", "application/proto")
                .bearer_auth(ADMIN_TOKEN)
                .body((messages.request_to_proto)(request))
                .send()
                .await
                .expect("connect proto");
            let status = response.status();
            let bytes = response.bytes().await.expect("body");
            if status == StatusCode::OK {
                Outcome::Ok((messages.response_to_json)(&bytes))
            } else {
                // Connect errors are JSON whatever the request's codec.
                let body: Value = serde_json::from_slice(&bytes).expect("a JSON error");
                let id = body["details"][0]["debug"]["id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                Outcome::Err {
                    code: connect_code(body["code"].as_str().unwrap_or("")),
                    id,
                }
            }
        }
        Protocol::Grpc => {
            let mut grpc = tonic::client::Grpc::new(server.grpc_channel().await);
            grpc.ready().await.expect("ready");
            let result = grpc
                .unary(
                    super::authed(
                        bytes::Bytes::from((messages.request_to_proto)(request)),
                        ADMIN_TOKEN,
                    ),
                    info.path().parse().expect("a method path"),
                    RawCodec,
                )
                .await;
            match result {
                Ok(reply) => Outcome::Ok((messages.response_to_json)(&reply.into_inner())),
                Err(status) => Outcome::Err {
                    code: status.code() as i64,
                    id: error_id(status.details()),
                },
            }
        }
        Protocol::GrpcWeb => {
            let (messages_back, trailers) =
                grpc_web(server, &info.path(), &(messages.request_to_proto)(request)).await;
            let code: i64 = trailer(&trailers, "grpc-status")
                .and_then(|c| c.parse().ok())
                .expect("grpc-status");
            if code == 0 {
                Outcome::Ok((messages.response_to_json)(&messages_back[0]))
            } else {
                Outcome::Err {
                    code,
                    id: trailer(&trailers, "grpc-status-details-bin")
                        .map(|details| error_id(&base64_decode(&details)))
                        .unwrap_or_default(),
                }
            }
        }
    }
}

/// A JSON request as query parameters: nested fields joined by dots (`ctx.orgId`).
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                let name = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&name, field, out);
            }
        }
        Value::String(text) => out.push((prefix.to_owned(), text.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn reply_id(reply: &super::Reply) -> String {
    reply.error_id().to_owned()
}

fn json_outcome(status: StatusCode, body: Value, id: String) -> Outcome {
    if status == StatusCode::OK {
        return Outcome::Ok(body);
    }
    let code = body["code"]
        .as_i64()
        .unwrap_or_else(|| connect_code(body["code"].as_str().unwrap_or("")));
    Outcome::Err { code, id }
}

fn connect_code(name: &str) -> i64 {
    let names = [
        "ok",
        "canceled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    ];
    names
        .iter()
        .position(|n| *n == name)
        .map_or(-1, |n| n as i64)
}

/// The `zitadel.v1.ErrorDetail` id inside a `google.rpc.Status`.
pub fn error_id(status_bytes: &[u8]) -> String {
    use latchkey_api::proto::{google, zitadel};
    let status = google::rpc::Status::decode(status_bytes).expect("google.rpc.Status");
    zitadel::v1::ErrorDetail::decode(status.details[0].value.as_ref())
        .expect("ErrorDetail")
        .id
}

fn base64_decode(text: &str) -> Vec<u8> {
    base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        text.trim_end_matches('='),
    )
    .expect("base64")
}

/// One value of a trailer block (`name:value` lines).
pub fn trailer(trailers: &str, name: &str) -> Option<String> {
    trailers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// One gRPC-web frame: flag byte, big-endian length, payload.
pub fn grpc_web_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![flag];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Splits a gRPC-web response body into (messages, trailer text).
pub fn grpc_web_parse(body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut at, mut messages, mut trailers) = (0, Vec::new(), String::new());
    while at < body.len() {
        let flag = body[at];
        let len = u32::from_be_bytes(body[at + 1..at + 5].try_into().expect("4 bytes")) as usize;
        let payload = &body[at + 5..at + 5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            messages.push(payload.to_vec());
        }
        at += 5 + len;
    }
    (messages, trailers)
}

/// A gRPC-web call over HTTP/1.1: (messages, status as `name:value` lines, from the headers of a
/// trailers-only answer or the trailer frame).
pub async fn grpc_web(server: &TestServer, path: &str, message: &[u8]) -> (Vec<Vec<u8>>, String) {
    let response = server
        .client
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(grpc_web_frame(0, message))
        .send()
        .await
        .expect("grpc-web request");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/grpc-web"));
    // A failure is usually "trailers-only": the status travels in the response headers.
    let mut status = String::new();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        if let Some(value) = response.headers().get(name) {
            status.push_str(&format!("{name}:{}\r\n", value.to_str().unwrap_or("")));
        }
    }
    let (messages, trailers) = grpc_web_parse(&response.bytes().await.expect("body"));
    (messages, status + &trailers)
}
