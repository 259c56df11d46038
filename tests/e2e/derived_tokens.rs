//! Derived user tokens (`[[routes]] resource` / `scopes`): a provider of
//! the test's own (`--derived-resources`) knows two APIs,
//! `https://api-a.test/` (scope `a.read`) and `https://api-b.test/`
//! (`b.read`), and answers a refresh grant naming one with a JWT access
//! token whose `aud` is that API; the login's own token is opaque. Two
//! routes to two recording upstreams each get their own.

use std::time::Duration;

use base64::Engine as _;
use futures_util::future::join_all;
use oidc_bff::config::RawRoute;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::procs::ProviderProcess;
use crate::harness::{Browser, Gateway, GatewayBuilder, ProviderApi, Upstream, route, unique_user};

const API_A: &str = "https://api-a.test/";
const API_B: &str = "https://api-b.test/";

fn provider(ttl: &str) -> (ProviderProcess, ProviderApi) {
    let p = ProviderProcess::start(&["--derived-resources", "--access-token-ttl", ttl]);
    let api = ProviderApi::new(&p.issuer);
    (p, api)
}

/// `/a` → upstream A for API A, `/b` → upstream B for API B; `/api` (the
/// harness's) keeps the login's token.
fn gateway(
    provider: &ProviderProcess,
    main: &Upstream,
    a: &Upstream,
    b: &Upstream,
) -> GatewayBuilder {
    let (a, b) = (a.url(), b.url());
    GatewayBuilder::new(main)
        .issuer(&provider.issuer)
        .refresh_skew("1s")
        .configure(move |c| {
            c.oidc.scopes.extend(["a.read".into(), "b.read".into()]);
            c.routes.push(RawRoute {
                resource: Some(API_A.into()),
                scopes: vec!["a.read".into()],
                ..route("/a", &a)
            });
            c.routes.push(RawRoute {
                resource: Some(API_B.into()),
                scopes: vec!["b.read".into()],
                ..route("/b", &b)
            });
        })
}

fn bearers(upstream: &Upstream) -> Vec<String> {
    upstream
        .seen()
        .iter()
        .filter_map(|s| s.header("authorization"))
        .map(|h| h.trim_start_matches("Bearer ").to_owned())
        .collect()
}

/// A JWT's payload, unverified (the upstream's view).
fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

