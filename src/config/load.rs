//! Layering: defaults → TOML file → `OIDC_BFF__*` environment variables
//! (through figment), then each section extracted on its own, with figment's
//! errors turned into issues named by key.
//!
//! The environment arrives as a list from the caller: this module never
//! reads the process environment, so tests run side by side.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
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

/// What the sources hold: the merged sections with defaults filled in, and
/// the unknown sections and keys, each reported with the nearest known name
/// and then dropped, so that a typo does not hide the other mistakes.
pub(super) struct Sections {
    pub(super) raw: RawConfig,
    pub(super) unknown: Vec<ConfigIssue>,
}

/// The sections, or every wrongly typed value (with the unknown keys found
/// on the way): a section that cannot be read is not validated.
pub(super) fn sections(figment: &Figment) -> Result<Sections, ConfigErrors> {
    let mut unknown = Issues::default();
    let mut issues = Issues::default();
    // Unknown top-level sections and TOML syntax errors first.
    match figment.extract::<BTreeMap<String, Value>>() {
        Ok(top) => {
            for key in top.keys() {
                if !SECTIONS.contains(&key.as_str()) {
                    unknown.add(key.clone(), unknown_message("section", key, SECTIONS));
                }
            }
        }
        Err(e) => {
            push_figment_errors(figment, &mut issues, e, None);
            return Err(ConfigErrors(issues.0));
        }
    }

    // Each section is extracted on its own so that a mistake in one does not
    // hide mistakes in the others.
    let mut raw = RawConfig::default();
    let mut read = Reader {
        figment,
        unknown: &mut unknown,
        issues: &mut issues,
    };
    read.section("server", &mut raw.server);
    read.section("oidc", &mut raw.oidc);
    read.section("session", &mut raw.session);
    read.section("store", &mut raw.store);
    read.section("csrf", &mut raw.csrf);
    read.section("proxy", &mut raw.proxy);
    read.section("routes", &mut raw.routes);
    read.section("static", &mut raw.static_files);
    read.section("admin", &mut raw.admin);
    read.section("metrics", &mut raw.metrics);
    read.section("log", &mut raw.log);
    read.section("audit", &mut raw.audit);
    read.section("assertion", &mut raw.assertion);
    read.section("forward_auth", &mut raw.forward_auth);
    read.section("tracing", &mut raw.tracing);
    if issues.0.is_empty() {
        Ok(Sections {
            raw,
            unknown: unknown.0,
        })
    } else {
        let mut all = unknown.0;
        all.append(&mut issues.0);
        Err(ConfigErrors(all))
    }
}

/// The top-level tables of the file.
const SECTIONS: &[&str] = &[
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
    "audit",
    "assertion",
    "forward_auth",
    "tracing",
];

/// A section has a few dozen keys at most; more unknown ones than this in
/// one section is not a file of typos, so the rest are left to serde.
const MAX_UNKNOWN_PER_SECTION: usize = 64;

/// "unknown key; did you mean `issuer`?" followed by the names it could be.
fn unknown_message(what: &str, name: &str, known: &[&str]) -> String {
    let hint = match super::common::closest(name, known) {
        Some(k) => format!("; did you mean `{k}`?"),
        None => String::new(),
    };
    format!(
        "unknown {what}{hint} (expected one of: {})",
        known.join(", ")
    )
}

struct Reader<'a> {
    figment: &'a Figment,
    unknown: &'a mut Issues,
    issues: &'a mut Issues,
}

impl Reader<'_> {
    /// Reads one section; each unknown key serde refuses is reported, taken
    /// out of a copy of the section and the copy read again, so the
    /// section's other keys are still read and validated.
    fn section<T: DeserializeOwned>(&mut self, name: &str, out: &mut T) {
        let Ok(mut value) = self.figment.find_value(name) else {
            return;
        };
        for _ in 0..MAX_UNKNOWN_PER_SECTION {
            let copy = Figment::from(Serialized::default(name, &value));
            let error = match copy.extract_inner::<T>(name) {
                Ok(v) => {
                    *out = v;
                    return;
                }
                Err(e) => e,
            };
            if let Some((path, field, expected)) = unknown_field(&error, name)
                && remove(&mut value, &path, &field)
            {
                let mut full = path;
                full.push(field.clone());
                self.unknown.add(
                    key_of(name, &full),
                    unknown_message("key", &field, expected),
                );
                continue;
            }
            push_figment_errors(self.figment, self.issues, error, Some(name));
            return;
        }
    }
}

/// The first error, if it is an unknown field: the path of the table it is
/// in (relative to the section), its name and the names serde expected.
fn unknown_field(
    error: &figment::Error,
    section: &str,
) -> Option<(Vec<String>, String, &'static [&'static str])> {
    let first = error.clone().into_iter().next()?;
    let figment::error::Kind::UnknownField(field, expected) = first.kind else {
        return None;
    };
    // The path ends with the unknown field itself.
    let mut path = relative_path(first.path, section);
    if path.last() == Some(&field) {
        path.pop();
    }
    Some((path, field, expected))
}

