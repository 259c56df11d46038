//! The router tier's harness: a [`TestRouter`] that runs the real app
//! in-process (`oidc_bff::build_router` over the in-memory store, reached
//! with `tower::ServiceExt::oneshot`), a [`Reply`] that prints itself when an
//! assertion fails, and a recording [`Upstream`] on 127.0.0.1:0 so that
//! forwarding (or its absence) can be observed.
//!
//! Only public entry points are used: `config::load`, `AppState::new` and
//! `build_router`. The one exception, creating a session without a provider,
//! is isolated in [`TestRouter::logged_in`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use oidc_bff::AppState;
use tower::ServiceExt;

/// A 32-byte key, base64: test-only.
const KEY: &str = "cm91dGVyLXRpZXItdGVzdC1rZXktMzItYnl0ZXMhISE=";

/// Where the tests' gateway lives (https, so the `__Host-` cookie is valid).
pub const PUBLIC_URL: &str = "https://app.example.test";

/// The session cookie's name under the default configuration.
pub const SESSION_COOKIE: &str = "__Host-oidc-bff";

/// The challenge on every 401.
pub const WWW_AUTHENTICATE: &str = "Session realm=\"oidc-bff\", login=\"/auth/login\"";

/// The base configuration: memory store, a provider address that refuses
/// connections (port 1 on loopback: nothing listens there), and three routes
/// to `upstream` — `/api` (auth required), `/maybe` (optional) and
/// `/public` (none). `server` is added to `[server]`, `extra` is appended
/// as more TOML.
fn config_toml(upstream: &str, server: &str, extra: &str) -> String {
    format!(
        r#"
[server]
public_url = "{PUBLIC_URL}"
{server}

[oidc]
issuer = "http://127.0.0.1:1"
client_id = "router-tests"
client_secret = "router-tests-secret"
http_timeout = "2s"

[session]
encryption_keys = [{{ id = "test", key = "{KEY}" }}]

[store]
kind = "memory"

[log]
access_log = false

[[routes]]
path = "/api"
upstream = "{upstream}"

[[routes]]
path = "/maybe"
upstream = "{upstream}"
auth = "optional"

[[routes]]
path = "/public"
upstream = "{upstream}"
auth = "none"
{extra}
"#
    )
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "oidc-bff-router-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real app, in-process, with its own state and upstream.
pub struct TestRouter {
    router: Router,
    state: AppState,
    pub upstream: Upstream,
    /// Holds the config file (and a static app, if any) for the test's life.
    _dir: TempDir,
}

impl TestRouter {
    /// The base configuration (see [`config_toml`]).
    pub async fn new() -> Self {
        Self::with("").await
    }

    /// The base configuration plus `extra` TOML (a section the base lacks,
    /// such as `[static]` or `[csrf]`).
    pub async fn with(extra: &str) -> Self {
        Self::with_dir(TempDir::new(), extra).await
    }

    /// As [`TestRouter::with`], in a directory the caller has filled (e.g.
    /// with a static app); `{dir}` in `extra` is replaced by its path and
    /// `{upstream}` by the recording upstream's URL.
    pub async fn with_dir(dir: TempDir, extra: &str) -> Self {
        Self::build(dir, "", extra).await
    }

    /// The base configuration with `server` lines added to `[server]` (e.g.
    /// `trusted_proxies = [...]`).
    pub async fn with_server(server: &str) -> Self {
        Self::build(TempDir::new(), server, "").await
    }

    /// As [`TestRouter::with_dir`], with the gateway mounted under `mount`
    /// (`server.public_url` = [`PUBLIC_URL`] + `mount`, e.g. `/app`) and
    /// `server` lines added to `[server]`.
    pub async fn mounted(dir: TempDir, mount: &str, server: &str, extra: &str) -> Self {
        Self::build_mounted(dir, server, extra, mount).await
    }

    /// The base configuration with `session` lines added to `[session]`
    /// (e.g. `cookie_domain = "example.test"`).
    pub async fn with_session(session: &str) -> Self {
        Self::with_session_and("", session, "").await
    }

    /// As [`TestRouter::with_session`], with `server` lines added to
    /// `[server]` and `extra` TOML appended.
    pub async fn with_session_and(server: &str, session: &str, extra: &str) -> Self {
        Self::build_with(TempDir::new(), server, session, extra, "").await
    }

    async fn build(dir: TempDir, server: &str, extra: &str) -> Self {
        Self::build_mounted(dir, server, extra, "").await
    }

    async fn build_mounted(dir: TempDir, server: &str, extra: &str, mount: &str) -> Self {
        Self::build_with(dir, server, "", extra, mount).await
    }

    async fn build_with(
        dir: TempDir,
        server: &str,
        session: &str,
        extra: &str,
        mount: &str,
    ) -> Self {
        let upstream = Upstream::start().await;
        let extra = extra
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{upstream}", &upstream.url);
        let toml = config_toml(&upstream.url, server, &extra)
            .replace(
                &format!("public_url = \"{PUBLIC_URL}\""),
                &format!("public_url = \"{PUBLIC_URL}{mount}\""),
            )
            .replace("[session]\n", &format!("[session]\n{session}\n"));
        let path = dir.write("oidc-bff.toml", &toml);
        let config = match oidc_bff::config::load(Some(&path), Vec::new()) {
            Ok(c) => c,
            Err(e) => panic!("test configuration is invalid:\n{e}"),
        };
        let state = AppState::new(config).expect("app state");
        Self {
            router: oidc_bff::build_router(state.clone()),
            state,
            upstream,
            _dir: dir,
        }
    }

    /// Sends one request through the whole router (every layer included).
    pub async fn send(&self, req: Request<Body>) -> Reply {
        Self::send_to(self.router.clone(), req).await
    }

    /// Sends one request to the admin listener's app (`admin_app`; needs
    /// `[admin]` in the configuration).
    pub async fn send_admin(&self, req: Request<Body>) -> Reply {
        Self::send_to(oidc_bff::admin_app(self.state.clone()), req).await
    }

    /// Sends one request to the metrics listener's app.
    pub async fn send_metrics(&self, req: Request<Body>) -> Reply {
        Self::send_to(oidc_bff::metrics_app(&self.state), req).await
    }

    async fn send_to(router: Router, req: Request<Body>) -> Reply {
        let resp = router.oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends one request as if it came over TCP from `peer` (what the
    /// listener records as `ConnectInfo`; without it the peer is 0.0.0.0).
    pub async fn send_from(&self, peer: &str, mut req: Request<Body>) -> Reply {
        let peer: std::net::IpAddr = peer.parse().expect("peer address");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
                peer, 40000,
            )));
        self.send(req).await
    }

    /// `GET path` with the given headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(request(Method::GET, path, headers, Body::empty()))
            .await
    }

    /// A session created directly in the store, without a provider: the
    /// `Cookie` header value that names it. Its access token
    /// (`access-token-for-<sub>`) is valid for an hour, so no refresh is
    /// attempted.
    ///
    /// This is the only place that reaches below `build_router` into
    /// `state.sessions`; if the session API moves, only this changes.
    pub async fn logged_in(&self, sub: &str) -> String {
        self.logged_in_with(sub, serde_json::json!({}), None).await
    }

    /// As [`TestRouter::logged_in`], with `claims` (an object) added to the
    /// session's claims and the access token's granted `scopes`.
    pub async fn logged_in_with(
        &self,
        sub: &str,
        claims: serde_json::Value,
        scopes: Option<&str>,
    ) -> String {
        use oidc_bff::secret::SecretString;
        use oidc_bff::session::{ClientInfo, NewLogin};
        let now = oidc_bff::clock::unix_now();
        let login = NewLogin {
            sub: sub.to_owned(),
            sid: None,
            access_token: SecretString::new(format!("access-token-for-{sub}")),
            refresh_token: None,
            id_token: None,
            access_expires_at: now + 3600,
            claims_json: {
                let mut all = serde_json::json!({ "sub": sub, "name": "Router Test" });
                if let (Some(all), Some(extra)) = (all.as_object_mut(), claims.as_object()) {
                    all.extend(extra.clone());
                }
                all.to_string()
            },
            scopes: scopes.map(str::to_owned),
            dpop_key: None,
        };
        let (_, set_cookie) = self
            .state
            .sessions
            .create(login, &ClientInfo::default(), now)
            .await
            .expect("create session");
        let set_cookie = set_cookie.to_str().expect("ascii cookie");
        set_cookie.split(';').next().expect("name=value").to_owned()
    }

    /// Ends the session `cookie` (a `Cookie` header value from
    /// [`TestRouter::logged_in`]) as the gateway would for `reason`.
    pub async fn revoke(&self, cookie: &str, reason: oidc_bff::session::store::RevokeReason) {
        let value = cookie.split_once('=').expect("name=value").1;
        let id = oidc_bff::session::cookie::SessionId::parse(value).expect("a session cookie");
        self.state
            .sessions
            .revoke(
                &id.store_id(),
                reason,
                "router-test",
                oidc_bff::clock::unix_now(),
            )
            .await
            .expect("revoke session");
    }
}

