//! `[session]`: the session cookie's name and attributes, the idle and
//! absolute limits, and the server keys that encrypt session records.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::common::{Issues, RawDuration, decode_key, duration, positive_duration, secret_from};
use crate::secret::SecretKey;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    /// Session cookie name. The `__Host-` prefix makes browsers insist on
    /// Secure, Path=/ and no Domain.
    pub cookie_name: String,
    /// `strict` (default) or `lax`.
    pub same_site: String,
    /// Cookie `Domain` attribute. Needs a name without `__Host-` (e.g.
    /// `__Secure-oidc-bff`): a domain cookie is sent to every subdomain.
    pub cookie_domain: Option<String>,
    /// Drop the `Secure` attribute so cookies work over plain HTTP on a
    /// non-localhost host. Needs a cookie name without `__Host-`/`__Secure-`.
    /// Logged as a warning at start-up.
    pub insecure_cookies: bool,
    /// Sliding inactivity limit.
    pub idle_timeout: RawDuration,
    /// Hard limit from login, whatever the activity.
    pub absolute_timeout: RawDuration,
    /// Last-activity (and the idle deadline) is written at most this often.
    pub touch_interval: RawDuration,
    /// Refresh the access token when it expires within this much time.
    pub refresh_skew: RawDuration,
    /// Sessions one user may hold (1 to 1000, default 10); a login beyond
    /// it evicts the user's oldest session. Bounded so one user cannot grow
    /// an index that every listing and revocation of theirs walks.
    pub max_per_user: u32,
    /// Server encryption keys; the first encrypts, all decrypt (rotation).
    pub encryption_keys: Vec<RawKey>,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            cookie_name: "__Host-oidc-bff".into(),
            same_site: "strict".into(),
            cookie_domain: None,
            insecure_cookies: false,
            idle_timeout: RawDuration::text("1h"),
            absolute_timeout: RawDuration::text("12h"),
            touch_interval: RawDuration::text("60s"),
            refresh_skew: RawDuration::text("30s"),
            max_per_user: DEFAULT_MAX_PER_USER,
            encryption_keys: Vec::new(),
        }
    }
}

/// `session.max_per_user` when not set.
pub const DEFAULT_MAX_PER_USER: u32 = 10;
/// The largest `session.max_per_user` accepted.
pub const MAX_MAX_PER_USER: u32 = 1000;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKey {
    /// Short identifier stored with each record, e.g. `2026-11`.
    pub id: String,
    /// 32 random bytes, base64 (`openssl rand -base64 32`).
    pub key: Option<String>,
    /// A file holding the base64 key instead.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
}

#[derive(Debug, Clone)]
pub struct ServerKeyConfig {
    pub id: String,
    pub key: SecretKey,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub same_site: SameSite,
    pub cookie_domain: Option<String>,
    pub secure_cookies: bool,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub touch_interval: Duration,
    pub refresh_skew: Duration,
    pub max_per_user: Option<u32>,
    pub keys: Vec<ServerKeyConfig>,
}

impl SessionConfig {
    /// The defaults of `[session]` with the given keys: for tools and tests
    /// that need sessions without a whole configuration file.
    pub fn with_keys(keys: Vec<ServerKeyConfig>) -> Self {
        Self {
            cookie_name: "__Host-oidc-bff".into(),
            same_site: SameSite::Strict,
            cookie_domain: None,
            secure_cookies: true,
            idle_timeout: Duration::from_secs(3600),
            absolute_timeout: Duration::from_secs(12 * 3600),
            touch_interval: Duration::from_secs(60),
            refresh_skew: Duration::from_secs(30),
            max_per_user: Some(DEFAULT_MAX_PER_USER),
            keys,
        }
    }

    /// The login-binding cookie is named after the session cookie.
    pub fn login_cookie_name(&self) -> String {
        format!("{}-login", self.cookie_name)
    }
}

pub(super) fn validate(s: &RawSession, issues: &mut Issues) -> SessionConfig {
    let same_site = match s.same_site.to_ascii_lowercase().as_str() {
        "strict" => SameSite::Strict,
        "lax" => SameSite::Lax,
        other => {
            issues.add(
                "session.same_site",
                format!("`{other}` must be \"strict\" or \"lax\""),
            );
            SameSite::Strict
        }
    };
    let name_ok = !s.cookie_name.is_empty()
        && s.cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        issues.add(
            "session.cookie_name",
            format!(
                "`{}` must be non-empty and use only letters, digits, '-', '_' and '.'",
                s.cookie_name
            ),
        );
    }
    let host_prefix = s.cookie_name.starts_with("__Host-");
    let secure_prefix = s.cookie_name.starts_with("__Secure-");
    if s.cookie_domain.is_some() && host_prefix {
        issues.add("session.cookie_domain", "a __Host- cookie cannot have a Domain; rename session.cookie_name (e.g. \"__Secure-oidc-bff\") or remove cookie_domain");
    }
    if s.insecure_cookies && (host_prefix || secure_prefix) {
        issues.add("session.insecure_cookies", "browsers refuse __Host-/__Secure- cookies without Secure; with insecure_cookies = true also set session.cookie_name to a name without the prefix");
    }
    // Without a prefix a browser takes a cookie of that name from any
    // sibling host (`Domain=` the parent) or from plain http, which then
    // rides along with ours: the prefix is what makes `Secure` and the
    // host binding hold. Dropping it is the loosening for plain-http
    // development, so it goes with `insecure_cookies`, never alone.
    if name_ok && !s.insecure_cookies && !host_prefix && !secure_prefix {
        issues.add(
            "session.cookie_name",
            format!(
                "`{}` has no __Host- or __Secure- prefix, which browsers need to keep other hosts from setting it; use \"__Host-{}\" (or \"__Secure-{}\" with session.cookie_domain), or set session.insecure_cookies = true for plain-http development",
                s.cookie_name, s.cookie_name, s.cookie_name
            ),
        );
    }
    let idle_timeout = positive_duration(issues, "session.idle_timeout", &s.idle_timeout);
    let absolute_timeout =
        positive_duration(issues, "session.absolute_timeout", &s.absolute_timeout);
    if idle_timeout > absolute_timeout && !absolute_timeout.is_zero() {
        issues.add(
            "session.idle_timeout",
            "must not exceed session.absolute_timeout",
        );
    }
    let touch_interval = duration(issues, "session.touch_interval", &s.touch_interval);
    if touch_interval >= idle_timeout && !idle_timeout.is_zero() {
        issues.add(
            "session.touch_interval",
            "must be shorter than session.idle_timeout",
        );
    }
    let refresh_skew = duration(issues, "session.refresh_skew", &s.refresh_skew);
    if !(1..=MAX_MAX_PER_USER).contains(&s.max_per_user) {
        issues.add(
            "session.max_per_user",
            format!(
                "`{}` must be from 1 to {MAX_MAX_PER_USER} (default {DEFAULT_MAX_PER_USER}): every user's sessions are bounded",
                s.max_per_user
            ),
        );
    }
    SessionConfig {
        cookie_name: s.cookie_name.clone(),
        same_site,
        cookie_domain: s.cookie_domain.clone(),
        secure_cookies: !s.insecure_cookies,
        idle_timeout,
        absolute_timeout,
        touch_interval,
        refresh_skew,
        max_per_user: Some(s.max_per_user.clamp(1, MAX_MAX_PER_USER)),
        keys: encryption_keys(&s.encryption_keys, issues),
    }
}

