//! `[oidc.endpoints]` applied to a discovery document: each configured URL
//! replaces (or supplies) its field before the document is parsed, so a
//! provider whose discovery lacks or misstates an endpoint is used exactly
//! like one whose discovery is right, by every call that reads it.

use serde_json::Value;

use super::provider::ProviderError;
use crate::config::EndpointOverrides;

/// `body` with the configured endpoints written into it; unchanged when
/// none is configured.
pub fn apply(body: Vec<u8>, overrides: &EndpointOverrides) -> Result<Vec<u8>, ProviderError> {
    if overrides.0.is_empty() {
        return Ok(body);
    }
    let mut doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ProviderError::InvalidResponse(format!("discovery document: {e}")))?;
    let Some(fields) = doc.as_object_mut() else {
        return Err(ProviderError::InvalidResponse(
            "discovery document is not a JSON object".into(),
        ));
    };
    for (field, url) in &overrides.0 {
        fields.insert((*field).to_owned(), Value::String(url.to_string()));
    }
    serde_json::to_vec(&doc)
        .map_err(|e| ProviderError::InvalidResponse(format!("discovery document: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_endpoints_replace_or_supply_discovery_fields() {
        let doc = br#"{"issuer":"https://id.example.com","token_endpoint":"https://wrong.example.com/t"}"#;
        let overrides = EndpointOverrides(vec![
            (
                "token_endpoint",
                "https://id.example.com/token".parse().expect("url"),
            ),
            (
                "end_session_endpoint",
                "https://id.example.com/logout".parse().expect("url"),
            ),
        ]);
        let out: Value =
            serde_json::from_slice(&apply(doc.to_vec(), &overrides).expect("ok")).expect("json");
        assert_eq!(out["token_endpoint"], "https://id.example.com/token");
        assert_eq!(out["end_session_endpoint"], "https://id.example.com/logout");
        assert_eq!(out["issuer"], "https://id.example.com");
    }
}
