//! The proxied routes' handlers, one per kind of route, chosen where the
//! router registers each configured route:
//!
//! - `auth = "required"`: [`required`] — no session, no forwarding (401);
//! - `auth = "optional"`: [`optional`] — the token when there is a session;
//! - `auth = "none"`: [`public`] — never a session lookup.
//!
//! In front of each, [`guard`] refuses what must never be forwarded, and
//! applies the anti-CSRF rule (`middleware::csrf`) on session routes. A session's
//! access token is refreshed here when it is about to expire (`flows`),
//! after the route's policy (`authz`) admitted the session: a refused
//! request (403) never refreshes a token nor reaches the upstream.
//! WebSocket handshakes take the same handlers, so the policy holds for them
//! too. On a route with `bearer_audience`, [`required`] also serves bearer
//! clients (a verified JWT access token, no gateway cookie), whose
//! requests need no anti-CSRF header ([`CsrfCheck::UnlessBearer`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::forward::{Caller, Forwarder};
use super::routes::Route;
use super::upgrade;
use crate::audit::{Action, Auditor, Event, Origin};
use crate::authz;
use crate::config::RouteAuth;
use crate::error::AppError;
use crate::extract::session::{CurrentSession, MaybeSession, SessionRejection};
use crate::flows::refresh::Refresher;
use crate::middleware::csrf::{self, CsrfRule};
use crate::oidc::Oidc;
use crate::oidc::jwt::{TokenError, validate_access_token};
use crate::url_policy::host::check_host;
use crate::url_policy::path::check_request_path;

/// Which anti-CSRF rule a route's [`guard`] applies.
pub enum CsrfCheck {
    /// `auth = "none"`: no session, so no ambient credential to guard.
    None,
    /// Session routes: state-changing methods need the header.
    Always(Arc<CsrfRule>),
    /// Session routes that accept bearer clients: the same, except for a
    /// bearer client's request (no cookie of the gateway's, so no ambient
    /// credential a browser could be tricked into sending).
    UnlessBearer(Arc<CsrfRule>),
}

/// A route's guard: what it refuses, and where refusals are recorded.
pub struct Guard {
    pub forwarder: Arc<Forwarder>,
    pub audit: Auditor,
    pub csrf: CsrfCheck,
}

/// Refuses, before any session lookup:
///
/// - `TRACE`, `TRACK` and `CONNECT` (405), in any letter case and named
///   in a method-override header too (`crate::method`): a `TRACE` echoes
///   the request, Bearer token included, to whoever reads the response;
///   `CONNECT` asks for a tunnel, which the gateway never opens;
/// - a body framed both by length and by chunks, or by a coding besides
///   `chunked` (`framing`; 400, the connection closed);
/// - no `Host` on HTTP/1.1, more than one, or one that is no authority
///   (`url_policy::host`, RFC 9112 §3.2; 400);
/// - paths that some upstream would read outside the route
///   (`url_policy::path::check_request_path`: dot segments under any
///   reading, encoded separators, backslashes, controls; 400);
/// - paths matched to this route by their exact spelling that some
///   upstream reads as a longer route's (`/api/%61dmin`, `/api/ADMIN`,
///   `/api/admin;x` beside a route at `/api/admin`; 400): the policy
///   checked must be the one of the path the upstream serves;
/// - on session routes, WebSocket handshakes from another origin (a
///   browser sends no CSRF header on a handshake and WebSockets ignore
///   CORS, so a sibling origin could otherwise open a socket as the user);
/// - then, on session routes, what the anti-CSRF rule refuses
///   (`middleware::csrf`), in this one check rather than a second layer.
///
/// `None`: the request may go on to the route's handler.
pub fn guard(guard: &Guard, route: &Route, req: &Request) -> Option<Response> {
    if let Some(refused) = refuse(&guard.forwarder, &guard.audit, route, req) {
        return Some(refused);
    }
    // The audit event names the configured prefix, as the router's
    // matched path without its catch-all would.
    let prefix = || Some(route.path.as_str());
    match &guard.csrf {
        CsrfCheck::None => None,
        CsrfCheck::Always(rule) => csrf::refusal_on(rule, req, prefix),
        CsrfCheck::UnlessBearer(rule) => {
            if bearer_request(&guard.forwarder, route, req.headers()) {
                None
            } else {
                csrf::refusal_on(rule, req, prefix)
            }
        }
    }
}

