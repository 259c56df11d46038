//! How request paths are read: whether a path falls under a route prefix,
//! which paths are too ambiguous to forward ([`check_request_path`]), and
//! how the static app reads a path ([`static_path`]). Pure functions over
//! the raw path; no I/O and no knowledge of the rest of the gateway.
//!
//! Upstreams disagree about paths: Tomcat drops `;parameters` from a
//! segment, Node and IIS read `\` as `/`, nginx and many frameworks decode
//! `%2F` before routing, some servers decode twice or accept overlong UTF-8.
//! A path that one reader sees inside a route's prefix and another sees
//! outside it is refused, not repaired: no legitimate client needs such a
//! path, and any rewrite would be one more reading to get wrong.

use std::borrow::Cow;
use std::fmt;

/// Whether `path` is `prefix` or below it, on a segment boundary.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

/// Whether a raw request path contains `.` or `..` segments, also when
/// percent-encoded. This is the WHATWG URL reading (what a browser
/// removes); [`check_request_path`] is the stricter rule for forwarding.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        if !seg.contains('.') && !seg.contains('%') {
            return false;
        }
        let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    })
}

/// Why a request path is not forwarded. Each reason is one class of
/// ambiguity; [`PathRefusal::message`] is what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// Not an origin-form path (does not start with `/`).
    NotAbsolute,
    /// A segment of dots under some upstream's reading: `..`, `.`,
    /// `%2e%2e`, `..;x`, `..\`, `.. ` (Windows trims trailing dots and
    /// spaces), `...`.
    DotSegment,
    /// A raw backslash: a separator for Node, IIS and Windows upstreams.
    Backslash,
    /// A raw or percent-encoded control character (NUL included).
    ControlCharacter,
    /// A percent-encoded `/`, `\`, `.`, `;` or `%`-sequence of those (also
    /// double-encoded): upstreams that decode before routing would see a
    /// different path.
    EncodedDelimiter,
    /// A `%` not followed by two hex digits, `%u` forms, or bytes that do
    /// not decode to UTF-8 (overlong forms such as `%c0%ae` are read as
    /// `.` by some servers).
    MalformedEncoding,
    /// A character that Unicode normalisation turns into `.`, `/` or `\`
    /// (fullwidth full stop, division slash, …).
    Confusable,
    /// An empty segment (`//`): collapsed by some upstreams, read as the
    /// start of a host by URL parsers that resolve the path.
    EmptySegment,
    /// The path matched one route, but some upstream reads it as a path
    /// under a longer route's prefix (`/api/%61dmin`, `/api/ADMIN`,
    /// `/api/admin;x`, `/api/admin.` for a route at `/api/admin`): the
    /// shorter route's policy must not decide a path the upstream serves as
    /// the longer one's ([`may_read_under`]).
    AnotherRoute,
}

impl PathRefusal {
    /// The message for the `400` answer.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotAbsolute => "Only paths starting with / are forwarded.",
            Self::DotSegment => "Paths with dot segments are not forwarded.",
            Self::Backslash => "Paths with backslashes are not forwarded.",
            Self::ControlCharacter => "Paths with control characters are not forwarded.",
            Self::EncodedDelimiter => {
                "Paths with percent-encoded '/', '\\', '.', ';' or '%' are not forwarded."
            }
            Self::MalformedEncoding => "Paths with malformed percent-encoding are not forwarded.",
            Self::Confusable => {
                "Paths with characters that read as '.', '/' or '\\' are not forwarded."
            }
            Self::EmptySegment => "Paths with empty segments (//) are not forwarded.",
            Self::AnotherRoute => {
                "This path reads as another route's (letter case, percent-encoding, Unicode forms, ';' parameters or trailing dots); use the route's exact spelling."
            }
        }
    }
}

impl fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathRefusal {}

