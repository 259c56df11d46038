//! The `Host` header rules of RFC 9112 §3.2: an HTTP/1.1 request carries
//! exactly one `Host`, and its value is an authority without user info
//! (`uri-host [ ":" port ]`). A server must answer anything else with 400.
//! The same holds for the authority a request target names itself (HTTP/2's
//! `:authority`, an HTTP/1.1 absolute-form target): no user info (RFC 9113
//! §8.3.1), a `Host` beside it names the same host, and the target's
//! scheme is `http` or `https`.
//!
//! The gateway itself never reads `Host` (its own URLs come from
//! `server.public_url`, and an upstream gets its route's host), but a
//! request with two of them, or one that is no host at all, is read
//! differently by each server that sees it: a fronting proxy that routed
//! on the first `Host`, a cache keyed on the second, an upstream that logs
//! a third reading. Such a request is refused rather than passed on.

use http::{HeaderMap, Uri, Version, header};

/// Why a request's `Host` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    /// An HTTP/1.1 request without one.
    Missing,
    /// More than one `Host` field.
    Repeated,
    /// A value that is not `host[:port]`.
    Malformed,
    /// A request target whose own authority is not `host[:port]` (user
    /// info, most often).
    TargetAuthority,
    /// A `Host` that names another host than the request target's
    /// authority: which of the two a server behind reads is its choice.
    Conflicting,
    /// A request target with a scheme other than `http` or `https`.
    Scheme,
}

impl HostRefusal {
    /// The message the client gets.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "An HTTP/1.1 request must carry a Host header.",
            Self::Repeated => "A request must carry at most one Host header.",
            Self::Malformed => {
                "The Host header must be a host name or address, with an optional port."
            }
            Self::TargetAuthority => {
                "The request target's authority must be a host name or address, with an optional port."
            }
            Self::Conflicting => {
                "The Host header must name the same host as the request target's authority."
            }
            Self::Scheme => "The request target's scheme must be http or https.",
        }
    }
}

/// Checks a request's `Host` fields against RFC 9112 §3.2, and the
/// authority and scheme its target names, if any. HTTP/1.0 may omit
/// `Host`; HTTP/2 and HTTP/3 name the authority in `:authority`, and a
/// `Host` beside it is held to the same rules and must agree with it.
pub fn check_host(version: Version, target: &Uri, headers: &HeaderMap) -> Result<(), HostRefusal> {
    if let Some(scheme) = target.scheme_str()
        && !scheme.eq_ignore_ascii_case("http")
        && !scheme.eq_ignore_ascii_case("https")
    {
        return Err(HostRefusal::Scheme);
    }
    let authority = target.authority().map(|a| a.as_str());
    if let Some(authority) = authority
        && !authority_is_well_formed(authority.as_bytes())
    {
        return Err(HostRefusal::TargetAuthority);
    }
    let mut values = headers.get_all(header::HOST).iter();
    let Some(host) = values.next() else {
        return if version == Version::HTTP_11 {
            Err(HostRefusal::Missing)
        } else {
            Ok(())
        };
    };
    if values.next().is_some() {
        return Err(HostRefusal::Repeated);
    }
    if !authority_is_well_formed(host.as_bytes()) {
        return Err(HostRefusal::Malformed);
    }
    match authority {
        Some(authority) if !authority.as_bytes().eq_ignore_ascii_case(host.as_bytes()) => {
            Err(HostRefusal::Conflicting)
        }
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2–3): a bracketed IPv6 literal,
/// or a registered name or IPv4 address made of unreserved characters,
/// sub-delimiters and percent-encodings; the port is digits. Empty is
/// allowed (RFC 9112 §3.2: for a target without an authority).
fn authority_is_well_formed(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(at) => (&value[..at], Some(&value[at + 1..])),
            None => (value, None),
        }
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    port_ok && reg_name(host)
}

fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                let hex = |j: usize| host.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() => {}
            b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// An origin-form target (`/path`), what HTTP/1.1 clients send.
    fn origin() -> Uri {
        Uri::from_static("/api/x")
    }

    fn hosts(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::HOST, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn one_host_name_or_address_with_an_optional_port_is_accepted() {
        for v in [
            "app.example.com",
            "app.example.com:8443",
            "localhost",
            "127.0.0.1:8080",
            "[::1]",
            "[2001:db8::1]:443",
            "[::ffff:127.0.0.1]:80",
            "xn--caf-dma.example",
            "my_host.internal",
            "host:",
            "",
        ] {
            assert_eq!(
                check_host(Version::HTTP_11, &origin(), &hosts(&[v])),
                Ok(()),
                "{v:?}"
            );
        }
    }

    #[test]
    fn an_http11_request_needs_one_and_only_one_host() {
        assert_eq!(
            check_host(Version::HTTP_11, &origin(), &HeaderMap::new()),
            Err(HostRefusal::Missing)
        );
        assert_eq!(
            check_host(Version::HTTP_10, &origin(), &HeaderMap::new()),
            Ok(())
        );
        assert_eq!(
            check_host(Version::HTTP_2, &origin(), &HeaderMap::new()),
            Ok(())
        );
        for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            assert_eq!(
                check_host(version, &origin(), &hosts(&["a.example", "b.example"])),
                Err(HostRefusal::Repeated),
                "{version:?}"
            );
            assert_eq!(
                check_host(version, &origin(), &hosts(&["a.example", "a.example"])),
                Err(HostRefusal::Repeated),
                "{version:?}"
            );
        }
    }

    #[test]
    fn anything_but_an_authority_without_user_info_is_malformed() {
        for v in [
            "user@app.example.com",
            "app.example.com/path",
            "app.example.com?x",
            "app.example.com#x",
            "app.example.com:port",
            "app.example.com:123456",
            "app.example.com:80:80",
            "a b",
            "a\\b",
            "a\"b",
            "[::1",
            "[::1]x",
            "[]",
            "[::1]:8o",
            "[v1.fe]",
            "%zz.example",
            "a%2",
            "app.example.com, evil.example",
            "<script>",
        ] {
            assert_eq!(
                check_host(Version::HTTP_11, &origin(), &hosts(&[v])),
                Err(HostRefusal::Malformed),
                "{v:?}"
            );
        }
    }

    #[test]
    fn a_target_that_names_its_authority_needs_no_host_on_http2_but_one_that_agrees() {
        let target = Uri::from_static("http://app.example.com:8443/api/x");
        assert_eq!(
            check_host(Version::HTTP_2, &target, &HeaderMap::new()),
            Ok(())
        );
        for v in ["app.example.com:8443", "APP.example.COM:8443"] {
            assert_eq!(
                check_host(Version::HTTP_2, &target, &hosts(&[v])),
                Ok(()),
                "{v:?}"
            );
            assert_eq!(
                check_host(Version::HTTP_11, &target, &hosts(&[v])),
                Ok(()),
                "{v:?}"
            );
        }
        for v in ["evil.example", "app.example.com", "app.example.com:443"] {
            for version in [Version::HTTP_11, Version::HTTP_2] {
                assert_eq!(
                    check_host(version, &target, &hosts(&[v])),
                    Err(HostRefusal::Conflicting),
                    "{version:?} {v:?}"
                );
            }
        }
        // HTTP/1.1 still needs its Host with an absolute-form target.
        assert_eq!(
            check_host(Version::HTTP_11, &target, &HeaderMap::new()),
            Err(HostRefusal::Missing)
        );
    }

    #[test]
    fn a_target_authority_with_user_info_or_a_scheme_besides_http_is_refused() {
        for target in [
            "http://user@app.example.com/x",
            "https://u:p@app.example.com:443/x",
        ] {
            let target: Uri = target.parse().expect("a URI");
            assert_eq!(
                check_host(Version::HTTP_2, &target, &HeaderMap::new()),
                Err(HostRefusal::TargetAuthority),
                "{target}"
            );
        }
        for target in [
            "ftp://app.example.com/x",
            "ws://app.example.com/x",
            "foo://app.example.com/x",
        ] {
            let target: Uri = target.parse().expect("a URI");
            assert_eq!(
                check_host(Version::HTTP_2, &target, &HeaderMap::new()),
                Err(HostRefusal::Scheme),
                "{target}"
            );
        }
        for target in ["https://app.example.com/x", "HTTP://app.example.com/x"] {
            let target: Uri = target.parse().expect("a URI");
            assert_eq!(
                check_host(Version::HTTP_2, &target, &HeaderMap::new()),
                Ok(()),
                "{target}"
            );
        }
    }
}
