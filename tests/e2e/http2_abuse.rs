//! HTTP/2 clients that abuse the protocol to make the gateway work for
//! nothing (RFC 9113 §10.5): requests reset as soon as they are sent
//! (rapid reset, CVE-2023-44487), floods of control frames, header blocks
//! that never end (CVE-2024-27316), HPACK bombs, streams that send their
//! body a byte at a time or not at all. Each is bounded: the connection
//! gets a GOAWAY (ENHANCE_YOUR_CALM or a protocol error) or its streams
//! their deadline, and the upstream sees a bounded number of requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oidc_bff::config::RawRoute;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::h2_raw::*;
use crate::harness::{Gateway, GatewayBuilder, Upstream, duration, route};

/// Generous bound for "closed by now" on a loaded 2-core machine.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// A route with no session (`auth = "none"`).
fn public(path: &str, upstream: &str) -> RawRoute {
    RawRoute {
        auth: "none".into(),
        ..route(path, upstream)
    }
}

/// A raw HTTP/1 upstream that counts the request heads it receives (as
/// soon as they arrive, whether or not anyone waits for the answer) and
/// answers each with a short 200.
async fn counting_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        counted.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), heads)
}

/// A gateway with `/open` (no session) to a [`counting_upstream`] and
/// `streams` as `server.http2_max_concurrent_streams`.
async fn gateway_with_public_route(streams: u32) -> (Gateway, Arc<AtomicUsize>, Upstream) {
    let upstream = Upstream::start().await;
    let (raw, heads) = counting_upstream().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.http2_max_concurrent_streams = streams)
        .route(public("/open", &raw))
        .start()
        .await;
    (gw, heads, upstream)
}

/// `count` requests for `/open/x` from stream `first` on, as one write.
fn requests(first: u32, count: u32) -> Vec<u8> {
    let block = get_block("/open/x", &[]);
    (0..count)
        .flat_map(|i| frame(HEADERS, END_HEADERS | END_STREAM, first + 2 * i, &block))
        .collect()
}

/// RST_STREAM(CANCEL) for the same streams.
fn resets(first: u32, count: u32) -> Vec<u8> {
    (0..count)
        .flat_map(|i| frame(RST_STREAM, 0, first + 2 * i, &CANCEL.to_be_bytes()))
        .collect()
}

/// Rapid reset (CVE-2023-44487) both ways: resets that arrive before the
/// gateway took the stream are h2's (GOAWAY ENHANCE_YOUR_CALM after 20);
/// resets of streams already taken free their slots at once, so the
/// stream limit did not bound them: ten requests at a time, each reset
/// 5 ms later, reached the upstream 9,600 times in 5 s on one connection
/// with no answer read. Now a client may cancel
/// `http2_max_concurrent_streams` requests at once (and that many per
/// 10 s after): beyond that its connection gets a GOAWAY and is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_its_requests_is_sent_away_before_the_upstream_sees_more_than_its_stream_limit()
 {
    const STREAMS: u32 = 20;
    // (a) Each request reset in the same write: h2's own limit.
    let (gw, heads, _up) = gateway_with_public_route(STREAMS).await;
    let RawH2 {
        mut read,
        mut write,
    } = RawH2::connect(gw.addr).await;
    let reader = tokio::spawn(async move { read_until_closed(&mut read, CLOSE_DEADLINE).await });
    for batch in 0..100 {
        let first = 1 + 2 * 100 * batch;
        let mut bytes = requests(first, 100);
        bytes.extend(resets(first, 100));
        if write.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let got = reader.await.expect("reader");
    assert!(got.closed, "still open: {got:?}");
    assert_eq!(got.goaway, Some(ENHANCE_YOUR_CALM), "{got:?}");
    assert!(
        heads.load(Ordering::SeqCst) <= 2 * STREAMS as usize,
        "{got:?}"
    );

    // (b) Each batch reset a moment later, once the gateway took it.
    let (gw, heads, _up) = gateway_with_public_route(STREAMS).await;
    let RawH2 {
        mut read,
        mut write,
    } = RawH2::connect(gw.addr).await;
    let reader =
        tokio::spawn(async move { read_until_closed(&mut read, Duration::from_secs(20)).await });
    let started = Instant::now();
    let mut first = 1;
    while started.elapsed() < Duration::from_secs(5) {
        if write.write_all(&requests(first, 10)).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if write.write_all(&resets(first, 10)).await.is_err() {
            break;
        }
        first += 20;
    }
    let sent = (first - 1) / 2;
    let got = reader.await.expect("reader");
    let reached = heads.load(Ordering::SeqCst);
    assert!(got.closed, "still open after {sent} requests: {got:?}");
    assert!(got.goaway.is_some(), "no GOAWAY: {got:?}");
    assert!(
        reached <= 3 * STREAMS as usize,
        "{reached} of {sent} cancelled requests reached the upstream"
    );
}

/// The budget is for abuse only: a client that cancels fewer requests
/// than its stream limit (a page navigated away from) keeps its
/// connection, and its next request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancelling_a_few_requests_keeps_its_connection() {
    const STREAMS: u32 = 20;
    let (gw, heads, _up) = gateway_with_public_route(STREAMS).await;
    let RawH2 {
        mut read,
        mut write,
    } = RawH2::connect(gw.addr).await;
    write
        .write_all(&requests(1, STREAMS - 2))
        .await
        .expect("write");
    let deadline = Instant::now() + CLOSE_DEADLINE;
    while heads.load(Ordering::SeqCst) < (STREAMS - 2) as usize {
        assert!(
            Instant::now() < deadline,
            "the requests never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write
        .write_all(&resets(1, STREAMS - 2))
        .await
        .expect("write");
    let next = 1 + 2 * STREAMS;
    let block = get_block("/healthz", &[]);
    write
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, next, &block))
        .await
        .expect("write");
    let got = read_until_closed(&mut read, Duration::from_secs(2)).await;
    assert!(!got.closed, "{got:?}");
    assert_eq!(got.goaway, None, "{got:?}");
    assert!(got.responses.contains(&next), "{got:?}");
}

