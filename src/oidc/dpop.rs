//! DPoP (RFC 9449): the per-session proof-of-possession key and the proofs
//! made with it, for the token endpoint (code exchange, refresh) and for
//! upstream APIs on routes with `dpop = true`; the server nonces
//! (`use_dpop_nonce`) remembered per server (each caller names its
//! servers: the provider per endpoint, upstreams per origin).
//!
//! Each session has its own P-256 key, generated at the login's callback
//! and kept (as PKCS#8 bytes) only in the session's sealed secrets, which
//! open with the browser's cookie alone: a copy of the store holds tokens
//! bound to a key it cannot read, and a stolen token is refused without a
//! proof signed by that key. ES256 is the only algorithm: a fresh RSA key
//! per session would cost tens of milliseconds per login, and `none`/HMAC
//! would prove nothing.
//!
//! This module knows no session and no HTTP client: callers pass the key's
//! bytes in and send the headers it makes.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sha2::{Digest as _, Sha256};

/// The one proof algorithm (`oidc.dpop_signing_alg`).
pub const ALGORITHM: &str = "ES256";

/// Longest server nonce kept and echoed: a hostile server cannot make the
/// gateway carry an unbounded value in every later proof.
pub const MAX_NONCE_LEN: usize = 256;

/// Most servers one [`Nonces`] table remembers (upstreams, or the
/// provider's endpoints); past it the table is emptied and refilled by the next
/// challenges, which cost one retry each.
const MAX_REMEMBERED: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    #[error("the session's DPoP key does not load")]
    BadKey,
    #[error("DPoP key generation or signing failed")]
    Crypto,
}

/// A session's DPoP key pair, loaded for signing.
pub struct DpopKey {
    pair: EcdsaKeyPair,
    /// The public JWK, as the proof header carries it.
    jwk: serde_json::Value,
}

