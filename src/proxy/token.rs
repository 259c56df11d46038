//! Which access token a route's upstream receives (`[[routes]] token`):
//! decided here once, for proxied requests, WebSocket handshakes and
//! forward-auth answers alike.
//!
//! - `user`: the session's access token (none without a session);
//! - `client`: the gateway's own client-credentials token, with or without
//!   a session;
//! - `user_or_client`: the session's token, else the client token;
//! - `none`: no `Authorization` at all.
//!
//! The browser's own `Authorization` is always removed (`headers`); what
//! is decided here is the only one the upstream sees.

use http::HeaderValue;

use crate::config::{RouteToken, TokenKind};
use crate::error::AppError;
use crate::flows::client_token::ClientTokens;
use crate::session::Session;

/// The token sent for one request, and where it came from (a refused one
/// is renewed at its source).
#[derive(Clone)]
pub enum Attached {
    /// The session's access token.
    User(HeaderValue),
    /// The gateway's client token.
    Client(HeaderValue),
    /// A user token derived for the route (`resource`/`scopes`/
    /// `token_exchange`): renewed on a refusal like the session's.
    Derived(HeaderValue),
}

impl Attached {
    pub fn header(&self) -> &HeaderValue {
        match self {
            Self::User(h) | Self::Client(h) | Self::Derived(h) => h,
        }
    }
}

/// The `Authorization` for `token`'s route, given the session (if any).
pub async fn decide(
    token: &RouteToken,
    session: Option<&Session>,
    client: &ClientTokens,
) -> Result<Option<Attached>, AppError> {
    let user = |s: &Session| {
        s.bearer_header()
            .map(Attached::User)
            .map_err(|_| AppError::Internal("access token is not a valid header value".into()))
    };
    match (token.kind, session) {
        (TokenKind::None, _) | (TokenKind::User, None) => Ok(None),
        (TokenKind::User | TokenKind::UserOrClient, Some(s)) => user(s).map(Some),
        // Boxed: a token grant's future would otherwise be part of every
        // request's (moved by value as it is handed down the layers).
        (TokenKind::Client, _) | (TokenKind::UserOrClient, None) => Ok(Some(Attached::Client(
            Box::pin(client.header(token)).await?,
        ))),
    }
}

/// Largest request body kept so that a request refused for its token can
/// be sent again (larger or streamed bodies are forwarded as they come,
/// and their 401 passes through).
pub const REPLAY_BODY_LIMIT: u64 = 64 * 1024;

/// Whether one of the upstream's `WWW-Authenticate` values is a Bearer
/// challenge with `error="invalid_token"` (RFC 6750 §3.1): the token was
/// refused (expired, revoked), so a new one may succeed. Bounded: at most
/// four values of at most 2 KiB each are read.
pub fn refused_token(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .take(4)
        .any(|v| is_invalid_token_challenge(v.as_bytes()))
}

fn is_invalid_token_challenge(header: &[u8]) -> bool {
    if header.len() > crate::step_up::MAX_CHALLENGE_BYTES {
        return false;
    }
    let Some((scheme, rest)) = std::str::from_utf8(header)
        .ok()
        .and_then(|t| t.trim().split_once([' ', '\t']))
    else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    crate::step_up::auth_params(rest).is_some_and(|params| {
        let mut errors = params
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("error"));
        matches!((errors.next(), errors.next()), (Some((_, v)), None) if v == "invalid_token")
    })
}

#[cfg(test)]
mod tests {
    use super::refused_token;

    fn with(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(http::header::WWW_AUTHENTICATE, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn only_a_bearer_invalid_token_challenge_counts_as_a_refused_token() {
        assert!(refused_token(&with(&[
            r#"Bearer realm="api", error="invalid_token", error_description="expired""#
        ])));
        assert!(refused_token(&with(&[
            r#"Basic realm="x""#,
            "bearer error=invalid_token"
        ])));
        for refused in [
            r#"Bearer error="insufficient_user_authentication", acr_values="mfa""#,
            r#"Bearer error="invalid_request""#,
            r#"Bearer error="invalid_token", error="invalid_token""#,
            r#"Basic error="invalid_token""#,
            "Bearer",
            r#"Bearer error="invalid_token"#,
        ] {
            assert!(!refused_token(&with(&[refused])), "{refused}");
        }
        let long = format!(r#"Bearer error="invalid_token", x="{}""#, "a".repeat(4096));
        assert!(!refused_token(&with(&[&long])));
    }
}
