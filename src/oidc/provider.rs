//! The OpenID provider as the gateway sees it: discovered metadata (cached,
//! re-read periodically and retried while the provider is down), and the
//! client calls made to it — authorization URL, code exchange, refresh,
//! revocation, userinfo, end-session URL.
//!
//! Every call is bounded by `oidc.http_timeout` and never follows redirects
//! (a provider that redirects its token endpoint is misconfigured, and
//! following would be an SSRF vector). Every body is read with a byte limit
//! (`oidc.max_response_bytes`) and every token with another
//! (`oidc.max_token_bytes`): a validly signed answer is still hostile input.
//! Errors are [`ProviderError`]s that say whether the provider refused
//! (`invalid_grant`: the session is over), is unreachable (try again later),
//! sent too much, or cannot be used with this configuration.
//!
//! Discovered metadata lives in a [`MetadataCache`] shared by every worker
//! of the process; the HTTP client is each worker's own (its connections
//! are driven by that worker's runtime).

use std::borrow::Cow;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreIdToken, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, ClientId, ClientSecret, CsrfToken, EndSessionUrl,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, LogoutProviderMetadata, LogoutRequest, Nonce,
    PkceCodeChallenge, PostLogoutRedirectUrl, ProviderMetadata, RedirectUrl, Scope,
};
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::client_auth::AssertionSigner;
use super::dpop::DpopKey;
use crate::config::{AuthMethod, OidcConfig};
use crate::secret::SecretString;

mod client_credentials;
mod credentials;
mod derived;
mod dpop;
mod par;

pub use derived::TOKEN_EXCHANGE_GRANT;
pub use dpop::NOT_BOUND as DPOP_NOT_BOUND;

/// Discovery fields beyond what `openidconnect` models.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    pub revocation_endpoint: Option<Url>,
    pub backchannel_logout_supported: Option<bool>,
    /// RFC 9126 §5.
    pub pushed_authorization_request_endpoint: Option<Url>,
    pub require_pushed_authorization_requests: Option<bool>,
    /// RFC 9449 §5.1: the provider accepts DPoP proofs signed with these.
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// RFC 9207 §3: the provider names itself (`iss`) in every
    /// authorization response.
    pub authorization_response_iss_parameter_supported: Option<bool>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    LogoutProviderMetadata<ExtraMetadata>,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Metadata has not been loaded (yet); the provider was unreachable.
    #[error("provider metadata not loaded: {0}")]
    NotReady(String),
    #[error("provider unreachable: {0}")]
    Unavailable(String),
    #[error("provider did not answer within {0:?}")]
    Timeout(Duration),
    /// The provider answered with an OAuth error (`invalid_grant`, ...).
    #[error("provider refused: {error}")]
    Rejected {
        error: String,
        description: Option<String>,
    },
    /// The provider's answer does not make sense.
    #[error("invalid provider response: {0}")]
    InvalidResponse(String),
    /// The provider sent more than `oidc.max_*` allows; nothing of it is
    /// used.
    #[error("provider response too large: {0}")]
    TooLarge(String),
    /// The provider answered with tokens the gateway cannot use as they
    /// are (an access token a header cannot carry, a token type other
    /// than the one asked for): refused where they arrive, so nothing
    /// unusable is stored and found out only when a request is forwarded.
    #[error("provider answer unusable: {0}")]
    Unusable(String),
    /// The provider's metadata cannot be used with this configuration
    /// (e.g. no common signing algorithm): not ready until fixed.
    #[error("provider cannot be used with this configuration: {0}")]
    Misconfigured(String),
}

impl ProviderError {
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::Rejected { error, .. } if error == "invalid_grant")
    }
}

/// Tokens from the token endpoint.
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    pub expires_in: Option<Duration>,
    /// The granted scopes (`scope`, space-separated), when the provider
    /// says; RFC 6749 §5.1 lets it leave them out when they are the ones
    /// requested.
    pub scope: Option<String>,
    /// `token_type`: `Bearer`, or `DPoP` for tokens bound to a DPoP key.
    pub token_type: String,
}

/// The discovery fields the gateway sends requests to (or the browser to).
const CALLED_ENDPOINTS: [&str; 7] = [
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "end_session_endpoint",
    "revocation_endpoint",
    "pushed_authorization_request_endpoint",
];

