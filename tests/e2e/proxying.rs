//! The proxy: CSRF on state-changing calls, streaming, upstream failures,
//! route auth modes, and paths that must not be forwarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oidc_bff::config::RawRoute;
use reqwest::{Method, StatusCode};

use crate::harness::{
    Browser, BrowserConnection, GatewayBuilder, Upstream, duration, procs::free_port, route,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_calls_without_the_csrf_header_are_refused() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let r = b
            .request(
                method.clone(),
                "/api/items",
                &[("content-type", "application/json")],
                Some("{}".into()),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {r:?}");
        assert_eq!(r.json()["error"], "csrf_rejected");
        let r = b
            .request(
                method.clone(),
                "/api/items",
                &[("x-csrf", "0")],
                Some("{}".into()),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "wrong value, {method}");
    }
    assert_eq!(upstream.count(), 0);
    let r = b
        .request(
            Method::POST,
            "/api/items",
            &[("x-csrf", "1")],
            Some("{\"a\":1}".into()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(upstream.seen()[0].method, "POST");
    assert_eq!(upstream.seen()[0].body_len, 7);
}

/// Frameworks behind the gateway run the method a method-override header
/// names (`GET` + `X-HTTP-Method-Override: DELETE` is a `DELETE` to
/// Express's `method-override`, Symfony, ASP.NET Core), and some servers
/// read method names without regard to case: neither dodges the anti-CSRF
/// rule nor the refusal of `TRACE` (which echoes the Bearer token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_overrides_and_other_spellings_of_trace_never_dodge_the_method_rules() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    for name in [
        "x-http-method-override",
        "X-HTTP-Method",
        "x-method-override",
    ] {
        let r = b
            .request(Method::GET, "/api/items", &[(name, "DELETE")], None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {r:?}");
        assert_eq!(r.json()["error"], "csrf_rejected", "{name}");
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.seen());
    let trace = |m: &str| Method::from_bytes(m.as_bytes()).expect("method");
    for (method, headers) in [
        (trace("trace"), vec![("x-csrf", "1")]),
        (trace("Trace"), vec![("x-csrf", "1")]),
        (trace("TRACK"), vec![("x-csrf", "1")]),
        (trace("connect"), vec![("x-csrf", "1")]),
        (
            Method::POST,
            vec![("x-csrf", "1"), ("x-http-method-override", "TRACE")],
        ),
        (Method::GET, vec![("x-method-override", "track")]),
    ] {
        let r = b
            .request(method.clone(), "/api/items", &headers, None)
            .await;
        assert_eq!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {headers:?}: {r:?}"
        );
        assert_eq!(r.json()["error"], "method_not_allowed");
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.seen());
    // With the anti-CSRF header the override goes through as sent; an
    // underscore spelling (`HTTP_X_HTTP_METHOD_OVERRIDE` to CGI-style
    // applications, like the dashed one) never reaches the upstream.
    let r = b
        .request(
            Method::GET,
            "/api/items",
            &[
                ("x-csrf", "1"),
                ("x-http-method-override", "DELETE"),
                ("x_http_method_override", "PUT"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let seen = upstream.seen().pop().expect("forwarded");
    assert_eq!(
        seen.header("x-http-method-override").as_deref(),
        Some("DELETE")
    );
    assert_eq!(
        seen.header("x_http_method_override"),
        None,
        "{:?}",
        seen.headers
    );
    let r = b
        .request(
            Method::GET,
            "/api/items",
            &[("x_http_method_override", "DELETE")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let seen = upstream.seen().pop().expect("forwarded");
    assert_eq!(
        seen.header("x_http_method_override"),
        None,
        "{:?}",
        seen.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_csrf_header_can_be_configured() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.csrf.header = "X-Requested-By".into();
            c.csrf.value = "my-app".into();
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(
        b.request(Method::POST, "/api/x", &[("x-csrf", "1")], None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        b.request(
            Method::POST,
            "/api/x",
            &[("x-requested-by", "my-app")],
            None
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_api_calls_get_401_json_never_a_redirect() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    let r = b.get("/api/data").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.location().is_none());
    assert_eq!(r.json()["error"], "unauthenticated");
    assert!(r.headers.contains_key("www-authenticate"));
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    // 32 MiB up, streamed from a generator (never in memory whole here either).
    let chunks =
        futures_util::stream::iter((0..512).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 65536])));
    let r =
        b.gw.post(gw.url("/api/upload"))
            .header("cookie", b.cookie_header())
            .header("x-csrf", "1")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .expect("upload");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(upstream.seen()[0].body_len, 512 * 65536);
    assert!(
        upstream.seen()[0].header("content-length").is_none(),
        "sent chunked, not buffered"
    );
    // 32 MiB down, read as a stream.
    let r =
        b.gw.get(gw.url("/api/512/stream"))
            .header("cookie", b.cookie_header())
            .send()
            .await
            .expect("download");
    assert_eq!(r.status(), StatusCode::OK);
    let mut n = 0usize;
    let mut s = r.bytes_stream();
    use futures_util::StreamExt;
    while let Some(c) = s.next().await {
        n += c.expect("chunk").len();
    }
    assert_eq!(n, 512 * 65536);
}

/// An upstream that speaks only HTTP/1.1 (hyper's HTTP/1 server), whatever
/// it is sent; answers "http/1 only".
async fn http1_only_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("http/1 only")))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_http2_route_speaks_http2_and_an_http1_only_upstream_is_a_clean_502() {
    let upstream = Upstream::start().await;
    let http1 = http1_only_upstream().await;
    let h2 = |path: &str, url: &str| RawRoute {
        upstream_http2: true,
        ..route(path, url)
    };
    let gw = GatewayBuilder::new(&upstream)
        .route(h2("/h2", &upstream.url()))
        .route(h2("/h1only", &http1))
        .route(route("/h1", &http1))
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;

    let r = b.get("/api/x").await;
    assert_eq!(r.json()["version"], "HTTP/1.1", "off by default: {r:?}");
    let r = b.get("/h2/x?q=1").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["version"], "HTTP/2.0", "{r:?}");
    assert_eq!(r.json()["authorization_present"], true);
    let body = "x".repeat(200_000);
    let r = b
        .request(Method::PUT, "/h2/items", &[("x-csrf", "1")], Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(
        r.json()["body_len"],
        200_000,
        "the body streamed over HTTP/2"
    );
    let seen = upstream.seen();
    let last = seen.last().expect("seen");
    assert_eq!(last.uri, format!("{}/h2/items", upstream.url()), "{last:?}");

    // The same HTTP/1-only server answers HTTP/1.1, and refuses HTTP/2.
    let r = b.get("/h1/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = b.get("/h1only/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(r.json()["error"], "upstream_unavailable");
}

/// An HTTP/2 upstream (h2c) that refuses every other request it is sent
/// with `REFUSED_STREAM` (RFC 9113 §8.7: not processed, safe to retry),
/// and answers the others with the length of the body it read. Counts
/// what it was sent. It refuses `refuse_after` and answers `answer_after`
/// a request came.
async fn refusing_h2_upstream(
    refuse_after: Duration,
    answer_after: Duration,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if counter.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                        tokio::spawn(async move {
                            tokio::time::sleep(refuse_after).await;
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                        });
                        continue;
                    }
                    tokio::spawn(async move {
                        tokio::time::sleep(answer_after).await;
                        let mut body = req.into_body();
                        let mut n = 0;
                        while let Some(Ok(chunk)) = body.data().await {
                            n += chunk.len();
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        let Ok(mut out) = respond.send_response(http::Response::new(()), false)
                        else {
                            return;
                        };
                        let _ = out.send_data(bytes::Bytes::from(n.to_string()), true);
                    });
                }
            });
        }
    });
    (format!("http://{addr}"), sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_an_http2_upstream_refused_unprocessed_is_sent_once_more() {
    let upstream = Upstream::start().await;
    let (refusing, sent) = refusing_h2_upstream(Duration::ZERO, Duration::ZERO).await;
    let gw = GatewayBuilder::new(&upstream)
        .route(RawRoute {
            auth: "none".into(),
            upstream_http2: true,
            ..route("/refusing", &refusing)
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    let r = b.get("/refusing/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, "0");
    assert_eq!(sent.load(Ordering::SeqCst), 2, "refused, then sent again");
    let r = b
        .request(
            Method::POST,
            "/refusing/items",
            &[],
            Some("{\"a\":1}".into()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, "7", "the body sent again whole");
    assert_eq!(sent.load(Ordering::SeqCst), 4);
    // A body over the 64 KiB the gateway keeps streams, and its refusal is
    // a 502: nothing was kept to send again.
    let r = b
        .request(
            Method::POST,
            "/refusing/items",
            &[],
            Some("x".repeat(100_000)),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(r.json()["error"], "upstream_unavailable");
    assert_eq!(sent.load(Ordering::SeqCst), 5, "not sent again");
}

/// The resend of a refused request gets what is left of the route's
/// timeout, not a timeout of its own: refused after 1 s, answered 1.5 s
/// after the resend, a 2 s route answers 504 at 2 s (with a fresh timeout
/// per attempt it would wait 2.5 s for the 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_resend_shares_the_first_attempts_deadline() {
    let upstream = Upstream::start().await;
    let (refusing, sent) =
        refusing_h2_upstream(Duration::from_secs(1), Duration::from_millis(1500)).await;
    let gw = GatewayBuilder::new(&upstream)
        .route(RawRoute {
            auth: "none".into(),
            upstream_http2: true,
            timeout: duration("2s"),
            ..route("/refusing", &refusing)
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    let started = Instant::now();
    let r = b.get("/refusing/x").await;
    let took = started.elapsed();
    assert_eq!(
        r.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{r:?} after {took:?}"
    );
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert_eq!(sent.load(Ordering::SeqCst), 2, "refused, then sent again");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(3),
        "one route timeout (2 s) in all: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502_and_a_slow_one_a_504() {
    let upstream = Upstream::start().await;
    let dead = free_port();
    let gw = GatewayBuilder::new(&upstream)
        .route(route("/dead", &format!("http://127.0.0.1:{dead}")))
        .route(RawRoute {
            timeout: duration("1s"),
            ..route("/slowapi", &upstream.url())
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let r = b.get("/dead/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(r.json()["error"], "upstream_unavailable");
    let started = Instant::now();
    let r = b.get("/slowapi/slow").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{r:?}");
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    let page = b.navigate("/dead/x").await;
    assert!(
        page.body.contains("<html") && page.status == StatusCode::BAD_GATEWAY,
        "navigations get a page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_auth_modes_none_and_optional() {
    let upstream = Upstream::start().await;
    let up = upstream.url();
    let gw = GatewayBuilder::new(&upstream)
        .route(RawRoute {
            auth: "none".into(),
            strip_prefix: true,
            ..route("/public", &up)
        })
        .route(RawRoute {
            auth: "optional".into(),
            ..route("/maybe", &up)
        })
        .start()
        .await;
    let mut anon = Browser::new(&gw);
    assert_eq!(anon.get("/public/x").await.status, StatusCode::OK);
    assert_eq!(
        anon.request(Method::POST, "/public/x", &[], None)
            .await
            .status,
        StatusCode::OK,
        "no CSRF needed: no credentials attached"
    );
    assert_eq!(anon.get("/maybe/x").await.status, StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen[0].uri, "/x", "prefix stripped");
    assert!(seen.iter().all(|s| s.header("authorization").is_none()));

    let mut b = Browser::new(&gw);
    b.login_alice().await;
    b.get("/maybe/y").await;
    b.get("/public/z").await;
    let seen = upstream.seen();
    let maybe = seen.iter().find(|s| s.uri == "/maybe/y").expect("seen");
    assert!(
        maybe
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
    );
    let public = seen.iter().find(|s| s.uri == "/z").expect("seen");
    assert!(
        public.header("authorization").is_none(),
        "auth=none never attaches a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segment_paths_are_not_forwarded() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    // HTTP clients normalise these away; a raw request does not.
    for p in [
        "/api/%2e%2e/admin",
        "/api/.%2E/admin",
        "/api/%2E/x",
        "/api/../admin",
    ] {
        let status = raw_get(gw.addr, p, &b.cookie_header()).await;
        assert_eq!(status, 400, "{p}");
    }
    assert_eq!(
        raw_get(gw.addr, "/api/ok", &b.cookie_header()).await,
        200,
        "the raw client works"
    );
    assert_eq!(upstream.count(), 1, "only the normal path was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_exactly_one_well_formed_host_are_400_and_never_forwarded() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let cookie = b.cookie_header();
    let accept = "Accept: application/json\r\nConnection: close\r\n";
    // RFC 9112 §3.2: none on HTTP/1.1, two (even equal), or no authority.
    let bad_heads = [
        format!("HTTP/1.1\r\nCookie: {cookie}\r\n{accept}"),
        format!("HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nCookie: {cookie}\r\n{accept}"),
        format!("HTTP/1.0\r\nHost: gw\r\nHost: gw\r\nCookie: {cookie}\r\n{accept}"),
        format!("HTTP/1.1\r\nHost: alice@evil.example\r\nCookie: {cookie}\r\n{accept}"),
        format!("HTTP/1.1\r\nHost: a.example/x\r\nCookie: {cookie}\r\n{accept}"),
        format!("HTTP/1.1\r\nHost: a.example, b.example\r\nCookie: {cookie}\r\n{accept}"),
    ];
    // A configured route (its guard), an own endpoint and the fallback.
    for path in ["/api/x", "/auth/user", "/healthz", "/no-such-page"] {
        for head in &bad_heads {
            let mut c = BrowserConnection::open(&gw).await;
            let answer = c.exchange(&format!("GET {path} {head}\r\n")).await;
            assert_eq!(answer.status, 400, "{path} {head:?}: {answer:?}");
            assert_eq!(answer.error(), "bad_request", "{path} {head:?}");
        }
    }
    assert_eq!(upstream.count(), 0, "nothing was forwarded");
    // A browser navigation gets the page, as for any 400.
    let mut c = BrowserConnection::open(&gw).await;
    let page = c
        .exchange(&format!(
            "GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nCookie: {cookie}\r\nAccept: text/html\r\nSec-Fetch-Mode: navigate\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(
        page.text().contains("at most one Host header"),
        "{}",
        page.text()
    );
    // One Host, or none on HTTP/1.0, is served.
    for head in [
        format!(
            "HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n{accept}",
            gw.addr
        ),
        format!("HTTP/1.1\r\nHost: [::1]:8080\r\nCookie: {cookie}\r\n{accept}"),
        format!("HTTP/1.0\r\nCookie: {cookie}\r\n{accept}"),
    ] {
        let mut c = BrowserConnection::open(&gw).await;
        let answer = c.exchange(&format!("GET /api/x {head}\r\n")).await;
        assert_eq!(answer.status, 200, "{head:?}: {answer:?}");
    }
    assert_eq!(upstream.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_naming_another_host_than_host_user_info_or_a_foreign_scheme_is_400() {
    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let cookie = b.cookie_header();
    let gw_host = gw.addr.to_string();
    let tail = format!("Cookie: {cookie}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    // HTTP/1.1 absolute-form targets: the authority in the target and the
    // Host header are two readings of one request's host.
    for (path, target, host) in [
        (
            "/api/x",
            "http://evil.example/api/x".to_owned(),
            gw_host.clone(),
        ),
        (
            "/auth/user",
            "http://evil.example/auth/user".to_owned(),
            gw_host.clone(),
        ),
        (
            "/api/x",
            format!("http://alice@{gw_host}/api/x"),
            gw_host.clone(),
        ),
        ("/api/x", format!("ftp://{gw_host}/api/x"), gw_host.clone()),
        (
            "/healthz",
            format!("gopher://{gw_host}/healthz"),
            gw_host.clone(),
        ),
    ] {
        let mut c = BrowserConnection::open(&gw).await;
        let answer = c
            .exchange(&format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{tail}"))
            .await;
        assert_eq!(answer.status, 400, "{path} {target}: {answer:?}");
        assert_eq!(answer.error(), "bad_request", "{target}");
    }
    assert_eq!(upstream.count(), 0, "nothing was forwarded");
    // HTTP/2: `:authority` against a `Host` beside it, and `:scheme`.
    let h2 = |uri: String, host: Option<&str>| {
        let mut req = http::Request::get(uri).header("cookie", cookie.as_str());
        if let Some(host) = host {
            req = req.header("host", host);
        }
        req.body(Empty::<Bytes>::new()).expect("request")
    };
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 handshake");
    tokio::spawn(conn);
    for (req, why) in [
        (
            h2(format!("http://{gw_host}/api/x"), Some("evil.example")),
            "Host differs",
        ),
        (
            h2(format!("http://{gw_host}/auth/user"), Some("evil.example")),
            "Host differs",
        ),
        (
            h2(format!("http://alice@{gw_host}/api/x"), None),
            "user info",
        ),
        (h2(format!("ftp://{gw_host}/api/x"), None), "scheme"),
    ] {
        let resp = send.send_request(req).await.expect("an answer");
        assert_eq!(resp.status(), 400, "{why}");
        resp.into_body().collect().await.expect("body");
    }
    assert_eq!(upstream.count(), 0, "nothing was forwarded");
    // The same host named twice, in any case, or once, is served.
    for req in [
        h2(format!("http://{gw_host}/api/x"), None),
        h2(format!("http://{gw_host}/api/x"), Some(&gw_host)),
        h2(format!("https://{gw_host}/api/x"), None),
    ] {
        let resp = send.send_request(req).await.expect("an answer");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.expect("body");
    }
    let mut c = BrowserConnection::open(&gw).await;
    let answer = c
        .exchange(&format!(
            "GET http://{gw_host}/api/x HTTP/1.1\r\nHost: {gw_host}\r\n{tail}"
        ))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(upstream.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_framed_two_ways_never_smuggles_a_request_and_codings_besides_chunked_are_400() {
    let upstream = Upstream::start().await;
    let up = upstream.url();
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.routes.push(crate::harness::public("/open", &up)))
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let cookie = b.cookie_header();
    // What a fronting proxy that reads the length sees as one request, the
    // chunks end early: the rest would be a second request, anonymous on
    // `/open`, prefixed onto whatever the proxy sends next.
    let smuggled = "GET /open/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    let post = |path: &str, framing: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nCookie: {cookie}\r\nX-CSRF: 1\r\n{framing}\r\n\r\n0\r\n\r\n{smuggled}"
        )
    };
    // A coding besides `chunked` (the upstream would get the bytes without
    // knowing they are gzip), or `chunked` twice: 400, connection closed.
    let refused = [
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    ];
    for path in ["/api/x", "/open/x", "/auth/backchannel-logout"] {
        for framing in refused {
            let mut c = BrowserConnection::open(&gw).await;
            c.write(&post(path, framing)).await;
            let answer = c.read_answer(false).await.expect("an answer");
            assert_eq!(answer.status, 400, "{path} {framing}: {answer:?}");
            assert_eq!(answer.error(), "bad_request");
            assert_eq!(answer.header("connection"), Some("close"));
            let next = c.read_answer(false).await;
            assert!(
                matches!(next, Err(crate::harness::Cut::Closed(_))),
                "{path} {framing}: the connection stays open: {next:?}"
            );
        }
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.seen());
    // A length beside chunks: the chunks frame the body (the length never
    // reaches the upstream), and the connection closes after the answer,
    // so what follows the chunks is never read as a request.
    for framing in [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked",
            5 + smuggled.len()
        ),
        "Transfer-Encoding: chunked\r\nContent-Length: 5".to_owned(),
    ] {
        let mut c = BrowserConnection::open(&gw).await;
        c.write(&post("/api/x", &framing)).await;
        let answer = c.read_answer(false).await.expect("an answer");
        assert_eq!(answer.header("connection"), Some("close"), "{framing}");
        let next = c.read_answer(false).await;
        assert!(
            matches!(next, Err(crate::harness::Cut::Closed(_))),
            "{framing}: {next:?}"
        );
    }
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|r| r.uri == "/api/x"
            && r.body_len == 0
            && r.header("content-length").is_none_or(|l| l == "0")),
        "{seen:?}"
    );
    // Chunks alone, and a length alone, are served as ever.
    for (framing, body) in [
        ("Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n"),
        ("Content-Length: 5", "hello"),
    ] {
        let mut c = BrowserConnection::open(&gw).await;
        let answer = c
            .exchange(&format!(
                "POST /api/x HTTP/1.1\r\nHost: gw\r\nCookie: {cookie}\r\nX-CSRF: 1\r\n{framing}\r\n\r\n{body}"
            ))
            .await;
        assert_eq!(answer.status, 200, "{framing}: {answer:?}");
        assert_eq!(upstream.seen().pop().expect("forwarded").body_len, 5);
    }
}

/// A GET written by hand, so the path reaches the gateway exactly as given.
async fn raw_get(addr: std::net::SocketAddr, path: &str, cookie: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_health_endpoints_answer() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    assert_eq!(b.get("/nothing-here").await.status, StatusCode::NOT_FOUND);
    assert_eq!(b.get("/healthz").await.status, StatusCode::OK);
    let mut ready = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        ready = b.get("/readyz").await.status;
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_logins_and_errors_without_personal_labels() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).metrics().start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/a").await.status, StatusCode::OK);
    assert_eq!(
        b.request(Method::POST, "/api/a", &[], None).await.status,
        StatusCode::FORBIDDEN
    );
    let text = gw.scrape().await;
    for line in [
        "oidc_bff_requests_total{kind=\"proxy\",status=\"2xx\"} 1",
        "oidc_bff_requests_total{kind=\"proxy\",status=\"4xx\"} 1",
        "oidc_bff_errors_total{code=\"csrf_rejected\"} 1",
        "oidc_bff_logins_total{outcome=\"success\",reason=\"none\"} 1",
        "oidc_bff_request_duration_seconds_count{kind=\"proxy\"} 2",
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
    assert!(
        !text.contains("alice") && !text.contains("/api/a"),
        "no personal data or paths as labels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_reach_an_upstream_only_on_routes_that_forward_them() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .route(RawRoute {
            forward_cookies: true,
            ..route("/legacy", &upstream.url())
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    b.cookies.insert("theme".into(), "dark".into());

    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    assert_eq!(b.get("/legacy/x").await.status, StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(
        seen[0].header("cookie"),
        None,
        "no Cookie header by default"
    );
    assert!(seen[0].header("authorization").is_some());
    let forwarded = seen[1].header("cookie").unwrap_or_default();
    assert!(
        forwarded.contains("theme=dark") && !forwarded.contains("oidc-bff"),
        "the app's cookies, not the gateway's: {forwarded}"
    );
}
