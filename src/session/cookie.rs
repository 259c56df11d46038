//! The session ID carried by the cookie, and the one builder for every cookie
//! the gateway sets: the session cookie and one pending-login cookie per
//! login under way (named by a short prefix of its state).
//!
//! A session cookie value is a 2-byte shard tag, a 128-bit lookup ID and a
//! 128-bit per-session secret, base64url without padding (46 characters).
//! The shard tag is chosen at login from a keyed hash of the user (see
//! [`crate::session::store::SessionStore::shard_of`]): it carries nothing
//! personal, and it puts the session's keys and its user's index in one
//! Redis Cluster hash slot while different users spread over the cluster.
//! Cookies issued before shard tags existed (43 characters: lookup ID and
//! secret only) are still accepted until they expire; their sessions live
//! under the legacy key layout. The store only ever sees the shard tag and
//! SHA-256(lookup ID) as its key and never the secret, which is an input to
//! the key that encrypts the session's tokens. Values of the wrong length or
//! alphabet are refused here, before any store lookup.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::Cookie;
use http::HeaderMap;
use http::HeaderValue;
use http::header::COOKIE;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::config::{SameSite, SessionConfig};

/// A cookie value from before shard tags: lookup ID and secret.
const LEGACY_ENCODED_LEN: usize = 43;
/// Shard tag, lookup ID and secret (34 bytes).
const ENCODED_LEN: usize = 46;

/// Which hash slot group a session's keys live in: 16 bits of a keyed hash
/// of its user, shown as 4 hex digits (the Redis hash tag `{abcd}`).
pub type ShardTag = [u8; 2];

/// The secret half of a session: never logged, never stored.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionId {
    /// `None` for a cookie issued before shard tags (legacy key layout).
    shard: Option<ShardTag>,
    lookup: [u8; 16],
    secret: [u8; 16],
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

impl SessionId {
    /// A fresh ID in shard `shard` (from the store's
    /// [`shard_of`](crate::session::store::SessionStore::shard_of)).
    pub fn generate(shard: ShardTag) -> Self {
        let mut bytes = [0u8; 32];
        // The thread's CSPRNG ([`random_token`] says why not the OS).
        rand::thread_rng().fill_bytes(&mut bytes);
        let id = Self::from_bytes(Some(shard), &bytes);
        bytes.zeroize();
        id
    }

    /// A fresh ID of the format before shard tags, as gateways before the
    /// sharded layout issued them: only for tests of the upgrade path.
    #[doc(hidden)]
    pub fn generate_legacy() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let id = Self::from_bytes(None, &bytes);
        bytes.zeroize();
        id
    }

    fn from_bytes(shard: Option<ShardTag>, bytes: &[u8; 32]) -> Self {
        let mut lookup = [0u8; 16];
        let mut secret = [0u8; 16];
        lookup.copy_from_slice(&bytes[..16]);
        secret.copy_from_slice(&bytes[16..]);
        Self {
            shard,
            lookup,
            secret,
        }
    }

    /// Parses a cookie value; `None` unless it is exactly 46 base64url
    /// characters encoding 34 bytes (or, from before shard tags, 43 encoding
    /// 32).
    pub fn parse(value: &str) -> Option<Self> {
        if !matches!(value.len(), ENCODED_LEN | LEGACY_ENCODED_LEN)
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let mut bytes = [0u8; 34];
        let id = match URL_SAFE_NO_PAD.decode_slice(value, &mut bytes) {
            Ok(34) if value.len() == ENCODED_LEN => {
                let mut rest = [0u8; 32];
                rest.copy_from_slice(&bytes[2..]);
                let id = Self::from_bytes(Some([bytes[0], bytes[1]]), &rest);
                rest.zeroize();
                Some(id)
            }
            Ok(32) if value.len() == LEGACY_ENCODED_LEN => {
                let mut rest = [0u8; 32];
                rest.copy_from_slice(&bytes[..32]);
                let id = Self::from_bytes(None, &rest);
                rest.zeroize();
                Some(id)
            }
            _ => None,
        };
        bytes.zeroize();
        id
    }

    /// The cookie value. Handle like a password.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; 34];
        let at = match self.shard {
            Some(tag) => {
                bytes[..2].copy_from_slice(&tag);
                2
            }
            None => 0,
        };
        bytes[at..at + 16].copy_from_slice(&self.lookup);
        bytes[at + 16..at + 32].copy_from_slice(&self.secret);
        let s = URL_SAFE_NO_PAD.encode(&bytes[..at + 32]);
        bytes.zeroize();
        s
    }

    pub fn secret(&self) -> &[u8; 16] {
        &self.secret
    }

    /// Whether `other` is the same whole cookie value (shard tag, lookup
    /// ID and secret), compared in constant time: the session cache hands
    /// an opened session only to the cookie it was opened for.
    pub fn same_as(&self, other: &SessionId) -> bool {
        let tag = |id: &SessionId| match id.shard {
            Some([a, b]) => [1, a, b],
            None => [0, 0, 0],
        };
        let mut mine = [0u8; 35];
        let mut theirs = [0u8; 35];
        for (out, id) in [(&mut mine, self), (&mut theirs, other)] {
            out[..3].copy_from_slice(&tag(id));
            out[3..19].copy_from_slice(&id.lookup);
            out[19..].copy_from_slice(&id.secret);
        }
        let same = crate::secret::constant_time_eq(&mine, &theirs);
        mine.zeroize();
        theirs.zeroize();
        same
    }

    /// The store's name for this session: the shard tag in hex, then the
    /// first 224 bits of SHA-256 of the lookup ID in hex (60 characters: an
    /// index member of at most 64 bytes stays in Redis' compact listpack
    /// encoding); before shard tags, the whole hash (64).
    pub fn store_id(&self) -> StoreId {
        let digest = hex(&Sha256::digest(self.lookup));
        StoreId(match self.shard {
            Some(tag) => hex(&tag) + &digest[..SHARDED_HASH_HEX],
            None => digest,
        })
    }
}

