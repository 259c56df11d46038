//! Reloading the configuration of a running gateway process (SIGHUP,
//! `POST /admin/reload`): a new route and a new key take effect while a
//! request in flight finishes and every session survives; the key ring
//! rotates in three reloads; a configuration that does not validate is
//! refused, named in the log, and the running one keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oidc_bff::config::{RawConfig, RawKey};
use reqwest::{Method, StatusCode};

use crate::harness::{
    Browser, Gateway, GatewayBuilder, TestCa, TlsStatusServer, Upstream, route, unique_user,
};

/// Another 32-byte key, base64.
const KEY2_B64: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn key(id: &str, b64: &str) -> RawKey {
    RawKey {
        id: id.into(),
        key: Some(b64.into()),
        key_file: None,
    }
}

/// The key ring of `raw` as IDs, first (sealing) first.
fn ring(raw: &RawConfig) -> Vec<String> {
    raw.session
        .encryption_keys
        .iter()
        .map(|k| k.id.clone())
        .collect()
}

/// Rewrites the file with `change` applied to what the gateway was
/// started with, and reloads through the admin API; the report.
async fn reload_with(
    gw: &Gateway,
    change: impl FnOnce(&mut RawConfig),
) -> (StatusCode, serde_json::Value) {
    let mut raw = gw.config.clone();
    change(&mut raw);
    gw.write_config(&raw);
    let started = Instant::now();
    let answer = gw.admin(Method::POST, "/admin/reload", None).await;
    eprintln!("reload answered in {:?}", started.elapsed());
    answer
}

fn log_file() -> PathBuf {
    std::env::temp_dir().join(format!("oidc-bff-reload-{:x}.log", rand::random::<u64>()))
}

