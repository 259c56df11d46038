//! The audit trail, read back from the file a real gateway writes
//! (`[audit] output = <path>`): each action produces exactly its events,
//! with the request's ID, the resolved client address, the user agent, the
//! user and the session's one-way hash — and no token, cookie, code or
//! state anywhere in the file. The real binary with two workers writes
//! one trail; a file it cannot open stops it at start-up, naming the key.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;

use crate::harness::{Browser, Gateway, GatewayBuilder, ProviderApi, Upstream, route, unique_user};
use oidc_bff::config::{RawCondition, RawRoute};

/// A gateway's audit file, read as JSON lines.
struct AuditFile(PathBuf);

impl AuditFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!(
            "oidc-bff-audit-{:016x}.jsonl",
            rand::random::<u64>()
        )))
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }

    fn events(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The events once `n` have been written (the writer is asynchronous).
    async fn at_least(&self, n: usize) -> Vec<Value> {
        for _ in 0..100 {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} audit events:\n{}", self.text());
    }
}

impl Drop for AuditFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn audited(upstream: &Upstream, file: &AuditFile) -> GatewayBuilder {
    let path = file.0.to_string_lossy().into_owned();
    GatewayBuilder::new(upstream).configure(move |c| c.audit.output = path)
}

/// The events of one action.
fn of<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

/// The one event of `action`; fails if there are none or several.
fn only<'a>(events: &'a [Value], action: &str) -> &'a Value {
    let found = of(events, action);
    assert_eq!(found.len(), 1, "exactly one {action} event: {events:#?}");
    found[0]
}

