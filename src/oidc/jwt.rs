//! Validation of the provider's signed tokens — ID tokens at login and
//! refresh, logout tokens on the back channel — against its JWKS.
//!
//! The JWKS is cached (once per process, shared by its workers); a token
//! signed with an unknown `kid` causes one re-fetch (key rotation at the
//! provider). Tokens anyone can send (logout tokens, bearer tokens) are
//! rate-limited in that, so a flood of forged tokens with random `kid`s
//! cannot turn into a flood of requests to the provider; ID tokens, which
//! only the token endpoint hands the gateway, are not held back by what
//! forged `kid`s did ([`TokenSource`]). Only that re-fetch is limited: the
//! start-up and periodic fetches do not delay a rotation. Fetches run one
//! at a time, and a token whose key is cached never waits for one.
//! Only the configured asymmetric algorithms that the provider also
//! advertises are accepted: the header's `alg` is checked against that list
//! before anything else, so `none` and HMAC-with-the-public-key tricks never
//! reach verification. A token longer than `oidc.max_token_bytes` is
//! refused before it is parsed.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::provider::{Provider, ProviderError};
use crate::secret::constant_time_eq;

pub type Claims = Map<String, Value>;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token is larger than oidc.max_token_bytes")]
    TooLarge,
    /// Five segments or an `enc` header: a JWE. Only signed (JWS) tokens
    /// are accepted; decrypting nested tokens is not supported.
    #[error("token is encrypted (JWE); only signed tokens are accepted")]
    Encrypted,
    /// RFC 7515 §4.1.11: a `crit` header names extensions the recipient
    /// must understand; the gateway understands none, so it must refuse.
    #[error("token header has a crit parameter naming extensions not understood")]
    CriticalHeader,
    #[error("signing algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// No key fits the header, or more than one does (ambiguity).
    #[error("no provider key matches the token's key ID")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("issuer does not match")]
    WrongIssuer,
    /// `oidc.issuer_template`: no `tid`, or one not in `oidc.allowed_tenants`.
    #[error("tenant (tid) missing or not in oidc.allowed_tenants")]
    TenantNotAllowed,
    #[error("audience does not include this client")]
    WrongAudience,
    #[error("authorized party (azp) is not this client")]
    WrongAuthorizedParty,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet or was issued in the future")]
    NotYetValid,
    #[error("token was issued too long ago")]
    TooOld,
    /// `auth_time` after the token's own check time: it would make a
    /// step-up's `max_age` hold for as long as the session lives.
    #[error("auth_time is in the future")]
    AuthTimeInFuture,
    #[error("required claim `{0}` is missing")]
    MissingClaim(String),
    #[error("nonce does not match the login")]
    NonceMismatch,
    #[error("subject (sub) differs from the session's")]
    SubjectChanged,
    #[error("at_hash does not match the access token")]
    AccessTokenHashMismatch,
    #[error("not a JWT access token (typ must be at+jwt)")]
    NotAnAccessToken,
    #[error("not a logout token: {0}")]
    NotALogoutToken(&'static str),
    #[error("provider keys unavailable: {0}")]
    KeysUnavailable(#[from] ProviderError),
}

/// The provider's signing keys, cached once per process.
///
/// A token whose `kid` is cached is verified without waiting for anything:
/// a fetch in flight (a re-fetch for an unknown `kid`, which may take up to
/// `oidc.http_timeout`) holds up only the requests that need its answer.
/// Fetches run one at a time (`flight`); a request that missed
/// while one was running takes that fetch's keys instead of starting its
/// own, so a storm of concurrent unknown `kid`s costs one fetch.
pub struct KeyCache {
    keys: RwLock<Arc<Vec<Jwk>>>,
    /// Bookkeeping only: never held across an `await`.
    fetches: Mutex<Fetches>,
    /// Held for the whole of a fetch: the single flight.
    flight: tokio::sync::Mutex<()>,
    min_refetch_interval: Duration,
    max_age: Duration,
}

/// Where a token came from: what an unknown `kid` in it may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// The provider's token endpoint gave it to the gateway, answering the
    /// gateway's own authenticated request (ID tokens at login and
    /// refresh): nobody else chose its `kid`, so an unknown one means the
    /// provider rotated its key. Re-fetched at once, whatever forged `kid`s
    /// did to the rate limit: at most one fetch per such login or refresh
    /// (which costs the provider more than the fetch), and concurrent ones
    /// share one.
    TokenEndpoint,
    /// Anyone can send it (back-channel logout tokens, bearer access
    /// tokens): an unknown `kid` re-fetches at most once per
    /// `oidc.jwks_min_refresh_interval`.
    Presented,
}

/// When the keys were last fetched, for any reason and for an unknown `kid`.
#[derive(Default)]
struct Fetches {
    /// Any successful fetch: the keys are this old.
    any: Option<Instant>,
    /// Fetches begun so far: a request that missed knows whether a fetch
    /// begun after its miss has already answered it.
    started: u64,
    /// The last re-fetch caused by an unknown `kid` in a presented token:
    /// what `oidc.jwks_min_refresh_interval` counts.
    unknown_kid: Option<Instant>,
    /// The last failed refresh: the next is not tried before
    /// [`RETRY_AFTER_FAILURE`], so a slow or failing provider does not
    /// hold every request for its timeout.
    failed: Option<Instant>,
}

