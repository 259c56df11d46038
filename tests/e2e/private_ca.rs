//! A provider and an upstream whose certificates come from a private CA:
//! trusted when `oidc.tls_ca_file` / `proxy.tls_ca_file` name that CA, and
//! refused (503 / 502, nothing forwarded) when they do not. And the same two
//! demanding a client certificate: served when `oidc.tls_cert_file` /
//! `proxy.tls_cert_file` give the gateway one, refused when they do not.

use std::path::PathBuf;

use reqwest::StatusCode;

use crate::harness::{
    Browser, Gateway, GatewayBuilder, ProviderProcess, TestCa, TlsStatusServer, Upstream, route,
};

/// A gateway that cannot talk to its provider is not ready and offers no
/// login.
async fn cannot_reach_the_provider(gw: &Gateway, ca_pem: &[u8]) {
    let mut b = Browser::trusting(gw, Some(ca_pem));
    assert_eq!(
        b.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        b.navigate("/auth/login").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// The provider fixture serving HTTPS with `ca`'s server certificate.
fn https_provider(ca: &TestCa, extra: &[&str]) -> ProviderProcess {
    let mut args = vec![
        "--tls-cert".to_owned(),
        ca.file("server.pem"),
        "--tls-key".to_owned(),
        ca.file("server.key"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ProviderProcess::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_and_an_upstream_behind_a_private_ca_are_trusted_only_when_configured() {
    let ca = TestCa::new(false);
    let provider = https_provider(&ca, &[]);
    assert!(
        provider.issuer.starts_with("https://"),
        "{}",
        provider.issuer
    );
    let https_upstream = TlsStatusServer::start(&ca);
    let secure = route(
        "/secure",
        &format!("https://127.0.0.1:{}", https_upstream.port),
    );
    let trust = Some(PathBuf::from(ca.file("ca.pem")));
    let ca_pem = std::fs::read(ca.file("ca.pem")).expect("CA");
    let upstream = Upstream::start().await;

    // Both CAs configured: log in over HTTPS, reach the HTTPS upstream.
    let gw = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .configure(|c| {
            c.oidc.tls_ca_file = trust.clone();
            c.proxy.tls_ca_file = trust.clone();
        })
        .route(secure.clone())
        .start()
        .await;
    let mut b = Browser::trusting(&gw, Some(&ca_pem));
    b.login_alice().await;
    let r = b.get("/secure/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.body.contains("<HTML>"), "the s_server status page: {r:?}");

    // The provider's CA not configured: discovery fails, so no login.
    let untrusting = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .start()
        .await;
    cannot_reach_the_provider(&untrusting, &ca_pem).await;

    // The upstream's CA not configured: logged in, but the call is a 502.
    let no_upstream_ca = GatewayBuilder::new(&upstream)
        .issuer(&provider.issuer)
        .configure(|c| c.oidc.tls_ca_file = trust.clone())
        .route(secure)
        .start()
        .await;
    let mut c = Browser::trusting(&no_upstream_ca, Some(&ca_pem));
    c.login_alice().await;
    let r = c.get("/secure/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(r.json()["error"], "upstream_unavailable", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_and_an_upstream_that_demand_client_certificates_get_the_gateways() {
    let ca = TestCa::new(false);
    let provider = https_provider(&ca, &["--tls-client-ca", &ca.file("ca.pem")]);
    let https_upstream = TlsStatusServer::start_verifying(&ca);
    let secure = route(
        "/secure",
        &format!("https://127.0.0.1:{}", https_upstream.port),
    );
    let trust = Some(PathBuf::from(ca.file("ca.pem")));
    let cert = Some(PathBuf::from(ca.file("client.pem")));
    let key = Some(PathBuf::from(ca.file("client.key")));
    let ca_pem = std::fs::read(ca.file("ca.pem")).expect("CA");
    let upstream = Upstream::start().await;
    let gateway = |oidc_identity: bool, proxy_identity: bool| {
        GatewayBuilder::new(&upstream)
            .issuer(&provider.issuer)
            .configure(|c| {
                c.oidc.tls_ca_file = trust.clone();
                c.proxy.tls_ca_file = trust.clone();
                if oidc_identity {
                    c.oidc.tls_cert_file = cert.clone();
                    c.oidc.tls_key_file = key.clone();
                }
                if proxy_identity {
                    c.proxy.tls_cert_file = cert.clone();
                    c.proxy.tls_key_file = key.clone();
                }
            })
            .route(secure.clone())
            .start()
    };

    // The gateway presents its certificate to both: discovery, code
    // exchange and JWKS at the provider work, and so does the upstream call.
    let gw = gateway(true, true).await;
    let mut b = Browser::trusting(&gw, Some(&ca_pem));
    b.login_alice().await;
    let r = b.get("/secure/x").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.body.contains("<HTML>"), "the s_server status page: {r:?}");

    // Without one for the provider, its back channel refuses the gateway.
    let no_oidc_identity = gateway(false, true).await;
    cannot_reach_the_provider(&no_oidc_identity, &ca_pem).await;

    // Without one for upstreams: logged in, but the call is a 502.
    let no_proxy_identity = gateway(true, false).await;
    let mut c = Browser::trusting(&no_proxy_identity, Some(&ca_pem));
    c.login_alice().await;
    let r = c.get("/secure/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    assert_eq!(r.json()["error"], "upstream_unavailable", "{r:?}");
}
