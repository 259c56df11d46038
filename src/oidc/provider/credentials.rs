//! How the gateway authenticates itself on the back channel (token,
//! refresh, revocation and PAR requests), as `oidc.auth_method` says.

use std::borrow::Cow;

use super::{Discovered, Provider, ProviderError};
use crate::config::{AssertionAudience, AuthMethod};
use crate::oidc::client_auth::ASSERTION_TYPE;

impl Provider {
    /// Adds the client's credentials to a back-channel request (token,
    /// revocation, PAR), as `oidc.auth_method` says: Basic authentication,
    /// form fields, a signed client assertion, or only `client_id` when the
    /// TLS client certificate (set on the connection) authenticates. The
    /// secret is borrowed, never copied.
    pub(super) fn authenticated<'a>(
        &'a self,
        req: reqwest::RequestBuilder,
        d: &Discovered,
        form: &mut Vec<(&'static str, Cow<'a, str>)>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let client_id = || Cow::Borrowed(self.config.client_id.as_str());
        match self.config.auth_method {
            AuthMethod::ClientSecretBasic => {
                // RFC 6749 §2.3.1: form-urlencode the credentials before Basic.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                return Ok(req.basic_auth(
                    enc(&self.config.client_id),
                    Some(enc(self.config.client_secret.expose())),
                ));
            }
            AuthMethod::ClientSecretPost => {
                form.push(("client_id", client_id()));
                form.push((
                    "client_secret",
                    Cow::Borrowed(self.config.client_secret.expose()),
                ));
            }
            AuthMethod::PrivateKeyJwt => {
                let signer = self.assertions.as_ref().ok_or_else(|| {
                    ProviderError::Misconfigured("no key for private_key_jwt".into())
                })?;
                let audience = match self.config.client_assertion_audience {
                    AssertionAudience::TokenEndpoint => d.token_endpoint.as_str(),
                    AssertionAudience::Issuer => d.issuer.as_str(),
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|t| t.as_secs())
                    .unwrap_or_default();
                let assertion = signer
                    .assertion(&self.config.client_id, audience, now)
                    .map_err(|e| ProviderError::Misconfigured(e.to_string()))?;
                form.push(("client_id", client_id()));
                form.push(("client_assertion_type", Cow::Borrowed(ASSERTION_TYPE)));
                form.push(("client_assertion", Cow::Owned(assertion)));
            }
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => {
                form.push(("client_id", client_id()));
            }
        }
        Ok(req)
    }
}
