//! The read path: what a request's cookie resolves to ([`Lookup`]), and
//! why a cookie no longer names a live session ([`EndReason`]). One
//! session-cache probe or one store read, then the record's integrity tag,
//! the activity stamp, the lifetime rules and the deadlines are checked
//! before the secrets are opened. Nothing here writes to the store.

use std::sync::Arc;

use hmac::Mac;
use http::HeaderMap;

use super::cache::Probe;
use super::cookie::{self, SessionId, StoreId};
use super::crypto::open;
use super::opened::{BearerSlot, DpopSlot, Session};
use super::record::{SessionSecrets, StoredBody, StoredSession};
use super::sealing::aad;
use super::store::{Fetched, RevokeReason, SessionStore, StoreResult};
use super::{Sessions, StoreOp, activity};

/// What a request's cookie amounts to.
pub enum Lookup {
    /// No session cookie at all.
    Anonymous,
    /// Several different values under the session cookie's name
    /// ([`cookie::Presented::Ambiguous`]): no session, and neither value
    /// is looked up, so neither session is used, touched or ended.
    Ambiguous,
    /// A cookie that does not resolve to a live session (malformed, unknown,
    /// expired, revoked, undecryptable), and why, as far as the browser may
    /// know.
    Ended(EndReason),
    /// Shared with the session cache: a cache hit is a reference count
    /// increment, not a copy of the claims and tokens.
    Active(Arc<Session>),
}

/// Why a cookie no longer names a live session, as the browser may learn
/// it (the `reason` of a 401 `session_expired`, a WebSocket close reason).
///
/// Only a tombstone gives a reason other than [`EndReason::Expired`], and a
/// tombstone is found only under the SHA-256 of a lookup ID the gateway
/// issued: a forged or unknown cookie is indistinguishable from an expired
/// one. The categories are coarse on purpose: no actor names, no times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Idle or absolute lifetime reached, or nothing known about the cookie.
    Expired,
    /// Logged out (this browser, or a new login that replaced the session).
    LoggedOut,
    /// Ended by the user from another of their sessions.
    RevokedByUser,
    /// Ended by an operator (admin API or CLI).
    RevokedByOperator,
    /// Ended at the identity provider (back-channel logout).
    EndedAtProvider,
    /// The provider refused to refresh the session's tokens.
    RefreshRefused,
    /// Evicted by the per-user session limit (a newer login).
    SessionLimit,
}

impl EndReason {
    /// The machine-readable form (stable: SPAs match on it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::LoggedOut => "logged_out",
            Self::RevokedByUser => "revoked_by_user",
            Self::RevokedByOperator => "revoked_by_operator",
            Self::EndedAtProvider => "ended_at_provider",
            Self::RefreshRefused => "refresh_refused",
            Self::SessionLimit => "session_limit",
        }
    }

    /// A page title for people.
    pub fn title(self) -> &'static str {
        match self {
            Self::Expired => "Session expired",
            Self::LoggedOut => "Logged out",
            _ => "Session ended",
        }
    }

    /// A sentence for people.
    pub fn message(self) -> &'static str {
        match self {
            Self::Expired => "Your session has ended. Please log in again.",
            Self::LoggedOut => "You have logged out. Log in again to continue.",
            Self::RevokedByUser => {
                "This session was ended from another of your sessions. Please log in again."
            }
            Self::RevokedByOperator => "This session was ended by an administrator.",
            Self::EndedAtProvider => {
                "You were logged out at the identity provider. Please log in again."
            }
            Self::RefreshRefused => {
                "The identity provider no longer accepts this session. Please log in again."
            }
            Self::SessionLimit => {
                "This session was closed because you logged in on too many devices."
            }
        }
    }

    /// What a tombstone's reason means for the browser (`None`: a reason
    /// this version does not know, told as plain expiry).
    pub fn from_revocation(reason: Option<RevokeReason>) -> Self {
        match reason {
            Some(RevokeReason::Logout) => Self::LoggedOut,
            Some(RevokeReason::User) => Self::RevokedByUser,
            Some(RevokeReason::Admin) => Self::RevokedByOperator,
            Some(RevokeReason::Backchannel) => Self::EndedAtProvider,
            Some(RevokeReason::RefreshFailed) => Self::RefreshRefused,
            Some(RevokeReason::Limit) => Self::SessionLimit,
            None => Self::Expired,
        }
    }
}

