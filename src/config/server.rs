//! `[server]`: the listen address, the public origin browsers use, the other
//! origins redirects may lead to, the shutdown drain, the worker count, and
//! the limits every listener puts on a connection (header and idle
//! timeouts, connection cap, header and body sizes, HTTP/2 streams).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::common::{Issues, RawDuration, duration, positive_duration};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Socket address to listen on.
    pub listen: String,
    /// The external origin browsers use, e.g. `https://app.example.com`. The
    /// redirect URI registered at the provider is this plus `/auth/callback`.
    pub public_url: Option<String>,
    /// Trust `X-Forwarded-For` from the peer (set when a reverse proxy you
    /// control is in front). Off: the peer address is the client address.
    pub trust_forwarded_headers: bool,
    /// Origins (besides `public_url`) that `return_to` and
    /// `post_logout_redirect` may point at, e.g. `https://admin.example.com`.
    /// Exact origin match: scheme, host and port.
    pub allowed_return_origins: Vec<String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout: RawDuration,
    /// Worker threads, each with its own listener socket (SO_REUSEPORT),
    /// Redis connection and upstream connection pool. 0: one per CPU.
    pub workers: usize,
    /// Time a connection gets to send a complete request head, counted from
    /// the moment it is ready for one (accepted, or done with the previous
    /// response): a client that trickles a head (slowloris) is
    /// disconnected instead of holding memory for ever.
    pub header_read_timeout: RawDuration,
    /// A connection that has started no request for this long is closed
    /// (after finishing any response still being sent).
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
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            trust_forwarded_headers: false,
            allowed_return_origins: Vec::new(),
            shutdown_timeout: RawDuration::text("30s"),
            workers: 0,
            header_read_timeout: RawDuration::text("10s"),
            idle_timeout: RawDuration::text("60s"),
            max_connections: 10_000,
            http2_max_concurrent_streams: 100,
            max_header_bytes: 32 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Origin only (`scheme://host[:port]`), no path.
    pub public_url: Url,
    pub trust_forwarded_headers: bool,
    /// ASCII-serialised origins, `public_url`'s first.
    pub allowed_return_origins: Vec<String>,
    pub shutdown_timeout: Duration,
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
        }
    }
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
    trust_forwarded_headers: bool,
    shutdown_timeout: Duration,
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
            trust_forwarded_headers: self.trust_forwarded_headers,
            allowed_return_origins: self.allowed_return_origins,
            shutdown_timeout: self.shutdown_timeout,
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
    let limits = limits(raw, issues);
    Server {
        public_url,
        allowed_return_origins,
        listen,
        trust_forwarded_headers: raw.trust_forwarded_headers,
        shutdown_timeout,
        workers: raw.workers,
        limits,
    }
}

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
    }
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
    fn connection_limits_default_to_bounded_values() {
        let config = load_str(&minimal(), &[]).expect("valid");
        assert_eq!(config.server.limits, super::ConnectionLimits::default());
    }

    #[test]
    fn connection_limits_that_would_switch_a_limit_off_are_refused() {
        let toml = minimal().replace(
            "[server]\n",
            "[server]\nheader_read_timeout = \"0s\"\nidle_timeout = 0\nmax_connections = 0\n\
             http2_max_concurrent_streams = 0\nmax_header_bytes = 100\nmax_body_bytes = 1000000000\n",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(
            keys,
            [
                "server.header_read_timeout",
                "server.idle_timeout",
                "server.max_connections",
                "server.http2_max_concurrent_streams",
                "server.max_header_bytes",
                "server.max_body_bytes",
            ]
        );
    }
}
