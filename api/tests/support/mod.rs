//! The test kit: a real Latchkey server on port 0 over a temp dir, with an authenticated client.
//! Each integration test reads as the scenario it checks.
#![allow(dead_code)]

pub mod binary;
pub mod history;
pub mod login;
pub mod protocols;

use std::time::Duration;

use latchkey_engine::{Config, Engine};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token";
/// A precomputed bcrypt hash, so creating users does not spend time in Argon2.
pub const HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub engine: Engine,
    pub org: String,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Cluster mode: the node this server is (`start_node`).
    pub node: Option<latchkey_api::cluster::ClusterNode>,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The stable error id of an error reply (REST or Connect shape).
    pub fn error_id(&self) -> &str {
        self.body["details"][0]["id"]
            .as_str()
            .or_else(|| self.body["details"][0]["debug"]["id"].as_str())
            .unwrap_or("")
    }
    pub fn sequence(&self) -> u64 {
        self.body["details"]["sequence"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no details.sequence in {}", self.body))
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|c| c).await
    }

    pub async fn start_with(configure: impl FnOnce(Config) -> Config) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::open(dir, configure).await
    }

    /// A server on a data dir a previous [`TestServer::stop`] returned: state from disk.
    pub async fn reopen(dir: tempfile::TempDir) -> TestServer {
        Self::open(dir, |c| c).await
    }

    async fn open(dir: tempfile::TempDir, configure: impl FnOnce(Config) -> Config) -> TestServer {
        latchkey_api::metrics::install();
        let engine = Engine::open(configure(Config::default().data_dir(dir.path())))
            .await
            .expect("engine opens");
        Self::serve(dir, engine, None).await
    }

    /// A cluster node (`serve --cluster <nats> --node-id <node_id>`) on port 0 over a temp dir:
    /// its engine over the cluster journal, requests for other nodes' users forwarded. The
    /// first node bootstraps the cluster with [`ADMIN_TOKEN`].
    pub async fn start_node(
        nats: &str,
        node_id: &str,
        layout: latchkey_cluster::partitions::Layout,
    ) -> TestServer {
        latchkey_api::metrics::install();
        // `RUST_LOG` shows the nodes' logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let node = latchkey_api::cluster::ClusterNode::start(latchkey_api::cluster::NodeConfig {
            nats: nats.to_owned(),
            node_id: node_id.to_owned(),
            layout,
            engine: Config::default().data_dir(dir.path()),
        })
        .await
        .expect("node starts");
        let engine = node.engine.clone();
        Self::serve(dir, engine, Some(node)).await
    }

    async fn serve(
        dir: tempfile::TempDir,
        engine: Engine,
        node: Option<latchkey_api::cluster::ClusterNode>,
    ) -> TestServer {
        let bootstrapped = match &node {
            Some(node) => node.bootstrap(Some(ADMIN_TOKEN.into())).await,
            None => engine.bootstrap(Some(ADMIN_TOKEN.into())).await,
        };
        let org = match bootstrapped.expect("bootstrap") {
            Some(boot) => boot.org_id,
            None => engine.default_org_id().expect("bootstrapped before"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let state = latchkey_api::server::AppState {
            engine: engine.clone(),
            router: node.as_ref().map(|node| node.router.clone()),
        };
        let app = latchkey_api::server::app_for(state, true);
        let task = tokio::spawn(latchkey_api::server::serve_with(
            engine.clone(),
            app,
            latchkey_api::server::nodelay(listener),
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            base,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(2048)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            engine,
            org,
            dir,
            stop: Some(stop),
            task: Some(task),
            node,
        }
    }

    /// Cluster mode: the node dies at once (kill -9 as far as the cluster can tell): it stops
    /// answering, following and renewing its lease; its partitions move once the lease expires.
    pub fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(node) = self.node.take() {
            node.stop();
        }
    }

    /// Graceful stop: in-flight requests finish, the engine flushes and closes.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
        self.dir
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    pub async fn call_as(&self, token: &str, method: Method, path: &str, body: Value) -> Reply {
        let body = body.to_string();
        self.send(
            method,
            path,
            Some(token),
            Some(&body),
            Some("application/json"),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call_as(ADMIN_TOKEN, Method::POST, path, body).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.get_as(ADMIN_TOKEN, path).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        self.send(Method::GET, path, Some(token), None, None).await
    }

    /// A Connect JSON call: `POST /<service>/<method>`.
    pub async fn connect(&self, token: &str, service_method: &str, body: Value) -> Reply {
        self.call_as(token, Method::POST, &format!("/{service_method}"), body)
            .await
    }

    pub async fn create_human(&self, email: &str) -> String {
        let reply = self
            .post(
                "/v2/users/human",
                json!({
                    "profile": {"givenName": "Test", "familyName": "User"},
                    "email": {"email": email, "isVerified": true},
                    "hashedPassword": {"hash": HASH},
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["userId"].as_str().expect("userId").to_owned()
    }

    pub async fn create_locked_user(&self, email: &str) -> String {
        let id = self.create_human(email).await;
        let reply = self.post(&format!("/v2/users/{id}/lock"), json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        id
    }

    pub async fn create_org(&self, name: &str) -> String {
        let reply = self
            .post("/v2/organizations", json!({ "name": name }))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["organizationId"]
            .as_str()
            .expect("organizationId")
            .to_owned()
    }

    /// A machine user in `org` holding `role` on `org` (or the instance for IAM_OWNER), and a token.
    pub async fn machine_with_role(
        &self,
        org: &str,
        name: &str,
        role: Option<&str>,
    ) -> (String, String) {
        let reply = self
            .post(
                "/v2/users/new",
                json!({"organizationId": org, "username": name, "machine": {"name": name}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let id = reply.body["id"].as_str().expect("id").to_owned();
        if let Some(role) = role {
            let resource = if role == "IAM_OWNER" {
                json!({"instance": true})
            } else {
                json!({ "organizationId": org })
            };
            let reply = self
                .post(
                    "/v2beta/administrators",
                    json!({"userId": id, "resource": resource, "roles": [role]}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
        let reply = self.post(&format!("/v2/users/{id}/pats"), json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        (id, reply.body["token"].as_str().expect("token").to_owned())
    }

    /// A new personal access token for `user`: (token id, token).
    pub async fn add_token(&self, user: &str) -> (String, String) {
        let reply = self
            .post(&format!("/v2/users/{user}/pats"), json!({}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        (
            reply.body["tokenId"].as_str().expect("tokenId").to_owned(),
            reply.body["token"].as_str().expect("token").to_owned(),
        )
    }

    pub async fn state_and_sequence(&self, id: &str) -> (String, u64) {
        let reply = self.get(&format!("/v2/users/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        (
            reply.body["user"]["state"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            reply.sequence(),
        )
    }

    /// The user's event log as stored, read through the engine as an instance administrator.
    pub async fn event_log(&self, id: &str) -> Vec<latchkey_engine::EventInfo> {
        self.engine
            .event_log(&latchkey_engine::Caller::system(self.org.clone()), id)
            .await
            .expect("event log")
    }

    /// A gRPC channel to the server over HTTP/2 cleartext (the same port as REST).
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.base.clone())
            .expect("uri")
            .connect()
            .await
            .expect("h2c connect")
    }
}

/// A gRPC request carrying `authorization: Bearer <token>` metadata.
/// The value of one series (name with its labels, exactly as printed) in a Prometheus text
/// body; 0 when absent.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// A seeded xorshift64 generator: reproducible test inputs, no statistical claims.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Spread small seeds; xorshift must never hold zero.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
