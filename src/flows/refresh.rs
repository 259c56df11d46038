//! Access-token refresh without races.
//!
//! With refresh-token rotation, spending one refresh token twice ends the
//! session at the provider, so exactly one refresh may happen per expiry:
//! - within one process, requests for the same session queue on a local
//!   mutex (single-flight), and whoever gets it second finds fresh tokens;
//! - across processes, the refresher holds a short Redis lock
//!   (`SET NX PX`); instances that lose poll the record until its tokens
//!   are fresh (or the lock is gone), then use what the winner stored.
//!
//! Outcomes: fresh tokens; `invalid_grant` ends the session (401, record and
//! index entries removed); an unreachable or slow provider answers 503/504
//! and keeps the session for a later try. An answer the gateway refuses —
//! an ID token that does not validate (another `sub`, a bad signature),
//! tokens or claims over the `oidc.max_*` bounds — also ends the session
//! (revoked, 401): the old refresh token is spent, and the new one must not
//! be used, so it is revoked at the provider too (best effort).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use tracing::Instrument as _;

use crate::audit::{Action, Auditor, Event, Origin};
use crate::metrics::OutcomeLabels;
use crate::oidc::Oidc;
use crate::oidc::claims::{bounded_json, granted_scopes, merge_claims};
use crate::oidc::dpop::DpopKey;
use crate::oidc::jwt::{IdTokenExpectations, TokenError, validate_id_token};
use crate::oidc::provider::{DPOP_NOT_BOUND, ProviderError};
use crate::secret::SecretString;
use crate::session::cookie::random_token;
use crate::session::record::SessionSecrets;
use crate::session::store::{RevokeReason, StoreError};
use crate::session::{EndReason, Session, Sessions};

mod derived;
pub use derived::derived_key;

/// Why a session has no fresh access token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The session is over: gone meanwhile, its refresh token refused
    /// (`invalid_grant`), no refresh token past expiry, or a refreshed ID
    /// token that does not validate.
    #[error("session ended")]
    SessionEnded(EndReason),
    /// The provider is unreachable, slow, or refused for its own reasons:
    /// the session is kept for a later try.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Keeps sessions' access tokens fresh: one refresh per expiry across
/// every request and every instance.
pub struct Refresher {
    sessions: Arc<Sessions>,
    oidc: Arc<Oidc>,
    flights: SingleFlight,
    /// Refresh this long before the access token expires.
    skew: u64,
    refreshes: Family<OutcomeLabels, Counter>,
    audit: Auditor,
}

/// Per-session local locks; entries are removed when nobody holds them.
#[derive(Default)]
pub struct SingleFlight {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SingleFlight {
    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_owned()).or_default().clone()
    }

    fn release(&self, key: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        drop(lock);
        if map.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(key);
        }
    }
}

/// Whether the access token needs refreshing now.
pub fn needs_refresh(session: &Session, now: u64, skew: u64) -> bool {
    let exp = session.stored.body.access_expires_at;
    exp != 0 && now + skew >= exp
}

impl Refresher {
    pub fn new(
        sessions: Arc<Sessions>,
        oidc: Arc<Oidc>,
        skew: Duration,
        refreshes: Family<OutcomeLabels, Counter>,
        audit: Auditor,
    ) -> Self {
        Self {
            sessions,
            oidc,
            flights: SingleFlight::default(),
            skew: skew.as_secs(),
            refreshes,
            audit,
        }
    }

    /// Counts a refresh (`None`: success, else the failure reason) and
    /// writes its audit event; a failure that ends the session is also a
    /// revocation.
    fn count(&self, origin: Origin<'_>, session: &Session, failure: Option<&'static str>) {
        let labels = failure.map_or(OutcomeLabels::SUCCESS, OutcomeLabels::failure);
        self.refreshes.get_or_create(&labels).inc();
        if !self.audit.enabled() {
            return;
        }
        // The claims are parsed for the user only when it is written.
        let sub = crate::audit::subject(session);
        let event = match failure {
            None => Event::success(Action::Refresh),
            Some(reason) => Event::failure(Action::Refresh, reason),
        };
        self.audit
            .record(origin, event.session(&session.store_id).user(&sub));
        if matches!(failure, Some("invalid_grant" | "refused")) {
            self.audit.record(
                origin,
                Event::success(Action::Revocation)
                    .reason(RevokeReason::RefreshFailed.as_str())
                    .actor("system")
                    .session(&session.store_id)
                    .user(&sub),
            );
        }
    }

