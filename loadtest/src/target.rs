//! What a load test talks to: the engine in-process (no HTTP), a server over HTTP (REST), or a
//! server over gRPC (`grpc_target.rs`). All answer the same few operations, so every scenario runs
//! unchanged against any — and against the bare-axum baseline, which answers the same HTTP paths
//! with a fixed response.

use std::sync::Arc;
use std::time::Duration;

use latchkey_engine::{
    Caller, Email, Engine, NewHuman, NewSession, PasswordInput, Profile, SessionChecks, UserCheck,
};
use serde_json::json;

use crate::connection::Connection;
use crate::grpc_target::GrpcTarget;

/// A precomputed bcrypt hash, so creation does not measure Argon2.
pub const HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lock,
    Unlock,
    Get,
    /// CreateSession with the user and [`LOGIN_PASSWORD`] (a login).
    Login,
    /// CreateSession with the user and a wrong password (an attacker's guess).
    WrongLogin,
}

/// The password of the `login` scenario's users (their hash is made for it at the start).
pub const LOGIN_PASSWORD: &str = "Correct-Horse-7";

impl Op {
    /// The password a login sends.
    pub fn password(self) -> Option<&'static str> {
        match self {
            Op::Login => Some(LOGIN_PASSWORD),
            Op::WrongLogin => Some("wrong-guess"),
            _ => None,
        }
    }
}

/// CreateSession's body for a login of `user` with `password`.
pub fn login_body(user: &str, password: &str) -> String {
    json!({"checks": {"user": {"userId": user}, "password": {"password": password}}}).to_string()
}

/// How one operation ended: `Ok` or the stable error id / status it failed with.
pub type Outcome = Result<(), String>;

#[derive(Clone)]
pub enum Target {
    Embedded { engine: Engine, caller: Arc<Caller> },
    Http(Arc<HttpTarget>),
    Grpc(Arc<GrpcTarget>),
}

pub struct HttpTarget {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// Keeps up to `connections` (at least 1,024) connections open: in open loop the number in
/// flight is not bounded by --concurrency, and a pool that closes the extra connections after
/// each request measures TCP set-up, not the server.
pub fn http_client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections.max(1024))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// One client's own way to the target: the shared engine, or its own HTTP connection.
pub enum Session {
    Shared(Target),
    Connection(Connection),
    /// A load client of a gRPC target: its connection is the client's number's.
    Grpc(Arc<GrpcTarget>, usize),
}

impl Session {
    pub async fn run(&mut self, op: Op, user: &str) -> Outcome {
        match self {
            Session::Shared(target) => target.run(op, user).await,
            Session::Connection(connection) => connection.run(op, user).await,
            Session::Grpc(grpc, client) => grpc.run_on(*client, op, user).await,
        }
    }
}

impl Target {
    /// A session for load client `client`; an HTTP connection is opened now, so the measured
    /// requests do not pay for it (one that cannot be opened is retried by each request, which
    /// then counts as a transport error). Run it in a task from
    /// [`spawn_client`](Self::spawn_client) with the same `client`.
    pub async fn session(&self, client: usize) -> Session {
        match self {
            Target::Embedded { .. } => Session::Shared(self.clone()),
            Target::Grpc(grpc) => Session::Grpc(grpc.clone(), client),
            Target::Http(http) => Session::Connection(Connection::open(http).await),
        }
    }

