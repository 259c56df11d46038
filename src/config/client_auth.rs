//! `[oidc]` client authentication beyond a shared secret and pushed
//! authorization requests: `auth_method = "private_key_jwt"` with its key
//! (`client_key_file`, `client_key_algorithm`, `client_key_id`,
//! `client_assertion_audience`), the mutual-TLS methods (which reuse
//! `oidc.tls_cert_file`), and `pushed_authorization`.
//!
//! The key file is read and loaded for its algorithm here, at start-up, so a
//! key that cannot sign what the configuration says is a `check-config`
//! error naming `oidc.client_key_file`, not a failed login later. Its public
//! half (a JWK whose `kid` is, unless configured, its RFC 7638 thumbprint)
//! is computed here too: it is what `/.well-known/jwks.json` publishes.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::KeyPair as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::common::Issues;
use super::oidc::{AuthMethod, RawOidc};

/// The signature algorithm of the client assertion (`oidc.client_key_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKeyAlgorithm {
    Es256,
    Rs256,
    Ps256,
}

impl ClientKeyAlgorithm {
    /// The JOSE name (`alg`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        }
    }
}

/// How the private key is encoded: ring loads RSA keys from either, EC keys
/// from PKCS#8 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEncoding {
    Pkcs8,
    Pkcs1,
}

/// The gateway's key for `private_key_jwt`, checked against its algorithm.
#[derive(Clone)]
pub struct ClientKey {
    pub algorithm: ClientKeyAlgorithm,
    pub kid: String,
    /// The public half as a JWK (`kid`, `alg`, `use = "sig"`), published at
    /// `/.well-known/jwks.json`.
    pub public_jwk: Value,
    pub encoding: KeyEncoding,
    /// The private key's DER, wiped when the last copy is dropped.
    pub der: Arc<zeroize::Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The `aud` of a client assertion (`oidc.client_assertion_audience`):
/// RFC 7523 lets the provider choose; most accept the token endpoint URL,
/// some (Auth0) only their issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAudience {
    TokenEndpoint,
    Issuer,
}

/// When the authorization request is pushed (RFC 9126,
/// `oidc.pushed_authorization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushedAuthorization {
    /// When the provider's discovery document says it requires PAR.
    Auto,
    /// Always; a provider without a PAR endpoint is not usable.
    Always,
    Never,
}

/// What this module decided, for `OidcConfig`.
pub(super) struct ClientAuth {
    pub(super) key: Option<ClientKey>,
    pub(super) audience: AssertionAudience,
    pub(super) pushed_authorization: PushedAuthorization,
}

/// `oidc.client_key_*`, `oidc.client_assertion_audience`,
/// `oidc.pushed_authorization`, and what `oidc.auth_method` needs of them.
pub(super) fn validate(raw: &RawOidc, method: AuthMethod, issues: &mut Issues) -> ClientAuth {
    let audience = match raw.client_assertion_audience.as_str() {
        "token_endpoint" => AssertionAudience::TokenEndpoint,
        "issuer" => AssertionAudience::Issuer,
        other => {
            issues.add(
                "oidc.client_assertion_audience",
                format!("`{other}` is not supported; use \"token_endpoint\" or \"issuer\""),
            );
            AssertionAudience::TokenEndpoint
        }
    };
    let pushed_authorization = match raw.pushed_authorization.as_str() {
        "auto" => PushedAuthorization::Auto,
        "always" => PushedAuthorization::Always,
        "never" => PushedAuthorization::Never,
        other => {
            issues.add(
                "oidc.pushed_authorization",
                format!("`{other}` is not supported; use \"auto\", \"always\" or \"never\""),
            );
            PushedAuthorization::Auto
        }
    };
    let algorithm = match raw.client_key_algorithm.as_str() {
        "ES256" => Some(ClientKeyAlgorithm::Es256),
        "RS256" => Some(ClientKeyAlgorithm::Rs256),
        "PS256" => Some(ClientKeyAlgorithm::Ps256),
        other => {
            issues.add(
                "oidc.client_key_algorithm",
                format!("`{other}` is not supported; use \"ES256\", \"RS256\" or \"PS256\""),
            );
            None
        }
    };
    if let Some(kid) = &raw.client_key_id
        && (kid.is_empty() || kid.chars().any(char::is_control))
    {
        issues.add(
            "oidc.client_key_id",
            "must be a non-empty printable key ID (or leave it out for the key's JWK thumbprint)",
        );
    }
    let key = match (method, &raw.client_key_file) {
        (AuthMethod::PrivateKeyJwt, None) => {
            issues.add(
                "oidc.client_key_file",
                "missing; auth_method = \"private_key_jwt\" signs with a private key: generate one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out client-key.pem`",
            );
            None
        }
        (AuthMethod::PrivateKeyJwt, Some(path)) => {
            algorithm.and_then(|alg| read_client_key(issues, path, alg, raw.client_key_id.clone()))
        }
        (_, Some(_)) => {
            issues.add(
                "oidc.client_key_file",
                "is only used with oidc.auth_method = \"private_key_jwt\"; remove it or change the method",
            );
            None
        }
        (_, None) => None,
    };
    if matches!(
        method,
        AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
    ) && raw.tls_cert_file.is_none()
    {
        issues.add(
            "oidc.tls_cert_file",
            "missing; the mutual-TLS client authentication methods present this certificate (with oidc.tls_key_file) to the provider",
        );
    }
    ClientAuth {
        key,
        audience,
        pushed_authorization,
    }
}

