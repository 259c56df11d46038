//! `/auth/login` and `/auth/callback`: the browser's side of the
//! authorization code flow (`flows::login`). Both are navigations:
//! redirects, and pages on error.

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::audit::{Action, Event, Origin};
use crate::error::{AppError, AppResult};
use crate::extract::client::ClientInfo;
use crate::extract::session::MaybeSession;
use crate::flows::Untrusted;
use crate::flows::login::{self, CallbackParams};
use crate::metrics::OutcomeLabels;
use crate::session::cookie;
use crate::session::store::{RevokeOutcome, RevokeReason};
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

/// `GET /auth/login?return_to=…&prompt=…`: starts the authorization code
/// flow, passing on the SPA's allowed login parameters (`login_params`;
/// any other is a 400). The pending login goes to the browser in a sealed
/// cookie of its own; the store is not written.
pub async fn login(
    State(state): State<AppState>,
    MaybeSession(current): MaybeSession,
    headers: HeaderMap,
    uri: Uri,
) -> AppResult<Response> {
    // Parsed here rather than by the `Query` extractor, so a malformed,
    // unknown or repeated parameter is the gateway's own 400 (JSON or page).
    let q = crate::login_params::parse(uri.query(), &state.config.oidc.login_parameters).map_err(
        |e| {
            tracing::info!("login parameters refused");
            AppError::BadRequest(e)
        },
    )?;
    // No target: the root of the app, under the mount path if any.
    let mount_root = state.config.server.path("/");
    let candidate = q
        .return_to
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(&mount_root);
    // Refused before it is parsed: a longer target would not fit the cookie.
    if candidate.len() > login::MAX_RETURN_TO_BYTES {
        return Err(login::return_to_too_long().into());
    }
    let server = &state.config.server;
    let target = return_to::resolve(
        candidate,
        &server.public_url,
        &server.allowed_return_origins,
    )
    .map_err(|e| {
        tracing::info!(reason = %Untrusted(&e), "return_to refused");
        AppError::BadRequest(format!("The return_to parameter {e}."))
    })?;
    let cookies = state.sessions.cookies();
    let under_way = cookies.pending_logins(&headers);
    let previous = current
        .as_ref()
        .map(|s| (&s.store_id, s.stored.body.user_hash.as_str()));
    let now = crate::clock::unix_now();
    let start = login::begin(
        &state.oidc,
        &state.sessions,
        &target,
        &q,
        previous,
        &under_way,
        now,
    )
    .await?;
    let mut resp = redirect(start.redirect.as_str());
    for slot in &start.superseded {
        resp.headers_mut()
            .append(header::SET_COOKIE, cookies.clear_login_cookie(slot));
    }
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookies.login_cookie(
            &start.cookie.slot,
            &start.cookie.value,
            state.config.oidc.login_timeout,
        ),
    );
    Ok(resp)
}

/// `GET /auth/callback`: completes the login, creates the session, and
/// ends the session this browser had before (a login replaces it): the one
/// it had when the login started (recorded in the pending login, since a
/// `SameSite=Strict` cookie does not come with this cross-site navigation)
/// and the one it sends now, if any. The login's cookie is cleared
/// whatever the outcome: a state is good once.
pub async fn callback(
    State(state): State<AppState>,
    client: ClientInfo,
    MaybeSession(current): MaybeSession,
    req: Request,
) -> AppResult<Response> {
    let (parts, _) = req.into_parts();
    let (headers, uri) = (&parts.headers, &parts.uri);
    let origin = Origin::of_parts(&parts);
    let Query(params) = Query::<CallbackParams>::try_from_uri(uri).map_err(|_| {
        state
            .audit
            .record(origin, Event::failure(Action::Login, "bad_request"));
        AppError::BadRequest("The callback parameters are malformed.".into())
    })?;
    let now = crate::clock::unix_now();
    let cookies = state.sessions.cookies();
    let slot = params.state.as_deref().and_then(cookie::login_slot);
    let login_cookie = slot.and_then(|s| cookie::find(headers, &cookies.login_cookie_name(s)));
    let result = login::complete(
        &state.oidc,
        &state.sessions,
        &params,
        login_cookie,
        &client,
        now,
    )
    .await;
    record_login(&state, origin, &result);
    let clear = slot
        .filter(|_| login_cookie.is_some())
        .map(|s| cookies.clear_login_cookie(s));
    let done = match result {
        Ok(done) => done,
        // A silent check that needs the user: back to the app, which reads
        // `login_error`; the browser's session, if any, is untouched.
        Err(login::LoginError::Silent { return_to, .. }) => {
            let location = return_to::location_for(&return_to, &state.config.server.public_url);
            let mut resp = redirect(&location);
            if let Some(c) = clear {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            return Ok(resp);
        }
        Err(e) => {
            let mut resp = AppError::from(e).into_response();
            if let Some(c) = clear {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            return Ok(resp);
        }
    };
    let mut ended = vec![];
    for old in done
        .previous
        .into_iter()
        .chain(current.map(|s| s.store_id.clone()))
    {
        if old != done.store_id && !ended.contains(&old) {
            if let Ok(RevokeOutcome::Revoked) = state
                .sessions
                .revoke(&old, RevokeReason::Logout, "login", now)
                .await
            {
                state.audit.record(
                    origin,
                    Event::success(Action::Revocation)
                        .reason("replaced_by_login")
                        .actor("login")
                        .session(&old)
                        .user(&done.sub),
                );
            }
            ended.push(old);
        }
    }
    let location = return_to::location_for(&done.return_to, &state.config.server.public_url);
    let mut resp = redirect(&location);
    if let Some(c) = clear {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp.headers_mut()
        .append(header::SET_COOKIE, done.session_cookie);
    Ok(resp)
}

/// Counts a callback's outcome and writes its audit events: the login, and
/// each session the per-user limit evicted to make room for it.
fn record_login(
    state: &AppState,
    origin: Origin<'_>,
    result: &Result<login::LoginDone, login::LoginError>,
) {
    let labels = match result {
        Ok(done) => {
            state.audit.record(
                origin,
                Event::success(Action::Login)
                    .session(&done.store_id)
                    .user(&done.sub),
            );
            for old in &done.evicted {
                state.audit.record(
                    origin,
                    Event::success(Action::Eviction)
                        .reason("max_per_user")
                        .actor("system")
                        .session(old)
                        .user(&done.sub),
                );
            }
            OutcomeLabels::SUCCESS
        }
        Err(e) => {
            state
                .audit
                .record(origin, Event::failure(Action::Login, e.reason()));
            OutcomeLabels::failure(e.reason())
        }
    };
    crate::metrics::Metrics::count(&state.metrics.logins, &labels);
}
