//! The `Host` header rules of RFC 9112 §3.2: an HTTP/1.1 request carries
//! exactly one `Host`, and its value is an authority without user info
//! (`uri-host [ ":" port ]`). A server must answer anything else with 400.
//!
//! The gateway itself never reads `Host` (its own URLs come from
//! `server.public_url`, and an upstream gets its route's host), but a
//! request with two of them, or one that is no host at all, is read
//! differently by each server that sees it: a fronting proxy that routed
//! on the first `Host`, a cache keyed on the second, an upstream that logs
//! a third reading. Such a request is refused rather than passed on.

use http::{HeaderMap, Version, header};

/// Why a request's `Host` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    /// An HTTP/1.1 request without one.
    Missing,
    /// More than one `Host` field.
    Repeated,
    /// A value that is not `host[:port]`.
    Malformed,
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
        }
    }
}

/// Checks a request's `Host` fields against RFC 9112 §3.2. HTTP/1.0 may
/// omit `Host`; HTTP/2 and HTTP/3 name the authority in `:authority`, and
/// a `Host` beside it is held to the same rules.
pub fn check_host(version: Version, headers: &HeaderMap) -> Result<(), HostRefusal> {
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
    if authority_is_well_formed(host.as_bytes()) {
        Ok(())
    } else {
        Err(HostRefusal::Malformed)
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
            assert_eq!(check_host(Version::HTTP_11, &hosts(&[v])), Ok(()), "{v:?}");
        }
    }

    #[test]
    fn an_http11_request_needs_one_and_only_one_host() {
        assert_eq!(
            check_host(Version::HTTP_11, &HeaderMap::new()),
            Err(HostRefusal::Missing)
        );
        assert_eq!(check_host(Version::HTTP_10, &HeaderMap::new()), Ok(()));
        assert_eq!(check_host(Version::HTTP_2, &HeaderMap::new()), Ok(()));
        for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            assert_eq!(
                check_host(version, &hosts(&["a.example", "b.example"])),
                Err(HostRefusal::Repeated),
                "{version:?}"
            );
            assert_eq!(
                check_host(version, &hosts(&["a.example", "a.example"])),
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
                check_host(Version::HTTP_11, &hosts(&[v])),
                Err(HostRefusal::Malformed),
                "{v:?}"
            );
        }
    }
}
