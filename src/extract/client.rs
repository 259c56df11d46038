//! Who is asking: the client's IP address and user agent.
//!
//! The address is the TCP peer's, or with `server.trust_forwarded_headers`
//! the last hop a trusted proxy appended to `X-Forwarded-For`. It is
//! recorded on sessions and shown to their owner, never used to decide
//! access.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use http::HeaderMap;
use http::request::Parts;

pub use crate::session::ClientInfo;

/// How the client's address is read (a sub-state).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddressPolicy {
    /// Believe `X-Forwarded-For` (a proxy in front appends the client).
    pub trust_forwarded: bool,
}

/// The client's address: the peer, or with a trusted proxy in front, the
/// last hop it appended to `X-Forwarded-For`.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trust_forwarded: bool) -> IpAddr {
    if !trust_forwarded {
        return peer;
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer)
}

/// The TCP peer (unspecified when the app runs without a listener, as in
/// router tests).
pub fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// Only the client's address: what the proxy path needs per request.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    ClientAddressPolicy: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let policy = ClientAddressPolicy::from_ref(state);
        Ok(Self(client_ip(
            &parts.headers,
            peer_ip(parts),
            policy.trust_forwarded,
        )))
    }
}

impl<S> FromRequestParts<S> for ClientInfo
where
    S: Send + Sync,
    ClientAddressPolicy: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, state).await;
        Ok(ClientInfo::new(ip, &parts.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn client_ip_comes_from_the_peer_unless_a_proxy_is_trusted() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2"),
        );
        let peer: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(client_ip(&h, peer, false), peer);
        assert_eq!(
            client_ip(&h, peer, true),
            "2.2.2.2".parse::<IpAddr>().expect("ip")
        );
    }
}
