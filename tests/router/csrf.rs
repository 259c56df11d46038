//! The anti-CSRF header: state-changing methods on session routes (proxied
//! routes with `auth = "required"` or `"optional"`, and the gateway's own
//! session endpoints) must carry `X-CSRF: 1`; reads and `auth = "none"`
//! routes need nothing.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::support::{TestRouter, WWW_AUTHENTICATE, request};

const STATE_CHANGING: [Method; 4] = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
const CSRF_MESSAGE: &str = "This request must carry the anti-CSRF header.";
const NOT_LOGGED_IN: &str = "You are not logged in.";

#[tokio::test]
async fn state_changing_methods_without_the_csrf_header_are_refused_on_a_required_route() {
    let app = TestRouter::new().await;
    for method in STATE_CHANGING {
        let r = app
            .send(request(method.clone(), "/api/items", &[], Body::from("{}")))
            .await;
        r.assert_error(StatusCode::FORBIDDEN, "csrf_rejected", CSRF_MESSAGE);
    }
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn state_changing_methods_without_the_csrf_header_are_refused_on_an_optional_route() {
    let app = TestRouter::new().await;
    for method in STATE_CHANGING {
        let r = app
            .send(request(method.clone(), "/maybe/items", &[], Body::empty()))
            .await;
        r.assert_error(StatusCode::FORBIDDEN, "csrf_rejected", CSRF_MESSAGE);
    }
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn a_csrf_header_with_the_wrong_value_is_refused() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(
            Method::POST,
            "/api/items",
            &[("x-csrf", "0")],
            Body::empty(),
        ))
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "csrf_rejected", CSRF_MESSAGE);
}

#[tokio::test]
async fn with_the_csrf_header_an_anonymous_call_reaches_the_session_check() {
    let app = TestRouter::new().await;
    for method in STATE_CHANGING {
        let r = app
            .send(request(
                method.clone(),
                "/api/items",
                &[("x-csrf", "1")],
                Body::empty(),
            ))
            .await;
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated", NOT_LOGGED_IN);
    }
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn the_csrf_header_name_and_value_are_configurable() {
    let app = TestRouter::with("[csrf]\nheader = \"X-Requested-By\"\nvalue = \"spa\"\n").await;
    let default_header = app
        .send(request(
            Method::POST,
            "/api/items",
            &[("x-csrf", "1")],
            Body::empty(),
        ))
        .await;
    default_header.assert_error(StatusCode::FORBIDDEN, "csrf_rejected", CSRF_MESSAGE);
    let configured = app
        .send(request(
            Method::POST,
            "/api/items",
            &[("x-requested-by", "spa")],
            Body::empty(),
        ))
        .await;
    configured.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated", NOT_LOGGED_IN);
}

#[tokio::test]
async fn reads_need_no_csrf_header() {
    let app = TestRouter::new().await;
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        let r = app
            .send(request(method.clone(), "/api/items", &[], Body::empty()))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method}: {r}");
        assert_eq!(r.header("www-authenticate"), WWW_AUTHENTICATE, "{r}");
    }
}

#[tokio::test]
async fn routes_without_auth_forward_state_changing_calls_without_the_header() {
    let app = TestRouter::new().await;
    for method in STATE_CHANGING {
        let r = app
            .send(request(
                method.clone(),
                "/public/items",
                &[],
                Body::from("x"),
            ))
            .await;
        r.assert_json(StatusCode::OK, serde_json::json!({ "upstream": "ok" }));
    }
    let seen: Vec<_> = app
        .upstream
        .seen()
        .into_iter()
        .map(|s| (s.method, s.uri))
        .collect();
    assert_eq!(
        seen,
        STATE_CHANGING
            .iter()
            .map(|m| (m.clone(), "/public/items".to_owned()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_logged_in_call_without_the_csrf_header_is_refused_and_not_forwarded() {
    let app = TestRouter::new().await;
    let cookie = app.logged_in("alice").await;
    let r = app
        .send(request(
            Method::POST,
            "/api/items",
            &[("cookie", &cookie)],
            Body::empty(),
        ))
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "csrf_rejected", CSRF_MESSAGE);
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn logout_without_the_csrf_header_or_a_form_token_is_refused() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(Method::POST, "/auth/logout", &[], Body::empty()))
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "csrf_rejected", CSRF_MESSAGE);
}

#[tokio::test]
async fn revoking_a_session_without_the_csrf_header_is_refused() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(
            Method::POST,
            "/auth/sessions/abc/revoke",
            &[],
            Body::empty(),
        ))
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "csrf_rejected", CSRF_MESSAGE);
}

#[tokio::test]
async fn revoking_a_session_with_the_csrf_header_but_anonymous_is_401() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(
            Method::POST,
            "/auth/sessions/abc/revoke",
            &[("x-csrf", "1")],
            Body::empty(),
        ))
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated", NOT_LOGGED_IN);
}