/// A request with headers; `path` may hold a query. It carries the one
/// `Host` an HTTP/1.1 client sends (RFC 9112 §3.2), unless `headers`
/// name their own.
pub fn request(method: Method, path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        builder = builder.header("host", "gateway.test");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).expect("request")
}

/// What a browser sends when it navigates (old-style `Accept` too).
pub const NAVIGATION: &[(&str, &str)] = &[
    ("sec-fetch-mode", "navigate"),
    ("accept", "text/html,application/xhtml+xml"),
];

/// A response, collected. `Display` prints all of it for failure messages.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}):\n{self}"))
    }

    /// A header as text; panics (printing the reply) when absent.
    pub fn header(&self, name: impl header::AsHeaderName + fmt::Display + Clone) -> &str {
        match self.headers.get(name.clone()) {
            Some(v) => v.to_str().expect("ascii header"),
            None => panic!("no {name} header in:\n{self}"),
        }
    }

    /// Every value of a header.
    pub fn all(&self, name: header::HeaderName) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii header"))
            .collect()
    }

    /// Asserts the status and the exact JSON body.
    #[track_caller]
    pub fn assert_json(&self, status: StatusCode, body: serde_json::Value) {
        assert_eq!(self.status, status, "{self}");
        assert_eq!(self.json(), body, "{self}");
    }

    /// Asserts the gateway's JSON error answer: status, `{error, message}`
    /// and `Cache-Control: no-store`.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str, message: &str) {
        self.assert_json(
            status,
            serde_json::json!({ "error": code, "message": message }),
        );
        assert_eq!(
            self.header(header::CONTENT_TYPE),
            "application/json",
            "{self}"
        );
        assert_eq!(self.header(header::CACHE_CONTROL), "no-store", "{self}");
    }
}

