//! Reloading the configuration without a restart (SIGHUP, `POST
//! /admin/reload`): read and validate the file again exactly as at start-up,
//! decide what may change live, have every worker build its new state, and
//! swap all of them or none.
//!
//! What may change live is everything a worker's state is built from:
//! routes and their policies, upstream TLS files, provider settings (the
//! provider's caches are kept unless `[oidc]` changed), the session key
//! ring, cookies, CSRF, static files, identity assertions, forward-auth,
//! the admin token, `server.max_body_bytes` and `body_read_timeout`, the drain and shutdown
//! periods, and `log.level` / `log.access_log`. What the process set up once
//! — sockets, threads, the store connection, the log format — cannot:
//! [`NEEDS_RESTART`] lists those keys. A reload that changes one of them is
//! still applied for everything else; each such key keeps its running value
//! and is named in a warning ("needs a restart"), so one edit to a
//! ConfigMap takes effect in part now and in full at the next rollout
//! instead of being refused whole.
//!
//! This module owns the decision and the coordination; it must not serve
//! anything: `crate::server` runs the workers that build and swap.

use std::path::PathBuf;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::{self, Config, ConfigErrors, RawConfig};
use crate::lifecycle::ReloadReport;
use crate::metrics::{Metrics, ResultLabel};
use crate::oidc::OidcCaches;
use crate::telemetry::LogLevel;

/// Keys whose running value a reload keeps, with why: a dotted key, or a
/// section name for all of its keys.
pub const NEEDS_RESTART: &[(&str, &str)] = &[
    (
        "server.listen",
        "the listening sockets are bound at start-up",
    ),
    ("server.workers", "worker threads are started at start-up"),
    (
        "server.header_read_timeout",
        "connection limits are set when a listener starts",
    ),
    (
        "server.idle_timeout",
        "connection limits are set when a listener starts",
    ),
    (
        "server.max_connections",
        "connection limits are set when a listener starts",
    ),
    (
        "server.http2_max_concurrent_streams",
        "connection limits are set when a listener starts",
    ),
    (
        "server.max_header_bytes",
        "connection limits are set when a listener starts",
    ),
    (
        "store",
        "each worker's store connection (or the memory store) lives as long as the process",
    ),
    ("admin.listen", "the admin listener is bound at start-up"),
    (
        "metrics.listen",
        "the metrics listener is bound at start-up",
    ),
    ("log.format", "the log format is chosen when logging starts"),
    (
        "audit",
        "the audit trail's writer thread and sink are opened at start-up",
    ),
    (
        "tracing",
        "the tracer and its exporter are installed process-wide at start-up",
    ),
];

/// What the process was started with, to load the configuration again the
/// same way.
pub struct Source {
    /// `--config` / `OIDC_BFF_CONFIG`.
    pub path: Option<PathBuf>,
    /// The environment at start-up (`OIDC_BFF__*` overrides).
    pub env: Vec<(String, String)>,
    /// The raw configuration the process runs with.
    pub raw: RawConfig,
    /// Sets `log.level`; `None` when `RUST_LOG` decides it.
    pub log_level: Option<LogLevel>,
}

/// One worker's part of a reload: build the state for `config` and say
/// whether that worked (`built`), then, if `commit` brings a sender, swap
/// it in and say so on that sender (`None`: keep the running state).
pub struct WorkerReload {
    pub config: Config,
    pub oidc_caches: OidcCaches,
    pub built: oneshot::Sender<Result<(), String>>,
    pub commit: oneshot::Receiver<Option<oneshot::Sender<()>>>,
}

/// The keys among [`NEEDS_RESTART`] whose value differs between two raw
/// configurations (a section's keys one by one).
pub fn needs_restart(old: &RawConfig, new: &RawConfig) -> Vec<String> {
    let (old, new) = (as_json(old), as_json(new));
    let mut keys = Vec::new();
    for (key, _) in NEEDS_RESTART {
        let (a, b) = (at(&old, key), at(&new, key));
        if a == b {
            continue;
        }
        match (a.and_then(Value::as_object), b.and_then(Value::as_object)) {
            (Some(a), Some(b)) => {
                let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
                names.sort();
                names.dedup();
                keys.extend(
                    names
                        .into_iter()
                        .filter(|n| a.get(*n) != b.get(*n))
                        .map(|n| format!("{key}.{n}")),
                );
            }
            _ => keys.push((*key).to_owned()),
        }
    }
    keys
}

