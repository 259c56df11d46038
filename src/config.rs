//! Configuration: loading (defaults → TOML file → environment), secret
//! resolution (inline, environment or `*_file`), and start-up validation that
//! reports every bad key at once, with its name and the fix.
//!
//! This module never reads the process environment: the caller passes the
//! variables in, so tests can run side by side with different settings.
//! Every key is documented on its `Raw*` field; `docs/configuration.md` is the
//! same reference in prose.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use figment::Figment;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use http::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::secret::{SecretKey, SecretString};

/// Environment variables with this prefix override file keys:
/// `OIDC_BFF__SECTION__KEY` sets `[section] key`.
pub const ENV_PREFIX: &str = "OIDC_BFF__";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

// ---------------------------------------------------------------------------
// Raw configuration: what the file and environment say, before validation.
// ---------------------------------------------------------------------------

/// The whole file, as written. Field docs are the configuration reference.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub oidc: RawOidc,
    pub session: RawSession,
    pub store: RawStore,
    pub csrf: RawCsrf,
    pub proxy: RawProxy,
    pub routes: Vec<RawRoute>,
    #[serde(rename = "static")]
    pub static_files: RawStatic,
    pub admin: RawAdmin,
    pub metrics: RawMetrics,
    pub log: RawLog,
}

/// A duration: a number of seconds or a humantime string such as `"90s"`,
/// `"15m"`, `"12h"`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"15m\", \"12h\" or a number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Seconds(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDuration, E> {
                u64::try_from(v)
                    .map(RawDuration::Seconds)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl RawDuration {
    fn text(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Socket address to listen on.
    pub listen: String,
    /// The external origin browsers use, e.g. `https://app.example.com`. The
    /// redirect URI registered at the provider is this plus `/auth/callback`.
    pub public_url: Option<String>,
    /// Trust `X-Forwarded-For` from the peer (set when a reverse proxy you
    /// control is in front). Off: the peer address is the client address.
    pub trust_forwarded_headers: bool,
    /// Origins (besides `public_url`) that `return_to` and
    /// `post_logout_redirect` may point at, e.g. `https://admin.example.com`.
    /// Exact origin match: scheme, host and port.
    pub allowed_return_origins: Vec<String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout: RawDuration,
    /// Worker threads, each with its own listener socket (SO_REUSEPORT),
    /// Redis connection and upstream connection pool. 0: one per CPU.
    pub workers: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            trust_forwarded_headers: false,
            allowed_return_origins: Vec::new(),
            shutdown_timeout: RawDuration::text("30s"),
            workers: 0,
        }
    }
}

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
    /// How the client authenticates at the token endpoint:
    /// `client_secret_basic` or `client_secret_post`.
    pub auth_method: String,
    /// Scopes to request; must include `openid`.
    pub scopes: Vec<String>,
    /// Extra parameters for the authorization request (e.g. `audience`).
    pub extra_auth_params: BTreeMap<String, String>,
    /// Where the browser lands after logout: a path on `public_url` or a URL
    /// on an allowed origin. Register it at the provider as a post-logout
    /// redirect URI.
    pub post_logout_redirect: String,
    /// Send the browser through the provider's `end_session_endpoint` on
    /// logout when the provider has one.
    pub end_session: bool,
    /// Signature algorithms accepted for ID and logout tokens.
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
}

