//! OpenID Connect Back-Channel Logout 1.0: the provider posts a signed
//! logout token; if it is valid (signature, `iss`, `aud`, `iat`, the
//! back-channel event, `sid` and/or `sub` — each, when present, a
//! non-empty string —, no `nonce`) and its `jti` was
//! never seen (checked in the store, so replays are caught by every
//! instance), the matching sessions end: by `sid` when present, else all of
//! `sub`'s. An invalid token changes nothing.

use std::time::Duration;

use crate::oidc::Oidc;
use crate::oidc::jwt::{LOGOUT_TOKEN_MAX_AGE_SECS, TokenError, validate_logout_token};
use crate::session::Sessions;
use crate::session::cookie::StoreId;
use crate::session::store::RevokeReason;

/// Why a logout token did not end anything.
#[derive(Debug, thiserror::Error)]
pub enum BackchannelError {
    /// The token is invalid or replayed; the reason is safe to tell the
    /// provider.
    /// Why, as a fixed word (audit trail, metrics), and as told to the
    /// provider.
    #[error("{1}")]
    Refused(&'static str, String),
    /// Keys or store unavailable: the provider should try again.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

/// What a back-channel logout did: whom it named (`sub`, when the token
/// has one) and the sessions it ended.
pub struct Ended {
    pub user: Option<String>,
    pub sessions: Vec<StoreId>,
}

/// Validates `token` and ends the sessions it names.
pub async fn logout(
    sessions: &Sessions,
    oidc: &Oidc,
    token: &str,
    clock_skew: Duration,
    now: u64,
) -> Result<Ended, BackchannelError> {
    let claims = match validate_logout_token(&oidc.provider, &oidc.keys, token, now).await {
        Ok(c) => c,
        Err(TokenError::KeysUnavailable(e)) => {
            return Err(BackchannelError::Unavailable(format!(
                "provider keys unavailable: {e}"
            )));
        }
        Err(e) => return Err(BackchannelError::Refused("token_invalid", e.to_string())),
    };
    if claims.sid.is_none() && claims.sub.is_none() {
        return Err(BackchannelError::Refused(
            "no_subject",
            "neither sid nor sub".into(),
        ));
    }
    // Remember the jti until the token could no longer be accepted anyway:
    // past its `exp` or past the age `validate_logout_token` allows,
    // whichever comes first. Never by `exp` alone: a provider's `exp` years
    // ahead asked Redis for an expiry it refuses (a 503 on every attempt,
    // and the sessions never ended).
    let too_old = claims.iat.saturating_add(LOGOUT_TOKEN_MAX_AGE_SECS);
    let until = claims
        .exp
        .map_or(too_old, |exp| exp.min(too_old))
        .saturating_add(clock_skew.as_secs())
        .saturating_add(1);
    let ttl = Duration::from_secs(until.saturating_sub(now).max(60));
    let unavailable = |e: crate::session::store::StoreError| {
        BackchannelError::Unavailable(format!("store unavailable: {e}"))
    };
    if !sessions
        .remember_logout_jti(&claims.jti, ttl)
        .await
        .map_err(unavailable)?
    {
        return Err(BackchannelError::Refused(
            "replayed",
            "logout token replayed (jti already used)".into(),
        ));
    }
    let ids = match (&claims.sid, &claims.sub) {
        (Some(sid), _) => sessions.revoke_provider_session(sid, "provider", now).await,
        (None, Some(sub)) => {
            sessions
                .revoke_user(sub, None, RevokeReason::Backchannel, "provider", now)
                .await
        }
        (None, None) => {
            return Err(BackchannelError::Refused(
                "no_subject",
                "neither sid nor sub".into(),
            ));
        }
    }
    .map_err(unavailable);
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => {
            // The jti was claimed first so that two deliveries of one token
            // do not both run; the logout failed (a 503 the provider
            // retries), so the retry must not be refused as a replay and
            // leave the sessions alive. If forgetting fails too, the store
            // is down for this key as well: the retry is refused, logged.
            if let Err(forget) = sessions.forget_logout_jti(&claims.jti).await {
                tracing::warn!(
                    error = %forget,
                    "a failed back-channel logout's token could not be forgotten: \
                     the provider's retry will be refused as a replay"
                );
            }
            return Err(e);
        }
    };
    Ok(Ended {
        user: claims.sub,
        sessions: ids,
    })
}
