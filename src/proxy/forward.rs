//! Forwarding one request to its upstream: URI rewritten under the route's
//! base, headers cleaned both ways (`headers`), the access token and the
//! route's identity headers and assertion attached (`identity`),
//! bodies streamed (nothing is buffered whole; the response's as part of
//! its request, `streamed`), and a WebSocket handshake
//! joined into a tunnel when the upstream switches protocols (`upgrade`).
//!
//! On session routes (`auth = "required"` or `"optional"`) a CORS preflight
//! is answered here with 403 and never forwarded, and the upstream's
//! `Access-Control-*` headers are removed: a page on another origin must
//! never read a response made with the user's token, whatever CORS policy
//! the upstream has.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, Version, header};
use tracing::Instrument as _;

use super::client::{HttpClient, Versions, build_client, tcp_connector};
use super::dpop::{self, UpstreamDpop};
use super::headers;
use super::routes::Route;
use super::sticky::{Keeping, SendError, UpstreamSlot};
use super::streamed::{ClientBody, UpstreamBody, client_body_stalled};
use super::token;
use super::upgrade::{self, SessionWatch};
use crate::config::{Config, RouteAuth};
use crate::error::AppError;
use crate::extract::client::{ClientAddressPolicy, peer_ip_of};
use crate::flows::client_token::ClientTokens;
use crate::flows::refresh::Refresher;
use crate::identity::{self, Signer};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::secret::SecretString;
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
    /// The client's streamed request body went silent for
    /// `server.body_read_timeout` before the answer came
    /// (`streamed::ClientBody`).
    #[error("request body not received in time")]
    ClientBodyStalled,
    /// The request cannot be expressed as an upstream URI.
    #[error("request path cannot be forwarded")]
    BadPath,
}

impl From<UpstreamError> for AppError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unavailable(why) => Self::UpstreamUnavailable(why.into()),
            UpstreamError::Timeout => Self::UpstreamTimeout,
            UpstreamError::ClientBodyStalled => Self::BodyTimeout,
            UpstreamError::BadPath => {
                Self::BadRequest("The request path cannot be forwarded.".into())
            }
        }
    }
}

/// `Bearer <token>`, marked sensitive so no log or debug output of the
/// header map prints it.
fn bearer_value(token: &SecretString) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut h = HeaderValue::from_str(&format!("Bearer {}", token.expose()))?;
    h.set_sensitive(true);
    Ok(h)
}

/// Who a forwarded request is made for.
pub enum Caller<'a> {
    /// No session (public routes, anonymous calls to optional routes).
    Anonymous,
    /// A browser's session: its access token is attached.
    Session(&'a Session),
    /// A browser's session on a route with a derived token: that token is
    /// attached instead of the session's own.
    Derived(&'a Session, &'a SecretString),
    /// A bearer client (`bearer_audience`): its own verified `Authorization`
    /// header goes through as it is; `claims` are its token's.
    Bearer {
        authorization: HeaderValue,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    },
}

/// What forwarding needs, built once per gateway (a sub-state).
pub struct Forwarder {
    client: HttpClient,
    /// HTTP/1.1 only: upgrades (WebSockets) do not exist in HTTP/2 here.
    upgrade_client: HttpClient,
    /// HTTP/2 only, for `upstream_http2` routes.
    http2_client: HttpClient,
    cookies: CookiePolicy,
    /// Which peers' `X-Forwarded-For` is believed (`server.trusted_proxies`).
    client_address: ClientAddressPolicy,
    /// `X-Forwarded-Proto` and `-Host` values, from `server.public_url`.
    forwarded_proto: HeaderValue,
    forwarded_host: HeaderValue,
    /// `server.public_url`'s origin, which WebSocket handshakes must name.
    public_origin: String,
    /// `server.public_url` and the origins `return_to` may name: a step-up
    /// login URL carries a return target only when `/auth/login` will
    /// accept it.
    return_base: url::Url,
    return_origins: Vec<String>,
    /// Open tunnels re-check their session (see `upgrade`).
    sessions: Arc<Sessions>,
    watch_every: Duration,
    metrics: Arc<Metrics>,
    /// Signs identity assertions (`[assertion]`), if configured.
    signer: Option<Arc<Signer>>,
    /// Header names only the gateway may send (`identity::names_to_strip`).
    gateway_only: Vec<HeaderName>,
    /// Tunnels close with 1001 when the process's drain ends.
    lifecycle: Lifecycle,
    /// `/auth/login` as the browser sees it: where a relayed step-up
    /// challenge sends the SPA.
    login_path: String,
    /// The gateway's own tokens, for `token = "client"` routes.
    client_tokens: Arc<ClientTokens>,
    /// Renews a session's token an upstream refused.
    refresher: Arc<Refresher>,
    /// How kept upstream connections are opened and idled, when requests
    /// may use their browser connection's (`proxy.sticky_connections`; see
    /// `sticky`); `None` when they all use the pool.
    sticky: Option<Keeping>,
    /// Upstreams' latest DPoP nonces (routes with `dpop = true`), this
    /// worker's: a worker meets an upstream's first challenge once.
    dpop_nonces: crate::oidc::dpop::Nonces,
    /// `server.body_read_timeout`: how long a body kept for a retry
    /// (`keep_for_replay`) may take to arrive whole.
    body_read_timeout: Duration,
}