impl Default for RawOidc {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            auth_method: "client_secret_basic".into(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            extra_auth_params: BTreeMap::new(),
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
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    /// Session cookie name. The `__Host-` prefix makes browsers insist on
    /// Secure, Path=/ and no Domain.
    pub cookie_name: String,
    /// `strict` (default) or `lax`.
    pub same_site: String,
    /// Cookie `Domain` attribute. Needs a name without `__Host-` (e.g.
    /// `__Secure-oidc-bff`): a domain cookie is sent to every subdomain.
    pub cookie_domain: Option<String>,
    /// Drop the `Secure` attribute so cookies work over plain HTTP on a
    /// non-localhost host. Needs a cookie name without `__Host-`/`__Secure-`.
    /// Logged as a warning at start-up.
    pub insecure_cookies: bool,
    /// Sliding inactivity limit.
    pub idle_timeout: RawDuration,
    /// Hard limit from login, whatever the activity.
    pub absolute_timeout: RawDuration,
    /// Last-activity (and the idle deadline) is written at most this often.
    pub touch_interval: RawDuration,
    /// Refresh the access token when it expires within this much time.
    pub refresh_skew: RawDuration,
    /// Sessions one user may hold; the oldest is evicted beyond it. 0 = no limit.
    pub max_per_user: u32,
    /// Server encryption keys; the first encrypts, all decrypt (rotation).
    pub encryption_keys: Vec<RawKey>,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            cookie_name: "__Host-oidc-bff".into(),
            same_site: "strict".into(),
            cookie_domain: None,
            insecure_cookies: false,
            idle_timeout: RawDuration::text("1h"),
            absolute_timeout: RawDuration::text("12h"),
            touch_interval: RawDuration::text("60s"),
            refresh_skew: RawDuration::text("30s"),
            max_per_user: 0,
            encryption_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKey {
    /// Short identifier stored with each record, e.g. `2026-11`.
    pub id: String,
    /// 32 random bytes, base64 (`openssl rand -base64 32`).
    pub key: Option<String>,
    /// A file holding the base64 key instead.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `redis` or `memory` (single instance, development only).
    pub kind: String,
    /// `redis://host:port` or `rediss://host:port` (TLS); default
    /// `redis://127.0.0.1:6379`. Not with `sentinels`.
    pub url: Option<String>,
    /// Sentinel `host:port` addresses: when set, the gateway asks them for
    /// the current master of `sentinel_master` and follows failovers.
    pub sentinels: Vec<String>,
    /// The master (service) name the Sentinels monitor.
    pub sentinel_master: Option<String>,
    /// ACL user on the Sentinels, when they require one.
    pub sentinel_username: Option<String>,
    /// Password of the Sentinels (their `requirepass`), not of the data nodes.
    pub sentinel_password: Option<String>,
    /// A file holding the Sentinels' password.
    pub sentinel_password_file: Option<PathBuf>,
    /// TLS to the Sentinels and to the master they name (`tls_*_file`
    /// apply to both).
    pub sentinel_tls: bool,
    /// Redis Cluster: `host:port` of some cluster nodes (the client learns
    /// the rest). Every key must then share one hash slot: `key_prefix`
    /// needs a hash tag such as `{oidc-bff}:`.
    pub cluster_nodes: Vec<String>,
    /// TLS to the cluster's nodes (`tls_*_file` apply).
    pub cluster_tls: bool,
    /// Redis ACL user name.
    pub username: Option<String>,
    /// Redis password (prefer `password_file` or the environment).
    pub password: Option<String>,
    /// A file holding the Redis password.
    pub password_file: Option<PathBuf>,
    /// Redis logical database index.
    pub db: i64,
    /// Prefix of every key this gateway writes.
    pub key_prefix: String,
    /// PEM file of the CA that signed the Redis server's certificate, for
    /// `rediss://` with a private CA (default: the public web PKI roots).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for Redis servers that require one
    /// (`tls-auth-clients yes`); needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Limit for each store operation; past it requests get 503.
    pub timeout: RawDuration,
    /// Limit for establishing a connection.
    pub connect_timeout: RawDuration,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            kind: "redis".into(),
            url: None,
            sentinels: Vec::new(),
            sentinel_master: None,
            sentinel_username: None,
            sentinel_password: None,
            sentinel_password_file: None,
            sentinel_tls: false,
            cluster_nodes: Vec::new(),
            cluster_tls: false,
            username: None,
            password: None,
            password_file: None,
            db: 0,
            key_prefix: "oidc-bff:".into(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            timeout: RawDuration::text("2s"),
            connect_timeout: RawDuration::text("2s"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCsrf {
    /// Header every state-changing API call must carry.
    pub header: String,
    /// Its required value.
    pub value: String,
}

impl Default for RawCsrf {
    fn default() -> Self {
        Self {
            header: "X-CSRF".into(),
            value: "1".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    /// Limit for opening a connection to an upstream (then 504).
    pub connect_timeout: RawDuration,
    /// How long an idle upstream connection is kept for reuse.
    pub pool_idle_timeout: RawDuration,
    /// PEM file of the CA(s) to trust for `https://` upstreams instead of
    /// the public roots.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate presented to `https://` upstreams that demand
    /// one (mutual TLS); needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            connect_timeout: RawDuration::text("5s"),
            pool_idle_timeout: RawDuration::text("90s"),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoute {
    /// Path prefix, matched on segment boundaries (`/api` matches `/api` and
    /// `/api/x`, not `/apix`).
    pub path: String,
    /// Upstream base URL (`http://` or `https://`); a path in it is prepended.
    pub upstream: String,
    /// Remove `path` before forwarding.
    pub strip_prefix: bool,
    /// `required` (401 without a session), `optional` (token attached when
    /// logged in) or `none` (no session lookup, no token).
    pub auth: String,
    /// Limit for the upstream's response headers (then 504).
    pub timeout: RawDuration,
    /// Pass the browser's other cookies (never the gateway's own) to the
    /// upstream. Off by default: the `Cookie` header is removed.
    pub forward_cookies: bool,
}

impl Default for RawRoute {
    fn default() -> Self {
        Self {
            path: String::new(),
            upstream: String::new(),
            strip_prefix: false,
            auth: "required".into(),
            timeout: RawDuration::text("30s"),
            forward_cookies: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStatic {
    /// Directory of the single-page app to serve on `/` (unset: nothing).
    pub dir: Option<PathBuf>,
    /// Serve `index.html` for unknown paths without a file extension
    /// (client-side routes).
    pub spa_fallback: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Listen address of the admin API; unset keeps it off.
    pub listen: Option<String>,
    /// Bearer secret the admin API requires (prefer `token_file`).
    pub token: Option<String>,
    /// A file holding the admin bearer secret.
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Listen address for Prometheus metrics (`GET /metrics`); unset keeps
    /// it off. Unauthenticated: bind it to a private address.
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `oidc_bff=debug,info`.
    pub level: String,
    /// One INFO line per request (method, path, status, latency).
    pub access_log: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
            access_log: true,
        }
    }
}

// ---------------------------------------------------------------------------
// Validated configuration: what the gateway runs with.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub oidc: OidcConfig,
    pub session: SessionConfig,
    pub store: StoreConfig,
    pub csrf: CsrfConfig,
    pub proxy: ProxyConfig,
    pub routes: Vec<RouteConfig>,
    pub static_files: Option<StaticConfig>,
    pub admin: Option<AdminConfig>,
    /// Where `GET /metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Origin only (`scheme://host[:port]`), no path.
    pub public_url: Url,
    pub trust_forwarded_headers: bool,
    /// ASCII-serialised origins, `public_url`'s first.
    pub allowed_return_origins: Vec<String>,
    pub shutdown_timeout: Duration,
    /// Resolved: at least 1.
    pub workers: usize,
}

impl ServerConfig {
    pub fn redirect_uri(&self) -> String {
        format!("{}/auth/callback", self.public_origin())
    }

    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: Url,
    pub client_id: String,
    pub client_secret: SecretString,
    pub auth_method: AuthMethod,
    pub scopes: Vec<String>,
    pub extra_auth_params: Vec<(String, String)>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
}

#[derive(Debug, Clone)]
pub struct ServerKeyConfig {
    pub id: String,
    pub key: SecretKey,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub same_site: SameSite,
    pub cookie_domain: Option<String>,
    pub secure_cookies: bool,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub touch_interval: Duration,
    pub refresh_skew: Duration,
    pub max_per_user: Option<u32>,
    pub keys: Vec<ServerKeyConfig>,
}

impl SessionConfig {
    /// The defaults of `[session]` with the given keys: for tools and tests
    /// that need sessions without a whole configuration file.
    pub fn with_keys(keys: Vec<ServerKeyConfig>) -> Self {
        Self {
            cookie_name: "__Host-oidc-bff".into(),
            same_site: SameSite::Strict,
            cookie_domain: None,
            secure_cookies: true,
            idle_timeout: Duration::from_secs(3600),
            absolute_timeout: Duration::from_secs(12 * 3600),
            touch_interval: Duration::from_secs(60),
            refresh_skew: Duration::from_secs(30),
            max_per_user: None,
            keys,
        }
    }

    /// The login-binding cookie is named after the session cookie.
    pub fn login_cookie_name(&self) -> String {
        format!("{}-login", self.cookie_name)
    }
}

#[derive(Debug, Clone)]
pub enum StoreKind {
    Memory,
    Redis(Box<RedisConfig>),
}

/// Which Redis server holds the sessions.
#[derive(Debug, Clone)]
pub enum RedisEndpoint {
    /// One fixed server (`store.url`).
    Url(Url),
    /// Whatever server the Sentinels name as master right now.
    Sentinel(SentinelConfig),
    /// A Redis Cluster, reached through these seed nodes; all of the
    /// gateway's keys live in the one slot of the key prefix's hash tag.
    Cluster {
        nodes: Vec<(String, u16)>,
        /// TLS to every node (`store.cluster_tls`).
        tls: bool,
    },
}

#[derive(Debug, Clone)]
pub struct SentinelConfig {
    pub nodes: Vec<(String, u16)>,
    pub master: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// TLS to the Sentinels and the master (`store.sentinel_tls`).
    pub tls: bool,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub endpoint: RedisEndpoint,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub db: i64,
    pub connect_timeout: Duration,
    /// PEM roots to trust instead of the public ones (`store.tls_ca_file`).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// The certificate the gateway presents to Redis (mutual TLS).
    pub tls_client: Option<ClientCertificate>,
}

/// A TLS client certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub cert_pem: Vec<u8>,
    pub key_pem: SecretString,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub key_prefix: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct CsrfConfig {
    pub header: HeaderName,
    pub value: HeaderValue,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// PEM roots to trust for upstreams instead of the public ones.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// The certificate the gateway presents to `https://` upstreams.
    pub tls_client: Option<ClientCertificate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    Required,
    Optional,
    None,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub path: String,
    pub upstream: Url,
    pub strip_prefix: bool,
    pub auth: RouteAuth,
    pub timeout: Duration,
    pub forward_cookies: bool,
}

#[derive(Debug, Clone)]
pub struct StaticConfig {
    pub dir: PathBuf,
    pub spa_fallback: bool,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: SecretString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found; the gateway does not start with any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for issue in &self.0 {
            writeln!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Reads the file (if any) and the `OIDC_BFF__*` variables among `env`, and
/// returns the merged raw configuration with defaults filled in.
pub fn load_raw(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig, ConfigErrors> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.is_file() {
            return Err(ConfigErrors(vec![ConfigIssue {
                key: "--config".into(),
                message: format!(
                    "file {} does not exist or is not a file; pass the path of a TOML config \
                     (see config/oidc-bff.example.toml)",
                    path.display()
                ),
            }]));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(EnvVars::new(env));

    let mut issues = Issues::default();
    // Unknown top-level sections and TOML syntax errors first.
    match figment.extract::<BTreeMap<String, Value>>() {
        Ok(top) => {
            const KNOWN: &[&str] = &[
                "server", "oidc", "session", "store", "csrf", "proxy", "routes", "static", "admin",
                "metrics", "log",
            ];
            for key in top.keys() {
                if !KNOWN.contains(&key.as_str()) {
                    issues.add(
                        key.clone(),
                        format!("unknown section; expected one of {}", KNOWN.join(", ")),
                    );
                }
            }
        }
        Err(e) => {
            push_figment_errors(&mut issues, e, None);
            return Err(ConfigErrors(issues.0));
        }
    }

    // Each section is extracted on its own so that a mistake in one does not
    // hide mistakes in the others.
    let mut raw = RawConfig::default();
    section(&figment, "server", &mut raw.server, &mut issues);
    section(&figment, "oidc", &mut raw.oidc, &mut issues);
    section(&figment, "session", &mut raw.session, &mut issues);
    section(&figment, "store", &mut raw.store, &mut issues);
    section(&figment, "csrf", &mut raw.csrf, &mut issues);
    section(&figment, "proxy", &mut raw.proxy, &mut issues);
    section(&figment, "routes", &mut raw.routes, &mut issues);
    section(&figment, "static", &mut raw.static_files, &mut issues);
    section(&figment, "admin", &mut raw.admin, &mut issues);
    section(&figment, "metrics", &mut raw.metrics, &mut issues);
    section(&figment, "log", &mut raw.log, &mut issues);
    if issues.0.is_empty() {
        Ok(raw)
    } else {
        Err(ConfigErrors(issues.0))
    }
}

/// Loads and validates: the configuration the gateway runs with.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let raw = load_raw(path, env)?;
    validate(&raw)
}

fn section<T: DeserializeOwned>(figment: &Figment, name: &str, out: &mut T, issues: &mut Issues) {
    if !figment.contains(name) {
        return;
    }
    match figment.extract_inner::<T>(name) {
        Ok(value) => *out = value,
        Err(e) => push_figment_errors(issues, e, Some(name)),
    }
}

fn push_figment_errors(issues: &mut Issues, error: figment::Error, section: Option<&str>) {
    for mut e in error {
        // `extract_inner` appends the section after the inner path.
        if let Some(section) = section {
            if e.path.last().map(String::as_str) == Some(section) {
                e.path.pop();
            }
            e.path.insert(0, section.to_owned());
        }
        let mut key = String::new();
        for part in &e.path {
            if part.parse::<usize>().is_ok() {
                key.push_str(&format!("[{part}]"));
            } else {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(part);
            }
        }
        if key.is_empty() {
            key = "(file)".into();
        }
        let source = e
            .metadata
            .as_ref()
            .map(|m| match &m.source {
                Some(src) => format!(" (in {src})"),
                None => format!(" (in {})", m.name),
            })
            .unwrap_or_default();
        issues.add(key, format!("{}{source}", e.kind));
    }
}

/// A figment provider over an explicit list of environment variables.
struct EnvVars {
    dict: Dict,
}

impl EnvVars {
    fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut dict = Dict::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            if key.is_empty() {
                continue;
            }
            let value: Value = value.parse().unwrap_or_else(|never| match never {});
            if let Value::Dict(_, nested) = figment::util::nest(&key, value) {
                dict = merge_dicts(dict, nested);
            }
        }
        Self { dict }
    }
}

fn merge_dicts(mut into: Dict, from: Dict) -> Dict {
    for (k, v) in from {
        match (into.remove(&k), v) {
            (Some(Value::Dict(tag, a)), Value::Dict(_, b)) => {
                into.insert(k, Value::Dict(tag, merge_dicts(a, b)));
            }
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
    into
}

impl figment::Provider for EnvVars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable").interpolater(|_, keys: &[&str]| {
            format!(
                "{ENV_PREFIX}{}",
                keys.iter()
                    .map(|k| k.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            )
        })
    }

    fn data(&self) -> Result<Map<figment::Profile, Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.dict.clone()))
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

fn duration(issues: &mut Issues, key: &str, raw: &RawDuration) -> Duration {
    match raw {
        RawDuration::Seconds(s) => Duration::from_secs(*s),
        RawDuration::Text(t) => match humantime::parse_duration(t.trim()) {
            Ok(d) => d,
            Err(e) => {
                issues.add(
                    key,
                    format!(
                        "`{t}` is not a duration ({e}); write e.g. \"30s\", \"15m\" or \"12h\""
                    ),
                );
                Duration::ZERO
            }
        },
    }
}

fn positive_duration(issues: &mut Issues, key: &str, raw: &RawDuration) -> Duration {
    let d = duration(issues, key, raw);
    if d.is_zero()
        && !matches!(raw, RawDuration::Text(t) if humantime::parse_duration(t.trim()).is_err())
    {
        issues.add(key, "must be greater than zero");
    }
    d
}

/// Exactly one of an inline value and a file; a file's trailing newline is
/// dropped.
/// `store.url`: one fixed Redis server.
fn redis_url(issues: &mut Issues, st: &RawStore) -> RedisEndpoint {
    let text = st.url.as_deref().unwrap_or(DEFAULT_REDIS_URL);
    match Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host().is_some() => {
            if u.password().is_some() {
                issues.add("store.url", "do not put the password in the URL (it would show in `check-config`); use store.password or store.password_file");
            }
            RedisEndpoint::Url(u)
        }
        _ => {
            issues.add(
                "store.url",
                format!("`{text}` must be redis://host:port or rediss://host:port"),
            );
            RedisEndpoint::Url(Url::parse(DEFAULT_REDIS_URL).expect("default URL"))
        }
    }
}

/// `store.sentinels` and friends: the master the Sentinels name.
fn redis_sentinel(issues: &mut Issues, st: &RawStore) -> RedisEndpoint {
    if st.url.is_some() {
        issues.add(
            "store.url",
            "set either store.url (one server) or store.sentinels (Sentinel), not both",
        );
    }
    let nodes = host_ports(issues, "store.sentinels", &st.sentinels, 26379);
    let master = match st.sentinel_master.as_deref() {
        Some(m) if !m.is_empty() && !m.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            m.to_owned()
        }
        Some(_) => {
            issues.add("store.sentinel_master", "must be a name without whitespace");
            String::new()
        }
        None => {
            issues.add(
                "store.sentinel_master",
                "missing; with store.sentinels, name the master they monitor (`sentinel monitor <name> ...`)",
            );
            String::new()
        }
    };
    let password = secret_from(
        issues,
        "store.sentinel_password",
        st.sentinel_password.as_ref(),
        st.sentinel_password_file.as_ref(),
        false,
    );
    RedisEndpoint::Sentinel(SentinelConfig {
        nodes,
        master,
        username: st.sentinel_username.clone(),
        password,
        tls: st.sentinel_tls,
    })
}

/// `store.cluster_nodes`: a Redis Cluster, every key in one hash slot.
fn redis_cluster(issues: &mut Issues, st: &RawStore) -> RedisEndpoint {
    if st.url.is_some() {
        issues.add(
            "store.url",
            "set either store.url (one server) or store.cluster_nodes (Cluster), not both",
        );
    }
    if st.db != 0 {
        issues.add(
            "store.db",
            "must be 0 with store.cluster_nodes (a Redis Cluster has one database)",
        );
    }
    if !has_hash_tag(&st.key_prefix) {
        issues.add(
            "store.key_prefix",
            format!(
                "`{}` has no hash tag; with store.cluster_nodes write it like \"{{oidc-bff}}:\" so every key of the gateway lands in one hash slot (its scripts change several keys at once)",
                st.key_prefix
            ),
        );
    }
    RedisEndpoint::Cluster {
        nodes: host_ports(issues, "store.cluster_nodes", &st.cluster_nodes, 6379),
        tls: st.cluster_tls,
    }
}

/// Whether Redis Cluster hashes `prefix...` by a `{tag}` in the prefix: the
/// first `{` followed, later, by a `}` with something in between.
fn has_hash_tag(prefix: &str) -> bool {
    prefix
        .find('{')
        .and_then(|open| prefix[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// `host:port` entries of `key` (IPv6 as `[::1]:port`).
fn host_ports(
    issues: &mut Issues,
    key: &str,
    nodes: &[String],
    example_port: u16,
) -> Vec<(String, u16)> {
    let mut out = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let parsed = node
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, p)| !h.is_empty() && *p > 0 && !h.contains('/'));
        match parsed {
            Some((h, p)) => out.push((h.to_owned(), p)),
            None => issues.add(
                format!("{key}[{i}]"),
                format!("`{node}` must be host:port, e.g. \"10.0.0.5:{example_port}\""),
            ),
        }
    }
    out
}

/// `store.tls_ca_file`: the private CA of a `rediss://` server.
fn redis_ca(issues: &mut Issues, st: &RawStore) -> Option<Vec<u8>> {
    let f = st.tls_ca_file.as_ref()?;
    if !redis_tls_applies(issues, st, "store.tls_ca_file") {
        return None;
    }
    read_pem(issues, "store.tls_ca_file", f, Pem::Certificates)
}

/// `store.tls_cert_file` + `store.tls_key_file`: mutual TLS with Redis.
fn redis_client_certificate(issues: &mut Issues, st: &RawStore) -> Option<ClientCertificate> {
    let (cert, key) = certificate_files(
        issues,
        "store",
        st.tls_cert_file.as_deref(),
        st.tls_key_file.as_deref(),
    )?;
    if !redis_tls_applies(issues, st, "store.tls_cert_file") {
        return None;
    }
    read_client_certificate(issues, "store", cert, key)
}

/// `<section>.tls_cert_file` and `<section>.tls_key_file`: both or neither.
fn certificate_files<'a>(
    issues: &mut Issues,
    section: &str,
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
) -> Option<(&'a Path, &'a Path)> {
    match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c, k)),
        (Some(_), None) => {
            issues.add(
                format!("{section}.tls_key_file"),
                format!("missing; {section}.tls_cert_file needs the file with its private key"),
            );
            None
        }
        (None, Some(_)) => {
            issues.add(
                format!("{section}.tls_cert_file"),
                format!("missing; {section}.tls_key_file needs the file with its certificate"),
            );
            None
        }
    }
}

