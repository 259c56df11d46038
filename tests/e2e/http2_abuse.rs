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
use crate::harness::{Gateway, GatewayBuilder, Upstream, route};

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
