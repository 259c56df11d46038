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
    "auth_time",
    "typ",
    "session_state",
];

pub fn strip_protocol_claims(mut claims: Map<String, Value>) -> Map<String, Value> {
    claims.retain(|k, _| !PROTOCOL_CLAIMS.contains(&k.as_str()));
    claims
}

/// Claims from a refreshed ID token, over the ones the session had.
pub fn merge_claims(old_json: &str, new: &Map<String, Value>) -> Map<String, Value> {
    let mut merged: Map<String, Value> = serde_json::from_str(old_json).unwrap_or_default();
    for (k, v) in strip_protocol_claims(new.clone()) {
        merged.insert(k, v);
    }
    merged
}

#[cfg(test)]
mod tests {
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