/// With an https issuer, every endpoint the provider's document names must
/// be https too: a plain-http `jwks_uri` would let anyone on the path swap
/// the keys (and forge ID tokens), a plain-http `token_endpoint` would
/// expose the client secret and the tokens. The loosening is the issuer
/// itself (http on loopback or with `oidc.allow_insecure_issuer`), or an
/// `[oidc.endpoints]` override, which config validation already held to
/// that rule. Endpoints on other hosts are accepted (providers put the
/// JWKS or the token endpoint on a CDN or an API host); the document came
/// from the issuer over the issuer's transport.
fn check_endpoint_schemes(
    body: &[u8],
    issuer: &Url,
    overrides: &crate::config::EndpointOverrides,
) -> Result<(), ProviderError> {
    if issuer.scheme() != "https" {
        return Ok(());
    }
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ProviderError::InvalidResponse(format!("discovery document: {e}")))?;
    for field in CALLED_ENDPOINTS {
        if overrides.0.iter().any(|(f, _)| *f == field) {
            continue;
        }
        let Some(value) = doc.get(field).and_then(serde_json::Value::as_str) else {
            continue;
        };
        let https = Url::parse(value).is_ok_and(|u| u.scheme() == "https");
        if !https {
            return Err(ProviderError::InvalidResponse(format!(
                "discovery document: {field} is not an https URL while oidc.issuer is https; fix the provider, or set it under [oidc.endpoints]"
            )));
        }
    }
    Ok(())
}

/// What was learnt from discovery.
pub struct Discovered {
    pub issuer: String,
    client: Client,
    token_endpoint: Url,
    /// `oidc.id_token_algorithms` that the provider also advertises: the
    /// only ones accepted for ID and logout tokens. Never empty.
    pub id_token_algorithms: Vec<Algorithm>,
    pub jwks_uri: Url,
    pub end_session_endpoint: Option<EndSessionUrl>,
    pub revocation_endpoint: Option<Url>,
    pub userinfo_endpoint: Option<Url>,
    pub backchannel_logout_supported: bool,
    /// The provider sends `iss` with every authorization response (RFC
    /// 9207): a callback without it did not come from this provider.
    pub iss_in_authorization_response: bool,
    /// Where authorization requests are pushed (RFC 9126), when
    /// `oidc.pushed_authorization` says they are.
    pub par_endpoint: Option<Url>,
    loaded_at: Instant,
}

/// Discovered metadata, cached once per process and shared by its workers.
#[derive(Default)]
pub struct MetadataCache {
    current: RwLock<Option<Arc<Discovered>>>,
    last_error: RwLock<Option<String>>,
    /// Serialises discovery across every worker.
    refresh_lock: tokio::sync::Mutex<()>,
    /// What became of the discovery attempts (never held across an
    /// `await`): a request that waited for one which failed takes that
    /// answer instead of trying again.
    attempts: std::sync::Mutex<Attempts>,
    /// The provider's latest DPoP nonces (RFC 9449 §8), per process.
    dpop_nonces: super::dpop::Nonces,
}

/// Discovery attempts: how many were begun, when the last one failed and
/// whether that was the configuration's fault.
#[derive(Default)]
struct Attempts {
    started: u64,
    failed: Option<Instant>,
    misconfigured: bool,
}

/// How long after a failed discovery stale metadata is used without trying
/// again: a provider that is down or answers one byte a second costs each
/// request nothing, instead of `oidc.http_timeout` each, one after another.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

pub struct Provider {
    config: OidcConfig,
    redirect_uri: RedirectUrl,
    http: reqwest::Client,
    cache: Arc<MetadataCache>,
    /// Signs `private_key_jwt` client assertions (that method only).
    assertions: Option<AssertionSigner>,
    /// The first `routes[i].token_exchange` key that is on: discovery then
    /// requires the provider to offer token exchange.
    token_exchange_key: Option<String>,
    /// Call latency by endpoint (`oidc_bff_provider_request_duration_seconds`),
    /// when a registry was given.
    timers: Option<Arc<EndpointTimers>>,
}

/// The provider's endpoints, one latency histogram each (a fixed list, so
/// the label stays bounded).
pub struct EndpointTimers {
    discovery: Histogram,
    jwks: Histogram,
    token: Histogram,
    revocation: Histogram,
    userinfo: Histogram,
    par: Histogram,
}

impl EndpointTimers {
    pub fn new(metrics: &crate::metrics::Metrics) -> Self {
        Self {
            discovery: metrics.provider_endpoint("discovery"),
            jwks: metrics.provider_endpoint("jwks"),
            token: metrics.provider_endpoint("token"),
            revocation: metrics.provider_endpoint("revocation"),
            userinfo: metrics.provider_endpoint("userinfo"),
            par: metrics.provider_endpoint("par"),
        }
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Discovery,
    Jwks,
    Token,
    Revocation,
    Userinfo,
    Par,
}

impl Provider {
    pub fn new(
        config: &OidcConfig,
        redirect_uri: &str,
        cache: Arc<MetadataCache>,
    ) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            .user_agent(concat!("oidc-bff/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.tls_ca_pem {
            // A private CA: trust exactly it (`oidc.tls_ca_file`).
            http = http.tls_built_in_root_certs(false);
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| anyhow::anyhow!("oidc.tls_ca_file: {e}"))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        if let Some(client) = &config.tls_client {
            // Mutual TLS with the provider (`oidc.tls_cert_file`).
            // The key passes through this buffer: wiped when dropped.
            let mut pem = zeroize::Zeroizing::new(client.cert_pem.clone());
            pem.push(b'\n');
            pem.extend_from_slice(client.key_pem.expose().as_bytes());
            http = http.identity(
                reqwest::Identity::from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("oidc.tls_cert_file: {e}"))?,
            );
        }
        let http = http.build()?;
        let assertions = match (config.auth_method, &config.client_key) {
            (AuthMethod::PrivateKeyJwt, Some(key)) => Some(AssertionSigner::new(key)?),
            (AuthMethod::PrivateKeyJwt, None) => {
                anyhow::bail!("oidc.client_key_file: private_key_jwt needs a key")
            }
            _ => None,
        };
        Ok(Self {
            config: config.clone(),
            redirect_uri: RedirectUrl::new(redirect_uri.to_owned())?,
            http,
            cache,
            assertions,
            timers: None,
            token_exchange_key: None,
        })
    }

