//! The authorization code flow: starting a login and completing it at the
//! callback.
//!
//! A started login (state, nonce, PKCE verifier, return target, expiry, the
//! session it replaces, and what the SPA asked for: `acr_values`,
//! `max_age`, a silent check, the user a step-up is for) is not stored: it travels in a cookie of its own,
//! sealed under the server key, so an anonymous `/auth/login` costs the
//! store nothing. The cookie is named by a short prefix of the state, one
//! per login under way, so several tabs can log in at once; at most
//! [`MAX_PENDING_LOGINS`] are kept (the oldest are dropped). Only the
//! browser that started a login holds its cookie, so a callback replayed in
//! another browser fails (login CSRF); single use across every instance
//! comes from a tiny claim marker written at the callback, which lives
//! until the login would have expired anyway.
//!
//! At the callback, a login is checked against what it asked for (`acr`,
//! `auth_time`) and, as a step-up, for being the same user; a silent
//! check's "the user must log in" answer goes back to the app
//! ([`LoginError::Silent`]) instead of becoming an error page.

use std::time::Duration;

use openidconnect::PkceCodeChallenge;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::Untrusted;
use crate::login_params::LoginQuery;
use crate::oidc::Oidc;
use crate::oidc::claims::{bounded_json, granted_scopes, strip_protocol_claims};
use crate::oidc::dpop::DpopKey;
use crate::oidc::jwt::{IdTokenExpectations, TokenError, validate_id_token};
use crate::oidc::provider::{DPOP_NOT_BOUND, ProviderError};
use crate::secret::constant_time_eq;
use crate::session::cookie::{StoreId, login_slot, random_token};
use crate::session::store::StoreError;
use crate::session::{ClientInfo, NewLogin, Sessions};

/// Why a login did not start or complete.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The request is malformed (a callback parameter missing, a return
    /// target too long).
    #[error("{0}")]
    BadRequest(String),
    /// The provider or the ID token said no: why (a fixed word, for the
    /// audit trail and metrics) and what the user is told.
    #[error("login failed: {1}")]
    Failed(&'static str, String),
    /// The state is unknown, expired, used, or from another browser.
    #[error("login expired or already completed")]
    Expired,
    /// A silent check (`prompt=none`) found no usable login at the
    /// provider: back to the app, at `return_to` with `login_error` set to
    /// the provider's reason. No session was created or ended.
    #[error("silent login not possible: {reason}")]
    Silent {
        return_to: Url,
        reason: &'static str,
    },
    /// A step-up login came back as another user than the session it was
    /// to strengthen: refused, the session stays.
    #[error("the step-up login was for another user")]
    OtherUser,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LoginError {
    /// Why the login failed, as one fixed word (audit trail, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Failed(reason, _) => reason,
            Self::Expired => "state_invalid",
            // The provider's own word: login_required, interaction_required, …
            Self::Silent { reason, .. } => reason,
            Self::OtherUser => "step_up_other_user",
            Self::Provider(_) => "provider_unavailable",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// Only missing keys are an outage (503, try again); any other fault of the
/// token — missing `iss`/`sub`/`iat`/`exp`, bad signature, too large — is a
/// failed login (400 page, reason logged).
impl From<TokenError> for LoginError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::KeysUnavailable(p) => Self::Provider(p),
            other => Self::Failed(
                "id_token_invalid",
                format!("the ID token is invalid: {other}"),
            ),
        }
    }
}

/// A provider answer over the `oidc.max_*` bounds, or with tokens that
/// cannot be used (`ProviderError::Unusable`), fails the login (a 400
/// page naming the bound); anything else keeps its meaning.
fn oversized_fails(e: ProviderError) -> LoginError {
    match e {
        ProviderError::TooLarge(what) => {
            tracing::warn!(reason = %what, "provider answer too large; login refused");
            LoginError::Failed(
                "provider_answer_too_large",
                format!("the identity provider sent too much: {what}"),
            )
        }
        ProviderError::Unusable(what) => {
            tracing::warn!(reason = %what, "provider answer unusable; login refused");
            LoginError::Failed(
                "provider_answer_unusable",
                format!("the identity provider sent tokens that cannot be used: {what}"),
            )
        }
        other => LoginError::Provider(other),
    }
}

/// How many logins one browser may have under way at once (one per tab);
/// starting another drops the oldest.
pub const MAX_PENDING_LOGINS: usize = 5;

