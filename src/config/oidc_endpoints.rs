//! What `[oidc]` says about providers whose discovery is incomplete or
//! unusual: `[oidc.endpoints]` overrides, `oidc.end_session_url_template`
//! for providers without an `end_session_endpoint` (Auth0, Cognito), and
//! `[oidc.frontchannel_logout]` (OpenID Connect Front-Channel Logout 1.0),
//! and `oidc.issuer_template` with `oidc.allowed_tenants` for multi-tenant
//! providers (Entra ID).
//!
//! Every URL here is held to the rule of `oidc.issuer`: https, or plain
//! http on loopback or with `oidc.allow_insecure_issuer`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use url::Url;

use super::common::{Issues, is_loopback_host, not_a_url};

/// `[oidc.endpoints]`: each set key replaces (or supplies) the discovery
/// document's field of the same meaning.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEndpoints {
    /// Replaces `authorization_endpoint`.
    pub authorization: Option<String>,
    /// Replaces `token_endpoint`.
    pub token: Option<String>,
    /// Replaces `userinfo_endpoint`.
    pub userinfo: Option<String>,
    /// Replaces `jwks_uri`.
    pub jwks_uri: Option<String>,
    /// Replaces `end_session_endpoint`.
    pub end_session: Option<String>,
    /// Replaces `revocation_endpoint`.
    pub revocation: Option<String>,
    /// Replaces `introspection_endpoint`.
    pub introspection: Option<String>,
    /// Replaces `pushed_authorization_request_endpoint`.
    pub pushed_authorization_request: Option<String>,
}

/// `[oidc.frontchannel_logout]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFrontchannel {
    /// Serve `GET /auth/frontchannel-logout` (register it at the provider
    /// as the client's `frontchannel_logout_uri`).
    /// A request must name `iss` and `sid` (register
    /// `frontchannel_logout_session_required = true`): a GET that ended
    /// whatever session its cookie names would let any page log users out,
    /// the reason `/auth/logout` is POST only.
    pub enabled: bool,
    /// Origins allowed to frame the logout page (CSP `frame-ancestors`);
    /// empty means the issuer's origin.
    pub frame_ancestors: Vec<String>,
}

/// `[oidc.endpoints]` as discovery-document fields and their URLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointOverrides(pub Vec<(&'static str, Url)>);

/// `[oidc.frontchannel_logout]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontchannelConfig {
    /// Origins, each serialised as `scheme://host[:port]`.
    pub frame_ancestors: Vec<String>,
}

/// `oidc.issuer_template` and `oidc.allowed_tenants`: an ID token's `iss`
/// must be the template with `{tenantid}` replaced by its `tid` claim, and
/// that tenant must be allowed. There is no "any tenant".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerTemplate {
    /// The template as written (multi-tenant discovery documents advertise
    /// it as their `issuer`).
    pub text: String,
    prefix: String,
    suffix: String,
    allowed_tenants: Vec<String>,
}

impl IssuerTemplate {
    /// The issuer a token of tenant `tid` must carry, if `tid` is allowed.
    pub fn issuer_for(&self, tid: &str) -> Option<String> {
        self.allowed_tenants
            .iter()
            .any(|t| t == tid)
            .then(|| format!("{}{tid}{}", self.prefix, self.suffix))
    }
}

/// A value substituted into `oidc.end_session_url_template`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    ClientId,
    PostLogoutRedirectUri,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// `oidc.end_session_url_template`, split into text and placeholders at
/// start-up so that rendering cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndSessionTemplate(Vec<Part>);

/// Everything but RFC 3986 unreserved characters is encoded: a substituted
/// value can never add a parameter or change the path.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl EndSessionTemplate {
    /// The URL for this client and post-logout page, each value
    /// percent-encoded.
    pub fn render(&self, client_id: &str, post_logout_redirect_uri: &str) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Value(p) => {
                    let v = match p {
                        Placeholder::ClientId => client_id,
                        Placeholder::PostLogoutRedirectUri => post_logout_redirect_uri,
                    };
                    out.extend(utf8_percent_encode(v, COMPONENT));
                }
            }
        }
        out
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err("has a `}` without a `{`".into());
            }
            let Some(len) = rest[open..].find('}') else {
                return Err("has a `{` without a `}`".into());
            };
            let name = &rest[open + 1..open + len];
            let value = match name {
                "client_id" => Placeholder::ClientId,
                "post_logout_redirect_uri" => Placeholder::PostLogoutRedirectUri,
                other => {
                    return Err(format!(
                        "has an unknown placeholder `{{{other}}}`; use {{client_id}} and {{post_logout_redirect_uri}}"
                    ));
                }
            };
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            parts.push(Part::Value(value));
            rest = &rest[open + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self(parts))
    }
}

