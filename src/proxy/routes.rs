//! The route table: which upstream a path goes to, with what auth, and how
//! the upstream URI is built.
//!
//! Prefixes match on segment boundaries, longest first. Paths with dot
//! segments (literal or percent-encoded) are refused before matching: an
//! upstream that normalises `/api/../admin` would otherwise be reached
//! outside the prefix the operator configured.

use std::sync::Arc;
use std::time::Duration;

use crate::authz::{ClaimPath, Policy};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Uri};

use crate::config::{RouteAuth, RouteConfig, RouteToken};
use crate::step_up::StepUpRule;
use crate::url_policy::path::{PathRefusal, lax_prefix, may_read_under};
pub use crate::url_policy::path::{has_dot_segment, path_has_prefix};

pub struct Route {
    pub path: String,
    pub strip_prefix: bool,
    pub auth: RouteAuth,
    pub timeout: Duration,
    /// How long the upstream's response body may send nothing
    /// (`body_idle_timeout`; see `streamed`).
    pub body_idle_timeout: Duration,
    /// Pass the browser's other cookies on (`forward_cookies`).
    pub forward_cookies: bool,
    /// Who may use the route (`require`; see `authz`).
    pub policy: Policy,
    /// Header → claim sent to the upstream (`identity_headers`).
    pub identity_headers: Vec<(HeaderName, ClaimPath)>,
    /// The signed assertion's audience, when the route sends one.
    pub assertion_audience: Option<String>,
    /// Bearer clients' required audience (`bearer_audience`), if accepted.
    pub bearer_audience: Option<String>,
    /// What the session's login must meet (`acr_values`, `max_auth_age`).
    pub step_up: StepUpRule,
    /// Which token the upstream receives (`token`; see `proxy::token`).
    pub token: RouteToken,
    /// The gateway's `/auth/login` as the browser sees it (under the mount
    /// path): the base of a step-up challenge's login URL.
    pub login_path: String,
    /// This route's upstream latency and status-class series, resolved
    /// once (`RouteTable::with_metrics`) so the proxy path only records.
    pub upstream_metrics: Option<crate::metrics::UpstreamRoute>,
    scheme: Scheme,
    authority: Authority,
    /// The upstream URL's path without a trailing slash ("" for the root).
    base_path: String,
    /// The `Host` an `http://` upstream receives, as hyper's client would
    /// write it for every request (host, and the port unless it is 80):
    /// made once here. `None` for `https://`, where the connection may be
    /// HTTP/2 (`:authority`, written by the client), and for
    /// `upstream_http2` routes.
    pub host_header: Option<HeaderValue>,
    /// HTTP/2 to the upstream (`upstream_http2`): prior knowledge for
    /// `http://`, ALPN `h2` only for `https://`.
    pub upstream_http2: bool,
    /// The longer routes some upstream may read a path of this route as
    /// (their [`lax_prefix`]): `/api/%61dmin` matches `/api` but reads as
    /// `/api/admin`. A path that reads under one of them is refused
    /// ([`Route::shadows_another`]). Empty for most routes.
    nested: Vec<String>,
}

pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    /// Every route's [`lax_prefix`]: what a path that matches no route
    /// must not read as ([`RouteTable::resolve`]).
    lax: Vec<String>,
}

