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
//! back-channel logout, absolute lifetime — after sending the browser a
//! close frame (code 4401, reason `session ended: {reason}`, the reasons of
//! `session::EndReason`) between two of the upstream's frames. A store
//! outage does not cut open tunnels; the next successful read decides.
//! When the process's drain ends (`crate::lifecycle`), every tunnel is cut
//! the same way with close code 1001 (going away), and the process waits
//! for its tunnels (within `server.shutdown_timeout`) before it exits.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, Method, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, ReasonLabel};
use crate::session::{ClientInfo, EndReason, Session, Sessions};

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

    /// Returns once the session no longer exists, with why.
    async fn ended(mut self) -> EndReason {
        loop {
            tokio::time::sleep(self.every).await;
            let now = crate::clock::unix_now();
            match self.sessions.reload(&self.session, now).await {
                Ok(Ok(session)) => {
                    if self.sessions.touch_due(&session, now)
                        && let Err(e) = self.sessions.touch(&session, &self.client, now).await
                    {
                        tracing::debug!(error = %e, "activity write for a tunnel failed");
                    }
                    self.session = session;
                }
                Ok(Err(why)) => return why,
                Err(e) => tracing::debug!(error = %e, "tunnel cannot check its session now"),
            }
        }
    }
}

/// The close code a tunnel cut for its session sends the browser: private
/// use (RFC 6455 §7.4.2), chosen to read like HTTP's 401.
pub const SESSION_ENDED_CLOSE_CODE: u16 = 4401;

/// RFC 6455 §7.4.1: the server is going down.
pub const GOING_AWAY_CLOSE_CODE: u16 = 1001;

/// Why the gateway cut a tunnel.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The session ended.
    Session(EndReason),
    /// The process is shutting down.
    GoingAway,
}

impl Cut {
    /// The close frame's code and reason.
    fn close(self) -> (u16, String) {
        match self {
            Cut::Session(why) => (
                SESSION_ENDED_CLOSE_CODE,
                format!("session ended: {}", why.as_str()),
            ),
            Cut::GoingAway => (GOING_AWAY_CLOSE_CODE, "server shutting down".to_owned()),
        }
    }
}

/// How long a cut tunnel waits for the upstream to finish the frame it is
/// sending, and then for the browser to answer the close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Joins the browser's and the upstream's connections once both have
/// switched protocols, until either side closes, the session ends or the
/// process goes away (`lifecycle`).
///
/// When the session ends the browser gets a close frame (code
/// [`SESSION_ENDED_CLOSE_CODE`], reason `session ended: {reason}`) rather
/// than a dropped connection (which it would report as 1006), so the page
/// can tell why. The upstream's frames are tracked so the close frame goes
/// out between two of them, never inside one.
pub fn spawn_tunnel(
    metrics: Arc<Metrics>,
    browser: OnUpgrade,
    upstream: OnUpgrade,
    watch: Option<SessionWatch>,
    lifecycle: Lifecycle,
) {
    let token = lifecycle.tunnel_open();
    crate::telemetry::spawn_for_request(async move {
        let _token = token;
        let (browser, upstream) = match tokio::try_join!(browser, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "protocol switch did not complete");
                return;
            }
        };
        let (mut from_browser, mut to_browser) = tokio::io::split(TokioIo::new(browser));
        let (mut from_upstream, mut to_upstream) = tokio::io::split(TokioIo::new(upstream));
        let mut frames = FrameTracker::default();
        metrics.tunnels_open.inc();
        let ended = async move {
            let session = async move {
                match watch {
                    Some(watch) => watch.ended().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                why = session => Cut::Session(why),
                () = lifecycle.going_away() => Cut::GoingAway,
            }
        };
        let outcome = {
            let mut up = std::pin::pin!(async {
                tokio::io::copy(&mut from_browser, &mut to_upstream).await?;
                to_upstream.shutdown().await
            });
            let mut down = std::pin::pin!(forward_frames(
                &mut from_upstream,
                &mut to_browser,
                &mut frames,
                ended
            ));
            let mut up_done = false;
            loop {
                tokio::select! {
                    r = &mut up, if !up_done => match r {
                        Ok(()) => up_done = true,
                        Err(e) => break Err(e),
                    },
                    r = &mut down => {
                        if matches!(r, Ok(Down::Closed)) && !up_done {
                            break (&mut up).await.map(|()| Down::Closed);
                        }
                        break r;
                    }
                }
            }
        };
        let reason = match outcome {
            Err(_) => "error",
            Ok(Down::Closed) => "closed",
            Ok(Down::Ended { why, clean }) => {
                drop(to_upstream);
                let sent = clean
                    && finish_frame(&mut from_upstream, &mut to_browser, &mut frames).await
                    && close_browser(&mut from_browser, &mut to_browser, why).await;
                match why {
                    Cut::Session(why) => {
                        tracing::debug!(
                            reason = why.as_str(),
                            close_frame = sent,
                            "tunnel cut: session ended"
                        );
                        "session_ended"
                    }
                    Cut::GoingAway => {
                        tracing::debug!(close_frame = sent, "tunnel cut: shutting down");
                        "going_away"
                    }
                }
            }
        };
        metrics.tunnels_open.dec();
        metrics
            .tunnels_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
        tracing::debug!(reason, "tunnel closed");
    });
}

