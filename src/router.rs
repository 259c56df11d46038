//! Every route of the public listener, registered in one function, and the
//! layers around them, applied in one place.

use std::sync::Arc;

use axum::routing::{MethodRouter, any, get, post};
use axum::{Extension, Router};

use crate::config::RouteAuth;
use crate::middleware::{self, csrf, error_pages, track};
use crate::proxy::handler;
use crate::proxy::routes::Route;
use crate::routes;
use crate::security_headers;
use crate::state::AppState;

/// The public listener's app.
pub fn build_router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/auth/login", get(routes::auth::login))
        .route("/auth/callback", get(routes::auth::callback))
        .route(
            "/auth/logout",
            post(routes::logout::logout).get(routes::logout::logout_get),
        )
        .route("/auth/logout/end", get(routes::logout::logout_end))
        .route("/auth/logged-out", get(routes::logout::logged_out))
        .route("/auth/user", get(routes::user::user))
        .route("/auth/sessions", get(routes::sessions::list))
        .route(
            "/auth/sessions/{id}/revoke",
            with_csrf(&state, post(routes::sessions::revoke)),
        )
        .route(
            "/auth/backchannel-logout",
            post(routes::backchannel::logout),
        )
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz));

    // Each configured route is registered on the router, so the prefix is
    // matched once and the route's own handler, CSRF rule and guard apply.
    for route in state.routes.iter() {
        let methods = proxy_methods(&state, route);
        for pattern in route.router_patterns() {
            router = router.route(&pattern, methods.clone());
        }
    }
    let router = router.fallback(routes::static_files::serve);

    // Layers run outside-in on requests. From the outside: a request ID is
    // assigned (or kept) and echoed on the response, so the access log and
    // every log line below carry it; security headers are set by response
    // kind on whatever comes back; metrics count what the client gets; errors
    // become pages for browser navigations, innermost, so the page sees the
    // handler's own response.
    let router = router
        .layer(axum::middleware::from_fn_with_state(
            state.pages.clone(),
            error_pages::render_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            track::track,
        ))
        .layer(axum::middleware::map_response(security_headers::apply));
    middleware::with_request_log(
        router,
        state.config.log.access_log,
        state.client_address.clone(),
    )
    .with_state(state)
}

/// `methods` behind the anti-CSRF rule (state-changing methods need the
/// header).
fn with_csrf(state: &AppState, methods: MethodRouter<AppState>) -> MethodRouter<AppState> {
    methods.layer(axum::middleware::from_fn_with_state(
        state.csrf.clone(),
        csrf::require_on_unsafe_methods,
    ))
}

/// The handler of one configured route with its layers: the route itself
/// (as an extension), the guard, and on session routes the CSRF rule.
fn proxy_methods(state: &AppState, route: &Arc<Route>) -> MethodRouter<AppState> {
    let methods = match route.auth {
        RouteAuth::Required => with_csrf(state, any(handler::required)),
        RouteAuth::Optional => with_csrf(state, any(handler::optional)),
        RouteAuth::None => any(handler::public),
    };
    let guarded: MethodRouter<AppState> = methods.layer(axum::middleware::from_fn_with_state(
        state.forwarder.clone(),
        handler::guard,
    ));
    guarded.layer(Extension(route.clone()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use tower::ServiceExt;

    use super::*;
    use crate::config::RouteConfig;
    use crate::proxy::routes::RouteTable;

    fn table() -> RouteTable {
        let route = |path: &str| RouteConfig {
            path: path.into(),
            upstream: "http://127.0.0.1:9".parse().expect("url"),
            strip_prefix: false,
            auth: RouteAuth::None,
            timeout: Duration::from_secs(1),
            forward_cookies: false,
        };
        RouteTable::new(&[
            route("/api"),
            route("/api/v2"),
            route("/a{b}"),
            route("/files.d"),
        ])
        .expect("table")
    }

    /// A router whose routes answer with the prefix they were registered
    /// for, as `build_router` registers them.
    fn answering_router(table: &RouteTable) -> Router {
        let mut router = Router::new();
        for route in table.iter() {
            let name = route.path.clone();
            for pattern in route.router_patterns() {
                let name = name.clone();
                router = router.route(&pattern, axum::routing::any(move || async move { name }));
            }
        }
        router.fallback(|| async { "(fallback)" })
    }

    async fn matched(router: &Router, path: &str) -> String {
        let Ok(req) = http::Request::builder().uri(path).body(Body::empty()) else {
            return "(invalid)".into();
        };
        let Ok(resp) = router.clone().oneshot(req).await;
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "api", "v2", "v20", "a{b}", "a", "files.d", "x", "", ".", "%2e", "api%2F", "v2.json",
        ]);
        prop::collection::vec(segment, 0..5).prop_map(|segs| format!("/{}", segs.join("/")))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// The router picks exactly the route `RouteTable::find` (the
        /// longest prefix on a segment boundary) names, or the fallback.
        #[test]
        fn the_router_matches_route_prefixes_as_the_route_table_specifies(path in path_strategy()) {
            let table = table();
            let router = answering_router(&table);
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let got = runtime.block_on(matched(&router, &path));
            if got != "(invalid)" {
                let want = table.find(&path).map_or("(fallback)".to_owned(), |r| r.path.clone());
                prop_assert_eq!(got, want, "path {}", path);
            }
        }
    }
}
