//! The security headers of every response the gateway writes itself, one
//! policy per kind of response, applied in one layer.
//!
//! A producer marks its response with a [`ResponseKind`] extension; the
//! way out of every answer ([`secure_response`]) then sets that kind's headers. Unmarked responses are
//! the gateway's own API answers (JSON, redirects). What an upstream sends
//! is marked [`ResponseKind::Proxied`] and left as the upstream wrote it:
//! the gateway does not know that application's needs. Pages also carry a
//! content security policy, which `pages` writes because it hashes the
//! stylesheet it inlines.
//!
//! A leaf: it knows HTTP and nothing else of the crate.

use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};

/// Which policy a response gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseKind {
    /// The gateway's own JSON and redirects (`/auth/*`, health, errors).
    #[default]
    Api,
    /// An HTML page the gateway rendered (errors, logged out).
    Page,
    /// A file of the single-page app (`[static] dir`).
    StaticApp,
    /// An upstream's answer, passed through as it is.
    Proxied,
    /// The front-channel logout page, framed by the provider: like a page
    /// but without `X-Frame-Options`; its handler sets the CSP whose
    /// `frame-ancestors` names the only origins allowed to frame it.
    FramedByProvider,
}

static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static DENY: HeaderValue = HeaderValue::from_static("DENY");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
static NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
static SAME_ORIGIN: HeaderValue = HeaderValue::from_static("same-origin");

/// Sets `kind`'s headers.
///
/// - API answers and pages: never cached (they describe one session),
///   never framed, no referrer (a page's URL may hold a one-time handle).
/// - The static app: never framed (clickjacking), `same-origin` referrers
///   so the app's own API calls still say where they come from; its cache
///   policy is the static handler's (hashed assets are immutable).
pub fn secure(kind: ResponseKind, h: &mut HeaderMap) {
    match kind {
        ResponseKind::Proxied => {}
        ResponseKind::Api | ResponseKind::Page => {
            h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
            h.insert(header::X_FRAME_OPTIONS, DENY.clone());
            h.insert(header::REFERRER_POLICY, NO_REFERRER.clone());
            h.insert(header::CACHE_CONTROL, NO_STORE.clone());
        }
        ResponseKind::FramedByProvider => {
            h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
            h.remove(header::X_FRAME_OPTIONS);
            h.insert(header::REFERRER_POLICY, NO_REFERRER.clone());
            h.insert(header::CACHE_CONTROL, NO_STORE.clone());
        }
        ResponseKind::StaticApp => {
            h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
            h.insert(header::X_FRAME_OPTIONS, DENY.clone());
            h.insert(header::REFERRER_POLICY, SAME_ORIGIN.clone());
        }
    }
}

/// Sets the headers of the kind `resp` is marked with (applied to every
/// answer of the main listener by `middleware::respond`).
pub fn secure_response(mut resp: Response) -> Response {
    let kind = resp
        .extensions()
        .get::<ResponseKind>()
        .copied()
        .unwrap_or_default();
    secure(kind, resp.headers_mut());
    resp
}

/// Marks a response with its kind.
pub fn mark(mut resp: Response, kind: ResponseKind) -> Response {
    resp.extensions_mut().insert(kind);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_gets_its_policy_and_upstream_answers_are_left_alone() {
        let mut api = HeaderMap::new();
        secure(ResponseKind::Api, &mut api);
        assert_eq!(api[header::CACHE_CONTROL], "no-store");
        assert_eq!(api[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(api[header::X_FRAME_OPTIONS], "DENY");

        let mut app = HeaderMap::new();
        app.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
        secure(ResponseKind::StaticApp, &mut app);
        assert_eq!(
            app[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(app[header::REFERRER_POLICY], "same-origin");

        // The front-channel logout page: like a page, minus X-Frame-Options
        // (its handler's CSP frame-ancestors decides who may frame it).
        let mut framed = HeaderMap::new();
        framed.insert(header::X_FRAME_OPTIONS, DENY.clone());
        secure(ResponseKind::FramedByProvider, &mut framed);
        assert!(framed.get(header::X_FRAME_OPTIONS).is_none());
        assert_eq!(framed[header::CACHE_CONTROL], "no-store");
        assert_eq!(framed[header::REFERRER_POLICY], "no-referrer");

        let mut upstream = HeaderMap::new();
        upstream.insert(header::REFERRER_POLICY, HeaderValue::from_static("origin"));
        secure(ResponseKind::Proxied, &mut upstream);
        assert_eq!(upstream.len(), 1);
        assert_eq!(upstream[header::REFERRER_POLICY], "origin");
    }
}
