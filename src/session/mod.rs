//! Server-side sessions: what a browser's cookie resolves to, and every
//! change to it over its life (create, touch, token refresh, revoke).
//!
//! The hot path is [`Sessions::load`]: cookie → SHA-256 → the process's
//! session cache (`cache`: the opened session, if this very cookie opened
//! it and Redis has announced no change since) or else one store read →
//! decode → deadline check → HKDF + AES-GCM open. Nothing else happens per
//! request unless the last-activity write is due (at most once per
//! `session.touch_interval`, in the background) or the access token is about
//! to expire (see `flows::refresh`).

mod activity;
pub mod cache;
pub mod cookie;
pub mod crypto;
mod markers;
mod operators;
pub mod record;
pub mod store;

pub use self::operators::{SessionInfo, SessionInfoPage, Stats, UserCount};

use std::net::IpAddr;
use std::sync::Arc;

use hmac::Mac;
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use self::cache::{Probe, ProcessCache};
use self::cookie::{CookiePolicy, SessionId, StoreId, hex};
use self::crypto::{KeyRing, open, seal};
use self::record::{SessionMeta, SessionSecrets, StoredBody, StoredSession};
use self::store::{
    Fetched, NewSession, Revocation, RevokeOutcome, RevokeReason, SessionStore, Store, StoreError,
    StoreResult,
};
use crate::config::{RecordLayout, SessionConfig};
use crate::secret::SecretString;

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

/// What a request's cookie amounts to.
pub enum Lookup {
    /// No session cookie at all.
    Anonymous,
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

/// Who is asking: recorded as last IP and user agent.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The client at `ip`, with the request's `User-Agent` cut to 256
    /// characters (it is shown in session listings, not trusted).
    pub fn new(ip: IpAddr, headers: &http::HeaderMap) -> Self {
        Self {
            ip: Some(ip),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect()),
        }
    }
}

/// Tokens and identity for a new session.
pub struct NewLogin {
    pub sub: String,
    pub sid: Option<String>,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    pub access_expires_at: u64,
    pub claims_json: String,
    /// The granted scopes, space-separated.
    pub scopes: Option<String>,
    /// The session's DPoP private key (PKCS#8), when `oidc.dpop` is on.
    pub dpop_key: Option<zeroize::Zeroizing<Vec<u8>>>,
}

/// The hex SHA-256 of a value: how identifiers (subjects, provider session
/// IDs, one-time handles, token IDs) are named in the store, never in clear.
pub fn sha256_hex(value: &str) -> String {
    hex(&Sha256::digest(value.as_bytes()))
}

pub fn user_hash(sub: &str) -> String {
    sha256_hex(sub)
}

pub fn sid_hash(sid: &str) -> String {
    sha256_hex(sid)
}

fn aad(store_id: &StoreId, part: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(72);
    v.extend_from_slice(store_id.as_str().as_bytes());
    v.push(b'/');
    v.extend_from_slice(part.as_bytes());
    v
}

/// How far ahead of this instance's clock a record's times may be (another
/// instance's clock may run a little fast).
const CLOCK_SKEW_SECS: u64 = 60;

type Counters<L> =
    prometheus_client::metrics::family::Family<L, prometheus_client::metrics::counter::Counter>;

/// What the session layer reports (shared with the gateway's registry).
#[derive(Default)]
pub struct SessionMetrics {
    pub revocations: Counters<crate::metrics::ReasonLabel>,
    /// One latency histogram per [`StoreOp`], resolved once; none in
    /// tests that build `Sessions` without a registry.
    store: Option<Vec<prometheus_client::metrics::histogram::Histogram>>,
}