/// What the trail names a session by, given the admin API's handle.
fn session_hash(store_id: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"oidc-bff audit session\0");
    h.update(store_id.as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The request facts every event from a browser's request carries.
fn assert_request_facts(e: &Value) {
    let time = e["time"].as_str().expect("time");
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {time}"
    );
    let id = e["request_id"].as_str().expect("request_id");
    assert!(!id.is_empty() && id.len() <= 64, "{e}");
    assert_eq!(e["client_ip"], "127.0.0.1", "{e}");
    // The scripted browser sends none; the field is there all the same.
    assert!(e.get("user_agent").is_some(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_and_a_logout_are_audited_with_the_request_facts_and_no_secret() {
    let upstream = Upstream::start().await;
    let file = AuditFile::new();
    let gw = audited(&upstream, &file).start().await;
    let user = unique_user("audit");
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/app").await;
    let login_cookies: Vec<String> = b.cookies.values().cloned().collect();
    let callback = b
        .authenticate(&authorize, &user, &format!("{user}-password"))
        .await;
    let done = b.callback(&callback).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let session_cookie = b.session_cookie().expect("session");
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    let logout = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(logout.status, StatusCode::OK);

    let events = file.at_least(2).await;
    assert_eq!(events.len(), 2, "a login and a logout: {events:#?}");
    let login = only(&events, "login");
    assert_eq!(login["outcome"], "success");
    assert_eq!(login["user"], user.as_str());
    assert_request_facts(login);
    assert_eq!(
        login["request_id"].as_str(),
        done.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        "the callback's own request ID"
    );
    let session = login["session"].as_str().expect("session hash");
    assert_eq!(session.len(), 32);
    let out = only(&events, "logout");
    assert_eq!(out["outcome"], "success");
    assert_eq!(out["user"], user.as_str());
    assert_eq!(out["session"], session, "one session, one name");
    assert_request_facts(out);

    let text = file.text();
    let query = url::Url::parse(&callback).expect("callback URL");
    let mut secrets: Vec<String> = query.query_pairs().map(|(_, v)| v.into_owned()).collect();
    secrets.push(session_cookie);
    secrets.extend(login_cookies);
    secrets.extend(
        upstream
            .seen()
            .iter()
            .filter_map(|s| s.header("authorization")),
    );
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(
            !text.contains(secret.trim_start_matches("Bearer ")),
            "a secret is in the audit trail: {secret}\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_state_is_audited_as_a_failed_login_and_creates_nothing_else() {
    let upstream = Upstream::start().await;
    let file = AuditFile::new();
    let gw = audited(&upstream, &file).start().await;
    let user = unique_user("replay");
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/app").await;
    let callback = b
        .authenticate(&authorize, &user, &format!("{user}-password"))
        .await;
    let mut attacker = Browser::new(&gw);
    attacker.cookies = b.cookies.clone();
    assert_eq!(b.callback(&callback).await.status, StatusCode::SEE_OTHER);
    let replay = attacker.callback(&callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{replay:?}");

    let events = file.at_least(2).await;
    let logins = of(&events, "login");
    assert_eq!(logins.len(), 2, "{events:#?}");
    assert_eq!(events.len(), 2, "{events:#?}");
    let failed = logins
        .iter()
        .find(|e| e["outcome"] == "failure")
        .expect("a failed login");
    assert_eq!(failed["reason"], "state_invalid");
    assert!(failed["session"].is_null() && failed["user"].is_null());
    assert_request_facts(failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refresh_is_audited_under_the_login_s_session() {
    let upstream = Upstream::start().await;
    let file = AuditFile::new();
    // The provider's access tokens live far less than a day: every
    // proxied call refreshes.
    let gw = audited(&upstream, &file).refresh_skew("1d").start().await;
    let user = unique_user("refresh");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);

    let events = file.at_least(2).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let login = only(&events, "login");
    let refresh = only(&events, "refresh");
    assert_eq!(refresh["outcome"], "success");
    assert_eq!(refresh["user"], user.as_str());
    assert_eq!(refresh["session"], login["session"]);
    assert_request_facts(refresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revocation_is_audited_with_its_actor_and_the_admin_call() {
    let upstream = Upstream::start().await;
    let file = AuditFile::new();
    let gw = audited(&upstream, &file).admin().start().await;
    let user = unique_user("adm");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let (status, listed) = gw
        .admin(Method::GET, &format!("/admin/sessions?user={user}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = listed["sessions"][0]["id"]
        .as_str()
        .expect("session id")
        .to_owned();
    let (status, _) = gw
        .admin(
            Method::POST,
            "/admin/sessions/revoke",
            Some(json!({ "id": id })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let events = file.at_least(4).await;
    assert_eq!(events.len(), 4, "{events:#?}");
    let hash = session_hash(&id);
    assert_eq!(only(&events, "login")["session"], hash.as_str());
    let calls = of(&events, "admin_action");
    assert_eq!(calls.len(), 2, "{events:#?}");
    assert_eq!(calls[0]["operation"], "list_sessions");
    assert_eq!(calls[0]["user"], user.as_str());
    assert_eq!(calls[1]["operation"], "revoke_session");
    assert_eq!(calls[1]["session"], hash.as_str());
    assert_eq!(calls[1]["sessions"], 1);
    let revoked = only(&events, "revocation");
    assert_eq!(revoked["actor"], "admin");
    assert_eq!(revoked["reason"], "admin");
    assert_eq!(revoked["session"], hash.as_str());
    assert!(
        !file.text().contains(&id),
        "the handle itself is not written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_by_the_per_user_limit_names_the_evicted_session() {
    let upstream = Upstream::start().await;
    let file = AuditFile::new();
    let gw = audited(&upstream, &file)
        .configure(|c| c.session.max_per_user = 1)
        .start()
        .await;
    let user = unique_user("evict");
    let mut first = Browser::new(&gw);
    let mut second = Browser::new(&gw);
    first.login_as(&user).await;
    second.login_as(&user).await;

    let events = file.at_least(3).await;
    assert_eq!(events.len(), 3, "{events:#?}");
    let logins = of(&events, "login");
    assert_eq!(logins.len(), 2);
    let evicted = only(&events, "eviction");
    assert_eq!(evicted["reason"], "max_per_user");
    assert_eq!(evicted["user"], user.as_str());
    assert_eq!(evicted["session"], logins[0]["session"], "the older one");
    assert_ne!(evicted["session"], logins[1]["session"]);
    assert_request_facts(evicted);
}

/// A client of this test's own whose back-channel logout URI is the
/// gateway (register, start, register again with the gateway's address).
async fn backchannel_gateway(upstream: &Upstream, file: &AuditFile) -> (Gateway, String) {
    let client_id = format!("aud-{:08x}", rand::random::<u32>());
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
    let gw = audited(upstream, file).client_id(&client_id).start().await;
    api.post(
        "/__test/clients",
        register(gw.url("/auth/backchannel-logout")),
    )
    .await;
    (gw, client_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backchannel_logout_is_audited_with_the_sessions_it_ended() {
    let upstream = Upstream::start().await;
    let file = AuditFile::new();
    let (gw, client_id) = backchannel_gateway(&upstream, &file).await;
    let user = unique_user("bclaudit");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let sid = b.provider_sid().await;
    let r = ProviderApi::shared()
        .post(
            "/__test/backchannel-logout",
            json!({ "client_id": client_id, "sub": user, "sid": sid }),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    // A replay of nothing: a form without a token is refused and audited.
    let refused = reqwest::Client::new()
        .post(gw.url("/auth/backchannel-logout"))
        .form(&[("nothing", "here")])
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    let events = file.at_least(4).await;
    assert_eq!(events.len(), 4, "{events:#?}");
    let login = only(&events, "login");
    let calls = of(&events, "backchannel_logout");
    assert_eq!(calls.len(), 2, "{events:#?}");
    assert_eq!(calls[0]["outcome"], "success");
    assert_eq!(calls[0]["user"], user.as_str());
    assert_eq!(calls[0]["sessions"], 1);
    assert_eq!(calls[1]["outcome"], "failure");
    assert_eq!(calls[1]["reason"], "bad_request");
    let revoked = only(&events, "revocation");
    assert_eq!(revoked["actor"], "provider");
    assert_eq!(revoked["reason"], "backchannel");
    assert_eq!(revoked["session"], login["session"]);
    assert!(
        !file.text().contains(&sid),
        "the provider's sid is not written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_csrf_refusals_are_audited_with_the_route() {
    let upstream = Upstream::start().await;
    let file = AuditFile::new();
    let gw = audited(&upstream, &file)
        .route(RawRoute {
            require: vec![RawCondition {
                claim: Some("groups".into()),
                any_of: Some(vec!["admins".into()]),
                ..RawCondition::default()
            }],
            ..route("/admin-only", &upstream.url())
        })
        .start()
        .await;
    let user = unique_user("plain");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let denied = b
        .request(Method::GET, "/admin-only/x", &[("user-agent", UA)], None)
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let forged = b
        .request(Method::POST, "/api/x", &[], Some("{}".into()))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.count(), 0, "nothing refused reached the upstream");

    let events = file.at_least(3).await;
    assert_eq!(events.len(), 3, "{events:#?}");
    let login = only(&events, "login");
    let policy = only(&events, "policy_refusal");
    assert_eq!(policy["outcome"], "failure");
    assert_eq!(policy["reason"], "route_policy");
    assert_eq!(policy["route"], "/admin-only");
    assert_eq!(policy["user"], user.as_str());
    assert_eq!(policy["session"], login["session"]);
    assert_request_facts(policy);
    assert_eq!(policy["user_agent"], UA, "escaped in JSON, read back whole");
    let csrf = only(&events, "csrf_refusal");
    assert_eq!(csrf["reason"], "missing_csrf_header");
    assert_eq!(csrf["route"], "/api");
    assert_eq!(csrf["session"], login["session"], "named from the cookie");
    assert_request_facts(csrf);
}

/// A user agent with JSON's special characters.
const UA: &str = r#"audit-test "agent" \ {"action":"forged"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_process_with_two_workers_writes_one_trail() {
    let upstream = Upstream::start().await;
    let file = AuditFile::new();
    let gw = audited(&upstream, &file)
        .configure(|c| c.server.workers = 2)
        .start_process()
        .await;
    let user = unique_user("proc");
    // Two browsers, so both workers are likely to serve some of it.
    for _ in 0..2 {
        let mut b = Browser::new(&gw);
        b.login_as(&user).await;
        let out = b
            .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
            .await;
        assert_eq!(out.status, StatusCode::OK);
    }
    let events = file.at_least(4).await;
    assert_eq!(events.len(), 4, "{events:#?}");
    assert_eq!(of(&events, "login").len(), 2);
    assert_eq!(of(&events, "logout").len(), 2);
    for e in &events {
        assert_eq!(e["user"], user.as_str());
        assert_request_facts(e);
    }
}

#[test]
fn an_audit_file_that_cannot_be_opened_stops_the_start_naming_the_key() {
    let port = crate::harness::procs::free_port();
    let config = std::env::temp_dir().join(format!(
        "oidc-bff-audit-bad-{:x}.toml",
        rand::random::<u32>()
    ));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             [oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"x\"\nclient_secret = \"x\"\n\
             [session]\nencryption_keys = [{{ id = \"t1\", key = \"{}\" }}]\n\
             [store]\nkind = \"memory\"\n\
             [audit]\noutput = \"/nonexistent-dir/oidc-bff/audit.jsonl\"\n",
            crate::harness::KEY_B64,
        ),
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&config);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "started anyway: {text}");
    assert!(
        text.contains("audit.output") && text.contains("/nonexistent-dir/oidc-bff/audit.jsonl"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontchannel_logout_is_audited_with_the_sessions_it_ended_and_a_refusal_too() {
    let upstream = Upstream::start().await;
    let file = AuditFile::new();
    let gw = audited(&upstream, &file)
        .configure(|c| c.oidc.frontchannel_logout.enabled = true)
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("audit-fcl")).await;
    let sid = b.provider_sid().await;
    let issuer = ProviderApi::shared().issuer;
    let frame = reqwest::Client::new();
    let wrong = frame
        .get(gw.url("/auth/frontchannel-logout"))
        .query(&[("iss", "http://127.0.0.1:1"), ("sid", sid.as_str())])
        .send()
        .await
        .expect("front-channel request");
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let ok = frame
        .get(gw.url("/auth/frontchannel-logout"))
        .query(&[("iss", issuer.as_str()), ("sid", sid.as_str())])
        .send()
        .await
        .expect("front-channel request");
    assert_eq!(ok.status(), StatusCode::OK);

    // login, the refusal, the logout and the one revocation it caused.
    let events = file.at_least(4).await;
    let fcl = of(&events, "frontchannel_logout");
    assert_eq!(fcl.len(), 2, "{events:#?}");
    assert_eq!(fcl[0]["outcome"], "failure");
    assert_eq!(fcl[0]["reason"], "issuer_mismatch");
    assert_eq!(fcl[1]["outcome"], "success");
    assert_eq!(fcl[1]["sessions"], 1);
    let revocation = only(&events, "revocation");
    assert_eq!(revocation["reason"], "frontchannel");
    assert_eq!(revocation["actor"], "provider");
    assert_eq!(
        revocation["session"],
        only(&events, "login")["session"],
        "the session the login made"
    );
    assert!(
        !file.text().contains(&sid),
        "the provider sid is never written"
    );
}
