//! `[store]`: where sessions live: in memory (one instance, development) or
//! in Redis, reached as one server (`url`), through Sentinels or as a
//! Cluster, optionally over TLS with a private CA and a client certificate.
//!
//! The topology rules live here: which keys belong to which mode, and that
//! TLS files are only accepted where the connection actually uses TLS.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::common::{
    ClientCertificate, Issues, Pem, RawDuration, certificate_files, positive_duration,
    read_client_certificate, read_pem, secret_from,
};
use crate::secret::SecretString;

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

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
    /// the rest). Sessions spread over the primaries by their shard tag, so
    /// `key_prefix` must not carry a hash tag of its own.
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
    /// Prefix of the sessions written before shard tags (the single-slot
    /// layout), read until they expire; default `key_prefix`. Set it when
    /// upgrading a Redis Cluster deployment from `"{oidc-bff}:"`.
    pub legacy_key_prefix: Option<String>,
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
    /// Sessions each gateway process keeps opened in memory (0: off), kept
    /// exact by Redis' invalidation messages (`CLIENT TRACKING`). Only
    /// with `kind = "redis"`.
    pub cache_entries: u32,
    /// What this version writes: `"compact"` (default) or `"previous"`,
    /// the layout the version before it reads, for a rolling upgrade.
    pub record_layout: String,
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
            legacy_key_prefix: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            timeout: RawDuration::text("2s"),
            connect_timeout: RawDuration::text("2s"),
            cache_entries: DEFAULT_CACHE_ENTRIES,
            record_layout: "compact".into(),
        }
    }
}

/// The session cache's default size: about 60 MB at ~6 KB per opened
/// session (Keycloak-like tokens), and more sessions than one process
/// serves at once in most deployments.
pub const DEFAULT_CACHE_ENTRIES: u32 = 10_000;
/// The largest cache the gateway accepts (a few GB at most).
const MAX_CACHE_ENTRIES: u32 = 1_000_000;

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

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub key_prefix: String,
    /// Where sessions of the single-slot layout live (default: `key_prefix`).
    pub legacy_key_prefix: String,
    pub timeout: Duration,
    /// How many opened sessions the process caches (0: no cache; always 0
    /// with the memory store, which is in-process already).
    pub cache_entries: usize,
    /// What the gateway writes (`store.record_layout`); every layout is read.
    pub record_layout: RecordLayout,
}

/// `store.record_layout`: the layout of the session records this version
/// writes. Reading does not depend on it: every layout is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordLayout {
    /// Claims kept once in the sealed secrets (marker `00 03`), index
    /// hashes `u`/`x` as 32 bytes: the smallest, but the version before
    /// this one cannot open or revoke such a session.
    #[default]
    Compact,
    /// Exactly what the version before wrote (claims as text, marker
    /// `00 02`; hex `u`/`x`): for a rolling upgrade while instances of
    /// that version still share the store.
    Previous,
}