impl RouteTable {
    pub fn new(configs: &[RouteConfig]) -> anyhow::Result<Self> {
        let mut routes = Vec::with_capacity(configs.len());
        for c in configs {
            let uri: Uri = c.upstream.as_str().parse()?;
            let scheme = uri
                .scheme()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("upstream has no scheme"))?;
            let authority = uri
                .authority()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("upstream has no host"))?;
            let base_path = c.upstream.path().trim_end_matches('/').to_owned();
            routes.push(Arc::new(Route {
                path: c.path.clone(),
                strip_prefix: c.strip_prefix,
                auth: c.auth,
                timeout: c.timeout,
                body_idle_timeout: c.body_idle_timeout,
                forward_cookies: c.forward_cookies,
                policy: c.policy.clone(),
                identity_headers: c.identity_headers.clone(),
                assertion_audience: c.assertion_audience.clone(),
                bearer_audience: c.bearer_audience.clone(),
                step_up: c.step_up.clone(),
                token: c.token.clone(),
                login_path: "/auth/login".into(),
                upstream_metrics: None,
                host_header: if c.upstream_http2 {
                    None
                } else {
                    plain_http_host(&scheme, &authority)?
                },
                upstream_http2: c.upstream_http2,
                nested: Vec::new(),
                scheme,
                authority,
                base_path,
            }));
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        let lax: Vec<String> = routes.iter().map(|r| lax_prefix(&r.path)).collect();
        let depth = |p: &str| p.split('/').filter(|s| !s.is_empty()).count();
        for (i, route) in routes.iter_mut().enumerate() {
            let nested: Vec<String> = lax
                .iter()
                .enumerate()
                .filter(|&(j, other)| {
                    j != i && depth(other) > depth(&lax[i]) && may_read_under(other, &lax[i])
                })
                .map(|(_, other)| other.clone())
                .collect();
            if let Some(r) = Arc::get_mut(route) {
                r.nested = nested;
            }
        }
        Ok(Self { routes, lax })
    }

    /// Step-up challenges name `login_path` (`/auth/login` under the
    /// mount path) as where to log in.
    pub fn with_login_path(mut self, login_path: &str) -> Self {
        for r in &mut self.routes {
            if let Some(r) = Arc::get_mut(r) {
                r.login_path = login_path.to_owned();
            }
        }
        self
    }

    /// Resolves each route's upstream series in `metrics` (label: the
    /// route's configured prefix).
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        for r in &mut self.routes {
            if let Some(r) = Arc::get_mut(r) {
                r.upstream_metrics = Some(metrics.upstream_route(&r.path));
            }
        }
        self
    }

    /// The route a path falls under (the router does this matching; this
    /// is its specification, kept for tests).
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| path_has_prefix(path, &r.path))
            .map(|r| &**r)
    }

    /// The route a path falls under by its exact spelling, refused when
    /// some upstream reads the path as another route's
    /// ([`Route::shadows_another`]; a path under no route must not read as
    /// any route's either). For callers that decide on a path the router
    /// never matched (forward-auth's original URI).
    pub fn resolve(&self, path: &str) -> Result<Option<&Route>, PathRefusal> {
        let route = self.find(path);
        let shadowed = match route {
            Some(r) => r.shadows_another(path),
            None => self.lax.iter().any(|lax| may_read_under(path, lax)),
        };
        if shadowed {
            return Err(PathRefusal::AnotherRoute);
        }
        Ok(route)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
}

/// See [`Route::host_header`].
fn plain_http_host(
    scheme: &Scheme,
    authority: &Authority,
) -> Result<Option<HeaderValue>, http::header::InvalidHeaderValue> {
    if *scheme != Scheme::HTTP {
        return Ok(None);
    }
    let host = match authority.port_u16() {
        Some(80) | None => HeaderValue::from_str(authority.host())?,
        Some(port) => HeaderValue::from_str(&format!("{}:{port}", authority.host()))?,
    };
    Ok(Some(host))
}

impl Route {
    /// Whether some upstream may read `path` (matched to this route by its
    /// exact spelling) as a path of a longer route: then this route's
    /// policy is not the one that path's owner configured. A check over
    /// the route's few nested prefixes, nothing for a route without any.
    pub fn shadows_another(&self, path: &str) -> bool {
        self.nested.iter().any(|lax| may_read_under(path, lax))
    }

    /// The route's policy over a session's claims and granted scopes: 403
    /// naming what the route requires (never what the user has); then its
    /// step-up rule over the login's `acr` and `auth_time`: 401
    /// `step_up_required` with a login URL asking for what is missing (the
    /// session stays; `return_to` is where that login comes back to). The
    /// one check for proxied requests, WebSocket handshakes and
    /// forward-auth.
    pub fn admit(
        &self,
        session: &crate::session::Session,
        return_to: Option<&str>,
    ) -> Result<(), crate::error::AppError> {
        if self.policy.is_empty() && self.step_up.is_empty() {
            return Ok(());
        }
        // Claims that do not read refuse the session (401), never a
        // policy checked against no claims.
        let claims = session.claims()?;
        crate::authz::check(&self.policy, &claims, session.scopes()).map_err(|refusal| {
            tracing::info!(route = %self.path, "request refused by the route's policy");
            crate::error::AppError::Forbidden(refusal.to_string())
        })?;
        match self.step_up.check(&claims, crate::clock::unix_now()) {
            None => Ok(()),
            Some(challenge) => {
                tracing::info!(route = %self.path, "step-up required by the route");
                Err(crate::error::AppError::step_up(
                    &challenge,
                    &self.login_path,
                    return_to,
                ))
            }
        }
    }

    /// The router patterns that together match exactly the paths under this
    /// prefix: the prefix itself, with a trailing slash, and anything below
    /// (axum's catch-all matches no empty rest, hence three). Braces are
    /// escaped so a prefix is always literal.
    pub fn router_patterns(&self) -> Vec<String> {
        let literal = self.path.replace('{', "{{").replace('}', "}}");
        if literal == "/" {
            return vec!["/".into(), "/{*rest}".into()];
        }
        vec![
            literal.clone(),
            format!("{literal}/"),
            format!("{literal}/{{*rest}}"),
        ]
    }