/// Characters that NFKC normalisation or a lenient decoder turns into `.`,
/// `/` or `\`.
const CONFUSABLES: &[char] = &[
    '\u{2024}', // one dot leader
    '\u{2025}', // two dot leader
    '\u{2026}', // horizontal ellipsis
    '\u{2044}', // fraction slash
    '\u{2215}', // division slash
    '\u{2216}', // set minus
    '\u{29F5}', // reverse solidus operator
    '\u{29F8}', // big solidus
    '\u{29F9}', // big reverse solidus
    '\u{FE52}', // small full stop
    '\u{FE68}', // small reverse solidus
    '\u{FF0E}', // fullwidth full stop
    '\u{FF0F}', // fullwidth solidus
    '\u{FF3C}', // fullwidth reverse solidus
];

/// NFKC, Unicode's compatibility normalisation: what upstreams that
/// normalise a path before routing (Python's `unicodedata`, Java's
/// `Normalizer`, .NET's best-fit mappings beyond it) read — fullwidth
/// `／` as `/`, `ｓ` as `s`, `‥` as `..`, `⒈` as `1.`.
fn nfkc(s: &str) -> Cow<'_, str> {
    icu_normalizer::ComposingNormalizerBorrowed::new_nfkc().normalize(s)
}

/// How many characters of `s` delimit or escape something in a path.
fn delimiters(s: &str) -> usize {
    s.bytes()
        .filter(|&b| matches!(b, b'/' | b'\\' | b'.' | b';' | b'%' | b'?' | b'#') || is_control(b))
        .count()
}

/// Whether some character of `decoded` (a path decoded once) reads as a
/// delimiter once decoded further (servers that decode twice) and
/// normalised: one of [`CONFUSABLES`], or one that NFKC turns into `/`,
/// `\`, `.`, `;`, `%`, `?`, `#` or a control.
fn is_confusable(decoded: &str) -> bool {
    if decoded.is_ascii() && !decoded.contains('%') {
        return false;
    }
    let mut read = Cow::Borrowed(decoded);
    for _ in 0..2 {
        if !read.contains('%') {
            break;
        }
        match decode_once(&read).and_then(|b| String::from_utf8(b).ok()) {
            Some(further) => read = Cow::Owned(further),
            None => break,
        }
    }
    if read.is_ascii() {
        return false;
    }
    read.contains(CONFUSABLES) || delimiters(&nfkc(&read)) > delimiters(&read)
}

/// A segment as an upstream that normalises Unicode and ignores case
/// compares it: NFKC, `;parameters` dropped and trailing dots and spaces
/// trimmed again (NFKC may make them), then each character mapped to
/// upper case and back to lower (`ı` and `ſ` become `i` and `s`, as
/// .NET's `OrdinalIgnoreCase` and Unicode-aware routers read them).
fn unicode_fold(seg: &str) -> String {
    let normal = nfkc(seg);
    let name = normal.split(';').next().unwrap_or_default();
    name.trim_end_matches(['.', ' '])
        .chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The bytes of `s` with every `%XX` decoded once; `None` when a `%` is not
/// followed by two hex digits.
fn decode_once(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex)?;
            let lo = bytes.get(i + 2).copied().and_then(hex)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7F
}

