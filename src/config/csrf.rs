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

/// CORS-safelisted request headers (Fetch §2.2.2, with the client hints
/// browsers have safelisted): a page on any site may set them on a
/// cross-site request without a preflight.
const SAFELISTED: &[&str] = &[
    "accept",
    "accept-language",
    "content-language",
    "content-type",
    "range",
    "dpr",
    "downlink",
    "save-data",
    "viewport-width",
    "width",
];

/// Headers the browser controls (Fetch "forbidden request-header names")
/// or sends by itself, and credentials and method overrides: none of them
/// tells a same-origin call from a cross-site one.
const BROWSER_CONTROLLED: &[&str] = &[
    "accept-charset",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "access-control-request-private-network",
    "authorization",
    "connection",
    "content-length",
    "cookie",
    "cookie2",
    "date",
    "dnt",
    "expect",
    "host",
    "keep-alive",
    "origin",
    "priority",
    "referer",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
    "x-http-method",
    "x-http-method-override",
    "x-method-override",
];

/// Whether a header name is useless as the anti-CSRF header (see
/// [`SAFELISTED`], [`BROWSER_CONTROLLED`]; plus every `sec-*` and `proxy-*`
/// name, which only the browser may set).
fn proves_nothing(name: &str) -> bool {
    SAFELISTED.contains(&name)
        || BROWSER_CONTROLLED.contains(&name)
        || name.starts_with("sec-")
        || name.starts_with("proxy-")
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
    if proves_nothing(header.as_str()) {
        issues.add(
            "csrf.header",
            format!(
                "`{}` is sent by browsers on their own or allowed cross-site without a CORS preflight, so it proves nothing; use a custom header such as \"X-CSRF\"",
                raw.header
            ),
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

    #[test]
    fn cors_safelisted_and_browser_controlled_names_are_refused_as_the_csrf_header() {
        for name in [
            "Accept",
            "accept-language",
            "Content-Language",
            "content-type",
            "Range",
            "save-data",
            "Cookie",
            "origin",
            "Referer",
            "sec-fetch-site",
            "Sec-CSRF",
            "proxy-authorization",
            "authorization",
            "user-agent",
            "X-HTTP-Method-Override",
            "host",
        ] {
            let toml = minimal() + &format!("\n[csrf]\nheader = \"{name}\"\n");
            let err = load_str(&toml, &[]).expect_err(name);
            assert_eq!(err.0.len(), 1, "{name}: {err}");
            assert_eq!(err.0[0].key, "csrf.header", "{err}");
            assert!(err.0[0].message.contains(name), "{err}");
            assert!(err.0[0].message.contains("X-CSRF"), "{err}");
        }
        for name in ["X-CSRF", "X-Requested-With", "X-XSRF-Token"] {
            let toml = minimal() + &format!("\n[csrf]\nheader = \"{name}\"\n");
            assert!(load_str(&toml, &[]).is_ok(), "{name}");
        }
    }
}
