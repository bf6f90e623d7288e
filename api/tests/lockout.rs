//! The login loop over the wire, as ZITADEL's login app drives it: CreateSession with a user and
//! a password → wrong passwords counted, each answer carrying `CredentialsCheckError` with the
//! count → locked at the policy's limit, by the crossing call → every later check refused without
//! a hash → an administrator unlocks (or the policy's time does) → the user logs in, and the
//! session is read, changed and ended with its token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::time::Duration;

use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use latchkey_api::proto::google::rpc::Status as RpcStatus;
use latchkey_api::proto::zitadel::session::v2 as session;
use latchkey_api::proto::zitadel::v1::CredentialsCheckError;
use support::login::PASSWORD;
use support::{authed, Reply, TestServer, ADMIN_TOKEN};

/// The REST body's `CredentialsCheckError` detail: (id, failed attempts).
fn credentials_error(reply: &Reply) -> (String, u64) {
    let detail = &reply.body["details"][0];
    assert_eq!(
        detail["@type"], "type.googleapis.com/zitadel.v1.CredentialsCheckError",
        "{}",
        reply.body
    );
    (
        detail["id"].as_str().unwrap().to_owned(),
        detail["failedAttempts"].as_u64().unwrap_or(0),
    )
}

fn verifications(server: &TestServer) -> u64 {
    server.engine.stats().password_verifications
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_loop_over_rest() {
    let server = TestServer::start().await;
    server.set_lockout(json!({"maxPasswordAttempts": 3})).await;
    let user = server.create_login_user("ada@example.com").await;

    // Two wrong passwords: InvalidArgument with the count so far; no session is created.
    for attempt in 1..=2 {
        let reply = server.login(&user, "wrong").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert_eq!(reply.body["code"], 3);
        assert_eq!(reply.body["message"], "Password is invalid (COMMAND-3M0fs)");
        assert_eq!(
            credentials_error(&reply),
            ("COMMAND-3M0fs".to_owned(), attempt)
        );
    }
    // The third crosses the limit: still InvalidArgument, with failed_attempts = max, and the
    // user is locked by the same write.
    let reply = server.login(&user, "wrong").await;
    assert_eq!(reply.body["code"], 3, "{}", reply.body);
    assert_eq!(credentials_error(&reply), ("COMMAND-3M0fs".to_owned(), 3));
    assert_eq!(
        server.state_and_sequence(&user).await.0,
        "USER_STATE_LOCKED"
    );
    let locked = server.event_log(&user).await;
    assert_eq!(
        locked
            .iter()
            .filter(|e| e.event_type == "user.locked")
            .count(),
        1
    );

    // Reads show why, since when and with how many failures (Latchkey's extension fields).
    let read = server.get(&format!("/v2/users/{user}")).await;
    let lockout = &read.body["user"]["lockout"];
    assert_eq!(lockout["failedPasswordAttempts"], 3, "{}", read.body);
    assert_eq!(lockout["lockReason"], "LOCK_REASON_FAILED_PASSWORDS");
    assert!(lockout["lockedAt"].is_string() && lockout["lockedUntil"].is_null());
    let listed = server
        .post(
            "/v2/users",
            json!({"queries": [{"inUserIdsQuery": {"userIds": [user]}}]}),
        )
        .await;
    assert_eq!(
        listed.body["result"][0]["lockout"], *lockout,
        "{}",
        listed.body
    );

    // The history says why: newest first, with who and why.
    let history = server
        .post(
            &format!("/latchkey/v1/users/{user}/events"),
            json!({"query": {"limit": 2}}),
        )
        .await;
    assert_eq!(
        history.body["details"]["totalResult"], "5",
        "{}",
        history.body
    );
    let events = &history.body["events"];
    assert_eq!(events[0]["eventType"], "user.locked");
    assert_eq!(events[0]["reason"], "failed password checks");
    assert_eq!(events[1]["eventType"], "user.human.password.check.failed");
    let admin = events[0]["editorUserId"].as_str().unwrap();
    assert!(!admin.is_empty());
    assert_eq!(events[1]["editorUserId"], admin);
    let oldest = server
        .post(
            &format!("/latchkey/v1/users/{user}/events"),
            json!({"query": {"limit": 1, "offset": 1, "asc": true}}),
        )
        .await;
    assert_eq!(oldest.body["events"][0]["sequence"], "2", "{}", oldest.body);

    // Locked: the right password is refused without a hash — at the user check.
    let before = verifications(&server);
    let reply = server.login(&user, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.body["code"], 9);
    assert_eq!(reply.error_id(), "SESSION-Gj4ko");
    assert_eq!(verifications(&server), before, "no hash while locked");

    // No session was created by any of the failures.
    let listed = server.post("/v2/sessions/search", json!({})).await;
    assert!(
        listed.body["details"]["totalResult"].is_null(),
        "none: {}",
        listed.body
    );

    // An administrator unlocks: the counter is reset, the user logs in.
    let reply = server
        .post(&format!("/v2/users/{user}/unlock"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = server.login(&user, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let session_id = reply.body["sessionId"].as_str().unwrap().to_owned();
    let token = reply.body["sessionToken"].as_str().unwrap().to_owned();
    assert!(token.len() <= 200);

    // GetSession with the token (in the query string, as the gateway takes it).
    let reply = server
        .get(&format!("/v2/sessions/{session_id}?sessionToken={token}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let factors = &reply.body["session"]["factors"];
    assert_eq!(factors["user"]["id"], user.as_str());
    assert_eq!(factors["user"]["loginName"], "ada@example.com");
    assert!(factors["password"]["verifiedAt"].is_string(), "{factors}");

    // SetSession: new metadata, a new token; the old one no longer reads the session.
    let reply = server
        .call_as(
            ADMIN_TOKEN,
            Method::PATCH,
            &format!("/v2/sessions/{session_id}"),
            json!({"metadata": {"step": "Mg=="}, "lifetime": "600s"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = reply.body["sessionToken"].as_str().unwrap().to_owned();
    assert_ne!(rotated, token);
    let machine = server
        .machine_with_role(&server.org, "reader", None)
        .await
        .1;
    let old = server
        .get_as(
            &machine,
            &format!("/v2/sessions/{session_id}?sessionToken={token}"),
        )
        .await;
    assert_eq!(old.status, StatusCode::FORBIDDEN, "{}", old.body);
    assert_eq!(old.error_id(), "QUERY-dsfr3");
    let new = server
        .get_as(
            &machine,
            &format!("/v2/sessions/{session_id}?sessionToken={rotated}"),
        )
        .await;
    assert_eq!(new.status, StatusCode::OK, "{}", new.body);
    assert_eq!(new.body["session"]["metadata"]["step"], "Mg==");
    assert!(new.body["session"]["expirationDate"].is_string());

    // DeleteSession with the token; the session is gone.
    let reply = server
        .call_as(
            &machine,
            Method::DELETE,
            &format!("/v2/sessions/{session_id}"),
            json!({ "sessionToken": rotated }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let gone = server.get(&format!("/v2/sessions/{session_id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    assert_eq!(gone.error_id(), "QUERY-SFeaa");
}

/// A session's user is checked once; a later password check needs no user in the request, and
/// while the user is locked it is refused as ZITADEL's password path refuses it (JLK35, with the
/// count), again without a hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_check_on_an_existing_session_of_a_locked_user() {
    let server = TestServer::start().await;
    server.set_lockout(json!({"maxPasswordAttempts": 1})).await;
    let user = server.create_login_user("grace@example.com").await;
    let other = server.create_login_user("alan@example.com").await;
    let created = server
        .post(
            "/v2/sessions",
            json!({"checks": {"user": {"loginName": "GRACE@example.com"}}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["sessionId"].as_str().unwrap().to_owned();
    let set = |body: Value| {
        let path = format!("/v2/sessions/{id}");
        let server = &server;
        async move {
            server
                .call_as(ADMIN_TOKEN, Method::PATCH, &path, body)
                .await
        }
    };
    let change = set(json!({"checks": {"user": {"userId": other}}})).await;
    assert_eq!(change.error_id(), "SESSION-USER-CHANGE", "{}", change.body);

    let wrong = set(json!({"checks": {"password": {"password": "nope"}}})).await;
    assert_eq!(credentials_error(&wrong), ("COMMAND-3M0fs".to_owned(), 1));
    let before = verifications(&server);
    let refused = set(json!({"checks": {"password": {"password": PASSWORD}}})).await;
    assert_eq!(refused.body["code"], 9, "{}", refused.body);
    assert_eq!(credentials_error(&refused), ("COMMAND-JLK35".to_owned(), 1));
    assert_eq!(verifications(&server), before, "no hash while locked");

    // A password change resets the count and leaves the lock (ZITADEL's rule); unlock lifts it.
    let reply = server
        .post(
            &format!("/v2/users/{user}/password"),
            json!({"newPassword": {"password": "Another-Horse-8"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        server.state_and_sequence(&user).await.0,
        "USER_STATE_LOCKED"
    );
    server
        .post(&format!("/v2/users/{user}/unlock"), json!({}))
        .await;
    let ok = set(json!({"checks": {"password": {"password": "Another-Horse-8"}}})).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(!ok.body["sessionToken"].as_str().unwrap().is_empty());
}

/// Checks Latchkey does not perform are refused, never ignored: no session is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_checks_and_challenges_are_refused() {
    let server = TestServer::start().await;
    let user = server.create_login_user("otp@example.com").await;
    for body in [
        json!({"checks": {"user": {"userId": user}, "totp": {"code": "123456"}}}),
        json!({"checks": {"user": {"userId": user}, "webAuthN": {"credentialAssertionData": {}}}}),
        json!({"checks": {"user": {"userId": user}}, "challenges": {"otpEmail": {"returnCode": {}}}}),
        json!({"checks": {"recoveryCode": {"code": "x"}}}),
    ] {
        let reply = server.post("/v2/sessions", body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_IMPLEMENTED,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.error_id(), "FEATURE-UNSUPPORTED");
    }
    let listed = server.post("/v2/sessions/search", json!({})).await;
    assert!(
        listed.body["details"]["totalResult"].is_null(),
        "none: {}",
        listed.body
    );
}

/// Who may do what: sessions need session.write (IAM_OWNER, IAM_LOGIN_CLIENT); policies are read
/// with policy.read and changed by the organization's owner (custom) or the instance's (default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_policies_check_permissions() {
    let server = TestServer::start().await;
    let user = server.create_login_user("perm@example.com").await;
    let (_, nobody) = server.machine_with_role(&server.org, "nobody", None).await;
    let (_, manager) = server
        .machine_with_role(&server.org, "manager", Some("ORG_USER_MANAGER"))
        .await;
    let (_, owner) = server
        .machine_with_role(&server.org, "owner", Some("ORG_OWNER"))
        .await;
    let (login_client, login) = server.machine_with_role(&server.org, "login", None).await;
    let reply = server
        .post(
            "/v2beta/administrators",
            json!({"userId": login_client, "resource": {"instance": true}, "roles": ["IAM_LOGIN_CLIENT"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let login_body =
        json!({"checks": {"user": {"userId": user}, "password": {"password": PASSWORD}}});
    for token in [&nobody, &manager, &owner] {
        let reply = server
            .call_as(token, Method::POST, "/v2/sessions", login_body.clone())
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    }
    let reply = server
        .call_as(&login, Method::POST, "/v2/sessions", login_body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    let read = server.get_as(&nobody, "/v2/settings/lockout").await;
    assert_eq!(read.status, StatusCode::FORBIDDEN, "{}", read.body);
    let read = server.get_as(&manager, "/v2/settings/lockout").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(
        read.body["settings"]["resourceOwnerType"],
        "RESOURCE_OWNER_TYPE_INSTANCE"
    );
    for path in [
        "/admin/v1/policies/lockout",
        "/management/v1/policies/lockout",
    ] {
        let read = server.get_as(&nobody, path).await;
        assert_eq!(read.status, StatusCode::FORBIDDEN, "{path}: {}", read.body);
    }

    // The organization's owner adds its own policy; the instance default is not theirs.
    let custom = json!({"maxPasswordAttempts": 4});
    let reply = server
        .call_as(
            &manager,
            Method::POST,
            "/management/v1/policies/lockout",
            custom.clone(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    let reply = server
        .call_as(
            &owner,
            Method::POST,
            "/management/v1/policies/lockout",
            custom.clone(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let again = server
        .call_as(
            &owner,
            Method::POST,
            "/management/v1/policies/lockout",
            custom,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.error_id(), "ORG-0olDf");
    let reply = server
        .call_as(
            &owner,
            Method::PUT,
            "/admin/v1/policies/password/lockout",
            json!({"maxPasswordAttempts": 9}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);

    let read = server
        .get(&format!("/v2/settings/lockout?ctx.orgId={}", server.org))
        .await;
    assert_eq!(
        read.body["settings"]["maxPasswordAttempts"], "4",
        "{}",
        read.body
    );
    assert_eq!(
        read.body["settings"]["resourceOwnerType"],
        "RESOURCE_OWNER_TYPE_ORG"
    );
    let read = server.get("/v2/settings/lockout?ctx.instance=true").await;
    assert_eq!(
        read.body["settings"]["resourceOwnerType"], "RESOURCE_OWNER_TYPE_INSTANCE",
        "{}",
        read.body
    );
}

/// The management API's organization is `x-zitadel-orgid` (else the caller's); a policy there
/// is the one that counts for that organization's users, read at check time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizations_policy_is_chosen_by_header_and_applies_to_its_users() {
    let server = TestServer::start().await;
    let acme = server.create_org("acme").await;
    let reply = server
        .client
        .post(format!("{}/management/v1/policies/lockout", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-zitadel-orgid", &acme)
        .json(&json!({"maxPasswordAttempts": 1, "autoUnlockAfter": "3600s", "maxTemporaryLockouts": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let in_acme = server
        .post(
            "/v2/users/human",
            json!({"organization": {"orgId": acme}, "profile": {"givenName": "A", "familyName": "B"},
                   "email": {"email": "acme@example.com"},
                   "hashedPassword": {"hash": support::login::password_hash()}}),
        )
        .await;
    assert_eq!(in_acme.status, StatusCode::OK, "{}", in_acme.body);
    let in_acme = in_acme.body["userId"].as_str().unwrap().to_owned();
    let elsewhere = server.create_login_user("elsewhere@example.com").await;

    server.login(&in_acme, "wrong").await;
    server.login(&elsewhere, "wrong").await;
    assert_eq!(
        server.state_and_sequence(&in_acme).await.0,
        "USER_STATE_LOCKED"
    );
    assert_eq!(
        server.state_and_sequence(&elsewhere).await.0,
        "USER_STATE_ACTIVE"
    );

    // Read back through the management API of that org; the caller's own org still has none.
    let read: Value = server
        .client
        .get(format!("{}/management/v1/policies/lockout", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-zitadel-orgid", &acme)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["policy"]["maxPasswordAttempts"], "1", "{read}");
    assert_eq!(read["policy"]["autoUnlockAfter"], "3600s");
    assert_eq!(read["policy"]["maxTemporaryLockouts"], 2);
    assert!(read["isDefault"].is_null(), "{read}");
    let own = server.get("/management/v1/policies/lockout").await;
    assert_eq!(own.body["isDefault"], true, "{}", own.body);

    // A ZITADEL client that knows nothing of the extensions changes the count, not them.
    let reply = server
        .client
        .put(format!("{}/management/v1/policies/lockout", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-zitadel-orgid", &acme)
        .json(&json!({"maxPasswordAttempts": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let read = server
        .get(&format!("/v2/settings/lockout?ctx.orgId={acme}"))
        .await;
    assert_eq!(
        read.body["settings"]["maxPasswordAttempts"], "2",
        "{}",
        read.body
    );
    assert_eq!(read.body["settings"]["autoUnlockAfter"], "3600s");
}

/// With `autoUnlockAfter`, a user locked by failures is ACTIVE again when the time is up, without
/// an administrator: reads, checks and UnlockUser all see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_from_failures_lifts_by_itself() {
    let server = TestServer::start().await;
    server
        .set_lockout(json!({"maxPasswordAttempts": 1, "autoUnlockAfter": "1s"}))
        .await;
    let user = server.create_login_user("auto@example.com").await;
    server.login(&user, "wrong").await;
    assert_eq!(
        server.state_and_sequence(&user).await.0,
        "USER_STATE_LOCKED"
    );
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(
        server.state_and_sequence(&user).await.0,
        "USER_STATE_ACTIVE"
    );
    let unlock = server
        .post(&format!("/v2/users/{user}/unlock"), json!({}))
        .await;
    assert_eq!(unlock.error_id(), "USER-NOT-LOCKED", "{}", unlock.body);
    let read = server.get(&format!("/v2/users/{user}")).await;
    assert_eq!(
        read.body["user"]["lockout"]["temporaryLockouts"], 1,
        "{}",
        read.body
    );
    assert!(read.body["user"]["lockout"]["lockedAt"].is_null());
    let reply = server.login(&user, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let unlocked: Vec<_> = server
        .event_log(&user)
        .await
        .into_iter()
        .filter(|e| e.event_type == "user.unlocked")
        .collect();
    assert_eq!(unlocked.len(), 1);
    assert_eq!(unlocked[0].reason.as_deref(), Some("automatic"));
    assert_eq!(unlocked[0].by, "", "Latchkey itself");
}

/// GHSA-7h8m-vrxx-vr4m cannot happen: 1,000 wrong passwords at once over gRPC on one user with a
/// limit of 5 are exactly 5 InvalidArgument (failed_attempts 1..=5), 995 refusals for the lock,
/// one `user.locked` event, 5 hash verifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_parallel_wrong_passwords_over_grpc_lock_exactly_once() {
    let server = TestServer::start().await;
    server.set_lockout(json!({"maxPasswordAttempts": 5})).await;
    let user = server.create_login_user("race@example.com").await;
    let before = verifications(&server);
    let channel = server.grpc_channel().await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..1_000 {
        let mut client =
            session::session_service_client::SessionServiceClient::new(channel.clone());
        let user = user.clone();
        calls.spawn(async move {
            let request = session::CreateSessionRequest {
                checks: Some(session::Checks {
                    user: Some(session::CheckUser {
                        search: Some(session::check_user::Search::UserId(user)),
                    }),
                    password: Some(session::CheckPassword {
                        password: "wrong".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            client.create_session(authed(request, ADMIN_TOKEN)).await
        });
    }
    let mut invalid = Vec::new();
    let mut locked = 0;
    while let Some(done) = calls.join_next().await {
        let status = done.unwrap().expect_err("a wrong password never logs in");
        let detail = RpcStatus::decode(status.details()).unwrap().details[0].clone();
        match status.code() {
            tonic::Code::InvalidArgument => {
                assert_eq!(
                    detail.type_url,
                    "type.googleapis.com/zitadel.v1.CredentialsCheckError"
                );
                let error = CredentialsCheckError::decode(detail.value.as_ref()).unwrap();
                assert_eq!(error.id, "COMMAND-3M0fs");
                invalid.push(error.failed_attempts);
            }
            tonic::Code::FailedPrecondition => locked += 1,
            other => panic!("unexpected {other:?}: {}", status.message()),
        }
    }
    invalid.sort_unstable();
    assert_eq!(invalid, [1, 2, 3, 4, 5]);
    assert_eq!(locked, 995);
    assert_eq!(verifications(&server) - before, 5);
    let events = server.event_log(&user).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "user.locked")
            .count(),
        1
    );
    assert_eq!(
        server.state_and_sequence(&user).await.0,
        "USER_STATE_LOCKED"
    );
}

/// A bulk unlock covers what its starter may write: an organization's owner unlocks that
/// organization's users only, and only callers reaching the job's scope read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_unlock_stays_within_its_starters_reach() {
    let server = TestServer::start().await;
    let acme = server.create_org("acme").await;
    let (_, acme_owner) = server
        .machine_with_role(&acme, "acme-owner", Some("ORG_OWNER"))
        .await;
    let (_, other_owner) = server
        .machine_with_role(&server.org, "other-owner", Some("ORG_OWNER"))
        .await;
    let (_, viewer) = server
        .machine_with_role(&acme, "viewer", Some("ORG_USER_VIEWER"))
        .await;
    let in_acme = server
        .post(
            "/v2/users/human",
            json!({"organization": {"orgId": acme}, "profile": {"givenName": "A", "familyName": "B"},
                   "email": {"email": "locked@acme.example"}, "hashedPassword": {"hash": support::HASH}}),
        )
        .await;
    let in_acme = in_acme.body["userId"].as_str().unwrap().to_owned();
    server
        .post(&format!("/v2/users/{in_acme}/lock"), json!({}))
        .await;
    let elsewhere = server.create_locked_user("locked@elsewhere.example").await;

    let refused = server
        .call_as(
            &viewer,
            Method::POST,
            "/latchkey/v1/bulk_unlocks",
            json!({}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let started = server
        .call_as(
            &acme_owner,
            Method::POST,
            "/latchkey/v1/bulk_unlocks",
            json!({}),
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_eq!(started.body["job"]["usersTotal"], "1", "{}", started.body);
    let job = started.body["job"]["jobId"].as_str().unwrap().to_owned();
    let path = format!("/latchkey/v1/bulk_unlocks/{job}");
    let mut state = Value::Null;
    for _ in 0..500 {
        let read = server.get_as(&acme_owner, &path).await;
        state = read.body["job"].clone();
        if state["state"] == "BULK_UNLOCK_STATE_DONE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state["state"], "BULK_UNLOCK_STATE_DONE", "{state}");
    assert_eq!(state["unlocked"], "1");
    assert_eq!(
        server.state_and_sequence(&in_acme).await.0,
        "USER_STATE_ACTIVE"
    );
    assert_eq!(
        server.state_and_sequence(&elsewhere).await.0,
        "USER_STATE_LOCKED"
    );

    let hidden = server.get_as(&other_owner, &path).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{}", hidden.body);
    assert_eq!(hidden.error_id(), "BULK-JOB-NOT-FOUND");
    let admin = server.get(&path).await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
}

/// Every password check is counted by outcome in `/metrics`, and so is every lock the policy
/// makes. (The recorder is shared by the tests of this binary, so the counts are lower bounds.)
#[tokio::test]
async fn password_checks_and_lockouts_are_counted_in_the_metrics() {
    let server = TestServer::start().await;
    server.set_lockout(json!({"maxPasswordAttempts": 2})).await;
    let user = server.create_login_user("counted@example.com").await;
    assert_eq!(
        server.login(&user, PASSWORD).await.status,
        StatusCode::CREATED
    );
    for _ in 0..2 {
        assert_eq!(
            server.login(&user, "wrong").await.status,
            StatusCode::BAD_REQUEST
        );
    }
    let reply = server.send(Method::GET, "/metrics", None, None, None).await;
    let text = reply.body.as_str().expect("text body").to_owned();
    let value = |series: &str| support::metric_value(&text, series);
    assert!(
        value(r#"latchkey_password_checks_total{outcome="match"}"#) >= 1.0,
        "{text}"
    );
    assert!(
        value(r#"latchkey_password_checks_total{outcome="mismatch"}"#) >= 2.0,
        "{text}"
    );
    assert!(value("latchkey_lockouts_total") >= 1.0, "{text}");
}
