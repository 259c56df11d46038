//! `[oidc]`: the provider (issuer, discovery, TLS to it), this gateway's
//! client registration, what a login asks for and which tokens it accepts.
//!
//! `post_logout_redirect` is resolved against `[server]`, so it is checked
//! with the cross-section rules in `mod.rs`; the provider's TLS files are
//! read last (`provider_tls`), the order `check-config` has always used.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::client_auth::{self, AssertionAudience, ClientAuth, ClientKey, PushedAuthorization};
use super::common::{
    ClientCertificate, Issues, Pem, RawDuration, client_certificate, duration, is_loopback_host,
    positive_duration, read_pem, secret_from,
};
use super::oidc_endpoints::{
    self, EndSessionTemplate, EndpointOverrides, FrontchannelConfig, IssuerTemplate, RawEndpoints,
    RawFrontchannel,
};
use crate::secret::SecretString;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOidc {
    /// The provider's issuer URL, exactly as in its discovery document.
    pub issuer: Option<String>,
    /// The client ID registered at the provider.
    pub client_id: Option<String>,
    /// The client secret (prefer `client_secret_file` or the environment).
    pub client_secret: Option<String>,
    /// A file holding the client secret (trailing newline ignored).
    pub client_secret_file: Option<PathBuf>,
    /// How the client authenticates at the token, revocation and PAR
    /// endpoints: `client_secret_basic`, `client_secret_post`,
    /// `private_key_jwt`, `tls_client_auth` or `self_signed_tls_client_auth`.
    pub auth_method: String,
    /// `private_key_jwt`: PEM private key that signs client assertions
    /// (PKCS#8; PKCS#1 for RSA). Its public half is published at
    /// `/.well-known/jwks.json`.
    pub client_key_file: Option<PathBuf>,
    /// `private_key_jwt`: `ES256`, `RS256` or `PS256`; must fit the key.
    pub client_key_algorithm: String,
    /// `private_key_jwt`: the key's `kid` (default: its RFC 7638 thumbprint).
    pub client_key_id: Option<String>,
    /// `private_key_jwt`: the assertion's `aud`: `token_endpoint` or `issuer`.
    pub client_assertion_audience: String,
    /// Pushed authorization requests (RFC 9126): `auto` (when the provider
    /// says it requires them), `always` or `never`.
    pub pushed_authorization: String,
    /// Scopes to request; must include `openid`.
    pub scopes: Vec<String>,
    /// Extra parameters for the authorization request (e.g. `audience`).
    pub extra_auth_params: BTreeMap<String, String>,
    /// Names of authorization-request parameters the SPA may pass through
    /// `/auth/login` besides the standard `prompt`, `login_hint`,
    /// `acr_values`, `max_age` and `ui_locales` (e.g. `["audience"]`).
    pub login_parameters: Vec<String>,
    /// Where the browser lands after logout: a path on `public_url` or a URL
    /// on an allowed origin. Register it at the provider as a post-logout
    /// redirect URI.
    pub post_logout_redirect: String,
    /// Send the browser through the provider's `end_session_endpoint` on
    /// logout when the provider has one.
    pub end_session: bool,
    /// Signature algorithms accepted for ID and logout tokens. Only those
    /// the provider also lists in its discovery document's
    /// `id_token_signing_alg_values_supported` are used; if none is, the
    /// provider is not ready (logged at discovery).
    pub id_token_algorithms: Vec<String>,
    /// Allowed clock difference for `exp`, `iat` and `nbf`.
    pub clock_skew: RawDuration,
    /// Timeout for each call to the provider (discovery, token, JWKS).
    pub http_timeout: RawDuration,
    /// How long a started login may take before its callback is refused.
    pub login_timeout: RawDuration,
    /// Merge the userinfo endpoint's claims into the session at login.
    pub userinfo: bool,
    /// Minimum time between two JWKS fetches caused by an unknown `kid`.
    pub jwks_min_refresh_interval: RawDuration,
    /// How often provider metadata and keys are re-read.
    pub metadata_refresh_interval: RawDuration,
    /// Allow an `http://` issuer that is not on loopback (e.g. Keycloak
    /// inside docker compose). Never in production.
    pub allow_insecure_issuer: bool,
    /// Fetch the discovery document from here instead of
    /// `<issuer>/.well-known/openid-configuration` (e.g. the provider's
    /// in-cluster address). Its `issuer` must still equal `oidc.issuer`.
    pub discovery_url: Option<String>,
    /// PEM file of the CA(s) to trust for the provider instead of the
    /// public roots (a provider with a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate presented to the provider (mutual TLS on its
    /// back channel); needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Largest body read from the provider (discovery, JWKS, token and
    /// userinfo responses), in bytes: a bigger answer is refused unread.
    pub max_response_bytes: u64,
    /// Largest access, refresh or ID token accepted, in bytes each: a login
    /// whose tokens are bigger fails and stores nothing.
    pub max_token_bytes: u64,
    /// Largest claim set kept in a session (as JSON, in bytes) and returned
    /// by `/auth/user`.
    pub max_claims_bytes: u64,
    /// Most claims kept in a session.
    pub max_claims: u64,
    /// The provider's logout URL when its discovery document has no
    /// `end_session_endpoint` (Auth0, Cognito), with `{client_id}` and
    /// `{post_logout_redirect_uri}` placeholders.
    pub end_session_url_template: Option<String>,
    /// Multi-tenant providers (Entra ID): an ID token's `iss` must be this
    /// with `{tenantid}` replaced by its `tid` claim; needs
    /// `allowed_tenants`.
    pub issuer_template: Option<String>,
    /// The tenants (`tid`) whose users may log in with `issuer_template`.
    pub allowed_tenants: Vec<String>,
    /// Endpoint URLs used instead of (or in the absence of) discovery's.
    pub endpoints: RawEndpoints,
    /// OpenID Connect Front-Channel Logout 1.0.
    pub frontchannel_logout: RawFrontchannel,
    /// DPoP (RFC 9449): give each session its own key and bind its tokens
    /// to it. The provider must advertise DPoP; a token answer that is not
    /// bound (`token_type` other than `DPoP`) fails the login or refresh.
    pub dpop: bool,
    /// The DPoP proof algorithm: `ES256` (the only one; `none` and HMAC
    /// are never accepted).
    pub dpop_signing_alg: String,
}

