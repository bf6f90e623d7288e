//! The binary protocols on the REST port: gRPC over h2c with a tonic client, gRPC-web and Connect
//! binary as raw HTTP/1.1 requests, checked down to the bytes against the wire file's layout;
//! health and reflection; and the 1,000-concurrent-unlocks race over gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::sync::Arc;

use latchkey_api::proto::zitadel::internal_permission::v2beta as permission;
use latchkey_api::proto::zitadel::object::v2 as object;
use latchkey_api::proto::zitadel::org::v2 as org;
use latchkey_api::proto::zitadel::user::v2 as user;
use latchkey_api::proto::{google, zitadel};
use permission::internal_permission_service_client::InternalPermissionServiceClient;
use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{authed, TestServer, ADMIN_TOKEN, HASH};
use tonic::Code;
use user::user_service_client::UserServiceClient;

fn new_human(username: &str) -> user::AddHumanUserRequest {
    user::AddHumanUserRequest {
        username: Some(username.into()),
        profile: Some(user::SetHumanProfile {
            given_name: "Grace".into(),
            family_name: "Hopper".into(),
            ..Default::default()
        }),
        email: Some(user::SetHumanEmail {
            email: format!("{username}@example.com"),
            verification: Some(user::set_human_email::Verification::IsVerified(true)),
        }),
        password_type: Some(user::add_human_user_request::PasswordType::HashedPassword(
            user::HashedPassword {
                hash: HASH.into(),
                change_required: false,
            },
        )),
        ..Default::default()
    }
}

