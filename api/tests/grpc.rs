//! gRPC over h2c on the REST port, as a generated tonic client speaks it: the unlock story, every
//! method with typed messages and a scoped token, the 1,000-concurrent-unlocks race, the same
//! error as REST and Connect, and health and reflection (byte-level checks of the binary
//! protocols: `binary_wire.rs`).

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
    let services = std::iter::once("").chain(latchkey_api::rpc::services());
    for service in services {
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
    let expected = latchkey_api::rpc::services()
        .into_iter()
        .chain(["grpc.health.v1.Health"]);
    for expected in expected {
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