impl DpopKey {
    /// A new P-256 key: its PKCS#8 bytes, to be sealed in the session.
    pub fn generate() -> Result<zeroize::Zeroizing<Vec<u8>>, DpopError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| DpopError::Crypto)?;
        Ok(zeroize::Zeroizing::new(doc.as_ref().to_vec()))
    }

    /// The key sealed in a session (PKCS#8, as [`DpopKey::generate`] made it).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, DpopError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| DpopError::BadKey)?;
        // Uncompressed point: 0x04 || x (32) || y (32).
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(DpopError::BadKey);
        }
        let jwk = serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Ok(Self { pair, jwk })
    }

    /// The RFC 7638 thumbprint of the public key: what a provider puts in a
    /// bound token's `cnf.jkt`.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.jwk["x"].as_str().unwrap_or_default(),
            self.jwk["y"].as_str().unwrap_or_default()
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// A DPoP proof (RFC 9449 §4.2) for one request: `htm` and `htu`
    /// (without query and fragment), a random `jti`, `iat = now`, the
    /// server's `nonce` if it gave one, and `ath` (the access token's
    /// hash) for requests that carry an access token.
    pub fn proof(
        &self,
        htm: &str,
        htu: &str,
        now: u64,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<String, DpopError> {
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let header = serde_json::json!({ "typ": "dpop+jwt", "alg": ALGORITHM, "jwk": self.jwk });
        let mut payload = serde_json::json!({
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "htm": htm,
            "htu": htu_of(htu),
            "iat": now,
        });
        if let Some(n) = nonce {
            payload["nonce"] = n.into();
        }
        if let Some(at) = access_token {
            payload["ath"] = URL_SAFE_NO_PAD.encode(Sha256::digest(at.as_bytes())).into();
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| DpopError::Crypto)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

/// `htu` (RFC 9449 §4.2): the request URI without query and fragment.
pub fn htu_of(uri: &str) -> &str {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    &uri[..end]
}

/// The origin (`scheme://authority`) of a URL: the server an upstream's
/// nonces are remembered under.
pub fn origin_of(uri: &str) -> &str {
    let after_scheme = uri.find("://").map_or(0, |i| i + 3);
    let end = uri[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(uri.len(), |i| after_scheme + i);
    &uri[..end]
}

/// A `DPoP-Nonce` value worth keeping: RFC 9449 §8.1's `NQCHAR`s (printable
/// ASCII but `"` and `\`), at most [`MAX_NONCE_LEN`].
pub fn valid_nonce(value: &[u8]) -> Option<&str> {
    (!value.is_empty()
        && value.len() <= MAX_NONCE_LEN
        && value
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\'))
    .then(|| std::str::from_utf8(value).ok())
    .flatten()
}

/// The server nonce of a resource server's refusal (RFC 9449 §9): a 401
/// whose `WWW-Authenticate` is a DPoP challenge with
/// `error="use_dpop_nonce"`, and its `DPoP-Nonce` header. Bounded like the
/// other challenge readers (four values of at most 2 KiB).
pub fn resource_nonce_challenge(headers: &http::HeaderMap) -> Option<String> {
    let asked = headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .take(4)
        .any(|v| {
            let Some((scheme, rest)) = std::str::from_utf8(v.as_bytes())
                .ok()
                .filter(|t| t.len() <= crate::step_up::MAX_CHALLENGE_BYTES)
                .and_then(|t| t.trim().split_once([' ', '\t']))
            else {
                return false;
            };
            scheme.eq_ignore_ascii_case("dpop")
                && crate::step_up::auth_params(rest).is_some_and(|p| {
                    p.iter()
                        .any(|(k, v)| k.eq_ignore_ascii_case("error") && v == "use_dpop_nonce")
                })
        });
    if !asked {
        return None;
    }
    headers
        .get("dpop-nonce")
        .and_then(|v| valid_nonce(v.as_bytes()))
        .map(str::to_owned)
}

/// The latest nonce each server gave, kept by its owner (the provider's
/// metadata cache per process, the forwarder per worker): a proof carries
/// it from the start, so only the first request to a server, or one after
/// the server rotated its nonce, is refused and retried.
///
/// A nonce belongs to the server that issued it (RFC 9449 §8, §9), and
/// which URLs make one server is the caller's to say: the owner passes the
/// server's name (`server`) as it keys it. The provider names each
/// endpoint (its token endpoint and userinfo may be an authorization
/// server and a resource server on one origin, with nonces of their own:
/// one table entry shared between them would cost a retry at each turn);
/// upstreams are named by origin (one resource server per upstream).
#[derive(Default)]
pub struct Nonces {
    by_server: Mutex<HashMap<String, String>>,
}

impl Nonces {
    /// The nonce `server` gave last.
    pub fn get(&self, server: &str) -> Option<String> {
        self.by_server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .cloned()
    }

    /// Remembers a `DPoP-Nonce` value `server` sent (ignored when it is not
    /// a valid nonce).
    pub fn remember(&self, server: &str, value: &[u8]) {
        let Some(nonce) = valid_nonce(value) else {
            return;
        };
        let mut map = self.by_server.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_REMEMBERED && !map.contains_key(server) {
            map.clear();
        }
        map.insert(server.to_owned(), nonce.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let seg = jwt.split('.').nth(i).expect("segment");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).expect("b64")).expect("json")
    }

    #[test]
    fn a_proof_carries_the_public_key_and_binds_method_url_nonce_and_token() {
        let bytes = DpopKey::generate().expect("key");
        let key = DpopKey::from_pkcs8(&bytes).expect("loads");
        let proof = key
            .proof(
                "GET",
                "https://api.test/x/y?q=1#f",
                1_700_000_000,
                Some("n-1"),
                Some("token"),
            )
            .expect("signs");
        let header = part(&proof, 0);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["kty"], "EC");
        assert!(header["jwk"].get("d").is_none(), "no private part");
        let payload = part(&proof, 1);
        assert_eq!(payload["htm"], "GET");
        assert_eq!(payload["htu"], "https://api.test/x/y");
        assert_eq!(payload["iat"], 1_700_000_000);
        assert_eq!(payload["nonce"], "n-1");
        assert_eq!(
            payload["ath"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"token"))
        );
        assert_eq!(payload["jti"].as_str().map(str::len), Some(22));
        // The signature verifies with the public key in the header.
        let x = URL_SAFE_NO_PAD
            .decode(header["jwk"]["x"].as_str().expect("x"))
            .expect("x");
        let y = URL_SAFE_NO_PAD
            .decode(header["jwk"]["y"].as_str().expect("y"))
            .expect("y");
        let point = [&[4u8][..], &x, &y].concat();
        let (input, sig) = proof.rsplit_once('.').expect("three parts");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).expect("sig"))
            .expect("verifies");
        // A second proof has another jti; no nonce or ath when not given.
        let other = part(
            &key.proof("POST", "https://op.test/token", 1, None, None)
                .expect("signs"),
            1,
        );
        assert_ne!(other["jti"], payload["jti"]);
        assert!(other.get("nonce").is_none() && other.get("ath").is_none());
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 7638 §3.1's method over the RFC 7517 A.1 example P-256 key.
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
        });
        let bytes = DpopKey::generate().expect("key");
        let mut key = DpopKey::from_pkcs8(&bytes).expect("loads");
        key.jwk = jwk;
        assert_eq!(
            key.thumbprint(),
            "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s"
        );
    }

    #[test]
    fn keys_that_are_not_p256_pkcs8_do_not_load() {
        assert!(DpopKey::from_pkcs8(b"").is_err());
        assert!(DpopKey::from_pkcs8(&[0x30; 138]).is_err());
        let a = DpopKey::generate().expect("key");
        let b = DpopKey::generate().expect("key");
        assert_ne!(*a, *b, "a fresh key each time");
    }

    #[test]
    fn only_a_dpop_use_nonce_challenge_with_a_valid_nonce_is_a_nonce_challenge() {
        let with = |challenge: &str, nonce: Option<&str>| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::WWW_AUTHENTICATE,
                challenge.parse().expect("value"),
            );
            if let Some(n) = nonce {
                h.insert("dpop-nonce", n.parse().expect("value"));
            }
            resource_nonce_challenge(&h)
        };
        assert_eq!(
            with(
                r#"DPoP error="use_dpop_nonce", error_description="x""#,
                Some("abc")
            )
            .as_deref(),
            Some("abc")
        );
        assert_eq!(with(r#"DPoP error="use_dpop_nonce""#, None), None);
        assert_eq!(with(r#"DPoP error="invalid_token""#, Some("abc")), None);
        assert_eq!(with(r#"Bearer error="use_dpop_nonce""#, Some("abc")), None);
        assert_eq!(with(r#"DPoP error="use_dpop_nonce""#, Some("a\"b")), None);
        let long = "n".repeat(MAX_NONCE_LEN + 1);
        assert_eq!(with(r#"DPoP error="use_dpop_nonce""#, Some(&long)), None);
    }

    #[test]
    fn nonces_are_remembered_per_named_server_and_bounded() {
        let n = Nonces::default();
        n.remember("https://op.test/token", b"one");
        assert_eq!(n.get("https://op.test/token").as_deref(), Some("one"));
        assert_eq!(n.get("https://op.test/userinfo"), None, "another server");
        assert_eq!(n.get("https://api.test/token"), None);
        n.remember("https://op.test/token", b"bad\"nonce");
        assert_eq!(n.get("https://op.test/token").as_deref(), Some("one"));
        for i in 0..200 {
            n.remember(&format!("https://h{i}.test/"), b"x");
        }
        assert!(n.by_server.lock().expect("lock").len() <= MAX_REMEMBERED);
        assert_eq!(origin_of("http://127.0.0.1:9/a/b?c"), "http://127.0.0.1:9");
        assert_eq!(htu_of("http://h/a#b?c"), "http://h/a");
    }

    /// What DPoP adds per proxied request on a `dpop = true` route: signing
    /// one proof (the key is parsed once per opened session, see
    /// `Session::dpop`; before, every request also loaded it from PKCS#8:
    /// "load + proof"). A measurement, not a check:
    /// `cargo test --lib dpop_cost -- --ignored --nocapture` (build profile
    /// matters: run it with `--release` for production numbers).
    #[test]
    #[ignore = "a measurement"]
    fn dpop_cost_per_request() {
        let bytes = DpopKey::generate().expect("key");
        let n = 2000u32;
        let started = std::time::Instant::now();
        for _ in 0..n {
            let _ = DpopKey::generate().expect("key");
        }
        let generate = started.elapsed() / n;
        let started = std::time::Instant::now();
        for _ in 0..n {
            let key = DpopKey::from_pkcs8(&bytes).expect("loads");
            let _ = key
                .proof("GET", "https://api.test/x", 1, Some("nonce"), Some("token"))
                .expect("signs");
        }
        let per_request = started.elapsed() / n;
        let key = DpopKey::from_pkcs8(&bytes).expect("loads");
        let started = std::time::Instant::now();
        for _ in 0..n {
            let _ = key
                .proof("GET", "https://api.test/x", 1, Some("nonce"), Some("token"))
                .expect("signs");
        }
        let proof = started.elapsed() / n;
        println!(
            "PKCS#8 {} bytes; generate {generate:?}; load + proof (before) {per_request:?}; proof alone (now, per request) {proof:?}",
            bytes.len()
        );
    }
}
