//! The gateway's own `/auth/*` endpoints, as far as they answer without an
//! identity provider: login start (503 while the provider is unreachable),
//! callback refusals, logout, the user endpoint and back-channel logout's
//! request checks. Completed logins are the end-to-end tier's.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::json;

use crate::support::{
    NAVIGATION, PUBLIC_URL, SESSION_COOKIE, TestRouter, WWW_AUTHENTICATE,
    assert_clears_session_cookie, request,
};

#[tokio::test]
async fn login_answers_503_while_the_provider_is_unreachable() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/login", &[]).await;
    r.assert_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "provider_unavailable",
        "The identity provider cannot be reached. Please try again in a moment.",
    );
    assert!(r.headers.get(header::SET_COOKIE).is_none(), "{r}");
}

#[tokio::test]
async fn login_refuses_a_return_to_on_a_foreign_origin_before_asking_the_provider() {
    let app = TestRouter::new().await;
    let r = app
        .get("/auth/login?return_to=https://evil.example/steal", &[])
        .await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The return_to parameter points at an origin that is not allowed.",
    );
    assert!(r.headers.get(header::SET_COOKIE).is_none(), "{r}");
}

#[tokio::test]
async fn login_refuses_a_return_to_whose_dot_segments_resolve_to_another_host() {
    let app = TestRouter::new().await;
    for return_to in [
        "/.//evil.com",
        "/..//evil.com",
        "/%2e//evil.com",
        "/%2E%2E//evil.com",
        "/a/..//evil.com",
        "/./%2F/evil.com",
        "https://app.example.test/.//evil.com",
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        let r = app
            .get(&format!("/auth/login?return_to={encoded}"), &[])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{return_to}: {r}");
        assert_eq!(r.json()["error"], "bad_request", "{return_to}: {r}");
        assert!(r.headers.get(header::LOCATION).is_none(), "{r}");
        assert!(r.headers.get(header::SET_COOKIE).is_none(), "{r}");
    }
    // Unencoded, as a hand-written link would carry it.
    let r = app.get("/auth/login?return_to=/.//evil.com", &[]).await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The return_to parameter contains a . or .. path segment.",
    );
}

#[tokio::test]
async fn login_refuses_a_return_to_longer_than_2048_bytes() {
    let app = TestRouter::new().await;
    let long = format!("/{}", "a".repeat(2048));
    let r = app.get(&format!("/auth/login?return_to={long}"), &[]).await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The return_to parameter is longer than 2048 bytes.",
    );
}

#[tokio::test]
async fn login_refuses_malformed_parameters_with_its_own_json_answer() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/login?return_to=/a&return_to=/b", &[]).await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The login parameter `return_to` is repeated.",
    );
    // Bytes that are not UTF-8 decode to U+FFFD: not a path.
    let r = app.get("/auth/login?return_to=%FF", &[]).await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The return_to parameter must be a path starting with / or an http(s) URL.",
    );
}

#[tokio::test]
async fn callback_without_state_is_a_bad_request() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/callback?code=abc", &[]).await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The callback is missing its state parameter.",
    );
}

#[tokio::test]
async fn callback_without_a_started_login_or_login_cookie_is_refused_as_expired() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/callback?code=abc&state=xyz", &[]).await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "login_expired",
        "This sign-in took too long, was already completed, or was started in another browser. Please log in again.",
    );
    assert!(r.headers.get(header::SET_COOKIE).is_none(), "{r}");
}

#[tokio::test]
async fn callback_refusal_is_a_page_offering_a_new_login_for_navigations() {
    let app = TestRouter::new().await;
    let r = app
        .get("/auth/callback?code=abc&state=xyz", NAVIGATION)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    let html = r.text();
    assert!(html.contains("Sign-in expired"), "{r}");
    assert!(html.contains("/auth/login"), "{r}");
}

#[tokio::test]
async fn callback_with_a_provider_error_is_login_failed_naming_only_the_error_code() {
    let app = TestRouter::new().await;
    let r = app
        .get(
            "/auth/callback?state=xyz&error=access_denied&error_description=%3Cscript%3E",
            &[],
        )
        .await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "login_failed",
        "Sign-in did not complete: the identity provider answered `access_denied`.",
    );
}