/// Reads and checks a client certificate and its key (mutual TLS).
fn read_client_certificate(
    issues: &mut Issues,
    section: &str,
    cert: &Path,
    key: &Path,
) -> Option<ClientCertificate> {
    let key_name = format!("{section}.tls_key_file");
    let cert_pem = read_pem(
        issues,
        &format!("{section}.tls_cert_file"),
        cert,
        Pem::Certificates,
    );
    let key_pem = read_pem(issues, &key_name, key, Pem::PrivateKey).and_then(|pem| {
        match String::from_utf8(pem) {
            Ok(text) => Some(SecretString::new(text)),
            Err(_) => {
                issues.add(key_name.clone(), "is not a text PEM file");
                None
            }
        }
    });
    Some(ClientCertificate {
        cert_pem: cert_pem?,
        key_pem: key_pem?,
    })
}

/// A client certificate outside the store (`oidc`, `proxy`).
fn client_certificate(
    issues: &mut Issues,
    section: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Option<ClientCertificate> {
    let (cert, key) = certificate_files(issues, section, cert, key)?;
    read_client_certificate(issues, section, cert, key)
}

/// TLS files only make sense with a `rediss://` URL, or with
/// `store.sentinel_tls` in Sentinel mode.
fn redis_tls_applies(issues: &mut Issues, st: &RawStore, key: &str) -> bool {
    if !st.cluster_nodes.is_empty() {
        if !st.cluster_tls {
            issues.add(
                key,
                "only applies with TLS; set store.cluster_tls = true or remove it",
            );
        }
        return st.cluster_tls;
    }
    if !st.sentinels.is_empty() {
        if !st.sentinel_tls {
            issues.add(
                key,
                "only applies with TLS; set store.sentinel_tls = true or remove it",
            );
        }
        return st.sentinel_tls;
    }
    if !st
        .url
        .as_deref()
        .is_some_and(|u| u.starts_with("rediss://"))
    {
        issues.add(
            key,
            "only applies to rediss:// URLs; use rediss:// in store.url or remove it",
        );
        return false;
    }
    true
}

/// What a PEM file given in the configuration must hold.
#[derive(Clone, Copy)]
enum Pem {
    /// One or more certificates (a CA bundle, a client certificate).
    Certificates,
    /// One unencrypted private key.
    PrivateKey,
}

/// Reads a PEM file and checks that it parses as `want`, so a damaged file
/// is reported by `check-config` under its key rather than at first use.
fn read_pem(issues: &mut Issues, key: &str, path: &Path, want: Pem) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) => {
            issues.add(key, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    let problem = match want {
        Pem::Certificates => {
            match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
                Ok(certs) if certs.is_empty() => {
                    Some(format!("{} holds no PEM certificate", path.display()))
                }
                Ok(_) => None,
                Err(e) => Some(format!(
                    "{}: not a valid PEM certificate: {e}",
                    path.display()
                )),
            }
        }
        Pem::PrivateKey => PrivateKeyDer::from_pem_slice(&pem).err().map(|e| {
            format!(
                "{} holds no PEM PRIVATE KEY (unencrypted PKCS#8, PKCS#1 or SEC1): {e}",
                path.display()
            )
        }),
    };
    match problem {
        Some(message) => {
            issues.add(key, message);
            None
        }
        None => Some(pem),
    }
}