/// A raw HTTP/1 upstream that answers each request as soon as its head
/// has come, reading none of its body; counts its connections and those
/// the gateway has closed.
async fn eager_upstream() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (o, c) = (opened.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            o.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let mut answered = false;
                while let Ok(n @ 1..) = s.read(&mut chunk).await {
                    buf.extend_from_slice(&chunk[..n]);
                    if !answered && buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        answered = true;
                        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        let _ = s.write_all(ok.as_bytes()).await;
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (format!("http://{addr}"), opened, closed)
}

/// An HTTP/2 connection to `addr` (the `h2` crate as the client), whose
/// end is reported on the returned task: how long after the handshake.
async fn h2_connection(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Duration>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("handshake");
    let opened = Instant::now();
    let ended = tokio::spawn(async move {
        let _ = conn.await;
        opened.elapsed()
    });
    (send.ready().await.expect("ready"), ended)
}

/// A request body that streams to the upstream (not kept whole) and goes
/// silent is cut after `server.body_read_timeout` of silence: 408 while
/// the upstream still waits for it (before, the route's timeout, 60 s
/// here, then 504), over HTTP/1 and on each HTTP/2 stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_that_goes_silent_is_a_408_after_the_body_read_timeout() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.body_read_timeout = duration("1s"))
        .route(RawRoute {
            timeout: duration("60s"),
            ..public("/open", &upstream.url())
        })
        .start()
        .await;
    // HTTP/1, chunked: part of a chunk, then nothing.
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    s.write_all(
        b"POST /open/upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nabc",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(CLOSE_DEADLINE, s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer after {CLOSE_DEADLINE:?}");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // HTTP/2: ten streams, each a byte of its body and then nothing.
    let (mut send, _ended) = h2_connection(gw.addr).await;
    let mut answers = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let req = http::Request::post(format!("http://{}/open/upload", gw.addr))
            .body(())
            .expect("request");
        send = send.ready().await.expect("ready");
        let (resp, mut body) = send.send_request(req, false).expect("send");
        body.send_data(bytes::Bytes::from_static(b"a"), false)
            .expect("data");
        bodies.push(body);
        answers.push(resp);
    }
    for resp in answers {
        let resp = tokio::time::timeout(CLOSE_DEADLINE, resp)
            .await
            .expect("an answer in time")
            .expect("an answer");
        assert_eq!(resp.status(), 408);
    }
    assert_eq!(upstream.count(), 0, "no truncated body was taken as whole");
}

/// A request body still coming after its answer (the upstream answered
/// without reading it) is not forwarded once the answer is done: the
/// browser's HTTP/1 connection closes with its answer, its HTTP/2
/// connection once idle, and the upstream connection is closed. Before,
/// a client that sent a byte and then nothing, or a byte now and then,
/// held both connections (and a `max_connections` slot) for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_still_coming_after_its_answer_holds_neither_connection() {
    let upstream = Upstream::start().await;
    let (eager, opened, closed) = eager_upstream().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.idle_timeout = duration("1s"))
        .route(public("/eager", &eager))
        .start()
        .await;
    for trickle in [false, true] {
        // HTTP/2: the answer, then the connection closes once idle.
        let (mut send, ended) = h2_connection(gw.addr).await;
        let req = http::Request::post(format!("http://{}/eager/x", gw.addr))
            .body(())
            .expect("request");
        let (resp, mut body) = send.send_request(req, false).expect("send");
        body.send_data(bytes::Bytes::from_static(b"a"), false)
            .expect("data");
        let resp = resp.await.expect("an answer");
        assert_eq!(resp.status(), 200);
        let trickler = tokio::spawn(async move {
            while trickle
                && body
                    .send_data(bytes::Bytes::from_static(b"a"), false)
                    .is_ok()
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            std::future::pending::<()>().await;
            drop(body);
        });
        let after = tokio::time::timeout(CLOSE_DEADLINE, ended).await;
        trickler.abort();
        assert!(after.is_ok(), "HTTP/2 (trickle: {trickle}): still open");

        // HTTP/1: the connection closes with its answer.
        let mut s = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        s.write_all(b"POST /eager/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\na")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(CLOSE_DEADLINE, async {
            let mut buf = [0u8; 1024];
            loop {
                if trickle {
                    let _ = s.write_all(b"a").await;
                }
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => return,
                    Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
        })
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            read.is_ok(),
            "HTTP/1 (trickle: {trickle}): still open: {answer}"
        );
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    }
    let deadline = Instant::now() + CLOSE_DEADLINE;
    while closed.load(Ordering::SeqCst) < opened.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "upstream connections still open: {} of {}",
            opened.load(Ordering::SeqCst) - closed.load(Ordering::SeqCst),
            opened.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a flood sends: a first part, then `unit` over and over.