impl Fetches {
    /// Whether a token from `source` whose `kid` is still unknown may cause
    /// a fetch now; `seen` is [`Fetches::started`] when it missed. A fetch
    /// begun after the miss already read the provider's current keys
    /// without finding it: no second one.
    fn may_refetch(
        &self,
        source: TokenSource,
        seen: u64,
        now: Instant,
        min_interval: Duration,
    ) -> bool {
        if self.started > seen {
            return false;
        }
        match source {
            TokenSource::TokenEndpoint => true,
            TokenSource::Presented => self
                .unknown_kid
                .is_none_or(|t| now.saturating_duration_since(t) >= min_interval),
        }
    }
}

/// How long after a failed refresh the next one is tried.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Whether keys last fetched `age` ago stay in use when a refresh fails:
/// while younger than twice the refresh interval `max_age`. A provider
/// down for an hour does not end every login; keys it has since revoked
/// are not trusted for ever either.
fn keeps_cached_keys(have_keys: bool, age: Option<Duration>, max_age: Duration) -> bool {
    have_keys && age.is_some_and(|a| a < max_age.saturating_mul(2))
}

impl KeyCache {
    pub fn new(min_refetch_interval: Duration, max_age: Duration) -> Self {
        super::rsa_ring::install();
        Self {
            keys: RwLock::new(Arc::new(Vec::new())),
            fetches: Mutex::new(Fetches::default()),
            flight: tokio::sync::Mutex::new(()),
            min_refetch_interval,
            max_age,
        }
    }

    fn snapshot(&self) -> Arc<Vec<Jwk>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn fetches(&self) -> std::sync::MutexGuard<'_, Fetches> {
        self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the keys were fetched within the refresh interval.
    fn fresh(&self) -> bool {
        self.fetches()
            .any
            .is_some_and(|t| t.elapsed() < self.max_age)
    }

    /// One fetch; the caller holds [`KeyCache::flight`] and has counted it
    /// in [`Fetches::started`]. Success or failure is recorded.
    async fn fetch(&self, provider: &Provider) -> Result<(), ProviderError> {
        let result = self.fetch_keys(provider).await;
        let mut fetches = self.fetches();
        match &result {
            Ok(()) => {
                fetches.any = Some(Instant::now());
                fetches.failed = None;
            }
            Err(_) => fetches.failed = Some(Instant::now()),
        }
        result
    }

    async fn fetch_keys(&self, provider: &Provider) -> Result<(), ProviderError> {
        let d = provider.discovered().await?;
        let body = provider.get_json(d.jwks_uri.as_str(), "JWKS").await?;
        // A document that is not a key set is an error, not an empty set:
        // the keys already cached stay in use.
        let keys = parse_jwks(&body).map_err(ProviderError::InvalidResponse)?;
        tracing::debug!(keys = keys.len(), "provider JWKS loaded");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// Loads the keys if never loaded or older than the refresh interval.
    /// A failed refresh keeps the cached keys in use while they are younger
    /// than twice the refresh interval ([`keeps_cached_keys`]), and is not
    /// retried by every request: at most once per [`RETRY_AFTER_FAILURE`].
    /// Past that (or with no keys at all) the failure is the answer: a 503.
    /// Fresh keys are answered without waiting for a fetch in flight.
    pub async fn ensure_loaded(&self, provider: &Provider) -> Result<(), ProviderError> {
        self.ensure_loaded_retrying(provider, false).await
    }

    /// [`KeyCache::ensure_loaded`] for the upkeep task, which retries on its
    /// own back-off: with no keys at all, a recent failure does not stop it
    /// from trying again (requests, which could come by the thousand, are
    /// stopped).
    pub async fn reloaded(&self, provider: &Provider) -> Result<(), ProviderError> {
        self.ensure_loaded_retrying(provider, true).await
    }

    async fn ensure_loaded_retrying(
        &self,
        provider: &Provider,
        retry_now: bool,
    ) -> Result<(), ProviderError> {
        if self.fresh() {
            return Ok(());
        }
        let (seen, usable) = {
            let fetches = self.fetches();
            let age = fetches.any.map(|t| t.elapsed());
            (
                fetches.started,
                keeps_cached_keys(self.is_loaded(), age, self.max_age),
            )
        };
        // Stale but usable keys serve while a fetch is in flight (it may be
        // a forged kid's, taking up to `oidc.http_timeout`): only a request
        // with nothing usable waits for one.
        let _flight = if usable {
            match self.flight.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(()),
            }
        } else {
            self.flight.lock().await
        };
        let usable = {
            let mut fetches = self.fetches();
            let age = fetches.any.map(|t| t.elapsed());
            if age.is_some_and(|a| a < self.max_age) {
                return Ok(());
            }
            let usable = keeps_cached_keys(self.is_loaded(), age, self.max_age);
            let just_failed = fetches
                .failed
                .is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE);
            if usable && just_failed {
                return Ok(());
            }
            // A fetch begun while this request waited has failed, or (for
            // a request) one failed moments ago: its answer is this one's
            // too (many requests, one fetch).
            if just_failed && (fetches.started > seen || !retry_now) {
                return Err(ProviderError::NotReady(
                    "the provider's keys could not be fetched".into(),
                ));
            }
            fetches.started += 1;
            usable
        };
        match self.fetch(provider).await {
            Ok(()) => Ok(()),
            Err(e) if usable => {
                tracing::warn!(error = %e, "provider JWKS refresh failed; keeping the cached keys");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub fn is_loaded(&self) -> bool {
        !self.snapshot().is_empty()
    }

    async fn key_for(
        &self,
        provider: &Provider,
        header: &Header,
        source: TokenSource,
    ) -> Result<DecodingKey, TokenError> {
        self.ensure_loaded(provider).await?;
        if let Some(k) = select(&self.snapshot(), header) {
            return DecodingKey::from_jwk(&k).map_err(|_| TokenError::UnknownKey);
        }
        // Unknown kid: the provider may have rotated. Wait for a fetch in
        // flight (it may bring the key), else fetch once if the source's
        // rate limit allows.
        let seen = self.fetches().started;
        let _flight = self.flight.lock().await;
        if let Some(k) = select(&self.snapshot(), header) {
            return DecodingKey::from_jwk(&k).map_err(|_| TokenError::UnknownKey);
        }
        {
            let mut fetches = self.fetches();
            let now = Instant::now();
            if !fetches.may_refetch(source, seen, now, self.min_refetch_interval) {
                return Err(TokenError::UnknownKey);
            }
            // Counted even if the fetch fails: a provider that is down is
            // not asked again for every forged kid either.
            if source == TokenSource::Presented {
                fetches.unknown_kid = Some(now);
            }
            fetches.started += 1;
        }
        self.fetch(provider).await?;
        let k = select(&self.snapshot(), header).ok_or(TokenError::UnknownKey)?;
        DecodingKey::from_jwk(&k).map_err(|_| TokenError::UnknownKey)
    }
}

/// At most this many keys in a JWKS: a provider publishes a handful (the
/// current and next keys per algorithm); thousands would make every
/// selection a long scan.
const MAX_JWKS_KEYS: usize = 100;

/// RFC 7518 §3.3: RSA keys of 2048 bits or more.
const MIN_RSA_BITS: usize = 2048;

/// Members only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2,
/// §6.4.1). Published, they mean the provider leaked its signing key:
/// anyone can forge its tokens, so the key is refused.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The provider's JWKS document: an object whose `keys` is an array of at
/// most [`MAX_JWKS_KEYS`]. Keys that cannot verify signatures safely are
/// left out (logged); the document's shape being wrong, or no key being
/// left, is an error.
fn parse_jwks(body: &[u8]) -> Result<Vec<Jwk>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS: {e}"))?;
    let keys = doc
        .as_object()
        .ok_or("JWKS: not a JSON object")?
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS: `keys` is not an array")?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(format!(
            "JWKS: {} keys, more than the {MAX_JWKS_KEYS} accepted",
            keys.len()
        ));
    }
    let usable: Vec<Jwk> = keys
        .iter()
        .filter_map(|raw| match verification_key(raw) {
            Ok(k) => Some(k),
            Err(why) => {
                let kid = raw.get("kid").and_then(Value::as_str).unwrap_or("");
                if why == LEAKED_PRIVATE_KEY {
                    tracing::error!(kid, "provider JWKS key refused: {why}");
                } else {
                    tracing::warn!(kid, "provider JWKS key ignored: {why}");
                }
                None
            }
        })
        .collect();
    // A provider signs with at least one key: a set with none it could
    // sign with is a broken answer (an emptied file, a CDN error page in
    // JSON), and taking it would drop the cached keys and every login.
    if usable.is_empty() {
        return Err("JWKS: no usable signing key".into());
    }
    Ok(usable)
}

