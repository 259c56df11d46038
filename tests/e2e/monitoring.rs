//! The shipped monitoring files (docs/monitoring/alerts.yml, a Prometheus
//! rule file, and docs/monitoring/grafana-dashboard.json) name only
//! metrics a real gateway exports.
//!
//! How names are read: a family with labels prints nothing until one of
//! its label sets has been used, so the gateway is first driven through
//! a login, a refresh, a proxied call, a refused call, a refused
//! back-channel logout and a logout; then the names of the sample lines
//! of its `/metrics` (not the `# TYPE` lines, whose counter names lack
//! `_total` and whose histogram names lack `_bucket`) are the names that
//! exist. Every `oidc_bff_*` name in either file must be one of them, and
//! in a rule's expression every selector (a name followed by `{` or `[`)
//! must be one of them too, so a misspelt prefix cannot slip through.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::harness::{Browser, GatewayBuilder, Upstream, unique_user};

/// The Prometheus rule file format (what `promtool check rules` reads),
/// refusing keys it does not have.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn read(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `oidc_bff_*` names in a text.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("oidc_bff_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        // Not the middle of a longer identifier.
        let before = rest[..i].chars().next_back();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Identifiers directly followed by `{` or `[` in a PromQL expression:
/// the metric names of its selectors.
fn selectors_in(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        let ident = b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        match (ident, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if (b == b'{' || b == b'[') && !bytes[s].is_ascii_digit() {
                    out.insert(expr[s..i].to_owned());
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Every string in a JSON document (expressions, variable queries,
/// legends): any of them may name a metric.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// The names of the sample lines of an exposition.
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_rule_file_is_in_prometheus_format_and_every_rule_is_complete() {
    let rules: RuleFile = serde_norway::from_str(&read("docs/monitoring/alerts.yml"))
        .expect("docs/monitoring/alerts.yml is a Prometheus rule file");
    assert!(!rules.groups.is_empty());
    for g in &rules.groups {
        assert!(!g.name.is_empty() && g.interval.is_none());
        assert!(!g.rules.is_empty(), "group {} has rules", g.name);
        for r in &g.rules {
            let name = r.alert.as_deref().or(r.record.as_deref()).unwrap_or("?");
            assert!(
                r.alert.is_some() != r.record.is_some(),
                "{name}: alert or record"
            );
            assert!(!r.expr.trim().is_empty(), "{name}: an expression");
            if r.alert.is_some() {
                assert!(r.labels.contains_key("severity"), "{name}: a severity");
                assert!(r.annotations.contains_key("summary"), "{name}: a summary");
            }
            if let Some(f) = &r.for_ {
                assert!(humantime::parse_duration(f).is_ok(), "{name}: for {f}");
            }
        }
    }
}

#[test]
fn the_name_readers_find_what_they_must() {
    assert_eq!(
        names_in("rate(oidc_bff_a_total[5m]) / x_oidc_bff_b + oidc_bff_c"),
        ["oidc_bff_a_total", "oidc_bff_c"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert_eq!(
        selectors_in(r#"sum by (le) (rate(odic_bff_x{a="1"}[5m])) > 0.5 and y[1h]"#),
        ["odic_bff_x", "y"].into_iter().map(String::from).collect()
    );
    assert_eq!(
        exported(
            "# TYPE oidc_bff_logins counter\noidc_bff_logins_total{outcome=\"success\"} 1\noidc_bff_up 1\n"
        ),
        ["oidc_bff_logins_total", "oidc_bff_up"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_name_is_exported_by_a_gateway() {
    let upstream = Upstream::start().await;
    // Every proxied call refreshes (the provider's tokens live far less).
    let gw = GatewayBuilder::new(&upstream)
        .refresh_skew("1d")
        .metrics()
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("mon")).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    let refused = b.request(Method::POST, "/api/x", &[], None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let bcl = reqwest::Client::new()
        .post(gw.url("/auth/backchannel-logout"))
        .form(&[("nothing", "here")])
        .send()
        .await
        .expect("post");
    assert_eq!(bcl.status(), StatusCode::BAD_REQUEST);
    let out = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK);
    // The active-sessions gauge is counted by a background task.
    let mut scrape = gw.scrape().await;
    for _ in 0..50 {
        if exported(&scrape).contains("oidc_bff_sessions_active") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        scrape = gw.scrape().await;
    }
    let exported = exported(&scrape);

    let rules: RuleFile =
        serde_norway::from_str(&read("docs/monitoring/alerts.yml")).expect("rule file");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("docs/monitoring/grafana-dashboard.json"))
            .expect("docs/monitoring/grafana-dashboard.json is JSON");
    let mut missing = Vec::new();
    let mut named = BTreeSet::new();
    for r in rules.groups.iter().flat_map(|g| &g.rules) {
        let rule = r.alert.as_deref().or(r.record.as_deref()).unwrap_or("?");
        let mut texts = vec![r.expr.clone()];
        texts.extend(r.annotations.values().cloned());
        let mut names: BTreeSet<String> = texts.iter().flat_map(|t| names_in(t)).collect();
        names.extend(selectors_in(&r.expr));
        assert!(
            names.iter().any(|n| n.starts_with("oidc_bff_")),
            "alert {rule} names no oidc-bff metric"
        );
        for n in names {
            if !exported.contains(&n) {
                missing.push(format!("alerts.yml {rule}: {n}"));
            }
            named.insert(n);
        }
    }
    let mut texts = Vec::new();
    strings(&dashboard, &mut texts);
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard worth the name");
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for n in selectors_in(expr) {
                if !exported.contains(&n) {
                    missing.push(format!("dashboard {title}: {n}"));
                }
            }
        }
    }
    for n in texts.iter().flat_map(|t| names_in(t)) {
        if !exported.contains(&n) {
            missing.push(format!("dashboard: {n}"));
        }
        named.insert(n);
    }
    assert!(
        missing.is_empty(),
        "names not exported:\n{}\n\nexported:\n{exported:#?}",
        missing.join("\n")
    );
    // What operators must see is on the dashboard or alerted on.
    for must in [
        "oidc_bff_sessions_active",
        "oidc_bff_logins_total",
        "oidc_bff_token_refreshes_total",
        "oidc_bff_session_revocations_total",
        "oidc_bff_upstream_duration_seconds_bucket",
        "oidc_bff_upstream_responses_total",
        "oidc_bff_store_operation_duration_seconds_bucket",
        "oidc_bff_provider_request_duration_seconds_bucket",
        "oidc_bff_websockets_open",
        "oidc_bff_connections_open",
        "oidc_bff_audit_events_dropped_total",
    ] {
        assert!(
            named.contains(must),
            "{must} is neither shown nor alerted on"
        );
    }
}

/// The value of one sample line (`name{labels}`) of a scrape, if present.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

/// The sessions gauge of `gw` once it shows `want` (within 5 s), or the
/// last value it showed.
async fn wait_for_gauge(gw: &crate::harness::Gateway, want: f64) -> Option<f64> {
    let mut seen = None;
    for _ in 0..50 {
        seen = sample(&gw.scrape().await, "oidc_bff_sessions_active");
        if seen == Some(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_gauge_counts_the_stores_sessions_and_upstream_answers_are_counted_per_route()
{
    let upstream = Upstream::start().await;
    let first = GatewayBuilder::new(&upstream)
        .route(crate::harness::route("/down", "http://127.0.0.1:9"))
        .start()
        .await;
    // The first instance counted at start-up (none yet), took the fleet's
    // counting lease and published its count.
    let mut redis = first.redis().await;
    let lease = format!("{}count:lease", first.prefix);
    let total = format!("{}count:total", first.prefix);
    let mut published: Option<u64> = None;
    for _ in 0..50 {
        published = redis::cmd("GET")
            .arg(&total)
            .query_async(&mut redis)
            .await
            .expect("get");
        if published.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(published, Some(0), "the first instance's published count");
    for _ in 0..3 {
        Browser::new(&first).login_as(&unique_user("gauge")).await;
    }
    // A second instance on the same store, while the lease is held, walks
    // no keys: it reports the fleet's published count (at most one period
    // old) ...
    // The session cache off: every lookup is a timed store read.
    let second = || {
        GatewayBuilder::new(&upstream)
            .route(crate::harness::route("/down", "http://127.0.0.1:9"))
            .prefix(&first.prefix)
            .metrics()
            .configure(|c| c.store.cache_entries = 0)
    };
    let held = second().start().await;
    // Its first tick runs at start-up; a second is more than enough here.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        sample(&held.scrape().await, "oidc_bff_sessions_active"),
        Some(0.0)
    );
    let published: Option<u64> = redis::cmd("GET")
        .arg(&total)
        .query_async(&mut redis)
        .await
        .expect("get");
    assert_eq!(published, Some(0), "the instance without the lease counted");
    drop(held);
    // ... and once the period is over (the lease gone), the next instance
    // to count walks the keys and publishes the three sessions.
    let _: () = redis::cmd("DEL")
        .arg(&lease)
        .query_async(&mut redis)
        .await
        .expect("del");
    let gw = second().start().await;
    assert_eq!(wait_for_gauge(&gw, 3.0).await, Some(3.0));
    let published: Option<u64> = redis::cmd("GET")
        .arg(&total)
        .query_async(&mut redis)
        .await
        .expect("get");
    assert_eq!(published, Some(3), "the count is published for the fleet");
    let scrape = gw.scrape().await;
    assert_eq!(
        sample(&scrape, "oidc_bff_sessions_active"),
        Some(3.0),
        "{scrape}"
    );

    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("routes")).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    assert_eq!(b.get("/api/y").await.status, StatusCode::OK);
    assert_eq!(b.get("/down/x").await.status, StatusCode::BAD_GATEWAY);
    let scrape = gw.scrape().await;
    let count = |series: &str| sample(&scrape, series).unwrap_or(0.0);
    assert_eq!(
        count(r#"oidc_bff_upstream_responses_total{route="/api",status="2xx"}"#),
        2.0,
        "{scrape}"
    );
    assert_eq!(
        count(r#"oidc_bff_upstream_responses_total{route="/down",status="error"}"#),
        1.0
    );
    assert_eq!(
        count(r#"oidc_bff_upstream_duration_seconds_count{route="/api"}"#),
        2.0
    );
    assert!(count(r#"oidc_bff_store_operation_duration_seconds_count{operation="get"}"#) >= 3.0);
    assert!(count(r#"oidc_bff_store_operation_duration_seconds_count{operation="create"}"#) >= 1.0);
    assert!(count(r#"oidc_bff_provider_request_duration_seconds_count{endpoint="token"}"#) >= 1.0);
    assert!(count(r#"oidc_bff_connections_open{listener="metrics"}"#) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_counted_per_listener_and_given_back_when_closed() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).metrics().start().await;
    let public = r#"oidc_bff_connections_open{listener="public"}"#;
    let before = sample(&gw.scrape().await, public).unwrap_or(0.0);
    let held: Vec<tokio::net::TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                tokio::net::TcpStream::connect(gw.addr)
                    .await
                    .expect("connect"),
            );
        }
        v
    };
    let mut now = 0.0;
    for _ in 0..50 {
        now = sample(&gw.scrape().await, public).unwrap_or(0.0);
        if now >= before + 3.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(now, before + 3.0);
    drop(held);
    for _ in 0..100 {
        now = sample(&gw.scrape().await, public).unwrap_or(0.0);
        if now == before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(now, before, "closed connections are given back");
}
