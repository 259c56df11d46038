//! The test harness: real Redis, real OpenID provider, the real gateway on a
//! random port, and a scripted browser that follows the provider's login
//! form. Each test gets its own key prefix in the shared Redis, so tests run
//! in parallel without seeing each other's sessions.

pub mod net;
pub mod procs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use oidc_bff::AppState;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub use net::{Chaos, Upstream};
pub use procs::{
    ProviderProcess, RedisCluster, RedisServer, SentinelProcess, TestCa, TlsStatusServer,
};

pub const KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const CLIENT_ID: &str = "oidc-bff";
pub const CLIENT_SECRET: &str = "oidc-bff-secret";

/// Processes shared by every test in this binary.
pub struct Shared {
    pub redis: RedisServer,
    pub provider: ProviderProcess,
}

pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        oidc_bff::telemetry::init(
            &oidc_bff::config::LogConfig {
                format: oidc_bff::config::LogFormat::Text,
                level: "warn".into(),
                access_log: false,
            },
            std::env::var("RUST_LOG").ok().as_deref(),
        );
        Shared {
            redis: RedisServer::start(),
            provider: ProviderProcess::start(&[]),
        }
    })
}

/// A user name no other test uses.
pub fn unique_user(label: &str) -> String {
    format!("{label}-{:08x}", rand::random::<u32>())
}

pub fn random_prefix() -> String {
    format!("t{:016x}:", rand::random::<u64>())
}

/// Builds and starts one gateway.
pub struct GatewayBuilder {
    issuer: String,
    redis_url: String,
    /// Sentinel address and master name, instead of `redis_url`.
    sentinel: Option<(u16, String)>,
    /// Redis Cluster nodes, instead of `redis_url`.
    cluster: Vec<String>,
    /// The cluster speaks TLS with this CA's certificates.
    cluster_tls: Option<std::sync::Arc<TestCa>>,
    upstream: String,
    extra: String,
    memory: bool,
    prefix: Option<String>,
    admin: bool,
    metrics: bool,
    /// Where a gateway process writes its output.
    log: Option<std::path::PathBuf>,
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub base: String,
    pub prefix: String,
    pub redis_url: String,
    pub admin: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    /// The gateway's own process, when started with `start_process`.
    pub _process: Option<procs::GatewayProcess>,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123456789";

impl GatewayBuilder {
    pub fn new(upstream: &Upstream) -> Self {
        let s = shared();
        Self {
            issuer: s.provider.issuer.clone(),
            redis_url: s.redis.url(),
            sentinel: None,
            cluster: Vec::new(),
            cluster_tls: None,
            upstream: upstream.url(),
            extra: String::new(),
            memory: false,
            prefix: None,
            admin: false,
            metrics: false,
            log: None,
        }
    }

    /// With `start_process`: the process's log output goes to `path`.
    pub fn log_to(mut self, path: &std::path::Path) -> Self {
        self.log = Some(path.to_owned());
        self
    }

    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.to_owned();
        self
    }

    pub fn redis(mut self, url: &str) -> Self {
        self.redis_url = url.to_owned();
        self
    }

    /// Find Redis through the Sentinel on `port` watching `master`.
    pub fn sentinel(mut self, port: u16, master: &str) -> Self {
        self.sentinel = Some((port, master.to_owned()));
        self
    }

    /// Use the Redis Cluster of these nodes, under a prefix with a hash tag.
    /// As [`Self::cluster`], over TLS with `ca` (and its client certificate
    /// when the nodes demand one).
    pub fn cluster_tls(self, nodes: &[String], ca: &std::sync::Arc<TestCa>) -> Self {
        let mut b = self.cluster(nodes);
        b.cluster_tls = Some(ca.clone());
        b
    }

    pub fn cluster(mut self, nodes: &[String]) -> Self {
        self.cluster = nodes.to_vec();
        self.prefix
            .get_or_insert_with(|| format!("{{t{:016x}}}:", rand::random::<u64>()));
        self
    }

    pub fn memory_store(mut self) -> Self {
        self.memory = true;
        self
    }

    /// Share another gateway's key prefix (two instances, one Redis).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// Also serve the admin API (token [`ADMIN_TOKEN`]).
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// Also serve `/metrics` (in-process gateways only).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Extra TOML, appended to a section: `("session", "idle_timeout = \"2s\"")`.
    pub fn set(mut self, section: &str, line: &str) -> Self {
        self.extra.push_str(&format!("\n[{section}]\n{line}\n"));
        self
    }

