//! Every route of the public listener, registered in one function, and the
//! layers around them, applied in one place.

use std::sync::Arc;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{MethodRouter, any, get, post};
use axum::{Extension, Router};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use crate::config::RouteAuth;
use crate::error::AppError;
use crate::middleware::{self, csrf, error_pages, track};
use crate::proxy::handler;
use crate::proxy::routes::Route;
use crate::routes;
use crate::security_headers;
use crate::state::AppState;

/// The public listener's app.
pub fn build_router(state: AppState) -> Router {
    let router = Router::new()
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
        .route("/readyz", get(routes::health::readyz))
        .fallback(routes::static_files::serve);
    // The gateway's own endpoints read bodies into memory: bounded here.
    // Added before the proxied routes, so it does not wrap them: their
    // bodies stream to the upstream unbuffered.
    let mut router = limit_body(router, state.config.server.limits.max_body_bytes);

    // Each configured route is registered on the router, so the prefix is
    // matched once and the route's own handler, CSRF rule and guard apply.
    for route in state.routes.iter() {
        let methods = proxy_methods(&state, route);
        for pattern in route.router_patterns() {
            router = router.route(&pattern, methods.clone());
        }
    }

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
    middleware::with_request_log(router, state.config.log.access_log).with_state(state)
}

/// `router`'s routes (and fallback) with request bodies of at most `max`
/// bytes: a larger body is refused with 413 before the handler runs.
pub fn limit_body<S: Clone + Send + Sync + 'static>(router: Router<S>, max: usize) -> Router<S> {
    router.layer(axum::middleware::from_fn_with_state(max, read_body_within))
}

/// Reads the whole body, at most `max` bytes, so that every handler behind
/// it gets a bounded body whatever the framing: a declared length over the
/// limit is refused unread, a chunked body as soon as it passes it.
async fn read_body_within(State(max): State<usize>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let size = body.size_hint();
    if size.exact() == Some(0) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    if size.lower() > u64::try_from(max).unwrap_or(u64::MAX) {
        return AppError::PayloadTooLarge.into_response();
    }
    match Limited::new(body, max).collect().await {
        Ok(read) => {
            let body = Body::from(read.to_bytes());
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) if e.is::<LengthLimitError>() => AppError::PayloadTooLarge.into_response(),
        Err(_) => {
            AppError::BadRequest("The request body could not be read.".into()).into_response()
        }
    }
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
