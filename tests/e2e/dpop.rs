//! DPoP (RFC 9449) against the provider fixture started with `--dpop`: its
//! token endpoint binds tokens to a proof's key and requires its nonces,
//! and its resource server (`/resource/dpop`) accepts only a bound token
//! with a valid proof of that key. The gateway's route `/dpop-api` points
//! there with `dpop = true`. An attacker's view is the fixture's list of
//! live access tokens (`/__test/access-tokens`) and the gateway's Redis.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{
    Browser, Gateway, GatewayBuilder, ProviderApi, ProviderProcess, Upstream, route, unique_user,
};
use oidc_bff::config::RawRoute;
use oidc_bff::oidc::dpop::DpopKey;

/// A gateway with `oidc.dpop` on, against `provider`, whose `/dpop-api`
/// route reaches the fixture's DPoP resource server with `dpop = true`.
async fn dpop_gateway(provider: &ProviderProcess, upstream: &Upstream) -> Gateway {
    GatewayBuilder::new(upstream)
        .issuer(&provider.issuer)
        .configure(|c| c.oidc.dpop = true)
        .route(RawRoute {
            strip_prefix: true,
            dpop: true,
            ..route("/dpop-api", &format!("{}/resource", provider.issuer))
        })
        .start()
        .await
}

/// The usual cast of these tests: a `--dpop` provider, its control API, an
/// upstream and a [`dpop_gateway`] in front of them. Each lives as long as
/// the binding its test gives it.
struct DpopWorld {
    provider: ProviderProcess,
    api: ProviderApi,
    upstream: Upstream,
    gw: Gateway,
}

impl DpopWorld {
    async fn start() -> Self {
        let provider = ProviderProcess::start(&["--dpop"]);
        let api = ProviderApi::new(&provider.issuer);
        let upstream = Upstream::start().await;
        let gw = dpop_gateway(&provider, &upstream).await;
        Self {
            provider,
            api,
            upstream,
            gw,
        }
    }
}

/// A browser logged in through `gw` as a new user named after `name`.
async fn logged_in(gw: &Gateway, name: &str) -> (Browser, String) {
    let user = unique_user(name);
    let mut b = Browser::new(gw);
    b.login_as(&user).await;
    (b, user)
}

/// The live access tokens of `user` at the provider, oldest first, as a
/// thief of the provider's (or an API's) storage would have them.
async fn tokens_of(api: &ProviderApi, user: &str) -> Vec<Value> {
    api.get("/__test/access-tokens")
        .await
        .as_array()
        .expect("list")
        .iter()
        .filter(|t| t["sub"] == user)
        .cloned()
        .collect()
}

async fn stats(api: &ProviderApi) -> Value {
    api.get("/__test/stats").await
}