/// Hex digits of the lookup ID's hash in a sharded store ID.
const SHARDED_HASH_HEX: usize = 56;
/// A sharded store ID: 4 hex digits of tag and the hash.
const SHARDED_ID_LEN: usize = 4 + SHARDED_HASH_HEX;

/// A session's public handle, safe to log and to show operators (it cannot
/// be turned back into a cookie): 4 hex digits of shard tag and 224 bits of
/// the SHA-256 of the lookup ID (60 characters), or for a session from
/// before shard tags the whole hash (64).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId(String);

impl StoreId {
    /// Accepts an operator-supplied handle (60 or 64 lowercase hex
    /// characters).
    pub fn parse(s: &str) -> Option<Self> {
        (matches!(s.len(), SHARDED_ID_LEN | 64)
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shard tag (4 hex digits) and the rest; `None` for a session of
    /// the legacy layout.
    pub fn shard(&self) -> Option<(&str, &str)> {
        (self.0.len() == SHARDED_ID_LEN).then(|| self.0.split_at(4))
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreId({})", &self.0[..12.min(self.0.len())])
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Random 32 bytes, base64url: for login states, nonces and handles.
///
/// From the thread's CSPRNG (`rand::thread_rng`: ChaCha12 seeded from the
/// OS and reseeded from it every 64 KiB and after a fork), not a
/// `getrandom` system call per value: a login drew six (state, nonce, the
/// session ID, three AES-GCM nonces), each a system call on the login's
/// path. The values are as unpredictable either way.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Builds every `Set-Cookie` the gateway sends, with the configured
/// strictness: `__Host-` name, HttpOnly, Secure, SameSite, Path=/.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    session_name: String,
    login_name: String,
    same_site: SameSite,
    secure: bool,
    domain: Option<String>,
}

impl CookiePolicy {
    pub fn new(config: &SessionConfig) -> Self {
        Self {
            session_name: config.cookie_name.clone(),
            login_name: config.login_cookie_name(),
            same_site: config.same_site,
            secure: config.secure_cookies,
            domain: config.cookie_domain.clone(),
        }
    }

    pub fn session_name(&self) -> &str {
        &self.session_name
    }

    fn build(
        &self,
        name: &str,
        value: &str,
        same_site: cookie::SameSite,
        max_age: Duration,
    ) -> HeaderValue {
        let mut c = Cookie::build((name.to_owned(), value.to_owned()))
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .path("/")
            .max_age(cookie::time::Duration::seconds(
                max_age.as_secs().min(i64::MAX as u64) as i64,
            ));
        if let Some(d) = &self.domain {
            c = c.domain(d.clone());
        }
        // Names and values are validated tokens and base64url: always valid.
        HeaderValue::from_str(&c.build().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn session_same_site(&self) -> cookie::SameSite {
        match self.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
        }
    }

    pub fn session_cookie(&self, id: &SessionId, max_age: Duration) -> HeaderValue {
        self.build(
            &self.session_name,
            &id.encode(),
            self.session_same_site(),
            max_age,
        )
    }

    /// The `Set-Cookie` values that delete the session cookie in every
    /// variant the gateway can name: the one it sets (with the configured
    /// attributes), and with `session.cookie_domain` also the host-only one
    /// (left by a configuration without the domain, or set by this host).
    ///
    /// A browser deletes a cookie only by its name, domain and path: a
    /// cookie of the session's name that another subdomain set for the
    /// parent domain on a longer path (`Path=/api`) is not deleted by
    /// these, and nothing in the request tells that path. The gateway then
    /// keeps refusing the ambiguous cookie (see [`presented`]) rather than
    /// guess; the user clears the site's cookies, or the operator moves to
    /// the `__Host-` name, which no other host can set.
    pub fn clear_session_cookies(&self) -> Vec<HeaderValue> {
        let mut out = vec![self.build(
            &self.session_name,
            "",
            self.session_same_site(),
            Duration::ZERO,
        )];
        if self.domain.is_some() {
            let host_only = Self {
                domain: None,
                ..self.clone()
            };
            out.push(host_only.build(
                &self.session_name,
                "",
                self.session_same_site(),
                Duration::ZERO,
            ));
        }
        out
    }

    /// The name of the cookie that carries the pending login of `slot`
    /// (see [`login_slot`]): one cookie per login under way, so parallel
    /// logins in several tabs do not overwrite each other.
    pub fn login_cookie_name(&self, slot: &str) -> String {
        format!("{}-{slot}", self.login_name)
    }

    /// A pending-login cookie must survive the top-level redirect back from
    /// the provider, which a Strict cookie would not: it is always Lax.
    pub fn login_cookie(&self, slot: &str, value: &str, max_age: Duration) -> HeaderValue {
        self.build(
            &self.login_cookie_name(slot),
            value,
            cookie::SameSite::Lax,
            max_age,
        )
    }

    pub fn clear_login_cookie(&self, slot: &str) -> HeaderValue {
        self.build(
            &self.login_cookie_name(slot),
            "",
            cookie::SameSite::Lax,
            Duration::ZERO,
        )
    }

    /// The request's pending-login cookies as `(slot, value)`, at most
    /// [`MAX_LOGIN_COOKIES_READ`] of them (a hostile `Cookie` header can
    /// name thousands; the rest are ignored).
    pub fn pending_logins<'a>(&self, headers: &'a HeaderMap) -> Vec<(&'a str, &'a str)> {
        pairs(headers)
            .filter_map(|(name, value)| {
                let slot = name
                    .strip_prefix(self.login_name.as_str())?
                    .strip_prefix('-')?;
                (login_slot(slot) == Some(slot)).then_some((slot, value))
            })
            .take(MAX_LOGIN_COOKIES_READ)
            .collect()
    }

    /// Whether a cookie name is one of ours (to keep it from upstreams):
    /// the session cookie, and every pending-login cookie.
    pub fn is_ours(&self, name: &str) -> bool {
        name == self.session_name
            || name
                .strip_prefix(self.login_name.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
    }
}

/// How many characters of a login's state name its cookie.
pub const LOGIN_SLOT_LEN: usize = 8;

/// How many pending-login cookies a request is read for.
pub const MAX_LOGIN_COOKIES_READ: usize = 16;

/// The cookie slot of a login state: its first [`LOGIN_SLOT_LEN`]
/// characters, if they are base64url (so any state from a query string,
/// hostile or not, yields a valid cookie name or nothing).
pub fn login_slot(state: &str) -> Option<&str> {
    let prefix = state.as_bytes().get(..LOGIN_SLOT_LEN)?;
    prefix
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        .then(|| state.get(..LOGIN_SLOT_LEN))
        .flatten()
}

/// Every `name=value` pair of the request's `Cookie` headers.
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k, v.trim_matches('"')))
        })
}

