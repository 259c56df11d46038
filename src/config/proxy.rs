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
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub sticky_connections: bool,
    /// PEM roots to trust for upstreams instead of the public ones.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// The certificate the gateway presents to `https://` upstreams.
    pub tls_client: Option<ClientCertificate>,
}

pub(super) fn validate(raw: &RawProxy, issues: &mut Issues) -> ProxyConfig {
    ProxyConfig {
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
