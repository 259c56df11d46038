//! oidc-bff: an OAuth2/OpenID Connect backend-for-frontend gateway.
//!
//! The browser logs in through the gateway (authorization code + PKCE);
//! tokens stay server-side, encrypted in the session store; API calls are
//! proxied with the access token attached. See `docs/architecture.md`.

pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod oidc;
pub mod pages;
pub mod proxy;
pub mod routes;
pub mod secret;
pub mod server;
pub mod session;
pub mod state;
pub mod telemetry;
pub mod url_policy;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderName;
use axum::routing::{get, post};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::session::store::SessionStore;
pub use crate::state::AppState;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route of the gateway, with its layers.
pub fn build_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/auth/login", get(routes::auth::login))
        .route("/auth/callback", get(routes::auth::callback))
        .route(
            "/auth/logout",
            post(routes::auth::logout).get(routes::auth::logout_get),
        )
        .route("/auth/logout/end", get(routes::auth::logout_end))
        .route("/auth/logged-out", get(routes::auth::logged_out))
        .route("/auth/user", get(routes::user::user))
        .route("/auth/sessions", get(routes::sessions::list))
        .route("/auth/sessions/{id}/revoke", post(routes::sessions::revoke))
        .route(
            "/auth/backchannel-logout",
            post(routes::backchannel::logout),
        )
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .fallback(proxy::handle);

    // Layers run outside-in on requests. From the outside: a request ID is
    // assigned (or kept) and echoed on the response, so the access log and
    // every log line below carry it; metrics count what the client gets;
    // errors become pages for browser navigations, innermost, so the page
    // sees the handler's own response.
    let router = router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pages::render_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ));
    with_request_log(router, state.config.log.access_log).with_state(state)
}

/// The outermost layers of the public and the admin listener: a request ID
/// (kept from the client or made up, echoed on the response) and, with
/// `log.access_log`, one log line per request carrying it. `/metrics` gets
/// neither: a scrape every few seconds would drown the log.
fn with_request_log<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    access_log: bool,
) -> Router<S> {
    let router = if access_log {
        router.layer(
            TraceLayer::new_for_http()
                .make_span_with(telemetry::make_span)
                .on_response(telemetry::on_response)
                .on_request(())
                .on_failure(()),
        )
    } else {
        router
    };
    router
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID.clone(),
            middleware::RandomRequestId,
        ))
}

/// Background work of one gateway: keep provider metadata and keys loaded,
/// sweep dead index entries.
pub fn spawn_background(state: &AppState) {
    spawn_provider_upkeep(state);
    spawn_sweeper(state);
}

/// Keeps the provider's metadata and keys loaded (every worker has its own).
pub fn spawn_provider_upkeep(state: &AppState) {
    let s = state.clone();
    tokio::spawn(async move { s.oidc.keep_warm().await });
}

/// Trims index entries of expired sessions every 10 minutes (one per process).
pub fn spawn_sweeper(state: &AppState) {
    let s = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        tick.tick().await;
        loop {
            tick.tick().await;
            match s.sessions.store().sweep().await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "swept expired index entries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "index sweep failed"),
            }
        }
    });
}

/// Serves the admin API (if configured) until `shutdown` resolves.
pub async fn serve_admin(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let access_log = state.config.log.access_log;
    axum::serve(
        listener,
        with_request_log(routes::admin::router(state), access_log),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves `GET /metrics` (if configured) until `shutdown` resolves.
pub async fn serve_metrics(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics::serve_metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = build_router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
