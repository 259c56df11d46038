//! Step-up and login parameters with the real provider: a route that needs
//! an `mfa` login or a recent one answers `step_up_required` with a login
//! URL, and following it (the fixture grants `mfa` when asked and honours
//! `max_age`) lets the call through under one replaced session; an API's
//! RFC 9470 challenge is relayed the same way; a step-up as another user
//! is refused; a silent check (`prompt=none`) comes back to the app with
//! the reason; the SPA's login parameters are bounded and reach the
//! provider.

use std::collections::BTreeMap;

use oidc_bff::config::RawRoute;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{
    Browser, Gateway, GatewayBuilder, ProviderApi, Upstream, duration, route, unique_user,
};

/// `/api` as usual (with the login's `acr` sent as `X-Acr`, which the
/// upstream's `/step-up` reads), `/secure` needing an `mfa` login, and
/// `/recent` a login at most 2 s old.
async fn gateway(upstream: &Upstream) -> Gateway {
    let up = upstream.url();
    GatewayBuilder::new(upstream)
        .configure(move |c| {
            let acr = BTreeMap::from([("X-Acr".to_owned(), "acr".to_owned())]);
            c.routes[0].identity_headers = acr.clone();
            c.routes.push(RawRoute {
                acr_values: vec!["mfa".into()],
                identity_headers: acr,
                ..route("/secure", &up)
            });
            c.routes.push(RawRoute {
                max_auth_age: Some(duration("2s")),
                ..route("/recent", &up)
            });
        })
        .start()
        .await
}

async fn api_get(b: &mut Browser, path: &str) -> crate::harness::browser::Resp {
    b.request(Method::GET, path, &[("accept", "application/json")], None)
        .await
}

/// Follows a `step_up_required` answer's login URL as `user`; the
/// gateway's answer at the callback.
async fn step_up(b: &mut Browser, login_url: &str, user: &str) -> crate::harness::browser::Resp {
    let url = if login_url.contains("return_to=") {
        login_url.to_owned()
    } else {
        format!("{login_url}&return_to=%2Fapp")
    };
    let start = b.navigate(&url).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{start:?}");
    let authorize = start.location().expect("authorization URL");
    let cb = b
        .authenticate(&authorize, user, &format!("{user}-password"))
        .await;
    b.callback(&cb).await
}