/// `session.encryption_keys`: at least one, unique ids, 32 bytes each.
fn encryption_keys(raw: &[RawKey], issues: &mut Issues) -> Vec<ServerKeyConfig> {
    let mut keys = Vec::new();
    if raw.is_empty() {
        issues.add(
            "session.encryption_keys",
            "missing; add at least one key: encryption_keys = [{ id = \"k1\", key = \"<output of: openssl rand -base64 32>\" }]",
        );
    }
    let mut seen_ids = BTreeSet::new();
    for (i, k) in raw.iter().enumerate() {
        let prefix = format!("session.encryption_keys[{i}]");
        if k.id.is_empty()
            || k.id.len() > 32
            || !k
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            issues.add(
                format!("{prefix}.id"),
                format!(
                    "`{}` must be 1-32 characters of letters, digits, '-', '_', '.'",
                    k.id
                ),
            );
        } else if !seen_ids.insert(k.id.clone()) {
            issues.add(
                format!("{prefix}.id"),
                format!("`{}` is used by another key", k.id),
            );
        }
        let key_name = format!("{prefix}.key");
        if let Some(material) =
            secret_from(issues, &key_name, k.key.as_ref(), k.key_file.as_ref(), true)
        {
            match decode_key(material.expose()) {
                Ok(bytes) => keys.push(ServerKeyConfig {
                    id: k.id.clone(),
                    key: SecretKey::from_bytes(bytes),
                }),
                Err(msg) => issues.add(key_name, msg),
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::super::testing::{KEY, load_str, minimal};

    #[test]
    fn max_per_user_defaults_to_ten_and_is_bounded_on_both_sides() {
        let c = load_str(&minimal(), &[]).expect("valid");
        assert_eq!(c.session.max_per_user, Some(10));
        let c =
            load_str(&minimal(), &[("OIDC_BFF__SESSION__MAX_PER_USER", "1000")]).expect("valid");
        assert_eq!(c.session.max_per_user, Some(1000));
        for bad in ["0", "1001", "4294967295"] {
            let err = load_str(&minimal(), &[("OIDC_BFF__SESSION__MAX_PER_USER", bad)])
                .expect_err("out of range");
            assert_eq!(err.0[0].key, "session.max_per_user");
            assert_eq!(
                err.0[0].message,
                format!(
                    "`{bad}` must be from 1 to 1000 (default 10): every user's sessions are bounded"
                )
            );
        }
    }

    #[test]
    fn a_cookie_name_without_a_prefix_needs_the_explicit_insecure_loosening() {
        let with =
            |session: &str| minimal().replace("[session]\n", &format!("[session]\n{session}\n"));
        let err = load_str(&with("cookie_name = \"bff\""), &[]).expect_err("no prefix");
        assert_eq!(err.0[0].key, "session.cookie_name");
        assert!(
            err.0[0].message.contains("\"__Host-bff\""),
            "{}",
            err.0[0].message
        );
        let err = load_str(&minimal(), &[("OIDC_BFF__SESSION__COOKIE_NAME", "sid")])
            .expect_err("no prefix from the environment either");
        assert_eq!(err.0[0].key, "session.cookie_name");
        for fine in [
            "cookie_name = \"__Host-bff\"",
            "cookie_name = \"__Secure-bff\"",
        ] {
            load_str(&with(fine), &[]).unwrap_or_else(|e| panic!("{fine}: {e:?}"));
        }
        load_str(&with("cookie_name = \"bff\"\ninsecure_cookies = true"), &[])
            .expect("the explicit loosening allows it");
    }

    #[test]
    fn short_key_message_names_the_length() {
        let err = load_str(&minimal().replace(KEY, "MDEyMzQ1Njc4OWFi"), &[]).expect_err("invalid");
        assert_eq!(err.0[0].key, "session.encryption_keys[0].key");
        assert_eq!(
            err.0[0].message,
            "must be 32 bytes base64, got 12; generate one with `openssl rand -base64 32`"
        );
    }
}
