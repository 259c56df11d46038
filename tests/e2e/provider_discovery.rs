//! Providers whose discovery is incomplete or unusual: `[oidc.endpoints]`
//! overrides, a provider without an `end_session_endpoint` (with and
//! without `oidc.end_session_url_template`), and front-channel logout.
//!
//! The discovery documents here are the real provider's, altered and served
//! from a loopback server of the test (`oidc.discovery_url`); every other
//! call goes to the real provider fixture.

use axum::Router;
use axum::routing::get;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{Browser, CLIENT_ID, GatewayBuilder, ProviderApi, Upstream, unique_user};

/// The shared provider's discovery document, changed by `edit`, served at
/// a loopback URL (returned).
async fn served_discovery(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let issuer = ProviderApi::shared().issuer;
    let mut doc: Value = reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    edit(doc.as_object_mut().expect("object"));
    let app = Router::new().route(
        "/openid-configuration",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/openid-configuration")
}

/// Refresh tokens of `user` still live at the provider.
async fn live_refresh_tokens(user: &str) -> usize {
    ProviderApi::shared()
        .get("/__test/refresh-tokens")
        .await
        .as_array()
        .map_or(0, |a| a.iter().filter(|t| t["sub"] == user).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_overrides_are_used_instead_of_what_discovery_says() {
    let issuer = ProviderApi::shared().issuer;
    // Discovery names dead endpoints for the token and key calls.
    let discovery = served_discovery(|d| {
        d.insert("token_endpoint".into(), "http://127.0.0.1:1/token".into());
        d.insert("jwks_uri".into(), "http://127.0.0.1:1/jwks".into());
    })
    .await;
    let upstream = Upstream::start().await;

    // Without overrides the login cannot complete.
    let d = discovery.clone();
    let broken = GatewayBuilder::new(&upstream)
        .configure(|c| c.oidc.discovery_url = Some(d))
        .start()
        .await;
    let mut b = Browser::new(&broken);
    let user = unique_user("noover");
    let r = b.try_login(&user, &format!("{user}-password")).await;
    assert!(b.session_cookie().is_none(), "{r:?}");
    assert_eq!(b.get("/api/hello").await.status, StatusCode::UNAUTHORIZED);

    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.oidc.discovery_url = Some(discovery);
            c.oidc.endpoints.token = Some(format!("{issuer}/token"));
            c.oidc.endpoints.jwks_uri = Some(format!("{issuer}/jwks"));
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("override")).await;
    assert_eq!(b.get("/api/hello").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_end_session_endpoint_logout_ends_the_session_and_lands_on_the_post_logout_page() {
    let discovery = served_discovery(|d| {
        d.remove("end_session_endpoint");
    })
    .await;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.oidc.discovery_url = Some(discovery);
            c.oidc.post_logout_redirect = "/goodbye".into();
        })
        .start()
        .await;
    let user = unique_user("noend");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    assert_eq!(
        live_refresh_tokens(&user).await,
        1,
        "login issued a refresh token"
    );

    let out = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    assert_eq!(out.json()["redirect_url"], format!("{}/goodbye", gw.base));
    assert_eq!(b.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gw.session_count().await, 0);
    for _ in 0..50 {
        if live_refresh_tokens(&user).await == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the refresh token is still live at the provider after logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_end_session_endpoint_the_template_names_the_provider_logout() {
    let discovery = served_discovery(|d| {
        d.remove("end_session_endpoint");
    })
    .await;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.oidc.discovery_url = Some(discovery);
            c.oidc.end_session_url_template = Some(
                "https://tenant.auth0.example/v2/logout?client_id={client_id}&returnTo={post_logout_redirect_uri}"
                    .into(),
            );
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_as(&unique_user("template")).await;
    let out = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    let next = out.json()["redirect_url"]
        .as_str()
        .expect("redirect_url")
        .to_owned();
    assert!(next.starts_with("/auth/logout/end?h="), "{next}");
    assert_eq!(b.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
    let end = b.navigate(&next).await;
    assert_eq!(end.status, StatusCode::SEE_OTHER);
    let post_logout: String =
        url::form_urlencoded::byte_serialize(format!("{}/", gw.base).as_bytes()).collect();
    assert_eq!(
        end.location().expect("location"),
        format!(
            "https://tenant.auth0.example/v2/logout?client_id={CLIENT_ID}&returnTo={}",
            post_logout.replace('+', "%20")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontchannel_logout_ends_the_provider_session_it_names_and_only_the_provider_may_frame_it()
{
    let issuer = ProviderApi::shared().issuer;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.oidc.frontchannel_logout.enabled = true)
        .start()
        .await;
    let user = unique_user("fcl");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    let mut other_device = Browser::new(&gw);
    other_device.login_as(&user).await;
    let sid = b.provider_sid().await;
    // The provider's iframe: a cross-site load, so no gateway cookie.
    let iframe = reqwest::Client::new();
    let load = |query: Vec<(&'static str, String)>| {
        let req = iframe
            .get(gw.url("/auth/frontchannel-logout"))
            .query(&query);
        async move { req.send().await.expect("front-channel request") }
    };

    // A wrong issuer, or a missing iss or sid, ends nothing.
    for query in [
        vec![
            ("iss", "http://127.0.0.1:1".to_owned()),
            ("sid", sid.clone()),
        ],
        vec![("iss", format!("{issuer}/other")), ("sid", sid.clone())],
        vec![("sid", sid.clone())],
        vec![("iss", issuer.clone())],
        vec![],
    ] {
        let r = load(query.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query:?}");
        assert_eq!(b.get("/api/x").await.status, StatusCode::OK, "{query:?}");
    }

    let r = load(vec![("iss", issuer.clone()), ("sid", sid.clone())]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h["cache-control"], "no-store");
    let origin = url::Url::parse(&issuer)
        .expect("issuer")
        .origin()
        .ascii_serialization();
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.contains(&format!("frame-ancestors {origin}")) && !csp.contains("frame-ancestors *"),
        "{csp}"
    );
    assert!(h.get("x-frame-options").is_none(), "{h:?}");
    assert!(r.text().await.expect("body").contains("Logged out"));

    let ended = b.get("/api/x").await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED, "{ended:?}");
    // Only that provider session ended, not the other device's.
    assert_eq!(other_device.get("/api/x").await.status, StatusCode::OK);
    // Nothing else is relaxed: the gateway's other answers still refuse framing.
    let user_info = other_device.get("/auth/user").await;
    assert_eq!(user_info.headers["x-frame-options"], "DENY");
    let page = iframe
        .get(gw.url("/auth/logged-out"))
        .send()
        .await
        .expect("logged-out page");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontchannel_logout_is_not_served_unless_enabled() {
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream).start().await;
    let r = reqwest::get(gw.url("/auth/frontchannel-logout?iss=x&sid=y"))
        .await
        .expect("request");
    assert_ne!(r.status(), StatusCode::OK);
}

/// Makes the shared provider issue `user`'s ID tokens (re-signed with its
/// key) with this `iss` and `tid`, as a multi-tenant provider does.
async fn issue_as_tenant(user: &str, iss: &str, tid: Option<&str>) {
    let mut set = serde_json::json!({ "iss": iss });
    if let Some(tid) = tid {
        set["tid"] = tid.into();
    }
    ProviderApi::shared()
        .post(
            "/__test/id-token-tweaks",
            serde_json::json!({ "sub": user, "set": set }),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_template_admits_only_allowed_tenants_with_their_own_issuer() {
    let issuer = ProviderApi::shared().issuer;
    let tenant = |t: &str| format!("{issuer}/t/{t}");
    let upstream = Upstream::start().await;
    let template = format!("{issuer}/t/{{tenantid}}");
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| {
            c.oidc.issuer_template = Some(template);
            c.oidc.allowed_tenants = vec!["tenant-a".into()];
        })
        .start()
        .await;

    let allowed = unique_user("tenanta");
    issue_as_tenant(&allowed, &tenant("tenant-a"), Some("tenant-a")).await;
    let mut b = Browser::new(&gw);
    b.login_as(&allowed).await;
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);

    let refused = [
        // A tenant not in the allowlist, with its own issuer.
        ("tenantb", tenant("tenant-b"), Some("tenant-b")),
        // An allowed tid, but another tenant's issuer.
        ("mixed", tenant("tenant-b"), Some("tenant-a")),
        // The plain issuer, no tenant at all: the template is no bypass.
        ("notid", issuer.clone(), None),
        ("plain", issuer.clone(), Some("tenant-a")),
    ];
    for (label, iss, tid) in refused {
        let user = unique_user(label);
        issue_as_tenant(&user, &iss, tid).await;
        let mut b = Browser::new(&gw);
        let r = b.try_login(&user, &format!("{user}-password")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{label}: {r:?}");
        assert!(r.body.contains("Sign-in failed"), "{label}: {}", r.body);
        assert!(b.session_cookie().is_none(), "{label}");
        assert_eq!(b.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
    }

    // Without the template, a tenant's issuer is simply the wrong issuer.
    let plain = GatewayBuilder::new(&upstream).start().await;
    let mut b = Browser::new(&plain);
    let r = b.try_login(&allowed, &format!("{allowed}-password")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
}

/// Answers in the odd shapes real providers use for errors, each carrying
/// `MARKER` so a test can tell whether any of it reached the browser.
const SHAPES: &[(&str, u16, &str, usize)] = &[
    ("html", 500, "text/html", 0),
    ("nested", 400, "application/json", 0),
    ("text", 400, "text/plain", 0),
    ("empty", 502, "text/plain", 0),
    ("huge", 200, "application/json", 2 << 20),
];
const MARKER: &str = "PROVIDER-SAID-THIS";

/// A loopback server answering every request in `shape`.
async fn odd_server(shape: &'static str) -> String {
    let (_, status, content_type, pad) =
        *SHAPES.iter().find(|s| s.0 == shape).expect("known shape");
    let body = match shape {
        "html" => format!(
            "<!doctype html><html><body><h1>{MARKER}</h1><script>x()</script></body></html>"
        ),
        "nested" => format!(r#"{{"error":{{"message":"{MARKER}","code":42}}}}"#),
        "text" => format!("{MARKER}: bad request"),
        "empty" => String::new(),
        _ => format!(
            r#"{{"access_token":"{}"}}"#,
            MARKER.repeat(pad / MARKER.len())
        ),
    };
    let app = Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                axum::http::StatusCode::from_u16(status).expect("status"),
                [("content-type", content_type)],
                body,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn assert_rendered_without_echo(
    label: &str,
    r: &crate::harness::browser::Resp,
    status: StatusCode,
) {
    assert_eq!(r.status, status, "{label}: {r:?}");
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html"),
        "{label}: the usual error page: {r:?}"
    );
    assert!(
        !r.body.contains(MARKER),
        "{label}: provider body echoed: {}",
        r.body
    );
    assert!(r.body.len() < 64 * 1024, "{label}: {} bytes", r.body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_token_endpoint_errors_become_the_usual_error_page_with_nothing_echoed() {
    let upstream = Upstream::start().await;
    for (shape, _, _, _) in SHAPES {
        let token = format!("{}/token", odd_server(shape).await);
        let gw = GatewayBuilder::new(&upstream)
            .configure(|c| c.oidc.endpoints.token = Some(token))
            .start()
            .await;
        let user = unique_user(shape);
        let mut b = Browser::new(&gw);
        let r = b.try_login(&user, &format!("{user}-password")).await;
        // A provider that sent too much fails the login (400, naming the
        // bound); one that answered nonsense is unavailable (503).
        let status = if *shape == "huge" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        assert_rendered_without_echo(shape, &r, status);
        assert!(b.session_cookie().is_none(), "{shape}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_discovery_answers_become_the_usual_error_page_with_nothing_echoed() {
    let upstream = Upstream::start().await;
    for (shape, _, _, _) in SHAPES {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            odd_server(shape).await
        );
        let gw = GatewayBuilder::new(&upstream)
            .configure(|c| c.oidc.discovery_url = Some(discovery))
            .start()
            .await;
        let mut b = Browser::new(&gw);
        let r = b.navigate("/auth/login?return_to=%2Fapp").await;
        assert_rendered_without_echo(shape, &r, StatusCode::SERVICE_UNAVAILABLE);
    }
}
