//! `[[routes]]`: which path prefixes are proxied to which upstream, and
//! whether a route needs a session.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::common::{Issues, RawDuration, positive_duration};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoute {
    /// Path prefix, matched on segment boundaries (`/api` matches `/api` and
    /// `/api/x`, not `/apix`).
    pub path: String,
    /// Upstream base URL (`http://` or `https://`); a path in it is prepended.
    pub upstream: String,
    /// Remove `path` before forwarding.
    pub strip_prefix: bool,
    /// `required` (401 without a session), `optional` (token attached when
    /// logged in) or `none` (no session lookup, no token).
    pub auth: String,
    /// Limit for the upstream's response headers (then 504).
    pub timeout: RawDuration,
    /// Pass the browser's other cookies (never the gateway's own) to the
    /// upstream. Off by default: the `Cookie` header is removed.
    pub forward_cookies: bool,
}

impl Default for RawRoute {
    fn default() -> Self {
        Self {
            path: String::new(),
            upstream: String::new(),
            strip_prefix: false,
            auth: "required".into(),
            timeout: RawDuration::text("30s"),
            forward_cookies: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    Required,
    Optional,
    None,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub path: String,
    pub upstream: Url,
    pub strip_prefix: bool,
    pub auth: RouteAuth,
    pub timeout: Duration,
    pub forward_cookies: bool,
}

/// The gateway's own endpoints, which no route may shadow.
const OWN_PREFIXES: [&str; 3] = ["/auth", "/healthz", "/readyz"];

pub(super) fn validate(raw: &[RawRoute], issues: &mut Issues) -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    let mut paths = BTreeSet::new();
    for (i, r) in raw.iter().enumerate() {
        let prefix = format!("routes[{i}]");
        let path_ok = r.path.starts_with('/')
            && (r.path == "/" || !r.path.ends_with('/'))
            && !r.path.contains("//")
            && !r.path.split('/').any(|seg| seg == "." || seg == "..")
            && r.path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'%');
        if !path_ok {
            issues.add(format!("{prefix}.path"), format!("`{}` must be an absolute path prefix like \"/api\" (no trailing slash, query or dot segments)", r.path));
        } else if OWN_PREFIXES
            .iter()
            .any(|p| crate::url_policy::path::path_has_prefix(&r.path, p))
        {
            issues.add(
                format!("{prefix}.path"),
                format!(
                    "`{}` overlaps the gateway's own endpoints (/auth, /healthz, /readyz)",
                    r.path
                ),
            );
        } else if !paths.insert(r.path.clone()) {
            issues.add(
                format!("{prefix}.path"),
                format!("`{}` is used by another route", r.path),
            );
        }
        let upstream = match Url::parse(&r.upstream) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty() =>
            {
                Some(u)
            }
            _ => {
                issues.add(format!("{prefix}.upstream"), format!("`{}` must be an http:// or https:// base URL without query, fragment or user info", r.upstream));
                None
            }
        };
        let auth = match r.auth.as_str() {
            "required" => RouteAuth::Required,
            "optional" => RouteAuth::Optional,
            "none" => RouteAuth::None,
            other => {
                issues.add(
                    format!("{prefix}.auth"),
                    format!("`{other}` must be \"required\", \"optional\" or \"none\""),
                );
                RouteAuth::Required
            }
        };
        let timeout = positive_duration(issues, &format!("{prefix}.timeout"), &r.timeout);
        if let Some(upstream) = upstream {
            routes.push(RouteConfig {
                path: r.path.clone(),
                upstream,
                strip_prefix: r.strip_prefix,
                auth,
                timeout,
                forward_cookies: r.forward_cookies,
            });
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn routes_may_not_shadow_the_gateways_endpoints_or_each_other() {
        let toml = minimal()
            + "\n[[routes]]\npath = \"/auth/x\"\nupstream = \"http://127.0.0.1:9101\"\n\
               \n[[routes]]\npath = \"/api\"\nupstream = \"http://127.0.0.1:9102\"\n";
        let err = load_str(&toml, &[]).expect_err("invalid");
        assert_eq!(keys_of(err.clone()), ["routes[1].path", "routes[2].path"]);
        assert!(err.0[0].message.contains("overlaps"), "{err}");
        assert!(err.0[1].message.contains("another route"), "{err}");
    }
}