const LEAKED_PRIVATE_KEY: &str =
    "it carries private key members (d, p, q, k, ...): the provider published its private key";

/// One JWKS entry, if it is a public key meant for verifying signatures and
/// strong enough to trust.
fn verification_key(raw: &Value) -> Result<Jwk, &'static str> {
    let obj = raw.as_object().ok_or("not a JSON object")?;
    if PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
        return Err(LEAKED_PRIVATE_KEY);
    }
    let key: Jwk = serde_json::from_value(raw.clone())
        .map_err(|_| "not a usable public key (an x5c-only or unknown kty key?)")?;
    if key
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("use is not sig");
    }
    if let Some(ops) = &key.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key_ops lacks verify");
    }
    match &key.algorithm {
        AlgorithmParameters::RSA(rsa) => check_rsa(&rsa.n, &rsa.e)?,
        AlgorithmParameters::EllipticCurve(_) | AlgorithmParameters::OctetKeyPair(_) => {}
        _ => return Err("not an RSA, EC or OKP public key"),
    }
    Ok(key)
}

/// A modulus of at least [`MIN_RSA_BITS`] and an odd exponent above 1
/// (exponent 1 makes the signature the message; an even one is not RSA).
fn check_rsa(n: &str, e: &str) -> Result<(), &'static str> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let strip = |v: Vec<u8>| -> Vec<u8> { v.into_iter().skip_while(|b| *b == 0).collect() };
    let n = strip(b64.decode(n).map_err(|_| "RSA n is not base64url")?);
    let e = strip(b64.decode(e).map_err(|_| "RSA e is not base64url")?);
    let bits = n.first().map_or(0, |top| {
        (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if bits < MIN_RSA_BITS {
        return Err("RSA modulus shorter than 2048 bits");
    }
    if e.is_empty() || e == [1] || e.last().is_some_and(|b| b % 2 == 0) {
        return Err("RSA exponent is 1, even or zero");
    }
    Ok(())
}

/// The key a header points at: by `kid`, or the only key when it has none.
/// A candidate's `alg` (when set), key type and curve must fit the header's
/// `alg`. Two candidates with different key material are ambiguous and
/// select nothing: which key the JWKS lists first must not decide which
/// one verifies.
fn select(keys: &[Jwk], header: &Header) -> Option<Jwk> {
    let alg_ok = |k: &Jwk| {
        k.common
            .key_algorithm
            .is_none_or(|ka| format!("{ka:?}") == format!("{:?}", header.alg))
    };
    let mut candidates = keys.iter().filter(|k| {
        // A header `kid` matches only that `kid`; without one, every key
        // is a candidate (a provider with one key may omit it).
        header
            .kid
            .as_deref()
            .is_none_or(|kid| k.common.key_id.as_deref() == Some(kid))
            && alg_ok(k)
            && family_matches(k, header.alg)
    });
    let first = candidates.next()?;
    // The same key listed twice (with and without `x5c`, say) is one key.
    candidates
        .all(|k| k.algorithm == first.algorithm)
        .then(|| first.clone())
}

fn family_matches(k: &Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::EllipticCurve as C;
    match (&k.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => ec.curve == C::P256,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => ec.curve == C::P384,
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => okp.curve == C::Ed25519,
        _ => false,
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => TokenError::BadSignature,
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        K::InvalidIssuer => TokenError::WrongIssuer,
        K::InvalidAudience => TokenError::WrongAudience,
        K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        K::InvalidAlgorithm => TokenError::AlgorithmNotAllowed("(mismatch)".into()),
        _ => TokenError::Malformed,
    }
}

/// Verifies signature, issuer, audience and (if `require_exp`) expiry; returns
/// the claims. Callers check the claims specific to their token type.
async fn verify(
    provider: &Provider,
    keys: &KeyCache,
    source: TokenSource,
    token: &str,
    required: &[&str],
    require_exp: bool,
    tenant_issuer: bool,
) -> Result<Claims, TokenError> {
    let cfg = provider.config();
    let header = parse_header(token, cfg.limits.token_bytes)?;
    let d = provider.discovered().await?;
    if !d.id_token_algorithms.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
    }
    let key = keys.key_for(provider, &header, source).await?;
    let template = cfg.issuer_template.as_ref().filter(|_| tenant_issuer);
    let expect = Expected {
        // With a template the issuer depends on the token's tenant: checked
        // below, after the signature.
        issuer: template.is_none().then_some(d.issuer.as_str()),
        audience: &cfg.client_id,
        leeway: cfg.clock_skew.as_secs(),
        require_exp,
        required,
    };
    let claims = check_signed(token, &header, &key, &expect)?;
    if let Some(template) = template {
        check_tenant_issuer(&claims, template)?;
    }
    Ok(claims)
}

/// `oidc.issuer_template`: `tid` is an allowed tenant and `iss` is that
/// tenant's issuer, exactly.
fn check_tenant_issuer(
    claims: &Claims,
    template: &crate::config::IssuerTemplate,
) -> Result<(), TokenError> {
    let expected = claims
        .get("tid")
        .and_then(Value::as_str)
        .and_then(|tid| template.issuer_for(tid))
        .ok_or(TokenError::TenantNotAllowed)?;
    if claims.get("iss").and_then(Value::as_str) != Some(expected.as_str()) {
        return Err(TokenError::WrongIssuer);
    }
    Ok(())
}

/// Validates a JWT access token a bearer client sent (RFC 9068): `typ`
/// `at+jwt` (so an ID token is never taken for one), an allowed asymmetric
/// algorithm, the provider's key, issuer, `audience`, `exp` and `sub`.
pub async fn validate_access_token(
    provider: &Provider,
    keys: &KeyCache,
    token: &str,
    audience: &str,
) -> Result<Claims, TokenError> {
    let cfg = provider.config();
    let header = parse_header(token, cfg.limits.token_bytes)?;
    let typ = header.typ.as_deref().map(str::to_ascii_lowercase);
    if !matches!(typ.as_deref(), Some("at+jwt" | "application/at+jwt")) {
        return Err(TokenError::NotAnAccessToken);
    }
    let d = provider.discovered().await?;
    if !d.id_token_algorithms.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
    }
    let key = keys
        .key_for(provider, &header, TokenSource::Presented)
        .await?;
    let expect = Expected {
        issuer: Some(&d.issuer),
        audience,
        leeway: cfg.clock_skew.as_secs(),
        require_exp: true,
        required: &["exp", "iss", "aud", "sub"],
    };
    check_signed(token, &header, &key, &expect)
}