pub(super) fn validate(st: &RawStore, issues: &mut Issues) -> StoreConfig {
    let kind = match st.kind.as_str() {
        "memory" => StoreKind::Memory,
        "redis" => StoreKind::Redis(Box::new(redis(st, issues))),
        other => {
            issues.add(
                "store.kind",
                format!("`{other}` must be \"redis\" or \"memory\""),
            );
            StoreKind::Memory
        }
    };
    let bad_prefix = |p: &str| {
        p.is_empty() || p.len() > 64 || p.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if bad_prefix(&st.key_prefix) {
        issues.add(
            "store.key_prefix",
            "must be 1-64 characters without whitespace, e.g. \"oidc-bff:\"",
        );
    }
    if st.legacy_key_prefix.as_deref().is_some_and(bad_prefix) {
        issues.add(
            "store.legacy_key_prefix",
            "must be 1-64 characters without whitespace, e.g. \"{oidc-bff}:\" (the key_prefix before the upgrade)",
        );
    }
    StoreConfig {
        kind,
        key_prefix: st.key_prefix.clone(),
        legacy_key_prefix: st
            .legacy_key_prefix
            .clone()
            .unwrap_or_else(|| st.key_prefix.clone()),
        timeout: positive_duration(issues, "store.timeout", &st.timeout),
        cache_entries: cache_entries(st, issues),
        record_layout: record_layout(st, issues),
    }
}

/// `store.record_layout`: one of the two names.
fn record_layout(st: &RawStore, issues: &mut Issues) -> RecordLayout {
    match st.record_layout.as_str() {
        "compact" => RecordLayout::Compact,
        "previous" => RecordLayout::Previous,
        other => {
            issues.add(
                "store.record_layout",
                format!(
                    "`{other}` must be \"compact\" (the default) or \"previous\" (write what the version before reads, while it still runs during a rolling upgrade)"
                ),
            );
            RecordLayout::Compact
        }
    }
}

/// `store.cache_entries`: bounded, and off with the memory store.
fn cache_entries(st: &RawStore, issues: &mut Issues) -> usize {
    if st.cache_entries > MAX_CACHE_ENTRIES {
        issues.add(
            "store.cache_entries",
            format!(
                "{} is more than {MAX_CACHE_ENTRIES}; each entry holds an opened session (a few KB): use at most {MAX_CACHE_ENTRIES}, or 0 to turn the cache off",
                st.cache_entries
            ),
        );
        return 0;
    }
    if st.kind == "memory" {
        return 0;
    }
    st.cache_entries as usize
}

/// `store.kind = "redis"`: credentials, then the one topology the keys
/// select, then TLS files where TLS applies.
fn redis(st: &RawStore, issues: &mut Issues) -> RedisConfig {
    let password = secret_from(
        issues,
        "store.password",
        st.password.as_ref(),
        st.password_file.as_ref(),
        false,
    );
    let connect_timeout = positive_duration(issues, "store.connect_timeout", &st.connect_timeout);
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
        (true, true) => redis_url(issues, st),
        (false, true) => redis_sentinel(issues, st),
        (true, false) => redis_cluster(issues, st),
        (false, false) => {
            issues.add(
                "store.cluster_nodes",
                "set either store.sentinels or store.cluster_nodes, not both",
            );
            redis_url(issues, st)
        }
    };
    RedisConfig {
        endpoint,
        username: st.username.clone(),
        password,
        db: st.db,
        connect_timeout,
        tls_ca_pem: redis_ca(issues, st),
        tls_client: redis_client_certificate(issues, st),
    }
}

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
    if st.key_prefix.contains(['{', '}']) {
        issues.add(
            "store.key_prefix",
            format!(
                "`{}` has a hash tag, which would put every session on one primary; with store.cluster_nodes write it without braces, like \"oidc-bff:\" (each session's keys carry their own shard tag). Upgrading from a single-slot prefix: set legacy_key_prefix = \"{}\" so sessions from before keep working",
                st.key_prefix, st.key_prefix
            ),
        );
    }
    if let Some(legacy) = &st.legacy_key_prefix
        && !has_hash_tag(legacy)
    {
        issues.add(
            "store.legacy_key_prefix",
            format!(
                "`{legacy}` has no hash tag; with store.cluster_nodes it names the key_prefix of the single-slot layout before the upgrade, like \"{{oidc-bff}}:\" (leave it unset for a new deployment)"
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
pub fn has_hash_tag(prefix: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{load_str, minimal};
    use super::{RecordLayout, RedisEndpoint, StoreKind, has_hash_tag};

    #[test]
    fn the_record_layout_is_compact_unless_previous_is_asked_for_by_name() {
        let config = load_str(&minimal(), &[]).expect("valid");
        assert_eq!(config.store.record_layout, RecordLayout::Compact);
        for (name, layout) in [
            ("compact", RecordLayout::Compact),
            ("previous", RecordLayout::Previous),
        ] {
            let toml = minimal() + &format!("\n[store]\nrecord_layout = \"{name}\"\n");
            let config = load_str(&toml, &[]).expect("valid");
            assert_eq!(config.store.record_layout, layout);
        }
        let odd = minimal() + "\n[store]\nrecord_layout = \"old\"\n";
        let err = load_str(&odd, &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "store.record_layout", "{err}");
        assert!(err.0[0].message.contains("`old`"), "{err}");
        assert!(err.0[0].message.contains("\"previous\""), "{err}");
    }

    #[test]
    fn the_session_cache_is_bounded_and_off_with_the_memory_store() {
        let config = load_str(&minimal(), &[]).expect("valid");
        assert_eq!(config.store.cache_entries, 10_000);
        let off = minimal() + "\n[store]\ncache_entries = 0\n";
        assert_eq!(load_str(&off, &[]).expect("valid").store.cache_entries, 0);
        let memory = minimal() + "\n[store]\nkind = \"memory\"\ncache_entries = 50\n";
        assert_eq!(
            load_str(&memory, &[]).expect("valid").store.cache_entries,
            0
        );
        let huge = minimal() + "\n[store]\ncache_entries = 2000000\n";
        let err = load_str(&huge, &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "store.cache_entries", "{err}");
        assert!(err.0[0].message.contains("at most 1000000"), "{err}");
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
    fn cluster_mode_refuses_a_hash_tag_in_the_key_prefix_and_names_the_upgrade_path() {
        let toml = minimal()
            + "\n[store]\ncluster_nodes = [\"10.0.0.5:6379\", \"nope\"]\nkey_prefix = \"{oidc-bff}:\"\nlegacy_key_prefix = \"oidc-bff:\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "store.key_prefix",
                "store.legacy_key_prefix",
                "store.cluster_nodes[1]"
            ],
            "{err}"
        );
        assert!(
            err.0[0]
                .message
                .contains("legacy_key_prefix = \"{oidc-bff}:\""),
            "{err}"
        );

        let toml = minimal()
            + "\n[store]\ncluster_nodes = [\"10.0.0.5:6379\"]\nkey_prefix = \"sessions:\"\nlegacy_key_prefix = \"{sessions}:\"\n";
        let config = load_str(&toml, &[]).expect("valid");
        assert_eq!(config.store.legacy_key_prefix, "{sessions}:");
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
            + "\n[store]\nsentinels = [\"10.0.0.5:26379\", \"[::1]:26380\"]\nsentinel_master = \"sessions\"\nsentinel_password = \"unit-test-sentinel\"\n";
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
        assert_eq!(
            sentinel.password.expect("password").expose(),
            "unit-test-sentinel"
        );
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
}
