//! `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): the client
//! assertion the gateway signs for each back-channel call to the provider
//! (token, refresh, revocation, PAR) with `oidc.client_key_file`.
//!
//! A fresh assertion per request, valid for [`ASSERTION_LIFETIME_SECS`],
//! with a random `jti`: providers refuse a replayed one, and one seen in a
//! log is soon useless.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use ring::rand::SystemRandom;
use serde_json::json;

use crate::config::{ClientKey, ClientKeyAlgorithm, KeyEncoding};

/// How long a client assertion is valid.
pub const ASSERTION_LIFETIME_SECS: u64 = 60;

/// The `client_assertion_type` of RFC 7523 §2.2.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

enum Pair {
    Ec(ring::signature::EcdsaKeyPair),
    Rsa(ring::rsa::KeyPair),
}

/// Signs client assertions with the configured key.
pub struct AssertionSigner {
    pair: Pair,
    algorithm: ClientKeyAlgorithm,
    kid: String,
    rng: SystemRandom,
}

#[derive(Debug, thiserror::Error)]
#[error("client assertion signing failed")]
pub struct SigningFailed;

impl AssertionSigner {
    /// The signer of a key the configuration already loaded once.
    pub fn new(key: &ClientKey) -> anyhow::Result<Self> {
        let pair = match key.algorithm {
            ClientKeyAlgorithm::Es256 => {
                if key.encoding != KeyEncoding::Pkcs8 {
                    anyhow::bail!("oidc.client_key_file: an EC key must be PKCS#8");
                }
                Pair::Ec(
                    ring::signature::EcdsaKeyPair::from_pkcs8(
                        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &key.der,
                        &SystemRandom::new(),
                    )
                    .map_err(|_| anyhow::anyhow!("oidc.client_key_file: not a P-256 key"))?,
                )
            }
            ClientKeyAlgorithm::Rs256 | ClientKeyAlgorithm::Ps256 => Pair::Rsa(
                match key.encoding {
                    KeyEncoding::Pkcs8 => ring::rsa::KeyPair::from_pkcs8(&key.der),
                    KeyEncoding::Pkcs1 => ring::rsa::KeyPair::from_der(&key.der),
                }
                .map_err(|_| anyhow::anyhow!("oidc.client_key_file: not an RSA key"))?,
            ),
        };
        Ok(Self {
            pair,
            algorithm: key.algorithm,
            kid: key.kid.clone(),
            rng: SystemRandom::new(),
        })
    }

    /// A compact JWS with `iss = sub = client_id`, `aud = audience`, a
    /// random `jti`, issued at `now` (seconds since the epoch).
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: u64,
    ) -> Result<String, SigningFailed> {
        let mut jti = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let header = json!({ "alg": self.algorithm.name(), "kid": self.kid, "typ": "JWT" });
        let payload = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = match &self.pair {
            Pair::Ec(pair) => pair
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(|_| SigningFailed)?
                .as_ref()
                .to_vec(),
            Pair::Rsa(pair) => {
                let padding: &dyn ring::signature::RsaEncoding = match self.algorithm {
                    ClientKeyAlgorithm::Ps256 => &ring::signature::RSA_PSS_SHA256,
                    _ => &ring::signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(padding, &self.rng, signing_input.as_bytes(), &mut sig)
                    .map_err(|_| SigningFailed)?;
                sig
            }
        };
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// The JWKS document at `/.well-known/jwks.json`: the identity-assertion
/// keys (`signer_jwks`, when `[assertion]` has any) and the public half of
/// the `private_key_jwt` key, so a provider that reads client keys from a
/// `jwks_uri` finds it. `None` when there is nothing to publish.
pub fn published_jwks(signer_jwks: Option<&str>, client_key: Option<&ClientKey>) -> Option<String> {
    let mut keys: Vec<serde_json::Value> = signer_jwks
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|j| j.get("keys").and_then(|k| k.as_array()).cloned())
        .unwrap_or_default();
    if let Some(k) = client_key {
        keys.push(k.public_jwk.clone());
    }
    if signer_jwks.is_none() && keys.is_empty() {
        return None;
    }
    Some(json!({ "keys": keys }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientKey;

    /// A key as the configuration loads it, from `openssl genpkey`.
    fn key(alg: ClientKeyAlgorithm, args: &[&str]) -> ClientKey {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let out = std::process::Command::new("openssl")
            .arg("genpkey")
            .args(args)
            .output()
            .expect("openssl");
        let Ok(PrivateKeyDer::Pkcs8(der)) = PrivateKeyDer::from_pem_slice(&out.stdout) else {
            panic!("pkcs8");
        };
        let der = der.secret_pkcs8_der().to_vec();
        let jwk = match alg {
            ClientKeyAlgorithm::Es256 => {
                use ring::signature::KeyPair as _;
                let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &SystemRandom::new(),
                )
                .expect("ec");
                let p = pair.public_key().as_ref();
                json!({"kty":"EC","crv":"P-256","x":URL_SAFE_NO_PAD.encode(&p[1..33]),"y":URL_SAFE_NO_PAD.encode(&p[33..65])})
            }
            _ => {
                let pair = ring::rsa::KeyPair::from_pkcs8(&der).expect("rsa");
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty":"RSA","n":URL_SAFE_NO_PAD.encode(&c.n),"e":URL_SAFE_NO_PAD.encode(&c.e)})
            }
        };
        ClientKey {
            algorithm: alg,
            kid: "k1".into(),
            public_jwk: jwk,
            encoding: KeyEncoding::Pkcs8,
            der: std::sync::Arc::new(zeroize::Zeroizing::new(der)),
        }
    }

    #[test]
    fn assertions_verify_with_the_published_key_and_carry_the_rfc_7523_claims() {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
        let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
        let rsa = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
        for (alg, args, jalg) in [
            (ClientKeyAlgorithm::Es256, &ec[..], Algorithm::ES256),
            (ClientKeyAlgorithm::Rs256, &rsa[..], Algorithm::RS256),
            (ClientKeyAlgorithm::Ps256, &rsa[..], Algorithm::PS256),
        ] {
            let key = key(alg, args);
            let signer = AssertionSigner::new(&key).expect("signer");
            let now = 1_900_000_000;
            let jwt = signer
                .assertion("bff", "https://id.example.com/token", now)
                .expect("signed");
            let jwk: Jwk = serde_json::from_value(key.public_jwk.clone()).expect("jwk");
            let mut v = Validation::new(jalg);
            v.set_audience(&["https://id.example.com/token"]);
            v.validate_exp = false;
            let data = jsonwebtoken::decode::<serde_json::Value>(
                &jwt,
                &DecodingKey::from_jwk(&jwk).expect("key"),
                &v,
            )
            .expect("verifies");
            assert_eq!(data.header.kid.as_deref(), Some("k1"));
            let c = data.claims;
            assert_eq!(
                (c["iss"].as_str(), c["sub"].as_str()),
                (Some("bff"), Some("bff"))
            );
            assert_eq!(c["exp"].as_u64(), Some(now + ASSERTION_LIFETIME_SECS));
            let again = signer.assertion("bff", "a", now).expect("signed");
            assert_ne!(jwt, again, "a fresh jti each time");
        }
    }
}
