//! `[audit]`: where the audit trail (`crate::audit`) is written, if anywhere.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::common::Issues;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// `off` (the default), `stdout`, `stderr`, or a file path (appended to;
    /// opened at start-up).
    pub output: String,
    /// Events waiting for the writer at most; beyond this, new events are
    /// dropped and counted (`oidc_bff_audit_events_dropped_total`) rather
    /// than slowing requests down.
    pub queue: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            output: "off".into(),
            queue: DEFAULT_QUEUE,
        }
    }
}

/// `audit.queue` when not set: a few seconds of a busy gateway's events.
pub const DEFAULT_QUEUE: usize = 10_000;
/// The largest `audit.queue` accepted (each waiting event is a few hundred bytes).
const MAX_QUEUE: usize = 1_000_000;

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    Off,
    Stdout,
    Stderr,
    /// Appended to; created if missing.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub output: AuditOutput,
    pub queue: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            output: AuditOutput::Off,
            queue: DEFAULT_QUEUE,
        }
    }
}

pub(super) fn validate(raw: &RawAudit, issues: &mut Issues) -> AuditConfig {
    let output = match raw.output.trim() {
        "off" => AuditOutput::Off,
        "stdout" => AuditOutput::Stdout,
        "stderr" => AuditOutput::Stderr,
        "" => {
            issues.add(
                "audit.output",
                "is empty; write \"off\", \"stdout\", \"stderr\" or a file path such as \"/var/log/oidc-bff/audit.jsonl\"",
            );
            AuditOutput::Off
        }
        path if path.ends_with('/') => {
            issues.add(
                "audit.output",
                format!("`{path}` names a directory; name a file such as \"{path}audit.jsonl\""),
            );
            AuditOutput::Off
        }
        path => AuditOutput::File(PathBuf::from(path)),
    };
    if !(1..=MAX_QUEUE).contains(&raw.queue) {
        issues.add(
            "audit.queue",
            format!(
                "{} is out of range; write a number of events from 1 to {MAX_QUEUE} (default {DEFAULT_QUEUE})",
                raw.queue
            ),
        );
    }
    AuditConfig {
        output,
        queue: raw.queue.clamp(1, MAX_QUEUE),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};
    use super::*;

    #[test]
    fn audit_is_off_unless_an_output_is_named() {
        let c = load_str(&minimal(), &[]).expect("valid");
        assert_eq!(c.audit.output, AuditOutput::Off);
        let toml = minimal() + "\n[audit]\noutput = \"/var/log/audit.jsonl\"\n";
        let c = load_str(&toml, &[]).expect("valid");
        assert_eq!(
            c.audit.output,
            AuditOutput::File(PathBuf::from("/var/log/audit.jsonl"))
        );
        let toml = minimal() + "\n[audit]\noutput = \"stderr\"\n";
        assert_eq!(
            load_str(&toml, &[]).expect("valid").audit.output,
            AuditOutput::Stderr
        );
    }

    #[test]
    fn an_empty_output_a_directory_and_a_zero_queue_are_reported() {
        let toml = minimal() + "\n[audit]\noutput = \"\"\nqueue = 0\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["audit.output", "audit.queue"]);
        let toml = minimal() + "\n[audit]\noutput = \"/var/log/\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["audit.output"]);
    }

    #[test]
    fn an_unknown_audit_key_is_refused() {
        let toml = minimal() + "\n[audit]\nouptut = \"stdout\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["audit.ouptut"]);
    }
}