fn secret_from(
    issues: &mut Issues,
    key: &str,
    inline: Option<&String>,
    file: Option<&PathBuf>,
    required: bool,
) -> Option<SecretString> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            issues.add(key, format!("set either `{key}` or `{key}_file`, not both"));
            None
        }
        (Some(v), None) => {
            if v.is_empty() {
                issues.add(key, "must not be empty");
                None
            } else {
                Some(SecretString::new(v.clone()))
            }
        }
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(content) => {
                let trimmed = content.trim_end_matches(['\n', '\r']).to_owned();
                if trimmed.is_empty() {
                    issues.add(
                        format!("{key}_file"),
                        format!("{} is empty", path.display()),
                    );
                    None
                } else {
                    Some(SecretString::new(trimmed))
                }
            }
            Err(e) => {
                issues.add(
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        },
        (None, None) => {
            if required {
                let env = format!(
                    "{ENV_PREFIX}{}",
                    key.to_ascii_uppercase().replace('.', "__")
                );
                issues.add(
                    key,
                    format!(
                        "missing; set `{key}`, `{key}_file`, or the environment variable {env}"
                    ),
                );
            }
            None
        }
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

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

/// Checks every key and builds the typed configuration, or lists every
/// problem found.
pub fn validate(raw: &RawConfig) -> Result<Config, ConfigErrors> {
    let mut issues = Issues::default();

    // [server]
    let listen = raw.server.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        issues.add(
            "server.listen",
            format!(
                "`{}` is not a socket address; write e.g. \"0.0.0.0:8080\"",
                raw.server.listen
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let public_url = match &raw.server.public_url {
        None => {
            issues.add(
                "server.public_url",
                "missing; set the origin browsers use, e.g. \"https://app.example.com\"",
            );
            None
        }
        Some(s) => match Url::parse(s) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                issues.add(
                    "server.public_url",
                    format!("`{s}` must be http:// or https://"),
                );
                None
            }
            Ok(u) if u.path() != "/" || u.query().is_some() || u.fragment().is_some() => {
                issues.add(
                    "server.public_url",
                    format!("`{s}` must be an origin only (no path, query or fragment)"),
                );
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                issues.add("server.public_url", "must not contain user info");
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                issues.add("server.public_url", format!("`{s}` is not a URL: {e}"));
                None
            }
        },
    };
    let mut allowed_return_origins = Vec::new();
    if let Some(u) = &public_url {
        allowed_return_origins.push(u.origin().ascii_serialization());
    }
    for (i, o) in raw.server.allowed_return_origins.iter().enumerate() {
        let key = format!("server.allowed_return_origins[{i}]");
        match Url::parse(o) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.username().is_empty() =>
            {
                allowed_return_origins.push(u.origin().ascii_serialization())
            }
            _ => issues.add(
                key,
                format!("`{o}` must be an origin like \"https://app.example.com\""),
            ),
        }
    }
    if raw.server.workers > 1024 {
        issues.add(
            "server.workers",
            "must be at most 1024 (0 means one per CPU)",
        );
    }
    let shutdown_timeout = duration(
        &mut issues,
        "server.shutdown_timeout",
        &raw.server.shutdown_timeout,
    );

    // [oidc]
    let issuer = match &raw.oidc.issuer {
        None => {
            issues.add("oidc.issuer", "missing; set the provider's issuer URL, e.g. \"https://id.example.com/realms/main\"");
            None
        }
        Some(s) => match Url::parse(s) {
            Ok(u) if u.scheme() == "https" => Some(u),
            Ok(u)
                if u.scheme() == "http"
                    && (is_loopback_host(&u) || raw.oidc.allow_insecure_issuer) =>
            {
                Some(u)
            }
            Ok(u) if u.scheme() == "http" => {
                issues.add(
                    "oidc.issuer",
                    format!("`{s}` uses plain http on a non-loopback host; use https, or set oidc.allow_insecure_issuer = true for a development stack"),
                );
                let _ = u;
                None
            }
            Ok(_) => {
                issues.add("oidc.issuer", format!("`{s}` must be an https:// URL"));
                None
            }
            Err(e) => {
                issues.add("oidc.issuer", format!("`{s}` is not a URL: {e}"));
                None
            }
        },
    };
    let client_id = match &raw.oidc.client_id {
        Some(c) if !c.is_empty() => c.clone(),
        _ => {
            issues.add(
                "oidc.client_id",
                "missing; set the client ID registered at the provider",
            );
            String::new()
        }
    };
    let client_secret = secret_from(
        &mut issues,
        "oidc.client_secret",
        raw.oidc.client_secret.as_ref(),
        raw.oidc.client_secret_file.as_ref(),
        true,
    );
    let auth_method = match raw.oidc.auth_method.as_str() {
        "client_secret_basic" => AuthMethod::ClientSecretBasic,
        "client_secret_post" => AuthMethod::ClientSecretPost,
        other => {
            issues.add(
                "oidc.auth_method",
                format!("`{other}` is not supported; use \"client_secret_basic\" or \"client_secret_post\""),
            );
            AuthMethod::ClientSecretBasic
        }
    };
    if !raw.oidc.scopes.iter().any(|s| s == "openid") {
        issues.add("oidc.scopes", "must include \"openid\"");
    }
    for (i, s) in raw.oidc.scopes.iter().enumerate() {
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
    const RESERVED: &[&str] = &[
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ];
    for k in raw.oidc.extra_auth_params.keys() {
        if RESERVED.contains(&k.as_str()) {
            issues.add(
                format!("oidc.extra_auth_params.{k}"),
                "is set by the gateway itself and cannot be overridden",
            );
        }
    }
    let post_logout_redirect = public_url.as_ref().and_then(|base| {
        match crate::url_policy::return_to::resolve(
            &raw.oidc.post_logout_redirect,
            base,
            &allowed_return_origins,
        ) {
            Ok(u) => Some(u),
            Err(e) => {
                issues.add(
                    "oidc.post_logout_redirect",
                    format!(
                        "`{}` {e}; use a path such as \"/\" or a URL on an allowed origin",
                        raw.oidc.post_logout_redirect
                    ),
                );
                None
            }
        }
    });
    let mut id_token_algorithms = Vec::new();
    for (i, a) in raw.oidc.id_token_algorithms.iter().enumerate() {
        match parse_algorithm(a) {
            Some(alg) => id_token_algorithms.push(alg),
            None => issues.add(
                format!("oidc.id_token_algorithms[{i}]"),
                format!("`{a}` is not accepted; use asymmetric algorithms: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (never none or HS*)"),
            ),
        }
    }
    if raw.oidc.id_token_algorithms.is_empty() {
        issues.add(
            "oidc.id_token_algorithms",
            "must list at least one algorithm, e.g. [\"RS256\"]",
        );
    }
    let clock_skew = duration(&mut issues, "oidc.clock_skew", &raw.oidc.clock_skew);
    if clock_skew > Duration::from_secs(300) {
        issues.add("oidc.clock_skew", "must be at most 5m");
    }
    let http_timeout = positive_duration(&mut issues, "oidc.http_timeout", &raw.oidc.http_timeout);
    let login_timeout =
        positive_duration(&mut issues, "oidc.login_timeout", &raw.oidc.login_timeout);
    let jwks_min_refresh_interval = duration(
        &mut issues,
        "oidc.jwks_min_refresh_interval",
        &raw.oidc.jwks_min_refresh_interval,
    );
    let metadata_refresh_interval = positive_duration(
        &mut issues,
        "oidc.metadata_refresh_interval",
        &raw.oidc.metadata_refresh_interval,
    );

    let discovery_url = raw
        .oidc
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

    // [session]
    let s = &raw.session;
    let same_site = match s.same_site.to_ascii_lowercase().as_str() {
        "strict" => SameSite::Strict,
        "lax" => SameSite::Lax,
        other => {
            issues.add(
                "session.same_site",
                format!("`{other}` must be \"strict\" or \"lax\""),
            );
            SameSite::Strict
        }
    };
    let name_ok = !s.cookie_name.is_empty()
        && s.cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        issues.add(
            "session.cookie_name",
            format!(
                "`{}` must be non-empty and use only letters, digits, '-', '_' and '.'",
                s.cookie_name
            ),
        );
    }
    let host_prefix = s.cookie_name.starts_with("__Host-");
    let secure_prefix = s.cookie_name.starts_with("__Secure-");
    if s.cookie_domain.is_some() && host_prefix {
        issues.add("session.cookie_domain", "a __Host- cookie cannot have a Domain; rename session.cookie_name (e.g. \"__Secure-oidc-bff\") or remove cookie_domain");
    }
    if s.insecure_cookies && (host_prefix || secure_prefix) {
        issues.add("session.insecure_cookies", "browsers refuse __Host-/__Secure- cookies without Secure; with insecure_cookies = true also set session.cookie_name to a name without the prefix");
    }
    let secure_cookies = !s.insecure_cookies;
    if let Some(u) = &public_url
        && u.scheme() == "http"
        && !is_loopback_host(u)
        && secure_cookies
    {
        issues.add(
                "server.public_url",
                format!("`{u}` is plain http on a non-localhost host, where browsers drop Secure cookies; serve it over https, or set session.insecure_cookies = true (development only)"),
            );
    }
    let idle_timeout = positive_duration(&mut issues, "session.idle_timeout", &s.idle_timeout);
    let absolute_timeout =
        positive_duration(&mut issues, "session.absolute_timeout", &s.absolute_timeout);
    if idle_timeout > absolute_timeout && !absolute_timeout.is_zero() {
        issues.add(
            "session.idle_timeout",
            "must not exceed session.absolute_timeout",
        );
    }
    let touch_interval = duration(&mut issues, "session.touch_interval", &s.touch_interval);
    if touch_interval >= idle_timeout && !idle_timeout.is_zero() {
        issues.add(
            "session.touch_interval",
            "must be shorter than session.idle_timeout",
        );
    }
    let refresh_skew = duration(&mut issues, "session.refresh_skew", &s.refresh_skew);
    let mut keys = Vec::new();
    if s.encryption_keys.is_empty() {
        issues.add(
            "session.encryption_keys",
            "missing; add at least one key: encryption_keys = [{ id = \"k1\", key = \"<output of: openssl rand -base64 32>\" }]",
        );
    }
    let mut seen_ids = BTreeSet::new();
    for (i, k) in s.encryption_keys.iter().enumerate() {
        let prefix = format!("session.encryption_keys[{i}]");
        if k.id.is_empty()
            || k.id.len() > 32
            || !k
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            issues.add(
                format!("{prefix}.id"),
                format!(
                    "`{}` must be 1-32 characters of letters, digits, '-', '_', '.'",
                    k.id
                ),
            );
        } else if !seen_ids.insert(k.id.clone()) {
            issues.add(
                format!("{prefix}.id"),
                format!("`{}` is used by another key", k.id),
            );
        }
        let key_name = format!("{prefix}.key");
        if let Some(material) = secret_from(
            &mut issues,
            &key_name,
            k.key.as_ref(),
            k.key_file.as_ref(),
            true,
        ) {
            match decode_key(material.expose()) {
                Ok(bytes) => keys.push(ServerKeyConfig {
                    id: k.id.clone(),
                    key: SecretKey::from_bytes(bytes),
                }),
                Err(msg) => issues.add(key_name, msg),
            }
        }
    }
    let max_per_user = (s.max_per_user > 0).then_some(s.max_per_user);

    // [store]
    let st = &raw.store;
    let kind = match st.kind.as_str() {
        "memory" => StoreKind::Memory,
        "redis" => {
            let password = secret_from(
                &mut issues,
                "store.password",
                st.password.as_ref(),
                st.password_file.as_ref(),
                false,
            );
            let connect_timeout =
                positive_duration(&mut issues, "store.connect_timeout", &st.connect_timeout);
            if st.db < 0 {
                issues.add("store.db", "must be 0 or more");
            }
            if st.cluster_tls && st.cluster_nodes.is_empty() {
                issues.add(
                    "store.cluster_tls",
                    "only applies with store.cluster_nodes; for one server use a rediss:// store.url",
                );
            }
            if st.sentinels.is_empty() {
                for (key, set) in [
                    ("store.sentinel_master", st.sentinel_master.is_some()),
                    ("store.sentinel_username", st.sentinel_username.is_some()),
                    ("store.sentinel_password", st.sentinel_password.is_some()),
                    (
                        "store.sentinel_password_file",
                        st.sentinel_password_file.is_some(),
                    ),
                ] {
                    if set {
                        issues.add(
                            key,
                            "only applies with store.sentinels; set those or remove it",
                        );
                    }
                }
            }
            if st.sentinel_tls && st.sentinels.is_empty() {
                issues.add(
                    "store.sentinel_tls",
                    "only applies with store.sentinels; for one server use a rediss:// store.url",
                );
            }
            let endpoint = match (st.sentinels.is_empty(), st.cluster_nodes.is_empty()) {
                (true, true) => redis_url(&mut issues, st),
                (false, true) => redis_sentinel(&mut issues, st),
                (true, false) => redis_cluster(&mut issues, st),
                (false, false) => {
                    issues.add(
                        "store.cluster_nodes",
                        "set either store.sentinels or store.cluster_nodes, not both",
                    );
                    redis_url(&mut issues, st)
                }
            };
            StoreKind::Redis(Box::new(RedisConfig {
                endpoint,
                username: st.username.clone(),
                password,
                db: st.db,
                connect_timeout,
                tls_ca_pem: redis_ca(&mut issues, st),
                tls_client: redis_client_certificate(&mut issues, st),
            }))
        }
        other => {
            issues.add(
                "store.kind",
                format!("`{other}` must be \"redis\" or \"memory\""),
            );
            StoreKind::Memory
        }
    };
    if st.key_prefix.is_empty()
        || st.key_prefix.len() > 64
        || st
            .key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        issues.add(
            "store.key_prefix",
            "must be 1-64 characters without whitespace, e.g. \"oidc-bff:\"",
        );
    }
    let store_timeout = positive_duration(&mut issues, "store.timeout", &st.timeout);

    // [csrf]
    let csrf_header = HeaderName::from_bytes(raw.csrf.header.as_bytes()).unwrap_or_else(|_| {
        issues.add(
            "csrf.header",
            format!("`{}` is not a valid header name", raw.csrf.header),
        );
        HeaderName::from_static("x-csrf")
    });
    if matches!(
        csrf_header.as_str(),
        "cookie" | "content-type" | "accept" | "origin" | "referer" | "authorization"
    ) {
        issues.add(
            "csrf.header",
            "must be a custom header that a cross-site form cannot send, e.g. \"X-CSRF\"",
        );
    }
    let csrf_value = HeaderValue::from_str(&raw.csrf.value)
        .ok()
        .filter(|_| !raw.csrf.value.is_empty())
        .unwrap_or_else(|| {
            issues.add("csrf.value", "must be a non-empty header value");
            HeaderValue::from_static("1")
        });

    // [proxy]
    let proxy = ProxyConfig {
        connect_timeout: positive_duration(
            &mut issues,
            "proxy.connect_timeout",
            &raw.proxy.connect_timeout,
        ),
        pool_idle_timeout: duration(
            &mut issues,
            "proxy.pool_idle_timeout",
            &raw.proxy.pool_idle_timeout,
        ),
        tls_ca_pem: raw
            .proxy
            .tls_ca_file
            .as_ref()
            .and_then(|f| read_pem(&mut issues, "proxy.tls_ca_file", f, Pem::Certificates)),
        tls_client: client_certificate(
            &mut issues,
            "proxy",
            raw.proxy.tls_cert_file.as_deref(),
            raw.proxy.tls_key_file.as_deref(),
        ),
    };

    // [[routes]]
    let mut routes = Vec::new();
    let mut paths = BTreeSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let prefix = format!("routes[{i}]");
        let path_ok = r.path.starts_with('/')
            && (r.path == "/" || !r.path.ends_with('/'))
            && !r.path.contains("//")
            && !r.path.split('/').any(|seg| seg == "." || seg == "..")
            && r.path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'%');
        if !path_ok {
            issues.add(format!("{prefix}.path"), format!("`{}` must be an absolute path prefix like \"/api\" (no trailing slash, query or dot segments)", r.path));
        } else if ["/auth", "/healthz", "/readyz"]
            .iter()
            .any(|p| crate::url_policy::path::path_has_prefix(&r.path, p))
        {
            issues.add(
                format!("{prefix}.path"),
                format!(
                    "`{}` overlaps the gateway's own endpoints (/auth, /healthz, /readyz)",
                    r.path
                ),
            );
        } else if !paths.insert(r.path.clone()) {
            issues.add(
                format!("{prefix}.path"),
                format!("`{}` is used by another route", r.path),
            );
        }
        let upstream = match Url::parse(&r.upstream) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty() =>
            {
                Some(u)
            }
            _ => {
                issues.add(format!("{prefix}.upstream"), format!("`{}` must be an http:// or https:// base URL without query, fragment or user info", r.upstream));
                None
            }
        };
        let auth = match r.auth.as_str() {
            "required" => RouteAuth::Required,
            "optional" => RouteAuth::Optional,
            "none" => RouteAuth::None,
            other => {
                issues.add(
                    format!("{prefix}.auth"),
                    format!("`{other}` must be \"required\", \"optional\" or \"none\""),
                );
                RouteAuth::Required
            }
        };
        let timeout = positive_duration(&mut issues, &format!("{prefix}.timeout"), &r.timeout);
        if let Some(upstream) = upstream {
            routes.push(RouteConfig {
                path: r.path.clone(),
                upstream,
                strip_prefix: r.strip_prefix,
                auth,
                timeout,
                forward_cookies: r.forward_cookies,
            });
        }
    }

    // [static]
    let static_files = raw.static_files.dir.as_ref().map(|dir| {
        if !dir.is_dir() {
            issues.add(
                "static.dir",
                format!("{} is not a directory", dir.display()),
            );
        }
        StaticConfig {
            dir: dir.clone(),
            spa_fallback: raw.static_files.spa_fallback.unwrap_or(true),
        }
    });

    // [admin]
    let admin = raw.admin.listen.as_ref().and_then(|l| {
        let listen = l
            .parse::<SocketAddr>()
            .map_err(|_| {
                issues.add(
                    "admin.listen",
                    format!("`{l}` is not a socket address; write e.g. \"127.0.0.1:9090\""),
                );
            })
            .ok();
        let token = secret_from(
            &mut issues,
            "admin.token",
            raw.admin.token.as_ref(),
            raw.admin.token_file.as_ref(),
            true,
        );
        if let Some(t) = &token
            && t.expose().len() < 32
        {
            issues.add(
                "admin.token",
                "must be at least 32 characters (e.g. `openssl rand -hex 32`)",
            );
        }
        Some(AdminConfig {
            listen: listen?,
            token: token?,
        })
    });

    // [metrics]
    let metrics_listen = raw.metrics.listen.as_ref().and_then(|l| {
        l.parse::<SocketAddr>()
            .map_err(|_| {
                issues.add(
                    "metrics.listen",
                    format!("`{l}` is not a socket address; write e.g. \"127.0.0.1:9091\""),
                )
            })
            .ok()
    });

    // [log]
    let format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            issues.add(
                "log.format",
                format!("`{other}` must be \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
        issues.add(
            "log.level",
            format!(
                "`{}` is not a log filter; write e.g. \"info\" or \"oidc_bff=debug,info\"",
                raw.log.level
            ),
        );
    }

    let oidc_tls_ca_pem = raw
        .oidc
        .tls_ca_file
        .as_ref()
        .and_then(|f| read_pem(&mut issues, "oidc.tls_ca_file", f, Pem::Certificates));
    let oidc_tls_client = client_certificate(
        &mut issues,
        "oidc",
        raw.oidc.tls_cert_file.as_deref(),
        raw.oidc.tls_key_file.as_deref(),
    );

    if !issues.0.is_empty() {
        return Err(ConfigErrors(issues.0));
    }
    // Every `None` above recorded an issue, so these are present.
    let (Some(public_url), Some(issuer), Some(client_secret), Some(post_logout_redirect)) =
        (public_url, issuer, client_secret, post_logout_redirect)
    else {
        return Err(ConfigErrors(vec![ConfigIssue {
            key: "(config)".into(),
            message: "incomplete configuration".into(),
        }]));
    };
    Ok(Config {
        server: ServerConfig {
            workers: match raw.server.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            listen,
            public_url,
            trust_forwarded_headers: raw.server.trust_forwarded_headers,
            allowed_return_origins,
            shutdown_timeout,
        },
        oidc: OidcConfig {
            issuer,
            client_id,
            client_secret,
            auth_method,
            scopes: raw.oidc.scopes.clone(),
            extra_auth_params: raw
                .oidc
                .extra_auth_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            post_logout_redirect,
            end_session: raw.oidc.end_session,
            id_token_algorithms,
            clock_skew,
            http_timeout,
            login_timeout,
            userinfo: raw.oidc.userinfo,
            jwks_min_refresh_interval,
            metadata_refresh_interval,
            discovery_url,
            tls_ca_pem: oidc_tls_ca_pem,
            tls_client: oidc_tls_client,
        },
        session: SessionConfig {
            cookie_name: s.cookie_name.clone(),
            same_site,
            cookie_domain: s.cookie_domain.clone(),
            secure_cookies,
            idle_timeout,
            absolute_timeout,
            touch_interval,
            refresh_skew,
            max_per_user,
            keys,
        },
        store: StoreConfig {
            kind,
            key_prefix: st.key_prefix.clone(),
            timeout: store_timeout,
        },
        csrf: CsrfConfig {
            header: csrf_header,
            value: csrf_value,
        },
        proxy,
        routes,
        static_files,
        admin,
        metrics_listen,
        log: LogConfig {
            format,
            level: raw.log.level.clone(),
            access_log: raw.log.access_log,
        },
    })
}

