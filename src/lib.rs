//! oidc-bff: an OAuth2/OpenID Connect backend-for-frontend gateway.
//!
//! The browser logs in through the gateway (authorization code + PKCE);
//! tokens stay server-side, encrypted in the session store; API calls are
//! proxied with the access token attached. See `docs/architecture.md`.

pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod extract;
pub mod flows;
pub mod metrics;
pub mod middleware;
pub mod oidc;
pub mod pages;
pub mod proxy;
pub mod router;
pub mod routes;
pub mod secret;
pub mod security_headers;
pub mod server;
pub mod session;
pub mod state;
pub mod telemetry;
pub mod url_policy;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

pub use crate::router::build_router;
pub use crate::state::AppState;

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
            match s.sessions.sweep().await {
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
    let client_address = state.client_address.clone();
    axum::serve(
        listener,
        middleware::with_request_log(routes::admin::router(state), access_log, client_address),
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
        .route("/metrics", get(routes::health::metrics))
        .with_state(state.metrics.clone());
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
