//! `[assertion]`: the key ring that signs the identity assertion routes
//! send to their upstreams (`[[routes]] assertion = true`), the header it
//! travels in and the extra claims it carries.
//!
//! Keys are ECDSA P-256 (ES256) private keys in PKCS#8 PEM files: the first
//! signs, every one is published at `/.well-known/jwks.json`, so a key is
//! rotated by adding the new one second, then moving it first, then removing
//! the old one. A key generated at start-up is deliberately not offered:
//! every instance behind a load balancer must publish the same keys.

use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::common::Issues;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAssertion {
    /// Signing keys: `[{ id = "2026-01", key_file = "/etc/oidc-bff/assertion.pem" }]`,
    /// ECDSA P-256 PKCS#8 PEM (`openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256`). The first signs; all are published.
    pub keys: Vec<RawAssertionKey>,
    /// The request header the assertion travels in.
    pub header: String,
    /// Session claims copied into the assertion when the session has them
    /// (besides `iss`, `sub`, `aud`, `iat`, `exp`).
    pub claims: Vec<String>,
}

impl Default for RawAssertion {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            header: "X-Gateway-Assertion".into(),
            claims: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertionKey {
    /// The key's `kid` in the JWKS and in each assertion's header.
    pub id: String,
    pub key_file: PathBuf,
}

/// The validated key ring: PKCS#8 DER of each key, first signs.
#[derive(Debug, Clone)]
pub struct AssertionConfig {
    pub keys: Vec<AssertionKey>,
    pub header: HeaderName,
    pub claims: Vec<String>,
}

#[derive(Clone)]
pub struct AssertionKey {
    pub id: String,
    pub pkcs8: Arc<zeroize::Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssertionKey({}, [redacted])", self.id)
    }
}

/// Claims the gateway sets itself, which `claims` may not override.
const OWN_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "iat", "exp", "nbf", "jti"];

pub(super) fn validate(raw: &RawAssertion, issues: &mut Issues) -> Option<AssertionConfig> {
    let header = match HeaderName::from_bytes(raw.header.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            issues.add(
                "assertion.header",
                format!(
                    "`{}` is not a valid header name; e.g. \"X-Gateway-Assertion\"",
                    raw.header
                ),
            );
            None
        }
    };
    for (i, c) in raw.claims.iter().enumerate() {
        if c.is_empty() || OWN_CLAIMS.contains(&c.as_str()) {
            issues.add(
                format!("assertion.claims[{i}]"),
                format!(
                    "`{c}` is empty or a claim the gateway sets itself ({})",
                    OWN_CLAIMS.join(", ")
                ),
            );
        }
    }
    let mut keys = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let key = format!("assertion.keys[{i}]");
        if k.id.is_empty() || !k.id.bytes().all(|b| b.is_ascii_graphic()) {
            issues.add(
                format!("{key}.id"),
                "must be a non-empty printable name, e.g. \"2026-01\"",
            );
        } else if !ids.insert(k.id.clone()) {
            issues.add(
                format!("{key}.id"),
                format!("`{}` is used by another key", k.id),
            );
        }
        if let Some(pkcs8) = read_signing_key(issues, &format!("{key}.key_file"), &k.key_file) {
            keys.push(AssertionKey {
                id: k.id.clone(),
                pkcs8: Arc::new(pkcs8),
            });
        }
    }
    if keys.is_empty() {
        return None;
    }
    Some(AssertionConfig {
        keys,
        header: header?,
        claims: raw.claims.clone(),
    })
}

/// A P-256 private key in a PKCS#8 PEM file, checked by loading it.
fn read_signing_key(
    issues: &mut Issues,
    key: &str,
    path: &std::path::Path,
) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject;
    let pem = match super::common::read_file(path) {
        Ok(p) => zeroize::Zeroizing::new(p),
        Err(why) => {
            issues.add(key, why);
            return None;
        }
    };
    let fix = "generate one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out assertion.pem`";
    let der = match PrivatePkcs8KeyDer::from_pem_slice(&pem) {
        Ok(d) => zeroize::Zeroizing::new(d.secret_pkcs8_der().to_vec()),
        Err(_) => {
            issues.add(
                key,
                format!(
                    "{} holds no PKCS#8 `PRIVATE KEY` PEM block; {fix}",
                    path.display()
                ),
            );
            return None;
        }
    };
    let rng = ring::rand::SystemRandom::new();
    if ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &rng,
    )
    .is_err()
    {
        issues.add(
            key,
            format!(
                "{} is not an ECDSA P-256 private key; {fix}",
                path.display()
            ),
        );
        return None;
    }
    Some(der)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn an_assertion_route_needs_a_p256_key_and_says_how_to_make_one() {
        let toml = minimal().replace(
            "upstream = \"http://127.0.0.1:9100\"\n",
            "upstream = \"http://127.0.0.1:9100\"\nassertion = true\n",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("no keys"));
        assert_eq!(keys, ["routes[0].assertion"]);
        let toml = toml
            + "[assertion]\nkeys = [{ id = \"a\", key_file = \"/etc/hosts\" }]\nclaims = [\"aud\"]\nheader = \"bad header\"\n";
        let err = load_str(&toml, &[]).expect_err("bad key file");
        assert_eq!(
            keys_of(err.clone()),
            [
                "assertion.header",
                "assertion.claims[0]",
                "assertion.keys[0].key_file",
                "routes[0].assertion"
            ],
            "{err}"
        );
        assert!(err.to_string().contains("openssl genpkey"), "{err}");
    }
}