struct Flood {
    name: &'static str,
    first: Vec<u8>,
    unit: Vec<u8>,
    times: usize,
    /// The GOAWAY error code expected, or `None`: closed by a deadline.
    goaway: Option<u32>,
}

/// Sends `flood` while reading everything the gateway answers; what it
/// answered, once it closed the connection (or after 20 s).
async fn run_flood(addr: std::net::SocketAddr, flood: &Flood) -> Received {
    let RawH2 {
        mut read,
        mut write,
    } = RawH2::connect(addr).await;
    let reader =
        tokio::spawn(async move { read_until_closed(&mut read, Duration::from_secs(20)).await });
    let per = flood.times.min(1000);
    let batch: Vec<u8> = (0..per).flat_map(|_| flood.unit.clone()).collect();
    if write.write_all(&flood.first).await.is_ok() {
        for _ in 0..flood.times / per {
            if write.write_all(&batch).await.is_err() {
                break;
            }
        }
    }
    reader.await.expect("reader")
}

/// Frame floods and hostile header blocks end with a GOAWAY naming the
/// abuse (h2's limits, kept by the gateway's settings: a CONTINUATION
/// flood, CVE-2024-27316; an HPACK bomb, one table entry referenced
/// thousands of times; empty DATA frames; a window update of zero or past
/// 2^31-1); floods of frames that cost little (SETTINGS, PING, PRIORITY)
/// start no request, so the connection is closed at the header deadline
/// however busy it keeps the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_floods_and_hpack_bombs_end_with_a_goaway_or_at_the_header_deadline() {
    let upstream = Upstream::start().await;
    let (raw, heads) = counting_upstream().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.header_read_timeout = duration("2s"))
        .route(public("/open", &raw))
        .start()
        .await;
    let mut bomb = get_block("/open/x", &[]);
    // `x: v…` added to the dynamic table (index 62), then referenced.
    bomb.extend([0x40, 1, b'x', 100]);
    bomb.extend([b'v'; 100]);
    bomb.extend([0xbe; 3000]);
    let floods = [
        Flood {
            name: "CONTINUATION frames that never end the block",
            first: frame(HEADERS, 0, 1, &get_block("/open/x", &[])),
            unit: frame(CONTINUATION, 0, 1, &[]),
            times: 10_000,
            goaway: Some(ENHANCE_YOUR_CALM),
        },
        Flood {
            name: "an HPACK bomb",
            first: frame(HEADERS, END_HEADERS | END_STREAM, 1, &bomb),
            unit: Vec::new(),
            times: 1,
            goaway: Some(ENHANCE_YOUR_CALM),
        },
        Flood {
            name: "empty DATA frames",
            first: frame(
                HEADERS,
                END_HEADERS,
                1,
                &request_block("POST", "/open/x", &[]),
            ),
            unit: frame(DATA, 0, 1, &[]),
            times: 10_000,
            goaway: Some(ENHANCE_YOUR_CALM),
        },
        Flood {
            name: "a connection window update of zero",
            first: Vec::new(),
            unit: frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
            times: 1,
            goaway: Some(PROTOCOL_ERROR),
        },
        Flood {
            name: "connection window updates past 2^31-1",
            first: Vec::new(),
            unit: frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
            times: 2,
            goaway: Some(FLOW_CONTROL_ERROR),
        },
        Flood {
            name: "SETTINGS",
            first: Vec::new(),
            unit: frame(SETTINGS, 0, 0, &[]),
            times: 100_000,
            goaway: None,
        },
        Flood {
            name: "PING",
            first: Vec::new(),
            unit: frame(PING, 0, 0, &[0; 8]),
            times: 100_000,
            goaway: None,
        },
        Flood {
            name: "PRIORITY",
            first: Vec::new(),
            unit: frame(PRIORITY, 0, 3, &[0, 0, 0, 1, 16]),
            times: 100_000,
            goaway: None,
        },
    ];
    for flood in &floods {
        let started = Instant::now();
        let got = run_flood(gw.addr, flood).await;
        let name = flood.name;
        assert!(got.closed, "{name}: still open after 20 s: {got:?}");
        match flood.goaway {
            Some(code) => assert_eq!(got.goaway, Some(code), "{name}: {got:?}"),
            None => assert!(
                started.elapsed() >= Duration::from_millis(1800)
                    && started.elapsed() < CLOSE_DEADLINE,
                "{name}: closed after {:?}, not at the header deadline",
                started.elapsed()
            ),
        }
        assert!(got.responses.is_empty(), "{name}: {got:?}");
    }
    assert_eq!(
        heads.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

/// A client that floods frames whose answers it never reads: the gateway
/// stops reading once its answers back up (h2 answers a SETTINGS or PING
/// before reading on), holds no more than the socket buffers, and drops
/// the connection once its writes have been blocked for
/// `server.idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_whose_answers_are_never_read_is_dropped_after_the_idle_timeout() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.server.idle_timeout = duration("2s");
            c.server.header_read_timeout = duration("30s");
        })
        .start()
        .await;
    let RawH2 {
        read: _unread,
        mut write,
    } = RawH2::connect(gw.addr).await;
    let batch: Vec<u8> = (0..1000).flat_map(|_| frame(SETTINGS, 0, 0, &[])).collect();
    let started = Instant::now();
    let failed = tokio::time::timeout(Duration::from_secs(20), async {
        while write.write_all(&batch).await.is_ok() {}
    })
    .await;
    assert!(
        failed.is_ok(),
        "the gateway still reads after {:?}",
        started.elapsed()
    );
}

