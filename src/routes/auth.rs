//! `/auth/login` and `/auth/callback`: the browser's side of the
//! authorization code flow (`flows::login`). Both are navigations:
//! redirects, and pages on error.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::{AppError, AppResult};
use crate::extract::client::ClientInfo;
use crate::extract::session::MaybeSession;
use crate::flows::login::{self, CallbackParams};
use crate::session::cookie;
use crate::session::store::RevokeReason;
use crate::state::AppState;
use crate::url_policy::return_to;

/// A `303 See Other` to `location`, never cached.
pub fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

/// `GET /auth/login?return_to=…`: starts the authorization code flow.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> AppResult<Response> {
    // Parsed here rather than by the `Query` extractor, so a malformed or
    // repeated parameter is the gateway's own 400 (JSON or page).
    let Query(q) = Query::<LoginQuery>::try_from_uri(&uri)
        .map_err(|_| AppError::BadRequest("The login parameters are malformed.".into()))?;
    let candidate = q
        .return_to
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    let server = &state.config.server;
    let target = return_to::resolve(
        candidate,
        &server.public_url,
        &server.allowed_return_origins,
    )
    .map_err(|e| {
        tracing::info!(reason = %e, "return_to refused");
        AppError::BadRequest(format!("The return_to parameter {e}."))
    })?;
    let cookies = state.sessions.cookies();
    let binding = cookie::find(&headers, cookies.login_name());
    let now = crate::clock::unix_now();
    let start = login::begin(&state.oidc, &state.sessions, &target, binding, now).await?;
    let mut resp = redirect(start.redirect.as_str());
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookies.login_cookie(&start.binding, state.config.oidc.login_timeout),
    );
    Ok(resp)
}

/// `GET /auth/callback`: completes the login, creates the session, and
/// ends the session this browser had before (a login replaces it).
pub async fn callback(
    State(state): State<AppState>,
    client: ClientInfo,
    MaybeSession(previous): MaybeSession,
    headers: HeaderMap,
    uri: Uri,
) -> AppResult<Response> {
    let Query(params) = Query::<CallbackParams>::try_from_uri(&uri)
        .map_err(|_| AppError::BadRequest("The callback parameters are malformed.".into()))?;
    let now = crate::clock::unix_now();
    let binding = cookie::find(&headers, state.sessions.cookies().login_name());
    let result =
        login::complete(&state.oidc, &state.sessions, &params, binding, &client, now).await;
    let outcome = if result.is_ok() { "success" } else { "failed" };
    crate::metrics::Metrics::count(&state.metrics.logins, outcome);
    let done = result?;
    if let Some(old) = previous.filter(|old| old.store_id != done.store_id) {
        let _ = state
            .sessions
            .revoke(&old.store_id, RevokeReason::Logout, "login", now)
            .await;
    }
    let location = return_to::location_for(&done.return_to, &state.config.server.public_url);
    let mut resp = redirect(&location);
    resp.headers_mut()
        .append(header::SET_COOKIE, done.session_cookie);
    Ok(resp)
}
