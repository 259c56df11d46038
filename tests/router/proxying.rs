//! Proxied routes: what is refused before the upstream (dot segments,
//! anonymous calls to required routes, cookies that name no session) and
//! what the upstream receives when a call goes through.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};

use crate::support::{
    SESSION_COOKIE, TestRouter, WWW_AUTHENTICATE, assert_clears_session_cookie, request,
};

#[tokio::test]
async fn dot_segment_paths_are_refused_and_never_reach_the_upstream() {
    let app = TestRouter::new().await;
    for path in [
        "/api/../x",
        "/api/%2e%2e/x",
        "/api/%2E%2E/x",
        "/api/./x",
        "/api/%2e/x",
        "/public/../admin",
        "/public/x/..",
    ] {
        let r = app.get(path, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {r}");
        r.assert_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Paths with dot segments are not forwarded.",
        );
    }
    // The same upstream does receive an ordinary call: nothing above was
    // lost on the way, it was refused.
    let r = app.get("/public/ok", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(app.upstream.uris(), vec!["/public/ok".to_owned()]);
}

#[tokio::test]
async fn dot_segment_paths_are_refused_even_with_the_csrf_header_on_a_state_changing_call() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(
            Method::POST,
            "/public/%2e%2e/api",
            &[("x-csrf", "1")],
            Body::empty(),
        ))
        .await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "Paths with dot segments are not forwarded.",
    );
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn an_anonymous_call_to_a_required_route_is_401_json_with_a_challenge() {
    let app = TestRouter::new().await;
    let r = app
        .get("/api/items", &[("accept", "application/json")])
        .await;
    r.assert_error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "You are not logged in.",
    );
    assert_eq!(r.header(header::WWW_AUTHENTICATE), WWW_AUTHENTICATE, "{r}");
    assert!(r.headers.get(header::SET_COOKIE).is_none(), "{r}");
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn an_anonymous_navigation_to_a_required_route_is_a_401_page_not_a_redirect() {
    let app = TestRouter::new().await;
    let r = app.get("/api/items", crate::support::NAVIGATION).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert!(r.headers.get(header::LOCATION).is_none(), "{r}");
    assert!(r.text().contains("You are not logged in."), "{r}");
}

#[tokio::test]
async fn a_bogus_session_cookie_is_401_and_clears_the_cookie() {
    let app = TestRouter::new().await;
    let cookie = format!("{SESSION_COOKIE}=not-a-session-id");
    let r = app.get("/api/items", &[("cookie", &cookie)]).await;
    r.assert_session_ended("expired", "Your session has ended. Please log in again.");
    assert_eq!(r.header(header::WWW_AUTHENTICATE), WWW_AUTHENTICATE, "{r}");
    assert_clears_session_cookie(&r);
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn a_well_formed_cookie_for_an_unknown_session_is_401_and_clears_the_cookie() {
    let app = TestRouter::new().await;
    // A real session's cookie, presented to a gateway whose store never
    // held it: same shape, no record.
    let other = TestRouter::new().await;
    let cookie = other.logged_in("alice").await;
    let r = app.get("/api/items", &[("cookie", &cookie)]).await;
    r.assert_session_ended("expired", "Your session has ended. Please log in again.");
    assert_clears_session_cookie(&r);
}

#[tokio::test]
async fn an_optional_route_forwards_anonymous_calls_without_a_token() {
    let app = TestRouter::new().await;
    let r = app.get("/maybe/items?page=2", &[]).await;
    r.assert_json(StatusCode::OK, serde_json::json!({ "upstream": "ok" }));
    let seen = app.upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/maybe/items?page=2");
    assert!(seen[0].headers.get(header::AUTHORIZATION).is_none());
}

#[tokio::test]
async fn an_optional_route_forwards_a_bogus_cookie_as_anonymous() {
    let app = TestRouter::new().await;
    let cookie = format!("{SESSION_COOKIE}=not-a-session-id");
    let r = app.get("/maybe/items", &[("cookie", &cookie)]).await;
    r.assert_json(StatusCode::OK, serde_json::json!({ "upstream": "ok" }));
    let seen = app.upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].headers.get(header::AUTHORIZATION).is_none());
    assert!(seen[0].headers.get(header::COOKIE).is_none());
}

#[tokio::test]
async fn a_logged_in_call_is_forwarded_with_the_access_token_and_without_cookies() {
    let app = TestRouter::new().await;
    let cookie = app.logged_in("alice").await;
    let r = app
        .send(request(
            Method::POST,
            "/api/items?x=1",
            &[
                ("cookie", &format!("{cookie}; theme=dark")),
                ("x-csrf", "1"),
                ("authorization", "Bearer forged-by-the-browser"),
            ],
            Body::from("{}"),
        ))
        .await;
    r.assert_json(StatusCode::OK, serde_json::json!({ "upstream": "ok" }));
    let seen = app.upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].uri, "/api/items?x=1");
    let h = &seen[0].headers;
    assert_eq!(h[header::AUTHORIZATION], "Bearer access-token-for-alice");
    assert!(h.get(header::COOKIE).is_none(), "{h:?}");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "app.example.test");
}

