//! Redis ACLs on, for real: data nodes and Sentinels (one, or three that
//! log in to each other) and a Redis Cluster's nodes whose `default` user
//! is off, the gateway logging in to each as a user with exactly the
//! rights docs/operations.md lists ("ACL user" for the data nodes and the
//! Cluster's nodes, "Sentinel" for the Sentinels). A right missing from
//! those lists shows as a failed request or, for a command whose failure
//! the gateway only logs, as an entry in the server's `ACL LOG`, which the
//! tests require to stay empty. Also: what a wrong password does, with
//! Sentinel and on a Cluster.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::harness::{
    Browser, Gateway, GatewayBuilder, RedisCluster, RedisServer, SentinelProcess, Upstream,
    unique_user,
};
use crate::session_cache::{cached_on, get_with, tracking_up};
use crate::store_sentinel::{
    MASTER, SENTINEL_PATIENCE, explain, log_the_store_in_test_output, logged_in_and_replicated,
    moved_to, subscribers, wait_for,
};

/// The gateway's user on the data nodes (`store.username`).
const DATA_USER: &str = "oidc-bff";
const DATA_PASSWORD: &str = "data-node-password-8d2e17";
/// The gateway's user on the Sentinels (`store.sentinel_username`).
const SENTINEL_USER: &str = "oidc-bff-sentinel";
const SENTINEL_PASSWORD: &str = "sentinel-password-5b91c3";

/// The data-node rights of docs/operations.md ("ACL user"): every command
/// the store sends, the ones its scripts run, `ROLE` (Sentinel mode: the
/// master is checked before use) and the session cache's invalidation
/// connections (`CLIENT SETNAME`, `CLIENT TRACKING`; their `HELLO 3` needs
/// no right).
const DATA_COMMANDS: &str = "-@all +ping +info +get +set +getdel +del +exists +hget +hset \
     +pexpire +pttl +zadd +zcard +zrange +zrevrange +zrevrank +zscore +zrem +zscan +sadd \
     +srem +srandmember +sscan +scan +eval +evalsha +script|load +role \
     +client|setname +client|tracking";

/// The Sentinel rights of docs/operations.md ("Sentinel").
const SENTINEL_COMMANDS: &str = "-@all +sentinel|get-master-addr-by-name +sentinel|masters \
     +role +subscribe +ping &+switch-master";

/// The `user` directive of the gateway's data-node user for keys under
/// `prefix`.
fn data_user(prefix: &str) -> String {
    format!("{DATA_USER} on >{DATA_PASSWORD} ~{prefix}* resetchannels {DATA_COMMANDS}")
}

fn sentinel_user() -> String {
    format!("{SENTINEL_USER} on >{SENTINEL_PASSWORD} resetchannels {SENTINEL_COMMANDS}")
}

/// A master with ACLs on, its replica (synced), a Sentinel with ACLs on
/// that knows both, and a gateway process logging in to both as the
/// restricted users, with `passwords` (data node, Sentinel) and its log in
/// `log`.
struct Setup {
    _upstream: Upstream,
    master: RedisServer,
    replica: RedisServer,
    sentinel: SentinelProcess,
    gw: Gateway,
    log: std::path::PathBuf,
}

async fn setup(data_password: &str, sentinel_password: &str) -> Setup {
    let upstream = Upstream::start().await;
    let prefix = crate::harness::random_prefix();
    let master = RedisServer::start_with_acl(&[&data_user(&prefix)]);
    let replica = RedisServer::start_replica(&master);
    crate::store_sentinel::wait_synced(&replica);
    let sentinel = SentinelProcess::start_with_acl(MASTER, &master, &[&sentinel_user()]);
    crate::store_sentinel::wait_sentinel_sees(&sentinel, &replica);
    let log = std::env::temp_dir().join(format!(
        "oidc-bff-acl-{}-{:x}.log",
        std::process::id(),
        rand::random::<u32>()
    ));
    let (data_password, sentinel_password) =
        (data_password.to_owned(), sentinel_password.to_owned());
    let gw = GatewayBuilder::new(&upstream)
        .sentinel(sentinel.port, MASTER)
        .prefix(&prefix)
        .metrics()
        .admin()
        .log_to(&log)
        .configure(|c| {
            c.store.username = Some(DATA_USER.into());
            c.store.password = Some(data_password);
            c.store.sentinel_username = Some(SENTINEL_USER.into());
            c.store.sentinel_password = Some(sentinel_password);
        })
        .start_process()
        .await;
    Setup {
        _upstream: upstream,
        master,
        replica,
        sentinel,
        gw,
        log,
    }
}

