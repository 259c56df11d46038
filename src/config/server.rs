//! `[server]`: the listen address, the public origin browsers use, the other
//! origins redirects may lead to, the shutdown drain, the worker count, and
//! the limits every listener puts on a connection (header and idle
//! timeouts, connection cap, header and body sizes, HTTP/2 streams).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::common::{Issues, RawDuration, duration, positive_duration};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Socket address to listen on.
    pub listen: String,
    /// The external URL browsers use, e.g. `https://app.example.com`, or
    /// with a path when the gateway is mounted under one behind a proxy
    /// that does not strip it (`https://example.com/app`): every endpoint
    /// of the gateway is then served under that path. The redirect URI
    /// registered at the provider is this plus `/auth/callback`.
    pub public_url: Option<String>,
    /// Replaced by `trusted_proxies`. `false` is accepted (and ignored);
    /// `true` is refused with a message naming the new key: it meant "believe
    /// whoever connects", which let any client choose its own address.
    pub trust_forwarded_headers: bool,
    /// The reverse proxies in front of the gateway, as CIDRs (`"10.0.0.0/8"`,
    /// `"127.0.0.1/32"`, `"fd00::/8"`; a bare address means one host). The
    /// client is the rightmost address in peer + `X-Forwarded-For` that is not
    /// one of these; only such a peer may pass `X-Forwarded-For`, `Forwarded`
    /// and `X-Request-Id` on. Empty (the default): the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Origins (besides `public_url`) that `return_to` and
    /// `post_logout_redirect` may point at, e.g. `https://admin.example.com`.
    /// Exact origin match: scheme, host and port.
    pub allowed_return_origins: Vec<String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout: RawDuration,
    /// After SIGTERM, how long the gateway keeps accepting and serving while
    /// `/readyz` answers 503, so load balancers stop sending before the
    /// listener closes ("0s": close at once). SIGINT (Ctrl-C) skips it.
    pub drain_period: RawDuration,
    /// Worker threads, each with its own listener socket (SO_REUSEPORT),
    /// Redis connection and upstream connection pool. 0: one per CPU.
    pub workers: usize,
    /// Time a connection gets to send a complete request head, counted from
    /// the moment it is ready for one (accepted, or done with the previous
    /// response): a client that trickles a head (slowloris) is
    /// disconnected instead of holding memory for ever.
    pub header_read_timeout: RawDuration,
    /// A connection that has started no request for this long is closed
    /// (after finishing any response still being sent); so is one whose
    /// writes stay blocked this long (a client that reads nothing).
    pub idle_timeout: RawDuration,
    /// Connections open at once per process (per listener), WebSockets
    /// included. Beyond it the gateway stops accepting until one closes:
    /// new connections wait in the kernel's backlog instead of being reset.
    pub max_connections: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Largest request head (request line and headers; the HTTP/2 header
    /// list) in bytes; larger ones get 431.
    pub max_header_bytes: usize,
    /// Largest request body the gateway reads for its own endpoints
    /// (`/auth/*`, back-channel logout, admin API); larger ones get 413.
    /// Proxied routes stream bodies upstream and are not limited here.
    pub max_body_bytes: usize,
    /// Time a request body the gateway reads whole (its own endpoints; a
    /// small proxied body kept to be sent again) gets to arrive in full:
    /// a client that trickles or stops mid-body gets 408 instead of
    /// holding its connection, and its slot, for ever. A body that streams
    /// to the upstream may not go silent for longer than this (408, or
    /// cut once the answer has come).
    pub body_read_timeout: RawDuration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            trust_forwarded_headers: false,
            trusted_proxies: Vec::new(),
            allowed_return_origins: Vec::new(),
            shutdown_timeout: RawDuration::text("30s"),
            drain_period: RawDuration::text("5s"),
            workers: 0,
            header_read_timeout: RawDuration::text("10s"),
            idle_timeout: RawDuration::text("60s"),
            max_connections: 10_000,
            http2_max_concurrent_streams: 100,
            max_header_bytes: 32 * 1024,
            max_body_bytes: 64 * 1024,
            body_read_timeout: RawDuration::text("30s"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Origin only (`scheme://host[:port]`), no path.
    pub public_url: Url,
    /// The path `public_url` was written with, without a trailing slash
    /// (`/app`), or empty: the gateway's own endpoints and the static app
    /// are served under it, and every URL the gateway makes includes it.
    pub base_path: String,
    /// Trusted proxy networks: a network address (host bits zero) and its
    /// prefix length.
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    /// ASCII-serialised origins, `public_url`'s first.
    pub allowed_return_origins: Vec<String>,
    pub shutdown_timeout: Duration,
    /// Serving on after SIGTERM with `/readyz` at 503, before the
    /// listeners close (`crate::server`).
    pub drain_period: Duration,
    /// Resolved: at least 1.
    pub workers: usize,
    pub limits: ConnectionLimits,
}

/// What every listener (public, admin, metrics) allows one connection and
/// its requests; see `crate::server::serve_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// The defaults of `[server]`.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            http2_max_concurrent_streams: 100,
            max_header_bytes: 32 * 1024,
            max_body_bytes: 64 * 1024,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    pub fn redirect_uri(&self) -> String {
        format!("{}{}", self.public_origin(), self.path("/auth/callback"))
    }

    /// `path` (starting with `/`) under `base_path`, as the browser sees it.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }
}