    /// Discovery will require the token-exchange grant, naming `key`
    /// (`routes[i].token_exchange`) when the provider lacks it.
    pub fn requiring_token_exchange(mut self, key: Option<String>) -> Self {
        self.token_exchange_key = key;
        self
    }

    /// Times every call into the gateway's registry.
    pub fn with_timers(mut self, timers: Arc<EndpointTimers>) -> Self {
        self.timers = Some(timers);
        self
    }

    /// Sends one request to `endpoint`, timing it to the response head.
    async fn send(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProviderError> {
        let started = std::time::Instant::now();
        let result = req.send().await;
        if let Some(t) = &self.timers {
            let h = match endpoint {
                Endpoint::Discovery => &t.discovery,
                Endpoint::Jwks => &t.jwks,
                Endpoint::Token => &t.token,
                Endpoint::Revocation => &t.revocation,
                Endpoint::Userinfo => &t.userinfo,
                Endpoint::Par => &t.par,
            };
            h.observe(started.elapsed().as_secs_f64());
        }
        result.map_err(|e| self.map_reqwest(e))
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Loaded metadata, if any (for readiness).
    pub fn loaded(&self) -> Option<Arc<Discovered>> {
        self.cache
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, Attempts> {
        self.cache
            .attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Metadata, loading it now if it was never loaded or is stale. Loads are
    /// serialised so a burst of logins while the provider is down does not
    /// become a burst of discovery requests: stale metadata serves while an
    /// attempt is in flight, the requests that waited for a failed attempt
    /// take its answer, and stale metadata is used without a new attempt
    /// for [`RETRY_AFTER_FAILURE`] after one failed.
    pub async fn discovered(&self) -> Result<Arc<Discovered>, ProviderError> {
        self.discovered_retrying(false).await
    }

    /// [`Provider::discovered`] for the upkeep task, which retries on its
    /// own back-off: a recent failure does not stop it from trying again
    /// (requests, which could come by the thousand, are stopped).
    pub async fn rediscovered(&self) -> Result<Arc<Discovered>, ProviderError> {
        self.discovered_retrying(true).await
    }

    async fn discovered_retrying(&self, retry_now: bool) -> Result<Arc<Discovered>, ProviderError> {
        if let Some(d) = self.loaded()
            && d.loaded_at.elapsed() < self.config.metadata_refresh_interval
        {
            return Ok(d);
        }
        let seen = self.attempts().started;
        // Stale metadata serves while an attempt is in flight (a slow
        // provider holds it for up to `oidc.http_timeout`): only a request
        // with nothing loaded waits for it.
        let _guard = match self.loaded() {
            Some(stale) => match self.cache.refresh_lock.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(stale),
            },
            None => self.cache.refresh_lock.lock().await,
        };
        if let Some(d) = self.loaded()
            && d.loaded_at.elapsed() < self.config.metadata_refresh_interval
        {
            return Ok(d);
        }
        {
            let mut attempts = self.attempts();
            let just_failed = attempts
                .failed
                .is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE);
            if just_failed && let Some(d) = self.loaded() {
                return Ok(d);
            }
            // Nothing loaded and the last attempt failed moments ago (while
            // this request waited, or before): its answer is this one's.
            if just_failed && (attempts.started > seen || !retry_now) {
                let why = self.last_error().unwrap_or_default();
                return Err(if attempts.misconfigured {
                    ProviderError::Misconfigured(why)
                } else {
                    ProviderError::NotReady(why)
                });
            }
            attempts.started += 1;
        }
        let result = self.discover().await;
        {
            let mut attempts = self.attempts();
            attempts.failed = result.is_err().then(Instant::now);
            attempts.misconfigured = matches!(result, Err(ProviderError::Misconfigured(_)));
        }
        let cache = &self.cache;
        match result {
            Ok(d) => {
                let d = Arc::new(d);
                *cache.current.write().unwrap_or_else(|p| p.into_inner()) = Some(d.clone());
                *cache.last_error.write().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(d)
            }
            Err(e @ ProviderError::Misconfigured(_)) => {
                // Not an outage: stale metadata would keep accepting what the
                // provider no longer offers. Not ready until fixed.
                tracing::error!(error = %e, "identity provider unusable with this configuration; not ready");
                *cache.current.write().unwrap_or_else(|p| p.into_inner()) = None;
                *cache.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Err(e)
            }
            Err(e) => {
                *cache.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                // Stale metadata is better than none while the provider is down.
                match self.loaded() {
                    Some(d) => {
                        tracing::warn!(error = %e, "provider metadata refresh failed; keeping the previous metadata");
                        Ok(d)
                    }
                    None => Err(ProviderError::NotReady(e.to_string())),
                }
            }
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.cache
            .last_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn discover(&self) -> Result<Discovered, ProviderError> {
        let issuer = self.config.issuer.as_str().trim_end_matches('/');
        let url = match &self.config.discovery_url {
            Some(u) => u.to_string(),
            None => format!("{issuer}/.well-known/openid-configuration"),
        };
        let body = self.get_json(&url, "discovery document").await?;
        check_endpoint_schemes(&body, &self.config.issuer, &self.config.endpoints)?;
        let body = super::discovery_overrides::apply(body, &self.config.endpoints)?;
        let metadata: Metadata = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::InvalidResponse(format!("discovery document: {e}")))?;
        // The issuer in the document must be the configured one, exactly
        // (OpenID Connect Discovery 1.0 §4.3), modulo a trailing slash in config.
        let advertised = metadata.issuer().as_str();
        // A multi-tenant provider advertises its issuer template.
        let template = self
            .config
            .issuer_template
            .as_ref()
            .map(|t| t.text.as_str());
        if advertised != self.config.issuer.as_str()
            && advertised != issuer
            && Some(advertised) != template
        {
            return Err(ProviderError::InvalidResponse(format!(
                "discovery issuer {advertised} does not match configured oidc.issuer {}",
                self.config.issuer
            )));
        }
        let advertised_algs: Vec<String> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let id_token_algorithms =
            usable_algorithms(&self.config.id_token_algorithms, &advertised_algs);
        if id_token_algorithms.is_empty() {
            return Err(ProviderError::Misconfigured(format!(
                "none of oidc.id_token_algorithms {:?} is in the provider's id_token_signing_alg_values_supported {:?}; add one of the provider's algorithms to oidc.id_token_algorithms (or enable one at the provider)",
                self.config.id_token_algorithms, advertised_algs
            )));
        }
        let extra = metadata.additional_metadata();
        let end_session_endpoint = extra.end_session_endpoint.clone();
        let revocation_endpoint = extra.additional_metadata.revocation_endpoint.clone();
        let backchannel_logout_supported = extra
            .additional_metadata
            .backchannel_logout_supported
            .unwrap_or(false);
        let iss_in_authorization_response = extra
            .additional_metadata
            .authorization_response_iss_parameter_supported
            .unwrap_or(false);
        let par_endpoint = par::pushed_authorization_endpoint(
            self.config.pushed_authorization,
            extra
                .additional_metadata
                .pushed_authorization_request_endpoint
                .as_ref(),
            extra
                .additional_metadata
                .require_pushed_authorization_requests
                .unwrap_or(false),
        )?;
        derived::check_token_exchange(
            self.token_exchange_key.as_deref(),
            metadata.grant_types_supported(),
        )?;
        dpop::check_advertised(
            self.config.dpop,
            extra
                .additional_metadata
                .dpop_signing_alg_values_supported
                .as_deref(),
        )?;
        let jwks_uri = metadata.jwks_uri().url().clone();
        let userinfo_endpoint = metadata.userinfo_endpoint().map(|u| u.url().clone());
        let issuer = advertised.to_owned();
        // `openidconnect` only builds the authorization URL: every
        // authenticated call is made by hand (`authenticated`).
        let auth_type = match self.config.auth_method {
            AuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            _ => AuthType::RequestBody,
        };
        let secret = self
            .config
            .auth_method
            .uses_secret()
            .then(|| ClientSecret::new(self.config.client_secret.expose().to_owned()));
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            secret,
        )
        .set_redirect_uri(self.redirect_uri.clone())
        .set_auth_type(auth_type);
        let Some(token_endpoint) = client.token_uri().map(|u| u.url().clone()) else {
            return Err(ProviderError::InvalidResponse(
                "discovery document has no token_endpoint".into(),
            ));
        };
        Ok(Discovered {
            issuer,
            client,
            token_endpoint,
            id_token_algorithms,
            jwks_uri,
            end_session_endpoint,
            revocation_endpoint,
            userinfo_endpoint,
            backchannel_logout_supported,
            iss_in_authorization_response,
            par_endpoint,
            loaded_at: Instant::now(),
        })
    }

    /// GET a JSON document from the provider; 2xx only, at most
    /// `oidc.max_response_bytes`. Its span (exported traces; target
    /// `traces::SPANS`) names the document: discovery or JWKS.
    #[tracing::instrument(target = "oidc_bff_otel", name = "provider.fetch", skip_all,
        fields(otel.kind = "client", otel.name = %format_args!("provider {what}"), oidc.document = what))]
    pub async fn get_json(&self, url: &str, what: &str) -> Result<Vec<u8>, ProviderError> {
        let endpoint = if what == "JWKS" {
            Endpoint::Jwks
        } else {
            Endpoint::Discovery
        };
        let req = self.http.get(url).header("accept", "application/json");
        let resp = self.send(endpoint, req).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ProviderError::Unavailable(format!(
                "GET {url} answered {status}"
            )));
        }
        self.read_limited(resp, what).await
    }

    /// Reads a body, refusing it as soon as it passes
    /// `oidc.max_response_bytes`: an endless or huge answer costs at most
    /// that much memory.
    async fn read_limited(
        &self,
        mut resp: reqwest::Response,
        what: &str,
    ) -> Result<Vec<u8>, ProviderError> {
        let limit = self.config.limits.response_bytes;
        let too_large = || {
            ProviderError::TooLarge(format!(
                "the {what} is larger than oidc.max_response_bytes ({limit} bytes)"
            ))
        };
        if resp
            .content_length()
            .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.map_reqwest(e))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn map_reqwest(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout(self.config.http_timeout)
        } else {
            ProviderError::Unavailable(without_url(&e))
        }
    }

    /// POSTs a grant to the token endpoint and reads the answer within the
    /// size limits. Done by hand rather than through `openidconnect`, which
    /// reads bodies without a limit and parses the ID token's claims itself
    /// (so a token lacking `iat` became an "invalid provider response", an
    /// outage, instead of a failed login decided by `jwt`).
    ///
    /// With a DPoP key, each request carries a proof (RFC 9449 §5) with the
    /// provider's latest nonce; a `use_dpop_nonce` refusal with a new nonce
    /// is retried once, and a token not bound to the key (`token_type`
    /// other than `DPoP`) is refused.
    async fn token_request(
        &self,
        grant: &[(&'static str, &str)],
        dpop: Option<&DpopKey>,
    ) -> Result<TokenSet, ProviderError> {
        let d = self.discovered().await?;
        let mut retried = false;
        loop {
            let mut form: Vec<(&'static str, Cow<'_, str>)> =
                grant.iter().map(|(k, v)| (*k, Cow::Borrowed(*v))).collect();
            let mut req = self
                .http
                .post(d.token_endpoint.clone())
                .header("accept", "application/json");
            let mut sent = None;
            if let Some(key) = dpop {
                let (proof, nonce) = self.dpop_proof(key, "POST", &d.token_endpoint, None)?;
                (req, sent) = (req.header("DPoP", proof), nonce);
            }
            let req = self.authenticated(req, &d, &mut form)?.form(&form);
            let resp = self.send(Endpoint::Token, req).await?;
            let status = resp.status();
            let new_nonce = dpop.is_some()
                && self.remember_dpop_nonce(&d.token_endpoint, &resp, sent.as_deref());
            let body = self.read_limited(resp, "token response").await?;
            let answer = parse_token_response(status, &body, &self.config.limits);
            match (answer, dpop) {
                (Err(ProviderError::Rejected { error, .. }), Some(_))
                    if error == "use_dpop_nonce" && new_nonce && !retried =>
                {
                    tracing::debug!("token endpoint asked for a DPoP nonce; retrying once with it");
                    retried = true;
                }
                (Ok(tokens), Some(_)) => return dpop::bound(tokens),
                // Without a proof the token is sent as `Bearer`: a token
                // bound to a key the gateway does not hold would fail at
                // every API.
                (Ok(tokens), None) if !tokens.token_type.eq_ignore_ascii_case("Bearer") => {
                    return Err(ProviderError::Unusable(
                        "token_type is not Bearer for a request without a DPoP proof".into(),
                    ));
                }
                (answer, _) => return answer,
            }
        }
    }

    /// The URL to send the browser to, with PKCE S256, state and nonce.
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        pkce_challenge: PkceCodeChallenge,
        from_browser: &[(String, String)],
    ) -> Result<Url, ProviderError> {
        let d = self.discovered().await?;
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let mut req = d
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(pkce_challenge);
        for s in self.config.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        // The SPA's login parameters (already checked against the
        // allowlist) take the place of a configured one of the same name.
        for (k, v) in &self.config.extra_auth_params {
            if !from_browser.iter().any(|(b, _)| b == k) {
                req = req.add_extra_param(k.clone(), v.clone());
            }
        }
        for (k, v) in from_browser {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        let (url, _, _) = req.url();
        match &d.par_endpoint {
            Some(endpoint) => self.pushed(&d, endpoint, url).await,
            None => Ok(url),
        }
    }

    #[tracing::instrument(target = "oidc_bff_otel", name = "provider.token", skip_all,
        fields(otel.kind = "client", oidc.grant_type = "authorization_code"))]
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        dpop: Option<&DpopKey>,
    ) -> Result<TokenSet, ProviderError> {
        self.token_request(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", self.redirect_uri.as_str()),
                ("code_verifier", verifier),
            ],
            dpop,
        )
        .await
    }

    #[tracing::instrument(target = "oidc_bff_otel", name = "provider.refresh", skip_all,
        fields(otel.kind = "client", oidc.grant_type = "refresh_token"))]
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        dpop: Option<&DpopKey>,
    ) -> Result<TokenSet, ProviderError> {
        self.token_request(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
            ],
            dpop,
        )
        .await
    }

    /// RFC 7009 revocation of a refresh token, when the provider supports it.
    /// `Ok(false)`: nothing to do (no endpoint). Done by hand rather than with
    /// `oauth2`'s revocation request, which refuses `http://` endpoints and so
    /// every development stack.
    #[tracing::instrument(target = "oidc_bff_otel", name = "provider.revocation", skip_all,
        fields(otel.kind = "client"))]
    pub async fn revoke_refresh_token(
        &self,
        refresh_token: &SecretString,
    ) -> Result<bool, ProviderError> {
        let d = self.discovered().await?;
        let Some(endpoint) = &d.revocation_endpoint else {
            return Ok(false);
        };
        let mut form = vec![
            ("token", Cow::Borrowed(refresh_token.expose())),
            ("token_type_hint", Cow::Borrowed("refresh_token")),
        ];
        let req = self.http.post(endpoint.clone());
        let req = self.authenticated(req, &d, &mut form)?.form(&form);
        let resp = self.send(Endpoint::Revocation, req).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(true);
        }
        let body: Value = match self.read_limited(resp, "revocation response").await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => Value::Null,
        };
        Err(ProviderError::Rejected {
            error: body["error"]
                .as_str()
                .unwrap_or("revocation_failed")
                .to_owned(),
            description: Some(format!("revocation endpoint answered {status}")),
        })
    }

    /// Claims from the userinfo endpoint.
    #[tracing::instrument(target = "oidc_bff_otel", name = "provider.userinfo", skip_all,
        fields(otel.kind = "client"))]
    pub async fn userinfo(
        &self,
        access_token: &SecretString,
        dpop: Option<&DpopKey>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ProviderError> {
        let d = self.discovered().await?;
        let Some(endpoint) = &d.userinfo_endpoint else {
            return Ok(serde_json::Map::new());
        };
        let resp = match dpop {
            Some(key) => self.dpop_userinfo(endpoint, access_token, key).await?,
            None => {
                let req = self
                    .http
                    .get(endpoint.clone())
                    .bearer_auth(access_token.expose())
                    .header("accept", "application/json");
                self.send(Endpoint::Userinfo, req).await?
            }
        };
        if !resp.status().is_success() {
            return Err(ProviderError::Unavailable(format!(
                "userinfo answered {}",
                resp.status()
            )));
        }
        let body = self.read_limited(resp, "userinfo response").await?;
        serde_json::from_slice(&body).map_err(|_| {
            ProviderError::InvalidResponse(
                "userinfo is not a JSON object (signed userinfo is not supported)".into(),
            )
        })
    }

    /// The provider's end-session URL for RP-initiated logout, if it has one.
    pub fn end_session_url(
        &self,
        d: &Discovered,
        id_token: Option<&SecretString>,
        post_logout: &Url,
    ) -> Option<Url> {
        if let Some(url) = self.templated_end_session_url(post_logout) {
            return Some(url);
        }
        let endpoint = d.end_session_endpoint.clone()?;
        let mut req = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()))
            .set_post_logout_redirect_uri(PostLogoutRedirectUrl::from_url(post_logout.clone()));
        if let Some(t) = id_token.and_then(|t| t.expose().parse::<CoreIdToken>().ok()) {
            req = req.set_id_token_hint(&t);
        }
        Some(req.http_get_url())
    }

    /// `oidc.end_session_url_template` filled in, when configured: it wins
    /// over discovery (it is how providers without an `end_session_endpoint`
    /// log out).
    fn templated_end_session_url(&self, post_logout: &Url) -> Option<Url> {
        let template = self.config.end_session_url_template.as_ref()?;
        let url = template.render(&self.config.client_id, post_logout.as_str());
        // Checked with sample values at start-up; a value cannot break it.
        Url::parse(&url).ok()
    }
}

