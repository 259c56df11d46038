//! Server-side sessions: what a browser's cookie resolves to, and every
//! change to it over its life (create, touch, token refresh, revoke).
//!
//! The hot path is [`Sessions::load`]: cookie → SHA-256 → one store read →
//! decode → deadline check → HKDF + AES-GCM open. Nothing else happens per
//! request unless the last-activity write is due (at most once per
//! `session.touch_interval`, in the background) or the access token is about
//! to expire (see `flows::refresh`).

pub mod cookie;
pub mod crypto;
pub mod record;
pub mod store;

use std::net::IpAddr;
use std::sync::Arc;

use hmac::Mac;
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use sha2::{Digest, Sha256};

use self::cookie::{CookiePolicy, SessionId, StoreId, hex};
use self::crypto::{KeyRing, open, seal};
use self::record::{SessionMeta, SessionSecrets, StoredBody, StoredSession};
use self::store::{
    Fetched, ListCursor, NewSession, OnceKind, Revocation, RevokeOutcome, RevokeReason,
    SessionStore, Store, StoreError, StoreResult,
};
use crate::config::SessionConfig;
use crate::secret::SecretString;

/// A loaded, valid session.
#[derive(Clone)]
pub struct Session {
    pub id: SessionId,
    pub store_id: StoreId,
    pub stored: StoredSession,
    pub secrets: SessionSecrets,
}

impl Session {
    pub fn claims(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&self.secrets.claims_json).unwrap_or_default()
    }

    /// The access token's granted scopes, space-separated ("" if unknown).
    pub fn scopes(&self) -> &str {
        self.secrets.scopes.as_deref().unwrap_or_default()
    }
}

/// What a request's cookie amounts to.
pub enum Lookup {
    /// No session cookie at all.
    Anonymous,
    /// A cookie that does not resolve to a live session (malformed, unknown,
    /// expired, revoked, undecryptable), and why, as far as the browser may
    /// know.
    Ended(EndReason),
    Active(Box<Session>),
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
}

/// A session as an operator or its owner sees it: no tokens, no claims.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub created_at: u64,
    pub last_active_at: u64,
    pub expires_at: u64,
    pub idle_expires_at: u64,
    pub absolute_expires_at: u64,
    pub last_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// One page of a user's sessions: `next_cursor` (opaque) asks for the next.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfoPage {
    pub sessions: Vec<SessionInfo>,
    pub next_cursor: Option<String>,
}

