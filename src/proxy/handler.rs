//! The proxied routes' handlers, one per kind of route, chosen where the
//! router registers each configured route:
//!
//! - `auth = "required"`: [`required`] — no session, no forwarding (401);
//! - `auth = "optional"`: [`optional`] — the token when there is a session;
//! - `auth = "none"`: [`public`] — never a session lookup.
//!
//! In front of each, [`guard`] refuses what must never be forwarded, and the
//! anti-CSRF layer (`middleware::csrf`) guards session routes. A session's
//! access token is refreshed here when it is about to expire (`flows`),
//! after the route's policy (`authz`) admitted the session: a refused
//! request (403) never refreshes a token nor reaches the upstream.
//! WebSocket handshakes take the same handlers, so the policy holds for them
//! too.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::forward::Forwarder;
use super::routes::Route;
use super::upgrade;
use crate::authz;
use crate::config::RouteAuth;
use crate::error::AppError;
use crate::extract::client::ClientIp;
use crate::extract::session::{CurrentSession, MaybeSession};
use crate::flows::refresh::Refresher;
use crate::session::Session;
use crate::url_policy::path::check_request_path;

/// Refuses, before any session lookup:
///
/// - `TRACE` and `CONNECT` (405): a `TRACE` echoes the request, Bearer
///   token included, to whoever reads the response; `CONNECT` asks for a
///   tunnel, which the gateway never opens;
/// - paths that some upstream would read outside the route
///   (`url_policy::path::check_request_path`: dot segments under any
///   reading, encoded separators, backslashes, controls; 400);
/// - on session routes, WebSocket handshakes from another origin (a
///   browser sends no CSRF header on a handshake and WebSockets ignore
///   CORS, so a sibling origin could otherwise open a socket as the user).
pub async fn guard(
    State(forwarder): State<Arc<Forwarder>>,
    Extension(route): Extension<Arc<Route>>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(*req.method(), Method::TRACE | Method::CONNECT) {
        let mut resp = AppError::MethodNotAllowed.into_response();
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return resp;
    }
    if let Err(refusal) = check_request_path(req.uri().path()) {
        tracing::info!(reason = ?refusal, "request path refused");
        return AppError::BadRequest(refusal.message().into()).into_response();
    }
    if route.auth != RouteAuth::None
        && upgrade::requested(req.headers())
        && !forwarder.from_own_origin(req.headers())
    {
        return AppError::Forbidden(
            "WebSocket handshakes must come from this application's own origin.".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// A route that needs a session.
pub async fn required(
    State(forwarder): State<Arc<Forwarder>>,
    State(refresher): State<Arc<Refresher>>,
    Extension(route): Extension<Arc<Route>>,
    ClientIp(ip): ClientIp,
    CurrentSession(session): CurrentSession,
    req: Request,
) -> Result<Response, AppError> {
    admit(&route, &session)?;
    let session = refresher.fresh(*session, crate::clock::unix_now()).await?;
    forwarder.forward(&route, req, Some(&session), ip).await
}

/// The route's policy over the session's claims and scopes: 403 naming
/// what the route requires (never what the user has).
fn admit(route: &Route, session: &Session) -> Result<(), AppError> {
    if route.policy.is_empty() {
        return Ok(());
    }
    authz::check(&route.policy, &session.claims(), session.scopes()).map_err(|refusal| {
        tracing::info!(route = %route.path, "request refused by the route's policy");
        AppError::Forbidden(refusal.to_string())
    })
}

/// A route that forwards the token when there is a session.
pub async fn optional(
    State(forwarder): State<Arc<Forwarder>>,
    State(refresher): State<Arc<Refresher>>,
    Extension(route): Extension<Arc<Route>>,
    ClientIp(ip): ClientIp,
    MaybeSession(session): MaybeSession,
    req: Request,
) -> Result<Response, AppError> {
    let session = match session {
        Some(s) => Some(refresher.fresh(*s, crate::clock::unix_now()).await?),
        None => None,
    };
    forwarder.forward(&route, req, session.as_ref(), ip).await
}

/// A route without sessions.
pub async fn public(
    State(forwarder): State<Arc<Forwarder>>,
    Extension(route): Extension<Arc<Route>>,
    ClientIp(ip): ClientIp,
    req: Request,
) -> Result<Response, AppError> {
    forwarder.forward(&route, req, None, ip).await
}