/// The configured algorithms the provider also advertises, in the
/// configured order.
pub fn usable_algorithms(configured: &[Algorithm], advertised: &[String]) -> Vec<Algorithm> {
    configured
        .iter()
        .copied()
        .filter(|a| advertised.iter().any(|s| *s == format!("{a:?}")))
        .collect()
}

/// A token endpoint's answer (RFC 6749 §5.1), tokens still unchecked.
#[derive(Deserialize)]
struct RawTokenResponse {
    access_token: String,
    token_type: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    scope: Option<Value>,
}

#[derive(Deserialize)]
struct RawErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Longest access-token lifetime believed: a larger `expires_in` is
/// clamped, so deadline arithmetic cannot overflow.
const MAX_EXPIRES_IN: u64 = 366 * 86400;

/// Reads a token endpoint answer: a refusal, an outage (an HTML error
/// page), or tokens within `oidc.max_token_bytes` each.
fn parse_token_response(
    status: reqwest::StatusCode,
    body: &[u8],
    limits: &crate::config::ProviderLimits,
) -> Result<TokenSet, ProviderError> {
    let looks_json = body.first() == Some(&b'{');
    if !status.is_success() {
        return match serde_json::from_slice::<RawErrorResponse>(body) {
            Ok(e) => Err(ProviderError::Rejected {
                error: e.error,
                description: e.error_description,
            }),
            // A gateway error page (HTML, 5xx) lands here: unreachable, not refused.
            Err(_) if !looks_json => Err(ProviderError::Unavailable(format!(
                "token endpoint answered {status} with a non-JSON body"
            ))),
            Err(e) => Err(ProviderError::InvalidResponse(format!(
                "token error response ({status}): {e}"
            ))),
        };
    }
    let raw: RawTokenResponse = serde_json::from_slice(body).map_err(|e| {
        if looks_json {
            ProviderError::InvalidResponse(format!("token response: {e}"))
        } else {
            ProviderError::Unavailable("token endpoint answered a non-JSON body".into())
        }
    })?;
    if raw.access_token.is_empty() {
        return Err(ProviderError::InvalidResponse(
            "token response has an empty access_token".into(),
        ));
    }
    let check = |name: &str, t: &str| {
        if t.len() > limits.token_bytes {
            Err(ProviderError::TooLarge(format!(
                "the {name} is {} bytes, more than oidc.max_token_bytes ({})",
                t.len(),
                limits.token_bytes
            )))
        } else {
            Ok(())
        }
    };
    check("access token", &raw.access_token)?;
    if let Some(t) = &raw.refresh_token {
        check("refresh token", t)?;
    }
    // The access token goes into an `Authorization` header (`Bearer` /
    // `DPoP`, RFC 6750 §2.1's b64token is a subset of this), the refresh
    // token into a form body: visible ASCII only (RFC 6749 Appendix A,
    // VSCHAR, without the space a header value would split on). A CR/LF,
    // a control or a non-ASCII character is refused here, not when a
    // request is forwarded.
    let visible = |name: &str, t: &str, space: bool| {
        if t.bytes()
            .all(|b| b.is_ascii_graphic() || (space && b == b' '))
        {
            Ok(())
        } else {
            Err(ProviderError::Unusable(format!(
                "the {name} holds characters outside visible ASCII"
            )))
        }
    };
    visible("access token", &raw.access_token, false)?;
    if let Some(t) = &raw.refresh_token {
        visible("refresh token", t, true)?;
    }
    if !(raw.token_type.eq_ignore_ascii_case("Bearer")
        || raw.token_type.eq_ignore_ascii_case("DPoP"))
    {
        return Err(ProviderError::Unusable(
            "token_type is neither Bearer nor DPoP".into(),
        ));
    }
    if let Some(t) = &raw.id_token {
        check("ID token", t)?;
    }
    let expires_in = match &raw.expires_in {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f.min(MAX_EXPIRES_IN as f64) as u64)
        }),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    }
    .map(|secs| Duration::from_secs(secs.min(MAX_EXPIRES_IN)));
    Ok(TokenSet {
        access_token: SecretString::new(raw.access_token),
        refresh_token: raw.refresh_token.map(SecretString::new),
        id_token: raw.id_token.map(SecretString::new),
        expires_in,
        scope: match raw.scope {
            Some(Value::String(s)) if !s.chars().any(char::is_control) => Some(s),
            _ => None,
        },
        token_type: raw.token_type,
    })
}

