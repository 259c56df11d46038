//! Where the browser may be sent after login or logout: a relative path on
//! the public origin or a URL on an allowlisted origin, nothing else.
//!
//! The check parses the candidate the way a browser would (WHATWG URL rules:
//! tabs and newlines stripped, `\` read as `/`), then compares the resulting
//! origin exactly. On top of that it refuses anything a browser or an
//! intermediary might read differently: control characters, backslashes,
//! user info, and percent-encoded slashes or controls that decode into a
//! scheme-relative URL, and `.`/`..` segments (`/.//evil.com` resolves to
//! the path `//evil.com`). The *resolved* URL is checked again: its origin
//! must be allowed and its path must not start with `//`. The `Location`
//! the gateway sends is always absolute (`https://host/path`), so no
//! browser can read it as scheme-relative. Refusing a strange but harmless
//! URL costs nothing; accepting a strange harmful one is an open redirect.

use std::fmt;

use url::Url;

use super::path::has_dot_segment;

/// The longest `return_to` accepted, in bytes: far above any real
/// application URL, small enough to keep the pending login small.
pub const MAX_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnToError {
    TooLong,
    ForbiddenCharacter,
    NotRelativeOrHttp,
    SchemeRelative,
    UserInfo,
    DotSegment,
    OriginNotAllowed,
    Unparsable,
}

impl fmt::Display for ReturnToError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLong => "is longer than 2048 bytes",
            Self::ForbiddenCharacter => "contains a control character, whitespace or backslash",
            Self::NotRelativeOrHttp => "must be a path starting with / or an http(s) URL",
            Self::SchemeRelative => "is a scheme-relative URL (//host)",
            Self::UserInfo => "contains user info",
            Self::DotSegment => "contains a . or .. path segment",
            Self::OriginNotAllowed => "points at an origin that is not allowed",
            Self::Unparsable => "is not a valid URL",
        })
    }
}

impl std::error::Error for ReturnToError {}

fn has_forbidden_chars(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
}

/// Validates `candidate` and returns the absolute URL to redirect to.
///
/// `allowed_origins` are ASCII-serialised origins and must include the
/// origin of `base` for relative paths to be accepted.
pub fn resolve(
    candidate: &str,
    base: &Url,
    allowed_origins: &[String],
) -> Result<Url, ReturnToError> {
    if candidate.len() > MAX_LEN {
        return Err(ReturnToError::TooLong);
    }
    if has_forbidden_chars(candidate) {
        return Err(ReturnToError::ForbiddenCharacter);
    }
    // Decode once and look again: `/%09/evil.com` and `/%2F%2Fevil.com` are
    // read as `//evil.com` by some browsers, servers or frameworks.
    let decoded = percent_encoding::percent_decode_str(candidate).decode_utf8_lossy();
    if decoded.chars().any(|c| c.is_control() || c == '\\') {
        return Err(ReturnToError::ForbiddenCharacter);
    }

    // `.` and `..` are removed while resolving: `/.//evil.com` becomes the
    // path `//evil.com`. No application link needs them.
    let before_query = candidate.split(['?', '#']).next().unwrap_or_default();
    if has_dot_segment(before_query) {
        return Err(ReturnToError::DotSegment);
    }

    let url = if candidate.starts_with('/') {
        if candidate.starts_with("//") || decoded.starts_with("//") {
            return Err(ReturnToError::SchemeRelative);
        }
        base.join(candidate)
            .map_err(|_| ReturnToError::Unparsable)?
    } else {
        let lower = candidate.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(ReturnToError::NotRelativeOrHttp);
        }
        Url::parse(candidate).map_err(|_| ReturnToError::Unparsable)?
    };

    if !url.username().is_empty() || url.password().is_some() {
        return Err(ReturnToError::UserInfo);
    }
    if !is_safe_resolved(&url) {
        return Err(ReturnToError::SchemeRelative);
    }
    let origin = url.origin().ascii_serialization();
    if !allowed_origins.contains(&origin) {
        return Err(ReturnToError::OriginNotAllowed);
    }
    Ok(url)
}

/// What the resolved URL must be, however it was reached: http(s) with a
/// host, and a path that a browser cannot read as `//host` or `/\host` if
/// it is ever used on its own.
fn is_safe_resolved(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && super::path::is_origin_local_path(url.path())
}

