//! Cross-cutting layers: request IDs and the access log (`request_log`),
//! the way out of every answer (`respond`: error pages for navigations,
//! `error_pages`; request metrics, `track`; security headers), the
//! anti-CSRF rule (`csrf`), the server span of exported traces
//! (`server_span`). The order they are applied in is written down once,
//! in `router::build_router`.

pub mod csrf;
pub mod error_pages;
pub mod request_log;
pub mod respond;
pub mod server_span;
pub mod track;

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use rand::RngCore;

use crate::extract::client::ClientAddressPolicy;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The outermost layer of the public and the admin listener: a request ID
/// (kept from a trusted proxy when well-formed, else made up; echoed on the
/// response and passed to upstreams) and, with `log.access_log`, one log
/// line per request carrying it. `/metrics` gets neither: a scrape every few
/// seconds would drown the log.
pub fn with_request_log<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    access_log: bool,
    client_address: ClientAddressPolicy,
) -> Router<S> {
    router.layer(request_log::RequestLogLayer {
        access_log,
        client_address,
    })
}

/// Whether an incoming `X-Request-Id` is kept: only from a trusted proxy
/// (a client choosing its own ID could make its requests look like someone
/// else's in the logs, or inject text into them), only one, and only 1-64
/// characters of `[A-Za-z0-9._-]`.
pub fn keep_request_id(headers: &axum::http::HeaderMap, from_trusted_proxy: bool) -> bool {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    let (Some(id), None) = (values.next(), values.next()) else {
        return false;
    };
    from_trusted_proxy
        && (1..=64).contains(&id.len())
        && id
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A new request ID: 16 hex characters, enough to find one request in the
/// logs.
pub fn new_request_id() -> HeaderValue {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    // Hex straight into the header value's bytes: no string in between.
    let mut id = [0u8; 16];
    for (pair, b) in id.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Owned by the value's bytes: one allocation, and the copies that go
    // on the request, the log fields and the response share it (a copied
    // slice would allocate again on its first copy).
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or(HeaderValue::from_static("0000000000000000"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn a_made_up_request_id_is_16_lowercase_hex_characters_and_kept_by_our_own_rule() {
        let ids: Vec<HeaderValue> = (0..8).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 8);
        for id in &ids {
            assert_eq!(id.len(), 16, "{id:?}");
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)),
                "{id:?}"
            );
            let mut h = HeaderMap::new();
            h.insert(&X_REQUEST_ID, id.clone());
            assert!(keep_request_id(&h, true));
        }
        assert_ne!(ids[0], ids[1], "random, not fixed");
    }

    #[test]
    fn an_incoming_request_id_is_kept_only_from_a_trusted_proxy_and_only_when_well_formed() {
        let with = |ids: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for id in ids {
                h.append(&X_REQUEST_ID, HeaderValue::from_bytes(id).expect("value"));
            }
            h
        };
        assert!(keep_request_id(&with(&[b"abc-123_x.Y"]), true));
        assert!(keep_request_id(&with(&[&[b'a'; 64]]), true));
        assert!(!keep_request_id(&with(&[b"abc-123"]), false));
        for bad in [
            &b""[..],
            &[b'a'; 65],
            b"a b",
            b"id\tx",
            b"<script>",
            b"a\xff",
            b"a,b",
        ] {
            assert!(!keep_request_id(&with(&[bad]), true), "{bad:?}");
        }
        assert!(!keep_request_id(&with(&[b"a", b"b"]), true));
        assert!(!keep_request_id(&HeaderMap::new(), true));
    }
}