/// Store statistics for operators.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub sessions: u64,
    pub users: u64,
    pub top_users: Vec<UserCount>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserCount {
    pub user: String,
    pub sessions: u64,
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

fn once_aad(kind: OnceKind, key: &str) -> Vec<u8> {
    format!("{}:{key}", kind.as_str()).into_bytes()
}

/// The longest sealed value the browser may hand back: above any cookie a
/// browser keeps, so longer input is refused before it is decoded.
const MAX_BROWSER_SEALED_LEN: usize = 4096;

fn browser_aad(purpose: &str) -> Vec<u8> {
    format!("oidc-bff/browser/{purpose}").into_bytes()
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
        }
    }

    /// Reports into the gateway's metrics registry.
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.metrics = SessionMetrics {
            revocations: metrics.revocations.clone(),
        };
        self
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
        Ok(match self.open_fetched(id, store_id, now).await? {
            Ok(s) => Lookup::Active(Box::new(s)),
            Err(why) => Lookup::Ended(why),
        })
    }

    /// One store read, then the session it holds or why there is none.
    async fn open_fetched(
        &self,
        id: SessionId,
        store_id: StoreId,
        now: u64,
    ) -> StoreResult<Result<Session, EndReason>> {
        Ok(match self.store.get(&store_id).await? {
            Fetched::Live(bytes) => self
                .open(id, store_id, &bytes, now)
                .ok_or(EndReason::Expired),
            Fetched::Revoked(reason) => Err(EndReason::from_revocation(reason)),
            Fetched::Missing => Err(EndReason::Expired),
        })
    }

    /// Decodes and decrypts a stored record for the cookie that names it.
    pub(crate) fn open(
        &self,
        id: SessionId,
        store_id: StoreId,
        bytes: &[u8],
        now: u64,
    ) -> Option<Session> {
        let stored = self.verify(&store_id, bytes, now)?;
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
        })
    }

    /// The record stored for `store_id` if the gateway wrote it, for that
    /// session, and it is live: it decodes, its tag verifies under the
    /// configured key it names (so not one byte of the plain header —
    /// deadlines, generation, hashes, times — was changed in the store),
    /// its deadlines are within the configured lifetimes, and none has
    /// passed. Everything else is "no session"; nothing here panics.
    pub(crate) fn verify(
        &self,
        store_id: &StoreId,
        bytes: &[u8],
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
        if let Err(why) = self.within_lifetimes(body, now) {
            tracing::warn!(session = ?store_id, why, "stored session has deadlines beyond the configured lifetimes; treating as no session");
            return None;
        }
        if let Some(why) = body.expired(now) {
            tracing::debug!(session = ?store_id, ?why, "session past its deadline");
            return None;
        }
        Some(tagged.record)
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
        seal(&cipher, &aad(store_id, "secrets"), &secrets.encode())
    }

    /// Writes a new session (fresh ID: no fixation) and returns its cookie.
    pub async fn create(
        &self,
        login: NewLogin,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<(StoreId, HeaderValue)> {
        let id = SessionId::generate();
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
            claims_json: login.claims_json,
            scopes: login.scopes,
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
        let now_ms = now * 1000;
        let evicted = self
            .store
            .create(&NewSession {
                id: &store_id,
                record: &bytes,
                ttl_millis: record.body.ttl_millis(now_ms),
                user_hash: &record.body.user_hash,
                sid_hash: record.body.sid_hash.as_deref(),
                created_millis: crate::clock::unix_now_millis(),
                max_per_user: self.max_per_user,
                eviction: &eviction,
                index_ttl_millis: self.absolute_timeout * 1000 + 60_000,
            })
            .await?;
        self.count_revocations(RevokeReason::Limit, evicted.len());
        for old in evicted {
            tracing::info!(session = ?old, "session evicted: per-user limit reached");
        }
        let cookie = self
            .cookies
            .session_cookie(&id, std::time::Duration::from_secs(self.absolute_timeout));
        Ok((store_id, cookie))
    }

    /// Whether the last-activity write is due.
    pub fn touch_due(&self, session: &Session, now: u64) -> bool {
        now.saturating_sub(session.stored.body.last_active_at) >= self.touch_interval
    }

    /// Slides the idle deadline and records activity. Best effort: losing a
    /// race with another write only delays the next touch.
    pub async fn touch(
        &self,
        session: &Session,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<bool> {
        let mut body = session.stored.body.clone();
        body.last_active_at = now;
        body.idle_expires_at = (now + self.idle_timeout).min(body.absolute_expires_at);
        let meta = self.open_meta(&session.store_id, &body);
        let ip = client.ip.map(|ip| ip.to_string());
        let ip_changed = ip.is_some() && meta.as_ref().is_some_and(|m| m.last_ip != ip);
        let rekey = body.key_id != self.keys.current().id();
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
        let ttl = next.body.ttl_millis(now * 1000);
        self.store
            .replace_if(
                &session.store_id,
                session.stored.generation,
                &self.encode(&session.store_id, &next),
                ttl,
            )
            .await
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
            let ttl = next.body.ttl_millis(now * 1000);
            if self
                .store
                .replace_if(
                    &session.store_id,
                    current.generation,
                    &self.encode(&session.store_id, &next),
                    ttl,
                )
                .await?
            {
                return Ok(Some(Session {
                    id: session.id.clone(),
                    store_id: session.store_id.clone(),
                    stored: next,
                    secrets,
                }));
            }
            // Someone else wrote (a touch): re-read and apply on top.
            let Some(bytes) = self.store.get(&session.store_id).await?.into_live() else {
                return Ok(None);
            };
            let Some(latest) = self.verify(&session.store_id, &bytes, now) else {
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
        let outcome = self
            .store
            .revoke(store_id, &Revocation::new(reason, actor, now))
            .await?;
        self.count_revocations(reason, usize::from(outcome == RevokeOutcome::Revoked));
        tracing::info!(session = ?store_id, reason = reason.as_str(), actor, ?outcome, "session revoked");
        Ok(outcome)
    }

    /// One page of a user's sessions as operators (and the user) see them,
    /// newest first: at most `limit`, after `after`. Records that do not
    /// verify are left out.
    pub async fn list_user(
        &self,
        sub: &str,
        after: Option<&ListCursor>,
        limit: usize,
        now: u64,
    ) -> StoreResult<SessionInfoPage> {
        let page = self.store.list_user(&user_hash(sub), after, limit).await?;
        let sessions = page
            .sessions
            .into_iter()
            .filter_map(|l| {
                let stored = self.verify(&l.id, &l.record, now)?;
                let meta = self.open_meta(&l.id, &stored.body);
                Some(SessionInfo {
                    id: l.id.to_string(),
                    created_at: stored.body.created_at,
                    last_active_at: stored.body.last_active_at,
                    expires_at: stored.body.ends_at(),
                    idle_expires_at: stored.body.idle_expires_at,
                    absolute_expires_at: stored.body.absolute_expires_at,
                    last_ip: meta.as_ref().and_then(|m| m.last_ip.clone()),
                    user_agent: meta.and_then(|m| m.user_agent),
                })
            })
            .collect();
        Ok(SessionInfoPage {
            sessions,
            next_cursor: page.next.map(|c| c.encode()),
        })
    }

    /// Whether `store_id` names a live session of the user `sub`: read from
    /// that one record's authenticated header, never by listing the user.
    pub async fn belongs_to(&self, store_id: &StoreId, sub: &str, now: u64) -> StoreResult<bool> {
        let Some(bytes) = self.store.get(store_id).await?.into_live() else {
            return Ok(false);
        };
        Ok(self.verify(store_id, &bytes, now).is_some_and(|r| {
            crate::secret::constant_time_eq(r.body.user_hash.as_bytes(), user_hash(sub).as_bytes())
        }))
    }

    /// Ends every session of a user, except `except` (e.g. the caller's).
    pub async fn revoke_user(
        &self,
        sub: &str,
        except: Option<&StoreId>,
        reason: RevokeReason,
        actor: &str,
        now: u64,
    ) -> StoreResult<Vec<StoreId>> {
        let ids = self
            .store
            .revoke_user(
                &user_hash(sub),
                except,
                &Revocation::new(reason, actor, now),
            )
            .await?;
        self.count_revocations(reason, ids.len());
        tracing::info!(
            count = ids.len(),
            reason = reason.as_str(),
            actor,
            "user sessions revoked"
        );
        Ok(ids)
    }

    /// Ends the sessions bound to a provider session (back-channel logout).
    pub async fn revoke_provider_session(
        &self,
        sid: &str,
        actor: &str,
        now: u64,
    ) -> StoreResult<Vec<StoreId>> {
        let ids = self
            .store
            .revoke_sid(
                &sid_hash(sid),
                &Revocation::new(RevokeReason::Backchannel, actor, now),
            )
            .await?;
        self.count_revocations(RevokeReason::Backchannel, ids.len());
        tracing::info!(
            count = ids.len(),
            "provider session ended: sessions revoked"
        );
        Ok(ids)
    }

    /// Store statistics, with the top users named (their subject is read
    /// from the sealed metadata of one of their sessions).
    pub async fn stats(&self, top: usize, now: u64) -> StoreResult<Stats> {
        let raw = self.store.stats(top).await?;
        let mut top_users = Vec::with_capacity(raw.top_users.len());
        for (hash, count) in raw.top_users {
            // One short page is enough to name the user.
            let listed = self.store.list_user(&hash, None, 8).await?;
            let sub = listed.sessions.iter().find_map(|l| {
                let stored = self.verify(&l.id, &l.record, now)?;
                self.open_meta(&l.id, &stored.body).map(|m| m.sub)
            });
            top_users.push(UserCount {
                user: sub.unwrap_or_else(|| format!("(sha256 {hash})")),
                sessions: count,
            });
        }
        Ok(Stats {
            sessions: raw.sessions,
            users: raw.users,
            top_users,
            memory_bytes: raw.memory_bytes,
        })
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> StoreResult<()> {
        self.store.ping().await
    }

    /// Drops index entries of expired sessions; returns how many.
    pub async fn sweep(&self) -> StoreResult<u64> {
        self.store.sweep().await
    }

    /// Keeps a value for one later [`Self::take_sealed_once`] by `handle`
    /// (a random token the caller hands out). The store sees only the
    /// handle's hash and the value sealed under the server key, bound to
    /// its kind and handle.
    pub async fn put_sealed_once(
        &self,
        kind: OnceKind,
        handle: &str,
        value: &[u8],
        ttl: std::time::Duration,
    ) -> StoreResult<()> {
        let key = sha256_hex(handle);
        let sealed = self.keys.seal_tagged(&once_aad(kind, &key), value);
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.store.put_once(kind, &key, &sealed, ttl_millis).await
    }

    /// Takes a value kept by [`Self::put_sealed_once`]: the first caller
    /// gets it, every later one (on any instance) `None`, as does a value
    /// that does not open under any configured key.
    pub async fn take_sealed_once(
        &self,
        kind: OnceKind,
        handle: &str,
    ) -> StoreResult<Option<zeroize::Zeroizing<Vec<u8>>>> {
        let key = sha256_hex(handle);
        let Some(sealed) = self.store.take_once(kind, &key).await? else {
            return Ok(None);
        };
        Ok(self.keys.open_tagged(&once_aad(kind, &key), &sealed).ok())
    }

    /// Seals a value the browser carries for us (a pending login), under
    /// the current server key and bound to `purpose`, as base64url ready for
    /// a cookie. Only this gateway can read or forge it.
    pub fn seal_for_browser(&self, purpose: &str, value: &[u8]) -> String {
        use base64::Engine as _;
        let sealed = self.keys.seal_tagged(&browser_aad(purpose), value);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
    }

    /// Opens what [`Self::seal_for_browser`] made for `purpose`, under any
    /// configured key (so rotation keeps pending values valid). Anything
    /// else — too long, not base64url, tampered, another purpose, a retired
    /// key — is `None`.
    pub fn open_from_browser(
        &self,
        purpose: &str,
        value: &str,
    ) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        use base64::Engine as _;
        if value.len() > MAX_BROWSER_SEALED_LEN {
            return None;
        }
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .ok()?;
        self.keys.open_tagged(&browser_aad(purpose), &sealed).ok()
    }

    /// Claims `handle` for `purpose` once, on every instance, until `ttl`:
    /// `true` the first time. The store keeps a tiny marker under the hash
    /// of purpose and handle, never the handle itself.
    pub async fn claim_once(
        &self,
        purpose: &str,
        handle: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let key = sha256_hex(&format!("{purpose}:{handle}"));
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.store.claim_once(&key, ttl_millis).await
    }

    /// Takes the session's short refresh lock (shared by every instance);
    /// `false`: another holder has it.
    pub async fn lock_refresh(
        &self,
        store_id: &StoreId,
        token: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.store.lock(store_id, token, ttl_millis).await
    }

    /// Releases the refresh lock if `token` still holds it.
    pub async fn unlock_refresh(&self, store_id: &StoreId, token: &str) -> StoreResult<()> {
        self.store.unlock(store_id, token).await
    }

    /// Records a back-channel logout token's `jti` until `ttl`; `false` if
    /// it was seen before (a replay), on any instance.
    pub async fn remember_logout_jti(
        &self,
        jti: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.store.remember_jti(&sha256_hex(jti), ttl_millis).await
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
mod tests {
    use super::*;
    use crate::config::ServerKeyConfig;
    use crate::secret::SecretKey;
    use crate::session::store::memory::MemoryStore;
    use std::time::Duration;

    fn sessions(store: Arc<Store>) -> Sessions {
        Sessions::new(
            &SessionConfig {
                idle_timeout: Duration::from_secs(600),
                absolute_timeout: Duration::from_secs(3600),
                ..SessionConfig::with_keys(vec![ServerKeyConfig {
                    id: "k1".into(),
                    key: SecretKey::from_bytes([3; 32]),
                }])
            },
            store,
        )
    }

    fn login(sub: &str) -> NewLogin {
        NewLogin {
            sub: sub.into(),
            sid: Some("idp-sid".into()),
            access_token: SecretString::new("access-token-value"),
            refresh_token: Some(SecretString::new("refresh-token-value")),
            id_token: None,
            access_expires_at: 2_000,
            claims_json: r#"{"sub":"alice","name":"Alice"}"#.into(),
            scopes: None,
        }
    }

    fn cookie_header(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_owned();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&pair).expect("value"),
        );
        h
    }

    #[tokio::test]
    async fn a_created_session_loads_from_its_cookie_and_nothing_else() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let s = sessions(store.clone());
        let (sid, cookie) = s
            .create(login("alice"), &ClientInfo::default(), 1_000)
            .await
            .expect("create");
        let Lookup::Active(session) = s.load(&cookie_header(&cookie), 1_001).await.expect("load")
        else {
            panic!("expected an active session");
        };
        assert_eq!(session.store_id, sid);
        assert_eq!(session.secrets.access_token.expose(), "access-token-value");
        assert_eq!(session.claims()["name"], "Alice");

        // The stored bytes hold neither the tokens nor the claims in clear.
        let raw = store
            .get(&sid)
            .await
            .expect("get")
            .into_live()
            .expect("present");
        let text = String::from_utf8_lossy(&raw);
        for needle in [
            "access-token-value",
            "refresh-token-value",
            "Alice",
            "alice",
            "idp-sid",
        ] {
            assert!(!text.contains(needle), "{needle} stored in clear");
        }
        assert!(matches!(
            s.load(&HeaderMap::new(), 1_001).await,
            Ok(Lookup::Anonymous)
        ));
    }

    #[tokio::test]
    async fn sessions_end_at_their_idle_and_absolute_deadlines() {
        let s = sessions(Arc::new(Store::Memory(MemoryStore::new())));
        let (_, cookie) = s
            .create(login("alice"), &ClientInfo::default(), 1_000)
            .await
            .expect("create");
        let h = cookie_header(&cookie);
        assert!(matches!(s.load(&h, 1_599).await, Ok(Lookup::Active(_))));
        assert!(
            matches!(s.load(&h, 1_600).await, Ok(Lookup::Ended(_))),
            "idle deadline"
        );
    }

    #[tokio::test]
    async fn touching_slides_the_idle_deadline_but_never_past_the_absolute_one() {
        let s = sessions(Arc::new(Store::Memory(MemoryStore::new())));
        let (_, cookie) = s
            .create(login("alice"), &ClientInfo::default(), 1_000)
            .await
            .expect("create");
        let h = cookie_header(&cookie);
        let Ok(Lookup::Active(session)) = s.load(&h, 1_500).await else {
            panic!("active")
        };
        assert!(s.touch_due(&session, 1_500));
        assert!(
            s.touch(&session, &ClientInfo::default(), 1_500)
                .await
                .expect("touch")
        );
        assert!(matches!(s.load(&h, 2_000).await, Ok(Lookup::Active(_))));
        // A stale copy cannot overwrite the newer record.
        assert!(
            !s.touch(&session, &ClientInfo::default(), 1_501)
                .await
                .expect("touch")
        );
        assert!(
            matches!(s.load(&h, 4_600).await, Ok(Lookup::Ended(_))),
            "absolute deadline"
        );
    }

    #[tokio::test]
    async fn a_cookie_with_the_right_id_but_another_secret_does_not_open() {
        let s = sessions(Arc::new(Store::Memory(MemoryStore::new())));
        let (_, cookie) = s
            .create(login("alice"), &ClientInfo::default(), 1_000)
            .await
            .expect("create");
        let value = cookie
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .split_once('=')
            .expect("=")
            .1
            .to_owned();
        // Same lookup half, different secret half.
        let forged = format!("{}{}", &value[..22], "A".repeat(21));
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("__Host-oidc-bff={forged}")).expect("v"),
        );
        assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))));
    }

    /// A session created at 1_000 for alice, its cookie header and the
    /// stored bytes.
    async fn created(store: &Arc<Store>, s: &Sessions) -> (StoreId, HeaderMap, Vec<u8>) {
        let (sid, cookie) = s
            .create(login("alice"), &ClientInfo::default(), 1_000)
            .await
            .expect("create");
        let raw = store
            .get(&sid)
            .await
            .expect("get")
            .into_live()
            .expect("present");
        (sid, cookie_header(&cookie), raw)
    }

    /// Writes `bytes` as the session's record, as someone with write access
    /// to the store could.
    async fn overwrite(store: &Store, sid: &StoreId, old: &[u8], bytes: &[u8]) {
        let generation = StoredSession::decode(old)
            .expect("decodes")
            .record
            .generation;
        assert!(
            store
                .replace_if(sid, generation, bytes, 3_600_000)
                .await
                .expect("replace")
        );
    }

    fn edited(raw: &[u8], edit: impl FnOnce(&mut StoredSession)) -> Vec<u8> {
        let tagged = StoredSession::decode(raw).expect("decodes");
        let mut record = tagged.record;
        edit(&mut record);
        let tag: [u8; record::TAG_LEN] = tagged.tag.try_into().expect("tag");
        // The edited header keeps the old tag: no server key needed.
        record.encode(|_| tag)
    }

    #[tokio::test]
    async fn a_stored_deadline_moved_later_makes_the_record_not_open() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let s = sessions(store.clone());
        let (sid, h, raw) = created(&store, &s).await;
        let later = edited(&raw, |r| {
            r.body.idle_expires_at += 1;
            r.body.absolute_expires_at += 1;
        });
        overwrite(&store, &sid, &raw, &later).await;
        assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))));
    }

    #[tokio::test]
    async fn any_one_byte_of_a_stored_record_changed_makes_it_not_open() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let s = sessions(store.clone());
        let (sid, h, raw) = created(&store, &s).await;
        let Ok(Lookup::Active(session)) = s.load(&h, 1_001).await else {
            panic!("the untouched record opens");
        };
        for i in 0..raw.len() {
            let mut bytes = raw.clone();
            bytes[i] ^= 0x01;
            assert!(
                s.open(session.id.clone(), sid.clone(), &bytes, 1_001)
                    .is_none(),
                "byte {i} changed and the record still opens"
            );
        }
    }

    #[tokio::test]
    async fn a_rewritten_generation_makes_the_record_not_open() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let s = sessions(store.clone());
        let (sid, h, raw) = created(&store, &s).await;
        let mut bytes = raw.clone();
        bytes[record::GENERATION_AT].copy_from_slice(&StoredSession::generation_bytes(99));
        overwrite(&store, &sid, &raw, &bytes).await;
        assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))));
    }

    #[tokio::test]
    async fn a_record_copied_under_another_session_does_not_open() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let s = sessions(store.clone());
        let (a, ha, raw_a) = created(&store, &s).await;
        let (_, _, raw_b) = created(&store, &s).await;
        overwrite(&store, &a, &raw_a, &raw_b).await;
        assert!(matches!(s.load(&ha, 1_001).await, Ok(Lookup::Ended(_))));
    }

    #[tokio::test]
    async fn a_revoked_record_written_back_stays_ended() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let s = sessions(store.clone());
        let (sid, h, raw) = created(&store, &s).await;
        s.revoke(&sid, RevokeReason::Logout, "user", 1_001)
            .await
            .expect("revoke");
        // Restore the saved bytes and the index entries, as a backup would.
        store
            .create(&NewSession {
                id: &sid,
                record: &raw,
                ttl_millis: 3_600_000,
                user_hash: &user_hash("alice"),
                sid_hash: None,
                created_millis: 1_000_000,
                max_per_user: None,
                eviction: &Revocation::new(RevokeReason::Limit, "system", 1_001),
                index_ttl_millis: 3_600_000,
            })
            .await
            .expect("restore");
        assert!(matches!(s.load(&h, 1_002).await, Ok(Lookup::Ended(_))));
        assert!(!s.belongs_to(&sid, "alice", 1_002).await.expect("owner"));
    }

    #[tokio::test]
    async fn deadlines_beyond_the_configured_lifetimes_do_not_open_even_when_signed() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let s = sessions(store.clone());
        let (sid, h, raw) = created(&store, &s).await;
        let record = StoredSession::decode(&raw).expect("decodes").record;
        type Edit = fn(&mut StoredSession);
        let cases: [(&str, Edit); 4] = [
            ("absolute", |r| {
                r.body.absolute_expires_at = r.body.created_at + 3_601
            }),
            ("idle", |r| {
                r.body.idle_expires_at = r.body.last_active_at + 601
            }),
            ("created in the future", |r| {
                r.body.created_at = 5_000;
                r.body.last_active_at = 5_000;
            }),
            ("active before created", |r| r.body.last_active_at = 999),
        ];
        let mut current = raw.clone();
        for (what, edit) in cases {
            let mut r = record.clone();
            edit(&mut r);
            // Signed with the server key: as if written under another
            // configuration, not merely tampered with.
            let bytes = s.encode(&sid, &r);
            overwrite(&store, &sid, &current, &bytes).await;
            current = bytes;
            assert!(
                matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))),
                "{what}: opened"
            );
        }
        // The same record within the rules opens again.
        let bytes = s.encode(&sid, &record);
        overwrite(&store, &sid, &current, &bytes).await;
        assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Active(_))));
    }

    #[tokio::test]
    async fn a_record_in_the_untagged_format_1_is_ended_not_a_crash() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let s = sessions(store.clone());
        let (sid, h, raw) = created(&store, &s).await;
        let mut old = raw[..raw.len() - record::TAG_LEN].to_vec();
        old[0] = 1;
        overwrite(&store, &sid, &raw, &old).await;
        assert!(matches!(s.load(&h, 1_001).await, Ok(Lookup::Ended(_))));
    }

    #[tokio::test]
    async fn records_under_an_older_configured_key_open_and_are_resealed_on_write() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let old = sessions(store.clone());
        let (sid, h, _) = created(&store, &old).await;
        let key = |id: &str, b: u8| ServerKeyConfig {
            id: id.into(),
            key: SecretKey::from_bytes([b; 32]),
        };
        let config = |keys| SessionConfig {
            idle_timeout: Duration::from_secs(600),
            absolute_timeout: Duration::from_secs(3600),
            ..SessionConfig::with_keys(keys)
        };
        let rotated = Sessions::new(&config(vec![key("k2", 4), key("k1", 3)]), store.clone());
        let Ok(Lookup::Active(session)) = rotated.load(&h, 1_100).await else {
            panic!("a record under the older key opens");
        };
        assert!(
            rotated
                .touch(&session, &ClientInfo::default(), 1_100)
                .await
                .expect("touch")
        );
        let raw = store
            .get(&sid)
            .await
            .expect("get")
            .into_live()
            .expect("present");
        assert_eq!(
            StoredSession::decode(&raw)
                .expect("decodes")
                .record
                .body
                .key_id,
            "k2"
        );
        let only_new = Sessions::new(&config(vec![key("k2", 4)]), store.clone());
        assert!(matches!(
            only_new.load(&h, 1_101).await,
            Ok(Lookup::Active(_))
        ));
        assert!(
            only_new
                .belongs_to(&sid, "alice", 1_101)
                .await
                .expect("owner")
        );
        assert!(
            !only_new
                .belongs_to(&sid, "bob", 1_101)
                .await
                .expect("owner")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]
        #[test]
        fn arbitrary_bytes_as_a_stored_record_never_panic_and_never_open(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            version_2 in proptest::prelude::any::<bool>(),
        ) {
            let s = sessions(Arc::new(Store::Memory(MemoryStore::new())));
            let mut bytes = bytes;
            if version_2 && !bytes.is_empty() {
                bytes[0] = record::FORMAT_VERSION;
            }
            let id = SessionId::generate();
            let store_id = id.store_id();
            proptest::prop_assert!(s.open(id, store_id.clone(), &bytes, 1_000).is_none());
            proptest::prop_assert!(s.verify(&store_id, &bytes, 1_000).is_none());
        }
    }
}