/// An endpoint URL under the issuer's rule; the problem is reported under
/// `key`.
fn provider_url(issues: &mut Issues, key: &str, text: &str, allow_insecure: bool) -> Option<Url> {
    let text = &super::common::shown_url(text);
    match Url::parse(text) {
        Ok(u) if let Some(part) = super::common::url_extra(&u, true) => {
            issues.add(key, format!("`{text}` must not contain {part}"));
            None
        }
        Ok(u) if u.scheme() == "https" => Some(u),
        Ok(u) if u.scheme() == "http" && (is_loopback_host(&u) || allow_insecure) => Some(u),
        Ok(u) if u.scheme() == "http" => {
            issues.add(
                key,
                format!("`{text}` uses plain http on a non-loopback host; use https, or set oidc.allow_insecure_issuer = true for a development stack"),
            );
            None
        }
        Ok(_) => {
            issues.add(key, format!("`{text}` must be an https:// URL"));
            None
        }
        Err(e) => {
            issues.add(
                key,
                not_a_url(text, e, "https://id.example.com/oauth2/token"),
            );
            None
        }
    }
}

pub(super) fn endpoints(
    raw: &RawEndpoints,
    allow_insecure: bool,
    issues: &mut Issues,
) -> EndpointOverrides {
    let fields = [
        (
            "authorization",
            "authorization_endpoint",
            &raw.authorization,
        ),
        ("token", "token_endpoint", &raw.token),
        ("userinfo", "userinfo_endpoint", &raw.userinfo),
        ("jwks_uri", "jwks_uri", &raw.jwks_uri),
        ("end_session", "end_session_endpoint", &raw.end_session),
        ("revocation", "revocation_endpoint", &raw.revocation),
        (
            "introspection",
            "introspection_endpoint",
            &raw.introspection,
        ),
        (
            "pushed_authorization_request",
            "pushed_authorization_request_endpoint",
            &raw.pushed_authorization_request,
        ),
    ];
    let mut out = Vec::new();
    for (key, field, value) in fields {
        if let Some(text) = value
            && let Some(u) = provider_url(
                issues,
                &format!("oidc.endpoints.{key}"),
                text,
                allow_insecure,
            )
        {
            out.push((field, u));
        }
    }
    EndpointOverrides(out)
}

pub(super) fn end_session_template(
    raw: Option<&String>,
    allow_insecure: bool,
    issues: &mut Issues,
) -> Option<EndSessionTemplate> {
    const KEY: &str = "oidc.end_session_url_template";
    let text = raw?;
    let template = match EndSessionTemplate::parse(text) {
        Ok(t) => t,
        Err(why) => {
            issues.add(KEY, format!("`{text}` {why}"));
            return None;
        }
    };
    // The template with sample values must be a provider URL.
    let sample = template.render("client", "https://app.example.com/");
    provider_url(issues, KEY, &sample, allow_insecure)?;
    Some(template)
}

pub(super) fn issuer_template(
    raw: Option<&String>,
    allowed: &[String],
    allow_insecure: bool,
    issues: &mut Issues,
) -> Option<IssuerTemplate> {
    const KEY: &str = "oidc.issuer_template";
    let Some(text) = raw else {
        if !allowed.is_empty() {
            issues.add(
                "oidc.allowed_tenants",
                "is only used with oidc.issuer_template; set the template or remove the list",
            );
        }
        return None;
    };
    let Some((prefix, suffix)) = text.split_once("{tenantid}") else {
        issues.add(
            KEY,
            format!("`{text}` has no {{tenantid}} placeholder, e.g. \"https://login.microsoftonline.com/{{tenantid}}/v2.0\""),
        );
        return None;
    };
    if suffix.contains("{tenantid}") || format!("{prefix}{suffix}").contains(['{', '}']) {
        issues.add(
            KEY,
            format!("`{text}` must hold {{tenantid}} exactly once and no other placeholder"),
        );
        return None;
    }
    provider_url(
        issues,
        KEY,
        &format!("{prefix}tenant{suffix}"),
        allow_insecure,
    )?;
    if allowed.is_empty() {
        issues.add(
            "oidc.allowed_tenants",
            "must list the tenant IDs whose users may log in when oidc.issuer_template is set (there is no \"any tenant\")",
        );
        return None;
    }
    for (i, t) in allowed.iter().enumerate() {
        if t.is_empty()
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            issues.add(
                format!("oidc.allowed_tenants[{i}]"),
                format!("`{t}` is not a tenant ID (letters, digits, '-', '.', '_')"),
            );
            return None;
        }
    }
    Some(IssuerTemplate {
        text: text.clone(),
        prefix: prefix.to_owned(),
        suffix: suffix.to_owned(),
        allowed_tenants: allowed.to_vec(),
    })
}

