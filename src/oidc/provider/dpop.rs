//! DPoP at the provider (RFC 9449): whether discovery allows `oidc.dpop`,
//! the proofs sent to the token and userinfo endpoints with the latest
//! nonce of that endpoint (remembered per process in the metadata cache),
//! and the check that a token answer is bound (`token_type: DPoP`).

use url::Url;

use super::{Endpoint, Provider, ProviderError, TokenSet};
use crate::oidc::dpop::{ALGORITHM, DpopKey};
use crate::secret::SecretString;

/// The word a token answer not bound to the session's key is refused with
/// (`ProviderError::Rejected`): the login fails, a refresh keeps nothing.
pub const NOT_BOUND: &str = "dpop_not_bound";

/// At discovery, with `oidc.dpop` on: the provider must advertise DPoP
/// (`dpop_signing_alg_values_supported`, RFC 9449 §5.1) with ES256;
/// otherwise it is unusable with this configuration (not ready), naming
/// the key and the fix.
pub(super) fn check_advertised(
    dpop: bool,
    advertised: Option<&[String]>,
) -> Result<(), ProviderError> {
    if !dpop {
        return Ok(());
    }
    match advertised {
        None => Err(ProviderError::Misconfigured(
            "oidc.dpop is on but the provider's discovery document has no dpop_signing_alg_values_supported (it does not offer DPoP); enable DPoP at the provider or set oidc.dpop = false".into(),
        )),
        Some(algs) if !algs.iter().any(|a| a == ALGORITHM) => {
            Err(ProviderError::Misconfigured(format!(
                "oidc.dpop_signing_alg {ALGORITHM} is not in the provider's dpop_signing_alg_values_supported {algs:?}; enable ES256 for DPoP at the provider"
            )))
        }
        Some(_) => Ok(()),
    }
}

/// A token answer to a request with a proof must be bound to its key: a
/// `Bearer` answer would put a replayable token in the session where the
/// configuration promises a sender-constrained one.
pub(super) fn bound(tokens: TokenSet) -> Result<TokenSet, ProviderError> {
    if tokens.token_type.eq_ignore_ascii_case("DPoP") {
        return Ok(tokens);
    }
    tracing::warn!(
        "token endpoint ignored the DPoP proof (token_type is not DPoP); answer refused"
    );
    Err(ProviderError::Rejected {
        error: NOT_BOUND.into(),
        description: Some("the token endpoint issued a token not bound to the DPoP key".into()),
    })
}

/// The server a provider endpoint's nonces belong to: the endpoint itself
/// (its URL without query). RFC 9449 gives the authorization server (token
/// endpoint) and a resource server (userinfo) nonces of their own; one
/// origin may serve both, with different nonces, and sharing one entry
/// would make each alternate request meet the other's nonce and retry.
fn nonce_server(url: &Url) -> &str {
    crate::oidc::dpop::htu_of(url.as_str())
}

impl Provider {
    /// A proof for `method` on `url` with that endpoint's latest nonce, and
    /// the nonce it carries.
    pub(super) fn dpop_proof(
        &self,
        key: &DpopKey,
        method: &str,
        url: &Url,
        access_token: Option<&str>,
    ) -> Result<(String, Option<String>), ProviderError> {
        let nonce = self.cache.dpop_nonces.get(nonce_server(url));
        let proof = key
            .proof(
                method,
                url.as_str(),
                crate::clock::unix_now(),
                nonce.as_deref(),
                access_token,
            )
            .map_err(|e| ProviderError::Misconfigured(e.to_string()))?;
        Ok((proof, nonce))
    }

    /// Keeps the `DPoP-Nonce` a provider answer carries; whether it differs
    /// from the nonce this request's proof `sent` (then a `use_dpop_nonce`
    /// refusal is worth one retry). Compared with what was sent, not with
    /// the shared table: when many requests meet a new nonce at once, the
    /// first to store it must not make the others give up.
    pub(super) fn remember_dpop_nonce(
        &self,
        url: &Url,
        resp: &reqwest::Response,
        sent: Option<&str>,
    ) -> bool {
        let Some(value) = resp.headers().get("dpop-nonce") else {
            return false;
        };
        self.cache
            .dpop_nonces
            .remember(nonce_server(url), value.as_bytes());
        crate::oidc::dpop::valid_nonce(value.as_bytes()).is_some_and(|n| Some(n) != sent)
    }

    /// Userinfo with a DPoP-bound access token (`Authorization: DPoP`, a
    /// proof with `ath`), retried once on a `use_dpop_nonce` challenge.
    pub(super) async fn dpop_userinfo(
        &self,
        endpoint: &Url,
        access_token: &SecretString,
        key: &DpopKey,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut retried = false;
        loop {
            let (proof, sent) =
                self.dpop_proof(key, "GET", endpoint, Some(access_token.expose()))?;
            let req = self
                .http
                .get(endpoint.clone())
                .header("authorization", format!("DPoP {}", access_token.expose()))
                .header("DPoP", proof)
                .header("accept", "application/json");
            let resp = self.send(Endpoint::Userinfo, req).await?;
            let new_nonce = self.remember_dpop_nonce(endpoint, &resp, sent.as_deref());
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                && new_nonce
                && !retried
                && crate::oidc::dpop::resource_nonce_challenge(resp.headers()).is_some()
            {
                retried = true;
                continue;
            }
            return Ok(resp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpop_needs_a_provider_that_advertises_es256_proofs() {
        assert!(check_advertised(false, None).is_ok());
        let es = vec!["ES256".to_owned(), "RS256".to_owned()];
        assert!(check_advertised(true, Some(&es)).is_ok());
        let err = check_advertised(true, None).expect_err("not offered");
        assert!(err.to_string().contains("oidc.dpop"), "{err}");
        let err = check_advertised(true, Some(&["RS256".to_owned()])).expect_err("no ES256");
        assert!(err.to_string().contains("oidc.dpop_signing_alg"), "{err}");
    }

    #[test]
    fn the_token_endpoint_and_userinfo_keep_nonces_of_their_own() {
        let nonces = crate::oidc::dpop::Nonces::default();
        let token = Url::parse("https://op.test/oauth/token").expect("url");
        let userinfo = Url::parse("https://op.test/oauth/userinfo?x=1").expect("url");
        nonces.remember(nonce_server(&token), b"as-nonce");
        nonces.remember(nonce_server(&userinfo), b"rs-nonce");
        assert_eq!(
            nonces.get(nonce_server(&token)).as_deref(),
            Some("as-nonce")
        );
        assert_eq!(
            nonces.get(nonce_server(&userinfo)).as_deref(),
            Some("rs-nonce")
        );
        // The query is not part of the server's name.
        let plain = Url::parse("https://op.test/oauth/userinfo").expect("url");
        assert_eq!(nonce_server(&plain), nonce_server(&userinfo));
    }

    fn tokens(token_type: &str) -> TokenSet {
        TokenSet {
            access_token: SecretString::new("at"),
            refresh_token: None,
            id_token: None,
            expires_in: None,
            scope: None,
            token_type: token_type.into(),
        }
    }

    #[test]
    fn only_a_dpop_token_type_answers_a_request_with_a_proof() {
        assert!(bound(tokens("DPoP")).is_ok());
        assert!(
            bound(tokens("dpop")).is_ok(),
            "case-insensitive (RFC 6749 §7.1)"
        );
        for other in ["Bearer", "bearer", "", "DPoP2"] {
            let err = bound(tokens(other)).err().expect("refused");
            assert!(
                matches!(&err, ProviderError::Rejected { error, .. } if error == NOT_BOUND),
                "{other}: {err}"
            );
        }
    }
}
