//! The RPCs: one table of every method Latchkey serves ([`rpcs!`] below), and one file per
//! command, each an [`Rpc`] — its generated protobuf request and response types and the engine
//! call between them. REST (`rest.rs`), Connect (`connect.rs`) and gRPC / gRPC-web (`grpc.rs`) are
//! generic adapters over these, and derive their routes from the table, so a command's behaviour
//! is written once, whatever the transport, and a new RPC cannot be served on one protocol and
//! forgotten on another.
//!
//! There is one wire model: the types generated from `proto/`. JSON bodies (REST, Connect JSON)
//! are decoded by their protojson impls, binary ones (Connect binary, gRPC, gRPC-web) by prost;
//! each command converts the message once into the engine's input types, and answers with the
//! response message, so an answer that does not fit its message does not compile.

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use serde::Serialize;

use latchkey_engine::{Caller, Engine, Error, ErrorId};

use crate::server::AppState;

pub mod add_human_user;
pub mod add_organization;
pub mod bulk_unlock;
pub mod create_administrator;
pub mod create_user;
pub mod get_user;
pub mod list_sessions;
pub mod list_users;
pub mod lockout_policy;
pub mod pats;
pub mod sessions;
pub mod set_password;
pub mod user_events;
pub mod user_state;

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1024 * 1024;

const USER: &str = "zitadel.user.v2.UserService";
const ORG: &str = "zitadel.org.v2.OrganizationService";
const PERMISSION: &str = "zitadel.internal_permission.v2beta.InternalPermissionService";
const SESSION: &str = "zitadel.session.v2.SessionService";
const SETTINGS: &str = "zitadel.settings.v2.SettingsService";
const ADMIN: &str = "zitadel.admin.v1.AdminService";
const MANAGEMENT: &str = "zitadel.management.v1.ManagementService";
const HISTORY: &str = "latchkey.v1.UserHistoryService";
const BULK: &str = "latchkey.v1.BulkUnlockService";

/// The one table of RPCs: type, service and method, REST verb and path, the permission the
/// engine checks. Everything else — REST routes, Connect and gRPC method paths, the gRPC health
/// service's list, the tests that call every method over every protocol — is derived from it.
macro_rules! rpcs {
    ($( $rpc:ty => $service:ident $method:literal, $verb:ident $rest:literal $(($status:literal))?, $permission:literal; )*) => {
        $(
            impl Routed for $rpc {
                const INFO: MethodInfo = MethodInfo {
                    service: $service,
                    method: $method,
                    verb: Verb::$verb,
                    rest: $rest,
                    rest_status: rest_status(&[$($status)?]),
                    permission: $permission,
                };
            }
        )*

        /// Every RPC, in the table's order.
        pub const METHODS: &[MethodInfo] = &[$(<$rpc as Routed>::INFO,)*];

        /// Calls `visitor` once per RPC, with its type.
        pub fn for_each(visitor: &mut impl Visitor) {
            $( visitor.visit::<$rpc>(); )*
        }
    };
}