pub(super) fn frontchannel(
    raw: &RawFrontchannel,
    issuer: Option<&Url>,
    allow_insecure: bool,
    issues: &mut Issues,
) -> Option<FrontchannelConfig> {
    if !raw.enabled {
        return None;
    }
    let mut frame_ancestors = Vec::new();
    for (i, text) in raw.frame_ancestors.iter().enumerate() {
        let key = format!("oidc.frontchannel_logout.frame_ancestors[{i}]");
        let Some(u) = provider_url(issues, &key, text, allow_insecure) else {
            continue;
        };
        if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
            issues.add(
                key,
                format!("`{text}` must be an origin only (scheme://host[:port]), e.g. \"https://login.example.com\""),
            );
            continue;
        }
        frame_ancestors.push(u.origin().ascii_serialization());
    }
    if raw.frame_ancestors.is_empty()
        && let Some(issuer) = issuer
    {
        frame_ancestors.push(issuer.origin().ascii_serialization());
    }
    Some(FrontchannelConfig { frame_ancestors })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};
    use super::*;

    /// The minimal config with `keys` in `[oidc]` and `tables` appended.
    fn with(keys: &str, tables: &str) -> String {
        minimal().replace(
            "client_id = \"bff\"",
            &format!("client_id = \"bff\"\n{keys}"),
        ) + tables
    }

    #[test]
    fn end_session_template_values_are_percent_encoded() {
        let t = EndSessionTemplate::parse(
            "https://t.auth0.com/v2/logout?client_id={client_id}&returnTo={post_logout_redirect_uri}",
        )
        .expect("valid");
        assert_eq!(
            t.render("a b&c", "https://app.example.com/bye?x=1&y=2"),
            "https://t.auth0.com/v2/logout?client_id=a%20b%26c&returnTo=https%3A%2F%2Fapp.example.com%2Fbye%3Fx%3D1%26y%3D2"
        );
    }

    #[test]
    fn bad_templates_and_endpoint_urls_are_refused_by_key() {
        let toml = with(
            "end_session_url_template = \"https://t.example.com/logout?to={return_to}\"",
            concat!(
                "[oidc.endpoints]\n",
                "token = \"http://id.example.com/token\"\n",
                "jwks_uri = \"not a url\"\n",
                "userinfo = \"https://id.example.com/me\"\n",
            ),
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(
            keys,
            vec![
                "oidc.endpoints.token",
                "oidc.endpoints.jwks_uri",
                "oidc.end_session_url_template"
            ]
        );
        for bad in [
            "https://x.example.com/{client_id",
            "https://x.example.com/}",
            "ftp://x/{client_id}",
        ] {
            let toml = with(&format!("end_session_url_template = \"{bad}\""), "");
            let keys = keys_of(load_str(&toml, &[]).expect_err(bad));
            assert_eq!(keys, vec!["oidc.end_session_url_template"], "{bad}");
        }
    }

    #[test]
    fn an_issuer_template_needs_a_tenant_allowlist() {
        let template = "issuer_template = \"https://login.example.com/{tenantid}/v2.0\"";
        let keys = keys_of(load_str(&with(template, ""), &[]).expect_err("no allowlist"));
        assert_eq!(keys, vec!["oidc.allowed_tenants"]);
        let toml = with(&format!("{template}\nallowed_tenants = [\"\"]"), "");
        let keys = keys_of(load_str(&toml, &[]).expect_err("empty tenant"));
        assert_eq!(keys, vec!["oidc.allowed_tenants[0]"]);
        let toml = with(
            "issuer_template = \"https://login.example.com/v2.0\"\nallowed_tenants = [\"a\"]",
            "",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("no placeholder"));
        assert_eq!(keys, vec!["oidc.issuer_template"]);
        let keys = keys_of(
            load_str(&with("allowed_tenants = [\"a\"]", ""), &[]).expect_err("no template"),
        );
        assert_eq!(keys, vec!["oidc.allowed_tenants"]);

        let toml = with(&format!("{template}\nallowed_tenants = [\"tenant-a\"]"), "");
        let t = load_str(&toml, &[])
            .expect("valid")
            .oidc
            .issuer_template
            .expect("set");
        assert_eq!(
            t.issuer_for("tenant-a").as_deref(),
            Some("https://login.example.com/tenant-a/v2.0")
        );
        assert_eq!(t.issuer_for("tenant-b"), None);
        assert_eq!(t.issuer_for("tenant"), None);
    }

    #[test]
    fn frontchannel_frame_ancestors_default_to_the_issuer_origin() {
        let toml = with("", "[oidc.frontchannel_logout]\nenabled = true");
        let c = load_str(&toml, &[]).expect("valid");
        let f = c.oidc.frontchannel_logout.expect("enabled");
        assert_eq!(
            f.frame_ancestors,
            vec![c.oidc.issuer.origin().ascii_serialization()]
        );
        let toml = with(
            "",
            "[oidc.frontchannel_logout]\nenabled = true\nframe_ancestors = [\"https://login.example.com/path\"]",
        );
        let keys = keys_of(load_str(&toml, &[]).expect_err("a path"));
        assert_eq!(keys, vec!["oidc.frontchannel_logout.frame_ancestors[0]"]);
    }
}
