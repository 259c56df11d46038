//! Which claims a session keeps: the user's, not the token's, and no more
//! than `oidc.max_claims` / `oidc.max_claims_bytes` of them. Pure functions
//! over claim maps, shared by login, refresh and `/auth/user`.

use serde_json::{Map, Value};

use crate::config::ProviderLimits;

/// A claim set over the configured bounds: the login or refresh fails
/// rather than storing (and later serving) it.
#[derive(Debug, thiserror::Error)]
pub enum ClaimsTooLarge {
    #[error("{count} claims, more than oidc.max_claims ({limit})")]
    Count { count: usize, limit: usize },
    #[error("{bytes} bytes of claims, more than oidc.max_claims_bytes ({limit})")]
    Bytes { bytes: usize, limit: usize },
}

/// The JSON kept in a session for `claims`, if within the bounds.
pub fn bounded_json(
    claims: &Map<String, Value>,
    limits: &ProviderLimits,
) -> Result<String, ClaimsTooLarge> {
    if claims.len() > limits.claims {
        return Err(ClaimsTooLarge::Count {
            count: claims.len(),
            limit: limits.claims,
        });
    }
    let json = Value::Object(claims.clone()).to_string();
    if json.len() > limits.claims_bytes {
        return Err(ClaimsTooLarge::Bytes {
            bytes: json.len(),
            limit: limits.claims_bytes,
        });
    }
    Ok(json)
}

/// Claims that describe the token, not the user: not kept in the session.
/// (`auth_time` and `acr` describe the login and are kept: step-up reads
/// them.)
const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "s_hash",
    "azp",
    "jti",
    "typ",
    "session_state",
];

pub fn strip_protocol_claims(mut claims: Map<String, Value>) -> Map<String, Value> {
    claims.retain(|k, _| !PROTOCOL_CLAIMS.contains(&k.as_str()));
    claims
}

/// Claims from a refreshed ID token, over the ones the session had.
/// The scopes granted to an access token, space-separated, from (in order)
/// the token response's `scope`, the access token's own `scope` or `scp`
/// claim when it is a JWT, or `fallback` (what was asked for at login, which
/// RFC 6749 §5.1 says an absent `scope` means; the previous scopes on
/// refresh, §6). The access token comes straight from the token endpoint,
/// so its payload is read as the response's own words, without verifying
/// its signature; nothing here comes from the browser.
pub fn granted_scopes(response_scope: Option<&str>, access_token: &str, fallback: &str) -> String {
    if let Some(s) = response_scope {
        return normalize_scopes(s);
    }
    let payload = access_token
        .split('.')
        .nth(1)
        .filter(|_| access_token.split('.').count() == 3);
    let from_jwt = payload
        .and_then(|p| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .and_then(
            |claims| match claims.get("scope").or_else(|| claims.get("scp")) {
                Some(Value::String(s)) => Some(normalize_scopes(s)),
                Some(Value::Array(a)) => Some(
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter(|s| !s.contains(' '))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            },
        );
    from_jwt.unwrap_or_else(|| normalize_scopes(fallback))
}

fn normalize_scopes(s: &str) -> String {
    s.split_ascii_whitespace()
        .filter(|t| !t.chars().any(char::is_control))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn merge_claims(old_json: &str, new: &Map<String, Value>) -> Map<String, Value> {
    let mut merged: Map<String, Value> = serde_json::from_str(old_json).unwrap_or_default();
    for (k, v) in strip_protocol_claims(new.clone()) {
        merged.insert(k, v);
    }
    merged
}

#[cfg(test)]
mod tests {
    #[test]
    fn granted_scopes_come_from_the_response_then_the_jwt_then_the_request() {
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = |payload: &str| format!("{}.{}.sig", b64("{}"), b64(payload));
        assert_eq!(
            super::granted_scopes(Some("read  write"), "opaque", "openid"),
            "read write"
        );
        assert_eq!(
            super::granted_scopes(None, &jwt(r#"{"scope":"api read"}"#), "openid"),
            "api read"
        );
        assert_eq!(
            super::granted_scopes(None, &jwt(r#"{"scp":["a","b"]}"#), "openid"),
            "a b"
        );
        assert_eq!(
            super::granted_scopes(None, "opaque", "openid email"),
            "openid email"
        );
        assert_eq!(super::granted_scopes(None, &jwt("{}"), "openid"), "openid");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn protocol_claims_are_not_kept_and_refresh_claims_override() {
        let c =
            json!({"sub": "a", "name": "A", "nonce": "n", "at_hash": "h", "exp": 1, "sid": "s"});
        let kept = strip_protocol_claims(c.as_object().cloned().unwrap_or_default());
        assert_eq!(
            Value::Object(kept),
            json!({"sub": "a", "name": "A", "sid": "s"})
        );
        let merged = merge_claims(
            r#"{"sub":"a","name":"Old"}"#,
            json!({"name": "New", "iat": 5}).as_object().expect("obj"),
        );
        assert_eq!(Value::Object(merged), json!({"sub": "a", "name": "New"}));
    }

    fn limits(claims: usize, claims_bytes: usize) -> ProviderLimits {
        ProviderLimits {
            response_bytes: 1 << 20,
            token_bytes: 1 << 14,
            claims_bytes,
            claims,
        }
    }

    #[test]
    fn claim_sets_over_either_bound_are_refused() {
        let small = json!({"sub": "a", "name": "A"});
        let small = small.as_object().expect("obj");
        assert!(bounded_json(small, &limits(2, 100)).is_ok());
        assert!(matches!(
            bounded_json(small, &limits(1, 100)),
            Err(ClaimsTooLarge::Count { count: 2, limit: 1 })
        ));
        let big = json!({"sub": "a", "pad": "x".repeat(2000)});
        assert!(matches!(
            bounded_json(big.as_object().expect("obj"), &limits(10, 1024)),
            Err(ClaimsTooLarge::Bytes { limit: 1024, .. })
        ));
    }
}
