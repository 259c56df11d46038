//! A provider's answers are hostile input too: validly signed ID tokens that
//! are huge, carry too many claims, lack `iat`/`sub`, or name another `sub`
//! after a refresh (the fixture's `/__test/id-token-tweaks` re-signs them
//! with the provider's key), and a fake issuer (a small in-test HTTP server)
//! whose discovery or JWKS never ends or advertises none of the configured
//! signing algorithms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::browser::Resp;
use crate::harness::{Browser, Gateway, GatewayBuilder, ProviderApi, Upstream, duration};

/// Sets an ID-token tweak for `user`'s token responses at the shared provider.
async fn tweak(user: &str, tweak: Value) {
    let mut body = tweak;
    body["sub"] = json!(user);
    ProviderApi::shared()
        .post("/__test/id-token-tweaks", body)
        .await;
}

/// Logs `user` in through a fresh gateway; the callback's answer.
async fn login_with(user: &str) -> (Gateway, Browser, Resp) {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    let r = b.try_login(user, &format!("{user}-password")).await;
    (gw, b, r)
}

/// The login was refused with the rendered 400 page and left nothing behind.
async fn assert_refused(gw: &Gateway, b: &Browser, r: &Resp, reason: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("Sign-in failed"), "{}", r.body);
    assert!(
        r.body.contains(reason),
        "page should say {reason:?}: {}",
        r.body
    );
    assert!(b.session_cookie().is_none(), "no session cookie: {r:?}");
    assert_eq!(gw.session_count().await, 0, "no session record in Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_whose_id_token_is_a_mebibyte_is_refused_and_stores_nothing() {
    let user = crate::harness::unique_user("huge");
    tweak(&user, json!({ "pad_bytes": 1 << 20 })).await;
    let (gw, b, r) = login_with(&user).await;
    assert_refused(&gw, &b, &r, "oidc.max_response_bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_whose_id_token_is_over_max_token_bytes_is_refused() {
    let user = crate::harness::unique_user("big");
    tweak(&user, json!({ "pad_bytes": 20_000 })).await;
    let (gw, b, r) = login_with(&user).await;
    assert_refused(&gw, &b, &r, "oidc.max_token_bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_with_more_claims_than_max_claims_is_refused() {
    let user = crate::harness::unique_user("many");
    let many: serde_json::Map<String, Value> =
        (0..150).map(|i| (format!("c{i}"), json!(i))).collect();
    tweak(&user, json!({ "set": many })).await;
    let (gw, b, r) = login_with(&user).await;
    assert_refused(&gw, &b, &r, "oidc.max_claims").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_without_iat_is_a_failed_login_not_a_provider_outage() {
    let user = crate::harness::unique_user("noiat");
    tweak(&user, json!({ "remove": ["iat"] })).await;
    let (gw, b, r) = login_with(&user).await;
    assert_refused(&gw, &b, &r, "iat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_whose_auth_time_is_in_the_future_is_a_failed_login() {
    // A step-up rule's max_age would hold for as long as the session lives.
    let user = crate::harness::unique_user("future");
    let hour_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    tweak(&user, json!({ "set": { "auth_time": hour_ahead } })).await;
    let (gw, b, r) = login_with(&user).await;
    assert_refused(&gw, &b, &r, "auth_time is in the future").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_without_sub_is_a_failed_login_not_a_provider_outage() {
    let user = crate::harness::unique_user("nosub");
    tweak(&user, json!({ "remove": ["sub"] })).await;
    let (gw, b, r) = login_with(&user).await;
    assert_refused(&gw, &b, &r, "sub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_id_token_naming_another_sub_ends_the_session() {
    let user = crate::harness::unique_user("subswap");
    tweak(
        &user,
        json!({ "grant_type": "refresh_token", "set": { "sub": "mallory" } }),
    )
    .await;
    let upstream = Upstream::start().await;
    // The fixture's access tokens live 300 s: every request refreshes.
    let gw = GatewayBuilder::new(&upstream)
        .refresh_skew("10m")
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    assert_eq!(gw.session_count().await, 1);

    let r = b.get("/api/x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(r.json()["error"], "session_expired");
    assert_eq!(gw.session_count().await, 0, "session record removed");
    assert!(gw.user_index(&user).await.is_empty(), "and its index entry");
    assert_eq!(upstream.count(), 0);
    // Neither the spent refresh token nor the one issued with the refused
    // ID token can be used again.
    let live: Vec<Value> = ProviderApi::shared()
        .get("/__test/refresh-tokens")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["sub"] == json!(user) && t["consumed"] == json!(false))
        .collect();
    assert!(live.is_empty(), "unused refresh tokens left: {live:?}");
    let again = b.get("/api/x").await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{again:?}");
}

/// An ID token's `at_hash` binds it to the access token of the same
/// answer: one naming another access token is a failed login, and after
/// a refresh ends the session. (The fixture's own `at_hash` is right: the
/// other tests log in with it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_whose_at_hash_names_another_access_token_is_a_failed_login() {
    let user = crate::harness::unique_user("at-hash");
    tweak(
        &user,
        json!({ "set": { "at_hash": "gHKi_8i-dEBxsK9vKenNBw" } }),
    )
    .await;
    let (gw, b, r) = login_with(&user).await;
    assert_refused(&gw, &b, &r, "Sign-in failed").await;

    let user = crate::harness::unique_user("at-hash-refresh");
    tweak(
        &user,
        json!({ "grant_type": "refresh_token", "set": { "at_hash": "gHKi_8i-dEBxsK9vKenNBw" } }),
    )
    .await;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .refresh_skew("10m")
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let r = b.get("/api/x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(gw.session_count().await, 0, "session record removed");
    assert_eq!(upstream.count(), 0, "nothing forwarded");
}

/// Tokens go into headers (`Authorization`) and form bodies: an answer
/// whose access token a header cannot carry is refused where it arrives,
/// not stored and found out when a request is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_a_header_cannot_carry_is_a_failed_login_and_stores_nothing() {
    for token in [
        "tok\r\nX-Injected: 1",
        "tok en",
        "tok\u{7f}",
        "t\u{f6}k\u{e9}n",
        "tok\u{0}",
    ] {
        let user = crate::harness::unique_user("at-chars");
        tweak(&user, json!({ "response": { "access_token": token } })).await;
        let (gw, b, r) = login_with(&user).await;
        assert_refused(&gw, &b, &r, "cannot be used").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_type_other_than_bearer_is_a_failed_login_and_stores_nothing() {
    // DPoP included: without `oidc.dpop` the gateway holds no key to prove
    // possession, and would send a bound token as `Bearer`.
    for token_type in ["mac", "N_A", "", "DPoP"] {
        let user = crate::harness::unique_user("token-type");
        tweak(&user, json!({ "response": { "token_type": token_type } })).await;
        let (gw, b, r) = login_with(&user).await;
        assert_refused(&gw, &b, &r, "cannot be used").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_access_token_a_header_cannot_carry_ends_the_session() {
    let user = crate::harness::unique_user("at-refresh");
    tweak(
        &user,
        json!({ "grant_type": "refresh_token", "response": { "access_token": "tok\r\nX-Injected: 1" } }),
    )
    .await;
    let upstream = Upstream::start().await;
    // The fixture's access tokens live 300 s: every request refreshes.
    let gw = GatewayBuilder::new(&upstream)
        .refresh_skew("10m")
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    assert_eq!(gw.session_count().await, 1);
    let r = b.get("/api/x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(r.json()["error"], "session_expired", "{r:?}");
    assert_eq!(gw.session_count().await, 0, "session record removed");
    assert_eq!(upstream.count(), 0, "nothing forwarded");
}

// --- A fake issuer -----------------------------------------------------------

/// What the fake issuer serves at discovery and JWKS.
#[derive(Clone, Copy)]
enum Fake {
    /// Valid metadata advertising only EdDSA; a JWKS with one RSA key.
    OnlyEdDsa,
    /// A discovery document that never ends.
    EndlessDiscovery,
    /// Valid discovery (RS256); a JWKS that never ends.
    EndlessJwks,
    /// Valid discovery (RS256) and JWKS.
    Valid,
}

struct FakeIssuer {
    issuer: String,
    /// Bytes of endless body handed to the connection so far.
    sent: Arc<AtomicUsize>,
    /// The endless body was dropped (the reader hung up).
    dropped: Arc<AtomicBool>,
    /// Discovery requests served.
    discoveries: Arc<AtomicUsize>,
    /// JWKS requests served.
    jwks_fetches: Arc<AtomicUsize>,
}

const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

/// Sets a flag when dropped: the body stream's owner hung up.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A body of `{"a":"xxxx...` that never ends.
fn endless(sent: Arc<AtomicUsize>, dropped: Arc<AtomicBool>) -> Body {
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let first = bytes::Bytes::from_static(b"{\"a\":\"");
    let state = (Some(first), chunk, sent, DropFlag(dropped));
    Body::from_stream(futures_util::stream::unfold(
        state,
        |(first, chunk, sent, flag)| async move {
            let next = first.unwrap_or_else(|| chunk.clone());
            sent.fetch_add(next.len(), Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(next), (None, chunk, sent, flag)))
        },
    ))
}

impl FakeIssuer {
    async fn start(kind: Fake) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake issuer");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let (sent, dropped, discoveries, jwks_fetches) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let algs = match kind {
            Fake::OnlyEdDsa => json!(["EdDSA"]),
            _ => json!(["RS256"]),
        };
        let metadata = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
        })
        .to_string();
        let jwks =
            json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "n": RSA_N, "e": "AQAB"}]})
                .to_string();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get({
                    let (sent, dropped, discoveries) =
                        (sent.clone(), dropped.clone(), discoveries.clone());
                    move || async move {
                        discoveries.fetch_add(1, Ordering::SeqCst);
                        match kind {
                            Fake::EndlessDiscovery => endless(sent, dropped),
                            _ => Body::from(metadata),
                        }
                    }
                }),
            )
            .route(
                "/jwks",
                get({
                    let (sent, dropped, fetches) =
                        (sent.clone(), dropped.clone(), jwks_fetches.clone());
                    move || async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        match kind {
                            Fake::EndlessJwks => endless(sent, dropped),
                            _ => Body::from(jwks),
                        }
                    }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            issuer,
            sent,
            dropped,
            discoveries,
            jwks_fetches,
        }
    }

    async fn gateway(&self) -> Gateway {
        let upstream = Upstream::start().await;
        GatewayBuilder::new(&upstream)
            .issuer(&self.issuer)
            .configure(|c| c.oidc.http_timeout = duration("20s"))
            .start()
            .await
    }

    /// Waits until the gateway hung up on the endless body; how many bytes
    /// had been handed to the connection by then.
    async fn hung_up_after(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.dropped.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the gateway kept reading the endless body: {} bytes so far",
                self.sent.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.sent.load(Ordering::SeqCst)
    }
}

async fn readyz(gw: &Gateway) -> StatusCode {
    reqwest::get(gw.url("/readyz"))
        .await
        .expect("readyz")
        .status()
}

/// Far above `oidc.max_response_bytes` (256 KiB) plus what socket buffers
/// hold, far below what an unbounded reader takes in 20 s on loopback.
const HANG_UP_BOUND: usize = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_discovery_document_is_refused_without_reading_it() {
    let fake = FakeIssuer::start(Fake::EndlessDiscovery).await;
    let gw = fake.gateway().await;
    let sent = fake.hung_up_after().await;
    assert!(sent < HANG_UP_BOUND, "read {sent} bytes of discovery");
    assert_eq!(readyz(&gw).await, StatusCode::SERVICE_UNAVAILABLE);
    let r = Browser::new(&gw).navigate("/auth/login").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_jwks_is_refused_without_reading_it() {
    let fake = FakeIssuer::start(Fake::EndlessJwks).await;
    let gw = fake.gateway().await;
    let sent = fake.hung_up_after().await;
    assert!(sent < HANG_UP_BOUND, "read {sent} bytes of JWKS");
    assert_eq!(readyz(&gw).await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_advertising_none_of_the_configured_algorithms_is_not_ready() {
    let fake = FakeIssuer::start(Fake::OnlyEdDsa).await;
    let gw = fake.gateway().await;
    // Let discovery (and, before the fix, the JWKS fetch) happen.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.discoveries.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the gateway never asked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(readyz(&gw).await, StatusCode::SERVICE_UNAVAILABLE);
    let r = Browser::new(&gw).navigate("/auth/login").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert!(
        r.body.contains("Identity provider unavailable"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_of_one_process_share_one_discovery_and_one_jwks_fetch() {
    let fake = FakeIssuer::start(Fake::Valid).await;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&fake.issuer)
        .configure(|c| c.server.workers = 4)
        .start_process()
        .await;
    gw.wait_ready(Duration::from_secs(20)).await;
    // Every worker's upkeep has run by now; readiness on each worker
    // (connections are spread by the kernel) sees the shared caches.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..8 {
        assert_eq!(readyz(&gw).await, StatusCode::OK);
    }
    assert_eq!(fake.discoveries.load(Ordering::SeqCst), 1, "discoveries");
    assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 1, "JWKS fetches");
}