/// The `zitadel.v1.ErrorDetail` id inside a status's `grpc-status-details-bin`.
fn error_id(status: &tonic::Status) -> String {
    let details = google::rpc::Status::decode(status.details()).expect("google.rpc.Status");
    assert_eq!(details.code, status.code() as i32);
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/zitadel.v1.ErrorDetail"
    );
    zitadel::v1::ErrorDetail::decode(details.details[0].value.as_ref())
        .expect("ErrorDetail")
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_client_over_h2c_runs_the_unlock_story() {
    let server = TestServer::start().await;
    // Compressed requests are accepted (clients such as grpc-go may be configured to send them).
    let mut users = UserServiceClient::new(server.grpc_channel().await)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);

    let added = users
        .add_human_user(authed(new_human("grace"), ADMIN_TOKEN))
        .await
        .expect("add")
        .into_inner();
    let created = added.details.expect("details").sequence;
    let locked = users
        .lock_user(authed(
            user::LockUserRequest {
                user_id: added.user_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("lock")
        .into_inner();
    assert_eq!(locked.details.expect("details").sequence, created + 1);
    let unlock = || {
        authed(
            user::UnlockUserRequest {
                user_id: added.user_id.clone(),
            },
            ADMIN_TOKEN,
        )
    };
    let unlocked = users
        .unlock_user(unlock())
        .await
        .expect("unlock")
        .into_inner();
    let details = unlocked.details.expect("details");
    assert_eq!(details.sequence, created + 2);
    assert_eq!(details.resource_owner, server.org);
    assert!(details.change_date.expect("changeDate").seconds > 1_700_000_000);

    let again = users.unlock_user(unlock()).await.expect_err("not locked");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(again.message(), "user is not locked");
    assert_eq!(error_id(&again), "USER-NOT-LOCKED");

    let got = users
        .get_user_by_id(authed(
            user::GetUserByIdRequest {
                user_id: added.user_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("get")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(got.state(), user::UserState::Active);
    assert_eq!(got.details.expect("details").sequence, created + 2);
    assert_eq!(got.username, "grace");
    let Some(user::user::Type::Human(human)) = got.r#type else {
        panic!("a human user");
    };
    assert_eq!(human.profile.expect("profile").given_name, "Grace");
    assert!(human.email.expect("email").is_verified);

    let missing = users
        .unlock_user(authed(
            user::UnlockUserRequest {
                user_id: "nobody".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(error_id(&missing), "USER-NOT-FOUND");

    for token in ["not-a-token", ""] {
        let request = if token.is_empty() {
            tonic::Request::new(user::UnlockUserRequest {
                user_id: added.user_id.clone(),
            })
        } else {
            authed(
                user::UnlockUserRequest {
                    user_id: added.user_id.clone(),
                },
                token,
            )
        };
        let refused = users.unlock_user(request).await.expect_err("no access");
        assert_eq!(refused.code(), Code::Unauthenticated, "token {token:?}");
    }

    let too_long = users
        .unlock_user(authed(
            user::UnlockUserRequest {
                user_id: "x".repeat(201),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("id too long");
    assert_eq!(too_long.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_is_served_over_grpc() {
    let server = TestServer::start().await;
    let channel = server.grpc_channel().await;
    let mut users = UserServiceClient::new(channel.clone());
    let mut orgs =
        org::organization_service_client::OrganizationServiceClient::new(channel.clone());
    let mut permissions = InternalPermissionServiceClient::new(channel);

    let new_org = orgs
        .add_organization(authed(
            org::AddOrganizationRequest {
                name: "Acme".into(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("add org")
        .into_inner();
    assert!(!new_org.organization_id.is_empty());

    let machine = users
        .create_user(authed(
            user::CreateUserRequest {
                organization_id: new_org.organization_id.clone(),
                username: Some("robot".into()),
                user_type: Some(user::create_user_request::UserType::Machine(
                    user::create_user_request::Machine {
                        name: "robot".into(),
                        description: Some("does things".into()),
                    },
                )),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("create machine")
        .into_inner();
    assert!(machine.creation_date.is_some());

    permissions
        .create_administrator(authed(
            permission::CreateAdministratorRequest {
                user_id: machine.id.clone(),
                resource: Some(permission::ResourceType {
                    resource: Some(permission::resource_type::Resource::OrganizationId(
                        new_org.organization_id.clone(),
                    )),
                }),
                roles: vec!["ORG_OWNER".into()],
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("create administrator");

    let pat = users
        .add_personal_access_token(authed(
            user::AddPersonalAccessTokenRequest {
                user_id: machine.id.clone(),
                expiration_date: None,
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("add pat")
        .into_inner();

    // The machine's own token works over gRPC, scoped to its organization.
    let mut as_owner = users.clone();
    let human = as_owner
        .add_human_user(authed(
            user::AddHumanUserRequest {
                organization: Some(object::Organization {
                    org: Some(object::organization::Org::OrgId(
                        new_org.organization_id.clone(),
                    )),
                }),
                ..new_human("alan")
            },
            &pat.token,
        ))
        .await
        .expect("org owner adds a user")
        .into_inner();

    let listed = users
        .list_users(authed(
            user::ListUsersRequest {
                query: Some(object::ListQuery {
                    offset: 0,
                    limit: 10,
                    asc: true,
                }),
                sorting_column: user::UserFieldName::CreationDate as i32,
                queries: vec![user::SearchQuery {
                    query: Some(user::search_query::Query::OrganizationIdQuery(
                        user::OrganizationIdQuery {
                            organization_id: new_org.organization_id.clone(),
                        },
                    )),
                }],
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.details.expect("details").total_result, 2);
    let ids: Vec<_> = listed.result.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(ids, [machine.id.as_str(), human.user_id.as_str()]);
    assert!(matches!(
        listed.result[0].r#type,
        Some(user::user::Type::Machine(_))
    ));

    for (name, result) in [
        (
            "deactivate",
            users
                .deactivate_user(authed(
                    user::DeactivateUserRequest {
                        user_id: human.user_id.clone(),
                    },
                    ADMIN_TOKEN,
                ))
                .await
                .map(|r| r.into_inner().details),
        ),
        (
            "reactivate",
            users
                .reactivate_user(authed(
                    user::ReactivateUserRequest {
                        user_id: human.user_id.clone(),
                    },
                    ADMIN_TOKEN,
                ))
                .await
                .map(|r| r.into_inner().details),
        ),
        (
            "delete",
            users
                .delete_user(authed(
                    user::DeleteUserRequest {
                        user_id: human.user_id.clone(),
                    },
                    ADMIN_TOKEN,
                ))
                .await
                .map(|r| r.into_inner().details),
        ),
    ] {
        assert!(result.expect(name).is_some(), "{name} returns details");
    }

    let removed = users
        .remove_personal_access_token(authed(
            user::RemovePersonalAccessTokenRequest {
                user_id: machine.id.clone(),
                token_id: pat.token_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("remove pat")
        .into_inner();
    assert!(removed.deletion_date.is_some());
    // Revoked at once, on this protocol too.
    let refused = as_owner
        .get_user_by_id(authed(
            user::GetUserByIdRequest {
                user_id: machine.id.clone(),
            },
            &pat.token,
        ))
        .await
        .expect_err("revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Unsupported input is refused, not dropped.
    let metadata = users
        .add_human_user(authed(
            user::AddHumanUserRequest {
                metadata: vec![user::SetMetadataEntry {
                    key: "k".into(),
                    value: b"v".to_vec(),
                }],
                ..new_human("meta")
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("metadata unsupported");
    assert_eq!(metadata.code(), Code::Unimplemented);
    assert_eq!(error_id(&metadata), "FEATURE-UNSUPPORTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_grpc_unlocks_give_exactly_one_success() {
    let server = TestServer::start().await;
    let id = server.create_locked_user("hot@example.com").await;
    let (_, before) = server.state_and_sequence(&id).await;
    // A few connections, many streams each: how gRPC clients really multiplex.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(server.grpc_channel().await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let mut users = UserServiceClient::new(channels[i % channels.len()].clone());
            let (id, barrier) = (id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                users
                    .unlock_user(authed(user::UnlockUserRequest { user_id: id }, ADMIN_TOKEN))
                    .await
            })
        })
        .collect();
    let (mut ok, mut precondition) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(response) => {
                ok += 1;
                let details = response.into_inner().details.expect("details");
                assert_eq!(details.sequence, before + 1);
            }
            Err(status) if status.code() == Code::FailedPrecondition => precondition += 1,
            Err(status) => panic!("unexpected {status:?}"),
        }
    }
    assert_eq!((ok, precondition), (1, 999));
    assert_eq!(
        server.state_and_sequence(&id).await,
        ("USER_STATE_ACTIVE".into(), before + 1)
    );
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

/// One gRPC-web frame: flag byte, big-endian length, payload.
fn grpc_web_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![flag];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Splits a gRPC-web response body into (messages, trailer text).
fn grpc_web_parse(body: &[u8]) -> (Vec<Vec<u8>>, String) {
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

async fn grpc_web(server: &TestServer, method: &str, message: &[u8]) -> (Vec<Vec<u8>>, String) {
    let response = server
        .client
        .post(format!(
            "{}/zitadel.user.v2.UserService/{method}",
            server.base
        ))
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
    for name in ["grpc-status", "grpc-message"] {
        if let Some(value) = response.headers().get(name) {
            status.push_str(&format!("{name}:{}\r\n", value.to_str().unwrap_or("")));
        }
    }
    let (messages, trailers) = grpc_web_parse(&response.bytes().await.expect("body"));
    (messages, status + &trailers)
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
async fn the_same_error_on_every_protocol() {
    let server = TestServer::start().await;
    let id = server.create_human("same@example.com").await;
    let rest = server
        .post(&format!("/v2/users/{id}/unlock"), json!({}))
        .await;
    let connect = server
        .connect(
            ADMIN_TOKEN,
            "zitadel.user.v2.UserService/UnlockUser",
            json!({ "userId": id }),
        )
        .await;
    let grpc = UserServiceClient::new(server.grpc_channel().await)
        .unlock_user(authed(
            user::UnlockUserRequest {
                user_id: id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("not locked");
    assert_eq!(rest.body["code"], 9);
    assert_eq!(connect.body["code"], "failed_precondition");
    assert_eq!(grpc.code() as i32, 9);
    assert_eq!(rest.body["message"], grpc.message());
    assert_eq!(connect.body["message"], grpc.message());
    assert_eq!(rest.error_id(), error_id(&grpc));
    assert_eq!(connect.error_id(), error_id(&grpc));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = TestServer::start().await;
    let channel = server.grpc_channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "zitadel.user.v2.UserService"] {
        let mut status = ServingStatus::Unknown;
        // The per-service statuses are set by a task when the router is built.
        for _ in 0..50 {
            if let Ok(reply) = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
            {
                status = reply.into_inner().status();
                if status == ServingStatus::Serving {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let mut stream = reflection
        .server_reflection_info(tokio_stream_once(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }))
        .await
        .expect("reflection")
        .into_inner();
    let reply = stream.message().await.expect("reply").expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("a service list, got {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "zitadel.user.v2.UserService",
        "zitadel.org.v2.OrganizationService",
        "zitadel.internal_permission.v2beta.InternalPermissionService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}

/// A request stream of one message.
fn tokio_stream_once<T: Send + 'static>(item: T) -> impl futures::Stream<Item = T> + Send {
    futures::stream::iter([item])
}