#[tokio::test]
async fn a_provider_error_page_shows_the_error_code_as_code_without_backticks() {
    let app = TestRouter::new().await;
    let r = app
        .get(
            "/auth/callback?state=xyz&error=access_denied&error_description=%3Cscript%3E",
            NAVIGATION,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r}");
    let html = r.text();
    assert!(
        html.contains("the identity provider answered <code>access_denied</code>."),
        "{r}"
    );
    assert!(!html.contains('`'), "{r}");
    assert!(!html.contains("<script>"), "{r}");
}

#[tokio::test]
async fn logout_by_get_is_405() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/logout", &[]).await;
    r.assert_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed here.",
    );
}

#[tokio::test]
async fn logout_by_get_is_a_405_page_for_navigations() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/logout", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert!(r.text().contains("Method not allowed"), "{r}");
}

/// Every method an endpoint does not take, `GET /auth/logout` included:
/// 405 with `Allow`, and the gateway's own error in the caller's kind (JSON
/// for API calls, a page with its security headers for navigations), never
/// axum's empty body that is neither.
#[tokio::test]
async fn wrong_methods_on_own_endpoints_are_405_with_allow_and_the_error_answer() {
    let app = TestRouter::new().await;
    for (method, path, allow) in [
        (Method::POST, "/auth/login", "GET,HEAD"),
        (Method::POST, "/auth/callback", "GET,HEAD"),
        (Method::PUT, "/auth/logout", "POST"),
        (Method::GET, "/auth/logout", "POST"),
        (Method::HEAD, "/auth/logout", "POST"),
        (Method::DELETE, "/auth/user", "GET,HEAD"),
        (Method::POST, "/auth/sessions", "GET,HEAD"),
        (Method::GET, "/auth/sessions/abc/revoke", "POST"),
        (Method::GET, "/auth/backchannel-logout", "POST"),
        (Method::POST, "/auth/logout/end", "GET,HEAD"),
        (Method::POST, "/healthz", "GET,HEAD"),
        (Method::TRACE, "/auth/login", "GET,HEAD"),
        (Method::CONNECT, "/auth/callback", "GET,HEAD"),
        (Method::TRACE, "/auth/logout", "POST"),
        (Method::TRACE, "/auth/user", "GET,HEAD"),
        (Method::CONNECT, "/auth/sessions/abc/revoke", "POST"),
    ] {
        let api = app
            .send(request(
                method.clone(),
                path,
                &[("x-csrf", "1")],
                Body::empty(),
            ))
            .await;
        assert_eq!(api.header(header::ALLOW), allow, "{method} {path}: {api}");
        if method == Method::HEAD {
            assert_eq!(api.status, StatusCode::METHOD_NOT_ALLOWED, "{path}: {api}");
            assert_eq!(
                api.header(header::CONTENT_TYPE),
                "application/json",
                "{api}"
            );
            continue;
        }
        api.assert_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This method is not allowed here.",
        );
        let page = app
            .send(request(method.clone(), path, NAVIGATION, Body::empty()))
            .await;
        assert_eq!(
            page.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {page}"
        );
        assert_eq!(page.header(header::ALLOW), allow, "{method} {path}: {page}");
        assert_eq!(
            page.header(header::CONTENT_TYPE),
            "text/html; charset=utf-8",
            "{method} {path}: {page}"
        );
        assert!(page.text().contains("Method not allowed"), "{page}");
        assert!(
            page.header(header::CONTENT_SECURITY_POLICY)
                .contains("default-src 'none'"),
            "{method} {path}: {page}"
        );
    }
    // OPTIONS, which no own endpoint serves (no CORS: the SPA is
    // same-origin), is the same.
    let r = app
        .send(request(Method::OPTIONS, "/auth/user", &[], Body::empty()))
        .await;
    r.assert_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed here.",
    );
    assert_eq!(r.header(header::ALLOW), "GET,HEAD", "{r}");
}

#[tokio::test]
async fn anonymous_logout_by_fetch_clears_the_cookie_and_names_where_to_go() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(
            Method::POST,
            "/auth/logout",
            &[("x-csrf", "1")],
            Body::empty(),
        ))
        .await;
    r.assert_json(
        StatusCode::OK,
        json!({ "redirect_url": format!("{PUBLIC_URL}/") }),
    );
    assert_eq!(r.header(header::CACHE_CONTROL), "no-store", "{r}");
    assert_clears_session_cookie(&r);
}

