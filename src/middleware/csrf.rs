//! The anti-CSRF rule: a state-changing request on a session route must
//! carry the configured header (`csrf.header: csrf.value`). A page on
//! another site cannot add a custom header without a CORS preflight, which
//! the gateway never grants, so the header proves the call came from the
//! application's own pages.
//!
//! Applied by route metadata where the router registers routes (every
//! proxied route with a session, `/auth/sessions/*`), never called by hand;
//! logout, which also accepts an HTML form with a per-session token, reads
//! the rule through the [`CsrfHeader`] extractor.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::audit::{Action, Auditor, Event, Origin};
use crate::error::AppError;
use crate::session::Sessions;

/// The configured header and value (a sub-state), and where a refusal
/// is recorded.
pub struct CsrfRule {
    pub header: HeaderName,
    pub value: HeaderValue,
    pub audit: Auditor,
    /// To name the presented session in a refusal's audit event.
    pub sessions: Arc<Sessions>,
}

impl CsrfRule {
    /// Records a refusal in the audit trail. The session is the one the
    /// request's cookie names (hashed; not looked up, so a refusal costs
    /// no store read and the user is not known).
    pub fn record_refusal(&self, origin: Origin<'_>, headers: &HeaderMap, route: Option<&str>) {
        let presented = self.sessions.presented(headers);
        let mut event = Event::failure(Action::CsrfRefusal, "missing_csrf_header");
        if let Some(id) = &presented {
            event = event.session(id);
        }
        if let Some(r) = route {
            event = event.route(r);
        }
        self.audit.record(origin, event);
    }

    /// Whether the request carries the header with the right value.
    pub fn satisfied_by(&self, headers: &HeaderMap) -> bool {
        headers.get(&self.header).is_some_and(|v| v == self.value)
    }
}

/// Methods that change state (everything but GET, HEAD, OPTIONS, TRACE).
/// A request with a method-override header is held to the rule whatever
/// its own method ([`refusal_on`], `crate::method::overridden`): the
/// upstream may run the method it names.
pub fn is_state_changing(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The layer: refuses state-changing requests without the header (403
/// `csrf_rejected`) before anything else runs.
pub async fn require_on_unsafe_methods(
    State(rule): State<Arc<CsrfRule>>,
    req: Request,
    next: Next,
) -> Response {
    match refusal(&rule, &req) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

/// The rule over one request: `Some(403 csrf_rejected)`, recorded in the
/// audit trail, for a state-changing request without the header. For
/// layers that apply the rule among other checks (the proxied routes'
/// guard).
pub fn refusal(rule: &CsrfRule, req: &Request) -> Option<Response> {
    // The route as registered, without its catch-all: the configured
    // prefix (or the gateway's own endpoint).
    refusal_on(rule, req, || {
        req.extensions().get::<MatchedPath>().map(|m| {
            let p = m.as_str();
            let p = p.strip_suffix("{*rest}").unwrap_or(p);
            if p.len() > 1 {
                p.trim_end_matches('/')
            } else {
                p
            }
        })
    })
}

/// [`refusal`] where the caller knows the route the audit event names (a
/// configured route's guard: its prefix).
pub fn refusal_on<'a>(
    rule: &CsrfRule,
    req: &'a Request,
    route: impl FnOnce() -> Option<&'a str>,
) -> Option<Response> {
    if (is_state_changing(req.method()) || crate::method::overridden(req.headers()))
        && !rule.satisfied_by(req.headers())
    {
        rule.record_refusal(Origin::of_request(req), req.headers(), route());
        return Some(AppError::CsrfRejected.into_response());
    }
    None
}

/// Whether the request carries the anti-CSRF header (for handlers that
/// accept another proof too).
pub struct CsrfHeader(pub bool);

impl<S> FromRequestParts<S> for CsrfHeader
where
    S: Send + Sync,
    Arc<CsrfRule>: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            Arc::<CsrfRule>::from_ref(state).satisfied_by(&parts.headers),
        ))
    }
}
