//! Every way a callback can be wrong: each is refused with the exact status,
//! and no session is created.

use reqwest::StatusCode;

use crate::harness::{Browser, Gateway, GatewayBuilder, Upstream, urlencode};

async fn gateway() -> (Upstream, Gateway) {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    (upstream, gw)
}

fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{name} missing in {url}"))
}

fn replace_param(url: &str, name: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_state_is_rejected_and_creates_no_session() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    assert_eq!(b.callback(&cb).await.status, StatusCode::SEE_OTHER);
    assert_eq!(gw.session_count().await, 1);

    let mut replay = Browser::new(&gw);
    replay.cookies = b.cookies.clone();
    replay.cookies.remove("__Host-oidc-bff");
    let r = replay.callback(&cb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(
        r.body.contains("Sign-in expired"),
        "a rendered page: {}",
        r.body
    );
    assert!(replay.session_cookie().is_none());
    assert_eq!(gw.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_state_is_rejected_and_creates_no_session() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let r = b
        .callback(&gw.url("/auth/callback?code=abc&state=never-issued"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let api = b
        .request(
            reqwest::Method::GET,
            "/auth/callback?code=abc&state=never-issued",
            &[],
            None,
        )
        .await;
    assert_eq!(api.json()["error"], "login_expired");
    let r = b.callback(&gw.url("/auth/callback?code=abc")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_nonce_is_rejected_and_creates_no_session() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    // The provider is asked for a different nonce than the gateway stored.
    let tampered = replace_param(&authorize, "nonce", "attacker-chosen-nonce");
    let cb = b.authenticate(&tampered, "alice", "alice-password").await;
    let r = b.callback(&cb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("Sign-in failed"), "{}", r.body);
    assert!(b.session_cookie().is_none());
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_error_response_renders_a_page_and_creates_no_session() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    // prompt=none without a provider session: the provider answers with
    // error=login_required to our callback — a real IdP error.
    let cb = b
        .authenticate(
            &format!("{authorize}&prompt=none"),
            "alice",
            "alice-password",
        )
        .await;
    assert!(cb.contains("error="), "expected an error callback: {cb}");
    let r = b.callback(&cb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(
        r.body.contains("Sign-in failed") && r.body.contains("login_required"),
        "{}",
        r.body
    );
    assert!(r.body.contains("/auth/login"), "offers to log in again");
    // The state was spent: the same state cannot be completed later.
    let state = query_param(&cb, "state");
    let r = b
        .callback(&gw.url(&format!(
            "/auth/callback?code=x&state={}",
            urlencode(&state)
        )))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_in_another_browser_is_refused() {
    let (_up, gw) = gateway().await;
    let mut victim = Browser::new(&gw);
    let mut attacker = Browser::new(&gw);
    // The attacker starts a login and gets the victim to complete the callback.
    let authorize = attacker.start_login("/").await;
    let cb = attacker
        .authenticate(&authorize, "bob", "bob-password")
        .await;
    let r = victim.callback(&cb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(victim.session_cookie().is_none());
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_return_to_values_are_refused_before_anything_is_stored() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    for payload in [
        "//evil.com",
        "/\\evil.com",
        "/%09/evil.com",
        "https://evil.com",
        "https://127.0.0.1.evil.com/",
        &format!("{}@evil.com", gw.base),
        "https://evil.com\\@127.0.0.1",
        "javascript:alert(1)",
    ] {
        let r = b
            .navigate(&format!("/auth/login?return_to={}", urlencode(payload)))
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "payload {payload:?} → {r:?}"
        );
        assert!(r.location().is_none(), "payload {payload:?} redirected");
    }
    assert!(
        gw.redis_keys().await.is_empty(),
        "nothing stored for refused logins: {:?}",
        gw.redis_keys().await
    );
    // A path on our origin is fine.
    let r = b.navigate("/auth/login?return_to=%2Fapp%3Fx%3D1").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

/// The browser's one pending-login cookie: (name, value).
fn login_cookie(b: &Browser) -> (String, String) {
    let found: Vec<_> = b
        .cookies
        .iter()
        .filter(|(k, _)| k.starts_with("__Host-oidc-bff-login-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().expect("one login cookie")
}

/// A callback as an API caller sees it: the JSON error code.
async fn error_code(b: &mut Browser, cb: &str) -> (StatusCode, String) {
    let r = b.request(reqwest::Method::GET, cb, &[], None).await;
    let code = r.json()["error"].as_str().unwrap_or_default().to_owned();
    (r.status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_callback_with_its_login_cookie_is_refused_on_every_instance() {
    let (up, gw) = gateway().await;
    let other = GatewayBuilder::new(&up).prefix(&gw.prefix).start().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    let captured = b.cookies.clone();
    assert_eq!(b.callback(&cb).await.status, StatusCode::SEE_OTHER);
    assert_eq!(gw.session_count().await, 1);

    // The attacker kept the callback URL and the login cookie.
    for target in [&gw, &other] {
        let mut replay = Browser::new(target);
        replay.cookies = captured.clone();
        let cb = cb.replacen(&gw.base, &target.base, 1);
        assert_eq!(
            error_code(&mut replay, &cb).await,
            (StatusCode::BAD_REQUEST, "login_expired".into())
        );
        assert!(replay.session_cookie().is_none());
    }
    assert_eq!(gw.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_the_login_cookie_is_refused_as_expired() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    let (name, value) = login_cookie(&b);
    b.cookies.remove(&name);
    assert_eq!(
        error_code(&mut b, &cb).await,
        (StatusCode::BAD_REQUEST, "login_expired".into())
    );
    // The refused attempt did not spend the login: its own browser can finish.
    b.cookies.insert(name, value);
    assert_eq!(b.callback(&cb).await.status, StatusCode::SEE_OTHER);
    assert_eq!(gw.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_login_cookie_is_refused_and_spends_nothing() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    let (name, value) = login_cookie(&b);
    let flipped = {
        let mut chars: Vec<char> = value.chars().collect();
        let mid = chars.len() / 2;
        chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let mut other = Browser::new(&gw);
    let foreign = {
        other.start_login("/").await;
        login_cookie(&other).1
    };
    for bad in [
        flipped,
        value[..value.len() - 4].to_owned(),
        format!("{value}AAAA"),
        String::new(),
        "%00%0a".into(),
        "not+base64/=".into(),
        "A".repeat(6000),
        // Another login's genuine cookie, moved under this state's name.
        foreign,
    ] {
        b.cookies.insert(name.clone(), bad.clone());
        let (status, code) = error_code(&mut b, &cb).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "login_expired"),
            "cookie {bad:.40}"
        );
    }
    assert_eq!(gw.session_count().await, 0);
    b.cookies.insert(name, value);
    assert_eq!(b.callback(&cb).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_pending_login_is_refused() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.oidc.login_timeout = crate::harness::duration("1s"))
        .start()
        .await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    // The cookie's Max-Age has passed too, but a browser may keep it (or an
    // attacker replay it): the sealed expiry decides.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        error_code(&mut b, &cb).await,
        (StatusCode::BAD_REQUEST, "login_expired".into())
    );
    assert_eq!(gw.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_state_values_are_refused_without_touching_the_store() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    b.cookies
        .insert("__Host-oidc-bff-login-AAAAAAAA".into(), "garbage".into());
    for state in [
        "AAAAAAAA".to_owned(),
        "AAAAAAAA".repeat(100),
        "a;b=c\r\nX".into(),
        "\u{202e}éé".into(),
        "%00".into(),
    ] {
        let r = b
            .request(
                reqwest::Method::GET,
                &format!("/auth/callback?code=x&state={}", urlencode(&state)),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{state:?}: {r:?}");
        // Over 512 characters a state is no state at all (bad_request).
        let code = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            code == "login_expired" || (state.len() > 512 && code == "bad_request"),
            "{state:?}: {code}"
        );
    }
    assert!(
        gw.redis_keys().await.is_empty(),
        "{:?}",
        gw.redis_keys().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_with_newlines_and_escapes_logs_as_one_escaped_line() {
    let upstream = Upstream::start().await;
    let log = std::env::temp_dir().join(format!(
        "oidc-bff-callback-log-{:x}.log",
        rand::random::<u64>()
    ));
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.log.format = "text".into())
        .log_to(&log)
        .start_process()
        .await;
    let mut b = Browser::new(&gw);
    let hostile = "access_denied\nERROR forged=\"yes\" FORGED-LINE\r\x1b[2J\x1b[31m";
    let r = b
        .callback(&gw.url(&format!(
            "/auth/callback?error={}&error_description={}&state=s",
            urlencode(hostile),
            urlencode(hostile)
        )))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let text =
        crate::harness::log_once_it_has(&log, "provider returned an error to the callback").await;
    drop(gw);
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("provider returned an error to the callback"),
        "the log was captured: {text}"
    );
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with("ERROR forged") && !line.contains("\r"),
            "a forged log line: {line:?}"
        );
    }
    assert!(
        !text.contains('\x1b'),
        "raw ANSI escape in the log: {text:?}"
    );
    assert!(text.contains("access_denied\\nERROR forged"), "{text}");
}

fn without_param(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

/// RFC 9207 §2.4: the provider advertises
/// `authorization_response_iss_parameter_supported`, so an answer without
/// `iss` is not its own (a mix-up attacker's provider, or a stripped
/// parameter), however good its code and state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_the_iss_its_provider_always_sends_is_refused() {
    let (_up, gw) = gateway().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    assert!(
        cb.contains("iss="),
        "the fixture sends iss (RFC 9207): {cb}"
    );
    let r = b.callback(&without_param(&cb, "iss")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("Sign-in failed"), "{}", r.body);
    assert!(b.session_cookie().is_none());
    assert_eq!(gw.session_count().await, 0);
    // An empty one is no better.
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    let r = b.callback(&replace_param(&cb, "iss", "")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(gw.session_count().await, 0);
}
