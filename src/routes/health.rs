//! `GET /healthz` (the process answers) and `GET /readyz` (the store
//! answers and the provider's metadata and keys are loaded).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::session::store::SessionStore;
use crate::state::AppState;

pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.sessions.store().ping().await;
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
