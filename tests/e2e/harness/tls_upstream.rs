//! An HTTPS upstream in the test process, with a certificate from a
//! [`TestCa`], offering the ALPN protocols a test chooses: it speaks
//! HTTP/2 on connections that picked `h2` and HTTP/1.1 on the others,
//! records the HTTP version and body length of each request it answers,
//! and answers them with the same JSON as [`super::Upstream`]'s
//! (`version`, `body_len`, `authorization_present`).

use std::sync::{Arc, Mutex};

use http::Version;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TestCa;

pub const H2: &[u8] = b"h2";
pub const HTTP1: &[u8] = b"http/1.1";

/// See the module doc. Serves until the test process ends.
pub struct TlsUpstream {
    pub port: u16,
    seen: Arc<Mutex<Vec<(Version, usize)>>>,
}

impl TlsUpstream {
    /// An upstream with `ca`'s server certificate (localhost, 127.0.0.1)
    /// offering `alpn`, most preferred first.
    pub async fn start(ca: &TestCa, alpn: &[&[u8]]) -> Self {
        let chain = CertificateDer::pem_file_iter(ca.file("server.pem"))
            .expect("server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(ca.file("server.key")).expect("server.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    // A refused handshake (no common ALPN protocol) ends here.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(H2);
                    let service =
                        hyper::service::service_fn(move |req| answer(req, record.clone()));
                    let io = TokioIo::new(tls);
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await
                    };
                });
            }
        });
        Self { port, seen }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The HTTP version and body length of each request answered so far.
    pub fn seen(&self) -> Vec<(Version, usize)> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn answer(
    req: http::Request<Incoming>,
    record: Arc<Mutex<Vec<(Version, usize)>>>,
) -> Result<http::Response<String>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body_len = match body.collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => {
            let mut bad = http::Response::new(String::new());
            *bad.status_mut() = http::StatusCode::BAD_REQUEST;
            return Ok(bad);
        }
    };
    record.lock().expect("lock").push((parts.version, body_len));
    let json = serde_json::json!({
        "path": parts.uri.path(),
        "body_len": body_len,
        "authorization_present": parts.headers.contains_key("authorization"),
        "version": format!("{:?}", parts.version),
    });
    let mut resp = http::Response::new(json.to_string());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