    /// Spawns load client `client`'s task: over gRPC on the event loop that drives its
    /// connection (`grpc_target.rs`), otherwise on the harness's runtime.
    pub fn spawn_client<F>(&self, client: usize, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Target::Grpc(grpc) => grpc.spawn(client, task),
            Target::Embedded { .. } | Target::Http(_) => tokio::spawn(task),
        }
    }

    pub fn http(base: String, token: String, connections: usize) -> Target {
        Target::Http(Arc::new(HttpTarget {
            client: http_client(connections),
            base,
            token,
        }))
    }

    pub async fn run(&self, op: Op, user: &str) -> Outcome {
        match self {
            Target::Embedded { engine, caller } => {
                let result = match (op, op.password()) {
                    (_, Some(password)) => {
                        let login = NewSession {
                            checks: SessionChecks {
                                user: Some(UserCheck::Id(user.to_owned())),
                                password: Some(password.to_owned()),
                            },
                            ..Default::default()
                        };
                        engine.create_session(caller, login).await.map(|_| ())
                    }
                    (Op::Lock, _) => engine.lock_user(caller, user).await.map(|_| ()),
                    (Op::Unlock, _) => engine.unlock_user(caller, user).await.map(|_| ()),
                    (_, None) => engine.get_user(caller, user).await.map(|_| ()),
                };
                result.map_err(|e| e.id.id().to_owned())
            }
            Target::Http(http) => {
                let request = match (op, op.password()) {
                    (_, Some(password)) => http
                        .client
                        .post(format!("{}/v2/sessions", http.base))
                        .body(login_body(user, password)),
                    (Op::Lock, _) => http
                        .client
                        .post(format!("{}/v2/users/{user}/lock", http.base))
                        .body("{}"),
                    (Op::Unlock, _) => http
                        .client
                        .post(format!("{}/v2/users/{user}/unlock", http.base))
                        .body("{}"),
                    (_, None) => http.client.get(format!("{}/v2/users/{user}", http.base)),
                };
                http_outcome(request.bearer_auth(&http.token)).await
            }
            Target::Grpc(grpc) => grpc.run(op, user).await,
        }
    }

    /// The server's base URL, if it is one (`/metrics` lives there).
    pub fn base(&self) -> Option<(&reqwest::Client, &str)> {
        match self {
            Target::Embedded { .. } => None,
            Target::Http(http) => Some((&http.client, &http.base)),
            Target::Grpc(grpc) => Some((&grpc.http, &grpc.base)),
        }
    }

    /// Creates a human user with a precomputed hash; returns its id.
    pub async fn create_user(&self, n: u64, tag: &str) -> Result<String, String> {
        self.create_user_with(n, tag, HASH).await
    }

    /// Creates a human user whose password has `hash`; returns its id.
    pub async fn create_user_with(&self, n: u64, tag: &str, hash: &str) -> Result<String, String> {
        let email = format!("load-{tag}-{n}@example.com");
        match self {
            Target::Embedded { engine, caller } => engine
                .add_human_user(
                    caller,
                    NewHuman {
                        profile: Profile {
                            given_name: "Load".into(),
                            family_name: format!("User {n}"),
                            ..Default::default()
                        },
                        email: Email {
                            email,
                            is_verified: true,
                        },
                        password: Some(PasswordInput::Hashed {
                            hash: hash.into(),
                            change_required: false,
                        }),
                        ..Default::default()
                    },
                )
                .await
                .map(|c| c.user_id)
                .map_err(|e| e.id.id().to_owned()),
            Target::Grpc(grpc) => grpc.create_user(email, format!("User {n}"), hash).await,
            Target::Http(http) => {
                let body = json!({
                    "profile": {"givenName": "Load", "familyName": format!("User {n}")},
                    "email": {"email": email, "isVerified": true},
                    "hashedPassword": {"hash": hash},
                });
                let response = http
                    .client
                    .post(format!("{}/v2/users/human", http.base))
                    .bearer_auth(&http.token)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("transport: {}", with_causes(&e)))?;
                let status = response.status();
                let value: serde_json::Value =
                    response.json().await.map_err(|e| format!("body: {e}"))?;
                match value["userId"].as_str() {
                    Some(id) if status.is_success() => Ok(id.to_owned()),
                    // the baseline answers every path with a fixed body; give each "user" a name
                    _ if status.is_success() => Ok(format!("baseline-{n}")),
                    _ => Err(error_id(&value, status.as_u16())),
                }
            }
        }
    }
}

/// An error and every cause under it ("error sending request" alone does not say whether the
/// connection was refused, reset or closed by the server).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text += &format!(": {e}");
        cause = e.source();
    }
    text
}

pub(crate) fn error_id(body: &serde_json::Value, status: u16) -> String {
    body["details"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP-{status}"))
}

async fn http_outcome(request: reqwest::RequestBuilder) -> Outcome {
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            "TRANSPORT-TIMEOUT".to_owned()
        } else {
            "TRANSPORT-ERROR".to_owned()
        }
    })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|_| "TRANSPORT-ERROR".to_owned())?;
    if status.is_success() {
        return Ok(());
    }
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Err(error_id(&body, status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_transport_error_names_its_causes() {
        let error = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        ));
        assert_eq!(
            with_causes(&error),
            "error sending request: connection reset by peer"
        );
    }
}
