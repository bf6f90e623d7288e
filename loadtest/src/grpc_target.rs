//! The gRPC target: the same operations as the HTTP target, as a gRPC client sends them — the
//! generated tonic client over h2c, the bearer token as metadata, the stable error id read from
//! `grpc-status-details-bin`. Requests are spread over a few HTTP/2 connections (each carries
//! many concurrent streams, as real gRPC clients do).

use std::sync::atomic::{AtomicUsize, Ordering};

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

pub struct GrpcTarget {
    channels: Vec<Channel>,
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
        let authorization = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not valid gRPC metadata".to_owned())?;
        Ok(GrpcTarget {
            channels,
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

    pub async fn run(&self, op: Op, user_id: &str) -> Outcome {
        if let Some(password) = op.password() {
            return self.login(user_id, password).await;
        }
        let mut client = self.client();
        let user_id = user_id.to_owned();
        let result = match op {
            Op::Lock => client
                .lock_user(self.request(user::LockUserRequest { user_id }))
                .await
                .map(drop),
            Op::Unlock => client
                .unlock_user(self.request(user::UnlockUserRequest { user_id }))
                .await
                .map(drop),
            Op::Get | Op::Login | Op::WrongLogin => client
                .get_user_by_id(self.request(user::GetUserByIdRequest { user_id }))
                .await
                .map(drop),
        };
        result.map_err(|status| error_id(&status))
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