rpcs! {
    user_state::UnlockUser => USER "UnlockUser", Post "/v2/users/{userId}/unlock", "user.write";
    user_state::LockUser => USER "LockUser", Post "/v2/users/{userId}/lock", "user.write";
    user_state::DeactivateUser => USER "DeactivateUser", Post "/v2/users/{userId}/deactivate", "user.write";
    user_state::ReactivateUser => USER "ReactivateUser", Post "/v2/users/{userId}/reactivate", "user.write";
    user_state::DeleteUser => USER "DeleteUser", Delete "/v2/users/{userId}", "user.delete";
    get_user::GetUserById => USER "GetUserByID", Get "/v2/users/{userId}", "user.read";
    list_users::ListUsers => USER "ListUsers", Post "/v2/users", "user.read";
    add_human_user::AddHumanUser => USER "AddHumanUser", Post "/v2/users/human", "user.write on the org";
    create_user::CreateUser => USER "CreateUser", Post "/v2/users/new", "user.write on the org";
    pats::AddPersonalAccessToken => USER "AddPersonalAccessToken", Post "/v2/users/{userId}/pats", "user.write";
    pats::RemovePersonalAccessToken => USER "RemovePersonalAccessToken", Delete "/v2/users/{userId}/pats/{tokenId}", "user.write";
    set_password::SetPassword => USER "SetPassword", Post "/v2/users/{userId}/password", "user.write";
    add_organization::AddOrganization => ORG "AddOrganization", Post "/v2/organizations", "IAM_OWNER";
    create_administrator::CreateAdministrator => PERMISSION "CreateAdministrator", Post "/v2beta/administrators", "IAM_OWNER, or ORG_OWNER of that org";
    sessions::CreateSession => SESSION "CreateSession", Post "/v2/sessions" (201), "session.write on the instance";
    sessions::SetSession => SESSION "SetSession", Patch "/v2/sessions/{sessionId}", "session.write on the user's org";
    sessions::GetSession => SESSION "GetSession", Get "/v2/sessions/{sessionId}", "the session token, its creator or user, else session.read";
    list_sessions::ListSessions => SESSION "ListSessions", Post "/v2/sessions/search", "per session, as GetSession";
    sessions::DeleteSession => SESSION "DeleteSession", Delete "/v2/sessions/{sessionId}", "the session token, its user, else session.delete";
    lockout_policy::GetLockoutSettings => SETTINGS "GetLockoutSettings", Get "/v2/settings/lockout", "policy.read";
    lockout_policy::AdminGetLockoutPolicy => ADMIN "GetLockoutPolicy", Get "/admin/v1/policies/lockout", "policy.read";
    lockout_policy::AdminUpdateLockoutPolicy => ADMIN "UpdateLockoutPolicy", Put "/admin/v1/policies/password/lockout", "iam.policy.write (IAM_OWNER)";
    lockout_policy::GetLockoutPolicy => MANAGEMENT "GetLockoutPolicy", Get "/management/v1/policies/lockout", "policy.read on the org";
    lockout_policy::GetDefaultLockoutPolicy => MANAGEMENT "GetDefaultLockoutPolicy", Get "/management/v1/policies/default/lockout", "policy.read";
    lockout_policy::AddCustomLockoutPolicy => MANAGEMENT "AddCustomLockoutPolicy", Post "/management/v1/policies/lockout", "policy.write on the org";
    lockout_policy::UpdateCustomLockoutPolicy => MANAGEMENT "UpdateCustomLockoutPolicy", Put "/management/v1/policies/lockout", "policy.write on the org";
    lockout_policy::ResetLockoutPolicyToDefault => MANAGEMENT "ResetLockoutPolicyToDefault", Delete "/management/v1/policies/lockout", "policy.write on the org";
    user_events::ListUserEvents => HISTORY "ListUserEvents", Post "/latchkey/v1/users/{userId}/events", "user.read";
    bulk_unlock::StartBulkUnlock => BULK "StartBulkUnlock", Post "/latchkey/v1/bulk_unlocks", "user.write (the job covers what the caller reaches)";
    bulk_unlock::GetBulkUnlock => BULK "GetBulkUnlock", Get "/latchkey/v1/bulk_unlocks/{jobId}", "user.write covering the job's scope";
}

/// A row's REST success status: 200 unless the row names another (`(201)`).
const fn rest_status(given: &[u16]) -> u16 {
    match given {
        [status] => *status,
        _ => 200,
    }
}

/// The REST verb of an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }

    pub fn method(self) -> axum::http::Method {
        use axum::http::Method;
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Patch => Method::PATCH,
            Verb::Delete => Method::DELETE,
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// Full service name, e.g. `zitadel.user.v2.UserService`.
    pub service: &'static str,
    /// Method name, e.g. `UnlockUser`.
    pub method: &'static str,
    pub verb: Verb,
    /// REST path; `{name}` segments set request fields ([`Rpc::set_path`]).
    pub rest: &'static str,
    /// REST success status (the gateway's `http_response.success_code`; Connect and gRPC always
    /// answer 200 / OK).
    pub rest_status: u16,
    /// The permission the engine checks, as the README documents it.
    pub permission: &'static str,
}

