//! The upstream client's connection pool for `http://` upstreams: kept-alive
//! connections are reused, a connection the upstream closed is never used
//! (no request fails for it), and idle connections are closed after
//! `proxy.pool_idle_timeout`. The upstream here is a raw TCP server that
//! counts the connections it accepts and sees closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oidc_bff::config::RawConfig;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{BrowserConnection, GatewayBuilder, Upstream, duration, public};

/// How the raw upstream treats a connection after each response.
#[derive(Clone, Copy, PartialEq)]
enum AfterResponse {
    /// Keeps it open for the next request.
    KeepAlive,
    /// Says `Connection: close` and closes it.
    SayCloseAndClose,
    /// Closes it without a word once it has been idle for this long, as
    /// a server whose keep-alive timeout is shorter than the gateway's
    /// `pool_idle_timeout` does.
    CloseWhenIdle(Duration),
}

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    requests: AtomicUsize,
    /// Connections the gateway closed (the upstream read end of file
    /// between requests).
    closed_by_gateway: AtomicUsize,
}

/// A minimal HTTP/1.1 upstream answering every request `200 ok`.
async fn raw_upstream(after: AfterResponse) -> (String, Arc<Counts>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request head (the tests send no bodies).
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let read = stream.read(&mut chunk);
                        let read = match after {
                            AfterResponse::CloseWhenIdle(idle) if buf.is_empty() => {
                                match tokio::time::timeout(idle, read).await {
                                    Ok(read) => read,
                                    Err(_) => {
                                        let _ = stream.shutdown().await;
                                        return;
                                    }
                                }
                            }
                            _ => read.await,
                        };
                        match read {
                            Ok(0) | Err(_) => {
                                if buf.is_empty() {
                                    c.closed_by_gateway.fetch_add(1, Ordering::SeqCst);
                                }
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .expect("head end")
                        + 4;
                    buf.drain(..end);
                    c.requests.fetch_add(1, Ordering::SeqCst);
                    let close = if after == AfterResponse::SayCloseAndClose {
                        "Connection: close\r\n"
                    } else {
                        ""
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n{close}\r\nok"
                    );
                    if stream.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    if after == AfterResponse::SayCloseAndClose {
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), counts)
}

/// A gateway whose `/raw` route goes to a raw upstream that treats its
/// connections as `after` says, with `change` made to its config; and
/// what the raw upstream counted. The test upstream returned first must
/// live as long as the gateway.
async fn gateway_on_raw(
    after: AfterResponse,
    change: impl FnOnce(&mut RawConfig),
) -> (Upstream, crate::harness::Gateway, Arc<Counts>) {
    let upstream = Upstream::start().await;
    let (raw, counts) = raw_upstream(after).await;
    let gw = GatewayBuilder::new(&upstream)
        .route(public("/raw", &raw))
        .configure(change)
        .start()
        .await;
    (upstream, gw, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_kept_alive_upstream_connection() {
    let (_upstream, gw, counts) = gateway_on_raw(AfterResponse::KeepAlive, |c| {
        c.proxy.sticky_connections = false
    })
    .await;
    let http = reqwest::Client::new();
    for i in 0..20 {
        let r = http
            .get(gw.url(&format!("/raw/{i}")))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.expect("body"), "ok");
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 20);
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        1,
        "every request after the first went out on the pooled connection"
    );
}

/// Requests one after another and then 4 at a time, each `gap` after the
/// last: none fails, and each of the sequential ones goes out on a new
/// connection, because the upstream closed the one before (saying so, or
/// silently while it sat idle in the pool) and the gateway never uses a
/// closed connection.
async fn no_request_fails(after: AfterResponse, gap: Duration, sequential: usize) {
    let (_upstream, gw, counts) = gateway_on_raw(after, |_| {}).await;
    let http = reqwest::Client::new();
    let mut failures = Vec::new();
    for i in 0..sequential {
        tokio::time::sleep(gap).await;
        let r = http
            .get(gw.url(&format!("/raw/{i}")))
            .send()
            .await
            .expect("send");
        if r.status() != StatusCode::OK {
            failures.push(r.status());
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        sequential,
        "a new connection for every request"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4 {
        let (http, url) = (http.clone(), gw.url(&format!("/raw/c{t}")));
        tasks.spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..sequential / 4 {
                tokio::time::sleep(gap).await;
                let r = http.get(&url).send().await.expect("send");
                if r.status() != StatusCode::OK {
                    failed.push(r.status());
                }
            }
            failed
        });
    }
    while let Some(failed) = tasks.join_next().await {
        failures.extend(failed.expect("task"));
    }
    let total = sequential + 4 * (sequential / 4);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(counts.requests.load(Ordering::SeqCst), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_says_connection_close_after_each_response_fails_no_request() {
    no_request_fails(AfterResponse::SayCloseAndClose, Duration::ZERO, 100).await;
}

/// The upstream's keep-alive timeout (30 ms) ends before the next request
/// (60 ms later) while the gateway's pool would keep the connection 90 s.
/// (Back to back, with no gap, a request can still meet the close in
/// flight: written before the close is seen, it fails with a 502, with
/// this client as with hyper-util's; see docs/architecture.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_idle_connections_sooner_than_the_pool_fails_no_request() {
    no_request_fails(
        AfterResponse::CloseWhenIdle(Duration::from_millis(30)),
        Duration::from_millis(60),
        20,
    )
    .await;
}

/// An upstream connection idle for `pool_idle_timeout` is closed, whether
/// pooled or kept by its browser connection (which stays open here), and
/// the next request opens a new one.
async fn idle_connection_is_closed(sticky: bool) {
    let (_upstream, gw, counts) = gateway_on_raw(AfterResponse::KeepAlive, |c| {
        c.proxy.pool_idle_timeout = duration("300ms");
        c.proxy.sticky_connections = sticky;
    })
    .await;
    let mut browser = BrowserConnection::open(&gw).await;
    browser.get_ok(1).await;
    let started = Instant::now();
    while counts.closed_by_gateway.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the idle connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before its idle timeout: {:?}",
        started.elapsed()
    );
    browser.get_ok(1).await;
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        2,
        "the next request opens a new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pooled_upstream_connection_is_closed_after_pool_idle_timeout() {
    idle_connection_is_closed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_upstream_connection_is_closed_after_pool_idle_timeout() {
    idle_connection_is_closed(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_accept_within_connect_timeout_is_a_504() {
    // A listener that never accepts, its queue filled: the kernel drops
    // further connection attempts, so a connect hangs until the gateway
    // gives up (`proxy.connect_timeout`), long before the route's timeout.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(0).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .route(public("/stuck", &format!("http://{addr}")))
        .configure(|c| c.proxy.connect_timeout = duration("500ms"))
        .start()
        .await;
    let started = Instant::now();
    let r = reqwest::get(gw.url("/stuck/x")).await.expect("send");
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "upstream_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "gave up after {took:?}"
    );
}

/// How many upstream connections two browser connections open when they
/// take turns, 5 requests at a time, 20 in all.
async fn upstream_connections_for_two_taking_turns(sticky: bool) -> usize {
    let (_upstream, gw, counts) = gateway_on_raw(AfterResponse::KeepAlive, |c| {
        c.proxy.sticky_connections = sticky
    })
    .await;
    let mut a = BrowserConnection::open(&gw).await;
    let mut b = BrowserConnection::open(&gw).await;
    for _ in 0..2 {
        a.get_ok(5).await;
        b.get_ok(5).await;
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 20);
    counts.accepted.load(Ordering::SeqCst)
}

/// `proxy.sticky_connections` (the default): a browser connection's
/// requests go out on an upstream connection of its own, so two browser
/// connections that take turns use two upstream connections, each reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_browser_connection_keeps_an_upstream_connection_of_its_own() {
    assert_eq!(
        upstream_connections_for_two_taking_turns(true).await,
        2,
        "one upstream connection per browser connection, reused by its requests"
    );
}

/// Turned off, browser connections share the pool: taking turns, they
/// reuse one upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sticky_connections_browser_connections_share_the_pool() {
    assert_eq!(
        upstream_connections_for_two_taking_turns(false).await,
        1,
        "one pooled connection"
    );
}

/// A kept upstream connection lives no longer than its browser connection
/// (well before `pool_idle_timeout`, 90 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_upstream_connection_closes_when_its_browser_connection_does() {
    let (_upstream, gw, counts) = gateway_on_raw(AfterResponse::KeepAlive, |_| {}).await;
    let mut a = BrowserConnection::open(&gw).await;
    a.get_ok(3).await;
    assert_eq!(counts.closed_by_gateway.load(Ordering::SeqCst), 0);
    drop(a);
    let started = Instant::now();
    while counts.closed_by_gateway.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the upstream connection outlived its browser connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}