/// The store operations timed (`oidc_bff_store_operation_duration_seconds`),
/// a fixed list so the label stays bounded.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    /// A session read (every authenticated request).
    Get,
    /// A new session, with its indexes and evictions.
    Create,
    /// A record rewrite: a touch or refreshed tokens.
    Update,
    /// One session ended.
    Revoke,
    /// A user's or a provider session's sessions ended.
    RevokeMany,
    /// A page of a user's sessions (listings, stats).
    List,
    /// Single-use values: login state claims, logout handles, logout-token IDs.
    Once,
    /// The refresh lock.
    Lock,
    /// Readiness.
    Ping,
    /// Index sweeps, statistics and the active-sessions count.
    Maintenance,
}

impl StoreOp {
    const ALL: [StoreOp; 10] = [
        Self::Get,
        Self::Create,
        Self::Update,
        Self::Revoke,
        Self::RevokeMany,
        Self::List,
        Self::Once,
        Self::Lock,
        Self::Ping,
        Self::Maintenance,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Create => "create",
            Self::Update => "update",
            Self::Revoke => "revoke",
            Self::RevokeMany => "revoke_many",
            Self::List => "list",
            Self::Once => "once",
            Self::Lock => "lock",
            Self::Ping => "ping",
            Self::Maintenance => "maintenance",
        }
    }
}

/// What an activity touch writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Only the activity key (if the record's key outlives the new idle
    /// deadline; else the record after all).
    Activity,
    /// The whole record, as before the activity key existed.
    Record,
}

impl Touch {
    /// The record must be rewritten when the client's IP changed (it is in
    /// the sealed metadata), when the record is sealed under a key that is
    /// no longer the current one (every write re-seals), and while
    /// versions that read only the record may still run
    /// (`store.record_layout = "previous"`: they would not see activity
    /// recorded apart and end the session at the record's idle deadline).
    pub fn plan(layout: RecordLayout, ip_changed: bool, rekey: bool) -> Self {
        if layout == RecordLayout::Previous || ip_changed || rekey {
            Self::Record
        } else {
            Self::Activity
        }
    }
}

pub struct Sessions {
    metrics: SessionMetrics,
    store: Arc<Store>,
    keys: KeyRing,
    cookies: CookiePolicy,
    idle_timeout: u64,
    absolute_timeout: u64,
    touch_interval: u64,
    max_per_user: Option<u32>,
    /// The process's session cache, when `store.cache_entries` > 0.
    cache: Option<Arc<ProcessCache>>,
    /// How sealed secrets are written (`store.record_layout`).
    layout: RecordLayout,
}

impl Sessions {
    pub fn new(config: &SessionConfig, store: Arc<Store>) -> Self {
        Self {
            metrics: SessionMetrics::default(),
            store,
            keys: KeyRing::new(&config.keys),
            cookies: CookiePolicy::new(config),
            idle_timeout: config.idle_timeout.as_secs().max(1),
            absolute_timeout: config.absolute_timeout.as_secs().max(1),
            touch_interval: config.touch_interval.as_secs(),
            max_per_user: config.max_per_user,
            cache: None,
            layout: RecordLayout::Compact,
        }
    }

    /// Writes sealed secrets in `layout` (`store.record_layout`): during a
    /// rolling upgrade, [`RecordLayout::Previous`] keeps the sessions this
    /// version writes readable by instances of the version before.
    pub fn with_record_layout(mut self, layout: RecordLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Serves lookups from the process's session cache (shared by every
    /// worker; `None`: every lookup reads the store). A store that finds
    /// its master through Sentinel tells the cache of each master before
    /// it uses it, so the cache never answers for a master its
    /// invalidation connections do not listen to (one cache per store: a
    /// later call replaces the store's observer).
    pub fn with_cache(mut self, cache: Option<Arc<ProcessCache>>) -> Self {
        if let Some(cache) = &cache {
            self.store.observe_masters(cache.store_observer());
        }
        self.cache = cache;
        self
    }

    /// Evicts a session this process just changed or ended from the cache
    /// (Redis announces it too, but this process's next request must not
    /// wait for the message).
    fn forget(&self, id: &StoreId) {
        if let Some(cache) = &self.cache {
            cache.invalidate(id);
        }
    }

    /// Reports into the gateway's metrics registry.
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.metrics = SessionMetrics {
            revocations: metrics.revocations.clone(),
            store: Some(
                StoreOp::ALL
                    .iter()
                    .map(|op| metrics.store_operation(op.label()))
                    .collect(),
            ),
        };
        self
    }

