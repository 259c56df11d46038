//! The authorization code flow: starting a login and completing it at the
//! callback.
//!
//! A started login (state, nonce, PKCE verifier, return target) lives in the
//! store, sealed under the server key, for `oidc.login_timeout`, and is taken
//! with an atomic get-and-delete: single-use across every instance. It is
//! bound to the browser that started it by the hash of a login-binding
//! cookie; the cookie is shared by all of that browser's pending logins, so
//! parallel logins (several tabs) do not lock each other out, while a
//! callback replayed in another browser fails (login CSRF).

use std::time::Duration;

use openidconnect::PkceCodeChallenge;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::oidc::Oidc;
use crate::oidc::claims::{bounded_json, strip_protocol_claims};
use crate::oidc::jwt::{IdTokenExpectations, TokenError, validate_id_token};
use crate::oidc::provider::ProviderError;
use crate::secret::constant_time_eq;
use crate::session::cookie::random_token;
use crate::session::store::{OnceKind, StoreError};
use crate::session::{ClientInfo, NewLogin, Sessions};

/// Why a login did not start or complete.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The callback is malformed (a parameter missing).
    #[error("{0}")]
    BadRequest(String),
    /// The provider or the ID token said no.
    #[error("login failed: {0}")]
    Failed(String),
    /// The state is unknown, expired, used, or from another browser.
    #[error("login expired or already completed")]
    Expired,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Only missing keys are an outage (503, try again); any other fault of the
/// token — missing `iss`/`sub`/`iat`/`exp`, bad signature, too large — is a
/// failed login (400 page, reason logged).
impl From<TokenError> for LoginError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::KeysUnavailable(p) => Self::Provider(p),
            other => Self::Failed(format!("the ID token is invalid: {other}")),
        }
    }
}

/// A provider answer over the `oidc.max_*` bounds fails the login (a 400
/// page naming the bound); anything else keeps its meaning.
fn oversized_fails(e: ProviderError) -> LoginError {
    match e {
        ProviderError::TooLarge(what) => {
            tracing::warn!(reason = %what, "provider answer too large; login refused");
            LoginError::Failed(format!("the identity provider sent too much: {what}"))
        }
        other => LoginError::Provider(other),
    }
}

#[derive(Serialize, Deserialize)]
struct PendingLogin {
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    binding_hash: Vec<u8>,
    created_at: u64,
}

fn binding_hash(binding: &str) -> Vec<u8> {
    Sha256::digest(binding.as_bytes()).to_vec()
}

