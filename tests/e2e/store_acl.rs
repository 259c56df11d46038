//! Redis Sentinel with ACLs on, for real: data nodes and a Sentinel whose
//! `default` user is off, the gateway logging in to each as a user with
//! exactly the rights docs/operations.md lists ("ACL user" for the data
//! nodes, "Sentinel" for the Sentinels). A right missing from those lists
//! shows as a failed request or, for a command whose failure the gateway
//! only logs, as an entry in the server's `ACL LOG`, which the tests
//! require to stay empty. Also: what a wrong password does.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::harness::{Browser, Gateway, GatewayBuilder, RedisServer, SentinelProcess, Upstream};
use crate::session_cache::{cached_on, get_with, tracking_up};
use crate::store_sentinel::{
    MASTER, SENTINEL_PATIENCE, explain, log_the_store_in_test_output, logged_in_and_replicated,
    moved_to, wait_for,
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
    let named = Instant::now();
    while moved_to(&new).await.is_empty() {
        assert!(
            named.elapsed() < Duration::from_secs(15),
            "the gateway did not move to the new master\n{}\ngateway log:\n{}",
            explain(&gw, &sentinel, [&old, &new]),
            gateway_log(&log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // On the new master: a logout is refused at the next request (the
    // cache, tracking there too, does not serve the ended session), a new
    // login is written, served and cached, and the admin API works.
    let logout = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{logout:?}");
    let (status, body) = get_with(&cookie, &gw.url("/api/after-logout")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let mut bob = Browser::new(&gw);
    bob.login_as("bob").await;
    cached_on(&gw, &bob.cookie_header()).await;
    assert_eq!(bob.get("/readyz").await.status, StatusCode::OK);
    // The admin API's store operations: statistics (the session count's
    // script, `INFO memory`), a user's listing, a revocation by user.
    let (status, stats) = gw.admin(Method::GET, "/admin/stats", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let (status, listed) = gw
        .admin(Method::GET, "/admin/sessions?user=bob", None)
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
            Some(serde_json::json!({ "user": "bob" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
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
    let (gw, log) = (&setup.gw, &setup.log);
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
    for secret in [data_password, sentinel_password] {
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
