//! A Redis Cluster node that answers badly at the protocol level, played
//! by a scripted [`RespProxy`] in front of each primary of a real
//! 3-primary cluster (each primary announces its proxy's port, so the
//! slot map, `MOVED` and `CLUSTER NODES` all send the gateway through
//! the proxies): as on a fixed server (`store_replies`), a reply the
//! gateway does not expect or one that never ends is an outage answer
//! within `store.timeout`, never a logout of a session that still exists;
//! and the connection that carried it is replaced, so the next request
//! is served.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use oidc_bff::config::{RedisConfig, RedisEndpoint};
use oidc_bff::session::store::SessionStore;
use oidc_bff::session::store::redis::RedisStore;

use crate::harness::{
    Act, Browser, GatewayBuilder, RedisCluster, RedisServer, RespProxy, Upstream, random_prefix,
};
use crate::store_replies::{GET_SCRIPT, STORE_TIMEOUT, assert_outage};

/// A 3-primary cluster with a proxy in front of each primary, announced
/// in its place.
async fn proxied_cluster() -> (RedisCluster, Vec<RespProxy>) {
    let cluster = RedisCluster::start(3, 0);
    let mut proxies = Vec::new();
    for node in &cluster.nodes {
        proxies.push(proxy_for(node).await);
    }
    announced(&cluster, &proxies).await;
    (cluster, proxies)
}

/// A proxy in front of `node`, which announces it in its place.
async fn proxy_for(node: &RedisServer) -> RespProxy {
    let proxy = RespProxy::start(([127, 0, 0, 1], node.port).into()).await;
    let port = proxy.addr.port().to_string();
    let set = node.cli(&["CONFIG", "SET", "cluster-announce-port", &port]);
    assert_eq!(set.trim(), "OK", "cluster-announce-port: {set}");
    proxy
}

