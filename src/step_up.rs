//! Step-up authentication: what a route asks of a login (`acr_values`,
//! `max_auth_age`), whether a session's `acr` and `auth_time` claims meet
//! it, the `step_up_required` challenge sent to the SPA, and the reading of
//! an upstream's RFC 9470 challenge (`WWW-Authenticate: Bearer
//! error="insufficient_user_authentication"`), which is relayed the same
//! way. Pure functions over claims and header text: no I/O, no config.

use std::time::Duration;

use serde_json::{Map, Value};

/// What a route requires of the login behind a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepUpRule {
    /// The session's `acr` must be one of these (empty: any).
    pub acr_values: Vec<String>,
    /// The login (`auth_time`) must be at most this old.
    pub max_auth_age: Option<Duration>,
}

impl StepUpRule {
    pub fn is_empty(&self) -> bool {
        self.acr_values.is_empty() && self.max_auth_age.is_none()
    }

    /// The challenge for a session whose claims fall short, or `None` when
    /// they meet the rule. A missing `acr` or `auth_time` falls short of a
    /// rule that names it.
    pub fn check(&self, claims: &Map<String, Value>, now: u64) -> Option<Challenge> {
        let acr_ok = self.acr_values.is_empty()
            || matches!(claims.get("acr"), Some(Value::String(a)) if self.acr_values.contains(a));
        let age_ok = self.max_auth_age.is_none_or(|max| {
            claims
                .get("auth_time")
                .and_then(Value::as_u64)
                .is_some_and(|t| now.saturating_sub(t) <= max.as_secs())
        });
        if acr_ok && age_ok {
            return None;
        }
        Some(Challenge {
            acr_values: (!self.acr_values.is_empty()).then(|| self.acr_values.join(" ")),
            max_age: self.max_auth_age.map(|d| d.as_secs()),
        })
    }
}

/// What a new login must achieve: the authorization request's
/// `acr_values` (space-separated) and `max_age` (seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    pub acr_values: Option<String>,
    pub max_age: Option<u64>,
}

impl Challenge {
    /// The gateway's login URL that asks for this: `login_path` (e.g.
    /// `/auth/login` under the mount path) with `acr_values`, `max_age` and
    /// `return_to` (when known) as query parameters.
    pub fn login_url(&self, login_path: &str, return_to: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(a) = &self.acr_values {
            q.append_pair("acr_values", a);
        }
        if let Some(m) = self.max_age {
            q.append_pair("max_age", &m.to_string());
        }
        if let Some(r) = return_to {
            q.append_pair("return_to", r);
        }
        let q = q.finish();
        if q.is_empty() {
            login_path.to_owned()
        } else {
            format!("{login_path}?{q}")
        }
    }
}

/// The page a step-up should return to: the path and query of the
/// request's `Referer` when it is a page of `public_origin` (what a
/// browser sends on a same-origin `fetch`), at most `max_len` bytes. The
/// login endpoint validates it again like any `return_to`.
pub fn return_to_from_referer(
    headers: &http::HeaderMap,
    public_origin: &str,
    max_len: usize,
) -> Option<String> {
    let referer = headers.get(http::header::REFERER)?.to_str().ok()?;
    let rest = referer.strip_prefix(public_origin)?;
    (rest.starts_with('/') && rest.len() <= max_len && !rest.contains('#')).then(|| rest.to_owned())
}

/// The longest `WWW-Authenticate` value read for a challenge; a longer one
/// is passed through untouched.
pub(crate) const MAX_CHALLENGE_BYTES: usize = 2048;
/// The most `auth-param`s read from one challenge.
const MAX_PARAMS: usize = 16;

/// An upstream's RFC 9470 challenge, if `header` is one: a `Bearer`
/// challenge with `error="insufficient_user_authentication"` and at least
/// one of `acr_values` (ACR tokens) and `max_age` (non-negative integer).
/// Anything malformed, oversized or ambiguous is `None` (the 401 passes
/// through as it is).
pub fn parse_upstream_challenge(header: &[u8]) -> Option<Challenge> {
    if header.len() > MAX_CHALLENGE_BYTES {
        return None;
    }
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, rest) = text.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = auth_params(rest)?;
    let get = |name: &str| -> Option<&str> {
        let mut found = params
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let first = found.next();
        // A repeated parameter is ambiguous: not a challenge.
        if found.next().is_some() {
            Some("\u{0}")
        } else {
            first
        }
    };
    if get("error")? != "insufficient_user_authentication" {
        return None;
    }
    let acr_values = match get("acr_values") {
        Some(a) => {
            let tokens: Vec<&str> = a.split(' ').filter(|t| !t.is_empty()).collect();
            if tokens.is_empty() || !tokens.iter().all(|t| crate::step_up::is_acr_token(t)) {
                return None;
            }
            Some(tokens.join(" "))
        }
        None => None,
    };
    let max_age = match get("max_age") {
        Some(m) if !m.is_empty() && m.len() <= 10 && m.bytes().all(|b| b.is_ascii_digit()) => {
            Some(m.parse().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    if acr_values.is_none() && max_age.is_none() {
        return None;
    }
    Some(Challenge {
        acr_values,
        max_age,
    })
}

/// An ACR value the gateway passes on: printable ASCII without quotes,
/// backslashes or spaces, at most 128 bytes (URIs and short names).
pub fn is_acr_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b',')
}

