//! Forwarding one request to its upstream: URI rewritten under the route's
//! base, headers cleaned both ways (`headers`), the access token attached,
//! bodies streamed (nothing is buffered whole), and a WebSocket handshake
//! joined into a tunnel when the upstream switches protocols (`upgrade`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, Version, header};

use super::client::{HttpClient, build_client};
use super::headers;
use super::routes::Route;
use super::upgrade::{self, SessionWatch};
use crate::config::Config;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::security_headers::{ResponseKind, mark};
use crate::session::cookie::CookiePolicy;
use crate::session::{ClientInfo, Session, Sessions};

/// Why an upstream did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unavailable: {0}")]
    Unavailable(&'static str),
    #[error("upstream timed out")]
    Timeout,
    /// The request cannot be expressed as an upstream URI.
    #[error("request path cannot be forwarded")]
    BadPath,
}

impl From<UpstreamError> for AppError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unavailable(why) => Self::UpstreamUnavailable(why.into()),
            UpstreamError::Timeout => Self::UpstreamTimeout,
            UpstreamError::BadPath => {
                Self::BadRequest("The request path cannot be forwarded.".into())
            }
        }
    }
}

/// What forwarding needs, built once per gateway (a sub-state).
pub struct Forwarder {
    client: HttpClient,
    /// HTTP/1.1 only: upgrades (WebSockets) do not exist in HTTP/2 here.
    upgrade_client: HttpClient,
    cookies: CookiePolicy,
    trust_forwarded: bool,
    /// `X-Forwarded-Proto` and `-Host` values, from `server.public_url`.
    forwarded_proto: HeaderValue,
    forwarded_host: HeaderValue,
    /// `server.public_url`'s origin, which WebSocket handshakes must name.
    public_origin: String,
    /// Open tunnels re-check their session (see `upgrade`).
    sessions: Arc<Sessions>,
    watch_every: Duration,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub fn new(
        config: &Config,
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let public = &config.server.public_url;
        let host = match public.port() {
            Some(p) => format!("{}:{p}", public.host_str().unwrap_or_default()),
            None => public.host_str().unwrap_or_default().to_owned(),
        };
        Ok(Self {
            client: build_client(&config.proxy, true)?,
            upgrade_client: build_client(&config.proxy, false)?,
            cookies: sessions.cookies().clone(),
            trust_forwarded: config.server.trust_forwarded_headers,
            forwarded_proto: HeaderValue::from_str(public.scheme())?,
            forwarded_host: HeaderValue::from_str(&host)?,
            public_origin: config.server.public_origin(),
            watch_every: config
                .session
                .touch_interval
                .clamp(Duration::from_secs(1), Duration::from_secs(10)),
            sessions,
            metrics,
        })
    }

    /// Whether a handshake comes from a page on the gateway's own origin.
    pub fn from_own_origin(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get(header::ORIGIN)
            .is_some_and(|o| o.as_bytes() == self.public_origin.as_bytes())
    }

    /// Sends `req` to `route`'s upstream with `session`'s access token (if
    /// any) and returns the upstream's answer for the browser.
    pub async fn forward(
        &self,
        route: &Route,
        req: Request,
        session: Option<&Session>,
        client_ip: IpAddr,
    ) -> Result<Response, AppError> {
        let bearer = session.map(bearer_header).transpose()?;
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
        let watch = match (&upgrade, session) {
            (Some(_), Some(s)) => Some(SessionWatch::new(
                self.sessions.clone(),
                s.clone(),
                ClientInfo::new(client_ip, &parts.headers),
                self.watch_every,
            )),
            _ => None,
        };
        parts.uri = route
            .upstream_uri(parts.uri.path(), parts.uri.query())
            .map_err(|_| UpstreamError::BadPath)?;
        parts.version = Version::HTTP_11;
        headers::to_upstream(
            &mut parts.headers,
            &self.cookies,
            bearer,
            &headers::ForwardedFor {
                client_ip,
                trust_incoming: self.trust_forwarded,
                forward_cookies: route.forward_cookies,
                proto: &self.forwarded_proto,
                host: &self.forwarded_host,
            },
        );
        parts.extensions = http::Extensions::new();
        let (client, browser_side) = match upgrade {
            Some((on_upgrade, protocol)) => {
                upgrade::restore_headers(&mut parts.headers, protocol);
                (&self.upgrade_client, Some(on_upgrade))
            }
            None => (&self.client, None),
        };
        let upstream_req = Request::from_parts(parts, body);
        let mut resp = match tokio::time::timeout(route.timeout, client.request(upstream_req)).await
        {
            Err(_) => return Err(UpstreamError::Timeout.into()),
            Ok(Err(e)) => return Err(map_client_error(&e).into()),
            Ok(Ok(r)) => r,
        };
        let switched = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(browser_side), Some(protocol)) =
                (browser_side, resp.headers().get(header::UPGRADE).cloned())
            else {
                return Err(
                    UpstreamError::Unavailable("switched protocols without being asked").into(),
                );
            };
            let upstream_side = hyper::upgrade::on(&mut resp);
            upgrade::spawn_tunnel(self.metrics.clone(), browser_side, upstream_side, watch);
            Some(protocol)
        } else {
            None
        };
        let (mut parts, body) = resp.into_parts();
        headers::to_browser(&mut parts.headers, &self.cookies);
        if let Some(protocol) = switched {
            upgrade::restore_headers(&mut parts.headers, protocol);
        }
        Ok(mark(
            Response::from_parts(parts, Body::new(body)).into_response(),
            ResponseKind::Proxied,
        ))
    }
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

fn map_client_error(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return UpstreamError::Timeout;
        }
        source = s.source();
    }
    UpstreamError::Unavailable(if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    })
}
