//! Pushed authorization requests (RFC 9126): whether the provider gets
//! them (`oidc.pushed_authorization` and its discovery document), the push
//! itself, and reading its answer.

use std::borrow::Cow;

use serde::Deserialize;
use url::Url;

use super::{Discovered, Endpoint, Provider, ProviderError, RawErrorResponse};
use crate::config::PushedAuthorization;

impl Provider {
    /// RFC 9126: POSTs the authorization request `url` carries to the PAR
    /// endpoint, authenticated like a token request, and returns the URL
    /// the browser gets instead: only `client_id` and `request_uri`.
    #[tracing::instrument(target = "oidc_bff_otel", name = "provider.par", skip_all,
        fields(otel.kind = "client"))]
    pub(super) async fn pushed(
        &self,
        d: &Discovered,
        endpoint: &Url,
        url: Url,
    ) -> Result<Url, ProviderError> {
        let mut form: Vec<(&'static str, Cow<'_, str>)> = Vec::new();
        let mut params: Vec<(Cow<'_, str>, Cow<'_, str>)> = url
            .query_pairs()
            .filter(|(k, _)| k != "client_id")
            .collect();
        let req = self
            .http
            .post(endpoint.clone())
            .header("accept", "application/json");
        let req = self.authenticated(req, d, &mut form)?;
        if !form.iter().any(|(k, _)| *k == "client_id") {
            // Basic authentication: the request still names its client.
            form.push(("client_id", Cow::Borrowed(self.config.client_id.as_str())));
        }
        params.extend(form.into_iter().map(|(k, v)| (Cow::Borrowed(k), v)));
        let resp = self.send(Endpoint::Par, req.form(&params)).await?;
        let status = resp.status();
        let body = self
            .read_limited(resp, "pushed authorization response")
            .await?;
        let request_uri = parse_par_response(status, &body)?;
        let mut browser = url;
        browser.set_query(None);
        browser
            .query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("request_uri", &request_uri);
        Ok(browser)
    }
}

/// The PAR endpoint to use, if any, under `oidc.pushed_authorization`:
/// `auto` pushes only when the provider says it requires it; `always`
/// makes a provider without the endpoint unusable, naming the key.
pub(super) fn pushed_authorization_endpoint(
    mode: PushedAuthorization,
    advertised: Option<&Url>,
    required: bool,
) -> Result<Option<Url>, ProviderError> {
    match (mode, advertised) {
        (PushedAuthorization::Never, _) => Ok(None),
        (PushedAuthorization::Always, None) => Err(ProviderError::Misconfigured(
            "oidc.pushed_authorization = \"always\" but the provider advertises no pushed_authorization_request_endpoint; set it to \"auto\" or \"never\", or enable PAR at the provider".into(),
        )),
        (PushedAuthorization::Auto, None) if required => Err(ProviderError::Misconfigured(
            "the provider requires pushed authorization requests but advertises no pushed_authorization_request_endpoint".into(),
        )),
        (PushedAuthorization::Always, Some(u)) => Ok(Some(u.clone())),
        (PushedAuthorization::Auto, Some(u)) if required => Ok(Some(u.clone())),
        (PushedAuthorization::Auto, _) => Ok(None),
    }
}

/// Longest `request_uri` accepted (RFC 9126 gives no bound; a URN with a
/// random reference is well under this).
const MAX_REQUEST_URI_BYTES: usize = 2048;

/// A PAR endpoint's answer (RFC 9126 §2.2, §2.3): the `request_uri`, or a
/// refusal whose text is never shown to the browser.
fn parse_par_response(status: reqwest::StatusCode, body: &[u8]) -> Result<String, ProviderError> {
    if !status.is_success() {
        return Err(match serde_json::from_slice::<RawErrorResponse>(body) {
            Ok(e) => ProviderError::Rejected {
                error: e.error,
                description: e.error_description,
            },
            Err(_) => ProviderError::Unavailable(format!(
                "PAR endpoint answered {status} without an OAuth error"
            )),
        });
    }
    #[derive(Deserialize)]
    struct Pushed {
        request_uri: String,
    }
    let pushed: Pushed = serde_json::from_slice(body)
        .map_err(|e| ProviderError::InvalidResponse(format!("PAR response: {e}")))?;
    if pushed.request_uri.is_empty()
        || pushed.request_uri.len() > MAX_REQUEST_URI_BYTES
        || pushed.request_uri.chars().any(char::is_control)
    {
        return Err(ProviderError::InvalidResponse(
            "PAR response has an unusable request_uri".into(),
        ));
    }
    Ok(pushed.request_uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_is_used_when_configured_or_required_and_always_needs_the_endpoint() {
        use PushedAuthorization::*;
        let u = Url::parse("https://id.example.com/par").expect("url");
        assert_eq!(
            pushed_authorization_endpoint(Auto, Some(&u), false).ok(),
            Some(None)
        );
        assert_eq!(
            pushed_authorization_endpoint(Auto, Some(&u), true).ok(),
            Some(Some(u.clone()))
        );
        assert_eq!(
            pushed_authorization_endpoint(Always, Some(&u), false).ok(),
            Some(Some(u.clone()))
        );
        assert_eq!(
            pushed_authorization_endpoint(Never, Some(&u), true).ok(),
            Some(None)
        );
        assert_eq!(
            pushed_authorization_endpoint(Auto, None, false).ok(),
            Some(None)
        );
        assert!(matches!(
            pushed_authorization_endpoint(Always, None, false),
            Err(ProviderError::Misconfigured(m)) if m.contains("oidc.pushed_authorization")
        ));
    }

    #[test]
    fn par_answers_give_a_request_uri_or_a_refusal_without_the_body() {
        let uri = parse_par_response(
            reqwest::StatusCode::CREATED,
            br#"{"request_uri":"urn:ietf:params:oauth:request_uri:abc","expires_in":60}"#,
        )
        .expect("pushed");
        assert_eq!(uri, "urn:ietf:params:oauth:request_uri:abc");
        assert!(matches!(
            parse_par_response(reqwest::StatusCode::BAD_REQUEST, br#"{"error":"invalid_client"}"#),
            Err(ProviderError::Rejected { error, .. }) if error == "invalid_client"
        ));
        assert!(matches!(
            parse_par_response(reqwest::StatusCode::BAD_GATEWAY, b"<html>secret page</html>"),
            Err(ProviderError::Unavailable(m)) if !m.contains("secret")
        ));
        assert!(
            parse_par_response(reqwest::StatusCode::CREATED, br#"{"request_uri":""}"#).is_err()
        );
    }
}
