//! Configuration: loading (defaults → TOML file → environment), secret
//! resolution (inline, environment or `*_file`), and start-up validation that
//! reports every bad key at once, with its name and the fix.
//!
//! This module never reads the process environment: the caller passes the
//! variables in, so tests can run side by side with different settings.
//! Every key is documented on its `Raw*` field; `docs/configuration.md` is the
//! same reference in prose.
//!
//! Layout: `load` layers the sources and extracts the sections; each section
//! has a file holding its `Raw*` struct, its typed struct and its own rules
//! (`server`, `oidc`, `session`, `store`, `csrf`, `proxy`, `routes`,
//! `static_files`, `admin`, `metrics`, `log`, `audit`, `assertion`, `traces`
//! for `[tracing]`); `common` holds
//! the helpers they share. Rules that read two sections are
//! `cross_section_rules` here; `published` refuses the sample secrets this
//! repository publishes. A leaf of the crate: it imports only
//! `crate::secret`, `crate::url_policy` and `crate::authz` (itself a leaf).

mod admin;
mod assertion;
mod audit;
mod client_auth;
mod common;
mod csrf;
mod forward_auth;
mod load;
mod log;
mod metrics;
mod oidc;
mod oidc_endpoints;
mod proxy;
mod published;
mod routes;
mod server;
mod session;
mod static_files;
mod store;
#[cfg(test)]
mod testing;
mod traces;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use url::Url;

pub use admin::{AdminConfig, RawAdmin};
pub use assertion::{AssertionConfig, AssertionKey, RawAssertion, RawAssertionKey};
pub use audit::{AuditConfig, AuditOutput, RawAudit};
pub use client_auth::{
    AssertionAudience, ClientKey, ClientKeyAlgorithm, KeyEncoding, PushedAuthorization,
};
pub use common::{ClientCertificate, RawDuration};
pub use csrf::{CsrfConfig, RawCsrf};
pub use forward_auth::{ForwardAuthConfig, RawForwardAuth};
pub use load::ENV_PREFIX;
pub use log::{LogConfig, LogFormat, RawLog};
pub use metrics::RawMetrics;
pub use oidc::{AuthMethod, OidcConfig, ProviderLimits, RawOidc};
pub use oidc_endpoints::{
    EndSessionTemplate, EndpointOverrides, FrontchannelConfig, IssuerTemplate, RawEndpoints,
    RawFrontchannel,
};
pub use proxy::{MAX_RESPONSE_HEADERS, ProxyConfig, RawProxy};
pub use routes::{
    OWN_PREFIXES, RawCondition, RawRoute, RouteAuth, RouteConfig, RouteToken, TokenKind,
};
pub use server::{ConnectionLimits, RawServer, ServerConfig};
pub use session::{RawKey, RawSession, SameSite, ServerKeyConfig, SessionConfig};
pub use static_files::{BASELINE_CSP, RawStatic, StaticConfig};
pub use store::{
    RawStore, RecordLayout, RedisConfig, RedisEndpoint, SentinelConfig, StoreConfig, StoreKind,
    has_hash_tag,
};
pub use traces::{RawTracing, Sampler, TracingConfig};

use common::{Issues, is_loopback_host};

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
    pub audit: RawAudit,
    pub assertion: RawAssertion,
    pub forward_auth: RawForwardAuth,
    pub tracing: RawTracing,
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
        for v in copy.tracing.headers.values_mut() {
            *v = "[redacted]".into();
        }
        toml::to_string_pretty(&copy).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The validated configuration: what the gateway runs with.
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
    /// Where the audit trail goes (`crate::audit`).
    pub audit: AuditConfig,
    /// The identity assertion's key ring, when `[assertion] keys` is set.
    pub assertion: Option<AssertionConfig>,
    /// The forward-auth endpoint, when enabled.
    pub forward_auth: Option<ForwardAuthConfig>,
    /// Where OpenTelemetry traces go, when they are exported.
    pub tracing: Option<TracingConfig>,
}

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

/// Reads the file (if any) and the `OIDC_BFF__*` variables among `env`, and
/// returns the merged raw configuration with defaults filled in; an unknown
/// key is an error here (the raw file is used as written).
pub fn load_raw(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig, ConfigErrors> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut read = load::sections(&load::layers(path, env.iter().cloned())?)?;
    traces::apply_otel_env(&mut read.raw.tracing, &env);
    if read.unknown.is_empty() {
        Ok(read.raw)
    } else {
        Err(ConfigErrors(read.unknown))
    }
}

