//! Who is asking: the client's IP address and user agent.
//!
//! The address is the TCP peer's unless the peer is one of
//! `server.trusted_proxies`: then `X-Forwarded-For` (every line of it, read
//! as one list) is walked from the right, past each trusted proxy, and the
//! first address that is not one is the client. Nothing to the left of it is
//! believed: those entries are whatever the client chose to write. The
//! verified part of the walk (client, trusted hops, peer) is also what the
//! proxy tells upstreams (`proxy::headers`). The address is recorded on
//! sessions and shown to their owner, never used to decide access.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use http::request::Parts;
use http::{Extensions, HeaderMap};

pub use crate::session::ClientInfo;

/// How many `X-Forwarded-For` entries are walked at most: more trusted hops
/// than this is a loop or an attack, and the walk stops at the last one.
const MAX_HOPS: usize = 16;

/// One trusted network: an address with its host bits zero and a prefix
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    len: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.len.min(32)))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len.min(128)))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

/// How the client's address is read (a sub-state): which peers are proxies
/// whose `X-Forwarded-For`, `Forwarded` and `X-Request-Id` are believed.
#[derive(Debug, Clone, Default)]
pub struct ClientAddressPolicy {
    trusted: Arc<[Network]>,
}

impl ClientAddressPolicy {
    /// From `server.trusted_proxies` (validated networks and prefix lengths).
    pub fn new(trusted: &[(IpAddr, u8)]) -> Self {
        Self {
            trusted: trusted
                .iter()
                .map(|&(addr, len)| Network {
                    addr: addr.to_canonical(),
                    len,
                })
                .collect(),
        }
    }

