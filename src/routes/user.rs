//! `GET /auth/user`: who is logged in, for the single-page app. Claims and
//! session deadlines only — never a token.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::extract::session::CurrentSession;
use crate::state::AppState;

pub async fn user(
    State(state): State<AppState>,
    CurrentSession(session): CurrentSession,
) -> Response {
    let claims = session.claims();
    let body = &session.stored.body;
    let logout_token = state.sessions.logout_token(&session.store_id);
    Json(json!({
        "sub": claims.get("sub"),
        "claims": claims,
        "session": {
            "id": session.store_id.as_str(),
            "created_at": body.created_at,
            "expires_at": body.ends_at(),
            "idle_expires_at": body.idle_expires_at,
            "absolute_expires_at": body.absolute_expires_at,
        },
        "logout_url": format!("/auth/logout?sid={logout_token}"),
        "logout_token": logout_token,
    }))
    .into_response()
}
