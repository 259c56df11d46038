//! Derived user tokens (`[[routes]] resource` / `scopes` /
//! `token_exchange`): the token a route's API gets instead of the login's,
//! obtained once per expiry across every request and every instance, the
//! same way the main token is refreshed — a local single-flight and the
//! session's Redis refresh lock, then a compare-and-set write of the
//! record. The same lock as the main refresh, on purpose: a refresh-token
//! grant with `resource` spends the session's refresh token too, and with
//! rotation two grants at once would end the session at the provider.
//!
//! The tokens are kept in the record's sealed secrets, keyed by what was
//! asked (resource, scopes, exchange), so they are dropped with the record
//! at logout and revocation and never reach the browser.

use tracing::Instrument as _;

use super::{RefreshError, Refresher};
use crate::audit::Origin;
use crate::config::RouteToken;
use crate::oidc::provider::ProviderError;
use crate::secret::SecretString;
use crate::session::record::DerivedToken;
use crate::session::store::RevokeReason;
use crate::session::{EndReason, Session};

/// The stable key a derived token is stored under: what it was asked for
/// (exchange or refresh, resource, sorted scopes), not which route asked.
pub fn derived_key(token: &RouteToken) -> String {
    let mut scopes: Vec<&str> = token.scopes.iter().map(String::as_str).collect();
    scopes.sort_unstable();
    scopes.dedup();
    format!(
        "{}|{}|{}",
        if token.exchange { "x" } else { "r" },
        token.resource.as_ref().map_or("", url::Url::as_str),
        scopes.join(" ")
    )
}

impl Refresher {
    /// The route's own token for `session` (whose main token is fresh):
    /// the stored one while it is valid for the skew, else a new one from
    /// the provider, stored in the record before it is used.
    pub async fn derived(
        &self,
        session: &Session,
        route: &RouteToken,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<SecretString, RefreshError> {
        self.derived_unless(session, route, None, now, origin).await
    }

    /// [`Self::derived`] after the route's API refused `refused` (a 401
    /// `invalid_token`): a new one, unless another request already
    /// replaced it (single-flight, across instances).
    pub async fn derived_refused(
        &self,
        session: &Session,
        route: &RouteToken,
        refused: &str,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<SecretString, RefreshError> {
        self.derived_unless(session, route, Some(refused), now, origin)
            .await
    }

    /// The stored token for `key` if it is valid for the skew and is not
    /// the `refused` one.
    fn usable(
        &self,
        session: &Session,
        key: &str,
        refused: Option<&str>,
        now: u64,
    ) -> Option<SecretString> {
        session
            .secrets
            .derived_token(key, now, self.skew)
            .filter(|t| refused.is_none_or(|r| t.expose() != r))
            .cloned()
    }

    async fn derived_unless(
        &self,
        session: &Session,
        route: &RouteToken,
        refused: Option<&str>,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<SecretString, RefreshError> {
        let key = derived_key(route);
        if let Some(t) = self.usable(session, &key, refused, now) {
            return Ok(t);
        }
        let flight = session.store_id.as_str().to_owned();
        let local = self.flights.lock_for(&flight);
        let span = tracing::info_span!(target: crate::traces::SPANS, "session.derived_token");
        let result = async {
            let _guard = local.lock().await;
            self.derive_locked(session, route, &key, refused, now, origin)
                .await
        }
        .instrument(span)
        .await;
        self.flights.release(&flight, local);
        result
    }

    async fn derive_locked(
        &self,
        session: &Session,
        route: &RouteToken,
        key: &str,
        refused: Option<&str>,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<SecretString, RefreshError> {
        let current = self
            .sessions
            .reload(session, now)
            .await?
            .map_err(RefreshError::SessionEnded)?;
        let fresh = |s: &Session| self.usable(s, key, refused, now);
        self.under_refresh_lock(current, now, fresh, async |current: &Session| {
            self.derive_with_lock(current, route, key, refused, now, origin)
                .await
        })
        .await
    }

    async fn derive_with_lock(
        &self,
        current: &Session,
        route: &RouteToken,
        key: &str,
        refused: Option<&str>,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<SecretString, RefreshError> {
        let sessions = &self.sessions;
        let latest = sessions
            .reload(current, now)
            .await?
            .map_err(RefreshError::SessionEnded)?;
        if let Some(t) = self.usable(&latest, key, refused, now) {
            return Ok(t);
        }
        let answer = self
            .oidc
            .provider
            .derived_token(
                route,
                latest.secrets.refresh_token.as_ref(),
                &latest.secrets.access_token,
            )
            .await;
        let tokens = match answer {
            Ok(t) => t,
            // The session's refresh token refused: the session is over, as
            // for the main refresh (with rotation, it may be spent).
            Err(e) if e.is_invalid_grant() && !route.exchange => {
                tracing::info!(session = ?latest.store_id, "refresh token refused for a derived token (invalid_grant); ending the session");
                self.count(origin, &latest, Some("invalid_grant"));
                sessions
                    .revoke(&latest.store_id, RevokeReason::RefreshFailed, "system", now)
                    .await?;
                return Err(RefreshError::SessionEnded(EndReason::RefreshRefused));
            }
            Err(e) => {
                // A refused exchange, an outage: the gateway's problem (503),
                // the session stays.
                let e = match e {
                    ProviderError::Rejected { error, .. } => ProviderError::Unavailable(format!(
                        "token endpoint refused the derived token: {error}"
                    )),
                    other => other,
                };
                tracing::warn!(session = ?latest.store_id, error = %crate::flows::Untrusted(&e), "derived token failed; keeping the session");
                return Err(RefreshError::Provider(e));
            }
        };
        let mut secrets = latest.secrets.clone();
        if let Some(rotated) = tokens.refresh_token
            && !route.exchange
        {
            // The provider rotated the session's refresh token on this
            // grant: the old one is spent, the new one is the session's.
            secrets.refresh_token = Some(rotated);
        }
        let token = tokens.access_token;
        secrets.put_derived(DerivedToken {
            key: key.to_owned(),
            access_token: token.clone(),
            expires_at: tokens.expires_in.map_or(0, |d| now + d.as_secs()),
        });
        tracing::debug!(session = ?latest.store_id, "derived token obtained");
        sessions
            .write_tokens(&latest, secrets, latest.stored.body.access_expires_at, now)
            .await?
            .ok_or(RefreshError::SessionEnded(EndReason::Expired))?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenKind;

    fn token(resource: Option<&str>, scopes: &[&str], exchange: bool) -> RouteToken {
        RouteToken {
            kind: TokenKind::User,
            resource: resource.map(|r| r.parse().expect("url")),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            exchange,
            dpop: false,
        }
    }

    #[test]
    fn derived_tokens_are_keyed_by_what_was_asked_not_by_route() {
        let a = token(Some("https://api-a.test"), &["a.read", "a.write"], false);
        let same = token(Some("https://api-a.test/"), &["a.write", "a.read"], false);
        assert_eq!(derived_key(&a), derived_key(&same));
        let others = [
            token(Some("https://api-b.test"), &["a.read", "a.write"], false),
            token(Some("https://api-a.test"), &["a.read"], false),
            token(Some("https://api-a.test"), &["a.read", "a.write"], true),
            token(None, &["a.read", "a.write"], false),
        ];
        for o in &others {
            assert_ne!(derived_key(&a), derived_key(o), "{o:?}");
        }
    }
}
