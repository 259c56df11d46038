//! A provider that answers slowly (one byte a second) or not at all, seen
//! by many requests at once: each provider call is cut at
//! `oidc.http_timeout` (the whole answer, not only its head), and the
//! requests that need discovery while it fails share one attempt and then
//! use what is cached, instead of each waiting for an attempt of its own,
//! one after another. The provider is a small in-test server (the fake
//! issuer) whose discovery answer can be switched to a trickle or an error;
//! token and userinfo endpoints of the shared provider are replaced
//! (`[oidc.endpoints]`) by ones that trickle or never end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{CLIENT_ID, Gateway, GatewayBuilder, Upstream, duration};

const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

/// How the fake issuer answers discovery.
const FAST: u8 = 0;
/// The valid document, one byte a second.
const TRICKLE: u8 = 1;
/// A 500.
const FAIL: u8 = 2;

struct FakeIssuer {
    issuer: String,
    mode: Arc<AtomicU8>,
    discoveries: Arc<AtomicUsize>,
    /// How the JWKS is answered (`FAST` or `FAIL`).
    jwks_mode: Arc<AtomicU8>,
    jwks_fetches: Arc<AtomicUsize>,
}

impl FakeIssuer {
    async fn start(mode: u8) -> Self {
        Self::start_with(mode, FAST).await
    }

    async fn start_with(mode: u8, jwks_mode: u8) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake issuer");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let metadata = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
        .to_string();
        let jwks =
            json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "n": RSA_N, "e": "AQAB"}]})
                .to_string();
        let (mode, discoveries) = (Arc::new(AtomicU8::new(mode)), Arc::new(AtomicUsize::new(0)));
        let (jwks_mode, jwks_fetches) = (
            Arc::new(AtomicU8::new(jwks_mode)),
            Arc::new(AtomicUsize::new(0)),
        );
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get({
                    let (mode, discoveries) = (mode.clone(), discoveries.clone());
                    move || {
                        let (mode, discoveries, metadata) =
                            (mode.clone(), discoveries.clone(), metadata.clone());
                        async move {
                            discoveries.fetch_add(1, Ordering::SeqCst);
                            match mode.load(Ordering::SeqCst) {
                                FAIL => AxumStatus::INTERNAL_SERVER_ERROR.into_response(),
                                TRICKLE => trickle(metadata.into_bytes()).into_response(),
                                _ => metadata.into_response(),
                            }
                        }
                    }
                }),
            )
            .route(
                "/jwks",
                get({
                    let (jwks_mode, jwks_fetches) = (jwks_mode.clone(), jwks_fetches.clone());
                    move || {
                        let (jwks_mode, jwks_fetches, jwks) =
                            (jwks_mode.clone(), jwks_fetches.clone(), jwks.clone());
                        async move {
                            jwks_fetches.fetch_add(1, Ordering::SeqCst);
                            match jwks_mode.load(Ordering::SeqCst) {
                                FAIL => AxumStatus::INTERNAL_SERVER_ERROR.into_response(),
                                _ => jwks.into_response(),
                            }
                        }
                    }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            issuer,
            mode,
            discoveries,
            jwks_mode,
            jwks_fetches,
        }
    }

    fn discoveries(&self) -> usize {
        self.discoveries.load(Ordering::SeqCst)
    }
}