/// Loads `oidc.client_key_file` for `alg`; a key of another type is an
/// error naming the key and what it holds.
fn read_client_key(
    issues: &mut Issues,
    path: &Path,
    alg: ClientKeyAlgorithm,
    kid: Option<String>,
) -> Option<ClientKey> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    const KEY: &str = "oidc.client_key_file";
    let pem = match super::common::read_file(path) {
        Ok(p) => zeroize::Zeroizing::new(p),
        Err(why) => {
            issues.add(KEY, why);
            return None;
        }
    };
    let (encoding, der) = match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(PrivateKeyDer::Pkcs8(d)) => (KeyEncoding::Pkcs8, d.secret_pkcs8_der().to_vec()),
        Ok(PrivateKeyDer::Pkcs1(d)) => (KeyEncoding::Pkcs1, d.secret_pkcs1_der().to_vec()),
        _ => {
            issues.add(
                KEY,
                format!(
                    "{} holds no unencrypted PKCS#8 `PRIVATE KEY` (or PKCS#1 `RSA PRIVATE KEY`) PEM block",
                    path.display()
                ),
            );
            return None;
        }
    };
    let der = zeroize::Zeroizing::new(der);
    let Some(mut jwk) = public_jwk(alg, encoding, &der) else {
        let holds = match key_type(encoding, &der) {
            Some(t) => format!("holds {t}"),
            None => "holds a key ring cannot load".to_owned(),
        };
        let needs = match alg {
            ClientKeyAlgorithm::Es256 => "an ECDSA P-256 key (PKCS#8)",
            _ => "an RSA key of at least 2048 bits",
        };
        issues.add(
            KEY,
            format!(
                "{} {holds}, but oidc.client_key_algorithm = \"{}\" needs {needs}; change the algorithm or the key",
                path.display(),
                alg.name()
            ),
        );
        return None;
    };
    let kid = kid.unwrap_or_else(|| thumbprint(&jwk));
    if let Value::Object(m) = &mut jwk {
        m.insert("kid".into(), json!(kid));
        m.insert("alg".into(), json!(alg.name()));
        m.insert("use".into(), json!("sig"));
    }
    Some(ClientKey {
        algorithm: alg,
        kid,
        public_jwk: jwk,
        encoding,
        der: Arc::new(der),
    })
}

/// The public JWK members (RFC 7518 §6) of a key loadable for `alg`.
fn public_jwk(alg: ClientKeyAlgorithm, encoding: KeyEncoding, der: &[u8]) -> Option<Value> {
    match alg {
        ClientKeyAlgorithm::Es256 => {
            let pair = ec_pair(encoding, der)?;
            // Uncompressed SEC1 point: 0x04 || x || y.
            let point = pair.public_key().as_ref();
            let (x, y) = point.get(1..33).zip(point.get(33..65))?;
            Some(json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y),
            }))
        }
        ClientKeyAlgorithm::Rs256 | ClientKeyAlgorithm::Ps256 => {
            let pair = rsa_pair(encoding, der)?;
            let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
            Some(json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(&c.n),
                "e": URL_SAFE_NO_PAD.encode(&c.e),
            }))
        }
    }
}