    /// The upstream's host and port, as configured.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The upstream URI for a request's URI. On a route that neither
    /// strips its prefix nor has a base path, the request's path and query
    /// are kept as they came (shared, not copied or parsed again): the
    /// same URI [`Self::upstream_uri`] builds.
    pub fn upstream_uri_for(&self, uri: Uri) -> Result<Uri, http::Error> {
        let as_is = self.base_path.is_empty()
            && !(self.strip_prefix && self.path != "/")
            && uri.path().starts_with('/');
        if !as_is {
            return self.upstream_uri(uri.path(), uri.query());
        }
        let mut parts = uri.into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        Ok(Uri::from_parts(parts)?)
    }

    /// The upstream URI for a request's path and query.
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let rest = if self.strip_prefix && self.path != "/" {
            &path[self.path.len().min(path.len())..]
        } else {
            path
        };
        let mut pq = String::with_capacity(
            self.base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1,
        );
        pq.push_str(&self.base_path);
        if !rest.starts_with('/') {
            pq.push('/');
        }
        pq.push_str(rest);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::try_from(pq)?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session route to `upstream` with every other key at its default.
    fn route(path: &str, upstream: &str, strip: bool) -> RouteConfig {
        RouteConfig {
            path: path.into(),
            upstream: upstream.parse().expect("url"),
            strip_prefix: strip,
            auth: RouteAuth::Required,
            timeout: Duration::from_secs(1),
            body_idle_timeout: Duration::from_secs(100),
            forward_cookies: false,
            policy: Default::default(),
            identity_headers: Vec::new(),
            assertion_audience: None,
            bearer_audience: None,
            step_up: Default::default(),
            token: Default::default(),
            upstream_http2: false,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route("/api", "http://127.0.0.1:9100", false),
            route("/api/v2", "http://127.0.0.1:9200/base/", true),
            route("/public", "https://example.com/p", true),
        ])
        .expect("table")
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_longest_first() {
        let t = table();
        assert_eq!(t.find("/api").map(|r| r.path.as_str()), Some("/api"));
        assert_eq!(t.find("/api/x").map(|r| r.path.as_str()), Some("/api"));
        assert_eq!(
            t.find("/api/v2/x").map(|r| r.path.as_str()),
            Some("/api/v2")
        );
        assert_eq!(t.find("/api/v2x").map(|r| r.path.as_str()), Some("/api"));
        assert!(t.find("/apix").is_none());
        assert!(t.find("/").is_none());
    }

    #[test]
    fn a_path_that_reads_as_a_longer_routes_is_refused_whichever_route_it_matches() {
        let t = table();
        let resolved = |p: &str| t.resolve(p).map(|r| r.map(|r| r.path.clone()));
        assert_eq!(resolved("/api/v2/x"), Ok(Some("/api/v2".into())));
        assert_eq!(resolved("/api/users"), Ok(Some("/api".into())));
        assert_eq!(resolved("/api/v20"), Ok(Some("/api".into())));
        assert_eq!(resolved("/elsewhere"), Ok(None));
        for p in [
            "/api/V2/x",
            "/api/%762",
            "/api/v2;x",
            "/api/v2.",
            "/api/;/v2",
        ] {
            assert_eq!(resolved(p), Err(PathRefusal::AnotherRoute), "{p}");
        }
        // Under no route by its spelling, but read as one.
        for p in ["/API/x", "/%61pi", "/Public/x", "/public;a"] {
            assert_eq!(resolved(p), Err(PathRefusal::AnotherRoute), "{p}");
        }
        let root = RouteTable::new(&[
            route("/", "http://127.0.0.1:9100", false),
            route("/admin", "http://127.0.0.1:9100", false),
            route("/Admin", "http://127.0.0.1:9100", false),
        ])
        .expect("table");
        let resolved = |p: &str| root.resolve(p).map(|r| r.map(|r| r.path.clone()));
        assert_eq!(resolved("/ADMIN/x"), Err(PathRefusal::AnotherRoute));
        assert_eq!(resolved("/about"), Ok(Some("/".into())));
        // Two routes that differ only in case do not shadow each other.
        assert_eq!(resolved("/admin/x"), Ok(Some("/admin".into())));
        assert_eq!(resolved("/Admin/x"), Ok(Some("/Admin".into())));
    }

