//! Redis behind Sentinel: the gateway asks Sentinel for the master, and when
//! the master dies it follows the failover by itself, keeping the sessions
//! that had reached the replica.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::harness::{
    Browser, Gateway, GatewayBuilder, RedisServer, SentinelProcess, Upstream, redis_cli,
};
use crate::store_outage::wait_until_ok;

const MASTER: &str = "sessions";

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A master, its replica (synced) and a Sentinel that knows both, and a
/// gateway finding Redis through that Sentinel.
struct Setup {
    upstream: Upstream,
    master: RedisServer,
    replica: RedisServer,
    sentinel: SentinelProcess,
    gw: Gateway,
}

async fn setup() -> Setup {
    let upstream = Upstream::start().await;
    let master = RedisServer::start();
    let replica = RedisServer::start_replica(&master);
    wait_for("the replica to sync", Duration::from_secs(10), || {
        redis_cli(replica.port, &["INFO", "replication"]).contains("master_link_status:up")
    });
    let sentinel = SentinelProcess::start(MASTER, &master);
    // Sentinel must have discovered the replica before it can promote it.
    wait_for(
        "Sentinel to see the replica",
        Duration::from_secs(30),
        || {
            redis_cli(sentinel.port, &["SENTINEL", "replicas", MASTER])
                .contains(&replica.port.to_string())
        },
    );
    let gw = GatewayBuilder::new(&upstream)
        .sentinel(sentinel.port, MASTER)
        .start()
        .await;
    Setup {
        upstream,
        master,
        replica,
        sentinel,
        gw,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sentinel_sessions_survive_a_failover_to_the_replica() {
    let Setup {
        upstream,
        mut master,
        replica,
        sentinel,
        gw,
    } = setup().await;

    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
    assert_eq!(
        redis_cli(master.port, &["DBSIZE"]).trim(),
        redis_cli(replica.port, &["DBSIZE"]).trim(),
        "the session is written to the master Sentinel named"
    );
    // The login has reached the replica before the master dies.
    assert_eq!(redis_cli(master.port, &["WAIT", "1", "2000"]).trim(), "1");

    master.stop();
    wait_for(
        "Sentinel to promote the replica",
        Duration::from_secs(30),
        || sentinel.master_port(MASTER) == Some(replica.port),
    );

    // The same session, now read from the promoted replica.
    let took = wait_until_ok(&mut alice, "/api/a").await;
    eprintln!("alice's session served by the new master {took:?} after the promotion");
    let forwarded = upstream.seen().pop().expect("forwarded");
    assert!(
        forwarded
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
    );
    // Writes go to the new master: a new login, and a logout.
    let mut bob = Browser::new(&gw);
    bob.login_as("bob").await;
    assert_eq!(bob.get("/api/b").await.status, StatusCode::OK);
    assert_eq!(bob.get("/readyz").await.status, StatusCode::OK);

    // The old master returns; Sentinel makes it a replica, and the gateway
    // keeps writing to the new master (a write on the old one would fail
    // with READONLY).
    master.restart();
    wait_for(
        "the old master to rejoin as a replica",
        Duration::from_secs(30),
        || redis_cli(master.port, &["ROLE"]).starts_with("slave"),
    );
    let mut carol = Browser::new(&gw);
    carol.login_alice().await;
    assert_eq!(carol.get("/api/c").await.status, StatusCode::OK);
    let logout = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{logout:?}");
    assert_eq!(alice.get("/api/a").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_sentinel_failover_moves_the_gateway_to_the_new_master() {
    let Setup {
        upstream: _upstream,
        master: old,
        replica: new,
        sentinel,
        gw,
    } = setup().await;
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    assert_eq!(redis_cli(old.port, &["WAIT", "1", "2000"]).trim(), "1");

    // Both servers stay up; the old master is demoted to a replica.
    // Sentinel refuses (NOGOODSLAVE) until its view of the replica is fresh.
    wait_for(
        "Sentinel to accept the failover",
        Duration::from_secs(30),
        || redis_cli(sentinel.port, &["SENTINEL", "FAILOVER", MASTER]).trim() == "OK",
    );
    wait_for("the switch", Duration::from_secs(30), || {
        sentinel.master_port(MASTER) == Some(new.port)
            && redis_cli(old.port, &["ROLE"]).starts_with("slave")
    });

    wait_until_ok(&mut alice, "/api/a").await;
    let before = redis_cli(new.port, &["DBSIZE"])
        .trim()
        .parse::<u64>()
        .expect("dbsize");
    let mut bob = Browser::new(&gw);
    bob.login_as("bob").await;
    assert_eq!(bob.get("/api/b").await.status, StatusCode::OK);
    let after = redis_cli(new.port, &["DBSIZE"])
        .trim()
        .parse::<u64>()
        .expect("dbsize");
    assert!(
        after > before,
        "bob's session was written to the new master"
    );
}
