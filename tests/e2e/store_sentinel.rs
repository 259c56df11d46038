//! Redis behind Sentinel: the gateway asks Sentinel for the master, and when
//! the master dies it follows the failover by itself, keeping the sessions
//! that had reached the replica; when a master is demoted without dropping
//! its connections, its `READONLY` answer sends the gateway to Sentinel;
//! while requests flow it asks Sentinel each second, so it leaves an old
//! master that still takes writes for the one Sentinel names; and it
//! listens to Sentinel's `+switch-master`, so a planned failover moves it
//! at once, before any request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oidc_bff::config::{RedisConfig, RedisEndpoint, SentinelConfig};
use oidc_bff::session::store::SessionStore;
use oidc_bff::session::store::redis::RedisStore;
use reqwest::{Method, StatusCode};

use crate::harness::{
    Browser, Gateway, GatewayBuilder, RedisServer, SentinelProcess, TestCa, Upstream,
};
use crate::store_outage::wait_until_ok;

pub(crate) const MASTER: &str = "sessions";

/// How long to wait for Sentinel to act. It usually takes seconds, but on a
/// busy machine Sentinel may enter TILT mode (its timer ran more than 2 s
/// late) and then does nothing for 30 s.
pub(crate) const SENTINEL_PATIENCE: Duration = Duration::from_secs(90);

