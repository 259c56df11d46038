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
//! and keeps the session for a later try.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::record::SessionSecrets;
use super::store::{RevokeReason, SessionStore};
use super::{Session, Sessions};
use crate::error::AppError;
use crate::oidc::Oidc;
use crate::oidc::jwt::IdTokenExpectations;

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

/// Returns a session whose access token is valid for at least `skew`
/// seconds, refreshing it if needed.
pub async fn ensure_fresh(
    sessions: &Sessions,
    oidc: &Oidc,
    flights: &SingleFlight,
    session: Session,
    now: u64,
    skew: u64,
) -> Result<Session, AppError> {
    if !needs_refresh(&session, now, skew) {
        return Ok(session);
    }
    if !session.stored.body.has_refresh_token {
        // Still usable inside the skew window; after expiry, the session is over.
        return if session.stored.body.access_expires_at > now {
            Ok(session)
        } else {
            Err(AppError::SessionExpired)
        };
    }
    let key = session.store_id.as_str().to_owned();
    let local = flights.lock_for(&key);
    let result = {
        let _guard = local.lock().await;
        refresh_locked(sessions, oidc, session, now, skew).await
    };
    flights.release(&key, local);
    result
}

async fn refresh_locked(
    sessions: &Sessions,
    oidc: &Oidc,
    session: Session,
    now: u64,
    skew: u64,
) -> Result<Session, AppError> {
    // Another request (here or elsewhere) may have refreshed meanwhile.
    let Some(mut current) = sessions.reload(&session, now).await? else {
        return Err(AppError::SessionExpired);
    };
    if !needs_refresh(&current, now, skew) {
        return Ok(current);
    }
    let lock_ttl = oidc.provider.config().http_timeout + Duration::from_secs(5);
    let token = crate::session::cookie::random_token();
    let deadline = tokio::time::Instant::now() + lock_ttl;
    loop {
        if sessions
            .store()
            .lock(&current.store_id, &token, lock_ttl.as_millis() as u64)
            .await?
        {
            break;
        }
        // Another instance is refreshing: wait for its result.
        if tokio::time::Instant::now() >= deadline {
            return Err(AppError::Provider(
                crate::oidc::provider::ProviderError::Timeout(lock_ttl),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        match sessions.reload(&current, now).await? {
            None => return Err(AppError::SessionExpired),
            Some(s) if !needs_refresh(&s, now, skew) => return Ok(s),
            Some(s) => current = s,
        }
    }
    let result = refresh_with_lock(sessions, oidc, &current, now, skew).await;
    if let Err(e) = sessions.store().unlock(&current.store_id, &token).await {
        tracing::warn!(error = %e, "could not release refresh lock; it expires by itself");
    }
    result
}

async fn refresh_with_lock(
    sessions: &Sessions,
    oidc: &Oidc,
    current: &Session,
    now: u64,
    skew: u64,
) -> Result<Session, AppError> {
    // Re-read under the lock: the previous holder may have just finished.
    let Some(latest) = sessions.reload(current, now).await? else {
        return Err(AppError::SessionExpired);
    };
    if !needs_refresh(&latest, now, skew) {
        return Ok(latest);
    }
    let Some(refresh_token) = latest.secrets.refresh_token.clone() else {
        return Err(AppError::SessionExpired);
    };
    let tokens = match oidc.provider.refresh(&refresh_token).await {
        Ok(t) => t,
        Err(e) if e.is_invalid_grant() => {
            tracing::info!(session = ?latest.store_id, "refresh token refused (invalid_grant); ending the session");
            crate::metrics::Metrics::count(&sessions.metrics.refreshes, "invalid_grant");
            sessions
                .revoke(&latest.store_id, RevokeReason::RefreshFailed, "system", now)
                .await?;
            return Err(AppError::SessionExpired);
        }
        Err(e) => {
            // Any other refusal (invalid_client after a secret change, ...)
            // is the gateway's problem, not the user's: 503, session kept.
            let e = match e {
                crate::oidc::provider::ProviderError::Rejected { error, .. } => {
                    crate::oidc::provider::ProviderError::Unavailable(format!(
                        "token endpoint refused the refresh: {error}"
                    ))
                }
                other => other,
            };
            crate::metrics::Metrics::count(&sessions.metrics.refreshes, "provider_error");
            tracing::warn!(session = ?latest.store_id, error = %e, "refresh failed; keeping the session");
            return Err(AppError::Provider(e));
        }
    };
    let mut claims_json = latest.secrets.claims_json.clone();
    let id_token = match tokens.id_token {
        Some(t) => {
            let sub = latest
                .claims()
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let claims = crate::oidc::jwt::validate_id_token(
                &oidc.provider,
                &oidc.keys,
                t.expose(),
                &IdTokenExpectations {
                    nonce: None,
                    subject: sub.as_deref(),
                    now,
                },
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "ID token from refresh is invalid");
                AppError::SessionExpired
            })?;
            claims_json = crate::oidc::login::merge_claims(&latest.secrets.claims_json, &claims);
            Some(t)
        }
        None => latest.secrets.id_token.clone(),
    };
    let secrets = SessionSecrets {
        access_token: tokens.access_token,
        // Without rotation the provider sends no new refresh token: keep ours.
        refresh_token: tokens
            .refresh_token
            .or(latest.secrets.refresh_token.clone()),
        id_token,
        claims_json,
    };
    let access_expires_at = tokens.expires_in.map_or(0, |d| now + d.as_secs());
    crate::metrics::Metrics::count(&sessions.metrics.refreshes, "success");
    tracing::debug!(session = ?latest.store_id, "access token refreshed");
    sessions
        .write_tokens(&latest, secrets, access_expires_at, now)
        .await
}
