//! `[tracing]`: OpenTelemetry traces, exported over OTLP/HTTP (protobuf).
//! Off by default. The standard `OTEL_*` variables configure it too and win
//! over the file (the precedence is written once, in [`apply_otel_env`], and
//! in docs/configuration.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use url::Url;

use super::common::Issues;

/// The service name spans carry when none is configured.
pub const DEFAULT_SERVICE_NAME: &str = "oidc-bff";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTracing {
    /// Export traces. Setting `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` also turns them on;
    /// `OTEL_SDK_DISABLED=true` turns them off whatever the file says.
    pub enabled: bool,
    /// The collector's OTLP/HTTP base URL; spans go to `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// A full traces URL, used as written (like
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); wins over `endpoint`.
    pub traces_endpoint: Option<String>,
    /// `service.name` on every span.
    pub service_name: String,
    /// `always_on`, `always_off`, `traceidratio`, or the `parentbased_`
    /// form of each (the parent's decision is kept for a trusted parent).
    pub sampler: String,
    /// The ratio for the `traceidratio` samplers, 0.0 to 1.0.
    pub sampler_arg: f64,
    /// Extra headers on each export request (a collector's API key);
    /// redacted by `check-config`.
    pub headers: BTreeMap<String, String>,
}

impl Default for RawTracing {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://localhost:4318".into(),
            traces_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.into(),
            sampler: "parentbased_always_on".into(),
            sampler_arg: 1.0,
            headers: BTreeMap::new(),
        }
    }
}

/// Which spans are recorded: a ratio of new traces, and whether a
/// (trusted) parent's decision is followed instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    pub parent_based: bool,
    /// 0.0 (never) to 1.0 (always).
    pub ratio: f64,
}

/// Validated `[tracing]`: present only when traces are exported.
#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// The full URL spans are POSTed to.
    pub traces_endpoint: Url,
    pub service_name: String,
    pub sampler: Sampler,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Lays the standard OpenTelemetry variables over the file's `[tracing]`.
/// Precedence, highest first: `OTEL_SDK_DISABLED=true` (off);
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as written, turns tracing
/// on); `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL, turns tracing on);
/// `OTEL_SERVICE_NAME`; `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`;
/// `OTEL_EXPORTER_OTLP_HEADERS` (replaces the file's headers); then the
/// file (itself under `OIDC_BFF__TRACING__*`).
pub(super) fn apply_otel_env(raw: &mut RawTracing, env: &[(String, String)]) {
    let var = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        raw.endpoint = base;
        raw.traces_endpoint = None;
        raw.enabled = true;
    }
    if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        raw.traces_endpoint = Some(url);
        raw.enabled = true;
    }
    if let Some(name) = var("OTEL_SERVICE_NAME") {
        raw.service_name = name;
    }
    if let Some(sampler) = var("OTEL_TRACES_SAMPLER") {
        raw.sampler = sampler;
    }
    if let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") {
        // A bad number is reported against the file key it stands for.
        raw.sampler_arg = arg.parse().unwrap_or(f64::NAN);
    }
    if let Some(headers) = var("OTEL_EXPORTER_OTLP_HEADERS") {
        raw.headers = parse_header_list(&headers);
    }
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        raw.enabled = false;
    }
}

/// `key1=value1,key2=value2` (W3C Baggage-like, values percent-encoded),
/// as in `OTEL_EXPORTER_OTLP_HEADERS`. An entry without `=` becomes a
/// header with an empty name, which validation reports.
fn parse_header_list(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|entry| {
            let (k, v) = entry.split_once('=').unwrap_or(("", entry));
            let v = percent_encoding::percent_decode_str(v.trim()).decode_utf8_lossy();
            (k.trim().to_owned(), v.into_owned())
        })
        .collect()
}

pub(super) fn validate(raw: &RawTracing, issues: &mut Issues) -> Option<TracingConfig> {
    let sampler = sampler(raw, issues);
    let traces_endpoint = match &raw.traces_endpoint {
        Some(url) => endpoint_url(issues, "tracing.traces_endpoint", url),
        None => endpoint_url(issues, "tracing.endpoint", &raw.endpoint).and_then(|base| {
            // The OTLP rule: the signal path is appended to the base URL.
            let joined = format!("{}/v1/traces", base.as_str().trim_end_matches('/'));
            Url::parse(&joined).ok()
        }),
    };
    if raw.service_name.trim().is_empty() {
        issues.add(
            "tracing.service_name",
            "is empty; name the service, e.g. \"oidc-bff\"",
        );
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in &raw.headers {
        let key = format!("tracing.headers.{name}");
        match (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                headers.push((n, v));
            }
            (Err(_), _) => issues.add(
                key,
                "is not a header name; write name=value pairs (OTEL_EXPORTER_OTLP_HEADERS: \
                 \"api-key=...,other=...\")",
            ),
            (_, Err(_)) => issues.add(key, "holds characters a header value cannot carry"),
        }
    }
    if !raw.enabled {
        return None;
    }
    Some(TracingConfig {
        traces_endpoint: traces_endpoint?,
        service_name: raw.service_name.trim().to_owned(),
        sampler: sampler?,
        headers,
    })
}

