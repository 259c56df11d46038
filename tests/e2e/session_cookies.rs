//! Cookies and stored sessions: tampering, expiry, corruption, and what a
//! dump of Redis reveals (nothing usable).

use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::{Browser, GatewayBuilder, Upstream, duration};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_truncated_cookies_are_refused_without_reaching_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let good = b.session_cookie().expect("cookie");

    let mut flipped = good.clone().into_bytes();
    flipped[30] = if flipped[30] == b'A' { b'B' } else { b'A' };
    let mut lookup_flipped = good.clone().into_bytes();
    lookup_flipped[3] = if lookup_flipped[3] == b'A' {
        b'B'
    } else {
        b'A'
    };
    for bad in [
        String::from_utf8(flipped).expect("ascii"),
        String::from_utf8(lookup_flipped).expect("ascii"),
        good[..40].to_owned(),
        format!("{good}AA"),
        "not-a-session".to_owned(),
        format!("{}%2F", &good[..41]),
    ] {
        let mut t = Browser::new(&gw);
        t.cookies.insert("__Host-oidc-bff".into(), bad.clone());
        let r = t.get("/api/data").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "cookie {bad:?}: {r:?}");
        assert_eq!(r.json()["error"], "session_expired");
        assert!(
            r.set_cookies()
                .iter()
                .any(|c| c.starts_with("__Host-oidc-bff=;")),
            "cookie cleared: {r:?}"
        );
    }
    assert_eq!(
        upstream.count(),
        0,
        "nothing forwarded without a valid session"
    );
    // The genuine cookie still works and the session was not harmed.
    assert_eq!(b.get("/api/data").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_and_activity_keeps_it_alive() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.session.idle_timeout = duration("3s");
            c.session.touch_interval = duration("1s");
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    // Activity every second for 5 s keeps it past the 3 s idle limit.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(b.get("/api/ping").await.status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // Let the last touch land, then stay idle past the limit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = b.get("/api/ping").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(r.json()["error"], "session_expired");
    let r = b.navigate("/auth/user").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The record's key outlives the session's idle deadline by at most one
    // idle period (activity recorded apart may need it): it is gone by
    // then (3 s, with room for a loaded machine).
    let ended = std::time::Instant::now();
    while gw.session_count().await != 0 {
        assert!(
            ended.elapsed() < Duration::from_secs(3 + 3),
            "the record outlived its idle deadline by more than one idle period"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absolute_lifetime_ends_an_active_session() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.session.idle_timeout = duration("2s");
            c.session.absolute_timeout = duration("4s");
            c.session.touch_interval = duration("0s");
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let logged_in = std::time::Instant::now();
    // Constant use, so the 2 s idle timeout never strikes; measured by the
    // clock, not by steps, so a loaded machine does not skew it.
    let ended = loop {
        if b.get("/api/ping").await.status != StatusCode::OK {
            break logged_in.elapsed();
        }
        assert!(
            logged_in.elapsed() < Duration::from_secs(10),
            "the session outlived its absolute lifetime"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        ended >= Duration::from_millis(2500) && ended <= Duration::from_secs(6),
        "ended {ended:?} after login under constant use; absolute_timeout is 4 s"
    );
    assert_eq!(b.get("/api/ping").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stored_record_is_treated_as_no_session() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let key = gw
        .redis_keys()
        .await
        .into_iter()
        .find(|k| k.starts_with(&format!("{}s:", gw.prefix)))
        .expect("session key");
    let client = redis::Client::open(gw.redis_url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let cookie = b.session_cookie().expect("cookie");
    for garbage in [
        &b"\x01garbage"[..],
        b"",
        &[1u8; 9][..],
        b"\x07{\"not\":\"ours\"}",
    ] {
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("r")
            .arg(garbage)
            .query_async(&mut conn)
            .await
            .expect("HSET");
        let r = b.get("/api/data").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
        // The gateway cleared the cookie; the browser (an attacker) sends it again.
        b.cookies.insert("__Host-oidc-bff".into(), cookie.clone());
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_redis_holds_no_token_session_id_or_claim_in_clear() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    b.get("/api/data").await;
    let access_token = upstream.seen()[0]
        .header("authorization")
        .expect("bearer")
        .trim_start_matches("Bearer ")
        .to_owned();
    let cookie = b.session_cookie().expect("cookie");
    // A pending login is stored too: start one more.
    b.start_login("/later").await;

    let client = redis::Client::open(gw.redis_url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let mut dump = Vec::<u8>::new();
    let keys = gw.redis_keys().await;
    assert!(
        keys.len() >= 3,
        "session, index and pending login expected: {keys:?}"
    );
    for key in &keys {
        dump.extend_from_slice(key.as_bytes());
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .expect("GET"),
            ],
            "hash" => redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("HGETALL"),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .expect("ZRANGE"),
            "set" => redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("SMEMBERS"),
            other => panic!("unexpected key type {other} for {key}"),
        };
        for v in values {
            dump.extend_from_slice(&v);
        }
    }
    let text = String::from_utf8_lossy(&dump);
    let lookup_hex: String = {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&cookie)
            .expect("b64");
        raw.iter().map(|b| format!("{b:02x}")).collect()
    };
    for (what, needle) in [
        ("access token", access_token.as_str()),
        ("cookie value", cookie.as_str()),
        ("cookie lookup ID (hex)", &lookup_hex[..32]),
        ("cookie secret (hex)", &lookup_hex[32..]),
        ("subject", "alice"),
        ("name", "Alice Example"),
        ("email", "alice@example.com"),
        ("any JWT", "eyJ"),
    ] {
        assert!(!text.contains(needle), "{what} found in clear in Redis");
    }
}

/// A raw request with exactly these `Cookie` header lines (no jar).
async fn with_cookie_lines(
    gw: &crate::harness::Gateway,
    method: reqwest::Method,
    path: &str,
    lines: &[String],
    extra: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut req = client.request(method, format!("{}{path}", gw.base));
    for line in lines {
        req = req.header("cookie", line);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}

fn cleared(headers: &reqwest::header::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(&format!("{name}=;")))
        .map(str::to_owned)
        .collect()
}

/// Two users' genuine session cookies under the session's name (what a
/// browser sends when a sibling subdomain tossed a cookie of that name for
/// the parent domain on a longer path): no session, on every route that
/// reads one, and neither is used, forwarded or ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_session_cookies_are_no_session_and_neither_is_used() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    let mut bob = Browser::new(&gw);
    bob.login_as("bob").await;
    let (a, b) = (
        alice.session_cookie().expect("alice's cookie"),
        bob.session_cookie().expect("bob's cookie"),
    );
    let name = "__Host-oidc-bff";
    let one_line = vec![format!("{name}={b}; {name}={a}")];
    let two_lines = vec![format!("{name}={b}"), format!("{name}={a}")];
    for lines in [&one_line, &two_lines] {
        let (s, h, body) =
            with_cookie_lines(&gw, reqwest::Method::GET, "/api/data", lines, &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{lines:?}: {body}");
        assert!(body.contains("\"unauthenticated\""), "{body}");
        assert_eq!(cleared(&h, name).len(), 1, "cleared: {h:?}");
        let (s, _, body) =
            with_cookie_lines(&gw, reqwest::Method::GET, "/auth/user", lines, &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
        assert!(!body.contains("alice") && !body.contains("bob"), "{body}");
        let (s, _, _) =
            with_cookie_lines(&gw, reqwest::Method::GET, "/auth/sessions", lines, &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // A navigation gets the login page's way, not either session.
        let (s, h, _) = with_cookie_lines(
            &gw,
            reqwest::Method::GET,
            "/api/page",
            lines,
            &[("accept", "text/html"), ("sec-fetch-mode", "navigate")],
        )
        .await;
        assert!(
            s == StatusCode::UNAUTHORIZED || s.is_redirection(),
            "navigation: {s} {h:?}"
        );
        // Logout ends neither session, and clears the cookie.
        let (s, h, body) = with_cookie_lines(
            &gw,
            reqwest::Method::POST,
            "/auth/logout",
            lines,
            &[("x-csrf", "1")],
        )
        .await;
        assert!(s.is_success(), "logout: {s} {body}");
        assert_eq!(cleared(&h, name).len(), 1, "logout cleared: {h:?}");
    }
    assert_eq!(upstream.count(), 0, "nothing forwarded with either session");
    // Both sessions are still there for their owners.
    assert_eq!(alice.get("/auth/user").await.json()["sub"], "alice");
    assert_eq!(bob.get("/api/data").await.status, StatusCode::OK);
    // The same value twice is that one cookie.
    let (s, _, body) = with_cookie_lines(
        &gw,
        reqwest::Method::GET,
        "/auth/user",
        &[format!("{name}={a}; {name}={a}")],
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("alice"), "{body}");
}