/// Loads and validates: the configuration the gateway runs with.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    load_checked(path, env).map(|(_, config)| config)
}

/// Loads and validates, keeping the raw configuration (`check-config`
/// prints it). Unknown keys are reported together with every other
/// problem: they are dropped and the rest validated, so a typo does not
/// hide a missing key or a bad value elsewhere.
pub fn load_checked(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(RawConfig, Config), ConfigErrors> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut read = load::sections(&load::layers(path, env.iter().cloned())?)?;
    traces::apply_otel_env(&mut read.raw.tracing, &env);
    match validate(&read.raw) {
        Ok(config) if read.unknown.is_empty() => Ok((read.raw, config)),
        Ok(_) => Err(ConfigErrors(read.unknown)),
        Err(ConfigErrors(more)) => {
            let mut all = read.unknown;
            all.extend(more);
            Err(ConfigErrors(all))
        }
    }
}

/// Checks every key and builds the typed configuration, or lists every
/// problem found.
pub fn validate(raw: &RawConfig) -> Result<Config, ConfigErrors> {
    let mut issues = Issues::default();
    let server = server::validate(&raw.server, &mut issues);
    let oidc = oidc::validate(&raw.oidc, &mut issues);
    let session = session::validate(&raw.session, &mut issues);
    let store = store::validate(&raw.store, &mut issues);
    let csrf = csrf::validate(&raw.csrf, &mut issues);
    let proxy = proxy::validate(&raw.proxy, &mut issues);
    let mut routes = routes::validate(&raw.routes, &mut issues);
    let assertion = assertion::validate(&raw.assertion, &mut issues);
    let static_files = static_files::validate(&raw.static_files, &mut issues);
    let admin = admin::validate(&raw.admin, &mut issues);
    let metrics_listen = metrics::validate(&raw.metrics, &mut issues);
    let log = log::validate(&raw.log, &mut issues);
    let tracing = traces::validate(&raw.tracing, &mut issues);
    let audit = audit::validate(&raw.audit, &mut issues);
    let forward_auth = forward_auth::validate(
        &raw.forward_auth,
        !raw.server.trusted_proxies.is_empty(),
        &mut issues,
    );
    let post_logout_redirect = cross_section_rules(raw, &server, &session, &mut issues);
    assertion_audiences(&server, assertion.is_some(), &mut routes, &mut issues);
    if assertion.is_none() && raw.oidc.client_key_file.is_some() {
        // The `private_key_jwt` key is published there too.
        for (i, r) in routes.iter().enumerate() {
            if r.path == "/.well-known/jwks.json" {
                issues.add(
                    format!("routes[{i}].path"),
                    "is where the gateway publishes its client key (oidc.client_key_file); choose another path",
                );
            }
        }
    }
    routes_clear_of_mount(&server.base_path, &routes, &mut issues);
    listeners_apart(raw, admin.as_ref(), metrics_listen, &mut issues);
    dpop_routes(raw, &mut issues);
    published::refuse_published_secrets(raw, server.public_url.as_ref(), &mut issues);
    // Last, where `check-config` has always listed them (tests pin it).
    let provider_tls = oidc::provider_tls(&raw.oidc, &mut issues);

    if !issues.0.is_empty() {
        return Err(ConfigErrors(issues.0));
    }
    // Every `None` above recorded an issue, so these are present.
    let (Some(server), Some(oidc)) = (
        server.into_config(),
        post_logout_redirect.and_then(|to| oidc.into_config(to, provider_tls)),
    ) else {
        return Err(ConfigErrors(vec![ConfigIssue {
            key: "(config)".into(),
            message: "incomplete configuration".into(),
        }]));
    };
    Ok(Config {
        server,
        oidc,
        session,
        store,
        csrf,
        proxy,
        routes,
        static_files,
        admin,
        metrics_listen,
        log,
        audit,
        assertion,
        forward_auth,
        tracing,
    })
}

