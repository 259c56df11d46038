//! Logs are read by more people than tokens should be. A whole session —
//! login, proxied calls, a token refresh, bad cookies, a browser-supplied
//! Authorization header, logout — runs against a gateway process logging
//! at `trace` (every crate) with the access log on, and then no token,
//! cookie value, code, state, client secret or key appears in its output.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{
    Browser, CLIENT_SECRET, GatewayBuilder, KEY_B64, LoginSecrets, ProviderApi, ProviderProcess,
    Upstream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_cookie_or_secret_reaches_the_log_even_at_trace_level() {
    let provider = ProviderProcess::start(&["--access-token-ttl", "5"]);
    let api = ProviderApi::new(&provider.issuer);
    let upstream = Upstream::start().await;
    let log = std::env::temp_dir().join(format!("oidc-bff-log-{:x}.log", rand::random::<u64>()));
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .configure(|c| {
            c.log.level = "trace".into();
            c.log.access_log = true;
        })
        .refresh_skew("1s")
        .log_to(&log)
        .start_process()
        .await;

    let mut b = Browser::new(&gw);
    let LoginSecrets {
        login_cookies,
        code,
        state,
    } = b.login_revealing("/app", "alice", "alice-password").await;
    let session = b.session_cookie().expect("session cookie");
    let logout_token = b.get("/auth/user").await.json()["logout_token"]
        .as_str()
        .expect("logout token")
        .to_owned();

    assert_eq!(b.get("/api/one").await.status, StatusCode::OK);
    // Credentials the browser must not get forwarded or logged.
    b.request(
        Method::GET,
        "/api/own",
        &[("authorization", "Bearer browser-supplied-secret-4711")],
        None,
    )
    .await;
    let mut tampered = Browser::new(&gw);
    let forged = format!("{}AAAA", &session[..session.len() - 4]);
    tampered
        .cookies
        .insert("__Host-oidc-bff".into(), forged.clone());
    assert_eq!(
        tampered.get("/api/x").await.status,
        StatusCode::UNAUTHORIZED
    );
    // Past the access token's life: the next call refreshes it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(b.get("/api/two").await.status, StatusCode::OK);
    let refresh_tokens: Vec<String> = api
        .get("/__test/refresh-tokens")
        .await
        .as_array()
        .expect("refresh tokens")
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    assert!(!refresh_tokens.is_empty());
    let logout = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(logout.status, StatusCode::OK);

    let bearers: Vec<String> = upstream
        .seen()
        .iter()
        .filter_map(|s| s.header("authorization"))
        .map(|a| a.trim_start_matches("Bearer ").to_owned())
        .collect();
    assert!(bearers.len() >= 2, "{bearers:?}");
    assert_ne!(bearers.first(), bearers.last(), "the token was refreshed");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).expect("log");
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("login completed") && text.contains("status=401"),
        "the log was captured: {text}"
    );
    let mut secrets = vec![
        ("session cookie", session),
        ("forged cookie", forged),
        ("authorization code", code),
        ("state", state),
        ("logout token", logout_token),
        ("client secret", CLIENT_SECRET.to_owned()),
        ("encryption key", KEY_B64.to_owned()),
        (
            "browser Authorization",
            "browser-supplied-secret-4711".into(),
        ),
    ];
    secrets.extend(login_cookies.into_iter().map(|c| ("login cookie", c)));
    secrets.extend(bearers.into_iter().map(|t| ("access token", t)));
    secrets.extend(refresh_tokens.into_iter().map(|t| ("refresh token", t)));
    for (what, secret) in secrets {
        assert!(
            !text.contains(&secret),
            "the {what} appears in the log:\n{}",
            text.lines()
                .filter(|l| l.contains(&secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// A proxied body the upstream cuts short, after its 200 went out: the
/// warning about it is written while the body streams, after the request's
/// handler has returned, and still names the request (method, path, ID)
/// as every other line of it does; it carries no token or cookie value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_upstream_cuts_short_is_logged_as_its_requests_without_secrets() {
    let upstream = Upstream::start().await;
    let log = std::env::temp_dir().join(format!("oidc-bff-log-{:x}.log", rand::random::<u64>()));
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.log.level = "info".into();
            c.log.access_log = true;
        })
        .log_to(&log)
        .start_process()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let session = b.session_cookie().expect("session cookie");

    let r = b.get("/api/cut/abort").await;
    assert_eq!(r.status, StatusCode::OK, "the head went out: {r:?}");
    // The browser's read of the body fails (`Browser` then reports an
    // empty body); a body the gateway ended cleanly would read as the
    // 65,536 bytes the upstream sent, hiding the cut.
    assert!(
        r.body.is_empty(),
        "the body was not cut for the browser: {} bytes",
        r.body.len()
    );
    let id = r
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_owned();
    let token = upstream
        .seen()
        .last()
        .and_then(|s| s.header("authorization"))
        .map(|a| a.trim_start_matches("Bearer ").to_owned())
        .expect("the upstream got a token");

    // The line is written when the gateway reads the cut; poll for it.
    let text = crate::harness::log_once_it_has(&log, "cut short").await;
    let _ = std::fs::remove_file(&log);
    let cut: Vec<&str> = text.lines().filter(|l| l.contains("cut short")).collect();
    assert!(!cut.is_empty(), "no line about the cut body:\n{text}");
    let prefix = format!("request{{method=GET path=/api/cut/abort request_id=\"{id}\"}}:");
    for line in &cut {
        assert!(
            line.contains(" WARN ") && line.contains(&prefix),
            "not the request's warning (want {prefix}): {line}"
        );
    }
    for (what, secret) in [("session cookie", &session), ("access token", &token)] {
        assert!(!text.contains(secret.as_str()), "the {what} is in the log");
    }
}
