//! The provider rotates its signing key. The gateway, holding the old JWKS,
//! re-fetches it once when an ID token names an unknown `kid`, so logins go
//! on, at every rotation (forged `kid`s, which cannot come from the token
//! endpoint, and their rate limit are `jwks_storm`'s). A rotation right
//! after the start-up fetch is picked up at once.

use std::time::{Duration, Instant};

use oidc_bff::config::RawDuration;
use reqwest::StatusCode;

use crate::harness::procs::free_port;
use crate::harness::{Browser, Gateway, GatewayBuilder, ProviderProcess, Upstream, duration};

const INTERVAL: Duration = Duration::from_secs(10);

/// Logs in once; the callback's status and whether a session exists.
async fn try_login(gw: &Gateway) -> (StatusCode, bool) {
    let (status, session, _) = try_login_page(gw).await;
    (status, session)
}

async fn try_login_page(gw: &Gateway) -> (StatusCode, bool, String) {
    let mut b = Browser::new(gw);
    let r = b.try_login("alice", "alice-password").await;
    (r.status, b.session_cookie().is_some(), r.body)
}

/// ID tokens reach the gateway only from the token endpoint, in answer to
/// its own authenticated request: an unknown `kid` in one is a rotation,
/// never a forgery, so every rotation is picked up by the next login, even
/// two in a row within `oidc.jwks_min_refresh_interval` (which limits the
/// re-fetches for tokens anyone can send: `jwks_storm`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_key_rotation_is_picked_up_by_the_next_login() {
    let dir = std::env::temp_dir().join(format!("oidc-bff-keys-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let original = ProviderProcess::with_key_file(port, &dir.join("a.json"));
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&original.issuer)
        .configure(|c| {
            c.oidc.jwks_min_refresh_interval = RawDuration::Seconds(INTERVAL.as_secs());
        })
        .start()
        .await;
    assert_eq!(try_login(&gw).await, (StatusCode::SEE_OTHER, true));

    // Same issuer, new key: the first login after it triggers one re-fetch.
    drop(original);
    let rotated = ProviderProcess::with_key_file(port, &dir.join("b.json"));
    assert_eq!(try_login(&gw).await, (StatusCode::SEE_OTHER, true));
    let refetched = Instant::now();

    // Rotated again at once: within the interval, the next login's new
    // key is fetched too (before, it stayed unknown for the interval).
    drop(rotated);
    let again = ProviderProcess::with_key_file(port, &dir.join("c.json"));
    let (status, session, page) = try_login_page(&gw).await;
    assert!(
        refetched.elapsed() < INTERVAL,
        "too slow to test within the interval: {:?}",
        refetched.elapsed()
    );
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert!(session, "the second rotation's key verified the login");
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_right_after_start_is_picked_up_by_the_first_login() {
    let dir = std::env::temp_dir().join(format!("oidc-bff-keys-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let original = ProviderProcess::with_key_file(port, &dir.join("a.json"));
    let upstream = Upstream::start().await;
    // A long interval: before the fix, the start-up fetch counted against it
    // and the new key stayed unknown for all of it.
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&original.issuer)
        .configure(|c| c.oidc.jwks_min_refresh_interval = duration("10m"))
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(20)).await;

    drop(original);
    let rotated = ProviderProcess::with_key_file(port, &dir.join("b.json"));
    let (status, session, page) = try_login_page(&gw).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert!(session, "the first login with the new kid makes a session");
    drop(rotated);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The JWKS endpoint fails (500) after the keys were fetched: logins go on
/// with the cached keys for one more `oidc.metadata_refresh_interval`
/// after they went stale, then fail with a 503 (provider unavailable), not
/// a login failure blamed on the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_outlive_a_failing_jwks_endpoint_for_a_bounded_time() {
    const REFRESH: Duration = Duration::from_secs(4);
    let dir = std::env::temp_dir().join(format!("oidc-bff-keys-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("dir");
    let p = ProviderProcess::with_key_file(free_port(), &dir.join("a.json"));
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&p.issuer)
        .configure(|c| c.oidc.metadata_refresh_interval = RawDuration::Seconds(REFRESH.as_secs()))
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(20)).await;
    // Let the start-up keys go stale: this login fetches them again.
    tokio::time::sleep(REFRESH + Duration::from_millis(100)).await;
    let fetched_after = Instant::now();
    assert_eq!(try_login(&gw).await, (StatusCode::SEE_OTHER, true));
    let fetched_before = Instant::now();

    crate::harness::ProviderApi::new(&p.issuer)
        .post("/__test/jwks-status", serde_json::json!({"status": 500}))
        .await;
    // Stale, and the refresh fails: the cached keys still verify.
    tokio::time::sleep_until((fetched_before + REFRESH + Duration::from_millis(300)).into()).await;
    let (status, session, page) = try_login_page(&gw).await;
    assert!(
        fetched_after.elapsed() < REFRESH * 2,
        "too slow to test the grace period: {:?}",
        fetched_after.elapsed()
    );
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert!(session, "cached keys keep logins working within the bound");

    // Past twice the interval the keys are no longer trusted: a 503.
    tokio::time::sleep_until((fetched_before + REFRESH * 2 + Duration::from_millis(300)).into())
        .await;
    let (status, session, _) = try_login_page(&gw).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!session);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The JWKS endpoint fails long enough that the cached keys are no longer
/// trusted (twice `oidc.metadata_refresh_interval`), and a session
/// refreshes: the refreshed ID token cannot be checked, which is the
/// provider's outage, not a refused answer. The session is kept with the
/// new tokens (and its claims); before, it was ended and the user signed
/// out, and the new refresh token revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_while_the_keys_cannot_be_had_keeps_the_session() {
    const REFRESH: Duration = Duration::from_secs(2);
    let p = ProviderProcess::start(&[]);
    let upstream = Upstream::start().await;
    // Every request refreshes (access tokens live 300 s).
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&p.issuer)
        .refresh_skew("10m")
        .configure(|c| c.oidc.metadata_refresh_interval = RawDuration::Seconds(REFRESH.as_secs()))
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(20)).await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let claims = b.get("/auth/user").await.json()["claims"].clone();
    assert_eq!(claims["sub"], "alice", "{claims}");

    crate::harness::ProviderApi::new(&p.issuer)
        .post("/__test/jwks-status", serde_json::json!({"status": 500}))
        .await;
    let loaded = Instant::now();
    tokio::time::sleep(REFRESH * 2 + Duration::from_millis(500)).await;
    for _ in 0..2 {
        let r = b.get("/api/x").await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    assert!(loaded.elapsed() > REFRESH * 2);
    let after = b.get("/auth/user").await;
    assert_eq!(after.status, StatusCode::OK, "{after:?}");
    assert_eq!(after.json()["claims"], claims, "the claims are kept");
    assert_eq!(gw.session_count().await, 1);
    // A new login cannot be checked meanwhile: 503, not a failed login.
    let (status, session, _) = try_login_page(&gw).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!session);
}
