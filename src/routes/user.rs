//! `GET /auth/user`: who is logged in, for the single-page app. Claims and
//! session deadlines only — never a token.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{AppError, AppResult};
use crate::proxy::{headers::client_ip, maybe_touch, peer_ip, session_ended};
use crate::session::Lookup;
use crate::state::AppState;

pub async fn user(State(state): State<AppState>, req: Request) -> AppResult<Response> {
    let now = crate::clock::unix_now();
    let session = match state.sessions.load(req.headers(), now).await? {
        Lookup::Active(s) => s,
        Lookup::Ended => return Ok(session_ended(&state)),
        Lookup::Anonymous => return Err(AppError::Unauthenticated),
    };
    let ip = client_ip(
        req.headers(),
        peer_ip(&req),
        state.config.server.trust_forwarded_headers,
    );
    maybe_touch(&state, &session, ip, &req, now);
    let claims = session.claims();
    let body = &session.stored.body;
    let logout_token = state.sessions.logout_token(&session.store_id);
    let mut resp = Json(json!({
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
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
