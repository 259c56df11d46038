//! Which token each route's upstream receives (`[[routes]] token`): the
//! gateway's own client-credentials token (with or without a session,
//! fetched once and reused until it expires), the user's or the client's
//! (`user_or_client`), or none.

use std::time::Duration;

use oidc_bff::config::RawRoute;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Browser, GatewayBuilder, ProviderApi, ProviderProcess, Upstream, route};

/// The bearer token of the upstream's last request, if any.
fn last_bearer(upstream: &Upstream) -> Option<String> {
    upstream
        .seen()
        .last()
        .and_then(|s| s.header("authorization"))
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
}

async fn client_grants(api: &ProviderApi) -> u64 {
    api.get("/__test/stats").await["token_grants"]["client_credentials"]
        .as_u64()
        .expect("client_credentials count")
}

fn is_client_token(check: &Value) -> bool {
    check["active"] == true
        && check["kind"] == "client_credentials"
        && check["client_id"] == "oidc-bff"
        && check.get("sub").is_none_or(Value::is_null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_route_needs_no_session_and_its_token_is_fetched_once_until_it_expires() {
    // Tokens live 4 s; with a 1 s skew the gateway reuses one for 3 s.
    let provider = ProviderProcess::start(&["--access-token-ttl", "4"]);
    let api = ProviderApi::new(&provider.issuer);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .refresh_skew("1s")
        .route(RawRoute {
            auth: "none".into(),
            token: Some("client".into()),
            ..route("/svc", &upstream.url())
        })
        .start()
        .await;
    let before = client_grants(&api).await;
    let calls = (0..8).map(|i| {
        let mut b = Browser::new(&gw);
        async move { b.get(&format!("/svc/item/{i}")).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert!(
            !r.body.contains("Bearer"),
            "the token never reaches the browser"
        );
    }
    assert_eq!(
        client_grants(&api).await - before,
        1,
        "one grant for 8 concurrent calls"
    );
    let tokens: std::collections::BTreeSet<_> = upstream
        .seen()
        .iter()
        .map(|s| s.header("authorization").expect("a token upstream"))
        .collect();
    assert_eq!(tokens.len(), 1, "every call carried the one cached token");
    let first = last_bearer(&upstream).expect("bearer");
    assert!(is_client_token(&api.check_access_token(&first).await));

    // A signed-in user on the same route: still the client's token, never the user's.
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    assert_eq!(alice.get("/svc/mine").await.status, StatusCode::OK);
    assert_eq!(last_bearer(&upstream).as_deref(), Some(first.as_str()));
    assert_eq!(client_grants(&api).await - before, 1);

    // After expiry less the skew: one new grant, a new token.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let mut b = Browser::new(&gw);
    assert_eq!(b.get("/svc/again").await.status, StatusCode::OK);
    assert_eq!(b.get("/svc/again").await.status, StatusCode::OK);
    assert_eq!(
        client_grants(&api).await - before,
        2,
        "fetched again after expiry"
    );
    let second = last_bearer(&upstream).expect("bearer");
    assert_ne!(second, first);
    assert!(is_client_token(&api.check_access_token(&second).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_or_client_sends_the_users_token_with_a_session_and_none_sends_no_token() {
    let provider = ProviderProcess::start(&[]);
    let api = ProviderApi::new(&provider.issuer);
    let either = Upstream::start().await;
    let bare = Upstream::start().await;
    let gw = GatewayBuilder::new(&either)
        .issuer(&provider.issuer)
        .route(RawRoute {
            auth: "optional".into(),
            token: Some("user_or_client".into()),
            ..route("/either", &either.url())
        })
        .route(RawRoute {
            token: Some("none".into()),
            ..route("/bare", &bare.url())
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    assert_eq!(b.get("/either/x").await.status, StatusCode::OK);
    let anonymous = last_bearer(&either).expect("the client token without a session");
    assert!(is_client_token(&api.check_access_token(&anonymous).await));

    b.login_alice().await;
    assert_eq!(b.get("/either/x").await.status, StatusCode::OK);
    let user = last_bearer(&either).expect("the user's token with a session");
    let check = api.check_access_token(&user).await;
    assert_eq!(check["active"], true, "{check}");
    assert_eq!(check["sub"], "alice", "{check}");

    // `none`: a session route, but the upstream gets no Authorization,
    // neither the user's nor one the browser sent.
    let r = b
        .request(
            reqwest::Method::GET,
            "/bare/x",
            &[("authorization", "Bearer from-the-browser")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        bare.seen().last().and_then(|s| s.header("authorization")),
        None
    );
    assert_eq!(
        api.get("/__test/stats").await["token_grants"]["client_credentials"],
        1
    );
}

async fn refresh_grants(api: &ProviderApi) -> u64 {
    api.get("/__test/stats").await["token_grants"]["refresh_token"]
        .as_u64()
        .expect("refresh_token count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_api_refuses_is_renewed_once_and_the_call_retried_once() {
    let provider = ProviderProcess::start(&[]);
    let api = ProviderApi::new(&provider.issuer);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .route(RawRoute {
            auth: "none".into(),
            token: Some("client".into()),
            ..route("/svc", &upstream.url())
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    let revoked = last_bearer(&upstream).expect("user token");
    upstream.revoke(&revoked);
    let refreshes = refresh_grants(&api).await;

    // GET: refused, one refresh, one retry with the new token, 200.
    let seen = upstream.count();
    let r = b.get("/api/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(upstream.count() - seen, 2, "the refused call and one retry");
    assert_eq!(
        refresh_grants(&api).await - refreshes,
        1,
        "exactly one refresh"
    );
    let renewed = last_bearer(&upstream).expect("renewed token");
    assert_ne!(renewed, revoked);
    assert_eq!(api.check_access_token(&renewed).await["sub"], "alice");
    // The session keeps the new token: the next call is not refused.
    let seen = upstream.count();
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
    assert_eq!(upstream.count() - seen, 1);
    assert_eq!(last_bearer(&upstream).as_deref(), Some(renewed.as_str()));

    // A small POST body is kept and sent again whole.
    upstream.revoke(&renewed);
    let r = b
        .request(
            reqwest::Method::POST,
            "/api/items",
            &[("x-csrf", "1"), ("content-type", "application/json")],
            Some("{\"a\":1}".into()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let last = upstream.seen().last().cloned().expect("retry");
    assert_eq!((last.method.as_str(), last.body_len), ("POST", 7));
    assert_eq!(refresh_grants(&api).await - refreshes, 2);

    // Refused again after the retry: the second 401 reaches the browser.
    let seen = upstream.count();
    let r = b.get("/api/refuse-always").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert!(
        r.headers
            .get_all("www-authenticate")
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("invalid_token"))),
        "{r:?}"
    );
    assert_eq!(upstream.count() - seen, 2, "one retry, not more");
    assert_eq!(refresh_grants(&api).await - refreshes, 3);

    // A streamed body is not kept: its 401 passes through, no retry.
    let current = last_bearer(&upstream).expect("token");
    upstream.revoke(&current);
    let seen = upstream.count();
    let chunks =
        futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024])));
    let r =
        b.gw.post(gw.url("/api/upload"))
            .header("cookie", b.cookie_header())
            .header("x-csrf", "1")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .expect("upload");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.count() - seen, 1, "no retry for a streamed body");
    assert_eq!(refresh_grants(&api).await - refreshes, 3, "and no refresh");

    // A client token the API refuses: dropped, fetched anew, retried once.
    let mut anonymous = Browser::new(&gw);
    assert_eq!(anonymous.get("/svc/x").await.status, StatusCode::OK);
    let client = last_bearer(&upstream).expect("client token");
    upstream.revoke(&client);
    let grants = client_grants(&api).await;
    assert_eq!(anonymous.get("/svc/x").await.status, StatusCode::OK);
    assert_eq!(client_grants(&api).await - grants, 1);
    let fresh = last_bearer(&upstream).expect("new client token");
    assert_ne!(fresh, client);
    assert!(is_client_token(&api.check_access_token(&fresh).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_answers_with_the_routes_token() {
    let provider = ProviderProcess::start(&[]);
    let api = ProviderApi::new(&provider.issuer);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .configure(|c| {
            c.server.trusted_proxies = vec!["127.0.0.1/32".into()];
            c.forward_auth.enabled = true;
        })
        .route(RawRoute {
            auth: "none".into(),
            token: Some("client".into()),
            ..route("/svc", &upstream.url())
        })
        .route(RawRoute {
            token: Some("none".into()),
            ..route("/bare", &upstream.url())
        })
        .start()
        .await;
    let verify = |b: &mut Browser, original: &'static str| {
        let mut b = std::mem::replace(b, Browser::new(&gw));
        async move {
            let r = b
                .request(
                    reqwest::Method::GET,
                    "/auth/verify",
                    &[("x-original-uri", original)],
                    None,
                )
                .await;
            (b, r)
        }
    };
    // No session: the client route's answer carries the client token.
    let (mut b, r) = verify(&mut Browser::new(&gw), "/svc/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = r.headers["authorization"]
        .to_str()
        .expect("ascii")
        .strip_prefix("Bearer ")
        .expect("bearer")
        .to_owned();
    assert!(is_client_token(&api.check_access_token(&token).await));
    // A session on a `none` route: allowed, identity but no token.
    b.login_alice().await;
    let (_, r) = verify(&mut b, "/bare/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(!r.headers.contains_key("authorization"), "{r:?}");
    assert_eq!(r.headers["x-auth-request-user"], "alice");
}
