//! Hostile headers at the edge: what a browser (or anything that connects)
//! may claim about itself, which upgrades and CORS exchanges reach an
//! upstream, and which cookies an upstream may set. The recording upstream
//! shows what arrives; `send_from` gives the request a TCP peer.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};

use crate::support::{TestRouter, request};

/// A client on the internet, and the proxies of `TRUSTED`.
const CLIENT: &str = "203.0.113.7";
const TRUSTED: &str = r#"trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]"#;
const FORWARDED_SUFFIX: &str = r#";proto=https;host="app.example.test""#;

/// Every header a browser could use to claim another address or URL.
const IDENTITY_CLAIMS: &[&str] = &[
    "x-real-ip",
    "true-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-client-ip",
    "x-original-forwarded-for",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "x-proxyuser-ip",
];

#[tokio::test]
async fn identity_headers_from_the_browser_never_reach_the_upstream() {
    let app = TestRouter::new().await;
    let mut headers: Vec<(&str, &str)> = IDENTITY_CLAIMS.iter().map(|h| (*h, "6.6.6.6")).collect();
    headers.extend([
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "http"),
        ("forwarded", "for=6.6.6.6;host=evil.example"),
        ("x-app", "kept"),
    ]);
    let r = app
        .send_from(
            CLIENT,
            request(Method::GET, "/public/x", &headers, Body::empty()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let seen = app.upstream.seen();
    let h = &seen[0].headers;
    for name in IDENTITY_CLAIMS {
        assert!(h.get(*name).is_none(), "{name} reached the upstream: {h:?}");
    }
    assert_eq!(h["x-forwarded-for"], CLIENT);
    assert_eq!(h["x-forwarded-host"], "app.example.test");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["forwarded"], format!("for={CLIENT}{FORWARDED_SUFFIX}"));
    assert_eq!(h["x-app"], "kept");
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_replaced_by_the_peer() {
    let app = TestRouter::with_server(TRUSTED).await;
    let r = app
        .send_from(
            CLIENT,
            request(
                Method::GET,
                "/public/x",
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "10.0.0.5"),
                    ("forwarded", "for=1.1.1.1"),
                ],
                Body::empty(),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let h = &app.upstream.seen()[0].headers;
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1, "{h:?}");
    assert_eq!(h["x-forwarded-for"], CLIENT);
    assert_eq!(h.get_all("forwarded").iter().count(), 1, "{h:?}");
    assert_eq!(h["forwarded"], format!("for={CLIENT}{FORWARDED_SUFFIX}"));
}