    /// Returns a session whose access token is valid for at least the
    /// configured skew, refreshing it if needed.
    /// `origin` is the request that needs the token (for the audit trail).
    /// A session that needs nothing comes back as it came (shared with the
    /// session cache); a refreshed one is new.
    pub async fn fresh(
        &self,
        session: Arc<Session>,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<Arc<Session>, RefreshError> {
        self.fresh_unless(session, None, now, origin).await
    }

    /// [`Self::fresh`], also refreshing when the session's access token is
    /// still `refused` (an upstream answered `invalid_token` to it) however
    /// far its expiry: single-flight like any refresh, and a request that
    /// finds the session already carrying another token (refreshed by
    /// another request meanwhile) uses that one without a new grant.
    pub async fn renew_refused(
        &self,
        session: impl Into<Arc<Session>>,
        refused: &HeaderValue,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<Arc<Session>, RefreshError> {
        self.fresh_unless(session.into(), Some(refused), now, origin)
            .await
    }

    /// Whether `session` needs a new access token: about to expire, or
    /// still the `refused` one.
    fn stale(&self, session: &Session, now: u64, refused: Option<&HeaderValue>) -> bool {
        needs_refresh(session, now, self.skew)
            || refused.is_some_and(|r| session.bearer_header().is_ok_and(|h| h == *r))
    }

    async fn fresh_unless(
        &self,
        session: Arc<Session>,
        refused: Option<&HeaderValue>,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<Arc<Session>, RefreshError> {
        if !self.stale(&session, now, refused) {
            return Ok(session);
        }
        if !session.stored.body.has_refresh_token {
            // Still usable inside the skew window; after expiry, the session is over.
            return if session.stored.body.access_expires_at > now {
                Ok(session)
            } else {
                Err(RefreshError::SessionEnded(EndReason::Expired))
            };
        }
        let key = session.store_id.as_str().to_owned();
        let local = self.flights.lock_for(&key);
        // One span per refresh for exported traces: the wait for the lock,
        // the store reads and writes and the provider call inside it.
        let span = tracing::info_span!(
            target: crate::traces::SPANS,
            "session.refresh",
            refresh.outcome = tracing::field::Empty,
        );
        let result = async {
            let _guard = local.lock().await;
            self.refresh_locked(&session, refused, now, origin)
                .await
                .map(Arc::new)
        }
        .instrument(span.clone())
        .await;
        span.record(
            "refresh.outcome",
            if result.is_ok() { "ok" } else { "failed" },
        );
        self.flights.release(&key, local);
        result
    }

    async fn refresh_locked(
        &self,
        session: &Session,
        refused: Option<&HeaderValue>,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<Session, RefreshError> {
        let current = self
            .sessions
            .reload(session, now)
            .await?
            .map_err(RefreshError::SessionEnded)?;
        // Another request (here or elsewhere) may have refreshed meanwhile.
        let done = |s: &Session| (!self.stale(s, now, refused)).then(|| s.clone());
        self.under_refresh_lock(current, now, done, async |current: &Session| {
            self.refresh_with_lock(current, refused, now, origin).await
        })
        .await
    }

    /// Runs `work` under the session's cross-instance refresh lock (Redis),
    /// unless `done` finds what is needed in the stored session first —
    /// before taking the lock, or after another instance's refresh while
    /// waiting for it. Shared by the main token's refresh and derived
    /// tokens: both spend the session's refresh token, so never at once.
    pub(super) async fn under_refresh_lock<T>(
        &self,
        mut current: Session,
        now: u64,
        done: impl Fn(&Session) -> Option<T>,
        work: impl AsyncFnOnce(&Session) -> Result<T, RefreshError>,
    ) -> Result<T, RefreshError> {
        let sessions = &self.sessions;
        if let Some(t) = done(&current) {
            return Ok(t);
        }
        let lock_ttl = self.oidc.provider.config().http_timeout + Duration::from_secs(5);
        let token = random_token();
        let deadline = tokio::time::Instant::now() + lock_ttl;
        loop {
            if sessions
                .lock_refresh(&current.store_id, &token, lock_ttl)
                .await?
            {
                break;
            }
            // Another instance holds the lock: wait for its result.
            if tokio::time::Instant::now() >= deadline {
                return Err(RefreshError::Provider(ProviderError::Timeout(lock_ttl)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            current = sessions
                .reload(&current, now)
                .await?
                .map_err(RefreshError::SessionEnded)?;
            if let Some(t) = done(&current) {
                return Ok(t);
            }
        }
        let result = work(&current).await;
        if let Err(e) = sessions.unlock_refresh(&current.store_id, &token).await {
            tracing::warn!(error = %super::Untrusted(&e), "could not release refresh lock; it expires by itself");
        }
        result
    }

    async fn refresh_with_lock(
        &self,
        current: &Session,
        refused: Option<&HeaderValue>,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<Session, RefreshError> {
        let (sessions, oidc) = (&self.sessions, &self.oidc);
        // Re-read under the lock: the previous holder may have just finished.
        let latest = sessions
            .reload(current, now)
            .await?
            .map_err(RefreshError::SessionEnded)?;
        if !self.stale(&latest, now, refused) {
            return Ok(latest);
        }
        let Some(refresh_token) = latest.secrets.refresh_token.clone() else {
            return Err(RefreshError::SessionEnded(EndReason::Expired));
        };
        // With `oidc.dpop`, the refresh carries a proof of the session's
        // key, so the new access token is bound to it as the first was. A
        // session from before DPoP was turned on has no key: it ends here
        // (one new login) rather than carry an unbound token on.
        // Claims that do not rebuild: a corrupt record, ended here, before
        // a refresh token is spent on it.
        let Ok(kept) = latest.claims() else {
            let why = "the session's claims do not rebuild (corrupt record)";
            return self.end_refused(&latest, None, why, now, origin).await;
        };
        let dpop = match (&latest.secrets.dpop_key, oidc.provider.config().dpop) {
            (Some(k), true) => match DpopKey::from_pkcs8(k) {
                Ok(k) => Some(k),
                Err(e) => {
                    return self
                        .end_refused(&latest, None, &e.to_string(), now, origin)
                        .await;
                }
            },
            (None, true) => {
                let why = "the session has no DPoP key (it predates oidc.dpop)";
                return self.end_refused(&latest, None, why, now, origin).await;
            }
            (_, false) => None,
        };
        let tokens = match oidc.provider.refresh(&refresh_token, dpop.as_ref()).await {
            Ok(t) => t,
            Err(e) if e.is_invalid_grant() => {
                tracing::info!(session = ?latest.store_id, "refresh token refused (invalid_grant); ending the session");
                self.count(origin, &latest, Some("invalid_grant"));
                sessions
                    .revoke(&latest.store_id, RevokeReason::RefreshFailed, "system", now)
                    .await?;
                return Err(RefreshError::SessionEnded(EndReason::RefreshRefused));
            }
            Err(ProviderError::TooLarge(what) | ProviderError::Unusable(what)) => {
                return self.end_refused(&latest, None, &what, now, origin).await;
            }
            Err(ProviderError::Rejected { error, .. }) if error == DPOP_NOT_BOUND => {
                let why = "the refreshed token is not bound to the session's DPoP key";
                return self.end_refused(&latest, None, why, now, origin).await;
            }
            Err(e) => {
                // Any other refusal (invalid_client after a secret change, ...)
                // is the gateway's problem, not the user's: 503, session kept.
                let e = match e {
                    ProviderError::Rejected { error, .. } => ProviderError::Unavailable(format!(
                        "token endpoint refused the refresh: {error}"
                    )),
                    other => other,
                };
                self.count(origin, &latest, Some("provider_error"));
                tracing::warn!(session = ?latest.store_id, error = %super::Untrusted(&e), "refresh failed; keeping the session");
                return Err(RefreshError::Provider(e));
            }
        };
        // The text as kept (read once already: `claims` succeeded).
        let mut claims_json = latest
            .secrets
            .claims_json()
            .map(str::to_owned)
            .unwrap_or_default();
        let id_token = match tokens.id_token {
            Some(t) => {
                let sub = kept.get("sub").and_then(Value::as_str).map(str::to_owned);
                let validated = validate_id_token(
                    &oidc.provider,
                    &oidc.keys,
                    t.expose(),
                    &IdTokenExpectations {
                        nonce: None,
                        subject: sub.as_deref(),
                        access_token: Some(tokens.access_token.expose()),
                        now,
                    },
                )
                .await;
                match validated {
                    Ok(claims) => {
                        let merged = merge_claims(&claims_json, &claims);
                        claims_json = match bounded_json(&merged, &oidc.provider.config().limits) {
                            Ok(json) => json,
                            Err(e) => {
                                let why = format!("claims from refresh too large: {e}");
                                let spent = tokens.refresh_token.as_ref();
                                return self.end_refused(&latest, spent, &why, now, origin).await;
                            }
                        };
                        Some(t)
                    }
                    // The keys cannot be had (the JWKS endpoint is down): an
                    // outage, not a refused answer. The new tokens came from
                    // the token endpoint itself and the old refresh token is
                    // spent, so they are kept; the unchecked ID token is not
                    // (the session keeps its claims and ID token, as after an
                    // answer without one). Ending the session would sign the
                    // user out for the provider's outage.
                    Err(TokenError::KeysUnavailable(e)) => {
                        tracing::warn!(session = ?latest.store_id, error = %e,
                            "refreshed ID token not checked: provider keys unavailable; keeping the session's claims");
                        latest.secrets.id_token.clone()
                    }
                    Err(e) => {
                        let why = format!("ID token from refresh is invalid: {e}");
                        let spent = tokens.refresh_token.as_ref();
                        return self.end_refused(&latest, spent, &why, now, origin).await;
                    }
                }
            }
            None => latest.secrets.id_token.clone(),
        };
        let scopes = granted_scopes(
            tokens.scope.as_deref(),
            tokens.access_token.expose(),
            latest.scopes(),
        );
        let secrets = SessionSecrets {
            access_token: tokens.access_token,
            // Without rotation the provider sends no new refresh token: keep ours.
            refresh_token: tokens
                .refresh_token
                .or(latest.secrets.refresh_token.clone()),
            id_token,
            claims: claims_json.into(),
            scopes: Some(scopes),
            // Derived tokens stay valid until their own expiry.
            derived: latest.secrets.derived.clone(),
            // The key the new tokens are bound to: the session's, for life.
            dpop_key: latest.secrets.dpop_key.clone(),
        };
        let access_expires_at = tokens.expires_in.map_or(0, |d| now + d.as_secs());
        self.count(origin, &latest, None);
        tracing::debug!(session = ?latest.store_id, "access token refreshed");
        sessions
            .write_tokens(&latest, secrets, access_expires_at, now)
            .await?
            .ok_or(RefreshError::SessionEnded(EndReason::Expired))
    }

    /// The provider answered the refresh with something the gateway
    /// refuses: the old refresh token is spent and the answer unusable, so
    /// the session ends here (revoked in the store, so no later request uses
    /// its refresh token again) and the newly issued refresh token, if any,
    /// is revoked at the provider.
    async fn end_refused(
        &self,
        session: &Session,
        new_refresh_token: Option<&SecretString>,
        why: &str,
        now: u64,
        origin: Origin<'_>,
    ) -> Result<Session, RefreshError> {
        tracing::warn!(session = ?session.store_id, reason = %why, "refresh answer refused; ending the session");
        self.count(origin, session, Some("refused"));
        self.sessions
            .revoke(
                &session.store_id,
                RevokeReason::RefreshFailed,
                "system",
                now,
            )
            .await?;
        if let Some(rt) = new_refresh_token
            && let Err(e) = self.oidc.provider.revoke_refresh_token(rt).await
        {
            tracing::info!(error = %e, "could not revoke the refused refresh token at the provider");
        }
        Err(RefreshError::SessionEnded(EndReason::RefreshRefused))
    }
}
