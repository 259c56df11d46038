//! What an upstream is told about the user: identity headers built from the
//! session's claims (`[[routes]] identity_headers`) and the signed identity
//! assertion (`[[routes]] assertion`, keys in `[assertion]`) with the JWKS
//! that verifies it (`/.well-known/jwks.json`).
//!
//! Plain functions over claims, so every entry point (the proxy, forward
//! auth) builds the same headers. This module never decides *whether* a
//! request is forwarded (that is `authz` and the handlers) and never strips
//! the client's copies itself: it names them ([`names_to_strip`]) and
//! `proxy::headers` removes them from every request.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Map, Value, json};

use crate::authz::ClaimPath;
use crate::config::{AssertionConfig, RouteConfig};

/// The longest identity header value sent; a longer one is not sent at all
/// (cutting a list of groups would change what it says).
pub const MAX_VALUE_LEN: usize = 4096;

/// How long an assertion is valid: long enough for one request to reach its
/// upstream, short enough that a logged or replayed one is soon useless.
pub const ASSERTION_LIFETIME_SECS: u64 = 60;

/// The identity headers for `claims` under a route's `map`. A claim that is
/// missing, or whose value is not header-safe ([`header_value`]), gives no
/// header: the upstream sees the header absent, never a client-supplied
/// copy.
pub fn headers(
    map: &[(HeaderName, ClaimPath)],
    claims: &Map<String, Value>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(map.len());
    for (name, path) in map {
        let Some(value) = path.lookup(claims) else {
            continue;
        };
        match header_value(value) {
            Some(v) => out.push((name.clone(), v)),
            None => {
                tracing::warn!(header = %name, claim = %path, "claim is not header-safe; identity header not sent");
            }
        }
    }
    out
}

/// A claim as one header value: a string as is, an array's scalar elements
/// joined with `,`, a number or boolean as its JSON text. `None` when it is
/// not header-safe: a control character (tab and C1 controls such as
/// `U+0085` included), a comma inside a list element, longer than
/// [`MAX_VALUE_LEN`], or whitespace at either end (of the value or of a
/// list element) — a field value has
/// none (RFC 9110 §5.5), so the upstream would read `"admin "` as
/// `admin`, another user's name. The one rule for every header the gateway
/// makes from claims (routes' `identity_headers`, forward-auth's
/// `X-Auth-Request-*`).
pub fn header_value(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let mut joined = String::new();
            for (i, item) in items.iter().enumerate() {
                let s = match item {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                // A list reader splits on `,` and trims each element.
                if s.contains(',') || s.trim_matches([' ', '\t']) != s {
                    return None;
                }
                if i > 0 {
                    joined.push(',');
                }
                joined.push_str(&s);
            }
            joined
        }
        Value::Null | Value::Object(_) => return None,
    };
    if text.len() > MAX_VALUE_LEN
        || text.chars().any(char::is_control)
        || text.starts_with([' ', '\t'])
        || text.ends_with([' ', '\t'])
    {
        return None;
    }
    HeaderValue::from_str(&text)
        .or_else(|_| HeaderValue::from_bytes(text.as_bytes()))
        .ok()
}

/// Every header name that only the gateway may set: each route's identity
/// headers and the assertion's header. Removed from every client request on
/// every route, whether or not that route sets them.
pub fn names_to_strip(
    routes: &[RouteConfig],
    assertion: Option<&AssertionConfig>,
) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = routes
        .iter()
        .flat_map(|r| r.identity_headers.iter().map(|(n, _)| n.clone()))
        .chain(assertion.map(|a| a.header.clone()))
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// Why an assertion could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("the session has no subject")]
    NoSubject,
    #[error("signing failed")]
    Signing,
}

/// Signs identity assertions with the first key of `[assertion] keys` and
/// publishes every key's public half.
pub struct Signer {
    keys: Vec<(String, EcdsaKeyPair)>,
    issuer: String,
    header: HeaderName,
    claims: Vec<String>,
    rng: SystemRandom,
    jwks: String,
}

