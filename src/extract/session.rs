//! The session extractors: the one place where a request's cookie is
//! resolved and each outcome is given its meaning.
//!
//! - [`CurrentSession`]: a route that needs a session. No cookie is a 401
//!   `unauthenticated`; a cookie that names no live session (expired,
//!   revoked, forged) is a 401 `session_expired` that also clears the
//!   cookie and names a coarse `reason` (see `session::EndReason`: a forged
//!   cookie reads as `expired`); a store failure is a 503 (fail closed,
//!   never guess).
//! - Several different values under the session cookie's name (another
//!   subdomain's cookie of the same name: cookie tossing) are no session:
//!   the answer is the `unauthenticated` one, with `Set-Cookie`s that clear
//!   every variant the gateway can name, and neither session is read.
//! - [`MaybeSession`]: a route that works either way; only a store failure
//!   is refused.
//!
//! Either way a live session gets its activity recorded when due (at most
//! once per `session.touch_interval`, in the background: the request does
//! not wait for the write).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::SET_COOKIE;
use http::request::Parts;
use tracing::Instrument as _;

use super::client::{ClientAddressPolicy, ClientInfo};
use crate::error::AppError;
use crate::session::store::StoreError;
use crate::session::{EndReason, Lookup, Session, Sessions};

/// The caller's live session.
pub struct CurrentSession(pub Arc<Session>);

/// The caller's live session, if there is one.
pub struct MaybeSession(pub Option<Arc<Session>>);

/// Why a request has no session where it needs one.
#[derive(Debug)]
pub enum SessionRejection {
    /// No session cookie.
    Anonymous,
    /// Several different session cookies: answered as [`Self::Anonymous`]
    /// (neither is the caller's session as far as the gateway can tell),
    /// with the values that clear every variant it can name.
    Ambiguous(Vec<HeaderValue>),
    /// The cookie names no live session (why, and the values that clear
    /// it).
    Ended(EndReason, Vec<HeaderValue>),
    Store(StoreError),
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Anonymous => AppError::Unauthenticated.into_response(),
            Self::Ambiguous(clear) => with_cookies(AppError::Unauthenticated, clear),
            Self::Ended(why, clear) => with_cookies(AppError::SessionExpired(why), clear),
            Self::Store(e) => AppError::Store(e).into_response(),
        }
    }
}

/// `error`'s answer with `Set-Cookie`s appended.
fn with_cookies(error: AppError, set: Vec<HeaderValue>) -> Response {
    let mut resp = error.into_response();
    for v in set {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

/// Resolves the cookie once: the live session (touched when due), or why
/// there is none.
async fn resolve<S>(parts: &mut Parts, state: &S) -> Result<Arc<Session>, SessionRejection>
where
    S: Send + Sync,
    Arc<Sessions>: FromRef<S>,
    ClientAddressPolicy: FromRef<S>,
{
    let sessions = Arc::<Sessions>::from_ref(state);
    let now = crate::clock::unix_now();
    // Exported traces see the lookup and its store read; its outcome is
    // one of a few words, never the cookie or the session's contents.
    let span = tracing::info_span!(
        target: crate::traces::SPANS,
        "session.lookup",
        session.outcome = tracing::field::Empty,
    );
    let looked_up = sessions
        .load(&parts.headers, now)
        .instrument(span.clone())
        .await;
    span.record(
        "session.outcome",
        match &looked_up {
            Ok(Lookup::Active(_)) => "active",
            Ok(Lookup::Ended(_)) => "ended",
            Ok(Lookup::Anonymous) => "anonymous",
            Ok(Lookup::Ambiguous) => "ambiguous",
            Err(_) => "store_error",
        },
    );
    match looked_up {
        Ok(Lookup::Active(session)) => {
            if sessions.touch_due(&session, now) {
                let Ok(client) = ClientInfo::from_request_parts(parts, state).await;
                touch_in_background(sessions, &session, client, now);
            }
            Ok(session)
        }
        Ok(Lookup::Ended(why)) => Err(SessionRejection::Ended(
            why,
            sessions.cookies().clear_session_cookies(),
        )),
        Ok(Lookup::Ambiguous) => Err(SessionRejection::Ambiguous(
            sessions.cookies().clear_session_cookies(),
        )),
        Ok(Lookup::Anonymous) => Err(SessionRejection::Anonymous),
        Err(e) => Err(SessionRejection::Store(e)),
    }
}

/// Records activity without holding up the request. Best effort: a lost
/// race or a failed write only delays the next touch.
fn touch_in_background(
    sessions: Arc<Sessions>,
    session: &Arc<Session>,
    client: ClientInfo,
    now: u64,
) {
    let snapshot = Arc::clone(session);
    crate::telemetry::spawn_for_request(async move {
        if let Err(e) = sessions.touch(&snapshot, &client, now).await {
            tracing::debug!(error = %e, "activity write failed");
        }
    });
}

impl<S> FromRequestParts<S> for CurrentSession
where
    S: Send + Sync,
    Arc<Sessions>: FromRef<S>,
    ClientAddressPolicy: FromRef<S>,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        resolve(parts, state).await.map(CurrentSession)
    }
}

impl<S> FromRequestParts<S> for MaybeSession
where
    S: Send + Sync,
    Arc<Sessions>: FromRef<S>,
    ClientAddressPolicy: FromRef<S>,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match resolve(parts, state).await {
            Ok(s) => Ok(MaybeSession(Some(s))),
            Err(SessionRejection::Store(e)) => Err(SessionRejection::Store(e)),
            Err(
                SessionRejection::Anonymous
                | SessionRejection::Ambiguous(_)
                | SessionRejection::Ended(..),
            ) => Ok(MaybeSession(None)),
        }
    }
}