/// Whether `name` is an RFC 6265 cookie name: a non-empty RFC 9110 token
/// (visible ASCII without separators).
pub fn is_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A cookie name as browsers compare it for our purposes: ASCII lowercase,
/// without a `__Host-` or `__Secure-` prefix.
fn base_name(name: &[u8]) -> Vec<u8> {
    let lower = name.to_ascii_lowercase();
    for prefix in [&b"__host-"[..], b"__secure-"] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            return rest.to_vec();
        }
    }
    lower
}

/// Whether a cookie name is, or could be taken for, one of the gateway's:
/// equal to the session cookie's name, or the login cookies' name or any
/// `<name>-<slot>` under it, ignoring ASCII case and the
/// `__Host-`/`__Secure-` prefix, after trimming whitespace.
pub fn named_like_ours(name: &[u8], policy: &CookiePolicy) -> bool {
    let name = base_name(name.trim_ascii());
    let login = base_name(policy.login_name.as_bytes());
    name == base_name(policy.session_name().as_bytes())
        || name
            .strip_prefix(login.as_slice())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"-"))
}

/// The name of a `name=value` pair (a `Set-Cookie` value or one pair of a
/// `Cookie` header), read from raw bytes: what precedes the first `=`
/// before any `;`, trimmed. `None` without an `=` (browsers store such a
/// pair as a nameless cookie, which they send back as its bare value).
fn pair_name(raw: &[u8]) -> Option<&[u8]> {
    let pair = raw.split(|&b| b == b';').next().unwrap_or_default();
    let eq = pair.iter().position(|&b| b == b'=')?;
    Some(pair[..eq].trim_ascii())
}

