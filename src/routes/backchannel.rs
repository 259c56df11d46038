//! `POST /auth/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0.
//!
//! The provider posts a signed logout token (`flows::backchannel` checks it
//! and ends the sessions it names). Answers are in the spec's shape: 200,
//! 400 `invalid_request` with the reason (nothing changed), or 503 when the
//! keys or the store are unavailable (the provider retries).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::flows::backchannel::{self, BackchannelError};
use crate::state::AppState;

#[derive(Deserialize)]
struct Form {
    logout_token: Option<String>,
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

fn refuse(state: &AppState, reason: &str) -> Response {
    crate::metrics::Metrics::count(&state.metrics.backchannel_logouts, "refused");
    tracing::warn!(reason, "back-channel logout token refused");
    answer(
        StatusCode::BAD_REQUEST,
        json!({ "error": "invalid_request", "error_description": reason }),
    )
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return refuse(&state, "expected an application/x-www-form-urlencoded body");
    }
    let Some(token) = serde_urlencoded::from_bytes::<Form>(&body)
        .ok()
        .and_then(|f| f.logout_token)
    else {
        return refuse(&state, "missing logout_token");
    };
    let skew = state.config.oidc.clock_skew;
    let now = crate::clock::unix_now();
    match backchannel::logout(&state.sessions, &state.oidc, &token, skew, now).await {
        Ok(revoked) => {
            crate::metrics::Metrics::count(&state.metrics.backchannel_logouts, "accepted");
            answer(StatusCode::OK, json!({ "revoked": revoked }))
        }
        Err(BackchannelError::Refused(reason)) => refuse(&state, &reason),
        Err(e @ BackchannelError::Unavailable(_)) => {
            tracing::warn!(error = %e, "back-channel logout not processed");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "temporarily_unavailable" }),
            )
        }
    }
}