impl Default for RawOidc {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            auth_method: "client_secret_basic".into(),
            client_key_file: None,
            client_key_algorithm: "ES256".into(),
            client_key_id: None,
            client_assertion_audience: "token_endpoint".into(),
            pushed_authorization: "auto".into(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            extra_auth_params: BTreeMap::new(),
            login_parameters: Vec::new(),
            post_logout_redirect: "/".into(),
            end_session: true,
            id_token_algorithms: vec!["RS256".into(), "PS256".into(), "ES256".into()],
            clock_skew: RawDuration::text("60s"),
            http_timeout: RawDuration::text("10s"),
            login_timeout: RawDuration::text("10m"),
            userinfo: false,
            jwks_min_refresh_interval: RawDuration::text("30s"),
            metadata_refresh_interval: RawDuration::text("1h"),
            allow_insecure_issuer: false,
            discovery_url: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            max_response_bytes: 256 * 1024,
            max_token_bytes: 16 * 1024,
            max_claims_bytes: 16 * 1024,
            max_claims: 100,
            end_session_url_template: None,
            issuer_template: None,
            allowed_tenants: Vec::new(),
            endpoints: RawEndpoints::default(),
            frontchannel_logout: RawFrontchannel::default(),
            dpop: false,
            dpop_signing_alg: "ES256".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 client assertion signed with `oidc.client_key_file`.
    PrivateKeyJwt,
    /// RFC 8705: the client certificate (`oidc.tls_cert_file`), no secret.
    TlsClientAuth,
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// Whether `oidc.client_secret` is needed.
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: Url,
    pub client_id: String,
    /// Empty when `auth_method` uses no secret.
    pub client_secret: SecretString,
    pub auth_method: AuthMethod,
    /// The `private_key_jwt` key (only with that method).
    pub client_key: Option<ClientKey>,
    pub client_assertion_audience: AssertionAudience,
    pub pushed_authorization: PushedAuthorization,
    pub scopes: Vec<String>,
    pub extra_auth_params: Vec<(String, String)>,
    /// Extra parameter names `/auth/login` accepts from the SPA
    /// (`flows::login_params`).
    pub login_parameters: Vec<String>,
    /// Absolute URL.
    pub post_logout_redirect: Url,
    pub end_session: bool,
    pub id_token_algorithms: Vec<jsonwebtoken::Algorithm>,
    pub clock_skew: Duration,
    pub http_timeout: Duration,
    pub login_timeout: Duration,
    pub userinfo: bool,
    pub jwks_min_refresh_interval: Duration,
    pub metadata_refresh_interval: Duration,
    pub discovery_url: Option<Url>,
    /// PEM roots to trust for the provider instead of the public ones.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// The certificate the gateway presents to the provider.
    pub tls_client: Option<ClientCertificate>,
    pub limits: ProviderLimits,
    pub end_session_url_template: Option<EndSessionTemplate>,
    pub endpoints: EndpointOverrides,
    pub frontchannel_logout: Option<FrontchannelConfig>,
    pub issuer_template: Option<IssuerTemplate>,
    /// DPoP-bound tokens (`oidc.dpop`), proofs signed with ES256.
    pub dpop: bool,
}

/// Bounds on what the provider may send (`oidc.max_*`): a validly signed
/// answer is still hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderLimits {
    pub response_bytes: usize,
    pub token_bytes: usize,
    pub claims_bytes: usize,
    pub claims: usize,
}

