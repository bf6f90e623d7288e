//! Errors at the edge: an engine [`Error`] becomes a grpc-gateway body on REST paths or a Connect
//! error on Connect paths. This is the only place codes turn into HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;

use latchkey_engine::{Code, Error};

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

/// `zitadel.v1.ErrorDetail{id = 1, message = 2}` in protobuf binary, for Connect details.
fn error_detail_proto(id: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.len() + message.len() + 8);
    for (tag, text) in [(0x0a_u8, id), (0x12, message)] {
        out.push(tag);
        let mut len = text.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(text.as_bytes());
    }
    out
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error.code();
        let status = if self.error.id == latchkey_engine::ErrorId::BodyTooLarge {
            StatusCode::PAYLOAD_TOO_LARGE
        } else if self.error.id == latchkey_engine::ErrorId::MethodNotAllowed {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            http_status(code)
        };
        let (id, message) = (self.error.id.id(), self.error.message());
        if status.is_server_error() {
            tracing::warn!(id, message, "request failed");
        }
        let body = match self.protocol {
            Protocol::Rest => serde_json::to_string(&StatusBody {
                code: code.number(),
                message,
                details: [json!({
                    "@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
                    "id": id,
                    "message": message,
                })],
            }),
            Protocol::Connect => serde_json::to_string(&StatusBody {
                code: connect_code(code),
                message,
                details: [json!({
                    "type": "zitadel.v1.ErrorDetail",
                    "value": STANDARD.encode(error_detail_proto(id, message)).trim_end_matches('='),
                    "debug": {"id": id, "message": message},
                })],
            }),
        }
        .unwrap_or_default();
        let mut response = (status, body).into_response();
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

    #[test]
    fn error_detail_is_valid_protobuf() {
        let bytes = error_detail_proto("USER-NOT-LOCKED", "user is not locked");
        assert_eq!(bytes[0], 0x0a);
        assert_eq!(bytes[1] as usize, "USER-NOT-LOCKED".len());
        assert_eq!(bytes[2 + 15], 0x12);
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
}
