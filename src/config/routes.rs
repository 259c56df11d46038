//! `[[routes]]`: which path prefixes are proxied to which upstream, whether
//! a route needs a session, who may use it (`require`, built into an
//! `authz::Policy`) and what the upstream is told about the user
//! (`identity_headers`, `assertion`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::authz::{ClaimPath, Condition, Match, Policy};
use crate::step_up::StepUpRule;

use super::common::{Issues, RawDuration, positive_duration};

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
    /// Longest wait for the next part of the upstream's response body once
    /// its headers came (then the response is cut short).
    pub body_idle_timeout: RawDuration,
    /// Pass the browser's other cookies (never the gateway's own) to the
    /// upstream. Off by default: the `Cookie` header is removed.
    pub forward_cookies: bool,
    /// Who may use the route (`auth = "required"` only): every condition
    /// must hold. Each is one of `{ claim = "groups", any_of = [...] }`,
    /// `{ claim = "realm_access.roles", all_of = [...] }`,
    /// `{ scope = [...] }` (all granted to the access token) or
    /// `{ acr = [...] }` (one of). Otherwise 403.
    pub require: Vec<RawCondition>,
    /// Request headers for the upstream, each from a claim of the session:
    /// `{ "X-User" = "preferred_username", "X-Groups" = "groups" }`. Every
    /// name configured on any route is removed from every client request.
    pub identity_headers: BTreeMap<String, String>,
    /// Attach a short-lived JWT signed with `[assertion]` keys, in the
    /// header `assertion.header`.
    pub assertion: bool,
    /// The assertion's `aud` (default: `server.public_url` with the route's
    /// path, e.g. `https://app.example.com/api`).
    pub assertion_audience: Option<String>,
    /// Also accept `Authorization: Bearer` JWT access tokens with this `aud`
    /// from clients that send no session cookie (`auth = "required"` only).
    pub bearer_audience: Option<String>,
    /// Step-up: the session's login must have one of these `acr` values
    /// (`auth = "required"` only); otherwise 401 `step_up_required` with a
    /// login URL asking for them.
    pub acr_values: Vec<String>,
    /// Step-up: the session's login (`auth_time`) must be at most this old,
    /// e.g. "10m"; otherwise 401 `step_up_required` with `max_age`.
    pub max_auth_age: Option<RawDuration>,
    /// Which access token the upstream receives: `user` (default),
    /// `client`, `user_or_client` or `none`.
    pub token: Option<String>,
    /// RFC 8707 resource the route's token is made for (an absolute URI).
    pub resource: Option<String>,
    /// Scopes asked for the route's token.
    pub scopes: Vec<String>,
    /// Derive the user token by RFC 8693 token exchange.
    pub token_exchange: bool,
    /// Send the session's DPoP-bound token as `Authorization: DPoP …` with
    /// a `DPoP` proof for this request (RFC 9449 §7); needs `oidc.dpop`.
    pub dpop: bool,
    /// Speak HTTP/2 to the upstream: prior knowledge (h2c) for `http://`,
    /// ALPN `h2` only for `https://`. Off: HTTP/1.1 for `http://`, and for
    /// `https://` whichever of the two the upstream picks by ALPN.
    pub upstream_http2: bool,
}

/// One condition of `require`, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub any_of: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_of: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<Vec<String>>,
}

impl Default for RawRoute {
    fn default() -> Self {
        Self {
            path: String::new(),
            upstream: String::new(),
            strip_prefix: false,
            auth: "required".into(),
            timeout: RawDuration::text("30s"),
            body_idle_timeout: RawDuration::text("100s"),
            forward_cookies: false,
            require: Vec::new(),
            identity_headers: BTreeMap::new(),
            assertion: false,
            assertion_audience: None,
            bearer_audience: None,
            acr_values: Vec::new(),
            max_auth_age: None,
            token: None,
            resource: None,
            scopes: Vec::new(),
            token_exchange: false,
            dpop: false,
            upstream_http2: false,
        }
    }
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
    /// A response body that sends nothing for this long is cut short.
    pub body_idle_timeout: Duration,
    pub forward_cookies: bool,
    /// Who may use the route (empty: any session).
    pub policy: Policy,
    /// Header → claim, sent to the upstream when there is a session.
    pub identity_headers: Vec<(HeaderName, ClaimPath)>,
    /// The signed assertion's audience, when the route sends one (resolved
    /// against `server.public_url` by `config::validate`).
    pub assertion_audience: Option<String>,
    /// Bearer clients' tokens must name this audience (off when `None`).
    pub bearer_audience: Option<String>,
    /// What the session's login must meet (`acr_values`, `max_auth_age`;
    /// empty: nothing).
    pub step_up: StepUpRule,
    /// Which token the upstream receives (`token`, `resource`, `scopes`,
    /// `token_exchange`).
    pub token: RouteToken,
    /// HTTP/2 to the upstream (`upstream_http2`).
    pub upstream_http2: bool,
}

