//! The gateway mounted under a path (`server.public_url =
//! "https://app.example.test/app"`) behind a proxy that does not strip it:
//! its own endpoints and the static app move under `/app`, configured
//! routes are written in full, and every URL it makes includes `/app`.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};

use crate::support::{NAVIGATION, TempDir, TestRouter, request};

const INDEX: &str = "<!doctype html><title>SPA</title>";

async fn mounted() -> TestRouter {
    let dir = TempDir::new();
    dir.write("www/index.html", INDEX);
    dir.write("www/robots.txt", "User-agent: *");
    dir.write("www/docs/index.html", "docs");
    TestRouter::mounted(
        dir,
        "/app",
        "",
        "[static]\ndir = \"{dir}/www\"\n\n[[routes]]\npath = \"/app/api\"\nupstream = \"{upstream}\"\nauth = \"none\"\n",
    )
    .await
}

#[tokio::test]
async fn the_gateways_own_endpoints_are_served_under_the_mount_path_only() {
    let app = mounted().await;
    let r = app.get("/app/auth/user", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert_eq!(r.json()["error"], "unauthenticated", "{r}");
    assert_eq!(
        r.header(header::WWW_AUTHENTICATE),
        "Session realm=\"oidc-bff\", login=\"/app/auth/login\""
    );
    for outside in ["/auth/user", "/healthz", "/readyz", "/", "/index.html"] {
        let r = app.get(outside, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{outside}: {r}");
    }
    let r = app.get("/app/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
}

#[tokio::test]
async fn a_route_written_in_full_under_the_mount_path_forwards_its_path_unchanged() {
    let app = mounted().await;
    let r = app.get("/app/api/items?x=1", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(app.upstream.uris(), vec!["/app/api/items?x=1".to_owned()]);
}

#[tokio::test]
async fn the_static_app_is_served_under_the_mount_path() {
    let app = mounted().await;
    for path in ["/app/", "/app", "/app/some/client/route"] {
        let r = app.get(path, NAVIGATION).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r}");
        assert_eq!(r.text(), INDEX, "{path}");
    }
    let r = app.get("/app/robots.txt", &[]).await;
    assert_eq!(r.text(), "User-agent: *", "{r}");
    // A directory's redirect keeps the mount path.
    let r = app.get("/app/docs", &[]).await;
    if r.status.is_redirection() {
        assert_eq!(r.header(header::LOCATION), "/app/docs/", "{r}");
    }
    // The gateway's own namespace under the mount is not the app's.
    let r = app.get("/app/auth/nothing", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
}

#[tokio::test]
async fn the_gateways_pages_link_under_the_mount_path() {
    let app = mounted().await;
    // No provider runs: the login is refused before any redirect, but the
    // pages it renders link under the mount path.
    let r = app.get("/app/auth/logged-out", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let html = r.text();
    assert!(
        html.contains("href=\"/app/auth/login?return_to=%2Fapp%2F\""),
        "{html}"
    );
    assert!(html.contains("href=\"/app/\""), "{html}");
    assert!(html.contains("href=\"/app/auth/favicon.svg\""), "{html}");
    let r = app.get("/app/auth/favicon.svg", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
}

#[tokio::test]
async fn user_reports_a_logout_url_under_the_mount_path() {
    let app = mounted().await;
    let cookie = app.logged_in("alice").await;
    let r = app.get("/app/auth/user", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let url = r.json()["logout_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(url.starts_with("/app/auth/logout?sid="), "{url}");
}

#[tokio::test]
async fn a_route_at_the_mount_path_itself_leaves_the_gateways_endpoints_in_place() {
    let app = TestRouter::mounted(
        TempDir::new(),
        "/app",
        "",
        "[[routes]]\npath = \"/app\"\nupstream = \"{upstream}\"\nauth = \"none\"\n",
    )
    .await;
    let r = app.get("/app/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let r = app.get("/app/auth/user", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    let r = app.get("/app/page", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(app.upstream.uris(), vec!["/app/page".to_owned()]);
}

#[tokio::test]
async fn forward_auth_is_under_the_mount_path_and_names_a_login_url_under_it() {
    let app = TestRouter::mounted(
        TempDir::new(),
        "/app",
        "trusted_proxies = [\"10.0.0.0/8\"]",
        "[forward_auth]\nenabled = true\n",
    )
    .await;
    let mut headers = NAVIGATION.to_vec();
    headers.push(("x-forwarded-uri", "/app/api/x"));
    headers.push(("x-forwarded-method", "GET"));
    let r = app
        .send_from(
            "10.0.0.1",
            request(Method::GET, "/app/auth/verify", &headers, Body::empty()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert_eq!(
        r.header("x-auth-login-url"),
        "https://app.example.test/app/auth/login?return_to=%2Fapp%2Fapi%2Fx",
        "{r}"
    );
    let r = app
        .send_from(
            "10.0.0.1",
            request(Method::GET, "/auth/verify", &headers, Body::empty()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
}

/// The same gateway behind a proxy that strips `/app` and says so with
/// `X-Forwarded-Prefix`: from a trusted proxy the request is routed as if
/// the prefix were there; from anyone else, or naming another prefix, the
/// header changes nothing.
#[tokio::test]
async fn a_trusted_proxy_that_strips_the_mount_path_names_it_in_x_forwarded_prefix() {
    let dir = TempDir::new();
    dir.write("www/index.html", INDEX);
    let app = TestRouter::mounted(
        dir,
        "/app",
        "trusted_proxies = [\"10.0.0.0/8\"]\n",
        "[static]\ndir = \"{dir}/www\"\n\n[[routes]]\npath = \"/app/api\"\nupstream = \"{upstream}\"\nauth = \"none\"\n",
    )
    .await;
    let stripped = |path: &str, prefix: &str| {
        request(
            Method::GET,
            path,
            &[("x-forwarded-prefix", prefix)],
            Body::empty(),
        )
    };
    let r = app
        .send_from("10.1.2.3", stripped("/auth/user", "/app"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert_eq!(
        r.header(header::WWW_AUTHENTICATE),
        "Session realm=\"oidc-bff\", login=\"/app/auth/login\""
    );
    let r = app
        .send_from("10.1.2.3", stripped("/api/items?x=1", "/app/"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(app.upstream.uris(), vec!["/app/api/items?x=1".to_owned()]);
    // Not from a trusted proxy, or another prefix: routed as it came (404).
    let r = app
        .send_from("192.0.2.7", stripped("/auth/user", "/app"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
    let r = app
        .send_from("10.1.2.3", stripped("/auth/user", "/other"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
    // A request that already carries the path is not prefixed twice.
    let r = app
        .send_from("10.1.2.3", stripped("/app/healthz", "/app"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
}