/// `extract_inner` reports paths with the section name appended; this is
/// the path inside the section.
fn relative_path(mut path: Vec<String>, section: &str) -> Vec<String> {
    if path.last().map(String::as_str) == Some(section) {
        path.pop();
    }
    if path.first().map(String::as_str) == Some(section) {
        path.remove(0);
    }
    path
}

/// Removes `field` from the table at `path` inside `value`; false if it is
/// not there (then serde's error is reported as it is).
fn remove(value: &mut Value, path: &[String], field: &str) -> bool {
    let mut at = value;
    for part in path {
        at = match at {
            Value::Dict(_, d) => match d.get_mut(part) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(_, a) => match part.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        Value::Dict(_, d) => d.remove(field).is_some(),
        _ => false,
    }
}

/// `section.key[index].key`, the way the reference names keys.
fn key_of(section: &str, path: &[String]) -> String {
    let mut key = section.to_owned();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            key.push('.');
            key.push_str(part);
        }
    }
    key
}

/// One issue per figment error, keyed `section.key[index].key` and naming
/// where the value came from (the file or an environment variable).
fn push_figment_errors(
    figment: &Figment,
    issues: &mut Issues,
    error: figment::Error,
    section: Option<&str>,
) {
    for e in error {
        let (key, source) = match section {
            // A section is read from a copy, whose errors know no source:
            // the original layers say which one set the key.
            Some(section) => {
                let path = relative_path(e.path.clone(), section);
                let mut dotted = vec![section.to_owned()];
                dotted.extend(path.iter().cloned());
                (key_of(section, &path), source_of(figment, &dotted))
            }
            None => {
                let key = match e.path.split_first() {
                    Some((first, rest)) => key_of(first, rest),
                    None => "(file)".into(),
                };
                let source = e.metadata.as_ref().map(describe).unwrap_or_default();
                (key, source)
            }
        };
        let message = readable(&e.kind, &key);
        issues.add(key, format!("{message}{source}"));
    }
}

/// figment's message, except where it nests backticks in backticks, or
/// names a Rust type where a writer of TOML needs words and an example.
fn readable(kind: &figment::error::Kind, key: &str) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value `{found}`; expected one of: {}",
                expected.join(", ")
            )
        }
        Kind::UnknownField(found, expected) => unknown_message("key", found, expected),
        Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => {
            // A secret written with the wrong type (a numeric client
            // secret unquoted) must not be printed back by `check-config`.
            let found = if holds_secret(key) {
                "a value not shown here (the key holds a secret)".to_owned()
            } else {
                found.to_string()
            };
            format!("expected {}", in_words(expected, key, &found))
        }
        other => other.to_string(),
    }
}

