//! The gateway under test: a builder over the crate's own typed raw
//! configuration ([`RawConfig`]), started inside the test process or as the
//! real binary, and the [`Gateway`] handle with its Redis, admin and metrics
//! helpers. It must not parse or splice TOML text: tests change the struct,
//! and only `start_process` writes it out as a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oidc_bff::AppState;
use oidc_bff::config::{RawConfig, RawDuration, RawKey, RawRoute};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::browser::no_redirects;
use super::{
    ADMIN_TOKEN, CLIENT_ID, CLIENT_SECRET, KEY_B64, TestCa, Upstream, procs, random_prefix, shared,
};

/// Limit for each store operation and connection in a test gateway. Far
/// above what Redis needs, so a login on a loaded 2-core machine does not
/// hit it; tests about outages set their own with
/// [`GatewayBuilder::store_timeout`].
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// A configuration duration written as text, e.g. `duration("2s")`.
pub fn duration(text: &str) -> RawDuration {
    RawDuration::Text(text.to_owned())
}

/// A route with the configuration's defaults (auth required, 30 s timeout);
/// change the rest with struct update syntax:
/// `RawRoute { auth: "none".into(), ..route("/public", &url) }`.
pub fn route(path: &str, upstream: &str) -> RawRoute {
    RawRoute {
        path: path.to_owned(),
        upstream: upstream.to_owned(),
        ..RawRoute::default()
    }
}

/// Builds and starts one gateway.
pub struct GatewayBuilder {
    /// Everything but the per-start keys (listen address, public URL, key
    /// prefix, admin listener), which `start` fills in.
    config: RawConfig,
    /// Key prefix; a random one unless given.
    prefix: Option<String>,
    admin: bool,
    metrics: bool,
    /// Where a gateway process writes its output.
    log: Option<PathBuf>,
    /// Environment variables of a gateway process (beyond the test's own).
    process_env: Vec<(String, String)>,
    /// `server.public_url` when not the gateway's own address (a front
    /// proxy's).
    public_url: Option<String>,
    /// A path appended to the default `server.public_url` (the gateway
    /// mounted under it).
    mount: String,
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
    /// The configuration it was started with (`write_config` changes a
    /// process gateway's file).
    pub config: RawConfig,
    config_path: Option<PathBuf>,
}

impl GatewayBuilder {
    /// The shared provider and Redis, and one route `/api` to `upstream`.
    pub fn new(upstream: &Upstream) -> Self {
        let s = shared();
        let mut config = RawConfig::default();
        config.oidc.issuer = Some(s.provider.issuer.clone());
        config.oidc.client_id = Some(CLIENT_ID.to_owned());
        config.oidc.client_secret = Some(CLIENT_SECRET.to_owned());
        config.oidc.http_timeout = duration("3s");
        config.session.encryption_keys = vec![RawKey {
            id: "t1".into(),
            key: Some(KEY_B64.into()),
            key_file: None,
        }];
        config.store.url = Some(s.redis.url());
        config.log.access_log = false;
        config.routes.push(route("/api", &upstream.url()));
        Self {
            config,
            prefix: None,
            admin: false,
            metrics: false,
            log: None,
            process_env: Vec::new(),
            public_url: None,
            mount: String::new(),
        }
        .store_timeout(STORE_TIMEOUT)
    }

    /// Changes any configuration key; the helpers below cover common ones.
    pub fn configure(mut self, change: impl FnOnce(&mut RawConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Adds a route after `/api` (see [`route`]).
    pub fn route(self, route: RawRoute) -> Self {
        self.configure(|c| c.routes.push(route))
    }

    /// `session.refresh_skew`: with the provider's short-lived tokens, a
    /// large skew makes the next request refresh.
    pub fn refresh_skew(self, skew: &str) -> Self {
        self.configure(|c| c.session.refresh_skew = duration(skew))
    }

    /// `oidc.client_id` (the provider fixture registers several clients).
    pub fn client_id(self, id: &str) -> Self {
        self.configure(|c| c.oidc.client_id = Some(id.to_owned()))
    }

    /// `store.timeout` and `store.connect_timeout`.
    pub fn store_timeout(self, limit: Duration) -> Self {
        let limit = duration(&format!("{}ms", limit.as_millis()));
        self.configure(|c| {
            c.store.timeout = limit.clone();
            c.store.connect_timeout = limit;
        })
    }

    /// Trust `ca` for the store's TLS (`store.tls_ca_file`).
    pub fn store_ca(self, ca: &TestCa) -> Self {
        self.configure(|c| c.store.tls_ca_file = Some(ca.file("ca.pem").into()))
    }

    /// Present `ca`'s client certificate to the store.
    pub fn store_client_cert(self, ca: &TestCa) -> Self {
        self.configure(|c| {
            c.store.tls_cert_file = Some(ca.file("client.pem").into());
            c.store.tls_key_file = Some(ca.file("client.key").into());
        })
    }

    /// `server.public_url`: the origin browsers use when a front proxy
    /// stands in front of the gateway.
    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.to_owned());
        self
    }