/// Sends the close frame for a cut tunnel and waits (within
/// [`CLOSE_GRACE`]) for the browser's answering close frame: RFC 6455
/// §7.1.1 has the server close the TCP connection after it. Whether the
/// frame went out.
async fn close_browser<R, W>(from_browser: &mut R, to_browser: &mut W, why: Cut) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (code, reason) = why.close();
    let frame = close_frame(code, &reason);
    let sent = to_browser.write_all(&frame).await.is_ok() && to_browser.flush().await.is_ok();
    if sent {
        let answer = async {
            let mut frames = FrameTracker::default();
            let mut buf = [0u8; 1024];
            while !frames.saw_close {
                match from_browser.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => frames.feed(&buf[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, answer).await;
        let _ = to_browser.shutdown().await;
    }
    sent
}

/// An unmasked close frame (server to client): FIN + opcode 8, the code
/// and a reason cut to the 123 bytes a control frame allows.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88);
    // At most 125: fits the 7-bit length.
    frame.push(u8::try_from(2 + reason.len()).unwrap_or(125));
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

/// How the upstream-to-browser direction stopped.
enum Down {
    /// The upstream closed its side (the browser's was shut down after it).
    Closed,
    /// The session ended or the process is going away. `clean`: no frame
    /// was cut short on the way to the browser by the stop (a close frame
    /// can follow once the frame under way is finished).
    Ended { why: Cut, clean: bool },
}

/// Copies the upstream's bytes to the browser, keeping track of where its
/// frames begin and end, until the upstream closes or `ended` completes.
/// A read is dropped safely when the session ends; a write half done is
/// not, so it is reported as not `clean`.
async fn forward_frames<R, W>(
    from: &mut R,
    to: &mut W,
    frames: &mut FrameTracker,
    ended: impl std::future::Future<Output = Cut>,
) -> std::io::Result<Down>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut ended = std::pin::pin!(ended);
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => r?,
            why = &mut ended => return Ok(Down::Ended { why, clean: true }),
        };
        if n == 0 {
            to.shutdown().await?;
            return Ok(Down::Closed);
        }
        frames.feed(&buf[..n]);
        tokio::select! {
            r = async {
                to.write_all(&buf[..n]).await?;
                to.flush().await
            } => r?,
            why = &mut ended => return Ok(Down::Ended { why, clean: false }),
        }
    }
}

/// Forwards what is left of the upstream's frame under way (within
/// [`CLOSE_GRACE`]); whether the browser's stream is now at a frame
/// boundary.
async fn finish_frame<R, W>(from: &mut R, to: &mut W, frames: &mut FrameTracker) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let finish = async {
        let mut buf = vec![0u8; 8 * 1024];
        while !frames.at_boundary() {
            let want = frames.bytes_to_boundary(buf.len());
            let n = from.read(&mut buf[..want]).await?;
            if n == 0 {
                return Ok(false);
            }
            frames.feed(&buf[..n]);
            to.write_all(&buf[..n]).await?;
        }
        to.flush().await?;
        Ok::<_, std::io::Error>(true)
    };
    matches!(
        tokio::time::timeout(CLOSE_GRACE, finish).await,
        Ok(Ok(true))
    )
}

