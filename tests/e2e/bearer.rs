//! Bearer clients on the same routes as browsers (`bearer_audience`): a
//! provider of the test's own issues RS256 JWT access tokens for
//! `http://api.test` (`--jwt-access-tokens`); a browser logs in through the
//! gateway, the upstream records the token it was sent, and a cookie-less
//! client then calls with that token as a CLI or service would.

use std::collections::BTreeMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oidc_bff::config::{RawCondition, RawRoute};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::procs::ProviderProcess;
use crate::harness::{Browser, Gateway, GatewayBuilder, Upstream, route, unique_user};

const API_AUDIENCE: &str = "http://api.test";

struct Setup {
    provider: ProviderProcess,
    upstream: Upstream,
    gw: Gateway,
    browser: Browser,
    /// A JWT access token the provider issued, as the upstream received it.
    token: String,
}

/// `/api` accepts bearer clients for `http://api.test`; `/other` for
/// another audience; `/admin` requires a scope the provider never grants.
async fn setup() -> Setup {
    let provider = ProviderProcess::start(&["--jwt-access-tokens", API_AUDIENCE]);
    let upstream = Upstream::start().await;
    let up = upstream.url();
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .configure(|c| {
            c.oidc.scopes.push("api".into());
            c.routes[0].bearer_audience = Some(API_AUDIENCE.into());
            c.routes[0].identity_headers = BTreeMap::from([("X-User".into(), "sub".into())]);
            c.routes[0].require = vec![RawCondition {
                scope: Some(vec!["api".into()]),
                ..RawCondition::default()
            }];
            c.routes.push(RawRoute {
                bearer_audience: Some("http://other.test".into()),
                ..route("/other", &up)
            });
            c.routes.push(RawRoute {
                bearer_audience: Some(API_AUDIENCE.into()),
                require: vec![RawCondition {
                    scope: Some(vec!["admin".into()]),
                    ..RawCondition::default()
                }],
                ..route("/admin", &up)
            });
            c.routes.push(RawRoute {
                bearer_audience: Some(API_AUDIENCE.into()),
                acr_values: vec!["mfa".into()],
                ..route("/strong", &up)
            });
        })
        .start()
        .await;
    let mut browser = Browser::new(&gw);
    browser.login_as(&unique_user("bearer")).await;
    let r = browser.get("/api/whoami").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let auth = upstream
        .seen()
        .pop()
        .expect("forwarded")
        .header("authorization")
        .expect("bearer");
    let token = auth
        .strip_prefix("Bearer ")
        .expect("bearer scheme")
        .to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "the provider issues JWT access tokens"
    );
    Setup {
        provider,
        upstream,
        gw,
        browser,
        token,
    }
}

