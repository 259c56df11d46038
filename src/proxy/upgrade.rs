//! WebSocket tunnels through a route, and the only upgrade there is.
//!
//! A request that carries `Upgrade` must be a well-formed WebSocket
//! handshake (RFC 6455 §4.1: `GET`, `Upgrade: websocket`, `Connection:
//! upgrade`, a `Sec-WebSocket-Key` of 16 random bytes in base64,
//! `Sec-WebSocket-Version: 13`), or it is refused with 400 before anything
//! is forwarded: any other protocol (`h2c` above all, whose smuggled HTTP/2
//! connection would reach the upstream past every per-request rule) is
//! never tunnelled, and `HTTP2-Settings` is always dropped. The upstream's
//! 101 must be the matching answer (`Upgrade: websocket` and the
//! `Sec-WebSocket-Accept` derived from our key), or the browser gets 502
//! and nothing is tunnelled.
//!
//! The handshake is proxied like any GET: session resolved, access token
//! attached, browser cookies removed. Two things differ. A browser cannot
//! add the anti-CSRF header to a WebSocket handshake, and WebSockets are not
//! bound by CORS, so on routes with a session the handshake must come from
//! the gateway's own origin (`Origin` equal to `server.public_url`'s):
//! otherwise a page on a sibling origin, to which the SameSite cookie is
//! still sent, could open a socket as the user (cross-site WebSocket
//! hijacking). And once the upstream answers 101 the connection outlives the
//! request, so the tunnel keeps watching the session: it re-reads it every
//! `session.touch_interval`, but at least every 10 s (a revoked session
//! loses its sockets within seconds, not a minute) and at most once a
//! second; records the activity when a touch is due; and cuts both
//! connections when the session has ended — logout, revocation,
//! back-channel logout, absolute lifetime. A store outage does
//! not cut open tunnels; the next successful read decides.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, Method, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::metrics::{Metrics, ReasonLabel};
use crate::session::{ClientInfo, Session, Sessions};