/// Paths that some upstream reads outside the route's prefix (Tomcat drops
/// `;params`, Node and IIS read `\` as `/`, nginx decodes `%2F`, some
/// servers decode twice or accept overlong UTF-8), or reads differently
/// from the gateway. `{}` is the route prefix.
const AMBIGUOUS_PATHS: &[&str] = &[
    "{}/..;/admin",
    "{}/..;x/admin",
    "{}/.;/admin",
    "{}/..\\admin",
    "{}/x\\..\\..\\admin",
    "{}/..%2fadmin",
    "{}/..%2Fadmin",
    "{}/%2e%2e%2fadmin",
    "{}/%2e%2e%5cadmin",
    "{}/..%5cadmin",
    "{}/..%00/admin",
    "{}/..%3b/admin",
    "{}/a%2fb",
    "{}/a%5Cb",
    "{}/a%3bb",
    "{}/x%2ejson",
    "{}/a%00b",
    "{}/a%0d%0ab",
    "{}/%252e%252e/admin",
    "{}/%c0%ae%c0%ae/admin",
    "{}/%u002e%u002e/admin",
    "{}/%zz",
    "{}/%EF%BC%8E%EF%BC%8E/admin",
    "{}/..%20/admin",
    "{}/.../admin",
    "{}//admin",
];

/// Sends every ambiguous path under `prefix` with `headers`; each must be
/// a 400 JSON `bad_request`.
async fn assert_every_ambiguous_path_is_refused(
    app: &TestRouter,
    prefix: &str,
    headers: &[(&str, &str)],
) {
    for template in AMBIGUOUS_PATHS {
        let path = template.replace("{}", prefix);
        let r = app.get(&path, headers).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {r}");
        assert_eq!(r.json()["error"], "bad_request", "{path}: {r}");
        assert_eq!(r.header(header::CACHE_CONTROL), "no-store", "{path}: {r}");
    }
}

