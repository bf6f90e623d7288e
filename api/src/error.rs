//! Errors at the edge: an engine [`Error`] becomes a grpc-gateway body on REST paths or a Connect
//! error on Connect paths. This is the only place codes turn into HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;

use latchkey_engine::{Code, Error};
use prost::Message as _;

use crate::proto::google::rpc::Status as RpcStatus;
use crate::proto::zitadel::v1::ErrorDetail;

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

/// `zitadel.v1.ErrorDetail` in protobuf binary, for Connect and gRPC details.
fn error_detail_proto(id: &str, message: &str) -> Vec<u8> {
    ErrorDetail {
        id: id.to_owned(),
        message: message.to_owned(),
    }
    .encode_to_vec()
}

/// The gRPC status of an engine error: its code and message, and a `google.rpc.Status` with the
/// `zitadel.v1.ErrorDetail` in `grpc-status-details-bin`, as ZITADEL sends it.
pub fn grpc_status(error: &Error) -> tonic::Status {
    let code = tonic::Code::from_i32(error.code().number());
    let (id, message) = (error.id.id(), error.message());
    if code == tonic::Code::Internal || code == tonic::Code::Unavailable {
        tracing::warn!(id, message, "request failed");
    }
    let details = RpcStatus {
        code: error.code().number(),
        message: message.to_owned(),
        details: vec![pbjson_types::Any {
            type_url: "type.googleapis.com/zitadel.v1.ErrorDetail".into(),
            value: error_detail_proto(id, message).into(),
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
    fn error_detail_is_id_then_message() {
        let bytes = error_detail_proto("USER-NOT-LOCKED", "user is not locked");
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
}
