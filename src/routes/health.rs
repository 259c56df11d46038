//! What operators and orchestrators poll: `GET /healthz` (the process
//! answers), `GET /readyz` (not draining, the store answers and the
//! provider's metadata and keys are loaded), and `GET /metrics` on the
//! metrics listener.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::sync::Arc;

use axum::http::{HeaderValue, header};

use crate::metrics::Metrics;
use crate::state::AppState;

pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Draining (after SIGTERM) answers 503 at once, without asking the store:
/// the load balancer must take this instance out while it still serves.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.lifecycle.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let store = state.sessions.ping().await;
    let provider = state.oidc.is_ready();
    let ready = store.is_ok() && provider;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if let Err(e) = &store {
        tracing::warn!(error = %e, "readiness: store unavailable");
    }
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "store": if store.is_ok() { "ok" } else { "unavailable" },
            "provider": if provider { "ok" } else { "not_loaded" },
        })),
    )
        .into_response()
}

/// `GET /metrics` on the metrics listener (OpenMetrics text).
pub async fn metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    let mut resp = metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
