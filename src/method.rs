//! Which methods a request asks an upstream for: its own, and the one a
//! method-override header names. Frameworks behind the gateway honour
//! `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override`
//! (Express `method-override`, Symfony, Laravel, ASP.NET Core, Jersey,
//! Google APIs), so a `GET` carrying one is a `DELETE` to them, and a
//! method's name is matched without regard to case by some servers.
//! Pure functions over the method and headers; the rules that use them
//! live with the proxy guard, forward-auth and `middleware::csrf`.

use http::{HeaderMap, HeaderName, Method};

/// The method-override headers, as frameworks name them.
pub static OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// The same names in their dashed form, to match `X_HTTP_Method_Override`
/// (read alike by CGI-style applications as `HTTP_X_HTTP_METHOD_OVERRIDE`).
const OVERRIDE_NAMES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Methods never forwarded: `TRACE` (and IIS's `TRACK`) echo the request,
/// the gateway's `Authorization` included, to whoever reads the answer;
/// `CONNECT` asks for a tunnel the gateway never opens.
const REFUSED: [&str; 3] = ["TRACE", "TRACK", "CONNECT"];

/// Whether the request names a method that is never forwarded, as its own
/// method or in an override header, in any letter case (`trace`,
/// `X-HTTP-Method-Override: TRACE`).
pub fn names_refused_method(method: &Method, headers: &HeaderMap) -> bool {
    let refused = |m: &[u8]| REFUSED.iter().any(|r| m.eq_ignore_ascii_case(r.as_bytes()));
    refused(method.as_str().as_bytes())
        || OVERRIDES.iter().flat_map(|n| headers.get_all(n)).any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|m| refused(m.trim_ascii()))
        })
}

/// Whether the request carries a method-override header: an upstream may
/// then run another method than the request line's, so the request is
/// held to the rules of state-changing methods whatever its own method.
pub fn overridden(headers: &HeaderMap) -> bool {
    OVERRIDES.iter().any(|n| headers.contains_key(n))
}

/// Whether a header name is a method-override header spelled with `_`,
/// which no client needs and which CGI-style applications read as the
/// dashed one: removed from what reaches the upstream.
pub fn is_underscored_override(name: &str) -> bool {
    name.contains('_')
        && OVERRIDE_NAMES.iter().any(|o| {
            o.len() == name.len()
                && o.bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a == b || (a == b'-' && b == b'_'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn trace_track_and_connect_are_refused_in_any_case_and_through_overrides() {
        let none = HeaderMap::new();
        for m in [
            "TRACE", "trace", "Trace", "TRACK", "track", "CONNECT", "connect",
        ] {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            assert!(names_refused_method(&method, &none), "{m}");
        }
        for (name, value) in [
            ("x-http-method-override", "TRACE"),
            ("x-http-method", "track"),
            ("x-method-override", " connect "),
            ("x-http-method-override", "PUT, TRACE"),
        ] {
            assert!(
                names_refused_method(&Method::POST, &with(name, value)),
                "{name}: {value}"
            );
        }
        for m in ["GET", "POST", "PROPFIND", "TRACES", "get"] {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            assert!(!names_refused_method(&method, &none), "{m}");
        }
        assert!(!names_refused_method(
            &Method::POST,
            &with("x-http-method-override", "DELETE")
        ));
    }

    #[test]
    fn an_override_header_makes_a_request_state_changing_whatever_it_names() {
        assert!(overridden(&with("x-http-method-override", "DELETE")));
        assert!(overridden(&with("x-method-override", "GET")));
        assert!(overridden(&with("x-http-method", "PATCH")));
        assert!(!overridden(&with("x-http-method-overrides", "DELETE")));
        assert!(!overridden(&HeaderMap::new()));
    }

    #[test]
    fn override_names_spelled_with_underscores_are_recognised() {
        for n in [
            "x_http_method_override",
            "x-http_method-override",
            "x_method_override",
            "x_http_method",
        ] {
            assert!(is_underscored_override(n), "{n}");
        }
        for n in [
            "x-http-method-override",
            "x_http_method_overrides",
            "x_forwarded_for",
        ] {
            assert!(!is_underscored_override(n), "{n}");
        }
    }
}