/// `[server]` as checked on its own. `public_url` is `None` when it is
/// missing or wrong (already reported); the cross-section rules still read
/// the rest.
pub(super) struct Server {
    pub(super) public_url: Option<Url>,
    /// `public_url`'s path without its trailing slash, or empty.
    pub(super) base_path: String,
    /// `public_url`'s origin (when valid) first, then the valid extra ones.
    pub(super) allowed_return_origins: Vec<String>,
    listen: SocketAddr,
    trusted_proxies: Vec<(IpAddr, u8)>,
    shutdown_timeout: Duration,
    drain_period: Duration,
    workers: usize,
    limits: ConnectionLimits,
}

impl Server {
    /// The typed section, once `public_url` is known to be present.
    pub(super) fn into_config(self) -> Option<ServerConfig> {
        Some(ServerConfig {
            workers: match self.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            listen: self.listen,
            public_url: self.public_url?,
            base_path: self.base_path,
            trusted_proxies: self.trusted_proxies,
            allowed_return_origins: self.allowed_return_origins,
            shutdown_timeout: self.shutdown_timeout,
            drain_period: self.drain_period,
            limits: self.limits,
        })
    }
}

pub(super) fn validate(raw: &RawServer, issues: &mut Issues) -> Server {
    let listen = raw.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        issues.add(
            "server.listen",
            format!(
                "`{}` is not a socket address; write e.g. \"0.0.0.0:8080\"",
                raw.listen
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let (public_url, base_path) = match public_url(raw.public_url.as_deref(), issues) {
        Some((u, p)) => (Some(u), p),
        None => (None, String::new()),
    };
    let mut allowed_return_origins = Vec::new();
    if let Some(u) = &public_url {
        allowed_return_origins.push(u.origin().ascii_serialization());
    }
    for (i, o) in raw.allowed_return_origins.iter().enumerate() {
        let key = format!("server.allowed_return_origins[{i}]");
        match Url::parse(o) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.path() == "/"
                    && super::common::url_extra(&u, false).is_none() =>
            {
                allowed_return_origins.push(u.origin().ascii_serialization())
            }
            _ => issues.add(
                key,
                format!(
                    "`{}` must be an origin like \"https://app.example.com\" (scheme, host and port only)",
                    super::common::shown_url(o)
                ),
            ),
        }
    }
    if raw.workers > 1024 {
        issues.add(
            "server.workers",
            "must be at most 1024 (0 means one per CPU)",
        );
    }
    let shutdown_timeout = duration(issues, "server.shutdown_timeout", &raw.shutdown_timeout);
    let drain_period = duration(issues, "server.drain_period", &raw.drain_period);
    if drain_period > MAX_DRAIN_PERIOD {
        issues.add(
            "server.drain_period",
            "must be at most 10m: it only needs to outlast your load balancer noticing the 503 from /readyz (seconds), and the orchestrator's kill timeout must exceed it",
        );
    }
    let trusted_proxies = trusted_proxies(raw, issues);
    let limits = limits(raw, issues);
    Server {
        public_url,
        base_path,
        allowed_return_origins,
        listen,
        trusted_proxies,
        shutdown_timeout,
        drain_period,
        workers: raw.workers,
        limits,
    }
}

/// Longest `drain_period`: a drain is for load balancers to notice, and
/// a pod that takes longer to stop holds up a rollout for nothing.
const MAX_DRAIN_PERIOD: Duration = Duration::from_secs(600);

/// Smallest `max_header_bytes`: hyper's smallest read buffer (it panics
/// below it), and room for a session cookie plus ordinary headers.
const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Largest `max_header_bytes`: limits are meant to
/// bound memory per connection, not to be switched off.
const MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;
/// Largest `max_body_bytes`: axum's extractors refuse bodies over 2 MiB on
/// their own (plain text), and the gateway's own endpoints need far less.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The connection limits, each checked against a range that keeps it a
/// limit (no zero timeouts, no unbounded sizes).
fn limits(raw: &RawServer, issues: &mut Issues) -> ConnectionLimits {
    let header_read_timeout = positive_duration(
        issues,
        "server.header_read_timeout",
        &raw.header_read_timeout,
    );
    let idle_timeout = positive_duration(issues, "server.idle_timeout", &raw.idle_timeout);
    let body_read_timeout =
        positive_duration(issues, "server.body_read_timeout", &raw.body_read_timeout);
    if !(1..=1_000_000).contains(&raw.max_connections) {
        issues.add(
            "server.max_connections",
            format!("`{}` must be between 1 and 1000000", raw.max_connections),
        );
    }
    if !(1..=10_000).contains(&raw.http2_max_concurrent_streams) {
        issues.add(
            "server.http2_max_concurrent_streams",
            format!(
                "`{}` must be between 1 and 10000",
                raw.http2_max_concurrent_streams
            ),
        );
    }
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&raw.max_header_bytes) {
        issues.add(
            "server.max_header_bytes",
            format!(
                "`{}` must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}",
                raw.max_header_bytes
            ),
        );
    }
    if !(1024..=MAX_BODY_BYTES).contains(&raw.max_body_bytes) {
        issues.add(
            "server.max_body_bytes",
            format!(
                "`{}` must be between 1024 and {MAX_BODY_BYTES}",
                raw.max_body_bytes
            ),
        );
    }
    ConnectionLimits {
        header_read_timeout,
        idle_timeout,
        max_connections: raw.max_connections,
        http2_max_concurrent_streams: raw.http2_max_concurrent_streams,
        max_header_bytes: raw.max_header_bytes,
        max_body_bytes: raw.max_body_bytes,
        body_read_timeout,
    }
}