async fn resource_grants(api: &ProviderApi, resource: &str) -> u64 {
    api.get("/__test/stats").await["resource_grants"][resource]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_gets_a_token_for_its_own_api_never_the_login_token_nor_the_other_routes() {
    let (provider, api) = provider("300");
    let (main, up_a, up_b) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let gw = gateway(&provider, &main, &up_a, &up_b).start().await;
    let mut browser = Browser::new(&gw);
    browser.login_as(&unique_user("derived")).await;
    for path in ["/api/x", "/a/x", "/b/x", "/a/y", "/b/y"] {
        let r = browser.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
    }
    let login = bearers(&main).pop().expect("login token forwarded on /api");
    let (a, b) = (bearers(&up_a), bearers(&up_b));
    assert_eq!((a.len(), b.len()), (2, 2));
    assert_eq!(a[0], a[1], "API A's token is kept and reused");
    assert_eq!(b[0], b[1], "API B's token is kept and reused");
    assert_ne!(a[0], login, "never the login token");
    assert_ne!(b[0], login, "never the login token");
    assert_ne!(a[0], b[0], "never the other route's");
    let (pa, pb) = (payload(&a[0]), payload(&b[0]));
    assert_eq!(pa["aud"], API_A, "{pa}");
    assert_eq!(pa["scope"], "a.read", "{pa}");
    assert_eq!(pb["aud"], API_B, "{pb}");
    assert_eq!(pb["scope"], "b.read", "{pb}");
    assert_eq!(resource_grants(&api, API_A).await, 1);
    assert_eq!(resource_grants(&api, API_B).await, 1);

    let dump = redis_dump(&gw).await;
    for (what, token) in [
        ("API A's token", &a[0]),
        ("API B's token", &b[0]),
        ("login token", &login),
    ] {
        assert!(
            !dump.contains(token.as_str()),
            "{what} found in clear in Redis"
        );
    }
    assert!(!dump.contains("eyJ"), "a JWT found in clear in Redis");

    let user = browser.get("/auth/user").await;
    assert_eq!(user.status, StatusCode::OK);
    let shown = user.json().to_string();
    for token in [&a[0], &b[0], &login] {
        assert!(!shown.contains(token.as_str()), "/auth/user shows a token");
    }

    // Logout removes the record, and the derived tokens with it.
    let r = browser
        .request(
            reqwest::Method::POST,
            "/auth/logout",
            &[("x-csrf", "1")],
            None,
        )
        .await;
    assert!(r.status.is_success() || r.status.is_redirection(), "{r:?}");
    assert_eq!(gw.session_count().await, 0, "record gone");
    let r = browser.get("/a/x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(bearers(&up_a).len(), 2, "nothing more forwarded");
}

/// Every key and value under the gateway's prefix, as text.
async fn redis_dump(gw: &Gateway) -> String {
    let client = redis::Client::open(gw.redis_url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let mut dump = Vec::<u8>::new();
    for key in gw.redis_keys().await {
        dump.extend_from_slice(key.as_bytes());
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let read = match kind.as_str() {
            "string" => "GET",
            "hash" => "HGETALL",
            "set" => "SMEMBERS",
            "zset" => "ZRANGE",
            other => panic!("unexpected key type {other} for {key}"),
        };
        let mut cmd = redis::cmd(read);
        cmd.arg(&key);
        if read == "ZRANGE" {
            cmd.arg(0).arg(-1);
        }
        let values: Vec<Vec<u8>> = if read == "GET" {
            vec![cmd.query_async(&mut conn).await.expect("GET")]
        } else {
            cmd.query_async(&mut conn).await.expect("read")
        };
        for v in values {
            dump.extend_from_slice(&v);
        }
    }
    String::from_utf8_lossy(&dump).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_exchange_route_gets_an_exchanged_token_for_its_api() {
    const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
    let (provider, api) = provider("300");
    let (main, up_a, up_b) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let up_x = Upstream::start().await;
    let x = up_x.url();
    let gw = gateway(&provider, &main, &up_a, &up_b)
        .configure(move |c| {
            c.routes.push(RawRoute {
                resource: Some(API_B.into()),
                scopes: vec!["b.read".into()],
                token_exchange: true,
                ..route("/x", &x)
            });
        })
        .start()
        .await;
    let mut browser = Browser::new(&gw);
    browser.login_as(&unique_user("exchange")).await;
    for path in ["/api/x", "/b/x", "/x/1", "/x/2"] {
        let r = browser.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
    }
    let stats = api.get("/__test/stats").await;
    assert_eq!(stats["token_grants"][TOKEN_EXCHANGE], 1, "{stats}");
    let login = bearers(&main).pop().expect("login token");
    let (b, exchanged) = (bearers(&up_b), bearers(&up_x));
    assert_eq!(exchanged.len(), 2);
    assert_eq!(exchanged[0], exchanged[1], "kept and reused");
    assert_ne!(exchanged[0], login, "never the login token");
    assert_ne!(
        exchanged[0], b[0],
        "not the refresh-grant route's token either"
    );
    let p = payload(&exchanged[0]);
    assert_eq!(p["aud"], API_B, "{p}");
    assert_eq!(p["scope"], "b.read", "{p}");
}

/// 50 concurrent GETs with one cookie on `/a`, spread over the gateways.
async fn fifty_concurrent_calls(
    b: &Browser,
    gateways: &[&Gateway],
) -> Vec<reqwest::Result<StatusCode>> {
    let cookie = b.cookie_header();
    let calls = (0..50).map(|i| {
        let client = b.gw.clone();
        let url = gateways[i % gateways.len()].url(&format!("/a/c{i}"));
        let cookie = cookie.clone();
        async move {
            client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status())
        }
    });
    join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_token_is_refreshed_exactly_once_by_fifty_calls_on_two_gateway_processes() {
    let (provider, api) = provider("5");
    let (main, up_a, up_b) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let first = gateway(&provider, &main, &up_a, &up_b)
        .start_process()
        .await;
    let second = gateway(&provider, &main, &up_a, &up_b)
        .prefix(&first.prefix)
        .start_process()
        .await;
    let mut b = Browser::new(&first);
    b.login_as(&unique_user("derived-multi")).await;
    assert_eq!(b.get("/a/first").await.status, StatusCode::OK);
    assert_eq!(resource_grants(&api, API_A).await, 1);
    let before = bearers(&up_a)[0].clone();
    // Both the login token and API A's token expire.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let statuses = fifty_concurrent_calls(&b, &[&first, &second]).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(StatusCode::OK))),
        "{statuses:?}"
    );
    assert_eq!(
        resource_grants(&api, API_A).await,
        2,
        "exactly one new API A token for 50 calls on two processes"
    );
    let after: Vec<String> = bearers(&up_a).into_iter().skip(1).collect();
    assert_eq!(after.len(), 50);
    assert!(
        after.iter().all(|t| *t == after[0] && *t != before),
        "all 50 used the one new token"
    );
    assert_eq!(payload(&after[0])["aud"], API_A);
    assert_eq!(
        api.get("/__test/stats").await["refresh_failures"],
        0,
        "the rotated refresh token was kept: no grant reused a spent one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_against_a_provider_without_the_grant_is_not_ready_and_names_the_key() {
    // The shared provider does not offer token exchange.
    let upstream = Upstream::start().await;
    let log = std::env::temp_dir().join(format!(
        "oidc-bff-exchange-log-{:x}.log",
        rand::random::<u64>()
    ));
    let up = upstream.url();
    let gw = GatewayBuilder::new(&upstream)
        .configure(move |c| {
            c.routes.push(RawRoute {
                resource: Some(API_A.into()),
                token_exchange: true,
                ..route("/x", &up)
            });
        })
        .log_to(&log)
        .start_process()
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while !text.contains("routes[1].token_exchange") {
        assert!(std::time::Instant::now() < deadline, "never logged: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let ready = reqwest::get(gw.url("/readyz"))
        .await
        .expect("readyz")
        .status();
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    drop(gw);
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_answers_a_derived_route_with_its_own_token_not_the_login_token() {
    let (provider, api) = provider("300");
    let (main, up_a, up_b) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let gw = gateway(&provider, &main, &up_a, &up_b)
        .configure(|c| {
            c.server.trusted_proxies = vec!["127.0.0.1/32".into()];
            c.forward_auth.enabled = true;
        })
        .start()
        .await;
    let mut browser = Browser::new(&gw);
    browser.login_as(&unique_user("derived-fa")).await;
    let r = browser
        .request(
            reqwest::Method::GET,
            "/auth/verify",
            &[("x-original-uri", "/a/x")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = r.headers["authorization"]
        .to_str()
        .expect("ascii")
        .strip_prefix("Bearer ")
        .expect("bearer")
        .to_owned();
    let p = payload(&token);
    assert_eq!(p["aud"], API_A, "{p}");
    assert_eq!(p["scope"], "a.read", "{p}");
    // The proxied route and the forward-auth answer share the one derived
    // token (one grant for API A).
    assert_eq!(browser.get("/a/y").await.status, StatusCode::OK);
    assert_eq!(bearers(&up_a), vec![token.clone()]);
    assert_eq!(resource_grants(&api, API_A).await, 1);
    let r = browser
        .request(
            reqwest::Method::GET,
            "/auth/verify",
            &[("x-original-uri", "/api/x")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_ne!(
        r.headers["authorization"].to_str().expect("ascii"),
        format!("Bearer {token}"),
        "the login route keeps the login token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_token_the_api_refuses_is_replaced_once_and_the_call_retried() {
    let (provider, api) = provider("300");
    let (main, up_a, up_b) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let gw = gateway(&provider, &main, &up_a, &up_b).start().await;
    let mut browser = Browser::new(&gw);
    browser.login_as(&unique_user("derived-retry")).await;
    assert_eq!(browser.get("/a/x").await.status, StatusCode::OK);
    let first = bearers(&up_a).pop().expect("API A's token");
    assert_eq!(resource_grants(&api, API_A).await, 1);

    // API A revokes it: one new grant, the call retried with the new token.
    up_a.revoke(&first);
    let r = browser.get("/a/y").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let seen = bearers(&up_a);
    assert_eq!(
        seen.len(),
        3,
        "first call, refused attempt, retry: {seen:?}"
    );
    assert_eq!(seen[1], first, "the refused attempt");
    assert_ne!(seen[2], first, "the retry carries a new token");
    assert_eq!(payload(&seen[2])["aud"], API_A);
    assert_eq!(
        resource_grants(&api, API_A).await,
        2,
        "exactly one new grant"
    );

    // The new one is kept: the next call uses it without a grant.
    assert_eq!(browser.get("/a/z").await.status, StatusCode::OK);
    assert_eq!(bearers(&up_a).pop().as_ref(), Some(&seen[2]));
    assert_eq!(resource_grants(&api, API_A).await, 2);

    // An API that refuses every token: one renewal, one retry, and its
    // second 401 reaches the browser.
    let (before, grants) = (bearers(&up_a).len(), resource_grants(&api, API_A).await);
    let r = browser.get("/a/refuse-always").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(
        bearers(&up_a).len(),
        before + 2,
        "one attempt and one retry"
    );
    assert_eq!(resource_grants(&api, API_A).await, grants + 1);
}