/// What the key is, for the mismatch message.
fn key_type(encoding: KeyEncoding, der: &[u8]) -> Option<&'static str> {
    if ec_pair(encoding, der).is_some() {
        Some("an ECDSA P-256 key")
    } else if rsa_pair(encoding, der).is_some() {
        Some("an RSA key")
    } else {
        None
    }
}

pub(crate) fn ec_pair(encoding: KeyEncoding, der: &[u8]) -> Option<ring::signature::EcdsaKeyPair> {
    if encoding != KeyEncoding::Pkcs8 {
        return None;
    }
    ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        der,
        &ring::rand::SystemRandom::new(),
    )
    .ok()
}

pub(crate) fn rsa_pair(encoding: KeyEncoding, der: &[u8]) -> Option<ring::rsa::KeyPair> {
    match encoding {
        KeyEncoding::Pkcs8 => ring::rsa::KeyPair::from_pkcs8(der).ok(),
        KeyEncoding::Pkcs1 => ring::rsa::KeyPair::from_der(der).ok(),
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order,
/// without whitespace, base64url.
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap_or_default(),
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        ),
        _ => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().unwrap_or_default(),
            jwk["n"].as_str().unwrap_or_default()
        ),
    };
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};
    use super::*;

    fn with(extra: &str) -> String {
        minimal().replace(
            "client_id = \"bff\"",
            &format!("client_id = \"bff\"\n{extra}"),
        )
    }

    fn openssl_key(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
        let path = dir.join(name);
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-out"])
            .arg(&path)
            .args(args)
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl genpkey {args:?}");
        path
    }

    fn tmp() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("oidc-bff-ck-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        dir
    }

    #[test]
    fn a_key_that_does_not_match_the_algorithm_is_refused_by_key_name() {
        let dir = tmp();
        let ec = openssl_key(
            &dir,
            "ec.pem",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let rsa = openssl_key(
            &dir,
            "rsa.pem",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        );
        let toml = with(&format!(
            "auth_method = \"private_key_jwt\"\nclient_key_file = \"{}\"\nclient_key_algorithm = \"RS256\"",
            ec.display()
        ));
        let err = load_str(&toml, &[]).expect_err("EC key for RS256");
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].key, "oidc.client_key_file");
        assert!(
            err.0[0].message.contains("an ECDSA P-256 key") && err.0[0].message.contains("RS256"),
            "{err}"
        );
        let toml = with(&format!(
            "auth_method = \"private_key_jwt\"\nclient_key_file = \"{}\"\nclient_key_algorithm = \"ES256\"",
            rsa.display()
        ));
        let err = load_str(&toml, &[]).expect_err("RSA key for ES256");
        assert_eq!(keys_of(err), vec!["oidc.client_key_file"]);

        // Matching keys load, with the RFC 7638 thumbprint as kid, and no
        // client secret is needed.
        for (file, alg) in [(&ec, "ES256"), (&rsa, "PS256"), (&rsa, "RS256")] {
            let toml = with(&format!(
                "auth_method = \"private_key_jwt\"\nclient_key_file = \"{}\"\nclient_key_algorithm = \"{alg}\"",
                file.display()
            ))
            .replace("client_secret = \"unit-test-secret\"\n", "");
            let config = load_str(&toml, &[]).expect("valid");
            let key = config.oidc.client_key.expect("key");
            assert_eq!(key.kid.len(), 43, "{}", key.kid);
            assert_eq!(key.public_jwk["kid"], key.kid.as_str());
            assert_eq!(key.public_jwk["alg"], alg);
            assert!(key.public_jwk.get("d").is_none());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
        });
        assert_eq!(
            thumbprint(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn private_key_jwt_needs_a_key_and_mutual_tls_needs_a_certificate() {
        let err = load_str(&with("auth_method = \"private_key_jwt\""), &[]).expect_err("no key");
        assert_eq!(keys_of(err), vec!["oidc.client_key_file"]);
        let err = load_str(&with("auth_method = \"tls_client_auth\""), &[]).expect_err("no cert");
        assert_eq!(keys_of(err), vec!["oidc.tls_cert_file"]);
        let err = load_str(
            &with("client_key_file = \"/etc/hosts\"\npushed_authorization = \"sometimes\"\nclient_assertion_audience = \"me\""),
            &[],
        )
        .expect_err("invalid");
        assert_eq!(
            keys_of(err),
            vec![
                "oidc.client_assertion_audience",
                "oidc.pushed_authorization",
                "oidc.client_key_file"
            ]
        );
    }
}
