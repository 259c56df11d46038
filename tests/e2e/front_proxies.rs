//! Forward-auth behind real front proxies from Debian (nginx
//! `auth_request`, Caddy `forward_auth`, HAProxy with the shipped Lua
//! action), each started with the config docs/deployment.md shows: the
//! browser talks only to the proxy, which routes `/auth/*` to the gateway
//! and `/api/*` to a recording upstream after asking the gateway.

use reqwest::{Method, StatusCode};

use crate::harness::front_proxy::{FrontProxy, Kind, template_text};
use crate::harness::{Browser, Gateway, GatewayBuilder, Upstream, unique_user};

/// A gateway with forward-auth on, whose public origin is the proxy's, and
/// the proxy in front of it and `upstream`.
async fn behind(kind: Kind, upstream: &Upstream) -> (Gateway, FrontProxy) {
    let port = FrontProxy::reserve_port();
    let gw = GatewayBuilder::new(upstream)
        .public_url(&format!("http://127.0.0.1:{port}"))
        .configure(forward_auth_on)
        .start()
        .await;
    let proxy = FrontProxy::start(kind, port, gw.addr, upstream.addr.expect("started"));
    (gw, proxy)
}

/// An API call through the proxy. The recording upstream answers with a
/// `Set-Cookie` for the gateway's cookie name, which the proxy passes on
/// as it passes any upstream cookie (a real browser drops it: `__Host-`
/// needs `Secure`); the scripted browser keeps its own session cookie.
async fn api(
    b: &mut Browser,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> crate::harness::browser::Resp {
    let kept = b.cookies.clone();
    let body = (method != Method::GET).then(|| "x".repeat(200 * 1024));
    let r = b.request(method, path, headers, body).await;
    b.cookies = kept;
    r
}

/// Forward-auth on, answered to loopback peers (the front proxies and the
/// tests' own client).
fn forward_auth_on(c: &mut oidc_bff::config::RawConfig) {
    c.server.trusted_proxies = vec!["127.0.0.1/32".into()];
    c.forward_auth.enabled = true;
}

/// What the browser must never see on any answer.
fn assert_no_token_or_identity(r: &crate::harness::browser::Resp, what: &str) {
    for h in [
        "authorization",
        "x-auth-request-user",
        "x-auth-request-email",
    ] {
        assert!(
            !r.headers.contains_key(h),
            "{what}: the browser got {h}: {r:?}"
        );
    }
    assert!(
        !r.body.contains("Bearer "),
        "{what}: a token in the body: {r:?}"
    );
}

/// The whole flow for one proxy: refused before login, login through the
/// proxy, the API call reaches the upstream with the token and identity and
/// without the gateway's cookie (forged copies replaced), the browser never
/// sees the token, unsafe methods need the anti-CSRF header, logout, 401.
async fn forward_auth_flow(kind: Kind) {
    let upstream = Upstream::start().await;
    let (gw, proxy) = behind(kind, &upstream).await;
    let mut b = Browser::new(&gw);
    b.base = proxy.base.clone();
    let logs = || proxy.logs();

    let r = b.get("/api/items").await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "{kind:?} before login: {r:?}\n{}",
        logs()
    );
    let r = b.navigate("/api/page?a=1").await;
    let login = format!("{}/auth/login?return_to=%2Fapi%2Fpage%3Fa%3D1", proxy.base);
    match kind {
        // The proxy turns the gateway's 401 into the redirect.
        Kind::Nginx | Kind::Haproxy => {
            assert_eq!(
                r.status,
                StatusCode::FOUND,
                "{kind:?} navigation: {r:?}\n{}",
                logs()
            );
            assert_eq!(r.location().as_deref(), Some(login.as_str()));
        }
        // Caddy passes the gateway's answer on: the page, and the URL.
        Kind::Caddy => {
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{kind:?} navigation: {r:?}"
            );
            assert_eq!(r.headers["x-auth-login-url"], login.as_str());
        }
    }
    assert_eq!(
        upstream.count(),
        0,
        "{kind:?}: nothing reaches the upstream without a session"
    );

    let user = unique_user("fwd");
    b.login_as(&user).await;
    let r = api(
        &mut b,
        Method::GET,
        "/api/items?x=1",
        &[
            ("x-auth-request-user", "mallory"),
            // What CGI-style upstreams read as X-Auth-Request-User too.
            ("x_auth_request_user", "mallory"),
            ("x-auth_request-email", "mallory@evil.example"),
            ("authorization", "Bearer forged"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{kind:?} api: {r:?}\n{}", logs());
    assert_no_token_or_identity(&r, "api answer");
    let seen = upstream
        .seen()
        .pop()
        .expect("the call reached the upstream");
    assert_eq!(seen.uri, "/api/items?x=1");
    let auth = seen.header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with("Bearer ") && auth != "Bearer forged",
        "{kind:?}: {seen:?}"
    );
    assert_eq!(
        seen.header("x-auth-request-user").as_deref(),
        Some(user.as_str())
    );
    let email = format!("{user}@example.com");
    assert_eq!(
        seen.header("x-auth-request-email").as_deref(),
        Some(email.as_str())
    );
    let spoofed: Vec<_> = seen
        .headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .collect();
    assert!(
        spoofed.is_empty(),
        "{kind:?}: {spoofed:?} reached the upstream"
    );
    let cookie = seen.header("cookie").unwrap_or_default();
    assert!(
        !cookie.contains("oidc-bff"),
        "{kind:?}: the gateway's cookie went upstream: {cookie}"
    );

    // The endpoint itself is not reachable from outside.
    let r = b
        .request(
            Method::GET,
            "/auth/verify",
            &[("x-original-uri", "/api/items")],
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "{kind:?} /auth/verify from outside: {r:?}"
    );
    assert_no_token_or_identity(&r, "/auth/verify from outside");

    // Unsafe methods: refused without the header, through (body and all)
    // with it.
    let before = upstream.count();
    let r = api(&mut b, Method::POST, "/api/items", &[]).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "{kind:?} POST without CSRF: {r:?}\n{}",
        logs()
    );
    assert_eq!(upstream.count(), before);
    let r = api(&mut b, Method::POST, "/api/items", &[("x-csrf", "1")]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{kind:?} POST with CSRF: {r:?}\n{}",
        logs()
    );
    let seen = upstream
        .seen()
        .pop()
        .expect("the POST reached the upstream");
    assert_eq!((seen.method.as_str(), seen.body_len), ("POST", 200 * 1024));

    let r = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert!(
        r.status.is_redirection() || r.status.is_success(),
        "{kind:?} logout: {r:?}"
    );
    let before = upstream.count();
    let r = api(&mut b, Method::GET, "/api/items", &[]).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "{kind:?} after logout: {r:?}"
    );
    assert_eq!(
        upstream.count(),
        before,
        "{kind:?}: nothing reaches the upstream after logout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_lets_the_session_through_to_the_upstream_and_refuses_after_logout() {
    forward_auth_flow(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_lets_the_session_through_to_the_upstream_and_refuses_after_logout() {
    forward_auth_flow(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_lua_forward_auth_lets_the_session_through_to_the_upstream_and_refuses_after_logout()
 {
    forward_auth_flow(Kind::Haproxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_answers_only_the_trusted_proxies() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.server.trusted_proxies = vec!["10.0.0.0/8".into()];
            c.forward_auth.enabled = true;
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("fwd-untrusted")).await;
    let r = b
        .request(
            Method::GET,
            "/auth/verify",
            &[("x-original-uri", "/api/items")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_no_token_or_identity(&r, "untrusted peer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_refuses_ambiguous_original_paths() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(forward_auth_on)
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("fwd-paths")).await;
    for path in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/a%2Fb",
        "/api\\x",
    ] {
        let r = b
            .request(
                Method::GET,
                "/auth/verify",
                &[("x-original-uri", path)],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {r:?}");
        assert_no_token_or_identity(&r, path);
    }
    // A path no route covers follows `default_auth` ("required").
    let r = b
        .request(
            Method::GET,
            "/auth/verify",
            &[("x-original-uri", "/elsewhere")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.headers.contains_key("authorization"));
}

/// The original path is judged as the route an upstream will read it as:
/// `/ADMIN/x` or `/%61dmin/x` fall under no route by their exact spelling
/// (so `default_auth = "none"` would let them through anonymously), but
/// nearly every upstream reads the escape as `a`, and many ignore case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_refuses_a_path_that_reads_as_a_routes_under_another_spelling() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .route(crate::harness::route("/admin", &upstream.url()))
        .configure(|c| {
            forward_auth_on(c);
            c.forward_auth.default_auth = "none".into();
        })
        .start()
        .await;
    let mut anonymous = Browser::new(&gw);
    let verify = |path: &'static str| [("x-forwarded-uri", path), ("x-forwarded-method", "GET")];
    let r = anonymous
        .request(Method::GET, "/auth/verify", &verify("/admin/x"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "exact spelling: {r:?}");
    for path in [
        "/ADMIN/x",
        "/%61dmin/x",
        "/admin;jsessionid=1/x",
        "/Admin.",
        "/%EF%BD%81dmin/x",
        "/adm%C4%B1n",
    ] {
        let r = anonymous
            .request(Method::GET, "/auth/verify", &verify(path), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {r:?}");
        assert_no_token_or_identity(&r, path);
    }
    let r = anonymous
        .request(Method::GET, "/auth/verify", &verify("/elsewhere"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "default_auth none: {r:?}");
}

/// Forward-auth holds the original request to the proxy's method rules:
/// `trace` in any case is 405, and a method-override header makes the
/// request state-changing (the anti-CSRF header needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_holds_method_overrides_and_lowercase_trace_to_the_method_rules() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(forward_auth_on)
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("fwd-methods")).await;
    for method in ["trace", "TRACK", "GET"] {
        let mut headers = vec![
            ("x-forwarded-uri", "/api/x"),
            ("x-forwarded-method", method),
        ];
        if method == "GET" {
            headers.push(("x-http-method-override", "TRACE"));
        }
        let r = b.request(Method::GET, "/auth/verify", &headers, None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}: {r:?}");
        assert_no_token_or_identity(&r, method);
    }
    let r = b
        .request(
            Method::GET,
            "/auth/verify",
            &[
                ("x-forwarded-uri", "/api/x"),
                ("x-forwarded-method", "GET"),
                ("x-http-method-override", "DELETE"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_no_token_or_identity(&r, "override without the CSRF header");
}

/// The login URL forward-auth hands a browser navigation always leads to
/// a login: an original URI that `/auth/login` would refuse as its
/// `return_to` (over 2048 bytes, an encoded control or backslash in its
/// query) is left
/// out, and the login comes back to the app's root, where it used to
/// lead to a 400 page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_login_urls_lead_to_a_login_even_for_original_uris_login_would_refuse() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(forward_auth_on)
        .start()
        .await;
    let long = format!("/api/{}", "a".repeat(3000));
    for (original, kept) in [
        ("/api/page?x=1", true),
        (long.as_str(), false),
        ("/api/page?q=a%0Ab", false),
        ("/api/page?q=%5C", false),
    ] {
        let mut b = Browser::new(&gw);
        let r = b
            .request(
                Method::GET,
                "/auth/verify",
                &[
                    ("x-forwarded-uri", original),
                    ("x-forwarded-method", "GET"),
                    ("sec-fetch-mode", "navigate"),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{original}: {r:?}");
        let login = r
            .headers
            .get("x-auth-login-url")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{original}: no login URL: {r:?}"))
            .to_owned();
        assert!(login.starts_with(&gw.url("/auth/login")), "{login}");
        assert_eq!(login.contains("return_to="), kept, "{original}: {login}");
        let r = b.request(Method::GET, &login, &[], None).await;
        assert!(
            r.status.is_redirection(),
            "{original}: the login URL must start a login: {r:?}"
        );
    }
}

#[test]
fn docs_show_the_tested_front_proxy_configs_verbatim() {
    let docs =
        std::fs::read_to_string(crate::harness::procs::repo_root().join("docs/deployment.md"))
            .expect("docs/deployment.md");
    for name in [
        "nginx.conf",
        "Caddyfile",
        "haproxy.cfg",
        "oidc-bff-forward-auth.lua",
    ] {
        let text = template_text(name);
        assert!(
            docs.contains(text.trim_end()),
            "docs/deployment.md must show config/front-proxies/{name} verbatim (copy it in)"
        );
    }
}

/// The gateway's endpoints stay at the origin's root (`public_url` is an
/// origin); an app under a sub-path is protected by routes with that
/// prefix, and the login URL returns to the sub-path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_protects_an_app_under_a_sub_path() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .route(crate::harness::route("/app/api", &upstream.url()))
        .configure(|c| {
            forward_auth_on(c);
            c.forward_auth.default_auth = "none".into();
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    let verify = |uri: &'static str| [("x-original-uri", uri)];
    let r = b
        .request(Method::GET, "/auth/verify", &verify("/app/page"), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "outside the route, default_auth none: {r:?}"
    );
    let r = b
        .request(
            Method::GET,
            "/auth/verify",
            &[
                ("x-original-uri", "/app/api/x?y=1"),
                ("accept", "text/html"),
                ("sec-fetch-mode", "navigate"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(
        r.headers["x-auth-login-url"],
        format!("{}/auth/login?return_to=%2Fapp%2Fapi%2Fx%3Fy%3D1", gw.base).as_str()
    );
    b.login_as(&unique_user("fwd-subpath")).await;
    let r = b
        .request(Method::GET, "/auth/verify", &verify("/app/api/x"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.headers.contains_key("authorization"));
}

/// Envoy's `ext_authz` names no headers: the original path follows the
/// endpoint's, and the method is the original one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_reads_envoys_appended_original_path() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(forward_auth_on)
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("fwd-envoy")).await;
    let r = b.get("/auth/verify/api/items?a=1").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.headers.contains_key("authorization"));
    let r = b
        .request(Method::DELETE, "/auth/verify/api/items", &[], None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "unsafe method without CSRF: {r:?}"
    );
    assert_eq!(r.json()["error"], "csrf_rejected");
    let r = b
        .request(
            Method::GET,
            "/auth/verify/api/items",
            &[("x-original-uri", "/public")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "two names: {r:?}");
}

/// As on proxied routes, a WebSocket handshake from another origin is
/// refused (a browser sends no CSRF header on one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_refuses_websocket_handshakes_from_other_origins() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(forward_auth_on)
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("fwd-ws")).await;
    let own = gw.base.clone();
    for (origin, want) in [
        ("https://evil.example", StatusCode::FORBIDDEN),
        (own.as_str(), StatusCode::OK),
    ] {
        let handshake = [
            ("x-original-uri", "/api/ws"),
            ("upgrade", "websocket"),
            ("origin", origin),
        ];
        let r = b
            .request(Method::GET, "/auth/verify", &handshake, None)
            .await;
        assert_eq!(r.status, want, "origin {origin}: {r:?}");
        if want != StatusCode::OK {
            assert_no_token_or_identity(&r, "cross-origin handshake");
        }
    }
}

/// Forward-auth applies the route's policy and sends its identity headers,
/// as the gateway's own proxy does: a user outside the group is 403 with
/// what was missing, a member gets the token and `X-User`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_applies_the_routes_policy_and_identity_headers() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            forward_auth_on(c);
            c.routes[0].require = vec![oidc_bff::config::RawCondition {
                claim: Some("groups".into()),
                any_of: Some(vec!["admins".into()]),
                ..oidc_bff::config::RawCondition::default()
            }];
            c.routes[0].identity_headers =
                std::collections::BTreeMap::from([("X-User".into(), "sub".into())]);
        })
        .start()
        .await;
    let mut staff = Browser::new(&gw);
    staff.login_as(&unique_user("fwd-staff")).await;
    let r = staff
        .request(
            Method::GET,
            "/auth/verify",
            &[
                ("x-original-uri", "/api/items"),
                ("accept", "application/json"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(r.json()["error"], "forbidden");
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("admins")),
        "{r:?}"
    );
    assert!(!r.headers.contains_key("authorization"), "{r:?}");
    let admin_name = unique_user("admin");
    let mut admin = Browser::new(&gw);
    admin.login_as(&admin_name).await;
    let r = admin
        .request(
            Method::GET,
            "/auth/verify",
            &[("x-original-uri", "/api/items")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.headers.contains_key("authorization"), "{r:?}");
    assert_eq!(
        r.headers.get("x-user").and_then(|v| v.to_str().ok()),
        Some(admin_name.as_str()),
        "{r:?}"
    );
}