fn login_url(r: &crate::harness::browser::Resp) -> String {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    let v = r.json();
    assert_eq!(v["error"], "step_up_required", "{v}");
    v["login_url"].as_str().expect("login_url").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_route_answers_step_up_required_and_the_step_up_login_lets_the_call_through() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let user = unique_user("stepup");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let first_cookie = b.session_cookie().expect("session");

    let refused = api_get(&mut b, "/secure/data").await;
    let url = login_url(&refused);
    assert_eq!(url, "/auth/login?acr_values=mfa");
    let challenge = refused.headers["www-authenticate"].to_str().expect("ascii");
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\"")
            && challenge.contains("acr_values=\"mfa\""),
        "{challenge}"
    );
    assert_eq!(upstream.count(), 0, "a refused call never reaches the API");
    // The session stays: other routes still work.
    assert_eq!(api_get(&mut b, "/api/x").await.status, StatusCode::OK);

    // From a page of the app (a same-origin fetch sends it as Referer),
    // the login comes back there.
    let referer = gw.url("/orders?id=3");
    let from_page = b
        .request(
            Method::GET,
            "/secure/data",
            &[("accept", "application/json"), ("referer", &referer)],
            None,
        )
        .await;
    assert_eq!(
        login_url(&from_page),
        "/auth/login?acr_values=mfa&return_to=%2Forders%3Fid%3D3"
    );
    let done = step_up(&mut b, &login_url(&from_page), &user).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert_eq!(done.location(), Some(gw.url("/orders?id=3")));
    let ok = api_get(&mut b, "/secure/data").await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let seen = upstream.seen();
    assert_eq!(
        seen.last().and_then(|s| s.header("x-acr")).as_deref(),
        Some("mfa")
    );
    let me = api_get(&mut b, "/auth/user").await.json();
    assert_eq!(me["claims"]["sub"], user.as_str(), "{me}");

    // One session: the step-up replaced the first, which no longer works.
    let list = api_get(&mut b, "/auth/sessions").await.json();
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(1), "{list}");
    let mut old = Browser::new(&gw);
    old.cookies.insert("__Host-oidc-bff".into(), first_cookie);
    assert_eq!(
        api_get(&mut old, "/api/x").await.status,
        StatusCode::UNAUTHORIZED,
        "the pre-step-up session is revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_older_than_max_auth_age_must_log_in_again() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let user = unique_user("recent");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    assert_eq!(api_get(&mut b, "/recent/x").await.status, StatusCode::OK);

    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let refused = api_get(&mut b, "/recent/x").await;
    let url = login_url(&refused);
    assert_eq!(url, "/auth/login?max_age=2");
    // The provider has a session, but an older one than max_age: it asks
    // for the password again, and the new login is fresh.
    let done = step_up(&mut b, &url, &user).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert_eq!(api_get(&mut b, "/recent/x").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_rfc_9470_challenge_is_relayed_and_hostile_challenges_pass_through() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let user = unique_user("relay");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;

    let refused = api_get(&mut b, "/api/orders/step-up").await;
    let url = login_url(&refused);
    assert_eq!(url, "/auth/login?acr_values=mfa&max_age=300");
    assert!(
        !refused.body.contains("step up, please"),
        "the API's body is not relayed"
    );
    let done = step_up(&mut b, &url, &user).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    let ok = api_get(&mut b, "/api/orders/step-up").await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");

    let long = format!(
        "Bearer error=\"insufficient_user_authentication\", max_age=5, x=\"{}\"",
        "a".repeat(4000)
    );
    for hostile in [
        "Bearer error=\"invalid_token\"",
        "Bearer error=\"insufficient_user_authentication\"",
        "Bearer error=\"insufficient_user_authentication\", max_age=-5",
        "Bearer error=\"insufficient_user_authentication\", acr_values=\"mfa",
        "Bearer error=\"insufficient_user_authentication\", max_age=5, max_age=6",
        long.as_str(),
    ] {
        let r = b
            .request(
                Method::GET,
                "/api/challenge",
                &[
                    ("accept", "application/json"),
                    ("x-test-challenge", hostile),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{hostile}");
        assert_eq!(r.body, "challenge", "passed through as it is: {hostile}");
        assert_eq!(
            r.headers["www-authenticate"].to_str().expect("ascii"),
            hostile
        );
    }
    // The session survived all of it.
    assert_eq!(api_get(&mut b, "/api/x").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_login_as_another_user_is_refused_and_the_first_session_still_works() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let (first, other) = (unique_user("owner"), unique_user("intruder"));
    let mut b = Browser::new(&gw);
    b.login_as(&first).await;
    let cookie = b.session_cookie().expect("session");

    let url = login_url(&api_get(&mut b, "/secure/data").await);
    let refused = step_up(&mut b, &url, &other).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    assert!(refused.body.contains("different user"), "{}", refused.body);
    assert_eq!(b.session_cookie(), Some(cookie), "no new session cookie");
    let me = api_get(&mut b, "/auth/user").await;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.json()["claims"]["sub"], first.as_str());
    assert_eq!(api_get(&mut b, "/api/x").await.status, StatusCode::OK);
    assert_eq!(
        api_get(&mut b, "/secure/data").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_check_without_a_provider_session_comes_back_to_the_app_with_the_reason() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let mut b = Browser::new(&gw);
    let start = b
        .navigate("/auth/login?prompt=none&return_to=%2Fapp%3Ftab%3D2")
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{start:?}");
    let authorize = start.location().expect("authorization URL");
    // No page at the provider: it answers at once.
    let cb = b.authenticate(&authorize, "nobody", "x").await;
    assert!(cb.contains("error=login_required"), "{cb}");
    let back = b.callback(&cb).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{back:?}");
    assert_eq!(
        back.location(),
        Some(gw.url("/app?tab=2&login_error=login_required"))
    );
    assert!(b.session_cookie().is_none());

    // With a provider session that is too weak for what is asked, the
    // silent check says so too, and the gateway session stays.
    let user = unique_user("silent");
    b.login_as(&user).await;
    let start = b
        .navigate("/auth/login?prompt=none&acr_values=mfa&return_to=%2Fapp")
        .await;
    let cb = b
        .authenticate(&start.location().expect("authorization URL"), &user, "x")
        .await;
    let back = b.callback(&cb).await;
    assert_eq!(
        back.location(),
        Some(gw.url("/app?login_error=login_required")),
        "{back:?}"
    );
    assert_eq!(api_get(&mut b, "/api/x").await.status, StatusCode::OK);

    // Another provider error keeps the error page.
    let start = b.navigate("/auth/login?return_to=%2Fapp").await;
    let state = url::Url::parse(&start.location().expect("authorization URL"))
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let page = b
        .callback(&format!("/auth/callback?error=access_denied&state={state}"))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{page:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_or_oversized_login_parameters_are_refused_and_allowed_ones_reach_the_provider()
{
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let mut b = Browser::new(&gw);
    for bad in [
        "acr_value=mfa".to_owned(),
        "client_id=evil".to_owned(),
        "prompt=sometimes".to_owned(),
        "max_age=-1".to_owned(),
        format!("login_hint={}", "a".repeat(300)),
    ] {
        let page = b.navigate(&format!("/auth/login?{bad}")).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}: {page:?}");
        assert!(
            page.body.contains("login parameter"),
            "{bad}: {}",
            page.body
        );
        let xhr = api_get(&mut b, &format!("/auth/login?{bad}")).await;
        assert_eq!(xhr.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(xhr.json()["error"], "bad_request");
        assert!(xhr.set_cookies().is_empty(), "no login started: {bad}");
    }

    let user = unique_user("hinted");
    let start = b
        .navigate(&format!(
            "/auth/login?login_hint={user}&ui_locales=fr-CA+en&prompt=login&max_age=60&return_to=%2Fapp"
        ))
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{start:?}");
    let cb = b
        .authenticate(
            &start.location().expect("authorization URL"),
            &user,
            &format!("{user}-password"),
        )
        .await;
    assert_eq!(b.callback(&cb).await.status, StatusCode::SEE_OTHER);
    let seen = ProviderApi::shared()
        .get("/__test/authorization-requests")
        .await;
    let got = seen
        .as_array()
        .and_then(|all| all.iter().rev().find(|r| r["login_hint"] == user.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(got["ui_locales"], "fr-CA en", "{got}");
    assert_eq!(got["prompt"], "login", "{got}");
    assert_eq!(got["max_age"], "60", "{got}");
    let me = api_get(&mut b, "/auth/user").await.json();
    assert!(me["claims"]["auth_time"].as_u64().is_some(), "{me}");

    // An acr the provider does not grant: it signs the user in at `pwd`,
    // and the gateway refuses a login weaker than asked.
    let other = unique_user("weak");
    let start = b
        .navigate("/auth/login?acr_values=hwk&return_to=%2Fapp")
        .await;
    let cb = b
        .authenticate(
            &start.location().expect("authorization URL"),
            &other,
            &format!("{other}-password"),
        )
        .await;
    let refused = b.callback(&cb).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    assert!(refused.body.contains("level"), "{}", refused.body);
}

/// A step-up login URL returns only to a target `/auth/login` accepts: a
/// page whose query holds an encoded control (or a `Referer` path that
/// reads as another host) is left out, where the login URL used to carry
/// it and lead to a 400 page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_login_url_never_carries_a_return_target_login_would_refuse() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("stepup-return")).await;
    for page in ["/orders?q=a%0Ab", "/orders?q=%5C", "//evil.example/x"] {
        let referer = gw.url(page);
        let r = b
            .request(
                Method::GET,
                "/secure/data",
                &[("accept", "application/json"), ("referer", &referer)],
                None,
            )
            .await;
        let url = login_url(&r);
        assert_eq!(url, "/auth/login?acr_values=mfa", "{page}");
        let start = b.navigate(&url).await;
        assert_eq!(start.status, StatusCode::SEE_OTHER, "{page}: {start:?}");
    }
    assert_eq!(upstream.count(), 0);
}
