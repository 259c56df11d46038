//! Configured routes reached without the router: the connection's service
//! hands a request whose path can only match a configured route straight
//! to that route's composed service (`router::proxied`), the very service
//! the router would call.
//!
//! Why: on the proxied path the router was a cost of its own (about 1 µs of
//! the gateway's ≈ 30 µs per request, docs/benchmarks.md): a pattern
//! lookup, the catch-all's rest of the path percent-decoded into a string
//! and stored with the matched path in the request's extensions, a boxed
//! clone of the route's service, and its request moved through four
//! functions. Here the lookup is the route table's own prefix rule
//! ([`path_has_prefix`], which a property test in `router` holds equal to
//! the router's matching) over the few configured prefixes.
//!
//! What keeps the answers the same: a path under any prefix of the
//! gateway's own endpoints goes to the router, which decides between them
//! and a route at `/`; everything else the router would send to the same
//! configured route (or, matching none, to its fallback: the router again).
//! The route's layers learn nothing from the router: its kind for metrics
//! and its name for the audit trail are fixed when the service is built.
//! What the router does to every answer at the top level is done here too
//! ([`Answer`]): a `Content-Length` from an exact body size, and no body
//! for `HEAD`. `CONNECT` and a target that is not a path (`OPTIONS *`)
//! always take the router (`CONNECT`'s answers have rules of their own
//! there).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, Method, header};
use tower::ServiceExt as _;

use crate::proxy::routes::Route;
use crate::url_policy::path::path_has_prefix;

/// A listener's app: its router and, on the public listener, the
/// configured routes it also reaches without it, and the pages its error
/// answers become for a browser's navigation.
#[derive(Clone)]
pub struct App {
    pub router: Router,
    pub direct: Option<Arc<DirectRoutes>>,
    /// `None` on the side listeners (admin, metrics): API answers only.
    pub pages: Option<Arc<crate::pages::Pages>>,
}

impl From<Router> for App {
    fn from(router: Router) -> Self {
        Self {
            router,
            direct: None,
            pages: None,
        }
    }
}

type Boxed = Pin<Box<dyn Future<Output = Response> + Send>>;

/// A configured route's composed service, called through a shared
/// reference: each call clones the concrete service (reference counts,
/// no allocation) and boxes its future once, as the router's own boxed
/// service would.
pub trait RouteService: Send + Sync {
    fn answer(&self, req: Request) -> Boxed;
}

impl<S> RouteService for S
where
    S: tower::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    fn answer(&self, req: Request) -> Boxed {
        let call = self.clone().oneshot(req);
        Box::pin(async move {
            match call.await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        })
    }
}

/// The configured routes in the route table's order (longest prefix
/// first), and the prefixes that must take the router.
pub struct DirectRoutes {
    routes: Vec<(Arc<Route>, Arc<dyn RouteService>)>,
    own: Vec<String>,
}

impl DirectRoutes {
    /// `routes` as the route table lists them; `own`: the prefixes of the
    /// gateway's own endpoints on this listener.
    pub fn new(routes: Vec<(Arc<Route>, Arc<dyn RouteService>)>, own: Vec<String>) -> Self {
        Self { routes, own }
    }

    /// The service of the configured route that answers `method` on
    /// `path`, when no other endpoint could: `None` means ask the router.
    pub fn find(&self, method: &Method, path: &str) -> Option<&dyn RouteService> {
        // Not a path (`OPTIONS *`): a route at `/` would match it by prefix
        // while the router would not.
        if *method == Method::CONNECT
            || !path.starts_with('/')
            || self.own.iter().any(|p| path_has_prefix(path, p))
        {
            return None;
        }
        self.routes
            .iter()
            .find(|(route, _)| path_has_prefix(path, &route.path))
            .map(|(_, service)| &**service)
    }

    /// Calls `service` (from [`Self::find`]) with `req`.
    pub fn call(service: &dyn RouteService, req: Request) -> Answer {
        let head = *req.method() == Method::HEAD;
        Answer {
            inner: service.answer(req),
            head,
        }
    }
}