/// The top-level sections (and `routes`) that differ, for the log line of
/// a reload.
pub fn changed_sections(old: &RawConfig, new: &RawConfig) -> Vec<String> {
    let (old, new) = (as_json(old), as_json(new));
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return Vec::new();
    };
    old.iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// What applying `new` over `old` does to the sessions that exist: each
/// change that ends them or leaves them unread, as `(key, consequence)`.
/// The reload still applies (the operator asked for exactly this, as in
/// the last step of a key rotation), but it is said, naming the key; the
/// key material itself is never named, only its ID.
pub fn ends_sessions(old: &Config, new: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if old.session.cookie_name != new.session.cookie_name {
        out.push((
            "session.cookie_name".to_owned(),
            format!(
                "browsers hold their sessions in `{}`, which is no longer read: every user has to log in again",
                old.session.cookie_name
            ),
        ));
    }
    for key in &old.session.keys {
        let consequence = match new.session.keys.iter().find(|k| k.id == key.id) {
            None => format!(
                "key `{}` is removed: the sessions still sealed under it end",
                key.id
            ),
            Some(k) if k.key != key.key => format!(
                "key `{}` has other key material under the same ID: the sessions still sealed under it end",
                key.id
            ),
            Some(_) => continue,
        };
        out.push(("session.encryption_keys".to_owned(), consequence));
    }
    out
}

