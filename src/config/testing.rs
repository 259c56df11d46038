//! Test helpers shared by the sections' unit tests: a minimal valid file
//! and a loader that writes it to a temporary file, so every test goes
//! through the same path as the gateway (file → environment → validation).

use super::{Config, ConfigErrors, load};

/// A valid 32-byte server key, base64.
pub(super) const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The smallest valid file; tests edit it into the case they need.
pub(super) fn minimal() -> String {
    format!(
        r#"
[server]
public_url = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "unit-test-secret"
[session]
encryption_keys = [{{ id = "k1", key = "{KEY}" }}]
[[routes]]
path = "/api"
upstream = "http://127.0.0.1:9100"
"#
    )
}

pub(super) fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let dir = std::env::temp_dir().join(format!("oidc-bff-cfg-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("c.toml");
    std::fs::write(&path, toml).expect("write");
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let r = load(Some(&path), env);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

pub(super) fn keys_of(err: ConfigErrors) -> Vec<String> {
    err.0.into_iter().map(|i| i.key).collect()
}