impl Signer {
    /// The ring of `config` (validated keys), issuing as `issuer`.
    pub fn new(config: &AssertionConfig, issuer: &str) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let mut keys = Vec::with_capacity(config.keys.len());
        let mut published = Vec::with_capacity(config.keys.len());
        for k in &config.keys {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &k.pkcs8, &rng)
                .map_err(|_| anyhow::anyhow!("assertion key {} is not a P-256 key", k.id))?;
            // Uncompressed SEC1 point: 0x04 || x || y.
            let point = pair.public_key().as_ref();
            let (x, y) = point
                .get(1..33)
                .zip(point.get(33..65))
                .ok_or_else(|| anyhow::anyhow!("assertion key {} has no P-256 point", k.id))?;
            published.push(json!({
                "kty": "EC",
                "crv": "P-256",
                "alg": "ES256",
                "use": "sig",
                "kid": k.id,
                "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y),
            }));
            keys.push((k.id.clone(), pair));
        }
        if keys.is_empty() {
            anyhow::bail!("[assertion] has no keys");
        }
        Ok(Self {
            keys,
            issuer: issuer.trim_end_matches('/').to_owned(),
            header: config.header.clone(),
            claims: config.claims.clone(),
            rng,
            jwks: json!({ "keys": published }).to_string(),
        })
    }

    /// The JWKS document served at `/.well-known/jwks.json`.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// The request header the assertion travels in.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// A compact ES256 JWS about the session's user, for `audience`, valid
    /// from `now` for [`ASSERTION_LIFETIME_SECS`].
    pub fn assertion(
        &self,
        audience: &str,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<HeaderValue, AssertionError> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(AssertionError::NoSubject)?;
        let (kid, pair) = self.keys.first().ok_or(AssertionError::Signing)?;
        let mut body = Map::new();
        for name in &self.claims {
            if let Some(v) = claims.get(name) {
                body.insert(name.clone(), v.clone());
            }
        }
        body.insert("iss".into(), json!(self.issuer));
        body.insert("sub".into(), json!(sub));
        body.insert("aud".into(), json!(audience));
        body.insert("iat".into(), json!(now));
        body.insert("exp".into(), json!(now + ASSERTION_LIFETIME_SECS));
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
        let mut jws = String::new();
        let _ = write!(
            jws,
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(body).to_string())
        );
        let sig = pair
            .sign(&self.rng, jws.as_bytes())
            .map_err(|_| AssertionError::Signing)?;
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        let mut v = HeaderValue::from_str(&jws).map_err(|_| AssertionError::Signing)?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// Everything a request to a route carries about its user: the identity
/// headers and, when the route asks for one (`audience`) and a signer is
/// configured, the assertion. The one function the proxy and forward-auth
/// both call.
pub fn for_upstream(
    map: &[(HeaderName, ClaimPath)],
    audience: Option<&str>,
    signer: Option<&Signer>,
    claims: &Map<String, Value>,
    now: u64,
) -> Result<Vec<(HeaderName, HeaderValue)>, AssertionError> {
    let mut out = headers(map, claims);
    if let (Some(aud), Some(signer)) = (audience, signer) {
        out.push((signer.header().clone(), signer.assertion(aud, claims, now)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Vec<(HeaderName, ClaimPath)> {
        pairs
            .iter()
            .map(|(h, c)| {
                (
                    HeaderName::from_bytes(h.as_bytes()).expect("name"),
                    ClaimPath::parse(c).expect("path"),
                )
            })
            .collect()
    }

    #[test]
    fn identity_headers_join_arrays_with_commas_and_skip_unsafe_values() {
        let claims = json!({
            "sub": "alice",
            "preferred_username": "alice",
            "groups": ["admin", "ops"],
            "realm_access": { "roles": ["r1"] },
            "evil": "alice\r\nX-Admin: 1",
            "comma": ["a,b", "c"],
            "long": "x".repeat(MAX_VALUE_LEN + 1),
            "name": "José",
        });
        let claims = claims.as_object().expect("object");
        let got = headers(
            &map(&[
                ("X-User", "preferred_username"),
                ("X-Groups", "groups"),
                ("X-Roles", "realm_access.roles"),
                ("X-Evil", "evil"),
                ("X-Comma", "comma"),
                ("X-Long", "long"),
                ("X-Missing", "missing"),
                ("X-Name", "name"),
            ]),
            claims,
        );
        let got: Vec<(String, Vec<u8>)> = got
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("x-user".to_owned(), b"alice".to_vec()),
                ("x-groups".to_owned(), b"admin,ops".to_vec()),
                ("x-roles".to_owned(), b"r1".to_vec()),
                ("x-name".to_owned(), "José".as_bytes().to_vec()),
            ]
        );
    }

    #[test]
    fn a_claim_with_whitespace_at_an_end_or_any_control_is_not_header_safe() {
        for bad in [
            json!("admin "),
            json!(" admin"),
            json!("admin\t"),
            json!("al\tice"),
            json!("alice\u{85}admin"),
            json!("alice\u{9b}"),
            json!(["admin ", "ops"]),
            json!("x".repeat(MAX_VALUE_LEN + 1)),
        ] {
            assert!(header_value(&bad).is_none(), "{bad}");
        }
        for good in [
            json!("alice smith"),
            json!("José"),
            json!(["a b", "c"]),
            json!(7),
        ] {
            assert!(header_value(&good).is_some(), "{good}");
        }
    }
}