/// Which access token a route's upstream receives (`[[routes]] token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// The user's token (today's behaviour; the default). With `auth = "optional"`
    /// and no session, no token.
    User,
    /// The gateway's own client-credentials token; needs no session.
    Client,
    /// The user's token when there is a session, else the client token.
    UserOrClient,
    /// No Authorization header at all.
    None,
}

/// The token a route's upstream receives: its kind, and for derived or client
/// tokens the RFC 8707 resource and the scopes asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteToken {
    pub kind: TokenKind,
    /// RFC 8707 `resource` (an absolute URI without fragment).
    pub resource: Option<Url>,
    /// Scopes asked for; empty = the login's scopes (user) / none sent (client).
    pub scopes: Vec<String>,
    /// Derive the user token by RFC 8693 token exchange instead of a
    /// refresh-token grant with `resource`/`scope`.
    pub exchange: bool,
    /// Present the session's token with a DPoP proof (`routes[i].dpop`).
    pub dpop: bool,
}

impl RouteToken {
    /// Whether the route's user token is made for it (a derived token)
    /// rather than the login's own access token.
    pub fn is_derived(&self) -> bool {
        matches!(self.kind, TokenKind::User | TokenKind::UserOrClient)
            && (self.resource.is_some() || !self.scopes.is_empty() || self.exchange)
    }
}

impl Default for RouteToken {
    fn default() -> Self {
        Self {
            kind: TokenKind::User,
            resource: None,
            scopes: Vec::new(),
            exchange: false,
            dpop: false,
        }
    }
}

/// The gateway's own namespaces (`/auth/*`, the health endpoints and
/// anything below them), which no route may shadow and the static app never
/// answers for.
pub const OWN_PREFIXES: [&str; 3] = ["/auth", "/healthz", "/readyz"];

/// The upstream base URL, or why it is none (the URL parser's reason for
/// one that does not parse: an invalid port, an empty host, …).
fn upstream_refusal(raw: &str) -> Result<Url, String> {
    let u = Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("has the scheme `{}`", u.scheme()));
    }
    if u.host().is_none() {
        return Err("has no host".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("has a query or fragment (a base URL takes the request's own)".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("has user info (credentials go in headers, not the URL)".into());
    }
    Ok(u)
}

/// Why `path` is no route prefix, in the words a `check-config` reader
/// needs: a route prefix is matched against request paths as the browser
/// sends them (percent-encoded), so it is written the same way, in
/// printable ASCII without a query, fragment or encoded bytes.
fn path_prefix_refusal(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("does not start with /");
    }
    if path != "/" && path.ends_with('/') {
        return Some("ends with /");
    }
    if path.contains("//") {
        return Some("has an empty segment (//)");
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Some("has a dot segment (. or ..)");
    }
    if path.contains(['?', '#']) {
        return Some("has a query or fragment (? or #)");
    }
    if path.contains('%') {
        return Some("has percent-encoding (%); write the characters a browser sends unencoded");
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("has a space, a control or a non-ASCII character");
    }
    None
}

