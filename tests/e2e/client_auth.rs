//! Client authentication beyond a shared secret and pushed authorization
//! requests, against the provider fixture: clients registered at run time
//! that allow only the method under test, so the provider refuses any
//! other.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::harness::{
    Browser, GatewayBuilder, ProviderApi, ProviderProcess, TestCa, Upstream, unique_user,
};

/// A fresh P-256 key in a PKCS#8 PEM file (`openssl genpkey`, like the
/// docs tell operators).
fn ec_key_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oidc-bff-e2e-key-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("client-key.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&path)
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl genpkey");
    path
}

/// Registers `client_id` at the provider for `method` only.
async fn register(api: &ProviderApi, client_id: &str, method: &str, extra: Value) {
    let mut body = json!({
        "client_id": client_id,
        "token_endpoint_auth_method": method,
    });
    if method == "private_key_jwt" {
        body["token_endpoint_auth_signing_alg"] = json!("ES256");
    }
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    api.post("/__test/clients", body).await;
}

/// A gateway for `client_id` signing client assertions with `key`.
fn private_key_jwt(
    builder: GatewayBuilder,
    client_id: &str,
    key: &std::path::Path,
) -> GatewayBuilder {
    let key = key.to_owned();
    builder.client_id(client_id).configure(move |c| {
        c.oidc.auth_method = "private_key_jwt".into();
        c.oidc.client_secret = None;
        c.oidc.client_key_file = Some(key);
        c.oidc.client_key_algorithm = "ES256".into();
    })
}