/// Reads frames off `s` until a HEADERS frame (a request); its stream id.
async fn next_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<u32> {
    let mut chunk = [0u8; 16384];
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            buf.drain(..9 + len);
            if kind == HEADERS {
                return Some(stream);
            }
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A raw HTTP/2 upstream (prior knowledge) that answers every request
/// on stream `id` with the frames `answer(id)`.
async fn hostile_h2_upstream(answer: fn(u32) -> Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut pre = [0u8; 24];
                if s.read_exact(&mut pre).await.is_err() {
                    return;
                }
                let _ = s.write_all(&frame(SETTINGS, 0, 0, &[])).await;
                let mut buf = Vec::new();
                while let Some(id) = next_request(&mut s, &mut buf).await {
                    let _ = s.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                    if s.write_all(&answer(id)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// A response header block: `:status` and `fields`, all literals.
fn status_block(status: &str, fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    b.push(0x08); // literal without indexing, name :status (static 8)
    hpack_int(&mut b, 0, 7, status.len());
    b.extend_from_slice(status.as_bytes());
    for (n, v) in fields {
        hpack_literal(&mut b, n, v);
    }
    b
}

/// `block` as HEADERS and as many CONTINUATION frames as it takes.
fn header_frames(id: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = block.chunks(16_000).collect();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let mut flags = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        if i == 0 && end_stream {
            flags |= END_STREAM;
        }
        out.extend(frame(kind, flags, id, c));
    }
    out
}

/// An `upstream_http2` upstream (h2c) is outside the trust boundary too:
/// a header list over `proxy.max_response_header_bytes` (100 fields of
/// 1 KB), a CONTINUATION flood, a status of four digits are 502; a head
/// that never ends is the route's 504; five hundred `103`s before the
/// answer are dropped and the answer passes; a `content-length` that
/// lies either way never reaches the browser as a complete answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http2_upstream_heads_are_a_502_or_504_and_never_pass_through() {
    type Answer = fn(u32) -> Vec<u8>;
    let refused: [(&str, Answer, u16, &str); 4] = [
        (
            "100 KB of header list",
            |id| {
                let big = [b'x'; 1000];
                let fields: Vec<(&[u8], &[u8])> =
                    (0..100).map(|_| (&b"x-filler"[..], &big[..])).collect();
                header_frames(id, &status_block("200", &fields), true)
            },
            502,
            "upstream_unavailable",
        ),
        (
            "a CONTINUATION flood",
            |id| {
                let mut v = frame(HEADERS, 0, id, &status_block("200", &[]));
                for _ in 0..10_000 {
                    v.extend(frame(CONTINUATION, 0, id, &[]));
                }
                v
            },
            502,
            "upstream_unavailable",
        ),
        (
            "a status of four digits",
            |id| header_frames(id, &status_block("2000", &[]), true),
            502,
            "upstream_unavailable",
        ),
        (
            "a head that never ends",
            |id| frame(HEADERS, 0, id, &status_block("200", &[])),
            504,
            "upstream_timeout",
        ),
    ];
    let upstream = Upstream::start().await;
    let gateway_to = async |answer: Answer| {
        let url = hostile_h2_upstream(answer).await;
        GatewayBuilder::new(&upstream)
            .route(RawRoute {
                upstream_http2: true,
                timeout: duration("2s"),
                ..public("/h2", &url)
            })
            .start()
            .await
    };
    for (name, answer, status, error) in refused {
        let gw = gateway_to(answer).await;
        let r = reqwest::get(gw.url("/h2/x")).await.expect("an answer");
        assert_eq!(r.status().as_u16(), status, "{name}");
        assert!(!r.headers().contains_key("x-filler"), "{name}");
        let body: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(body["error"], error, "{name}: {body}");
    }

    // The bound is the key's: 40 KB of header list passes by default,
    // and is refused with the key at 16 KiB.
    let forty: Answer = |id| {
        let big = [b'x'; 1000];
        let fields: Vec<(&[u8], &[u8])> = (0..40).map(|_| (&b"x-filler"[..], &big[..])).collect();
        header_frames(id, &status_block("200", &fields), true)
    };
    let gw = gateway_to(forty).await;
    let r = reqwest::get(gw.url("/h2/x")).await.expect("an answer");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get_all("x-filler").iter().count(), 40);
    let url = hostile_h2_upstream(forty).await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.proxy.max_response_header_bytes = 16 * 1024)
        .route(RawRoute {
            upstream_http2: true,
            ..public("/h2", &url)
        })
        .start()
        .await;
    let r = reqwest::get(gw.url("/h2/x")).await.expect("an answer");
    assert_eq!(r.status(), 502);

    let gw = gateway_to(|id| {
        let mut v = Vec::new();
        let hint = status_block("103", &[(b"link", b"</a.css>; rel=preload")]);
        for _ in 0..500 {
            v.extend(frame(HEADERS, END_HEADERS, id, &hint));
        }
        let ok = status_block("200", &[(b"content-length", b"2")]);
        v.extend(frame(HEADERS, END_HEADERS, id, &ok));
        v.extend(frame(DATA, END_STREAM, id, b"ok"));
        v
    })
    .await;
    let r = reqwest::get(gw.url("/h2/x")).await.expect("an answer");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "ok");

    let lies: [(&str, Answer); 2] = [
        ("longer", |id| {
            let head = status_block("200", &[(b"content-length", b"10")]);
            let mut v = frame(HEADERS, END_HEADERS, id, &head);
            v.extend(frame(DATA, END_STREAM, id, b"ok"));
            v
        }),
        ("shorter", |id| {
            let head = status_block("200", &[(b"content-length", b"1")]);
            let mut v = frame(HEADERS, END_HEADERS, id, &head);
            v.extend(frame(DATA, END_STREAM, id, b"ok"));
            v
        }),
    ];
    for (name, answer) in lies {
        let gw = gateway_to(answer).await;
        let whole = match reqwest::get(gw.url("/h2/x")).await {
            Ok(r) => r.bytes().await.ok(),
            Err(_) => None,
        };
        assert_eq!(
            whole, None,
            "a length that lies ({name}) came through whole"
        );
    }
}
