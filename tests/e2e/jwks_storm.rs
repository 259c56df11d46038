//! Storms of tokens naming unknown key IDs (`kid`), and key rotations in
//! the middle of them. The provider's JWKS is served to the gateway through
//! a [`JwksGate`] (`[oidc.endpoints] jwks_uri`) that counts the fetches
//! and can hold one in flight, so a test sees exactly how many fetches a
//! storm cost and what waited for them.
//!
//! The forged tokens are made here (random `kid`, random signature): they
//! never verify, and must not need to for the storm to be refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::get;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::procs::free_port;
use crate::harness::{
    Browser, CLIENT_ID, Gateway, GatewayBuilder, ProviderApi, ProviderProcess, Upstream, duration,
    unique_user,
};
use crate::session_lifecycle::{backchannel_gateway_from, logout_token, now, post_logout_token};

const API_AUDIENCE: &str = "http://api.test";

/// A JWKS endpoint in front of a provider's: counts the requests it gets
/// and, while held, keeps each answer back until released.
struct JwksGate {
    url: String,
    fetches: Arc<AtomicUsize>,
    hold: tokio::sync::watch::Sender<bool>,
    /// An answer served instead of the provider's, when set.
    answer: Arc<std::sync::Mutex<Option<String>>>,
}

impl JwksGate {
    async fn start(issuer: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS gate");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (hold, _) = tokio::sync::watch::channel(false);
        let answer = Arc::new(std::sync::Mutex::new(None::<String>));
        let real = format!("{issuer}/jwks");
        let app = axum::Router::new().route(
            "/jwks",
            get({
                let (fetches, hold, answer) = (fetches.clone(), hold.subscribe(), answer.clone());
                move || {
                    let (fetches, mut hold, real) = (fetches.clone(), hold.clone(), real.clone());
                    let answer = answer.lock().expect("answer").clone();
                    async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let _ = hold.wait_for(|held| !*held).await;
                        if let Some(body) = answer {
                            return ([("content-type", "application/json")], body);
                        }
                        let body = reqwest::get(&real)
                            .await
                            .expect("provider JWKS")
                            .text()
                            .await
                            .expect("JWKS body");
                        ([("content-type", "application/json")], body)
                    }
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            fetches,
            hold,
            answer,
        }
    }

    /// Serves `body` instead of the provider's keys (`None`: the keys).
    fn answer(&self, body: Option<&str>) {
        *self.answer.lock().expect("answer") = body.map(str::to_owned);
    }

    fn count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn hold(&self, held: bool) {
        self.hold.send_replace(held);
    }

    /// Waits until `n` fetches have arrived.
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} JWKS fetches arrived, expected {n}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS with `header` and `payload` and a random 256-byte
/// signature: well formed, never valid.
fn forged(header: Value, payload: Value) -> String {
    let sig: Vec<u8> = (0..256).map(|_| rand::random::<u8>()).collect();
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(&sig)
    )
}

fn random_kid() -> String {
    format!("forged-{:016x}", rand::random::<u64>())
}

/// A logout token for `client_id` under a `kid` nobody published.
fn forged_logout_token(client_id: &str) -> String {
    forged(
        json!({"alg": "RS256", "typ": "logout+jwt", "kid": random_kid()}),
        json!({
            "iss": ProviderApi::shared().issuer, "aud": client_id, "iat": now(),
            "exp": now() + 120, "jti": random_kid(), "sub": "storm-victim",
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        }),
    )
}

/// A JWT access token for the bearer route under a `kid` nobody published.
fn forged_access_token() -> String {
    forged(
        json!({"alg": "RS256", "typ": "at+jwt", "kid": random_kid()}),
        json!({
            "iss": ProviderApi::shared().issuer, "aud": API_AUDIENCE, "sub": "storm",
            "iat": now(), "exp": now() + 120, "scope": "openid",
        }),
    )
}

async fn bearer_status(gw: &Gateway, token: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(gw.url("/api/x"))
        .bearer_auth(token)
        .send()
        .await
        .expect("bearer request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The refusal every forged logout token gets: 400 naming the unknown key.
fn assert_unknown_key(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("no provider key matches")),
        "{body}"
    );
}

/// Logout tokens and bearer tokens, `n` of each, all at once, each under
/// a `kid` of its own: the answers, logout tokens first.
fn storm(
    gw: &Gateway,
    client_id: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(bool, StatusCode, Value)>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (base, token) = (gw.base.clone(), forged_logout_token(client_id));
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/auth/backchannel-logout"))
                .form(&[("logout_token", token)])
                .send()
                .await
                .expect("post");
            let status = r.status();
            (true, status, r.json().await.unwrap_or(Value::Null))
        }));
        let (base, token) = (gw.base.clone(), forged_access_token());
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .get(format!("{base}/api/x"))
                .bearer_auth(token)
                .send()
                .await
                .expect("bearer");
            let status = r.status();
            (false, status, r.json().await.unwrap_or(Value::Null))
        }));
    }
    tasks
}