    /// Raw TOML appended at the end (e.g. more `[[routes]]`).
    pub fn raw(mut self, toml: &str) -> Self {
        self.extra.push('\n');
        self.extra.push_str(toml);
        self
    }

    /// The configuration file for a gateway on `port`.
    fn render(&self, port: u16, prefix: &str, admin_port: Option<u16>) -> String {
        let base = format!("http://127.0.0.1:{port}");
        let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // A later line for the same key replaces the earlier one.
        let mut add = |s: &str, l: String| {
            let key = l.split('=').next().unwrap_or_default().trim().to_owned();
            let lines = sections.entry(s.to_owned()).or_default();
            lines.retain(|old| old.split('=').next().unwrap_or_default().trim() != key);
            lines.push(l);
        };
        add("server", format!("listen = \"127.0.0.1:{port}\""));
        add("server", format!("public_url = \"{base}\""));
        add("oidc", format!("issuer = \"{}\"", self.issuer));
        add("oidc", format!("client_id = \"{CLIENT_ID}\""));
        add("oidc", format!("client_secret = \"{CLIENT_SECRET}\""));
        add("oidc", "http_timeout = \"3s\"".into());
        add(
            "session",
            format!("encryption_keys = [{{ id = \"t1\", key = \"{KEY_B64}\" }}]"),
        );
        if self.memory {
            add("store", "kind = \"memory\"".into());
        } else {
            match &self.sentinel {
                _ if !self.cluster.is_empty() => {
                    let nodes: Vec<String> =
                        self.cluster.iter().map(|n| format!("\"{n}\"")).collect();
                    add("store", format!("cluster_nodes = [{}]", nodes.join(", ")));
                    if let Some(ca) = &self.cluster_tls {
                        add("store", "cluster_tls = true".into());
                        add("store", format!("tls_ca_file = \"{}\"", ca.file("ca.pem")));
                        if ca.auth_clients {
                            add(
                                "store",
                                format!("tls_cert_file = \"{}\"", ca.file("client.pem")),
                            );
                            add(
                                "store",
                                format!("tls_key_file = \"{}\"", ca.file("client.key")),
                            );
                        }
                    }
                }
                Some((port, master)) => {
                    add("store", format!("sentinels = [\"127.0.0.1:{port}\"]"));
                    add("store", format!("sentinel_master = \"{master}\""));
                }
                None => add("store", format!("url = \"{}\"", self.redis_url)),
            }
            add("store", "timeout = \"500ms\"".into());
            add("store", "connect_timeout = \"500ms\"".into());
        }
        add("store", format!("key_prefix = \"{prefix}\""));
        add("log", "access_log = false".into());
        if let Some(p) = admin_port {
            add("admin", format!("listen = \"127.0.0.1:{p}\""));
            add("admin", format!("token = \"{ADMIN_TOKEN}\""));
        }
        let mut tail = String::new();
        let mut current: Option<String> = None;
        for line in self.extra.lines() {
            let t = line.trim();
            if let Some(name) = t
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .filter(|n| !n.starts_with('['))
            {
                current = Some(name.to_owned());
                continue;
            }
            if t.starts_with("[[") {
                current = None;
            }
            match &current {
                Some(sec) if !t.is_empty() => add(sec, t.to_owned()),
                Some(_) => {}
                None => {
                    tail.push_str(line);
                    tail.push('\n');
                }
            }
        }
        let mut toml = String::new();
        for (sec, lines) in &sections {
            toml.push_str(&format!("[{sec}]\n{}\n\n", lines.join("\n")));
        }
        toml.push_str(&format!(
            "[[routes]]\npath = \"/api\"\nupstream = \"{}\"\n\n",
            self.upstream
        ));
        toml.push_str(&tail);
        toml
    }