/// What a signed token is checked against, besides its key.
struct Expected<'a> {
    /// `None`: checked by the caller (`oidc.issuer_template`).
    issuer: Option<&'a str>,
    audience: &'a str,
    leeway: u64,
    require_exp: bool,
    required: &'a [&'a str],
}

/// Signature (with the algorithm the header names, already allowlisted),
/// issuer, audience, `exp`/`nbf` and required claims.
fn check_signed(
    token: &str,
    header: &Header,
    key: &DecodingKey,
    expect: &Expected<'_>,
) -> Result<Claims, TokenError> {
    let mut v = Validation::new(header.alg);
    if let Some(issuer) = expect.issuer {
        v.set_issuer(&[issuer]);
    }
    v.set_audience(&[expect.audience]);
    v.leeway = expect.leeway;
    v.validate_exp = expect.require_exp;
    v.validate_nbf = true;
    v.set_required_spec_claims(expect.required);
    let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(map_jwt_error)?;
    Ok(data.claims)
}

/// The header of a compact JWS of at most `max_len` bytes.
fn parse_header(token: &str, max_len: usize) -> Result<Header, TokenError> {
    if token.len() > max_len {
        return Err(TokenError::TooLarge);
    }
    match token.split('.').count() {
        3 => {}
        5 => return Err(TokenError::Encrypted),
        _ => return Err(TokenError::Malformed),
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
            TokenError::AlgorithmNotAllowed("unsupported".into())
        }
        _ => TokenError::Malformed,
    })?;
    if header.enc.is_some() {
        return Err(TokenError::Encrypted);
    }
    // Any `crit`, even an empty list (which RFC 7515 forbids): no
    // extension is understood here. `jku`, `x5u`, `jwk` and `x5c` are
    // never read: keys come only from the provider's JWKS.
    if header.crit.is_some() {
        return Err(TokenError::CriticalHeader);
    }
    Ok(header)
}

