//! `[csrf]`: the custom header every state-changing API call must carry,
//! which a cross-site form or simple request cannot send.

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::common::Issues;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCsrf {
    /// Header every state-changing API call must carry.
    pub header: String,
    /// Its required value.
    pub value: String,
}

impl Default for RawCsrf {
    fn default() -> Self {
        Self {
            header: "X-CSRF".into(),
            value: "1".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CsrfConfig {
    pub header: HeaderName,
    pub value: HeaderValue,
}

pub(super) fn validate(raw: &RawCsrf, issues: &mut Issues) -> CsrfConfig {
    let header = HeaderName::from_bytes(raw.header.as_bytes()).unwrap_or_else(|_| {
        issues.add(
            "csrf.header",
            format!("`{}` is not a valid header name", raw.header),
        );
        HeaderName::from_static("x-csrf")
    });
    // Headers a browser sends (or lets a page set) without a CORS preflight
    // prove nothing about where the request came from.
    if matches!(
        header.as_str(),
        "cookie" | "content-type" | "accept" | "origin" | "referer" | "authorization"
    ) {
        issues.add(
            "csrf.header",
            "must be a custom header that a cross-site form cannot send, e.g. \"X-CSRF\"",
        );
    }
    let value = HeaderValue::from_str(&raw.value)
        .ok()
        .filter(|_| !raw.value.is_empty())
        .unwrap_or_else(|| {
            issues.add("csrf.value", "must be a non-empty header value");
            HeaderValue::from_static("1")
        });
    CsrfConfig { header, value }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn a_header_browsers_send_on_their_own_is_refused_as_the_csrf_header() {
        let toml = minimal() + "\n[csrf]\nheader = \"Origin\"\nvalue = \"\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["csrf.header", "csrf.value"]);
    }
}