pub(super) fn validate(raw: &[RawRoute], issues: &mut Issues) -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    let mut paths = BTreeSet::new();
    for (i, r) in raw.iter().enumerate() {
        let prefix = format!("routes[{i}]");
        if let Some(why) = path_prefix_refusal(&r.path) {
            issues.add(
                format!("{prefix}.path"),
                format!(
                    "`{}` {why}; write an absolute path prefix like \"/api\"",
                    r.path.escape_debug()
                ),
            );
        } else if OWN_PREFIXES
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
        let upstream = match upstream_refusal(&r.upstream) {
            Ok(u) => Some(u),
            Err(why) => {
                issues.add(
                    format!("{prefix}.upstream"),
                    format!(
                        "`{}` {why}; write an http:// or https:// base URL such as \
                         \"http://api:8080\" or \"https://api.internal/v1\"",
                        super::common::shown_url(&r.upstream)
                    ),
                );
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
        let timeout = positive_duration(issues, &format!("{prefix}.timeout"), &r.timeout);
        let body_idle_timeout = positive_duration(
            issues,
            &format!("{prefix}.body_idle_timeout"),
            &r.body_idle_timeout,
        );
        let policy = policy(&prefix, &r.require, issues);
        if !policy.is_empty() && auth != RouteAuth::Required {
            issues.add(
                format!("{prefix}.require"),
                "needs a session: set auth = \"required\" on this route, or remove `require`",
            );
        }
        let identity_headers = identity_headers(&prefix, &r.identity_headers, issues);
        if auth == RouteAuth::None && (!identity_headers.is_empty() || r.assertion) {
            let key = if r.assertion {
                "assertion"
            } else {
                "identity_headers"
            };
            issues.add(
                format!("{prefix}.{key}"),
                "a route with auth = \"none\" has no user to describe; use auth = \"required\" or \"optional\"",
            );
        }
        if !r.assertion && r.assertion_audience.is_some() {
            issues.add(
                format!("{prefix}.assertion_audience"),
                "is set but `assertion` is false; set assertion = true or remove it",
            );
        }
        if r.assertion_audience
            .as_deref()
            .is_some_and(|a| a.trim().is_empty() || a.chars().any(char::is_control))
        {
            issues.add(
                format!("{prefix}.assertion_audience"),
                "must be a non-empty audience such as \"https://api.example.com\"",
            );
        }
        if let Some(aud) = &r.bearer_audience {
            if auth != RouteAuth::Required {
                issues.add(
                    format!("{prefix}.bearer_audience"),
                    "bearer clients are accepted on auth = \"required\" routes only",
                );
            } else if aud.trim().is_empty() || aud.chars().any(char::is_control) {
                issues.add(
                    format!("{prefix}.bearer_audience"),
                    "must be the API's audience as the provider writes it in access tokens, e.g. \"https://api.example.com\"",
                );
            }
        }
        let step_up = step_up(&prefix, r, auth, issues);
        let token = route_token(&prefix, r, auth, issues);
        if let Some(upstream) = upstream {
            routes.push(RouteConfig {
                path: r.path.clone(),
                upstream,
                strip_prefix: r.strip_prefix,
                auth,
                timeout,
                body_idle_timeout,
                forward_cookies: r.forward_cookies,
                policy,
                identity_headers,
                assertion_audience: r
                    .assertion
                    .then(|| r.assertion_audience.clone().unwrap_or_default()),
                bearer_audience: r.bearer_audience.clone(),
                step_up,
                token,
                upstream_http2: r.upstream_http2,
            });
        }
    }
    routes
}

/// `routes[i].token`, `resource`, `scopes` and `token_exchange`: a kind the
/// route can send (a user token needs a session), a resource that is an
/// absolute http(s) URI without fragment (RFC 8707 §2), scopes of the
/// RFC 6749 §3.3 character set, and token exchange for user tokens only.
fn route_token(prefix: &str, r: &RawRoute, auth: RouteAuth, issues: &mut Issues) -> RouteToken {
    let kind = match r.token.as_deref().unwrap_or("user") {
        "user" => TokenKind::User,
        "client" => TokenKind::Client,
        "user_or_client" => TokenKind::UserOrClient,
        "none" => TokenKind::None,
        other => {
            issues.add(
                format!("{prefix}.token"),
                format!("`{other}` must be \"user\", \"client\", \"user_or_client\" or \"none\""),
            );
            TokenKind::User
        }
    };
    // Written out only: by default an `auth = "none"` route sends no token.
    if auth == RouteAuth::None
        && r.token.is_some()
        && matches!(kind, TokenKind::User | TokenKind::UserOrClient)
    {
        issues.add(
            format!("{prefix}.token"),
            "a route with auth = \"none\" has no user token to send; set token = \"client\" or \"none\", or auth = \"optional\"",
        );
    }
    let resource = r.resource.as_deref().and_then(|text| match Url::parse(text) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.fragment().is_none()
                && u.username().is_empty() =>
        {
            Some(u)
        }
        _ => {
            issues.add(
                format!("{prefix}.resource"),
                format!("`{text}` must be an absolute http:// or https:// URI without fragment or user info, e.g. \"https://api.example.com\""),
            );
            None
        }
    });
    for (j, s) in r.scopes.iter().enumerate() {
        if !is_scope_token(s) {
            issues.add(
                format!("{prefix}.scopes[{j}]"),
                format!("`{s}` must be one scope of printable characters without spaces, quotes or backslashes"),
            );
        }
    }
    if r.scopes.len() > 32 {
        issues.add(format!("{prefix}.scopes"), "lists more than 32 scopes");
    }
    let derived = resource.is_some() || !r.scopes.is_empty() || r.token_exchange;
    if derived && kind == TokenKind::None {
        let key = if r.token_exchange {
            "token_exchange"
        } else if r.resource.is_some() {
            "resource"
        } else {
            "scopes"
        };
        issues.add(
            format!("{prefix}.{key}"),
            "a route with token = \"none\" sends no token; remove it or choose a token kind",
        );
    }
    if r.token_exchange && kind == TokenKind::Client {
        issues.add(
            format!("{prefix}.token_exchange"),
            "exchanges a user's token; use it with token = \"user\" or \"user_or_client\"",
        );
    }
    if r.dpop {
        // The proof is made with the session's key for the session's own
        // token: nothing else the gateway sends is bound to that key.
        let why = if auth == RouteAuth::None {
            Some(
                "a route with auth = \"none\" has no session key to prove; use auth = \"required\" or \"optional\"",
            )
        } else if kind != TokenKind::User {
            Some("proves the session's own token; use it with token = \"user\"")
        } else if derived {
            Some(
                "derived tokens (resource, scopes, token_exchange) are not DPoP-bound; remove them or dpop",
            )
        } else if r.bearer_audience.is_some() {
            Some(
                "bearer clients' own tokens are passed on as they are; remove bearer_audience or dpop",
            )
        } else {
            None
        };
        if let Some(why) = why {
            issues.add(format!("{prefix}.dpop"), why);
        }
    }
    RouteToken {
        kind,
        resource,
        scopes: r.scopes.clone(),
        exchange: r.token_exchange,
        dpop: r.dpop,
    }
}