/// `[oidc]` as checked on its own: `None` marks a required value that is
/// missing or wrong (already reported).
pub(super) struct Oidc {
    issuer: Option<Url>,
    client_id: String,
    client_secret: Option<SecretString>,
    auth_method: AuthMethod,
    client_auth: ClientAuth,
    scopes: Vec<String>,
    extra_auth_params: Vec<(String, String)>,
    login_parameters: Vec<String>,
    end_session: bool,
    id_token_algorithms: Vec<jsonwebtoken::Algorithm>,
    clock_skew: Duration,
    http_timeout: Duration,
    login_timeout: Duration,
    userinfo: bool,
    jwks_min_refresh_interval: Duration,
    metadata_refresh_interval: Duration,
    discovery_url: Option<Url>,
    limits: ProviderLimits,
    end_session_url_template: Option<EndSessionTemplate>,
    endpoints: EndpointOverrides,
    frontchannel_logout: Option<FrontchannelConfig>,
    issuer_template: Option<IssuerTemplate>,
    dpop: bool,
}

/// The provider's private CA and the client certificate shown to it.
pub(super) struct ProviderTls {
    ca_pem: Option<Vec<u8>>,
    client: Option<ClientCertificate>,
}

impl Oidc {
    /// The typed section, with what other sections decided, once the
    /// required values are known to be present.
    pub(super) fn into_config(
        self,
        post_logout_redirect: Url,
        tls: ProviderTls,
    ) -> Option<OidcConfig> {
        Some(OidcConfig {
            issuer: self.issuer?,
            client_id: self.client_id,
            client_secret: match self.client_secret {
                Some(s) => s,
                None if !self.auth_method.uses_secret() => SecretString::default(),
                None => return None,
            },
            auth_method: self.auth_method,
            client_key: self.client_auth.key,
            client_assertion_audience: self.client_auth.audience,
            pushed_authorization: self.client_auth.pushed_authorization,
            scopes: self.scopes,
            extra_auth_params: self.extra_auth_params,
            login_parameters: self.login_parameters,
            post_logout_redirect,
            end_session: self.end_session,
            id_token_algorithms: self.id_token_algorithms,
            clock_skew: self.clock_skew,
            http_timeout: self.http_timeout,
            login_timeout: self.login_timeout,
            userinfo: self.userinfo,
            jwks_min_refresh_interval: self.jwks_min_refresh_interval,
            metadata_refresh_interval: self.metadata_refresh_interval,
            discovery_url: self.discovery_url,
            tls_ca_pem: tls.ca_pem,
            tls_client: tls.client,
            limits: self.limits,
            end_session_url_template: self.end_session_url_template,
            endpoints: self.endpoints,
            frontchannel_logout: self.frontchannel_logout,
            issuer_template: self.issuer_template,
            dpop: self.dpop,
        })
    }
}

/// `oidc.login_parameters`: parameter names (lower-case letters, digits,
/// `_`, at most 64) that the gateway does not set itself, are not already
/// allowed, and are listed once.
fn login_parameters(raw: &RawOidc, issues: &mut Issues) -> Vec<String> {
    use crate::login_params::STANDARD;
    let mut out: Vec<String> = Vec::new();
    for (i, name) in raw.login_parameters.iter().enumerate() {
        let key = format!("oidc.login_parameters[{i}]");
        let well_formed = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            issues.add(key, format!("`{name}` must be a parameter name of lower-case letters, digits and `_` (at most 64)"));
        } else if RESERVED_AUTH_PARAMS.contains(&name.as_str())
            || matches!(
                name.as_str(),
                "return_to" | "response_mode" | "request" | "request_uri"
            )
        {
            issues.add(
                key,
                format!("`{name}` is set by the gateway itself and cannot come from the browser"),
            );
        } else if STANDARD.contains(&name.as_str()) {
            issues.add(
                key,
                format!("`{name}` is always accepted; remove it from the list"),
            );
        } else if out.contains(name) {
            issues.add(key, format!("`{name}` is listed twice"));
        } else if raw.extra_auth_params.contains_key(name) {
            issues.add(
                key,
                format!(
                    "`{name}` is fixed by oidc.extra_auth_params; remove it from one of the two"
                ),
            );
        } else {
            out.push(name.clone());
        }
    }
    out
}

