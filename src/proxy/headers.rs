//! Header hygiene between the browser and an upstream.
//!
//! Towards the upstream: hop-by-hop headers dropped (RFC 9110 §7.6.1), the
//! browser's `Authorization` replaced by the session's Bearer token, the
//! `Cookie` header removed (or, on routes that forward cookies, only the
//! gateway's own), every header that claims who the client is or which URL
//! it asked for removed ([`claims_identity`]), and `X-Forwarded-For`,
//! `Forwarded`, `X-Forwarded-Proto` and `-Host` written by the gateway from
//! what it verified. Towards the browser: hop-by-hop headers dropped, any
//! attempt by an upstream to set the gateway's own cookies removed, and on
//! session routes every CORS grant removed.
//!
//! The identity headers the gateway itself sends (each route's
//! `identity_headers` and the assertion's header, see `identity`) are
//! gateway-only too: [`set_identity`] removes the client's copies of every
//! such name on every route, then adds the route's own values.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::session::cookie::{self, CookiePolicy};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers that claim the client's address or the original URL, by exact
/// name. Upstreams (and frameworks behind them) read these to decide who is
/// asking or which path was requested; only the gateway may say that.
const IDENTITY_HEADERS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-proxyuser-ip",
    "fastly-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "cf-pseudo-ipv4",
    "akamai-client-ip",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-appengine-user-ip",
    "x-envoy-external-address",
    "x-envoy-original-path",
    "x-rewrite-url",
    "x-host",
    "x-proxy-url",
];

/// Name prefixes of the same class: every `X-Forwarded-*` (`-For`,
/// `-Host`, `-Proto`, `-Port`, `-Prefix`, `-Server`, `-Ssl`, ...), every
/// `X-Original-*` (`-URL`, `-URI`, `-Host`, `-Forwarded-For`, ...), and the
/// client-address families above with their variants.
const IDENTITY_PREFIXES: &[&str] = &[
    "x-forwarded-",
    "x-original-",
    "x-originating-",
    "x-real-",
    "x-client-",
    "true-client-",
    "x-cluster-client-",
    "cf-connecting-",
];

/// Whether a request header claims client identity or the original URL (and
/// so must not come from the browser). See [`IDENTITY_HEADERS`] and
/// [`IDENTITY_PREFIXES`]. A name is compared in its dashed form (see
/// [`dashed`]): `X_Forwarded_For` claims what `X-Forwarded-For` does.
pub fn claims_identity(name: &HeaderName) -> bool {
    claims_identity_dashed(&dashed_or_same(name.as_str()))
}

fn claims_identity_dashed(n: &str) -> bool {
    IDENTITY_HEADERS.contains(&n) || IDENTITY_PREFIXES.iter().any(|p| n.starts_with(p))
}

/// `name` with every `_` made a `-`, if it has any. CGI and the servers
/// and frameworks built on its conventions (PHP, WSGI, Rack, many Java
/// containers) turn `-` into `_` when they expose headers (`HTTP_X_USER`),
/// so `X_User` and `X-User` reach an application as the same header, and
/// one the gateway removes in one spelling would arrive in the other.
/// nginx drops such names by default for the same reason
/// (`underscores_in_headers off`).
fn dashed(name: &str) -> Option<String> {
    name.contains('_').then(|| name.replace('_', "-"))
}

fn dashed_or_same(name: &str) -> std::borrow::Cow<'_, str> {
    dashed(name).map_or(std::borrow::Cow::Borrowed(name), std::borrow::Cow::Owned)
}

/// What the gateway tells upstreams about the original request.
pub struct ForwardedFor<'a> {
    /// The verified hops, client first and the TCP peer last (see
    /// `extract::client::ClientAddressPolicy::chain`): one address unless
    /// the peer is a trusted proxy.
    pub chain: &'a [IpAddr],
    pub proto: &'a HeaderValue,
    pub host: &'a HeaderValue,
    /// Keep the browser's cookies other than the gateway's.
    pub forward_cookies: bool,
}