/// RFC 6749 §3.3 `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// `routes[i].acr_values` and `max_auth_age`: ACR values the provider can
/// be asked for, a positive age, and a route that has a session.
fn step_up(prefix: &str, r: &RawRoute, auth: RouteAuth, issues: &mut Issues) -> StepUpRule {
    let mut rule = StepUpRule::default();
    for (j, a) in r.acr_values.iter().enumerate() {
        if crate::step_up::is_acr_token(a) {
            rule.acr_values.push(a.clone());
        } else {
            issues.add(
                format!("{prefix}.acr_values[{j}]"),
                format!("`{a}` must be an ACR value of printable characters without spaces, quotes, commas or backslashes (at most 128)"),
            );
        }
    }
    if r.acr_values.len() > 8 {
        issues.add(format!("{prefix}.acr_values"), "lists more than 8 values");
    }
    if let Some(age) = &r.max_auth_age {
        rule.max_auth_age = Some(positive_duration(
            issues,
            &format!("{prefix}.max_auth_age"),
            age,
        ));
    }
    if !rule.is_empty() && auth != RouteAuth::Required {
        let key = if r.acr_values.is_empty() {
            "max_auth_age"
        } else {
            "acr_values"
        };
        issues.add(
            format!("{prefix}.{key}"),
            "step-up needs a session: set auth = \"required\" on this route, or remove it",
        );
    }
    rule
}

/// `routes[i].require`, each condition checked by key.
fn policy(prefix: &str, raw: &[RawCondition], issues: &mut Issues) -> Policy {
    let mut conditions = Vec::new();
    for (j, c) in raw.iter().enumerate() {
        let key = format!("{prefix}.require[{j}]");
        if let Some(c) = condition(&key, c, issues) {
            conditions.push(c);
        }
    }
    Policy { conditions }
}

