//! Zero-loss rollouts: on SIGTERM `/readyz` turns 503 at once while the
//! gateway keeps accepting and serving for `server.drain_period`; then the
//! listener closes, requests in flight finish, WebSockets get a 1001 close
//! frame, and the process exits 0. Sessions live in Redis, so the next
//! process serves them.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{Browser, GatewayBuilder, Upstream, duration, unique_user};

/// A fresh connection's answer to `GET url`, or `None` when it is refused.
async fn fresh_get(url: &str) -> Option<StatusCode> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_closes_while_the_request_in_flight_finishes_and_no_session_is_lost() {
    let upstream = Upstream::start().await;
    let drain = Duration::from_secs(3);
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.drain_period = duration("3s"))
        .start_process()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("rollout")).await;
    assert_eq!(fresh_get(&gw.url("/readyz")).await, Some(StatusCode::OK));

    // In flight across SIGTERM, and past the end of the drain.
    let slow = {
        let (url, cookie) = (gw.url("/api/sleep/5000"), b.cookie_header());
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !upstream
        .seen()
        .iter()
        .any(|s| s.uri.ends_with("/sleep/5000"))
    {
        assert!(Instant::now() < deadline, "the slow call never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    gw.process().signal("TERM");
    let term = Instant::now();
    // At once: not ready, but alive and serving, on new connections too.
    let deadline = term + Duration::from_secs(2);
    while fresh_get(&gw.url("/readyz")).await != Some(StatusCode::SERVICE_UNAVAILABLE) {
        assert!(Instant::now() < deadline, "/readyz did not turn 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fresh_get(&gw.url("/healthz")).await, Some(StatusCode::OK));
    let r = b.get("/api/during-drain").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "served during the drain: {}",
        r.body
    );
    assert!(
        term.elapsed() < drain,
        "the checks above ran within the drain ({:?}); the machine is too loaded",
        term.elapsed()
    );

    // After the drain: new connections are refused.
    tokio::time::sleep(drain.saturating_sub(term.elapsed()) + Duration::from_millis(500)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(gw.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after the drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        slow.await.expect("joined").expect("the slow call answered"),
        StatusCode::OK,
        "the request in flight at SIGTERM finished"
    );
    assert_eq!(
        gw.process().wait_exit(Duration::from_secs(20)).await,
        Some(0),
        "exit code"
    );

    // The next process (same Redis, same prefix) serves the session.
    let next = GatewayBuilder::new(&upstream)
        .prefix(&gw.prefix)
        .start_process()
        .await;
    let r = b.get(&next.url("/api/after-rollout")).await;
    assert_eq!(r.status, StatusCode::OK, "session kept: {}", r.body);
    assert_eq!(r.json()["authorization_present"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_gets_a_going_away_close_frame_when_the_drain_ends() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.drain_period = duration("1s"))
        .start_process()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("ws-rollout")).await;
    let mut req = format!("ws://{}/api/ws", gw.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("cookie", b.cookie_header().parse().expect("cookie"));
    req.headers_mut()
        .insert("origin", gw.base.parse().expect("origin"));
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");

    gw.process().signal("TERM");
    let close = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("no close frame within the drain and grace");
    let frame = close.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
    assert_eq!(
        gw.process().wait_exit(Duration::from_secs(20)).await,
        Some(0),
        "exit code"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_skips_the_drain() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.server.drain_period = duration("60s"))
        .start_process()
        .await;
    gw.process().signal("INT");
    assert_eq!(
        gw.process().wait_exit(Duration::from_secs(20)).await,
        Some(0),
        "exited at once, not after the 60 s drain"
    );
}