#[tokio::test]
async fn a_trusted_proxy_chain_is_read_across_every_line_and_forged_entries_are_dropped() {
    let app = TestRouter::with_server(TRUSTED).await;
    let r = app
        .send_from(
            "127.0.0.1",
            request(
                Method::GET,
                "/public/x",
                &[
                    // The client forged 6.6.6.6; the first proxy appended the
                    // client's real address, the second proxy its own line.
                    ("x-forwarded-for", "6.6.6.6, 1.1.1.1"),
                    ("x-forwarded-for", "10.0.0.5"),
                    ("forwarded", "for=6.6.6.6"),
                ],
                Body::empty(),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let h = &app.upstream.seen()[0].headers;
    assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.0.0.5, 127.0.0.1");
    assert_eq!(
        h["forwarded"],
        format!("for=1.1.1.1, for=10.0.0.5, for=127.0.0.1{FORWARDED_SUFFIX}")
    );
}

#[tokio::test]
async fn an_incoming_request_id_is_kept_only_from_a_trusted_proxy_and_only_when_well_formed() {
    let app = TestRouter::with_server(TRUSTED).await;
    let id_of = |peer: &'static str, id: &'static str| {
        let app = &app;
        async move {
            let r = app
                .send_from(
                    peer,
                    request(
                        Method::GET,
                        "/public/x",
                        &[("x-request-id", id)],
                        Body::empty(),
                    ),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{r}");
            let echoed = r.header("x-request-id").to_owned();
            let upstream = app.upstream.seen().pop().expect("forwarded").headers;
            assert_eq!(
                upstream["x-request-id"],
                echoed.as_str(),
                "one ID per request"
            );
            echoed
        }
    };
    assert_eq!(id_of("127.0.0.1", "edge-42.a_b").await, "edge-42.a_b");
    for (peer, id) in [
        (CLIENT, "chosen-by-the-client"),
        ("127.0.0.1", "has space"),
        ("127.0.0.1", "<script>alert(1)</script>"),
        (
            "127.0.0.1",
            "a-request-id-that-is-far-too-long-to-be-kept-in-any-log-line-0123456789",
        ),
    ] {
        let got = id_of(peer, id).await;
        assert_ne!(got, id, "{peer} {id}");
        assert_eq!(got.len(), 16, "a fresh ID: {got}");
    }
}

#[tokio::test]
async fn an_h2c_upgrade_is_refused_and_never_reaches_the_upstream() {
    let app = TestRouter::new().await;
    for path in ["/public/x", "/maybe/x"] {
        let r = app
            .get(
                path,
                &[
                    ("connection", "Upgrade, HTTP2-Settings"),
                    ("upgrade", "h2c"),
                    ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
                    ("origin", crate::support::PUBLIC_URL),
                ],
            )
            .await;
        r.assert_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Only WebSocket upgrades are forwarded.",
        );
    }
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn an_upgrade_header_without_a_valid_websocket_handshake_is_refused() {
    let app = TestRouter::new().await;
    let r = app
        .get(
            "/public/x",
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        )
        .await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "A WebSocket handshake must carry Sec-WebSocket-Version: 13.",
    );
    // HTTP2-Settings alone (no Upgrade) is dropped, the call goes through.
    let r = app
        .get(
            "/public/y",
            &[("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let seen = app.upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].headers.get("http2-settings").is_none());
}

fn preflight(path: &str) -> axum::http::Request<Body> {
    request(
        Method::OPTIONS,
        path,
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-csrf"),
        ],
        Body::empty(),
    )
}

#[tokio::test]
async fn cors_preflights_on_session_routes_are_refused_and_never_forwarded() {
    let app = TestRouter::new().await;
    let r = app.send(preflight("/maybe/items")).await;
    r.assert_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Cross-origin requests are not allowed on this route.",
    );
    assert!(
        r.headers.get("access-control-allow-origin").is_none(),
        "{r}"
    );
    // A required route has no session on a preflight (they carry no
    // cookies): 401, also without reaching the upstream.
    let r = app.send(preflight("/api/items")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
    // A route without sessions leaves CORS to its upstream.
    let r = app.send(preflight("/public/items")).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(app.upstream.uris(), vec!["/public/items".to_owned()]);
}

#[tokio::test]
async fn upstream_cors_grants_are_removed_on_session_routes_and_kept_on_public_ones() {
    let app = TestRouter::new().await;
    let cookie = app.logged_in("alice").await;
    let origin = ("origin", "https://evil.example");
    for path in ["/api/cors", "/maybe/cors"] {
        let r = app.get(path, &[("cookie", &cookie), origin]).await;
        assert_eq!(r.status, StatusCode::OK, "{r}");
        for name in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-expose-headers",
        ] {
            assert!(r.headers.get(name).is_none(), "{path}: {name} in\n{r}");
        }
    }
    let r = app.get("/public/cors", &[origin]).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://evil.example"
    );
}

#[tokio::test]
async fn upstreams_cannot_set_a_cookie_named_like_the_gateways_even_with_non_ascii_bytes() {
    let app = TestRouter::new().await;
    let r = app.get("/public/set-cookie", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let kept: Vec<&[u8]> = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(
        kept,
        vec![&b"app=1; Path=/"[..], b"theme=\xe9t\xe9; Path=/"],
        "{r}"
    );
}

#[tokio::test]
async fn a_forwarded_cookie_header_never_carries_a_cookie_named_like_the_gateways() {
    let app = TestRouter::with(
        "\n[[routes]]\npath = \"/withcookies\"\nupstream = \"{upstream}\"\nauth = \"none\"\nforward_cookies = true\n",
    )
    .await;
    let r = app
        .get(
            "/withcookies/x",
            &[
                (
                    "cookie",
                    "a=1; __host-OIDC-BFF=secret; __Secure-oidc-bff-login=x",
                ),
                ("cookie", "=__Host-oidc-bff=secret; b=2"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let h = &app.upstream.seen()[0].headers;
    assert_eq!(h[header::COOKIE], "a=1; b=2");
}

/// Forward-auth's `X-Auth-Request-*` follow the routes' identity-header
/// rule: a claim with whitespace at an end (read as another name once the
/// proxy's upstream trims it), a tab or C1 control, or one longer than
/// 4 KiB (a header nginx's `auth_request` cannot take) is left out, never
/// sent as it is.
#[tokio::test]
async fn forward_auth_leaves_out_identity_claims_that_are_not_header_safe() {
    let app = TestRouter::with_session_and(
        "trusted_proxies = [\"10.0.0.0/8\"]",
        "",
        "[forward_auth]\nenabled = true\n",
    )
    .await;
    let verify = |cookie: String| {
        let app = &app;
        async move {
            let headers = [
                ("x-forwarded-uri", "/api/x"),
                ("x-forwarded-method", "GET"),
                ("cookie", cookie.as_str()),
            ];
            app.send_from(
                "10.0.0.1",
                request(Method::GET, "/auth/verify", &headers, Body::empty()),
            )
            .await
        }
    };
    let hostile = app
        .logged_in_with(
            "admin ",
            serde_json::json!({
                "preferred_username": "root\t",
                "email": format!("{}@example.test", "a".repeat(5000)),
            }),
            None,
        )
        .await;
    let r = verify(hostile).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    for name in [
        "x-auth-request-user",
        "x-auth-request-preferred-username",
        "x-auth-request-email",
    ] {
        assert!(r.headers.get(name).is_none(), "{name} sent: {r}");
    }
    let c1 = app
        .logged_in_with(
            "bob",
            serde_json::json!({ "preferred_username": "bob\u{85}admin", "email": "bob@example.test" }),
            None,
        )
        .await;
    let r = verify(c1).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.header("x-auth-request-user"), "bob", "{r}");
    assert_eq!(r.header("x-auth-request-email"), "bob@example.test", "{r}");
    assert!(
        r.headers.get("x-auth-request-preferred-username").is_none(),
        "{r}"
    );
}