impl Forwarder {
    pub fn new(
        config: &Config,
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
        client_tokens: Arc<ClientTokens>,
        refresher: Arc<Refresher>,
    ) -> anyhow::Result<Self> {
        let public = &config.server.public_url;
        let host = match public.port() {
            Some(p) => format!("{}:{p}", public.host_str().unwrap_or_default()),
            None => public.host_str().unwrap_or_default().to_owned(),
        };
        Ok(Self {
            client: build_client(&config.proxy, Versions::Http1OrAlpn)?,
            upgrade_client: build_client(&config.proxy, Versions::Http1)?,
            http2_client: build_client(&config.proxy, Versions::Http2)?,
            cookies: sessions.cookies().clone(),
            client_address: ClientAddressPolicy::new(&config.server.trusted_proxies),
            forwarded_proto: HeaderValue::from_str(public.scheme())?,
            forwarded_host: HeaderValue::from_str(&host)?,
            public_origin: config.server.public_origin(),
            return_base: config.server.public_url.clone(),
            return_origins: config.server.allowed_return_origins.clone(),
            watch_every: config
                .session
                .touch_interval
                .clamp(Duration::from_secs(1), Duration::from_secs(10)),
            sessions,
            metrics,
            signer: None,
            lifecycle: Lifecycle::default(),
            gateway_only: identity::names_to_strip(&config.routes, config.assertion.as_ref()),
            login_path: config.server.path("/auth/login"),
            client_tokens,
            refresher,
            // A zero idle timeout keeps no connection, kept or pooled.
            sticky: (config.proxy.sticky_connections && !config.proxy.pool_idle_timeout.is_zero())
                .then(|| Keeping {
                    connector: tcp_connector(&config.proxy),
                    idle_timeout: config.proxy.pool_idle_timeout,
                    max_response_header_bytes: config.proxy.max_response_header_bytes,
                }),
            dpop_nonces: crate::oidc::dpop::Nonces::default(),
            body_read_timeout: config.server.limits.body_read_timeout,
        })
    }

    /// Signs the assertions of routes with `assertion = true`.
    pub fn with_signer(mut self, signer: Option<Arc<Signer>>) -> Self {
        self.signer = signer;
        self
    }

    /// The process's lifecycle, so tunnels end with the drain.
    pub fn with_lifecycle(mut self, lifecycle: Lifecycle) -> Self {
        self.lifecycle = lifecycle;
        self
    }

    /// The `Authorization` `route`'s upstream receives (`proxy::token`, or
    /// the route's derived user token), for forward-auth answers; `origin`
    /// is the request's, for the audit trail of a refresh.
    pub async fn token_for(
        &self,
        route: &Route,
        session: Option<&Session>,
        origin: crate::audit::Origin<'_>,
    ) -> Result<Option<HeaderValue>, AppError> {
        if let Some(s) = session
            && route.token.is_derived()
        {
            let derived = self
                .refresher
                .derived(s, &route.token, crate::clock::unix_now(), origin)
                .await?;
            return bearer_value(&derived).map(Some).map_err(|_| {
                AppError::Internal("derived token is not a valid header value".into())
            });
        }
        Ok(token::decide(&route.token, session, &self.client_tokens)
            .await?
            .map(|a| a.header().clone()))
    }

