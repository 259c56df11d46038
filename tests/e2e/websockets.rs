//! WebSockets through a route: the handshake is forwarded with the session's
//! access token, only from the application's own origin, never without a
//! session; once open, messages flow both ways, and the tunnel is cut when
//! the session ends, with a close frame (4401) that says why. No other upgrade is tunnelled (h2c is refused), and an
//! upstream's 101 that does not answer our handshake is a 502.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::{Browser, Gateway, GatewayBuilder, Upstream, duration, route};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `path` as a WebSocket the way a page would: with the browser's
/// cookies and the page's `Origin`. On refusal, the handshake's status.
async fn open(
    gw: &Gateway,
    browser: Option<&Browser>,
    origin: Option<&str>,
    path: &str,
) -> Result<Socket, StatusCode> {
    let mut req = format!("ws://{}{path}", gw.addr)
        .into_client_request()
        .expect("request");
    if let Some(b) = browser {
        req.headers_mut()
            .insert("cookie", b.cookie_header().parse().expect("cookie"));
    }
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", o.parse().expect("origin"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((socket, resp)) => {
            assert!(
                resp.headers().get("set-cookie").is_none(),
                "the handshake answer sets no cookie"
            );
            Ok(socket)
        }
        Err(tungstenite::Error::Http(resp)) => {
            Err(StatusCode::from_u16(resp.status().as_u16()).expect("status"))
        }
        Err(e) => panic!("handshake failed below HTTP: {e}"),
    }
}

