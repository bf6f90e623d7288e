//! The hot RPCs' REST routes, matched by the edge before axum's router.
//!
//! Unlock, lock, deactivate, reactivate and GetUserByID are what a platform hammers. Through
//! axum's router each request paid for the route lookup, its path parameters (percent-decoded
//! into a vector of shared strings in the request's extensions), a per-route service clone and
//! four nested futures: a REST lock costs ≈ 43,600 userland instructions this way against
//! ≈ 49,200 that way, a GetUserByID ≈ 25,900 against ≈ 31,200 (docs/performance.md,
//! "Instructions per request"). Here a request whose method and path fit one of these rows goes
//! straight to the same REST handler code (`rest::answer_with_path`), with the same per-route
//! metrics; anything else — another method, a percent-encoded segment, a trailing slash —
//! goes on to axum's router and is answered exactly as before.

use std::convert::Infallible;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;

use crate::metrics::{RouteMetrics, TrackedFuture};
use crate::rpc::{get_user, user_state, Routed};
use crate::server::AppState;
use crate::unread_body;

/// A hot route's answer, with its route's metrics recorded when it is ready.
pub type HotFuture = TrackedFuture<Answer>;

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The hot routes over one server's state.
#[derive(Clone)]
pub struct HotRoutes {
    state: AppState,
    routes: Arc<[HotRoute]>,
}

struct HotRoute {
    method: Method,
    /// The REST path of the RPC table's row around its one id: `/v2/users/`, `userId`, `/lock`.
    prefix: &'static str,
    param: &'static str,
    suffix: &'static str,
    answer: fn(AppState, Request, &'static str, Range<usize>) -> Answer,
    metrics: Arc<RouteMetrics>,
}

impl HotRoute {
    /// `R`'s row as a hot route; `None` unless its path carries exactly one id.
    fn of<R: Routed>() -> Option<Self> {
        let (prefix, rest) = R::INFO.rest.split_once('{')?;
        let (param, suffix) = rest.split_once('}')?;
        if suffix.contains('{') || !prefix.ends_with('/') {
            return None;
        }
        Some(HotRoute {
            method: R::INFO.verb.method(),
            prefix,
            param,
            suffix,
            answer: answer::<R>,
            // The same labels as the route axum serves (`rest::routes`), so the same series.
            metrics: RouteMetrics::new(R::INFO.rest, "rest"),
        })
    }

    /// Where `path` has this route's id: the same text around one segment that is not empty
    /// and has nothing to percent-decode (such a path is left to axum's router, which decodes).
    fn id_in(&self, path: &str) -> Option<Range<usize>> {
        let id = path.strip_prefix(self.prefix)?.strip_suffix(self.suffix)?;
        let plain = !id.is_empty() && !id.bytes().any(|b| b == b'/' || b == b'%');
        plain.then(|| self.prefix.len()..self.prefix.len() + id.len())
    }
}

impl HotRoutes {
    pub fn new(state: AppState) -> Self {
        let routes = [
            HotRoute::of::<user_state::UnlockUser>(),
            HotRoute::of::<user_state::LockUser>(),
            HotRoute::of::<get_user::GetUserById>(),
            HotRoute::of::<user_state::DeactivateUser>(),
            HotRoute::of::<user_state::ReactivateUser>(),
        ];
        HotRoutes {
            state,
            routes: routes.into_iter().flatten().collect(),
        }
    }

    /// The answer to `request` if it is a hot route's, else the request back for the router.
    // Handed back by value: boxing it would be an allocation for every request not hot.
    #[allow(clippy::result_large_err)]
    pub fn call(&self, request: Request) -> Result<HotFuture, Request> {
        let path = request.uri().path();
        let found = self
            .routes
            .iter()
            .filter(|route| route.method == request.method())
            .find_map(|route| Some((route, route.id_in(path)?)));
        match found {
            Some((route, id)) => Ok(TrackedFuture::new(
                route.metrics.clone(),
                (route.answer)(self.state.clone(), request, route.param, id),
            )),
            None => Err(request),
        }
    }
}

/// `R`'s REST answer, its id (`param`) at `at` in the request's path.
fn answer<R: Routed>(
    state: AppState,
    request: Request,
    param: &'static str,
    at: Range<usize>,
) -> Answer {
    Box::pin(async move {
        let (parts, mut body) = request.into_parts();
        let id = parts.uri.path().get(at).map(|id| (param, id));
        let mut response = crate::rest::answer_with_path::<R>(&state, id, &parts, &mut body).await;
        // The body is still here: whether it was read is seen on it, with no watcher (edge.rs).
        unread_body::close_if_unread(parts.version, &body, &mut response);
        Ok(response)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_in(route: &HotRoute, path: &str) -> Option<String> {
        route.id_in(path).map(|at| path[at].to_owned())
    }

    #[test]
    fn a_path_fits_its_row_around_one_plain_id() {
        let unlock = HotRoute::of::<user_state::UnlockUser>().unwrap();
        assert_eq!(
            (unlock.prefix, unlock.param, unlock.suffix),
            ("/v2/users/", "userId", "/unlock")
        );
        assert_eq!(
            id_in(&unlock, "/v2/users/123/unlock").as_deref(),
            Some("123")
        );
        for other in [
            "/v2/users/123/lock",
            "/v2/users//unlock",
            "/v2/users/123/unlock/",
            "/v2/users/123",
            "/v2/users/1/2/unlock",
            "/v2/users/%31%32/unlock",
            "v2/users/123/unlock",
            "/v2/users/unlock",
        ] {
            assert_eq!(id_in(&unlock, other), None, "{other}");
        }
        let get = HotRoute::of::<get_user::GetUserById>().unwrap();
        assert_eq!(get.suffix, "");
        assert_eq!(id_in(&get, "/v2/users/123").as_deref(), Some("123"));
        assert_eq!(id_in(&get, "/v2/users/123/"), None);
        assert_eq!(id_in(&get, "/v2/users/"), None);
        assert_eq!(id_in(&get, "/v2/users"), None);
    }

    #[test]
    fn only_rows_with_one_id_can_be_hot() {
        assert!(HotRoute::of::<crate::rpc::pats::RemovePersonalAccessToken>().is_none());
        assert!(HotRoute::of::<crate::rpc::list_users::ListUsers>().is_none());
    }
}
