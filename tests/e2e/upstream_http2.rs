//! HTTP/2 to `https://` upstreams, chosen by ALPN: a default route speaks
//! whatever the upstream picks (`h2` when offered), an `upstream_http2`
//! route offers only `h2` and fails cleanly (502) at an upstream that
//! speaks only HTTP/1.1. The upstreams are real TLS servers
//! ([`TlsUpstream`]) with certificates from a private CA.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::Version;
use oidc_bff::config::RawRoute;
use reqwest::{Method, StatusCode};

use crate::harness::tls_upstream::{H2, HTTP1};
use crate::harness::{Browser, GatewayBuilder, TestCa, TlsUpstream, Upstream, duration, route};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_get_http2_when_they_pick_h2_by_alpn_and_http2_routes_need_it() {
    let ca = TestCa::new(false);
    let offers_h2 = TlsUpstream::start(&ca, &[H2, HTTP1]).await;
    let http1_only = TlsUpstream::start(&ca, &[HTTP1]).await;
    let h2 = |path: &str, url: &str| RawRoute {
        upstream_http2: true,
        timeout: duration("10s"),
        ..route(path, url)
    };
    let upstream = Upstream::start().await;
    let trust = Some(PathBuf::from(ca.file("ca.pem")));
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.proxy.tls_ca_file = trust.clone())
        .route(route("/alpn", &offers_h2.url()))
        .route(route("/alpn-h1", &http1_only.url()))
        .route(h2("/h2", &offers_h2.url()))
        .route(h2("/h2-to-h1", &http1_only.url()))
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;

    // (a) A default route: the upstream's ALPN choice decides.
    let r = b.get("/alpn/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["version"], "HTTP/2.0", "picked h2: {r:?}");
    assert_eq!(r.json()["authorization_present"], true);
    assert_eq!(offers_h2.seen(), [(Version::HTTP_2, 0)]);
    let r = b.get("/alpn-h1/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["version"], "HTTP/1.1", "picked http/1.1: {r:?}");

    // (b) An HTTP/2-only route to an upstream without h2: a prompt 502 with
    // the gateway's error, and nothing served.
    let started = Instant::now();
    let r = b.get("/h2-to-h1/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(r.json()["error"], "upstream_unavailable", "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no hang: {:?}",
        started.elapsed()
    );
    assert_eq!(
        http1_only.seen(),
        [(Version::HTTP_11, 0)],
        "only /alpn-h1's"
    );

    // (c) An HTTP/2-only route to an upstream with h2, with a body (larger
    // than one HTTP/2 flow-control window).
    let body = "x".repeat(200_000);
    let r = b
        .request(Method::PUT, "/h2/items", &[("x-csrf", "1")], Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["version"], "HTTP/2.0", "{r:?}");
    assert_eq!(r.json()["body_len"], 200_000, "{r:?}");
    assert_eq!(r.json()["path"], "/h2/items");
    assert_eq!(offers_h2.seen().last(), Some(&(Version::HTTP_2, 200_000)));
}