/// A login-binding value is what we issue: 43 base64url characters.
fn valid_binding(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub struct LoginStart {
    /// The provider's authorization URL.
    pub redirect: Url,
    /// Set or refresh the login-binding cookie with this value.
    pub binding: String,
}

/// Starts a login: stores the pending state and returns where to send the
/// browser.
pub async fn begin(
    oidc: &Oidc,
    sessions: &Sessions,
    return_to: &Url,
    existing_binding: Option<&str>,
    now: u64,
) -> Result<LoginStart, LoginError> {
    let state = random_token();
    let nonce = random_token();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let binding = existing_binding
        .filter(|b| valid_binding(b))
        .map_or_else(random_token, str::to_owned);
    let pending = PendingLogin {
        nonce: nonce.clone(),
        pkce_verifier: verifier.secret().clone(),
        return_to: return_to.to_string(),
        binding_hash: binding_hash(&binding),
        created_at: now,
    };
    let plain = zeroize::Zeroizing::new(postcard::to_stdvec(&pending).unwrap_or_default());
    // Ask the provider first: if it is down, nothing is stored.
    let redirect = oidc
        .provider
        .authorization_url(&state, &nonce, challenge)
        .await?;
    let ttl = oidc.provider.config().login_timeout;
    sessions
        .put_sealed_once(OnceKind::Login, &state, &plain, ttl)
        .await?;
    Ok(LoginStart { redirect, binding })
}

/// The query of a callback from the provider.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

pub struct LoginDone {
    pub return_to: Url,
    pub session_cookie: http::HeaderValue,
    pub store_id: crate::session::cookie::StoreId,
}

/// Completes a login at the callback: exactly one session is created, or
/// none and an error says why.
pub async fn complete(
    oidc: &Oidc,
    sessions: &Sessions,
    params: &CallbackParams,
    binding: Option<&str>,
    client: &ClientInfo,
    now: u64,
) -> Result<LoginDone, LoginError> {
    let state = params
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512);
    // Spend the state first, whatever happens next: a state is good once.
    let pending = match state {
        Some(s) => sessions
            .take_sealed_once(OnceKind::Login, s)
            .await?
            .and_then(|plain| postcard::from_bytes::<PendingLogin>(&plain).ok()),
        None => None,
    };
    if let Some(error) = &params.error {
        tracing::info!(error = %error, description = ?params.error_description, "provider returned an error to the callback");
        return Err(LoginError::Failed(format!(
            "the identity provider answered `{}`",
            sanitize(error)
        )));
    }
    let Some(_) = state else {
        return Err(LoginError::BadRequest(
            "The callback is missing its state parameter.".into(),
        ));
    };
    let Some(pending) = pending else {
        return Err(LoginError::Expired);
    };
    let bound = binding.is_some_and(|b| constant_time_eq(&binding_hash(b), &pending.binding_hash));
    if !bound {
        tracing::warn!("callback from a browser that did not start this login (login CSRF?)");
        return Err(LoginError::Expired);
    }
    // RFC 9207: if the provider names itself, it must be ours (mix-up defence).
    if let Some(iss) = &params.iss {
        let d = oidc.provider.discovered().await?;
        if iss != &d.issuer {
            return Err(LoginError::Failed(
                "the callback came from another issuer".into(),
            ));
        }
    }
    let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(LoginError::BadRequest(
            "The callback is missing its code parameter.".into(),
        ));
    };
    let tokens = oidc
        .provider
        .exchange_code(code, &pending.pkce_verifier)
        .await
        .map_err(|e| match e {
            ProviderError::Rejected { error, .. } => LoginError::Failed(format!(
                "the identity provider refused the code (`{}`)",
                sanitize(&error)
            )),
            other => oversized_fails(other),
        })?;
    let Some(id_token) = tokens.id_token.clone() else {
        return Err(LoginError::Failed(
            "the identity provider sent no ID token".into(),
        ));
    };
    let mut claims = validate_id_token(
        &oidc.provider,
        &oidc.keys,
        id_token.expose(),
        &IdTokenExpectations {
            nonce: Some(&pending.nonce),
            subject: None,
            now,
        },
    )
    .await
    .map_err(|e| {
        tracing::warn!(error = %e, "ID token rejected at login");
        LoginError::from(e)
    })?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if sub.is_empty() {
        return Err(LoginError::Failed("the ID token has no subject".into()));
    }
    if oidc.provider.config().userinfo {
        let info = oidc
            .provider
            .userinfo(&tokens.access_token)
            .await
            .map_err(oversized_fails)?;
        if info.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
            return Err(LoginError::Failed(
                "userinfo is about another subject".into(),
            ));
        }
        for (k, v) in info {
            claims.entry(k).or_insert(v);
        }
    }
    let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
    let claims_json = bounded_json(
        &strip_protocol_claims(claims),
        &oidc.provider.config().limits,
    )
    .map_err(|e| {
        tracing::warn!(reason = %e, "claims too large; login refused");
        LoginError::Failed(format!("the identity provider sent too many claims: {e}"))
    })?;
    let return_to = Url::parse(&pending.return_to).map_err(|_| LoginError::Expired)?;
    let access_expires_at = tokens.expires_in.map_or(0, |d: Duration| now + d.as_secs());
    let (store_id, session_cookie) = sessions
        .create(
            NewLogin {
                sub,
                sid,
                access_token: tokens.access_token,
                refresh_token: tokens.refresh_token,
                id_token: Some(id_token),
                access_expires_at,
                claims_json,
            },
            client,
            now,
        )
        .await?;
    tracing::info!(session = ?store_id, "login completed");
    Ok(LoginDone {
        return_to,
        session_cookie,
        store_id,
    })
}

/// An error code from the provider, reduced to what is safe to show.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_error_codes_are_sanitised_before_display() {
        assert_eq!(sanitize("access_denied"), "access_denied");
        assert_eq!(sanitize("<script>alert(1)</script>"), "scriptalert1script");
    }

    #[test]
    fn only_unavailable_keys_make_a_bad_id_token_a_provider_outage() {
        let failures = [
            TokenError::Malformed,
            TokenError::TooLarge,
            TokenError::AlgorithmNotAllowed("HS256".into()),
            TokenError::UnknownKey,
            TokenError::BadSignature,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::WrongAuthorizedParty,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::TooOld,
            TokenError::MissingClaim("iss".into()),
            TokenError::MissingClaim("sub".into()),
            TokenError::MissingClaim("iat".into()),
            TokenError::MissingClaim("exp".into()),
            TokenError::NonceMismatch,
            TokenError::SubjectChanged,
            TokenError::NotALogoutToken("x"),
        ];
        for e in failures {
            let shown = e.to_string();
            match LoginError::from(e) {
                LoginError::Failed(m) => assert!(m.contains(&shown), "{m}"),
                other => panic!("{shown} became {other:?}, not a failed login"),
            }
        }
        let outage = TokenError::KeysUnavailable(ProviderError::Unavailable("down".into()));
        assert!(matches!(
            LoginError::from(outage),
            LoginError::Provider(ProviderError::Unavailable(_))
        ));
    }

    #[test]
    fn oversized_provider_answers_fail_the_login_and_others_stay_outages() {
        assert!(matches!(
            oversized_fails(ProviderError::TooLarge("the ID token".into())),
            LoginError::Failed(m) if m.contains("the ID token")
        ));
        assert!(matches!(
            oversized_fails(ProviderError::Timeout(Duration::from_secs(1))),
            LoginError::Provider(ProviderError::Timeout(_))
        ));
    }

    #[test]
    fn only_issued_binding_values_are_reused() {
        assert!(valid_binding(&random_token()));
        assert!(!valid_binding("short"));
        assert!(!valid_binding(&"é".repeat(43)));
    }
}