/// The longest return target (as resolved, in bytes) a login carries. It
/// keeps one sealed login cookie under 3.8 KB (step-up fields included),
/// below the 4 KB browsers keep per cookie.
pub const MAX_RETURN_TO_BYTES: usize = crate::url_policy::return_to::MAX_LEN;

/// The most pending-login cookie bytes a browser is asked to keep at once
/// (all of them together, so the `Cookie` header stays within what servers
/// and proxies in front of the gateway accept); older logins are dropped
/// first, the new one is always kept.
const MAX_PENDING_COOKIE_BYTES: usize = 8 * 1024;

/// What a login cookie is sealed for (associated data): it opens as
/// nothing else, and nothing else opens as a login.
const SEAL_PURPOSE: &str = "login";

/// A started login, as its cookie carries it.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    state: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    /// Unix seconds after which the callback refuses it.
    expires_at: u64,
    /// The session this browser had at `/auth/login` (a same-site
    /// navigation, which sees even a `SameSite=Strict` cookie): the
    /// callback, a cross-site navigation that may not, ends it.
    previous: Option<String>,
    /// `acr_values` asked for: the ID token's `acr` must be one of them.
    acr_values: Option<String>,
    /// `max_age` asked for: the ID token's `auth_time` must be that recent.
    max_age: Option<u64>,
    /// `prompt=none`: "log in first" answers go back to the app.
    silent: bool,
    /// A step-up of the session of this user (hash of `sub`): another
    /// user's login is refused.
    step_up_of: Option<String>,
}

/// The answers to `prompt=none` that mean "the user must interact" (OIDC
/// Core 3.1.2.6): a silent check returns them to the app.
const SILENT_ERRORS: &[&str] = &[
    "login_required",
    "interaction_required",
    "consent_required",
    "account_selection_required",
];

impl PendingLogin {
    fn open(sessions: &Sessions, value: &str) -> Option<Self> {
        let plain = sessions.open_from_browser(SEAL_PURPOSE, value)?;
        postcard::from_bytes(&plain).ok()
    }
}

/// A pending-login cookie to set: its slot (which names it) and value.
pub struct LoginCookie {
    pub slot: String,
    pub value: String,
}

pub struct LoginStart {
    /// The provider's authorization URL.
    pub redirect: Url,
    /// The sealed pending login, for the browser to keep.
    pub cookie: LoginCookie,
    /// Slots of earlier pending-login cookies to clear: expired, unreadable,
    /// or beyond the limits.
    pub superseded: Vec<String>,
}

/// Starts a login: seals the pending state for the browser and returns
/// where to send it. Writes nothing to the store.
///
/// `previous` is the browser's session now and the hash of its user;
/// `asked` the SPA's login parameters; `under_way` its pending-login
/// cookies as `(slot, value)`. A login that asks for `acr_values` or
/// `max_age` from a browser with a session is a step-up of that session:
/// it must come back as the same user.
pub async fn begin(
    oidc: &Oidc,
    sessions: &Sessions,
    return_to: &Url,
    asked: &LoginQuery,
    previous: Option<(&StoreId, &str)>,
    under_way: &[(&str, &str)],
    now: u64,
) -> Result<LoginStart, LoginError> {
    if return_to.as_str().len() > MAX_RETURN_TO_BYTES {
        return Err(return_to_too_long());
    }
    let state = random_token();
    let nonce = random_token();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let login_timeout = oidc.provider.config().login_timeout;
    let pending = PendingLogin {
        state: state.clone(),
        nonce: nonce.clone(),
        pkce_verifier: verifier.secret().clone(),
        return_to: return_to.to_string(),
        expires_at: now.saturating_add(login_timeout.as_secs()),
        previous: previous.map(|(id, _)| id.as_str().to_owned()),
        acr_values: asked.acr_values.clone(),
        max_age: asked.max_age,
        silent: asked.silent,
        step_up_of: previous
            .filter(|_| asked.acr_values.is_some() || asked.max_age.is_some())
            .map(|(_, user)| user.to_owned()),
    };
    let plain = zeroize::Zeroizing::new(postcard::to_stdvec(&pending).unwrap_or_default());
    let value = sessions.seal_for_browser(SEAL_PURPOSE, &plain);
    let slot = login_slot(&state).unwrap_or_default().to_owned();
    let redirect = oidc
        .provider
        .authorization_url(&state, &nonce, challenge, &asked.params)
        .await?;
    let superseded = superseded(sessions, under_way, &slot, value.len(), now);
    Ok(LoginStart {
        redirect,
        cookie: LoginCookie { slot, value },
        superseded,
    })
}

