//! The gateway's own access tokens (`token = "client"` and the anonymous
//! side of `"user_or_client"`): one client-credentials grant per distinct
//! (scopes, resource), cached until its `expires_in` less the refresh skew,
//! single-flight (concurrent requests wait for the one grant in flight).
//! The token lives only here and in the upstream request's `Authorization`
//! header (marked sensitive): never in a session, a log line or a response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use crate::config::RouteToken;
use crate::oidc::Oidc;
use crate::oidc::provider::ProviderError;

/// How long a token without `expires_in` is reused.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// What a client token is asked for: its scopes and resource.
type Key = (Vec<String>, Option<String>);

/// One cached token and when to stop using it.
struct Cached {
    header: HeaderValue,
    until: Instant,
}

/// The process's client tokens (a sub-state shared by the proxy and
/// forward-auth).
pub struct ClientTokens {
    oidc: Arc<Oidc>,
    skew: Duration,
    /// One slot per key; the slot's async lock is the single flight.
    slots: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

impl ClientTokens {
    pub fn new(oidc: Arc<Oidc>, skew: Duration) -> Self {
        Self {
            oidc,
            skew,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, token: &RouteToken) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        let key = (
            token.scopes.clone(),
            token.resource.as_ref().map(|r| r.as_str().to_owned()),
        );
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key).or_default().clone()
    }

    /// The `Authorization` header for `token`'s scopes and resource: the
    /// cached token while it is fresh, else one new grant (the others
    /// waiting for it).
    pub async fn header(&self, token: &RouteToken) -> Result<HeaderValue, ProviderError> {
        let slot = self.slot(token);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.until
        {
            return Ok(c.header.clone());
        }
        *cached = None;
        let scope = token.scopes.join(" ");
        let resource = token.resource.as_ref().map(url::Url::as_str);
        let set = self
            .oidc
            .provider
            .client_credentials(&scope, resource)
            .await?;
        let mut header = HeaderValue::from_str(&format!("Bearer {}", set.access_token.expose()))
            .map_err(|_| {
                ProviderError::InvalidResponse("client access token is not a header value".into())
            })?;
        header.set_sensitive(true);
        let lifetime = set.expires_in.unwrap_or(DEFAULT_LIFETIME);
        *cached = Some(Cached {
            header: header.clone(),
            until: Instant::now() + lifetime.saturating_sub(self.skew),
        });
        tracing::debug!(lifetime_secs = lifetime.as_secs(), "client token obtained");
        Ok(header)
    }

    /// Forgets `stale` (an upstream refused it) so the next call fetches a
    /// new token; a token another request already replaced stays.
    pub async fn forget(&self, token: &RouteToken, stale: &HeaderValue) {
        let slot = self.slot(token);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| c.header == *stale) {
            *cached = None;
        }
    }
}
