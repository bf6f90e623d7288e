//! The gRPC target: the same operations as the HTTP target, as a gRPC client sends them — over
//! h2c, the bearer token as metadata, the stable error id read from `grpc-status-details-bin`.
//! Requests are spread over a few HTTP/2 connections (each carries many concurrent streams, as
//! real gRPC clients do).
//!
//! The measured operations (lock, unlock, get) go straight through the h2 crate: the request
//! encoded by prost into one gRPC frame, the answer's frames read and the status taken from the
//! headers or trailers. The generated tonic client (its channel's buffer task, its codec and
//! layers) drove the bare tonic baseline at ≈ 0.6 × what h2load drives it at, so it measured
//! itself as much as the server; it still does the set-up (creating users) and logins.
//!
//! Shaped like h2load: the measured connections are driven by one event loop per core (a
//! current-thread runtime on its own thread, [`Loops`]), and each load client runs on the loop
//! that owns its connection ([`Target::spawn_client`](crate::target::Target::spawn_client)). A
//! stream's task and its connection's task then share a thread, so h2's per-connection state
//! (a mutex and wakers between them) is never handed between cores, which on the shared
//! multi-threaded runtime held the client to ≈ 0.8 × h2load.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tonic::codegen::http;

use latchkey_api::proto::google::rpc::Status as RpcStatus;
use latchkey_api::proto::zitadel::session::v2 as session;
use latchkey_api::proto::zitadel::user::v2 as user;
use latchkey_api::proto::zitadel::v1::ErrorDetail;
use prost::Message as _;
use session::session_service_client::SessionServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use user::user_service_client::UserServiceClient;

use crate::target::{Op, Outcome};

/// Connections per target: enough that one connection's framing is not the client's limit.
const CONNECTIONS: usize = 4;

/// The event loops that drive the measured connections: one current-thread runtime per core
/// (at most one per connection), each on its own thread until the target is dropped.
struct Loops {
    handles: Vec<tokio::runtime::Handle>,
    /// Dropped with the target: each loop's thread then ends, and its runtime with it.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Loops {
    fn start() -> Result<Loops, String> {
        let count = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(CONNECTIONS);
        let (mut handles, mut stop) = (Vec::new(), Vec::new());
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("gRPC client loop: {e}"))?;
            let (stopper, stopped) = tokio::sync::oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stop.push(stopper);
            std::thread::Builder::new()
                .name(format!("grpc-client-{i}"))
                .spawn(move || runtime.block_on(async move { stopped.await.ok() }))
                .map_err(|e| format!("gRPC client loop: {e}"))?;
        }
        Ok(Loops {
            handles,
            _stop: stop,
        })
    }

    /// The loop that drives `connection`.
    fn of(&self, connection: usize) -> &tokio::runtime::Handle {
        &self.handles[connection % self.handles.len()]
    }
}

pub struct GrpcTarget {
    channels: Vec<Channel>,
    /// The same number of connections, driven with h2 directly (the measured operations), each
    /// by one of `loops`.
    senders: Vec<h2::client::SendRequest<Bytes>>,
    loops: Loops,
    /// The measured methods' URIs: LockUser, UnlockUser, GetUserByID.
    uris: [http::Uri; 3],
    /// The headers every call carries, built once: content type, `te`, authorization.
    headers: http::HeaderMap,
    next: AtomicUsize,
    authorization: MetadataValue<tonic::metadata::Ascii>,
    /// For `/metrics`, over HTTP/1.1 on the same port.
    pub http: reqwest::Client,
    pub base: String,
}

impl GrpcTarget {
    pub async fn connect(base: String, token: &str) -> Result<GrpcTarget, String> {
        let mut channels = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let channel = Channel::from_shared(base.clone())
                .map_err(|e| format!("{base}: {e}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| format!("gRPC connection to {base}: {e}"))?;
            channels.push(channel);
        }
        let authority = base.trim_start_matches("http://").trim_end_matches('/');
        let loops = Loops::start()?;
        let mut senders = Vec::with_capacity(CONNECTIONS);
        for at in 0..CONNECTIONS {
            // Opened on its loop, so the socket and the connection's task belong to it.
            let (authority, to) = (authority.to_owned(), base.clone());
            let sender = loops
                .of(at)
                .spawn(async move {
                    let tcp = tokio::net::TcpStream::connect(&authority)
                        .await
                        .map_err(|e| format!("h2 connection to {to}: {e}"))?;
                    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
                    let (sender, connection) = h2::client::handshake(tcp)
                        .await
                        .map_err(|e| format!("h2 handshake with {to}: {e}"))?;
                    tokio::spawn(connection);
                    Ok::<_, String>(sender)
                })
                .await
                .map_err(|e| format!("h2 connection to {base}: {e}"))??;
            senders.push(sender);
        }
        let authorization: MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not valid gRPC metadata".to_owned())?;
        let uri = |method: &str| {
            format!("http://{authority}/zitadel.user.v2.UserService/{method}")
                .parse::<http::Uri>()
                .map_err(|e| format!("{base}: {e}"))
        };
        let uris = [uri("LockUser")?, uri("UnlockUser")?, uri("GetUserByID")?];
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes(authorization.as_bytes())
                .map_err(|_| "the token is not a valid header".to_owned())?,
        );
        Ok(GrpcTarget {
            channels,
            senders,
            loops,
            uris,
            headers,
            next: AtomicUsize::new(0),
            authorization,
            http: crate::target::http_client(1),
            base,
        })
    }

