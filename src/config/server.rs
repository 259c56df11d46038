//! `[server]`: the listen address, the public origin browsers use, the other
//! origins redirects may lead to, the shutdown drain and the worker count.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::common::{Issues, RawDuration, duration};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Socket address to listen on.
    pub listen: String,
    /// The external origin browsers use, e.g. `https://app.example.com`. The
    /// redirect URI registered at the provider is this plus `/auth/callback`.
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
            trusted_proxies: Vec::new(),
            allowed_return_origins: Vec::new(),
            shutdown_timeout: RawDuration::text("30s"),
            workers: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Origin only (`scheme://host[:port]`), no path.
    pub public_url: Url,
    /// Trusted proxy networks: a network address (host bits zero) and its
    /// prefix length.
    pub trusted_proxies: Vec<(IpAddr, u8)>,
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

/// `[server]` as checked on its own. `public_url` is `None` when it is
/// missing or wrong (already reported); the cross-section rules still read
/// the rest.
pub(super) struct Server {
    pub(super) public_url: Option<Url>,
    /// `public_url`'s origin (when valid) first, then the valid extra ones.
    pub(super) allowed_return_origins: Vec<String>,
    listen: SocketAddr,
    trusted_proxies: Vec<(IpAddr, u8)>,
    shutdown_timeout: Duration,
    workers: usize,
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
            trusted_proxies: self.trusted_proxies,
            allowed_return_origins: self.allowed_return_origins,
            shutdown_timeout: self.shutdown_timeout,
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
    let public_url = public_url(raw.public_url.as_deref(), issues);
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
    if raw.workers > 1024 {
        issues.add(
            "server.workers",
            "must be at most 1024 (0 means one per CPU)",
        );
    }
    let shutdown_timeout = duration(issues, "server.shutdown_timeout", &raw.shutdown_timeout);
    let trusted_proxies = trusted_proxies(raw, issues);
    Server {
        public_url,
        allowed_return_origins,
        listen,
        trusted_proxies,
        shutdown_timeout,
        workers: raw.workers,
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
fn public_url(raw: Option<&str>, issues: &mut Issues) -> Option<Url> {
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
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn public_url_must_be_an_origin_without_a_path() {
        let toml = minimal().replace("https://app.example.com", "https://app.example.com/app");
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "server.public_url", "{err}");
        assert!(err.0[0].message.contains("origin only"), "{err}");
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
}