/// How far ahead of this instance's clock a record's times may be (another
/// instance's clock may run a little fast).
const CLOCK_SKEW_SECS: u64 = 60;

impl Sessions {
    /// Resolves the request's session cookie. Store failures are errors
    /// (503): the gateway fails closed, it never guesses. Request handling
    /// reaches this through the session extractors (`extract::session`),
    /// the one place that decides what each outcome means for a request.
    pub async fn load(&self, headers: &HeaderMap, now: u64) -> StoreResult<Lookup> {
        let value = match cookie::presented(headers, self.cookies.session_name()) {
            cookie::Presented::Nothing => return Ok(Lookup::Anonymous),
            cookie::Presented::Ambiguous => {
                // Never the values: either may be someone's live session.
                tracing::info!(
                    "request refused: several different session cookies (another subdomain's cookie of the same name, or one left by an older cookie_domain)"
                );
                return Ok(Lookup::Ambiguous);
            }
            cookie::Presented::One(value) => value,
        };
        let Some(id) = SessionId::parse(value) else {
            tracing::debug!("malformed session cookie refused before lookup");
            return Ok(Lookup::Ended(EndReason::Expired));
        };
        let store_id = id.store_id();
        let ticket = match self.cache.as_ref().map(|c| c.probe(&id, &store_id, now)) {
            // What a store read checks beyond the deadlines holds for the
            // configuration serving now (a reload may have retired the key
            // that sealed it or shortened the lifetimes): else the entry
            // goes and the store decides.
            Some(Probe::Hit(session)) if self.still_acceptable(&session.stored.body, now) => {
                return Ok(Lookup::Active(session));
            }
            Some(Probe::Hit(_)) => {
                // Not a write: reads in flight keep their tickets.
                if let Some(cache) = &self.cache {
                    cache.evict(&store_id);
                }
                None
            }
            Some(Probe::Miss(ticket)) => Some(ticket),
            Some(Probe::Bypass) | None => None,
        };
        Ok(match self.open_fetched(id, store_id, now).await? {
            Ok(s) => {
                let s = Arc::new(s);
                if let (Some(cache), Some(ticket)) = (&self.cache, ticket) {
                    cache.insert(ticket, &s);
                }
                Lookup::Active(s)
            }
            Err(why) => Lookup::Ended(why),
        })
    }

    /// The store handle of the session the request's cookie names, if the
    /// cookie is well-formed; nothing is read from the store (the audit
    /// trail names the session of a refused request with it).
    pub fn presented(&self, headers: &HeaderMap) -> Option<StoreId> {
        let cookie::Presented::One(value) = cookie::presented(headers, self.cookies.session_name())
        else {
            return None;
        };
        SessionId::parse(value).map(|id| id.store_id())
    }

    /// One store read, then the session it holds or why there is none.
    async fn open_fetched(
        &self,
        id: SessionId,
        store_id: StoreId,
        now: u64,
    ) -> StoreResult<Result<Session, EndReason>> {
        let read = self.timed(StoreOp::Get, self.store.read(&store_id)).await?;
        Ok(match read.fetched {
            Fetched::Live(bytes) => self
                .open_read(id, store_id, &bytes, read.activity, now)
                .ok_or(EndReason::Expired),
            Fetched::Revoked(reason) => Err(EndReason::from_revocation(reason)),
            Fetched::Missing => Err(EndReason::Expired),
        })
    }

    /// Decodes and decrypts a stored record for the cookie that names it.
    #[cfg(test)]
    pub(crate) fn open(
        &self,
        id: SessionId,
        store_id: StoreId,
        bytes: &[u8],
        now: u64,
    ) -> Option<Session> {
        self.open_read(id, store_id, bytes, None, now)
    }