#[tokio::test]
async fn logout_end_without_a_handle_redirects_to_the_post_logout_page() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/logout/end", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r}");
    assert_eq!(r.header(header::LOCATION), format!("{PUBLIC_URL}/"), "{r}");
    assert_eq!(r.header(header::CACHE_CONTROL), "no-store", "{r}");
}

#[tokio::test]
async fn the_logged_out_page_is_html_with_the_page_security_headers() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/logged-out", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    crate::errors::assert_page_security_headers(&r);
    assert!(r.text().contains("You are logged out"), "{r}");
    assert!(
        r.text().contains(r#"href="/auth/login?return_to=%2F""#),
        "{r}"
    );
}

#[tokio::test]
async fn the_pages_link_an_icon_the_gateway_serves() {
    let app = TestRouter::new().await;
    let page = app.get("/auth/logged-out", &[]).await;
    assert!(
        page.text()
            .contains(r#"<link rel="icon" href="/auth/favicon.svg""#),
        "{page}"
    );
    let icon = app.get("/auth/favicon.svg", &[]).await;
    assert_eq!(icon.status, StatusCode::OK, "{icon}");
    assert_eq!(icon.header(header::CONTENT_TYPE), "image/svg+xml");
    assert!(icon.text().starts_with("<svg"), "{icon}");
    assert!(!icon.text().contains("<script"), "{icon}");
    assert!(
        icon.header(header::CONTENT_SECURITY_POLICY)
            .starts_with("default-src 'none'"),
        "{icon}"
    );
}

#[tokio::test]
async fn user_is_401_json_with_no_store_when_anonymous() {
    let app = TestRouter::new().await;
    let r = app.get("/auth/user", &[]).await;
    r.assert_error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "You are not logged in.",
    );
    assert_eq!(r.header(header::WWW_AUTHENTICATE), WWW_AUTHENTICATE, "{r}");
}

#[tokio::test]
async fn user_with_a_bogus_cookie_is_401_and_clears_the_cookie() {
    let app = TestRouter::new().await;
    let cookie = format!("{SESSION_COOKIE}=bogus");
    let r = app.get("/auth/user", &[("cookie", &cookie)]).await;
    r.assert_session_ended("expired", "Your session has ended. Please log in again.");
    assert_clears_session_cookie(&r);
}

#[tokio::test]
async fn user_of_a_revoked_session_is_401_naming_how_it_ended() {
    use oidc_bff::session::store::RevokeReason;
    let app = TestRouter::new().await;
    for (revoked, reason, message) in [
        (
            RevokeReason::Logout,
            "logged_out",
            "You have logged out. Log in again to continue.",
        ),
        (
            RevokeReason::User,
            "revoked_by_user",
            "This session was ended from another of your sessions. Please log in again.",
        ),
        (
            RevokeReason::Admin,
            "revoked_by_operator",
            "This session was ended by an administrator.",
        ),
        (
            RevokeReason::Backchannel,
            "ended_at_provider",
            "You were logged out at the identity provider. Please log in again.",
        ),
        (
            RevokeReason::RefreshFailed,
            "refresh_refused",
            "The identity provider no longer accepts this session. Please log in again.",
        ),
        (
            RevokeReason::Limit,
            "session_limit",
            "This session was closed because you logged in on too many devices.",
        ),
    ] {
        let cookie = app.logged_in("alice").await;
        app.revoke(&cookie, revoked).await;
        let r = app.get("/auth/user", &[("cookie", &cookie)]).await;
        r.assert_session_ended(reason, message);
        assert_clears_session_cookie(&r);
    }
}

#[tokio::test]
async fn a_forged_cookie_reads_exactly_like_an_expired_session() {
    let app = TestRouter::new().await;
    // Well-formed, never issued: indistinguishable from a session whose
    // record expired (no tombstone either way).
    let forged = format!("{SESSION_COOKIE}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let bogus = format!("{SESSION_COOKIE}=bogus");
    let a = app.get("/auth/user", &[("cookie", &forged)]).await;
    let b = app.get("/auth/user", &[("cookie", &bogus)]).await;
    a.assert_session_ended("expired", "Your session has ended. Please log in again.");
    assert_eq!(a.body, b.body, "{a}\n{b}");
}

#[tokio::test]
async fn user_shows_the_claims_of_a_session_and_never_its_token() {
    let app = TestRouter::new().await;
    let cookie = app.logged_in("alice").await;
    let r = app.get("/auth/user", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.header(header::CACHE_CONTROL), "no-store", "{r}");
    let v = r.json();
    assert_eq!(v["sub"], "alice", "{r}");
    assert_eq!(
        v["claims"],
        json!({ "sub": "alice", "name": "Router Test" }),
        "{r}"
    );
    assert!(!r.text().contains("access-token-for-alice"), "{r}");
}

#[tokio::test]
async fn backchannel_logout_refuses_a_body_that_is_not_a_form() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(
            Method::POST,
            "/auth/backchannel-logout",
            &[("content-type", "application/json")],
            Body::from(r#"{"logout_token":"x"}"#),
        ))
        .await;
    r.assert_json(
        StatusCode::BAD_REQUEST,
        json!({
            "error": "invalid_request",
            "error_description": "expected an application/x-www-form-urlencoded body",
        }),
    );
    assert_eq!(r.header(header::CACHE_CONTROL), "no-store", "{r}");
}