/// Polls `check` until it holds, for at most 20 s (a loaded machine).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_route_and_a_key_while_a_request_in_flight_and_the_sessions_carry_on() {
    let (one, two) = (Upstream::start().await, Upstream::start().await);
    let gw = GatewayBuilder::new(&one)
        .configure(|c| c.server.workers = 2)
        .start_process()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("reload")).await;
    assert_eq!(b.get("/v2/x").await.status, StatusCode::NOT_FOUND);

    // A slow call, in flight across the reload.
    let slow = {
        let (url, cookie) = (gw.url("/api/sleep/3000"), b.cookie_header());
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status())
        })
    };
    eventually("the slow call to reach the upstream", || async {
        one.seen().iter().any(|s| s.uri.ends_with("/sleep/3000"))
    })
    .await;

    let mut raw = gw.config.clone();
    raw.routes.push(route("/v2", &two.url()));
    raw.session.encryption_keys.push(key("t2", KEY2_B64));
    gw.write_config(&raw);
    gw.process().signal("HUP");

    // The browser's keep-alive connection gets the new routes too.
    let mut r = b.get("/v2/x").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.status == StatusCode::NOT_FOUND && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = b.get("/v2/x").await;
    }
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["path"], "/v2/x", "served by the new route");
    assert!(two.seen().iter().any(|s| s.uri == "/v2/x"));
    assert_eq!(
        slow.await.expect("joined").expect("the slow call answered"),
        StatusCode::OK,
        "the request in flight finished"
    );
    let r = b.get("/api/after").await;
    assert_eq!(r.status, StatusCode::OK, "the session survived: {}", r.body);
    assert_eq!(r.json()["authorization_present"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_ring_rotates_in_three_reloads_and_only_retiring_a_key_ends_its_sessions() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).admin().start_process().await;
    let mut before = Browser::new(&gw);
    before.login_as(&unique_user("rotate")).await;
    let t1 = gw.config.session.encryption_keys[0].clone();

    // 1. Distribute: t2 opens only.
    let (status, report) = reload_with(&gw, |c| {
        c.session.encryption_keys = vec![t1.clone(), key("t2", KEY2_B64)];
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["needs_restart"], serde_json::json!([]));
    assert_eq!(before.get("/api/1").await.status, StatusCode::OK);

    // 2. Switch: t2 seals; what t1 sealed still opens.
    let (status, report) = reload_with(&gw, |c| {
        c.session.encryption_keys = vec![key("t2", KEY2_B64), t1.clone()];
        assert_eq!(ring(c), ["t2", "t1"]);
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let r = before.get("/api/2").await;
    assert_eq!(r.status, StatusCode::OK, "sealed under t1: {}", r.body);
    let mut after = Browser::new(&gw);
    after.login_as(&unique_user("rotate")).await;

    // 3. Retire t1: sessions sealed under t2 open, new logins work.
    let (status, report) = reload_with(&gw, |c| {
        c.session.encryption_keys = vec![key("t2", KEY2_B64)];
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let r = after.get("/api/3").await;
    assert_eq!(r.status, StatusCode::OK, "sealed under t2: {}", r.body);
    let mut newest = Browser::new(&gw);
    newest.login_as(&unique_user("rotate")).await;
    assert_eq!(newest.get("/api/4").await.status, StatusCode::OK);
    // The retirement took effect: the first session, still under t1 (no
    // activity write re-sealed it within session.touch_interval, 60 s),
    // ends, as docs/operations.md says a removed key's sessions do.
    let r = before.get("/api/5").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_does_not_validate_is_refused_names_the_key_and_the_old_config_serves_on() {
    let upstream = Upstream::start().await;
    let log = log_file();
    let gw = GatewayBuilder::new(&upstream)
        .admin()
        .metrics()
        .log_to(&log)
        .start_process()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("bad-reload")).await;

    // Not TOML, by SIGHUP. The parse error's quoted line holds a key: the
    // log names the problem without it.
    gw.write_config_text(
        "[session]\nencryption_keys = [ { id = \"a\", key = \"NOT-FOR-ANY-LOG\" ]\n",
    );
    gw.process().signal("HUP");
    eventually("the refusal in the log", || async {
        read(&log).contains("reload refused")
    })
    .await;
    assert!(
        read(&log).contains("TOML parse error at line 2"),
        "{}",
        read(&log)
    );
    assert!(!read(&log).contains("NOT-FOR-ANY-LOG"), "{}", read(&log));
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);

    // A value that does not validate: a route over the gateway's own
    // endpoints, and the new one beside it must not take effect either.
    let (status, report) = reload_with(&gw, |c| {
        c.routes.push(route("/auth/extra", &upstream.url()));
        c.routes.push(route("/v2", &upstream.url()));
    })
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    assert_eq!(report["result"], "invalid");
    let problems = report["problems"].to_string();
    assert!(problems.contains("routes[1].path"), "{problems}");
    eventually("the key named in the log", || async {
        read(&log).contains("routes[1].path")
    })
    .await;

    let r = b.get("/api/x").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the old config serves: {}",
        r.body
    );
    assert_eq!(b.get("/v2/x").await.status, StatusCode::NOT_FOUND);
    let metrics = gw.scrape().await;
    assert!(
        metrics.contains("oidc_bff_config_reloads_total{result=\"invalid\"} 2"),
        "{metrics}"
    );
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_listen_address_applies_the_rest_and_names_the_key() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).admin().start_process().await;
    let (status, report) = reload_with(&gw, |c| {
        c.server.listen = "127.0.0.1:1".into();
        c.routes.push(route("/v2", &upstream.url()));
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["needs_restart"],
        serde_json::json!(["server.listen"])
    );
    // Named again by the next reload: it still runs on the old address.
    let (_, again) = gw.admin(Method::POST, "/admin/reload", None).await;
    assert_eq!(again["needs_restart"], serde_json::json!(["server.listen"]));
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("listen")).await;
    assert_eq!(
        b.get("/v2/x").await.status,
        StatusCode::OK,
        "still on the old port, with the new route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_sets_the_log_level() {
    let upstream = Upstream::start().await;
    let log = log_file();
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.log.level = "warn".into())
        .admin()
        .log_to(&log)
        .start_process()
        .await;
    let (status, report) = reload_with(&gw, |_| {}).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(
        !read(&log).contains("configuration reloaded"),
        "INFO is off"
    );
    let (status, report) = reload_with(&gw, |c| c.log.level = "info".into()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    eventually("an INFO line", || async {
        read(&log).contains("configuration reloaded")
    })
    .await;
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_ca_added_by_a_reload_is_trusted_from_the_next_request() {
    let ca = TestCa::new(false);
    let https_upstream = TlsStatusServer::start(&ca);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .route(route(
            "/secure",
            &format!("https://127.0.0.1:{}", https_upstream.port),
        ))
        .admin()
        .start_process()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("ca")).await;
    let r = b.get("/secure/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "not trusted yet: {r:?}");

    let (status, report) = reload_with(&gw, |c| {
        c.proxy.tls_ca_file = Some(PathBuf::from(ca.file("ca.pem")));
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let r = b.get("/secure/x").await;
    assert_eq!(r.status, StatusCode::OK, "trusted after the reload: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reloads_are_audited_as_admin_actions_taken_or_refused() {
    let upstream = Upstream::start().await;
    let trail = std::env::temp_dir().join(format!(
        "oidc-bff-reload-audit-{:016x}.jsonl",
        rand::random::<u64>()
    ));
    let path = trail.to_string_lossy().into_owned();
    let gw = GatewayBuilder::new(&upstream)
        .admin()
        .configure(move |c| c.audit.output = path)
        .start_process()
        .await;

    let (status, _) = reload_with(&gw, |c| c.routes.push(route("/v2", &upstream.url()))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = reload_with(&gw, |c| {
        c.routes.push(route("/auth/extra", &upstream.url()));
    })
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let reloads = || {
        read(&trail)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["operation"] == "reload")
            .collect::<Vec<_>>()
    };
    eventually("two reload events in the trail", || async {
        reloads().len() == 2
    })
    .await;
    let events = reloads();
    assert_eq!(events[0]["action"], "admin_action");
    assert_eq!(events[0]["outcome"], "success");
    assert_eq!(events[1]["outcome"], "failure");
    assert_eq!(events[1]["reason"], "invalid");
    let _ = std::fs::remove_file(&trail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_ends_sessions_applies_and_says_so_naming_the_key() {
    let upstream = Upstream::start().await;
    let log = log_file();
    let gw = GatewayBuilder::new(&upstream)
        .admin()
        .log_to(&log)
        .start_process()
        .await;
    let mut before = Browser::new(&gw);
    before.login_as(&unique_user("ends")).await;
    let t1 = gw.config.session.encryption_keys[0].clone();

    // Adding a key ends nothing, and says nothing.
    let (status, report) = reload_with(&gw, |c| {
        c.session.encryption_keys = vec![t1.clone(), key("t2", KEY2_B64)];
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ends_sessions"], serde_json::json!([]), "{report}");

    // Replacing the only key: applied, and named.
    let (status, report) = reload_with(&gw, |c| {
        c.session.encryption_keys = vec![key("t2", KEY2_B64)];
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let said = report["ends_sessions"].to_string();
    assert!(
        said.contains("session.encryption_keys: key `t1` is removed"),
        "{report}"
    );
    assert!(!said.contains(KEY2_B64), "{report}");
    assert_eq!(
        before.get("/api/x").await.status,
        StatusCode::UNAUTHORIZED,
        "as it said"
    );
    eventually("the warning naming the key", || async {
        read(&log).contains("key=session.encryption_keys")
    })
    .await;
    let _ = std::fs::remove_file(&log);
}