impl Reply {
    /// Asserts the 401 for a cookie that names an ended session: code
    /// `session_expired`, the `reason` and its sentence, and nothing else.
    #[track_caller]
    pub fn assert_session_ended(&self, reason: &str, message: &str) {
        self.assert_json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "session_expired", "reason": reason, "message": message }),
        );
        assert_eq!(self.header(header::CACHE_CONTROL), "no-store", "{self}");
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- reply: {}", self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {}", String::from_utf8_lossy(value.as_bytes()))?;
        }
        writeln!(f)?;
        writeln!(f, "{}", self.text())?;
        write!(f, "---")
    }
}

/// What the upstream sets under `.../set-cookie`: spellings of the
/// gateway's session cookie (one with a non-ASCII value, which is not
/// UTF-8), a nameless cookie that a browser would send back as
/// `__Host-oidc-bff=...`, and two cookies of the app's own.
pub const UPSTREAM_SET_COOKIES: &[&[u8]] = &[
    b"__Host-oidc-bff=\xe9vil; Path=/; Secure; HttpOnly",
    b"__HOST-oidc-bff=evil; Path=/",
    b" __Host-oidc-bff-login =evil; Path=/",
    b"=__Host-oidc-bff=evil; Path=/",
    b"app=1; Path=/",
    b"theme=\xe9t\xe9; Path=/",
];

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
}

/// An HTTP server on 127.0.0.1:0 that records every request and answers
/// `200 {"upstream": "ok"}`, with extra response headers on two paths:
/// under `.../cors` a credentialed CORS grant to `https://evil.example`,
/// under `.../set-cookie` [`UPSTREAM_SET_COOKIES`]. It stops when the test's
/// runtime ends.
pub struct Upstream {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = Router::new().fallback(move |req: Request<Body>| {
            let record = record.clone();
            async move {
                record.lock().expect("upstream log").push(Seen {
                    method: req.method().clone(),
                    uri: req.uri().to_string(),
                    headers: req.headers().clone(),
                });
                let mut resp = axum::response::IntoResponse::into_response(axum::Json(
                    serde_json::json!({ "upstream": "ok" }),
                ));
                let h = resp.headers_mut();
                if req.uri().path().ends_with("/cors") {
                    for (name, value) in [
                        ("access-control-allow-origin", "https://evil.example"),
                        ("access-control-allow-credentials", "true"),
                        ("access-control-expose-headers", "x-secret"),
                    ] {
                        h.insert(name, header::HeaderValue::from_static(value));
                    }
                }
                if req.uri().path().ends_with("/set-cookie") {
                    for raw in UPSTREAM_SET_COOKIES {
                        h.append(
                            header::SET_COOKIE,
                            header::HeaderValue::from_bytes(raw).expect("set-cookie"),
                        );
                    }
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            seen,
        }
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("upstream log").clone()
    }

    /// The path and query of every request so far.
    pub fn uris(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.uri).collect()
    }
}

/// Asserts the reply clears the session cookie and sets nothing else: one
/// `Set-Cookie` with an empty value, `Max-Age=0` and the cookie's usual
/// attributes (in any order).
#[track_caller]
pub fn assert_clears_session_cookie(reply: &Reply) {
    let cookies = reply.all(header::SET_COOKIE);
    assert_eq!(cookies.len(), 1, "one Set-Cookie expected:\n{reply}");
    let mut parts = cookies[0].split(';').map(str::trim);
    assert_eq!(
        parts.next(),
        Some(format!("{SESSION_COOKIE}=").as_str()),
        "{reply}"
    );
    let mut attributes: Vec<&str> = parts.collect();
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        vec![
            "HttpOnly",
            "Max-Age=0",
            "Path=/",
            "SameSite=Strict",
            "Secure"
        ],
        "{reply}"
    );
}
