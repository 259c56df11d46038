//! RP-initiated logout: the local session ends at once (record, indexes,
//! tombstone), the refresh token is revoked at the provider in the
//! background (RFC 7009; it must not hold up the logout), and the browser
//! is sent to the provider's end-session endpoint when there is one.
//!
//! The end-session URL carries the ID token as a hint. A `fetch` logout
//! answers JSON that the page reads, so the page gets a one-time handle to
//! navigate to instead of the URL itself ([`LogoutFlow::handle_for`],
//! [`LogoutFlow::take_handle`]).

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::oidc::Oidc;
use crate::session::cookie::random_token;
use crate::session::store::{OnceKind, RevokeReason, StoreResult};
use crate::session::{Session, Sessions};
use crate::url_policy::return_to;

/// How long a logout handle can be redeemed.
const HANDLE_TTL: Duration = Duration::from_secs(300);

/// Ends sessions at the user's request.
pub struct LogoutFlow {
    sessions: Arc<Sessions>,
    oidc: Arc<Oidc>,
    /// `oidc.end_session`: also end the provider's session.
    end_session: bool,
    post_logout_redirect: Url,
    /// Where the browser lands after logout, as a `Location` value.
    post_logout_location: String,
    /// `server.public_url`'s path (empty at the origin's root).
    base_path: String,
}

impl LogoutFlow {
    pub fn new(
        sessions: Arc<Sessions>,
        oidc: Arc<Oidc>,
        end_session: bool,
        post_logout_redirect: Url,
        public_url: &Url,
        base_path: &str,
    ) -> Self {
        Self {
            base_path: base_path.to_owned(),
            post_logout_location: return_to::location_for(&post_logout_redirect, public_url),
            sessions,
            oidc,
            end_session,
            post_logout_redirect,
        }
    }

    /// Where the browser goes when there is no provider session to end.
    pub fn post_logout_location(&self) -> &str {
        &self.post_logout_location
    }

    /// Ends `session` and returns the provider's end-session URL, if the
    /// provider has one and `oidc.end_session` is on.
    pub async fn end(&self, session: &Session, now: u64) -> StoreResult<Option<Url>> {
        self.sessions
            .revoke(&session.store_id, RevokeReason::Logout, "user", now)
            .await?;
        if let Some(rt) = session.secrets.refresh_token.clone() {
            let oidc = self.oidc.clone();
            crate::telemetry::spawn_for_request(async move {
                match oidc.provider.revoke_refresh_token(&rt).await {
                    Ok(true) => tracing::debug!("refresh token revoked at the provider"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %super::Untrusted(&e), "refresh token revocation at the provider failed")
                    }
                }
            });
        }
        if !self.end_session {
            return Ok(None);
        }
        Ok(self.oidc.provider.loaded().and_then(|d| {
            self.oidc.provider.end_session_url(
                &d,
                session.secrets.id_token.as_ref(),
                &self.post_logout_redirect,
            )
        }))
    }

    /// A one-time path (`/auth/logout/end?h=…`) that leads to `url`.
    pub async fn handle_for(&self, url: &Url) -> StoreResult<String> {
        let handle = random_token();
        self.sessions
            .put_sealed_once(
                OnceKind::Logout,
                &handle,
                url.as_str().as_bytes(),
                HANDLE_TTL,
            )
            .await?;
        Ok(format!("{}/auth/logout/end?h={handle}", self.base_path))
    }

    /// Where a logout handle leads: the end-session URL the first time, the
    /// post-logout page for a used, expired or malformed handle.
    pub async fn take_handle(&self, handle: Option<&str>) -> StoreResult<String> {
        let Some(handle) = handle.filter(|h| h.len() == 43) else {
            return Ok(self.post_logout_location.clone());
        };
        let url = self
            .sessions
            .take_sealed_once(OnceKind::Logout, handle)
            .await?
            .and_then(|p| String::from_utf8(p.to_vec()).ok());
        Ok(url.unwrap_or_else(|| self.post_logout_location.clone()))
    }
}