/// The value to put in a `Location` header: always the absolute URL
/// (`scheme://host/path?query#fragment`), so no browser reads it as
/// scheme-relative. A URL that did not come from [`resolve`] and is not
/// safe to send falls back to `base`.
pub fn location_for(url: &Url, base: &Url) -> String {
    if is_safe_resolved(url) {
        url.as_str().to_owned()
    } else {
        base.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> Url {
        Url::parse("https://app.example.com").expect("url")
    }

    fn allowed() -> Vec<String> {
        vec![
            "https://app.example.com".into(),
            "https://admin.example.com".into(),
        ]
    }

    fn check(candidate: &str) -> Result<String, ReturnToError> {
        resolve(candidate, &base(), &allowed()).map(|u| location_for(&u, &base()))
    }

    #[test]
    fn relative_paths_on_the_public_origin_become_absolute_locations() {
        for (input, expected) in [
            ("/", "https://app.example.com/"),
            ("/app", "https://app.example.com/app"),
            (
                "/app/page?x=1&y=2#frag",
                "https://app.example.com/app/page?x=1&y=2#frag",
            ),
            ("/a%20b", "https://app.example.com/a%20b"),
            ("/app/x.json", "https://app.example.com/app/x.json"),
            ("/app/..x", "https://app.example.com/app/..x"),
            ("/app?next=/../x", "https://app.example.com/app?next=/../x"),
        ] {
            assert_eq!(check(input).as_deref(), Ok(expected), "input {input:?}");
        }
    }

    #[test]
    fn allowlisted_absolute_urls_are_accepted() {
        assert_eq!(
            check("https://admin.example.com/x").as_deref(),
            Ok("https://admin.example.com/x")
        );
        assert_eq!(
            check("https://app.example.com/y").as_deref(),
            Ok("https://app.example.com/y")
        );
    }

    #[test]
    fn open_redirect_payloads_are_refused() {
        let payloads = [
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "/%09/evil.com",
            "/%2F%2Fevil.com",
            "/%2f/evil.com",
            "/%5Cevil.com",
            "/\t/evil.com",
            " //evil.com",
            "https://evil.com",
            "https://app.example.com.evil.com",
            "https://app.example.com.evil.com/",
            "https://app.example.com@evil.com",
            "https://evil.com@app.example.com",
            "https://user:pass@app.example.com/",
            "https://evil.com\\@app.example.com",
            "https://evil.com#@app.example.com",
            "http://app.example.com/",
            "https://app.example.com:444/",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "evil.com",
            "app",
            "",
            "/\r\nSet-Cookie: x=y",
            "/%0d%0aSet-Cookie:x=y",
        ];
        for p in payloads {
            assert!(
                check(p).is_err(),
                "payload {p:?} was accepted as {:?}",
                check(p)
            );
        }
    }

    #[test]
    fn dot_segments_that_resolve_to_a_scheme_relative_path_are_refused() {
        for p in [
            "/.//evil.com",
            "/..//evil.com",
            "/%2e//evil.com",
            "/%2E//evil.com",
            "/.%2e//evil.com",
            "/%2e%2e//evil.com",
            "/././/evil.com",
            "/a/..//evil.com",
            "/a/../..//evil.com",
            "/./",
            "/..",
            "https://app.example.com/.//evil.com",
            "https://app.example.com/..//evil.com",
        ] {
            assert_eq!(check(p), Err(ReturnToError::DotSegment), "payload {p:?}");
        }
    }

    #[test]
    fn overlong_values_are_refused() {
        let long = format!("/{}", "a".repeat(MAX_LEN));
        assert_eq!(check(&long), Err(ReturnToError::TooLong));
        let longest = format!("/{}", "a".repeat(MAX_LEN - 1));
        assert!(check(&longest).is_ok());
    }

    #[test]
    fn a_location_that_did_not_come_from_resolve_falls_back_to_the_base() {
        let odd = Url::parse("https://app.example.com//evil.com").expect("url");
        assert_eq!(location_for(&odd, &base()), "https://app.example.com/");
    }

    /// Strings rich in what redirect checks get wrong.
    fn hostile_return_to() -> impl Strategy<Value = String> {
        let fragment = prop::sample::select(vec![
            "/",
            "\\",
            ".",
            "..",
            "%2e",
            "%2E",
            "%2f",
            "%5c",
            "%09",
            "%00",
            ";",
            "?",
            "#",
            "@",
            ":",
            "evil.com",
            "app.example.com",
            "https:",
            "http:",
            "//",
            "\t",
            " ",
            "%",
            "a",
            "admin.example.com",
            "%252f",
            "\u{3002}",
            "\u{FF0E}",
        ]);
        prop::collection::vec(fragment, 0..10).prop_map(|parts| parts.concat())
    }

    fn assert_safe_location(candidate: &str) -> Result<(), TestCaseError> {
        if let Ok(url) = resolve(candidate, &base(), &allowed()) {
            let location = location_for(&url, &base());
            let parsed = Url::parse(&location)
                .map_err(|e| TestCaseError::fail(format!("{location:?}: {e}")))?;
            prop_assert!(
                allowed().contains(&parsed.origin().ascii_serialization()),
                "{candidate:?} -> {location:?}"
            );
            prop_assert!(
                location.starts_with("https://app.example.com/")
                    || location.starts_with("https://admin.example.com/"),
                "{candidate:?} -> {location:?}"
            );
            prop_assert!(
                !parsed.path().starts_with("//") && !parsed.path().starts_with("/\\"),
                "{candidate:?} -> {location:?}"
            );
            // A browser resolving it against any page of the app lands on
            // the same URL.
            let again = base()
                .join("/some/page")
                .and_then(|page| page.join(&location))
                .map_err(|e| TestCaseError::fail(format!("{location:?}: {e}")))?;
            prop_assert_eq!(again.as_str(), location.as_str());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Whatever `resolve` accepts, `location_for` makes an absolute URL
        /// on an allowed origin whose path is not scheme-relative.
        #[test]
        fn an_accepted_return_to_is_an_absolute_url_on_an_allowed_origin(
            candidate in hostile_return_to()
        ) {
            assert_safe_location(&candidate)?;
        }

        /// The same over arbitrary strings (and no panic on any of them).
        #[test]
        fn any_string_is_judged_without_panicking_and_safely(candidate in any::<String>()) {
            assert_safe_location(&candidate)?;
            assert_safe_location(&format!("/{candidate}"))?;
        }
    }
}
