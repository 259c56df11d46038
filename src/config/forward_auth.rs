//! `[forward_auth]`: the endpoint a front proxy (nginx `auth_request`,
//! Caddy `forward_auth`, HAProxy, Traefik `ForwardAuth`, Envoy `ext_authz`)
//! asks "may this request through, and as whom?". Off by default; only the
//! peers in `server.trusted_proxies` are answered.

use serde::{Deserialize, Serialize};

use super::common::Issues;
use super::routes::RouteAuth;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawForwardAuth {
    /// Serve the forward-auth endpoint. Its 200 answer carries the session's
    /// access token (`Authorization: Bearer …`) for the proxy to copy to the
    /// upstream request, so it is answered only to `server.trusted_proxies`
    /// peers, and the proxy must neither route it from outside nor pass its
    /// response headers to the client (docs/deployment.md).
    pub enabled: bool,
    /// Path of the endpoint on the gateway.
    pub path: String,
    /// The rule for original URIs no `[[routes]]` prefix covers:
    /// `"required"`, `"optional"` or `"none"`.
    pub default_auth: String,
}

impl Default for RawForwardAuth {
    fn default() -> Self {
        Self {
            enabled: false,
            path: "/auth/verify".into(),
            default_auth: "required".into(),
        }
    }
}

/// The gateway's own endpoints under `/auth/`, which the path must not take.
const GATEWAY_PATHS: &[&str] = &[
    "/auth/login",
    "/auth/callback",
    "/auth/logout",
    "/auth/logout/end",
    "/auth/logged-out",
    "/auth/user",
    "/auth/sessions",
    "/auth/backchannel-logout",
];

/// The validated section (only when enabled).
#[derive(Debug, Clone)]
pub struct ForwardAuthConfig {
    pub path: String,
    pub default_auth: RouteAuth,
}

pub(super) fn validate(
    raw: &RawForwardAuth,
    trusted_proxies_set: bool,
    issues: &mut Issues,
) -> Option<ForwardAuthConfig> {
    if !raw.enabled {
        return None;
    }
    let path_ok = raw.path.starts_with("/auth/")
        && raw.path.len() > "/auth/".len()
        && raw
            .path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
        && !raw.path.contains("//")
        && !raw.path.split('/').any(|s| s == "." || s == "..")
        && !GATEWAY_PATHS.contains(&raw.path.trim_end_matches('/'))
        && !raw.path.starts_with("/auth/sessions/");
    if !path_ok {
        issues.add(
            "forward_auth.path",
            format!(
                "`{}` must be a plain path under /auth/ (letters, digits, `-_./`) that is not one of the gateway's own endpoints, e.g. \"/auth/verify\"",
                raw.path
            ),
        );
    }
    let default_auth = match raw.default_auth.as_str() {
        "required" => RouteAuth::Required,
        "optional" => RouteAuth::Optional,
        "none" => RouteAuth::None,
        other => {
            issues.add(
                "forward_auth.default_auth",
                format!("`{other}` must be \"required\", \"optional\" or \"none\""),
            );
            RouteAuth::Required
        }
    };
    if !trusted_proxies_set {
        issues.add(
            "forward_auth.enabled",
            "needs server.trusted_proxies: the endpoint answers only the front proxy, and believes the original method and URI only from it; list the proxy's address, e.g. [\"127.0.0.1/32\"]",
        );
    }
    Some(ForwardAuthConfig {
        path: raw.path.clone(),
        default_auth,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn forward_auth_is_off_by_default() {
        let c = load_str(&minimal(), &[]).expect("valid");
        assert!(c.forward_auth.is_none());
    }

    #[test]
    fn forward_auth_needs_trusted_proxies_and_a_plain_path_under_auth() {
        let toml = minimal()
            + "\n[forward_auth]\nenabled = true\npath = \"/auth/login\"\ndefault_auth = \"maybe\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(
            keys,
            vec![
                "forward_auth.path",
                "forward_auth.default_auth",
                "forward_auth.enabled"
            ]
        );
    }

    #[test]
    fn forward_auth_with_a_trusted_proxy_is_valid() {
        let toml = minimal().replace(
            "[server]\n",
            "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        ) + "\n[forward_auth]\nenabled = true\n";
        let c = load_str(&toml, &[]).expect("valid");
        let fa = c.forward_auth.expect("enabled");
        assert_eq!(fa.path, "/auth/verify");
    }
}