fn num(claims: &Claims, name: &str) -> Option<u64> {
    claims.get(name).and_then(Value::as_u64)
}

fn check_iat(claims: &Claims, now: u64, skew: u64, max_age: u64) -> Result<(), TokenError> {
    let iat = num(claims, "iat").ok_or_else(|| TokenError::MissingClaim("iat".into()))?;
    if iat > now + skew {
        return Err(TokenError::NotYetValid);
    }
    if iat + max_age + skew < now {
        return Err(TokenError::TooOld);
    }
    Ok(())
}

/// `auth_time`, when present as a number, is not after `now` (plus the
/// clock skew): the user cannot have signed in later than the token says
/// it is now. A step-up rule reads it as how long ago that was.
fn check_auth_time(claims: &Claims, now: u64, skew: u64) -> Result<(), TokenError> {
    match claims.get("auth_time").and_then(Value::as_f64) {
        Some(t) if t > now.saturating_add(skew) as f64 => Err(TokenError::AuthTimeInFuture),
        _ => Ok(()),
    }
}

/// `azp`, when present, must be this client; with several audiences it must
/// be present (OpenID Connect Core §3.1.3.7, steps 4–5).
fn check_azp(claims: &Claims, client_id: &str) -> Result<(), TokenError> {
    let multi_aud = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != client_id => Err(TokenError::WrongAuthorizedParty),
        None if multi_aud => Err(TokenError::WrongAuthorizedParty),
        _ => Ok(()),
    }
}

/// What an ID token must satisfy besides signature, `iss`, `aud` and `exp`.
pub struct IdTokenExpectations<'a> {
    /// The login's nonce; `None` for ID tokens from a refresh.
    pub nonce: Option<&'a str>,
    /// The subject the session already has (refresh): must not change.
    pub subject: Option<&'a str>,
    /// The access token of the same answer: when the ID token carries
    /// `at_hash`, it must be this token's (OpenID Connect Core §3.1.3.8).
    pub access_token: Option<&'a str>,
    pub now: u64,
}

/// Fully validates an ID token and returns its claims. Only for ID tokens
/// the token endpoint answered (login, refresh): an unknown `kid` in one
/// re-fetches the keys at once ([`TokenSource::TokenEndpoint`]).
pub async fn validate_id_token(
    provider: &Provider,
    keys: &KeyCache,
    token: &str,
    expect: &IdTokenExpectations<'_>,
) -> Result<Claims, TokenError> {
    let claims = verify(
        provider,
        keys,
        TokenSource::TokenEndpoint,
        token,
        &["exp", "iss", "aud", "sub"],
        true,
        true,
    )
    .await?;
    let cfg = provider.config();
    let skew = cfg.clock_skew.as_secs();
    // An ID token is minted for this login; an old one is a replay.
    check_iat(
        &claims,
        expect.now,
        skew,
        cfg.login_timeout.as_secs().max(600),
    )?;
    check_auth_time(&claims, expect.now, skew)?;
    check_azp(&claims, &cfg.client_id)?;
    if let Some(expected) = expect.nonce {
        let got = claims
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or(TokenError::NonceMismatch)?;
        if !constant_time_eq(got.as_bytes(), expected.as_bytes()) {
            return Err(TokenError::NonceMismatch);
        }
    }
    if let Some(sub) = expect.subject
        && claims.get("sub").and_then(Value::as_str) != Some(sub)
    {
        return Err(TokenError::SubjectChanged);
    }
    if let (Some(access_token), Some(at_hash)) = (expect.access_token, claims.get("at_hash")) {
        // The header was checked by `verify`: its algorithm is allowed.
        let alg = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Malformed)?
            .alg;
        let matches = at_hash.as_str().is_some_and(|h| {
            constant_time_eq(h.as_bytes(), token_hash(alg, access_token).as_bytes())
        });
        if !matches {
            return Err(TokenError::AccessTokenHashMismatch);
        }
    }
    Ok(claims)
}

/// `at_hash` of `token` for an ID token signed with `alg` (OpenID Connect
/// Core §3.1.3.6): the left half of the token's hash under the hash of
/// `alg` (SHA-512 for EdDSA, as for Ed25519), base64url without padding.
fn token_hash(alg: jsonwebtoken::Algorithm, token: &str) -> String {
    use base64::Engine as _;
    use jsonwebtoken::Algorithm::*;
    use sha2::Digest as _;
    let digest: Vec<u8> = match alg {
        HS384 | RS384 | PS384 | ES384 => sha2::Sha384::digest(token).to_vec(),
        HS512 | RS512 | PS512 | EdDSA => sha2::Sha512::digest(token).to_vec(),
        _ => sha2::Sha256::digest(token).to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// The claims of a valid back-channel logout token.
#[derive(Debug, Clone)]
pub struct LogoutClaims {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    pub exp: Option<u64>,
    pub iat: u64,
}

/// A logout token's `sub` or `sid`: absent, or a non-empty string.
fn subject_claim(claims: &Claims, name: &'static str) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::NotALogoutToken(if name == "sid" {
            "sid is not a non-empty string"
        } else {
            "sub is not a non-empty string"
        })),
    }
}

const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old (by `iat`, plus the clock skew) a logout token may be: past
/// this it is refused whatever its `exp`, so its `jti` need not be
/// remembered longer.
pub const LOGOUT_TOKEN_MAX_AGE_SECS: u64 = 600;