/// Whether an upstream's `Set-Cookie` may reach the browser: only with a
/// name that is a valid token and is not named like one of ours. Works on
/// raw bytes, so a value with non-ASCII bytes is judged like any other.
pub fn upstream_may_set(set_cookie: &[u8], policy: &CookiePolicy) -> bool {
    pair_name(set_cookie).is_some_and(|name| is_token(name) && !named_like_ours(name, policy))
}

/// The first value of cookie `name` in the request's `Cookie` headers.
/// Not for the session cookie: [`presented`] says whether that one is
/// ambiguous.
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    pairs(headers).find_map(|(k, v)| (k == name).then_some(v))
}

/// What the request's `Cookie` headers carry under one cookie name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No cookie of that name.
    Nothing,
    /// One value (sent once, or several times alike).
    One(&'a str),
    /// Two or more different values: the browser holds several cookies of
    /// that name (other domains or paths), and nothing says which is the
    /// user's own.
    Ambiguous,
}

/// Every value of cookie `name` in the request's `Cookie` headers (all
/// lines, all pairs), judged together: identical duplicates are one value,
/// different ones are [`Presented::Ambiguous`].
///
/// Why not the first: a browser sends the cookie of the longest path first,
/// and a sibling subdomain may set a cookie of the session's name for the
/// parent domain on a longer path (`Domain=example.com; Path=/api`) when
/// the name is `__Secure-` (the `__Host-` default forbids `Domain`). Taking
/// the first value would run the victim's API calls in the attacker's
/// session (cookie tossing). Nor the last: the order is the browser's, not
/// a statement of which cookie the gateway set.
pub fn presented<'a>(headers: &'a HeaderMap, name: &str) -> Presented<'a> {
    let mut found = Presented::Nothing;
    for (k, v) in pairs(headers) {
        if k != name {
            continue;
        }
        found = match found {
            Presented::Nothing => Presented::One(v),
            Presented::One(first) if first == v => Presented::One(first),
            _ => return Presented::Ambiguous,
        };
    }
    found
}

