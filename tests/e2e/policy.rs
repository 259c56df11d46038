//! Per-route authorization and identity to upstreams with the real
//! provider: its users' `groups` and Keycloak-style `realm_access.roles`
//! claims (logins starting with "admin" are admins), the scopes it grants,
//! WebSocket handshakes under a policy, and the signed assertion verified
//! against the gateway's published JWKS.

use std::collections::BTreeMap;

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oidc_bff::config::{RawAssertionKey, RawCondition, RawRoute};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::harness::{Browser, Gateway, GatewayBuilder, Upstream, route, unique_user};

fn any_of(claim: &str, values: &[&str]) -> RawCondition {
    RawCondition {
        claim: Some(claim.into()),
        any_of: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        ..RawCondition::default()
    }
}

fn scope(values: &[&str]) -> RawCondition {
    RawCondition {
        scope: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        ..RawCondition::default()
    }
}

/// A fresh P-256 signing key in a PKCS#8 PEM file under the temp dir.
fn signing_key_file() -> std::path::PathBuf {
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .expect("generate key");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    let path = std::env::temp_dir().join(format!(
        "oidc-bff-assertion-{:016x}.pem",
        rand::random::<u64>()
    ));
    std::fs::write(
        &path,
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            body.join("\n")
        ),
    )
    .expect("write key");
    path
}

/// `/api` for admins only (group and realm role), with identity headers
/// and an assertion; `/mail` needs the granted scope `email`, `/write` a
/// scope the provider never grants.
async fn gateway(upstream: &Upstream) -> Gateway {
    gateway_with(upstream, |b| b).await
}