    /// What `route`'s upstream is told about `session`'s user: identity
    /// headers and, if the route asks, a signed assertion.
    pub fn identity_for(
        &self,
        route: &Route,
        session: &Session,
        now: u64,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, AppError> {
        if route.identity_headers.is_empty() && route.assertion_audience.is_none() {
            return Ok(Vec::new());
        }
        identity::for_upstream(
            &route.identity_headers,
            route.assertion_audience.as_deref(),
            self.signer.as_deref(),
            &session.claims()?,
            now,
        )
        .map_err(|e| AppError::Internal(format!("identity assertion: {e}")))
    }

    /// Whether the request carries one of the gateway's own cookies (then
    /// it is a browser's, and never taken for a bearer client's).
    pub fn carries_our_cookie(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .filter_map(|pair| pair.split(|&b| b == b'=').next())
            .filter_map(|name| std::str::from_utf8(name.trim_ascii()).ok())
            .any(|name| self.cookies.is_ours(name))
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
    ) -> Result<Response, AppError> {
        let caller = match session {
            Some(s) => Caller::Session(s),
            None => Caller::Anonymous,
        };
        self.forward_as(route, req, caller).await
    }

    /// Sends one request upstream within the route's timeout, counting it
    /// in the route's metrics and on `span`. With `again` (a copy of the
    /// request), a request the upstream refused unprocessed over HTTP/2
    /// (`REFUSED_STREAM`, or beyond the last stream of its `GOAWAY`, as
    /// when it closes a connection after so many requests) is sent once
    /// more: RFC 9113 §8.7 says it is safe to. Both attempts share one
    /// deadline, the first's: a send never takes longer than the route's
    /// timeout.
    ///
    /// With `kept` (see `sticky`), the request goes over the browser
    /// connection's own upstream connection, or the pool if that cannot
    /// take it.
    async fn send(
        &self,
        route: &Route,
        client: &HttpClient,
        req: Request,
        span: &tracing::Span,
        again: Option<&Replay>,
        kept: Option<(&UpstreamSlot, &Keeping)>,
    ) -> Result<http::Response<hyper::body::Incoming>, AppError> {
        let started = std::time::Instant::now();
        // `checked_add`: a timeout too large for a deadline (someone meaning
        // "never") waits as long as the clock can, not a panic.
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(route.timeout)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        let first = async {
            match kept {
                Some((slot, keeping)) => slot.send(route.authority(), req, client, keeping).await,
                None => client.request(req).await.map_err(SendError::Pool),
            }
        };
        let mut answer = tokio::time::timeout_at(deadline, first)
            .instrument(span.clone())
            .await;
        if let (Ok(Err(SendError::Pool(e))), Some(r)) = (&answer, again)
            && unprocessed_over_http2(e)
        {
            tracing::info!(route = %route.path, "upstream refused a request unprocessed (HTTP/2); sending it once more");
            answer = tokio::time::timeout_at(deadline, async {
                client.request(r.request()).await.map_err(SendError::Pool)
            })
            .instrument(span.clone())
            .await;
        }
        if let Some(m) = &route.upstream_metrics {
            let status = match &answer {
                Ok(Ok(r)) => Some(r.status().as_u16()),
                _ => None,
            };
            m.observe(status, started.elapsed().as_secs_f64());
        }
        let resp = match answer {
            Err(_) => {
                span.record("otel.status_code", "ERROR");
                return Err(UpstreamError::Timeout.into());
            }
            Ok(Err(e)) => {
                span.record("otel.status_code", "ERROR");
                return Err(match e {
                    SendError::Pool(e) => map_client_error(&e),
                    SendError::Upstream(e) => e,
                }
                .into());
            }
            Ok(Ok(r)) => r,
        };
        span.record("http.response.status_code", resp.status().as_u16());
        if let Some(why) = unfaithful(&resp) {
            // Its framing is sound (hyper read it), so its connection may
            // carry the next request; its body is dropped unread.
            span.record("otel.status_code", "ERROR");
            return Err(UpstreamError::Unavailable(why).into());
        }
        Ok(resp)
    }

    /// A new token in place of `refused`: the session's, refreshed
    /// single-flight unless another request already replaced it; or a new
    /// client token. `None`: nothing new to send (no refresh token).
    async fn renew(
        &self,
        route: &Route,
        session: Option<&Session>,
        refused: &token::Attached,
        peer: std::net::IpAddr,
    ) -> Result<Option<HeaderValue>, AppError> {
        let renewed = match (refused, session) {
            (token::Attached::User(old), Some(s)) => {
                let headers = http::HeaderMap::new();
                let origin = crate::audit::Origin::new(&headers, peer);
                let s = self
                    .refresher
                    .renew_refused(s.clone(), old, crate::clock::unix_now(), origin)
                    .await?;
                s.bearer_header().map_err(|_| {
                    AppError::Internal("access token is not a valid header value".into())
                })?
            }
            (token::Attached::Client(old), _) => {
                self.client_tokens.forget(&route.token, old).await;
                self.client_tokens.header(&route.token).await?
            }
            (token::Attached::Derived(old), Some(s)) => {
                let Some(refused) = old.to_str().ok().and_then(|h| h.strip_prefix("Bearer "))
                else {
                    return Ok(None);
                };
                let headers = http::HeaderMap::new();
                let origin = crate::audit::Origin::new(&headers, peer);
                let renewed = self
                    .refresher
                    .derived_refused(s, &route.token, refused, crate::clock::unix_now(), origin)
                    .await?;
                bearer_value(&renewed).map_err(|_| {
                    AppError::Internal("derived token is not a valid header value".into())
                })?
            }
            (token::Attached::User(_) | token::Attached::Derived(_), None) => return Ok(None),
        };
        Ok((renewed != *refused.header()).then_some(renewed))
    }

    /// Where a step-up for this browser request should come back to: the
    /// page itself for a navigation, else its same-origin `Referer`'s path
    /// and query (the page that made the call).
    ///
    /// Only a target `/auth/login` accepts (`url_policy::return_to`): a
    /// login URL whose `return_to` is refused would strand the browser on
    /// a 400 page (a query holding `%0A`, a `Referer` path of `//x`).
    pub fn step_up_return_to(&self, headers: &http::HeaderMap, uri: &http::Uri) -> Option<String> {
        let candidate = if crate::pages::is_navigation(headers) {
            uri.path_and_query()
                .map(|pq| pq.as_str().to_owned())
                .filter(|pq| pq.len() <= crate::url_policy::return_to::MAX_LEN)
        } else {
            crate::step_up::return_to_from_referer(
                headers,
                &self.public_origin,
                crate::url_policy::return_to::MAX_LEN,
            )
        }?;
        crate::url_policy::return_to::resolve(&candidate, &self.return_base, &self.return_origins)
            .is_ok()
            .then_some(candidate)
    }

    /// Sends `req` to `route`'s upstream on behalf of `caller`.
    pub async fn forward_as(
        &self,
        route: &Route,
        req: Request,
        caller: Caller<'_>,
    ) -> Result<Response, AppError> {
        let session = match &caller {
            Caller::Session(s) | Caller::Derived(s, _) => Some(*s),
            _ => None,
        };
        let session_route = route.auth != RouteAuth::None;
        if session_route && headers::is_cors_preflight(req.method(), req.headers()) {
            return Err(AppError::Forbidden(
                "Cross-origin requests are not allowed on this route.".into(),
            ));
        }
        let now = crate::clock::unix_now();
        let bearer_caller = matches!(caller, Caller::Bearer { .. });
        // `attached`: the token the gateway chose (renewed once if refused).
        let (attached, identity) = match caller {
            Caller::Anonymous => (
                token::decide(&route.token, None, &self.client_tokens).await?,
                Vec::new(),
            ),
            Caller::Session(s) => (
                token::decide(&route.token, Some(s), &self.client_tokens).await?,
                self.identity_for(route, s, now)?,
            ),
            Caller::Derived(s, token) => (
                Some(token::Attached::Derived(bearer_value(token).map_err(
                    |_| AppError::Internal("derived token is not a valid header value".into()),
                )?)),
                self.identity_for(route, s, now)?,
            ),
            Caller::Bearer {
                mut authorization,
                claims,
            } => {
                authorization.set_sensitive(true);
                let identity = identity::for_upstream(
                    &route.identity_headers,
                    route.assertion_audience.as_deref(),
                    self.signer.as_deref(),
                    claims,
                    now,
                )
                .map_err(|e| AppError::Internal(format!("identity assertion: {e}")))?;
                (Some(token::Attached::Client(authorization)), identity)
            }
        };
        let bearer = attached.as_ref().map(|a| a.header().clone());
        // A DPoP route presents the session's token with a proof instead.
        let dpop = UpstreamDpop::for_route(route.token.dpop, session)?;
        // Only a token the gateway chose can be renewed: a bearer client's
        // own 401 is its own to handle.
        let renewable = !bearer_caller && dpop.is_none();
        let (mut parts, body) = req.into_parts();
        let step_up_return_to =
            session.and_then(|_| self.step_up_return_to(&parts.headers, &parts.uri));
        // Only a well-formed WebSocket handshake may ask to switch protocols.
        let ws_key = if upgrade::asks_for_upgrade(&parts.headers) {
            Some(
                upgrade::websocket_key(&parts.method, &parts.headers)
                    .map_err(|why| AppError::BadRequest(why.into()))?,
            )
        } else {
            None
        };
        // The browser's side of the switch (absent on HTTP/2, where the
        // request is forwarded plainly, without the upgrade headers).
        let upgrade = ws_key.and_then(|key| {
            parts
                .extensions
                .remove::<hyper::upgrade::OnUpgrade>()
                .map(|on_upgrade| (on_upgrade, key))
        });
        // The verified hops, client first: computed once, for the headers
        // upstream and for the client address a tunnel records.
        let peer = peer_ip_of(&parts.extensions);
        let chain = self.client_address.chain(&parts.headers, peer);
        let client_ip = chain.first().copied().unwrap_or(peer);
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
            .upstream_uri_for(std::mem::take(&mut parts.uri))
            .map_err(|_| UpstreamError::BadPath)?;
        // The browser connection's kept upstream connection, for a request
        // that would go to the pool over HTTP/1.1 anyway (see `sticky`).
        // (`host_header` is set for plain-HTTP/1.1 upstreams only: not
        // `https://`, not `upstream_http2`.)
        let kept = match (&self.sticky, parts.extensions.remove::<UpstreamSlot>()) {
            (Some(keeping), Some(slot))
                if headers::keeps_alive(parts.version, &parts.headers)
                    && upgrade.is_none()
                    && route.host_header.is_some() =>
            {
                Some((slot, keeping))
            }
            _ => None,
        };
        // An upgrade is HTTP/1.1 whatever the route says: HTTP/2 has none.
        let version = if route.upstream_http2 && upgrade.is_none() {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        parts.version = version;
        headers::to_upstream(
            &mut parts.headers,
            &self.cookies,
            bearer,
            &headers::ForwardedFor {
                chain: &chain,
                forward_cookies: route.forward_cookies,
                proto: &self.forwarded_proto,
                host: &self.forwarded_host,
            },
        );
        headers::set_identity(&mut parts.headers, &self.gateway_only, identity);
        // What hyper's client would write itself, made once per route.
        if let Some(host) = &route.host_header {
            parts.headers.insert(header::HOST, host.clone());
        }
        let mut sent_nonce = match &dpop {
            Some(d) => d.attach(
                &mut parts.headers,
                &parts.method,
                &parts.uri,
                &self.dpop_nonces,
            )?,
            None => None,
        };
        // The upstream call's client span (exported traces): the upstream
        // receives its context as `traceparent`. A client's own trace
        // context passes only from a trusted proxy (`traces::propagate`).
        let span = tracing::info_span!(
            target: crate::traces::SPANS,
            "upstream",
            otel.name = %format_args!("upstream {}", parts.method),
            otel.kind = "client",
            http.request.method = parts.method.as_str(),
            server.address = parts.uri.host().unwrap_or_default(),
            oidc_bff.route = route.path.as_str(),
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        crate::traces::propagate(&span, &mut parts.headers, self.client_address.trusts(peer));
        parts.extensions = http::Extensions::new();
        let (client, browser_side) = match upgrade {
            Some((on_upgrade, key)) => {
                upgrade::restore_headers(&mut parts.headers, HeaderValue::from_static("websocket"));
                (&self.upgrade_client, Some((on_upgrade, key)))
            }
            None if route.upstream_http2 => (&self.http2_client, None),
            None => (&self.client, None),
        };
        // A request whose token an upstream may refuse is kept whole when
        // it is small (bodyless, or a Content-Length within the limit), so
        // it can be sent once more with a new token.
        // Over HTTP/2 too, for the upstream's unprocessed refusals (`send`).
        let keep = browser_side.is_none()
            && (route.upstream_http2 || (attached.is_some() && (renewable || dpop.is_some())));
        let (body, replay) = if keep {
            keep_for_replay(&parts, body, self.body_read_timeout).await?
        } else {
            (body, None)
        };
        // A body that streams (not kept whole, not already ended) is
        // bounded by the client's silence and ends with its answer.
        let (body, answering) = match replay {
            Some(_) => (body, None),
            None => match ClientBody::wrap(body, self.body_read_timeout) {
                Ok((streamed, answering)) => (Body::new(streamed), Some(answering)),
                Err(ended) => (ended, None),
            },
        };
        let replay = replay.map(|body| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body,
        });
        let dpop_uri = dpop.as_ref().map(|_| parts.uri.clone());
        let upstream_req = Request::from_parts(parts, body);
        let again = replay.as_ref().filter(|_| route.upstream_http2);
        let kept = kept.as_ref().map(|(slot, keeping)| (slot, *keeping));
        let mut resp = self
            .send(route, client, upstream_req, &span, again, kept)
            .await?;
        let mut replay = replay;
        let fresh_nonce = dpop_uri.as_ref().and_then(|uri| {
            dpop::remember_nonce(
                uri,
                resp.headers(),
                &self.dpop_nonces,
                sent_nonce.as_deref(),
            )
        });
        if let (Some(d), Some(dpop_uri), Some(_)) = (&dpop, &dpop_uri, fresh_nonce)
            && resp.status() == StatusCode::UNAUTHORIZED
            && let Some(mut r) = replay.take()
        {
            tracing::info!(route = %route.path, "upstream asked for a DPoP nonce; retrying once with it");
            sent_nonce = d.attach(&mut r.headers, &r.method, &r.uri, &self.dpop_nonces)?;
            let again = route.upstream_http2.then_some(&r);
            // Boxed, as the renewal below: rare, and inline it would
            // make every request's future larger.
            resp = Box::pin(self.send(route, client, r.request(), &span, again, None)).await?;
            dpop::remember_nonce(
                dpop_uri,
                resp.headers(),
                &self.dpop_nonces,
                sent_nonce.as_deref(),
            );
        }
        // Not on a DPoP route (`renewable` is false there): the replay kept
        // for its nonce retry carries a proof for the old token, and a new
        // token goes out only with a proof of its own, never as Bearer.
        if renewable
            && resp.status() == StatusCode::UNAUTHORIZED
            && token::refused_token(resp.headers())
            && let (Some(mut r), Some(refused)) = (replay, &attached)
            // Boxed: rarely taken, and its future (a refresh or a token
            // grant) would otherwise make every request's future larger.
            && let Some(renewed) = Box::pin(self.renew(route, session, refused, peer)).await?
        {
            tracing::info!(route = %route.path, "upstream refused the token; retrying once with a new one");
            r.headers.insert(header::AUTHORIZATION, renewed);
            let again = route.upstream_http2.then_some(&r);
            resp = Box::pin(self.send(route, client, r.request(), &span, again, None)).await?;
        }
        // A 101 must answer our WebSocket handshake exactly; anything else is
        // dropped with its connection, and nothing is tunnelled.
        let switched = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some((browser_side, key)) = browser_side else {
                return Err(
                    UpstreamError::Unavailable("switched protocols without being asked").into(),
                );
            };
            if !upgrade::upstream_accepted(resp.headers(), &key) {
                return Err(UpstreamError::Unavailable(
                    "answered the WebSocket handshake with a wrong 101",
                )
                .into());
            }
            let upstream_side = hyper::upgrade::on(&mut resp);
            upgrade::spawn_tunnel(
                self.metrics.clone(),
                browser_side,
                upstream_side,
                watch,
                self.lifecycle.clone(),
            );
            true
        } else {
            false
        };
        // An API's RFC 9470 challenge to a browser session becomes the
        // gateway's own `step_up_required`, as a route's rule would; any
        // other 401 (or one that does not parse) passes through.
        if resp.status() == StatusCode::UNAUTHORIZED
            && session.is_some()
            && let Some(challenge) = resp
                .headers()
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .take(4)
                .find_map(|v| crate::step_up::parse_upstream_challenge(v.as_bytes()))
        {
            tracing::info!(route = %route.path, "upstream asked for step-up; relayed");
            return Err(AppError::step_up(
                &challenge,
                &self.login_path,
                step_up_return_to.as_deref(),
            ));
        }
        let (mut parts, body) = resp.into_parts();
        // The gateway's own HTTP version, not the upstream's (RFC 9110
        // §6.2): an HTTP/1.0 answer passed on as such would end a browser's
        // kept-alive connection, and the requests pipelined on it.
        parts.version = Version::HTTP_11;
        headers::to_browser(&mut parts.headers, &self.cookies, session_route);
        if switched {
            upgrade::restore_headers(&mut parts.headers, HeaderValue::from_static("websocket"));
        }
        Ok(mark(
            Response::from_parts(
                parts,
                Body::new(UpstreamBody::new(body, route.body_idle_timeout, answering)),
            )
            .into_response(),
            ResponseKind::Proxied,
        ))
    }
}

/// Why an upstream's answer cannot be passed on as it stands: a status no
/// client can classify (outside 100–599: hyper's parser takes any three
/// digits), or a body still transfer-coded (a coding besides `chunked`:
/// hyper undoes the chunks only, and `Transfer-Encoding` ends at each hop,
/// so the browser would get gzip bytes with nothing saying so).
fn unfaithful(resp: &http::Response<hyper::body::Incoming>) -> Option<&'static str> {
    if !(100..=599).contains(&resp.status().as_u16()) {
        return Some("answered with a status outside 100-599");
    }
    if !crate::framing::chunked_or_none(resp.headers()) {
        return Some("answered with a transfer coding besides chunked");
    }
    None
}

