//! `POST /auth/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0.
//!
//! The provider posts a signed logout token; if it is valid (signature,
//! `iss`, `aud`, `iat`, the back-channel event, `sid` and/or `sub`, no
//! `nonce`) and its `jti` was never seen (checked in the store, so replays
//! are caught by every instance), the matching sessions end: by `sid` when
//! present, else all of `sub`'s. An invalid token gets 400 with the reason
//! and changes nothing.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::oidc::jwt::validate_logout_token;
use crate::session::cookie::hex;
use crate::session::store::{RevokeReason, SessionStore};
use crate::state::AppState;

#[derive(Deserialize)]
struct Form {
    logout_token: Option<String>,
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
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
    let now = crate::clock::unix_now();
    let claims =
        match validate_logout_token(&state.oidc.provider, &state.oidc.keys, &token, now).await {
            Ok(c) => c,
            Err(crate::oidc::jwt::TokenError::KeysUnavailable(e)) => {
                tracing::warn!(error = %e, "back-channel logout: provider keys unavailable");
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": "temporarily_unavailable" }),
                );
            }
            Err(e) => return refuse(&state, &e.to_string()),
        };
    // Remember the jti until the token could no longer be accepted anyway.
    let skew = state.config.oidc.clock_skew.as_secs();
    let until = claims.exp.unwrap_or(claims.iat + 600).max(claims.iat + 600) + skew;
    let ttl_ms = until.saturating_sub(now).max(60) * 1000;
    let jti_key = hex(&Sha256::digest(claims.jti.as_bytes()));
    match state.sessions.store().remember_jti(&jti_key, ttl_ms).await {
        Ok(true) => {}
        Ok(false) => return refuse(&state, "logout token replayed (jti already used)"),
        Err(e) => {
            tracing::warn!(error = %e, "back-channel logout: store unavailable");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "temporarily_unavailable" }),
            );
        }
    }
    let result = match (&claims.sid, &claims.sub) {
        (Some(sid), _) => {
            state
                .sessions
                .revoke_provider_session(sid, "provider", now)
                .await
        }
        (None, Some(sub)) => {
            state
                .sessions
                .revoke_user(sub, None, RevokeReason::Backchannel, "provider", now)
                .await
        }
        (None, None) => return refuse(&state, "neither sid nor sub"),
    };
    match result {
        Ok(ids) => {
            crate::metrics::Metrics::count(&state.metrics.backchannel_logouts, "accepted");
            answer(StatusCode::OK, json!({ "revoked": ids.len() }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "back-channel logout: store unavailable");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "temporarily_unavailable" }),
            )
        }
    }
}