fn endpoint_url(issues: &mut Issues, key: &str, text: &str) -> Option<Url> {
    let text = &super::common::shown_url(text);
    match Url::parse(text) {
        Ok(u) if let Some(part) = super::common::url_extra(&u, true) => {
            issues.add(
                key,
                format!("`{text}` must not contain {part}; a collector's credentials go in tracing.headers"),
            );
            None
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(_) => {
            issues.add(
                key,
                format!(
                    "`{text}` is not an http(s) URL; write e.g. \"http://otel-collector:4318\""
                ),
            );
            None
        }
        Err(e) => {
            issues.add(
                key,
                super::common::not_a_url(text, e, "http://otel-collector:4318"),
            );
            None
        }
    }
}

fn sampler(raw: &RawTracing, issues: &mut Issues) -> Option<Sampler> {
    let (parent_based, kind) = match raw.sampler.strip_prefix("parentbased_") {
        Some(kind) => (true, kind),
        None => (false, raw.sampler.as_str()),
    };
    let ratio = match kind {
        "always_on" => 1.0,
        "always_off" => 0.0,
        "traceidratio" => {
            if !(0.0..=1.0).contains(&raw.sampler_arg) {
                issues.add(
                    "tracing.sampler_arg",
                    "must be a ratio from 0.0 to 1.0 (OTEL_TRACES_SAMPLER_ARG too), e.g. 0.1",
                );
                return None;
            }
            raw.sampler_arg
        }
        other => {
            issues.add(
                "tracing.sampler",
                format!(
                    "`{other}` is not a sampler; write always_on, always_off, traceidratio or \
                     the parentbased_ form of one"
                ),
            );
            return None;
        }
    };
    Some(Sampler {
        parent_based,
        ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};
    use super::Sampler;

    #[test]
    fn tracing_is_off_unless_asked_for() {
        let config = load_str(&minimal(), &[]).expect("valid");
        assert!(config.tracing.is_none());
    }

    #[test]
    fn the_file_turns_tracing_on_with_the_otlp_traces_path_appended() {
        let toml = minimal()
            + "\n[tracing]\nenabled = true\nendpoint = \"http://collector:4318/\"\n\
               sampler = \"traceidratio\"\nsampler_arg = 0.25\n";
        let t = load_str(&toml, &[]).expect("valid").tracing.expect("on");
        assert_eq!(
            t.traces_endpoint.as_str(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(t.service_name, "oidc-bff");
        assert_eq!(
            t.sampler,
            Sampler {
                parent_based: false,
                ratio: 0.25
            }
        );
    }

    #[test]
    fn otel_variables_win_over_the_file() {
        let toml = minimal()
            + "\n[tracing]\nendpoint = \"http://file:4318\"\nservice_name = \"from-file\"\n\
               headers = { \"x-file\" = \"1\" }\n";
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%20def,x-other=2"),
        ];
        let t = load_str(&toml, &env).expect("valid").tracing.expect("on");
        assert_eq!(t.traces_endpoint.as_str(), "http://env:4318/v1/traces");
        assert_eq!(t.service_name, "from-env");
        assert_eq!(
            t.sampler,
            Sampler {
                parent_based: true,
                ratio: 0.5
            }
        );
        let names: Vec<_> = t.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["api-key", "x-other"],
            "the file's headers are replaced"
        );
        assert_eq!(t.headers[0].1, "abc def");

        // The signal-specific URL is used as written and wins over the base.
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:9999/custom",
            ),
        ];
        let t = load_str(&minimal(), &env)
            .expect("valid")
            .tracing
            .expect("on");
        assert_eq!(t.traces_endpoint.as_str(), "http://traces:9999/custom");
    }

    #[test]
    fn otel_sdk_disabled_turns_tracing_off_whatever_else_says_on() {
        let toml = minimal() + "\n[tracing]\nenabled = true\n";
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert!(load_str(&toml, &env).expect("valid").tracing.is_none());
    }

    #[test]
    fn bad_tracing_keys_are_named() {
        let toml = minimal()
            + "\n[tracing]\nenabled = true\nendpoint = \"collector:4318\"\n\
               sampler = \"sometimes\"\nservice_name = \" \"\nheaders = { \"bad name\" = \"x\" }\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(
            keys,
            [
                "tracing.sampler",
                "tracing.endpoint",
                "tracing.service_name",
                "tracing.headers.bad name"
            ]
        );
        let keys = keys_of(
            load_str(
                &minimal(),
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "lots"),
                ],
            )
            .expect_err("invalid"),
        );
        assert_eq!(keys, ["tracing.sampler_arg"]);
    }

    #[test]
    fn check_config_prints_export_headers_redacted() {
        let mut raw = super::super::RawConfig::default();
        raw.tracing
            .headers
            .insert("api-key".into(), "collector-secret-4711".into());
        let printed = raw.to_redacted_toml();
        assert!(printed.contains("api-key"), "{printed}");
        assert!(!printed.contains("collector-secret-4711"), "{printed}");
    }

    #[test]
    fn unknown_tracing_keys_are_refused() {
        let toml = minimal() + "\n[tracing]\nenabeld = true\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert!(err.to_string().contains("enabled"), "{err}");
    }
}