/// Parameters the gateway sets on every authorization request itself.
const RESERVED_AUTH_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

pub(super) fn validate(raw: &RawOidc, issues: &mut Issues) -> Oidc {
    let issuer = issuer(raw, issues);
    let client_id = match &raw.client_id {
        Some(c) if !c.is_empty() => c.clone(),
        _ => {
            issues.add(
                "oidc.client_id",
                "missing; set the client ID registered at the provider",
            );
            String::new()
        }
    };
    let auth_method = match raw.auth_method.as_str() {
        "client_secret_basic" => AuthMethod::ClientSecretBasic,
        "client_secret_post" => AuthMethod::ClientSecretPost,
        "private_key_jwt" => AuthMethod::PrivateKeyJwt,
        "tls_client_auth" => AuthMethod::TlsClientAuth,
        "self_signed_tls_client_auth" => AuthMethod::SelfSignedTlsClientAuth,
        other => {
            issues.add(
                "oidc.auth_method",
                format!("`{other}` is not supported; use \"client_secret_basic\", \"client_secret_post\", \"private_key_jwt\", \"tls_client_auth\" or \"self_signed_tls_client_auth\""),
            );
            AuthMethod::ClientSecretBasic
        }
    };
    let client_secret = secret_from(
        issues,
        "oidc.client_secret",
        raw.client_secret.as_ref(),
        raw.client_secret_file.as_ref(),
        auth_method.uses_secret(),
    );
    let client_auth = client_auth::validate(raw, auth_method, issues);
    if !raw.scopes.iter().any(|s| s == "openid") {
        issues.add("oidc.scopes", "must include \"openid\"");
    }
    for (i, s) in raw.scopes.iter().enumerate() {
        if s.is_empty()
            || s.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
        {
            issues.add(
                format!("oidc.scopes[{i}]"),
                format!("`{s}` is not a valid scope token"),
            );
        }
    }
    for k in raw.extra_auth_params.keys() {
        if RESERVED_AUTH_PARAMS.contains(&k.as_str()) {
            issues.add(
                format!("oidc.extra_auth_params.{k}"),
                "is set by the gateway itself and cannot be overridden",
            );
        }
    }
    let login_parameters = login_parameters(raw, issues);
    let mut id_token_algorithms = Vec::new();
    for (i, a) in raw.id_token_algorithms.iter().enumerate() {
        match parse_algorithm(a) {
            Some(alg) => id_token_algorithms.push(alg),
            None => issues.add(
                format!("oidc.id_token_algorithms[{i}]"),
                format!("`{a}` is not accepted; use asymmetric algorithms: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (never none or HS*)"),
            ),
        }
    }
    if raw.id_token_algorithms.is_empty() {
        issues.add(
            "oidc.id_token_algorithms",
            "must list at least one algorithm, e.g. [\"RS256\"]",
        );
    }
    let clock_skew = duration(issues, "oidc.clock_skew", &raw.clock_skew);
    if clock_skew > Duration::from_secs(300) {
        issues.add("oidc.clock_skew", "must be at most 5m");
    }
    let http_timeout = positive_duration(issues, "oidc.http_timeout", &raw.http_timeout);
    let login_timeout = positive_duration(issues, "oidc.login_timeout", &raw.login_timeout);
    let jwks_min_refresh_interval = duration(
        issues,
        "oidc.jwks_min_refresh_interval",
        &raw.jwks_min_refresh_interval,
    );
    let metadata_refresh_interval = positive_duration(
        issues,
        "oidc.metadata_refresh_interval",
        &raw.metadata_refresh_interval,
    );
    let discovery_url = raw
        .discovery_url
        .as_ref()
        .and_then(|d| match Url::parse(d) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                issues.add(
                    "oidc.discovery_url",
                    format!("`{d}` must be an http(s) URL of a discovery document"),
                );
                None
            }
        });
    let limits = limits(raw, issues);
    let insecure = raw.allow_insecure_issuer;
    let endpoints = oidc_endpoints::endpoints(&raw.endpoints, insecure, issues);
    let end_session_url_template = oidc_endpoints::end_session_template(
        raw.end_session_url_template.as_ref(),
        insecure,
        issues,
    );
    let issuer_template = oidc_endpoints::issuer_template(
        raw.issuer_template.as_ref(),
        &raw.allowed_tenants,
        insecure,
        issues,
    );
    let frontchannel_logout =
        oidc_endpoints::frontchannel(&raw.frontchannel_logout, issuer.as_ref(), insecure, issues);
    dpop_signing_alg(raw, issues);
    Oidc {
        issuer,
        client_id,
        client_secret,
        auth_method,
        client_auth,
        scopes: raw.scopes.clone(),
        login_parameters,
        extra_auth_params: raw
            .extra_auth_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        end_session: raw.end_session,
        id_token_algorithms,
        clock_skew,
        http_timeout,
        login_timeout,
        userinfo: raw.userinfo,
        jwks_min_refresh_interval,
        metadata_refresh_interval,
        discovery_url,
        limits,
        end_session_url_template,
        endpoints,
        frontchannel_logout,
        issuer_template,
        dpop: raw.dpop,
    }
}