    /// Runs one store operation, timing it into its histogram.
    async fn timed<T>(&self, op: StoreOp, call: impl std::future::Future<Output = T>) -> T {
        let Some(h) = self.metrics.store.as_ref().and_then(|h| h.get(op as usize)) else {
            return call.await;
        };
        let started = std::time::Instant::now();
        let out = call.await;
        h.observe(started.elapsed().as_secs_f64());
        out
    }

    fn count_revocations(&self, reason: RevokeReason, n: usize) {
        if n > 0 {
            self.metrics
                .revocations
                .get_or_create(&crate::metrics::ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc_by(n as u64);
        }
    }

    pub fn cookies(&self) -> &CookiePolicy {
        &self.cookies
    }

    /// Resolves the request's session cookie. Store failures are errors
    /// (503): the gateway fails closed, it never guesses. Request handling
    /// reaches this through the session extractors (`extract::session`),
    /// the one place that decides what each outcome means for a request.
    pub async fn load(&self, headers: &HeaderMap, now: u64) -> StoreResult<Lookup> {
        let Some(value) = cookie::find(headers, self.cookies.session_name()) else {
            return Ok(Lookup::Anonymous);
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
        let value = cookie::find(headers, self.cookies.session_name())?;
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

    /// The deadline rules every record the gateway writes obeys, checked
    /// again on load: a record that breaks them was not written under this
    /// configuration (or at all) and must not outlive what it allows.
    /// Whether an opened session (from the cache) is still sealed under a
    /// configured key and within the configured lifetimes.
    fn still_acceptable(&self, body: &StoredBody, now: u64) -> bool {
        self.keys.by_id(&body.key_id).is_some() && self.within_lifetimes(body, now).is_ok()
    }

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

    /// A record's bytes, tagged under the key it names (the current one for
    /// every record this gateway writes).
    fn encode(&self, store_id: &StoreId, record: &StoredSession) -> Vec<u8> {
        let key = self
            .keys
            .by_id(&record.body.key_id)
            .unwrap_or_else(|| self.keys.current());
        record.encode(|signed| {
            let mut mac = key.record_mac(store_id.as_str());
            mac.update(signed);
            mac.finalize().into_bytes().into()
        })
    }

    fn seal_meta(&self, store_id: &StoreId, meta: &SessionMeta) -> Vec<u8> {
        seal(
            self.keys.current().meta_cipher(),
            &aad(store_id, "meta"),
            &meta.encode(),
        )
    }

    /// Opens the operator metadata of a record (no cookie needed).
    pub fn open_meta(&self, store_id: &StoreId, body: &StoredBody) -> Option<SessionMeta> {
        let key = self.keys.by_id(&body.key_id)?;
        let plain = open(key.meta_cipher(), &aad(store_id, "meta"), &body.meta).ok()?;
        SessionMeta::decode(&plain).ok()
    }

    fn seal_secrets(
        &self,
        id: &SessionId,
        store_id: &StoreId,
        secrets: &SessionSecrets,
    ) -> Vec<u8> {
        let cipher = self.keys.current().session_cipher(id.secret());
        seal(
            &cipher,
            &aad(store_id, "secrets"),
            &secrets.encode_as(self.layout),
        )
    }

    /// Writes a new session (fresh ID: no fixation) and returns its cookie.
    pub async fn create(
        &self,
        login: NewLogin,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<(StoreId, HeaderValue)> {
        let (id, cookie, _) = self.create_evicting(login, client, now).await?;
        Ok((id, cookie))
    }

    /// [`Self::create`], also returning the sessions the per-user limit
    /// evicted to make room (for the audit trail).
    pub async fn create_evicting(
        &self,
        login: NewLogin,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<(StoreId, HeaderValue, Vec<StoreId>)> {
        let user_hash = user_hash(&login.sub);
        let id = SessionId::generate(self.store.shard_of(&user_hash).await?);
        self.create_as(id, login, client, now).await
    }

    /// A session as gateways before shard tags wrote it (43-character
    /// cookie, legacy key layout): only for tests of the upgrade path.
    #[doc(hidden)]
    pub async fn create_legacy(
        &self,
        login: NewLogin,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<(StoreId, HeaderValue)> {
        let (id, cookie, _) = self
            .create_as(SessionId::generate_legacy(), login, client, now)
            .await?;
        Ok((id, cookie))
    }

    async fn create_as(
        &self,
        id: SessionId,
        login: NewLogin,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<(StoreId, HeaderValue, Vec<StoreId>)> {
        let store_id = id.store_id();
        let meta = SessionMeta {
            sub: login.sub.clone(),
            sid: login.sid.clone(),
            last_ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent.clone(),
        };
        let secrets = SessionSecrets {
            access_token: login.access_token,
            refresh_token: login.refresh_token,
            id_token: login.id_token,
            claims: login.claims_json.into(),
            scopes: login.scopes,
            derived: Vec::new(),
            dpop_key: login.dpop_key,
        };
        let absolute_expires_at = now + self.absolute_timeout;
        let body = StoredBody {
            key_id: self.keys.current().id().to_owned(),
            user_hash: user_hash(&login.sub),
            sid_hash: login.sid.as_deref().map(sid_hash),
            created_at: now,
            last_active_at: now,
            idle_expires_at: (now + self.idle_timeout).min(absolute_expires_at),
            absolute_expires_at,
            access_expires_at: login.access_expires_at,
            has_refresh_token: secrets.refresh_token.is_some(),
            meta: self.seal_meta(&store_id, &meta),
            secrets: self.seal_secrets(&id, &store_id, &secrets),
        };
        let record = StoredSession {
            generation: 1,
            body,
        };
        let bytes = self.encode(&store_id, &record);
        let eviction = Revocation::new(RevokeReason::Limit, "system", now);
        let new = NewSession {
            id: &store_id,
            record: &bytes,
            ttl_millis: self.record_ttl(&record.body, now),
            user_hash: &record.body.user_hash,
            sid_hash: record.body.sid_hash.as_deref(),
            created_millis: crate::clock::unix_now_millis(),
            max_per_user: self.max_per_user,
            eviction: &eviction,
            index_ttl_millis: self.absolute_timeout * 1000 + 60_000,
        };
        let evicted = self.timed(StoreOp::Create, self.store.create(&new)).await?;
        self.count_revocations(RevokeReason::Limit, evicted.len());
        for old in &evicted {
            self.forget(old);
            tracing::info!(session = ?old, "session evicted: per-user limit reached");
        }
        let cookie = self
            .cookies
            .session_cookie(&id, std::time::Duration::from_secs(self.absolute_timeout));
        Ok((store_id, cookie, evicted))
    }

    /// Whether the last-activity write is due: the session's effective
    /// last activity (record or activity key, whichever is later) is at
    /// least `session.touch_interval` old.
    pub fn touch_due(&self, session: &Session, now: u64) -> bool {
        now.saturating_sub(session.stored.body.last_active_at) >= self.touch_interval
    }

    /// How long the store keeps a record's key from `now` (ms): one more
    /// idle period past its idle deadline, for activity recorded apart
    /// ([`StoredBody::key_ttl_millis`]); with `store.record_layout =
    /// "previous"`, until its deadline as before (versions before read
    /// only the record, and nothing records activity apart then).
    fn record_ttl(&self, body: &StoredBody, now: u64) -> u64 {
        match self.layout {
            RecordLayout::Compact => body.key_ttl_millis(self.idle_timeout, now * 1000),
            RecordLayout::Previous => body.ttl_millis(now * 1000),
        }
    }

    /// Slides the idle deadline and records activity. Best effort: losing a
    /// race with another write only delays the next touch.
    ///
    /// Usually only the activity key is written ([`Touch::Activity`]),
    /// which invalidates no process's session cache; the record is
    /// rewritten when it must be ([`Touch::plan`]) or when its key would
    /// not outlive the new idle deadline (about once per idle period of
    /// continuous use; the store decides that atomically).
    pub async fn touch(
        &self,
        session: &Session,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<bool> {
        let body = &session.stored.body;
        let meta = self.open_meta(&session.store_id, body);
        let ip = client.ip.map(|ip| ip.to_string());
        let ip_changed = ip.is_some() && meta.as_ref().is_some_and(|m| m.last_ip != ip);
        let rekey = body.key_id != self.keys.current().id();
        if Touch::plan(self.layout, ip_changed, rekey) == Touch::Activity
            && self.touch_activity(session, now).await?
        {
            return Ok(true);
        }
        let mut body = body.clone();
        body.last_active_at = now;
        body.idle_expires_at = (now + self.idle_timeout).min(body.absolute_expires_at);
        if let Some(mut meta) = meta
            && (ip_changed || rekey)
        {
            if ip_changed {
                meta.last_ip = ip;
            }
            body.meta = self.seal_meta(&session.store_id, &meta);
        }
        if rekey {
            // Every write re-seals under the current key: one key ID per
            // record, and older keys can be retired once records turned over.
            body.secrets = self.seal_secrets(&session.id, &session.store_id, &session.secrets);
            body.key_id = self.keys.current().id().to_owned();
        }
        let next = StoredSession {
            generation: session.stored.generation + 1,
            body,
        };
        let ttl = self.record_ttl(&next.body, now);
        let record = self.encode(&session.store_id, &next);
        let write =
            self.store
                .replace_if(&session.store_id, session.stored.generation, &record, ttl);
        let written = self.timed(StoreOp::Update, write).await;
        self.forget(&session.store_id);
        written
    }

    /// Writes only the activity key. `Ok(false)`: the record's key would
    /// not outlive the new idle deadline, or the session is gone; the
    /// caller rewrites the record (which fails if it is gone). On success
    /// this process's cached entry takes the new deadlines (no other
    /// process needs to: see `cache::SessionCache::activity_recorded`).
    async fn touch_activity(&self, session: &Session, now: u64) -> StoreResult<bool> {
        let body = &session.stored.body;
        let Some(key) = self.keys.by_id(&body.key_id) else {
            return Ok(false);
        };
        let deadline = (now + self.idle_timeout).min(body.absolute_expires_at);
        let ttl = (deadline * 1000).saturating_sub(now * 1000);
        if ttl == 0 {
            return Ok(false);
        }
        let stamp = activity::stamp(key, &session.store_id, now);
        let write = self.store.record_activity(&session.store_id, stamp, ttl);
        if !self.timed(StoreOp::Update, write).await? {
            return Ok(false);
        }
        if let Some(cache) = &self.cache {
            cache.activity_recorded(
                &session.store_id,
                session.stored.generation,
                now,
                self.idle_timeout,
            );
        }
        Ok(true)
    }

    /// Stores refreshed tokens on top of the latest version of the record.
    /// `None`: the session ended meanwhile.
    pub async fn write_tokens(
        &self,
        session: &Session,
        secrets: SessionSecrets,
        access_expires_at: u64,
        now: u64,
    ) -> StoreResult<Option<Session>> {
        let mut current = session.stored.clone();
        for _ in 0..5 {
            let mut body = current.body.clone();
            body.access_expires_at = access_expires_at;
            body.has_refresh_token = secrets.refresh_token.is_some();
            if body.key_id != self.keys.current().id() {
                if let Some(meta) = self.open_meta(&session.store_id, &body) {
                    body.meta = self.seal_meta(&session.store_id, &meta);
                }
                body.key_id = self.keys.current().id().to_owned();
            }
            body.secrets = self.seal_secrets(&session.id, &session.store_id, &secrets);
            let next = StoredSession {
                generation: current.generation + 1,
                body,
            };
            let ttl = self.record_ttl(&next.body, now);
            let record = self.encode(&session.store_id, &next);
            let write = self
                .store
                .replace_if(&session.store_id, current.generation, &record, ttl);
            let written = self.timed(StoreOp::Update, write).await;
            self.forget(&session.store_id);
            if written? {
                return Ok(Some(Session {
                    id: session.id.clone(),
                    store_id: session.store_id.clone(),
                    stored: next,
                    secrets,
                    dpop: DpopSlot::new(),
                    bearer: BearerSlot::new(),
                }));
            }
            // Someone else wrote (a touch): re-read and apply on top.
            let read = self
                .timed(StoreOp::Get, self.store.read(&session.store_id))
                .await?;
            let Some(bytes) = read.fetched.into_live() else {
                return Ok(None);
            };
            let Some(latest) = self.verify_read(&session.store_id, &bytes, read.activity, now)
            else {
                return Ok(None);
            };
            current = latest;
        }
        Err(StoreError::Unavailable(
            "could not store refreshed tokens after 5 attempts (concurrent writes)".into(),
        ))
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

    pub async fn revoke(
        &self,
        store_id: &StoreId,
        reason: RevokeReason,
        actor: &str,
        now: u64,
    ) -> StoreResult<RevokeOutcome> {
        let why = Revocation::new(reason, actor, now);
        let outcome = self
            .timed(StoreOp::Revoke, self.store.revoke(store_id, &why))
            .await;
        self.forget(store_id);
        let outcome = outcome?;
        self.count_revocations(reason, usize::from(outcome == RevokeOutcome::Revoked));
        tracing::info!(session = ?store_id, reason = reason.as_str(), actor, ?outcome, "session revoked");
        Ok(outcome)
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> StoreResult<()> {
        self.timed(StoreOp::Ping, self.store.ping()).await
    }

    /// How many live sessions the store holds, for the active-sessions
    /// gauge every `every` (a walk of the store's keys by one process of
    /// the fleet per period, so a background task calls it; see
    /// `Store::fleet_count`). `None` until a count is published.
    pub async fn count(&self, every: std::time::Duration) -> StoreResult<Option<u64>> {
        self.timed(StoreOp::Maintenance, self.store.fleet_count(every))
            .await
    }

    /// Drops index entries of expired sessions; returns how many.
    pub async fn sweep(&self) -> StoreResult<u64> {
        self.timed(StoreOp::Maintenance, self.store.sweep()).await
    }

    /// The sweep every `every`, by one process of the fleet per period
    /// (`Store::fleet_sweep`); `None` where another process has it.
    pub async fn periodic_sweep(&self, every: std::time::Duration) -> StoreResult<Option<u64>> {
        self.timed(StoreOp::Maintenance, self.store.fleet_sweep(every))
            .await
    }

    /// The form-logout token for a session, as the current key makes it.
    pub fn logout_token(&self, store_id: &StoreId) -> String {
        self.keys.current().logout_token(store_id.as_str())
    }

    /// Whether `token` is a logout token for this session under any key.
    pub fn logout_token_matches(&self, store_id: &StoreId, token: &str) -> bool {
        self.keys.all().any(|k| {
            crate::secret::constant_time_eq(
                k.logout_token(store_id.as_str()).as_bytes(),
                token.as_bytes(),
            )
        })
    }
}

#[cfg(test)]
mod tests;
