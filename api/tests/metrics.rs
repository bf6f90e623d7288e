//! `/metrics` speaks Prometheus text and reflects real traffic: per-route counts by status,
//! latency histograms, actor and store figures, and the durability mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{metric_value as value_of, TestServer};

#[tokio::test]
async fn metrics_reflect_traffic() {
    let server = TestServer::start().await;
    let id = server.create_locked_user("m@example.com").await;
    server
        .post(&format!("/v2/users/{id}/unlock"), json!({}))
        .await;
    server
        .post(&format!("/v2/users/{id}/unlock"), json!({}))
        .await;
    // A method the route does not serve is counted under the route, and says what it serves.
    let wrong_method = server
        .client
        .get(format!("{}/v2/users/{id}/unlock", server.base))
        .send()
        .await
        .expect("GET unlock");
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        wrong_method
            .headers()
            .get(reqwest::header::ALLOW)
            .map(|v| v.to_str().unwrap()),
        Some("POST")
    );

    let reply = server.send(Method::GET, "/metrics", None, None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.body.as_str().expect("text body").to_owned();
    let unlock = r#"route="/v2/users/{userId}/unlock",protocol="rest""#;
    assert_eq!(
        value_of(
            &text,
            &format!("latchkey_http_requests_total{{{unlock},status=\"200\"}}")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value_of(
            &text,
            &format!("latchkey_http_requests_total{{{unlock},status=\"400\"}}")
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &text,
            &format!("latchkey_http_requests_total{{{unlock},status=\"405\"}}")
        ),
        1.0
    );
    assert!(text.contains(&format!(
        "latchkey_http_request_duration_seconds_bucket{{{unlock},le=\"0.005\"}}"
    )));
    assert_eq!(
        value_of(&text, r#"latchkey_durability_mode{mode="sync"}"#),
        1.0
    );
    assert!(value_of(&text, "latchkey_actors_active") >= 1.0);
    assert!(value_of(&text, "latchkey_actor_activations_total") >= 1.0);
    assert!(value_of(&text, "latchkey_store_writes_total") >= 3.0);
    assert!(value_of(&text, "latchkey_store_batch_size_count") >= 1.0);
    assert!(text.contains("latchkey_store_flush_seconds_bucket"));
    assert!(text.contains("latchkey_actor_mailbox_wait_seconds_bucket"));
}
