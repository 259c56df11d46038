//! How errors are answered: JSON for API and XHR callers, a rendered page
//! for browser navigations (told apart by `Sec-Fetch-Mode: navigate`, or by
//! `Accept: text/html` from browsers that send no `Sec-Fetch-*`), and the
//! security headers every gateway page carries.

use axum::http::{StatusCode, header};

use crate::support::{NAVIGATION, Reply, TestRouter};

const NOT_FOUND: &str = "There is nothing here.";

/// The headers of every page the gateway renders itself.
#[track_caller]
pub fn assert_page_security_headers(r: &Reply) {
    let csp = r.header(header::CONTENT_SECURITY_POLICY);
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{r}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{r}");
    assert!(csp.contains("base-uri 'none'"), "{r}");
    assert!(!csp.contains("script-src"), "pages run no scripts: {r}");
    assert_eq!(r.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{r}");
    assert_eq!(r.header(header::REFERRER_POLICY), "no-referrer", "{r}");
    assert_eq!(r.header(header::X_FRAME_OPTIONS), "DENY", "{r}");
    assert_eq!(r.header(header::CACHE_CONTROL), "no-store", "{r}");
}

#[tokio::test]
async fn an_unknown_path_is_404_json_for_api_callers() {
    let app = TestRouter::new().await;
    let r = app.get("/nowhere", &[("accept", "application/json")]).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found", NOT_FOUND);
}

#[tokio::test]
async fn an_unknown_path_is_404_json_for_callers_that_send_no_accept() {
    let app = TestRouter::new().await;
    let r = app.get("/nowhere", &[]).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found", NOT_FOUND);
}

#[tokio::test]
async fn an_unknown_path_is_404_json_for_fetch_even_when_it_accepts_html() {
    let app = TestRouter::new().await;
    let fetch = app
        .get(
            "/nowhere",
            &[("sec-fetch-mode", "cors"), ("accept", "text/html")],
        )
        .await;
    fetch.assert_error(StatusCode::NOT_FOUND, "not_found", NOT_FOUND);
    let xhr = app
        .get(
            "/nowhere",
            &[
                ("x-requested-with", "XMLHttpRequest"),
                ("accept", "text/html"),
            ],
        )
        .await;
    xhr.assert_error(StatusCode::NOT_FOUND, "not_found", NOT_FOUND);
}

#[tokio::test]
async fn an_unknown_path_is_a_404_page_for_navigations() {
    let app = TestRouter::new().await;
    let r = app.get("/nowhere", &[("sec-fetch-mode", "navigate")]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    let html = r.text();
    assert!(html.contains("<h1>Not found</h1>"), "{r}");
    assert!(html.contains(NOT_FOUND), "{r}");
    assert!(html.contains("<code>not_found</code> (HTTP 404)"), "{r}");
}

#[tokio::test]
async fn browsers_without_sec_fetch_get_the_page_by_their_accept_header() {
    let app = TestRouter::new().await;
    let r = app
        .get("/nowhere", &[("accept", "text/html,application/xhtml+xml")])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
}

#[tokio::test]
async fn an_unknown_path_is_404_for_every_method() {
    let app = TestRouter::new().await;
    let r = app
        .send(crate::support::request(
            axum::http::Method::POST,
            "/nowhere",
            &[("x-csrf", "1")],
            axum::body::Body::empty(),
        ))
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found", NOT_FOUND);
}

#[tokio::test]
async fn error_pages_carry_the_security_headers() {
    let app = TestRouter::new().await;
    let r = app.get("/nowhere", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
    assert_page_security_headers(&r);
}

#[tokio::test]
async fn a_401_page_carries_no_www_authenticate_challenge() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/user", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert!(r.headers.get(header::WWW_AUTHENTICATE).is_none(), "{r}");
    assert_page_security_headers(&r);
    assert!(
        r.text()
            .contains(r#"<a class="button" href="/auth/login?return_to=%2F">Log in again</a>"#),
        "{r}"
    );
}

#[tokio::test]
async fn an_error_page_keeps_the_cookie_being_cleared() {
    let app = TestRouter::new().await;
    let cookie = format!("{}=bogus", crate::support::SESSION_COOKIE);
    let r = app
        .get(
            "/api/items",
            &[("cookie", &cookie), ("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    crate::support::assert_clears_session_cookie(&r);
    assert!(r.text().contains("Session expired"), "{r}");
}

#[tokio::test]
async fn an_error_page_names_the_request_id() {
    let app = TestRouter::new().await;
    let r = app.get("/nowhere", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
    let id = r.header("x-request-id");
    assert!(
        r.text().contains(&format!("request <code>{id}</code>")),
        "{r}"
    );
}