/// A directly reached route's answer, finished as the router finishes
/// every answer at the top level.
pub struct Answer {
    inner: Boxed,
    head: bool,
}

impl Future for Answer {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut resp = ready!(self.inner.as_mut().poll(cx));
        if !resp.headers().contains_key(header::CONTENT_LENGTH)
            && let Some(size) = resp.body().size_hint().exact()
        {
            let value = if size == 0 {
                HeaderValue::from_static("0")
            } else {
                HeaderValue::from(size)
            };
            resp.headers_mut().insert(header::CONTENT_LENGTH, value);
        }
        if self.head {
            *resp.body_mut() = Body::empty();
        }
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    use super::super::tests::table_of as table;

    /// A route service that answers with its route's prefix.
    #[derive(Clone)]
    struct Named(&'static str);

    impl tower::Service<Request> for Named {
        type Response = Response;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            std::future::ready(Ok(Response::new(Body::from(self.0))))
        }
    }

    fn direct(paths: &[&'static str], own: &[&str]) -> DirectRoutes {
        let table = table(paths);
        let routes = table
            .iter()
            .map(|r| {
                let name: &'static str = paths.iter().find(|p| **p == r.path).expect("path");
                (r.clone(), Arc::new(Named(name)) as Arc<dyn RouteService>)
            })
            .collect();
        DirectRoutes::new(routes, own.iter().map(|s| s.to_string()).collect())
    }

    async fn answered(d: &DirectRoutes, method: Method, path: &str) -> Option<(String, Response)> {
        let service = d.find(&method, path)?;
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let Ok(mut resp) = DirectRoutes::call(service, req).await;
        let body = std::mem::take(resp.body_mut());
        let bytes = body.collect().await.expect("body").to_bytes();
        Some((String::from_utf8_lossy(&bytes).into_owned(), resp))
    }

    #[tokio::test]
    async fn a_path_goes_to_the_longest_configured_prefix_on_a_segment_boundary() {
        let d = direct(&["/api", "/api/v2"], &["/auth", "/healthz", "/readyz"]);
        let name = |p: &'static str| {
            let d = &d;
            async move { answered(d, Method::GET, p).await.map(|(n, _)| n) }
        };
        assert_eq!(name("/api").await.as_deref(), Some("/api"));
        assert_eq!(name("/api/x").await.as_deref(), Some("/api"));
        assert_eq!(name("/api/v2/x").await.as_deref(), Some("/api/v2"));
        assert_eq!(name("/api/v20").await.as_deref(), Some("/api"));
        assert_eq!(
            name("/apix").await,
            None,
            "not under a prefix: the router's fallback"
        );
    }

    #[tokio::test]
    async fn the_gateways_own_prefixes_and_connect_take_the_router_even_under_a_route_at_the_root()
    {
        let d = direct(&["/"], &["/auth", "/healthz", "/readyz", "/hooks/auth"]);
        for own in [
            "/auth",
            "/auth/login",
            "/auth/anything",
            "/healthz",
            "/readyz",
            "/hooks/auth/x",
        ] {
            assert!(answered(&d, Method::GET, own).await.is_none(), "{own}");
        }
        assert!(d.find(&Method::CONNECT, "/app").is_none());
        assert!(d.find(&Method::OPTIONS, "*").is_none(), "asterisk form");
        let (name, _) = answered(&d, Method::GET, "/authx")
            .await
            .expect("root route");
        assert_eq!(name, "/");
    }

    #[tokio::test]
    async fn answers_get_their_length_and_head_answers_no_body_as_from_the_router() {
        let d = direct(&["/api"], &[]);
        let (body, resp) = answered(&d, Method::GET, "/api/x").await.expect("route");
        assert_eq!(body, "/api");
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "4");
        let (body, resp) = answered(&d, Method::HEAD, "/api/x").await.expect("route");
        assert_eq!(body, "", "HEAD: no body");
        assert_eq!(
            resp.headers()[header::CONTENT_LENGTH],
            "4",
            "HEAD: the GET's length"
        );
    }
}
