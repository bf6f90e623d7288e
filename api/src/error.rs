//! Errors at the edge: an engine [`Error`] becomes a grpc-gateway body on REST paths or a Connect
//! error on Connect paths. This is the only place codes turn into HTTP statuses.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;

use latchkey_engine::{Code, Error};
use prost::Message as _;

use crate::proto::google::rpc::Status as RpcStatus;
use crate::proto::zitadel::v1::{CredentialsCheckError, ErrorDetail};

/// Which error shape a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Connect,
}

/// HTTP status for a code (grpc-gateway and Connect agree on the codes we use).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// The Connect name of a code.
pub fn connect_code(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The one detail an error carries: `zitadel.v1.CredentialsCheckError` for a refused password
/// check (with the user's failed attempts), `zitadel.v1.ErrorDetail` for everything else.
struct Detail<'a> {
    id: &'a str,
    message: &'a str,
    failed_attempts: Option<u32>,
}

impl<'a> Detail<'a> {
    fn of(error: &'a Error) -> Self {
        Detail {
            id: error.id.id(),
            message: error.message(),
            failed_attempts: error.failed_attempts,
        }
    }

    /// The message type's full name.
    fn type_name(&self) -> &'static str {
        match self.failed_attempts {
            Some(_) => "zitadel.v1.CredentialsCheckError",
            None => "zitadel.v1.ErrorDetail",
        }
    }

    /// The detail in protobuf binary, for Connect and gRPC details.
    fn encode(&self) -> Vec<u8> {
        let (id, message) = (self.id.to_owned(), self.message.to_owned());
        match self.failed_attempts {
            Some(attempts) => CredentialsCheckError {
                id,
                message,
                failed_attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
            }
            .encode_to_vec(),
            None => ErrorDetail { id, message }.encode_to_vec(),
        }
    }

    /// The detail's fields in protojson (REST's body, Connect's `debug`).
    fn fields(&self, out: &mut serde_json::Map<String, serde_json::Value>) {
        out.insert("id".into(), self.id.into());
        out.insert("message".into(), self.message.into());
        if let Some(attempts) = self.failed_attempts {
            out.insert("failedAttempts".into(), attempts.into());
        }
    }
}

/// A failure of the server's own (Internal, Unavailable) is logged, alike on every protocol. A call
/// timeout is not: a wave of them is what an attacker's waiting guesses look like, and one line
/// each would cost more than the requests; the metrics count them.
fn log_failure(error: &Error) {
    if matches!(error.code(), Code::Internal | Code::Unavailable) {
        let message = error.wire_message();
        tracing::warn!(id = error.id.id(), %message, "request failed");
    }
}

/// The gRPC status of an engine error: its code and message, and a `google.rpc.Status` with the
/// detail in `grpc-status-details-bin`, as ZITADEL sends it.
pub fn grpc_status(error: &Error) -> tonic::Status {
    let code = tonic::Code::from_i32(error.code().number());
    let message = error.wire_message();
    log_failure(error);
    let detail = Detail::of(error);
    let details = RpcStatus {
        code: error.code().number(),
        message: message.to_string(),
        details: vec![pbjson_types::Any {
            type_url: format!("type.googleapis.com/{}", detail.type_name()),
            value: detail.encode().into(),
        }],
    };
    tonic::Status::with_details(code, message, details.encode_to_vec().into())
}

/// `google.rpc.Status` (REST) or a Connect error: code, message, details — in that order.
#[derive(serde::Serialize)]
struct StatusBody<'a, C: serde::Serialize> {
    code: C,
    message: &'a str,
    details: [serde_json::Value; 1],
}

/// An engine error bound to the protocol that will carry it.
pub struct ApiError {
    pub error: Error,
    pub protocol: Protocol,
}

impl ApiError {
    pub fn new(protocol: Protocol, error: impl Into<Error>) -> Self {
        ApiError {
            error: error.into(),
            protocol,
        }
    }
}

/// The REST error body — `{"code":…,"message":…,"details":[{"@type":…,…}]}` — written straight
/// into one buffer: the same bytes as serializing a `StatusBody` with a map of the detail's
/// fields (keys in order, as serde_json's map keeps them; checked by a test), without building
/// the map, the `Value`s and the formatted message. A refused login is answered with it, and it
/// was ≈ 14 % of that request's instructions.
fn rest_body(error: &Error, detail: &Detail) -> String {
    let mut out = String::with_capacity(160 + 2 * detail.message.len());
    out.push_str("{\"code\":");
    push_number(&mut out, i64::from(error.code().number()));
    out.push_str(",\"message\":\"");
    push_escaped(&mut out, error.message());
    if error.id.is_zitadel() {
        out.push_str(" (");
        push_escaped(&mut out, error.id.id());
        out.push(')');
    }
    out.push_str("\",\"details\":[{\"@type\":\"type.googleapis.com/");
    out.push_str(detail.type_name());
    out.push('"');
    if let Some(attempts) = detail.failed_attempts {
        out.push_str(",\"failedAttempts\":");
        push_number(&mut out, i64::from(attempts));
    }
    out.push_str(",\"id\":\"");
    push_escaped(&mut out, detail.id);
    out.push_str("\",\"message\":\"");
    push_escaped(&mut out, detail.message);
    out.push_str("\"}]}");
    out
}

fn push_number(out: &mut String, n: i64) {
    use std::fmt::Write as _;
    let _ = write!(out, "{n}");
}