/// The error for a return target that would not fit a login cookie.
pub fn return_to_too_long() -> LoginError {
    LoginError::BadRequest(format!(
        "The return_to parameter is longer than {MAX_RETURN_TO_BYTES} bytes."
    ))
}

/// Which of the browser's pending-login cookies to clear when a new one of
/// `new_len` bytes is set in slot `new_slot`: the unreadable and expired
/// ones, then the oldest beyond [`MAX_PENDING_LOGINS`] or
/// [`MAX_PENDING_COOKIE_BYTES`].
fn superseded(
    sessions: &Sessions,
    under_way: &[(&str, &str)],
    new_slot: &str,
    new_len: usize,
    now: u64,
) -> Vec<String> {
    let mut drop = Vec::new();
    let mut live = Vec::new();
    for &(slot, value) in under_way {
        if slot == new_slot {
            continue;
        }
        match PendingLogin::open(sessions, value)
            .filter(|p| p.expires_at > now && login_slot(&p.state) == Some(slot))
        {
            Some(p) => live.push((p.expires_at, slot, value.len())),
            None => drop.push(slot.to_owned()),
        }
    }
    live.sort_by_key(|l| std::cmp::Reverse(l.0));
    let (mut kept, mut bytes) = (1, new_len);
    for (_, slot, len) in live {
        if kept < MAX_PENDING_LOGINS && bytes + len <= MAX_PENDING_COOKIE_BYTES {
            kept += 1;
            bytes += len;
        } else {
            drop.push(slot.to_owned());
        }
    }
    drop
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
    pub store_id: StoreId,
    /// The session this browser had when the login started, to be ended.
    pub previous: Option<StoreId>,
    /// The user (`sub`), for the audit trail.
    pub sub: String,
    /// Sessions of the user ended by `session.max_per_user` to make room.
    pub evicted: Vec<StoreId>,
}

