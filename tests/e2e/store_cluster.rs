//! Redis Cluster: every key of the gateway lives in the one slot of its key
//! prefix's hash tag, so its atomic scripts run on one node, and the
//! commands that name no key (SCAN, INFO) are sent to that node.

use reqwest::{Method, StatusCode};

use std::sync::Arc;

use crate::harness::{Browser, GatewayBuilder, RedisCluster, TestCa, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_on_a_redis_cluster_with_every_key_in_one_slot() {
    sessions_work_on_a_cluster(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_on_a_redis_cluster_over_mutual_tls() {
    sessions_work_on_a_cluster(Some(Arc::new(TestCa::new(true)))).await;
}

async fn sessions_work_on_a_cluster(tls: Option<Arc<TestCa>>) {
    let upstream = Upstream::start().await;
    let (cluster, builder) = match &tls {
        Some(ca) => {
            let cluster = RedisCluster::start_tls(3, 0, ca);
            let b = GatewayBuilder::new(&upstream).cluster_tls(&cluster.addrs(), ca);
            (cluster, b)
        }
        None => {
            let cluster = RedisCluster::start(3, 0);
            let b = GatewayBuilder::new(&upstream).cluster(&cluster.addrs());
            (cluster, b)
        }
    };
    let gw = builder.admin().start().await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_primary_of_the_gateways_slot_dies_its_replica_takes_over() {
    let mut cluster = RedisCluster::start(3, 1);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        .start()
        .await;
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);

    // The primary holding the gateway's slot, once its replica has the login.
    let pattern = format!("{}*", gw.prefix.replace('{', "\\{").replace('}', "\\}"));
    let primary = cluster
        .nodes
        .iter()
        .position(|n| {
            n.cli(&["ROLE"]).starts_with("master") && !n.cli(&["KEYS", &pattern]).trim().is_empty()
        })
        .expect("a primary holds the keys");
    assert_eq!(
        cluster.nodes[primary].cli(&["WAIT", "1", "2000"]).trim(),
        "1"
    );
    let primary_port = cluster.nodes[primary].port.to_string();
    let replica = cluster
        .nodes
        .iter()
        .position(|n| {
            let role = n.cli(&["ROLE"]);
            role.starts_with("slave") && role.lines().nth(2) == Some(primary_port.as_str())
        })
        .expect("the primary has a replica");
    cluster.nodes[primary].stop();

    // The cluster promotes the replica (cluster-node-timeout 2 s); the
    // gateway follows and alice's session is still there.
    let took = crate::store_outage::wait_until_ok(&mut alice, "/api/a").await;
    eprintln!("alice served again {took:?} after her slot's primary died");
    assert!(cluster.nodes[replica].cli(&["ROLE"]).starts_with("master"));
    // Writes too, once the client has refreshed its slot map (requests in
    // between may get 503).
    let started = std::time::Instant::now();
    let mut bob = Browser::new(&gw);
    while bob.try_login("bob", "bob-password").await.status != StatusCode::SEE_OTHER {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "logins do not recover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        bob = Browser::new(&gw);
    }
    assert_eq!(bob.get("/api/b").await.status, StatusCode::OK);
}
