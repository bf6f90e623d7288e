//! Every method of the RPC table over every protocol: REST, Connect JSON, Connect binary, gRPC
//! and gRPC-web. The methods come from the table itself (`latchkey_api::rpc::METHODS`), so a new
//! RPC without a sample here fails this test — it cannot be served on one protocol and forgotten
//! on another, or routed nowhere. Each call must succeed and answer the fields its sample names,
//! whatever the protocol; and the protojson conventions the hand-written layer had survive.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::protocols::{self, Outcome, Protocol};
use support::{login, TestServer};

use std::sync::atomic::{AtomicU64, Ordering};

/// A valid request for `method` against the server's current state (made here as needed), and
/// the answer fields that show it did what it says.
async fn sample(server: &TestServer, method: &str, tag: &str) -> (Value, &'static [&'static str]) {
    let email = format!("{method}-{tag}@example.com").to_lowercase();
    match method {
        "UnlockUser" => (
            json!({"userId": server.create_locked_user(&email).await}),
            &["details"],
        ),
        "LockUser" | "DeactivateUser" | "DeleteUser" | "GetUserByID" => (
            json!({"userId": server.create_human(&email).await}),
            if method == "GetUserByID" {
                &["details", "user"]
            } else {
                &["details"]
            },
        ),
        "ReactivateUser" => {
            let id = server.create_human(&email).await;
            let reply = server
                .post(&format!("/v2/users/{id}/deactivate"), json!({}))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            (json!({ "userId": id }), &["details"])
        }
        "ListUsers" => {
            let id = server.create_human(&email).await;
            (
                json!({"query": {"limit": 10}, "queries": [{"inUserIdsQuery": {"userIds": [id]}}]}),
                &["details", "result"],
            )
        }
        "AddHumanUser" => (
            json!({
                "profile": {"givenName": "Ada", "familyName": "Lovelace"},
                "email": {"email": email, "isVerified": true},
                "hashedPassword": {"hash": support::HASH},
            }),
            &["userId", "details"],
        ),
        "CreateUser" => (
            json!({"organizationId": server.org, "username": email, "machine": {"name": "robot"}}),
            &["id", "creationDate"],
        ),
        "AddPersonalAccessToken" | "RemovePersonalAccessToken" => {
            let (id, _) = server.machine_with_role(&server.org, &email, None).await;
            if method == "AddPersonalAccessToken" {
                (json!({"userId": id}), &["creationDate", "tokenId", "token"])
            } else {
                let (token_id, _) = server.add_token(&id).await;
                (
                    json!({"userId": id, "tokenId": token_id}),
                    &["deletionDate", "details"],
                )
            }
        }
        "SetPassword" => (
            json!({"userId": server.create_login_user(&email).await,
                   "newPassword": {"password": "Next-Horse-9"}, "currentPassword": login::PASSWORD}),
            &["details"],
        ),
        "AddOrganization" => (json!({"name": email}), &["details", "organizationId"]),
        "CreateAdministrator" => {
            let (id, _) = server.machine_with_role(&server.org, &email, None).await;
            (
                json!({"userId": id, "resource": {"organizationId": server.org}, "roles": ["ORG_USER_VIEWER"]}),
                &["creationDate"],
            )
        }
        "CreateSession" => {
            let id = server.create_login_user(&email).await;
            (
                json!({"checks": {"user": {"userId": id}, "password": {"password": login::PASSWORD}},
                       "metadata": {"k": "dg=="}, "lifetime": "3600s"}),
                &["details", "sessionId", "sessionToken"],
            )
        }
        "SetSession" | "GetSession" | "DeleteSession" => {
            let id = server.create_login_user(&email).await;
            let (session, token) = server.session_of(&id).await;
            match method {
                "SetSession" => (
                    json!({"sessionId": session, "metadata": {"step": "Mg=="}}),
                    &["details", "sessionToken"],
                ),
                "GetSession" => (
                    json!({"sessionId": session, "sessionToken": token}),
                    &["session"],
                ),
                _ => (
                    json!({"sessionId": session, "sessionToken": token}),
                    &["details"],
                ),
            }
        }
        "ListSessions" => {
            let id = server.create_login_user(&email).await;
            let (session, _) = server.session_of(&id).await;
            (
                json!({"queries": [{"idsQuery": {"ids": [session]}}]}),
                &["details", "sessions"],
            )
        }
        "GetLockoutSettings" => (json!({"ctx": {"instance": true}}), &["settings"]),
        "GetLockoutPolicy" | "GetDefaultLockoutPolicy" => (json!({}), &["policy"]),
        // Each write must change something (an unchanged policy is refused); the custom policy
        // of the caller's organization is added, changed and reset in the table's order.
        "UpdateLockoutPolicy" | "AddCustomLockoutPolicy" | "UpdateCustomLockoutPolicy" => {
            let n = ATTEMPTS.fetch_add(1, Ordering::Relaxed);
            (
                json!({"maxPasswordAttempts": n, "autoUnlockAfter": "60s"}),
                &["details"],
            )
        }
        "ResetLockoutPolicyToDefault" => (json!({}), &["details"]),
        "ListUserEvents" => (
            json!({"userId": server.create_locked_user(&email).await, "query": {"limit": 1}}),
            &["details", "events"],
        ),
        "StartBulkUnlock" => {
            let org = server.create_org(&email).await;
            (
                json!({"filter": {"organizationId": org, "lockReason": "LOCK_REASON_FILTER_ADMIN"}}),
                &["job"],
            )
        }
        "GetBulkUnlock" => {
            let started = server
                .post(
                    "/latchkey/v1/bulk_unlocks",
                    json!({"idempotencyKey": email}),
                )
                .await;
            let id = started.body["job"]["jobId"]
                .as_str()
                .expect("jobId")
                .to_owned();
            (json!({ "jobId": id }), &["job"])
        }
        other => panic!("the RPC table has {other}, which has no sample here: add one"),
    }
}