/// A problem's message without the lines of the file a TOML parse error
/// quotes (`2 | key = "…"`): that line may hold a secret, and unlike
/// `check-config` at a terminal, a reload's message goes to the log.
fn without_quoted_source(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| {
            let gutter = line.trim_start_matches(|c: char| c.is_ascii_digit());
            !line.is_empty() && !gutter.trim_start().starts_with('|')
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn as_json(raw: &RawConfig) -> Value {
    serde_json::to_value(raw).unwrap_or(Value::Null)
}

fn at<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(value, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

/// Gives `new` the running values of everything [`NEEDS_RESTART`] names,
/// so the state built from it describes what the process really does.
pub fn keep_running(new: &mut Config, old: &Config) {
    new.server.listen = old.server.listen;
    new.server.workers = old.server.workers;
    // Read per request by the router and the forwarder, which a reload
    // rebuilds: these two take effect.
    let (max_body_bytes, body_read_timeout) = (
        new.server.limits.max_body_bytes,
        new.server.limits.body_read_timeout,
    );
    new.server.limits = old.server.limits;
    new.server.limits.max_body_bytes = max_body_bytes;
    new.server.limits.body_read_timeout = body_read_timeout;
    new.store = old.store.clone();
    match (&mut new.admin, &old.admin) {
        (Some(new), Some(old)) => new.listen = old.listen,
        // Added or removed: the listener is there or not until a restart.
        (new, old) => new.clone_from(old),
    }
    new.metrics_listen = old.metrics_listen;
    new.log.format = old.log.format;
    new.audit = old.audit.clone();
    new.tracing = old.tracing.clone();
}

/// Performs reloads for the process (one at a time).
pub struct Reloader {
    source: Source,
    /// The raw configuration at start-up: what the keys that need a
    /// restart still run with, so every reload names them until then.
    started: RawConfig,
    running: Config,
    oidc_caches: OidcCaches,
    workers: Vec<mpsc::UnboundedSender<WorkerReload>>,
    metrics: std::sync::Arc<Metrics>,
}

impl Reloader {
    pub fn new(
        source: Source,
        running: Config,
        oidc_caches: OidcCaches,
        workers: Vec<mpsc::UnboundedSender<WorkerReload>>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            started: source.raw.clone(),
            source,
            running,
            oidc_caches,
            workers,
            metrics,
        }
    }

    /// The configuration the process runs with now.
    pub fn running(&self) -> &Config {
        &self.running
    }

    /// Reads, validates and applies the configuration file; on any problem
    /// the running configuration stays. Logs and counts the outcome.
    pub async fn reload(&mut self) -> ReloadReport {
        let report = self.try_reload().await;
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabel {
                result: report.result,
            })
            .inc();
        report
    }

    async fn try_reload(&mut self) -> ReloadReport {
        let (raw, mut config) =
            match config::load_checked(self.source.path.as_deref(), self.source.env.clone()) {
                Ok(loaded) => loaded,
                Err(ConfigErrors(issues)) => {
                    let problems: Vec<(String, String)> = issues
                        .iter()
                        .map(|i| (i.key.clone(), without_quoted_source(&i.message)))
                        .collect();
                    for (key, problem) in &problems {
                        tracing::error!(
                            key = %key,
                            problem = %problem,
                            "reload refused: configuration problem; the running configuration stays"
                        );
                    }
                    return ReloadReport {
                        result: "invalid",
                        needs_restart: Vec::new(),
                        problems: problems.iter().map(|(k, p)| format!("{k}: {p}")).collect(),
                        ends_sessions: Vec::new(),
                    };
                }
            };
        let needs_restart = needs_restart(&self.started, &raw);
        for key in &needs_restart {
            tracing::warn!(
                key = %key,
                "reload: this key needs a restart; it keeps its running value until then"
            );
        }
        keep_running(&mut config, &self.running);
        let provider_changed = as_json(&self.source.raw).get("oidc") != as_json(&raw).get("oidc");
        let oidc_caches = if provider_changed {
            OidcCaches::new(&config.oidc)
        } else {
            self.oidc_caches.clone()
        };
        if let Err(why) = self.apply(&config, &oidc_caches).await {
            tracing::error!(error = %why, "reload failed: the running configuration stays");
            return ReloadReport {
                result: "failed",
                needs_restart,
                problems: vec![why],
                ends_sessions: Vec::new(),
            };
        }
        if let Some(level) = &self.source.log_level
            && config.log.level != self.running.log.level
            && let Err(e) = level.set(&config.log.level)
        {
            tracing::warn!(error = %e, "reload: log.level not applied");
        }
        let ends_sessions = ends_sessions(&self.running, &config);
        for (key, consequence) in &ends_sessions {
            tracing::warn!(key = %key, consequence = %consequence, "reload: existing sessions are affected");
        }
        let changed = changed_sections(&self.source.raw, &raw).join(", ");
        tracing::info!(
            changed = %changed,
            provider_caches_kept = !provider_changed,
            "configuration reloaded"
        );
        self.source.raw = raw;
        self.running = config;
        self.oidc_caches = oidc_caches;
        ReloadReport {
            result: "success",
            needs_restart,
            problems: Vec::new(),
            ends_sessions: ends_sessions
                .into_iter()
                .map(|(key, consequence)| format!("{key}: {consequence}"))
                .collect(),
        }
    }

    /// Every worker builds its state for `config`; only when all could is
    /// the swap committed everywhere, and it returns once every worker has
    /// swapped (the next request anywhere sees the new configuration).
    async fn apply(&self, config: &Config, oidc_caches: &OidcCaches) -> Result<(), String> {
        let mut commits = Vec::new();
        let mut built = Vec::new();
        for worker in &self.workers {
            let (built_tx, built_rx) = oneshot::channel();
            let (commit_tx, commit_rx) = oneshot::channel();
            let sent = worker.send(WorkerReload {
                config: config.clone(),
                oidc_caches: oidc_caches.clone(),
                built: built_tx,
                commit: commit_rx,
            });
            if sent.is_err() {
                return Err("a worker has stopped".to_owned());
            }
            commits.push(commit_tx);
            built.push(built_rx);
        }
        let mut outcome = Ok(());
        for rx in built {
            let result = rx
                .await
                .unwrap_or_else(|_| Err("a worker has stopped".to_owned()));
            if outcome.is_ok() {
                outcome = result;
            }
        }
        if outcome.is_err() {
            for tx in commits {
                let _ = tx.send(None);
            }
            return outcome;
        }
        let mut swapped = Vec::new();
        for tx in commits {
            let (done_tx, done_rx) = oneshot::channel();
            let _ = tx.send(Some(done_tx));
            swapped.push(done_rx);
        }
        for rx in swapped {
            // A worker that has stopped since has nothing left to serve.
            let _ = rx.await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawConfig {
        let mut raw = RawConfig::default();
        raw.store.url = Some("redis://127.0.0.1:6379".into());
        raw
    }

    #[test]
    fn only_the_keys_that_need_a_restart_and_changed_are_named() {
        let old = raw();
        let mut new = raw();
        new.routes.push(RawRoute {
            path: "/api".into(),
            upstream: "http://127.0.0.1:1".into(),
            ..RawRoute::default()
        });
        new.server.max_body_bytes = 1024;
        new.log.level = "debug".into();
        assert!(needs_restart(&old, &new).is_empty(), "all reloadable");
        assert_eq!(changed_sections(&old, &new), ["log", "routes", "server"]);

        new.server.listen = "0.0.0.0:9000".into();
        new.server.idle_timeout = crate::config::RawDuration::Text("5s".into());
        new.store.url = Some("redis://127.0.0.1:6380".into());
        new.store.password = Some("changed".into());
        new.log.format = "json".into();
        new.metrics.listen = Some("127.0.0.1:9100".into());
        assert_eq!(
            needs_restart(&old, &new),
            [
                "server.listen",
                "server.idle_timeout",
                "store.password",
                "store.url",
                "metrics.listen",
                "log.format",
            ]
        );
    }

    use crate::config::RawRoute;

    /// A raw configuration that validates, with an admin listener.
    fn valid_raw() -> RawConfig {
        let mut raw = raw();
        raw.server.public_url = Some("http://127.0.0.1:8080".into());
        raw.oidc.issuer = Some("http://127.0.0.1:1".into());
        raw.oidc.client_id = Some("c".into());
        raw.oidc.client_secret = Some("s".into());
        raw.session.encryption_keys = vec![crate::config::RawKey {
            id: "k".into(),
            key: Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()),
            key_file: None,
        }];
        raw.admin.listen = Some("127.0.0.1:9090".into());
        raw.admin.token = Some("a".repeat(32));
        raw
    }

    #[test]
    fn the_keys_that_need_a_restart_keep_their_running_values_and_the_rest_changes() {
        let old = config::validate(&valid_raw()).expect("valid");
        let mut raw = valid_raw();
        raw.server.listen = "127.0.0.1:9999".into();
        raw.server.idle_timeout = crate::config::RawDuration::Text("5s".into());
        raw.server.max_body_bytes = 2048;
        raw.store.url = Some("redis://127.0.0.1:6380".into());
        raw.admin.listen = Some("127.0.0.1:9191".into());
        raw.admin.token = Some("b".repeat(32));
        raw.log.format = "json".into();
        raw.log.level = "debug".into();
        let mut new = config::validate(&raw).expect("valid");
        keep_running(&mut new, &old);
        assert_eq!(new.server.listen, old.server.listen);
        assert_eq!(
            new.server.limits.idle_timeout,
            old.server.limits.idle_timeout
        );
        assert_eq!(new.server.limits.max_body_bytes, 2048, "reloads");
        assert_eq!(format!("{:?}", new.store), format!("{:?}", old.store));
        let (admin, old_admin) = (new.admin.expect("admin"), old.admin.expect("admin"));
        assert_eq!(admin.listen, old_admin.listen);
        assert_eq!(admin.token.expose(), "b".repeat(32), "reloads");
        assert_eq!(new.log.format, old.log.format);
        assert_eq!(new.log.level, "debug", "reloads");
    }

    #[test]
    fn a_retired_key_or_a_renamed_cookie_is_named_as_ending_sessions_and_nothing_else_is() {
        let old = config::validate(&valid_raw()).expect("valid");
        let same = config::validate(&valid_raw()).expect("valid");
        assert!(ends_sessions(&old, &same).is_empty());

        // A key added (the first step of a rotation) ends nothing.
        let mut raw = valid_raw();
        raw.session.encryption_keys.push(crate::config::RawKey {
            id: "k2".into(),
            key: Some("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=".into()),
            key_file: None,
        });
        let added = config::validate(&raw).expect("valid");
        assert!(ends_sessions(&old, &added).is_empty());

        // Retiring `k`, or changing its material, ends its sessions.
        raw.session.encryption_keys.remove(0);
        let retired = config::validate(&raw).expect("valid");
        let said = ends_sessions(&added, &retired);
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!(said[0].0, "session.encryption_keys");
        assert!(said[0].1.contains("`k`"), "{said:?}");
        let mut raw = valid_raw();
        raw.session.encryption_keys[0].key =
            Some("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=".into());
        let rekeyed = config::validate(&raw).expect("valid");
        let said = ends_sessions(&old, &rekeyed);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].1.contains("other key material"), "{said:?}");
        assert!(!format!("{said:?}").contains("ZmVkY2"), "never the key");

        let mut raw = valid_raw();
        raw.session.cookie_name = "__Host-renamed".into();
        let renamed = config::validate(&raw).expect("valid");
        let said = ends_sessions(&old, &renamed);
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!(said[0].0, "session.cookie_name");
    }

    #[test]
    fn a_parse_error_is_reported_without_the_line_it_quotes() {
        let message = "TOML parse error at line 2, column 54\n  |\n2 | encryption_keys = [ { id = \"a\", key = \"SECRET\" ]\n  |     ^\ninvalid inline table\nexpected `}`\n (in bad.toml)";
        assert_eq!(
            without_quoted_source(message),
            "TOML parse error at line 2, column 54; invalid inline table; expected `}`; (in bad.toml)"
        );
        let plain = "`x` must be \"strict\" or \"lax\"";
        assert_eq!(without_quoted_source(plain), plain);
    }
}
