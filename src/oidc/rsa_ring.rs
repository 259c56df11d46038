//! RSA signature checks of provider tokens (RS256/384/512, PS256/384/512)
//! with `ring`, plugged into `jsonwebtoken` as its crypto provider; every
//! other algorithm, and RSA keys outside what `ring` accepts, stay with
//! the RustCrypto provider. Owns nothing but that choice.
//!
//! Why: a login checks one RS256 ID token, and the RustCrypto `rsa`
//! crate's big-integer arithmetic made that check about 0.2 ms of the
//! login's ~1.8 ms gateway CPU (`perf`, bench/login-cost); `ring`'s is
//! some ten times faster, and `ring` is already linked (rustls).

use std::sync::LazyLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::Result;
use jsonwebtoken::signature::{Error as SignatureError, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature::{self as rs, RsaParameters, RsaPublicKeyComponents};

/// The provider: RustCrypto's, with RSA verification through `ring`.
static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: verifier,
    jwk_utils: rust_crypto::DEFAULT_PROVIDER.jwk_utils.clone(),
});

/// Makes [`PROVIDER`] jsonwebtoken's for this process. Idempotent; if
/// another provider was installed first, that one stays (tokens are
/// checked all the same, only slower).
pub fn install() {
    let _ = PROVIDER.install_default();
}

fn params(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &rs::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &rs::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &rs::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &rs::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &rs::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &rs::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// The key as `ring` takes it (modulus and exponent without leading zero
/// bytes, which `ring` refuses and a JWKS may carry), if it does: a
/// modulus of 2,048 to 4,096 bits (RustCrypto, jsonwebtoken's own
/// provider, refuses larger ones) and an odd exponent from 3 to 2^33 - 1.
/// Other keys go to RustCrypto, so the choice of library never changes
/// which tokens verify.
fn ring_takes(n: &[u8], e: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|x| *x == 0).collect() };
    let (n, e) = (strip(n), strip(e));
    let n_bits = (n.len() * 8).saturating_sub(n.first().map_or(0, |b| b.leading_zeros() as usize));
    let e_value = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    ((2048..=4096).contains(&n_bits)
        && e.len() <= 5
        && (3..(1 << 33)).contains(&e_value)
        && e_value % 2 == 1)
        .then_some((n, e))
}

struct RingRsa {
    alg: Algorithm,
    params: &'static RsaParameters,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl Verifier<Vec<u8>> for RingRsa {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), SignatureError> {
        RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(self.params, msg, signature)
        .map_err(|_| SignatureError::new())
    }
}

impl JwtVerifier for RingRsa {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if let (Some(params), DecodingKeyKind::RsaModulusExponent { n, e }) = (params(*alg), key.kind())
        && let Some((n, e)) = ring_takes(n, e)
    {
        return Ok(Box::new(RingRsa {
            alg: *alg,
            params,
            n,
            e,
        }));
    }
    (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};

    /// A throwaway 2,048-bit RSA key (PKCS#1 DER), for these tests only.
    const TEST_KEY: &str = "MIIEpAIBAAKCAQEAsU+82+KmOAXGavHc/SV15cUxTH/9NvXLMkBvnHyXI9zEcUZCau0I6NQ0thodKkdU1Bu5PcWm/xdk3OOoXmVu6NAngru8ZHFClc8v6R/BM+vsFIeh+Lofu3s7EwufuRaGh6CACdLp1zgCxpnybA1ymcddlk8A6hIm/7UZynmZk0dXtaiMhMVcnsgxglgb+dG+vYnNOjTn6vgt/dLInErdDAOklxHoVAhyJe3b9qwdWFqXbclLGafZiKTdSajQzPEOlUxrNs4oTSlROlrVhqwej2DHdFKvNI3v6sIQFlQDYsSf0unJruWTnZZ5vmTbWzLmrxBwSxwC1BXye0PPsruFHQIDAQABAoIBABfzhjaqp1redtbH7JradlJPIJFtoZIMwkG7wAfisZTj07pcbAjfE4rF7Yfiv6lQIOaVByEPw7bmHVcUPpBfwctboNaxTum/fefYKKfkRPgjSIzeZHQBiltMMmbodU8ueoY0GU+aaMGMfJ2AuqU7bM1Wh68P5Xb49EEq4Ly/z827xVKC3wHxmYg5aLepEgi5aNeidexc0zczAt5k41EcJmjSc3lYVz1vK0NucjAibOVGvE5Ijoue7+cVD/4kXglh0A9fRuZvVnlHCDs+cmhzCGDzx7f/Drl3VT34MAsJqCG51g/I67jOy9myog7TPpF67H/W1ASCp/hYoHI2T0DnA+kCgYEA+gB+T/Vb7c2RNKWxr9SYYlnRUjrms/EwWbaOqhWpmtULA35gZVWg1JEMlKZYnLRRLNc60O/QFFchgGb6kgwLI/KTVdyU09HeeGrZ6rVvbJIAnpIohYJs71ngTgLlhrbc8kyLHIQWb+6g+SSXp4X8fbkhE15hPI/PDqPQWLwfDUUCgYEAtZDH9ayUT6RX+iYdM/UQQK2RPNY8QAxPaEJxovnEI9Dhu4LmBgaZKPuneeNlzJn0iRafObVR7LVtycTG1ZhEHCbQ3+vNdKYpmUNxg6ZRYi9XMLgnaMk5pCTVWiO/8WEEQwLAhNITNsid2Iae1+0kXbRCzwubyFsedkcQwW1aefkCgYAok53swmkaTswrnF0bqcjV5bgYvaCmQhZT6VJ8fqmZjMyN05w3tk81URmWou0s+gNW4NQWB2ZhdsbkPVKcE8JXIk8Rl4y8WIrgRo96Ddq453WcRyK2kLW3n4HNh6DTXai81vmZNkMiBbww0+SddxzFFyAsMZxcpQa5XJM7Y8UydQKBgQCeab/NHdIY2q7X1kFMf9i6VbWOeuz+hL8TnEVBiOIUzb7lt4OyZjdjho3MzxaWuQyeP1qVIxpjiLhNfp5s5fknBsbfWAFecUuCKVH1JzuCiwNrwoC/8DGWgXyUtPRXSepJ/TCzsgaJmef+bxZQFtvP1eMkemBlIvsk/0QjP6HdIQKBgQDlLQ7FF+XPRz/YHISvBKJOuvnD0sL2ga8JRcEUq3nk4eOyngKpi2hTNgoQHdwSJKeCpT7kMcokZC2lsexxMNjMVyrucPz0aFrOvVTnVMwcOGBTtaEcIFpTkDRXLuTMQdpPBp+PqMAycjWCPI1XNZhf5794K38MCSNHUrfB3YE5ZA==";

