//! `[proxy]`: how the gateway connects to upstreams: timeouts, connection
//! reuse, and TLS (a private CA, a client certificate).
//! The routes themselves are `[[routes]]` (`routes.rs`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::common::{
    ClientCertificate, Issues, Pem, RawDuration, client_certificate, duration, positive_duration,
    read_pem,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    /// Limit for opening a connection to an upstream (then 504).
    pub connect_timeout: RawDuration,
    /// How long an idle upstream connection is kept for reuse.
    pub pool_idle_timeout: RawDuration,
    /// Each browser connection keeps its own upstream connection for its
    /// HTTP/1.1 requests to `http://` upstreams instead of the shared pool
    /// (`proxy::sticky`).
    pub sticky_connections: bool,
    /// PEM file of the CA(s) to trust for `https://` upstreams instead of
    /// the public roots.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate presented to `https://` upstreams that demand
    /// one (mutual TLS); needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Largest upstream response head (status line and header fields, or
    /// the HTTP/2 header list) the gateway reads, in bytes; a larger one,
    /// or one of more than 100 fields, is a 502 and its connection is
    /// dropped. 8 KiB to 1 MiB.
    pub max_response_header_bytes: usize,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            connect_timeout: RawDuration::text("5s"),
            pool_idle_timeout: RawDuration::text("90s"),
            sticky_connections: true,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            max_response_header_bytes: DEFAULT_MAX_RESPONSE_HEADER_BYTES,
        }
    }
}

/// `proxy.max_response_header_bytes` unless set: as Envoy's default
/// (60 KiB), twice the request heads the gateway accepts.
pub const DEFAULT_MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;

/// Upstream response heads of at most this many fields: hyper's default,
/// set explicitly (`proxy::client`).
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// hyper's smallest read buffer for HTTP/1 (it asserts at least this).
const MIN_RESPONSE_HEADER_BYTES: usize = 8 * 1024;
const MAX_RESPONSE_HEADER_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub sticky_connections: bool,
    /// PEM roots to trust for upstreams instead of the public ones.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// The certificate the gateway presents to `https://` upstreams.
    pub tls_client: Option<ClientCertificate>,
    /// Between 8 KiB and 1 MiB (validated).
    pub max_response_header_bytes: usize,
}

pub(super) fn validate(raw: &RawProxy, issues: &mut Issues) -> ProxyConfig {
    let head = raw.max_response_header_bytes;
    if !(MIN_RESPONSE_HEADER_BYTES..=MAX_RESPONSE_HEADER_BYTES).contains(&head) {
        issues.add(
            "proxy.max_response_header_bytes",
            format!(
                "{head} is out of range: set it between {MIN_RESPONSE_HEADER_BYTES} and {MAX_RESPONSE_HEADER_BYTES} bytes (default {DEFAULT_MAX_RESPONSE_HEADER_BYTES})"
            ),
        );
    }
    ProxyConfig {
        max_response_header_bytes: head.clamp(MIN_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADER_BYTES),
        connect_timeout: positive_duration(issues, "proxy.connect_timeout", &raw.connect_timeout),
        pool_idle_timeout: duration(issues, "proxy.pool_idle_timeout", &raw.pool_idle_timeout),
        sticky_connections: raw.sticky_connections,
        tls_ca_pem: raw
            .tls_ca_file
            .as_ref()
            .and_then(|f| read_pem(issues, "proxy.tls_ca_file", f, Pem::Certificates)),
        tls_client: client_certificate(
            issues,
            "proxy",
            raw.tls_cert_file.as_deref(),
            raw.tls_key_file.as_deref(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{load_str, minimal};

    #[test]
    fn upstream_response_heads_are_bounded_by_default_and_the_bound_must_stay_in_range() {
        let c = load_str(&minimal(), &[]).expect("valid");
        assert_eq!(c.proxy.max_response_header_bytes, 64 * 1024);
        let set = minimal() + "\n[proxy]\nmax_response_header_bytes = 16384\n";
        let c = load_str(&set, &[]).expect("valid");
        assert_eq!(c.proxy.max_response_header_bytes, 16384);
        for bad in ["0", "8191", "1048577", "9223372036854775807"] {
            let toml = minimal() + &format!("\n[proxy]\nmax_response_header_bytes = {bad}\n");
            let err = load_str(&toml, &[]).expect_err(bad);
            assert_eq!(err.0.len(), 1, "{bad}: {err}");
            assert_eq!(err.0[0].key, "proxy.max_response_header_bytes", "{err}");
            assert!(
                err.0[0].message.contains("between 8192 and 1048576"),
                "{err}"
            );
        }
    }
}