/// Whether `key` (`section.name`, `routes[0].name`) holds a secret or may
/// (a password, a client secret, a token, an encryption key, the OTLP
/// exporter's headers), so that an error about its value never repeats it.
fn holds_secret(key: &str) -> bool {
    let name = key.rsplit('.').next().unwrap_or(key);
    let name = name.split('[').next().unwrap_or(name);
    matches!(name, "key" | "headers")
        || ["secret", "password", "token"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// What serde's name of an expected type means to someone writing TOML or
/// a variable, what was found, and how to write it; the example variable
/// is `key`'s own where a variable can set it (not an element of an array).
fn in_words(expected: &str, key: &str, found: &str) -> String {
    const INTEGERS: [&str; 12] = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
    ];
    let var = (!key.contains(['[', '(', ' ']))
        .then(|| format!("OIDC_BFF__{}", key.replace('.', "__").to_ascii_uppercase()));
    let in_var = |example: &str| match &var {
        Some(var) => format!("; as an environment variable: {var}='{example}'"),
        None => String::new(),
    };
    if INTEGERS.contains(&expected) {
        let wanted = if expected.starts_with('u') {
            "a whole number of at least 0"
        } else {
            "a whole number"
        };
        return format!("{wanted}, found {found}; write digits only, without quotes: e.g. 100");
    }
    match expected {
        "a boolean" => format!("true or false, found {found}; write true or false, without quotes"),
        "a string" => format!(
            "a string, found {found}; put the value in double quotes{}",
            in_var("\"value\"")
        ),
        "a sequence" => format!(
            "an array, found {found}; write the whole array, e.g. [\"a\", \"b\"]{}",
            in_var("[\"a\",\"b\"]")
        ),
        "a map" => format!(
            "a table, found {found}; write the whole table, e.g. {{ name = \"value\" }}{}",
            in_var("{name=\"value\"}")
        ),
        other if other.starts_with("struct ") => format!(
            "a table, found {found}; write a table of the keys docs/configuration.md lists for it{}",
            in_var("{key=\"value\"}")
        ),
        other => format!("{other}, found {found}; docs/configuration.md gives the key's type"),
    }
}

/// " (in <file or variable>)" for the deepest part of `path` some layer set.
fn source_of(figment: &Figment, path: &[String]) -> String {
    (1..=path.len())
        .rev()
        .find_map(|n| figment.find_metadata(&path[..n].join(".")))
        .map(describe)
        .unwrap_or_default()
}

fn describe(m: &figment::Metadata) -> String {
    match &m.source {
        Some(src) => format!(" (in {src})"),
        None => format!(" (in {})", m.name),
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
    use super::super::testing::{KEY, keys_of, load_str, minimal};

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
    fn a_value_of_the_wrong_type_is_named_in_words_with_how_to_write_it() {
        let cases = [
            (
                "OIDC_BFF__SERVER__MAX_CONNECTIONS",
                "abc",
                "server.max_connections",
                "expected a whole number of at least 0, found string \"abc\"; write digits only",
            ),
            (
                "OIDC_BFF__SERVER__MAX_CONNECTIONS",
                "-1",
                "server.max_connections",
                "expected a whole number of at least 0, found signed int `-1`",
            ),
            (
                "OIDC_BFF__OIDC__SCOPES",
                "openid email",
                "oidc.scopes",
                "expected an array, found string \"openid email\"; write the whole array, e.g. \
                 [\"a\", \"b\"]; as an environment variable: OIDC_BFF__OIDC__SCOPES='[\"a\",\"b\"]'",
            ),
            (
                "OIDC_BFF__SERVER__TRUST_FORWARDED_HEADERS",
                "yes",
                "server.trust_forwarded_headers",
                "expected true or false, found string \"yes\"",
            ),
            (
                "OIDC_BFF__OIDC__CLIENT_ID",
                "12345",
                "oidc.client_id",
                "expected a string, found unsigned int `12345`; put the value in double quotes; as \
                 an environment variable: OIDC_BFF__OIDC__CLIENT_ID='\"value\"'",
            ),
        ];
        let err = load_str(
            &minimal(),
            &[("OIDC_BFF__OIDC__CLIENT_SECRET", "918273645")],
        )
        .expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("oidc.client_secret: expected a string, found a value not shown here"),
            "{text}"
        );
        assert!(
            !text.contains("918273645"),
            "the secret was printed back: {text}"
        );
        for (var, value, key, message) in cases {
            let err = load_str(&minimal(), &[(var, value)]).expect_err("invalid");
            let text = err.to_string();
            assert_eq!(keys_of(err), vec![key], "{text}");
            assert!(text.contains(message), "{var}={value}: {text}");
            assert!(text.contains("(in environment variable"), "{text}");
            assert!(
                !text.contains("usize") && !text.contains("sequence"),
                "{text}"
            );
        }
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

    #[test]
    fn a_typo_a_missing_issuer_and_a_short_key_are_reported_together() {
        let toml = minimal()
            .replace("issuer = ", "isuer = ")
            .replace(KEY, "MDEyMzQ1Njc4OQ=="); // 10 bytes
        let err = load_str(&toml, &[]).expect_err("invalid");
        let text = err.to_string();
        assert_eq!(
            keys_of(err),
            vec![
                "oidc.isuer",
                "oidc.issuer",
                "session.encryption_keys[0].key"
            ],
            "{text}"
        );
        assert!(text.contains("did you mean `issuer`?"), "{text}");
        assert!(!text.contains("``"), "nested backticks: {text}");
    }

    #[test]
    fn unknown_keys_in_nested_tables_are_named_with_their_index() {
        let toml = minimal().replace("upstream = ", "upstreem = \"x\"\nupstream = ");
        let err = load_str(&toml, &[]).expect_err("invalid");
        let text = err.to_string();
        assert_eq!(keys_of(err), vec!["routes[0].upstreem"], "{text}");
        assert!(text.contains("did you mean `upstream`?"), "{text}");
    }

    #[test]
    fn an_unknown_section_suggests_the_nearest_one() {
        let toml = minimal() + "\n[sever]\nlisten = \"x\"\n";
        let text = load_str(&toml, &[]).expect_err("invalid").to_string();
        assert!(text.contains("did you mean `server`?"), "{text}");
    }

    #[test]
    fn a_url_without_a_scheme_says_what_is_expected() {
        let toml = minimal().replace("\"https://app.example.com\"", "\"app.example.com\"");
        let text = load_str(&toml, &[]).expect_err("invalid").to_string();
        assert!(!text.contains("relative URL without a base"), "{text}");
        assert!(text.contains("no scheme such as https://"), "{text}");
    }

    #[test]
    fn a_type_error_still_names_the_file_it_came_from() {
        let toml = minimal() + "\n[proxy]\nconnect_timeout = true\n";
        let text = load_str(&toml, &[]).expect_err("invalid").to_string();
        assert!(text.contains("c.toml"), "{text}");
    }
}