/// Completes a login at the callback: exactly one session is created, or
/// none and an error says why. `login_cookie` is the value of the
/// pending-login cookie named by the callback's state, if the browser sent
/// one.
pub async fn complete(
    oidc: &Oidc,
    sessions: &Sessions,
    params: &CallbackParams,
    login_cookie: Option<&str>,
    client: &ClientInfo,
    now: u64,
) -> Result<LoginDone, LoginError> {
    let state = params
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512);
    let pending = match (state, login_cookie) {
        (Some(s), Some(cookie)) => PendingLogin::open(sessions, cookie)
            .filter(|p| constant_time_eq(p.state.as_bytes(), s.as_bytes()))
            .filter(|p| p.expires_at > now),
        _ => None,
    };
    // Spend the state first, whatever happens next: a state is good once,
    // on every instance, for as long as its login could live.
    let pending = match pending {
        Some(p) => {
            let left = Duration::from_secs(p.expires_at.saturating_sub(now).saturating_add(1));
            sessions
                .claim_once(SEAL_PURPOSE, &p.state, left)
                .await?
                .then_some(p)
        }
        None => None,
    };
    if let (Some(error), Some(p)) = (&params.error, &pending)
        && p.silent
        && let Some(reason) = SILENT_ERRORS.iter().find(|e| **e == error.as_str())
    {
        tracing::info!(reason, "silent login check: the user must log in");
        let mut return_to = Url::parse(&p.return_to).map_err(|_| LoginError::Expired)?;
        return_to
            .query_pairs_mut()
            .append_pair("login_error", reason);
        return Err(LoginError::Silent { return_to, reason });
    }
    if let Some(error) = &params.error {
        tracing::info!(
            error = %Untrusted(error),
            description = %Untrusted(params.error_description.as_deref().unwrap_or_default()),
            "provider returned an error to the callback"
        );
        return Err(LoginError::Failed(
            "provider_error",
            format!("the identity provider answered `{}`", sanitize(error)),
        ));
    }
    let Some(_) = state else {
        return Err(LoginError::BadRequest(
            "The callback is missing its state parameter.".into(),
        ));
    };
    let Some(pending) = pending else {
        tracing::warn!(
            with_cookie = login_cookie.is_some(),
            "callback for no live login of this browser (expired, used, tampered or another browser's: login CSRF?)"
        );
        return Err(LoginError::Expired);
    };
    // RFC 9207 (mix-up defence): if the provider names itself, it must be
    // ours; and a provider that says it always names itself (§2.4) must
    // have, or the answer is not its own (an attacker's provider, or a
    // stripped parameter).
    let d = oidc.provider.discovered().await?;
    match &params.iss {
        Some(iss) if iss != &d.issuer => {
            return Err(LoginError::Failed(
                "issuer_mismatch",
                "the callback came from another issuer".into(),
            ));
        }
        None if d.iss_in_authorization_response => {
            return Err(LoginError::Failed(
                "issuer_missing",
                "the callback does not name its issuer, which this provider always does".into(),
            ));
        }
        _ => {}
    }
    let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(LoginError::BadRequest(
            "The callback is missing its code parameter.".into(),
        ));
    };
    // DPoP (`oidc.dpop`): the session's own key, made here so the code
    // exchange binds the tokens to it; it is sealed with them below.
    let dpop_key = match oidc.provider.config().dpop {
        true => Some(
            DpopKey::generate()
                .map_err(|e| LoginError::Provider(ProviderError::Misconfigured(e.to_string())))?,
        ),
        false => None,
    };
    let dpop = dpop_key
        .as_deref()
        .map(|k| DpopKey::from_pkcs8(k))
        .transpose()
        .map_err(|e| LoginError::Provider(ProviderError::Misconfigured(e.to_string())))?;
    let tokens = oidc
        .provider
        .exchange_code(code, &pending.pkce_verifier, dpop.as_ref())
        .await
        .map_err(|e| match e {
            ProviderError::Rejected { error, .. } if error == DPOP_NOT_BOUND => LoginError::Failed(
                "dpop_not_bound",
                "the identity provider issued tokens that are not bound to this session's DPoP key, which this gateway requires (oidc.dpop)".into(),
            ),
            ProviderError::Rejected { error, .. } => LoginError::Failed(
                "code_rejected",
                format!(
                    "the identity provider refused the code (`{}`)",
                    sanitize(&error)
                ),
            ),
            other => oversized_fails(other),
        })?;
    let Some(id_token) = tokens.id_token.clone() else {
        return Err(LoginError::Failed(
            "id_token_missing",
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
            access_token: Some(tokens.access_token.expose()),
            now,
        },
    )
    .await
    .map_err(|e| {
        tracing::warn!(error = %Untrusted(&e), "ID token rejected at login");
        LoginError::from(e)
    })?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if sub.is_empty() {
        return Err(LoginError::Failed(
            "id_token_invalid",
            "the ID token has no subject".into(),
        ));
    }
    check_asked(&pending, &claims, oidc.provider.config().clock_skew, now)?;
    if pending.step_up_of.as_deref().is_some_and(|u| {
        !constant_time_eq(u.as_bytes(), crate::session::user_hash(&sub).as_bytes())
    }) {
        tracing::warn!("step-up login came back as another user; refused, the session stays");
        return Err(LoginError::OtherUser);
    }
    if oidc.provider.config().userinfo {
        let info = oidc
            .provider
            .userinfo(&tokens.access_token, dpop.as_ref())
            .await
            .map_err(oversized_fails)?;
        if info.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
            return Err(LoginError::Failed(
                "userinfo_mismatch",
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
        LoginError::Failed(
            "provider_answer_too_large",
            format!("the identity provider sent too many claims: {e}"),
        )
    })?;
    let return_to = Url::parse(&pending.return_to).map_err(|_| LoginError::Expired)?;
    let access_expires_at = tokens.expires_in.map_or(0, |d: Duration| now + d.as_secs());
    let requested = oidc.provider.config().scopes.join(" ");
    let scopes = granted_scopes(
        tokens.scope.as_deref(),
        tokens.access_token.expose(),
        &requested,
    );
    let (store_id, session_cookie, evicted) = sessions
        .create_evicting(
            NewLogin {
                sub: sub.clone(),
                sid,
                access_token: tokens.access_token,
                refresh_token: tokens.refresh_token,
                id_token: Some(id_token),
                access_expires_at,
                claims_json,
                scopes: Some(scopes),
                dpop_key,
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
        previous: pending.previous.as_deref().and_then(StoreId::parse),
        sub,
        evicted,
    })
}

/// OIDC Core 3.1.2.1 / 3.1.3.7: when `acr_values` were asked, the ID
/// token's `acr` is one of them; when `max_age` was, its `auth_time` is
/// no older (give or take the clock skew). Otherwise the login fails: the
/// provider did not do what the route needs.
fn check_asked(
    pending: &PendingLogin,
    claims: &serde_json::Map<String, Value>,
    skew: Duration,
    now: u64,
) -> Result<(), LoginError> {
    if let Some(asked) = &pending.acr_values {
        let acr = claims.get("acr").and_then(Value::as_str);
        if !acr.is_some_and(|a| asked.split(' ').any(|w| w == a)) {
            tracing::warn!("ID token's acr is not one that was asked for; login refused");
            return Err(LoginError::Failed(
                "acr_not_satisfied",
                "the identity provider did not sign you in at the level this application asked for"
                    .into(),
            ));
        }
    }
    if let Some(max_age) = pending.max_age {
        let fresh = claims
            .get("auth_time")
            .and_then(Value::as_u64)
            .is_some_and(|t| t.saturating_add(max_age).saturating_add(skew.as_secs()) >= now);
        if !fresh {
            tracing::warn!("ID token's auth_time is missing or older than max_age; login refused");
            return Err(LoginError::Failed(
                "auth_time_too_old",
                "the identity provider did not sign you in again recently enough".into(),
            ));
        }
    }
    Ok(())
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
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::config::{ServerKeyConfig, SessionConfig};
    use crate::secret::SecretKey;
    use crate::session::store::Store;
    use crate::session::store::memory::MemoryStore;

    /// Sessions whose key ring holds `keys` (id, byte), the first sealing.
    fn sessions(keys: &[(&str, u8)]) -> Sessions {
        let keys = keys
            .iter()
            .map(|(id, b)| ServerKeyConfig {
                id: (*id).into(),
                key: SecretKey::from_bytes([*b; 32]),
            })
            .collect();
        Sessions::new(
            &SessionConfig::with_keys(keys),
            Arc::new(Store::Memory(MemoryStore::new())),
        )
    }

    fn pending(return_to: &str, expires_at: u64) -> PendingLogin {
        PendingLogin {
            state: random_token(),
            nonce: random_token(),
            pkce_verifier: random_token(),
            return_to: return_to.into(),
            expires_at,
            previous: Some("ab".repeat(32)),
            acr_values: None,
            max_age: None,
            silent: false,
            step_up_of: None,
        }
    }

    fn sealed(sessions: &Sessions, p: &PendingLogin) -> String {
        let plain = postcard::to_stdvec(p).expect("encodes");
        sessions.seal_for_browser(SEAL_PURPOSE, &plain)
    }

    #[test]
    fn a_pending_login_opens_under_any_configured_key_after_a_rotation() {
        let before = sessions(&[("k1", 1)]);
        let p = pending("https://app.example/x", 100);
        let value = sealed(&before, &p);
        let rotated = sessions(&[("k2", 2), ("k1", 1)]);
        let opened = PendingLogin::open(&rotated, &value).expect("opens under the old key");
        assert_eq!(opened.state, p.state);
        assert_eq!(opened.previous, p.previous);
        assert!(PendingLogin::open(&sessions(&[("k2", 2)]), &value).is_none());
        assert!(PendingLogin::open(&sessions(&[("k1", 9)]), &value).is_none());
    }

    #[test]
    fn a_value_sealed_for_another_purpose_does_not_open_as_a_login() {
        let s = sessions(&[("k1", 1)]);
        let plain = postcard::to_stdvec(&pending("/", 100)).expect("encodes");
        let other = s.seal_for_browser("logout", &plain);
        assert!(PendingLogin::open(&s, &other).is_none());
    }

    #[test]
    fn the_largest_login_cookie_stays_well_under_the_browser_limit() {
        let long_id = "k".repeat(32);
        let s = sessions(&[(long_id.as_str(), 1)]);
        let return_to = format!(
            "https://app.example/{}",
            "a".repeat(MAX_RETURN_TO_BYTES - 20)
        );
        assert_eq!(return_to.len(), MAX_RETURN_TO_BYTES);
        let mut largest = pending(&return_to, u64::MAX);
        largest.acr_values = Some("a".repeat(crate::login_params::MAX_VALUE_BYTES));
        largest.max_age = Some(u64::MAX);
        largest.step_up_of = Some("f".repeat(64));
        let value = sealed(&s, &largest);
        let header =
            s.cookies()
                .login_cookie("abcdefgh", &value, Duration::from_secs(u64::from(u32::MAX)));
        // With every step-up field at its largest: still well under 4 KB.
        assert!(header.len() < 3800, "{} bytes", header.len());
        assert!(
            value.len() * 2 <= MAX_PENDING_COOKIE_BYTES,
            "two always fit"
        );
    }

    #[test]
    fn expired_unreadable_and_the_oldest_beyond_the_limit_are_superseded() {
        let s = sessions(&[("k1", 1)]);
        let now = 1_000;
        let mut cookies: Vec<(String, String)> = (0..MAX_PENDING_LOGINS as u64 + 2)
            .map(|i| {
                let p = pending("/", now + 10 + i);
                (
                    login_slot(&p.state).expect("slot").to_owned(),
                    sealed(&s, &p),
                )
            })
            .collect();
        let expired = pending("/", now);
        cookies.push((
            login_slot(&expired.state).expect("slot").into(),
            sealed(&s, &expired),
        ));
        cookies.push(("garbage1".into(), "not-sealed".into()));
        // A value moved to another slot is not that slot's login.
        cookies.push(("moved123".into(), cookies[0].1.clone()));
        let under_way: Vec<(&str, &str)> = cookies
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mut dropped = superseded(&s, &under_way, "newslot1", 300, now);
        dropped.sort();
        let mut expected = vec![
            // The three oldest live ones: the new login plus the four newest stay.
            cookies[0].0.clone(),
            cookies[1].0.clone(),
            cookies[2].0.clone(),
            cookies[MAX_PENDING_LOGINS + 2].0.clone(),
            "garbage1".into(),
            "moved123".into(),
        ];
        expected.sort();
        assert_eq!(dropped, expected);
    }

    #[test]
    fn pending_logins_beyond_the_byte_budget_are_superseded_oldest_first() {
        let s = sessions(&[("k1", 1)]);
        let long = format!("https://app.example/{}", "a".repeat(1900));
        let cookies: Vec<(String, String)> = (0..4)
            .map(|i| {
                let p = pending(&long, 2_000 + i);
                (
                    login_slot(&p.state).expect("slot").to_owned(),
                    sealed(&s, &p),
                )
            })
            .collect();
        let under_way: Vec<(&str, &str)> = cookies
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let new_len = cookies[0].1.len();
        let dropped = superseded(&s, &under_way, "newslot1", new_len, 1_000);
        let kept = 4 - dropped.len();
        assert!(
            (kept + 1) * new_len <= MAX_PENDING_COOKIE_BYTES,
            "{dropped:?}"
        );
        assert!(kept >= 1, "{dropped:?}");
        let mut oldest: Vec<String> = cookies[..dropped.len()]
            .iter()
            .map(|c| c.0.clone())
            .collect();
        let mut dropped = dropped;
        oldest.sort();
        dropped.sort();
        assert_eq!(dropped, oldest, "the oldest go first");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_login_cookie_values_never_open(value in ".{0,600}") {
            let s = sessions(&[("k1", 1)]);
            prop_assert!(PendingLogin::open(&s, &value).is_none());
        }

        #[test]
        fn arbitrary_bytes_in_a_login_cookie_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            use base64::Engine as _;
            let s = sessions(&[("k1", 1)]);
            let mut tagged = vec![2u8, b'k', b'1'];
            tagged.extend_from_slice(&bytes);
            for candidate in [bytes.clone(), tagged] {
                let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&candidate);
                prop_assert!(PendingLogin::open(&s, &value).is_none());
            }
        }

        #[test]
        fn a_tampered_login_cookie_never_opens(at in any::<prop::sample::Index>(), bit in 0u8..8) {
            use base64::Engine as _;
            let s = sessions(&[("k1", 1)]);
            let value = sealed(&s, &pending("/", 100));
            let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut raw = engine.decode(&value).expect("base64url");
            let i = at.index(raw.len());
            raw[i] ^= 1 << bit;
            prop_assert!(PendingLogin::open(&s, &engine.encode(&raw)).is_none());
        }
    }

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
            TokenError::Encrypted,
            TokenError::CriticalHeader,
            TokenError::AlgorithmNotAllowed("HS256".into()),
            TokenError::UnknownKey,
            TokenError::BadSignature,
            TokenError::WrongIssuer,
            TokenError::TenantNotAllowed,
            TokenError::WrongAudience,
            TokenError::WrongAuthorizedParty,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::TooOld,
            TokenError::AuthTimeInFuture,
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
                LoginError::Failed(_, m) => assert!(m.contains(&shown), "{m}"),
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
            LoginError::Failed(_, m) if m.contains("the ID token")
        ));
        assert!(matches!(
            oversized_fails(ProviderError::Timeout(Duration::from_secs(1))),
            LoginError::Provider(ProviderError::Timeout(_))
        ));
    }
}
