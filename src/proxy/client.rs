//! The pooled HTTP clients that carry requests to upstreams, and their TLS
//! settings.

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::MAX_RESPONSE_HEADERS;
use crate::config::ProxyConfig;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// Which HTTP versions a client speaks to upstreams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    /// HTTP/1.1 to `http://`; to `https://` what the upstream picks by
    /// ALPN, `h2` or `http/1.1`. The default.
    Http1OrAlpn,
    /// HTTP/1.1 only, which upgrades (WebSockets) need.
    Http1,
    /// HTTP/2 only (`routes[i].upstream_http2`): prior knowledge (h2c) to
    /// `http://`, ALPN `h2` alone to `https://`. An upstream that does not
    /// speak it fails the connection (502).
    Http2,
}

/// How every upstream TCP connection is opened, pooled or kept by a
/// browser connection (`sticky`): `proxy.connect_timeout` (then 504), no
/// Nagle delay, and a host name's IPv6 and IPv4 addresses tried side by
/// side (happy eyeballs), as hyper-util's connector does.
pub fn tcp_connector(config: &ProxyConfig) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(config.connect_timeout));
    http
}

/// One pooled client for every upstream. `https://` upstreams are checked
/// against the public roots, or only against `proxy.tls_ca_file`'s CAs, and
/// are shown `proxy.tls_cert_file` when they ask for a client certificate.
pub fn build_client(config: &ProxyConfig, versions: Versions) -> anyhow::Result<HttpClient> {
    let http = tcp_connector(config);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(upstream_tls(config)?)
        .https_or_http();
    let https = match versions {
        Versions::Http1OrAlpn => builder.enable_http1().enable_http2().wrap_connector(http),
        Versions::Http1 => builder.enable_http1().wrap_connector(http),
        Versions::Http2 => builder.enable_http2().wrap_connector(http),
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        // The upstream is outside the trust boundary: its head is read
        // within `proxy.max_response_header_bytes` and 100 fields (hyper's
        // defaults were ~400 KiB, all passed on to the browser), else 502.
        .http1_max_buf_size(config.max_response_header_bytes)
        .http1_max_headers(MAX_RESPONSE_HEADERS)
        .http2_max_header_list_size(
            u32::try_from(config.max_response_header_bytes).unwrap_or(u32::MAX),
        );
    if versions == Versions::Http2 {
        client.http2_only(true).timer(TokioTimer::new());
    }
    Ok(client.build(https))
}

/// The TLS client configuration for upstreams: whose certificates to trust,
/// and which one to present.
fn upstream_tls(config: &ProxyConfig) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match &config.tls_ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| anyhow::anyhow!("proxy.tls_ca_file: {e}"))?)
                    .map_err(|e| anyhow::anyhow!("proxy.tls_ca_file: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match &config.tls_client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain = CertificateDer::pem_slice_iter(&client.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("proxy.tls_cert_file: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(client.key_pem.expose().as_bytes())
                .map_err(|e| anyhow::anyhow!("proxy.tls_key_file: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| anyhow::anyhow!("proxy.tls_key_file: {e}"))?
        }
    })
}

/// The HTTP/1 settings of a connection a browser connection keeps
/// (`proxy::sticky`): the pool's limits on response heads.
pub fn http1_builder(max_response_header_bytes: usize) -> hyper::client::conn::http1::Builder {
    let mut builder = hyper::client::conn::http1::Builder::new();
    builder
        .max_buf_size(max_response_header_bytes)
        .max_headers(MAX_RESPONSE_HEADERS);
    builder
}
