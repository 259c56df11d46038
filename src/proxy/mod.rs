//! The token-attaching reverse proxy: the hot path.
//!
//! For a request under a configured route: refuse dot-segment paths, check
//! the anti-CSRF header on state-changing methods, resolve the session
//! (one store read), refresh the access token if it is about to expire,
//! then forward with `Authorization: Bearer …` over a pooled connection.
//! Bodies stream in both directions; nothing is buffered whole. A route
//! that requires a session never forwards without one: 401 JSON, never a
//! redirect. WebSocket handshakes take the same path; `upgrade` owns what
//! happens after the upstream switches protocols.

pub mod headers;
pub mod routes;
pub mod upgrade;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, Version, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{ProxyConfig, RouteAuth};
use crate::error::AppError;
use crate::session::refresh::ensure_fresh;
use crate::session::{ClientInfo, Lookup, Session};
use crate::state::AppState;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// One pooled client for every upstream. `https://` upstreams are checked
/// against the public roots, or only against `proxy.tls_ca_file`'s CAs, and
/// are shown `proxy.tls_cert_file` when they ask for a client certificate.
/// Without `http2` it offers only HTTP/1.1, which upgrades need.
pub fn build_client(config: &ProxyConfig, http2: bool) -> anyhow::Result<HttpClient> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(config.connect_timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(upstream_tls(config)?)
        .https_or_http()
        .enable_http1();
    let https = if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .build(https))
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

/// Methods that change state must carry the anti-CSRF header: a custom
/// header cannot be sent cross-site without a CORS preflight.
pub fn is_state_changing(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

pub fn csrf_ok(state: &AppState, headers: &http::HeaderMap) -> bool {
    headers
        .get(&state.config.csrf.header)
        .is_some_and(|v| v == state.config.csrf.value)
}

pub fn peer_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// The fallback handler: configured routes are proxied, anything else goes
/// to the static app (if any) or is a 404.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let Some(route) = state.routes.find(req.uri().path()) else {
        return crate::routes::static_files::serve(&state, req).await;
    };
    match proxy(&state, route, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn proxy(
    state: &AppState,
    route: &routes::Route,
    req: Request,
) -> Result<Response, AppError> {
    if routes::has_dot_segment(req.uri().path()) {
        return Err(AppError::BadRequest(
            "Paths with dot segments are not forwarded.".into(),
        ));
    }
    if route.auth != RouteAuth::None
        && is_state_changing(req.method())
        && !csrf_ok(state, req.headers())
    {
        return Err(AppError::CsrfRejected);
    }
    if route.auth != RouteAuth::None
        && upgrade::requested(req.headers())
        && !upgrade::from_own_origin(state, req.headers())
    {
        return Err(AppError::Forbidden(
            "WebSocket handshakes must come from this application's own origin.".into(),
        ));
    }
    let peer = peer_ip(&req);
    let client_ip = headers::client_ip(
        req.headers(),
        peer,
        state.config.server.trust_forwarded_headers,
    );
    let bearer = match route.auth {
        RouteAuth::None => None,
        auth => {
            let now = crate::clock::unix_now();
            match state.sessions.load(req.headers(), now).await? {
                Lookup::Active(session) => {
                    let session = fresh(state, *session, now).await?;
                    maybe_touch(state, &session, client_ip, &req, now);
                    Some(bearer_header(&session)?)
                }
                Lookup::Ended if auth == RouteAuth::Required => {
                    return Ok(session_ended(state));
                }
                Lookup::Anonymous if auth == RouteAuth::Required => {
                    return Err(AppError::Unauthenticated);
                }
                Lookup::Ended | Lookup::Anonymous => None,
            }
        }
    };
    forward(state, route, req, bearer, client_ip).await
}

/// The session with an access token valid for at least `refresh_skew`.
async fn fresh(state: &AppState, session: Session, now: u64) -> Result<Session, AppError> {
    let skew = state.config.session.refresh_skew.as_secs();
    ensure_fresh(
        &state.sessions,
        &state.oidc,
        &state.flights,
        session,
        now,
        skew,
    )
    .await
}

/// 401 for a cookie that no longer names a session; the cookie is cleared.
pub fn session_ended(state: &AppState) -> Response {
    let mut resp = AppError::SessionExpired.into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        state.sessions.cookies().clear_session_cookie(),
    );
    resp
}