    /// Whether `ip` is one of the configured proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(ip))
    }

    /// The verified hops, client first and the TCP peer last: the peer, and
    /// while the last hop added is a trusted proxy, the `X-Forwarded-For`
    /// entry to its left. The walk stops at the first untrusted address (the
    /// client), at an entry that is not an address, or after [`MAX_HOPS`].
    pub fn chain(&self, headers: &HeaderMap, peer: IpAddr) -> Vec<IpAddr> {
        let peer = peer.to_canonical();
        let mut chain = vec![peer];
        if !self.trusts(peer) {
            return chain;
        }
        let entries: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .collect();
        for entry in entries.into_iter().rev().take(MAX_HOPS) {
            let Some(ip) = parse_hop(entry) else { break };
            chain.push(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        chain.reverse();
        chain
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:80`), surrounded by optional whitespace.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })?;
    Some(ip.to_canonical())
}

/// The client's address: the peer, or the rightmost address in peer +
/// `X-Forwarded-For` that is not a trusted proxy (see
/// [`ClientAddressPolicy::chain`]).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, policy: &ClientAddressPolicy) -> IpAddr {
    policy.chain(headers, peer).first().copied().unwrap_or(peer)
}

/// The TCP peer (unspecified when the app runs without a listener, as in
/// router tests).
pub fn peer_ip(parts: &Parts) -> IpAddr {
    peer_ip_of(&parts.extensions)
}

/// [`peer_ip`] for a whole request's extensions (middleware).
pub fn peer_ip_of(extensions: &Extensions) -> IpAddr {
    extensions
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
        Ok(Self(client_ip(&parts.headers, peer_ip(parts), &policy)))
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
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn policy(nets: &[(&str, u8)]) -> ClientAddressPolicy {
        let nets: Vec<(IpAddr, u8)> = nets.iter().map(|&(a, l)| (ip(a), l)).collect();
        ClientAddressPolicy::new(&nets)
    }

    fn xff(lines: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_static(l));
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let proxies = policy(&[("10.0.0.0", 8), ("127.0.0.1", 32), ("fd00::", 8)]);
        // (XFF lines, peer, expected client)
        let table: &[(&[&'static str], &str, &str)] = &[
            // No trusted proxy in front: the peer, whatever the header says.
            (&["1.1.1.1"], "203.0.113.9", "203.0.113.9"),
            (&[], "203.0.113.9", "203.0.113.9"),
            // A trusted peer: the entry it appended.
            (&["1.1.1.1"], "127.0.0.1", "1.1.1.1"),
            // Forged entries to the left of the real client are not read.
            (&["6.6.6.6, 1.1.1.1"], "127.0.0.1", "1.1.1.1"),
            // Two trusted hops are walked past.
            (&["6.6.6.6, 1.1.1.1, 10.2.3.4"], "127.0.0.1", "1.1.1.1"),
            // Several header lines are one list, in order.
            (&["6.6.6.6", "1.1.1.1", "10.2.3.4"], "127.0.0.1", "1.1.1.1"),
            (&["6.6.6.6, 1.1.1.1", "10.2.3.4"], "127.0.0.1", "1.1.1.1"),
            // Ports and brackets are tolerated; IPv6 proxies too.
            (&["1.1.1.1:4711"], "127.0.0.1", "1.1.1.1"),
            (&["[2001:db8::1]:443, fd00::2"], "127.0.0.1", "2001:db8::1"),
            // An IPv4-mapped peer is the IPv4 address.
            (&["1.1.1.1"], "::ffff:127.0.0.1", "1.1.1.1"),
            // Garbage stops the walk at the last trusted hop.
            (&["1.1.1.1, bogus"], "127.0.0.1", "127.0.0.1"),
            (&["1.1.1.1, , 10.0.0.1"], "127.0.0.1", "10.0.0.1"),
            (&[""], "127.0.0.1", "127.0.0.1"),
            // Only trusted addresses: the leftmost one.
            (&["10.0.0.1, 10.0.0.2"], "127.0.0.1", "10.0.0.1"),
        ];
        for (lines, peer, want) in table {
            assert_eq!(
                client_ip(&xff(lines), ip(peer), &proxies),
                ip(want),
                "{lines:?} from {peer}"
            );
        }
    }

    #[test]
    fn the_chain_holds_the_client_and_the_trusted_hops_only() {
        let proxies = policy(&[("10.0.0.0", 8), ("127.0.0.1", 32)]);
        let chain = proxies.chain(&xff(&["6.6.6.6, 1.1.1.1", "10.2.3.4"]), ip("127.0.0.1"));
        assert_eq!(chain, vec![ip("1.1.1.1"), ip("10.2.3.4"), ip("127.0.0.1")]);
        let none = ClientAddressPolicy::default();
        assert_eq!(
            none.chain(&xff(&["1.1.1.1"]), ip("127.0.0.1")),
            vec![ip("127.0.0.1")]
        );
    }

    #[test]
    fn a_long_run_of_trusted_hops_is_walked_at_most_sixteen_deep() {
        let proxies = policy(&[("10.0.0.0", 8), ("127.0.0.1", 32)]);
        let line: String = (0..100)
            .map(|i| format!("10.0.0.{}", i % 250))
            .collect::<Vec<_>>()
            .join(", ");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(&format!("1.1.1.1, {line}")).expect("value"),
        );
        let chain = proxies.chain(&h, ip("127.0.0.1"));
        assert_eq!(chain.len(), MAX_HOPS + 1);
        assert!(chain.iter().all(|&a| proxies.trusts(a)));
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            // A small pool so trusted and untrusted addresses collide often.
            (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::from([10, 0, a, b])),
            (0u8..4).prop_map(|b| IpAddr::from([127, 0, 0, b])),
            (0u8..4).prop_map(|b| IpAddr::from([198, 51, 100, b])),
            any::<u128>().prop_map(|v| IpAddr::from(v.to_be_bytes())),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => arb_ip().prop_map(|a| a.to_string()),
            1 => arb_ip().prop_map(|a| match a {
                IpAddr::V4(v) => format!("{v}:80"),
                IpAddr::V6(v) => format!("[{v}]:80"),
            }),
            1 => "[ -~]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// Whatever the headers say, the client is the peer or an address
        /// from `X-Forwarded-For`, and every hop to its right (the peer
        /// included) is a trusted proxy: nothing left of an untrusted hop is
        /// ever believed.
        #[test]
        fn the_client_is_never_read_from_beyond_an_untrusted_hop(
            lines in proptest::collection::vec(
                proptest::collection::vec(arb_entry(), 0..5).prop_map(|e| e.join(",")),
                0..4,
            ),
            peer in arb_ip(),
        ) {
            let proxies = policy(&[("10.0.0.0", 30), ("127.0.0.1", 32), ("fd00::", 8)]);
            let mut h = HeaderMap::new();
            for l in &lines {
                if let Ok(v) = HeaderValue::from_str(l) {
                    h.append("x-forwarded-for", v);
                }
            }
            let chain = proxies.chain(&h, peer);
            let client = client_ip(&h, peer, &proxies);
            prop_assert_eq!(chain.first().copied(), Some(client));
            prop_assert_eq!(chain.last().copied(), Some(peer.to_canonical()));
            for hop in &chain[1..] {
                prop_assert!(proxies.trusts(*hop), "{} right of the client is untrusted", hop);
            }
            let listed: Vec<IpAddr> = h
                .get_all("x-forwarded-for")
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .filter_map(parse_hop)
                .collect();
            prop_assert!(client == peer.to_canonical() || listed.contains(&client));
            if !proxies.trusts(peer) {
                prop_assert_eq!(client, peer.to_canonical());
            }
        }
    }
}
