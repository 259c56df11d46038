//! An opened session: the record that a cookie resolved to, its secrets
//! decrypted, and what is made from them at first use and kept with it
//! (the bearer header, the parsed DPoP key, the claims). Nothing here
//! reads or writes the store.

use std::sync::Arc;

use http::HeaderValue;

use super::cookie::{SessionId, StoreId};
use super::record::{SessionSecrets, StoredSession};

/// A loaded, valid session.
#[derive(Clone)]
pub struct Session {
    pub id: SessionId,
    pub store_id: StoreId,
    pub stored: StoredSession,
    pub secrets: SessionSecrets,
    /// `secrets.dpop_key` parsed at its first use ([`Session::dpop`]) and
    /// kept with this opened session (in the session cache with it), so a
    /// DPoP route parses PKCS#8 once per session, not per request; it goes
    /// when the session does (a refresh, a revocation, an eviction).
    pub dpop: DpopSlot,
    /// `Authorization: Bearer <access token>`, made at its first use
    /// ([`Session::bearer_header`]) and shared by every request this opened
    /// session serves (a cache hit): the header is a copy of a token of a
    /// kilobyte or more, checked byte by byte, which each request would
    /// otherwise make again. It cannot go stale: an opened session's
    /// secrets never change (a refresh opens a new `Session`).
    pub bearer: BearerSlot,
}

/// A session's `Authorization` header value, filled once.
pub type BearerSlot = std::sync::OnceLock<HeaderValue>;

/// A session's parsed DPoP key, filled once (empty until first used).
pub type DpopSlot = std::sync::OnceLock<Arc<crate::oidc::dpop::DpopKey>>;

impl Session {
    /// `Authorization: Bearer <access token>`, marked sensitive so no log
    /// or debug output of the header map prints it.
    pub fn bearer_header(&self) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        if let Some(made) = self.bearer.get() {
            return Ok(made.clone());
        }
        let made = self.make_bearer_header()?;
        // A race with another request of the same session sets one of two
        // equal values.
        let _ = self.bearer.set(made.clone());
        Ok(made)
    }

    fn make_bearer_header(&self) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        let token = self.secrets.access_token.expose();
        let mut v = String::with_capacity(7 + token.len());
        v.push_str("Bearer ");
        v.push_str(token);
        let mut h = HeaderValue::from_str(&v)?;
        h.set_sensitive(true);
        Ok(h)
    }

    /// The user's claims. Kept once in the record, they are checked and
    /// rebuilt from the ID token here, at their first use by this opened
    /// session (a cache hit shares it): routes that read none never pay.
    /// `Err`: they do not rebuild or are not a JSON object — a corrupt
    /// record, never one this code wrote and sealed. The caller refuses
    /// the session ([`ClaimsUnreadable`] is a 401 `session_expired`), never
    /// goes on with no claims, which could grant or deny a policy.
    pub fn claims(&self) -> Result<serde_json::Map<String, serde_json::Value>, ClaimsUnreadable> {
        let parsed = match self.secrets.claims_json() {
            Ok(text) => serde_json::from_str(text).map_err(|_| "not a JSON object"),
            Err(_) => Err("they do not rebuild from the ID token"),
        };
        parsed.map_err(|why| {
            tracing::warn!(session = ?self.store_id, reason = why, "session claims unreadable (corrupt record); refusing the session");
            ClaimsUnreadable
        })
    }

    /// The session's DPoP key, ready to sign (`None`: the session has
    /// none, it predates `oidc.dpop`). Parsed from the sealed PKCS#8 bytes
    /// at the first call only.
    pub fn dpop(
        &self,
    ) -> Result<Option<&crate::oidc::dpop::DpopKey>, crate::oidc::dpop::DpopError> {
        let Some(bytes) = self.secrets.dpop_key.as_deref() else {
            return Ok(None);
        };
        if let Some(key) = self.dpop.get() {
            return Ok(Some(key));
        }
        let key = Arc::new(crate::oidc::dpop::DpopKey::from_pkcs8(bytes)?);
        Ok(Some(self.dpop.get_or_init(|| key)))
    }

    /// The access token's granted scopes, space-separated ("" if unknown).
    pub fn scopes(&self) -> &str {
        self.secrets.scopes.as_deref().unwrap_or_default()
    }
}

/// A session whose claims cannot be read: its record is corrupt (see
/// [`Session::claims`]); it is refused as ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session claims unreadable (corrupt record)")]
pub struct ClaimsUnreadable;