fn live_refresh_tokens(v: &Value, user: &str) -> usize {
    v.as_array().map_or(0, |a| {
        a.iter()
            .filter(|t| t["sub"] == user && t["consumed"] == false)
            .count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_logs_in_refreshes_and_revokes_with_keys_fetched_from_the_gateway() {
    // A provider of this test's own, with 5-second access tokens, so its
    // counters are this test's.
    let provider = ProviderProcess::start(&["--access-token-ttl", "5"]);
    let api = ProviderApi::new(&provider.issuer);
    let client_id = format!("pkjwt-{:08x}", rand::random::<u32>());
    register(
        &api,
        &client_id,
        "private_key_jwt",
        json!({ "jwks_uri": "http://127.0.0.1:1/jwks" }),
    )
    .await;
    let upstream = Upstream::start().await;
    let key = ec_key_file();
    let gw = private_key_jwt(GatewayBuilder::new(&upstream), &client_id, &key)
        .issuer(&provider.issuer)
        .refresh_skew("1s")
        .start()
        .await;

    // The gateway publishes the key's public half under its RFC 7638
    // thumbprint; the provider reads it from there.
    let jwks: Value = reqwest::get(gw.url("/.well-known/jwks.json"))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{jwks}");
    let k = &keys[0];
    assert!(k.get("d").is_none(), "no private part: {k}");
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        k["x"].as_str().expect("x"),
        k["y"].as_str().expect("y")
    );
    assert_eq!(
        k["kid"].as_str(),
        Some(
            URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(canonical))
                .as_str()
        )
    );
    assert_eq!(k["alg"], "ES256");
    register(
        &api,
        &client_id,
        "private_key_jwt",
        json!({ "jwks_uri": gw.url("/.well-known/jwks.json") }),
    )
    .await;

    let user = unique_user("pkjwt");
    let mut b = Browser::new(&gw);
    b.login_as(&user).await;
    assert_eq!(b.get("/api/first").await.status, StatusCode::OK);
    let stats = api.get("/__test/stats").await;
    assert_eq!(stats["token_grants"]["authorization_code"], 1, "{stats}");

    // Refresh with a new assertion (the provider refuses a replayed jti).
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(b.get("/api/second").await.status, StatusCode::OK);
    let stats = api.get("/__test/stats").await;
    assert_eq!(stats["token_grants"]["refresh_token"], 1, "{stats}");
    assert_eq!(stats["refresh_failures"], 0, "{stats}");

    // Logout revokes the refresh token at the provider, authenticated the
    // same way.
    assert_eq!(
        live_refresh_tokens(&api.get("/__test/refresh-tokens").await, &user),
        1
    );
    let r = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for _ in 0..50 {
        if live_refresh_tokens(&api.get("/__test/refresh-tokens").await, &user) == 0 {
            assert_eq!(api.get("/__test/stats").await["revocations"], 1);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the refresh token is still live at the provider after logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_registered_for_private_key_jwt_refuses_a_client_secret() {
    let api = ProviderApi::shared();
    let client_id = format!("pkjwt-only-{:08x}", rand::random::<u32>());
    // The registration still carries the fixture's default secret: the
    // method alone decides.
    register(
        &api,
        &client_id,
        "private_key_jwt",
        json!({ "jwks_uri": "http://127.0.0.1:1/jwks" }),
    )
    .await;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .client_id(&client_id)
        .start()
        .await;
    let mut b = Browser::new(&gw);
    let user = unique_user("pkjwtsecret");
    let r = b.try_login(&user, &format!("{user}-password")).await;
    // The code exchange is refused: the usual error page, no session.
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(
        b.session_cookie().is_none(),
        "no session with a refused client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn par_required_by_the_provider_is_used_and_the_browser_carries_only_the_request_uri() {
    let api = ProviderApi::shared();
    let client_id = format!("par-{:08x}", rand::random::<u32>());
    register(
        &api,
        &client_id,
        "private_key_jwt",
        json!({ "jwks_uri": "http://127.0.0.1:1/jwks", "require_pushed_authorization_requests": true }),
    )
    .await;
    let upstream = Upstream::start().await;
    let key = ec_key_file();
    let start = |mode: &'static str| {
        private_key_jwt(GatewayBuilder::new(&upstream), &client_id, &key)
            .configure(move |c| c.oidc.pushed_authorization = mode.into())
            .start()
    };
    let gw = start("always").await;
    register(
        &api,
        &client_id,
        "private_key_jwt",
        json!({ "jwks_uri": gw.url("/.well-known/jwks.json"), "require_pushed_authorization_requests": true }),
    )
    .await;

    let user = unique_user("par");
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/app").await;
    let url = url::Url::parse(&authorize).expect("url");
    let mut names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    names.sort();
    assert_eq!(names, ["client_id", "request_uri"], "{authorize}");
    assert!(!authorize.contains("code_challenge") && !authorize.contains("state="));
    let cb = b
        .authenticate(&authorize, &user, &format!("{user}-password"))
        .await;
    let r = b.callback(&cb).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(b.get("/api/x").await.status, StatusCode::OK);

    // The provider really requires it: without PAR the same client's
    // authorization request is refused.
    let gw = start("never").await;
    let mut b = Browser::new(&gw);
    let authorize = b.start_login("/app").await;
    assert!(authorize.contains("code_challenge="), "{authorize}");
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(&authorize)
        .send()
        .await
        .expect("authorize");
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        r.status() == StatusCode::BAD_REQUEST || location.contains("error=invalid_request"),
        "{} {location}",
        r.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pushed_authorization_request_renders_the_error_page_without_the_provider_text() {
    let api = ProviderApi::shared();
    let client_id = format!("par-secret-{:08x}", rand::random::<u32>());
    register(&api, &client_id, "client_secret_basic", json!({})).await;
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .client_id(&client_id)
        .configure(|c| {
            c.oidc.client_secret = Some("not-the-secret".into());
            c.oidc.pushed_authorization = "always".into();
        })
        .start()
        .await;
    let mut b = Browser::new(&gw);
    let r = b.navigate("/auth/login?return_to=%2Fapp").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let body = r.body.to_lowercase();
    assert!(body.contains("sign-in failed"), "{body}");
    assert!(
        !body.contains("invalid_client") && !body.contains("client authentication"),
        "{body}"
    );
}

/// The control API of an HTTPS fixture whose certificate `ca` signed.
async fn https_api(
    ca_pem: &[u8],
    issuer: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("CA"))
        .build()
        .expect("client");
    let mut req = client.request(method, format!("{issuer}{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("provider api");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth_logs_in_refreshes_and_revokes_with_the_client_certificate_only() {
    // The fixture on HTTPS, asking for client certificates from the test CA
    // (whose client certificate has the subject CN=oidc-bff).
    let ca = TestCa::new(false);
    let ca_pem = std::fs::read(ca.file("ca.pem")).expect("CA");
    let (cert, key, ca_file) = (
        ca.file("client.pem"),
        ca.file("client.key"),
        ca.file("ca.pem"),
    );
    let provider = ProviderProcess::start(&[
        "--tls-cert",
        &ca.file("server.pem"),
        "--tls-key",
        &ca.file("server.key"),
        "--tls-client-ca",
        &ca_file,
        "--access-token-ttl",
        "5",
    ]);
    let issuer = provider.issuer.clone();
    let api = |method: Method, path: &'static str, body: Option<Value>| {
        let (ca_pem, issuer) = (ca_pem.clone(), issuer.clone());
        async move { https_api(&ca_pem, &issuer, method, path, body).await }
    };
    let client_id = format!("mtls-{:08x}", rand::random::<u32>());
    let other_id = format!("mtls-other-{:08x}", rand::random::<u32>());
    for (id, dn) in [(&client_id, "CN=oidc-bff"), (&other_id, "CN=someone-else")] {
        api(
            Method::POST,
            "/__test/clients",
            Some(json!({
                "client_id": id,
                "token_endpoint_auth_method": "tls_client_auth",
                "tls_client_auth_subject_dn": dn,
            })),
        )
        .await;
    }
    let upstream = Upstream::start().await;
    let gateway = |id: &str, method: &'static str| {
        let (cert, key, ca_file) = (cert.clone(), key.clone(), ca_file.clone());
        GatewayBuilder::new(&upstream)
            .issuer(&issuer)
            .client_id(id)
            .refresh_skew("1s")
            .configure(move |c| {
                c.oidc.tls_ca_file = Some(ca_file.into());
                c.oidc.tls_cert_file = Some(cert.into());
                c.oidc.tls_key_file = Some(key.into());
                c.oidc.auth_method = method.into();
                if method != "client_secret_basic" {
                    c.oidc.client_secret = None;
                }
            })
            .start()
    };

    let gw = gateway(&client_id, "tls_client_auth").await;
    let user = unique_user("mtls");
    let mut b = Browser::trusting(&gw, Some(&ca_pem));
    b.login_as(&user).await;
    assert_eq!(b.get("/api/first").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(b.get("/api/second").await.status, StatusCode::OK);
    let stats = api(Method::GET, "/__test/stats", None).await;
    assert_eq!(stats["token_grants"]["authorization_code"], 1, "{stats}");
    assert_eq!(stats["token_grants"]["refresh_token"], 1, "{stats}");
    let r = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut revoked = false;
    for _ in 0..50 {
        let tokens = api(Method::GET, "/__test/refresh-tokens", None).await;
        if live_refresh_tokens(&tokens, &user) == 0 {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        revoked,
        "the refresh token is still live at the provider after logout"
    );
    assert_eq!(
        api(Method::GET, "/__test/stats", None).await["revocations"],
        1
    );

    // The provider enforces the method and the subject: the same
    // certificate with a secret, or for a client registered for another
    // subject, gets no tokens.
    for gw in [
        gateway(&client_id, "client_secret_basic").await,
        gateway(&other_id, "tls_client_auth").await,
    ] {
        let mut b = Browser::trusting(&gw, Some(&ca_pem));
        let user = unique_user("mtlsrefused");
        let r = b.try_login(&user, &format!("{user}-password")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
        assert!(b.session_cookie().is_none());
    }
}

/// The public JWK of an RSA certificate with the certificate in `x5c`, as a
/// client registers it for `self_signed_tls_client_auth` (RFC 8705 §2.2).
fn certificate_jwk(pem_file: &str) -> Value {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-in", pem_file])
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl x509 {args:?}");
        out.stdout
    };
    let modulus = String::from_utf8(openssl(&["-noout", "-modulus"])).expect("text");
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let der = openssl(&["-outform", "DER"]);
    json!({
        "kty": "RSA",
        "e": "AQAB",
        "n": URL_SAFE_NO_PAD.encode(n),
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_tls_client_auth_logs_in_with_the_registered_certificate_only() {
    let ca = TestCa::new(false);
    let ca_pem = std::fs::read(ca.file("ca.pem")).expect("CA");
    let (cert, key, ca_file) = (
        ca.file("client.pem"),
        ca.file("client.key"),
        ca.file("ca.pem"),
    );
    let provider = ProviderProcess::start(&[
        "--tls-cert",
        &ca.file("server.pem"),
        "--tls-key",
        &ca.file("server.key"),
        "--tls-client-ca",
        &ca_file,
    ]);
    let issuer = provider.issuer.clone();
    let client_id = format!("selfsigned-{:08x}", rand::random::<u32>());
    let other_id = format!("selfsigned-other-{:08x}", rand::random::<u32>());
    // The gateway's certificate for one client; another certificate (the
    // server's) for the other.
    for (id, registered) in [(&client_id, &cert), (&other_id, &ca.file("server.pem"))] {
        https_api(
            &ca_pem,
            &issuer,
            Method::POST,
            "/__test/clients",
            Some(json!({
                "client_id": id,
                "token_endpoint_auth_method": "self_signed_tls_client_auth",
                "jwks": { "keys": [certificate_jwk(registered)] },
            })),
        )
        .await;
    }
    let upstream = Upstream::start().await;
    for (id, works) in [(&client_id, true), (&other_id, false)] {
        let (cert, key, ca_file) = (cert.clone(), key.clone(), ca_file.clone());
        let gw = GatewayBuilder::new(&upstream)
            .issuer(&issuer)
            .client_id(id)
            .configure(move |c| {
                c.oidc.tls_ca_file = Some(ca_file.into());
                c.oidc.tls_cert_file = Some(cert.into());
                c.oidc.tls_key_file = Some(key.into());
                c.oidc.auth_method = "self_signed_tls_client_auth".into();
                c.oidc.client_secret = None;
            })
            .start()
            .await;
        let mut b = Browser::trusting(&gw, Some(&ca_pem));
        let user = unique_user("selfsigned");
        let r = b.try_login(&user, &format!("{user}-password")).await;
        if works {
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
            assert_eq!(b.get("/api/x").await.status, StatusCode::OK);
        } else {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
            assert!(b.session_cookie().is_none());
        }
    }
}