#[tokio::test]
async fn backchannel_logout_refuses_a_form_without_a_logout_token() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(
            Method::POST,
            "/auth/backchannel-logout",
            &[("content-type", "application/x-www-form-urlencoded")],
            Body::from("token=x"),
        ))
        .await;
    r.assert_json(
        StatusCode::BAD_REQUEST,
        json!({ "error": "invalid_request", "error_description": "missing logout_token" }),
    );
}

/// Parameters the endpoint's parser refuses (a repeated one, an escape that
/// is not UTF-8) are the gateway's own 400, JSON or a page, on every
/// endpoint that reads query or path parameters; never axum's plain-text
/// rejection, which quotes the parser (`duplicate field`).
#[tokio::test]
async fn malformed_query_and_path_parameters_are_the_gateways_own_400() {
    let app = TestRouter::with("[oidc.frontchannel_logout]\nenabled = true\n").await;
    for (method, path) in [
        (Method::GET, "/auth/logout/end?h=a&h=b"),
        (Method::GET, "/auth/frontchannel-logout?sid=a&sid=b&iss=x"),
        (Method::POST, "/auth/sessions/%FF%FE/revoke"),
    ] {
        let api = app
            .send(request(
                method.clone(),
                path,
                &[("x-csrf", "1")],
                Body::empty(),
            ))
            .await;
        assert_eq!(
            api.status,
            StatusCode::BAD_REQUEST,
            "{method} {path}: {api}"
        );
        assert_eq!(
            api.header(header::CONTENT_TYPE),
            "application/json",
            "{path}: {api}"
        );
        let body = api.text();
        assert_eq!(api.json()["error"], "bad_request", "{path}: {api}");
        assert!(
            !body.contains("duplicate") && !body.contains("Failed"),
            "{path}: {api}"
        );
        let page = app
            .send(request(
                method.clone(),
                path,
                &[NAVIGATION, &[("x-csrf", "1")]].concat(),
                Body::empty(),
            ))
            .await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{method} {path}: {page}"
        );
        assert_eq!(
            page.header(header::CONTENT_TYPE),
            "text/html; charset=utf-8",
            "{path}: {page}"
        );
    }
}

/// The form's media type is read as RFC 9110 says (case-insensitive, the
/// whole type, parameters aside), and a repeated `logout_token` is refused
/// as such rather than read one way or the other.
#[tokio::test]
async fn backchannel_logout_reads_the_media_type_exactly_and_refuses_a_repeated_token() {
    let app = TestRouter::new().await;
    let post = |content_type: &'static str, body: &'static str| {
        request(
            Method::POST,
            "/auth/backchannel-logout",
            &[("content-type", content_type)],
            Body::from(body),
        )
    };
    let not_a_form = json!({
        "error": "invalid_request",
        "error_description": "expected an application/x-www-form-urlencoded body",
    });
    let r = app
        .send(post("Application/X-WWW-Form-Urlencoded", "logout_token=x"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r}");
    assert_ne!(r.json(), not_a_form, "a form in capitals is a form: {r}");
    let r = app
        .send(post(
            "application/x-www-form-urlencodedXYZ",
            "logout_token=x",
        ))
        .await;
    r.assert_json(StatusCode::BAD_REQUEST, not_a_form);
    let r = app
        .send(post(
            "application/x-www-form-urlencoded",
            "logout_token=a&logout_token=b",
        ))
        .await;
    r.assert_json(
        StatusCode::BAD_REQUEST,
        json!({ "error": "invalid_request", "error_description": "logout_token is repeated" }),
    );
}
