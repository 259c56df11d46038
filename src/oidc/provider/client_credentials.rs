//! The gateway's own client-credentials grant (RFC 6749 §4.4), for routes
//! with `token = "client"`: authenticated and bounded like every other
//! token request.

use super::{Provider, ProviderError, TokenSet};

impl Provider {
    /// Asks for a client-credentials token with `scope` (space-separated,
    /// left out when empty) and an RFC 8707 `resource`, if given.
    #[tracing::instrument(target = "oidc_bff_otel", name = "provider.token", skip_all,
        fields(otel.kind = "client", oidc.grant_type = "client_credentials"))]
    pub async fn client_credentials(
        &self,
        scope: &str,
        resource: Option<&str>,
    ) -> Result<TokenSet, ProviderError> {
        let mut grant = vec![("grant_type", "client_credentials")];
        if !scope.is_empty() {
            grant.push(("scope", scope));
        }
        if let Some(r) = resource {
            grant.push(("resource", r));
        }
        self.token_request(&grant, None).await
    }
}