/// `oidc.dpop_signing_alg`: ES256, the curve of the per-session keys.
/// `none` and HMAC prove nothing (no private key); other asymmetric ones
/// are not offered (an RSA key per session costs too much to generate).
fn dpop_signing_alg(raw: &RawOidc, issues: &mut Issues) {
    let alg = raw.dpop_signing_alg.as_str();
    if alg == "ES256" {
        return;
    }
    let why = if alg.eq_ignore_ascii_case("none") || alg.to_ascii_uppercase().starts_with("HS") {
        "is never accepted: a DPoP proof must be signed with the session's private key"
    } else {
        "is not supported"
    };
    issues.add(
        "oidc.dpop_signing_alg",
        format!("`{alg}` {why}; use \"ES256\""),
    );
}

/// `oidc.max_*`: positive, and a token must fit in a response.
fn limits(raw: &RawOidc, issues: &mut Issues) -> ProviderLimits {
    let mut positive = |key: &str, value: u64, min: u64| -> usize {
        if value < min {
            issues.add(
                format!("oidc.{key}"),
                format!("{value} is too small; must be at least {min}"),
            );
        }
        usize::try_from(value).unwrap_or(usize::MAX)
    };
    let limits = ProviderLimits {
        response_bytes: positive("max_response_bytes", raw.max_response_bytes, 4096),
        token_bytes: positive("max_token_bytes", raw.max_token_bytes, 1024),
        claims_bytes: positive("max_claims_bytes", raw.max_claims_bytes, 1024),
        claims: positive("max_claims", raw.max_claims, 1),
    };
    if raw.max_token_bytes > raw.max_response_bytes {
        issues.add(
            "oidc.max_token_bytes",
            format!(
                "{} is larger than oidc.max_response_bytes ({}): a token must fit in a token response",
                raw.max_token_bytes, raw.max_response_bytes
            ),
        );
    }
    limits
}

/// `oidc.tls_ca_file`, `oidc.tls_cert_file` and `oidc.tls_key_file`.
pub(super) fn provider_tls(raw: &RawOidc, issues: &mut Issues) -> ProviderTls {
    let ca_pem = raw
        .tls_ca_file
        .as_ref()
        .and_then(|f| read_pem(issues, "oidc.tls_ca_file", f, Pem::Certificates));
    let client = client_certificate(
        issues,
        "oidc",
        raw.tls_cert_file.as_deref(),
        raw.tls_key_file.as_deref(),
    );
    ProviderTls { ca_pem, client }
}