/// `server.trusted_proxies` (and the retired `trust_forwarded_headers`).
fn trusted_proxies(raw: &RawServer, issues: &mut Issues) -> Vec<(IpAddr, u8)> {
    if raw.trust_forwarded_headers {
        issues.add(
            "server.trust_forwarded_headers",
            "is replaced by server.trusted_proxies, which names the proxies in front instead of believing any peer; remove it and list their addresses, e.g. trusted_proxies = [\"10.0.0.0/8\"]",
        );
    }
    let mut nets = Vec::new();
    for (i, text) in raw.trusted_proxies.iter().enumerate() {
        let key = format!("server.trusted_proxies[{i}]");
        match parse_cidr(text) {
            Some((_, 0)) => issues.add(
                key,
                format!("`{text}` trusts every address, so any client could choose its own; list only your proxies' networks"),
            ),
            Some(net) => nets.push(net),
            None => issues.add(
                key,
                format!("`{text}` is not an address or CIDR; write e.g. \"10.0.0.0/8\", \"127.0.0.1/32\" or \"fd00::/8\""),
            ),
        }
    }
    nets
}

/// `addr` or `addr/len` with no host bits set past `len` (a typo such as
/// `10.0.0.1/8` is refused rather than guessed at). IPv4-mapped IPv6
/// networks are read as IPv4 so they match what the listener reports.
fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match text.trim().split_once('/') {
        Some((a, l)) => {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?))
        }
        None => (text.trim().parse::<IpAddr>().ok()?, None),
    };
    let (addr, len) = match (addr, len) {
        (IpAddr::V6(v6), len) if v6.to_ipv4_mapped().is_some() => {
            let v4 = v6.to_ipv4_mapped()?;
            let len = match len {
                Some(l) => l.checked_sub(96)?,
                None => 32,
            };
            (IpAddr::V4(v4), len)
        }
        (a @ IpAddr::V4(_), l) => (a, l.unwrap_or(32)),
        (a @ IpAddr::V6(_), l) => (a, l.unwrap_or(128)),
    };
    let bits = match addr {
        IpAddr::V4(a) => {
            if len > 32 {
                return None;
            }
            let v = u32::from(a);
            let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            v & host == 0
        }
        IpAddr::V6(a) => {
            if len > 128 {
                return None;
            }
            let v = u128::from(a);
            let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            v & host == 0
        }
    };
    bits.then_some((addr, len))
}