/// Distinct lockout limits for the policy writes (high, so no sample's login is locked out).
static ATTEMPTS: AtomicU64 = AtomicU64::new(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_succeeds_over_every_protocol() {
    let server = TestServer::start().await;
    let messages = protocols::messages();
    assert_eq!(messages.len(), latchkey_api::rpc::METHODS.len());
    for protocol in protocols::ALL {
        for info in latchkey_api::rpc::METHODS {
            let what = format!("{} over {protocol:?}", info.method);
            let (request, fields) = sample(&server, info.method, &format!("{protocol:?}")).await;
            let answer = protocols::call(&server, protocol, &messages[&info.path()], &request)
                .await
                .ok(&what);
            for field in fields {
                assert!(!answer[field].is_null(), "{what}: no {field} in {answer}");
            }
        }
    }
}

/// The same refusal, with the same code and id, on every protocol, for every method: an unknown
/// user (or organization) where one is named, a missing required field elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_alike_over_every_protocol() {
    let server = TestServer::start().await;
    let messages = protocols::messages();
    for info in latchkey_api::rpc::METHODS {
        let (request, expected) = match info.method {
            "ListUsers" => (json!({"queries": [{}]}), (3, "ARGUMENT-INVALID")),
            "AddHumanUser" => (
                json!({"email": {"email": "x@example.com"}}),
                (3, "ARGUMENT-INVALID"),
            ),
            "CreateUser" => (
                json!({"organizationId": "nowhere"}),
                (3, "ARGUMENT-INVALID"),
            ),
            "AddOrganization" => (json!({"name": ""}), (3, "ARGUMENT-INVALID")),
            "RemovePersonalAccessToken" => (
                json!({"userId": "nobody", "tokenId": "t"}),
                (5, "USER-NOT-FOUND"),
            ),
            "CreateAdministrator" => (
                json!({"userId": "nobody", "resource": {"instance": true}, "roles": ["IAM_OWNER"]}),
                (5, "USER-NOT-FOUND"),
            ),
            "CreateSession" => (
                json!({"checks": {"user": {"userId": "nobody"}}}),
                (5, "QUERY-Dfbg2"),
            ),
            "SetSession" | "GetSession" => (json!({"sessionId": "nobody"}), (5, "QUERY-SFeaa")),
            "DeleteSession" => (
                json!({"sessionId": "nobody", "sessionToken": "forged"}),
                (7, "COMMAND-sGr42"),
            ),
            "ListSessions" => (json!({"queries": [{}]}), (3, "ARGUMENT-INVALID")),
            "GetLockoutSettings" => (json!({"ctx": {"orgId": "nowhere"}}), (5, "ORG-NOT-FOUND")),
            "UpdateLockoutPolicy" | "AddCustomLockoutPolicy" => {
                (json!({"autoUnlockAfter": "-5s"}), (3, "ARGUMENT-INVALID"))
            }
            "UpdateCustomLockoutPolicy" => (json!({}), (5, "ORG-ADfs1")),
            "ResetLockoutPolicyToDefault" => (json!({}), (5, "ORG-D4zuz")),
            "StartBulkUnlock" => (
                json!({"filter": {"organizationId": "nowhere"}}),
                (5, "ORG-NOT-FOUND"),
            ),
            "GetBulkUnlock" => (json!({"jobId": "nope"}), (5, "BULK-JOB-NOT-FOUND")),
            "SetPassword" => (
                json!({"userId": "nobody", "newPassword": {"password": "x"}}),
                (5, "USER-NOT-FOUND"),
            ),
            // Nothing to refuse: no input, and the instance administrator may read them (a
            // caller without policy.read is refused in tests/lockout.rs).
            "GetLockoutPolicy" | "GetDefaultLockoutPolicy" => continue,
            _ => (json!({"userId": "nobody"}), (5, "USER-NOT-FOUND")),
        };
        for protocol in protocols::ALL {
            match protocols::call(&server, protocol, &messages[&info.path()], &request).await {
                Outcome::Err { code, id } => assert_eq!(
                    (code, id.as_str()),
                    expected,
                    "{} over {protocol:?}",
                    info.method
                ),
                Outcome::Ok(answer) => {
                    panic!("{} over {protocol:?} succeeded: {answer}", info.method)
                }
            }
        }
    }
}

