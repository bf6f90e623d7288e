//! The binary protocols down to the bytes: gRPC-web and Connect binary as raw HTTP/1.1 requests,
//! checked against the wire file's field numbers with a protobuf reader independent of the
//! generated code; and what happens to messages and frames that are not what they claim.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use latchkey_api::proto::{google, zitadel};
use prost::Message;
use reqwest::{Method, StatusCode};
use support::protocols::grpc_web_frame;
use support::{authed, TestServer, ADMIN_TOKEN};
use tonic::Code;

use latchkey_api::proto::zitadel::user::v2 as user;

/// A gRPC-web call of a UserService method.
async fn grpc_web(server: &TestServer, method: &str, message: &[u8]) -> (Vec<Vec<u8>>, String) {
    let path = format!("/zitadel.user.v2.UserService/{method}");
    support::protocols::grpc_web(server, &path, message).await
}

/// A minimal protobuf reader, independent of our generated code: (field number, value) pairs.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

fn fields(bytes: &[u8]) -> Vec<(u64, Field)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at);
        let value = match key & 7 {
            0 => Field::Varint(read_varint(bytes, &mut at)),
            2 => {
                let len = read_varint(bytes, &mut at) as usize;
                at += len;
                Field::Bytes(bytes[at - len..at].to_vec())
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((key >> 3, value));
    }
    out
}

fn field(message: &[(u64, Field)], number: u64) -> &Field {
    &message
        .iter()
        .find(|(n, _)| *n == number)
        .unwrap_or_else(|| panic!("field {number} missing in {message:?}"))
        .1
}

fn bytes_of(field: &Field) -> &[u8] {
    match field {
        Field::Bytes(b) => b,
        other => panic!("expected a length-delimited field, got {other:?}"),
    }
}

/// `zitadel.object.v2.Details`: 1 uint64 sequence, 2 Timestamp change_date, 3 string
/// resource_owner, 4 Timestamp creation_date.
fn check_details(bytes: &[u8], sequence: u64, owner: &str) {
    let details = fields(bytes);
    assert_eq!(field(&details, 1), &Field::Varint(sequence));
    let change_date = fields(bytes_of(field(&details, 2)));
    assert!(matches!(field(&change_date, 1), Field::Varint(s) if *s > 1_700_000_000));
    assert_eq!(bytes_of(field(&details, 3)), owner.as_bytes());
    let creation_date = fields(bytes_of(field(&details, 4)));
    assert!(matches!(field(&creation_date, 1), Field::Varint(s) if *s > 1_700_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_and_connect_binary_match_the_wire_layout_byte_for_byte() {
    let server = TestServer::start().await;
    let id = server.create_locked_user("web@example.com").await;
    let (_, before) = server.state_and_sequence(&id).await;
    // UnlockUserRequest by hand: field 1 (user_id), length-delimited.
    let mut request = vec![0x0a, id.len() as u8];
    request.extend_from_slice(id.as_bytes());

    let (messages, trailers) = grpc_web(&server, "UnlockUser", &request).await;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    // UnlockUserResponse: field 1 = Details.
    let response = fields(&messages[0]);
    assert_eq!(response.len(), 1);
    check_details(bytes_of(field(&response, 1)), before + 1, &server.org);

    let (messages, trailers) = grpc_web(&server, "UnlockUser", &request).await;
    assert!(messages.is_empty());
    assert!(trailers.contains("grpc-status:9"), "{trailers}");
    assert!(
        trailers.contains("grpc-message:user%20is%20not%20locked"),
        "{trailers}"
    );

    // Connect binary: the bare message, no framing.
    let get = server
        .client
        .post(format!(
            "{}/zitadel.user.v2.UserService/GetUserByID",
            server.base
        ))
        .header("content-type", "application/proto")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(request.clone())
        .send()
        .await
        .expect("connect proto");
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers()["content-type"], "application/proto");
    let body = get.bytes().await.expect("body");
    // GetUserByIDResponse: 1 Details, 2 User.
    let response = fields(&body);
    check_details(bytes_of(field(&response, 1)), before + 1, &server.org);
    // User: 1 user_id, 8 details, 2 state, 3 username, 4 login_names, 5 preferred_login_name,
    // 6 human (HumanUser: 6 profile, 7 email).
    let user = fields(bytes_of(field(&response, 2)));
    assert_eq!(bytes_of(field(&user, 1)), id.as_bytes());
    check_details(bytes_of(field(&user, 8)), before + 1, &server.org);
    assert_eq!(field(&user, 2), &Field::Varint(1), "USER_STATE_ACTIVE = 1");
    assert_eq!(bytes_of(field(&user, 3)), b"web@example.com");
    assert_eq!(bytes_of(field(&user, 4)), b"web@example.com");
    let human = fields(bytes_of(field(&user, 6)));
    let profile = fields(bytes_of(field(&human, 6)));
    assert_eq!(bytes_of(field(&profile, 1)), b"Test");
    assert_eq!(bytes_of(field(&profile, 2)), b"User");
    let email = fields(bytes_of(field(&human, 7)));
    assert_eq!(bytes_of(field(&email, 1)), b"web@example.com");
    assert_eq!(field(&email, 2), &Field::Varint(1), "is_verified");

    // Errors on Connect binary are Connect JSON, with the same code and message as gRPC.
    let again = server
        .send(
            Method::POST,
            "/zitadel.user.v2.UserService/UnlockUser",
            Some(ADMIN_TOKEN),
            Some(std::str::from_utf8(&request).expect("ascii id")),
            Some("application/proto"),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.body["code"], "failed_precondition");
    assert_eq!(again.body["message"], "user is not locked");
    assert_eq!(again.error_id(), "USER-NOT-LOCKED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_and_unknown_methods_get_grpc_errors() {
    let server = TestServer::start().await;
    // Not a protobuf message: field 1 claims 100 bytes that are not there.
    let (messages, trailers) = grpc_web(&server, "UnlockUser", &[0x0a, 100, 1]).await;
    assert!(messages.is_empty());
    assert!(trailers.contains("grpc-status:3"), "{trailers}");
    // Not even a gRPC frame: a compression flag gRPC does not define. The client's error, not
    // the server's (tonic alone would answer Internal).
    let mut garbage = grpc_web_frame(0, b"{}");
    garbage[0] = b'{';
    let response = server
        .client
        .post(format!(
            "{}/zitadel.user.v2.UserService/UnlockUser",
            server.base
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(garbage)
        .send()
        .await
        .expect("grpc-web request");
    assert_eq!(response.headers()["grpc-status"], "3");
    let details = response.headers()["grpc-status-details-bin"]
        .to_str()
        .unwrap();
    let details = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        details.trim_end_matches('='),
    )
    .expect("base64");
    let status = google::rpc::Status::decode(details.as_slice()).expect("google.rpc.Status");
    let detail = zitadel::v1::ErrorDetail::decode(status.details[0].value.as_ref()).unwrap();
    assert_eq!(detail.id, "BODY-MALFORMED");
    let (_, trailers) = grpc_web(&server, "NoSuchMethod", &[]).await;
    assert!(trailers.contains("grpc-status:12"), "{trailers}");

    let mut channel = tonic::client::Grpc::new(server.grpc_channel().await);
    channel.ready().await.expect("ready");
    let unknown = channel
        .unary::<user::UnlockUserRequest, user::UnlockUserResponse, _>(
            authed(user::UnlockUserRequest::default(), ADMIN_TOKEN),
            "/zitadel.user.v2.UserService/Nope".parse().expect("path"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("unknown method");
    assert_eq!(unknown.code(), Code::Unimplemented);
}