fn condition(key: &str, c: &RawCondition, issues: &mut Issues) -> Option<Condition> {
    let kinds = [c.claim.is_some(), c.scope.is_some(), c.acr.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        issues.add(
            key.to_owned(),
            "must name exactly one of `claim` (with any_of or all_of), `scope` or `acr`, e.g. { claim = \"groups\", any_of = [\"admin\"] }",
        );
        return None;
    }
    let values = |name: &str, list: &[String], issues: &mut Issues| -> Option<Vec<String>> {
        if list.is_empty() {
            issues.add(
                format!("{key}.{name}"),
                "is empty; list at least one value (an empty list would admit no one or everyone)",
            );
            None
        } else if list
            .iter()
            .any(|v| v.is_empty() || v.chars().any(char::is_control))
        {
            issues.add(
                format!("{key}.{name}"),
                "has an empty value or a control character",
            );
            None
        } else {
            Some(list.to_vec())
        }
    };
    if let Some(written) = &c.claim {
        let path = match ClaimPath::parse(written) {
            Ok(p) => Some(p),
            Err(why) => {
                issues.add(format!("{key}.claim"), format!("`{written}` {why}"));
                None
            }
        };
        let rule = match (&c.any_of, &c.all_of) {
            (Some(v), None) => values("any_of", v, issues).map(Match::AnyOf),
            (None, Some(v)) => values("all_of", v, issues).map(Match::AllOf),
            _ => {
                issues.add(
                    key.to_owned(),
                    "a `claim` condition needs exactly one of `any_of` or `all_of` (for both, write two conditions)",
                );
                None
            }
        };
        return Some(Condition::Claim {
            path: path?,
            rule: rule?,
        });
    }
    if c.any_of.is_some() || c.all_of.is_some() {
        let what = if c.scope.is_some() { "scope" } else { "acr" };
        issues.add(
            key.to_owned(),
            format!("`any_of`/`all_of` go with `claim`; `{what}` takes its list directly, e.g. {{ {what} = [\"...\"] }}"),
        );
        return None;
    }
    if let Some(list) = &c.scope {
        if list.iter().any(|s| s.contains(' ')) {
            issues.add(
                format!("{key}.scope"),
                "list scopes one per string, e.g. [\"read\", \"write\"]",
            );
            return None;
        }
        return values("scope", list, issues).map(Condition::Scopes);
    }
    c.acr
        .as_ref()
        .and_then(|list| values("acr", list, issues))
        .map(Condition::Acr)
}

/// Headers no identity header may be: the ones the gateway writes itself or
/// that change how the request is framed or authenticated.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "forwarded",
];