    #[test]
    fn upstream_uris_keep_or_strip_the_prefix_and_keep_the_query() {
        let t = table();
        let uri = |p: &str, q: Option<&str>| {
            t.find(p)
                .expect("route")
                .upstream_uri(p, q)
                .expect("uri")
                .to_string()
        };
        assert_eq!(
            uri("/api/users", Some("a=1&b=2")),
            "http://127.0.0.1:9100/api/users?a=1&b=2"
        );
        assert_eq!(
            uri("/api/v2/users", None),
            "http://127.0.0.1:9200/base/users"
        );
        assert_eq!(uri("/api/v2", None), "http://127.0.0.1:9200/base/");
        assert_eq!(uri("/public/x", None), "https://example.com/p/x");
    }

    #[test]
    fn plain_http_upstreams_get_the_host_hypers_client_would_write() {
        let host = |upstream: &str| {
            let uri: Uri = upstream.parse().expect("uri");
            plain_http_host(
                uri.scheme().expect("scheme"),
                uri.authority().expect("authority"),
            )
            .expect("value")
            .map(|h| h.to_str().expect("ascii").to_owned())
        };
        assert_eq!(
            host("http://127.0.0.1:9100").as_deref(),
            Some("127.0.0.1:9100")
        );
        assert_eq!(
            host("http://api.internal:80/v1").as_deref(),
            Some("api.internal")
        );
        assert_eq!(
            host("http://api.internal/v1").as_deref(),
            Some("api.internal")
        );
        assert_eq!(host("http://[::1]:8080").as_deref(), Some("[::1]:8080"));
        assert_eq!(host("https://api.example.com"), None);
    }

    #[test]
    fn a_request_uri_kept_as_it_came_is_the_uri_built_from_its_path_and_query() {
        let t = RouteTable::new(&[route("/api", "http://127.0.0.1:9100", false)]).expect("table");
        let other = table();
        let routes = [
            t.find("/api").expect("route"),
            other.find("/api/v2/x").expect("route"),
        ];
        for route in routes {
            for target in [
                "/api",
                "/api/",
                "/api/v2/users?a=1&b=%20",
                "/api/x?",
                "/api/a%2Fb;p=1?q",
            ] {
                let uri: Uri = target.parse().expect("uri");
                let built = route.upstream_uri(uri.path(), uri.query()).expect("built");
                let kept = route.upstream_uri_for(uri).expect("kept");
                assert_eq!(kept, built, "{target}");
                assert_eq!(kept.to_string(), built.to_string(), "{target}");
            }
        }
    }

    /// Request paths rich in what upstreams read differently, under the
    /// configured prefixes (and a few outside them).
    fn hostile_request_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let prefix = prop::sample::select(vec!["/api", "/api/v2", "/public", "/", "/apix"]);
        let fragment = prop::sample::select(vec![
            "/", "\\", ".", "..", ";", "%", "2e", "2E", "2f", "2F", "5c", "5C", "00", "3b", "25",
            "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%00", "%3b", "%25", "%c0%ae", "%20", "a",
            "x", ";x", " ", "\u{FF0E}",
        ]);
        (prefix, prop::collection::vec(fragment, 0..12))
            .prop_map(|(prefix, parts)| format!("{prefix}{}", parts.concat()))
    }

    /// The segments of `path` under one reading; `None` when the reading
    /// cannot decode it.
    fn readings(path: &str) -> Vec<Vec<String>> {
        let split =
            |p: &str, seps: &[char]| -> Vec<String> { p.split(seps).map(str::to_owned).collect() };
        let mut out = vec![split(path, &['/']), split(path, &['/', '\\'])];
        let decoded = percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned();
        out.push(split(&decoded, &['/', '\\']));
        for reading in out.clone() {
            out.push(
                reading
                    .iter()
                    .map(|s| s.split(';').next().unwrap_or_default().to_owned())
                    .collect(),
            );
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Either the guard's rule refuses a path, or the upstream path
        /// stays under the route's base path with no dot segment under any
        /// reading (raw, `\\` as `/`, decoded once, `;params` stripped).
        #[test]
        fn a_forwarded_path_stays_under_the_upstream_base_path_in_every_reading(
            path in hostile_request_path()
        ) {
            // Only what can arrive as a request target (no raw spaces).
            if PathAndQuery::try_from(path.as_str()).is_err() {
                return Ok(());
            }
            let t = table();
            let Some(route) = t.find(&path) else { return Ok(()) };
            if crate::url_policy::path::check_request_path(&path).is_err() {
                return Ok(());
            }
            let uri = route.upstream_uri(&path, None).expect("upstream uri");
            let up = uri.path();
            proptest::prop_assert!(
                up.starts_with(&format!("{}/", route.base_path)),
                "{path} -> {up}"
            );
            for reading in readings(up) {
                proptest::prop_assert!(
                    !reading.iter().any(|s| s == "." || s == ".."),
                    "{path} -> {up}: {reading:?}"
                );
            }
        }
    }
}
