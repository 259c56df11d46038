//! `/auth/login`, `/auth/callback`, `/auth/logout` and the pages around
//! them. Login and callback are navigations (redirects, pages on error);
//! logout is POST only — as a `fetch` with the anti-CSRF header (JSON
//! answer) or as a plain HTML form carrying the session's logout token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{AppError, AppResult};
use crate::oidc::login::{self, CallbackParams};
use crate::proxy::{csrf_ok, headers::client_ip, peer_ip};
use crate::session::cookie::{self, hex, random_token};
use crate::session::store::{OnceKind, RevokeReason, SessionStore};
use crate::session::{ClientInfo, Lookup};
use crate::state::AppState;
use crate::url_policy::return_to;

fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn client_info(state: &AppState, req_headers: &HeaderMap, peer: std::net::IpAddr) -> ClientInfo {
    let ip = client_ip(
        req_headers,
        peer,
        state.config.server.trust_forwarded_headers,
    );
    ClientInfo::new(ip, req_headers)
}

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

/// `GET /auth/login?return_to=…`: starts the authorization code flow.
pub async fn login(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let base = &state.config.server.public_url;
    let candidate = q
        .return_to
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    let target = return_to::resolve(candidate, base, &state.config.server.allowed_return_origins)
        .map_err(|e| {
        tracing::info!(reason = %e, "return_to refused");
        AppError::BadRequest(format!("The return_to parameter {e}."))
    })?;
    let binding = cookie::find(&headers, state.sessions.cookies().login_name());
    let start = login::begin(
        &state.oidc,
        &state.sessions,
        &target,
        binding,
        crate::clock::unix_now(),
    )
    .await?;
    let mut resp = redirect(start.redirect.as_str());
    resp.headers_mut().append(
        header::SET_COOKIE,
        state
            .sessions
            .cookies()
            .login_cookie(&start.binding, state.config.oidc.login_timeout),
    );
    Ok(resp)
}

/// `GET /auth/callback`: completes the login, creates the session.
pub async fn callback(State(state): State<AppState>, req: Request) -> AppResult<Response> {
    let params: CallbackParams = Query::<CallbackParams>::try_from_uri(req.uri())
        .map(|q| q.0)
        .map_err(|_| AppError::BadRequest("The callback parameters are malformed.".into()))?;
    let headers = req.headers();
    let now = crate::clock::unix_now();
    let client = client_info(&state, headers, peer_ip(&req));
    let binding = cookie::find(headers, state.sessions.cookies().login_name());
    let result =
        login::complete(&state.oidc, &state.sessions, &params, binding, &client, now).await;
    let outcome = if result.is_ok() { "success" } else { "failed" };
    crate::metrics::Metrics::count(&state.metrics.logins, outcome);
    let done = result?;
    // A login replaces whatever session this browser had.
    if let Ok(Lookup::Active(old)) = state.sessions.load(headers, now).await
        && old.store_id != done.store_id
    {
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

#[derive(Deserialize, Default)]
struct LogoutForm {
    sid: Option<String>,
}

/// `POST /auth/logout`.
pub async fn logout(State(state): State<AppState>, req: Request) -> AppResult<Response> {
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let via_fetch = csrf_ok(&state, headers);
    // The form token may come in the body (form field) or the query.
    let mut token = Query::<LogoutForm>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|q| q.0.sid);
    if token.is_none() {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            let bytes: Bytes = axum::body::to_bytes(body, 8 * 1024)
                .await
                .map_err(|_| AppError::BadRequest("The logout form is too large.".into()))?;
            token = serde_urlencoded::from_bytes::<LogoutForm>(&bytes)
                .ok()
                .and_then(|f| f.sid);
        }
    }
    if !via_fetch && token.is_none() {
        return Err(AppError::CsrfRejected);
    }
    let now = crate::clock::unix_now();
    let mut end_session = None;
    if let Lookup::Active(session) = state.sessions.load(headers, now).await? {
        if !via_fetch {
            let ok = token
                .as_deref()
                .is_some_and(|t| state.sessions.logout_token_matches(&session.store_id, t));
            if !ok {
                return Err(AppError::CsrfRejected);
            }
        }
        state
            .sessions
            .revoke(&session.store_id, RevokeReason::Logout, "user", now)
            .await?;
        if let Some(rt) = session.secrets.refresh_token.clone() {
            // RFC 7009 revocation must not hold up the local logout.
            let st = state.clone();
            tokio::spawn(async move {
                match st.oidc.provider.revoke_refresh_token(&rt).await {
                    Ok(true) => tracing::debug!("refresh token revoked at the provider"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "refresh token revocation at the provider failed")
                    }
                }
            });
        }
        if state.config.oidc.end_session
            && let Some(d) = state.oidc.provider.loaded()
        {
            end_session = state.oidc.provider.end_session_url(
                &d,
                session.secrets.id_token.as_ref(),
                &state.config.oidc.post_logout_redirect,
            );
        }
    }
    let post_logout = return_to::location_for(
        &state.config.oidc.post_logout_redirect,
        &state.config.server.public_url,
    );
    let clear = state.sessions.cookies().clear_session_cookie();
    if via_fetch {
        // The end-session URL carries the ID token as a hint; the page must
        // never read it, so it gets a one-time handle to navigate to instead.
        let redirect_url = match end_session {
            Some(url) => {
                let handle = random_token();
                let key = hex(&Sha256::digest(handle.as_bytes()));
                let sealed = state
                    .sessions
                    .keys()
                    .seal_tagged(format!("logout:{key}").as_bytes(), url.as_str().as_bytes());
                state
                    .sessions
                    .store()
                    .put_once(OnceKind::Logout, &key, &sealed, 300_000)
                    .await?;
                format!("/auth/logout/end?h={handle}")
            }
            None => post_logout,
        };
        let mut resp = (
            StatusCode::OK,
            Json(json!({ "redirect_url": redirect_url })),
        )
            .into_response();
        resp.headers_mut().append(header::SET_COOKIE, clear);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(resp);
    }
    let mut resp = redirect(
        end_session
            .as_ref()
            .map_or(post_logout.as_str(), |u| u.as_str()),
    );
    resp.headers_mut().append(header::SET_COOKIE, clear);
    Ok(resp)
}

#[derive(Deserialize)]
pub struct EndQuery {
    h: Option<String>,
}

/// `GET /auth/logout/end?h=…`: the navigation that follows a fetch logout;
/// redirects to the provider's end-session URL (used once).
pub async fn logout_end(
    State(state): State<AppState>,
    Query(q): Query<EndQuery>,
) -> AppResult<Response> {
    let post_logout = return_to::location_for(
        &state.config.oidc.post_logout_redirect,
        &state.config.server.public_url,
    );
    let Some(handle) = q.h.filter(|h| h.len() == 43) else {
        return Ok(redirect(&post_logout));
    };
    let key = hex(&Sha256::digest(handle.as_bytes()));
    let url = match state
        .sessions
        .store()
        .take_once(OnceKind::Logout, &key)
        .await?
    {
        Some(sealed) => state
            .sessions
            .keys()
            .open_tagged(format!("logout:{key}").as_bytes(), &sealed)
            .ok()
            .and_then(|p| String::from_utf8(p.to_vec()).ok()),
        None => None,
    };
    Ok(redirect(url.as_deref().unwrap_or(&post_logout)))
}

/// `GET /auth/logout`: logging out by GET would let any page log users out.
pub async fn logout_get() -> AppError {
    AppError::MethodNotAllowed
}

/// `GET /auth/logged-out`.
pub async fn logged_out(State(state): State<AppState>) -> Response {
    state.pages.logged_out()
}
