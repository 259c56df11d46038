//! WebSocket (and any other HTTP/1.1 `Upgrade`) tunnels through a route.
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

use http::{HeaderMap, HeaderValue, header};
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
}