fn identity_headers(
    prefix: &str,
    raw: &BTreeMap<String, String>,
    issues: &mut Issues,
) -> Vec<(HeaderName, ClaimPath)> {
    let mut out = Vec::new();
    for (name, claim) in raw {
        let key = format!("{prefix}.identity_headers.{name}");
        let header = match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                issues.add(
                    key,
                    "is not a valid header name; use letters, digits and `-`, e.g. \"X-User\"",
                );
                continue;
            }
        };
        let n = header.as_str();
        if RESERVED_HEADERS.contains(&n)
            || ["x-forwarded-", "x-original-", "x-real-", "sec-"]
                .iter()
                .any(|p| n.starts_with(p))
        {
            issues.add(key, "is a header the gateway or the HTTP protocol owns; choose another name, e.g. \"X-User\"");
            continue;
        }
        match ClaimPath::parse(claim) {
            Ok(path) => out.push((header, path)),
            Err(why) => issues.add(key, format!("`{claim}` {why}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{keys_of, load_str, minimal};
    use super::{path_prefix_refusal, upstream_refusal};

    #[test]
    fn a_refused_upstream_says_why() {
        for (url, why) in [
            ("http://127.0.0.1:99999", "invalid port number"),
            ("api:8080", "scheme `api`"),
            ("ftp://a", "scheme `ftp`"),
            ("http://", "empty host"),
            ("http://a/?x=1", "query or fragment"),
            ("http://a/#f", "query or fragment"),
            ("http://u:p@a", "user info"),
        ] {
            let refusal = upstream_refusal(url).expect_err(url);
            assert!(refusal.contains(why), "{url}: {refusal}");
        }
        for url in ["http://a", "https://api.internal/v1", "http://[::1]:9100"] {
            assert!(upstream_refusal(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn a_refused_route_path_says_why() {
        for (path, why) in [
            ("api", "does not start with /"),
            ("/api/", "ends with /"),
            ("/a//b", "empty segment"),
            ("/a/../b", "dot segment"),
            ("/a?x=1", "query or fragment"),
            ("/a%20b", "percent-encoding"),
            ("/a b", "a space, a control or a non-ASCII character"),
            ("/ä", "a space, a control or a non-ASCII character"),
        ] {
            assert!(
                path_prefix_refusal(path).is_some_and(|w| w.contains(why)),
                "{path}"
            );
        }
        for path in ["/", "/api", "/api/v1.2", "/a-b_c~d"] {
            assert_eq!(path_prefix_refusal(path), None, "{path}");
        }
    }

    #[test]
    fn routes_may_not_shadow_the_gateways_endpoints_or_each_other() {
        let toml = minimal()
            + "\n[[routes]]\npath = \"/auth/x\"\nupstream = \"http://127.0.0.1:9101\"\n\
               \n[[routes]]\npath = \"/api\"\nupstream = \"http://127.0.0.1:9102\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert_eq!(keys_of(err.clone()), ["routes[1].path", "routes[2].path"]);
        assert!(err.0[0].message.contains("overlaps"), "{err}");
        assert!(err.0[1].message.contains("another route"), "{err}");
    }

    fn route(lines: &str) -> String {
        minimal()
            + "\n[[routes]]\npath = \"/admin\"\nupstream = \"http://127.0.0.1:9101\"\n"
            + lines
    }

    #[test]
    fn a_policy_is_built_from_its_conditions() {
        use crate::authz::{Condition, Match};
        let toml = route(
            "require = [{ claim = \"groups\", any_of = [\"admin\", \"ops\"] }, \
             { claim = 'realm_access.roles', all_of = [\"a\"] }, { scope = [\"read\"] }, { acr = [\"mfa\"] }]\n\
             identity_headers = { \"X-User\" = \"preferred_username\" }\n",
        );
        let c = load_str(&toml, &[]).expect("valid");
        let conditions = &c.routes[1].policy.conditions;
        assert_eq!(conditions.len(), 4);
        assert!(
            matches!(&conditions[0], Condition::Claim { rule: Match::AnyOf(v), .. } if v == &["admin", "ops"])
        );
        assert_eq!(conditions[2], Condition::Scopes(vec!["read".into()]));
        assert_eq!(c.routes[1].identity_headers[0].0.as_str(), "x-user");
    }

    #[test]
    fn check_config_names_every_bad_policy_key_with_the_fix() {
        let toml = route(
            "require = [{ claim = \"groups\", any_of = [] }, \
             { claim = \"groups\", any_of = [\"a\"], all_of = [\"b\"] }, \
             { claim = \"a..b\", any_of = [\"a\"] }, \
             { scope = [\"read\"], any_of = [\"x\"] }, \
             { claim = \"g\", acr = [\"x\"] }]\n\
             identity_headers = { \"Authorization\" = \"sub\", \"X-Bad Name\" = \"sub\", \"X-Ok\" = \".x\" }\n",
        );
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert_eq!(
            keys_of(err.clone()),
            [
                "routes[1].require[0].any_of",
                "routes[1].require[1]",
                "routes[1].require[2].claim",
                "routes[1].require[3]",
                "routes[1].require[4]",
                "routes[1].identity_headers.Authorization",
                "routes[1].identity_headers.X-Bad Name",
                "routes[1].identity_headers.X-Ok",
            ],
            "{err}"
        );
        let unknown = route("require = [{ claim = \"groups\", one_of = [\"a\"] }]\n");
        let err = load_str(&unknown, &[]).expect_err("unknown key");
        assert!(err.to_string().contains("one_of"), "{err}");
    }

    #[test]
    fn a_routes_body_idle_timeout_defaults_to_100s_and_must_be_positive() {
        let c = load_str(&route(""), &[]).expect("valid");
        assert_eq!(c.routes[1].body_idle_timeout, Duration::from_secs(100));
        let c = load_str(&route("body_idle_timeout = \"15m\"\n"), &[]).expect("valid");
        assert_eq!(c.routes[1].body_idle_timeout, Duration::from_secs(900));
        let err = load_str(&route("body_idle_timeout = \"0s\"\n"), &[]).expect_err("zero");
        assert_eq!(
            keys_of(err.clone()),
            ["routes[1].body_idle_timeout"],
            "{err}"
        );
        assert!(err.to_string().contains("greater than zero"), "{err}");
    }

    #[test]
    fn policies_and_identity_need_a_session_route() {
        let toml = route(
            "auth = \"none\"\nrequire = [{ acr = [\"mfa\"] }]\nidentity_headers = { \"X-User\" = \"sub\" }\n",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["routes[1].require", "routes[1].identity_headers"]);
    }

    #[test]
    fn step_up_rules_are_read_and_checked_by_key() {
        let ok = load_str(
            &route("acr_values = [\"mfa\", \"urn:acr:hwk\"]\nmax_auth_age = \"10m\"\n"),
            &[],
        )
        .expect("valid");
        let rule = &ok.routes[1].step_up;
        assert_eq!(rule.acr_values, ["mfa", "urn:acr:hwk"]);
        assert_eq!(rule.max_auth_age, Some(Duration::from_secs(600)));
        assert!(ok.routes[0].step_up.is_empty());
        let bad = route("acr_values = [\"m f a\", \"\"]\nmax_auth_age = \"0s\"\n");
        let err = load_str(&bad, &[]).expect_err("invalid");
        assert_eq!(
            keys_of(err.clone()),
            [
                "routes[1].acr_values[0]",
                "routes[1].acr_values[1]",
                "routes[1].max_auth_age"
            ],
            "{err}"
        );
        let public = route("auth = \"optional\"\nmax_auth_age = \"5m\"\n");
        let keys = keys_of(load_str(&public, &[]).expect_err("invalid"));
        assert_eq!(keys, ["routes[1].max_auth_age"]);
        let typo = route("max_auth_ag = \"5m\"\n");
        let err = load_str(&typo, &[]).expect_err("unknown key");
        assert!(
            err.to_string().contains("did you mean `max_auth_age`?"),
            "{err}"
        );
    }

    #[test]
    fn route_tokens_are_read_and_checked_by_key() {
        use super::TokenKind;
        let ok = load_str(
            &route("resource = \"https://api-a.test\"\nscopes = [\"a.read\", \"a:write\"]\ntoken_exchange = true\n"),
            &[],
        )
        .expect("valid");
        let t = &ok.routes[1].token;
        assert_eq!(t.kind, TokenKind::User);
        assert_eq!(
            t.resource.as_ref().map(url::Url::as_str),
            Some("https://api-a.test/")
        );
        assert_eq!(t.scopes, ["a.read", "a:write"]);
        assert!(t.exchange && t.is_derived());
        let plain = &ok.routes[0].token;
        assert_eq!(plain.kind, TokenKind::User);
        assert!(
            !plain.is_derived(),
            "no resource, scopes or exchange: the login's token"
        );
        let bad = route(
            "token = \"users\"\nresource = \"https://api.test/#frag\"\nscopes = [\"a b\", \"\\\"q\"]\n",
        );
        let err = load_str(&bad, &[]).expect_err("invalid");
        assert_eq!(
            keys_of(err.clone()),
            [
                "routes[1].token",
                "routes[1].resource",
                "routes[1].scopes[0]",
                "routes[1].scopes[1]"
            ],
            "{err}"
        );
        for lines in ["resource = \"urn:api\"\n", "resource = \"/relative\"\n"] {
            let keys = keys_of(load_str(&route(lines), &[]).expect_err("invalid"));
            assert_eq!(keys, ["routes[1].resource"], "{lines}");
        }
        let exchange_client = route("token = \"client\"\ntoken_exchange = true\n");
        let keys = keys_of(load_str(&exchange_client, &[]).expect_err("invalid"));
        assert_eq!(keys, ["routes[1].token_exchange"]);
        let none_scoped = route("token = \"none\"\nscopes = [\"x\"]\n");
        let keys = keys_of(load_str(&none_scoped, &[]).expect_err("invalid"));
        assert_eq!(keys, ["routes[1].scopes"]);
    }

    #[test]
    fn bearer_clients_are_accepted_on_required_routes_only_with_an_audience() {
        let ok = load_str(
            &route("bearer_audience = \"https://api.example.com\"\n"),
            &[],
        )
        .expect("valid");
        assert_eq!(
            ok.routes[1].bearer_audience.as_deref(),
            Some("https://api.example.com")
        );
        let optional =
            route("auth = \"optional\"\nbearer_audience = \"https://api.example.com\"\n");
        let empty = route("bearer_audience = \" \"\n");
        for toml in [optional, empty] {
            let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
            assert_eq!(keys, ["routes[1].bearer_audience"]);
        }
    }

    #[test]
    fn route_tokens_are_read_with_user_as_the_default() {
        use super::{RouteToken, TokenKind};
        let ok = load_str(
            &route("auth = \"none\"\ntoken = \"client\"\nscopes = [\"api:read\"]\nresource = \"https://api.example.com/v1\"\n"),
            &[],
        )
        .expect("valid");
        assert_eq!(ok.routes[0].token, RouteToken::default());
        // Unwritten, `user` is the default on any route (without a
        // session it sends nothing).
        let public = load_str(&route("auth = \"none\"\n"), &[]).expect("valid");
        assert_eq!(public.routes[1].token.kind, TokenKind::User);
        let t = &ok.routes[1].token;
        assert_eq!(t.kind, TokenKind::Client);
        assert_eq!(t.scopes, ["api:read"]);
        assert_eq!(
            t.resource.as_ref().map(url::Url::as_str),
            Some("https://api.example.com/v1")
        );
        for (lines, kind) in [
            (
                "auth = \"optional\"\ntoken = \"user_or_client\"\n",
                TokenKind::UserOrClient,
            ),
            ("token = \"none\"\n", TokenKind::None),
            ("token = \"client\"\n", TokenKind::Client),
            ("token_exchange = true\n", TokenKind::User),
        ] {
            let c = load_str(&route(lines), &[]).expect(lines);
            assert_eq!(c.routes[1].token.kind, kind, "{lines}");
        }
    }

    #[test]
    fn route_tokens_are_checked_by_key() {
        let cases = [
            ("token = \"service\"\n", "routes[1].token"),
            ("auth = \"none\"\ntoken = \"user\"\n", "routes[1].token"),
            (
                "auth = \"none\"\ntoken = \"user_or_client\"\n",
                "routes[1].token",
            ),
            (
                "resource = \"https://api.example.com#x\"\n",
                "routes[1].resource",
            ),
            ("resource = \"/relative\"\n", "routes[1].resource"),
            ("scopes = [\"a b\"]\n", "routes[1].scopes[0]"),
            ("scopes = [\"\"]\n", "routes[1].scopes[0]"),
            (
                "token = \"client\"\ntoken_exchange = true\n",
                "routes[1].token_exchange",
            ),
            ("token = \"none\"\nscopes = [\"a\"]\n", "routes[1].scopes"),
        ];
        for (lines, key) in cases {
            let err = load_str(&route(lines), &[]).expect_err(lines);
            assert_eq!(keys_of(err.clone()), [key], "{lines}: {err}");
        }
        let typo = route("tokens = \"client\"\n");
        let err = load_str(&typo, &[]).expect_err("unknown key");
        assert!(err.to_string().contains("`token`"), "{err}");
    }

    #[test]
    fn upstream_http2_is_off_by_default_and_taken_for_either_scheme() {
        let ok = load_str(&route("upstream_http2 = true\n"), &[]).expect("valid");
        assert!(ok.routes[1].upstream_http2);
        assert!(!ok.routes[0].upstream_http2, "off by default");
        let tls = route("upstream_http2 = true\n").replace(
            "upstream = \"http://127.0.0.1:9101\"",
            "upstream = \"https://api.example.com\"",
        );
        assert!(load_str(&tls, &[]).expect("valid").routes[1].upstream_http2);
        let err = load_str(&route("upstream_http2 = \"yes\"\n"), &[]).expect_err("not a bool");
        assert!(err.to_string().contains("upstream_http2"), "{err}");
    }

    #[test]
    fn dpop_routes_send_the_sessions_own_token_only() {
        let route = |lines: &str| {
            route(lines).replace("client_id = \"bff\"", "client_id = \"bff\"\ndpop = true")
        };
        let ok = load_str(&route("dpop = true\n"), &[]).expect("valid");
        assert!(ok.routes[1].token.dpop);
        assert!(!ok.routes[0].token.dpop, "off by default");
        for lines in [
            "auth = \"none\"\ndpop = true\n",
            "token = \"client\"\ndpop = true\n",
            "scopes = [\"a\"]\ndpop = true\n",
            "bearer_audience = \"https://api.example.com\"\ndpop = true\n",
        ] {
            let err = load_str(&route(lines), &[]).expect_err(lines);
            assert_eq!(keys_of(err.clone()), ["routes[1].dpop"], "{lines}: {err}");
        }
    }
}
