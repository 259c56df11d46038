//! A session over its whole life: token refresh without races (in one
//! instance and across processes), refresh failures, per-user limits,
//! listing and revocation by the user, the admin API and the CLI, and
//! back-channel logout from the provider.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::procs::{ProviderProcess, free_port};
use crate::harness::{
    Browser, Chaos, Gateway, GatewayBuilder, ProviderApi, Upstream, duration, unique_user,
};

/// A provider of this test's own, issuing 5-second access tokens.
fn short_token_provider() -> (ProviderProcess, ProviderApi) {
    let p = ProviderProcess::start(&["--access-token-ttl", "5"]);
    let api = ProviderApi::new(&p.issuer);
    (p, api)
}

async fn refresh_grants(api: &ProviderApi) -> u64 {
    api.get("/__test/stats").await["token_grants"]["refresh_token"]
        .as_u64()
        .unwrap_or(0)
}

fn bearers(upstream: &Upstream) -> Vec<String> {
    upstream
        .seen()
        .iter()
        .filter_map(|s| s.header("authorization"))
        .collect()
}

/// 50 concurrent GETs with one cookie, spread over the given gateways.
async fn fifty_concurrent_calls(
    b: &Browser,
    gateways: &[&Gateway],
) -> Vec<reqwest::Result<StatusCode>> {
    let cookie = b.cookie_header();
    let calls = (0..50).map(|i| {
        let client = b.gw.clone();
        let url = gateways[i % gateways.len()].url(&format!("/api/c{i}"));
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
async fn fifty_concurrent_calls_on_an_expired_token_cause_exactly_one_refresh() {
    let (provider, api) = short_token_provider();
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .refresh_skew("1s")
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("flight")).await;
    assert_eq!(b.get("/api/first").await.status, StatusCode::OK);
    let first = bearers(&upstream)[0].clone();
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(refresh_grants(&api).await, 0);

    let statuses = fifty_concurrent_calls(&b, &[&gw]).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(StatusCode::OK))),
        "{statuses:?}"
    );
    assert_eq!(
        refresh_grants(&api).await,
        1,
        "exactly one refresh for 50 concurrent calls"
    );
    let after: Vec<String> = bearers(&upstream).into_iter().skip(1).collect();
    assert_eq!(after.len(), 50);
    assert!(
        after.iter().all(|t| *t == after[0] && *t != first),
        "all 50 used the one refreshed token"
    );
    assert_eq!(
        api.check_access_token(after[0].trim_start_matches("Bearer "))
            .await["active"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_sharing_redis_refresh_exactly_once() {
    let (provider, api) = short_token_provider();
    let upstream = Upstream::start().await;
    let a = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .refresh_skew("1s")
        .start_process()
        .await;
    let b_gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .refresh_skew("1s")
        .prefix(&a.prefix)
        .start_process()
        .await;
    let mut b = Browser::new(&a);
    b.login_as(&unique_user("multi")).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;

    let statuses = fifty_concurrent_calls(&b, &[&a, &b_gw]).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(StatusCode::OK))),
        "{statuses:?}"
    );
    assert_eq!(
        refresh_grants(&api).await,
        1,
        "one refresh across two processes"
    );
    let tokens = bearers(&upstream);
    assert_eq!(tokens.len(), 50);
    assert!(tokens.iter().all(|t| *t == tokens[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_revoked_at_the_provider_ends_the_session() {
    let (provider, api) = short_token_provider();
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .refresh_skew("1s")
        .start()
        .await;
    let user = unique_user("revoked");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    assert_eq!(gw.user_index(&user).await.len(), 1);
    api.post("/__test/revoke-grants", json!({ "sub": user }))
        .await;
    tokio::time::sleep(Duration::from_millis(5500)).await;

    let r = b.get("/api/x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(r.json()["error"], "session_expired");
    assert_eq!(r.json()["reason"], "refresh_refused", "{r:?}");
    assert_eq!(gw.session_count().await, 0, "session removed from Redis");
    assert!(
        gw.user_index(&user).await.is_empty(),
        "and from the user index"
    );
    assert_eq!(upstream.count(), 0);
    assert_eq!(api.get("/__test/stats").await["refresh_failures"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_during_refresh_gives_503_and_keeps_the_session() {
    // The provider sits behind a chaos proxy; its issuer names the proxy.
    let port = free_port();
    let chaos = Chaos::start(([127, 0, 0, 1], port).into()).await;
    let issuer = format!("http://{}", chaos.addr);
    let provider = ProviderProcess::start(&[
        "--access-token-ttl",
        "5",
        "--port",
        &port.to_string(),
        "--issuer",
        &issuer,
    ]);
    assert_eq!(provider.issuer, issuer);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&issuer)
        .refresh_skew("1s")
        .configure(|c| c.oidc.http_timeout = duration("1s"))
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("idpdown")).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;

    chaos.refuse();
    let r = b.get("/api/x").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(r.json()["error"], "provider_unavailable");
    chaos.stall();
    let r = b.get("/api/x").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{r:?}");
    assert_eq!(r.json()["error"], "provider_timeout");
    assert_eq!(
        gw.session_count().await,
        1,
        "the session is kept for a later try"
    );
    assert_eq!(upstream.count(), 0);

    chaos.pass();
    let r = b.get("/api/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_refresh_token_ends_when_its_access_token_expires() {
    let (provider, _api) = short_token_provider();
    let upstream = Upstream::start().await;
    // A client without the refresh_token grant gets no refresh token.
    ProviderApi::new(&provider.issuer)
        .post(
            "/__test/clients",
            json!({
                "client_id": "no-refresh", "client_secret": "oidc-bff-secret",
                "grant_types": ["authorization_code"], "token_endpoint_auth_method": "client_secret_basic",
            }),
        )
        .await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .client_id("no-refresh")
        .refresh_skew("1s")
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("norefresh")).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let r = b.get("/api/x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(r.json()["reason"], "expired", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_is_written_at_most_once_per_touch_interval() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.session.touch_interval = duration("60s"))
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("touch")).await;
    let key = gw
        .redis_keys()
        .await
        .into_iter()
        .find(|k| k.starts_with(&format!("{}s:", gw.prefix)))
        .expect("key");
    let record = |mut conn: redis::aio::MultiplexedConnection, key: String| async move {
        let r: Vec<u8> = redis::cmd("HGET")
            .arg(key)
            .arg("r")
            .query_async(&mut conn)
            .await
            .expect("HGET");
        r
    };
    let before = record(gw.redis().await, key.clone()).await;
    for _ in 0..20 {
        assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = record(gw.redis().await, key.clone()).await;
    assert_eq!(
        before, after,
        "20 requests inside the interval wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_two_sessions_evicts_the_oldest_on_the_third_login() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.session.max_per_user = 2)
        .admin()
        .start()
        .await;
    let user = unique_user("limit");
    let mut first = Browser::new(&gw);
    let mut second = Browser::new(&gw);
    let mut third = Browser::new(&gw);
    first.login_as(&user).await;
    second.login_as(&user).await;
    assert_eq!(first.get("/api/x").await.status, StatusCode::OK);
    third.login_as(&user).await;

    let evicted = first.get("/api/x").await;
    assert_eq!(
        evicted.status,
        StatusCode::UNAUTHORIZED,
        "the oldest was evicted"
    );
    assert_eq!(evicted.json()["reason"], "session_limit", "{evicted:?}");
    assert_eq!(second.get("/api/x").await.status, StatusCode::OK);
    assert_eq!(third.get("/api/x").await.status, StatusCode::OK);
    let list = third.get("/auth/sessions").await.json();
    let sessions = list["sessions"].as_array().expect("array");
    assert_eq!(sessions.len(), 2, "{list}");
    assert_eq!(sessions[0]["current"], true, "newest first: {list}");
    assert_eq!(gw.user_index(&user).await.len(), 2);
    let (status, admin) = gw
        .admin(Method::GET, &format!("/admin/sessions?user={user}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(admin["sessions"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_and_revoke_their_own_sessions() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).admin().start().await;
    let user = unique_user("mine");
    let mut browsers = Vec::new();
    for _ in 0..3 {
        let mut b = Browser::new(&gw);
        b.login_as(&user).await;
        browsers.push(b);
    }
    let list = browsers[0].get("/auth/sessions").await.json();
    let sessions = list["sessions"].as_array().cloned().expect("array");
    assert_eq!(sessions.len(), 3);
    let me = browsers[0].get("/auth/user").await.json()["session"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], me.as_str());
    for s in &sessions {
        assert_eq!(s["last_ip"], "127.0.0.1");
        assert!(s["created_at"].as_u64().is_some() && s["expires_at"].as_u64().is_some());
        let text = s.to_string();
        assert!(
            !text.contains("eyJ") && !text.contains("token"),
            "no tokens in the list: {text}"
        );
    }
    let second = browsers[1].get("/auth/user").await.json()["session"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Revoking needs the CSRF header, like any state-changing call.
    let path = format!("/auth/sessions/{second}/revoke");
    assert_eq!(
        browsers[0]
            .request(Method::POST, &path, &[], None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = browsers[0]
        .request(Method::POST, &path, &[("x-csrf", "1")], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["result"]["outcome"], "revoked");
    let ended = browsers[1].get("/auth/user").await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ended.json()["reason"], "revoked_by_user", "{ended:?}");

    // Twice: the admin API reports it was already revoked, and by whom.
    let (status, v) = gw
        .admin(
            Method::POST,
            "/admin/sessions/revoke",
            Some(json!({ "id": second })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["result"]["outcome"], "already_revoked", "{v}");
    assert_eq!(v["result"]["previous"]["reason"], "user");

    // Someone else's session is not theirs to see or end.
    let mut other = Browser::new(&gw);
    other.login_as(&unique_user("other")).await;
    let r = other
        .request(
            Method::POST,
            &format!("/auth/sessions/{me}/revoke"),
            &[("x-csrf", "1")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(browsers[0].get("/api/x").await.status, StatusCode::OK);

    // Revoke all except the current one (admin API).
    let (status, v) = gw
        .admin(
            Method::POST,
            "/admin/sessions/revoke",
            Some(json!({ "user": user, "except": me })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["revoked"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(browsers[0].get("/api/x").await.status, StatusCode::OK);
    let ended = browsers[2].get("/api/x").await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ended.json()["reason"], "revoked_by_operator", "{ended:?}");
    assert_eq!(gw.user_index(&user).await, vec![me.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_requires_its_bearer_token() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).admin().start().await;
    let addr = gw.admin.expect("admin");
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{addr}/admin/stats"))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .get(format!("http://{addr}/admin/stats"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Admin calls carry a request ID, as in the access log.
    assert!(r.headers().contains_key("x-request-id"));
    let (status, stats) = gw.admin(Method::GET, "/admin/stats", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert!(stats["memory_bytes"].as_u64().is_some());
    // The admin API is not reachable on the public listener.
    let mut b = Browser::new(&gw);
    assert_eq!(b.get("/admin/stats").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_revokes_sessions() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let user = unique_user("cli");
    let mut b1 = Browser::new(&gw);
    let mut b2 = Browser::new(&gw);
    b1.login_as(&user).await;
    b2.login_as(&user).await;
    let keep = b1.get("/auth/user").await.json()["session"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let config =
        std::env::temp_dir().join(format!("oidc-bff-cli-{:x}.toml", rand::random::<u32>()));
    std::fs::write(
        &config,
        format!(
            "[server]\npublic_url = \"http://localhost:1\"\n[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"x\"\nclient_secret = \"x\"\n\
             [session]\nencryption_keys = [{{ id = \"t1\", key = \"{}\" }}]\n[store]\nurl = \"{}\"\nkey_prefix = \"{}\"\n",
            crate::harness::KEY_B64,
            gw.redis_url,
            gw.prefix
        ),
    )
    .expect("config");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("run cli");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = run(&["sessions", "list", "--user", &user]);
    assert!(
        table.starts_with("ID") && table.contains(&keep) && table.contains("127.0.0.1"),
        "{table}"
    );
    let listed: Value =
        serde_json::from_str(&run(&["sessions", "list", "--user", &user, "--json"])).expect("json");
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(2));

    let out = run(&[
        "sessions", "revoke", "--user", &user, "--except", &keep, "--json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["revoked"].as_array().map(Vec::len), Some(1));
    assert_eq!(b1.get("/api/x").await.status, StatusCode::OK);
    assert_eq!(b2.get("/api/x").await.status, StatusCode::UNAUTHORIZED);

    assert!(run(&["sessions", "revoke", "--id", &keep]).contains("revoked"));
    assert!(run(&["sessions", "revoke", "--id", &keep]).contains("already revoked (admin by cli:"));
    let stats: Value = serde_json::from_str(&run(&["sessions", "stats", "--json"])).expect("json");
    assert_eq!(stats["sessions"], 0);
    let _ = std::fs::remove_file(&config);
}

/// A client of this test's own, whose back-channel logout URI is the
/// gateway. Returns the gateway and the client ID.
async fn backchannel_gateway(upstream: &Upstream) -> (Gateway, String) {
    backchannel_gateway_from(GatewayBuilder::new(upstream)).await
}

/// [`backchannel_gateway`] from a builder set up by the caller (a store
/// of its own, say).
pub async fn backchannel_gateway_from(builder: GatewayBuilder) -> (Gateway, String) {
    // The client must exist before the gateway uses it, and its logout URI
    // must name the gateway: register, start, register again.
    let client_id = format!("bcl-{:08x}", rand::random::<u32>());
    let api = ProviderApi::shared();
    let register = |uri: String| {
        json!({
            "client_id": client_id, "client_secret": "oidc-bff-secret",
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "client_secret_basic",
            "backchannel_logout_uri": uri, "backchannel_logout_session_required": true,
        })
    };
    api.post(
        "/__test/clients",
        register("http://127.0.0.1:1/auth/backchannel-logout".into()),
    )
    .await;
    let gw = builder.client_id(&client_id).start().await;
    api.post(
        "/__test/clients",
        register(gw.url("/auth/backchannel-logout")),
    )
    .await;
    (gw, client_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backchannel_logout_from_the_provider_ends_that_provider_session() {
    let upstream = Upstream::start().await;
    let (gw, client_id) = backchannel_gateway(&upstream).await;
    let user = unique_user("bcl");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let mut other_device = Browser::new(&gw);
    other_device.login_as(&user).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);

    let claims = b.get("/auth/user").await.json()["claims"].clone();
    let sid = claims["sid"]
        .as_str()
        .expect("the ID token carried the provider sid")
        .to_owned();
    let r = ProviderApi::shared()
        .post(
            "/__test/backchannel-logout",
            json!({ "client_id": client_id, "sub": user, "sid": sid }),
        )
        .await;
    assert_eq!(r["ok"], true, "the gateway accepted the logout token: {r}");
    let ended = b.get("/api/x").await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ended.json()["reason"], "ended_at_provider", "{ended:?}");
    // Only that provider session ended (by sid), not the other device's.
    assert_eq!(other_device.get("/api/x").await.status, StatusCode::OK);
    assert_eq!(gw.user_index(&user).await.len(), 1);
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

/// A logout token for `client_id` signed with the provider's key, naming
/// `subject` (`sid` and/or `sub`), with a fresh `jti`.
pub async fn logout_token(client_id: &str, subject: Value) -> String {
    let api = ProviderApi::shared();
    let mut payload = json!({
        "iss": api.issuer, "aud": client_id, "iat": now(), "exp": now() + 120,
        "jti": format!("jti-{:x}", rand::random::<u64>()),
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    if let (Some(p), Some(s)) = (payload.as_object_mut(), subject.as_object()) {
        p.extend(s.clone());
    }
    api.post("/__test/sign", json!({ "payload": payload }))
        .await["jwt"]
        .as_str()
        .expect("jwt")
        .to_owned()
}

pub async fn post_logout_token(gw: &Gateway, token: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(gw.url("/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("post");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_logout_tokens_are_refused_and_change_nothing() {
    let upstream = Upstream::start().await;
    let (gw, client_id) = backchannel_gateway(&upstream).await;
    let api = ProviderApi::shared();
    let user = unique_user("forged");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let sid = b.provider_sid().await;
    let valid = |jti: &str| {
        json!({
            "iss": api.issuer, "aud": client_id, "iat": now(), "exp": now() + 120, "jti": jti,
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} }, "sid": sid,
        })
    };
    let header = json!({ "typ": "logout+jwt" });
    let sign = |payload: Value| {
        let api = &api;
        let header = header.clone();
        async move {
            api.post(
                "/__test/sign",
                json!({ "payload": payload, "header": header }),
            )
            .await["jwt"]
                .as_str()
                .expect("jwt")
                .to_owned()
        }
    };
    let mut cases: Vec<(&str, String)> = Vec::new();
    let forged = api
        .post(
            "/__test/sign-with-foreign-key",
            json!({ "payload": valid("forged"), "header": header }),
        )
        .await["jwt"]
        .as_str()
        .expect("jwt")
        .to_owned();
    cases.push(("forged signature", forged));
    let mut p = valid("expired");
    p["iat"] = json!(now() - 3600);
    p["exp"] = json!(now() - 3000);
    cases.push(("expired", sign(p).await));
    let mut p = valid("aud");
    p["aud"] = json!("someone-else");
    cases.push(("wrong audience", sign(p).await));
    let mut p = valid("iss");
    p["iss"] = json!("https://evil.example");
    cases.push(("wrong issuer", sign(p).await));
    let mut p = valid("events");
    p.as_object_mut().expect("obj").remove("events");
    cases.push(("no back-channel event", sign(p).await));
    let mut p = valid("nonce");
    p["nonce"] = json!("n");
    cases.push(("carries a nonce", sign(p).await));
    let mut p = valid("nosid");
    p.as_object_mut().expect("obj").remove("sid");
    cases.push(("neither sid nor sub", sign(p).await));
    // A sid that is there but unusable is not dropped (which would widen
    // the logout to every session of `sub`), and an empty one names nobody.
    let mut p = valid("sid-number");
    p["sid"] = json!(12345);
    p["sub"] = json!(user);
    cases.push(("sid not a string, with sub", sign(p).await));
    let mut p = valid("sid-empty");
    p["sid"] = json!("");
    cases.push(("empty sid", sign(p).await));
    let mut p = valid("sub-empty");
    p.as_object_mut().expect("obj").remove("sid");
    p["sub"] = json!("");
    cases.push(("empty sub", sign(p).await));
    cases.push(("not a JWT", "garbage".into()));

    for (what, token) in &cases {
        let (status, body) = post_logout_token(&gw, token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert!(
            body["error_description"].as_str().is_some(),
            "{what}: a reason is given"
        );
        assert_eq!(
            b.get("/api/x").await.status,
            StatusCode::OK,
            "{what} changed something"
        );
    }

    // A valid token works once; its replay is refused.
    let token = sign(valid(&format!("jti-{:x}", rand::random::<u64>()))).await;
    let (status, body) = post_logout_token(&gw, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], 1);
    let (status, body) = post_logout_token(&gw, &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "replay: {body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("replayed"))
    );
    assert_eq!(b.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
}

/// A logout token's `exp` is the provider's to choose; one years ahead
/// (or beyond any date) must still end the session once, and its replay
/// still be refused. Its `jti` used to be remembered until that `exp`:
/// Redis refused the expiry, the answer was a 503 on every attempt and
/// the session stayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_token_whose_exp_is_far_ahead_ends_the_session_once() {
    let upstream = Upstream::start().await;
    let (gw, client_id) = backchannel_gateway(&upstream).await;
    let api = ProviderApi::shared();
    for ahead in [1_000_000_000_000_000u64, 100_000_000_000_000_000] {
        let user = unique_user("far-exp");
        let mut b = Browser::new(&gw);
        b.login_as(&user).await;
        let payload = json!({
            "iss": api.issuer, "aud": client_id, "iat": now(), "exp": now() + ahead,
            "jti": format!("far-{:x}", rand::random::<u64>()),
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} }, "sub": user,
        });
        let token = api
            .post("/__test/sign", json!({ "payload": payload }))
            .await["jwt"]
            .as_str()
            .expect("jwt")
            .to_owned();
        let (status, body) = post_logout_token(&gw, &token).await;
        assert_eq!(status, StatusCode::OK, "exp {ahead} s ahead: {body}");
        assert_eq!(body["revoked"], 1, "{body}");
        assert_eq!(b.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
        let (status, body) = post_logout_token(&gw, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "replay: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_token_with_only_sub_ends_all_of_the_users_sessions() {
    let upstream = Upstream::start().await;
    let (gw, client_id) = backchannel_gateway(&upstream).await;
    let api = ProviderApi::shared();
    let user = unique_user("bysub");
    let mut b1 = Browser::new(&gw);
    let mut b2 = Browser::new(&gw);
    b1.login_as(&user).await;
    b2.login_as(&user).await;
    let payload = json!({
        "iss": api.issuer, "aud": client_id, "iat": now(), "exp": now() + 120,
        "jti": format!("sub-{:x}", rand::random::<u64>()),
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} }, "sub": user,
    });
    let token = api
        .post("/__test/sign", json!({ "payload": payload }))
        .await["jwt"]
        .as_str()
        .expect("jwt")
        .to_owned();
    let (status, body) = post_logout_token(&gw, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], 2);
    assert_eq!(b1.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b2.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
    assert!(gw.user_index(&user).await.is_empty());
}

/// The one session record a fresh gateway holds after one login.
async fn the_session_key(gw: &Gateway) -> String {
    gw.redis_keys()
        .await
        .into_iter()
        .find(|k| k.starts_with(&format!("{}s:", gw.prefix)))
        .expect("a session record")
}

/// A GET with exactly this cookie header, whatever the browser's jar holds.
async fn get_with_cookie(b: &Browser, gw: &Gateway, cookie: &str) -> StatusCode {
    b.gw.get(gw.url("/api/x"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("request")
        .status()
}

/// The 401 body's `reason` for exactly this cookie header.
async fn reason_with_cookie(b: &Browser, gw: &Gateway, cookie: &str) -> Value {
    let r =
        b.gw.get(gw.url("/auth/user"))
            .header("cookie", cookie)
            .send()
            .await
            .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    r.json::<Value>().await.expect("JSON body")["reason"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_restored_in_redis_after_logout_stays_ended() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("restore")).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    let cookie = b.cookie_header();
    let key = the_session_key(&gw).await;
    let mut conn = gw.redis().await;
    let saved: Vec<u8> = redis::cmd("DUMP")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("DUMP");
    let out = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    assert_eq!(
        get_with_cookie(&b, &gw, &cookie).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(reason_with_cookie(&b, &gw, &cookie).await, "logged_out");

    // Someone with write access puts the saved hash back, byte for byte.
    let _: () = redis::cmd("RESTORE")
        .arg(&key)
        .arg(0)
        .arg(saved)
        .query_async(&mut conn)
        .await
        .expect("RESTORE");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(exists, "the record is back in Redis");
    assert_eq!(
        get_with_cookie(&b, &gw, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "the revocation's tombstone outranks the restored record"
    );
    assert_eq!(reason_with_cookie(&b, &gw, &cookie).await, "logged_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_idle_deadline_was_edited_in_redis_is_refused() {
    use oidc_bff::session::record::{StoredSession, TAG_LEN};
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("deadline")).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    let key = the_session_key(&gw).await;
    let mut conn = gw.redis().await;
    let original: Vec<u8> = redis::cmd("HGET")
        .arg(&key)
        .arg("r")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    let tagged = StoredSession::decode(&original).expect("decodes");
    let tag: [u8; TAG_LEN] = tagged.tag.try_into().expect("tag");
    let mut record = tagged.record;
    // A week more of idle time; the tag is kept, since without the server
    // key there is no way to make a new one.
    record.body.idle_expires_at += 7 * 24 * 3600;
    let edited = record.encode(|_| tag);
    let write = |bytes: Vec<u8>| {
        let key = key.clone();
        let gw = &gw;
        async move {
            let mut conn = gw.redis().await;
            let _: () = redis::cmd("HSET")
                .arg(key)
                .arg("r")
                .arg(bytes)
                .query_async(&mut conn)
                .await
                .expect("HSET");
        }
    };
    let cookie = b.cookie_header();
    write(edited).await;
    assert_eq!(
        get_with_cookie(&b, &gw, &cookie).await,
        StatusCode::UNAUTHORIZED
    );
    // The unedited bytes still open: it was the edit that was refused.
    write(original).await;
    assert_eq!(get_with_cookie(&b, &gw, &cookie).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_listings_come_in_bounded_pages_with_a_cursor() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).admin().start().await;
    let user = unique_user("pages");
    let mut browsers = Vec::new();
    for _ in 0..3 {
        let mut b = Browser::new(&gw);
        b.login_as(&user).await;
        browsers.push(b);
    }
    let b = &mut browsers[0];
    let first = b.get("/auth/sessions?limit=2").await.json();
    assert_eq!(
        first["sessions"].as_array().map(Vec::len),
        Some(2),
        "{first}"
    );
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = b
        .get(&format!("/auth/sessions?limit=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(
        second["sessions"].as_array().map(Vec::len),
        Some(1),
        "{second}"
    );
    assert_eq!(second["next_cursor"], Value::Null);
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=nope",
        "limit=1&limit=2",
    ] {
        let r = b.get(&format!("/auth/sessions?{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {r:?}");
        assert_eq!(r.json()["error"], "bad_request", "{bad}");
    }
    let (status, admin) = gw
        .admin(
            Method::GET,
            &format!("/admin/sessions?user={user}&limit=1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    assert_eq!(admin["sessions"].as_array().map(Vec::len), Some(1));
    assert!(admin["next_cursor"].is_string(), "{admin}");
    let (status, _) = gw
        .admin(
            Method::GET,
            &format!("/admin/sessions?user={user}&limit=1000"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
