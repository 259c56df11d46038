//! Step-up without the provider: a route's `acr_values` / `max_auth_age`
//! over the session's `acr` and `auth_time` claims, for proxied calls,
//! WebSocket handshakes and forward-auth alike (all through
//! `Route::admit`), under a mount path; and `/auth/login`'s refusal of
//! parameters outside the allowlist, as JSON or as a page.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{NAVIGATION, PUBLIC_URL, TempDir, TestRouter, request};

const STEP_UP_ROUTES: &str = r#"
[[routes]]
path = "/app/vault"
upstream = "{upstream}"
acr_values = ["mfa", "hwk"]
max_auth_age = "10m"

[forward_auth]
enabled = true
"#;

/// Mounted under `/app`, with forward-auth from a trusted proxy.
async fn app() -> TestRouter {
    TestRouter::mounted(
        TempDir::new(),
        "/app",
        "trusted_proxies = [\"10.0.0.0/8\"]",
        STEP_UP_ROUTES,
    )
    .await
}

fn now() -> u64 {
    oidc_bff::clock::unix_now()
}

#[tokio::test]
async fn a_session_short_of_the_routes_acr_or_age_gets_step_up_required_and_keeps_its_session() {
    let app = app().await;
    for (label, claims) in [
        ("weak acr", json!({ "acr": "pwd", "auth_time": now() })),
        ("no acr", json!({ "auth_time": now() })),
        ("too old", json!({ "acr": "mfa", "auth_time": now() - 601 })),
        ("no auth_time", json!({ "acr": "mfa" })),
    ] {
        let cookie = app.logged_in_with("dana", claims, None).await;
        let r = app
            .get(
                "/app/vault/secret",
                &[("cookie", &cookie), ("accept", "application/json")],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{label}: {r}");
        let v = r.json();
        assert_eq!(v["error"], "step_up_required", "{label}: {v}");
        assert_eq!(
            v["login_url"], "/app/auth/login?acr_values=mfa+hwk&max_age=600",
            "{label}"
        );
        assert_eq!(
            r.header("www-authenticate"),
            "Bearer realm=\"oidc-bff\", error=\"insufficient_user_authentication\", acr_values=\"mfa hwk\", max_age=600"
        );
        assert!(app.upstream.uris().is_empty(), "{label}: never forwarded");
        // The session is still good.
        let me = app
            .get(
                "/app/auth/user",
                &[("cookie", &cookie), ("accept", "application/json")],
            )
            .await;
        assert_eq!(me.status, StatusCode::OK, "{label}: {me}");
    }
    let strong = app
        .logged_in_with(
            "dana",
            json!({ "acr": "hwk", "auth_time": now() - 30 }),
            None,
        )
        .await;
    let r = app.get("/app/vault/secret", &[("cookie", &strong)]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(app.upstream.uris(), ["/app/vault/secret"]);
}

#[tokio::test]
async fn a_websocket_handshake_and_forward_auth_obey_the_same_step_up_rule() {
    let app = app().await;
    let cookie = app
        .logged_in_with("erin", json!({ "acr": "pwd", "auth_time": now() }), None)
        .await;
    let r = app
        .get(
            "/app/vault/socket",
            &[
                ("cookie", &cookie),
                ("origin", PUBLIC_URL),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert_eq!(r.json()["error"], "step_up_required");
    assert!(app.upstream.uris().is_empty());

    let r = app
        .send_from(
            "10.0.0.1",
            request(
                Method::GET,
                "/app/auth/verify",
                &[
                    ("cookie", &cookie),
                    ("accept", "application/json"),
                    ("x-forwarded-uri", "/app/vault/page?x=1"),
                    ("x-forwarded-method", "GET"),
                ],
                Body::empty(),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert_eq!(
        r.json()["login_url"],
        "/app/auth/login?acr_values=mfa+hwk&max_age=600&return_to=%2Fapp%2Fvault%2Fpage%3Fx%3D1"
    );
}

#[tokio::test]
async fn login_parameters_outside_the_allowlist_are_a_400_naming_the_parameter() {
    let app = TestRouter::new().await;
    let r = app
        .get(
            "/auth/login?acr_value=mfa",
            &[("accept", "application/json")],
        )
        .await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The login parameter `acr_value` is not accepted (allowed: return_to, prompt, login_hint, acr_values, max_age, ui_locales).",
    );
    let page = app.get("/auth/login?max_age=soon", NAVIGATION).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.text().contains("max_age"), "{page}");
    assert!(
        !page.text().contains("soon"),
        "the value is not echoed: {page}"
    );
}

#[tokio::test]
async fn a_navigation_to_a_step_up_route_gets_a_page_whose_login_link_asks_for_the_step_up() {
    let app = app().await;
    let cookie = app
        .logged_in_with("finn", json!({ "acr": "pwd", "auth_time": now() }), None)
        .await;
    let mut headers = NAVIGATION.to_vec();
    headers.push(("cookie", &cookie));
    let page = app.get("/app/vault/report?y=2", &headers).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{page}");
    // As the browser reads the attribute (HTML-escaped in the page).
    let html = page.text().replace("&#x2f;", "/").replace("&amp;", "&");
    assert!(
        html.contains(
            "href=\"/app/auth/login?acr_values=mfa+hwk&max_age=600&return_to=%2Fapp%2Fvault%2Freport%3Fy%3D2\""
        ),
        "{page}"
    );
    assert!(app.upstream.uris().is_empty());
}
