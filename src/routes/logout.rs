//! `/auth/logout` and the pages around it (`flows::logout` does the work).
//!
//! Logout is POST only, proven one of two ways: as a `fetch` with the
//! anti-CSRF header (answered with JSON naming where to navigate), or as a
//! plain HTML form carrying the session's logout token (answered with a
//! redirect). A GET would let any page log users out.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::redirect;
use crate::audit::{Action, Event, Origin};
use crate::error::{AppError, AppResult};
use crate::extract::params::Query;
use crate::extract::session::MaybeSession;
use crate::middleware::csrf::CsrfHeader;
use crate::state::AppState;

#[derive(Deserialize, Default)]
struct LogoutForm {
    sid: Option<String>,
}

/// The logout token of a form logout: from the query or the form body.
async fn form_token(parts: &http::request::Parts, body: Body) -> AppResult<Option<String>> {
    if let Some(t) = axum::extract::Query::<LogoutForm>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|q| q.0.sid)
    {
        return Ok(Some(t));
    }
    if !super::is_form_urlencoded(&parts.headers) {
        return Ok(None);
    }
    let bytes = axum::body::to_bytes(body, 8 * 1024)
        .await
        .map_err(|_| AppError::BadRequest("The logout form is too large.".into()))?;
    Ok(serde_urlencoded::from_bytes::<LogoutForm>(&bytes)
        .ok()
        .and_then(|f| f.sid))
}

/// `POST /auth/logout`.
pub async fn logout(
    State(state): State<AppState>,
    CsrfHeader(via_fetch): CsrfHeader,
    MaybeSession(session): MaybeSession,
    req: Request,
) -> AppResult<Response> {
    let (parts, body) = req.into_parts();
    let origin = Origin::of_parts(&parts);
    let refused = |presented: Option<&crate::session::Session>| {
        let id = presented
            .map(|s| s.store_id.clone())
            .or_else(|| state.sessions.presented(&parts.headers));
        let mut event = Event::failure(Action::CsrfRefusal, "missing_logout_proof");
        if let Some(id) = &id {
            event = event.session(id);
        }
        let sub = presented.map(crate::audit::subject);
        if let Some(sub) = &sub {
            event = event.user(sub);
        }
        state.audit.record(origin, event);
        AppError::CsrfRejected
    };
    let token = if via_fetch {
        None
    } else {
        form_token(&parts, body).await?
    };
    if !via_fetch && token.is_none() {
        return Err(refused(session.as_deref()));
    }
    let mut end_session = None;
    if let Some(session) = session {
        let proven = via_fetch
            || token
                .as_deref()
                .is_some_and(|t| state.sessions.logout_token_matches(&session.store_id, t));
        if !proven {
            return Err(refused(Some(&session)));
        }
        end_session = state.logout.end(&session, crate::clock::unix_now()).await?;
        state.audit.record(
            origin,
            Event::success(Action::Logout)
                .session(&session.store_id)
                .user(&crate::audit::subject(&session)),
        );
    }
    // The cookie is cleared only for a request that proved itself (the
    // anti-CSRF header) or showed it: a form post without it is a
    // cross-site one (`SameSite` held it back), and a `Set-Cookie` on its
    // answer would still delete it, logging the user out from any page.
    let cookies = state.sessions.cookies();
    // Several different session cookies (another subdomain's): no session
    // was ended above (`MaybeSession` is none; ending either could log out
    // someone else's session, or leave the user's own running), and every
    // variant the gateway can name is cleared.
    let showed_cookie = crate::session::cookie::presented(&parts.headers, cookies.session_name())
        != crate::session::cookie::Presented::Nothing;
    let clear = (via_fetch || showed_cookie).then(|| cookies.clear_session_cookies());
    let mut resp = if via_fetch {
        let redirect_url = match end_session {
            Some(url) => state.logout.handle_for(&url).await?,
            None => state.logout.post_logout_location().to_owned(),
        };
        (
            StatusCode::OK,
            Json(json!({ "redirect_url": redirect_url })),
        )
            .into_response()
    } else {
        redirect(
            end_session
                .as_ref()
                .map_or(state.logout.post_logout_location(), |u| u.as_str()),
        )
    };
    for clear in clear.into_iter().flatten() {
        resp.headers_mut().append(header::SET_COOKIE, clear);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
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
    Ok(redirect(&state.logout.take_handle(q.h.as_deref()).await?))
}

/// `GET /auth/logged-out`.
pub async fn logged_out(State(state): State<AppState>) -> Response {
    state.pages.logged_out()
}