/// An SPA whose calls alternate between two upstreams on one browser
/// connection keeps one connection to each, not a new one per switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_connection_alternating_between_upstreams_keeps_one_connection_to_each() {
    let upstream = Upstream::start().await;
    let (one, one_counts) = raw_upstream(AfterResponse::KeepAlive).await;
    let (two, two_counts) = raw_upstream(AfterResponse::KeepAlive).await;
    let gw = GatewayBuilder::new(&upstream)
        .route(public("/one", &one))
        .route(public("/two", &two))
        .start()
        .await;
    let mut browser = BrowserConnection::open(&gw).await;
    for _ in 0..5 {
        browser.get_ok_with("/one", "", 1).await;
        browser.get_ok_with("/two", "", 1).await;
    }
    for counts in [&one_counts, &two_counts] {
        assert_eq!(counts.requests.load(Ordering::SeqCst), 5);
        assert_eq!(
            counts.accepted.load(Ordering::SeqCst),
            1,
            "one connection each"
        );
    }
}

/// A browser connection used once (`Connection: close`, as a proxy in
/// front without keep-alive sends) takes a pooled upstream connection,
/// which outlives it, instead of opening and closing one of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_browser_connections_share_the_pool() {
    let (_upstream, gw, counts) = gateway_on_raw(AfterResponse::KeepAlive, |_| {}).await;
    for _ in 0..5 {
        let mut once = BrowserConnection::open(&gw).await;
        once.get_ok_with("/raw", "Connection: close\r\n", 1).await;
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 5);
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        1,
        "one pooled connection for five single-use browser connections"
    );
}