    /// [`Self::open`] with the activity stamp read beside the record.
    fn open_read(
        &self,
        id: SessionId,
        store_id: StoreId,
        bytes: &[u8],
        activity: Option<u64>,
        now: u64,
    ) -> Option<Session> {
        let stored = self.verify_read(&store_id, bytes, activity, now)?;
        let key = self.keys.by_id(&stored.body.key_id)?;
        let cipher = key.session_cipher(id.secret());
        let plain = match open(&cipher, &aad(&store_id, "secrets"), &stored.body.secrets) {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(session = ?store_id, "session secrets do not decrypt (wrong cookie secret or tampered record)");
                return None;
            }
        };
        let secrets = match SessionSecrets::decode(&plain) {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!(session = ?store_id, "session secrets do not decode");
                return None;
            }
        };
        Some(Session {
            id,
            store_id,
            stored,
            secrets,
            dpop: DpopSlot::new(),
            bearer: BearerSlot::new(),
        })
    }

    /// The record stored for `store_id` if the gateway wrote it, for that
    /// session, and it is live: it decodes, its tag verifies under the
    /// configured key it names (so not one byte of the plain header —
    /// deadlines, generation, hashes, times — was changed in the store),
    /// its deadlines are within the configured lifetimes, and none has
    /// passed. Everything else is "no session"; nothing here panics.
    #[cfg(test)]
    pub(crate) fn verify(
        &self,
        store_id: &StoreId,
        bytes: &[u8],
        now: u64,
    ) -> Option<StoredSession> {
        self.verify_read(store_id, bytes, None, now)
    }

    /// [`Self::verify`] with the activity stamp read beside the record: a
    /// stamp whose tag verifies under the record's key moves the returned
    /// body's last activity and idle deadline to the session's effective
    /// ones ([`StoredBody::with_activity`]) before any deadline is checked;
    /// one that does not (edited in the store, or sealed under a key no
    /// longer configured) is ignored, which can only end the session
    /// sooner.
    pub(crate) fn verify_read(
        &self,
        store_id: &StoreId,
        bytes: &[u8],
        activity: Option<u64>,
        now: u64,
    ) -> Option<StoredSession> {
        let tagged = match StoredSession::decode(bytes) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(session = ?store_id, error = %e, "stored session does not decode; treating as no session");
                return None;
            }
        };
        let body = &tagged.record.body;
        let Some(key) = self.keys.by_id(&body.key_id) else {
            tracing::warn!(session = ?store_id, key_id = %body.key_id.escape_default(), "session sealed with a key that is no longer configured");
            return None;
        };
        let mut mac = key.record_mac(store_id.as_str());
        mac.update(tagged.signed);
        if mac.verify_slice(tagged.tag).is_err() {
            tracing::warn!(session = ?store_id, "stored session fails its integrity check (edited in the store); treating as no session");
            return None;
        }
        let mut record = tagged.record;
        if let Some(stamp) = activity {
            match activity::open(key, store_id, stamp) {
                Some(at) => record.body.with_activity(at, self.idle_timeout),
                None => {
                    tracing::warn!(session = ?store_id, "session activity fails its integrity check; ignored");
                }
            }
        }
        let body = &record.body;
        if let Err(why) = self.within_lifetimes(body, now) {
            tracing::warn!(session = ?store_id, why, "stored session has deadlines beyond the configured lifetimes; treating as no session");
            return None;
        }
        if let Some(why) = body.expired(now) {
            tracing::debug!(session = ?store_id, ?why, "session past its deadline");
            return None;
        }
        Some(record)
    }

    /// Whether an opened session (from the cache) is still sealed under a
    /// configured key and within the configured lifetimes.
    fn still_acceptable(&self, body: &StoredBody, now: u64) -> bool {
        self.keys.by_id(&body.key_id).is_some() && self.within_lifetimes(body, now).is_ok()
    }

    /// The deadline rules every record the gateway writes obeys, checked
    /// again on load: a record that breaks them was not written under this
    /// configuration (or at all) and must not outlive what it allows.
    fn within_lifetimes(&self, body: &StoredBody, now: u64) -> Result<(), &'static str> {
        let ahead = now.saturating_add(CLOCK_SKEW_SECS);
        if body.created_at > ahead {
            return Err("created in the future");
        }
        if body.last_active_at < body.created_at || body.last_active_at > ahead {
            return Err("last activity outside the session's life");
        }
        if body.absolute_expires_at.saturating_sub(body.created_at) > self.absolute_timeout {
            return Err("absolute deadline beyond session.absolute_timeout");
        }
        if body.idle_expires_at.saturating_sub(body.last_active_at) > self.idle_timeout {
            return Err("idle deadline beyond session.idle_timeout");
        }
        Ok(())
    }

    /// Re-reads a session from the store (after another request refreshed
    /// it, or to see whether it is still alive). `Err`: it has ended, why.
    pub async fn reload(
        &self,
        session: &Session,
        now: u64,
    ) -> StoreResult<Result<Session, EndReason>> {
        self.open_fetched(session.id.clone(), session.store_id.clone(), now)
            .await
    }
}
