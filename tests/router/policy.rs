//! Per-route authorization (`require`) and identity to upstreams
//! (`identity_headers`, the signed assertion and `/.well-known/jwks.json`):
//! who gets through, what a refusal says, and what the upstream is told.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::support::{NAVIGATION, PUBLIC_URL, TempDir, TestRouter, request};

/// Routes with policies and identity headers, to the recording upstream.
const POLICY_ROUTES: &str = r#"
[[routes]]
path = "/admin"
upstream = "{upstream}"
require = [{ claim = "groups", any_of = ["admin", "ops"] }]
identity_headers = { "X-User" = "preferred_username", "X-Groups" = "groups" }

[[routes]]
path = "/reports"
upstream = "{upstream}"
require = [{ claim = "realm_access.roles", all_of = ["reader", "auditor"] }, { scope = ["reports"] }]
"#;

async fn app() -> TestRouter {
    TestRouter::with(POLICY_ROUTES).await
}

#[tokio::test]
async fn a_session_outside_the_required_groups_is_403_json_naming_only_what_the_route_requires() {
    let app = app().await;
    let cookie = app
        .logged_in_with(
            "carol",
            json!({ "groups": ["staff", "secret-project"] }),
            None,
        )
        .await;
    let r = app
        .get(
            "/admin/users",
            &[("cookie", &cookie), ("accept", "application/json")],
        )
        .await;
    r.assert_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Access denied: this route requires one of the groups admin, ops.",
    );
    assert!(
        !r.text().contains("secret-project") && !r.text().contains("staff"),
        "{r}"
    );
    assert!(app.upstream.uris().is_empty(), "{:?}", app.upstream.uris());
}

#[tokio::test]
async fn a_refused_navigation_gets_a_403_page_saying_what_is_missing() {
    let app = app().await;
    let cookie = app
        .logged_in_with("carol", json!({ "groups": ["staff"] }), None)
        .await;
    let mut headers = NAVIGATION.to_vec();
    headers.push(("cookie", &cookie));
    let r = app.get("/admin", &headers).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert!(
        r.text().contains("requires one of the groups admin, ops"),
        "{r}"
    );
    assert!(app.upstream.uris().is_empty());
}