/// A logout token's header `typ` (Back-Channel Logout 1.0 §2.4): absent,
/// `logout+jwt` or its full media type `application/logout+jwt` (RFC 7515
/// §4.1.9 lets the `application/` prefix be written or not), or plain
/// `JWT`, which providers that do not type their logout tokens send
/// (Keycloak); such a token still needs the logout event and no nonce, so
/// an ID token is never taken for one. Any other type (`at+jwt`, ...) is
/// another kind of token.
fn logout_typ_ok(typ: Option<&str>) -> bool {
    typ.is_none_or(|t| {
        let t = t.to_ascii_lowercase();
        let t = t.strip_prefix("application/").unwrap_or(&t);
        t == "logout+jwt" || t == "jwt"
    })
}

/// Validates a logout token (OpenID Connect Back-Channel Logout 1.0 §2.6).
pub async fn validate_logout_token(
    provider: &Provider,
    keys: &KeyCache,
    token: &str,
    now: u64,
) -> Result<LogoutClaims, TokenError> {
    let header = parse_header(token, provider.config().limits.token_bytes)?;
    if !logout_typ_ok(header.typ.as_deref()) {
        return Err(TokenError::NotALogoutToken("typ is not logout+jwt"));
    }
    let claims = verify(
        provider,
        keys,
        TokenSource::Presented,
        token,
        &["iss", "aud"],
        false,
        false,
    )
    .await?;
    let cfg = provider.config();
    let skew = cfg.clock_skew.as_secs();
    check_iat(&claims, now, skew, LOGOUT_TOKEN_MAX_AGE_SECS)?;
    let exp = num(&claims, "exp");
    if exp.is_some_and(|exp| exp.saturating_add(skew) <= now) {
        return Err(TokenError::Expired);
    }
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|e| e.get(BACKCHANNEL_EVENT).is_some_and(Value::is_object));
    if !has_event {
        return Err(TokenError::NotALogoutToken(
            "events lacks the back-channel logout event",
        ));
    }
    if claims.contains_key("nonce") {
        return Err(TokenError::NotALogoutToken("it carries a nonce"));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
        .ok_or_else(|| TokenError::MissingClaim("jti".into()))?
        .to_owned();
    // Present means usable: a `sid` that is empty or not a string is not
    // ignored (which would widen a one-session logout to all of `sub`'s),
    // and a token naming nobody is not valid.
    let sub = subject_claim(&claims, "sub")?;
    let sid = subject_claim(&claims, "sid")?;
    if sub.is_none() && sid.is_none() {
        return Err(TokenError::NotALogoutToken("it has neither sub nor sid"));
    }
    Ok(LogoutClaims {
        sub,
        sid,
        jti,
        exp,
        iat: num(&claims, "iat").unwrap_or(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn auth_time_must_not_be_in_the_future() {
        for fine in [
            json!({}),
            json!({"auth_time": 1000}),
            json!({"auth_time": 1060}),
            json!({"auth_time": 1}),
        ] {
            assert!(
                check_auth_time(&claims(fine.clone()), 1000, 60).is_ok(),
                "{fine}"
            );
        }
        for bad in [
            json!({"auth_time": 1061}),
            json!({"auth_time": 1061.5}),
            json!({"auth_time": u64::MAX}),
        ] {
            assert!(
                matches!(
                    check_auth_time(&claims(bad.clone()), 1000, 60),
                    Err(TokenError::AuthTimeInFuture)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn iat_must_be_recent_and_not_in_the_future() {
        let c = claims(json!({"iat": 1000}));
        assert!(check_iat(&c, 1000, 60, 600).is_ok());
        assert!(matches!(
            check_iat(&c, 900, 60, 600),
            Err(TokenError::NotYetValid)
        ));
        assert!(matches!(
            check_iat(&c, 1000 + 661, 60, 600),
            Err(TokenError::TooOld)
        ));
        assert!(matches!(
            check_iat(&claims(json!({})), 1000, 60, 600),
            Err(TokenError::MissingClaim(_))
        ));
    }

    #[test]
    fn azp_must_name_this_client_and_is_required_with_several_audiences() {
        assert!(check_azp(&claims(json!({"aud": "bff"})), "bff").is_ok());
        assert!(check_azp(&claims(json!({"aud": "bff", "azp": "bff"})), "bff").is_ok());
        assert!(check_azp(&claims(json!({"aud": "bff", "azp": "other"})), "bff").is_err());
        assert!(check_azp(&claims(json!({"aud": ["bff", "api"]})), "bff").is_err());
        assert!(check_azp(&claims(json!({"aud": ["bff", "api"], "azp": "bff"})), "bff").is_ok());
    }

    /// Values computed apart (Python's hashlib: the left half of the
    /// digest, base64url without padding), and the other hash lengths.
    #[test]
    fn at_hash_is_the_left_half_of_the_algorithms_hash() {
        use jsonwebtoken::Algorithm::*;
        assert_eq!(
            token_hash(RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNjdpv2Wf"),
            "gHKi_8i-dEBxsK9vKenNBw"
        );
        assert_eq!(token_hash(PS384, "tok"), "terFIXHUoaiBqS55rQyfHK2SD736K5bY");
        assert_eq!(token_hash(ES384, "a").len(), 32);
        assert_eq!(token_hash(EdDSA, "a").len(), 43);
        assert_ne!(token_hash(RS256, "a"), token_hash(RS256, "b"));
    }

    fn test_keys() -> Vec<Jwk> {
        ["k1", "k2"]
            .iter()
            .map(|kid| {
                serde_json::from_value(json!({"kty": "RSA", "kid": kid, "use": "sig", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"}))
                .expect("jwk")
            })
            .collect()
    }

    /// The offline part of `verify`: header, allowlist, key choice,
    /// signature and claims. `true` only for a token that passes them all.
    fn accepted(token: &str, keys: &[Jwk]) -> bool {
        let allowed = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];
        let Ok(header) = parse_header(token, 16 * 1024) else {
            return false;
        };
        if !allowed.contains(&header.alg) {
            return false;
        }
        let Some(key) = select(keys, &header).and_then(|k| DecodingKey::from_jwk(&k).ok()) else {
            return false;
        };
        let expect = Expected {
            issuer: Some("https://id.example"),
            audience: "bff",
            leeway: 60,
            require_exp: true,
            required: &["exp", "iss", "aud", "sub"],
        };
        check_signed(token, &header, &key, &expect).is_ok()
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 1000, ..Default::default() })]

        /// Arbitrary text as a token: parsed without panicking, never accepted.
        #[test]
        fn arbitrary_strings_are_never_accepted(token in "\\PC{0,300}") {
            proptest::prop_assert!(!accepted(&token, &test_keys()));
        }

        /// Three dot-separated segments of arbitrary bytes: never accepted.
        #[test]
        fn arbitrary_segments_are_never_accepted(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            c in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let token = format!("{}.{}.{}", b64(&a), b64(&b), b64(&c));
            proptest::prop_assert!(!accepted(&token, &test_keys()));
        }

        /// A well-formed header of any algorithm and `kid` (known or not)
        /// over valid claims, with a signature that is random bytes:
        /// never accepted.
        #[test]
        fn valid_headers_and_claims_without_a_real_signature_are_never_accepted(
            alg in proptest::sample::select(vec!["RS256", "RS384", "PS256", "ES256", "EdDSA", "HS256", "none", "NONE", "xx"]),
            kid in proptest::option::of(proptest::sample::select(vec!["k1".to_owned(), "k2".to_owned(), "zz".to_owned(), String::new()])),
            sig in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        ) {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(k) = kid {
                header["kid"] = json!(k);
            }
            let claims = json!({
                "iss": "https://id.example", "aud": "bff", "sub": "alice",
                "exp": 4_000_000_000u64, "iat": 1_700_000_000u64,
            });
            let token = format!(
                "{}.{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes()),
                b64(&sig),
            );
            proptest::prop_assert!(!accepted(&token, &test_keys()));
        }
    }

    #[test]
    fn tokens_over_the_size_limit_are_refused_before_parsing() {
        let long = format!("{}.e30.", "e".repeat(20_000));
        assert!(matches!(
            parse_header(&long, 16 * 1024),
            Err(TokenError::TooLarge)
        ));
    }

    const N2048: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    fn jwks(keys: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).expect("json")
    }

    #[test]
    fn jwks_keys_that_cannot_safely_verify_signatures_are_left_out() {
        let good = json!({"kty": "RSA", "kid": "k", "use": "sig", "n": N2048, "e": "AQAB"});
        assert_eq!(
            parse_jwks(&jwks(vec![good.clone()])).expect("jwks").len(),
            1
        );
        let with = |k: &str, v: Value| {
            let mut key = good.clone();
            key[k] = v;
            key
        };
        let hostile = [
            ("encryption key", with("use", json!("enc"))),
            ("key_ops without verify", with("key_ops", json!(["sign"]))),
            ("1024-bit modulus", with("n", json!(&N2048[..171]))),
            ("exponent 1", with("e", json!("AQ"))),
            ("even exponent", with("e", json!("AAI"))),
            ("leaked private exponent", with("d", json!("AQAB"))),
            ("leaked prime", with("p", json!("AQAB"))),
            (
                "symmetric secret",
                json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0"}),
            ),
            (
                "x5c only",
                json!({"kty": "RSA", "kid": "k", "x5c": ["MIIB"]}),
            ),
            ("not an object", json!("key")),
        ];
        for (what, key) in hostile {
            let keys = parse_jwks(&jwks(vec![key, good.clone()]))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(keys.len(), 1, "{what} was kept");
        }
        let ops_ok = with("key_ops", json!(["verify"]));
        assert_eq!(parse_jwks(&jwks(vec![ops_ok])).expect("jwks").len(), 1);
    }

    #[test]
    fn a_document_that_is_not_a_bounded_key_set_with_a_usable_key_is_an_error_not_an_empty_set() {
        let key = json!({"kty": "RSA", "kid": "k", "use": "sig", "n": N2048, "e": "AQAB"});
        for body in [
            b"[]".to_vec(),
            b"{}".to_vec(),
            br#"{"keys": {}}"#.to_vec(),
            br#""keys""#.to_vec(),
            b"<html>".to_vec(),
            jwks(vec![key.clone(); MAX_JWKS_KEYS + 1]),
            jwks(vec![]),
            jwks(vec![
                json!({"kty": "RSA", "kid": "k", "use": "enc", "n": N2048, "e": "AQAB"}),
            ]),
        ] {
            assert!(
                parse_jwks(&body).is_err(),
                "{}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
    }

    #[test]
    fn forged_kids_use_up_the_presented_rate_limit_but_not_the_token_endpoint_s() {
        use TokenSource::{Presented, TokenEndpoint};
        let t0 = Instant::now();
        let interval = Duration::from_secs(30);
        let secs = |s: u64| t0 + Duration::from_secs(s);
        let never = Fetches::default();
        assert!(never.may_refetch(Presented, 0, t0, interval));
        assert!(never.may_refetch(TokenEndpoint, 0, t0, interval));
        // A forged kid re-fetched at t0 (the fetch counted as started).
        let forged = Fetches {
            unknown_kid: Some(t0),
            started: 1,
            ..Fetches::default()
        };
        assert!(!forged.may_refetch(Presented, 1, secs(29), interval));
        assert!(forged.may_refetch(Presented, 1, secs(30), interval));
        assert!(
            forged.may_refetch(TokenEndpoint, 1, secs(1), interval),
            "a rotated key in an ID token is not locked out by forged kids"
        );
        assert!(forged.may_refetch(TokenEndpoint, 1, t0, interval));
        // A fetch begun after the miss already looked: no second one.
        assert!(!forged.may_refetch(TokenEndpoint, 0, secs(1), interval));
        assert!(!forged.may_refetch(Presented, 0, secs(60), interval));
    }

    #[test]
    fn cached_keys_outlive_a_failed_refresh_for_one_more_interval_only() {
        let hour = Duration::from_secs(3600);
        let mins = |m: u64| Some(Duration::from_secs(m * 60));
        assert!(keeps_cached_keys(true, mins(61), hour));
        assert!(keeps_cached_keys(true, mins(119), hour));
        assert!(!keeps_cached_keys(true, mins(120), hour), "bounded");
        assert!(!keeps_cached_keys(false, mins(61), hour), "no keys");
        assert!(!keeps_cached_keys(true, None, hour), "never fetched");
    }

    #[test]
    fn logout_tokens_are_typed_logout_jwt_in_either_spelling_or_untyped() {
        for ok in [
            None,
            Some("logout+jwt"),
            Some("application/logout+jwt"),
            Some("Logout+JWT"),
            Some("JWT"),
        ] {
            assert!(logout_typ_ok(ok), "{ok:?}");
        }
        for bad in [
            "at+jwt",
            "application/at+jwt",
            "secevent+jwt",
            "",
            "logout",
            "application/",
        ] {
            assert!(!logout_typ_ok(Some(bad)), "{bad}");
        }
    }

    #[test]
    fn key_selection_refuses_ambiguity_and_keys_of_another_family_or_curve() {
        let rsa = |kid: &str, n: &str| -> Jwk {
            serde_json::from_value(json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB"}))
                .expect("jwk")
        };
        let ec = |kid: &str, crv: &str| -> Jwk {
            serde_json::from_value(
                json!({"kty": "EC", "kid": kid, "crv": crv, "x": "AA", "y": "AA"}),
            )
            .expect("jwk")
        };
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("dup".into());
        let twins = [rsa("dup", N2048), rsa("dup", &N2048[1..])];
        assert!(select(&twins, &h).is_none(), "duplicate kid: ambiguous");
        let same = [rsa("dup", N2048), rsa("dup", N2048)];
        assert!(
            select(&same, &h).is_some(),
            "one key listed twice is one key"
        );
        let mut es = Header::new(Algorithm::ES256);
        es.kid = Some("r".into());
        assert!(
            select(&[rsa("r", N2048)], &es).is_none(),
            "RSA key for ES256"
        );
        es.kid = Some("e".into());
        assert!(
            select(&[ec("e", "P-384")], &es).is_none(),
            "P-384 key for ES256"
        );
        assert!(select(&[ec("e", "P-256")], &es).is_some());
        // A duplicate kid of another family is no ambiguity: only one fits.
        assert!(select(&[ec("e", "P-256"), rsa("e", N2048)], &es).is_some());
    }

    #[test]
    fn headers_with_crit_or_encryption_are_refused_with_their_reason() {
        use base64::Engine as _;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = |h: Value| format!("{}.{}.sig", b64(h), b64(json!({"sub": "x"})));
        let ok = token(json!({"alg": "RS256", "kid": "k"}));
        assert!(parse_header(&ok, 10_000).is_ok());
        let crit = token(json!({"alg": "RS256", "kid": "k", "crit": ["b64"], "b64": "x"}));
        assert!(matches!(
            parse_header(&crit, 10_000),
            Err(TokenError::CriticalHeader)
        ));
        let enc = token(json!({"alg": "RS256", "enc": "A256GCM"}));
        assert!(matches!(
            parse_header(&enc, 10_000),
            Err(TokenError::Encrypted)
        ));
        let jwe = format!(
            "{}.key.iv.ct.tag",
            b64(json!({"alg": "RS256", "enc": "A256GCM"}))
        );
        assert!(matches!(
            parse_header(&jwe, 10_000),
            Err(TokenError::Encrypted)
        ));
    }

    #[test]
    fn key_selection_uses_kid_or_the_single_candidate() {
        let rsa = |kid: &str| -> Jwk {
            serde_json::from_value(json!({"kty": "RSA", "kid": kid, "use": "sig", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"})).expect("jwk")
        };
        let keys = vec![rsa("a"), rsa("b")];
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("b".into());
        assert_eq!(
            select(&keys, &h).and_then(|k| k.common.key_id),
            Some("b".into())
        );
        h.kid = Some("zzz".into());
        assert!(select(&keys, &h).is_none());
        h.kid = None;
        // `a` and `b` are one key under two IDs: not ambiguous.
        assert!(select(&keys, &h).is_some(), "one key material");
        let other: Jwk = serde_json::from_value(
            json!({"kty": "RSA", "kid": "c", "n": &N2048[1..], "e": "AQAB"}),
        )
        .expect("jwk");
        let two = vec![rsa("a"), other];
        assert!(
            select(&two, &h).is_none(),
            "two different candidates: ambiguous"
        );
        assert!(select(&keys[..1], &h).is_some());
        let es = Header::new(Algorithm::ES256);
        assert!(
            select(&keys[..1], &es).is_none(),
            "RSA key never verifies ES256"
        );
    }
}