/// `bytes`, one a second: the whole answer takes minutes.
fn trickle(bytes: Vec<u8>) -> Body {
    Body::from_stream(futures_util::stream::unfold(
        (bytes, 0usize),
        |(bytes, at)| async move {
            if at > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let b = *bytes.get(at)?;
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b])),
                (bytes, at + 1),
            ))
        },
    ))
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A logout token under a `kid` the fake issuer does not publish.
fn forged_logout_token(issuer: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "typ": "logout+jwt", "kid": "unknown"})),
        b64(&json!({
            "iss": issuer, "aud": CLIENT_ID, "iat": now, "jti": format!("{:x}", rand::random::<u64>()),
            "sub": "x", "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        })),
        b64(&json!("not a signature")),
    )
}

async fn post_logout(gw: &Gateway, token: String) -> (StatusCode, Value) {
    post_logout_to(&gw.base, token).await
}

/// [`post_logout`] to the gateway at `base`, for requests sent from tasks.
async fn post_logout_to(base: &str, token: String) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("post");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A gateway whose metadata goes stale every 2 s, with `http_timeout`,
/// ready, in front of a provider that from now on answers discovery one
/// byte a second.
async fn trickling_discovery(http_timeout: &str) -> (FakeIssuer, Upstream, Gateway) {
    let fake = FakeIssuer::start(FAST).await;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&fake.issuer)
        .configure(|c| {
            c.oidc.metadata_refresh_interval = duration("2s");
            c.oidc.http_timeout = duration(http_timeout);
        })
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(20)).await;
    fake.mode.store(TRICKLE, Ordering::SeqCst);
    (fake, upstream, gw)
}

/// Metadata has gone stale and the provider now answers discovery one byte
/// a second. Ten logout tokens at once: the first request's attempt is cut
/// at `oidc.http_timeout`, and the others take its answer (the stale
/// metadata) rather than each trying in turn (which took ten timeouts,
/// one after another, for the last of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_discovery_costs_a_burst_of_requests_one_timeout_not_one_each() {
    const REFRESH: Duration = Duration::from_secs(2);
    let (fake, _upstream, gw) = trickling_discovery("2s").await;
    // Let the metadata go stale.
    tokio::time::sleep(REFRESH + Duration::from_millis(200)).await;

    let before = fake.discoveries();
    let started = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (base, token) = (gw.base.clone(), forged_logout_token(&fake.issuer));
            tokio::spawn(async move { post_logout_to(&base, token).await })
        })
        .collect();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("no provider key matches")),
            "{body}"
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "ten requests took {took:?}: each waited for a discovery attempt of its own"
    );
    let attempts = fake.discoveries() - before;
    assert!(attempts <= 2, "{attempts} discovery attempts for one burst");
}

/// Sends 60 forged logout tokens while the provider's `failing` endpoint
/// answers 500 (`asked` counts its requests): each is a 503, and only the
/// gateway's own retries, on their back-off, ask the provider; once
/// `recover` makes the endpoint answer, the upkeep loads it with no request
/// needed.
async fn requests_during_a_failing_fetch_do_not_each_ask(
    fake: &FakeIssuer,
    asked: impl Fn() -> usize,
    recover: impl FnOnce(),
) {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&fake.issuer)
        .start()
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while asked() == 0 {
        assert!(Instant::now() < deadline, "the gateway never asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let before = asked();
    for _ in 0..60 {
        let (status, body) = post_logout(&gw, forged_logout_token(&fake.issuer)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    }
    let attempts = asked() - before;
    // The upkeep retries after 0.5 s, 1 s, 2 s, ...: a handful at most in
    // the time the requests took.
    let upkeep = 2 + started.elapsed().as_secs() as usize;
    assert!(
        attempts <= upkeep,
        "{attempts} provider requests for 60 requests in {:?}",
        started.elapsed()
    );
    recover();
    gw.wait_ready(Duration::from_secs(40)).await;
}

/// The provider is down from the start (discovery answers 500): a stream
/// of requests does not become a stream of discovery requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_while_discovery_fails_do_not_each_ask_the_provider() {
    let fake = FakeIssuer::start(FAIL).await;
    requests_during_a_failing_fetch_do_not_each_ask(
        &fake,
        || fake.discoveries(),
        || fake.mode.store(FAST, Ordering::SeqCst),
    )
    .await;
}

/// The same for the keys: discovery works, the JWKS endpoint answers 500
/// from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_while_the_jwks_fails_do_not_each_ask_the_provider() {
    let fake = FakeIssuer::start_with(FAST, FAIL).await;
    requests_during_a_failing_fetch_do_not_each_ask(
        &fake,
        || fake.jwks_fetches.load(Ordering::SeqCst),
        || fake.jwks_mode.store(FAST, Ordering::SeqCst),
    )
    .await;
}