/// A call to the fixture's resource server itself, as an attacker makes
/// it: (status, body).
async fn call_resource(
    provider: &ProviderProcess,
    headers: &[(&str, String)],
) -> (StatusCode, Value, Option<String>) {
    let mut req = reqwest::Client::new().get(format!("{}/resource/dpop", provider.issuer));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("resource");
    let status = resp.status();
    let nonce = resp
        .headers()
        .get("dpop-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, resp.json().await.unwrap_or(Value::Null), nonce)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_dpop_binds_tokens_to_the_session_key_and_meets_the_token_endpoints_nonce() {
    let DpopWorld {
        provider: _provider,
        api,
        upstream: _upstream,
        gw,
    } = DpopWorld::start().await;
    let (b, user) = logged_in(&gw, "dpop").await;
    assert!(b.session_cookie().is_some(), "logged in");

    let tokens = tokens_of(&api, &user).await;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let jkt = tokens[0]["jkt"].as_str().unwrap_or_default();
    assert_eq!(
        jkt.len(),
        43,
        "the login's token is bound (cnf.jkt): {tokens:?}"
    );
    let s = stats(&api).await;
    assert_eq!(s["token_grants"]["authorization_code"], 1, "{s}");
    assert_eq!(
        s["token_dpop_nonce_challenges"], 1,
        "the code exchange met use_dpop_nonce once and retried with the nonce: {s}"
    );

    // A second login (another session) has a key of its own.
    let mut other = Browser::new(&gw);
    other.login_as(&user).await;
    let tokens = tokens_of(&api, &user).await;
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert_ne!(tokens[0]["jkt"], tokens[1]["jkt"], "one key per session");
    let s = stats(&api).await;
    assert_eq!(
        s["token_dpop_nonce_challenges"], 1,
        "the provider's nonce is remembered across logins: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_route_reaches_the_resource_with_a_valid_proof_and_remembers_its_nonce() {
    let DpopWorld {
        provider: _provider,
        api,
        upstream,
        gw,
    } = DpopWorld::start().await;
    let (mut b, user) = logged_in(&gw, "dpop-route").await;
    let jkt = tokens_of(&api, &user).await[0]["jkt"].clone();

    let r = b.get("/dpop-api/dpop?page=2").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let v = r.json();
    assert_eq!(v["sub"], user.as_str());
    assert_eq!(v["jkt"], jkt, "the proof was made with the session's key");
    let s = stats(&api).await;
    assert_eq!(s["resource"]["nonce_challenges"], 1, "{s}");
    assert_eq!(s["resource"]["ok"], 1, "one retry with the nonce: {s}");

    // The nonce is remembered: the next call needs no retry, and a POST
    // with a body carries a proof bound to POST.
    let r = b
        .request(
            Method::POST,
            "/dpop-api/dpop",
            &[("x-csrf", "1"), ("content-type", "application/json")],
            Some("{\"a\":1}".into()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["method"], "POST");
    let s = stats(&api).await;
    assert_eq!(s["resource"]["nonce_challenges"], 1, "{s}");
    assert_eq!(s["resource"]["ok"], 2, "{s}");

    // A rotated nonce costs one retry, body and all.
    api.post("/__test/resource/rotate-nonce", json!({})).await;
    let r = b
        .request(
            Method::POST,
            "/dpop-api/dpop",
            &[("x-csrf", "1"), ("content-type", "application/json")],
            Some("{\"a\":2}".into()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let s = stats(&api).await;
    assert_eq!(s["resource"]["nonce_challenges"], 2, "{s}");
    assert_eq!(s["resource"]["ok"], 3, "{s}");
    assert_eq!(
        s["resource"]["refused"],
        json!({}),
        "no proof of the gateway's was refused: {s}"
    );
    // A route without `dpop` sends the token as before, with no proof.
    assert_eq!(b.get("/api/plain").await.status, StatusCode::OK);
    let seen = upstream.seen();
    let last = seen.last().expect("the plain route reached its upstream");
    assert!(last.header("dpop").is_none());
    assert!(
        last.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer ")),
        "{:?}",
        last.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_refuses_a_stolen_token_without_a_proof_and_with_a_proof_from_another_key() {
    let DpopWorld {
        provider,
        api,
        upstream: _upstream,
        gw,
    } = DpopWorld::start().await;
    let (mut b, user) = logged_in(&gw, "dpop-thief").await;
    assert_eq!(b.get("/dpop-api/dpop").await.status, StatusCode::OK);

    let stolen = tokens_of(&api, &user).await[0]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, body, _) =
        call_resource(&provider, &[("authorization", format!("Bearer {stolen}"))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body["error_description"],
        "a DPoP-bound token sent as Bearer"
    );
    let (status, body, _) =
        call_resource(&provider, &[("authorization", format!("DPoP {stolen}"))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error_description"], "no DPoP proof");

    // A well-made proof (right method, URL and token hash) signed with
    // the thief's key: refused for its key, before any nonce is offered.
    let url = format!("{}/resource/dpop", provider.issuer);
    let thief = DpopKey::from_pkcs8(&DpopKey::generate().expect("key")).expect("loads");
    let proof = thief
        .proof(
            "GET",
            &url,
            oidc_bff::clock::unix_now(),
            None,
            Some(&stolen),
        )
        .expect("proof");
    let (status, body, nonce) = call_resource(
        &provider,
        &[("authorization", format!("DPoP {stolen}")), ("dpop", proof)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body["error_description"],
        "the proof is signed by another key than the token is bound to"
    );
    assert_eq!(nonce, None, "nothing learnt");
    // The session itself still gets through.
    assert_eq!(b.get("/dpop-api/dpop").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_with_dpop_uses_the_nonce_and_keeps_the_binding() {
    let provider = ProviderProcess::start(&["--dpop", "--access-token-ttl", "5"]);
    let api = ProviderApi::new(&provider.issuer);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .refresh_skew("1s")
        .configure(|c| c.oidc.dpop = true)
        .route(RawRoute {
            strip_prefix: true,
            dpop: true,
            ..route("/dpop-api", &format!("{}/resource", provider.issuer))
        })
        .start()
        .await;
    let user = unique_user("dpop-refresh");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let first = tokens_of(&api, &user).await;
    let jkt = first[0]["jkt"].clone();

    tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
    let r = b.get("/dpop-api/dpop").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let s = stats(&api).await;
    assert_eq!(
        s["token_grants"]["refresh_token"], 1,
        "refreshed first: {s}"
    );
    assert_eq!(s["refresh_failures"], 0, "{s}");
    assert_eq!(
        s["token_dpop_nonce_challenges"], 1,
        "the refresh's proof carried the nonce the login learnt: {s}"
    );
    let now_live: Vec<Value> = tokens_of(&api, &user)
        .await
        .into_iter()
        .filter(|t| t["token"] != first[0]["token"])
        .collect();
    assert_eq!(now_live.len(), 1, "{now_live:?}");
    assert_eq!(
        now_live[0]["jkt"], jkt,
        "the refreshed token is bound to the same key"
    );
    assert_eq!(r.json()["jkt"], jkt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_redis_record_holds_neither_the_key_nor_the_tokens_in_clear() {
    let DpopWorld {
        provider: _provider,
        api,
        upstream: _upstream,
        gw,
    } = DpopWorld::start().await;
    let (mut b, user) = logged_in(&gw, "dpop-dump").await;
    let r = b.get("/dpop-api/dpop").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // The session key's public half, as the proof showed it.
    let x = r.json()["jwk"]["x"].as_str().expect("x").to_owned();
    let x_raw = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&x)
            .expect("b64")
    };
    let token = tokens_of(&api, &user).await[0]["token"]
        .as_str()
        .expect("token")
        .to_owned();

    let mut conn = gw.redis().await;
    let mut dumped = Vec::new();
    for key in gw.redis_keys().await {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        if kind == "hash" {
            let fields: Vec<Vec<u8>> = redis::cmd("HVALS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("HVALS");
            dumped.extend(fields);
        } else if kind == "string" {
            let v: Vec<u8> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("GET");
            dumped.push(v);
        }
    }
    assert!(!dumped.is_empty(), "the session is in Redis");
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for v in &dumped {
        assert!(!contains(v, &x_raw), "the key's point is sealed");
        assert!(!contains(v, x.as_bytes()), "the key's JWK is sealed");
        assert!(!contains(v, token.as_bytes()), "the token is sealed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_refresh_token_of_a_dpop_session() {
    let DpopWorld {
        provider: _provider,
        api,
        upstream: _upstream,
        gw,
    } = DpopWorld::start().await;
    let (mut b, user) = logged_in(&gw, "dpop-logout").await;
    let live = |v: &Value| {
        v.as_array().map_or(0, |a| {
            a.iter()
                .filter(|t| t["sub"] == user.as_str() && t["consumed"] == false)
                .count()
        })
    };
    assert_eq!(live(&api.get("/__test/refresh-tokens").await), 1);
    let r = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let mut left = 1;
    for _ in 0..50 {
        left = live(&api.get("/__test/refresh-tokens").await);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "revoked at the provider");
    assert_eq!(stats(&api).await["revocations"], 1);
    assert_eq!(
        b.get("/dpop-api/dpop").await.status,
        StatusCode::UNAUTHORIZED,
        "the session is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_against_a_provider_that_does_not_offer_it_is_not_ready_and_logs_no_one_in() {
    // The shared provider runs without --dpop: no
    // dpop_signing_alg_values_supported in its discovery document.
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.oidc.dpop = true)
        .start()
        .await;
    let ready = reqwest::get(gw.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let mut b = Browser::new(&gw);
    let r = b.navigate("/auth/login").await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no login starts: {r:?}"
    );
    assert!(b.session_cookie().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_answer_to_a_proof_fails_the_login_and_creates_no_session() {
    let provider = ProviderProcess::start(&["--dpop"]);
    let api = ProviderApi::new(&provider.issuer);
    api.post("/__test/token-type", json!({ "token_type": "Bearer" }))
        .await;
    let upstream = Upstream::start().await;
    let gw = dpop_gateway(&provider, &upstream).await;
    let user = unique_user("dpop-bearer");
    let mut b = Browser::new(&gw);
    let r = b.try_login(&user, &format!("{user}-password")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("Sign-in failed"), "{}", r.body);
    assert!(r.body.contains("not bound to this session"), "{}", r.body);
    assert!(b.session_cookie().is_none());
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_at_login_is_called_with_the_bound_token_and_a_proof() {
    // oidc-provider's userinfo refuses a DPoP-bound token sent as Bearer
    // or without a proof: the login only completes if the gateway proves
    // the key there too.
    let provider = ProviderProcess::start(&["--dpop"]);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .configure(|c| {
            c.oidc.dpop = true;
            c.oidc.userinfo = true;
        })
        .start()
        .await;
    let user = unique_user("dpop-userinfo");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let me = b.get("/auth/user").await;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.json()["claims"]["sub"], user.as_str(), "{me:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_on_a_dpop_route_is_never_retried_as_bearer() {
    let DpopWorld {
        provider,
        api,
        upstream: _upstream,
        gw,
    } = DpopWorld::start().await;
    let (mut b, user) = logged_in(&gw, "dpop-refused").await;
    assert_eq!(b.get("/dpop-api/dpop").await.status, StatusCode::OK);

    // The access token alone is revoked (RFC 7009, as the client): the
    // refresh token still works, so a Bearer-style renewal would succeed.
    let token = tokens_of(&api, &user).await[0]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let revoked = reqwest::Client::new()
        .post(format!("{}/token/revocation", provider.issuer))
        .basic_auth(
            crate::harness::CLIENT_ID,
            Some(crate::harness::CLIENT_SECRET),
        )
        .form(&[
            ("token", token.as_str()),
            ("token_type_hint", "access_token"),
        ])
        .send()
        .await
        .expect("revocation");
    assert!(revoked.status().is_success(), "{revoked:?}");

    let r = b.get("/dpop-api/dpop").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    let s = stats(&api).await;
    let refused = s["resource"]["refused"].as_object().expect("refusals");
    assert!(
        !refused.contains_key("a DPoP-bound token sent as Bearer"),
        "the gateway never falls back to Bearer: {s}"
    );
    assert_eq!(
        s["token_grants"]["refresh_token"].as_u64().unwrap_or(0),
        0,
        "no renewal on a DPoP route: {s}"
    );
}
