//! The core flow against a second, independent OpenID provider:
//! IdentityPython's pyop (tests/provider2), a different implementation from
//! oidc-provider in another language. Login with PKCE and
//! `client_secret_basic` (and the claims from its userinfo endpoint), a proxied call with the access token that provider
//! issued, a refresh when it expires, and logout through its end-session
//! endpoint, after which the provider itself no longer accepts the token.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{Browser, GatewayBuilder, Provider2Process, TestCa, Upstream};

/// The access token's lifetime at the provider: short, so the test sees a
/// refresh, long enough for the first call to use the login's own token.
const ACCESS_TOKEN_TTL: u32 = 4;

/// An HTTP client for the provider's own endpoints, trusting the test CA.
fn provider_client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("CA PEM"))
        .build()
        .expect("client")
}

/// What the provider's userinfo endpoint says about an access token: the
/// status and, when accepted, the claims.
async fn userinfo(
    client: &reqwest::Client,
    issuer: &str,
    token: &str,
) -> (StatusCode, serde_json::Value) {
    let r = client
        .get(format!("{issuer}/userinfo"))
        .bearer_auth(token)
        .send()
        .await
        .expect("userinfo");
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

/// The Bearer token the upstream saw on its latest request.
fn last_bearer(upstream: &Upstream) -> String {
    let seen = upstream.seen();
    let auth = seen
        .last()
        .and_then(|s| s.header("authorization"))
        .expect("the upstream got an Authorization header");
    auth.strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer token: {auth}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_call_refresh_and_logout_against_pyop() {
    let ca = TestCa::new(false);
    let ca_pem = std::fs::read(ca.file("ca.pem")).expect("CA");
    let provider = Provider2Process::start(&ca, ACCESS_TOKEN_TTL);
    let idp = provider_client(&ca_pem);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .configure(|c| {
            c.oidc.tls_ca_file = Some(PathBuf::from(ca.file("ca.pem")));
            // pyop's ID tokens carry only `sub` in the code flow; the
            // profile and email claims come from its userinfo endpoint.
            c.oidc.userinfo = true;
        })
        .refresh_skew("1s")
        .start()
        .await;
    let mut b = Browser::trusting(&gw, Some(&ca_pem));

    // Login through pyop's authorization endpoint and login form.
    let r = b.login_alice().await;
    assert_eq!(r.location(), Some(format!("{}/app", gw.base)));
    assert_eq!(gw.session_count().await, 1);
    let user = b.get("/auth/user").await;
    assert_eq!(user.status, StatusCode::OK, "{user:?}");
    let u = user.json();
    assert_eq!(u["sub"], "alice", "{u}");
    assert_eq!(u["claims"]["email"], "alice@example.com", "{u}");

    // A proxied call carries the token pyop issued, and pyop accepts it.
    let api = b.request(Method::GET, "/api/one", &[], None).await;
    assert_eq!(api.status, StatusCode::OK, "{api:?}");
    let first = last_bearer(&upstream);
    let (status, claims) = userinfo(&idp, &provider.issuer, &first).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "pyop refused the token the upstream saw"
    );
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert!(
        !api.body.contains(&first),
        "the access token reached the browser"
    );

    // Once it has expired, the next call refreshes at pyop's token endpoint
    // and carries the new token. (pyop counts whole seconds and accepts a
    // token through its expiry second, hence the extra two.)
    tokio::time::sleep(Duration::from_secs(u64::from(ACCESS_TOKEN_TTL) + 2)).await;
    let (status, _) = userinfo(&idp, &provider.issuer, &first).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the first token should have expired"
    );
    let api = b.request(Method::GET, "/api/two", &[], None).await;
    assert_eq!(api.status, StatusCode::OK, "{api:?}");
    let second = last_bearer(&upstream);
    assert_ne!(
        second, first,
        "the expired token was sent again instead of refreshing"
    );
    let (status, claims) = userinfo(&idp, &provider.issuer, &second).await;
    assert_eq!(status, StatusCode::OK, "pyop refused the refreshed token");
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(gw.session_count().await, 1, "refresh kept the one session");

    // Logout ends the local session at once...
    let out = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    assert!(b.session_cookie().is_none(), "session cookie not cleared");
    assert_eq!(gw.session_count().await, 0);
    let next = out.json()["redirect_url"]
        .as_str()
        .expect("redirect_url")
        .to_owned();
    assert_eq!(b.get("/auth/user").await.status, StatusCode::UNAUTHORIZED);

    // ...and leads to pyop's end-session endpoint with the ID token hint,
    // which ends the user's state there and sends the browser back.
    let end = b.navigate(&next).await;
    assert_eq!(end.status, StatusCode::SEE_OTHER, "{end:?}");
    let loc = end.location().expect("end-session redirect");
    assert!(
        loc.starts_with(&format!("{}/logout?", provider.issuer)),
        "{loc}"
    );
    assert!(loc.contains("id_token_hint="), "{loc}");
    let back = idp.get(&loc).send().await.expect("end session");
    assert_eq!(back.status(), StatusCode::SEE_OTHER, "pyop's end session");
    let back_to = back
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("post-logout redirect")
        .to_owned();
    assert!(back_to.starts_with(&gw.base), "{back_to}");
    let (status, _) = userinfo(&idp, &provider.issuer, &second).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "pyop still accepts the token after end-session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_refused_by_pyop_and_creates_no_session() {
    let ca = TestCa::new(false);
    let ca_pem = std::fs::read(ca.file("ca.pem")).expect("CA");
    let provider = Provider2Process::start(&ca, 60);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .configure(|c| {
            c.oidc.tls_ca_file = Some(PathBuf::from(ca.file("ca.pem")));
            c.oidc.client_secret = Some("not-the-secret".into());
        })
        .start()
        .await;
    let mut b = Browser::trusting(&gw, Some(&ca_pem));
    let r = b.try_login("alice", "alice-password").await;
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "the code exchange should fail: {r:?}"
    );
    assert!(b.session_cookie().is_none(), "{r:?}");
    assert_eq!(gw.session_count().await, 0);
    assert_eq!(upstream.count(), 0);
}