/// The `Cookie` header minus the gateway's own cookies (and anything named
/// like them, and pairs without a valid name), or `None` if nothing is left
/// (the header is then dropped). Every `Cookie` line is read as bytes.
pub fn without_ours(headers: &HeaderMap, policy: &CookiePolicy) -> Option<HeaderValue> {
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            match pair_name(pair) {
                Some(name) if is_token(name) && !named_like_ours(name, policy) => {}
                _ => continue,
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    if kept.is_empty() {
        None
    } else {
        HeaderValue::from_bytes(&kept).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionConfig;

    fn policy() -> CookiePolicy {
        CookiePolicy::new(&SessionConfig::with_keys(vec![]))
    }

    fn cookie_lines(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(COOKIE, HeaderValue::from_str(l).expect("value"));
        }
        h
    }

    #[test]
    fn the_session_cookie_is_one_value_or_ambiguous_never_the_first_of_several() {
        let n = "__Host-oidc-bff";
        for (lines, want) in [
            (vec![], Presented::Nothing),
            (vec!["other=1"], Presented::Nothing),
            (vec!["__Host-oidc-bff=a"], Presented::One("a")),
            (
                vec!["x=1; __Host-oidc-bff=a; __Host-oidc-bff=a"],
                Presented::One("a"),
            ),
            (
                vec!["__Host-oidc-bff=a", "__Host-oidc-bff=\"a\""],
                Presented::One("a"),
            ),
            (
                vec!["__Host-oidc-bff=b; __Host-oidc-bff=a"],
                Presented::Ambiguous,
            ),
            (
                vec!["__Host-oidc-bff=b", "y=2; __Host-oidc-bff=a"],
                Presented::Ambiguous,
            ),
            (
                vec!["__Host-oidc-bff=a; __Host-oidc-bff="],
                Presented::Ambiguous,
            ),
            (
                vec!["__Host-oidc-bff=a; __Host-oidc-bff=a; __Host-oidc-bff=c"],
                Presented::Ambiguous,
            ),
        ] {
            assert_eq!(presented(&cookie_lines(&lines), n), want, "{lines:?}");
        }
    }

    #[test]
    fn clearing_names_the_domain_cookie_and_the_host_only_one() {
        let strict = policy().clear_session_cookies();
        assert_eq!(strict.len(), 1, "{strict:?}");
        let mut config = SessionConfig::with_keys(vec![]);
        config.cookie_name = "__Secure-bff".into();
        config.cookie_domain = Some("example.com".into());
        let shared = CookiePolicy::new(&config).clear_session_cookies();
        let shown: Vec<String> = shared
            .iter()
            .map(|v| v.to_str().expect("ascii").to_ascii_lowercase())
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        for v in &shown {
            assert!(v.starts_with("__secure-bff=;"), "{v}");
            assert!(v.contains("max-age=0") && v.contains("path=/"), "{v}");
            assert!(v.contains("secure"), "{v}");
        }
        assert_eq!(
            shown
                .iter()
                .filter(|v| v.contains("domain=example.com"))
                .count(),
            1,
            "one with the domain, one host-only: {shown:?}"
        );
    }

    #[test]
    fn generated_ids_round_trip_and_are_unique() {
        let a = SessionId::generate([0xab, 0x12]);
        let encoded = a.encode();
        assert_eq!(encoded.len(), 46);
        let parsed = SessionId::parse(&encoded).expect("parses");
        assert_eq!(parsed.store_id(), a.store_id());
        assert_eq!(parsed.secret(), a.secret());
        assert_ne!(SessionId::generate([0xab, 0x12]).encode(), encoded);
        assert!(a.store_id().as_str().starts_with("ab12"));
        assert_eq!(a.store_id().shard().map(|(t, _)| t), Some("ab12"));
    }

    /// The thread's generator, not the OS, draws them now: every thread's
    /// (each worker's) is seeded on its own, so no two threads repeat each
    /// other's values, and a token is 256 bits of base64url.
    #[test]
    fn random_tokens_from_every_thread_are_distinct_256_bit_values() {
        let per_thread: Vec<Vec<String>> = (0..4)
            .map(|_| std::thread::spawn(|| (0..64).map(|_| random_token()).collect()))
            .map(|t| t.join().expect("thread"))
            .collect();
        let all: std::collections::HashSet<&String> = per_thread.iter().flatten().collect();
        assert_eq!(all.len(), 4 * 64, "a token repeated");
        for t in &all {
            assert_eq!(t.len(), 43);
            assert_eq!(
                URL_SAFE_NO_PAD.decode(t.as_bytes()).map(|b| b.len()),
                Ok(32)
            );
        }
    }

    #[test]
    fn cookies_from_before_shard_tags_still_parse_to_their_old_store_id() {
        let old = SessionId::generate_legacy();
        let encoded = old.encode();
        assert_eq!(encoded.len(), 43);
        let parsed = SessionId::parse(&encoded).expect("a legacy cookie parses");
        assert_eq!(parsed.store_id(), old.store_id());
        assert_eq!(parsed.store_id().as_str().len(), 64);
        assert!(parsed.store_id().shard().is_none());
        assert_eq!(parsed.secret(), old.secret());
    }

    #[test]
    fn malformed_cookie_values_are_refused_before_any_lookup() {
        let good = SessionId::generate([1, 2]).encode();
        for bad in [
            String::new(),
            good[..42].to_string(),
            good[..44].to_string(),
            good[..45].to_string(),
            format!("{good}A"),
            format!("{}+", &good[..45]),
            format!("{}=", &good[..45]),
            format!("{}/", &good[..45]),
            "é".repeat(21) + "a",
            " ".repeat(43),
            " ".repeat(46),
        ] {
            assert!(SessionId::parse(&bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn store_id_is_a_hash_not_the_cookie() {
        let id = SessionId::generate([0, 7]);
        let sid = id.store_id();
        assert_eq!(sid.as_str().len(), 60);
        assert!(!id.encode().contains(sid.as_str()));
        assert!(StoreId::parse(sid.as_str()).is_some());
        assert!(StoreId::parse("xyz").is_none());
    }

    #[test]
    fn session_cookie_has_the_strict_attributes() {
        let v = policy().session_cookie(&SessionId::generate([0, 0]), Duration::from_secs(600));
        let s = v.to_str().expect("ascii");
        assert!(s.starts_with("__Host-oidc-bff="), "{s}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=600",
        ] {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(!s.contains("Domain"), "{s}");
    }

    #[test]
    fn login_cookie_is_lax_so_it_survives_the_provider_redirect() {
        let s = policy()
            .login_cookie("AbCd-_12", "abc", Duration::from_secs(600))
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(s.starts_with("__Host-oidc-bff-login-AbCd-_12=abc"), "{s}");
        for attr in [
            "SameSite=Lax",
            "HttpOnly",
            "Secure",
            "Path=/",
            "Max-Age=600",
        ] {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(!s.contains("Domain"), "{s}");
        let cleared = policy().clear_login_cookie("AbCd-_12");
        let cleared = cleared.to_str().expect("ascii");
        assert!(
            cleared.starts_with("__Host-oidc-bff-login-AbCd-_12=;")
                && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
    }

    #[test]
    fn a_login_slot_is_the_states_base64url_prefix_or_nothing() {
        let state = random_token();
        assert_eq!(login_slot(&state), Some(&state[..8]));
        for bad in [
            "",
            "short",
            "abc;d=efgh",
            "abcdefg\n",
            "ééééé",
            "abc defgh",
            "abcdefg=",
        ] {
            assert_eq!(login_slot(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pending_login_cookies_are_listed_by_slot_and_bounded() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static(
                "__Host-oidc-bff-login-aaaaaaaa=1; __Host-oidc-bff-login=old; \
                 __Host-oidc-bff-login-bad=2; __Host-oidc-bff=s; __Host-oidc-bff-login-bbbbbbbb=3",
            ),
        );
        assert_eq!(
            policy().pending_logins(&h),
            vec![("aaaaaaaa", "1"), ("bbbbbbbb", "3")]
        );
        let many = (0..100)
            .map(|i| format!("__Host-oidc-bff-login-{i:08}=v"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&many).expect("header"));
        assert_eq!(policy().pending_logins(&h).len(), MAX_LOGIN_COOKIES_READ);
    }

    #[test]
    fn cookies_are_found_and_ours_are_stripped_for_upstreams() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; __Host-oidc-bff=xyz"));
        h.append(
            COOKIE,
            HeaderValue::from_static("__Host-oidc-bff-login-abcdefgh=q; b=2; __Host-oidc-bffx=3"),
        );
        assert_eq!(find(&h, "__Host-oidc-bff"), Some("xyz"));
        assert_eq!(find(&h, "b"), Some("2"));
        assert_eq!(find(&h, "c"), None);
        assert_eq!(
            without_ours(&h, &policy()).expect("kept").to_str().ok(),
            Some("a=1; b=2; __Host-oidc-bffx=3")
        );
        let mut only = HeaderMap::new();
        only.insert(COOKIE, HeaderValue::from_static("__Host-oidc-bff=xyz"));
        assert!(without_ours(&only, &policy()).is_none());
    }

    #[test]
    fn forwarded_cookies_lose_every_pair_named_like_ours_or_without_a_name() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; __host-OIDC-BFF=x; __Secure-oidc-bff-login=y"),
        );
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"b=\xff; nameless; =v; c d=1; oidc-bff=z").expect("value"),
        );
        assert_eq!(
            without_ours(&h, &policy()).expect("kept").as_bytes(),
            b"a=1; b=\xff"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// How a browser would name the cookie a `Set-Cookie` value sets,
        /// loosely: the text before the first `=` (before any `;`), trimmed
        /// of whitespace and controls, compared without case or prefix.
        fn browser_would_call_it_ours(raw: &[u8], policy: &CookiePolicy) -> bool {
            fn trim(s: &[u8]) -> &[u8] {
                let is_space = |b: &u8| *b <= b' ' || *b == 0x7f;
                let start = s.iter().position(|b| !is_space(b)).unwrap_or(s.len());
                let end = s
                    .iter()
                    .rposition(|b| !is_space(b))
                    .map_or(start, |e| e + 1);
                &s[start..end.max(start)]
            }
            let pair = raw.split(|&b| b == b';').next().unwrap_or_default();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                // Nameless, sent back bare and without `=`: no name at all.
                return false;
            };
            let name = trim(&pair[..eq]);
            if !name.is_empty() {
                return named_like_ours(name, policy);
            }
            // Nameless: its value is sent back bare, so `=ours=x` returns as
            // `ours=x`.
            let value = trim(&pair[eq + 1..]);
            value
                .iter()
                .position(|&b| b == b'=')
                .is_some_and(|e| named_like_ours(trim(&value[..e]), policy))
        }

        fn spelling_of_ours() -> impl Strategy<Value = Vec<u8>> {
            let names = prop_oneof![
                Just("__Host-oidc-bff"),
                Just("__Host-oidc-bff-login"),
                Just("oidc-bff"),
                Just("__Secure-oidc-bff"),
            ];
            (names, any::<u64>()).prop_map(|(n, flips)| {
                n.bytes()
                    .enumerate()
                    .map(|(i, b)| {
                        if flips >> (i % 64) & 1 == 1 {
                            b.to_ascii_uppercase()
                        } else {
                            b
                        }
                    })
                    .collect()
            })
        }

        fn noise() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(
                prop_oneof![
                    Just(b' '),
                    Just(b'\t'),
                    Just(b'='),
                    Just(b';'),
                    Just(b'"'),
                    0x80u8..=0xff,
                    0x21u8..0x7f,
                ],
                0..4,
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// Whatever bytes an upstream puts around a spelling of our
            /// cookie names, no `Set-Cookie` that a browser would store
            /// under one of them gets through, and every kept one has a
            /// token for a name.
            #[test]
            fn no_set_cookie_named_like_ours_gets_through(
                before in noise(),
                name in spelling_of_ours(),
                after in noise(),
                value in proptest::collection::vec(any::<u8>(), 0..8),
            ) {
                let mut raw = before;
                raw.extend_from_slice(&name);
                raw.extend_from_slice(&after);
                raw.push(b'=');
                raw.extend_from_slice(&value);
                let Ok(v) = HeaderValue::from_bytes(&raw) else { return Ok(()) };
                let policy = policy();
                if upstream_may_set(v.as_bytes(), &policy) {
                    prop_assert!(!browser_would_call_it_ours(v.as_bytes(), &policy), "{:?}", v);
                    prop_assert!(pair_name(v.as_bytes()).is_some_and(is_token));
                }
            }

            /// The same on the request side: no pair named like ours is
            /// forwarded, whatever the other bytes.
            #[test]
            fn no_cookie_named_like_ours_is_forwarded(
                before in noise(),
                name in spelling_of_ours(),
                after in noise(),
                value in proptest::collection::vec(any::<u8>(), 0..8),
            ) {
                let mut raw = b"a=1; ".to_vec();
                raw.extend_from_slice(&before);
                raw.extend_from_slice(&name);
                raw.extend_from_slice(&after);
                raw.push(b'=');
                raw.extend_from_slice(&value);
                let Ok(v) = HeaderValue::from_bytes(&raw) else { return Ok(()) };
                let mut h = HeaderMap::new();
                h.insert(COOKIE, v);
                let policy = policy();
                if let Some(kept) = without_ours(&h, &policy) {
                    for pair in kept.as_bytes().split(|&b| b == b';') {
                        prop_assert!(!browser_would_call_it_ours(pair, &policy), "{:?}", kept);
                    }
                }
            }
        }
    }
}
