//! The logged-in user's own sessions, for the single-page app:
//! `GET /auth/sessions` lists them (newest first, the caller's marked
//! `current`), `POST /auth/sessions/{id}/revoke` ends one of them. A user can
//! only see and end their own sessions; revoking requires the anti-CSRF
//! header like any state-changing call (the router applies the rule).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::{AppError, AppResult};
use crate::extract::session::CurrentSession;
use crate::session::Session;
use crate::session::cookie::StoreId;
use crate::session::store::{RevokeOutcome, RevokeReason};
use crate::state::AppState;

fn subject(session: &Session) -> Result<String, AppError> {
    session
        .claims()
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| AppError::Internal("session without a subject".into()))
}

pub async fn list(
    State(state): State<AppState>,
    CurrentSession(session): CurrentSession,
) -> AppResult<Response> {
    let now = crate::clock::unix_now();
    let sessions = state.sessions.list_user(&subject(&session)?, now).await?;
    let list: Vec<Value> = sessions
        .into_iter()
        .map(|info| {
            let is_current = info.id == session.store_id.as_str();
            let mut v = json!(info);
            v["current"] = json!(is_current);
            v
        })
        .collect();
    Ok(Json(json!({ "sessions": list })).into_response())
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CurrentSession(session): CurrentSession,
) -> AppResult<Response> {
    let now = crate::clock::unix_now();
    let target =
        StoreId::parse(&id).ok_or_else(|| AppError::BadRequest("Not a session ID.".into()))?;
    // Only the caller's own sessions: a listed ID, or one already revoked
    // (the tombstone says so) among them is answered; anything else is 404.
    let own = state.sessions.list_user(&subject(&session)?, now).await?;
    if !own.iter().any(|s| s.id == target.as_str()) {
        return Err(AppError::NotFound);
    }
    let outcome = state
        .sessions
        .revoke(&target, RevokeReason::User, "user", now)
        .await?;
    let mut resp = Json(json!({ "id": target.as_str(), "result": outcome })).into_response();
    if target == session.store_id && outcome == RevokeOutcome::Revoked {
        resp.headers_mut().append(
            header::SET_COOKIE,
            state.sessions.cookies().clear_session_cookie(),
        );
    }
    Ok(resp)
}
