//! How request paths are read: whether a path falls under a route prefix,
//! and which paths are too ambiguous to forward. Pure functions over the
//! raw path; no I/O and no knowledge of the rest of the gateway.

/// Whether `path` is `prefix` or below it, on a segment boundary.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

/// Whether a raw request path contains `.` or `..` segments, also when
/// percent-encoded.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        if !seg.contains('.') && !seg.contains('%') {
            return false;
        }
        let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_detected_even_when_encoded() {
        for p in [
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/%2E./x",
            "/api/.%2e",
            "/api/..",
        ] {
            assert!(has_dot_segment(p), "{p}");
        }
        for p in ["/api/x.json", "/api/..x", "/api/a%20b", "/api/...", "/api"] {
            assert!(!has_dot_segment(p), "{p}");
        }
    }
}
