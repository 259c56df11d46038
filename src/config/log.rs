//! `[log]`: log format, filter and the per-request access log.

use serde::{Deserialize, Serialize};

use super::common::Issues;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `oidc_bff=debug,info`.
    pub level: String,
    /// One INFO line per request (method, path, status, latency).
    pub access_log: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
            access_log: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

pub(super) fn validate(raw: &RawLog, issues: &mut Issues) -> LogConfig {
    let format = match raw.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            issues.add(
                "log.format",
                format!("`{other}` must be \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    // Checked here because telemetry falls back to `info` on a bad filter,
    // which would hide the typo.
    if tracing_subscriber::EnvFilter::try_new(&raw.level).is_err() {
        issues.add(
            "log.level",
            format!(
                "`{}` is not a log filter; write e.g. \"info\" or \"oidc_bff=debug,info\"",
                raw.level
            ),
        );
    }
    LogConfig {
        format,
        level: raw.level.clone(),
        access_log: raw.access_log,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn an_unparsable_log_filter_is_reported() {
        let toml = minimal() + "\n[log]\nlevel = \"=,[[\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["log.level"]);
    }
}