/// The headers that end at each hop (RFC 9110 §7.6.1, the legacy
/// `Keep-Alive` and `Proxy-Connection`, and HTTP/2's `HTTP2-Settings`).
static HOP_BY_HOP: [&HeaderName; 10] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &HTTP2_SETTINGS,
];
/// `Transfer-Encoding`'s place in [`HOP_BY_HOP`].
const TRANSFER_ENCODING_AT: usize = 7;

/// Removes the hop-by-hop headers, and with `Transfer-Encoding` any
/// `Content-Length` beside it (RFC 9112 §6.3: the body was read by its
/// chunks, and an intermediary must drop the length before passing the
/// message on). Passed on, that length would frame the body at the next
/// hop: cut short when it claims less, the connection cut (or an upstream
/// left waiting) when more — what a response-splitting upstream wants the
/// browser to see. Both directions, so neither depends on hyper dropping
/// the header itself.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them (or only `Connection`, as an
    // upstream's `keep-alive`): one pass over the few names present says
    // which are there, and only those are removed, where ten removals
    // would each hash and probe the map, twice per proxied request.
    // Headers named in `Connection` need it present, and it is in the
    // list, as is `Transfer-Encoding`.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & (1 << TRANSFER_ENCODING_AT) != 0 {
        headers.remove(header::CONTENT_LENGTH);
    }
    // Headers named in Connection are hop-by-hop too. Usually one value
    // (an upstream's `keep-alive`): a copy of it (a reference count) frees
    // the map for the removals, and each name is looked up as it stands,
    // without making a `HeaderName` of it.
    let mut connection = headers.get_all(header::CONNECTION).iter();
    match (connection.next(), connection.next()) {
        (None, _) => {}
        (Some(one), None) => {
            let one = one.clone();
            remove_listed(headers, &one);
        }
        (Some(_), Some(_)) => {
            let all: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            for v in &all {
                remove_listed(headers, v);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

/// The tokens of a `Connection` value (a comma-separated list), trimmed,
/// empty ones left out.
fn connection_tokens(connection: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    connection
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Removes the headers a `Connection` value names (a token that is no
/// header name removes nothing).
fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    for name in connection_tokens(connection) {
        if let Ok(name) = std::str::from_utf8(name) {
            headers.remove(name);
        }
    }
}

/// Whether a browser request leaves its connection open for another one:
/// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection:
/// keep-alive`; never HTTP/2 (its streams are not one after another).
/// Read before [`to_upstream`] removes the header.
pub fn keeps_alive(version: http::Version, headers: &HeaderMap) -> bool {
    let (mut close, mut keep_alive) = (false, false);
    for value in headers.get_all(header::CONNECTION) {
        for token in connection_tokens(value) {
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    match version {
        http::Version::HTTP_11 => !close,
        http::Version::HTTP_10 => keep_alive && !close,
        _ => false,
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
    let claims: Vec<HeaderName> = headers
        .keys()
        .filter(|n| claims_identity(n) || crate::method::is_underscored_override(n.as_str()))
        .cloned()
        .collect();
    for name in claims {
        headers.remove(name);
    }
    let (xff, forwarded) = forwarded_values(fwd);
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if let Some(v) = forwarded {
        headers.insert(FORWARDED.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), fwd.proto.clone());
    headers.insert(X_FORWARDED_HOST.clone(), fwd.host.clone());
}

/// What the last request on this thread that came straight from its
/// client (a chain of one address) was told in `X-Forwarded-For` and
/// `Forwarded`, and what from: a keep-alive connection's requests, and
/// most requests of a busy worker, need the same two values again.
struct LastForwarded {
    client: IpAddr,
    proto: HeaderValue,
    host: HeaderValue,
    xff: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
}

thread_local! {
    static LAST_FORWARDED: std::cell::RefCell<Option<LastForwarded>> =
        const { std::cell::RefCell::new(None) };
}

/// `X-Forwarded-For` and `Forwarded` for `fwd`: the last ones made on this
/// thread when they were made from the same client, protocol and host
/// (cloning a value is a reference count), else made now.
fn forwarded_values(fwd: &ForwardedFor<'_>) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let [client] = fwd.chain else {
        return make_forwarded(fwd);
    };
    LAST_FORWARDED.with(|last| {
        let mut last = last.borrow_mut();
        if let Some(l) = &*last
            && l.client == *client
            && l.proto == fwd.proto
            && l.host == fwd.host
        {
            return (l.xff.clone(), l.forwarded.clone());
        }
        let (xff, forwarded) = make_forwarded(fwd);
        *last = Some(LastForwarded {
            client: *client,
            proto: fwd.proto.clone(),
            host: fwd.host.clone(),
            xff: xff.clone(),
            forwarded: forwarded.clone(),
        });
        (xff, forwarded)
    })
}

/// Both values written into one buffer, each handed to its header without
/// another copy.
fn make_forwarded(fwd: &ForwardedFor<'_>) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let mut buf = BytesMut::with_capacity(64 + fwd.proto.len() + fwd.host.len());
    x_forwarded_for(&mut buf, fwd.chain);
    let xff = HeaderValue::from_maybe_shared(buf.split().freeze()).ok();
    forwarded(&mut buf, fwd.chain, fwd.proto, fwd.host);
    (xff, HeaderValue::from_maybe_shared(buf.freeze()).ok())
}

/// Removes every header in `gateway_only` (whoever sent it), in any
/// spelling an application would read as the same name (`X_User` for
/// `X-User`, see [`dashed`]), and adds `identity`, the values the gateway
/// vouches for. Called after [`to_upstream`], on every route, with or
/// without a session.
pub fn set_identity(
    headers: &mut HeaderMap,
    gateway_only: &[HeaderName],
    identity: Vec<(HeaderName, HeaderValue)>,
) {
    for name in gateway_only {
        headers.remove(name);
    }
    // Without gateway-only names (the default) there is nothing to match:
    // no scan of the request's names.
    let underscored = |n: &HeaderName| n.as_str().contains('_');
    if !gateway_only.is_empty()
        && (headers.keys().any(underscored) || gateway_only.iter().any(underscored))
    {
        let spelled_alike: Vec<HeaderName> = headers
            .keys()
            .filter(|n| {
                let d = dashed_or_same(n.as_str());
                gateway_only.iter().any(|g| dashed_or_same(g.as_str()) == d)
            })
            .cloned()
            .collect();
        for name in spelled_alike {
            headers.remove(name);
        }
    }
    for (name, value) in identity {
        headers.remove(&name);
        headers.insert(name, value);
    }
}

/// `client, proxy1, ..., peer`: the verified hops only, so the leftmost
/// entry (which naive upstreams read) is the client the gateway resolved.
fn x_forwarded_for(out: &mut BytesMut, chain: &[IpAddr]) {
    for (i, ip) in chain.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        let _ = write!(out, "{ip}");
    }
}

/// RFC 7239, the same hops as `X-Forwarded-For`: one element per hop
/// (`for=` the node that sent it the request), the last one this hop's,
/// with the public protocol and host. IPv6 addresses are bracketed and
/// quoted (§6); the host is always quoted (it may carry a port).
fn forwarded(out: &mut BytesMut, chain: &[IpAddr], proto: &HeaderValue, host: &HeaderValue) {
    for (i, ip) in chain.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        let _ = match ip {
            IpAddr::V4(v4) => write!(out, "for={v4}"),
            IpAddr::V6(v6) => write!(out, "for=\"[{v6}]\""),
        };
    }
    // Both come from `server.public_url`: a scheme and a host[:port], never
    // a quote or backslash.
    let proto = String::from_utf8_lossy(proto.as_bytes());
    let host = String::from_utf8_lossy(host.as_bytes());
    let _ = write!(out, ";proto={proto};host=\"{host}\"");
}

/// Whether a request is a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`).
pub fn is_cors_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Prepares an upstream response's headers for the browser. On a session
/// route every `Access-Control-*` header goes: a response made with the
/// user's token must never be readable by another origin, whatever the
/// upstream's CORS policy says.
pub fn to_browser(headers: &mut HeaderMap, policy: &CookiePolicy, session_route: bool) {
    remove_hop_by_hop(headers);
    if headers.contains_key(header::SET_COOKIE) {
        let kept: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| cookie::upstream_may_set(v.as_bytes(), policy))
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in kept {
            headers.append(header::SET_COOKIE, v);
        }
    }
    if session_route {
        let grants: Vec<HeaderName> = headers
            .keys()
            .filter(|n| n.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in grants {
            headers.remove(name);
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

    /// `to_upstream` for a request straight from client 10.1.2.3, without
    /// a session or forwarded cookies.
    fn from_direct_client(h: &mut HeaderMap) {
        let v = HeaderValue::from_static("x");
        to_upstream(
            h,
            &policy(),
            None,
            &ForwardedFor {
                chain: &["10.1.2.3".parse().expect("ip")],
                proto: &v,
                host: &v,
                forward_cookies: false,
            },
        );
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
    fn only_a_browser_connection_left_open_keeps_alive() {
        use http::Version;
        let with = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(value));
            h
        };
        let none = HeaderMap::new();
        assert!(keeps_alive(Version::HTTP_11, &none));
        assert!(keeps_alive(Version::HTTP_11, &with("keep-alive")));
        assert!(!keeps_alive(Version::HTTP_11, &with("close")));
        assert!(!keeps_alive(Version::HTTP_11, &with("X-Foo, CLOSE")));
        assert!(!keeps_alive(Version::HTTP_10, &none));
        assert!(keeps_alive(Version::HTTP_10, &with("Keep-Alive")));
        assert!(!keeps_alive(Version::HTTP_10, &with("keep-alive, close")));
        assert!(!keeps_alive(Version::HTTP_2, &none));
    }

    #[test]
    fn every_connection_value_names_hop_by_hop_headers_in_any_case() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-One"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" x-two ,close,,"),
        );
        for (name, value) in [("x-one", "1"), ("x-two", "2"), ("keep-alive", "timeout=5")] {
            h.insert(name, HeaderValue::from_static(value));
        }
        h.insert("x-kept", HeaderValue::from_static("3"));
        to_browser(&mut h, &policy(), false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);

        let mut one = HeaderMap::new();
        one.insert(header::CONNECTION, HeaderValue::from_static("X-Gone"));
        one.insert("x-gone", HeaderValue::from_static("1"));
        one.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        to_browser(&mut one, &policy(), false);
        let left: Vec<&str> = one.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_keeps_every_header() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let before = h.clone();
        to_browser(&mut h, &policy(), false);
        assert_eq!(h, before);
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
                chain: &["10.1.2.3".parse().expect("ip")],
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
        assert_eq!(
            h["forwarded"],
            "for=10.1.2.3;proto=https;host=\"app.example.com\""
        );
        for gone in ["host", "connection", "x-custom-hop", "te"] {
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
                chain: &[
                    "6.6.6.6".parse().expect("ip"),
                    "10.1.2.3".parse().expect("ip"),
                ],
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
            "the verified hops"
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
        to_browser(&mut h, &policy(), false);
        let cookies: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, vec!["app=1; Path=/"]);
        assert!(!h.contains_key(header::TRANSFER_ENCODING));
    }

    #[test]
    fn a_length_beside_chunked_framing_never_reaches_the_browser() {
        let mut both = HeaderMap::new();
        both.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        both.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        to_browser(&mut both, &policy(), false);
        assert!(!both.contains_key(header::CONTENT_LENGTH));
        assert!(!both.contains_key(header::TRANSFER_ENCODING));
        // Alone, the length is the body's and stays (a HEAD answer's too).
        let mut length = HeaderMap::new();
        length.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        to_browser(&mut length, &policy(), false);
        assert_eq!(length[header::CONTENT_LENGTH], "2");
    }

    #[test]
    fn a_length_beside_chunked_framing_is_dropped_in_either_direction() {
        // The mechanism both `to_upstream` and `to_browser` use.
        let mut both = HeaderMap::new();
        both.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        both.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        both.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut both);
        assert!(!both.contains_key(header::CONTENT_LENGTH));
        assert!(!both.contains_key(header::TRANSFER_ENCODING));
        assert_eq!(both[header::CONTENT_TYPE], "text/plain");
    }

    #[test]
    fn forwarded_values_kept_for_the_next_request_are_never_another_clients() {
        let (proto, host) = (
            HeaderValue::from_static("https"),
            HeaderValue::from_static("app.example:8443"),
        );
        let fwd = |chain: &[IpAddr], host: &HeaderValue| {
            let f = ForwardedFor {
                chain,
                proto: &proto,
                host,
                forward_cookies: false,
            };
            let (xff, fw) = forwarded_values(&f);
            (xff.expect("xff"), fw.expect("forwarded"))
        };
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("ip"),
            "2001:db8::7".parse().expect("ip"),
        );
        let first = fwd(&[a], &host);
        assert_eq!(first.0, "192.0.2.1");
        assert_eq!(
            first.1,
            "for=192.0.2.1;proto=https;host=\"app.example:8443\""
        );
        assert_eq!(fwd(&[a], &host), first, "the same client: the same values");
        assert_eq!(
            fwd(&[b], &host),
            (
                HeaderValue::from_static("2001:db8::7"),
                HeaderValue::from_static(
                    "for=\"[2001:db8::7]\";proto=https;host=\"app.example:8443\""
                )
            )
        );
        let other_host = HeaderValue::from_static("other.example");
        assert_eq!(
            fwd(&[b], &other_host).1,
            "for=\"[2001:db8::7]\";proto=https;host=\"other.example\""
        );
        // A proxied client (two hops) is made from its own chain, and does
        // not disturb what a direct client gets.
        assert_eq!(fwd(&[a, b], &host).0, "192.0.2.1, 2001:db8::7");
        assert_eq!(fwd(&[a], &host), first);
        assert!(HOP_BY_HOP[TRANSFER_ENCODING_AT] == header::TRANSFER_ENCODING);
    }

    #[test]
    fn every_header_claiming_client_identity_or_the_original_url_is_replaced() {
        let mut h = HeaderMap::new();
        let claims = [
            "x-real-ip",
            "true-client-ip",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-forwarded-ssl",
            "x-original-url",
            "x-original-uri",
            "x-original-host",
            "x-original-forwarded-for",
            "x-rewrite-url",
            "x-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "x-cluster-client-ip",
            "client-ip",
            "x-proxyuser-ip",
            "x-envoy-external-address",
            "x-host",
        ];
        for name in claims {
            h.append(name, HeaderValue::from_static("6.6.6.6"));
        }
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7"));
        h.append("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.append("x-forwarded-proto", HeaderValue::from_static("http"));
        h.append("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.append("forwarded", HeaderValue::from_static("host=evil.example"));
        h.append("x-app", HeaderValue::from_static("kept"));
        let proto = HeaderValue::from_static("https");
        let host = HeaderValue::from_static("app.example.com:8443");
        to_upstream(
            &mut h,
            &policy(),
            None,
            &ForwardedFor {
                chain: &["2001:db8::1".parse().expect("ip")],
                proto: &proto,
                host: &host,
                forward_cookies: false,
            },
        );
        for name in claims {
            assert!(!h.contains_key(name), "{name} forwarded: {h:?}");
        }
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-host"], "app.example.com:8443");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h.get_all("forwarded").iter().count(), 1);
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=https;host=\"app.example.com:8443\""
        );
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn identity_claims_spelled_with_underscores_are_removed_too() {
        let mut h = HeaderMap::new();
        let claims = [
            "x_forwarded_for",
            "x_forwarded-host",
            "x_real_ip",
            "true_client_ip",
            "x_original_url",
            "cf_connecting_ip",
            "x__forwarded_for",
        ];
        for name in claims {
            h.append(name, HeaderValue::from_static("6.6.6.6"));
        }
        h.append("x_app_id", HeaderValue::from_static("kept"));
        from_direct_client(&mut h);
        for name in &claims[..6] {
            assert!(!h.contains_key(*name), "{name} forwarded: {h:?}");
        }
        // Two underscores read as `x--forwarded-for`: no header it could be.
        assert!(h.contains_key("x__forwarded_for"));
        assert_eq!(h["x_app_id"], "kept");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    }

    #[test]
    fn gateway_only_headers_are_removed_in_every_spelling_an_application_reads_alike() {
        let mut h = HeaderMap::new();
        for name in ["x_user", "X_User", "x-user", "x-tenant", "x_groups_extra"] {
            h.append(name, HeaderValue::from_static("root"));
        }
        let gateway_only = [
            HeaderName::from_static("x-user"),
            HeaderName::from_static("x_tenant"),
        ];
        set_identity(
            &mut h,
            &gateway_only,
            vec![(
                HeaderName::from_static("x-user"),
                HeaderValue::from_static("alice"),
            )],
        );
        assert!(!h.contains_key("x_user"), "{h:?}");
        assert!(!h.contains_key("x-tenant"), "{h:?}");
        assert_eq!(h.get_all("x-user").iter().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(h["x_groups_extra"], "root");
    }

    #[test]
    fn h2c_settings_never_reach_an_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAAQAAP__"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        from_direct_client(&mut h);
        assert!(!h.contains_key("http2-settings"));
        assert!(!h.contains_key(header::UPGRADE));
    }

    #[test]
    fn cors_grants_from_upstreams_are_removed_on_session_routes_only() {
        let grants = || {
            let mut h = HeaderMap::new();
            h.insert(
                "access-control-allow-origin",
                HeaderValue::from_static("https://evil.example"),
            );
            h.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
            h.insert(
                "access-control-expose-headers",
                HeaderValue::from_static("x-secret"),
            );
            h
        };
        let mut session = grants();
        to_browser(&mut session, &policy(), true);
        assert!(session.is_empty(), "{session:?}");
        let mut public = grants();
        to_browser(&mut public, &policy(), false);
        assert_eq!(public.len(), 3, "{public:?}");
    }

    #[test]
    fn upstreams_cannot_set_a_cookie_named_like_the_gateways_in_any_spelling() {
        let mut h = HeaderMap::new();
        for raw in [
            &b"__host-OIDC-BFF=evil; Path=/"[..],
            b" __Host-oidc-bff =evil",
            b"__Secure-oidc-bff=evil",
            b"oidc-bff=evil",
            b"__Host-oidc-bff-login=evil",
            b"__Host-oidc-bff=\xff\xfe; Path=/",
            b"=__Host-oidc-bff=evil",
            b"__Host-oidc-bff",
            b"na\xefme=1",
            b"app=\xff; Path=/",
            b"app2=ok",
        ] {
            h.append(
                header::SET_COOKIE,
                HeaderValue::from_bytes(raw).expect("header value"),
            );
        }
        to_browser(&mut h, &policy(), false);
        let kept: Vec<&[u8]> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(kept, vec![&b"app=\xff; Path=/"[..], b"app2=ok"]);
    }
}
