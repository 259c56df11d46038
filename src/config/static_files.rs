//! `[static]`: the single-page app served on `/`, if any.

use std::path::PathBuf;

use http::HeaderValue;
use serde::{Deserialize, Serialize};

use super::common::Issues;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStatic {
    /// Directory of the single-page app to serve on `/` (unset: nothing).
    pub dir: Option<PathBuf>,
    /// Serve `index.html` for unknown paths without a file extension
    /// (client-side routes).
    pub spa_fallback: Option<bool>,
    /// The `Content-Security-Policy` of the app's HTML files. Unset: a
    /// baseline no single-page app needs to loosen ([`BASELINE_CSP`]);
    /// `""`: none.
    pub content_security_policy: Option<String>,
}

/// What the app's HTML gets unless `static.content_security_policy` says
/// otherwise: no `<base>` pointing elsewhere (which would re-root every
/// relative script URL after an HTML injection), no plugins, no framing
/// (as `X-Frame-Options: DENY`). Nothing a single-page app loads (scripts,
/// styles, `fetch`, inline code) is restricted, so no app breaks; an app
/// that knows its sources sets its full policy.
pub const BASELINE_CSP: &str = "base-uri 'self'; object-src 'none'; frame-ancestors 'none'";

#[derive(Debug, Clone)]
pub struct StaticConfig {
    pub dir: PathBuf,
    pub spa_fallback: bool,
    /// `None` when configured off (`""`).
    pub content_security_policy: Option<HeaderValue>,
}

pub(super) fn validate(raw: &RawStatic, issues: &mut Issues) -> Option<StaticConfig> {
    let dir = raw.dir.as_ref()?;
    if !dir.is_dir() {
        issues.add(
            "static.dir",
            format!("{} is not a directory", dir.display()),
        );
    }
    let policy = raw
        .content_security_policy
        .as_deref()
        .unwrap_or(BASELINE_CSP)
        .trim();
    let content_security_policy = if policy.is_empty() {
        None
    } else {
        match HeaderValue::from_str(policy) {
            Ok(v) if policy.is_ascii() => Some(v),
            _ => {
                issues.add(
                    "static.content_security_policy",
                    "must be one line of printable ASCII (a Content-Security-Policy header value), \
                     such as \"default-src 'self'\"; \"\" sends none",
                );
                None
            }
        }
    };
    Some(StaticConfig {
        dir: dir.clone(),
        spa_fallback: raw.spa_fallback.unwrap_or(true),
        content_security_policy,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn a_content_security_policy_that_is_no_header_value_is_reported() {
        let dir = std::env::temp_dir();
        for bad in ["default-src 'self'\\nX-Evil: 1", "default-src 'sélf'"] {
            let toml = minimal()
                + &format!(
                    "\n[static]\ndir = {:?}\ncontent_security_policy = \"{bad}\"\n",
                    dir.display().to_string()
                );
            let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
            assert_eq!(keys, ["static.content_security_policy"], "{bad}");
        }
    }

    #[test]
    fn a_missing_static_directory_is_reported() {
        let toml = minimal() + "\n[static]\ndir = \"/nonexistent/spa\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["static.dir"]);
    }
}