async fn gateway_with(
    upstream: &Upstream,
    tweak: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> Gateway {
    let key_file = signing_key_file();
    let up = upstream.url();
    tweak(GatewayBuilder::new(upstream))
        .configure(move |c| {
            let api = &mut c.routes[0];
            api.require = vec![
                any_of("groups", &["admins"]),
                RawCondition {
                    claim: Some("realm_access.roles".into()),
                    all_of: Some(vec!["admin".into(), "reader".into()]),
                    ..RawCondition::default()
                },
            ];
            api.identity_headers = BTreeMap::from([
                ("X-User".to_owned(), "preferred_username".to_owned()),
                ("X-Groups".to_owned(), "groups".to_owned()),
            ]);
            api.assertion = true;
            c.routes.push(RawRoute {
                require: vec![scope(&["email"])],
                ..route("/mail", &up)
            });
            c.routes.push(RawRoute {
                require: vec![scope(&["write"])],
                ..route("/write", &up)
            });
            c.assertion.keys = vec![RawAssertionKey {
                id: "e2e".into(),
                key_file,
            }];
            c.assertion.claims = vec!["email".into()];
        })
        .start()
        .await
}

async fn logged_in(gw: &Gateway, label: &str) -> Browser {
    let mut b = Browser::new(gw);
    b.login_as(&unique_user(label)).await;
    assert!(b.session_cookie().is_some(), "{label} logged in");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_admins_pass_the_policy_and_others_get_403_without_reaching_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;

    let mut staff = logged_in(&gw, "staff").await;
    let r = staff
        .request(
            reqwest::Method::GET,
            "/api/items",
            &[("accept", "application/json")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(
        r.json()["message"],
        "Access denied: this route requires one of the groups admins; and requires all of the realm_access.roles admin, reader."
    );
    let page = staff.navigate("/api/items").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains("requires one of the groups admins"),
        "{}",
        page.body
    );
    assert_eq!(upstream.count(), 0);

    let mut admin = logged_in(&gw, "admin").await;
    let r = admin
        .request(
            reqwest::Method::GET,
            "/api/items",
            // Spelled with underscores, as CGI-style applications read
            // `X-User` too (`HTTP_X_USER`).
            &[
                ("x-user", "root"),
                ("x_user", "root"),
                ("x_forwarded_for", "6.6.6.6"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let seen = upstream.seen().pop().expect("forwarded");
    let user = seen.header("x-user").expect("x-user");
    assert!(user.starts_with("admin-"), "{user}");
    assert_eq!(seen.headers.get_all("x-user").iter().count(), 1);
    assert_eq!(seen.header("x_user"), None, "{:?}", seen.headers);
    assert_eq!(seen.header("x_forwarded_for"), None, "{:?}", seen.headers);
    assert_eq!(seen.header("x-groups").as_deref(), Some("admins,staff"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_conditions_read_the_scopes_the_provider_granted() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let mut b = logged_in(&gw, "scoped").await;
    let r = b.get("/mail/inbox").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = b.get("/write/x").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(
        r.json()["message"],
        "Access denied: this route requires the scopes write."
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_scopes_are_kept_across_token_refreshes() {
    let upstream = Upstream::start().await;
    // The fixture's access tokens live 300 s: every request refreshes.
    let gw = gateway_with(&upstream, |b| b.refresh_skew("10m")).await;
    let mut b = logged_in(&gw, "refreshed").await;
    for path in ["/mail/a", "/mail/b"] {
        let r = b.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
    }
    let tokens: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.header("authorization").expect("bearer"))
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_ne!(
        tokens[0], tokens[1],
        "each request was sent with a refreshed token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_verifies_the_assertion_with_the_gateways_published_jwks() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let mut admin = logged_in(&gw, "admin").await;
    let r = admin
        .request(
            reqwest::Method::GET,
            "/api/whoami",
            &[("x-gateway-assertion", "forged")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = upstream
        .seen()
        .pop()
        .expect("forwarded")
        .header("x-gateway-assertion")
        .expect("assertion");

    let jwks: JwkSet = reqwest::get(gw.url("/.well-known/jwks.json"))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwk set");
    let kid = jsonwebtoken::decode_header(&token)
        .expect("header")
        .kid
        .expect("kid");
    let jwk = jwks.find(&kid).expect("published key");
    let issuer = gw.base.trim_end_matches('/').to_owned();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[format!("{issuer}/api")]);
    validation.set_issuer(std::slice::from_ref(&issuer));
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("the assertion verifies")
    .claims;
    assert!(
        claims["sub"]
            .as_str()
            .is_some_and(|s| s.starts_with("admin-")),
        "{claims}"
    );
    assert!(
        claims["email"]
            .as_str()
            .is_some_and(|s| s.ends_with("@example.com")),
        "{claims}"
    );
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
        60
    );
    // Valid for this route only.
    validation.set_audience(&[format!("{issuer}/mail")]);
    assert!(
        jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_jwk(jwk).expect("key"),
            &validation
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_is_held_to_the_routes_policy() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let open = |b: &Browser| {
        let mut req = format!("ws://{}/api/ws", gw.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("cookie", b.cookie_header().parse().expect("cookie"));
        req.headers_mut().insert(
            "origin",
            gw.base.trim_end_matches('/').parse().expect("origin"),
        );
        tokio_tungstenite::connect_async(req)
    };
    let staff = logged_in(&gw, "wsstaff").await;
    match open(&staff).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
        other => panic!(
            "expected a 403 handshake answer, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    assert_eq!(
        upstream.count(),
        0,
        "the refused handshake never reached the upstream"
    );
    let admin = logged_in(&gw, "admin-ws").await;
    let (mut socket, _) = open(&admin)
        .await
        .expect("an admin's handshake is accepted");
    let handshake = upstream.seen().pop().expect("handshake forwarded");
    assert!(
        handshake
            .header("x-user")
            .is_some_and(|u| u.starts_with("admin-ws")),
        "{handshake:?}"
    );
    socket.close(None).await.expect("close");
}

/// The spellings of `/app/admin/x` that some upstream reads as that path
/// while the gateway's router matches them to the shorter `/app` route:
/// an escape every server decodes (and one decoded twice), letter case
/// (IIS, ASP.NET, Express), `;parameters` (Tomcat, Jetty), trailing dots
/// and spaces (Windows), an empty-reading segment, Unicode compatibility
/// forms (fullwidth letters, raw and encoded: NFKC) and letters that upper
/// case maps to ASCII (dotless ı: .NET's `OrdinalIgnoreCase`).
const SPELLINGS_OF_APP_ADMIN: [&str; 11] = [
    "/app/%61dmin/x",
    "/app/%2561dmin/x",
    "/app/ADMIN/x",
    "/app/Admin",
    "/app/admin;v=1/x",
    "/app/admin./x",
    "/app/admin%20/x",
    "/app/;x/admin/x",
    "/app/\u{FF21}\u{FF24}\u{FF2D}\u{FF29}\u{FF2E}/x",
    "/app/%EF%BD%81dmin/x",
    "/app/adm%C4%B1n/x",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_an_upstream_reads_as_a_stricter_nested_route_is_refused_not_judged_by_the_shorter_one()
 {
    let upstream = Upstream::start().await;
    let up = upstream.url();
    let gw = GatewayBuilder::new(&upstream)
        .route(route("/app", &up))
        .route(RawRoute {
            require: vec![any_of("groups", &["admins"])],
            ..route("/app/admin", &up)
        })
        .start()
        .await;
    let mut staff = logged_in(&gw, "staff").await;
    let r = staff
        .request(reqwest::Method::GET, "/app/admin/x", &[], None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the exact spelling: {r:?}");
    for path in SPELLINGS_OF_APP_ADMIN {
        let r = staff.request(reqwest::Method::GET, path, &[], None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "bad_request", "{path}");
        assert_eq!(
            r.json()["message"],
            "This path reads as another route's (letter case, percent-encoding, Unicode forms, ';' parameters or trailing dots); use the route's exact spelling.",
            "{path}"
        );
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.seen());
    // Spellings that read as no longer route still go through.
    for path in ["/app/administrator", "/app/x/admin", "/app/%41pi;v=2/x"] {
        let r = staff.request(reqwest::Method::GET, path, &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
    }
    assert_eq!(upstream.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_route_never_forwards_a_path_an_upstream_reads_as_a_nested_session_route() {
    let upstream = Upstream::start().await;
    let up = upstream.url();
    let gw = GatewayBuilder::new(&upstream)
        .route(RawRoute {
            auth: "none".into(),
            ..route("/app", &up)
        })
        .route(route("/app/admin", &up))
        .start()
        .await;
    let mut anonymous = Browser::new(&gw);
    let r = anonymous
        .request(reqwest::Method::GET, "/app/admin/x", &[], None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    for path in SPELLINGS_OF_APP_ADMIN {
        let r = anonymous
            .request(reqwest::Method::GET, path, &[], None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {r:?}");
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.seen());
    let r = anonymous
        .request(reqwest::Method::GET, "/app/about", &[], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}
