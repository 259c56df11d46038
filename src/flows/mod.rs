//! The flows that join the OpenID provider and the session store: login
//! (authorization code + PKCE), token refresh, logout, back-channel logout.
//!
//! Each is a small service over [`crate::session::Sessions`] and
//! [`crate::oidc::Oidc`] with its own error type; `error` maps those to HTTP
//! in one place. Nothing here reads a request or writes a response: the
//! handlers in `routes` and the proxy do that.

pub mod backchannel;
pub mod login;
pub mod logout;
pub mod refresh;