#[tokio::test]
async fn ambiguous_paths_on_a_required_route_are_400_and_never_reach_the_upstream_with_a_token() {
    let app = TestRouter::new().await;
    let cookie = app.logged_in("alice").await;
    assert_every_ambiguous_path_is_refused(&app, "/api", &[("cookie", &cookie)]).await;
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn ambiguous_paths_on_an_optional_route_are_400_and_never_reach_the_upstream() {
    let app = TestRouter::new().await;
    let cookie = app.logged_in("alice").await;
    assert_every_ambiguous_path_is_refused(&app, "/maybe", &[("cookie", &cookie)]).await;
    assert_every_ambiguous_path_is_refused(&app, "/maybe", &[]).await;
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn ambiguous_paths_on_an_unauthenticated_route_are_400_and_never_reach_the_upstream() {
    let app = TestRouter::new().await;
    assert_every_ambiguous_path_is_refused(&app, "/public", &[]).await;
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn each_class_of_ambiguous_path_is_named_in_the_answer() {
    let app = TestRouter::new().await;
    for (path, message) in [
        (
            "/public/..;/admin",
            "Paths with dot segments are not forwarded.",
        ),
        (
            "/public/a%2fb",
            "Paths with percent-encoded '/', '\\', '.', ';' or '%' are not forwarded.",
        ),
        ("/public/a\\b", "Paths with backslashes are not forwarded."),
        (
            "/public/a%00b",
            "Paths with control characters are not forwarded.",
        ),
        (
            "/public/%c0%ae",
            "Paths with malformed percent-encoding are not forwarded.",
        ),
        (
            "/public//admin",
            "Paths with empty segments (//) are not forwarded.",
        ),
    ] {
        let r = app.get(path, &[]).await;
        r.assert_error(StatusCode::BAD_REQUEST, "bad_request", message);
    }
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn ordinary_encoded_paths_are_still_forwarded_unchanged() {
    let app = TestRouter::new().await;
    let paths = [
        "/public/a%20b",
        "/public/user%40example.com",
        "/public/caf%C3%A9",
        "/public/x.json",
        "/public/..x",
        "/public/items;v=2",
        "/public/50%25",
    ];
    for path in paths {
        let r = app.get(path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r}");
    }
    assert_eq!(app.upstream.uris(), paths.map(str::to_owned).to_vec());
}

#[tokio::test]
async fn trace_and_connect_are_405_json_on_every_kind_of_route_and_never_forwarded() {
    let app = TestRouter::new().await;
    let cookie = app.logged_in("alice").await;
    for method in [Method::TRACE, Method::CONNECT] {
        for path in ["/api/items", "/maybe/items", "/public/items", "/api"] {
            let r = app
                .send(request(
                    method.clone(),
                    path,
                    &[("cookie", &cookie), ("x-csrf", "1")],
                    Body::empty(),
                ))
                .await;
            r.assert_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This method is not allowed here.",
            );
            assert_eq!(
                r.header(header::ALLOW),
                "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
                "{method} {path}: {r}"
            );
            assert!(r.headers.get(header::SET_COOKIE).is_none(), "{r}");
        }
    }
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn trace_without_a_session_is_405_not_401_on_a_required_route() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(Method::TRACE, "/api/items", &[], Body::empty()))
        .await;
    r.assert_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed here.",
    );
}

/// With a `__Secure-` name and `session.cookie_domain`, a sibling
/// subdomain can set a cookie of the session's name for the parent domain
/// (on a longer path, so the browser sends it first): two different
/// values are no session, on required, optional and the gateway's own
/// routes, and the answer clears both the domain and the host-only cookie.
#[tokio::test]
async fn two_different_shared_domain_session_cookies_are_no_session_and_both_variants_are_cleared()
{
    let app = TestRouter::with_session(
        "cookie_name = \"__Secure-bff\"\ncookie_domain = \"example.test\"",
    )
    .await;
    let alice = app.logged_in("alice").await;
    let mallory = app.logged_in("mallory").await;
    assert!(alice.starts_with("__Secure-bff="), "{alice}");
    let tossed = format!("{mallory}; theme=dark; {alice}");
    for path in ["/api/items", "/auth/user", "/auth/sessions"] {
        let r = app.get(path, &[("cookie", &tossed)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {r}");
        assert_eq!(r.json()["error"], "unauthenticated", "{path}: {r}");
        let clears = r.all(header::SET_COOKIE);
        assert_eq!(clears.len(), 2, "{path}: {r}");
        for c in &clears {
            assert!(c.starts_with("__Secure-bff=;"), "{c}");
            assert!(c.contains("Max-Age=0") && c.contains("Secure"), "{c}");
        }
        assert_eq!(
            clears
                .iter()
                .filter(|c| c.contains("Domain=example.test"))
                .count(),
            1,
            "one domain and one host-only clear: {clears:?}"
        );
    }
    let r = app.get("/maybe/items", &[("cookie", &tossed)]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let seen = app.upstream.seen();
    assert_eq!(
        seen.len(),
        1,
        "only the optional route reached it: {seen:?}"
    );
    assert!(seen[0].headers.get(header::AUTHORIZATION).is_none());
    // Each cookie alone, or twice alike, is still its owner's session.
    for cookie in [alice.clone(), format!("{alice}; {alice}")] {
        let r = app.get("/auth/user", &[("cookie", &cookie)]).await;
        assert_eq!(r.status, StatusCode::OK, "{r}");
        assert_eq!(r.json()["sub"], "alice", "{r}");
    }
    let r = app.get("/auth/user", &[("cookie", &mallory)]).await;
    assert_eq!(r.json()["sub"], "mallory", "{r}");
}

/// Forward-auth reads the session cookie as the proxied routes do: two
/// different values are its 401 (with the login URL for a navigation),
/// never either user's identity headers.
#[tokio::test]
async fn forward_auth_answers_two_different_session_cookies_as_not_logged_in() {
    let app = TestRouter::with_session_and(
        "trusted_proxies = [\"10.0.0.0/8\"]",
        "cookie_name = \"__Secure-bff\"\ncookie_domain = \"example.test\"",
        "[forward_auth]\nenabled = true\n",
    )
    .await;
    let alice = app.logged_in("alice").await;
    let mallory = app.logged_in("mallory").await;
    let verify = |cookie: String| {
        let app = &app;
        async move {
            let mut headers = crate::support::NAVIGATION.to_vec();
            headers.push(("x-forwarded-uri", "/api/x"));
            headers.push(("x-forwarded-method", "GET"));
            headers.push(("cookie", &cookie));
            app.send_from(
                "10.0.0.1",
                request(Method::GET, "/auth/verify", &headers, Body::empty()),
            )
            .await
        }
    };
    let r = verify(format!("{mallory}; {alice}")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert!(!r.header("x-auth-login-url").is_empty(), "{r}");
    assert!(r.headers.get("x-auth-request-user").is_none(), "{r}");
    assert_eq!(r.all(header::SET_COOKIE).len(), 2, "{r}");
    let r = verify(alice).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
}
