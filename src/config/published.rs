//! Secrets this repository publishes (example, dev, compose and bench
//! configs, the docs): one table, and the rule that refuses them unless the
//! gateway is only reachable on this machine (`server.public_url` on a
//! loopback host), where the dev stacks use them on purpose.
//!
//! It checks the values written inline or set through `OIDC_BFF__*`
//! variables; it reads no file. A test scans the repository's examples so
//! a new sample secret cannot be added without landing in the table.

use url::Url;

use super::RawConfig;
use super::common::{Issues, decode_key, is_loopback_host};

/// Every sample secret in the repository, with the first file that shows
/// it (named in the message, so the operator recognises the copy).
pub(super) const PUBLISHED_SECRETS: &[(&str, &str)] = &[
    // Client secrets.
    ("change-me", "config/oidc-bff.example.toml"),
    ("oidc-bff-secret", "config/oidc-bff.dev.toml"),
    (
        "dev-only-oidc-bff-secret-cf1fd7fa4655237112731e6d1056b8a0",
        "config/oidc-bff.compose.toml",
    ),
    ("bench-secret", "bench/slowloris"),
    ("s3cret", "docs/configuration.md"),
    // Server encryption keys.
    (
        "bWFrZS15b3VyLW93bi1rZXktd2l0aC1vcGVuc3NsISE=",
        "config/oidc-bff.example.toml",
    ),
    (
        "jHvLReW8b7RY+LpEdHotJMvysU0HfIspvB9LXw+TCmw=",
        "config/oidc-bff.compose.toml",
    ),
    (
        "ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtZm9yLXJlYWw=",
        "config/oidc-bff.dev.toml",
    ),
    (
        "Zmxvb2Qta2V5LWZsb29kLWtleS1mbG9vZC1rZXktMDE=",
        "bench/login-flood",
    ),
    ("YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMDE=", "bench/run"),
    (
        "dXBncmFkZS1rZXktdXBncmFkZS1rZXktdXBncmFkZTA=",
        "scripts/upgrade-check",
    ),
    (
        "YnJvd3Nlci10ZXN0LWtleS1ub3QtZm9yLXJlYWwtdXM=",
        "tests/browser/e2e.mjs",
    ),
    ("c2hvcnQ=", "docs/configuration.md"),
    // The compose stack's Redis password.
    ("dev-redis-password", "docker-compose.yml"),
    // The compose stack's Keycloak admin password.
    ("admin", "docker-compose.yml"),
];

/// Where a published value came from, if `value` is one.
fn published(value: &str) -> Option<&'static str> {
    let value = value.trim();
    PUBLISHED_SECRETS
        .iter()
        .find(|(secret, _)| *secret == value)
        .map(|(_, file)| *file)
}

