//! The gRPC baseline: what tonic alone costs for the harness's gRPC requests.
//!
//! Like the HTTP baseline (`servers.rs`), a separate process answering the same methods with a
//! fixed message — here through tonic's own unary path (`Grpc::unary` with prost's codec, which
//! decodes the request and encodes the answer) over h2c, with no authentication, no engine and
//! no store. The gRPC rows of docs/performance.md compare Latchkey's gRPC server with it, driven by
//! the same client.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::marker::PhantomData;

use axum::Router;
use bytes::Bytes;
use latchkey_api::proto::zitadel::object::v2::Details;
use latchkey_api::proto::zitadel::user::v2 as user;
use latchkey_api::wire::Timestamp;
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, UnaryService};
use tonic::Status;
use tonic_prost::ProstCodec;

/// One method answering `answer` to every request of type `Req`.
struct Fixed<Req, Resp> {
    answer: Resp,
    request: PhantomData<fn() -> Req>,
}

impl<Req, Resp: Clone> Clone for Fixed<Req, Resp> {
    fn clone(&self) -> Self {
        Fixed {
            answer: self.answer.clone(),
            request: PhantomData,
        }
    }
}

impl<Req, Resp> UnaryService<Req> for Fixed<Req, Resp>
where
    Resp: Clone,
{
    type Response = Resp;
    type Future = Ready<Result<tonic::Response<Resp>, Status>>;

    fn call(&mut self, _request: tonic::Request<Req>) -> Self::Future {
        ready(Ok(tonic::Response::new(self.answer.clone())))
    }
}

impl<Req, Resp, B> Service<http::Request<B>> for Fixed<Req, Resp>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Clone + Send + Sync + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Resp, Req>::default());
            Ok(grpc.unary(method, request).await)
        })
    }
}

fn fixed<Req, Resp>(answer: Resp) -> Fixed<Req, Resp> {
    Fixed {
        answer,
        request: PhantomData,
    }
}

/// Serves LockUser, UnlockUser and GetUserByID with fixed answers until the process ends.
pub async fn serve(listen: std::net::SocketAddr) -> std::io::Result<()> {
    let details = Some(Details {
        sequence: 3,
        change_date: Some(Timestamp {
            seconds: 1_741_210_162,
            nanos: 46_000_000,
        }),
        resource_owner: "69629023906488334".into(),
        creation_date: Some(Timestamp {
            seconds: 1_741_210_160,
            nanos: 0,
        }),
    });
    let service = "/zitadel.user.v2.UserService";
    let app = Router::new()
        .route_service(
            &format!("{service}/LockUser"),
            fixed::<user::LockUserRequest, _>(user::LockUserResponse {
                details: details.clone(),
            }),
        )
        .route_service(
            &format!("{service}/UnlockUser"),
            fixed::<user::UnlockUserRequest, _>(user::UnlockUserResponse {
                details: details.clone(),
            }),
        )
        .route_service(
            &format!("{service}/GetUserByID"),
            fixed::<user::GetUserByIdRequest, _>(user::GetUserByIdResponse {
                details,
                ..Default::default()
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("baseline listening on http://{}", listener.local_addr()?);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
