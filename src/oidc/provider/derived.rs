//! Derived user tokens: an access token made for one route's API, obtained
//! from the session's own grant — a refresh-token grant with RFC 8707
//! `resource` and `scope`, or an RFC 8693 token exchange of the session's
//! access token — authenticated like every other token call. Whether the
//! provider offers token exchange is checked here at discovery.

use openidconnect::core::CoreGrantType;

use super::{Provider, ProviderError, TokenSet};
use crate::config::RouteToken;
use crate::secret::SecretString;

/// RFC 8693 §2.1 grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3 token type of an OAuth access token.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

impl Provider {
    /// A token for `route`'s API. By default from the session's refresh
    /// token with `resource`/`scope` (the answer may rotate the refresh
    /// token: the caller keeps the new one); with `token_exchange`, by
    /// exchanging the session's access token. Nothing of either is logged.
    #[tracing::instrument(target = "oidc_bff_otel", name = "provider.derived_token", skip_all,
        fields(otel.kind = "client", oidc.grant_type = tracing::field::Empty))]
    pub async fn derived_token(
        &self,
        route: &RouteToken,
        refresh_token: Option<&SecretString>,
        access_token: &SecretString,
    ) -> Result<TokenSet, ProviderError> {
        let scope = route.scopes.join(" ");
        let mut grant: Vec<(&'static str, &str)> = Vec::with_capacity(6);
        if route.exchange {
            tracing::Span::current().record("oidc.grant_type", "token_exchange");
            grant.push(("grant_type", TOKEN_EXCHANGE_GRANT));
            grant.push(("subject_token", access_token.expose()));
            grant.push(("subject_token_type", ACCESS_TOKEN_TYPE));
            grant.push(("requested_token_type", ACCESS_TOKEN_TYPE));
        } else {
            tracing::Span::current().record("oidc.grant_type", "refresh_token");
            let Some(rt) = refresh_token else {
                return Err(ProviderError::Rejected {
                    error: "invalid_grant".into(),
                    description: Some("the session has no refresh token to derive a token".into()),
                });
            };
            grant.push(("grant_type", "refresh_token"));
            grant.push(("refresh_token", rt.expose()));
        }
        if let Some(resource) = &route.resource {
            grant.push(("resource", resource.as_str()));
            if route.exchange {
                // RFC 8693 §2.1: `audience` names the same target logically.
                grant.push(("audience", resource.as_str()));
            }
        }
        if !scope.is_empty() {
            grant.push(("scope", &scope));
        }
        self.token_request(&grant, None).await
    }
}

/// At discovery: a route with `token_exchange` (its key in `required_by`)
/// needs the provider to advertise the grant; otherwise the provider is
/// unusable with this configuration, naming the key and the fix.
pub(super) fn check_token_exchange(
    required_by: Option<&str>,
    advertised: Option<&Vec<CoreGrantType>>,
) -> Result<(), ProviderError> {
    let Some(key) = required_by else {
        return Ok(());
    };
    let offered = advertised.is_some_and(|grants| {
        grants
            .iter()
            .any(|g| matches!(g, CoreGrantType::Extension(s) if s == TOKEN_EXCHANGE_GRANT))
    });
    if offered {
        Ok(())
    } else {
        Err(ProviderError::Misconfigured(format!(
            "{key} = true but the provider does not advertise the grant {TOKEN_EXCHANGE_GRANT} in grant_types_supported; enable token exchange at the provider or remove {key}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_exchange_needs_the_advertised_grant_only_when_a_route_uses_it() {
        let without = vec![CoreGrantType::RefreshToken];
        let with = vec![
            CoreGrantType::RefreshToken,
            CoreGrantType::Extension(TOKEN_EXCHANGE_GRANT.into()),
        ];
        assert!(check_token_exchange(None, None).is_ok());
        assert!(check_token_exchange(Some("routes[1].token_exchange"), Some(&with)).is_ok());
        for advertised in [None, Some(&without)] {
            let err = check_token_exchange(Some("routes[1].token_exchange"), advertised)
                .expect_err("not offered");
            assert!(
                err.to_string().contains("routes[1].token_exchange"),
                "{err}"
            );
        }
    }
}
