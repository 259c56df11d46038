//! How a request body may be framed (RFC 9112 §6): by one `Content-Length`,
//! or by `Transfer-Encoding: chunked` alone. Anything else is refused with
//! 400 and the connection closed. An upstream's answer must not carry a
//! coding besides `chunked` either (`proxy::forward`: 502, its connection
//! dropped).
//!
//! hyper already refuses a coding list that does not end in `chunked`, and
//! reads a request with both a length and chunks by its chunks, drops the
//! length and closes the connection after the answer — so bytes after the
//! chunks, which a fronting proxy that trusted the length would have sent
//! as part of this request, are never read as the next one (the
//! request-smuggling desync). What it passes on is a list such as
//! `gzip, chunked`: the body would reach the upstream decoded from its
//! chunks but still gzip, with nothing saying so (`Transfer-Encoding` ends
//! at each hop), and `chunked` named twice, which no sender writes. nginx
//! refuses both; so does the gateway, on every endpoint, before anything
//! reads the body, and it closes the connection: where its next request
//! starts is what such framing puts in doubt.

use http::{HeaderMap, header};

/// The message for a refused framing.
pub const REFUSAL: &str =
    "A request body must be framed by one Content-Length or by Transfer-Encoding: chunked alone.";

/// Whether a request's framing headers are unambiguous: no
/// `Transfer-Encoding`, or exactly one coding in all its fields, `chunked`,
/// and then no `Content-Length` (hyper removes it; checked again so the
/// rule holds whatever parsed the request).
pub fn is_unambiguous(headers: &HeaderMap) -> bool {
    chunked_or_none(headers)
        && !(headers.contains_key(header::TRANSFER_ENCODING)
            && headers.contains_key(header::CONTENT_LENGTH))
}

/// Whether a message's transfer codings are none, or `chunked` alone
/// (exactly one coding in all its fields): the only coding hyper undoes,
/// so the only one whose body the gateway can pass on as what it is.
/// Upstream answers are held to this (`proxy::forward`); a length beside
/// chunks is read by the chunks there (RFC 9112 §6.3).
pub fn chunked_or_none(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    let Some(first) = codings.next() else {
        return true;
    };
    first.eq_ignore_ascii_case(b"chunked") && codings.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_length_or_chunked_alone_frames_a_body() {
        for fields in [
            &[][..],
            &[("content-length", "5")][..],
            &[("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "Chunked ")][..],
        ] {
            assert!(is_unambiguous(&headers(fields)), "{fields:?}");
        }
    }

    #[test]
    fn a_length_beside_chunks_or_any_other_coding_is_ambiguous() {
        for fields in [
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "gzip, chunked")][..],
            &[("transfer-encoding", "chunked, identity")][..],
            &[("transfer-encoding", "identity")][..],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ][..],
            &[("transfer-encoding", "chunked,")][..],
            &[("transfer-encoding", "")][..],
            &[("transfer-encoding", "xchunked")][..],
        ] {
            assert!(!is_unambiguous(&headers(fields)), "{fields:?}");
        }
    }
}