/// `name=value` pairs of one challenge (RFC 9110 §11.2): values are tokens
/// or quoted strings. `None` on any syntax error or a second challenge.
pub(crate) fn auth_params(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([' ', '\t', ',']);
        if s.is_empty() {
            return Some(out);
        }
        if out.len() >= MAX_PARAMS {
            return None;
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return None;
        }
        s = s[eq + 1..].trim_start_matches([' ', '\t']);
        let value;
        if let Some(quoted) = s.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => v.push(chars.next()?.1),
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c if c.is_control() => return None,
                    c => v.push(c),
                }
            }
            let end = end?;
            value = v;
            s = &quoted[end + 1..];
        } else {
            let len = s.find([',', ' ', '\t']).unwrap_or(s.len());
            value = s[..len].to_owned();
            if value.is_empty() {
                return None;
            }
            s = &s[len..];
        }
        out.push((name.to_owned(), value));
        // After a value: the end, or a comma before the next parameter.
        let t = s.trim_start_matches([' ', '\t']);
        if !t.is_empty() && !t.starts_with(',') {
            return None;
        }
        s = t;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_session_meets_a_rule_only_with_a_listed_acr_and_a_recent_enough_login() {
        let rule = StepUpRule {
            acr_values: vec!["mfa".into(), "hwk".into()],
            max_auth_age: Some(Duration::from_secs(600)),
        };
        assert_eq!(
            rule.check(&claims(json!({"acr": "mfa", "auth_time": 1_000})), 1_600),
            None
        );
        let short = Challenge {
            acr_values: Some("mfa hwk".into()),
            max_age: Some(600),
        };
        assert_eq!(
            rule.check(&claims(json!({"acr": "pwd", "auth_time": 1_000})), 1_000),
            Some(short.clone())
        );
        assert_eq!(
            rule.check(&claims(json!({"acr": "mfa", "auth_time": 1_000})), 1_601),
            Some(short.clone())
        );
        assert_eq!(
            rule.check(&claims(json!({"acr": "mfa"})), 1_000),
            Some(short.clone())
        );
        assert_eq!(
            rule.check(&claims(json!({"auth_time": 1_000})), 1_000),
            Some(short)
        );
        assert_eq!(StepUpRule::default().check(&Map::new(), 0), None);
    }

    #[test]
    fn the_login_url_carries_what_is_asked_encoded() {
        let c = Challenge {
            acr_values: Some("mfa urn:x".into()),
            max_age: Some(0),
        };
        assert_eq!(
            c.login_url("/app/auth/login", Some("https://app.example/a?b=c")),
            "/app/auth/login?acr_values=mfa+urn%3Ax&max_age=0&return_to=https%3A%2F%2Fapp.example%2Fa%3Fb%3Dc"
        );
        assert_eq!(
            Challenge::default().login_url("/auth/login", None),
            "/auth/login"
        );
    }

    #[test]
    fn only_a_same_origin_referer_becomes_the_return_target() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(
                http::header::REFERER,
                http::HeaderValue::from_str(v).expect("hv"),
            );
            m
        };
        let origin = "https://app.example";
        assert_eq!(
            return_to_from_referer(&h("https://app.example/orders?id=3"), origin, 100).as_deref(),
            Some("/orders?id=3")
        );
        for other in [
            "https://app.example.evil/x",
            "https://app.example:8443/x",
            "http://app.example/x",
            "https://evil.example/",
            "https://app.example",
        ] {
            assert_eq!(
                return_to_from_referer(&h(other), origin, 100),
                None,
                "{other}"
            );
        }
        assert_eq!(
            return_to_from_referer(&h("https://app.example/aaaa"), origin, 3),
            None
        );
        assert_eq!(
            return_to_from_referer(&http::HeaderMap::new(), origin, 100),
            None
        );
    }

    #[test]
    fn rfc_9470_challenges_are_read() {
        let c = parse_upstream_challenge(
            br#"Bearer realm="api", error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="mfa urn:hwk", max_age=300"#,
        );
        assert_eq!(
            c,
            Some(Challenge {
                acr_values: Some("mfa urn:hwk".into()),
                max_age: Some(300)
            })
        );
        assert_eq!(
            parse_upstream_challenge(
                b"bearer error=insufficient_user_authentication,max_age=\"5\""
            ),
            Some(Challenge {
                acr_values: None,
                max_age: Some(5)
            })
        );
    }

    #[test]
    fn anything_else_is_not_a_step_up_challenge() {
        for h in [
            &b"Bearer error=\"invalid_token\""[..],
            b"Basic realm=x",
            b"Bearer error=\"insufficient_user_authentication\"",
            b"Bearer error=\"insufficient_user_authentication\", max_age=-1",
            b"Bearer error=\"insufficient_user_authentication\", max_age=99999999999",
            b"Bearer error=\"insufficient_user_authentication\", acr_values=\"a\\\"b\"",
            b"Bearer error=\"insufficient_user_authentication\", acr_values=\"mfa\", acr_values=\"x\"",
            b"Bearer error=\"insufficient_user_authentication\", max_age=5, Basic realm=x",
            b"Bearer error=\"insufficient_user_authentication\", acr_values=\"mfa",
            b"Bearer error=\"insufficient_user_authentication\", acr_values=\"\"",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(parse_upstream_challenge(h), None, "{}", String::from_utf8_lossy(h));
        }
        let long = format!(
            "Bearer error=\"insufficient_user_authentication\", max_age=5, x=\"{}\"",
            "a".repeat(MAX_CHALLENGE_BYTES)
        );
        assert_eq!(parse_upstream_challenge(long.as_bytes()), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        #[test]
        fn hostile_challenge_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_upstream_challenge(&bytes);
        }

        #[test]
        fn hostile_challenge_text_never_panics(s in "(Bearer )?[a-z_=\", \\\\]{0,200}") {
            if let Some(c) = parse_upstream_challenge(s.as_bytes()) {
                prop_assert!(c.acr_values.iter().all(|a| a.split(' ').all(is_acr_token)));
            }
        }
    }
}
