//! Security properties, each tried the way an attacker would: existence of users in other
//! organizations must not leak (byte-identical answers, on REST, Connect and gRPC); tokens exist
//! on disk only as hashes; a token stops working on the very next request once it is revoked or
//! expired, or its machine user is locked, deactivated or deleted; admin operations refuse
//! everyone below the role they need.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::time::Duration;

use latchkey_api::proto::zitadel::user::v2 as user;
use latchkey_storage::Store;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{authed, TestServer, ADMIN_TOKEN};
use user::user_service_client::UserServiceClient;

/// Status and raw body bytes, with `id` replaced by a placeholder.
async fn raw(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<String>,
    content_type: &str,
    id: &str,
) -> (StatusCode, String) {
    let mut request = server
        .client
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(token)
        .header("content-type", content_type);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, text.replace(id, "<ID>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_other_organizations_are_indistinguishable_from_missing_ones() {
    let server = TestServer::start().await;
    let org_a = server.create_org("Alpha").await;
    let org_b = server.create_org("Beta").await;
    let (_, manager_a) = server
        .machine_with_role(&org_a, "manager-a", Some("ORG_OWNER"))
        .await;
    let reply = server
        .post(
            "/v2/users/human",
            json!({
                "organization": {"orgId": org_b},
                "profile": {"givenName": "B", "familyName": "User"},
                "email": {"email": "b@example.com"},
                "hashedPassword": {"hash": support::HASH},
            }),
        )
        .await;
    let theirs = reply.body["userId"].as_str().expect("userId").to_owned();
    server
        .post(&format!("/v2/users/{theirs}/lock"), json!({}))
        .await;
    // The same length as a real id, so the only difference could be existence.
    let missing: String = "9".repeat(theirs.len());

    let rest: [(Method, &str); 7] = [
        (Method::POST, "/v2/users/{}/unlock"),
        (Method::POST, "/v2/users/{}/lock"),
        (Method::POST, "/v2/users/{}/deactivate"),
        (Method::POST, "/v2/users/{}/reactivate"),
        (Method::GET, "/v2/users/{}"),
        (Method::DELETE, "/v2/users/{}"),
        (Method::POST, "/v2/users/{}/pats"),
    ];
    for (method, template) in rest {
        let probe = |id: &str| template.replace("{}", id);
        let body = || (method == Method::POST).then(|| "{}".to_string());
        let exists = raw(
            &server,
            &manager_a,
            method.clone(),
            &probe(&theirs),
            body(),
            "application/json",
            &theirs,
        )
        .await;
        let absent = raw(
            &server,
            &manager_a,
            method.clone(),
            &probe(&missing),
            body(),
            "application/json",
            &missing,
        )
        .await;
        assert_eq!(exists, absent, "{method} {template}");
        assert_eq!(exists.0, StatusCode::NOT_FOUND, "{method} {template}");
    }
    for method in [
        "UnlockUser",
        "LockUser",
        "GetUserByID",
        "DeleteUser",
        "AddPersonalAccessToken",
    ] {
        let path = format!("/zitadel.user.v2.UserService/{method}");
        let call = |id: &str| json!({ "userId": id }).to_string();
        let exists = raw(
            &server,
            &manager_a,
            Method::POST,
            &path,
            Some(call(&theirs)),
            "application/json",
            &theirs,
        )
        .await;
        let absent = raw(
            &server,
            &manager_a,
            Method::POST,
            &path,
            Some(call(&missing)),
            "application/json",
            &missing,
        )
        .await;
        assert_eq!(exists, absent, "Connect {method}");
    }
    let mut grpc = UserServiceClient::new(server.grpc_channel().await);
    let mut answers = Vec::new();
    for id in [&theirs, &missing] {
        let status = grpc
            .unlock_user(authed(
                user::UnlockUserRequest {
                    user_id: id.clone(),
                },
                &manager_a,
            ))
            .await
            .expect_err("refused");
        answers.push((
            status.code(),
            status.message().to_owned(),
            status.details().to_vec(),
        ));
    }
    assert_eq!(answers[0], answers[1], "gRPC");
    // ListUsers does not show them either.
    let listed = server
        .call_as(&manager_a, Method::POST, "/v2/users", json!({}))
        .await;
    assert!(!listed.body.to_string().contains(&theirs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_only_as_hashes() {
    let server = TestServer::start().await;
    let (machine, token) = server
        .machine_with_role(&server.org.clone(), "bot", Some("ORG_USER_VIEWER"))
        .await;
    let (_, second) = server.add_token(&machine).await;
    let dir = server.stop().await;

    let tokens = [ADMIN_TOKEN, token.as_str(), second.as_str()];
    // Every key and value the store holds.
    let store = Store::open(&latchkey_engine::store_config(
        &latchkey_engine::Config::default().data_dir(dir.path()),
    ))
    .expect("open store");
    let mut entries = 0;
    for item in store.scan_prefix(&[]) {
        let (key, value) = item.expect("entry");
        entries += 1;
        for token in tokens {
            for bytes in [&key, &value] {
                assert!(
                    !contains(bytes, token.as_bytes()),
                    "a token in the clear in the store"
                );
            }
        }
    }
    assert!(entries > 10, "the scan saw the store ({entries} entries)");
    store.close().expect("close");
    // And every file on disk, byte by byte (sled's log and snapshots included).
    for file in files(dir.path()) {
        let bytes = std::fs::read(&file).expect("read");
        for token in tokens {
            let leaked = contains(&bytes, token.as_bytes());
            // admin.pat is the operator's copy of the bootstrap token, by design (0600).
            let allowed = file.ends_with("admin.pat");
            assert!(!leaked || allowed, "{} holds a token", file.display());
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stops_working_on_the_next_request() {
    let server = TestServer::start().await;
    let org = server.org.clone();
    let (bot, token) = server
        .machine_with_role(&org, "bot", Some("ORG_USER_VIEWER"))
        .await;
    let path = format!("/v2/users/{bot}");
    let works = |token: String| {
        let (server, path) = (&server, &path);
        async move { server.get_as(&token, path).await.status }
    };
    assert_eq!(works(token.clone()).await, StatusCode::OK);

    // Its user locked / deactivated: refused at once; back when the user is back.
    for (off, on) in [("lock", "unlock"), ("deactivate", "reactivate")] {
        assert_eq!(works(token.clone()).await, StatusCode::OK, "warm the cache");
        let reply = server
            .post(&format!("/v2/users/{bot}/{off}"), json!({}))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            works(token.clone()).await,
            StatusCode::UNAUTHORIZED,
            "{off}"
        );
        server
            .post(&format!("/v2/users/{bot}/{on}"), json!({}))
            .await;
        assert_eq!(works(token.clone()).await, StatusCode::OK, "{on}");
    }

    // Revoked.
    let (token_id, revocable) = server.add_token(&bot).await;
    assert_eq!(works(revocable.clone()).await, StatusCode::OK);
    let reply = server
        .send(
            Method::DELETE,
            &format!("/v2/users/{bot}/pats/{token_id}"),
            Some(ADMIN_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(works(revocable).await, StatusCode::UNAUTHORIZED, "revoked");

    // Expired: valid until its expiration date, refused right after, cache or not.
    let expires = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let reply = server
        .post(
            &format!("/v2/users/{bot}/pats"),
            json!({ "expirationDate": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true) }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let expiring = reply.body["token"].as_str().expect("token").to_owned();
    assert_eq!(works(expiring.clone()).await, StatusCode::OK);
    let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    assert_eq!(works(expiring).await, StatusCode::UNAUTHORIZED, "expired");

    // Deleted user: every token of it dies with it.
    let reply = server
        .send(
            Method::DELETE,
            &format!("/v2/users/{bot}"),
            Some(ADMIN_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(works(token).await, StatusCode::UNAUTHORIZED, "deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations_refuse_non_admins() {
    let server = TestServer::start().await;
    let org_a = server.create_org("Alpha").await;
    let org_b = server.create_org("Beta").await;
    let (_, owner_a) = server
        .machine_with_role(&org_a, "owner-a", Some("ORG_OWNER"))
        .await;
    let (_, manager_a) = server
        .machine_with_role(&org_a, "manager-a", Some("ORG_USER_MANAGER"))
        .await;
    let (_, viewer_a) = server
        .machine_with_role(&org_a, "viewer-a", Some("ORG_USER_VIEWER"))
        .await;
    let (nobody, nothing) = server.machine_with_role(&org_a, "nobody", None).await;

    for token in [&owner_a, &manager_a, &viewer_a, &nothing] {
        let org = server
            .call_as(
                token,
                Method::POST,
                "/v2/organizations",
                json!({"name": "Gamma"}),
            )
            .await;
        assert_eq!(
            org.status,
            StatusCode::FORBIDDEN,
            "AddOrganization: {}",
            org.body
        );
        let instance = server
            .call_as(
                token,
                Method::POST,
                "/v2beta/administrators",
                json!({"userId": nobody, "resource": {"instance": true}, "roles": ["IAM_OWNER"]}),
            )
            .await;
        assert_eq!(
            instance.status,
            StatusCode::FORBIDDEN,
            "instance admin: {}",
            instance.body
        );
        let other_org = server
            .call_as(
                token,
                Method::POST,
                "/v2beta/administrators",
                json!({"userId": nobody, "resource": {"organizationId": org_b}, "roles": ["ORG_OWNER"]}),
            )
            .await;
        assert!(
            matches!(
                other_org.status,
                StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
            ),
            "another org's admin: {}",
            other_org.body
        );
    }
    for token in [&manager_a, &viewer_a, &nothing] {
        let own_org = server
            .call_as(
                token,
                Method::POST,
                "/v2beta/administrators",
                json!({"userId": nobody, "resource": {"organizationId": org_a}, "roles": ["ORG_OWNER"]}),
            )
            .await;
        assert_eq!(own_org.status, StatusCode::FORBIDDEN, "{}", own_org.body);
    }
    // The org owner may appoint within its own org — and the refusals above changed nothing.
    let granted = server
        .call_as(
            &owner_a,
            Method::POST,
            "/v2beta/administrators",
            json!({"userId": nobody, "resource": {"organizationId": org_a}, "roles": ["ORG_USER_VIEWER"]}),
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    let viewer_reads = server
        .get_as(&nothing, &format!("/v2/users/{nobody}"))
        .await;
    assert_eq!(viewer_reads.status, StatusCode::OK);
    let still_not_owner = server
        .call_as(
            &nothing,
            Method::POST,
            "/v2/organizations",
            json!({"name": "Delta"}),
        )
        .await;
    assert_eq!(still_not_owner.status, StatusCode::FORBIDDEN);
}