/// The layer in front of a configured route's handler: puts the route in
/// the request's extensions (the handlers' `Extension<Arc<Route>>`) and
/// applies [`guard`]. Hand-written (a tower service with its own future,
/// not `from_fn` plus `Extension`): no boxed future, no boxed clone of the
/// handler's service per request.
#[derive(Clone)]
pub struct GuardLayer {
    pub guard: Arc<Guard>,
    pub route: Arc<Route>,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`GuardLayer`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    layer: GuardLayer,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let GuardLayer { guard: g, route } = &self.layer;
        if let Some(refused) = guard(g, route, &req) {
            return GuardFuture::Refused {
                answer: Some(refused),
            };
        }
        req.extensions_mut().insert(route.clone());
        GuardFuture::Inner {
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's answer, or the guard's refusal.
    #[project = GuardFutureProj]
    pub enum GuardFuture<F> {
        Refused { answer: Option<Response> },
        Inner { #[pin] inner: F },
    }
}

impl<F, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardFutureProj::Refused { answer } => {
                Poll::Ready(Ok(answer.take().unwrap_or_default()))
            }
            GuardFutureProj::Inner { inner } => inner.poll(cx),
        }
    }
}

/// What [`guard`] refuses before the anti-CSRF rule.
fn refuse(
    forwarder: &Forwarder,
    audit: &Auditor,
    route: &Route,
    req: &Request,
) -> Option<Response> {
    if crate::method::names_refused_method(req.method(), req.headers()) {
        let mut resp = AppError::MethodNotAllowed.into_response();
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return Some(resp);
    }
    if !crate::framing::is_unambiguous(req.headers()) {
        tracing::info!("request with ambiguous framing refused");
        return Some(AppError::AmbiguousFraming.into_response());
    }
    if let Err(refusal) = check_host(req.version(), req.uri(), req.headers()) {
        tracing::info!(reason = ?refusal, "request Host refused");
        return Some(AppError::BadRequest(refusal.message().into()).into_response());
    }
    if let Err(refusal) = check_request_path(req.uri().path()) {
        tracing::info!(reason = ?refusal, "request path refused");
        return Some(AppError::BadRequest(refusal.message().into()).into_response());
    }
    if route.shadows_another(req.uri().path()) {
        tracing::info!(route = %route.path, "request path reads as a longer route's; refused");
        let refusal = crate::url_policy::path::PathRefusal::AnotherRoute;
        return Some(AppError::BadRequest(refusal.message().into()).into_response());
    }
    if route.auth != RouteAuth::None
        && upgrade::requested(req.headers())
        && !forwarder.from_own_origin(req.headers())
    {
        audit.record(
            Origin::of_request(req),
            Event::failure(Action::PolicyRefusal, "websocket_origin").route(&route.path),
        );
        return Some(
            AppError::Forbidden(
                "WebSocket handshakes must come from this application's own origin.".into(),
            )
            .into_response(),
        );
    }
    None
}

