//! Callers over HTTP: tokens, roles and reach (403 before any lookup, the same 404 for missing
//! and out of reach), and changes of a machine user or its grants taking effect on the very next
//! request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::TestServer;

#[tokio::test]
async fn callers_are_authenticated_and_authorized() {
    let server = TestServer::start().await;
    let victim = server.create_locked_user("v@example.com").await;
    let path = format!("/v2/users/{victim}/unlock");

    let none = server.send(Method::POST, &path, None, None, None).await;
    assert_eq!(
        (none.status, none.body["code"].as_i64()),
        (StatusCode::UNAUTHORIZED, Some(16))
    );
    let bad = server
        .call_as("not-a-token", Method::POST, &path, json!({}))
        .await;
    assert_eq!(
        (bad.status, bad.error_id()),
        (StatusCode::UNAUTHORIZED, "AUTH-UNAUTHENTICATED")
    );
    let basic = server
        .client
        .post(format!("{}{path}", server.base))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    // a viewer may read but not unlock: 403 even for a user that does not exist
    let (_, viewer) = server
        .machine_with_role(&server.org, "viewer", Some("ORG_USER_VIEWER"))
        .await;
    let denied = server
        .call_as(&viewer, Method::POST, &path, json!({}))
        .await;
    assert_eq!(
        (denied.status, denied.error_id()),
        (StatusCode::FORBIDDEN, "AUTH-PERMISSION-DENIED")
    );
    let denied_missing = server
        .call_as(&viewer, Method::POST, "/v2/users/nobody/unlock", json!({}))
        .await;
    assert_eq!(denied_missing.status, StatusCode::FORBIDDEN);
    let read = server.get_as(&viewer, &format!("/v2/users/{victim}")).await;
    assert_eq!(read.status, StatusCode::OK);

    // a manager of org B on a user of org A: indistinguishable from a missing user
    let org_b = server.create_org("Org B").await;
    let (_, manager_b) = server
        .machine_with_role(&org_b, "manager-b", Some("ORG_USER_MANAGER"))
        .await;
    let outside = server
        .call_as(&manager_b, Method::POST, &path, json!({}))
        .await;
    let missing = server
        .call_as(
            &manager_b,
            Method::POST,
            "/v2/users/nobody/unlock",
            json!({}),
        )
        .await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
    assert_eq!(outside.body, missing.body);

    // a manager of the user's own org may unlock
    let (_, manager_a) = server
        .machine_with_role(&server.org, "manager-a", Some("ORG_USER_MANAGER"))
        .await;
    let ok = server
        .call_as(&manager_a, Method::POST, &path, json!({}))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    // non-admins cannot create organizations or grant instance roles
    let org = server
        .call_as(
            &manager_a,
            Method::POST,
            "/v2/organizations",
            json!({"name": "X"}),
        )
        .await;
    assert_eq!(org.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn locking_a_machine_user_cuts_its_own_token_at_once() {
    let server = TestServer::start().await;
    let (bot, token) = server
        .machine_with_role(&server.org, "bot", Some("ORG_USER_MANAGER"))
        .await;
    let someone = server.create_human("s@example.com").await;
    let ok = server.get_as(&token, &format!("/v2/users/{someone}")).await;
    assert_eq!(ok.status, StatusCode::OK);
    let lock = server
        .post(&format!("/v2/users/{bot}/lock"), json!({}))
        .await;
    assert_eq!(lock.status, StatusCode::OK);
    let after = server.get_as(&token, &format!("/v2/users/{someone}")).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    // the bot locking itself is refused the same way afterwards
    let own = server
        .call_as(
            &token,
            Method::POST,
            &format!("/v2/users/{bot}/unlock"),
            json!({}),
        )
        .await;
    assert_eq!(own.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revocations_and_new_roles_take_effect_on_the_next_request() {
    let server = TestServer::start().await;
    let someone = server.create_human("t@example.com").await;
    let get = format!("/v2/users/{someone}");
    let (bot, token) = server
        .machine_with_role(&server.org, "bot", Some("ORG_USER_VIEWER"))
        .await;
    // warm the caller cache with a few requests
    for _ in 0..3 {
        let ok = server.get_as(&token, &get).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    let unlock = format!("/v2/users/{someone}/lock");
    assert_eq!(
        server
            .call_as(&token, Method::POST, &unlock, json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // a new role applies at once
    let granted = server
        .post(
            "/v2beta/administrators",
            json!({"userId": bot, "resource": {"organizationId": server.org}, "roles": ["ORG_USER_MANAGER"]}),
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    assert_eq!(
        server
            .call_as(&token, Method::POST, &unlock, json!({}))
            .await
            .status,
        StatusCode::OK
    );

    // two more tokens; revoke one: it stops at once (even though it was cached), the other works
    let (revoked_id, revoked) = server.add_token(&bot).await;
    let (_, kept) = server.add_token(&bot).await;
    for t in [&revoked, &kept] {
        assert_eq!(server.get_as(t, &get).await.status, StatusCode::OK);
    }
    let removed = server
        .send(
            Method::DELETE,
            &format!("/v2/users/{bot}/pats/{revoked_id}"),
            Some(support::ADMIN_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert_eq!(
        server.get_as(&revoked, &get).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(server.get_as(&kept, &get).await.status, StatusCode::OK);
    // deleting the machine user cuts every token
    assert_eq!(
        server
            .send(
                Method::DELETE,
                &format!("/v2/users/{bot}"),
                Some(support::ADMIN_TOKEN),
                None,
                None
            )
            .await
            .status,
        StatusCode::OK
    );
    for t in [&token, &kept] {
        assert_eq!(
            server.get_as(t, &get).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}
