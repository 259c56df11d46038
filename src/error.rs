//! The one error type at the HTTP boundary and its one mapping to status
//! codes and bodies.
//!
//! Variants are named for what the client should understand. Bodies are
//! JSON `{ "error": code, "message": sentence }`; for browser navigations the
//! page layer (`pages`) renders the same information as HTML, using the
//! [`ErrorInfo`] extension this mapping attaches. Internal detail (a Redis
//! error, a provider's answer) is logged here and never sent: 5xx bodies are
//! generic.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::flows::login::LoginError;
use crate::flows::refresh::RefreshError;
use crate::oidc::provider::ProviderError;
use crate::session::EndReason;
use crate::session::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A body framed two ways, or by a coding besides `chunked`
    /// (`framing`): 400, and the connection closed after the answer.
    #[error("ambiguous request framing")]
    AmbiguousFraming,
    /// The login did not complete: provider error, bad state, bad ID token.
    #[error("login failed: {0}")]
    LoginFailed(String),
    /// The login's state is unknown, expired or already used.
    #[error("login expired or already completed")]
    LoginExpired,
    #[error("not logged in")]
    Unauthenticated,
    /// The cookie names no live session; why, in the categories the
    /// browser may know (the body's `reason`).
    #[error("session ended: {}", .0.as_str())]
    SessionExpired(EndReason),
    /// A bearer client's token (on a route with `bearer_audience`) does not
    /// verify: bad signature, wrong issuer or audience, expired.
    #[error("invalid bearer token: {0}")]
    InvalidBearerToken(String),
    /// The session is good but its login is not strong or recent enough
    /// for this route (or the upstream said so, RFC 9470): log in again
    /// with what `login_url` asks. The session stays.
    #[error("step-up required")]
    StepUpRequired {
        challenge: crate::step_up::Challenge,
        login_url: String,
    },
    #[error("missing or wrong anti-CSRF header")]
    CsrfRejected,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A request body over `server.max_body_bytes` to the gateway's own
    /// endpoints.
    #[error("request body too large")]
    PayloadTooLarge,
    /// A request body the gateway reads whole (`router::limit_body`, a
    /// proxied body kept for a retry) that did not arrive within
    /// `server.body_read_timeout`.
    #[error("request body not received in time")]
    BodyTimeout,
    /// A request head that does not parse as HTTP/1 (a malformed request
    /// line, header name or value; a header folded over lines). hyper
    /// refuses it before any route: `server::unreadable` answers.
    #[error("request head does not parse")]
    UnreadableHead,
    /// A request head over `server.max_header_bytes`, or with more header
    /// fields than the HTTP/1 parser takes (431; `server::unreadable`).
    #[error("request head too large")]
    HeadTooLarge,
    /// A request target longer than the HTTP/1 parser takes (414;
    /// `server::unreadable`).
    #[error("request target too long")]
    TargetTooLong,
    /// A request on a connection being closed because its client cancelled
    /// too many requests (HTTP/2 rapid reset; `crate::server`).
    #[error("too many cancelled requests on this connection")]
    TooManyCancelled,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<LoginError> for AppError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::BadRequest(m) => Self::BadRequest(m),
            LoginError::Failed(_, m) => Self::LoginFailed(m),
            LoginError::Expired => Self::LoginExpired,
            // The callback handler returns a silent check to the app; this
            // is only what it would mean anywhere else.
            LoginError::Silent { reason, .. } => Self::LoginFailed(format!(
                "the identity provider answered `{reason}`"
            )),
            LoginError::OtherUser => Self::LoginFailed(
                "you signed in as a different user than the one this step-up was for; your earlier sign-in is still active. Sign in again as the same user, or log out first"
                    .into(),
            ),
            LoginError::Provider(p) => Self::Provider(p),
            LoginError::Store(s) => Self::Store(s),
        }
    }
}

/// A session whose claims do not read is refused as ended (401
/// `session_expired`), like a record that does not decode.
impl From<crate::session::ClaimsUnreadable> for AppError {
    fn from(_: crate::session::ClaimsUnreadable) -> Self {
        AppError::SessionExpired(EndReason::Expired)
    }
}

impl From<RefreshError> for AppError {
    fn from(e: RefreshError) -> Self {
        match e {
            RefreshError::SessionEnded(why) => Self::SessionExpired(why),
            RefreshError::Provider(p) => Self::Provider(p),
            RefreshError::Store(s) => Self::Store(s),
        }
    }
}

/// What a rendered error page needs; attached to every error response.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorInfo {
    pub status: u16,
    pub code: &'static str,
    pub title: &'static str,
    pub message: String,
    /// Offer a "log in again" link.
    pub relogin: bool,
    /// Where that link goes when not the plain login (a step-up's login
    /// URL, asking for what the route needs).
    pub login_url: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    /// Only on `session_expired`: why the session ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: &'a str,
    /// Only on `step_up_required`: where to log in again.
    #[serde(skip_serializing_if = "Option::is_none")]
    login_url: Option<&'a str>,
}