/// What `ACL LOG` holds on a server or Sentinel: empty when no command
/// was refused.
fn acl_log(cli: impl Fn(&[&str]) -> String) -> String {
    cli(&["ACL", "LOG"]).trim().to_owned()
}

/// The age in seconds of the oldest subscription on `sentinel` (the
/// gateway's: `sub=1` in `CLIENT LIST`).
fn subscription_age(sentinel: &SentinelProcess) -> Option<u64> {
    sentinel
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| l.split(' ').any(|f| f == "sub=1"))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("age="))?
                .parse()
                .ok()
        })
        .max()
}

/// The gateway's log so far.
/// The admin API lists exactly one session of `user` (the listing's
/// script under the ACL) and revokes it (revocation by user).
async fn listed_once_then_revoked(gw: &Gateway, user: &str) {
    let (status, listed) = gw
        .admin(Method::GET, &format!("/admin/sessions?user={user}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["sessions"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let (status, revoked) = gw
        .admin(
            Method::POST,
            "/admin/sessions/revoke",
            Some(serde_json::json!({ "user": user })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
}

/// Waits (at most 15 s) until the gateway's store link has moved to the
/// new master of `[old, new]`, else fails with what each side says.
async fn wait_moved(
    gw: &Gateway,
    sentinel: &SentinelProcess,
    [old, new]: [&RedisServer; 2],
    log: &std::path::Path,
) {
    let named = Instant::now();
    while moved_to(new).await.is_empty() {
        assert!(
            named.elapsed() < Duration::from_secs(15),
            "the gateway did not move to the new master\n{}\ngateway log:\n{}",
            explain(gw, sentinel, [old, new]),
            gateway_log(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a move: alice's logout is refused at her next request (the cache,
/// tracking the new master too, does not serve the ended session), and a
/// new login (bob's, returned) is written, served and cached there.
async fn served_on_the_new_master(gw: &Gateway, alice: &mut Browser, cookie: &str) -> Browser {
    let logout = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{logout:?}");
    let (status, body) = get_with(cookie, &gw.url("/api/after-logout")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let mut bob = Browser::new(gw);
    bob.login_as("bob").await;
    cached_on(gw, &bob.cookie_header()).await;
    assert_eq!(bob.get("/readyz").await.status, StatusCode::OK);
    bob
}

fn gateway_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_on_sentinels_and_data_nodes_the_documented_users_log_in_cache_and_follow_a_failover()
 {
    log_the_store_in_test_output();
    let Setup {
        _upstream,
        master: old,
        replica: new,
        sentinel,
        gw,
        log,
    } = setup(DATA_PASSWORD, SENTINEL_PASSWORD).await;

    let mut alice = logged_in_and_replicated(&gw, &old, &new).await;
    // The invalidation connections (started by the first store command)
    // log in and turn tracking on.
    tracking_up(&gw).await;
    let cookie = alice.cookie_header();
    cached_on(&gw, &cookie).await;
    let ready = alice.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");

    // After ten quiet seconds the gateway checks its `+switch-master`
    // subscription with a `PING`; refused, it would drop the subscription
    // and make a new one every ten seconds.
    wait_for(
        "a subscription older than its first PING",
        Duration::from_secs(40),
        || subscription_age(&sentinel).is_some_and(|age| age >= 12),
    );

    // A real planned failover: the gateway hears `+switch-master` as the
    // restricted Sentinel user and moves without a request.
    wait_for("Sentinel to accept the failover", SENTINEL_PATIENCE, || {
        sentinel.cli(&["SENTINEL", "FAILOVER", MASTER]).trim() == "OK"
    });
    wait_for("Sentinel to name the replica", SENTINEL_PATIENCE, || {
        sentinel.master_port(MASTER) == Some(new.port)
    });
    wait_moved(&gw, &sentinel, [&old, &new], &log).await;

    // On the new master: a logout is refused at the next request (the
    // cache, tracking there too, does not serve the ended session), a new
    // login is written, served and cached, and the admin API works.
    let mut bob = served_on_the_new_master(&gw, &mut alice, &cookie).await;
    // The admin API's store operations: statistics (the session count's
    // script, `INFO memory`), a user's listing, a revocation by user.
    let (status, stats) = gw.admin(Method::GET, "/admin/stats", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    listed_once_then_revoked(&gw, "bob").await;
    assert_eq!(
        bob.get("/api/revoked").await.status,
        StatusCode::UNAUTHORIZED
    );

    // No command of the gateway was refused anywhere, and its log holds
    // neither password.
    assert_eq!(acl_log(|a| new.cli(a)), "", "refused on the new master");
    assert_eq!(acl_log(|a| old.cli(a)), "", "refused on the old master");
    assert_eq!(acl_log(|a| sentinel.cli(a)), "", "refused on the Sentinel");
    let text = gateway_log(&log);
    for secret in [DATA_PASSWORD, SENTINEL_PASSWORD] {
        assert!(!text.contains(secret), "a password in the log:\n{text}");
    }
    let _ = std::fs::remove_file(&log);
}

/// What a gateway with one wrong password (`data_password` or
/// `sentinel_password`) does: `/readyz` answers 503 with the store
/// unavailable, and the readiness check logs why; that log line.
async fn refused_with(data_password: &str, sentinel_password: &str) -> String {
    // Bound whole: the servers must outlive the checks.
    let setup = setup(data_password, sentinel_password).await;
    readiness_refused(&setup.gw, &setup.log, &[data_password, sentinel_password]).await
}

/// `/readyz` of `gw` answers 503 with the store unavailable, and the
/// readiness check's log line in `log` (returned) says why; no line of
/// the log holds any of `secrets`.
async fn readiness_refused(gw: &Gateway, log: &std::path::Path, secrets: &[&str]) -> String {
    let (status, body) = get_with("", &gw.url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains(r#""store":"unavailable""#), "{body}");
    let started = Instant::now();
    let line = loop {
        let text = gateway_log(log);
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("readiness: store unavailable"))
        {
            break line.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no readiness log line:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = gateway_log(log);
    for secret in secrets {
        assert!(!text.contains(secret), "a password in the log:\n{text}");
    }
    let _ = std::fs::remove_file(log);
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sentinel_password_fails_readiness_with_a_log_line_naming_the_key() {
    let line = refused_with(DATA_PASSWORD, "not-the-sentinel-password").await;
    assert!(
        line.contains("refused the gateway's login")
            && line.contains("store.sentinel_password")
            && !line.contains("store.password"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_data_node_password_fails_readiness_with_a_log_line_naming_the_key() {
    let line = refused_with("not-the-data-password", SENTINEL_PASSWORD).await;
    assert!(
        line.contains("the master the Sentinels name")
            && line.contains("refused the gateway's login")
            && line.contains("store.password")
            && !line.contains("store.sentinel_password"),
        "{line}"
    );
}

/// What a Redis Cluster adds to the data-node rights of docs/operations.md
/// ("ACL user", "with Cluster"): the cluster client reads the slot map
/// with `CLUSTER SLOTS`, the gateway reads the primaries with `CLUSTER
/// NODES` (keyless commands, stall counting, the session cache's
/// invalidation connections), and a command redirected by `ASK` (a slot
/// being migrated) is sent with `ASKING` first.
const CLUSTER_COMMANDS: &str = "+cluster|slots +cluster|nodes +asking";

/// The `user` directive of the gateway's user on a Cluster's nodes.
fn cluster_data_user(prefix: &str) -> String {
    format!("{} {CLUSTER_COMMANDS}", data_user(prefix))
}

/// The session records under `prefix` that `node` holds.
fn records_on(node: &RedisServer, prefix: &str) -> usize {
    node.cli(&["KEYS", &format!("{prefix}s:*")])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

/// A Cluster (three primaries, one replica each) with ACLs on every node,
/// and two gateway processes logging in as the documented user with the
/// Cluster rights: `a` serves logins, logouts and the admin API with no
/// cache; `b` caches (tracking on every primary) and only serves requests.
/// A logout through `a` refused by `b` at the next request shows that
/// `b`'s invalidation connections work under the ACL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_on_a_cluster_the_documented_user_logs_in_caches_and_revokes_on_every_primary() {
    log_the_store_in_test_output();
    let upstream = Upstream::start().await;
    let prefix = crate::harness::random_prefix();
    let cluster = RedisCluster::start_with_acl(3, 1, &[&cluster_data_user(&prefix)]);
    let log_a = temp_log("cluster-a");
    let log_b = temp_log("cluster-b");
    let with_user = |c: &mut oidc_bff::config::RawConfig| {
        c.store.username = Some(DATA_USER.into());
        c.store.password = Some(DATA_PASSWORD.into());
    };
    let a = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        .prefix(&prefix)
        .admin()
        .log_to(&log_a)
        .configure(|c| {
            with_user(c);
            c.store.cache_entries = 0;
        })
        .start_process()
        .await;
    let b = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        .prefix(&prefix)
        .metrics()
        .log_to(&log_b)
        .configure(with_user)
        .start_process()
        .await;
    tracking_up(&b).await;

    // Users until every primary holds a session (each user's keys sit in
    // the slot of their shard tag), each session served from b's cache.
    let primaries: Vec<&RedisServer> = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&["ROLE"]).starts_with("master"))
        .collect();
    assert_eq!(primaries.len(), 3);
    let mut users = Vec::new();
    while !primaries.iter().all(|n| records_on(n, &prefix) > 0) {
        assert!(users.len() < 40, "40 users and a primary holds none");
        let user = unique_user(&format!("acl-cluster-{}", users.len()));
        let mut browser = Browser::new(&a);
        browser.login_as(&user).await;
        let cookie = browser.cookie_header();
        cached_on(&b, &cookie).await;
        users.push((user, browser, cookie));
    }
    for gw in [&a, &b] {
        let ready = Browser::new(gw).get("/readyz").await;
        assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    }

    // The admin API's store operations: statistics (the session count's
    // script and `INFO memory` on every primary), a user's listing, a
    // revocation by user, refused by b at the next request.
    let (status, stats) = a.admin(Method::GET, "/admin/stats", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["sessions"], users.len(), "{stats}");
    assert!(stats["memory_bytes"].as_u64().is_some(), "{stats}");
    let (sub, _, revoked_cookie) = users.pop().expect("a user");
    listed_once_then_revoked(&a, &sub).await;
    let (status, body) = get_with(&revoked_cookie, &b.url("/api/revoked")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A logout through a, of a session of every primary, is refused by b
    // (which had it cached) at the next request.
    for (_, browser, cookie) in &mut users {
        let out = browser
            .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
            .await;
        assert_eq!(out.status, StatusCode::OK, "{out:?}");
        let (status, body) = get_with(cookie, &b.url("/api/after-logout")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    // No command of either gateway was refused on any node, replicas
    // included, and neither log holds the password.
    for node in &cluster.nodes {
        assert_eq!(
            acl_log(|args| node.cli(args)),
            "",
            "refused on node {}",
            node.port
        );
    }
    for log in [&log_a, &log_b] {
        let text = gateway_log(log);
        assert!(
            !text.contains(DATA_PASSWORD),
            "the password in the log:\n{text}"
        );
        let _ = std::fs::remove_file(log);
    }
}

/// A fresh path for a gateway's log.
fn temp_log(label: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "oidc-bff-acl-{label}-{}-{:x}.log",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// The ports of the other Sentinels that `sentinel` reaches now: known to
/// it, flagged as nothing but a Sentinel (no `s_down`, no
/// `disconnected`), and answering its `PING`s (the last good answer under
/// 2 s ago; a refused login leaves the link open but the answers bad).
fn linked_peers(sentinel: &SentinelProcess) -> Vec<u16> {
    let text = sentinel.cli(&["SENTINEL", "SENTINELS", MASTER]);
    let lines: Vec<&str> = text.lines().collect();
    // `--raw` prints each peer's fields as name and value lines, one peer
    // after another, each starting with `name`.
    lines
        .split(|l| *l == "name")
        .filter_map(|peer| {
            let field = |name: &str| {
                peer.iter()
                    .position(|l| *l == name)
                    .and_then(|i| peer.get(i + 1))
                    .copied()
            };
            let healthy = field("flags") == Some("sentinel")
                && field("last-ok-ping-reply")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .is_some_and(|ms| ms < 2_000);
            healthy.then(|| field("port")?.parse().ok()).flatten()
        })
        .collect()
}

/// Three Sentinels with ACLs on, logging in to each other
/// (`sentinel sentinel-user` / `sentinel sentinel-pass`), data nodes with
/// ACLs on, and the gateway logging in to all as the documented users: it
/// follows a real `SENTINEL FAILOVER` announced by the Sentinel it
/// subscribed to after the first one was stopped, and no command of the
/// gateway or of a Sentinel is refused anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_on_three_sentinels_that_log_in_to_each_other_the_gateway_resubscribes_and_follows_a_failover()
 {
    log_the_store_in_test_output();
    let upstream = Upstream::start().await;
    let prefix = crate::harness::random_prefix();
    let old = RedisServer::start_with_acl(&[&data_user(&prefix)]);
    let new = RedisServer::start_replica(&old);
    crate::store_sentinel::wait_synced(&new);
    let mut sentinels =
        SentinelProcess::start_several_with_acl(3, MASTER, &old, &[&sentinel_user()]);
    for sentinel in &sentinels {
        crate::store_sentinel::wait_sentinel_sees(sentinel, &new);
    }
    // They find each other through the master's hello channel, then talk
    // directly, logged in as `sentinel-user`.
    wait_for(
        "the Sentinels to reach each other",
        SENTINEL_PATIENCE,
        || sentinels.iter().all(|s| linked_peers(s).len() == 2),
    );
    let log = temp_log("sentinels");
    let ports: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let gw = GatewayBuilder::new(&upstream)
        .sentinel(sentinels[0].port, MASTER)
        .prefix(&prefix)
        .metrics()
        .log_to(&log)
        .configure(|c| {
            c.server.workers = 1;
            c.store.sentinels = ports;
            c.store.username = Some(DATA_USER.into());
            c.store.password = Some(DATA_PASSWORD.into());
            c.store.sentinel_username = Some(SENTINEL_USER.into());
            c.store.sentinel_password = Some(SENTINEL_PASSWORD.into());
        })
        .start_process()
        .await;

    let mut alice = logged_in_and_replicated(&gw, &old, &new).await;
    tracking_up(&gw).await;
    let cookie = alice.cookie_header();
    cached_on(&gw, &cookie).await;

    // The store link holds its subscription on the first Sentinel (one
    // worker: each worker's link subscribes at its first store command);
    // once that Sentinel is stopped, it subscribes on the next one.
    wait_for(
        "the gateway to subscribe on the first Sentinel",
        Duration::from_secs(20),
        || subscribers(&sentinels[0]) == 1,
    );
    assert_eq!(subscribers(&sentinels[1]) + subscribers(&sentinels[2]), 0);
    assert_eq!(
        acl_log(|a| sentinels[0].cli(a)),
        "",
        "refused on Sentinel 1"
    );
    drop(sentinels.remove(0));
    wait_for(
        "the gateway to subscribe on the second Sentinel",
        Duration::from_secs(20),
        || subscribers(&sentinels[0]) == 1,
    );

    // A real planned failover there: the gateway moves to the new master
    // at once, with no request sent (the once-a-second re-check runs only
    // while commands flow).
    wait_for("Sentinel to accept the failover", SENTINEL_PATIENCE, || {
        sentinels[0].cli(&["SENTINEL", "FAILOVER", MASTER]).trim() == "OK"
    });
    wait_for("Sentinel to name the replica", SENTINEL_PATIENCE, || {
        sentinels[0].master_port(MASTER) == Some(new.port)
    });
    wait_moved(&gw, &sentinels[0], [&old, &new], &log).await;

    // On the new master: a logout is refused at the next request, a new
    // login is written and served from the cache.
    served_on_the_new_master(&gw, &mut alice, &cookie).await;

    // The two Sentinels left still reach each other (the stopped one is
    // down), and nothing was refused on any Sentinel or data node: not
    // the gateway's commands, not the Sentinels' logins to each other.
    wait_for(
        "the two Sentinels to reach each other",
        SENTINEL_PATIENCE,
        || {
            linked_peers(&sentinels[0]) == [sentinels[1].port]
                && linked_peers(&sentinels[1]) == [sentinels[0].port]
        },
    );
    for (n, sentinel) in sentinels.iter().enumerate() {
        assert_eq!(
            acl_log(|a| sentinel.cli(a)),
            "",
            "refused on Sentinel {}",
            n + 2
        );
    }
    assert_eq!(acl_log(|a| new.cli(a)), "", "refused on the new master");
    assert_eq!(acl_log(|a| old.cli(a)), "", "refused on the old master");
    let text = gateway_log(&log);
    for secret in [DATA_PASSWORD, SENTINEL_PASSWORD] {
        assert!(!text.contains(secret), "a password in the log:\n{text}");
    }
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_on_a_cluster_fails_readiness_with_a_log_line_naming_the_key() {
    let upstream = Upstream::start().await;
    let prefix = crate::harness::random_prefix();
    let cluster = RedisCluster::start_with_acl(3, 0, &[&cluster_data_user(&prefix)]);
    let log = temp_log("cluster-refused");
    let wrong = "not-the-cluster-password";
    let gw = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        .prefix(&prefix)
        .log_to(&log)
        .configure(|c| {
            c.store.username = Some(DATA_USER.into());
            c.store.password = Some(wrong.into());
        })
        .start_process()
        .await;
    let line = readiness_refused(&gw, &log, &[wrong, DATA_PASSWORD]).await;
    eprintln!("the readiness log line: {line}");
    assert!(
        line.contains("refused the gateway's login")
            && line.contains("store.username")
            && line.contains("store.password"),
        "{line}"
    );
}
