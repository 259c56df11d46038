//! Endpoints for operators and infrastructure: liveness, readiness, and
//! request IDs on every answer.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::TestRouter;

#[tokio::test]
async fn healthz_answers_200_without_a_provider() {
    let app = TestRouter::new().await;
    let r = app.get("/healthz", &[]).await;
    r.assert_json(StatusCode::OK, json!({ "status": "ok" }));
}

#[tokio::test]
async fn readyz_is_503_until_the_provider_metadata_is_loaded() {
    let app = TestRouter::new().await;
    let r = app.get("/readyz", &[]).await;
    r.assert_json(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "status": "not_ready", "store": "ok", "provider": "not_loaded" }),
    );
}

/// A gateway behind a proxy on 127.0.0.1, which may pass request IDs on.
async fn behind_a_trusted_proxy() -> TestRouter {
    TestRouter::with_server(r#"trusted_proxies = ["127.0.0.1/32"]"#).await
}

fn get(path: &str, headers: &[(&str, &str)]) -> axum::http::Request<axum::body::Body> {
    crate::support::request(
        axum::http::Method::GET,
        path,
        headers,
        axum::body::Body::empty(),
    )
}

#[tokio::test]
async fn a_request_id_from_a_trusted_proxy_is_echoed() {
    let app = behind_a_trusted_proxy().await;
    let r = app
        .send_from(
            "127.0.0.1",
            get("/healthz", &[("x-request-id", "proxy-chose-this")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.header("x-request-id"), "proxy-chose-this", "{r}");
}

#[tokio::test]
async fn a_request_id_from_the_client_itself_is_replaced() {
    let app = behind_a_trusted_proxy().await;
    let r = app
        .send_from(
            "203.0.113.7",
            get("/healthz", &[("x-request-id", "client-chose-this")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.header("x-request-id").len(), 16, "{r}");
}

#[tokio::test]
async fn a_request_without_an_id_is_assigned_16_hex_characters() {
    let app = TestRouter::new().await;
    let first = app.get("/healthz", &[]).await;
    let second = app.get("/healthz", &[]).await;
    let id = first.header("x-request-id").to_owned();
    assert_eq!(id.len(), 16, "{first}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    assert_ne!(id, second.header("x-request-id"), "{second}");
}

#[tokio::test]
async fn error_answers_carry_the_request_id_too() {
    let app = behind_a_trusted_proxy().await;
    let r = app
        .send_from("127.0.0.1", get("/api/items", &[("x-request-id", "err-1")]))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
    assert_eq!(r.header("x-request-id"), "err-1", "{r}");
}

const ADMIN_TOKEN: &str = "router-tests-admin-token-0123456789abcdef";

async fn with_admin() -> TestRouter {
    TestRouter::with(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n"
    ))
    .await
}

fn admin_request(
    method: axum::http::Method,
    path: &str,
    authorization: &str,
) -> axum::http::Request<axum::body::Body> {
    crate::support::request(
        method,
        path,
        &[("authorization", authorization)],
        axum::body::Body::empty(),
    )
}

#[tokio::test]
async fn the_admin_listeners_unknown_paths_and_methods_get_the_gateways_json_answers() {
    use axum::http::Method;
    let app = with_admin().await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let r = app
        .send_admin(admin_request(Method::GET, "/admin/nothing", &bearer))
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
    let r = app
        .send_admin(admin_request(Method::GET, "/admin/reload", &bearer))
        .await;
    r.assert_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed here.",
    );
    assert_eq!(r.header(axum::http::header::ALLOW), "POST", "{r}");
    // Without the token, an unknown path says nothing more than a known one.
    let r = app
        .send_admin(admin_request(Method::GET, "/admin/nothing", "Bearer wrong"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
}

#[tokio::test]
async fn the_admin_tokens_scheme_is_read_without_regard_to_case() {
    use axum::http::Method;
    let app = with_admin().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        for spaces in [" ", "  "] {
            let auth = format!("{scheme}{spaces}{ADMIN_TOKEN}");
            let r = app
                .send_admin(admin_request(Method::GET, "/admin/stats", &auth))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{auth}: {r}");
        }
    }
    for auth in [
        format!("Basic {ADMIN_TOKEN}"),
        format!("Bearer{ADMIN_TOKEN}"),
        format!("Bearer {ADMIN_TOKEN}x"),
        ADMIN_TOKEN.to_owned(),
    ] {
        let r = app
            .send_admin(admin_request(Method::GET, "/admin/stats", &auth))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth}: {r}");
    }
}

#[tokio::test]
async fn the_metrics_listeners_other_paths_and_methods_get_the_gateways_json_answers() {
    use axum::http::Method;
    let app = TestRouter::new().await;
    let r = app.send_metrics(get("/metrics", &[])).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let r = app.send_metrics(get("/", &[])).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
    let r = app
        .send_metrics(crate::support::request(
            Method::POST,
            "/metrics",
            &[],
            axum::body::Body::empty(),
        ))
        .await;
    r.assert_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed here.",
    );
}
