//! The happy path, end to end: login → user → proxied call → logout.

use reqwest::{Method, StatusCode};

use std::time::Duration;

use crate::harness::{
    Browser, GatewayBuilder, ProviderApi, Upstream, form_action, unique_user, urlencode,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_call_the_api_and_logout_end_to_end() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);

    // Login lands on return_to (an absolute URL on the gateway's origin)
    // with a strict session cookie.
    let r = b.login_alice().await;
    assert_eq!(r.location(), Some(format!("{}/app", gw.base)));
    let set = r.set_cookies().join("\n");
    for attr in [
        "__Host-oidc-bff=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set.contains(attr), "session cookie lacks {attr}: {set}");
    }
    assert_eq!(gw.session_count().await, 1);

    // /auth/user: claims, no tokens.
    let user = b.get("/auth/user").await;
    assert_eq!(user.status, StatusCode::OK, "{user:?}");
    let u = user.json();
    assert_eq!(u["sub"], "alice");
    assert_eq!(u["claims"]["name"], "Alice Example");
    assert_eq!(u["claims"]["email"], "alice@example.com");
    assert!(
        u["logout_url"]
            .as_str()
            .is_some_and(|s| s.starts_with("/auth/logout?sid="))
    );
    assert!(
        !user.body.contains("eyJ"),
        "a JWT leaked into /auth/user: {}",
        user.body
    );

    // A proxied call reaches the upstream with the Bearer token, not the cookie.
    let api = b
        .request(
            Method::GET,
            "/api/hello?x=1",
            &[("authorization", "Bearer from-browser")],
            None,
        )
        .await;
    assert_eq!(api.status, StatusCode::OK, "{api:?}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/api/hello?x=1");
    let auth = seen[0].header("authorization").expect("bearer forwarded");
    let token = auth.strip_prefix("Bearer ").expect("bearer scheme");
    assert_ne!(
        token, "from-browser",
        "the browser's Authorization must be replaced"
    );
    let check = ProviderApi::shared().check_access_token(token).await;
    assert_eq!(check["active"], true, "{check}");
    assert_eq!(check["sub"], "alice");
    let cookie = seen[0].header("cookie").unwrap_or_default();
    assert!(
        !cookie.contains("oidc-bff"),
        "gateway cookies reached the upstream: {cookie}"
    );
    assert!(seen[0].header("x-forwarded-for").is_some());
    assert_eq!(seen[0].header("x-forwarded-proto").as_deref(), Some("http"));
    assert!(
        !api.body.contains(token),
        "the access token reached the browser"
    );
    // The upstream tried to overwrite the session cookie; the gateway kept it out.
    assert!(
        api.set_cookies()
            .iter()
            .all(|c| !c.starts_with("__Host-oidc-bff")),
        "{:?}",
        api.set_cookies()
    );

    // Logout by fetch: JSON with where to go, cookie cleared, session gone.
    let out = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    let next = out.json()["redirect_url"]
        .as_str()
        .expect("redirect_url")
        .to_owned();
    assert!(next.starts_with("/auth/logout/end?h="), "{next}");
    assert!(
        !out.body.contains("eyJ"),
        "the ID token hint must not be readable by the page"
    );
    assert!(b.session_cookie().is_none(), "session cookie not cleared");
    assert_eq!(gw.session_count().await, 0);

    // Navigating there goes to the provider's end-session endpoint with the hint.
    let end = b.navigate(&next).await;
    assert_eq!(end.status, StatusCode::SEE_OTHER);
    let loc = end.location().expect("end-session redirect");
    assert!(loc.starts_with(&ProviderApi::shared().issuer), "{loc}");
    assert!(
        loc.contains("id_token_hint=") && loc.contains("post_logout_redirect_uri="),
        "{loc}"
    );
    // The handle is single-use.
    let again = b.navigate(&next).await;
    assert_eq!(again.location(), Some(format!("{}/", gw.base)));

    // The same call is now refused without reaching the upstream.
    let api = b.get("/api/hello").await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{api:?}");
    assert_eq!(api.json()["error"], "unauthenticated");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_by_plain_html_form_needs_the_session_logout_token() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let token = b.get("/auth/user").await.json()["logout_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // Without the token (a cross-site form, say): refused, session kept.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = b
        .request(
            Method::POST,
            "/auth/logout",
            &form,
            Some("sid=wrong".into()),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    let r = b.request(Method::POST, "/auth/logout", &form, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(gw.session_count().await, 1);

    // With it: a 303 to the provider's end-session endpoint.
    let r = b
        .request(
            Method::POST,
            "/auth/logout",
            &form,
            Some(format!("sid={token}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert!(r.location().is_some_and(|l| l.contains("id_token_hint=")));
    assert_eq!(gw.session_count().await, 0);
    assert_eq!(b.get("/auth/user").await.status, StatusCode::UNAUTHORIZED);
}

/// A cross-site form post to `/auth/logout` carries no session cookie
/// (`SameSite` holds it back) and cannot know the logout token: it proves
/// nothing, so its answer must not delete the browser's cookie either (a
/// `Set-Cookie` on a top-level navigation's answer is stored), or any page
/// could log users out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_logout_without_the_cookie_does_not_clear_it() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let session = b.session_cookie().expect("session");
    let mut cross_site = Browser::new(&gw);
    for (path, body) in [
        ("/auth/logout", Some("sid=guessed".to_owned())),
        ("/auth/logout?sid=guessed", None),
    ] {
        let r = cross_site
            .request(
                Method::POST,
                path,
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("accept", "text/html"),
                    ("sec-fetch-mode", "navigate"),
                    ("sec-fetch-site", "cross-site"),
                ],
                body,
            )
            .await;
        assert!(
            !r.set_cookies()
                .iter()
                .any(|c| c.starts_with("__Host-oidc-bff=")),
            "{path}: an unproven logout deletes the session cookie: {r:?}"
        );
    }
    assert_eq!(gw.session_count().await, 1);
    assert_eq!(b.session_cookie(), Some(session));
    assert_eq!(b.get("/auth/user").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_is_never_a_get() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let r = b.navigate("/auth/logout").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.body.contains("<html"), "navigations get a page: {r:?}");
    assert_eq!(gw.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_end_session_page_returns_to_the_post_logout_uri() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let out = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    let next = out.json()["redirect_url"].as_str().expect("url").to_owned();
    let end = b.navigate(&next).await.location().expect("end session");
    // Follow the provider's confirmation form as a browser would.
    let page = b.idp.get(&end).send().await.expect("end session page");
    let mut location = page
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if location.is_none() {
        let html = page.text().await.expect("html");
        let action = form_action(&html).expect("confirmation form");
        let action = url::Url::parse(&end)
            .and_then(|u| u.join(&action))
            .expect("url")
            .to_string();
        let mut fields = crate::harness::hidden_inputs(&html);
        fields.push(("logout".into(), "yes".into()));
        let r = b
            .idp
            .post(&action)
            .form(&fields)
            .send()
            .await
            .expect("confirm");
        location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    let location = location.expect("provider redirected back");
    assert!(
        location.starts_with(&gw.base),
        "post-logout redirect goes back to the app: {location}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_logins_in_one_browser_all_complete() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    let first = b.start_login("/one").await;
    let second = b.start_login("/two").await;
    let cb1 = b.authenticate(&first, "alice", "alice-password").await;
    let cb2 = b.authenticate(&second, "alice", "alice-password").await;
    let r2 = b.callback(&cb2).await;
    assert_eq!(r2.status, StatusCode::SEE_OTHER, "{r2:?}");
    assert_eq!(r2.location(), Some(format!("{}/two", gw.base)));
    let r1 = b.callback(&cb1).await;
    assert_eq!(r1.status, StatusCode::SEE_OTHER, "{r1:?}");
    assert_eq!(r1.location(), Some(format!("{}/one", gw.base)));
    // The second completed login replaced the first session of this browser.
    assert_eq!(gw.session_count().await, 1);
    assert_eq!(b.get("/auth/user").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_login_gets_a_fresh_session_id() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let first = b.session_cookie().expect("cookie");
    b.login_alice().await;
    let second = b.session_cookie().expect("cookie");
    assert_ne!(
        first, second,
        "session fixation: the ID must change at login"
    );
    // The old ID no longer works.
    let mut old = Browser::new(&gw);
    old.cookies.insert("__Host-oidc-bff".into(), first);
    assert_eq!(old.get("/auth/user").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_post_clients_log_in_too() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .client_id("oidc-bff-post")
        .configure(|c| c.oidc.auth_method = "client_secret_post".into())
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/auth/user").await.json()["sub"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_serves_a_single_instance() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).memory_store().start().await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    let r = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(b.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_refresh_token_at_the_provider() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let user = unique_user("revoke");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let idp = ProviderApi::shared();
    let live = |v: serde_json::Value| {
        v.as_array().map_or(0, |a| {
            a.iter().filter(|t| t["sub"] == user.as_str()).count()
        })
    };
    assert_eq!(
        live(idp.get("/__test/refresh-tokens").await),
        1,
        "login issued a refresh token"
    );
    let r = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Revocation runs after the response (it must not delay logout).
    for _ in 0..50 {
        if live(idp.get("/__test/refresh-tokens").await) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the refresh token is still live at the provider after logout");
}

/// `return_to` values whose dot segments resolve to a scheme-relative path
/// (`/.//evil.com` → `//evil.com`), encoded in the ways a link can carry
/// them.
const DOT_SEGMENT_RETURN_TOS: &[&str] = &[
    "/.//evil.com",
    "/..//evil.com",
    "/%2e//evil.com",
    "/%2E%2E//evil.com",
    "/a/..//evil.com/x?y=1",
    "/././/evil.com",
];

/// Where a completed login may send the browser: an absolute URL on the
/// gateway's own origin whose path is not scheme-relative.
fn assert_same_origin_absolute(location: &str, base: &str) {
    assert!(
        location.starts_with(&format!("{base}/")),
        "login redirected off the gateway's origin: {location}"
    );
    let path = &location[base.len()..];
    assert!(
        !path.starts_with("//") && !path.starts_with("/\\"),
        "login redirected to a scheme-relative path: {location}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_to_with_dot_segments_never_leads_off_the_gateway_after_a_real_login() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    for return_to in DOT_SEGMENT_RETURN_TOS {
        for query in [urlencode(return_to), (*return_to).to_owned()] {
            let mut b = Browser::new(&gw);
            let start = b.navigate(&format!("/auth/login?return_to={query}")).await;
            if start.status == StatusCode::BAD_REQUEST {
                assert!(start.location().is_none(), "{start:?}");
                continue;
            }
            // Accepted at the start: the callback must stay on the origin.
            assert_eq!(start.status, StatusCode::SEE_OTHER, "{start:?}");
            let authorize = start.location().expect("authorization URL");
            let cb = b.authenticate(&authorize, "alice", "alice-password").await;
            let done = b.callback(&cb).await;
            assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
            let location = done.location().expect("callback redirect");
            assert_same_origin_absolute(&location, &gw.base);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dot_segment_return_to_is_refused_at_login_with_a_clear_message() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    let r = b
        .request(
            Method::GET,
            "/auth/login?return_to=/.//evil.com",
            &[("accept", "application/json")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(
        r.json()["message"],
        "The return_to parameter contains a . or .. path segment.",
        "{r:?}"
    );
    assert!(r.set_cookies().is_empty(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_return_to_survives_a_real_login_as_an_absolute_same_origin_url() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/app/orders?tab=open#top").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    let done = b.callback(&cb).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert_eq!(
        done.location(),
        Some(format!("{}/app/orders?tab=open#top", gw.base))
    );
}

/// The names of this browser's pending-login cookies.
fn login_cookies(b: &Browser) -> Vec<String> {
    b.cookies
        .keys()
        .filter(|k| k.starts_with("__Host-oidc-bff-login-"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_login_burst_writes_nothing_to_the_store() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let before = gw.redis_keys().await;
    let long = format!("/app?q={}", "x".repeat(1500));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut statuses = Vec::new();
    for batch in 0..10 {
        let requests = (0..50).map(|i| {
            let target = if i % 2 == 0 { "/app" } else { long.as_str() };
            client
                .get(gw.url(&format!(
                    "/auth/login?return_to={}",
                    crate::harness::urlencode(target)
                )))
                .header("cookie", format!("unrelated=batch{batch}"))
                .send()
        });
        for r in futures_util::future::join_all(requests).await {
            statuses.push(r.expect("login start").status());
        }
    }
    assert_eq!(statuses.len(), 500);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::SEE_OTHER),
        "{statuses:?}"
    );
    assert_eq!(
        gw.redis_keys().await,
        before,
        "an anonymous /auth/login must not write to the store"
    );
    // Logins still work, and only the callback leaves a (tiny) mark.
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(gw.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_parallel_logins_in_one_browser_complete_in_any_order() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    let mut callbacks = Vec::new();
    for target in ["/one", "/two", "/three"] {
        let authorize = b.start_login(target).await;
        callbacks.push((target, authorize));
    }
    assert_eq!(login_cookies(&b).len(), 3, "one cookie per pending login");
    let mut done = Vec::new();
    for (target, authorize) in &callbacks {
        done.push((
            *target,
            b.authenticate(authorize, "alice", "alice-password").await,
        ));
    }
    for i in [1, 2, 0] {
        let (target, cb) = &done[i];
        let r = b.callback(cb).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{target}: {r:?}");
        assert_eq!(r.location(), Some(gw.url(target)));
    }
    assert!(
        login_cookies(&b).is_empty(),
        "each callback clears its cookie"
    );
    assert_eq!(gw.session_count().await, 1, "each login replaced the last");
    assert_eq!(b.get("/auth/user").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_beyond_the_parallel_limit_drop_the_oldest() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    let mut starts = Vec::new();
    for i in 0..8 {
        starts.push(b.start_login(&format!("/tab{i}")).await);
        // Logins started in the same second tie on age; keep them ordered.
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    let kept = login_cookies(&b);
    assert_eq!(kept.len(), 5, "{kept:?}");
    let oldest = b.authenticate(&starts[0], "alice", "alice-password").await;
    let r = b.callback(&oldest).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let newest = b.authenticate(&starts[7], "alice", "alice-password").await;
    let r = b.callback(&newest).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(r.location(), Some(gw.url("/tab7")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_to_too_long_for_the_login_cookie_is_refused_and_sets_nothing() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&gw);
    for target in [
        format!("/app?q={}", "x".repeat(3000)),
        // Short as typed, long once percent-encoded.
        format!("/app?q={}", "é".repeat(500)),
    ] {
        let r = b
            .request(
                Method::GET,
                &format!(
                    "/auth/login?return_to={}",
                    crate::harness::urlencode(&target)
                ),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
        assert_eq!(r.json()["error"], "bad_request", "{r:?}");
        assert!(r.set_cookies().is_empty(), "{r:?}");
    }
    // The largest accepted target still yields a cookie browsers keep.
    let r = b
        .navigate(&format!("/auth/login?return_to=/{}", "a".repeat(1900)))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    let set = r.set_cookies();
    assert!(set.iter().all(|c| c.len() < 3500), "{set:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_ends_the_previous_session_even_when_the_strict_cookie_stays_behind() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.session.same_site = "strict".into())
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let first = b.session_cookie().expect("first session");
    // /auth/login is a same-site navigation: the Strict cookie comes along.
    let authorize = b.start_login("/again").await;
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    // The callback is a cross-site navigation from the provider: a browser
    // does not send a SameSite=Strict cookie with it.
    b.cookies.remove("__Host-oidc-bff");
    let r = b.callback(&cb).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_ne!(b.session_cookie(), Some(first.clone()));
    assert_eq!(gw.session_count().await, 1, "the first session was ended");
    let mut old = Browser::new(&gw);
    old.cookies.insert("__Host-oidc-bff".into(), first);
    assert_eq!(old.get("/auth/user").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b.get("/auth/user").await.status, StatusCode::OK);
}

/// The gateway mounted under `/app` (`server.public_url` with a path, a
/// proxy in front that does not strip it): the whole flow runs under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_call_the_api_and_logout_under_a_mount_path() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .mount("/app")
        .configure(|c| c.routes[0].path = "/app/api".into())
        .start()
        .await;
    let mut b = Browser::new(&gw);

    // Outside the mount there is nothing of the gateway's.
    assert_eq!(b.get("/auth/user").await.status, StatusCode::NOT_FOUND);
    let anon = b.get("/app/auth/user").await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED, "{anon:?}");
    assert_eq!(
        anon.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Session realm=\"oidc-bff\", login=\"/app/auth/login\"")
    );

    // Login without a return_to: the provider is asked to come back to
    // /app/auth/callback, and the browser lands on /app/.
    let start = b.navigate("/app/auth/login").await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{start:?}");
    let authorize = start.location().expect("authorization URL");
    let redirect_uri = urlencode(&gw.url("/app/auth/callback"));
    assert!(
        authorize.contains(&format!("redirect_uri={redirect_uri}")),
        "{authorize}"
    );
    let cb = b.authenticate(&authorize, "alice", "alice-password").await;
    assert!(cb.starts_with(&gw.url("/app/auth/callback?")), "{cb}");
    let done = b.callback(&cb).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert_eq!(done.location(), Some(gw.url("/app/")));
    assert!(b.session_cookie().is_some());

    let user = b.get("/app/auth/user").await;
    assert_eq!(user.status, StatusCode::OK, "{user:?}");
    assert_eq!(user.json()["sub"], "alice");
    assert!(
        user.json()["logout_url"]
            .as_str()
            .is_some_and(|s| s.starts_with("/app/auth/logout?sid=")),
        "{user:?}"
    );

    // The route is written in full and forwards its path as is.
    let api = b.get("/app/api/hello").await;
    assert_eq!(api.status, StatusCode::OK, "{api:?}");
    assert_eq!(upstream.seen()[0].uri, "/app/api/hello");

    // Logout: the one-time handle is under the mount, and leads to the
    // provider; used again, to the mount's root.
    let out = b
        .request(Method::POST, "/app/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    let next = out.json()["redirect_url"]
        .as_str()
        .expect("redirect_url")
        .to_owned();
    assert!(next.starts_with("/app/auth/logout/end?h="), "{next}");
    let end = b.navigate(&next).await;
    assert_eq!(end.status, StatusCode::SEE_OTHER, "{end:?}");
    let loc = end.location().expect("end-session redirect");
    assert!(loc.starts_with(&ProviderApi::shared().issuer), "{loc}");
    assert!(
        loc.contains(&format!(
            "post_logout_redirect_uri={}",
            urlencode(&gw.url("/app/"))
        )),
        "{loc}"
    );
    let again = b.navigate(&next).await;
    assert_eq!(again.location(), Some(gw.url("/app/")));
    assert_eq!(gw.session_count().await, 0);
}