/// A token endpoint (`[oidc.endpoints] token`, in front of the shared
/// provider's login) that answers 200 and then a token response one byte a
/// second: the code exchange is cut off at `oidc.http_timeout`, body
/// included, and the login ends on the 504 page with no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_answer_that_trickles_is_cut_off_at_the_http_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind token endpoint");
    let token_url = format!("http://{}/token", listener.local_addr().expect("addr"));
    let answer = json!({"access_token": "a", "token_type": "Bearer", "id_token": "x.y.z"})
        .to_string()
        .into_bytes();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let answer = answer.clone();
            async move { ([("content-type", "application/json")], trickle(answer)) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.oidc.endpoints.token = Some(token_url);
            c.oidc.http_timeout = duration("2s");
        })
        .start()
        .await;
    let mut b = crate::harness::Browser::new(&gw);
    let started = Instant::now();
    let r = b.try_login("alice", "alice-password").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{r:?}");
    assert!(
        r.body.contains("Identity provider not responding"),
        "{}",
        r.body
    );
    assert!(b.session_cookie().is_none());
    assert_eq!(gw.session_count().await, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the trickle was read for {:?}",
        started.elapsed()
    );
}

/// Metadata is stale and a discovery attempt is in flight against a
/// provider that answers one byte a second: a request meanwhile is answered
/// with the stale metadata at once, not after the attempt's
/// `oidc.http_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_metadata_serves_while_a_slow_discovery_is_in_flight() {
    let (fake, _upstream, gw) = trickling_discovery("30s").await;
    // The gateway's upkeep re-reads discovery once it is 2 s old: that
    // attempt trickles.
    let before = fake.discoveries();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.discoveries() == before {
        assert!(Instant::now() < deadline, "no discovery attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(10),
        post_logout(&gw, forged_logout_token(&fake.issuer)),
    )
    .await
    .expect("the request waited for the discovery attempt in flight");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A userinfo endpoint (`[oidc.endpoints] userinfo`, with `oidc.userinfo`
/// on) that answers a body without end (chunked, no length), or one byte a
/// second: the login is refused (400, "sent too much") after reading at
/// most `oidc.max_response_bytes`, or cut off at `oidc.http_timeout` (504);
/// no session either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_userinfo_answer_without_end_or_that_trickles_fails_the_login_within_its_bounds() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind userinfo");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/endless",
            get({
                let sent = sent.clone();
                move || {
                    let sent = sent.clone();
                    async move {
                        let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
                        let body =
                            Body::from_stream(futures_util::stream::repeat_with(move || {
                                sent.fetch_add(chunk.len(), Ordering::SeqCst);
                                Ok::<_, std::io::Error>(chunk.clone())
                            }));
                        ([("content-type", "application/json")], body)
                    }
                }
            }),
        )
        .route(
            "/trickle",
            get(|| async { trickle(br#"{"sub":"alice"}"#.to_vec()) }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for (path, status, says) in [
        ("/endless", StatusCode::BAD_REQUEST, "sent too much"),
        (
            "/trickle",
            StatusCode::GATEWAY_TIMEOUT,
            "did not answer in time",
        ),
    ] {
        let upstream = Upstream::start().await;
        let gw = GatewayBuilder::new(&upstream)
            .configure(|c| {
                c.oidc.userinfo = true;
                c.oidc.endpoints.userinfo = Some(format!("{base}{path}"));
                c.oidc.http_timeout = duration("2s");
            })
            .start()
            .await;
        let mut b = crate::harness::Browser::new(&gw);
        let started = Instant::now();
        let r = b.try_login("alice", "alice-password").await;
        assert_eq!(r.status, status, "{path}: {r:?}");
        assert!(r.body.contains(says), "{path}: {}", r.body);
        assert!(b.session_cookie().is_none(), "{path}");
        assert_eq!(gw.session_count().await, 0, "{path}");
        assert!(started.elapsed() < Duration::from_secs(15), "{path}");
    }
    // Far above max_response_bytes (256 KiB) plus socket buffers, far below
    // what an unbounded reader takes in.
    let read = sent.load(Ordering::SeqCst);
    assert!(read < 32 << 20, "read {read} bytes of an endless userinfo");
}
