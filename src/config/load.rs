//! Layering: defaults → TOML file → `OIDC_BFF__*` environment variables
//! (through figment), then each section extracted on its own, with figment's
//! errors turned into issues named by key.
//!
//! The environment arrives as a list from the caller: this module never
//! reads the process environment, so tests run side by side.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use serde::de::DeserializeOwned;

use super::common::Issues;
use super::{ConfigErrors, ConfigIssue, RawConfig};

/// Environment variables with this prefix override file keys:
/// `OIDC_BFF__SECTION__KEY` sets `[section] key`.
pub const ENV_PREFIX: &str = "OIDC_BFF__";

/// The file (if any) under the variables among `env`; a missing file is
/// the one mistake reported on its own, since nothing else can be read.
pub(super) fn layers(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Figment, ConfigErrors> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.is_file() {
            return Err(ConfigErrors(vec![ConfigIssue {
                key: "--config".into(),
                message: format!(
                    "file {} does not exist or is not a file; pass the path of a TOML config \
                     (see config/oidc-bff.example.toml)",
                    path.display()
                ),
            }]));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    Ok(figment.merge(EnvVars::new(env)))
}

/// The merged sections with defaults filled in, or every unknown section,
/// unknown key and wrongly typed value.
pub(super) fn sections(figment: &Figment) -> Result<RawConfig, ConfigErrors> {
    let mut issues = Issues::default();
    // Unknown top-level sections and TOML syntax errors first.
    match figment.extract::<BTreeMap<String, Value>>() {
        Ok(top) => {
            const KNOWN: &[&str] = &[
                "server",
                "oidc",
                "session",
                "store",
                "csrf",
                "proxy",
                "routes",
                "static",
                "admin",
                "metrics",
                "log",
                "forward_auth",
            ];
            for key in top.keys() {
                if !KNOWN.contains(&key.as_str()) {
                    issues.add(
                        key.clone(),
                        format!("unknown section; expected one of {}", KNOWN.join(", ")),
                    );
                }
            }
        }
        Err(e) => {
            push_figment_errors(&mut issues, e, None);
            return Err(ConfigErrors(issues.0));
        }
    }

    // Each section is extracted on its own so that a mistake in one does not
    // hide mistakes in the others.
    let mut raw = RawConfig::default();
    section(figment, "server", &mut raw.server, &mut issues);
    section(figment, "oidc", &mut raw.oidc, &mut issues);
    section(figment, "session", &mut raw.session, &mut issues);
    section(figment, "store", &mut raw.store, &mut issues);
    section(figment, "csrf", &mut raw.csrf, &mut issues);
    section(figment, "proxy", &mut raw.proxy, &mut issues);
    section(figment, "routes", &mut raw.routes, &mut issues);
    section(figment, "static", &mut raw.static_files, &mut issues);
    section(figment, "admin", &mut raw.admin, &mut issues);
    section(figment, "metrics", &mut raw.metrics, &mut issues);
    section(figment, "log", &mut raw.log, &mut issues);
    section(figment, "forward_auth", &mut raw.forward_auth, &mut issues);
    if issues.0.is_empty() {
        Ok(raw)
    } else {
        Err(ConfigErrors(issues.0))
    }
}

fn section<T: DeserializeOwned>(figment: &Figment, name: &str, out: &mut T, issues: &mut Issues) {
    if !figment.contains(name) {
        return;
    }
    match figment.extract_inner::<T>(name) {
        Ok(value) => *out = value,
        Err(e) => push_figment_errors(issues, e, Some(name)),
    }
}

/// One issue per figment error, keyed `section.key[index].key` and naming
/// where the value came from (the file or an environment variable).
fn push_figment_errors(issues: &mut Issues, error: figment::Error, section: Option<&str>) {
    for mut e in error {
        // `extract_inner` appends the section after the inner path.
        if let Some(section) = section {
            if e.path.last().map(String::as_str) == Some(section) {
                e.path.pop();
            }
            e.path.insert(0, section.to_owned());
        }
        let mut key = String::new();
        for part in &e.path {
            if part.parse::<usize>().is_ok() {
                key.push_str(&format!("[{part}]"));
            } else {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(part);
            }
        }
        if key.is_empty() {
            key = "(file)".into();
        }
        let source = e
            .metadata
            .as_ref()
            .map(|m| match &m.source {
                Some(src) => format!(" (in {src})"),
                None => format!(" (in {})", m.name),
            })
            .unwrap_or_default();
        issues.add(key, format!("{}{source}", e.kind));
    }
}

/// A figment provider over an explicit list of environment variables.
struct EnvVars {
    dict: Dict,
}

impl EnvVars {
    fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut dict = Dict::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            if key.is_empty() {
                continue;
            }
            let value: Value = value.parse().unwrap_or_else(|never| match never {});
            if let Value::Dict(_, nested) = figment::util::nest(&key, value) {
                dict = merge_dicts(dict, nested);
            }
        }
        Self { dict }
    }
}

fn merge_dicts(mut into: Dict, from: Dict) -> Dict {
    for (k, v) in from {
        match (into.remove(&k), v) {
            (Some(Value::Dict(tag, a)), Value::Dict(_, b)) => {
                into.insert(k, Value::Dict(tag, merge_dicts(a, b)));
            }
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
    into
}

impl figment::Provider for EnvVars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable").interpolater(|_, keys: &[&str]| {
            format!(
                "{ENV_PREFIX}{}",
                keys.iter()
                    .map(|k| k.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            )
        })
    }

    fn data(&self) -> Result<Map<figment::Profile, Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.dict.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::StoreKind;
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn environment_overrides_the_file() {
        let c = load_str(
            &minimal(),
            &[
                ("OIDC_BFF__OIDC__CLIENT_ID", "from-env"),
                ("OIDC_BFF__SESSION__IDLE_TIMEOUT", "5m"),
                ("OIDC_BFF__STORE__DB", "3"),
                ("UNRELATED", "x"),
            ],
        )
        .expect("valid");
        assert_eq!(c.oidc.client_id, "from-env");
        assert_eq!(c.session.idle_timeout, Duration::from_secs(300));
        match c.store.kind {
            StoreKind::Redis(r) => assert_eq!(r.db, 3),
            StoreKind::Memory => panic!("expected redis"),
        }
    }

    #[test]
    fn type_errors_in_different_sections_are_all_reported() {
        let toml = minimal()
            + "\n[proxy]\nconnect_timeout = true\n[log]\naccess_log = \"yes\"\nbogus = 1\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        let keys = keys_of(err.clone());
        assert!(keys.contains(&"proxy.connect_timeout".to_string()), "{err}");
        assert!(keys.iter().any(|k| k.starts_with("log")), "{err}");
    }

    #[test]
    fn unknown_keys_and_sections_are_refused() {
        let toml = minimal() + "\n[sever]\nlisten = \"x\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, vec!["sever"]);
        let toml = minimal().replace("[oidc]\n", "[oidc]\nclient_secrett = \"x\"\n");
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert!(err.to_string().contains("client_secrett"), "{err}");
    }
}