impl MethodInfo {
    /// The method path: `/<package>.<Service>/<Method>` (Connect, gRPC and gRPC-web).
    pub fn path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }

    /// The names of the REST path's `{…}` segments.
    pub fn path_params(&self) -> impl Iterator<Item = &'static str> {
        self.rest
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
    }
}

/// The services the table names, each once, in the table's order.
pub fn services() -> Vec<&'static str> {
    let mut services: Vec<&'static str> = Vec::new();
    for info in METHODS {
        if !services.contains(&info.service) {
            services.push(info.service);
        }
    }
    services
}

/// What a command is called with besides its message: the engine, the authenticated caller and
/// the request's headers (gRPC metadata), for the few commands that read one.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub engine: &'a Engine,
    pub caller: &'a Caller,
    pub headers: &'a HeaderMap,
}

impl Call<'_> {
    /// The management API's organization context: `x-zitadel-orgid`, else the caller's own
    /// organization (as ZITADEL resolves it).
    pub fn org_context(&self) -> Result<&str, Error> {
        match self.headers.get("x-zitadel-orgid") {
            None => Ok(&self.caller.org_id),
            Some(value) => value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|org| !org.is_empty())
                .ok_or_else(|| Error::invalid("x-zitadel-orgid must name an organization")),
        }
    }
}

/// One command: its messages and the engine call between them.
pub trait Rpc: Send + Sync + 'static {
    /// The request message; its protojson impl decodes JSON bodies.
    type Request: prost::Message + Default + Clone + DeserializeOwned + Send + 'static;
    /// The response message; its protojson impl writes JSON answers.
    type Response: prost::Message + Default + Serialize + Send + 'static;

    /// Converts the request into the engine's input, calls the engine, answers.
    fn call(
        call: Call<'_>,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Response, Error>> + Send;

    /// The store scope the request must be served where (a user's, a session's): in cluster
    /// mode the call runs on the node that owns it (`cluster.rs`). `None`: anywhere.
    fn scope(_call: &Call<'_>, _request: &Self::Request) -> Option<Vec<u8>> {
        None
    }

    /// The login name the request names its user by, when it has no [`Rpc::scope`]: in cluster
    /// mode the user is looked up (`Engine::user_id_by_login_name`) and the call runs on the node
    /// that owns it. `None`: nothing to look up.
    fn login_name(_request: &Self::Request) -> Option<&str> {
        None
    }

    /// Sets the REST path segment `name` (`userId`, …) on the request: the path wins over the
    /// body. False for a name the request does not take (a unit test keeps the table honest).
    fn set_path(_request: &mut Self::Request, _name: &str, _value: &str) -> bool {
        false
    }

    /// Sets a REST query parameter (`sessionToken`, `ctx.orgId`, …) of a GET: grpc-gateway
    /// fills any request field from the query string and ignores names it does not know; so
    /// does the default.
    fn set_query(_request: &mut Self::Request, _name: &str, _value: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Writes the answer as JSON: the protojson impl, unless the RPC knows a cheaper way to
    /// exactly the same bytes.
    fn write_json(response: &Self::Response, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, response)
    }
}

/// An RPC with its row of the table (implemented by [`rpcs!`] only).
pub trait Routed: Rpc {
    const INFO: MethodInfo;
}

/// Something done once per RPC: see [`for_each`].
pub trait Visitor {
    fn visit<R: Routed>(&mut self);
}

/// `Authorization: Bearer <token>` → the caller.
pub async fn authenticate(engine: &Engine, headers: &HeaderMap) -> Result<Arc<Caller>, Error> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ErrorId::Unauthenticated)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(ErrorId::Unauthenticated)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ErrorId::Unauthenticated.into());
    }
    engine.authenticate(token.trim()).await
}

/// The whole body, at most [`BODY_LIMIT`] bytes (413 beyond).
pub async fn read_body(body: &mut Body) -> Result<Bytes, Error> {
    use http_body::Body as _;
    // Nearly every body is one frame (its length was announced and it came with the head): take
    // it as is, without collecting through a buffer list. Anything longer is collected.
    if body.size_hint().lower() > BODY_LIMIT as u64 {
        return Err(Error::new(ErrorId::BodyTooLarge));
    }
    let first = match std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await
    {
        None => return Ok(Bytes::new()),
        Some(Err(_)) => return Err(broken_body()),
        Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
    };
    if first.len() > BODY_LIMIT {
        return Err(Error::new(ErrorId::BodyTooLarge));
    }
    if body.is_end_stream() {
        return Ok(first);
    }
    let rest = collect_body(body, BODY_LIMIT - first.len()).await?;
    Ok([first, rest].concat().into())
}