/// `server.public_url`: an http(s) origin without path, query, fragment or
/// user info.
/// A plain mount path: `/`-separated segments of letters, digits and
/// `-_.~`, none empty, `.` or `..` (no percent-encoding, nothing a proxy or
/// the router could read differently).
fn is_plain_mount_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    })
}

/// `server.public_url` as its origin (path `/`) and its mount path without
/// a trailing slash (empty for the origin's root).
fn public_url(raw: Option<&str>, issues: &mut Issues) -> Option<(Url, String)> {
    let Some(s) = raw else {
        issues.add(
            "server.public_url",
            "missing; set the origin browsers use, e.g. \"https://app.example.com\"",
        );
        return None;
    };
    match Url::parse(s) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            issues.add(
                "server.public_url",
                format!("`{s}` must be http:// or https://"),
            );
            None
        }
        Ok(u) if u.query().is_some() || u.fragment().is_some() || s.contains(['?', '#']) => {
            issues.add(
                "server.public_url",
                format!("`{s}` must be an origin, optionally with a path (no query or fragment)"),
            );
            None
        }
        Ok(u) if !is_plain_mount_path(u.path()) => {
            issues.add(
                "server.public_url",
                format!("`{s}` has a path that is not plain: write it as segments of letters, digits and `-_.~`, e.g. \"https://example.com/app\""),
            );
            None
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            issues.add("server.public_url", "must not contain user info");
            None
        }
        Ok(mut u) => {
            let base = u.path().trim_end_matches('/').to_owned();
            u.set_path("/");
            Some((u, base))
        }
        Err(e) => {
            issues.add(
                "server.public_url",
                super::common::not_a_url(s, e, "https://app.example.com"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn public_url_may_have_a_path_which_is_normalised_without_a_trailing_slash() {
        for (written, base) in [
            ("https://app.example.com/app", "/app"),
            ("https://app.example.com/app/", "/app"),
            ("https://app.example.com/a/b-c_d", "/a/b-c_d"),
            ("https://app.example.com/", ""),
            ("https://app.example.com", ""),
        ] {
            let toml = minimal().replace("\"https://app.example.com\"", &format!("\"{written}\""));
            let config = load_str(&toml, &[]).expect("valid");
            assert_eq!(config.server.base_path, base, "{written}");
            assert_eq!(config.server.public_url.path(), "/", "{written}");
            assert_eq!(
                config.server.redirect_uri(),
                format!("https://app.example.com{base}/auth/callback")
            );
        }
    }

    #[test]
    fn public_url_with_a_query_fragment_or_unplain_path_is_refused() {
        for bad in [
            "https://app.example.com/app?x=1",
            "https://app.example.com/app#f",
            "https://app.example.com/?",
            "https://app.example.com/a%2Fb",
            "https://app.example.com/a//b",
            "https://app.example.com/a;b",
        ] {
            let toml = minimal().replace("\"https://app.example.com\"", &format!("\"{bad}\""));
            let err = load_str(&toml, &[]).expect_err(bad);
            assert_eq!(err.0[0].key, "server.public_url", "{bad}: {err}");
        }
    }

    #[test]
    fn extra_return_origins_must_be_origins() {
        let toml = minimal().replace(
            "[server]\n",
            "[server]\nallowed_return_origins = [\"https://ok.example.com\", \"ftp://x\"]\n",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["server.allowed_return_origins[1]"]);
    }

    #[test]
    fn trusted_proxies_are_cidrs_without_host_bits_and_never_everything() {
        let toml = minimal().replace(
            "[server]\n",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\", \"10.0.0.1/8\", \"0.0.0.0/0\", \"::/0\", \"x/1\", \"1.2.3.4/33\", \"1.2.3.4/+8\"]\n",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(
            keys,
            [3, 4, 5, 6, 7, 8].map(|i| format!("server.trusted_proxies[{i}]"))
        );
        let ok = minimal().replace(
            "[server]\n",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"::ffff:192.168.0.0/112\"]\n",
        );
        let config = load_str(&ok, &[]).expect("valid");
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert_eq!(
            config.server.trusted_proxies,
            vec![
                (ip("10.0.0.0"), 8),
                (ip("127.0.0.1"), 32),
                (ip("192.168.0.0"), 16)
            ]
        );
    }

    #[test]
    fn the_retired_trust_forwarded_headers_switch_is_refused_with_the_new_key_named() {
        let toml = minimal().replace("[server]\n", "[server]\ntrust_forwarded_headers = true\n");
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "server.trust_forwarded_headers", "{err}");
        assert!(err.0[0].message.contains("server.trusted_proxies"), "{err}");
        let off = minimal().replace("[server]\n", "[server]\ntrust_forwarded_headers = false\n");
        assert!(load_str(&off, &[]).is_ok());
    }

    mod properties {
        use super::super::parse_cidr;
        use proptest::prelude::*;
        use std::net::IpAddr;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            /// Any text: no panic, and what is accepted is a network with
            /// no host bits that reads back as itself.
            #[test]
            fn an_accepted_cidr_is_a_clean_network_that_round_trips(
                text in prop_oneof![
                    "[0-9a-f:./]{0,24}",
                    (any::<[u8; 4]>(), 0u8..40).prop_map(|(a, l)| format!("{}/{l}", IpAddr::from(a))),
                    (any::<[u8; 16]>(), 0u8..140).prop_map(|(a, l)| format!("{}/{l}", IpAddr::from(a))),
                ],
            ) {
                if let Some((addr, len)) = parse_cidr(&text) {
                    let max = if addr.is_ipv4() { 32 } else { 128 };
                    prop_assert!(len <= max);
                    prop_assert_eq!(parse_cidr(&format!("{addr}/{len}")), Some((addr, len)));
                    let masked = match addr {
                        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
                        IpAddr::V6(a) => u128::from(a),
                    };
                    prop_assert_eq!(masked.checked_shl(u32::from(len)).unwrap_or(0), 0);
                }
            }
        }
    }

    #[test]
    fn connection_limits_default_to_bounded_values() {
        let config = load_str(&minimal(), &[]).expect("valid");
        assert_eq!(config.server.limits, super::ConnectionLimits::default());
    }

    #[test]
    fn connection_limits_that_would_switch_a_limit_off_are_refused() {
        let toml = minimal().replace(
            "[server]\n",
            "[server]\nheader_read_timeout = \"0s\"\nidle_timeout = 0\nbody_read_timeout = \"0s\"\n\
             max_connections = 0\nhttp2_max_concurrent_streams = 0\nmax_header_bytes = 100\nmax_body_bytes = 1000000000\n",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(
            keys,
            [
                "server.header_read_timeout",
                "server.idle_timeout",
                "server.body_read_timeout",
                "server.max_connections",
                "server.http2_max_concurrent_streams",
                "server.max_header_bytes",
                "server.max_body_bytes",
            ]
        );
    }

    #[test]
    fn the_drain_period_defaults_to_five_seconds_may_be_zero_and_is_bounded() {
        let config = load_str(&minimal(), &[]).expect("valid");
        assert_eq!(
            config.server.drain_period,
            std::time::Duration::from_secs(5)
        );
        let none = minimal().replace("[server]\n", "[server]\ndrain_period = \"0s\"\n");
        let config = load_str(&none, &[]).expect("valid");
        assert_eq!(config.server.drain_period, std::time::Duration::ZERO);
        for bad in ["\"11m\"", "\"soon\""] {
            let toml =
                minimal().replace("[server]\n", &format!("[server]\ndrain_period = {bad}\n"));
            let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
            assert_eq!(keys, ["server.drain_period"], "{bad}");
        }
    }
}
