//! The README's curl walk-through and the error contract, against a real server over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{TestServer, ADMIN_TOKEN};

#[tokio::test]
async fn readme_walkthrough() {
    let server = TestServer::start().await;
    // create a user with a password: ACTIVE at sequence 1
    let created = server
        .post(
            "/v2/users/human",
            json!({
                "username": "ada",
                "profile": {"givenName": "Ada", "familyName": "Lovelace"},
                "email": {"email": "ada@example.com", "isVerified": true},
                "password": {"password": "S3cure-enough", "changeRequired": false}
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let id = created.body["userId"].as_str().unwrap().to_owned();
    assert_eq!(created.sequence(), 1);
    assert_eq!(
        created.body["details"]["resourceOwner"],
        server.org.as_str()
    );

    let locked = server
        .post(&format!("/v2/users/{id}/lock"), json!({}))
        .await;
    assert_eq!((locked.status, locked.sequence()), (StatusCode::OK, 2));

    let unlocked = server
        .post(&format!("/v2/users/{id}/unlock"), json!({}))
        .await;
    assert_eq!((unlocked.status, unlocked.sequence()), (StatusCode::OK, 3));
    assert!(unlocked.body["details"]["changeDate"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let again = server
        .post(&format!("/v2/users/{id}/unlock"), json!({}))
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.body["code"], 9);
    assert_eq!(again.body["message"], "user is not locked");
    assert_eq!(again.error_id(), "USER-NOT-LOCKED");
    assert_eq!(
        again.body["details"][0]["@type"],
        "type.googleapis.com/zitadel.v1.ErrorDetail"
    );

    let user = server.get(&format!("/v2/users/{id}")).await;
    assert_eq!(user.status, StatusCode::OK);
    assert_eq!(user.body["user"]["state"], "USER_STATE_ACTIVE");
    assert_eq!(user.body["user"]["username"], "ada");
    assert_eq!(user.body["user"]["human"]["profile"]["givenName"], "Ada");
    // none was given: ZITADEL's default, the given and family names
    assert_eq!(
        user.body["user"]["human"]["profile"]["displayName"],
        "Ada Lovelace"
    );
    assert_eq!(user.body["details"]["sequence"], "3");
    // the password is never echoed
    assert!(!user.body.to_string().contains("S3cure-enough"));
    assert!(!user.body.to_string().contains("argon2"));
}

#[tokio::test]
async fn state_endpoints_accept_empty_bodies_and_path_wins() {
    let server = TestServer::start().await;
    let a = server.create_locked_user("a@example.com").await;
    let b = server.create_locked_user("b@example.com").await;
    // empty body
    let reply = server
        .send(
            Method::POST,
            &format!("/v2/users/{a}/unlock"),
            Some(ADMIN_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // body names b, path names a (already unlocked): the path wins
    let reply = server
        .post(&format!("/v2/users/{a}/unlock"), json!({"userId": b}))
        .await;
    assert_eq!(reply.error_id(), "USER-NOT-LOCKED");
    assert_eq!(server.state_and_sequence(&b).await.0, "USER_STATE_LOCKED");
    // unknown fields are ignored
    let reply = server
        .post(
            &format!("/v2/users/{b}/unlock"),
            json!({"whatever": [1, 2]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_and_changes_nothing() {
    let server = TestServer::start().await;
    let id = server.create_locked_user("x@example.com").await;
    let before = server.state_and_sequence(&id).await;

    let missing = server.post("/v2/users/12345/unlock", json!({})).await;
    assert_eq!(
        (missing.status, missing.error_id()),
        (StatusCode::NOT_FOUND, "USER-NOT-FOUND")
    );
    assert_eq!(missing.body["code"], 5);

    // empty id: the REST path cannot carry it, the Connect body can
    let empty = server
        .connect(
            ADMIN_TOKEN,
            "zitadel.user.v2.UserService/UnlockUser",
            json!({"userId": ""}),
        )
        .await;
    assert_eq!(
        (empty.status, empty.error_id()),
        (StatusCode::BAD_REQUEST, "USER-ID-INVALID")
    );
    let long = "1".repeat(201);
    let too_long = server
        .post(&format!("/v2/users/{long}/unlock"), json!({}))
        .await;
    assert_eq!(
        (too_long.status, too_long.error_id()),
        (StatusCode::BAD_REQUEST, "USER-ID-INVALID")
    );
    assert_eq!(too_long.body["code"], 3);
    let max = "1".repeat(200);
    let at_limit = server
        .post(&format!("/v2/users/{max}/unlock"), json!({}))
        .await;
    assert_eq!(at_limit.status, StatusCode::NOT_FOUND);

    let malformed = server
        .send(
            Method::POST,
            &format!("/v2/users/{id}/unlock"),
            Some(ADMIN_TOKEN),
            Some("{\"userId\":"),
            None,
        )
        .await;
    assert_eq!(
        (malformed.status, malformed.error_id()),
        (StatusCode::BAD_REQUEST, "BODY-MALFORMED")
    );
    let wrong_type = server
        .post(&format!("/v2/users/{id}/unlock"), json!({"userId": 5}))
        .await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);

    let huge = format!("{{\"userId\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let too_big = server
        .send(
            Method::POST,
            &format!("/v2/users/{id}/unlock"),
            Some(ADMIN_TOKEN),
            Some(&huge),
            None,
        )
        .await;
    assert_eq!(
        (too_big.status, too_big.error_id()),
        (StatusCode::PAYLOAD_TOO_LARGE, "BODY-TOO-LARGE")
    );

    let route = server.get("/v2/nothing/here").await;
    assert_eq!(
        (route.status, route.error_id()),
        (StatusCode::NOT_FOUND, "ROUTE-NOT-FOUND")
    );
    let method = server
        .send(
            Method::PUT,
            &format!("/v2/users/{id}/unlock"),
            Some(ADMIN_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        (method.body["code"].as_i64(), method.error_id()),
        (Some(12), "METHOD-NOT-ALLOWED")
    );

    assert_eq!(
        server.state_and_sequence(&id).await,
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn connect_flow_with_connect_errors() {
    let server = TestServer::start().await;
    let svc = "zitadel.user.v2.UserService";
    let created = server
        .connect(
            ADMIN_TOKEN,
            &format!("{svc}/AddHumanUser"),
            json!({
                "profile": {"givenName": "Grace", "familyName": "Hopper"},
                "email": {"email": "grace@example.com"},
                "hashedPassword": {"hash": support::HASH}
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let id = created.body["userId"].as_str().unwrap().to_owned();
    for (method, seq) in [("LockUser", 2), ("UnlockUser", 3)] {
        let reply = server
            .connect(
                ADMIN_TOKEN,
                &format!("{svc}/{method}"),
                json!({ "userId": id }),
            )
            .await;
        assert_eq!(
            (reply.status, reply.sequence()),
            (StatusCode::OK, seq),
            "{method}"
        );
    }
    let again = server
        .connect(
            ADMIN_TOKEN,
            &format!("{svc}/UnlockUser"),
            json!({ "userId": id }),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.body["code"], "failed_precondition");
    assert_eq!(again.body["message"], "user is not locked");
    assert_eq!(again.error_id(), "USER-NOT-LOCKED");
    assert_eq!(again.body["details"][0]["type"], "zitadel.v1.ErrorDetail");

    let got = server
        .connect(
            ADMIN_TOKEN,
            &format!("{svc}/GetUserByID"),
            json!({ "userId": id }),
        )
        .await;
    assert_eq!(got.body["user"]["state"], "USER_STATE_ACTIVE");
    assert_eq!(got.body["details"]["sequence"], "3");

    let missing = server
        .connect(
            ADMIN_TOKEN,
            &format!("{svc}/UnlockUser"),
            json!({"userId": "nope"}),
        )
        .await;
    assert_eq!(
        (missing.status, missing.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let unauth = server
        .connect("bad", &format!("{svc}/UnlockUser"), json!({ "userId": id }))
        .await;
    assert_eq!(
        (unauth.status, unauth.body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let proto = server
        .send(
            Method::POST,
            &format!("/{svc}/UnlockUser"),
            Some(ADMIN_TOKEN),
            Some("\x0a\x01x"),
            Some("application/proto"),
        )
        .await;
    // Connect binary is served; its errors are Connect JSON like everything else.
    assert_eq!(
        (proto.status, proto.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let text = server
        .send(
            Method::POST,
            &format!("/{svc}/UnlockUser"),
            Some(ADMIN_TOKEN),
            Some("{}"),
            Some("text/plain"),
        )
        .await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(text.body["code"], "invalid_argument");
    let unknown = server
        .connect(ADMIN_TOKEN, &format!("{svc}/NoSuchMethod"), json!({}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["code"], "not_found");
}

#[tokio::test]
async fn list_users_filters_sorts_and_pages() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(server.create_human(&format!("user{i}@example.com")).await);
    }
    server
        .post(&format!("/v2/users/{}/lock", ids[1]), json!({}))
        .await;
    let all = server.post("/v2/users", json!({})).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    // 5 humans + the bootstrap admin
    assert_eq!(all.body["details"]["totalResult"], "6");
    let newest_first: Vec<&str> = all.body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap())
        .collect();
    assert_eq!(newest_first[0], ids[4]);

    let page = server
        .post("/v2/users", json!({"query": {"offset": "1", "limit": 2, "asc": true}, "queries": [{"typeQuery": {"type": "TYPE_HUMAN"}}]}))
        .await;
    assert_eq!(page.body["details"]["totalResult"], "5");
    let got: Vec<&str> = page.body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[1].as_str(), ids[2].as_str()]);

    let locked = server
        .post(
            "/v2/users",
            json!({"queries": [{"stateQuery": {"state": "USER_STATE_LOCKED"}}]}),
        )
        .await;
    assert_eq!(locked.body["details"]["totalResult"], "1");
    assert_eq!(locked.body["result"][0]["userId"], ids[1].as_str());

    let by_email = server
        .post("/v2/users", json!({"queries": [{"emailQuery": {"emailAddress": "USER3@", "method": "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE"}}]}))
        .await;
    assert_eq!(by_email.body["result"][0]["userId"], ids[3].as_str());

    let in_ids = server
        .post("/v2/users", json!({"queries": [{"inUserIdsQuery": {"userIds": [ids[0], ids[2]]}}, {"organizationIdQuery": {"organizationId": server.org}}]}))
        .await;
    assert_eq!(in_ids.body["details"]["totalResult"], "2");

    let not_locked = server
        .post("/v2/users", json!({"queries": [{"notQuery": {"query": {"stateQuery": {"state": 4}}}}, {"typeQuery": {"type": 1}}]}))
        .await;
    assert_eq!(not_locked.body["details"]["totalResult"], "4");

    let unknown = server
        .post("/v2/users", json!({"queries": [{"fancyQuery": {}}]}))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn usernames_are_unique_per_org_case_insensitively() {
    let server = TestServer::start().await;
    let body = |username: &str| {
        json!({
            "username": username,
            "profile": {"givenName": "A", "familyName": "B"},
            "email": {"email": "dup@example.com"},
        })
    };
    let first = server.post("/v2/users/human", body("Dup")).await;
    assert_eq!(first.status, StatusCode::OK);
    // no password: INITIAL
    let id = first.body["userId"].as_str().unwrap();
    assert_eq!(server.state_and_sequence(id).await.0, "USER_STATE_INITIAL");
    let second = server.post("/v2/users/human", body("dUP")).await;
    assert_eq!(
        (second.status, second.error_id()),
        (StatusCode::CONFLICT, "USERNAME-TAKEN")
    );
    // another org may use it
    let org_b = server.create_org("B").await;
    let mut in_b = body("dup");
    in_b["organization"] = json!({ "orgId": org_b });
    assert_eq!(
        server.post("/v2/users/human", in_b).await.status,
        StatusCode::OK
    );
    // caller-chosen ids: a duplicate is AlreadyExists
    let mut with_id = body("other");
    with_id["userId"] = json!(id);
    let dup_id = server.post("/v2/users/human", with_id).await;
    assert_eq!(
        (dup_id.status, dup_id.error_id()),
        (StatusCode::CONFLICT, "USER-ID-TAKEN")
    );
}

#[tokio::test]
async fn health_endpoints_need_no_token() {
    let server = TestServer::start().await;
    assert_eq!(
        server
            .send(Method::GET, "/healthz", None, None, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server
            .send(Method::GET, "/readyz", None, None, None)
            .await
            .status,
        StatusCode::OK
    );
}