    /// The gateway mounted under `path` (e.g. `/app`): `server.public_url`
    /// is its own address plus `path`.
    pub fn mount(mut self, path: &str) -> Self {
        self.mount = path.to_owned();
        self
    }

    /// With `start_process`: the process's log output goes to `path`.
    /// Sets `name` in a gateway process's environment (`start_process`).
    pub fn process_env(mut self, name: &str, value: &str) -> Self {
        self.process_env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn log_to(mut self, path: &Path) -> Self {
        self.log = Some(path.to_owned());
        self
    }

    pub fn issuer(self, issuer: &str) -> Self {
        self.configure(|c| c.oidc.issuer = Some(issuer.to_owned()))
    }

    pub fn redis(self, url: &str) -> Self {
        self.configure(|c| c.store.url = Some(url.to_owned()))
    }

    /// Find Redis through the Sentinel on `port` watching `master`.
    pub fn sentinel(self, port: u16, master: &str) -> Self {
        self.configure(|c| {
            c.store.url = None;
            c.store.sentinels = vec![format!("127.0.0.1:{port}")];
            c.store.sentinel_master = Some(master.to_owned());
        })
    }

    /// As [`Self::cluster`], over TLS with `ca` (and its client certificate
    /// when the nodes demand one).
    pub fn cluster_tls(self, nodes: &[String], ca: &Arc<TestCa>) -> Self {
        let b = self
            .cluster(nodes)
            .store_ca(ca)
            .configure(|c| c.store.cluster_tls = true);
        if ca.auth_clients {
            b.store_client_cert(ca)
        } else {
            b
        }
    }

    /// Use the Redis Cluster of these nodes (under a prefix without a hash
    /// tag: sessions spread by their shard tags).
    pub fn cluster(self, nodes: &[String]) -> Self {
        self.configure(|c| {
            c.store.url = None;
            c.store.cluster_nodes = nodes.to_vec();
        })
    }

    pub fn memory_store(self) -> Self {
        self.configure(|c| {
            c.store.kind = "memory".into();
            c.store.url = None;
        })
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

    /// Also serve `/metrics`.
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// The configuration of a gateway on `port`.
    fn finish(&self, port: u16, prefix: &str, admin_port: Option<u16>) -> RawConfig {
        let mut config = self.config.clone();
        config.server.listen = format!("127.0.0.1:{port}");
        config.server.public_url = Some(
            self.public_url
                .clone()
                .unwrap_or_else(|| format!("http://127.0.0.1:{port}{}", self.mount)),
        );
        config.store.key_prefix = prefix.to_owned();
        if let Some(p) = admin_port {
            config.admin.listen = Some(format!("127.0.0.1:{p}"));
            config.admin.token = Some(ADMIN_TOKEN.to_owned());
        }
        config
    }

    /// The Redis that `Gateway::redis` inspects: the configured URL, else
    /// the shared server.
    fn redis_url(&self) -> String {
        self.config
            .store
            .url
            .clone()
            .unwrap_or_else(|| shared().redis.url())
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
        let raw = self.finish(addr.port(), &prefix, admin.map(|a| a.port()));
        let config = oidc_bff::config::validate(&raw)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{raw:#?}"));
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
            redis_url: self.redis_url(),
            admin,
            metrics,
            _process: None,
            config: raw,
            config_path: None,
        }
    }

    /// Runs the real `oidc-bff` binary as a separate process, reading the
    /// configuration from a TOML file.
    pub async fn start_process(self) -> Gateway {
        let port = procs::free_port();
        let prefix = self.prefix.clone().unwrap_or_else(random_prefix);
        let admin_port = self.admin.then(procs::free_port);
        let mut raw = self.finish(port, &prefix, admin_port);
        let metrics_port = self.metrics.then(procs::free_port);
        if let Some(p) = metrics_port {
            raw.metrics.listen = Some(format!("127.0.0.1:{p}"));
        }
        let path = std::env::temp_dir().join(format!(
            "oidc-bff-test-{}-{:x}.toml",
            prefix.trim_end_matches(':'),
            rand::random::<u32>()
        ));
        std::fs::write(&path, to_toml(&raw)).expect("write config");
        let process =
            procs::GatewayProcess::start(&path, port, self.log.as_deref(), &self.process_env);
        // The side listeners are bound by worker 0, maybe after another
        // worker's public one.
        for side in admin_port.iter().chain(&metrics_port) {
            assert!(
                procs::wait_for_port(*side, Duration::from_secs(20)),
                "oidc-bff process did not listen on {side}"
            );
        }
        Gateway {
            addr: ([127, 0, 0, 1], port).into(),
            base: format!("http://127.0.0.1:{port}"),
            prefix,
            redis_url: self.redis_url(),
            admin: admin_port.map(|p| ([127, 0, 0, 1], p).into()),
            metrics: metrics_port.map(|p| ([127, 0, 0, 1], p).into()),
            _process: Some(process),
            config: raw,
            config_path: Some(path),
        }
    }
}

/// The configuration as a TOML file. Unset (`None`) keys are left out,
/// which the file format has no other way to say.
fn to_toml(raw: &RawConfig) -> String {
    toml::to_string(raw).unwrap_or_else(|e| panic!("test config as TOML: {e}\n{raw:#?}"))
}

impl Gateway {
    /// Polls `/readyz` until the gateway answers 200 (metadata and keys
    /// loaded, store reachable); fails the test after `within`.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let status = reqwest::get(self.url("/readyz")).await.map(|r| r.status());
            if matches!(status, Ok(StatusCode::OK)) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gateway never became ready within {within:?} (last: {status:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Rewrites a process gateway's configuration file (it reads it again
    /// on SIGHUP or `POST /admin/reload`).
    pub fn write_config(&self, raw: &RawConfig) {
        self.write_config_text(&to_toml(raw));
    }

    /// Writes `text` as the configuration file, e.g. one that is not TOML.
    pub fn write_config_text(&self, text: &str) {
        let path = self
            .config_path
            .as_ref()
            .expect("gateway started with start_process");
        std::fs::write(path, text).expect("write config");
    }

    /// The gateway's process (started with `start_process`).
    pub fn process(&self) -> &procs::GatewayProcess {
        self._process
            .as_ref()
            .expect("gateway started with start_process")
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis_url.as_str()).expect("redis client");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("redis conn")
    }

    /// Keys this gateway wrote for requests: all under its prefix but the
    /// fleet's housekeeping (the sessions gauge's lease and published
    /// count, the sweep's lease), which a gateway writes at start-up and
    /// every period whatever its requests.
    pub async fn redis_keys(&self) -> Vec<String> {
        let mut conn = self.redis().await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let housekeeping =
            ["count:lease", "count:total", "sweep:lease"].map(|k| format!("{}{k}", self.prefix));
        keys.retain(|k| !housekeeping.contains(k));
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

    /// Session IDs in a user's index (`u:{shard tag}{user hash}`, or the
    /// legacy `u:{user hash}`).
    pub async fn user_index(&self, sub: &str) -> Vec<String> {
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(sub.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut conn = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}u:*{hash}", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let mut ids = Vec::new();
        for key in keys {
            let some: Vec<String> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .expect("ZRANGE");
            ids.extend(some);
        }
        ids
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A process gateway reads the file `start_process` writes; it must say
    /// what the in-process gateways get from the struct directly.
    #[test]
    fn the_config_file_reads_back_as_the_same_configuration() {
        let mut raw = RawConfig::default();
        raw.oidc.issuer = Some("http://127.0.0.1:1".into());
        raw.session.refresh_skew = RawDuration::Seconds(1);
        raw.routes.push(RawRoute {
            auth: "none".into(),
            ..route("/public", "http://127.0.0.1:2")
        });
        let path =
            std::env::temp_dir().join(format!("oidc-bff-harness-{:x}.toml", rand::random::<u64>()));
        std::fs::write(&path, to_toml(&raw)).expect("write");
        let read = oidc_bff::config::load_raw(Some(&path), Vec::new());
        let _ = std::fs::remove_file(&path);
        let read = read.unwrap_or_else(|e| panic!("{e}\n{}", to_toml(&raw)));
        let json = |c: &RawConfig| serde_json::to_value(c).expect("json");
        assert_eq!(json(&read), json(&raw));
    }
}
