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
}

impl Attached {
    pub fn header(&self) -> &HeaderValue {
        match self {
            Self::User(h) | Self::Client(h) => h,
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
        (TokenKind::Client, _) | (TokenKind::UserOrClient, None) => {
            Ok(Some(Attached::Client(client.header(token).await?)))
        }
    }
}