/// A JSON string's contents, escaped as serde_json escapes them.
fn push_escaped(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    // Nearly every message has nothing to escape: checked sixteen bytes at a time, where the
    // search below decodes it a character at a time (≈ 875 instructions a refusal).
    if !crate::wire::needs_escaping(text.as_bytes()) {
        out.push_str(text);
        return;
    }
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        out.push_str(&rest[..at]);
        let c = rest[at..].chars().next().unwrap_or(' ');
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            other => {
                let _ = write!(out, "\\u{:04x}", other as u32);
            }
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.push_str(rest);
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error.code();
        let status = if self.error.id == latchkey_engine::ErrorId::BodyTooLarge {
            StatusCode::PAYLOAD_TOO_LARGE
        } else if self.error.id == latchkey_engine::ErrorId::MethodNotAllowed {
            StatusCode::METHOD_NOT_ALLOWED
        } else if self.error.id == latchkey_engine::ErrorId::UnsupportedMediaType {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            http_status(code)
        };
        let detail = Detail::of(&self.error);
        log_failure(&self.error);
        let body = match self.protocol {
            // Refusals are what an attacker's guesses are answered with: written by hand.
            Protocol::Rest => Ok(rest_body(&self.error, &detail)),
            Protocol::Connect => {
                let message = self.error.wire_message();
                let mut debug = serde_json::Map::new();
                detail.fields(&mut debug);
                serde_json::to_string(&StatusBody {
                    code: connect_code(code),
                    message: &message,
                    details: [json!({
                        "type": detail.type_name(),
                        "value": STANDARD.encode(detail.encode()).trim_end_matches('='),
                        "debug": debug,
                    })],
                })
            }
        }
        .unwrap_or_default();
        // Built directly, as `wire::json_response` does: through `IntoResponse` the body gets
        // `text/plain` first and the header below then replaces it.
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written REST body is byte for byte what serde_json makes of the same fields.
    #[test]
    fn rest_bodies_are_what_serde_would_write() {
        let serde_body = |error: &Error| {
            let detail = Detail::of(error);
            let mut fields = serde_json::Map::new();
            fields.insert(
                "@type".into(),
                format!("type.googleapis.com/{}", detail.type_name()).into(),
            );
            detail.fields(&mut fields);
            serde_json::to_string(&StatusBody {
                code: error.code().number(),
                message: &error.wire_message(),
                details: [fields.into()],
            })
            .unwrap()
        };
        let mut errors: Vec<Error> = latchkey_engine::ErrorId::ALL
            .iter()
            .map(|id| Error::new(*id))
            .collect();
        errors.push(Error::credentials(
            latchkey_engine::ErrorId::PasswordInvalid,
            3,
        ));
        errors.push(Error::credentials(latchkey_engine::ErrorId::UserLocked, 5));
        for detail in ["a \"quoted\" \\ value", "tab\tnew\nline\u{1}é", ""] {
            errors.push(Error::with(
                latchkey_engine::ErrorId::InvalidArgument,
                detail,
            ));
        }
        for error in &errors {
            let ours = rest_body(error, &Detail::of(error));
            assert_eq!(ours, serde_body(error), "{:?}", error.id);
            serde_json::from_str::<serde_json::Value>(&ours).unwrap();
        }
    }

    #[test]
    fn error_detail_is_id_then_message() {
        let error = Error::new(latchkey_engine::ErrorId::UserNotLocked);
        let bytes = Detail::of(&error).encode();
        assert_eq!(bytes[0], 0x0a, "field 1, length-delimited");
        assert_eq!(bytes[1] as usize, "USER-NOT-LOCKED".len());
        assert_eq!(bytes[2 + 15], 0x12, "field 2, length-delimited");
    }

    #[test]
    fn grpc_status_carries_code_message_and_detail() {
        let status = grpc_status(&Error::new(latchkey_engine::ErrorId::UserNotLocked));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "user is not locked");
        let details = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(details.code, 9);
        let detail = ErrorDetail::decode(details.details[0].value.as_ref()).unwrap();
        assert_eq!(detail.id, "USER-NOT-LOCKED");
    }

    #[test]
    fn every_code_has_a_status() {
        for id in latchkey_engine::ErrorId::ALL {
            let status = http_status(id.code());
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{id:?}"
            );
        }
    }

    /// The test vectors of ZITADEL's `CredentialsCheckError` (shared/spec facts file).
    #[test]
    fn a_refused_password_check_carries_a_credentials_check_error() {
        let error = Error::credentials(latchkey_engine::ErrorId::PasswordInvalid, 3);
        let detail = Detail::of(&error);
        assert_eq!(detail.type_name(), "zitadel.v1.CredentialsCheckError");
        assert_eq!(
            STANDARD.encode(detail.encode()).trim_end_matches('='),
            "Cg1DT01NQU5ELTNNMGZzEhNQYXNzd29yZCBpcyBpbnZhbGlkGAM"
        );
        let status = grpc_status(&error);
        assert_eq!(status.message(), "Password is invalid (COMMAND-3M0fs)");
        let details = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(
            details.details[0].type_url,
            "type.googleapis.com/zitadel.v1.CredentialsCheckError"
        );
        let locked = Error::credentials(latchkey_engine::ErrorId::UserLocked, 5);
        assert_eq!(
            STANDARD
                .encode(Detail::of(&locked).encode())
                .trim_end_matches('='),
            "Cg1DT01NQU5ELUpMSzM1Eg5Vc2VyIGlzIGxvY2tlZBgF"
        );
    }
}
