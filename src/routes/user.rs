//! `GET /auth/user`: who is logged in, for the single-page app. Claims and
//! session deadlines only — never a token — and never more claims than
//! `oidc.max_claims` / `oidc.max_claims_bytes` (a session stored before
//! those bounds existed gets only its `sub` and `"claims_truncated": true`).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::extract::session::CurrentSession;
use crate::oidc::claims::bounded_json;
use crate::state::AppState;

pub async fn user(
    State(state): State<AppState>,
    CurrentSession(session): CurrentSession,
) -> Response {
    let claims = match session.claims() {
        Ok(claims) => claims,
        Err(e) => return crate::error::AppError::from(e).into_response(),
    };
    let (claims, truncated) = within_bounds(claims, &state);
    if truncated {
        tracing::warn!(session = ?session.store_id, "session claims over oidc.max_claims_bytes / max_claims; /auth/user returns only sub");
    }
    let body = &session.stored.body;
    let logout_token = state.sessions.logout_token(&session.store_id);
    let mut reply = json!({
        "sub": claims.get("sub"),
        "claims": claims,
        "session": {
            "id": session.store_id.as_str(),
            "created_at": body.created_at,
            "expires_at": body.ends_at(),
            "idle_expires_at": body.idle_expires_at,
            "absolute_expires_at": body.absolute_expires_at,
        },
        "logout_url": state.config.server.path(&format!("/auth/logout?sid={logout_token}")),
        "logout_token": logout_token,
    });
    if truncated && let Some(o) = reply.as_object_mut() {
        o.insert("claims_truncated".into(), Value::Bool(true));
    }
    Json(reply).into_response()
}

/// The claims if within the bounds, else only `sub` (a short string).
fn within_bounds(claims: Map<String, Value>, state: &AppState) -> (Map<String, Value>, bool) {
    let limits = &state.config.oidc.limits;
    if bounded_json(&claims, limits).is_ok() {
        return (claims, false);
    }
    let mut only_sub = Map::new();
    if let Some(sub) = claims
        .get("sub")
        .filter(|s| s.as_str().is_some_and(|s| s.len() <= 255))
    {
        only_sub.insert("sub".into(), sub.clone());
    }
    (only_sub, true)
}