fn bearer_header(session: &Session) -> Result<HeaderValue, AppError> {
    let token = session.secrets.access_token.expose();
    let mut v = String::with_capacity(7 + token.len());
    v.push_str("Bearer ");
    v.push_str(token);
    let mut h = HeaderValue::from_str(&v)
        .map_err(|_| AppError::Internal("access token is not a valid header value".into()))?;
    h.set_sensitive(true);
    Ok(h)
}

/// Records activity in the background when due; the request does not wait.
pub fn maybe_touch(state: &AppState, session: &Session, ip: IpAddr, req: &Request, now: u64) {
    if !state.sessions.touch_due(session, now) {
        return;
    }
    let client = ClientInfo::new(ip, req.headers());
    let state = state.clone();
    let snapshot = Session {
        id: session.id.clone(),
        store_id: session.store_id.clone(),
        stored: session.stored.clone(),
        secrets: session.secrets.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = state.sessions.touch(&snapshot, &client, now).await {
            tracing::debug!(error = %e, "activity write failed");
        }
    });
}

async fn forward(
    state: &AppState,
    route: &routes::Route,
    req: Request,
    bearer: Option<HeaderValue>,
    client_ip: IpAddr,
) -> Result<Response, AppError> {
    let (mut parts, body) = req.into_parts();
    // An HTTP/1.1 upgrade: the protocol asked for, and the browser's side of
    // the switch (absent on HTTP/2, where the request is forwarded plainly).
    let upgrade = if upgrade::requested(&parts.headers) {
        parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .zip(parts.headers.get(header::UPGRADE).cloned())
    } else {
        None
    };
    let watch = match (&upgrade, &bearer) {
        (Some(_), Some(_)) => Some(upgrade::SessionWatch::new(&parts.headers, client_ip)),
        _ => None,
    };
    parts.uri = route
        .upstream_uri(parts.uri.path(), parts.uri.query())
        .map_err(|_| AppError::BadRequest("The request path cannot be forwarded.".into()))?;
    parts.version = Version::HTTP_11;
    headers::to_upstream(
        &mut parts.headers,
        state.sessions.cookies(),
        bearer,
        &headers::ForwardedFor {
            client_ip,
            trust_incoming: state.config.server.trust_forwarded_headers,
            forward_cookies: route.forward_cookies,
            proto: &state.forwarded_proto,
            host: &state.forwarded_host,
        },
    );
    parts.extensions = http::Extensions::new();
    let (client, browser_side) = match upgrade {
        Some((on_upgrade, protocol)) => {
            upgrade::restore_headers(&mut parts.headers, protocol);
            (&state.upgrade_client, Some(on_upgrade))
        }
        None => (&state.client, None),
    };
    let upstream_req = Request::from_parts(parts, body);
    let mut resp = match tokio::time::timeout(route.timeout, client.request(upstream_req)).await {
        Err(_) => return Err(AppError::UpstreamTimeout),
        Ok(Err(e)) => return Err(map_client_error(&e)),
        Ok(Ok(r)) => r,
    };
    let switched = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(browser_side), Some(protocol)) =
            (browser_side, resp.headers().get(header::UPGRADE).cloned())
        else {
            return Err(AppError::UpstreamUnavailable(
                "switched protocols without being asked".into(),
            ));
        };
        let upstream_side = hyper::upgrade::on(&mut resp);
        upgrade::spawn_tunnel(state.clone(), browser_side, upstream_side, watch);
        Some(protocol)
    } else {
        None
    };
    let (mut parts, body) = resp.into_parts();
    headers::to_browser(&mut parts.headers, state.sessions.cookies());
    if let Some(protocol) = switched {
        upgrade::restore_headers(&mut parts.headers, protocol);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn map_client_error(e: &hyper_util::client::legacy::Error) -> AppError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return AppError::UpstreamTimeout;
        }
        source = s.source();
    }
    AppError::UpstreamUnavailable(
        if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        }
        .into(),
    )
}
