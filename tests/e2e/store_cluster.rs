//! Redis Cluster: every key of the gateway lives in the one slot of its key
//! prefix's hash tag, so its atomic scripts run on one node, and the
//! commands that name no key (SCAN, INFO) are sent to that node.

use reqwest::{Method, StatusCode};

use crate::harness::{Browser, GatewayBuilder, RedisCluster, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_on_a_redis_cluster_with_every_key_in_one_slot() {
    let cluster = RedisCluster::start(3);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        .admin()
        .start()
        .await;

    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
    let mut second = Browser::new(&gw);
    second.login_alice().await;
    // The user index is read by a script: both sessions are listed.
    let listed = alice.get("/auth/sessions").await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert!(
        listed.json()["sessions"].as_array().expect("list").len() >= 2,
        "{listed:?}"
    );

    // One node holds all the keys, all in the prefix's slot.
    let slot = cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", &gw.prefix]);
    let pattern = format!("{}*", gw.prefix.replace('{', "\\{").replace('}', "\\}"));
    let holders: Vec<Vec<String>> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["KEYS", &pattern])
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let with_keys: Vec<&Vec<String>> = holders.iter().filter(|k| !k.is_empty()).collect();
    assert_eq!(with_keys.len(), 1, "keys on one node only: {holders:?}");
    for key in with_keys[0] {
        assert_eq!(
            cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", key]),
            slot,
            "{key}"
        );
    }

    // Keyless commands reach that node: the store statistics count both.
    let (status, stats) = gw.admin(Method::GET, "/admin/stats", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["sessions"], 2, "{stats}");
    assert!(stats["memory_bytes"].as_u64().is_some(), "{stats}");

    // Logout (a script over record, indexes and tombstone) ends the session.
    let out = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    assert_eq!(alice.get("/api/a").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(second.get("/api/b").await.status, StatusCode::OK);
    assert_eq!(second.get("/readyz").await.status, StatusCode::OK);
}
