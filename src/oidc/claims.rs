//! Which claims a session keeps: the user's, not the token's. Pure
//! functions over claim maps, shared by login and refresh.

use serde_json::{Map, Value};

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
pub fn merge_claims(old_json: &str, new: &Map<String, Value>) -> String {
    let mut merged: Map<String, Value> = serde_json::from_str(old_json).unwrap_or_default();
    for (k, v) in strip_protocol_claims(new.clone()) {
        merged.insert(k, v);
    }
    Value::Object(merged).to_string()
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
        assert_eq!(
            serde_json::from_str::<Value>(&merged).expect("json"),
            json!({"sub": "a", "name": "New"})
        );
    }
}
