//! A client for the provider fixture's test control API (`/__test/...`):
//! register clients, revoke grants, read counters, check access tokens.
//! Nothing here talks to the gateway.

use serde_json::Value;

use super::browser::no_redirects;
use super::shared;

/// The provider fixture's test control API.
pub struct ProviderApi {
    pub issuer: String,
    client: reqwest::Client,
}

impl ProviderApi {
    pub fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            client: no_redirects(),
        }
    }

    pub fn shared() -> Self {
        Self::new(&shared().provider.issuer)
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .client
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("provider api");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "provider {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.issuer))
            .send()
            .await
            .expect("provider api");
        r.json().await.expect("json")
    }

    pub async fn check_access_token(&self, token: &str) -> Value {
        self.post(
            "/__test/access-token/check",
            serde_json::json!({ "token": token }),
        )
        .await
    }
}