    fn client(&self) -> UserServiceClient<Channel> {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        UserServiceClient::new(self.channels[at].clone())
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    /// Spawns load client `client`'s task on the loop of the connection it uses
    /// ([`run_on`](Self::run_on) with the same `client`).
    pub fn spawn<F>(&self, client: usize, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.loops.of(client % self.senders.len()).spawn(task)
    }

    /// `op` on any connection (set-up and checks; load clients use [`run_on`](Self::run_on)).
    pub async fn run(&self, op: Op, user_id: &str) -> Outcome {
        let at = self.next.fetch_add(1, Ordering::Relaxed);
        self.run_on(at, op, user_id).await
    }

    /// `op` on load client `client`'s connection.
    pub async fn run_on(&self, client: usize, op: Op, user_id: &str) -> Outcome {
        if let Some(password) = op.password() {
            return self.login(user_id, password).await;
        }
        let user_id = user_id.to_owned();
        let (method, message) = match op {
            Op::Lock => (0, user::LockUserRequest { user_id }.encode_to_vec()),
            Op::Unlock => (1, user::UnlockUserRequest { user_id }.encode_to_vec()),
            Op::Get | Op::Login | Op::WrongLogin => {
                (2, user::GetUserByIdRequest { user_id }.encode_to_vec())
            }
        };
        match self
            .unary(client % self.senders.len(), method, &message)
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(error_id(&status)),
            Err(e) => Err(e),
        }
    }

    /// One unary call of the `method`-th of `uris` on connection `at`: `Ok(None)` for OK, `Ok(Some(status))`
    /// for a gRPC error, `Err(id)` for a transport failure.
    async fn unary(
        &self,
        at: usize,
        method: usize,
        message: &[u8],
    ) -> Result<Option<tonic::Status>, String> {
        let transport = |_: h2::Error| "TRANSPORT-ERROR".to_owned();
        let mut sender = self.senders[at].clone().ready().await.map_err(transport)?;
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uris[method].clone();
        *request.headers_mut() = self.headers.clone();
        let (response, mut body) = sender.send_request(request, false).map_err(transport)?;
        // One gRPC frame: uncompressed, the length, the message.
        let mut frame = Vec::with_capacity(5 + message.len());
        frame.push(0);
        frame.extend_from_slice(
            &u32::try_from(message.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        frame.extend_from_slice(message);
        body.send_data(Bytes::from(frame), true)
            .map_err(transport)?;
        let response = response.await.map_err(transport)?;
        // An error without a message comes as headers only ("trailers-only").
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            return Ok((status.code() != tonic::Code::Ok).then_some(status));
        }
        let mut answer = response.into_body();
        while let Some(data) = answer.data().await {
            let data = data.map_err(transport)?;
            let _ = answer.flow_control().release_capacity(data.len());
        }
        let trailers = answer
            .trailers()
            .await
            .map_err(transport)?
            .unwrap_or_default();
        match tonic::Status::from_header_map(&trailers) {
            Some(status) if status.code() != tonic::Code::Ok => Ok(Some(status)),
            Some(_) => Ok(None),
            None => Err("TRANSPORT-NO-STATUS".to_owned()),
        }
    }

    async fn login(&self, user_id: &str, password: &str) -> Outcome {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        let mut client = SessionServiceClient::new(self.channels[at].clone());
        let request = session::CreateSessionRequest {
            checks: Some(session::Checks {
                user: Some(session::CheckUser {
                    search: Some(session::check_user::Search::UserId(user_id.to_owned())),
                }),
                password: Some(session::CheckPassword {
                    password: password.to_owned(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        client
            .create_session(self.request(request))
            .await
            .map(drop)
            .map_err(|status| error_id(&status))
    }

    pub async fn create_user(
        &self,
        email: String,
        family_name: String,
        hash: &str,
    ) -> Result<String, String> {
        let request = user::AddHumanUserRequest {
            profile: Some(user::SetHumanProfile {
                given_name: "Load".into(),
                family_name,
                ..Default::default()
            }),
            email: Some(user::SetHumanEmail {
                email,
                verification: Some(user::set_human_email::Verification::IsVerified(true)),
            }),
            password_type: Some(user::add_human_user_request::PasswordType::HashedPassword(
                user::HashedPassword {
                    hash: hash.into(),
                    change_required: false,
                },
            )),
            ..Default::default()
        };
        self.client()
            .add_human_user(self.request(request))
            .await
            .map(|reply| reply.into_inner().user_id)
            .map_err(|status| error_id(&status))
    }
}

/// The stable id of a gRPC error (Latchkey's `zitadel.v1.ErrorDetail`), else the gRPC code.
fn error_id(status: &tonic::Status) -> String {
    RpcStatus::decode(status.details())
        .ok()
        .and_then(|details| {
            let detail = details.details.first()?;
            ErrorDetail::decode(detail.value.as_ref()).ok()
        })
        .map(|detail| detail.id)
        .unwrap_or_else(|| format!("GRPC-{:?}", status.code()))
}
