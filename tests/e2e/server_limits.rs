//! What one client can hold at the edge: request heads must arrive within
//! `server.header_read_timeout`, idle connections close after
//! `server.idle_timeout`, connections beyond `server.max_connections` wait
//! for a slot, bodies to the gateway's own endpoints are bounded by
//! `server.max_body_bytes` (proxied bodies are not), a body the gateway
//! reads whole must arrive within `server.body_read_timeout`, and shutdown
//! still lets a request in flight finish.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use oidc_bff::config::{RawConfig, RawKey, RawRoute};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    ADMIN_TOKEN, Browser, CLIENT_ID, CLIENT_SECRET, GatewayBuilder, KEY_B64, Upstream, duration,
    route, shared,
};

/// Generous bound for "closed by now" on a loaded 2-core machine.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// A route with no session (`auth = "none"`).
fn public(path: &str, upstream: &str) -> RawRoute {
    RawRoute {
        auth: "none".into(),
        ..route(path, upstream)
    }
}

fn limits(header: &str, idle: &str) -> impl FnOnce(&mut RawConfig) {
    let (header, idle) = (duration(header), duration(idle));
    move |c: &mut RawConfig| {
        c.server.header_read_timeout = header;
        c.server.idle_timeout = idle;
    }
}

/// Reads until the peer closes (EOF or reset); `None` if it is still open
/// after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| out)
}

/// One keep-alive `GET` on an open connection; returns the status once
/// the whole response (with a `content-length`) has been read.
async fn get_on(s: &mut TcpStream, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "closed mid-head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.expect("read body");
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_complete_a_request_head_are_closed_after_the_header_timeout() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(limits("1s", "60s"))
        .start()
        .await;
    // Nothing at all; half an HTTP/2 preface (the protocol is still being
    // sniffed); half an HTTP/1 head; a head trickled a byte at a time.
    let partial: [&[u8]; 3] = [
        b"",
        b"PRI * HTTP/2.0\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n",
    ];
    let mut clients = Vec::new();
    for bytes in partial {
        let addr = gw.addr;
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(bytes).await.expect("write");
            let started = Instant::now();
            let closed = closed_within(&mut s, CLOSE_DEADLINE).await;
            (
                String::from_utf8_lossy(bytes).into_owned(),
                closed,
                started.elapsed(),
            )
        }));
    }
    let addr = gw.addr;
    clients.push(tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            .await
            .expect("write");
        let started = Instant::now();
        let trickle = async {
            while s.write_all(b"a").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let closed = tokio::time::timeout(CLOSE_DEADLINE, trickle).await.ok();
        (
            "trickled".to_owned(),
            closed.map(|()| Vec::new()),
            started.elapsed(),
        )
    }));
    for client in clients {
        let (sent, closed, after) = client.await.expect("client");
        assert!(
            closed.is_some(),
            "a connection that sent {sent:?} is still open after {CLOSE_DEADLINE:?}"
        );
        assert!(
            after >= Duration::from_millis(800),
            "{sent:?}: closed after {after:?}, before the header timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(limits("30s", "1s"))
        .start()
        .await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    assert_eq!(get_on(&mut s, "/healthz").await, 200);
    assert_eq!(
        get_on(&mut s, "/healthz").await,
        200,
        "kept alive between requests"
    );
    let idle_from = Instant::now();
    let closed = closed_within(&mut s, CLOSE_DEADLINE).await;
    let after = idle_from.elapsed();
    assert_eq!(
        closed.as_deref(),
        Some(&b""[..]),
        "an idle connection must be closed cleanly within {CLOSE_DEADLINE:?}"
    );
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_a_slot_frees_up() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(limits("30s", "60s"))
        .configure(|c| c.server.max_connections = 2)
        .start()
        .await;
    let mut first = TcpStream::connect(gw.addr).await.expect("connect");
    let mut second = TcpStream::connect(gw.addr).await.expect("connect");
    assert_eq!(get_on(&mut first, "/healthz").await, 200);
    assert_eq!(get_on(&mut second, "/healthz").await, 200);
    // The kernel completes the handshake; the gateway does not accept it.
    let mut third = TcpStream::connect(gw.addr).await.expect("connect");
    let waiting =
        tokio::time::timeout(Duration::from_secs(1), get_on(&mut third, "/healthz")).await;
    assert!(
        waiting.is_err(),
        "a third connection was served while two were open"
    );
    drop(first);
    let served = tokio::time::timeout(CLOSE_DEADLINE, async {
        let mut buf = [0u8; 12];
        third.read_exact(&mut buf).await.expect("response");
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .expect("the waiting connection is served once a slot frees up");
    assert_eq!(served, "HTTP/1.1 200");
    assert_eq!(get_on(&mut second, "/healthz").await, 200);
}

/// A `POST` of `len` bytes (declared, or chunked when `chunked`) as
/// `(status, JSON body)`.
async fn post(
    url: &str,
    content_type: &str,
    len: usize,
    chunked: bool,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .post(url)
        .header("content-type", content_type)
        .header("x-csrf", "1");
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    req = if chunked {
        let chunks = futures_util::stream::iter(
            (0..len / 4096).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 4096])),
        );
        req.body(reqwest::Body::wrap_stream(chunks))
    } else {
        req.body(vec![b'a'; len])
    };
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_to_the_gateways_own_endpoints_get_413_while_proxied_bodies_stream() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.max_body_bytes = 64 * 1024)
        .route(public("/public", &upstream.url()))
        .admin()
        .start()
        .await;
    let form = "application/x-www-form-urlencoded";
    let admin = format!(
        "http://{}/admin/sessions/revoke",
        gw.admin.expect("admin listener")
    );
    let cases = [
        (gw.url("/auth/backchannel-logout"), form, false, None),
        (gw.url("/auth/backchannel-logout"), form, true, None),
        (gw.url("/auth/logout"), form, false, None),
        (gw.url("/auth/logout"), form, true, None),
        (admin.clone(), "application/json", false, Some(ADMIN_TOKEN)),
        (admin, "application/json", true, Some(ADMIN_TOKEN)),
    ];
    for (url, content_type, chunked, bearer) in cases {
        let (status, body) = post(&url, content_type, 256 * 1024, chunked, bearer).await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{url} (chunked: {chunked}): {body}"
        );
        assert_eq!(body["error"], "payload_too_large", "{url}: {body}");
    }
    // Within the limit, the endpoint itself answers (a refused token).
    let (status, body) = post(
        &gw.url("/auth/backchannel-logout"),
        form,
        8 * 1024,
        false,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A proxied route streams a body far over the limit to its upstream.
    let (status, body) = post(
        &gw.url("/public/upload"),
        "application/octet-stream",
        4 * 1024 * 1024,
        true,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["body_len"], 4 * 1024 * 1024);
}