/// Waits until `replica` has synced with its master.
pub(crate) fn wait_synced(replica: &RedisServer) {
    wait_for("the replica to sync", Duration::from_secs(10), || {
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
}

/// Waits until `sentinel` has discovered `replica`: it must, before it can
/// promote it.
pub(crate) fn wait_sentinel_sees(sentinel: &SentinelProcess, replica: &RedisServer) {
    wait_for("Sentinel to see the replica", SENTINEL_PATIENCE, || {
        sentinel
            .cli(&["SENTINEL", "replicas", MASTER])
            .contains(&replica.port.to_string())
    });
}

/// The `+switch-master` messages of the Sentinel on `port`, heard as the
/// gateway hears them: subscribed before the test starts a failover.
pub(crate) async fn switch_master_messages(
    port: u16,
) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>> {
    let mut pubsub = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("sentinel client")
        .get_async_pubsub()
        .await
        .expect("sentinel pubsub");
    pubsub.subscribe("+switch-master").await.expect("subscribe");
    Box::pin(pubsub.into_on_message())
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether Sentinel's view has settled on `master`: it names it, no failover
/// is in progress (during one, Sentinel already names the replica it is
/// promoting, and an aborted failover goes back), `master` says it is a
/// master, and each of `replicas` replicates from it.
pub(crate) fn settled(
    sentinel: &SentinelProcess,
    master: &RedisServer,
    replicas: &[&RedisServer],
) -> bool {
    let info = sentinel.cli(&["SENTINEL", "master", MASTER]);
    let flags = info
        .lines()
        .skip_while(|l| *l != "flags")
        .nth(1)
        .unwrap_or("failover_in_progress");
    let port = master.port.to_string();
    sentinel.master_port(MASTER) == Some(master.port)
        && !flags.contains("failover_in_progress")
        && master.cli(&["ROLE"]).starts_with("master")
        && replicas.iter().all(|r| {
            let role = r.cli(&["ROLE"]);
            role.starts_with("slave") && role.lines().nth(2) == Some(port.as_str())
        })
}

/// Waits for `done`; on timeout, fails with what Sentinel and the servers
/// say.
pub(crate) fn wait_for_sentinel(
    what: &str,
    sentinel: &SentinelProcess,
    servers: [&RedisServer; 2],
    mut done: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > SENTINEL_PATIENCE {
            panic!(
                "timed out waiting for {what}.\n{}\nSentinel log:\n{}",
                servers
                    .iter()
                    .map(|s| format!("port {} ROLE: {:?}", s.port, s.cli(&["ROLE"])))
                    .collect::<Vec<_>>()
                    .join("\n"),
                sentinel.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// A master, its replica (synced) and a Sentinel that knows both, and a
/// gateway finding Redis through that Sentinel — all over TLS with client
/// certificates when `tls` is given.
struct Setup {
    upstream: Upstream,
    master: RedisServer,
    replica: RedisServer,
    sentinel: SentinelProcess,
    gw: Gateway,
}

async fn setup(tls: Option<Arc<TestCa>>) -> Setup {
    setup_with(tls, true).await
}

/// [`setup`], with the session cache on or off (`store.cache_entries`):
/// off, every request reaches the store, and the cache's own connections
/// (which follow the Sentinels each second by themselves) are not there
/// to count.
async fn setup_with(tls: Option<Arc<TestCa>>, cache: bool) -> Setup {
    let upstream = Upstream::start().await;
    let master = match &tls {
        Some(ca) => RedisServer::start_tls(ca),
        None => RedisServer::start(),
    };
    let replica = RedisServer::start_replica(&master);
    wait_synced(&replica);
    let sentinel = SentinelProcess::start(MASTER, &master);
    // Sentinel must have discovered the replica before it can promote it.
    wait_sentinel_sees(&sentinel, &replica);
    let mut gw = GatewayBuilder::new(&upstream).sentinel(sentinel.port, MASTER);
    if !cache {
        gw = gw.configure(|c| c.store.cache_entries = 0);
    }
    if let Some(ca) = &tls {
        gw = gw
            .store_ca(ca)
            .store_client_cert(ca)
            .configure(|c| c.store.sentinel_tls = true);
    }
    let gw = gw.start().await;
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
    sessions_survive_the_master_dying(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sentinel_over_mutual_tls_sessions_survive_a_failover_too() {
    sessions_survive_the_master_dying(Some(Arc::new(TestCa::new(true)))).await;
}

async fn sessions_survive_the_master_dying(tls: Option<Arc<TestCa>>) {
    log_the_store_in_test_output();
    let Setup {
        upstream,
        mut master,
        replica,
        sentinel,
        gw,
    } = setup(tls).await;

    let mut alice = logged_in_and_replicated(&gw, &master, &replica).await;
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
    assert_eq!(
        master.cli(&["DBSIZE"]).trim(),
        replica.cli(&["DBSIZE"]).trim(),
        "the session is written to the master Sentinel named"
    );

    master.stop();
    let took = wait_for_sentinel(
        "Sentinel to promote the replica",
        &sentinel,
        [&master, &replica],
        || settled(&sentinel, &replica, &[]),
    );
    eprintln!("Sentinel promoted the replica {took:?} after the master died");

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

    // The old master returns. Sentinel makes it a replica of the new one
    // (after letting it run for 8 s, and the next INFO round: about 11 s
    // here). The gateway keeps writing to whichever master Sentinel names,
    // so the test accepts the other outcome too (Sentinel going back to the
    // old master), which it has not been seen to choose but cannot be ruled
    // out on a machine slow enough to abort a failover.
    master.restart();
    let took = wait_for_sentinel(
        "the old master to rejoin as a replica",
        &sentinel,
        [&master, &replica],
        || settled(&sentinel, &replica, &[&master]) || settled(&sentinel, &master, &[&replica]),
    );
    if settled(&sentinel, &replica, &[&master]) {
        eprintln!("the old master rejoined as a replica {took:?} after its restart");
    } else {
        eprintln!(
            "Sentinel went back to the old master {took:?} after its restart; its log:\n{}",
            sentinel.log()
        );
    }
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
    log_the_store_in_test_output();
    let Setup {
        upstream: _upstream,
        master: old,
        replica: new,
        sentinel,
        gw,
    } = setup(None).await;
    let mut alice = logged_in_and_replicated(&gw, &old, &new).await;

    // Both servers stay up; the old master is demoted to a replica.
    // Sentinel refuses (NOGOODSLAVE) until its view of the replica is fresh.
    wait_for("Sentinel to accept the failover", SENTINEL_PATIENCE, || {
        sentinel.cli(&["SENTINEL", "FAILOVER", MASTER]).trim() == "OK"
    });
    wait_for_sentinel("the switch", &sentinel, [&old, &new], || {
        settled(&sentinel, &new, &[&old])
    });

    // The session lookup broken by the switch is repeated on the new
    // master: no request fails.
    let first = alice.get("/api/a").await;
    assert_eq!(
        first.status,
        StatusCode::OK,
        "{first:?}\n{}",
        explain(&gw, &sentinel, [&old, &new])
    );
    let before = new.cli(&["DBSIZE"]).trim().parse::<u64>().expect("dbsize");
    let mut bob = Browser::new(&gw);
    bob.login_as("bob").await;
    assert_eq!(bob.get("/api/b").await.status, StatusCode::OK);
    let after = new.cli(&["DBSIZE"]).trim().parse::<u64>().expect("dbsize");
    assert!(
        after > before,
        "bob's session was written to the new master"
    );
}

/// After a planned failover the old master keeps its connections and takes
/// writes until Sentinel demotes it (about 11 s later), and loses them when
/// it resynchronises from the new one. The gateway asks the Sentinels each
/// second while requests flow, so it moves to the master they name without
/// waiting for that demotion, and a login is written where it survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_old_master_still_takes_writes_the_gateway_moves_to_the_one_sentinel_names() {
    log_the_store_in_test_output();
    let Setup {
        upstream: _upstream,
        master: old,
        replica: new,
        sentinel,
        gw,
    } = setup(None).await;
    let mut alice = logged_in_and_replicated(&gw, &old, &new).await;

    // The state a planned failover leaves for those seconds: the replica
    // promoted and named by Sentinel, the old master still a master holding
    // the gateway's connections. Sentinel is re-pointed by hand, so it never
    // demotes the old master and the test does not race that demotion.
    sentinel.cli(&["SENTINEL", "REMOVE", MASTER]);
    assert_eq!(new.cli(&["REPLICAOF", "NO", "ONE"]).trim(), "OK");
    let new_port = new.port.to_string();
    assert_eq!(
        sentinel
            .cli(&["SENTINEL", "MONITOR", MASTER, "127.0.0.1", &new_port, "1"])
            .trim(),
        "OK"
    );
    assert!(old.cli(&["ROLE"]).starts_with("master"));

    // Requests keep flowing (readiness probes, answered by the old master
    // meanwhile); the gateway's connection moves to the new master.
    let started = Instant::now();
    while data_connections(&new).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the gateway still writes to the old master {:?} after Sentinel named the new one\n{}",
            started.elapsed(),
            explain(&gw, &sentinel, [&old, &new])
        );
        assert_eq!(alice.get("/readyz").await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the gateway moved to the new master {:?} after Sentinel named it",
        started.elapsed()
    );
    let mut bob = Browser::new(&gw);
    bob.login_as("bob").await;
    assert_eq!(bob.get("/api/b").await.status, StatusCode::OK);
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
    assert_eq!(
        (session_records(&gw, &old), session_records(&gw, &new)),
        (1, 2),
        "bob's session is on the new master only"
    );
}

/// The gateway's session and store log lines (which server answered,
/// which connection was dropped and why) in the output of a failing test.
pub(crate) fn log_the_store_in_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("oidc_bff::session=debug,oidc_bff::extract=debug")
        .with_test_writer()
        .try_init();
}

/// What each server and Sentinel say now, for a failure message: roles,
/// replication offsets, how many of the gateway's session records each
/// holds, and Sentinel's log.
pub(crate) fn explain(
    gw: &Gateway,
    sentinel: &SentinelProcess,
    servers: [&RedisServer; 2],
) -> String {
    let mut out = String::new();
    for s in servers {
        let replication = s.cli(&["INFO", "replication"]);
        let offsets: Vec<&str> = replication
            .lines()
            .filter(|l| {
                [
                    "role:",
                    "master_link_status:",
                    "master_repl_offset:",
                    "slave_repl_offset:",
                    "master_sync_in_progress:",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect();
        let held = session_records(gw, s);
        out.push_str(&format!(
            "port {}: {} session records; {}\n",
            s.port,
            held,
            offsets.join(" ")
        ));
    }
    out.push_str(&format!("Sentinel log:\n{}", sentinel.log()));
    out
}

/// How many of `gw`'s session records `server` holds.
fn session_records(gw: &Gateway, server: &RedisServer) -> usize {
    server
        .cli(&["--scan", "--pattern", &format!("{}s:*", gw.prefix)])
        .lines()
        .count()
}

/// Alice logged in, and everything `master` had written by then applied
/// by `replica`.
///
/// Sentinel promotes a replica without waiting for it to catch up (even in
/// a failover it was asked for), so what the replica has not applied yet is
/// lost, and on a loaded machine the replica can lag behind a login: alice's
/// record is then missing on the new master and her next request gets 401
/// `session_expired`. `WAIT 1` cannot rule that out here: it counts the
/// replicas that acknowledged the calling connection's own last write, and
/// `redis-cli`'s new connection has written nothing, so it answers 1 at
/// once, whatever the replica holds. The test waits as an operator planning
/// a switchover would: until the replica's applied offset reaches the
/// master's.
pub(crate) async fn logged_in_and_replicated(
    gw: &Gateway,
    master: &RedisServer,
    replica: &RedisServer,
) -> Browser {
    let mut alice = Browser::new(gw);
    alice.login_alice().await;
    wait_replicated(master, replica);
    assert_eq!(
        session_records(gw, replica),
        1,
        "alice's session record reached the replica"
    );
    alice
}

/// A field of `INFO replication` as a number.
fn replication_offset(server: &RedisServer, field: &str) -> Option<u64> {
    server
        .cli(&["INFO", "replication"])
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until `replica` has applied everything `master` had written when
/// called.
pub(crate) fn wait_replicated(master: &RedisServer, replica: &RedisServer) {
    let written = replication_offset(master, "master_repl_offset").expect("the master's offset");
    wait_for(
        "the replica to apply the master's writes",
        Duration::from_secs(30),
        || replication_offset(replica, "slave_repl_offset").is_some_and(|at| at >= written),
    );
}

/// The ids of ordinary clients connected to `server` — the gateway's —
/// leaving out Sentinel's links, replication links and `redis-cli` itself.
fn client_ids(server: &RedisServer) -> Vec<String> {
    gateway_clients(server, |_| true)
}

/// The ids of the gateway's data connections on `server`: its clients
/// other than the session cache's invalidation connection.
fn data_connections(server: &RedisServer) -> Vec<String> {
    gateway_clients(server, |l| !l.contains(" name=oidc-bff-tracking "))
}

/// [`client_ids`] of the `CLIENT LIST` lines that `keep` accepts. Short
/// connections that have run no command yet or only asked `ROLE` (how the
/// gateway's Sentinel client checks a master before using it) are left out:
/// they come and go.
fn gateway_clients(server: &RedisServer, keep: impl Fn(&str) -> bool) -> Vec<String> {
    server
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| {
            l.contains(" flags=N ")
                && !l.contains(" name=sentinel-")
                && ![
                    " cmd=client|list ",
                    " cmd=NULL ",
                    " cmd=role ",
                    " cmd=client|setinfo ",
                ]
                .iter()
                .any(|c| l.contains(c))
                && keep(l)
        })
        .filter_map(|l| l.split(' ').next()?.strip_prefix("id=").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_demoted_in_place_is_noticed_by_its_readonly_answer() {
    log_the_store_in_test_output();
    let Setup {
        upstream: _upstream,
        master: old,
        replica: new,
        sentinel,
        gw,
    } = setup(None).await;
    let mut alice = logged_in_and_replicated(&gw, &old, &new).await;
    let before = client_ids(&old);
    assert!(!before.is_empty(), "the gateway is connected to the master");

    // The roles swap without any client connection being closed (as with an
    // operator's REPLICAOF, or a managed service switching over), and
    // Sentinel is pointed at the new master. Sentinel's own failovers close
    // client connections, so this is the one way a gateway still holds a
    // connection to a server that has become a replica.
    sentinel.cli(&["SENTINEL", "REMOVE", MASTER]);
    assert_eq!(new.cli(&["REPLICAOF", "NO", "ONE"]).trim(), "OK");
    let new_port = new.port.to_string();
    assert_eq!(old.cli(&["REPLICAOF", "127.0.0.1", &new_port]).trim(), "OK");
    assert_eq!(
        sentinel
            .cli(&["SENTINEL", "MONITOR", MASTER, "127.0.0.1", &new_port, "1"])
            .trim(),
        "OK"
    );
    assert_eq!(sentinel.master_port(MASTER), Some(new.port));
    let after = client_ids(&old);
    assert!(
        before.iter().all(|id| after.contains(id)),
        "the old master kept its client connections: {before:?} -> {after:?}"
    );

    // Reads still work on the old master, now a replica.
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
    // The first write there is refused with READONLY, so the gateway asks
    // Sentinel again and sends it to the new master (unless its
    // once-a-second re-check of the Sentinels moved it first): the login
    // succeeds at the first attempt, and its session is on the new master.
    let keys_before = new.cli(&["DBSIZE"]).trim().parse::<u64>().expect("dbsize");
    let mut bob = Browser::new(&gw);
    let r = bob.try_login("bob", "bob-password").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(bob.get("/api/b").await.status, StatusCode::OK);
    let keys_after = new.cli(&["DBSIZE"]).trim().parse::<u64>().expect("dbsize");
    assert!(
        keys_after > keys_before,
        "bob's session was written to the new master"
    );
    let logout = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{logout:?}");
    assert_eq!(alice.get("/api/a").await.status, StatusCode::UNAUTHORIZED);
}

/// A planned `SENTINEL FAILOVER` moves the gateway when Sentinel publishes
/// `+switch-master`, before any request: no request is sent after the
/// switch, so the once-a-second re-check (which runs only while commands
/// flow) cannot be what moves it. The old master still takes writes for
/// seconds after the switch (until Sentinel demotes it), so without the
/// subscription the next login would be written there and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_master_event_moves_the_gateway_before_its_next_write() {
    log_the_store_in_test_output();
    let Setup {
        upstream: _upstream,
        master: old,
        replica: new,
        sentinel,
        gw,
    } = setup_with(None, false).await;
    let mut alice = logged_in_and_replicated(&gw, &old, &new).await;
    assert!(
        moved_to(&new).await.is_empty(),
        "no gateway connection to the replica before the failover"
    );

    // The test hears the switch as the gateway does.
    let mut switches = switch_master_messages(sentinel.port).await;
    wait_for("Sentinel to accept the failover", SENTINEL_PATIENCE, || {
        sentinel.cli(&["SENTINEL", "FAILOVER", MASTER]).trim() == "OK"
    });
    let switch = tokio::time::timeout(SENTINEL_PATIENCE, switches.next())
        .await
        .expect("+switch-master within Sentinel's patience")
        .expect("the subscription stays open");
    let heard = Instant::now();
    let payload: String = switch.get_payload().expect("text");
    assert!(
        payload.starts_with(&format!("{MASTER} ")) && payload.ends_with(&format!(" {}", new.port)),
        "Sentinel switched to the replica: {payload}"
    );

    // No request meanwhile: the gateway's own connection to the new master
    // appears all the same.
    let moved = loop {
        let moved = moved_to(&new).await;
        if !moved.is_empty() {
            break moved;
        }
        assert!(
            heard.elapsed() < Duration::from_secs(15),
            "the gateway did not move to the new master on +switch-master\n{}",
            explain(&gw, &sentinel, [&old, &new])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "the gateway moved to the new master (connection {moved:?}) {:?} after the test heard +switch-master",
        heard.elapsed()
    );

    // The next write lands on the new master: bob's login is there, next
    // to alice's replicated session.
    let mut bob = Browser::new(&gw);
    bob.login_as("bob").await;
    assert_eq!(
        session_records(&gw, &new),
        2,
        "bob's session was written to the new master\n{}",
        explain(&gw, &sentinel, [&old, &new])
    );
    assert_eq!(bob.get("/api/b").await.status, StatusCode::OK);
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
}

/// How many clients of `sentinel` are subscribed to one channel (the
/// gateway's `+switch-master` subscription), `redis-cli` left out.
pub(crate) fn subscribers(sentinel: &SentinelProcess) -> usize {
    sentinel
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| l.contains(" flags=P ") && l.contains(" sub=1 "))
        .count()
}

/// The `+switch-master` subscription is held on one Sentinel; when that
/// Sentinel dies, the gateway subscribes on the next one configured, so a
/// failover that one announces still moves it at once, before any request
/// (the once-a-second re-check runs only while commands flow, and needs
/// two checks a second apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_subscribed_sentinel_dies_a_switch_master_from_the_next_one_still_moves_the_gateway()
 {
    log_the_store_in_test_output();
    let upstream = Upstream::start().await;
    let old = RedisServer::start();
    let new = RedisServer::start_replica(&old);
    wait_synced(&new);
    let first = SentinelProcess::start(MASTER, &old);
    let second = SentinelProcess::start(MASTER, &old);
    wait_sentinel_sees(&second, &new);
    let second_port = second.port;
    let gw = GatewayBuilder::new(&upstream)
        .sentinel(first.port, MASTER)
        .configure(|c| {
            c.store.cache_entries = 0;
            c.store.sentinels.push(format!("127.0.0.1:{second_port}"));
        })
        .start()
        .await;
    let mut alice = logged_in_and_replicated(&gw, &old, &new).await;
    wait_for(
        "the gateway to subscribe on the first Sentinel",
        Duration::from_secs(20),
        || subscribers(&first) == 1,
    );
    assert_eq!(subscribers(&second), 0, "one subscription per store link");

    drop(first);
    let died = Instant::now();
    wait_for(
        "the gateway to subscribe on the second Sentinel",
        Duration::from_secs(20),
        || subscribers(&second) == 1,
    );
    eprintln!(
        "subscribed on the second Sentinel {:?} after the first stopped",
        died.elapsed()
    );

    let mut switches = switch_master_messages(second_port).await;
    // Forced: a failover that needs no other Sentinel's vote.
    wait_for(
        "the second Sentinel to accept the failover",
        SENTINEL_PATIENCE,
        || second.cli(&["SENTINEL", "FAILOVER", MASTER]).trim() == "OK",
    );
    tokio::time::timeout(SENTINEL_PATIENCE, switches.next())
        .await
        .expect("+switch-master within Sentinel's patience")
        .expect("the subscription stays open");
    let heard = Instant::now();

    // No request meanwhile; the re-check would need two checks a second
    // apart, so a move within the second is the event's.
    let found = loop {
        let found = heard.elapsed();
        if !moved_to(&new).await.is_empty() {
            break found;
        }
        assert!(
            heard.elapsed() < Duration::from_secs(15),
            "the gateway did not move on the second Sentinel's +switch-master\n{}",
            explain(&gw, &second, [&old, &new])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("the gateway's connection to the new master was there {found:?} after the event");
    assert!(
        found < Duration::from_secs(1),
        "moved {found:?} after +switch-master: not by the event\n{}",
        explain(&gw, &second, [&old, &new])
    );
    let mut bob = Browser::new(&gw);
    bob.login_as("bob").await;
    assert_eq!(
        session_records(&gw, &new),
        2,
        "bob's session was written to the new master\n{}",
        explain(&gw, &second, [&old, &new])
    );
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
}

/// The gateway's kept data connections on `server`: ordinary clients that
/// stay open across two looks 300 ms apart (which leaves out the short
/// connections that check a server's `ROLE`), and not Sentinel's links,
/// `redis-cli` or the session cache's invalidation connection.
pub(crate) async fn moved_to(server: &RedisServer) -> Vec<String> {
    let look = || {
        server
            .cli(&["CLIENT", "LIST"])
            .lines()
            .filter(|l| {
                l.contains(" flags=N ")
                    && !l.contains(" name=sentinel-")
                    && !l.contains(" name=oidc-bff-tracking ")
                    && !l.contains(" cmd=client|list ")
            })
            .filter_map(|l| l.split(' ').next()?.strip_prefix("id=").map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let first = look();
    if first.is_empty() {
        return first;
    }
    // A discovery's `ROLE` check opens a connection and closes it at once;
    // the link's own (which now also asks `ROLE` before it is used) stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = look();
    first.into_iter().filter(|id| second.contains(id)).collect()
}

/// A field of `INFO <section>` as a number.
fn info_number(info: &str, field: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The once-a-second re-check asks a Sentinel on a connection it keeps,
/// instead of opening a connection to the master (to check its `ROLE`)
/// each second: a few seconds of requests open no connection to the
/// master nor to the Sentinel, and the Sentinel is asked all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recheck_opens_no_connection_per_second_while_requests_flow() {
    no_connection_opened_while_requests_flow(false).await;
}

/// The same with the session cache on: its invalidation connections check
/// each second that they still follow the master the Sentinels name, on
/// kept Sentinel connections too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_follows_the_master_without_a_connection_per_second() {
    no_connection_opened_while_requests_flow(true).await;
}

async fn no_connection_opened_while_requests_flow(cache: bool) {
    log_the_store_in_test_output();
    let Setup {
        upstream: _upstream,
        master,
        replica,
        sentinel,
        gw,
    } = setup_with(None, cache).await;
    let mut alice = logged_in_and_replicated(&gw, &master, &replica).await;
    // Warm: the re-check's Sentinel connection and the subscription are
    // opened by the first requests.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(2500) {
        assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each `redis-cli` call below is a connection of its own, and runs one
    // command, counted in the next figures read (Sentinel keeps no
    // per-command statistics).
    let master_before = info_number(
        &master.cli(&["INFO", "stats"]),
        "total_connections_received",
    );
    let sentinel_stats = sentinel.cli(&["INFO", "stats"]);
    let sentinel_before = info_number(&sentinel_stats, "total_connections_received");
    let commands_before = info_number(&sentinel_stats, "total_commands_processed");
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(4) {
        assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
        requests += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let master_opened = info_number(
        &master.cli(&["INFO", "stats"]),
        "total_connections_received",
    ) - master_before
        - 1;
    let sentinel_stats = sentinel.cli(&["INFO", "stats"]);
    let sentinel_opened =
        info_number(&sentinel_stats, "total_connections_received") - sentinel_before - 1;
    let asked = info_number(&sentinel_stats, "total_commands_processed") - commands_before - 1;
    eprintln!(
        "{requests} requests in {:?}: {master_opened} connections opened to the master, \
         {sentinel_opened} to the Sentinel, which ran {asked} of the gateway's commands",
        started.elapsed()
    );
    assert!(
        asked >= 2,
        "the re-check still asks the Sentinel while requests flow ({asked} times)"
    );
    assert_eq!(
        (master_opened, sentinel_opened),
        (0, 0),
        "connections opened to the master and to the Sentinel during {requests} requests"
    );
}

/// The `+switch-master` subscription and the re-check's kept Sentinel
/// connection live as long as the store's link: dropping the store (a
/// gateway stopping, or a reload replacing it) closes both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_closes_its_sentinel_connections() {
    log_the_store_in_test_output();
    let master = RedisServer::start();
    let sentinel = SentinelProcess::start(MASTER, &master);
    let config = RedisConfig {
        endpoint: RedisEndpoint::Sentinel(SentinelConfig {
            nodes: vec![("127.0.0.1".to_owned(), sentinel.port)],
            master: MASTER.to_owned(),
            username: None,
            password: None,
            tls: false,
        }),
        username: None,
        password: None,
        db: 0,
        connect_timeout: Duration::from_secs(2),
        tls_ca_pem: None,
        tls_client: None,
    };
    let gateway_clients = || {
        sentinel
            .cli(&["CLIENT", "LIST"])
            .lines()
            // `P`: a subscriber.
            .filter(|l| {
                (l.contains(" flags=N ") || l.contains(" flags=P "))
                    && !l.contains(" cmd=client|list ")
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let store = RedisStore::new(&config, "leak:", Duration::from_secs(2)).expect("store");
    // Two seconds of pings: the subscription starts with the first, the
    // re-check's kept connection with a later one.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) || gateway_clients().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the store's subscription and kept connection: {:?}",
            gateway_clients()
        );
        store.ping().await.expect("ping through Sentinel");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = gateway_clients();
    assert!(
        open.iter()
            .any(|l| l.contains(" flags=P ") && l.contains(" sub=1 ")),
        "subscribed to +switch-master: {open:?}"
    );

    drop(store);
    let dropped = Instant::now();
    loop {
        let left = gateway_clients();
        if left.is_empty() {
            break;
        }
        // Well within the subscription's idle ping (10 s), after which it
        // would notice the link is gone by itself.
        assert!(
            dropped.elapsed() < Duration::from_secs(3),
            "connections left on the Sentinel after the store was dropped: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