async fn assert_all_refused(tasks: Vec<tokio::task::JoinHandle<(bool, StatusCode, Value)>>) {
    for t in tasks {
        let (logout, status, body) = t.await.expect("storm task");
        if logout {
            assert_unknown_key(status, &body);
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "bearer: {body}");
            assert_eq!(body["error"], "invalid_token", "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_storm_costs_one_jwks_fetch_and_holds_up_no_valid_token() {
    let gate = JwksGate::start(&ProviderApi::shared().issuer).await;
    let upstream = Upstream::start().await;
    let builder = GatewayBuilder::new(&upstream).configure(|c| {
        c.oidc.endpoints.jwks_uri = Some(gate.url.clone());
        c.oidc.jwks_min_refresh_interval = duration("10m");
        // A held fetch would hold a blocked login this long.
        c.oidc.http_timeout = duration("60s");
        c.routes[0].bearer_audience = Some(API_AUDIENCE.into());
    });
    let (gw, client_id) = backchannel_gateway_from(builder).await;
    let first = unique_user("stormed");
    let mut b = Browser::new(&gw);
    b.login_as(&first).await;
    assert_eq!(gate.count(), 1, "the start-up fetch");

    // The storm's one re-fetch is held in flight.
    gate.hold(true);
    let tasks = storm(&gw, &client_id, 100);
    gate.wait_for(2).await;

    // Meanwhile tokens whose key is cached are answered at once: a login,
    // and a valid logout token for that login's user.
    let second = unique_user("amid-storm");
    let mut other = Browser::new(&gw);
    let login = tokio::time::timeout(
        Duration::from_secs(20),
        other.try_login(&second, &format!("{second}-password")),
    )
    .await
    .expect("a login with a known kid waited for the storm's JWKS fetch");
    assert_eq!(login.status, StatusCode::SEE_OTHER, "{login:?}");
    assert!(other.session_cookie().is_some());
    let token = logout_token(&client_id, json!({ "sub": second })).await;
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(20), post_logout_token(&gw, &token))
            .await
            .expect("a valid logout token waited for the storm's JWKS fetch");
    assert_eq!(
        (status, body["revoked"].clone()),
        (StatusCode::OK, json!(1)),
        "{body}"
    );
    assert_eq!(gate.count(), 2, "still the one re-fetch in flight");

    gate.hold(false);
    assert_all_refused(tasks).await;
    assert_eq!(gate.count(), 2, "one fetch for the whole storm");

    // A second storm within the interval costs nothing.
    assert_all_refused(storm(&gw, &client_id, 25)).await;
    assert_eq!(gate.count(), 2, "the rate limit held");

    // The cached keys survived all of it.
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    let token = logout_token(&client_id, json!({ "sub": first })).await;
    let (status, body) = post_logout_token(&gw, &token).await;
    assert_eq!(
        (status, body["revoked"].clone()),
        (StatusCode::OK, json!(1)),
        "{body}"
    );
    assert_eq!(b.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
    let (status, _) = bearer_status(&gw, &forged_access_token()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A logout token for the gateway's client, signed by `provider`'s current
/// key (its `kid`), naming a user with no session.
async fn signed_logout_token(provider: &ProviderProcess) -> String {
    let payload = json!({
        "iss": provider.issuer, "aud": CLIENT_ID, "iat": now(), "exp": now() + 120,
        "jti": random_kid(), "sub": unique_user("nobody"),
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    ProviderApi::new(&provider.issuer)
        .post("/__test/sign", json!({ "payload": payload }))
        .await["jwt"]
        .as_str()
        .expect("jwt")
        .to_owned()
}

fn forged_for(provider: &ProviderProcess) -> String {
    forged(
        json!({"alg": "RS256", "typ": "logout+jwt", "kid": random_kid()}),
        json!({
            "iss": provider.issuer, "aud": CLIENT_ID, "iat": now(), "exp": now() + 120,
            "jti": random_kid(), "sub": "x",
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        }),
    )
}

/// A provider that rotates its signing key (a new key file on the same
/// port) in front of a gateway whose `oidc.jwks_min_refresh_interval` is
/// `interval`: the scene of the rotation tests below.
struct Rotation {
    dir: std::path::PathBuf,
    port: u16,
    provider: Option<ProviderProcess>,
    gateway: Gateway,
    _upstream: Upstream,
}

impl Rotation {
    async fn start(interval: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("oidc-bff-storm-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let port = free_port();
        let provider = ProviderProcess::with_key_file(port, &dir.join("a.json"));
        let upstream = Upstream::start().await;
        let gateway = GatewayBuilder::new(&upstream)
            .issuer(&provider.issuer)
            .configure(|c| c.oidc.jwks_min_refresh_interval = duration(interval))
            .start()
            .await;
        gateway.wait_ready(Duration::from_secs(20)).await;
        Self {
            dir,
            port,
            provider: Some(provider),
            gateway,
            _upstream: upstream,
        }
    }

    fn provider(&self) -> &ProviderProcess {
        self.provider.as_ref().expect("a provider runs")
    }

    /// Stops the provider and starts it again, same issuer, new key.
    fn rotate(&mut self) {
        self.provider = None;
        self.provider = Some(ProviderProcess::with_key_file(
            self.port,
            &self.dir.join("b.json"),
        ));
    }
}

impl Drop for Rotation {
    fn drop(&mut self) {
        self.provider = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Forged `kid`s have used up the rate limit of tokens anyone can send;
/// then the provider rotates. The first login's ID token (only the token
/// endpoint hands those over) still gets its key fetched at once, and from
/// then on logout tokens under the new key verify too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_verified_at_the_first_login_even_after_a_forged_kid_storm() {
    let mut rotation = Rotation::start("10m").await;
    let gw = &rotation.gateway;
    for _ in 0..20 {
        let (status, body) = post_logout_token(gw, &forged_for(rotation.provider())).await;
        assert_unknown_key(status, &body);
    }

    rotation.rotate();
    let gw = &rotation.gateway;
    let mut b = Browser::new(gw);
    let r = b.try_login("alice", "alice-password").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        b.session_cookie().is_some(),
        "the new key verified the login"
    );
    let (status, body) =
        post_logout_token(gw, &signed_logout_token(rotation.provider()).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The bound for tokens anyone can send: after forged `kid`s used the rate
/// limit up, a logout token under a newly rotated key is refused for at
/// most `oidc.jwks_min_refresh_interval` (no login in between fetched the
/// key), then verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_in_logout_tokens_is_locked_out_by_forged_kids_for_one_interval_at_most() {
    const INTERVAL: Duration = Duration::from_secs(4);
    let mut rotation = Rotation::start("4s").await;
    let (status, body) =
        post_logout_token(&rotation.gateway, &forged_for(rotation.provider())).await;
    let limited_at = Instant::now();
    assert_unknown_key(status, &body);

    rotation.rotate();
    let (gw, rotated) = (&rotation.gateway, rotation.provider());
    let (status, body) = post_logout_token(gw, &signed_logout_token(rotated).await).await;
    assert!(
        limited_at.elapsed() < INTERVAL,
        "too slow to see the limit: {:?}",
        limited_at.elapsed()
    );
    assert_unknown_key(status, &body);

    tokio::time::sleep_until((limited_at + INTERVAL + Duration::from_millis(200)).into()).await;
    let (status, body) = post_logout_token(gw, &signed_logout_token(rotated).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A forged `kid` makes the gateway fetch the JWKS again, and the answer is
/// a key set with no usable key (`{"keys": []}`, or only encryption keys):
/// a broken answer, not the provider's keys. The cached keys stay, so
/// logins and valid logout tokens go on; before, the empty set replaced
/// them and every login failed (503, not ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refetch_answered_with_no_usable_key_keeps_the_cached_keys() {
    let gate = JwksGate::start(&ProviderApi::shared().issuer).await;
    let upstream = Upstream::start().await;
    let builder = GatewayBuilder::new(&upstream).configure(|c| {
        c.oidc.endpoints.jwks_uri = Some(gate.url.clone());
        c.oidc.jwks_min_refresh_interval = duration("0s");
    });
    let (gw, client_id) = backchannel_gateway_from(builder).await;
    gw.wait_ready(Duration::from_secs(20)).await;
    let enc_only = json!({"keys": [{"kty": "RSA", "kid": "e", "use": "enc", "e": "AQAB",
        "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"}]})
        .to_string();
    for broken in [r#"{"keys": []}"#, enc_only.as_str()] {
        gate.answer(Some(broken));
        let before = gate.count();
        let (status, body) = post_logout_token(&gw, &forged_logout_token(&client_id)).await;
        assert_eq!(gate.count(), before + 1, "the forged kid re-fetched");
        // The fetch failed: the provider may retry (503), nothing changed.
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

        let user = unique_user("kept-keys");
        let mut b = Browser::new(&gw);
        let r = b.try_login(&user, &format!("{user}-password")).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{broken}: {}", r.body);
        assert!(b.session_cookie().is_some());
        let token = logout_token(&client_id, json!({ "sub": user })).await;
        let (status, body) = post_logout_token(&gw, &token).await;
        assert_eq!(
            (status, body["revoked"].clone()),
            (StatusCode::OK, json!(1)),
            "{broken}: {body}"
        );
        let r = reqwest::get(gw.url("/readyz")).await.expect("readyz");
        assert_eq!(r.status(), StatusCode::OK, "{broken}");
    }
}

/// The keys have gone stale (past `oidc.metadata_refresh_interval`) and
/// their refresh is in flight, held: a login meanwhile verifies with the
/// cached keys, which are within their grace period, instead of waiting
/// for the refresh (up to `oidc.http_timeout`). Before, every request
/// queued behind the fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_keys_serve_a_login_while_their_refresh_is_in_flight() {
    let gate = JwksGate::start(&ProviderApi::shared().issuer).await;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.oidc.endpoints.jwks_uri = Some(gate.url.clone());
            c.oidc.metadata_refresh_interval = duration("3s");
            c.oidc.http_timeout = duration("60s");
        })
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(20)).await;
    // The gateway's own upkeep re-reads the keys once they are 3 s old:
    // that fetch is held.
    gate.hold(true);
    gate.wait_for(gate.count() + 1).await;

    let user = unique_user("stale-keys");
    let mut b = Browser::new(&gw);
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        b.try_login(&user, &format!("{user}-password")),
    )
    .await
    .expect("the login waited for the keys' refresh in flight");
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(b.session_cookie().is_some());
    gate.hold(false);
}