/// `oidc.issuer`: https, or plain http on loopback or when explicitly
/// allowed for a development stack.
fn issuer(raw: &RawOidc, issues: &mut Issues) -> Option<Url> {
    let Some(s) = &raw.issuer else {
        issues.add(
            "oidc.issuer",
            "missing; set the provider's issuer URL, e.g. \"https://id.example.com/realms/main\"",
        );
        return None;
    };
    let shown = super::common::shown_url(s);
    match Url::parse(s) {
        // The issuer is an identifier compared with the provider's own
        // (OpenID Connect Discovery §3, RFC 8414 §2: no query, no
        // fragment); credentials have no place in it.
        Ok(u) if let Some(part) = super::common::url_extra(&u, false) => {
            issues.add(
                "oidc.issuer",
                format!("`{shown}` must not contain {part}; write the provider's issuer as it publishes it, e.g. \"https://id.example.com/realms/main\""),
            );
            None
        }
        Ok(u) if u.scheme() == "https" => Some(u),
        Ok(u) if u.scheme() == "http" && (is_loopback_host(&u) || raw.allow_insecure_issuer) => {
            Some(u)
        }
        Ok(u) if u.scheme() == "http" => {
            issues.add(
                "oidc.issuer",
                format!("`{shown}` uses plain http on a non-loopback host; use https, or set oidc.allow_insecure_issuer = true for a development stack"),
            );
            None
        }
        Ok(_) => {
            issues.add("oidc.issuer", format!("`{shown}` must be an https:// URL"));
            None
        }
        Err(e) => {
            issues.add(
                "oidc.issuer",
                super::common::not_a_url(&shown, e, "https://id.example.com/realms/main"),
            );
            None
        }
    }
}

/// Only asymmetric algorithms: `none` accepts unsigned tokens, and HS* ones
/// are keyed with the client secret, which is not the provider's alone.
fn parse_algorithm(name: &str) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm::*;
    Some(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn login_parameters_name_extras_the_gateway_does_not_set_itself() {
        let with = |list: &str| {
            minimal().replace(
                "client_id = \"bff\"",
                &format!("client_id = \"bff\"\nextra_auth_params = {{ audience = \"x\" }}\nlogin_parameters = {list}"),
            )
        };
        let ok = load_str(&with("[\"organization\", \"claims_locales\"]"), &[]).expect("valid");
        assert_eq!(ok.oidc.login_parameters, ["organization", "claims_locales"]);
        let err = load_str(
            &with(
                "[\"Org\", \"state\", \"prompt\", \"org\", \"org\", \"audience\", \"return_to\"]",
            ),
            &[],
        )
        .expect_err("invalid");
        assert_eq!(
            keys_of(err.clone()),
            [
                "oidc.login_parameters[0]",
                "oidc.login_parameters[1]",
                "oidc.login_parameters[2]",
                "oidc.login_parameters[4]",
                "oidc.login_parameters[5]",
                "oidc.login_parameters[6]",
            ],
            "{err}"
        );
        let typo = minimal().replace(
            "client_id = \"bff\"",
            "client_id = \"bff\"\nlogin_parameter = []",
        );
        let err = load_str(&typo, &[]).expect_err("unknown key");
        assert!(
            err.to_string().contains("did you mean `login_parameters`?"),
            "{err}"
        );
    }

    #[test]
    fn provider_limits_have_floors_and_a_token_must_fit_in_a_response() {
        let toml = minimal().replace(
            "client_id = \"bff\"",
            "client_id = \"bff\"\nmax_response_bytes = 10\nmax_token_bytes = 20000\nmax_claims = 0",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(
            keys,
            vec![
                "oidc.max_response_bytes",
                "oidc.max_claims",
                "oidc.max_token_bytes"
            ]
        );
    }

    #[test]
    fn none_and_hmac_algorithms_are_refused() {
        let toml = minimal().replace(
            "client_id = \"bff\"",
            "client_id = \"bff\"\nid_token_algorithms = [\"none\", \"HS256\", \"RS256\"]",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(
            keys,
            vec!["oidc.id_token_algorithms[0]", "oidc.id_token_algorithms[1]"]
        );
    }

    #[test]
    fn dpop_is_off_by_default_and_its_algorithm_is_es256_only() {
        let off = load_str(&minimal(), &[]).expect("valid");
        assert!(!off.oidc.dpop);
        let on = minimal().replace("client_id = \"bff\"", "client_id = \"bff\"\ndpop = true");
        assert!(load_str(&on, &[]).expect("valid").oidc.dpop);
        for (alg, says) in [
            ("none", "never accepted"),
            ("HS256", "never accepted"),
            ("RS256", "not supported"),
        ] {
            let toml = minimal().replace(
                "client_id = \"bff\"",
                &format!("client_id = \"bff\"\ndpop = true\ndpop_signing_alg = \"{alg}\""),
            );
            let err = load_str(&toml, &[]).expect_err("refused");
            assert_eq!(keys_of(err.clone()), ["oidc.dpop_signing_alg"], "{err}");
            assert!(
                err.to_string().contains(says) && err.to_string().contains("use \"ES256\""),
                "{err}"
            );
        }
    }
}
