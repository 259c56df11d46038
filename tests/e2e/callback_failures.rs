//! Every way a callback can be wrong: each is refused with the exact status,
//! and no session is created.

use reqwest::StatusCode;

use crate::harness::{Browser, Gateway, GatewayBuilder, Upstream, urlencode};

async fn gateway() -> (Upstream, Gateway) {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    (upstream, gw)
}

fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{name} missing in {url}"))
}

fn replace_param(url: &str, name: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_state_is_rejected_and_creates_no_session() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    assert_eq!(b.callback(&cb).await.status, StatusCode::SEE_OTHER);
    assert_eq!(gw.session_count().await, 1);

    let mut replay = Browser::new(&gw);
    replay.cookies = b.cookies.clone();
    replay.cookies.remove("__Host-oidc-bff");
    let r = replay.callback(&cb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(
        r.body.contains("Sign-in expired"),
        "a rendered page: {}",
        r.body
    );
    assert!(replay.session_cookie().is_none());
    assert_eq!(gw.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_state_is_rejected_and_creates_no_session() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let r = b
        .callback(&gw.url("/auth/callback?code=abc&state=never-issued"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let api = b
        .request(
            reqwest::Method::GET,
            "/auth/callback?code=abc&state=never-issued",
            &[],
            None,
        )
        .await;
    assert_eq!(api.json()["error"], "login_expired");
    let r = b.callback(&gw.url("/auth/callback?code=abc")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_nonce_is_rejected_and_creates_no_session() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    // The provider is asked for a different nonce than the gateway stored.
    let tampered = replace_param(&authorize, "nonce", "attacker-chosen-nonce");
    let cb = b.authenticate(&tampered, "alice", "alice-password").await;
    let r = b.callback(&cb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("Sign-in failed"), "{}", r.body);
    assert!(b.session_cookie().is_none());
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_error_response_renders_a_page_and_creates_no_session() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    // prompt=none without a provider session: the provider answers with
    // error=login_required to our callback — a real IdP error.
    let cb = b
        .authenticate(
            &format!("{authorize}&prompt=none"),
            "alice",
            "alice-password",
        )
        .await;
    assert!(cb.contains("error="), "expected an error callback: {cb}");
    let r = b.callback(&cb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(
        r.body.contains("Sign-in failed") && r.body.contains("login_required"),
        "{}",
        r.body
    );
    assert!(r.body.contains("/auth/login"), "offers to log in again");
    // The state was spent: the same state cannot be completed later.
    let state = query_param(&cb, "state");
    let r = b
        .callback(&gw.url(&format!(
            "/auth/callback?code=x&state={}",
            urlencode(&state)
        )))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_in_another_browser_is_refused() {
    let (_up, gw) = gateway().await;
    let mut victim = Browser::new(&gw);
    let mut attacker = Browser::new(&gw);
    // The attacker starts a login and gets the victim to complete the callback.
    let authorize = attacker.start_login("/").await;
    let cb = attacker
        .authenticate(&authorize, "bob", "bob-password")
        .await;
    let r = victim.callback(&cb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(victim.session_cookie().is_none());
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_return_to_values_are_refused_before_anything_is_stored() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    for payload in [
        "//evil.com",
        "/\\evil.com",
        "/%09/evil.com",
        "https://evil.com",
        "https://127.0.0.1.evil.com/",
        &format!("{}@evil.com", gw.base),
        "https://evil.com\\@127.0.0.1",
        "javascript:alert(1)",
    ] {
        let r = b
            .navigate(&format!("/auth/login?return_to={}", urlencode(payload)))
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "payload {payload:?} → {r:?}"
        );
        assert!(r.location().is_none(), "payload {payload:?} redirected");
    }
    assert!(
        gw.redis_keys().await.is_empty(),
        "nothing stored for refused logins: {:?}",
        gw.redis_keys().await
    );
    // A path on our origin is fine.
    let r = b.navigate("/auth/login?return_to=%2Fapp%3Fx%3D1").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}