/// Refuses every inline secret this repository publishes, unless
/// `public_url` is a loopback origin (a dev stack on this machine).
pub(super) fn refuse_published_secrets(
    raw: &RawConfig,
    public_url: Option<&Url>,
    issues: &mut Issues,
) {
    if public_url.is_none_or(is_loopback_host) {
        return;
    }
    let mut check = |key: String, value: Option<&String>, generate: &str| {
        if let Some(file) = value.and_then(|v| published(v)) {
            issues.add(
                key,
                format!(
                    "is the sample value published in {file}, which anyone can read; \
                     generate a real one with `{generate}` (and prefer a *_file secret), \
                     or serve on localhost for a dev stack"
                ),
            );
        }
    };
    const KEY: &str = "openssl rand -base64 32";
    const SECRET: &str = "openssl rand -hex 32";
    check(
        "oidc.client_secret".into(),
        raw.oidc.client_secret.as_ref(),
        "register the client at the provider and use the secret it issues; or `openssl rand -hex 32`",
    );
    for (i, k) in raw.session.encryption_keys.iter().enumerate() {
        // A key of the wrong length is already refused as such.
        if k.key.as_deref().is_none_or(|v| decode_key(v).is_err()) {
            continue;
        }
        check(
            format!("session.encryption_keys[{i}].key"),
            k.key.as_ref(),
            KEY,
        );
    }
    check("store.password".into(), raw.store.password.as_ref(), SECRET);
    check(
        "store.sentinel_password".into(),
        raw.store.sentinel_password.as_ref(),
        SECRET,
    );
    check("admin.token".into(), raw.admin.token.as_ref(), SECRET);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::PUBLISHED_SECRETS;

    /// The files that show sample secrets: configs, compose, docs, benches,
    /// scripts and the browser test.
    fn example_files(root: &Path) -> Vec<std::path::PathBuf> {
        let mut files = vec![
            root.join("docker-compose.yml"),
            root.join("README.md"),
            root.join("Dockerfile"),
            root.join("tests/browser/e2e.mjs"),
            root.join("config/keycloak/demo-realm.json"),
        ];
        for dir in ["config", "docs", "bench", "scripts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().is_file() {
                    files.push(e.path());
                }
            }
        }
        files
    }

    /// The quoted value after `name = "`, `name: "` or `"name": "` on a
    /// line, and compose's `${VAR:-value}` defaults of a *PASSWORD/*SECRET
    /// variable.
    fn literals(text: &str) -> Vec<String> {
        const NAMES: &[&str] = &[
            "client_secret",
            "key",
            "password",
            "sentinel_password",
            "token",
            "secret",
        ];
        let mut found = Vec::new();
        for line in text.lines() {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            for name in NAMES {
                for sep in [
                    format!("{name} = \""),
                    format!("\"{name}\": \""),
                    format!("{name}: \""),
                ] {
                    let mut rest = line;
                    while let Some(at) = rest.find(&sep) {
                        // A whole word: `key = ` but not `monkey = `.
                        let before = rest[..at].chars().next_back();
                        rest = &rest[at + sep.len()..];
                        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                            continue;
                        }
                        if let Some(end) = rest.find('"') {
                            let value = &rest[..end];
                            // `[[routes]] token` names a kind of token, not one.
                            let kind =
                                matches!(value, "user" | "client" | "user_or_client" | "none");
                            if !(*name == "token" && kind) {
                                found.push(value.to_owned());
                            }
                        }
                    }
                }
            }
            for var in ["PASSWORD:-", "SECRET:-"] {
                let mut rest = line;
                while let Some(at) = rest.find(var) {
                    rest = &rest[at + var.len()..];
                    if let Some(end) = rest.find('}') {
                        found.push(rest[..end].to_owned());
                    }
                }
            }
        }
        // Placeholders and templated values are not secrets.
        found.retain(|v| {
            !v.is_empty()
                && !matches!(v.as_str(), "…" | "..." | "[redacted]")
                // `[[routes]] token = "client"` names a kind, not a secret.
                && !matches!(v.as_str(), "user" | "client" | "user_or_client" | "none")
                && !v.contains(['{', '$', '<'])
        });
        found
    }

    #[test]
    fn every_sample_secret_in_the_repository_is_in_the_table() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut missing = Vec::new();
        let mut seen = 0;
        for file in example_files(root) {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            for value in literals(&text) {
                seen += 1;
                if !PUBLISHED_SECRETS.iter().any(|(s, _)| *s == value) {
                    missing.push(format!("{}: {value}", file.display()));
                }
            }
        }
        assert!(seen >= 10, "the scan found only {seen} sample secrets");
        assert!(
            missing.is_empty(),
            "sample secrets missing from PUBLISHED_SECRETS:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn the_scan_finds_secrets_in_toml_json_and_compose_defaults() {
        let text = "client_secret = \"a\"\n  { id = \"x\", key = \"b\" },\n\"secret\": \"c\",\n\
                    X: ${REDIS_PASSWORD:-d}\n# password = \"...\"\nmonkey = \"no\"\n";
        assert_eq!(literals(text), vec!["a", "b", "c", "d"]);
    }

    fn load_example(replace: &[(&str, &str)]) -> Result<super::super::Config, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut text =
            std::fs::read_to_string(root.join("config/oidc-bff.example.toml")).expect("example");
        for (from, to) in replace {
            assert!(text.contains(from), "{from} is not in the example");
            text = text.replace(from, to);
        }
        super::super::testing::load_str(&text, &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn the_example_config_is_refused_until_its_sample_secrets_are_replaced() {
        let err = load_example(&[]).expect_err("the example's secrets are published");
        assert!(
            err.contains("oidc.client_secret: is the sample value"),
            "{err}"
        );
        assert!(
            err.contains("session.encryption_keys[0].key: is the sample value"),
            "{err}"
        );
        assert!(err.contains("openssl rand -base64 32"), "{err}");
        load_example(&[
            ("\"change-me\"", "\"a-secret-from-the-provider\""),
            (
                "bWFrZS15b3VyLW93bi1rZXktd2l0aC1vcGVuc3NsISE=",
                "Tm90LWEtcHVibGlzaGVkLWtleS1mb3ItdGhlLXRlc3Q=",
            ),
        ])
        .expect("valid once replaced");
    }

    #[test]
    fn sample_secrets_are_accepted_on_a_loopback_public_url() {
        for origin in [
            "http://localhost:8080",
            "http://127.0.0.2:8080",
            "http://[::1]:8080",
        ] {
            load_example(&[("https://app.example.com", origin)])
                .unwrap_or_else(|e| panic!("{origin}: {e}"));
        }
    }
}