    fn write_config(&self, toml: &str, prefix: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "oidc-bff-test-{}-{:x}.toml",
            prefix.trim_end_matches(':'),
            rand::random::<u32>()
        ));
        std::fs::write(&path, toml).expect("write config");
        path
    }

    /// Runs the gateway inside the test process.
    pub async fn start(self) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("addr");
        let prefix = self.prefix.clone().unwrap_or_else(random_prefix);
        let admin_listener = if self.admin {
            Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind admin"),
            )
        } else {
            None
        };
        let admin = admin_listener
            .as_ref()
            .map(|l| l.local_addr().expect("addr"));
        let toml = self.render(addr.port(), &prefix, admin.map(|a| a.port()));
        let path = self.write_config(&toml, &prefix);
        let config = oidc_bff::config::load(Some(&path), Vec::new())
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{toml}"));
        let _ = std::fs::remove_file(&path);
        let state = AppState::new(config).expect("state");
        oidc_bff::spawn_background(&state);
        if let Some(l) = admin_listener {
            let st = state.clone();
            tokio::spawn(async move {
                let _ = oidc_bff::serve_admin(st, l, std::future::pending()).await;
            });
        }
        let metrics = if self.metrics {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind metrics");
            let addr = l.local_addr().expect("addr");
            let st = state.clone();
            tokio::spawn(async move {
                let _ = oidc_bff::serve_metrics(st, l, std::future::pending()).await;
            });
            Some(addr)
        } else {
            None
        };
        tokio::spawn(async move {
            let _ = oidc_bff::serve(state, listener, std::future::pending()).await;
        });
        Gateway {
            addr,
            base: format!("http://127.0.0.1:{}", addr.port()),
            prefix,
            redis_url: self.redis_url.clone(),
            admin,
            metrics,
            _process: None,
        }
    }

    /// Runs the real `oidc-bff` binary as a separate process.
    pub async fn start_process(self) -> Gateway {
        let port = procs::free_port();
        let prefix = self.prefix.clone().unwrap_or_else(random_prefix);
        let admin_port = self.admin.then(procs::free_port);
        let toml = self.render(port, &prefix, admin_port);
        let path = self.write_config(&toml, &prefix);
        let process = procs::GatewayProcess::start(&path, port, self.log.as_deref());
        Gateway {
            addr: ([127, 0, 0, 1], port).into(),
            base: format!("http://127.0.0.1:{port}"),
            prefix,
            redis_url: self.redis_url.clone(),
            admin: admin_port.map(|p| ([127, 0, 0, 1], p).into()),
            metrics: None,
            _process: Some(process),
        }
    }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis_url.as_str()).expect("redis client");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("redis conn")
    }

    /// Keys this gateway wrote.
    pub async fn redis_keys(&self) -> Vec<String> {
        let mut conn = self.redis().await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }

    /// Number of session records in Redis.
    pub async fn session_count(&self) -> usize {
        let p = format!("{}s:", self.prefix);
        self.redis_keys()
            .await
            .iter()
            .filter(|k| k.starts_with(&p))
            .count()
    }

    /// Session IDs in a user's index.
    pub async fn user_index(&self, sub: &str) -> Vec<String> {
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(sub.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut conn = self.redis().await;
        redis::cmd("ZRANGE")
            .arg(format!("{}u:{hash}", self.prefix))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .expect("ZRANGE")
    }

    /// The metrics text.
    pub async fn scrape(&self) -> String {
        let addr = self.metrics.expect("gateway started with .metrics()");
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    }

    /// A request to the admin API.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let addr = self.admin.expect("gateway started with .admin()");
        let mut req = no_redirects()
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("admin request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A scripted browser: its own cookies for the gateway (kept by hand, so
/// tests can tamper with them) and a cookie-jar client for the provider.
pub struct Browser {
    pub gw: reqwest::Client,
    pub idp: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    pub base: String,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    pub fn location(&self) -> Option<String> {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.body)
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Finds the first `<form ... action="...">` and the named inputs in a page.
pub fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let action = &form[form.find("action=\"")? + 8..];
    Some(action[..action.find('"')?].replace("&amp;", "&"))
}

pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for chunk in html.split("<input").skip(1) {
        let tag = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
        if !tag.contains("type=\"hidden\"") {
            continue;
        }
        let attr = |name: &str| {
            let pat = format!("{name}=\"");
            tag.find(&pat).map(|i| {
                let rest = &tag[i + pat.len()..];
                rest[..rest.find('"').unwrap_or(rest.len())].replace("&amp;", "&")
            })
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
    }
    out
}

fn absolutize(base: &str, location: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(location))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| location.to_owned())
}

impl Browser {
    pub fn new(gw: &Gateway) -> Self {
        Self::trusting(gw, None)
    }

    /// A browser that also trusts the CA in `ca_pem` (a provider behind a
    /// private CA).
    pub fn trusting(gw: &Gateway, ca_pem: Option<&[u8]>) -> Self {
        let mut idp = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .timeout(Duration::from_secs(20));
        if let Some(pem) = ca_pem {
            idp = idp.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA PEM"));
        }
        let idp = idp.build().expect("client");
        Self {
            gw: no_redirects(),
            idp,
            cookies: BTreeMap::new(),
            base: gw.base.clone(),
        }
    }

