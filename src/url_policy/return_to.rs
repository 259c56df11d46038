//! Where the browser may be sent after login or logout: a relative path on
//! the public origin or a URL on an allowlisted origin, nothing else.
//!
//! The check parses the candidate the way a browser would (WHATWG URL rules:
//! tabs and newlines stripped, `\` read as `/`), then compares the resulting
//! origin exactly. On top of that it refuses anything a browser or an
//! intermediary might read differently: control characters, backslashes,
//! user info, and percent-encoded slashes or controls that decode into a
//! scheme-relative URL. Refusing a strange but harmless URL costs nothing;
//! accepting a strange harmful one is an open redirect.

use std::fmt;

use url::Url;

const MAX_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnToError {
    TooLong,
    ForbiddenCharacter,
    NotRelativeOrHttp,
    SchemeRelative,
    UserInfo,
    OriginNotAllowed,
    Unparsable,
}

impl fmt::Display for ReturnToError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLong => "is too long",
            Self::ForbiddenCharacter => "contains a control character, whitespace or backslash",
            Self::NotRelativeOrHttp => "must be a path starting with / or an http(s) URL",
            Self::SchemeRelative => "is a scheme-relative URL (//host)",
            Self::UserInfo => "contains user info",
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
    let origin = url.origin().ascii_serialization();
    if !allowed_origins.contains(&origin) {
        return Err(ReturnToError::OriginNotAllowed);
    }
    Ok(url)
}

/// The value to put in a `Location` header: relative when on the public
/// origin (so the browser stays where it is), absolute otherwise.
pub fn location_for(url: &Url, base: &Url) -> String {
    if url.origin() == base.origin() {
        let mut s = url.path().to_owned();
        if let Some(q) = url.query() {
            s.push('?');
            s.push_str(q);
        }
        if let Some(f) = url.fragment() {
            s.push('#');
            s.push_str(f);
        }
        s
    } else {
        url.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn relative_paths_on_the_public_origin_are_accepted() {
        for (input, expected) in [
            ("/", "/"),
            ("/app", "/app"),
            ("/app/page?x=1&y=2#frag", "/app/page?x=1&y=2#frag"),
            ("/a%20b", "/a%20b"),
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
        assert_eq!(check("https://app.example.com/y").as_deref(), Ok("/y"));
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
    fn overlong_values_are_refused() {
        let long = format!("/{}", "a".repeat(MAX_LEN));
        assert_eq!(check(&long), Err(ReturnToError::TooLong));
    }
}