impl AppError {
    /// The audit trail's reason for a route refusing a session
    /// (`Route::admit`): a step-up, or the route's policy.
    pub fn audit_refusal(&self) -> &'static str {
        match self {
            Self::StepUpRequired { .. } => "step_up_required",
            _ => "route_policy",
        }
    }

    /// `step_up_required` for `challenge`, logging in at `login_path` and
    /// coming back to `return_to` (when known).
    pub fn step_up(
        challenge: &crate::step_up::Challenge,
        login_path: &str,
        return_to: Option<&str>,
    ) -> Self {
        Self::StepUpRequired {
            login_url: challenge.login_url(login_path, return_to),
            challenge: challenge.clone(),
        }
    }

    /// Status, machine code, page title, user-facing sentence.
    pub fn describe(&self) -> (StatusCode, &'static str, &'static str, String) {
        use StatusCode as S;
        match self {
            Self::BadRequest(m) => (S::BAD_REQUEST, "bad_request", "Bad request", m.clone()),
            Self::AmbiguousFraming => (S::BAD_REQUEST, "bad_request", "Bad request", crate::framing::REFUSAL.into()),
            Self::LoginFailed(m) => (S::BAD_REQUEST, "login_failed", "Sign-in failed", format!("Sign-in did not complete: {m}.")),
            Self::LoginExpired => (
                S::BAD_REQUEST,
                "login_expired",
                "Sign-in expired",
                "This sign-in took too long, was already completed, or was started in another browser. Please log in again.".into(),
            ),
            Self::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated", "Not logged in", "You are not logged in.".into()),
            Self::InvalidBearerToken(_) => (
                S::UNAUTHORIZED,
                "invalid_token",
                "Not authorized",
                "The bearer token is not valid for this route.".into(),
            ),
            Self::SessionExpired(why) => (
                S::UNAUTHORIZED,
                "session_expired",
                why.title(),
                why.message().into(),
            ),
            Self::StepUpRequired { .. } => (
                S::UNAUTHORIZED,
                "step_up_required",
                "Please sign in again",
                "This needs a stronger or more recent sign-in.".into(),
            ),
            Self::CsrfRejected => (
                S::FORBIDDEN,
                "csrf_rejected",
                "Request refused",
                "This request must carry the anti-CSRF header.".into(),
            ),
            Self::Forbidden(m) => (S::FORBIDDEN, "forbidden", "Forbidden", m.clone()),
            Self::NotFound => (S::NOT_FOUND, "not_found", "Not found", "There is nothing here.".into()),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed", "This method is not allowed here.".into()),
            Self::PayloadTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request too large",
                "The request body is too large.".into(),
            ),
            Self::UnreadableHead => (
                S::BAD_REQUEST,
                "bad_request",
                "Bad request",
                "The request could not be read as HTTP/1.1: its request line or a header is malformed \
                 (an invalid character, a header folded over lines, an unknown version)."
                    .into(),
            ),
            Self::HeadTooLarge => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_head_too_large",
                "Request too large",
                "The request's headers are larger than this gateway accepts; too many or too large \
                 cookies are the usual cause."
                    .into(),
            ),
            Self::TargetTooLong => (
                S::URI_TOO_LONG,
                "uri_too_long",
                "Address too long",
                "The request's URL is longer than this gateway accepts.".into(),
            ),
            Self::BodyTimeout => (
                S::REQUEST_TIMEOUT,
                "request_timeout",
                "Request too slow",
                "The request body did not arrive in time.".into(),
            ),
            Self::TooManyCancelled => (
                S::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too many requests",
                "This connection cancelled too many requests and is being closed. Open a new connection and try again.".into(),
            ),
            Self::Provider(ProviderError::Timeout(_)) => (
                S::GATEWAY_TIMEOUT,
                "provider_timeout",
                "Identity provider not responding",
                "The identity provider did not answer in time. Please try again in a moment.".into(),
            ),
            Self::Provider(ProviderError::Rejected { .. }) => (
                S::BAD_REQUEST,
                "login_failed",
                "Sign-in failed",
                "The identity provider refused the sign-in. Please log in again.".into(),
            ),
            Self::Provider(_) => (
                S::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                "Identity provider unavailable",
                "The identity provider cannot be reached. Please try again in a moment.".into(),
            ),
            Self::Store(_) => (
                S::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "Temporarily unavailable",
                "Sessions are temporarily unavailable. Please try again in a moment.".into(),
            ),
            Self::UpstreamUnavailable(_) => (
                S::BAD_GATEWAY,
                "upstream_unavailable",
                "Service unavailable",
                "The service behind this gateway cannot be reached.".into(),
            ),
            Self::UpstreamTimeout => (
                S::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "Service not responding",
                "The service behind this gateway did not answer in time.".into(),
            ),
            Self::Internal(_) => (
                S::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong",
                "An internal error occurred.".into(),
            ),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, title, message) = self.describe();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
        } else {
            tracing::debug!(error = %self, code, "request refused");
        }
        let relogin = matches!(
            code,
            "login_failed"
                | "login_expired"
                | "session_expired"
                | "unauthenticated"
                | "step_up_required"
        );
        let mut resp = (
            status,
            Json(Body {
                error: code,
                reason: match &self {
                    Self::SessionExpired(why) => Some(why.as_str()),
                    _ => None,
                },
                message: &message,
                login_url: match &self {
                    Self::StepUpRequired { login_url, .. } => Some(login_url),
                    _ => None,
                },
            }),
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(
            self,
            Self::AmbiguousFraming
                | Self::BodyTimeout
                | Self::TooManyCancelled
                | Self::UnreadableHead
                | Self::HeadTooLarge
                | Self::TargetTooLong
        ) {
            // Where the next request starts is what is in doubt (or
            // behind a body that is still unread).
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::StepUpRequired { challenge, .. } = &self {
            // RFC 9470's own challenge, so a client that knows it needs
            // nothing else; values are ACR tokens and digits only.
            let mut v = String::from(
                "Bearer realm=\"oidc-bff\", error=\"insufficient_user_authentication\"",
            );
            if let Some(a) = &challenge.acr_values {
                v.push_str(&format!(", acr_values=\"{a}\""));
            }
            if let Some(m) = challenge.max_age {
                v.push_str(&format!(", max_age={m}"));
            }
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        } else if code == "invalid_token" {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"oidc-bff\", error=\"invalid_token\""),
            );
        } else if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Session realm=\"oidc-bff\", login=\"/auth/login\""),
            );
        }
        let login_url = match &self {
            Self::StepUpRequired { login_url, .. } => Some(login_url.clone()),
            _ => None,
        };
        resp.extensions_mut().insert(ErrorInfo {
            status: status.as_u16(),
            code,
            title,
            message,
            relogin,
            login_url,
        });
        resp
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: AppError) -> (StatusCode, serde_json::Value, Response) {
        let resp = e.into_response();
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.expect("body");
        let v = serde_json::from_slice(&bytes).expect("json");
        (
            status,
            v,
            Response::from_parts(parts, axum::body::Body::empty()),
        )
    }

    #[tokio::test]
    async fn server_errors_never_leak_internal_detail() {
        let (status, v, _) = body_of(AppError::Store(StoreError::Unavailable(
            "redis at 10.0.0.5: WRONGPASS".into(),
        )))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["error"], "store_unavailable");
        assert!(!v.to_string().contains("10.0.0.5"));
        let (status, v, _) = body_of(AppError::Internal("secret detail".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!v.to_string().contains("secret detail"));
    }

    #[tokio::test]
    async fn a_session_whose_claims_do_not_read_is_refused_as_ended() {
        let e = AppError::from(crate::session::ClaimsUnreadable);
        let (status, v, _) = body_of(e).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(v["error"], "session_expired");
        assert_eq!(v["reason"], "expired");
    }

    #[tokio::test]
    async fn unauthorized_answers_carry_www_authenticate_and_no_store() {
        let (status, v, resp) = body_of(AppError::SessionExpired(EndReason::Expired)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(v["error"], "session_expired");
        assert_eq!(v["reason"], "expired");
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        assert!(
            resp.extensions()
                .get::<ErrorInfo>()
                .is_some_and(|i| i.relogin)
        );
    }

    #[tokio::test]
    async fn step_up_required_carries_its_login_url_and_an_rfc_9470_challenge() {
        let challenge = crate::step_up::Challenge {
            acr_values: Some("mfa".into()),
            max_age: Some(300),
        };
        let (status, v, resp) = body_of(AppError::step_up(
            &challenge,
            "/auth/login",
            Some("/orders"),
        ))
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(v["error"], "step_up_required");
        assert_eq!(
            v["login_url"],
            "/auth/login?acr_values=mfa&max_age=300&return_to=%2Forders"
        );
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"oidc-bff\", error=\"insufficient_user_authentication\", acr_values=\"mfa\", max_age=300"
        );
        let info = resp.extensions().get::<ErrorInfo>().expect("info");
        assert!(info.relogin);
        assert_eq!(info.login_url.as_deref(), v["login_url"].as_str());
        let (_, other, _) = body_of(AppError::Unauthenticated).await;
        assert!(other.get("login_url").is_none(), "{other}");
    }

    #[tokio::test]
    async fn an_ended_session_says_why_in_a_category_and_nothing_more() {
        for (why, reason) in [
            (EndReason::Expired, "expired"),
            (EndReason::LoggedOut, "logged_out"),
            (EndReason::RevokedByUser, "revoked_by_user"),
            (EndReason::RevokedByOperator, "revoked_by_operator"),
            (EndReason::EndedAtProvider, "ended_at_provider"),
            (EndReason::RefreshRefused, "refresh_refused"),
            (EndReason::SessionLimit, "session_limit"),
        ] {
            let (status, v, _) = body_of(AppError::SessionExpired(why)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(v["error"], "session_expired", "{v}");
            assert_eq!(v["reason"], reason, "{v}");
            assert_eq!(v.as_object().map(|o| o.len()), Some(3), "{v}");
        }
        let (_, v, _) = body_of(AppError::Unauthenticated).await;
        assert!(v.get("reason").is_none(), "{v}");
    }
}
