//! The proxied routes' handlers, one per kind of route, chosen where the
//! router registers each configured route:
//!
//! - `auth = "required"`: [`required`] — no session, no forwarding (401);
//! - `auth = "optional"`: [`optional`] — the token when there is a session;
//! - `auth = "none"`: [`public`] — never a session lookup.
//!
//! In front of each, [`guard`] refuses what must never be forwarded, and the
//! anti-CSRF layer (`middleware::csrf`) guards session routes. A session's
//! access token is refreshed here when it is about to expire (`flows`).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::forward::Forwarder;
use super::routes::{Route, has_dot_segment};
use super::upgrade;
use crate::config::RouteAuth;
use crate::error::AppError;
use crate::extract::client::ClientIp;
use crate::extract::session::{CurrentSession, MaybeSession};
use crate::flows::refresh::Refresher;

/// Refuses, before any session lookup: paths with dot segments (an upstream
/// that normalises `/api/../admin` would be reached outside the route), and
/// on session routes WebSocket handshakes from another origin (a browser
/// sends no CSRF header on a handshake and WebSockets ignore CORS, so a
/// sibling origin could otherwise open a socket as the user).
pub async fn guard(
    State(forwarder): State<Arc<Forwarder>>,
    Extension(route): Extension<Arc<Route>>,
    req: Request,
    next: Next,
) -> Response {
    if has_dot_segment(req.uri().path()) {
        return AppError::BadRequest("Paths with dot segments are not forwarded.".into())
            .into_response();
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
    let session = refresher.fresh(*session, crate::clock::unix_now()).await?;
    forwarder.forward(&route, req, Some(&session), ip).await
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
