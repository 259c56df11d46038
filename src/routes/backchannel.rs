//! `POST /auth/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0.
//!
//! The provider posts a signed logout token (`flows::backchannel` checks it
//! and ends the sessions it names). Answers are in the spec's shape: 200,
//! 400 `invalid_request` with the reason (nothing changed), or 503 when the
//! keys or the store are unavailable (the provider retries).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::audit::{Action, Event, Origin};
use crate::flows::backchannel::{self, BackchannelError};
use crate::metrics::OutcomeLabels;
use crate::session::store::RevokeReason;
use crate::state::AppState;

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// A refusal: `why` is the fixed word for the trail and metrics, `reason`
/// what the provider is told.
fn refuse(state: &AppState, origin: Origin<'_>, why: &'static str, reason: &str) -> Response {
    crate::metrics::Metrics::count(
        &state.metrics.backchannel_logouts,
        &OutcomeLabels::failure(why),
    );
    state
        .audit
        .record(origin, Event::failure(Action::BackchannelLogout, why));
    tracing::warn!(reason, "back-channel logout token refused");
    answer(
        StatusCode::BAD_REQUEST,
        json!({ "error": "invalid_request", "error_description": reason }),
    )
}

pub async fn logout(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let origin = Origin::of_parts(&parts);
    let headers = &parts.headers;
    // Already read within `server.max_body_bytes` (`router::limit_body`).
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return refuse(&state, origin, "bad_request", "unreadable body");
    };
    if !super::is_form_urlencoded(headers) {
        return refuse(
            &state,
            origin,
            "bad_request",
            "expected an application/x-www-form-urlencoded body",
        );
    }
    // One token: a repeated parameter is refused as such (which one a
    // reader would take is not the provider's to guess).
    let mut tokens = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v);
    let token = match (tokens.next(), tokens.next()) {
        (Some(t), None) => t.into_owned(),
        (Some(_), Some(_)) => {
            return refuse(&state, origin, "bad_request", "logout_token is repeated");
        }
        (None, _) => return refuse(&state, origin, "bad_request", "missing logout_token"),
    };
    let skew = state.config.oidc.clock_skew;
    let now = crate::clock::unix_now();
    match backchannel::logout(&state.sessions, &state.oidc, &token, skew, now).await {
        Ok(ended) => {
            crate::metrics::Metrics::count(
                &state.metrics.backchannel_logouts,
                &OutcomeLabels::SUCCESS,
            );
            let user = ended.user.as_deref();
            let mut event =
                Event::success(Action::BackchannelLogout).sessions(ended.sessions.len());
            if let Some(sub) = user {
                event = event.user(sub);
            }
            state.audit.record(origin, event);
            for id in &ended.sessions {
                let mut event = Event::success(Action::Revocation)
                    .reason(RevokeReason::Backchannel.as_str())
                    .actor("provider")
                    .session(id);
                if let Some(sub) = user {
                    event = event.user(sub);
                }
                state.audit.record(origin, event);
            }
            answer(StatusCode::OK, json!({ "revoked": ended.sessions.len() }))
        }
        Err(BackchannelError::Refused(why, reason)) => refuse(&state, origin, why, &reason),
        Err(e @ BackchannelError::Unavailable(_)) => {
            tracing::warn!(error = %e, "back-channel logout not processed");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "temporarily_unavailable" }),
            )
        }
    }
}