/// Follows the frame structure of one direction of a WebSocket (RFC 6455
/// §5.2) without buffering it: where a header ends, how much payload is
/// left.
#[derive(Debug, Default)]
struct FrameTracker {
    header: [u8; 14],
    /// Header bytes seen of the frame under way (0: at a boundary or in
    /// its payload).
    have: usize,
    /// Payload bytes still to come.
    payload_left: u64,
    /// A close frame's header has gone by.
    saw_close: bool,
}

impl FrameTracker {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// The header's full length once its first two bytes are known.
    fn header_len(&self) -> usize {
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    /// How many bytes (at most `max`, at least 1) can be read without
    /// passing the end of the frame under way.
    fn bytes_to_boundary(&self, max: usize) -> usize {
        if self.have > 0 {
            let need = if self.have < 2 { 2 } else { self.header_len() };
            (need - self.have).clamp(1, max)
        } else {
            usize::try_from(self.payload_left)
                .unwrap_or(max)
                .clamp(1, max)
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= take as u64;
                bytes = &bytes[take..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have >= 2 && self.have == self.header_len() {
                self.payload_left = match self.header[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                    127 => {
                        let mut len = [0u8; 8];
                        len.copy_from_slice(&self.header[2..10]);
                        u64::from_be_bytes(len)
                    }
                    n => u64::from(n),
                };
                self.saw_close |= self.header[0] & 0x0f == 0x8;
                self.have = 0;
            }
        }
    }
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

    #[test]
    fn a_close_frame_carries_the_code_and_a_reason_cut_to_fit_a_control_frame() {
        let f = close_frame(4401, "session ended: logged_out");
        assert_eq!(f[0], 0x88);
        assert_eq!(usize::from(f[1]), 2 + "session ended: logged_out".len());
        assert_eq!(&f[2..4], &4401u16.to_be_bytes());
        assert_eq!(&f[4..], b"session ended: logged_out");
        let long = close_frame(4401, &"é".repeat(100));
        assert_eq!(
            long[1], 124,
            "2 + 122: the reason stops before a split character"
        );
        assert!(std::str::from_utf8(&long[4..]).is_ok());
    }

    #[test]
    fn the_frame_tracker_knows_the_boundaries_of_frames_fed_in_any_pieces() {
        // A 3-byte text frame, a 300-byte binary frame (16-bit length) and a
        // masked close frame, fed one byte at a time and all at once.
        let mut stream = vec![0x81, 3, b'a', b'b', b'c', 0x82, 126, 0x01, 0x2c];
        stream.extend(std::iter::repeat_n(0u8, 300));
        let close = [0x88, 0x82, 1, 2, 3, 4, 0x0f, 0xe9];
        stream.extend_from_slice(&close);
        let boundaries = [0, 5, 9 + 300, stream.len()];
        let mut t = FrameTracker::default();
        for (i, b) in stream.iter().enumerate() {
            assert_eq!(t.at_boundary(), boundaries.contains(&i), "before byte {i}");
            // Known once the close frame's 6-byte header has gone by.
            assert_eq!(t.saw_close, i >= 9 + 300 + 6, "before byte {i}");
            t.feed(std::slice::from_ref(b));
        }
        assert!(t.at_boundary() && t.saw_close);
        let mut t = FrameTracker::default();
        t.feed(&stream[..7]);
        assert!(!t.at_boundary());
        assert_eq!(t.bytes_to_boundary(8192), 2, "the rest of the header");
        t.feed(&stream[7..9]);
        assert_eq!(t.bytes_to_boundary(8192), 300, "the payload");
        assert_eq!(t.bytes_to_boundary(100), 100);
        t.feed(&stream[9..]);
        assert!(t.at_boundary() && t.saw_close);
    }
}
