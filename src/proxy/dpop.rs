//! DPoP to upstreams (RFC 9449 §7) on routes with `dpop = true`: the
//! session's DPoP-bound access token goes as `Authorization: DPoP …` with
//! a proof signed by the session's key, bound to this request's method,
//! its upstream URL (without query) and the token (`ath`), and carrying
//! the upstream's latest nonce (one per origin: an upstream is one
//! resource server). A `use_dpop_nonce` refusal is retried
//! once with the new nonce by `forward` (the request kept for a replay,
//! as for a refused token). Never a `Bearer` fallback.

use http::{HeaderMap, HeaderValue, Method, Uri, header};

use crate::error::AppError;
use crate::oidc::dpop::{DpopKey, Nonces, origin_of};
use crate::secret::SecretString;
use crate::session::Session;

/// The `DPoP` request header.
pub const DPOP: header::HeaderName = header::HeaderName::from_static("dpop");

/// What a DPoP route's request is sent with: the session's key (parsed
/// once per opened session, see `Session::dpop`) and token.
pub struct UpstreamDpop<'s> {
    key: &'s DpopKey,
    token: &'s SecretString,
}

impl<'s> UpstreamDpop<'s> {
    /// For `session` on a route with `dpop = true`; `None` on other routes
    /// (or without a session: nothing to prove). A session without a key
    /// (made before `oidc.dpop` was on) is refused, never sent as Bearer.
    pub fn for_route(wants: bool, session: Option<&'s Session>) -> Result<Option<Self>, AppError> {
        let (true, Some(s)) = (wants, session) else {
            return Ok(None);
        };
        let Some(key) = s
            .dpop()
            .map_err(|e| AppError::Internal(format!("session DPoP key: {e}")))?
        else {
            return Err(AppError::Forbidden(
                "This API needs a session bound to a DPoP key; log in again.".into(),
            ));
        };
        Ok(Some(Self {
            key,
            token: &s.secrets.access_token,
        }))
    }

    /// Sets `Authorization: DPoP <token>` and a fresh proof for `method`
    /// on `uri` (absolute: the upstream's), with `uri`'s server's latest
    /// nonce; gives back the nonce the proof carries.
    pub fn attach(
        &self,
        headers: &mut HeaderMap,
        method: &Method,
        uri: &Uri,
        nonces: &Nonces,
    ) -> Result<Option<String>, AppError> {
        let htu = htu(uri);
        let nonce = nonces.get(origin_of(&htu));
        let proof = self
            .key
            .proof(
                method.as_str(),
                &htu,
                crate::clock::unix_now(),
                nonce.as_deref(),
                Some(self.token.expose()),
            )
            .map_err(|e| AppError::Internal(format!("DPoP proof: {e}")))?;
        let bad = |_| AppError::Internal("DPoP header is not a valid header value".into());
        let mut auth =
            HeaderValue::from_str(&format!("DPoP {}", self.token.expose())).map_err(bad)?;
        auth.set_sensitive(true);
        let mut proof = HeaderValue::from_str(&proof).map_err(bad)?;
        proof.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert(DPOP, proof);
        Ok(nonce)
    }
}

/// `scheme://authority/path` of an upstream request URI (RFC 9449 §4.2
/// `htu`: no query, no fragment).
fn htu(uri: &Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default(),
        uri.path()
    )
}

/// Keeps the `DPoP-Nonce` an upstream answered with (RFC 9449 §9: on a
/// refusal or any other answer); the new nonce when the answer was a
/// `use_dpop_nonce` refusal worth a retry: one other than the nonce the
/// request's proof `sent` (not the shared table's: when many requests meet
/// a rotated nonce at once, the first to store it must not make the others
/// give up).
pub fn remember_nonce(
    uri: &Uri,
    answer: &HeaderMap,
    nonces: &Nonces,
    sent: Option<&str>,
) -> Option<String> {
    let value = answer.get("dpop-nonce")?;
    nonces.remember(origin_of(&htu(uri)), value.as_bytes());
    let challenge = crate::oidc::dpop::resource_nonce_challenge(answer)?;
    (sent != Some(challenge.as_str())).then_some(challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proofs_url_is_the_upstream_request_without_its_query() {
        let uri: Uri = "http://127.0.0.1:9100/base/x/y?q=secret"
            .parse()
            .expect("uri");
        assert_eq!(htu(&uri), "http://127.0.0.1:9100/base/x/y");
    }

    #[test]
    fn only_a_new_nonce_in_a_use_dpop_nonce_refusal_is_worth_a_retry() {
        let uri: Uri = "http://api.test/r".parse().expect("uri");
        let nonces = Nonces::default();
        let mut h = HeaderMap::new();
        h.insert("dpop-nonce", HeaderValue::from_static("n1"));
        assert_eq!(
            remember_nonce(&uri, &h, &nonces, None),
            None,
            "no challenge"
        );
        assert_eq!(
            nonces.get("http://api.test").as_deref(),
            Some("n1"),
            "kept for the upstream's origin, every path of it"
        );
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"DPoP error="use_dpop_nonce""#),
        );
        assert_eq!(
            remember_nonce(&uri, &h, &nonces, Some("n1")),
            None,
            "the nonce already sent"
        );
        h.insert("dpop-nonce", HeaderValue::from_static("n2"));
        assert_eq!(
            remember_nonce(&uri, &h, &nonces, Some("n1")).as_deref(),
            Some("n2")
        );
        // Another request that sent n1 and meets n2 after the first stored
        // it still retries.
        assert_eq!(
            remember_nonce(&uri, &h, &nonces, Some("n1")).as_deref(),
            Some("n2")
        );
    }
}