/// A server key is 32 bytes in standard or URL-safe base64.
fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(text).ok())
        .ok_or_else(|| "is not base64; generate one with `openssl rand -base64 32`".to_owned())?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        format!("must be 32 bytes base64, got {len}; generate one with `openssl rand -base64 32`")
    })
}

impl RawConfig {
    /// The effective configuration as TOML, secrets replaced by `[redacted]`.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        let redact = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some("[redacted]".into());
            }
        };
        redact(&mut copy.oidc.client_secret);
        redact(&mut copy.store.password);
        redact(&mut copy.store.sentinel_password);
        redact(&mut copy.admin.token);
        for k in &mut copy.session.encryption_keys {
            redact(&mut k.key);
        }
        toml::to_string_pretty(&copy).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    fn minimal() -> String {
        format!(
            r#"
[server]
public_url = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "s3cret"
[session]
encryption_keys = [{{ id = "k1", key = "{KEY}" }}]
[[routes]]
path = "/api"
upstream = "http://127.0.0.1:9100"
"#
        )
    }

    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let dir = std::env::temp_dir().join(format!("oidc-bff-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("c.toml");
        std::fs::write(&path, toml).expect("write");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let r = load(Some(&path), env);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn keys_of(err: ConfigErrors) -> Vec<String> {
        err.0.into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn minimal_config_is_valid_with_strict_defaults() {
        let c = load_str(&minimal(), &[]).expect("valid");
        assert_eq!(c.session.cookie_name, "__Host-oidc-bff");
        assert_eq!(c.session.same_site, SameSite::Strict);
        assert!(c.session.secure_cookies);
        assert_eq!(
            c.server.redirect_uri(),
            "https://app.example.com/auth/callback"
        );
        assert_eq!(c.routes[0].auth, RouteAuth::Required);
        assert_eq!(
            c.oidc.post_logout_redirect.as_str(),
            "https://app.example.com/"
        );
        assert_eq!(c.csrf.header.as_str(), "x-csrf");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load_str(
            &minimal(),
            &[
                ("OIDC_BFF__OIDC__CLIENT_ID", "from-env"),
                ("OIDC_BFF__SESSION__IDLE_TIMEOUT", "5m"),
                ("OIDC_BFF__STORE__DB", "3"),
                ("UNRELATED", "x"),
            ],
        )
        .expect("valid");
        assert_eq!(c.oidc.client_id, "from-env");
        assert_eq!(c.session.idle_timeout, Duration::from_secs(300));
        match c.store.kind {
            StoreKind::Redis(r) => assert_eq!(r.db, 3),
            StoreKind::Memory => panic!("expected redis"),
        }
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("oidc-bff-sec-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("secret");
        std::fs::write(&f, "from-file\n").expect("write");
        let toml = minimal().replace(
            "client_secret = \"s3cret\"",
            &format!("client_secret_file = \"{}\"", f.display()),
        );
        let c = load_str(&toml, &[]).expect("valid");
        assert_eq!(c.oidc.client_secret.expose(), "from-file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_mistake_is_reported_by_key() {
        let toml = minimal()
            .replace(KEY, "c2hvcnQ=") // 5 bytes
            .replace("https://id.example.com", "http://id.example.com")
            .replace("path = \"/api\"", "path = \"api/\"")
            + "\n[log]\nformat = \"xml\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(
            keys,
            vec![
                "oidc.issuer",
                "session.encryption_keys[0].key",
                "routes[0].path",
                "log.format"
            ]
        );
    }

    #[test]
    fn type_errors_in_different_sections_are_all_reported() {
        let toml = minimal()
            + "\n[proxy]\nconnect_timeout = true\n[log]\naccess_log = \"yes\"\nbogus = 1\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys = keys_of(err.clone());
        assert!(keys.contains(&"proxy.connect_timeout".to_string()), "{err}");
        assert!(keys.iter().any(|k| k.starts_with("log")), "{err}");
    }

    #[test]
    fn short_key_message_names_the_length() {
        let err = load_str(&minimal().replace(KEY, "MDEyMzQ1Njc4OWFi"), &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "session.encryption_keys[0].key");
        assert_eq!(
            err.0[0].message,
            "must be 32 bytes base64, got 12; generate one with `openssl rand -base64 32`"
        );
    }

    #[test]
    fn plain_http_public_url_needs_explicit_insecure_cookies() {
        let toml = minimal().replace("https://app.example.com", "http://app.example.com");
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, vec!["server.public_url"]);
        // localhost is fine: browsers accept Secure cookies there.
        let toml = minimal().replace("https://app.example.com", "http://localhost:8080");
        load_str(&toml, &[]).expect("localhost is allowed");
        // An explicit opt-out also needs a cookie name without the prefix.
        let toml = minimal().replace("https://app.example.com", "http://app.example.com") + "\n";
        let toml = toml.replace("[session]\n", "[session]\ninsecure_cookies = true\n");
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, vec!["session.insecure_cookies"]);
    }

    #[test]
    fn unknown_keys_and_sections_are_refused() {
        let toml = minimal() + "\n[sever]\nlisten = \"x\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, vec!["sever"]);
        let toml = minimal().replace("[oidc]\n", "[oidc]\nclient_secrett = \"x\"\n");
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert!(err.to_string().contains("client_secrett"), "{err}");
    }

    #[test]
    fn a_redis_ca_file_needs_rediss_and_a_pem_certificate() {
        let toml = minimal() + "\n[store]\ntls_ca_file = \"/nonexistent/ca.pem\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "store.tls_ca_file");
        assert!(err.0[0].message.contains("rediss://"), "{err}");
        let toml = toml.replace(
            "[store]\n",
            "[store]\nurl = \"rediss://redis.internal:6380\"\n",
        );
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert!(
            err.0[0].message.contains("cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_redis_client_certificate_needs_its_key_rediss_and_pem_files() {
        let toml = minimal() + "\n[store]\ntls_cert_file = \"/etc/hosts\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "store.tls_key_file", "{err}");

        let toml = minimal()
            + "\n[store]\nurl = \"rediss://redis.internal:6380\"\ntls_cert_file = \"/etc/hosts\"\ntls_key_file = \"/etc/hosts\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["store.tls_cert_file", "store.tls_key_file"], "{err}");
        assert!(err.0[1].message.contains("PRIVATE KEY"), "{err}");
    }

    #[test]
    fn client_certificates_for_the_provider_and_upstreams_come_with_their_keys() {
        let toml = minimal().replace("[oidc]\n", "[oidc]\ntls_key_file = \"/etc/hosts\"\n")
            + "\n[proxy]\ntls_cert_file = \"/etc/hosts\"\ntls_key_file = \"/etc/hosts\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "proxy.tls_cert_file",
                "proxy.tls_key_file",
                "oidc.tls_cert_file"
            ],
            "{err}"
        );
        assert!(err.0[1].message.contains("PRIVATE KEY"), "{err}");
        assert!(
            err.0[2]
                .message
                .contains("oidc.tls_key_file needs the file with its certificate"),
            "{err}"
        );
    }

    #[test]
    fn private_ca_files_for_the_provider_and_upstreams_must_hold_certificates() {
        let toml = minimal().replace("[oidc]\n", "[oidc]\ntls_ca_file = \"/etc/hosts\"\n")
            + "\n[proxy]\ntls_ca_file = \"/nonexistent/ca.pem\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["proxy.tls_ca_file", "oidc.tls_ca_file"], "{err}");
        assert!(err.0[0].message.contains("cannot read"), "{err}");
        assert!(err.0[1].message.contains("no PEM"), "{err}");

        // A file that looks like PEM but does not decode is caught here too.
        let dir = std::env::temp_dir().join(format!("oidc-bff-pem-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bad = dir.join("ca.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let toml = minimal() + &format!("\n[proxy]\ntls_ca_file = \"{}\"\n", bad.display());
        let err = load_str(&toml, &[]).expect_err("invalid");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(err.0[0].key, "proxy.tls_ca_file", "{err}");
        assert!(
            err.0[0].message.contains("not a valid PEM certificate"),
            "{err}"
        );
    }

    /// Every key of every section, as `(section, key)`.
    fn every_key() -> Vec<(String, String)> {
        let mut keys = Vec::new();
        let mut add = |section: &str, value: serde_json::Value| {
            for key in value.as_object().expect("a section is a table").keys() {
                keys.push((section.to_owned(), key.clone()));
            }
        };
        let whole = serde_json::to_value(RawConfig::default()).expect("serialize");
        for (section, value) in whole.as_object().expect("table") {
            if section != "routes" {
                add(section, value.clone());
            }
        }
        add(
            "[routes]",
            serde_json::to_value(RawRoute::default()).expect("serialize"),
        );
        keys
    }

    /// The text of `file` from the heading or table line naming `section`
    /// up to the next one.
    fn section_text<'a>(file: &'a str, heading: &str, next: &str) -> &'a str {
        let start = file
            .find(heading)
            .unwrap_or_else(|| panic!("no {heading:?} in the file"));
        let rest = &file[start + heading.len()..];
        &rest[..rest.find(next).unwrap_or(rest.len())]
    }

    #[test]
    fn the_reference_and_the_example_config_name_every_key() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let reference =
            std::fs::read_to_string(root.join("docs/configuration.md")).expect("reference");
        let example =
            std::fs::read_to_string(root.join("config/oidc-bff.example.toml")).expect("example");
        let mut missing = Vec::new();
        for (section, key) in every_key() {
            let doc = section_text(&reference, &format!("## `[{section}]`"), "\n## ");
            if !doc.contains(&format!("| `{key}` |")) {
                missing.push(format!("docs/configuration.md [{section}] {key}"));
            }
            let toml = section_text(&example, &format!("\n[{section}]\n"), "\n[");
            let set = toml
                .lines()
                .map(|l| l.trim_start_matches('#').trim_start())
                .any(|l| l.starts_with(&format!("{key} =")));
            if !set {
                missing.push(format!("config/oidc-bff.example.toml [{section}] {key}"));
            }
        }
        assert!(
            missing.is_empty(),
            "undocumented keys:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn cluster_mode_needs_a_hash_tag_in_the_key_prefix() {
        let toml = minimal() + "\n[store]\ncluster_nodes = [\"10.0.0.5:6379\", \"nope\"]\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["store.key_prefix", "store.cluster_nodes[1]"],
            "{err}"
        );
        assert!(err.0[0].message.contains("{oidc-bff}:"), "{err}");

        let toml = minimal()
            + "\n[store]\ncluster_nodes = [\"10.0.0.5:6379\"]\nkey_prefix = \"{sessions}:\"\n";
        let config = load_str(&toml, &[]).expect("valid");
        let StoreKind::Redis(redis) = config.store.kind else {
            panic!("expected redis")
        };
        assert!(
            matches!(redis.endpoint, RedisEndpoint::Cluster { ref nodes, tls: false } if nodes == &[("10.0.0.5".to_owned(), 6379)])
        );
        assert!(!has_hash_tag("{}:") && !has_hash_tag("oidc-bff:") && has_hash_tag("a{b}c:"));
        let err = load_str(&(toml.clone() + "db = 2\n"), &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "store.db", "{err}");
        // TLS files need cluster_tls; cluster_tls needs cluster_nodes.
        let err = load_str(&(toml + "tls_ca_file = \"/etc/hosts\"\n"), &[]).expect_err("invalid");
        assert!(err.0[0].message.contains("cluster_tls"), "{err}");
        let err =
            load_str(&(minimal() + "\n[store]\ncluster_tls = true\n"), &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "store.cluster_tls", "{err}");
    }

    #[test]
    fn sentinel_mode_needs_a_master_name_and_host_port_nodes() {
        let toml = minimal()
            + "\n[store]\nurl = \"redis://10.0.0.1:6379\"\nsentinels = [\"10.0.0.5:26379\", \"10.0.0.6\"]\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["store.url", "store.sentinels[1]", "store.sentinel_master"],
            "{err}"
        );

        let toml = minimal()
            + "\n[store]\nsentinels = [\"10.0.0.5:26379\", \"[::1]:26380\"]\nsentinel_master = \"sessions\"\nsentinel_password = \"s3cret\"\n";
        let config = load_str(&toml, &[]).expect("valid");
        let StoreKind::Redis(redis) = config.store.kind else {
            panic!("expected redis")
        };
        let RedisEndpoint::Sentinel(sentinel) = redis.endpoint else {
            panic!("expected sentinel")
        };
        assert_eq!(
            sentinel.nodes,
            [("10.0.0.5".to_owned(), 26379), ("::1".to_owned(), 26380)]
        );
        assert_eq!(sentinel.master, "sessions");
        assert_eq!(sentinel.password.expect("password").expose(), "s3cret");
        assert!(!sentinel.tls);

        // TLS files in Sentinel mode need sentinel_tls; sentinel_tls needs
        // Sentinel mode.
        let with_ca = toml.clone() + "tls_ca_file = \"/etc/hosts\"\n";
        let err = load_str(&with_ca, &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "store.tls_ca_file", "{err}");
        assert!(err.0[0].message.contains("sentinel_tls"), "{err}");
        let err =
            load_str(&(minimal() + "\n[store]\nsentinel_tls = true\n"), &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "store.sentinel_tls", "{err}");
        let err = load_str(
            &(minimal() + "\n[store]\nsentinel_master = \"sessions\"\n"),
            &[],
        )
        .expect_err("invalid");
        assert_eq!(err.0[0].key, "store.sentinel_master", "{err}");
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
    fn redacted_output_hides_every_secret() {
        let raw = {
            let dir = std::env::temp_dir().join(format!("oidc-bff-red-{}", rand::random::<u64>()));
            std::fs::create_dir_all(&dir).expect("dir");
            let p = dir.join("c.toml");
            std::fs::write(
                &p,
                minimal() + "[store]\npassword = \"redispw\"\nsentinel_password = \"sentinelpw\"\n",
            )
            .expect("write");
            let raw = load_raw(Some(&p), Vec::new()).expect("raw");
            let _ = std::fs::remove_dir_all(&dir);
            raw
        };
        let out = raw.to_redacted_toml();
        assert!(
            !out.contains("s3cret")
                && !out.contains(KEY)
                && !out.contains("redispw")
                && !out.contains("sentinelpw"),
            "{out}"
        );
        assert!(out.contains("[redacted]"));
    }
}