/// The request body kept in memory when it is small enough to send
/// again: bodyless, or an exact size (Content-Length) within
/// [`token::REPLAY_BODY_LIMIT`]. Anything else streams as it comes.
///
/// A kept body must arrive whole within `time` (408 beyond): it is read
/// before the request goes upstream, so the route's timeout does not
/// bound it, and a client trickling it would otherwise hold its
/// connection (and its slot under `server.max_connections`) for ever.
/// The timer exists only for the requests whose body is read here.
async fn keep_for_replay(
    parts: &http::request::Parts,
    body: Body,
    time: Duration,
) -> Result<(Body, Option<bytes::Bytes>), AppError> {
    use http_body::Body as _;
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    match body.size_hint().exact() {
        // The usual GET: nothing to read or re-wrap.
        Some(0) if !chunked => return Ok((body, Some(bytes::Bytes::new()))),
        Some(n) if n <= token::REPLAY_BODY_LIMIT && !chunked => {}
        _ => return Ok((body, None)),
    }
    let limit = usize::try_from(token::REPLAY_BODY_LIMIT).unwrap_or(usize::MAX);
    let bytes = tokio::time::timeout(time, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| AppError::BodyTimeout)?
        .map_err(|_| AppError::BadRequest("The request body could not be read.".into()))?;
    Ok((Body::from(bytes.clone()), Some(bytes)))
}

/// A request kept whole so it can be sent again (a renewed token, a DPoP
/// nonce, an HTTP/2 upstream's unprocessed refusal).
struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: Version,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl Replay {
    fn request(&self) -> Request {
        let mut req = Request::new(Body::from(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        *req.version_mut() = self.version;
        req
    }
}

/// Whether an HTTP/2 upstream refused the request without processing it:
/// `REFUSED_STREAM`, or a `GOAWAY` whose last stream is below the
/// request's (RFC 9113 §6.8, §8.7): safe to send again, whatever the
/// method.
fn unprocessed_over_http2(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote());
        }
        source = s.source();
    }
    false
}

/// Whether a client error was caused by an I/O timeout (a 504, not a 502).
pub(super) fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        source = s.source();
    }
    false
}

fn map_client_error(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    if client_body_stalled(e) {
        return UpstreamError::ClientBodyStalled;
    }
    if caused_by_timeout(e) {
        return UpstreamError::Timeout;
    }
    UpstreamError::Unavailable(if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    })
}
