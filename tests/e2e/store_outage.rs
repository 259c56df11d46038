//! Redis down or hung: API calls get 503 JSON and navigations a page, within
//! the configured timeout; nothing is forwarded; the gateway recovers by
//! itself when Redis is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::{Browser, Chaos, GatewayBuilder, RedisServer, TestCa, Upstream};

/// The store timeout of these tests' gateways: short, so a dead or hung
/// Redis is noticed quickly (the harness default is generous instead).
const STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// A gateway on `redis_url` with the short [`STORE_TIMEOUT`], and without
/// the session cache: these tests specify what a request that reaches the
/// store sees. (With the cache, a request in the instant between Redis'
/// death and the tracking connection's end is served from the cache —
/// nothing could have changed in Redis after it died; `session_cache`
/// specifies how the cache stops serving.)
fn gateway(upstream: &Upstream, redis_url: &str) -> GatewayBuilder {
    GatewayBuilder::new(upstream)
        .redis(redis_url)
        .store_timeout(STORE_TIMEOUT)
        .configure(|c| c.store.cache_entries = 0)
}

pub(crate) async fn wait_until_ok(b: &mut Browser, path: &str) -> Duration {
    let started = Instant::now();
    loop {
        let r = b.get(path).await;
        if r.status == StatusCode::OK {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no recovery: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_gives_503_then_recovers_after_restart() {
    let upstream = Upstream::start().await;
    let mut redis = RedisServer::start();
    let gw = gateway(&upstream, &redis.url()).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/a").await.status, StatusCode::OK);

    redis.stop();
    let started = Instant::now();
    let r = b.get("/api/a").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(r.json()["error"], "store_unavailable");
    assert!(
        !r.body.contains("127.0.0.1"),
        "no internal detail in the body"
    );
    let r = b.navigate("/api/a").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.body.contains("<html") && r.body.contains("temporarily unavailable"),
        "{}",
        r.body
    );
    assert!(started.elapsed() < 2 * STORE_TIMEOUT + Duration::from_secs(1));
    let r = b.navigate("/auth/login").await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "login needs the store too: {r:?}"
    );
    assert_eq!(
        b.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        upstream.count(),
        1,
        "nothing forwarded while the store is down"
    );

    redis.restart();
    let took = wait_until_ok(&mut b, "/api/a").await;
    eprintln!("recovered {took:?} after restart");
    assert_eq!(
        b.get("/auth/user").await.json()["sub"],
        "alice",
        "the session survived (AOF)"
    );
    assert_eq!(b.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_answers_503_within_the_store_timeout_then_recovers() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let chaos = Chaos::start(([127, 0, 0, 1], redis.port).into()).await;
    // The store path: with the session cache on, a cached session is
    // served until the tracking lease runs out (3 s), then as here.
    let gw = gateway(&upstream, &format!("redis://{}", chaos.addr))
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/a").await.status, StatusCode::OK);

    chaos.stall();
    for _ in 0..3 {
        let started = Instant::now();
        let r = b.get("/api/a").await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
        assert!(
            took < STORE_TIMEOUT + Duration::from_secs(1),
            "503 took {took:?}"
        );
    }
    assert_eq!(upstream.count(), 1);

    chaos.pass();
    wait_until_ok(&mut b, "/api/a").await;

    chaos.refuse();
    assert_eq!(
        b.get("/api/a").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    chaos.pass();
    wait_until_ok(&mut b, "/api/a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_over_rediss_with_a_private_ca_and_not_without_trusting_it() {
    let upstream = Upstream::start().await;
    let ca = Arc::new(TestCa::new(false));
    let redis = RedisServer::start_tls(&ca);
    let url = redis.url();
    let gw = gateway(&upstream, &url).store_ca(&ca).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/a").await.status, StatusCode::OK);
    assert_eq!(b.get("/auth/user").await.json()["sub"], "alice");

    // The same server is refused when its CA is not trusted.
    let untrusting = gateway(&upstream, &url).start().await;
    let mut other = Browser::new(&untrusting);
    // (`/auth/login` no longer reads the store: a session cookie makes it.)
    other
        .cookies
        .insert("__Host-oidc-bff".into(), "A".repeat(43));
    let r = other.navigate("/auth/login").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(
        other.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_demands_client_certificates_accepts_the_configured_one() {
    let upstream = Upstream::start().await;
    let ca = Arc::new(TestCa::new(true));
    let redis = RedisServer::start_tls(&ca);
    let url = redis.url();
    let gw = gateway(&upstream, &url)
        .store_ca(&ca)
        .store_client_cert(&ca)
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/a").await.status, StatusCode::OK);

    // Trusting the server is not enough: without a certificate it hangs up.
    let anonymous = gateway(&upstream, &url).store_ca(&ca).start().await;
    let mut other = Browser::new(&anonymous);
    other
        .cookies
        .insert("__Host-oidc-bff".into(), "A".repeat(43));
    assert_eq!(
        other.navigate("/auth/login").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        other.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