    fn absorb(&mut self, headers: &HeaderMap) {
        for v in headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let pair = v.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let expired = v.to_ascii_lowercase().contains("max-age=0");
            if expired || value.is_empty() {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn session_cookie(&self) -> Option<String> {
        self.cookies.get("__Host-oidc-bff").cloned()
    }

    /// A request to the gateway with this browser's cookies.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.gw.request(method, &url);
        if !self.cookies.is_empty() {
            req = req.header("cookie", self.cookie_header());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        self.absorb(&headers);
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.request(Method::GET, path, &[], None).await
    }

    /// A browser navigation (asks for HTML, like a real one).
    pub async fn navigate(&mut self, path: &str) -> Resp {
        self.request(
            Method::GET,
            path,
            &[("accept", "text/html"), ("sec-fetch-mode", "navigate")],
            None,
        )
        .await
    }

    /// `GET /auth/login`, returning the provider authorization URL.
    pub async fn start_login(&mut self, return_to: &str) -> String {
        let r = self
            .navigate(&format!("/auth/login?return_to={}", urlencode(return_to)))
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "login start: {r:?}");
        r.location().expect("authorization URL")
    }

    /// Walks the provider's pages from the authorization URL until it
    /// redirects back to the gateway; returns that callback URL.
    pub async fn authenticate(
        &mut self,
        authorize_url: &str,
        user: &str,
        password: &str,
    ) -> String {
        let mut url = authorize_url.to_owned();
        for _ in 0..12 {
            if url.starts_with(&self.base) {
                return url;
            }
            let r = self
                .idp
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = r.status();
            if let Some(loc) = r.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                url = absolutize(&url, loc);
                continue;
            }
            let html = r.text().await.unwrap_or_default();
            assert!(status.is_success(), "provider page {url}: {status} {html}");
            let action = absolutize(
                &url,
                &form_action(&html).unwrap_or_else(|| panic!("no form on {url}: {html}")),
            );
            let mut fields = hidden_inputs(&html);
            if html.contains("name=\"password\"") {
                fields.push(("login".into(), user.into()));
                fields.push(("password".into(), password.into()));
            }
            let r = self
                .idp
                .post(&action)
                .form(&fields)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {action}: {e}"));
            let status = r.status();
            match r.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                Some(loc) => url = absolutize(&action, loc),
                None => panic!(
                    "form post to {action} did not redirect: {status} {}",
                    r.text().await.unwrap_or_default()
                ),
            }
        }
        panic!("provider did not redirect back to the gateway; last URL {url}");
    }

    /// Completes a callback URL at the gateway.
    pub async fn callback(&mut self, callback_url: &str) -> Resp {
        self.navigate(callback_url).await
    }

    /// The whole login; asserts it succeeded.
    /// A whole login; the gateway's answer where it stopped (the login
    /// start if that failed, else the callback), whatever it is.
    pub async fn try_login(&mut self, user: &str, password: &str) -> Resp {
        let start = self.navigate("/auth/login?return_to=%2Fapp").await;
        let Some(authorize) = start
            .location()
            .filter(|_| start.status == StatusCode::SEE_OTHER)
        else {
            return start;
        };
        let cb = self.authenticate(&authorize, user, password).await;
        self.callback(&cb).await
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Resp {
        let r = self.try_login(user, password).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "callback: {r:?}");
        assert!(
            self.session_cookie().is_some(),
            "no session cookie after login: {r:?}"
        );
        r
    }

    /// Logs in as a user of this test's own (the provider accepts any
    /// lowercase name with password "<name>-password").
    pub async fn login_as(&mut self, user: &str) -> Resp {
        self.login(user, &format!("{user}-password")).await
    }

    pub async fn login_alice(&mut self) -> Resp {
        self.login("alice", "alice-password").await
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The provider fixture's test control API.
pub struct ProviderApi {
    pub issuer: String,
    client: reqwest::Client,
}

impl ProviderApi {
    pub fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            client: no_redirects(),
        }
    }

    pub fn shared() -> Self {
        Self::new(&shared().provider.issuer)
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .client
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("provider api");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "provider {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.issuer))
            .send()
            .await
            .expect("provider api");
        r.json().await.expect("json")
    }

    pub async fn check_access_token(&self, token: &str) -> Value {
        self.post(
            "/__test/access-token/check",
            serde_json::json!({ "token": token }),
        )
        .await
    }
}