/// A route that needs a session — or, on a route with `bearer_audience`,
/// a bearer client's valid token when the request carries no cookie of the
/// gateway's (a browser's session always takes precedence).
pub async fn required(
    State(forwarder): State<Arc<Forwarder>>,
    State(refresher): State<Arc<Refresher>>,
    State(oidc): State<Arc<Oidc>>,
    State(audit): State<Auditor>,
    Extension(route): Extension<Arc<Route>>,
    session: Result<CurrentSession, SessionRejection>,
    req: Request,
) -> Result<Response, AppError> {
    let session = match session {
        Ok(CurrentSession(s)) => s,
        Err(SessionRejection::Anonymous) if bearer_request(&forwarder, &route, req.headers()) => {
            // Boxed, like every branch most requests do not take: the
            // handler's future is moved by value as axum hands it down.
            return Box::pin(bearer(&forwarder, &oidc, &audit, &route, req)).await;
        }
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let return_to = forwarder.step_up_return_to(req.headers(), req.uri());
    if let Err(refused) = route.admit(&session, return_to.as_deref()) {
        audit.record(
            Origin::of_request(&req),
            Event::failure(Action::PolicyRefusal, refused.audit_refusal())
                .route(&route.path)
                .session(&session.store_id)
                .user(&crate::audit::subject(&session)),
        );
        return Err(refused);
    }
    let session = refresher
        .fresh(session, crate::clock::unix_now(), Origin::of_request(&req))
        .await?;
    forward_session(&forwarder, &refresher, &route, req, session).await
}

/// Forwards a session's request with the token the route's upstream is
/// meant to get: a token derived for the route (obtained or refreshed
/// here), else the session's own.
async fn forward_session(
    forwarder: &Forwarder,
    refresher: &Refresher,
    route: &Route,
    req: Request,
    session: Arc<crate::session::Session>,
) -> Result<Response, AppError> {
    if !route.token.is_derived() {
        return forwarder.forward(route, req, Some(&session)).await;
    }
    if !route.identity_headers.is_empty() || route.assertion_audience.is_some() {
        // Claims that do not rebuild refuse the request below anyway:
        // before a token is exchanged and stored for it, not after. (The
        // rebuild is kept with the session; the parse happens once, below.)
        if session.secrets.claims_json().is_err() {
            session.claims()?;
        }
    }
    let token = Box::pin(refresher.derived(
        &session,
        &route.token,
        crate::clock::unix_now(),
        Origin::of_request(&req),
    ))
    .await?;
    forwarder
        .forward_as(route, req, Caller::Derived(&session, &token))
        .await
}

/// Whether `req` is a bearer client's: the route accepts them, the request
/// has `Authorization: Bearer` and none of the gateway's cookies.
fn bearer_request(forwarder: &Forwarder, route: &Route, headers: &http::HeaderMap) -> bool {
    route.bearer_audience.is_some()
        && bearer_token(headers).is_some()
        && !forwarder.carries_our_cookie(headers)
}

fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// A bearer client: its JWT access token verified against the provider's
/// keys with the route's audience, the route's policy over its claims and
/// scopes, then forwarded with the client's own `Authorization` (no
/// session, no refresh).
async fn bearer(
    forwarder: &Forwarder,
    oidc: &Oidc,
    audit: &Auditor,
    route: &Route,
    req: Request,
) -> Result<Response, AppError> {
    let (Some(audience), Some(token)) = (
        route.bearer_audience.as_deref(),
        bearer_token(req.headers()),
    ) else {
        return Err(AppError::Unauthenticated);
    };
    let claims = match validate_access_token(&oidc.provider, &oidc.keys, token, audience).await {
        Ok(c) => c,
        Err(TokenError::KeysUnavailable(e)) => return Err(AppError::Provider(e)),
        Err(e) => {
            tracing::info!(reason = %e, route = %route.path, "bearer token refused");
            return Err(AppError::InvalidBearerToken(e.to_string()));
        }
    };
    let scopes = crate::oidc::claims::granted_scopes(None, token, "");
    authz::check(&route.policy, &claims, &scopes).map_err(|refusal| {
        tracing::info!(route = %route.path, "bearer request refused by the route's policy");
        let mut event = Event::failure(Action::PolicyRefusal, "bearer_policy").route(&route.path);
        if let Some(sub) = claims.get("sub").and_then(serde_json::Value::as_str) {
            event = event.user(sub);
        }
        audit.record(Origin::of_request(&req), event);
        AppError::Forbidden(refusal.to_string())
    })?;
    // The step-up rule over the token's own `acr` / `auth_time`: a client
    // gets the RFC 9470 challenge to take to its provider.
    if let Some(challenge) = route.step_up.check(&claims, crate::clock::unix_now()) {
        tracing::info!(route = %route.path, "bearer request needs a stronger login");
        let mut event =
            Event::failure(Action::PolicyRefusal, "step_up_required").route(&route.path);
        if let Some(sub) = claims.get("sub").and_then(serde_json::Value::as_str) {
            event = event.user(sub);
        }
        audit.record(Origin::of_request(&req), event);
        return Err(AppError::step_up(&challenge, &route.login_path, None));
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .cloned()
        .ok_or(AppError::Unauthenticated)?;
    forwarder
        .forward_as(
            route,
            req,
            Caller::Bearer {
                authorization,
                claims: &claims,
            },
        )
        .await
}

/// A route that forwards the token when there is a session.
pub async fn optional(
    State(forwarder): State<Arc<Forwarder>>,
    State(refresher): State<Arc<Refresher>>,
    Extension(route): Extension<Arc<Route>>,
    MaybeSession(session): MaybeSession,
    req: Request,
) -> Result<Response, AppError> {
    match session {
        Some(s) => {
            let session = refresher
                .fresh(s, crate::clock::unix_now(), Origin::of_request(&req))
                .await?;
            forward_session(&forwarder, &refresher, &route, req, session).await
        }
        None => forwarder.forward(&route, req, None).await,
    }
}

/// A route without sessions.
pub async fn public(
    State(forwarder): State<Arc<Forwarder>>,
    Extension(route): Extension<Arc<Route>>,
    req: Request,
) -> Result<Response, AppError> {
    forwarder.forward(&route, req, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns (a future), without running it.
    fn returned<A, B, C, R>(_: &impl Fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every request's future is moved by value (memcpy) as axum boxes and
    /// hands it down the layers, so what most requests never run — the
    /// retry's token renewal, a client-token grant — is boxed where it is
    /// awaited instead of making every request's future larger (11.7 KB
    /// before, 3.3 KB after, in a debug build).
    #[test]
    fn the_forwarding_future_does_not_carry_the_rare_token_renewals_inline() {
        let forward = |f: &'static Forwarder, r: &'static Route, q: Request| f.forward(r, q, None);
        let size = returned(&forward);
        assert!(size < 6 * 1024, "forward's future is {size} bytes");
    }
}
