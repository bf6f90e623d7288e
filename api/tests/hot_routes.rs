//! The hot REST routes (`api/src/hot_routes.rs`) answer as axum's router does: a request the
//! edge routes itself and the same request spelled so that only the router takes it (its id
//! percent-encoded) get the same status, body and headers, and count under one route's metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use latchkey_api::edge::Edge;
use latchkey_api::hot_routes::HotRoutes;
use latchkey_api::server::AppState;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::{metric_value, TestServer};

/// `id` with every character percent-encoded: the same id to the router, never a hot route's.
fn encoded(id: &str) -> String {
    id.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The parts of an answer two equal requests share: status, content type, body without dates.
async fn answer(server: &TestServer, method: Method, path: &str) -> (StatusCode, String, Value) {
    let response = server
        .client
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(support::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request sent");
    assert!(response.headers().contains_key("x-request-id"), "{path}");
    let status = response.status();
    let content_type = response.headers()["content-type"].to_str().unwrap().into();
    let mut body: Value = response.json().await.expect("JSON body");
    if let Some(details) = body.get_mut("details").and_then(Value::as_object_mut) {
        details.remove("changeDate");
    }
    (status, content_type, body)
}

/// Which requests the edge answers itself: the hot rows' method and path, ids as they are.
#[tokio::test]
async fn only_the_hot_rows_spelled_plainly_are_taken_from_the_router() {
    let server = TestServer::start().await;
    let hot = HotRoutes::new(AppState::embedded(server.engine.clone()));
    let taken = |method: &str, path: &str| {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        hot.call(request).is_ok()
    };
    for (method, path) in [
        ("POST", "/v2/users/123/unlock"),
        ("POST", "/v2/users/123/lock"),
        ("POST", "/v2/users/123/deactivate"),
        ("POST", "/v2/users/123/reactivate"),
        ("GET", "/v2/users/123"),
        ("GET", "/v2/users/123?ctx=1"),
    ] {
        assert!(taken(method, path), "{method} {path}");
    }
    for (method, path) in [
        ("PUT", "/v2/users/123/unlock"),
        ("HEAD", "/v2/users/123"),
        ("DELETE", "/v2/users/123"),
        ("POST", "/v2/users/%31/unlock"),
        ("POST", "/v2/users/123/unlock/"),
        ("POST", "/v2/users/123/pats"),
        ("POST", "/zitadel.user.v2.UserService/UnlockUser"),
    ] {
        assert!(!taken(method, path), "{method} {path}");
    }
}

/// The edge asks its hot routes before its router: with routers that serve nothing, a hot row
/// is still answered (here 401, no token), and anything else gets the router's 404.
#[tokio::test]
async fn the_edge_answers_a_hot_row_before_its_router_is_asked() {
    use tower::ServiceExt;
    let server = TestServer::start().await;
    let hot = HotRoutes::new(AppState::embedded(server.engine.clone()));
    let send = |edge: Edge, path: &str| {
        let request = axum::http::Request::post(path)
            .body(axum::body::Body::empty())
            .unwrap();
        async move { edge.oneshot(request).await.unwrap().status() }
    };
    let bare = || Edge::new(axum::Router::new(), axum::Router::new());
    let with_hot = || bare().with_hot_routes(hot.clone());
    assert_eq!(
        send(with_hot(), "/v2/users/123/unlock").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(with_hot(), "/v2/users/%31/unlock").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(bare(), "/v2/users/123/unlock").await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_hot_route_answers_and_counts_as_the_router_does() {
    let server = TestServer::start().await;
    let id = server.create_locked_user("hot@example.com").await;
    let (hot, routed) = (id.clone(), encoded(&id));

    let unlocked = answer(&server, Method::POST, &format!("/v2/users/{hot}/unlock")).await;
    assert_eq!(unlocked.0, StatusCode::OK, "{unlocked:?}");
    assert_eq!(
        unlocked.2["details"]["sequence"], "3",
        "created, locked, unlocked"
    );
    let locked = answer(&server, Method::POST, &format!("/v2/users/{routed}/lock")).await;
    assert_eq!(locked.0, StatusCode::OK, "{locked:?}");
    assert_eq!(locked.2["details"]["sequence"], "4");
    let mut routed_unlock =
        answer(&server, Method::POST, &format!("/v2/users/{routed}/unlock")).await;
    assert_eq!(routed_unlock.2["details"]["sequence"], "5");
    routed_unlock.2["details"]["sequence"] = "3".into();
    assert_eq!(routed_unlock, unlocked, "the same answer, a sequence on");

    // Refused alike, in grpc-gateway's error shape.
    let hot_refusal = answer(&server, Method::POST, &format!("/v2/users/{hot}/unlock")).await;
    let routed_refusal = answer(&server, Method::POST, &format!("/v2/users/{routed}/unlock")).await;
    assert_eq!(hot_refusal.0, StatusCode::BAD_REQUEST);
    assert_eq!(hot_refusal, routed_refusal);
    let unknown = answer(&server, Method::POST, "/v2/users/404404404/unlock").await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND, "{unknown:?}");

    // Read alike.
    let read = answer(&server, Method::GET, &format!("/v2/users/{hot}")).await;
    assert_eq!(read.0, StatusCode::OK);
    assert_eq!(read.2["user"]["userId"], id.as_str());
    assert_eq!(
        read,
        answer(&server, Method::GET, &format!("/v2/users/{routed}")).await
    );

    // What no hot route takes goes on to the router, as before.
    let trailing = answer(&server, Method::POST, &format!("/v2/users/{hot}/unlock/")).await;
    assert_eq!(trailing.0, StatusCode::NOT_FOUND);
    let put = answer(&server, Method::PUT, &format!("/v2/users/{hot}/unlock")).await;
    assert_eq!(put.0, StatusCode::METHOD_NOT_ALLOWED);

    let metrics = server.send(Method::GET, "/metrics", None, None, None).await;
    let text = metrics.body.as_str().expect("text body");
    let count = |route: &str, status: u16| {
        metric_value(
            text,
            &format!(
                "latchkey_http_requests_total{{route=\"{route}\",protocol=\"rest\",status=\"{status}\"}}"
            ),
        )
    };
    let unlock = "/v2/users/{userId}/unlock";
    assert_eq!(count(unlock, 200), 2.0, "{text}");
    assert_eq!(count(unlock, 400), 2.0);
    assert_eq!(count(unlock, 404), 1.0);
    assert_eq!(count(unlock, 405), 1.0);
    assert_eq!(
        count("/v2/users/{userId}/lock", 200),
        2.0,
        "one making the user"
    );
    assert_eq!(count("/v2/users/{userId}", 200), 2.0);
}