/// Whether a request asks to switch protocols (`Connection: upgrade` and an
/// `Upgrade` header).
pub fn requested(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// RFC 6455 §1.3: appended to the key before hashing.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether a request carries `Upgrade` at all (then it must be a WebSocket
/// handshake, see [`websocket_key`]).
pub fn asks_for_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

/// The only value of a header, or `None` when it is absent or repeated.
fn only<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Whether `Upgrade` names exactly the WebSocket protocol.
fn upgrade_is_websocket(headers: &HeaderMap) -> bool {
    only(headers, &header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The handshake's `Sec-WebSocket-Key` when the request is a well-formed
/// WebSocket handshake; otherwise why not (a message for a 400).
pub fn websocket_key(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, &'static str> {
    if !upgrade_is_websocket(headers) {
        return Err("Only WebSocket upgrades are forwarded.");
    }
    if method != Method::GET || !requested(headers) {
        return Err("A WebSocket handshake must be a GET with Connection: upgrade.");
    }
    if only(headers, &header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err("A WebSocket handshake must carry Sec-WebSocket-Version: 13.");
    }
    let mut decoded = [0u8; 18];
    match only(headers, &header::SEC_WEBSOCKET_KEY) {
        Some(key)
            if key.len() == 24
                && matches!(STANDARD.decode_slice(key.as_bytes(), &mut decoded), Ok(16)) =>
        {
            Ok(key.clone())
        }
        _ => Err("A WebSocket handshake must carry a Sec-WebSocket-Key of 16 bytes in base64."),
    }
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub fn accept_for(key: &HeaderValue) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(WEBSOCKET_GUID);
    STANDARD.encode(ctx.finish())
}

/// Whether an upstream's 101 completes the handshake we sent with `key`:
/// `Upgrade: websocket`, `Connection: upgrade` and the right
/// `Sec-WebSocket-Accept`, each once.
pub fn upstream_accepted(headers: &HeaderMap, key: &HeaderValue) -> bool {
    upgrade_is_websocket(headers)
        && requested(headers)
        && only(headers, &header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|a| a.as_bytes() == accept_for(key).as_bytes())
}

/// Puts the two headers that make an upgrade back on a message whose
/// hop-by-hop headers were removed.
pub fn restore_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The session a tunnel belongs to, re-read while it is open.
pub struct SessionWatch {
    sessions: Arc<Sessions>,
    session: Session,
    client: ClientInfo,
    /// `session.touch_interval`, clamped to 1-10 s.
    every: Duration,
}

impl SessionWatch {
    pub fn new(
        sessions: Arc<Sessions>,
        session: Session,
        client: ClientInfo,
        every: Duration,
    ) -> Self {
        Self {
            sessions,
            session,
            client,
            every,
        }
    }

    /// Returns once the session no longer exists.
    async fn ended(mut self) {
        loop {
            tokio::time::sleep(self.every).await;
            let now = crate::clock::unix_now();
            match self.sessions.reload(&self.session, now).await {
                Ok(Some(session)) => {
                    if self.sessions.touch_due(&session, now)
                        && let Err(e) = self.sessions.touch(&session, &self.client, now).await
                    {
                        tracing::debug!(error = %e, "activity write for a tunnel failed");
                    }
                    self.session = session;
                }
                Ok(None) => return,
                Err(e) => tracing::debug!(error = %e, "tunnel cannot check its session now"),
            }
        }
    }
}

/// Joins the browser's and the upstream's connections once both have
/// switched protocols, until either side closes or the session ends.
pub fn spawn_tunnel(
    metrics: Arc<Metrics>,
    browser: OnUpgrade,
    upstream: OnUpgrade,
    watch: Option<SessionWatch>,
) {
    tokio::spawn(async move {
        let (browser, upstream) = match tokio::try_join!(browser, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "protocol switch did not complete");
                return;
            }
        };
        let mut browser = TokioIo::new(browser);
        let mut upstream = TokioIo::new(upstream);
        metrics.tunnels_open.inc();
        let copy = tokio::io::copy_bidirectional(&mut browser, &mut upstream);
        let reason = match watch {
            None => copy.await.map_or("error", |_| "closed"),
            Some(watch) => tokio::select! {
                r = copy => r.map_or("error", |_| "closed"),
                () = watch.ended() => "session_ended",
            },
        };
        metrics.tunnels_open.dec();
        metrics
            .tunnels_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
        tracing::debug!(reason, "tunnel closed");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn an_upgrade_needs_both_the_upgrade_header_and_the_connection_token() {
        assert!(requested(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(requested(&headers(&[
            ("connection", "keep-alive, upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!requested(&headers(&[("upgrade", "websocket")])));
        assert!(!requested(&headers(&[("connection", "upgrade")])));
        assert!(!requested(&headers(&[
            ("connection", "upgraded"),
            ("upgrade", "websocket")
        ])));
    }

    fn handshake(extra: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        for (k, v) in extra {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_a_well_formed_websocket_handshake_is_an_upgrade_the_gateway_forwards() {
        assert!(websocket_key(&Method::GET, &handshake(&[])).is_ok());
        assert!(websocket_key(&Method::GET, &handshake(&[("upgrade", "WebSocket")])).is_ok());
        for bad in [
            handshake(&[("upgrade", "h2c")]),
            handshake(&[("upgrade", "websocket, h2c")]),
            handshake(&[("upgrade", "h2c, websocket")]),
            handshake(&[("upgrade", "websocketx")]),
            handshake(&[("connection", "keep-alive")]),
            handshake(&[("sec-websocket-version", "8")]),
            handshake(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ")]),
            handshake(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==AA")]),
            handshake(&[("sec-websocket-key", "not base64 at all!!!!!!!")]),
            headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]),
        ] {
            assert!(websocket_key(&Method::GET, &bad).is_err(), "{bad:?}");
        }
        let mut twice = handshake(&[]);
        twice.append("upgrade", HeaderValue::from_static("h2c"));
        assert!(websocket_key(&Method::GET, &twice).is_err());
        assert!(websocket_key(&Method::POST, &handshake(&[])).is_err());
    }

    #[test]
    fn the_accept_value_is_the_rfc_6455_example() {
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept_for(&key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let good = headers(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        assert!(upstream_accepted(&good, &key));
        for (name, value) in [
            ("upgrade", "h2c"),
            ("sec-websocket-accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ("connection", "close"),
        ] {
            let mut bad = good.clone();
            bad.insert(name, HeaderValue::from_static(value));
            assert!(!upstream_accepted(&bad, &key), "{name}: {value}");
        }
        let mut missing = good.clone();
        missing.remove("sec-websocket-accept");
        assert!(!upstream_accepted(&missing, &key));
    }
}