/// Sends `head` (which declares a body of 100 bytes) and 10 bytes of the
/// body, then nothing more: the gateway's answer, once it has closed the
/// connection (`None`: still open after [`CLOSE_DEADLINE`]).
async fn stop_mid_body(addr: SocketAddr, head: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(&[b'a'; 10]).await.expect("write body");
    closed_within(&mut s, CLOSE_DEADLINE)
        .await
        .map(|out| String::from_utf8_lossy(&out).into_owned())
}

/// A client that sends its head promptly and then stops mid-body holds
/// neither a handler nor its connection: a body the gateway reads itself
/// gets `server.body_read_timeout`, then 408 and the connection closes
/// (before, the idle timeout waited for the request in flight for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stopping_midway_to_the_gateways_own_endpoints_is_a_408_and_closes_the_connection() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.body_read_timeout = duration("1s"))
        .admin()
        .start()
        .await;
    let admin = gw.admin.expect("admin listener");
    let cases = [
        (
            gw.addr,
            "/auth/backchannel-logout",
            "application/x-www-form-urlencoded",
            "",
        ),
        (
            gw.addr,
            "/auth/logout",
            "application/x-www-form-urlencoded",
            "",
        ),
        (
            admin,
            "/admin/sessions/revoke",
            "application/json",
            "Authorization: Bearer ",
        ),
    ];
    for (addr, path, content_type, auth) in cases {
        let auth = if auth.is_empty() {
            String::new()
        } else {
            format!("{auth}{ADMIN_TOKEN}\r\n")
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
             {auth}Content-Length: 100\r\n\r\n"
        );
        let started = Instant::now();
        let answer = stop_mid_body(addr, &head)
            .await
            .unwrap_or_else(|| panic!("{path}: still open after {CLOSE_DEADLINE:?}"));
        assert!(
            answer.starts_with("HTTP/1.1 408 "),
            "{path} after {:?}: {answer}",
            started.elapsed()
        );
        assert!(
            answer.contains("\"error\":\"request_timeout\""),
            "{path}: {answer}"
        );
    }
}

/// The same on a session route whose small body the gateway keeps to send
/// again with a renewed token: read before anything goes upstream (so the
/// route's timeout does not bound it), it gets `server.body_read_timeout`,
/// then 408; the truncated request never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_proxied_body_stopping_midway_is_a_408_and_never_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.body_read_timeout = duration("1s"))
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let head = format!(
        "POST /api/upload HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nX-CSRF: 1\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n",
        gw.addr,
        b.cookie_header()
    );
    let answer = stop_mid_body(gw.addr, &head)
        .await
        .unwrap_or_else(|| panic!("still open after {CLOSE_DEADLINE:?}"));
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert_eq!(upstream.count(), 0, "nothing was forwarded");
}