    fn key() -> (EncodingKey, DecodingKey) {
        let der = base64::engine::general_purpose::STANDARD
            .decode(TEST_KEY)
            .expect("base64");
        let (n, e) = (rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_rsa_public_key_components)(&der)
        .expect("components");
        (
            EncodingKey::from_rsa_der(&der),
            DecodingKey::from_rsa_raw_components(&n, &e),
        )
    }

    fn check(alg: Algorithm, token: &str, key: &DecodingKey) -> (bool, bool) {
        let (message, signature) = token.rsplit_once('.').expect("three parts");
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .expect("b64");
        let ring = verifier(&alg, key)
            .expect("verifier")
            .verify(message.as_bytes(), &signature)
            .is_ok();
        let rust = (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&alg, key)
            .expect("verifier")
            .verify(message.as_bytes(), &signature)
            .is_ok();
        (ring, rust)
    }

    #[test]
    fn ring_accepts_and_refuses_exactly_what_rustcrypto_does() {
        let (enc, dec) = key();
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
        ] {
            let token =
                jsonwebtoken::encode(&Header::new(alg), &serde_json::json!({"sub": "a"}), &enc)
                    .expect("sign");
            assert_eq!(check(alg, &token, &dec), (true, true), "{alg:?} valid");
            // One bit of the payload, then of the signature, changed.
            let mut bad = token.clone().into_bytes();
            let dot = token.find('.').expect("dot") + 2;
            bad[dot] ^= 0x01;
            let bad = String::from_utf8(bad).expect("utf8");
            assert_eq!(check(alg, &bad, &dec), (false, false), "{alg:?} payload");
            let mut bad = token.clone().into_bytes();
            let n = bad.len() - 5;
            bad[n] = if bad[n] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).expect("utf8");
            assert_eq!(check(alg, &bad, &dec), (false, false), "{alg:?} signature");
            // The wrong algorithm for the signature.
            let other = if alg == Algorithm::RS256 {
                Algorithm::RS384
            } else {
                Algorithm::RS256
            };
            assert_eq!(
                check(other, &token, &dec),
                (false, false),
                "{alg:?} as {other:?}"
            );
        }
    }

    #[test]
    fn keys_ring_does_not_take_stay_with_rustcrypto() {
        let n2048 = [0xC5u8; 256];
        assert!(ring_takes(&n2048, &[1, 0, 1]).is_some());
        assert_eq!(
            ring_takes(&[&[0u8, 0][..], &n2048].concat(), &[0, 1, 0, 1]),
            Some((n2048.to_vec(), vec![1, 0, 1])),
            "leading zero bytes are taken off for ring"
        );
        assert!(ring_takes(&[0xC5; 512], &[1, 0, 1]).is_some(), "4,096 bits");
        assert!(
            ring_takes(&[&[1u8][..], &[0xC5; 512]].concat(), &[1, 0, 1]).is_none(),
            "4,097 bits: RustCrypto refuses it, so ring must not take it"
        );
        assert!(ring_takes(&[0xC5; 128], &[1, 0, 1]).is_none(), "1,024 bits");
        assert!(ring_takes(&n2048, &[1, 0, 0]).is_none(), "even exponent");
        assert!(ring_takes(&n2048, &[1]).is_none(), "exponent 1");
        assert!(
            ring_takes(&n2048, &[2, 0, 0, 0, 1]).is_none(),
            "exponent of 34 bits"
        );
        assert!(ring_takes(&[], &[]).is_none(), "empty");
    }

    #[test]
    fn a_key_published_with_leading_zero_bytes_verifies_through_ring() {
        let der = base64::engine::general_purpose::STANDARD
            .decode(TEST_KEY)
            .expect("base64");
        let (n, e) = (rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_rsa_public_key_components)(&der)
        .expect("components");
        let padded = DecodingKey::from_rsa_raw_components(
            &[&[0u8][..], &n].concat(),
            &[&[0u8][..], &e].concat(),
        );
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &serde_json::json!({"sub": "a"}),
            &EncodingKey::from_rsa_der(&der),
        )
        .expect("sign");
        assert_eq!(check(Algorithm::RS256, &token, &padded), (true, true));
    }
}
