//! Header hygiene between the browser and an upstream.
//!
//! Towards the upstream: hop-by-hop headers dropped (RFC 9110 §7.6.1), the
//! browser's `Authorization` replaced by the session's Bearer token, the
//! `Cookie` header removed (or, on routes that forward cookies, only the
//! gateway's own), `X-Forwarded-*` set. Towards the browser:
//! hop-by-hop headers dropped and any attempt by an upstream to set the
//! gateway's own cookies removed.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::session::cookie::{self, CookiePolicy};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What the gateway tells upstreams about the original request.
pub struct ForwardedFor<'a> {
    pub client_ip: IpAddr,
    /// Keep and extend an incoming `X-Forwarded-For` (trusted proxy in front).
    pub trust_incoming: bool,
    pub proto: &'a HeaderValue,
    pub host: &'a HeaderValue,
    /// Keep the browser's cookies other than the gateway's.
    pub forward_cookies: bool,
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Prepares a browser request's headers for the upstream.
pub fn to_upstream(
    headers: &mut HeaderMap,
    policy: &CookiePolicy,
    bearer: Option<HeaderValue>,
    fwd: &ForwardedFor<'_>,
) {
    remove_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    if let Some(b) = bearer {
        headers.insert(header::AUTHORIZATION, b);
    }
    if !fwd.forward_cookies {
        headers.remove(header::COOKIE);
    } else if headers.contains_key(header::COOKIE) {
        match cookie::without_ours(headers, policy) {
            Some(v) => {
                headers.insert(header::COOKIE, v);
            }
            None => {
                headers.remove(header::COOKIE);
            }
        }
    }
    let ip = fwd.client_ip.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if fwd.trust_incoming && !prev.is_empty() => format!("{prev}, {ip}"),
        _ => ip,
    };
    if !fwd.trust_incoming {
        headers.remove(&FORWARDED);
    }
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), fwd.proto.clone());
    headers.insert(X_FORWARDED_HOST.clone(), fwd.host.clone());
}

/// Prepares an upstream response's headers for the browser.
pub fn to_browser(headers: &mut HeaderMap, policy: &CookiePolicy) {
    remove_hop_by_hop(headers);
    if headers.contains_key(header::SET_COOKIE) {
        let kept: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| {
                let name = v
                    .to_str()
                    .ok()
                    .and_then(|s| s.split_once('='))
                    .map(|(n, _)| n.trim());
                !name.is_some_and(|n| policy.is_ours(n))
            })
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in kept {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionConfig;

    fn policy() -> CookiePolicy {
        CookiePolicy::new(&SessionConfig::with_keys(vec![]))
    }

    fn request_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.example.com"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer from-browser"),
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; __Host-oidc-bff=secret"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-custom-hop"),
        );
        h.insert("x-custom-hop", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        h
    }

    #[test]
    fn upstream_gets_the_bearer_and_no_browser_credentials() {
        let mut h = request_headers();
        let proto = HeaderValue::from_static("https");
        let host = HeaderValue::from_static("app.example.com");
        to_upstream(
            &mut h,
            &policy(),
            Some(HeaderValue::from_static("Bearer server-side")),
            &ForwardedFor {
                client_ip: "10.1.2.3".parse().expect("ip"),
                trust_incoming: false,
                proto: &proto,
                host: &host,
                forward_cookies: false,
            },
        );
        assert_eq!(h[header::AUTHORIZATION], "Bearer server-side");
        assert!(!h.contains_key(header::COOKIE), "no cookie by default");
        assert_eq!(
            h["x-forwarded-for"], "10.1.2.3",
            "untrusted XFF is replaced"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-app"], "kept");
        for gone in ["host", "connection", "x-custom-hop", "te", "forwarded"] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
    }

    #[test]
    fn without_a_session_the_browser_authorization_is_still_dropped() {
        let mut h = request_headers();
        let v = HeaderValue::from_static("x");
        to_upstream(
            &mut h,
            &policy(),
            None,
            &ForwardedFor {
                client_ip: "10.1.2.3".parse().expect("ip"),
                trust_incoming: true,
                proto: &v,
                host: &v,
                forward_cookies: true,
            },
        );
        assert!(!h.contains_key(header::AUTHORIZATION));
        assert_eq!(
            h[header::COOKIE],
            "theme=dark",
            "a cookie-forwarding route passes the app's cookies, never the gateway's"
        );
        assert_eq!(
            h["x-forwarded-for"], "6.6.6.6, 10.1.2.3",
            "trusted XFF is extended"
        );
    }

    #[test]
    fn upstreams_cannot_set_the_gateway_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("__Host-oidc-bff=evil; Path=/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("app=1; Path=/"),
        );
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        to_browser(&mut h, &policy());
        let cookies: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, vec!["app=1; Path=/"]);
        assert!(!h.contains_key(header::TRANSFER_ENCODING));
    }
}