/// The main, admin and metrics listeners each on an address of their own:
/// two on one address passed `check-config` and failed at start-up
/// ("Address already in use"). The same port clashes on the same address,
/// or when either is the unspecified address (`0.0.0.0`, `[::]`), which
/// takes the port on every address; port 0 (any free port) never clashes.
fn listeners_apart(
    raw: &RawConfig,
    admin: Option<&AdminConfig>,
    metrics: Option<SocketAddr>,
    issues: &mut Issues,
) {
    let clash = |a: SocketAddr, b: SocketAddr| {
        a.port() != 0
            && a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    let main = raw.server.listen.parse::<SocketAddr>().ok();
    let admin = admin.map(|a| a.listen);
    let pairs = [
        (
            admin,
            main,
            "admin.listen",
            "server.listen",
            "the admin API",
            9090,
        ),
        (
            metrics,
            main,
            "metrics.listen",
            "server.listen",
            "metrics",
            9091,
        ),
        (
            metrics,
            admin,
            "metrics.listen",
            "admin.listen",
            "metrics",
            9091,
        ),
    ];
    for (side, other, key, other_key, what, port) in pairs {
        if let (Some(side), Some(other)) = (side, other)
            && clash(side, other)
        {
            issues.add(
                key,
                format!(
                    "`{side}` takes the port of {other_key} (`{other}`); give {what} a port of its own, e.g. \"127.0.0.1:{port}\""
                ),
            );
        }
    }
}

/// Routes that send an assertion need `[assertion] keys`; an unset
/// audience becomes `server.public_url` with the route's path.
fn assertion_audiences(
    server: &server::Server,
    have_keys: bool,
    routes: &mut [RouteConfig],
    issues: &mut Issues,
) {
    let base = server
        .public_url
        .as_ref()
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    for (i, r) in routes.iter_mut().enumerate() {
        if have_keys && r.path == "/.well-known/jwks.json" {
            issues.add(
                format!("routes[{i}].path"),
                "is where the gateway publishes its assertion keys; choose another path",
            );
        }
        let Some(aud) = &mut r.assertion_audience else {
            continue;
        };
        if !have_keys {
            issues.add(
                format!("routes[{i}].assertion"),
                "needs a signing key: add [assertion] keys = [{ id = \"...\", key_file = \"...\" }]",
            );
        }
        if aud.is_empty() {
            *aud = format!("{base}{}", r.path);
        }
    }
}

/// `routes[i].dpop` needs the session keys of `oidc.dpop`, and a gateway
/// that proxies the request itself: forward-auth answers a front proxy,
/// which would send the token without a proof for its own request.
fn dpop_routes(raw: &RawConfig, issues: &mut Issues) {
    for (i, _) in raw.routes.iter().enumerate().filter(|(_, r)| r.dpop) {
        if !raw.oidc.dpop {
            issues.add(
                format!("routes[{i}].dpop"),
                "needs DPoP-bound session tokens: set oidc.dpop = true (the provider must offer DPoP), or remove dpop from the route",
            );
        }
        if raw.forward_auth.enabled {
            issues.add(
                format!("routes[{i}].dpop"),
                "cannot be served through forward-auth ([forward_auth] enabled): a DPoP proof is bound to the request the gateway makes, and a front proxy would send the token without one; proxy this route through the gateway with forward-auth off, or remove dpop",
            );
        }
    }
}

/// Under a mount path the gateway's own endpoints move there
/// (`/app/auth/...`): a route (written in full, e.g. `/app/api`) may not
/// shadow them either.
fn routes_clear_of_mount(base_path: &str, routes: &[RouteConfig], issues: &mut Issues) {
    if base_path.is_empty() {
        return;
    }
    for (i, r) in routes.iter().enumerate() {
        let own = ["/auth", "/healthz", "/readyz", "/.well-known/jwks.json"];
        if own
            .iter()
            .any(|p| crate::url_policy::path::path_has_prefix(&r.path, &format!("{base_path}{p}")))
        {
            issues.add(
                format!("routes[{i}].path"),
                format!(
                    "`{}` overlaps the gateway's own endpoints under server.public_url's path ({base_path}/auth, {base_path}/healthz, {base_path}/readyz)",
                    r.path
                ),
            );
        }
    }
}

/// The rules that read more than one section. Returns
/// `oidc.post_logout_redirect` resolved against `server.public_url` and the
/// allowed origins (`None` when it, or `public_url`, is wrong: reported).
fn cross_section_rules(
    raw: &RawConfig,
    server: &server::Server,
    session: &SessionConfig,
    issues: &mut Issues,
) -> Option<Url> {
    let to = &raw.oidc.post_logout_redirect;
    // `/` (the default) is the public URL's own path when it has one.
    let mount_root = format!("{}/", server.base_path);
    let to = if to == "/" { &mount_root } else { to };
    let post_logout_redirect = server.public_url.as_ref().and_then(|base| {
        match crate::url_policy::return_to::resolve(to, base, &server.allowed_return_origins) {
            Ok(u) => Some(u),
            Err(e) => {
                issues.add(
                    "oidc.post_logout_redirect",
                    format!("`{to}` {e}; use a path such as \"/\" or a URL on an allowed origin"),
                );
                None
            }
        }
    });
    // Browsers drop Secure cookies on plain http, except on localhost.
    if let Some(u) = &server.public_url
        && u.scheme() == "http"
        && !is_loopback_host(u)
        && session.secure_cookies
    {
        issues.add(
                "server.public_url",
                format!("`{u}` is plain http on a non-localhost host, where browsers drop Secure cookies; serve it over https, or set session.insecure_cookies = true (development only)"),
            );
    }
    if let (Some(domain), Some(u)) = (&session.cookie_domain, &server.public_url)
        && let Some(why) = cookie_domain_problem(domain, u)
    {
        issues.add("session.cookie_domain", format!("`{domain}` {why}"));
    }
    post_logout_redirect
}

/// Why browsers would refuse a session cookie with `Domain=domain` set by
/// `public_url` (RFC 6265 §5.3 step 6: the domain must domain-match the
/// host), or give it to hosts it was not meant for (a single label such as
/// `com`): either way logins would "succeed" and leave no session.
fn cookie_domain_problem(domain: &str, public_url: &Url) -> Option<String> {
    let d = domain
        .strip_prefix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    let Some(url::Host::Domain(host)) = public_url.host() else {
        return Some(
            "is set, but server.public_url's host is an IP address, for which browsers keep only host-only cookies; remove cookie_domain".into(),
        );
    };
    if !d.contains('.') || d.ends_with('.') || d.is_empty() {
        return Some(
            "must be a domain of at least two labels that server.public_url's host is in, e.g. \"example.com\"".into(),
        );
    }
    let host = host.to_ascii_lowercase();
    if host != d && !host.ends_with(&format!(".{d}")) {
        return Some(format!(
            "does not contain server.public_url's host `{host}`, so browsers would refuse the cookie; use `{host}` or a parent domain of it"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::testing::{KEY, keys_of, load_str, minimal};
    use super::*;

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
    fn listeners_on_one_address_are_refused_before_start_up() {
        let with = |admin: &str, metrics: &str| {
            minimal().replace("[server]\n", "[server]\nlisten = \"127.0.0.1:8080\"\n")
                + &format!(
                    "\n[admin]\nlisten = \"{admin}\"\ntoken = \"{}\"\n[metrics]\nlisten = \"{metrics}\"\n",
                    "t".repeat(40)
                )
        };
        let cases = [
            ("127.0.0.1:8080", "127.0.0.1:9091", vec!["admin.listen"]),
            ("0.0.0.0:8080", "127.0.0.1:9091", vec!["admin.listen"]),
            ("127.0.0.1:9090", "127.0.0.1:9090", vec!["metrics.listen"]),
            ("127.0.0.1:9090", "[::]:8080", vec!["metrics.listen"]),
        ];
        for (admin, metrics, keys) in cases {
            let err = load_str(&with(admin, metrics), &[]).expect_err("refused");
            let text = err.to_string();
            assert_eq!(keys_of(err), keys, "{admin} {metrics}: {text}");
            assert!(text.contains("a port of its own"), "{text}");
        }
        for (admin, metrics) in [
            ("127.0.0.1:9090", "127.0.0.1:9091"),
            ("127.0.0.2:8080", "127.0.0.1:0"),
        ] {
            load_str(&with(admin, metrics), &[]).expect("apart");
        }
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

    /// Every duration, from the file or the environment, is bounded where
    /// it is parsed: a value that passed (`u64::MAX` seconds as
    /// `session.absolute_timeout`) overflowed a session's deadline
    /// arithmetic at the first login.
    #[test]
    fn a_duration_longer_than_400_days_is_refused_naming_its_key() {
        let with = |header: &str, line: &str| {
            let toml = minimal();
            if toml.contains(header) {
                toml.replacen(header, &format!("{header}\n{line}"), 1)
            } else {
                format!("{toml}\n{header}\n{line}\n")
            }
        };
        for value in [
            "\"18446744073709551615s\"",
            "\"401d\"",
            "9223372036854775807",
        ] {
            for (header, name, key) in [
                ("[session]", "absolute_timeout", "session.absolute_timeout"),
                ("[oidc]", "http_timeout", "oidc.http_timeout"),
                ("[oidc]", "login_timeout", "oidc.login_timeout"),
                (
                    "[oidc]",
                    "jwks_min_refresh_interval",
                    "oidc.jwks_min_refresh_interval",
                ),
                ("[server]", "shutdown_timeout", "server.shutdown_timeout"),
                ("path = \"/api\"", "timeout", "routes[0].timeout"),
                ("[store]", "timeout", "store.timeout"),
                ("[proxy]", "pool_idle_timeout", "proxy.pool_idle_timeout"),
            ] {
                let toml = with(header, &format!("{name} = {value}"));
                let err = load_str(&toml, &[]).expect_err(key);
                let issue = err.0.iter().find(|i| i.key == key).unwrap_or_else(|| {
                    panic!(
                        "{key} = {value}: {:?}",
                        keys_of(load_str(&toml, &[]).expect_err(key))
                    )
                });
                assert!(
                    issue.message.contains("400 days"),
                    "{key}: {}",
                    issue.message
                );
            }
        }
        let err = load_str(
            &minimal(),
            &[("OIDC_BFF__OIDC__HTTP_TIMEOUT", "18446744073709551615s")],
        )
        .expect_err("from the environment");
        assert_eq!(keys_of(err), vec!["oidc.http_timeout"]);
        let toml = with("[session]", "absolute_timeout = \"400d\"");
        assert!(load_str(&toml, &[]).is_ok(), "400 days is the bound itself");
    }

    /// A URL of the configuration holds no credentials and no fragment
    /// (the issuer no query either), and a refusal never quotes the
    /// password: `oidc.issuer` and `tracing.endpoint` took user info and
    /// `check-config` printed it back; `routes[].upstream`'s refusal
    /// quoted it.
    #[test]
    fn urls_with_user_info_or_a_fragment_are_refused_by_key_without_quoting_the_password() {
        let cases = [
            (
                "https://id.example.com\"",
                "https://u:s3cret@id.example.com\"",
                "oidc.issuer",
            ),
            (
                "https://id.example.com\"",
                "https://id.example.com#f\"",
                "oidc.issuer",
            ),
            (
                "https://id.example.com\"",
                "https://id.example.com?a=1\"",
                "oidc.issuer",
            ),
            (
                "upstream = \"http://127.0.0.1:9100\"",
                "upstream = \"http://u:s3cret@127.0.0.1:9100\"",
                "routes[0].upstream",
            ),
        ];
        let appended = [
            (
                "[oidc.endpoints]\ntoken = \"https://:s3cret@id.example.com/token\"",
                "oidc.endpoints.token",
            ),
            (
                "[oidc.endpoints]\ntoken = \"https://id.example.com/token#f\"",
                "oidc.endpoints.token",
            ),
            (
                "[tracing]\nendpoint = \"http://u:s3cret@collector:4318\"",
                "tracing.endpoint",
            ),
            (
                "[tracing]\nendpoint = \"http://collector:4318#f\"",
                "tracing.endpoint",
            ),
        ];
        let mut tomls: Vec<(String, &str)> = cases
            .iter()
            .map(|(from, to, key)| (minimal().replace(from, to), *key))
            .collect();
        for (extra, key) in appended {
            tomls.push((format!("{}\n{extra}\n", minimal()), key));
        }
        for origin in [
            "https://:s3cret@app2.example.com",
            "https://app2.example.com#f",
        ] {
            tomls.push((
                minimal().replace(
                    "[server]",
                    &format!("[server]\nallowed_return_origins = [\"{origin}\"]"),
                ),
                "server.allowed_return_origins[0]",
            ));
        }
        for (toml, key) in tomls {
            let err = load_str(&toml, &[]).expect_err(key);
            let text = format!("{err}");
            assert!(!text.contains("s3cret"), "{key}: {text}");
            assert_eq!(keys_of(err), vec![key], "{toml}");
        }
    }

    /// A `Domain` browsers would refuse (not the public host or a parent
    /// of it) or that reaches every site of a TLD passed `check-config`,
    /// and every login then left no session.
    #[test]
    fn a_cookie_domain_that_does_not_contain_the_public_host_is_refused() {
        let with = |domain: &str| {
            minimal().replace(
                "[session]",
                &format!("[session]\ncookie_name = \"__Secure-bff\"\ncookie_domain = \"{domain}\""),
            )
        };
        for bad in [
            "other.org",
            "com",
            ".com",
            "pp.example.com",
            "app.example.com.evil",
            "",
        ] {
            let keys = keys_of(load_str(&with(bad), &[]).expect_err(bad));
            assert_eq!(keys, vec!["session.cookie_domain"], "{bad:?}");
        }
        for good in [
            "example.com",
            ".example.com",
            "app.example.com",
            "EXAMPLE.com",
        ] {
            assert!(load_str(&with(good), &[]).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn under_a_mount_path_routes_may_not_overlap_its_own_endpoints() {
        let mounted = minimal().replace(
            "\"https://app.example.com\"",
            "\"https://app.example.com/app\"",
        );
        for own in ["/app/auth", "/app/auth/x", "/app/healthz", "/app/readyz"] {
            let toml = format!(
                "{mounted}\n[[routes]]\npath = \"{own}\"\nupstream = \"http://127.0.0.1:9\"\n"
            );
            let keys = keys_of(load_str(&toml, &[]).expect_err(own));
            assert!(
                keys.iter().any(|k| k.ends_with("].path")),
                "{own}: {keys:?}"
            );
        }
        for fine in ["/app/api", "/app", "/app/authx"] {
            let toml = format!(
                "{mounted}\n[[routes]]\npath = \"{fine}\"\nupstream = \"http://127.0.0.1:9\"\n"
            );
            assert!(load_str(&toml, &[]).is_ok(), "{fine}");
        }
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
            !out.contains("unit-test-secret")
                && !out.contains(KEY)
                && !out.contains("redispw")
                && !out.contains("sentinelpw"),
            "{out}"
        );
        assert!(out.contains("[redacted]"));
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

    /// Whoever copies the example gets the strict defaults: listeners on
    /// loopback only, secure cookies, an https issuer, no trusted proxies,
    /// no cookies to upstreams. A loosening is shown commented out, with
    /// its reason, never set.
    #[test]
    fn the_example_config_is_as_strict_as_the_defaults() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let example =
            std::fs::read_to_string(root.join("config/oidc-bff.example.toml")).expect("example");
        // Its published sample secrets are refused (a test in `published`).
        let example = example.replace("\"change-me\"", "\"a-secret-the-provider-issued\"");
        let example = example.replace(
            "bWFrZS15b3VyLW93bi1rZXktd2l0aC1vcGVuc3NsISE=",
            "Tm90LWEtcHVibGlzaGVkLWtleS1mb3ItdGhlLXRlc3Q=",
        );
        let c = load_str(&example, &[]).expect("the example loads");
        assert!(
            c.server.listen.ip().is_loopback(),
            "server.listen = {} listens beyond this machine",
            c.server.listen
        );
        for listen in c.admin.iter().map(|a| a.listen).chain(c.metrics_listen) {
            assert!(listen.ip().is_loopback(), "{listen}");
        }
        assert!(c.session.secure_cookies);
        assert!(c.session.cookie_name.starts_with("__Host-"));
        assert_eq!(c.session.same_site, SameSite::Strict);
        assert_eq!(c.oidc.issuer.scheme(), "https");
        assert!(c.server.trusted_proxies.is_empty());
        assert!(c.routes.iter().all(|r| !r.forward_cookies));
        assert!(c.forward_auth.is_none());
    }

    #[test]
    fn a_dpop_route_needs_oidc_dpop_and_no_forward_auth() {
        let route = minimal() + "dpop = true\n";
        let err = load_str(&route, &[]).expect_err("needs oidc.dpop");
        assert_eq!(keys_of(err.clone()), ["routes[0].dpop"], "{err}");
        assert!(err.to_string().contains("oidc.dpop = true"), "{err}");
        let on = route.replace("client_id = \"bff\"", "client_id = \"bff\"\ndpop = true");
        load_str(&on, &[]).expect("valid with oidc.dpop");
        let forward = on
            .replace("[session]", "[forward_auth]\nenabled = true\n[session]")
            .replace("[server]", "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]");
        let err = load_str(&forward, &[]).expect_err("forward-auth");
        assert_eq!(keys_of(err.clone()), ["routes[0].dpop"], "{err}");
        assert!(err.to_string().contains("forward-auth"), "{err}");
    }
}