/// An upstream, a gateway in front of it (as `build` makes it) and alice
/// logged in there.
async fn logged_in(
    build: impl FnOnce(&Upstream) -> GatewayBuilder,
) -> (Upstream, Gateway, Browser) {
    let upstream = Upstream::start().await;
    let gw = build(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    (upstream, gw, b)
}

async fn echo(socket: &mut Socket, text: &str) -> String {
    socket.send(Message::Text(text.into())).await.expect("send");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no echo: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_page_talks_to_a_websocket_upstream_with_the_token_attached() {
    let (upstream, gw, b) = logged_in(GatewayBuilder::new).await;

    let mut socket = open(&gw, Some(&b), Some(&gw.base), "/api/ws")
        .await
        .expect("handshake accepted");
    assert_eq!(echo(&mut socket, "hello").await, "echo: hello");
    assert_eq!(echo(&mut socket, "again").await, "echo: again");

    let handshake = upstream.seen().pop().expect("handshake forwarded");
    assert!(
        handshake
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer ")),
        "{handshake:?}"
    );
    assert_eq!(
        handshake.header("cookie"),
        None,
        "no browser cookie upstream"
    );
    assert_eq!(handshake.header("upgrade").as_deref(), Some("websocket"));

    socket.close(None).await.expect("close");
    wait_for("the upstream to see the close", || {
        upstream.websockets_ended() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_or_from_another_origin_the_handshake_is_refused() {
    let (upstream, gw, b) = logged_in(GatewayBuilder::new).await;

    // Not logged in: 401, as for any API call.
    assert_eq!(
        open(&gw, None, Some(&gw.base), "/api/ws").await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    // Logged in, but the page is elsewhere (cross-site WebSocket hijacking),
    // or says nothing about where it is.
    for origin in [Some("http://evil.example"), Some("null"), None] {
        assert_eq!(
            open(&gw, Some(&b), origin, "/api/ws").await.err(),
            Some(StatusCode::FORBIDDEN),
            "origin {origin:?}"
        );
    }
    assert_eq!(upstream.count(), 0, "no handshake reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_cuts_the_open_websockets_of_the_session() {
    let (upstream, gw, mut b) = logged_in(|up| {
        GatewayBuilder::new(up).configure(|c| c.session.touch_interval = duration("1s"))
    })
    .await;
    let mut socket = open(&gw, Some(&b), Some(&gw.base), "/api/ws")
        .await
        .expect("handshake accepted");
    assert_eq!(echo(&mut socket, "before").await, "echo: before");

    // Still open after a few session checks while the session lives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(echo(&mut socket, "still").await, "echo: still");

    let logout = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(logout.status, StatusCode::OK);
    // The gateway closes both connections at the next check (1 s here),
    // telling the page why.
    let (took, close) = cut(&mut socket, &upstream, Duration::from_secs(10)).await;
    eprintln!("socket cut {took:?} after logout");
    assert_session_ended(close, "session ended: logged_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_revocation_cuts_open_websockets_within_ten_seconds() {
    // The default touch_interval (60 s): sockets still check every 10 s.
    let (upstream, gw, mut b) = logged_in(|up| GatewayBuilder::new(up).admin()).await;
    let user = b.get("/auth/user").await.json()["sub"]
        .as_str()
        .expect("sub")
        .to_owned();
    let mut socket = open(&gw, Some(&b), Some(&gw.base), "/api/ws")
        .await
        .expect("handshake accepted");
    assert_eq!(echo(&mut socket, "hello").await, "echo: hello");

    let (status, v) = gw
        .admin(
            Method::POST,
            "/admin/sessions/revoke",
            Some(serde_json::json!({ "user": user })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (took, close) = cut(&mut socket, &upstream, Duration::from_secs(15)).await;
    eprintln!("socket cut {took:?} after the revocation");
    assert_session_ended(close, "session ended: revoked_by_operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_from_another_session_closes_the_socket_saying_so() {
    let (upstream, gw, mut b) = logged_in(|up| {
        GatewayBuilder::new(up).configure(|c| c.session.touch_interval = duration("1s"))
    })
    .await;
    let mut socket = open(&gw, Some(&b), Some(&gw.base), "/api/ws")
        .await
        .expect("handshake accepted");
    assert_eq!(echo(&mut socket, "hello").await, "echo: hello");
    // alice again, in another browser, ends the first session.
    let mut other = Browser::new(&gw);
    other.login_alice().await;
    let mine = b.get("/auth/user").await.json()["session"]["id"]
        .as_str()
        .expect("session id")
        .to_owned();
    let r = other
        .request(
            Method::POST,
            &format!("/auth/sessions/{mine}/revoke"),
            &[("x-csrf", "1")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (_, close) = cut(&mut socket, &upstream, Duration::from_secs(10)).await;
    assert_session_ended(close, "session ended: revoked_by_user");
}

/// The close frame of a socket cut because its session ended: code 4401
/// and the reason.
#[track_caller]
fn assert_session_ended(close: Option<CloseFrame>, reason: &str) {
    let frame = close.expect("the gateway sent a close frame (not a bare TCP close, 1006)");
    assert_eq!(u16::from(frame.code), 4401, "{frame:?}");
    assert_eq!(frame.reason.as_str(), reason, "{frame:?}");
}

/// Waits for the gateway to end `socket` (no message may arrive first) and
/// for the upstream to see its side end; how long the first took, and the
/// close frame the gateway sent, if any.
async fn cut(
    socket: &mut Socket,
    upstream: &Upstream,
    within: Duration,
) -> (Duration, Option<CloseFrame>) {
    let started = Instant::now();
    let mut close = None;
    let end = tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(t))) => panic!("unexpected message {t}"),
                Some(Ok(Message::Close(frame))) => close = frame,
                Some(Ok(_)) => continue,
                end => return end,
            }
        }
    })
    .await
    .expect("the socket was not closed after its session ended");
    let took = started.elapsed();
    eprintln!("socket ended: {end:?}, close frame {close:?}");
    wait_for("the upstream to see the socket end", || {
        upstream.websockets_ended() == 1
    })
    .await;
    (took, close)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_switch_protocols_answers_as_usual() {
    let (_upstream, gw, mut b) = logged_in(GatewayBuilder::new).await;
    // The recording upstream answers /api/plain with 200 JSON, not 101.
    assert_eq!(
        open(&gw, Some(&b), Some(&gw.base), "/api/plain")
            .await
            .err(),
        Some(StatusCode::OK)
    );
    // And the gateway keeps serving.
    assert_eq!(b.get("/api/after").await.status, StatusCode::OK);
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `request` (raw HTTP/1.1) to the gateway and returns everything it
/// answers until it closes the connection or goes quiet for 5 s.
async fn raw_exchange(gw: &Gateway, request: &str) -> String {
    let mut conn = TcpStream::connect(gw.addr).await.expect("connect");
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_never_reaches_the_upstream_as_an_upgrade() {
    let upstream = Upstream::start().await;
    let mut public = route("/open", &upstream.url());
    public.auth = "none".into();
    let gw = GatewayBuilder::new(&upstream).route(public).start().await;
    let answer = raw_exchange(
        &gw,
        "GET /open/x HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("Only WebSocket upgrades are forwarded."),
        "{answer}"
    );
    assert!(!answer.contains("101"), "{answer}");
    assert_eq!(upstream.count(), 0, "the h2c request reached the upstream");
}

/// An upstream that answers every request with `status_line` and
/// `headers` (raw), then counts the bytes that arrive afterwards (which
/// would mean the gateway tunnelled).
async fn scripted_upstream(
    answer: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let after = Arc::new(AtomicUsize::new(0));
    let counter = after.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            counter.fetch_add(n, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    (url, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_101_that_does_not_answer_the_websocket_handshake_is_a_502() {
    for answer in [
        // The wrong accept value.
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
        // No accept value at all.
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        // Switching to another protocol than asked for.
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    ] {
        let (url, after) = scripted_upstream(answer).await;
        let upstream = Upstream::start().await;
        let mut public = route("/raw", &url);
        public.auth = "none".into();
        let gw = GatewayBuilder::new(&upstream).route(public).start().await;
        let refused = open(&gw, None, None, "/raw/ws").await.err();
        assert_eq!(refused, Some(StatusCode::BAD_GATEWAY), "{answer}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            after.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "bytes were tunnelled after a bad 101: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_101_with_the_right_accept_is_tunnelled_on_a_public_route() {
    // The recording upstream's own WebSocket endpoint, through a route
    // without sessions: the gateway checks the real accept value and joins.
    let upstream = Upstream::start().await;
    let mut public = route("/open", &upstream.url());
    public.auth = "none".into();
    public.strip_prefix = true;
    let gw = GatewayBuilder::new(&upstream).route(public).start().await;
    let mut socket = open(&gw, None, None, "/open/api/ws")
        .await
        .expect("handshake accepted");
    assert_eq!(echo(&mut socket, "hi").await, "echo: hi");
}