fn broken_body() -> Error {
    Error::with(ErrorId::MalformedBody, "request body could not be read")
}

/// The rest of `body`, read in place: a body cut short at the limit stays unread past it, which
/// the keep-alive rule (`unread_body.rs`) must see.
async fn collect_body(body: &mut Body, limit: usize) -> Result<Bytes, Error> {
    use http_body_util::BodyExt;
    let collected = http_body_util::Limited::new(body, limit).collect().await;
    collected.map(|c| c.to_bytes()).map_err(|e| {
        // An oversized body is the limit's own error type; anything else is a broken stream.
        if e.is::<http_body_util::LengthLimitError>() {
            Error::new(ErrorId::BodyTooLarge)
        } else {
            broken_body()
        }
    })
}

/// A JSON body as the message: an empty body is the empty message; unknown fields are ignored.
pub fn decode_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Error::with(
            ErrorId::MalformedBody,
            format!("request body is not valid JSON for this method: {e}"),
        )
    })
}

/// A binary body as the message.
pub fn decode_proto<T: prost::Message + Default>(bytes: &[u8]) -> Result<T, Error> {
    T::decode(bytes).map_err(|e| {
        Error::with(
            ErrorId::MalformedBody,
            format!("request body is not a valid protobuf message for this method: {e}"),
        )
    })
}

/// The JSON protocols' entry: authenticates, reads and decodes the body, lets the transport set
/// path values, calls.
pub async fn run_json<R: Routed>(
    app: &AppState,
    headers: &HeaderMap,
    body: &mut Body,
    fill: impl FnOnce(&mut R::Request) -> Result<(), Error>,
) -> Result<R::Response, Error> {
    let engine = &app.engine;
    let caller = authenticate(engine, headers).await?;
    let bytes = read_body(body).await?;
    let mut request: R::Request = decode_json(&bytes)?;
    fill(&mut request)?;
    run::<R>(app, &caller, headers, request).await
}

/// Calls here, or — in cluster mode, for a request another node serves — there.
async fn run<R: Routed>(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: R::Request,
) -> Result<R::Response, Error> {
    let call = Call {
        engine: &app.engine,
        caller,
        headers,
    };
    // Cluster mode's futures are boxed: inline, their state (forwarding over NATS) would be
    // moved with every embedded request's future too. (Two allocations per request in cluster
    // mode, where a write waits on a stream's acknowledgement anyway.)
    if let Some(router) = &app.router {
        if let Some(scope) = Box::pin(placement::<R>(&call, &request)).await {
            return Box::pin(router.call::<R>(&app.engine, caller, headers, &scope, request)).await;
        }
    }
    R::call(call, request).await
}

/// In cluster mode, the scope whose owner serves the request: its [`Rpc::scope`], or its user's
/// found by its [`Rpc::login_name`]. `None`: it runs where it arrives (a login name that names no
/// user, as far as this node's view knows, is answered here with the same miss).
pub async fn placement<R: Rpc>(call: &Call<'_>, request: &R::Request) -> Option<Vec<u8>> {
    if let Some(scope) = R::scope(call, request) {
        return Some(scope);
    }
    let name = R::login_name(request)?;
    let id = call.engine.user_id_by_login_name(name).await?;
    Some(latchkey_engine::snapshot_key(&id))
}

/// The binary protocols' entry: authenticates from `headers`, decodes `bytes` as the method's
/// request message, calls.
pub async fn run_proto<R: Routed>(
    app: &AppState,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<R::Response, Error> {
    let caller = authenticate(&app.engine, headers).await?;
    let request = decode_proto::<R::Request>(bytes)?;
    run::<R>(app, &caller, headers, request).await
}

#[cfg(test)]
mod tests;