/// A client that asks for a large download and then reads nothing holds
/// its connection only until its writes have been blocked for
/// `server.idle_timeout`: then the connection is closed, the download cut
/// short (before, it stayed open for ever, with its slot and the upstream
/// connection behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_response_is_cut_off_after_the_idle_timeout() {
    /// 2000 × 64 KiB from the upstream, far more than socket buffers hold.
    const TOTAL: usize = 2000 * 65536;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(limits("10s", "2s"))
        .route(public("/public", &upstream.url()))
        .start()
        .await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut s = socket.connect(gw.addr).await.expect("connect");
    let req = format!(
        "GET /public/2000/stream HTTP/1.1\r\nHost: {}\r\n\r\n",
        gw.addr
    );
    s.write_all(req.as_bytes()).await.expect("write");
    // Not reading: the gateway's writes block once the buffers are full;
    // after twice the idle timeout it has given up on them.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    let ended = tokio::time::timeout(CLOSE_DEADLINE * 3, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "still open after reading {got} bytes");
    assert!(
        got < TOTAL / 2,
        "the connection was cut long before the download's end: read {got} of {TOTAL} bytes"
    );
}

/// An upstream whose every answer takes `delay`.
async fn slow_upstream(delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        "finished"
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_but_lets_a_request_in_flight_finish() {
    let slow = slow_upstream(Duration::from_millis(1500)).await;
    let mut raw = RawConfig::default();
    raw.oidc.issuer = Some(shared().provider.issuer.clone());
    raw.oidc.client_id = Some(CLIENT_ID.to_owned());
    raw.oidc.client_secret = Some(CLIENT_SECRET.to_owned());
    raw.session.encryption_keys = vec![RawKey {
        id: "t1".into(),
        key: Some(KEY_B64.into()),
        key_file: None,
    }];
    raw.store.kind = "memory".into();
    raw.log.access_log = false;
    raw.routes.push(public("/slow", &format!("http://{slow}")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    raw.server.listen = addr.to_string();
    raw.server.public_url = Some(format!("http://{addr}"));
    let config = oidc_bff::config::validate(&raw).unwrap_or_else(|e| panic!("{e}"));
    let state = oidc_bff::AppState::new(config).expect("state");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(oidc_bff::serve(state, listener, async {
        let _ = stopped.await;
    }));
    let in_flight = tokio::spawn(reqwest::get(format!("http://{addr}/slow/x")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    let r = in_flight
        .await
        .expect("task")
        .expect("the request in flight gets its answer");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.expect("body"), "finished");
    tokio::time::timeout(CLOSE_DEADLINE, server)
        .await
        .expect("serving ends once the request finished")
        .expect("task")
        .expect("serve");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// Browsers speak HTTP/1.1 or, over TLS in front, HTTP/2; a fronting proxy
/// may speak HTTP/2 with prior knowledge (h2c). Both are served on one
/// listener: a connection that opens with the HTTP/2 preface gets HTTP/2,
/// any other HTTP/1, whether the preface arrives whole or in pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_and_http1_are_served_on_one_listener() {
    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioExecutor;

    let upstream = Upstream::start().await;
    let up = upstream.url();
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.routes.push(public("/open", &up)))
        .start()
        .await;
    for split_preface in [false, true] {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        if split_preface {
            // The preface's first bytes alone, then the rest from hyper.
            stream
                .write_all(b"PRI * HTTP/2.0\r\n")
                .await
                .expect("write");
            stream.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let io = PartialPreface {
            stream,
            skip: if split_preface { 16 } else { 0 },
        };
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("an HTTP/2 handshake");
        tokio::spawn(conn);
        for path in ["/healthz", "/open/x", "/open/y"] {
            let req = http::Request::get(format!("http://{}{path}", gw.addr))
                .body(Empty::<Bytes>::new())
                .expect("request");
            let resp = send.send_request(req).await.expect("an answer");
            assert_eq!(resp.status(), 200, "{path} (split: {split_preface})");
            assert_eq!(resp.version(), http::Version::HTTP_2);
            resp.into_body().collect().await.expect("body");
        }
    }
    assert_eq!(upstream.count(), 4);
    // HTTP/1 on the same listener, including a request line that starts
    // like the preface.
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    assert_eq!(get_on(&mut s, "/healthz").await, 200);
    s.write_all(b"PUT /open/z HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
        .await
        .expect("write");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.expect("read");
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// A client stream whose first `skip` bytes of the HTTP/2 preface were
/// already written by the test: hyper's own copy of them is dropped.
struct PartialPreface {
    stream: TcpStream,
    skip: usize,
}

impl hyper::rt::Read for PartialPreface {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut io = hyper_util::rt::TokioIo::new(&mut self.stream);
        std::pin::Pin::new(&mut io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PartialPreface {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let skip = self.skip.min(buf.len());
        if skip > 0 {
            self.skip -= skip;
            return std::task::Poll::Ready(Ok(skip));
        }
        let mut io = hyper_util::rt::TokioIo::new(&mut self.stream);
        std::pin::Pin::new(&mut io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut io = hyper_util::rt::TokioIo::new(&mut self.stream);
        std::pin::Pin::new(&mut io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut io = hyper_util::rt::TokioIo::new(&mut self.stream);
        std::pin::Pin::new(&mut io).poll_shutdown(cx)
    }
}

/// Sends `raw` on a new connection and reads the answer until the gateway
/// closes: its status, its headers (names lower-cased) and its body.
async fn unreadable_answer(addr: SocketAddr, raw: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let out = closed_within(&mut s, CLOSE_DEADLINE)
        .await
        .expect("the connection is closed after the answer");
    let text = String::from_utf8(out).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_the_parser_refuses_gets_the_gateways_answer_not_an_empty_one() {
    let upstream = Upstream::start().await;
    // The builder's default route is `/api` (a session route).
    let gw = GatewayBuilder::new(&upstream)
        .route(public("/public", &upstream.url()))
        .start()
        .await;
    let big = "a".repeat(40 * 1024);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let api = [
        // A header folded over two lines (obs-fold, RFC 9112 §5.2).
        (
            "GET /public/x HTTP/1.1\r\nHost: gateway\r\nX-A: a\r\n b\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (
            "GET /public/x HTTP/1.1\r\nHost: gateway\r\nX A: a\r\n\r\n".into(),
            400,
            "bad_request",
        ),
        (
            "GET /public/x HTTP/7.1\r\nHost: gateway\r\n\r\n".into(),
            400,
            "bad_request",
        ),
        (
            "\u{16}\u{3}\u{1}\0\u{5}\u{1}\0\0\u{1}\u{3}\u{3}".into(),
            400,
            "bad_request",
        ),
        (
            format!("GET /api/x HTTP/1.1\r\nHost: gateway\r\nCookie: {big}\r\n\r\n"),
            431,
            "request_head_too_large",
        ),
        (
            format!("GET /public/x HTTP/1.1\r\nHost: gateway\r\n{many}\r\n"),
            431,
            "request_head_too_large",
        ),
    ];
    for (raw, status, code) in api {
        let what = &raw[..raw.len().min(60)];
        let (got, headers, body) = unreadable_answer(gw.addr, raw.as_bytes()).await;
        assert_eq!(got, status, "{what:?}: {body}");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some("application/json"), "{what:?}");
        assert_eq!(header("connection"), Some("close"), "{what:?}");
        assert_eq!(
            header("x-content-type-options"),
            Some("nosniff"),
            "{what:?}"
        );
        assert_eq!(
            header("content-length"),
            Some(body.len().to_string().as_str())
        );
        let json: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(json["error"], code, "{what:?}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A browser's navigation (its cookies grown past the limit) gets the
    // error page.
    let navigation = format!(
        "GET /api/page HTTP/1.1\r\nHost: gateway\r\nAccept: text/html,*/*\r\nSec-Fetch-Mode: navigate\r\nCookie: {big}\r\n\r\n"
    );
    let (status, headers, body) = unreadable_answer(gw.addr, navigation.as_bytes()).await;
    assert_eq!(status, 431);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-type" && v.starts_with("text/html")),
        "{headers:?}"
    );
    assert!(headers.iter().any(|(n, _)| n == "content-security-policy"));
    assert!(body.contains("<title>Request too large</title>"), "{body}");
    assert!(upstream.seen().is_empty(), "nothing was forwarded");
    // After a request that was read, the same connection's next head that
    // is not still gets a 400 (hyper's own, without a body).
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    assert_eq!(get_on(&mut s, "/healthz").await, 200);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX: a\r\n b\r\n\r\n")
        .await
        .expect("write");
    let rest = closed_within(&mut s, CLOSE_DEADLINE).await.expect("closed");
    assert!(
        rest.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

/// HTTP/2 WebSockets (extended CONNECT, RFC 8441) are not offered: the
/// proxy tunnels HTTP/1.1 upgrades only, so a client offered them would
/// open a WebSocket that is then refused (405), where one not offered them
/// falls back to HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_not_offered_websockets_over_extended_connect() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp)
        .await
        .expect("an HTTP/2 handshake");
    tokio::spawn(conn);
    let mut send = send.ready().await.expect("ready");
    let req = http::Request::get(format!("http://{}/healthz", gw.addr))
        .body(())
        .expect("request");
    let (answer, _) = send.send_request(req, true).expect("sent");
    // The gateway's SETTINGS have been applied once it has answered.
    assert_eq!(answer.await.expect("an answer").status(), 200);
    assert!(!send.is_extended_connect_protocol_enabled());
}