/// Waits until every node names each of `proxies` (gossip spreads it).
async fn announced(cluster: &RedisCluster, proxies: &[RespProxy]) {
    let ports: Vec<String> = proxies
        .iter()
        .map(|p| format!("127.0.0.1:{}@", p.addr.port()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.nodes.iter().all(|n| {
        let nodes = n.cli(&["CLUSTER", "NODES"]);
        ports.iter().all(|p| nodes.contains(p.as_str()))
    }) {
        assert!(
            Instant::now() < deadline,
            "the cluster did not announce the proxies"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The proxied cluster, a gateway on it (seeded with the proxies, the
/// session cache off so every lookup reaches the store) and alice logged
/// in.
async fn logged_in() -> (
    RedisCluster,
    Vec<RespProxy>,
    Upstream,
    crate::harness::Gateway,
    Browser,
) {
    let (cluster, proxies) = proxied_cluster().await;
    let upstream = Upstream::start().await;
    let seeds: Vec<String> = proxies.iter().map(|p| p.addr.to_string()).collect();
    let gw = GatewayBuilder::new(&upstream)
        .cluster(&seeds)
        .store_timeout(STORE_TIMEOUT)
        .configure(|c| c.store.cache_entries = 0)
        .start()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    assert_eq!(b.get("/api/a").await.status, StatusCode::OK);
    (cluster, proxies, upstream, gw, b)
}

/// Gives every proxy the same rule (only the node of alice's slot sees
/// her lookups).
fn rule_all(proxies: &[RespProxy], rule: impl Fn() -> Option<Act> + Clone + Send + Sync + 'static) {
    for proxy in proxies {
        let rule = rule.clone();
        proxy.rule(move |c| {
            if c.runs_script_with(GET_SCRIPT) {
                rule()
            } else {
                None
            }
        });
    }
}

fn clear_all(proxies: &[RespProxy]) {
    for proxy in proxies {
        proxy.clear();
    }
}

fn connections(proxies: &[RespProxy]) -> usize {
    proxies.iter().map(RespProxy::connections).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_whose_reply_never_ends_is_an_outage_and_its_connection_is_replaced() {
    let (_cluster, proxies, upstream, _gw, mut b) = logged_in().await;
    let before = connections(&proxies);
    // Declared, then trickled a byte every 20 ms, forever.
    rule_all(&proxies, || {
        Some(Act::Trickle {
            head: b"$536870912\r\n".to_vec(),
            filler: b'x',
            every: Duration::from_millis(20),
        })
    });
    assert_outage(&mut b, &upstream, "$536870912 trickled by a cluster node").await;
    clear_all(&proxies);
    let took = crate::store_outage::wait_until_ok(&mut b, "/api/a").await;
    assert!(
        took < Duration::from_secs(10),
        "served again {took:?} after the node answered well"
    );
    assert!(
        connections(&proxies) > before,
        "the connection that carried the endless reply was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_that_declares_512_mb_and_sends_nothing_is_an_outage_then_served_again() {
    let (_cluster, proxies, upstream, _gw, mut b) = logged_in().await;
    rule_all(&proxies, || Some(Act::Reply(b"$536870912\r\n".to_vec())));
    assert_outage(
        &mut b,
        &upstream,
        "$536870912 then nothing from a cluster node",
    )
    .await;
    clear_all(&proxies);
    let took = crate::store_outage::wait_until_ok(&mut b, "/api/a").await;
    assert!(
        took < Duration::from_secs(10),
        "served again {took:?} after the node answered well"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_connection_answering_replies_of_other_commands_is_replaced_at_once() {
    let (_cluster, proxies, upstream, _gw, mut b) = logged_in().await;
    let before = connections(&proxies);
    rule_all(&proxies, || {
        Some(Act::Flood {
            head: Vec::new(),
            filler: b"*3\r\n:1\r\n:2\r\n:3\r\n".to_vec(),
            total: 1 << 30,
        })
    });
    assert_outage(
        &mut b,
        &upstream,
        "replies of another command from a cluster node",
    )
    .await;
    clear_all(&proxies);
    let r = b.get("/api/a").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the next request went over a new connection: {r:?}"
    );
    assert!(connections(&proxies) > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_without_slots_whose_walk_reply_never_ends_is_walked_on_a_new_connection_next_time()
 {
    let (_cluster, proxy, store) = spare_behind_a_proxy().await;
    let now = oidc_bff::clock::unix_now();
    assert_eq!(store.count_sessions(now).await.expect("count"), 0);
    let walked = |proxy: &RespProxy| proxy.seen().iter().filter(|c| c.name() == "EVAL").count();
    assert!(
        walked(&proxy) > 0,
        "the count walked the spare through its proxy"
    );
    // The count's script on the primary without slots: a 512 MB string
    // declared, then nothing. It is passed over (it serves no slot).
    proxy.rule(|c| (c.name() == "EVAL").then(|| Act::Reply(b"$536870912\r\n".to_vec())));
    let started = Instant::now();
    assert_eq!(store.count_sessions(now).await.expect("count"), 0);
    assert!(
        started.elapsed() >= STORE_TIMEOUT / 2,
        "it waited for the node"
    );
    proxy.clear();
    let (before, walks) = (proxy.connections(), walked(&proxy));
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(store.count_sessions(now).await.expect("count"), 0);
        assert!(
            started.elapsed() < STORE_TIMEOUT / 2,
            "the node answers again, but the walk waited {:?} on the connection left behind the endless reply",
            started.elapsed()
        );
    }
    assert!(proxy.connections() > before, "a new connection to it");
    assert!(walked(&proxy) > walks);
}

/// A 3-primary cluster with a fourth primary that serves no slot (a
/// spare, walked on a connection of its own) announced behind a
/// [`RespProxy`], and a store over it.
async fn spare_behind_a_proxy() -> (RedisCluster, RespProxy, RedisStore) {
    let mut cluster = RedisCluster::start(3, 0);
    let added = cluster.add_primary();
    let proxy = proxy_for(&cluster.nodes[added]).await;
    announced(&cluster, std::slice::from_ref(&proxy)).await;
    let store = store_over(cluster.nodes.iter().map(|n| n.port).collect());
    (cluster, proxy, store)
}

/// A store on the cluster of `nodes` (ports on loopback) whose timeouts
/// are [`STORE_TIMEOUT`].
fn store_over(nodes: Vec<u16>) -> RedisStore {
    let nodes = nodes
        .into_iter()
        .map(|p| ("127.0.0.1".to_owned(), p))
        .collect();
    let config = RedisConfig {
        endpoint: RedisEndpoint::Cluster { nodes, tls: false },
        username: None,
        password: None,
        db: 0,
        connect_timeout: STORE_TIMEOUT,
        tls_ca_pem: None,
        tls_client: None,
    };
    RedisStore::new(&config, &random_prefix(), STORE_TIMEOUT).expect("store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_of_a_primary_whose_reply_never_ends_fails_once_and_the_next_walk_is_served() {
    let (_cluster, proxies) = proxied_cluster().await;
    let store = store_over(proxies.iter().map(|p| p.addr.port()).collect());
    let now = oidc_bff::clock::unix_now();
    assert_eq!(store.count_sessions(now).await.expect("count"), 0);
    // The count's script on every primary: a 512 MB string declared, then
    // nothing. A primary that serves slots fails the walk.
    for proxy in &proxies {
        proxy.rule(|c| (c.name() == "EVAL").then(|| Act::Reply(b"$536870912\r\n".to_vec())));
    }
    assert!(store.count_sessions(now).await.is_err());
    clear_all(&proxies);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = store.count_sessions(now).await {
        assert!(
            Instant::now() < deadline,
            "the primaries answer again, but the walk still fails: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_without_slots_answering_replies_of_other_commands_is_walked_on_a_new_connection()
{
    let (_cluster, proxy, store) = spare_behind_a_proxy().await;
    let now = oidc_bff::clock::unix_now();
    assert_eq!(store.count_sessions(now).await.expect("count"), 0);
    proxy.rule(|c| {
        (c.name() == "EVAL").then(|| Act::Flood {
            head: Vec::new(),
            filler: b"*3\r\n:1\r\n:2\r\n:3\r\n".to_vec(),
            total: 1 << 30,
        })
    });
    // Passed over (it serves no slot).
    assert_eq!(store.count_sessions(now).await.expect("count"), 0);
    proxy.clear();
    let before = proxy.connections();
    let forwarded = || proxy.seen().iter().filter(|c| c.name() == "EVAL").count();
    let walks = forwarded();
    assert_eq!(store.count_sessions(now).await.expect("count"), 0);
    assert!(
        proxy.connections() > before && forwarded() > walks,
        "the next walk reached the node on a new connection"
    );
}
