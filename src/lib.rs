//! oidc-bff: an OAuth2/OpenID Connect backend-for-frontend gateway.
//!
//! The browser logs in through the gateway (authorization code + PKCE);
//! tokens stay server-side, encrypted in the session store; API calls are
//! proxied with the access token attached. See `docs/architecture.md`.

pub mod audit;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod extract;
pub mod flows;
pub mod framing;
pub mod identity;
pub mod lifecycle;
pub mod log_output;
pub mod log_time;
pub mod login_params;
pub mod method;
pub mod metrics;
pub mod middleware;
pub mod oidc;
pub mod pages;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod routes;
pub mod secret;
pub mod security_headers;
pub mod server;
pub mod session;
pub mod state;
pub mod step_up;
pub mod telemetry;
pub mod traces;
pub mod url_policy;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

pub use crate::router::build_router;
pub use crate::state::AppState;

/// Background work of one gateway: keep provider metadata and keys loaded,
/// sweep dead index entries, count the active sessions.
pub fn spawn_background(state: &AppState) {
    spawn_provider_upkeep(state);
    spawn_sweeper(state);
    spawn_session_counter(state);
}

/// Keeps the provider's metadata and keys loaded (every worker has its own).
pub fn spawn_provider_upkeep(state: &AppState) -> tokio::task::JoinHandle<()> {
    let s = state.clone();
    tokio::spawn(async move { s.oidc.keep_warm().await })
}

/// How often the active-sessions gauge is recounted: its staleness.
pub const SESSION_COUNT_EVERY: Duration = Duration::from_secs(30);

/// How often the index sweep runs (by one process of the fleet).
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Trims index entries of expired sessions every [`SWEEP_EVERY`]: a task
/// per process, and on Redis one sweep per period for the whole fleet
/// (the first process to take the period's lease).
pub fn spawn_sweeper(state: &AppState) -> tokio::task::JoinHandle<()> {
    let s = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            match s
                .sessions
                .periodic_sweep(SWEEP_EVERY, crate::clock::unix_now())
                .await
            {
                Ok(Some(n)) if n > 0 => {
                    tracing::info!(removed = n, "swept expired index entries");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "index sweep failed"),
            }
        }
    })
}

/// Counts the store's sessions into `oidc_bff_sessions_active` now and
/// every [`SESSION_COUNT_EVERY`]. A scan of the store's keys by one process
/// of the fleet per period, which shares the total through Redis; every
/// instance reports that shared total (aggregate with `max`, not `sum`);
/// a failed count, or none published yet, leaves the last value.
pub fn spawn_session_counter(state: &AppState) -> tokio::task::JoinHandle<()> {
    let s = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SESSION_COUNT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match s
                .sessions
                .count(SESSION_COUNT_EVERY, crate::clock::unix_now())
                .await
            {
                Ok(None) => {}
                Ok(Some(n)) => {
                    s.metrics
                        .sessions_active
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                Err(e) => tracing::debug!(error = %e, "counting sessions failed"),
            }
        }
    })
}

/// Serves the admin API (if configured) until `shutdown` resolves, with the
/// `[server]` connection limits and its own connection cap (a flood on the
/// public listener cannot lock operators out).
pub async fn serve_admin(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.server.limits;
    let open = state.metrics.connections("admin");
    serve_capped_alone(listener, admin_app(state), limits, open, shutdown).await
}

/// The admin API as served on `admin.listen`.
pub fn admin_app(state: AppState) -> Router {
    let limits = state.config.server.limits;
    let access_log = state.config.log.access_log;
    let client_address = state.client_address.clone();
    let app = router::limit_body(
        routes::admin::router(state),
        limits.max_body_bytes,
        limits.body_read_timeout,
    );
    middleware::with_request_log(app, access_log, client_address)
}

/// Serves `GET /metrics` (if configured) until `shutdown` resolves, with
/// the `[server]` connection limits and its own connection cap.
pub async fn serve_metrics(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.server.limits;
    let open = state.metrics.connections("metrics");
    serve_capped_alone(listener, metrics_app(&state), limits, open, shutdown).await
}

/// `GET /metrics` as served on `metrics.listen`; any other path or method
/// gets the gateway's JSON answer (axum's are empty).
pub fn metrics_app(state: &AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::health::metrics))
        .fallback(|| async { error::AppError::NotFound })
        .method_not_allowed_fallback(|| async { error::AppError::MethodNotAllowed })
        .with_state(state.metrics.clone())
}

/// Serves a side listener (admin, metrics) with the `[server]` limits and
/// a connection cap of its own, so the public listener's load cannot lock
/// operators out.
async fn serve_capped_alone(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: config::ConnectionLimits,
    open: prometheus_client::metrics::gauge::Gauge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve_connections(
        listener,
        app,
        limits,
        server::connection_cap(&limits),
        open,
        shutdown,
    )
    .await
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish;
/// at most `server.max_connections` connections at once on this listener.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = server::connection_cap(&state.config.server.limits);
    serve_capped(state, listener, cap, shutdown).await
}

/// [`serve`] with a connection cap shared with other listeners (the
/// workers of one process share `server.max_connections`).
pub async fn serve_capped(
    state: AppState,
    listener: tokio::net::TcpListener,
    connections: Arc<tokio::sync::Semaphore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.server.limits;
    let open = state.metrics.connections("public");
    let app = router::build_app(state);
    server::serve_connections(listener, app, limits, connections, open, shutdown).await
}