/// The first `%XX` of `s` that encodes a delimiter, a control or a `%`;
/// `Ok` when there is none. `%u` (IIS's UTF-16 escapes) is malformed.
fn encoded_class(s: &str) -> Result<(), PathRefusal> {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'%' {
            continue;
        }
        if matches!(bytes.get(i + 1), Some(b'u' | b'U')) {
            return Err(PathRefusal::MalformedEncoding);
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            continue;
        };
        match (hi << 4) | lo {
            c if is_control(c) => return Err(PathRefusal::ControlCharacter),
            b'/' | b'\\' | b'.' | b';' => return Err(PathRefusal::EncodedDelimiter),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a segment (already split on `/` and `\`) is made of dots under
/// some reading: `;parameters` dropped (Tomcat), trailing spaces and dots
/// ignored (Windows), so `..;x`, `.. ` and `...` all count.
fn is_dot_segment(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or_default();
    name.contains('.') && name.chars().all(|c| c == '.' || c == ' ')
}

fn has_dot_segment_in_any_reading(path: &str) -> bool {
    path.split(['/', '\\']).any(is_dot_segment)
}

/// Whether a request path may be forwarded: `Ok` for ordinary paths
/// (`/api/a%20b`, `/api/user@example.com`, `/api/caf%C3%A9`,
/// `/api/x.json`, `/api/..x`, `/api/items;v=2`), the reason otherwise.
///
/// A path passes only if every reading an upstream might apply — raw split
/// on `/`, split on `/` and `\`, one percent-decoding, `;params` stripped —
/// gives the same segments and none of them is a dot segment.
pub fn check_request_path(path: &str) -> Result<(), PathRefusal> {
    if !path.starts_with('/') {
        return Err(PathRefusal::NotAbsolute);
    }
    if path.bytes().any(is_control) {
        return Err(PathRefusal::ControlCharacter);
    }
    let decoded = decode_once(path).ok_or(PathRefusal::MalformedEncoding)?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathRefusal::MalformedEncoding)?;
    // Dot segments first, so `/api/%2e%2e/x` is named for what it is.
    if has_dot_segment_in_any_reading(path) || has_dot_segment_in_any_reading(&decoded) {
        return Err(PathRefusal::DotSegment);
    }
    if path.contains('\\') {
        return Err(PathRefusal::Backslash);
    }
    // The raw path, then the decoded one: `%252e` is `%2e` to an upstream
    // that decodes twice.
    encoded_class(path)?;
    encoded_class(&decoded)?;
    if is_confusable(&decoded) {
        return Err(PathRefusal::Confusable);
    }
    if path.contains("//") {
        return Err(PathRefusal::EmptySegment);
    }
    Ok(())
}

/// A route prefix as [`may_read_under`] compares it: each segment read
/// the lax way (`;parameters` dropped, trailing dots and spaces trimmed,
/// ASCII lower case). Made once per configured route.
pub fn lax_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for seg in prefix.split('/').skip(1) {
        let seg = lax_segment(seg.as_bytes());
        if seg.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(&String::from_utf8_lossy(&seg).to_ascii_lowercase());
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether some upstream may read `path` as `lax` (a [`lax_prefix`]) or a
/// path below it, segment by segment: every `%XX` decoded (up to three
/// times: servers that decode twice), `;parameters` dropped (Tomcat,
/// Jetty), trailing dots and spaces trimmed (IIS, Windows), case ignored
/// (IIS, ASP.NET, Express by default) — for a segment with non-ASCII
/// characters also after NFKC and Unicode case mapping ([`unicode_fold`]:
/// `/api/ＡＤＭＩＮ`, `/api/admın`) — and segments that read as
/// empty skipped (collapsed like `//`). Meant for a path that
/// [`check_request_path`] accepted (no encoded `/`, `\`, `.`, `;`).
///
/// Allocation-free for ASCII segments without `%`, `;` or a trailing dot
/// or space, which is most of them.
pub fn may_read_under(path: &str, lax: &str) -> bool {
    if lax == "/" {
        return true;
    }
    let mut wanted = lax.split('/').skip(1);
    let mut want = wanted.next();
    for seg in path.split('/').skip(1) {
        let Some(w) = want else {
            return true;
        };
        let plain = !seg.bytes().any(|b| b == b'%' || b == b';' || !b.is_ascii())
            && !seg.ends_with(['.', ' ']);
        let same = if plain {
            if seg.is_empty() {
                continue;
            }
            seg.eq_ignore_ascii_case(w)
        } else {
            let read = lax_segment(seg.as_bytes());
            if read.is_ascii() {
                if read.is_empty() {
                    continue;
                }
                read.eq_ignore_ascii_case(w.as_bytes())
            } else {
                let folded = unicode_fold(&String::from_utf8_lossy(&read));
                if folded.is_empty() {
                    continue;
                }
                folded == w
            }
        };
        if !same {
            return false;
        }
        want = wanted.next();
    }
    want.is_none()
}

/// One segment read the lax way (see [`may_read_under`]), case kept.
fn lax_segment(seg: &[u8]) -> Vec<u8> {
    let mut read = seg.to_vec();
    for _ in 0..3 {
        if !read.contains(&b'%') {
            break;
        }
        match std::str::from_utf8(&read).ok().and_then(decode_once) {
            Some(decoded) => read = decoded,
            None => break,
        }
    }
    if let Some(at) = read.iter().position(|&b| b == b';') {
        read.truncate(at);
    }
    while read.last().is_some_and(|&b| b == b'.' || b == b' ') {
        read.pop();
    }
    read
}

/// The path the static app serves for a request path: runs of `/`
/// collapsed into one, so a directory redirect (`/assets` → `/assets/`)
/// can never start with `//`, which a browser reads as another host.
/// Backslashes (read as `/` by browsers) and control characters are
/// refused.
pub fn static_path(path: &str) -> Result<Cow<'_, str>, PathRefusal> {
    if !path.starts_with('/') {
        return Err(PathRefusal::NotAbsolute);
    }
    if path.bytes().any(is_control) {
        return Err(PathRefusal::ControlCharacter);
    }
    if path.contains('\\') {
        return Err(PathRefusal::Backslash);
    }
    if !path.contains("//") {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    Ok(Cow::Owned(out))
}

/// Whether a `Location` value stays on the origin that answered: a path
/// starting with exactly one `/` (not `//` or `/\`, which browsers read as
/// a scheme-relative URL to another host).
pub fn is_origin_local_path(location: &str) -> bool {
    let mut bytes = location.bytes();
    bytes.next() == Some(b'/') && !matches!(bytes.next(), Some(b'/' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn ordinary_paths_may_be_forwarded() {
        for p in [
            "/",
            "/api",
            "/api/",
            "/api/users/42",
            "/api/x.json",
            "/api/..x",
            "/api/x..",
            "/api/.well-known/openid-configuration",
            "/api/a%20b",
            "/api/user%40example.com",
            "/api/user@example.com",
            "/api/caf%C3%A9",
            "/api/café",
            "/api/items;v=2",
            "/api/a%2Bb",
            "/api/50%25",
            "/api/%7Buser%7D",
        ] {
            assert_eq!(check_request_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn every_reading_of_a_dot_segment_is_refused() {
        for p in [
            "/api/../admin",
            "/api/./x",
            "/api/..",
            "/api/%2e%2e/admin",
            "/api/%2E%2e/admin",
            "/api/.%2e/admin",
            "/api/..;/admin",
            "/api/..;x/admin",
            "/api/.;/admin",
            "/api/..\\admin",
            "/api\\..\\admin",
            "/api/.. /admin",
            "/api/..%20/admin",
            "/api/.../admin",
            "/api/..%3b/admin",
        ] {
            assert_eq!(check_request_path(p), Err(PathRefusal::DotSegment), "{p}");
        }
    }

    #[test]
    fn ambiguous_encodings_and_characters_are_refused_with_their_reason() {
        use PathRefusal as R;
        for (p, reason) in [
            ("api", R::NotAbsolute),
            ("*", R::NotAbsolute),
            ("/api/a\\b", R::Backslash),
            ("/api/a\0b", R::ControlCharacter),
            ("/api/a\tb", R::ControlCharacter),
            ("/api/a%00b", R::ControlCharacter),
            ("/api/..%00/x", R::ControlCharacter),
            ("/api/a%0d%0ab", R::ControlCharacter),
            ("/api/a%7Fb", R::ControlCharacter),
            ("/api/..%2f..%2fadmin", R::DotSegment),
            ("/api/%2e%2e%2fadmin", R::DotSegment),
            ("/api/%2e%2e%5cadmin", R::DotSegment),
            ("/api/a%2Fb", R::EncodedDelimiter),
            ("/api/a%5cb", R::EncodedDelimiter),
            ("/api/a%3bb", R::EncodedDelimiter),
            ("/api/x%2ejson", R::EncodedDelimiter),
            ("/api/%252e%252e/admin", R::EncodedDelimiter),
            ("/api/%252fadmin", R::EncodedDelimiter),
            ("/api/%2500", R::ControlCharacter),
            ("/api/%c0%ae%c0%ae/admin", R::MalformedEncoding),
            ("/api/%c0%af", R::MalformedEncoding),
            ("/api/%ff", R::MalformedEncoding),
            ("/api/%zz", R::MalformedEncoding),
            ("/api/%2", R::MalformedEncoding),
            ("/api/%", R::MalformedEncoding),
            ("/api/%u002e%u002e/admin", R::MalformedEncoding),
            ("/api/%25u002e", R::MalformedEncoding),
            ("/api/%EF%BC%8E%EF%BC%8E/admin", R::Confusable),
            ("/api/\u{FF0E}\u{FF0E}/admin", R::Confusable),
            ("/api/a\u{2215}b", R::Confusable),
            // NFKC: fullwidth solidus and semicolon, two dot leader as
            // `..`, digit one full stop as `1.`, fullwidth percent sign;
            // double-encoded too.
            ("/api/a\u{FF0F}b", R::Confusable),
            ("/api/a\u{FF1B}b", R::Confusable),
            ("/api/\u{FE30}/admin", R::Confusable),
            ("/api/\u{2488}", R::Confusable),
            ("/api/\u{FF05}2e", R::Confusable),
            ("/api/%25EF%25BC%258F", R::Confusable),
            ("/api/%2525EF%2525BC%25258E", R::Confusable),
            ("/api//admin", R::EmptySegment),
            ("//api", R::EmptySegment),
        ] {
            assert_eq!(check_request_path(p), Err(reason), "{p:?}");
        }
    }

    #[test]
    fn a_prefix_is_compared_in_its_lax_reading() {
        assert_eq!(lax_prefix("/"), "/");
        assert_eq!(lax_prefix("/Api/Admin"), "/api/admin");
        assert_eq!(lax_prefix("/api;v=1/admin."), "/api/admin");
    }

    #[test]
    fn paths_some_upstream_reads_under_a_prefix_are_recognised() {
        let admin = lax_prefix("/api/admin");
        for p in [
            "/api/admin",
            "/api/admin/",
            "/api/admin/x",
            "/API/ADMIN/x",
            "/api/%61dmin/x",
            "/api/%41DMIN",
            "/api/%2561dmin/x",
            "/api/%252561dmin/x",
            "/api/admin;jsessionid=1/x",
            "/api;v=2/admin",
            "/api/admin./x",
            "/api/admin%20/x",
            "/api/admin.%20./x",
            "/api/;x/admin",
            "/api/%20/admin",
            // Unicode: NFKC (fullwidth letters, raw or encoded), and case
            // mapped through upper case (dotless ı, long ſ), as routers
            // that normalise or compare with .NET's OrdinalIgnoreCase do.
            "/api/\u{FF21}\u{FF24}\u{FF2D}\u{FF29}\u{FF2E}/x",
            "/api/%EF%BD%81dmin",
            "/api/adm%C4%B1n",
            "/api/adm\u{131}n/x",
            "/api/\u{1D41A}dmin",
            "/api/admin\u{FF0E}/x",
        ] {
            assert!(may_read_under(p, &admin), "{p}");
        }
        let secret = lax_prefix("/api/secret");
        assert!(may_read_under("/api/\u{17F}ecret", &secret));
        for p in [
            "/api",
            "/api/",
            "/api/administrator",
            "/api/x/admin",
            "/api/adm",
            "/apiadmin",
            "/api/ad%6Din2",
            "/api/adm\u{EE}n",
            "/api/%C3%A0dmin",
        ] {
            assert!(!may_read_under(p, &admin), "{p}");
        }
        assert!(may_read_under("/anything", &lax_prefix("/")));
    }

    #[test]
    fn the_static_app_reads_repeated_slashes_as_one() {
        assert_eq!(static_path("/assets").as_deref(), Ok("/assets"));
        assert_eq!(static_path("//assets").as_deref(), Ok("/assets"));
        assert_eq!(static_path("///a//b/").as_deref(), Ok("/a/b/"));
        assert_eq!(static_path("/\\evil.com"), Err(PathRefusal::Backslash));
        assert_eq!(static_path("/a\0"), Err(PathRefusal::ControlCharacter));
    }

    #[test]
    fn origin_local_paths_are_recognised() {
        assert!(is_origin_local_path("/"));
        assert!(is_origin_local_path("/assets/"));
        assert!(!is_origin_local_path("//evil.com/"));
        assert!(!is_origin_local_path("/\\evil.com"));
        assert!(!is_origin_local_path("https://evil.com/"));
        assert!(!is_origin_local_path(""));
    }

    /// Fragments rich in what upstreams read differently.
    fn hostile_path() -> impl Strategy<Value = String> {
        let fragment = prop::sample::select(vec![
            "/", "\\", ".", "..", ";", "%", "2e", "2E", "2f", "2F", "5c", "5C", "00", "3b", "25",
            "%2e", "%2f", "%5c", "%00", "%3b", "%25", "%c0%ae", "a", "x", ";x", " ", "%20",
        ]);
        prop::collection::vec(fragment, 0..12).prop_map(|parts| format!("/{}", parts.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Whatever passes has no dot segment under any reading and no
        /// encoded separator that a decoding upstream would split on.
        #[test]
        fn an_accepted_path_has_one_reading_without_dot_segments(path in hostile_path()) {
            if check_request_path(&path).is_ok() {
                let decoded = percent_encoding::percent_decode_str(&path)
                    .decode_utf8()
                    .expect("accepted paths decode");
                for reading in [&path[..], &decoded[..]] {
                    prop_assert!(!reading.contains('\\'), "{path}");
                    for seg in reading.split('/') {
                        let name = seg.split(';').next().unwrap_or_default();
                        prop_assert!(seg != "." && seg != "..", "{path}");
                        prop_assert!(name != "." && name != "..", "{path}");
                    }
                }
                prop_assert_eq!(
                    path.matches('/').count(),
                    decoded.matches('/').count(),
                    "{}", path
                );
            }
        }

        /// Nothing panics, on any string at all.
        #[test]
        fn any_string_is_judged_without_panicking(path in any::<String>()) {
            let _ = check_request_path(&path);
            let _ = static_path(&path);
            let _ = may_read_under(&path, &lax_prefix("/api/admin"));
            let _ = lax_prefix(&path);
        }

        /// Every exact spelling under a prefix is also read under it, so
        /// the lax reading only ever adds paths to a nested route.
        #[test]
        fn a_path_under_a_prefix_by_its_exact_spelling_reads_under_it(
            prefix in "(/[a-zA-Z0-9_.-]{1,6}){1,3}",
            rest in "(/([a-zA-Z0-9_;-]|%4[1-9]|x[.]){1,6}){0,3}",
        ) {
            let path = format!("{prefix}{rest}");
            prop_assume!(check_request_path(&path).is_ok());
            prop_assume!(!lax_prefix(&prefix).contains(';'));
            prop_assert!(may_read_under(&path, &lax_prefix(&prefix)), "{}", path);
        }
    }
}