/// A client with no cookies: a CLI or a service.
async fn call(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let resp = reqwest::Client::new()
        .request(method, gw.url(path))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_client_is_forwarded_with_its_own_token_without_session_or_csrf_header() {
    let s = setup().await;
    let sessions = s.gw.session_count().await;
    let (status, body, _) = call(&s.gw, reqwest::Method::POST, "/api/items", &s.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = s.upstream.seen().pop().expect("forwarded");
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", s.token))
    );
    assert_eq!(seen.header("cookie"), None);
    assert!(
        seen.header("x-user")
            .is_some_and(|u| u.starts_with("bearer-")),
        "{seen:?}"
    );
    assert_eq!(
        s.gw.session_count().await,
        sessions,
        "no session is created"
    );
    drop(s.provider);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_forged_and_alg_confused_bearer_tokens_are_401() {
    let s = setup().await;
    let (status, body, headers) = call(&s.gw, reqwest::Method::GET, "/other/x", &s.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"oidc-bff\", error=\"invalid_token\"")
    );
    // A changed payload breaks the signature.
    let mut parts: Vec<&str> = s.token.split('.').collect();
    let forged_payload = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value =
            serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
        claims["sub"] = json!("admin");
        b64.encode(claims.to_string())
    };
    parts[1] = &forged_payload;
    let (status, _, _) = call(&s.gw, reqwest::Method::GET, "/api/x", &parts.join(".")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // HS256 keyed with the provider's public key.
    let jwks: JwkSet = reqwest::get(format!("{}/jwks", s.provider.issuer))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwk set");
    let public = serde_json::to_vec(&jwks.keys[0]).expect("jwk");
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = jwks.keys[0].common.key_id.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let confused = jsonwebtoken::encode(
        &header,
        &json!({ "iss": s.provider.issuer, "aud": API_AUDIENCE, "sub": "admin", "scope": "api", "iat": now, "exp": now + 60 }),
        &EncodingKey::from_secret(&public),
    )
    .expect("encode");
    let (status, body, _) = call(&s.gw, reqwest::Method::GET, "/api/x", &confused).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        s.upstream.count(),
        1,
        "only the browser's call was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_policy_applies_to_a_bearer_tokens_scopes() {
    let s = setup().await;
    let (status, body, _) = call(&s.gw, reqwest::Method::GET, "/admin/x", &s.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "Access denied: this route requires the scopes admin."
    );
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_route_asks_a_bearer_client_for_a_token_from_a_stronger_login() {
    let s = setup().await;
    let (status, body, headers) = call(&s.gw, reqwest::Method::GET, "/strong/x", &s.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "step_up_required");
    let challenge = headers["www-authenticate"].to_str().expect("ascii");
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\", acr_values=\"mfa\""),
        "{challenge}"
    );
    let strong = provider_signed(&s, json!({ "typ": "at+jwt" }), json!({ "acr": "mfa" })).await;
    let (status, body, _) = call(&s.gw, reqwest::Method::GET, "/strong/x", &strong).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        s.upstream.count(),
        2,
        "only the strong token's call was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browsers_session_cookie_takes_precedence_over_a_bearer_header() {
    let mut s = setup().await;
    let r = s
        .browser
        .request(
            reqwest::Method::GET,
            "/api/x",
            &[("authorization", "Bearer not-a-token")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let seen = s.upstream.seen().pop().expect("forwarded");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", s.token)),
        "the session's token, not the header"
    );
    // With the cookie it is a browser request: the anti-CSRF rule holds.
    let bearer = format!("Bearer {}", s.token);
    let r = s
        .browser
        .request(
            reqwest::Method::POST,
            "/api/x",
            &[("authorization", bearer.as_str())],
            Some("{}".into()),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(r.json()["error"], "csrf_rejected");
}

/// A token the provider signs with its own key, as given: the claims of a
/// JWT access token for `http://api.test` unless overridden.
async fn provider_signed(s: &Setup, header: Value, claims: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut payload = json!({
        "iss": s.provider.issuer, "aud": API_AUDIENCE, "sub": "mallory",
        "client_id": crate::harness::CLIENT_ID, "scope": "openid api",
        "iat": now, "exp": now + 300, "jti": format!("t-{now}"),
    });
    if let (Some(p), Some(over)) = (payload.as_object_mut(), claims.as_object()) {
        for (k, v) in over {
            p.insert(k.clone(), v.clone());
        }
    }
    let api = crate::harness::ProviderApi::new(&s.provider.issuer);
    let r = api
        .post(
            "/__test/sign",
            json!({ "payload": payload, "header": header }),
        )
        .await;
    r["jwt"].as_str().expect("signed token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_bearer_token_signed_by_the_provider_is_401() {
    let s = setup().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // Past expiry by more than the default clock skew (60 s).
    let expired = provider_signed(
        &s,
        json!({ "typ": "at+jwt" }),
        json!({ "iat": now - 900, "exp": now - 600 }),
    )
    .await;
    let (status, body, _) = call(&s.gw, reqwest::Method::GET, "/api/x", &expired).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_token");
    // The same claims, still valid, pass: only the expiry made the difference.
    let valid = provider_signed(&s, json!({ "typ": "at+jwt" }), json!({})).await;
    let (status, body, _) = call(&s.gw, reqwest::Method::GET, "/api/x", &valid).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        s.upstream.count(),
        2,
        "the browser's call and the valid one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_is_not_accepted_as_a_bearer_token() {
    let s = setup().await;
    // An ID token's shape: typ JWT, audience the gateway's client ID.
    let id_token = provider_signed(
        &s,
        json!({ "typ": "JWT" }),
        json!({ "aud": crate::harness::CLIENT_ID, "nonce": "n", "azp": crate::harness::CLIENT_ID }),
    )
    .await;
    let (status, body, _) = call(&s.gw, reqwest::Method::GET, "/api/x", &id_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Right audience but without `typ: at+jwt` (RFC 9068): still refused.
    let untyped = provider_signed(&s, json!({ "typ": "JWT" }), json!({})).await;
    let (status, body, _) = call(&s.gw, reqwest::Method::GET, "/api/x", &untyped).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        s.upstream.count(),
        1,
        "only the browser's call was forwarded"
    );
}