#[tokio::test]
async fn a_session_in_a_required_group_is_forwarded_with_its_identity_headers() {
    let app = app().await;
    let cookie = app
        .logged_in_with(
            "dave",
            json!({ "groups": ["ops", "staff"], "preferred_username": "dave" }),
            None,
        )
        .await;
    let r = app
        .get(
            "/admin/users",
            &[
                ("cookie", &cookie),
                ("x-user", "root"),
                ("X-Groups", "admin"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    let seen = app.upstream.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(h.get_all("x-user").iter().collect::<Vec<_>>(), ["dave"]);
    assert_eq!(
        h.get_all("x-groups").iter().collect::<Vec<_>>(),
        ["ops,staff"]
    );
}

#[tokio::test]
async fn nested_keycloak_roles_and_granted_scopes_are_both_required() {
    let app = app().await;
    let roles = json!({ "realm_access": { "roles": ["reader", "auditor", "x"] } });
    let without_scope = app
        .logged_in_with("erin", roles.clone(), Some("openid"))
        .await;
    let r = app
        .get(
            "/reports/q1",
            &[("cookie", &without_scope), ("accept", "application/json")],
        )
        .await;
    r.assert_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Access denied: this route requires the scopes reports.",
    );
    let one_role = app
        .logged_in_with(
            "frank",
            json!({ "realm_access": { "roles": ["reader"] } }),
            Some("openid reports"),
        )
        .await;
    let r = app.get("/reports/q1", &[("cookie", &one_role)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r}");
    assert!(
        r.text()
            .contains("requires all of the realm_access.roles reader, auditor"),
        "{r}"
    );
    assert!(app.upstream.uris().is_empty());
    let both = app
        .logged_in_with("gina", roles, Some("openid reports"))
        .await;
    let r = app.get("/reports/q1", &[("cookie", &both)]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(app.upstream.uris(), ["/reports/q1"]);
}

#[tokio::test]
async fn a_websocket_handshake_is_refused_by_the_policy_before_the_upstream() {
    let app = app().await;
    let cookie = app
        .logged_in_with("carol", json!({ "groups": ["staff"] }), None)
        .await;
    let r = app
        .get(
            "/admin/socket",
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
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r}");
    assert!(app.upstream.uris().is_empty());
}

#[tokio::test]
async fn forged_identity_headers_are_stripped_on_every_route_even_without_identity_headers() {
    let app = app().await;
    let cookie = app.logged_in("hank").await;
    for (path, cookie) in [
        ("/api/x", Some(&cookie)),
        ("/maybe/x", None),
        ("/public/x", None),
    ] {
        let mut headers = vec![
            ("x-user", "admin"),
            ("x-groups", "admin"),
            ("X-Gateway-Assertion", "forged"),
            ("x-unrelated", "kept"),
        ];
        if let Some(c) = cookie {
            headers.push(("cookie", c.as_str()));
        }
        let r = app.get(path, &headers).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r}");
    }
    for seen in app.upstream.seen() {
        let h = &seen.headers;
        assert!(h.get("x-user").is_none(), "{}: {h:?}", seen.uri);
        assert!(h.get("x-groups").is_none(), "{}: {h:?}", seen.uri);
        assert_eq!(
            h.get("x-unrelated").map(|v| v.as_bytes()),
            Some(&b"kept"[..])
        );
    }
}

// --- the signed assertion -------------------------------------------------

/// A fresh P-256 key as a PKCS#8 PEM file.
fn p256_pem() -> String {
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .expect("generate key");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ascii"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

async fn assertion_app() -> TestRouter {
    let dir = TempDir::new();
    dir.write("signing.pem", &p256_pem());
    dir.write("old.pem", &p256_pem());
    TestRouter::with_dir(
        dir,
        r#"
[[routes]]
path = "/signed"
upstream = "{upstream}"
assertion = true

[[routes]]
path = "/partner"
upstream = "{upstream}"
assertion = true
assertion_audience = "https://partner.example"

[assertion]
keys = [{ id = "new", key_file = "{dir}/signing.pem" }, { id = "old", key_file = "{dir}/old.pem" }]
claims = ["email"]
"#,
    )
    .await
}

async fn published_keys(app: &TestRouter) -> JwkSet {
    let r = app.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "application/json");
    serde_json::from_slice(&r.body).expect("a JWK set")
}

/// Verifies as an upstream would: ES256 only, the published key named by
/// `kid`, issuer and audience checked.
fn verify(
    token: &str,
    keys: &JwkSet,
    audience: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let header = jsonwebtoken::decode_header(token)?;
    let jwk = keys
        .find(header.kid.as_deref().unwrap_or_default())
        .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[PUBLIC_URL]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &validation)
        .map(|t| t.claims)
}

#[tokio::test]
async fn the_assertion_verifies_against_the_published_jwks_for_the_routes_audience_for_60_seconds()
{
    let app = assertion_app().await;
    let keys = published_keys(&app).await;
    assert_eq!(
        keys.keys
            .iter()
            .map(|k| k.common.key_id.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["new", "old"]
    );
    let cookie = app
        .logged_in_with(
            "ivy",
            json!({ "email": "ivy@example.com", "groups": ["g"] }),
            None,
        )
        .await;
    for path in ["/signed/a", "/partner/b"] {
        let r = app
            .get(
                path,
                &[("cookie", &cookie), ("x-gateway-assertion", "forged")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r}");
    }
    let seen = app.upstream.seen();
    let token = |i: usize| {
        let all: Vec<_> = seen[i]
            .headers
            .get_all("x-gateway-assertion")
            .iter()
            .collect();
        assert_eq!(all.len(), 1, "{:?}", seen[i].headers);
        all[0].to_str().expect("ascii").to_owned()
    };
    let claims = verify(&token(0), &keys, &format!("{PUBLIC_URL}/signed")).expect("verifies");
    assert_eq!(claims["sub"], "ivy");
    assert_eq!(claims["email"], "ivy@example.com");
    assert!(
        claims.get("groups").is_none(),
        "only configured claims: {claims}"
    );
    let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
    assert_eq!(lifetime, 60);
    assert_eq!(
        jsonwebtoken::decode_header(token(0))
            .expect("header")
            .kid
            .as_deref(),
        Some("new")
    );
    // Another route's assertion is not valid for this one.
    assert!(verify(&token(1), &keys, &format!("{PUBLIC_URL}/signed")).is_err());
    verify(&token(1), &keys, "https://partner.example").expect("its own audience");
}

#[tokio::test]
async fn an_assertion_signed_hs256_with_the_public_key_as_secret_is_refused() {
    let app = assertion_app().await;
    let keys = published_keys(&app).await;
    let jwk = &keys.keys[0];
    let public = serde_json::to_vec(jwk).expect("jwk json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("new".into());
    let forged = jsonwebtoken::encode(
        &header,
        &json!({ "iss": PUBLIC_URL, "sub": "admin", "aud": format!("{PUBLIC_URL}/signed"), "iat": now, "exp": now + 60 }),
        &EncodingKey::from_secret(&public),
    )
    .expect("encode");
    let err = verify(&forged, &keys, &format!("{PUBLIC_URL}/signed")).expect_err("refused");
    assert!(
        matches!(
            err.kind(),
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn without_assertion_keys_no_jwks_is_served() {
    let app = TestRouter::new().await;
    let r = app
        .send(request(
            Method::GET,
            "/.well-known/jwks.json",
            &[("accept", "application/json")],
            Body::empty(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
}