/// What protojson allows beyond the canonical form is accepted on every JSON protocol: snake_case
/// names, 64-bit integers as numbers or strings, enums by name or number; unknown fields are
/// ignored; and answers write 64-bit integers as strings and enums by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protojson_conventions_hold_on_input_and_output() {
    let server = TestServer::start().await;
    let locked = server.create_locked_user("conventions@example.com").await;
    let messages = protocols::messages();
    let list = &messages["/zitadel.user.v2.UserService/ListUsers"];
    for protocol in [Protocol::Rest, Protocol::ConnectJson] {
        for request in [
            json!({"query": {"offset": "0", "limit": 5, "asc": true}, "sortingColumn": "USER_FIELD_NAME_CREATION_DATE",
                   "queries": [{"stateQuery": {"state": "USER_STATE_LOCKED"}}]}),
            json!({"query": {"offset": 0, "limit": 5, "asc": true}, "sorting_column": 9,
                   "queries": [{"state_query": {"state": 4}}], "notAField": {"x": 1}}),
        ] {
            let answer = protocols::call(&server, protocol, list, &request)
                .await
                .ok("list");
            assert_eq!(answer["details"]["totalResult"], "1", "{answer}");
            assert_eq!(answer["sortingColumn"], "USER_FIELD_NAME_CREATION_DATE");
            assert_eq!(answer["result"][0]["userId"], locked.as_str());
            assert_eq!(answer["result"][0]["state"], "USER_STATE_LOCKED");
            assert!(answer["result"][0]["details"]["sequence"].is_string());
        }
    }
    let add = &messages["/zitadel.user.v2.UserService/AddHumanUser"];
    let created = protocols::call(
        &server,
        Protocol::ConnectJson,
        add,
        &json!({"user_id": "snake-1", "profile": {"given_name": "A", "family_name": "B", "gender": 2},
                "email": {"email": "snake@example.com", "is_verified": true}}),
    )
    .await
    .ok("snake_case");
    assert_eq!(created["userId"], "snake-1");
    let user = server.get("/v2/users/snake-1").await;
    assert_eq!(
        user.body["user"]["human"]["profile"]["gender"],
        "GENDER_MALE"
    );
    assert_eq!(user.body["user"]["human"]["email"]["isVerified"], true);
}