/// reqwest errors print the URL, which for some calls carries parameters;
/// keep only the kind of failure.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_decode() || e.is_body() {
        "bad response body"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{kind} ({}{})", u.origin().ascii_serialization(), u.path()),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderLimits;

    #[test]
    fn an_https_issuer_s_document_may_not_name_a_plain_http_endpoint() {
        use crate::config::EndpointOverrides;
        let https: Url = "https://id.example.com".parse().expect("url");
        let none = EndpointOverrides(vec![]);
        let good = br#"{"issuer":"https://id.example.com","jwks_uri":"https://keys.example.net/jwks","token_endpoint":"https://id.example.com/token"}"#;
        assert!(check_endpoint_schemes(good, &https, &none).is_ok());
        for field in CALLED_ENDPOINTS {
            let doc = serde_json::json!({"issuer": "https://id.example.com", field: "http://id.example.com/x"});
            let body = serde_json::to_vec(&doc).expect("json");
            let e = check_endpoint_schemes(&body, &https, &none).expect_err(field);
            assert!(e.to_string().contains(field), "{e}");
            // An override (already held to the issuer's rule) replaces it.
            let over = EndpointOverrides(vec![(
                field,
                "https://id.example.com/y".parse().expect("url"),
            )]);
            assert!(check_endpoint_schemes(&body, &https, &over).is_ok());
            // An http issuer (loopback, or allow_insecure_issuer) is the loosening.
            let http: Url = "http://127.0.0.1:9000".parse().expect("url");
            assert!(check_endpoint_schemes(&body, &http, &none).is_ok());
        }
        let odd = br#"{"jwks_uri":"javascript:alert(1)"}"#;
        assert!(check_endpoint_schemes(odd, &https, &none).is_err());
    }

    const LIMITS: ProviderLimits = ProviderLimits {
        response_bytes: 1 << 20,
        token_bytes: 64,
        claims_bytes: 1024,
        claims: 10,
    };

    #[test]
    fn only_configured_algorithms_the_provider_advertises_are_used() {
        let configured = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];
        let advertised = ["RS256".to_owned(), "HS256".to_owned(), "none".to_owned()];
        assert_eq!(
            usable_algorithms(&configured, &advertised),
            vec![Algorithm::RS256]
        );
        assert!(usable_algorithms(&configured, &["EdDSA".to_owned()]).is_empty());
        assert!(usable_algorithms(&configured, &[]).is_empty());
    }

    #[test]
    fn token_responses_are_parsed_within_the_token_limit() {
        let ok = reqwest::StatusCode::OK;
        let t = parse_token_response(
            ok,
            br#"{"access_token":"a","token_type":"Bearer","id_token":"i","expires_in":99999999999999}"#,
            &LIMITS,
        )
        .expect("tokens");
        assert_eq!(t.expires_in, Some(Duration::from_secs(MAX_EXPIRES_IN)));
        let big = format!(
            r#"{{"access_token":"a","token_type":"Bearer","id_token":"{}"}}"#,
            "x".repeat(65)
        );
        assert!(matches!(
            parse_token_response(ok, big.as_bytes(), &LIMITS),
            Err(ProviderError::TooLarge(m)) if m.contains("ID token")
        ));
        assert!(matches!(
            parse_token_response(reqwest::StatusCode::BAD_REQUEST, br#"{"error":"invalid_grant"}"#, &LIMITS),
            Err(e) if e.is_invalid_grant()
        ));
        assert!(matches!(
            parse_token_response(reqwest::StatusCode::BAD_GATEWAY, b"<html>", &LIMITS),
            Err(ProviderError::Unavailable(_))
        ));
        assert!(matches!(
            parse_token_response(ok, br#"{"token_type":"Bearer"}"#, &LIMITS),
            Err(ProviderError::InvalidResponse(_))
        ));
    }

    #[test]
    fn tokens_no_header_can_carry_and_unknown_token_types_are_unusable() {
        let ok = reqwest::StatusCode::OK;
        let answer = |at: &str, rt: &str, tt: &str| {
            let body =
                serde_json::json!({ "access_token": at, "refresh_token": rt, "token_type": tt });
            parse_token_response(ok, body.to_string().as_bytes(), &LIMITS)
        };
        for at in ["a\r\nX: 1", "a b", "a\tb", "a\u{7f}", "\u{e9}", "a\u{0}"] {
            assert!(
                matches!(answer(at, "r", "Bearer"), Err(ProviderError::Unusable(m)) if m.contains("access token")),
                "{at:?}"
            );
        }
        for rt in ["r\nx", "r\u{85}"] {
            assert!(
                matches!(answer("a", rt, "Bearer"), Err(ProviderError::Unusable(m)) if m.contains("refresh token")),
                "{rt:?}"
            );
        }
        for tt in ["mac", "", "Bearer ", "N_A"] {
            assert!(
                matches!(answer("a", "r", tt), Err(ProviderError::Unusable(_))),
                "{tt:?}"
            );
        }
        for tt in ["Bearer", "bearer", "DPoP", "dpop"] {
            assert!(answer("a-b.c_d~e+f/g=", "r s", tt).is_ok(), "{tt:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 500, ..Default::default() })]

        /// Any body with any status: an error or tokens within the limit,
        /// never a panic.
        #[test]
        fn any_token_endpoint_answer_is_parsed_without_panicking(
            status in 100u16..600,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let status = reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::OK);
            if let Ok(t) = parse_token_response(status, &body, &LIMITS) {
                proptest::prop_assert!(t.access_token.expose().len() <= LIMITS.token_bytes);
            }
        }
    }
}
