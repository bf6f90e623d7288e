//! `/openapi.json` against the routes (every row of the RPC table, nothing else) and against live
//! answers: REST calls across every service, each answer validated against the schema the
//! document gives for its path, verb and status (messages allow no undocumented field).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::collections::BTreeSet;

use latchkey_api::rpc::{for_each, Routed, Visitor};
use reqwest::Method;
use serde_json::{json, Value};
use support::{Reply, TestServer};

struct Rows(BTreeSet<(String, String)>);

impl Visitor for Rows {
    fn visit<R: Routed>(&mut self) {
        let info = R::INFO;
        self.0.insert((
            info.rest.to_owned(),
            info.verb.as_str().to_ascii_lowercase(),
        ));
    }
}

async fn document(server: &TestServer) -> Value {
    let response = server
        .client
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "no token needed");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_document_lists_exactly_the_table_s_routes() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut rows = Rows(BTreeSet::new());
    for_each(&mut rows);
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (verb, operation) in item.as_object().unwrap() {
            documented.insert((path.clone(), verb.clone()));
            // every `{name}` of the path is a required path parameter
            let params: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(params, in_path, "{verb} {path}");
        }
    }
    assert_eq!(documented, rows.0, "the document and the table disagree");
    // every reference resolves
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling reference {name}"
        );
    }
    server.stop().await;
}

/// Validates `reply` against what the document says `verb path` answers with its status.
fn check(doc: &Value, verb: &str, path: &str, reply: &Reply) {
    let errors = errors(doc, verb, path, reply);
    assert!(
        errors.is_empty(),
        "{verb} {path} ({}): {errors:?}\n{}",
        reply.status,
        reply.body
    );
}

fn errors(doc: &Value, verb: &str, path: &str, reply: &Reply) -> Vec<String> {
    let operation = &doc["paths"][path][verb];
    assert!(operation.is_object(), "{verb} {path} is not documented");
    let status = reply.status.as_u16().to_string();
    let response = operation["responses"]
        .get(&status)
        .unwrap_or(&operation["responses"]["default"]);
    let schema = &response["content"]["application/json"]["schema"];
    let root = json!({
        "$ref": schema["$ref"],
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&root).unwrap();
    validator
        .iter_errors(&reply.body)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

#[tokio::test]
async fn live_answers_match_the_document() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    let token = support::ADMIN_TOKEN;
    let call = |method: Method, path: String, body: Value| {
        let server = &server;
        async move { server.call_as(token, method, &path, body).await }
    };

    let created = call(
        Method::POST,
        "/v2/users/human".into(),
        json!({
            "profile": {"givenName": "Open", "familyName": "Api"},
            "email": {"email": "openapi@example.com", "isVerified": true},
            "password": {"password": "Correct-Horse-9"},
        }),
    )
    .await;
    check(&doc, "post", "/v2/users/human", &created);
    // the schemas have teeth: an undocumented field, a wrong type
    let mut altered = Reply {
        status: created.status,
        body: created.body.clone(),
    };
    altered.body["surprise"] = json!(1);
    assert!(!errors(&doc, "post", "/v2/users/human", &altered).is_empty());
    altered.body = created.body.clone();
    altered.body["details"]["sequence"] = json!(1);
    assert!(!errors(&doc, "post", "/v2/users/human", &altered).is_empty());
    let id = created.body["userId"].as_str().unwrap().to_owned();

    let reply = server.get(&format!("/v2/users/{id}")).await;
    check(&doc, "get", "/v2/users/{userId}", &reply);
    let reply = call(
        Method::POST,
        "/v2/users".into(),
        json!({"query": {"limit": 10}}),
    )
    .await;
    check(&doc, "post", "/v2/users", &reply);
    assert!(reply.body["result"].as_array().unwrap().len() >= 2);
    for action in ["lock", "unlock", "unlock", "deactivate", "reactivate"] {
        let reply = call(Method::POST, format!("/v2/users/{id}/{action}"), json!({})).await;
        check(
            &doc,
            "post",
            &format!("/v2/users/{{userId}}/{action}"),
            &reply,
        );
    }
    let missing = server.get("/v2/users/nobody").await;
    assert_eq!(missing.status, 404);
    check(&doc, "get", "/v2/users/{userId}", &missing);

    let session = call(
        Method::POST,
        "/v2/sessions".into(),
        json!({"checks": {"user": {"userId": id}, "password": {"password": "Correct-Horse-9"}}}),
    )
    .await;
    assert_eq!(session.status, 201, "{}", session.body);
    check(&doc, "post", "/v2/sessions", &session);
    let session_id = session.body["sessionId"].as_str().unwrap().to_owned();
    let reply = server.get(&format!("/v2/sessions/{session_id}")).await;
    check(&doc, "get", "/v2/sessions/{sessionId}", &reply);
    let reply = call(Method::POST, "/v2/sessions/search".into(), json!({})).await;
    check(&doc, "post", "/v2/sessions/search", &reply);

    let reply = server.get("/v2/settings/lockout").await;
    check(&doc, "get", "/v2/settings/lockout", &reply);
    let reply = server.get("/admin/v1/policies/lockout").await;
    check(&doc, "get", "/admin/v1/policies/lockout", &reply);
    let reply = call(
        Method::PUT,
        "/admin/v1/policies/password/lockout".into(),
        json!({"maxPasswordAttempts": "5"}),
    )
    .await;
    check(&doc, "put", "/admin/v1/policies/password/lockout", &reply);
    let reply = server.get("/management/v1/policies/lockout").await;
    check(&doc, "get", "/management/v1/policies/lockout", &reply);

    let reply = call(
        Method::POST,
        format!("/latchkey/v1/users/{id}/events"),
        json!({}),
    )
    .await;
    check(&doc, "post", "/latchkey/v1/users/{userId}/events", &reply);
    assert!(reply.body["events"].as_array().unwrap().len() >= 5);
    let job = call(Method::POST, "/latchkey/v1/bulk_unlocks".into(), json!({})).await;
    check(&doc, "post", "/latchkey/v1/bulk_unlocks", &job);
    let org = call(
        Method::POST,
        "/v2/organizations".into(),
        json!({"name": "OpenAPI Org"}),
    )
    .await;
    check(&doc, "post", "/v2/organizations", &org);
    server.stop().await;
}
