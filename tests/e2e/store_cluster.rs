//! Redis Cluster: a session's keys and its user's index share the slot of
//! the user's shard tag, so the atomic scripts run on one node while
//! different users spread over the primaries; the commands that name no
//! key (SCAN, INFO) visit every primary. Sessions of the single-slot layout
//! from before the upgrade keep working under the legacy prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::HeaderValue;
use oidc_bff::session::cookie::{SessionId, StoreId};
use oidc_bff::session::store::{
    Fetched, NewSession, Revocation, RevokeReason, SessionStore, Store,
};
use oidc_bff::session::{ClientInfo, Lookup, Sessions, sid_hash, user_hash};
use reqwest::{Method, StatusCode};

use crate::harness::{
    Browser, GatewayBuilder, RedisCluster, TestCa, Upstream, random_prefix, unique_user,
};
use crate::session_cache::{HITS, INVALIDATIONS, cached_on, get_with, metric, tracking_up};
use crate::store_consistency::{Target, dump, login, sessions_over, store_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_on_a_redis_cluster_with_each_users_keys_in_one_slot() {
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

    // Alice's sessions and her index share one slot (her shard tag).
    let pattern = format!("{}*", gw.prefix);
    let keys: Vec<String> = cluster
        .nodes
        .iter()
        .flat_map(|n| {
            n.cli(&["KEYS", &pattern])
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let slots: Vec<String> = keys
        .iter()
        .filter(|k| k.contains(":s:") || k.contains(":u:"))
        .map(|k| cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", k]))
        .collect();
    assert_eq!(slots.len(), 3, "two records and one index: {keys:?}");
    assert!(slots.iter().all(|s| s == &slots[0]), "{keys:?}");

    // Keyless commands visit every primary: the statistics count both.
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
async fn when_the_primary_of_a_users_slot_dies_its_replica_takes_over() {
    let mut cluster = RedisCluster::start(3, 1);
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        .start()
        .await;
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);

    // The primary holding alice's session, once its replica has the login.
    let pattern = format!("{}s:*", gw.prefix);
    let primary = cluster
        .nodes
        .iter()
        .position(|n| {
            n.cli(&["ROLE"]).starts_with("master") && !n.cli(&["KEYS", &pattern]).trim().is_empty()
        })
        .expect("a primary holds the session");
    wait_replicated(&cluster);
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
    let killed = Instant::now();

    // The cluster promotes the replica (cluster-node-timeout 2 s); the
    // gateway's connection follows and alice's session is still there,
    // within 15 s of the promotion.
    while !cluster.nodes[replica].cli(&["ROLE"]).starts_with("master") {
        assert!(killed.elapsed() < Duration::from_secs(40), "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted = Instant::now();
    loop {
        let r = alice.get("/api/a").await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(15),
            "alice not served within 15 s of the promotion: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "replica promoted {:?} after the kill; alice served again {:?} after the promotion",
        promoted.duration_since(killed),
        promoted.elapsed()
    );
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

/// Waits until every replica has acknowledged what its primary had written
/// when this was called (replication offsets as `ROLE` reports them:
/// `master`, offset, then host, port and acknowledged offset per replica).
fn wait_replicated(cluster: &RedisCluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &cluster.nodes {
        let role = n.cli(&["ROLE"]);
        let lines: Vec<&str> = role.lines().collect();
        if lines.first() != Some(&"master") {
            continue;
        }
        let written: u64 = lines[1].trim().parse().expect("offset");
        loop {
            let role = n.cli(&["ROLE"]);
            let lines: Vec<&str> = role.lines().collect();
            let acked: Vec<u64> = lines[2..]
                .chunks(3)
                .filter_map(|c| c.get(2)?.trim().parse().ok())
                .collect();
            if !acked.is_empty() && acked.iter().all(|&o| o >= written) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas of {} did not catch up: {role}",
                n.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Creates `per_user` sessions for each of `users` users through the store
/// API, as a login does (an ID in the user's shard); with `sid`, each bound
/// to one of three provider sessions of its user.
async fn create_sessions(store: &Store, users: usize, per_user: usize, sid: bool) -> Vec<StoreId> {
    let now = oidc_bff::clock::unix_now_millis();
    futures_util::stream::iter(0..users * per_user)
        .map(|n| async move {
            let user = format!("user-{}", n % users);
            let uh = user_hash(&user);
            let id = SessionId::generate(store.shard_of(&uh).await.expect("shard")).store_id();
            let sh = sid_hash(&format!("{user}-sid-{}", n % 3));
            let eviction = Revocation::new(RevokeReason::Limit, "system", now / 1000);
            store
                .create(&NewSession {
                    id: &id,
                    record: &[7u8; 200],
                    ttl_millis: 3_600_000,
                    user_hash: &uh,
                    sid_hash: sid.then_some(sh.as_str()),
                    created_millis: now + n as u64,
                    max_per_user: None,
                    eviction: &eviction,
                    index_ttl_millis: 3_660_000,
                })
                .await
                .expect("create");
            id
        })
        .buffer_unordered(64)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_thousand_sessions_of_three_thousand_users_spread_evenly_over_three_primaries() {
    let cluster = RedisCluster::start(3, 0);
    let target = Target::Cluster(cluster.addrs());
    let prefix = random_prefix();
    let store = Store::Redis(store_on(&target, &prefix));
    let ids = create_sessions(&store, 3_000, 10, false).await;
    assert_eq!(ids.len(), 30_000);

    let pattern = format!("{prefix}s:*");
    let per_node: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["KEYS", &pattern])
                .lines()
                .filter(|l| !l.is_empty())
                .count()
        })
        .collect();
    eprintln!("session records per primary: {per_node:?}");
    assert_eq!(per_node.iter().sum::<usize>(), 30_000);
    for n in &per_node {
        assert!(
            (8_500..=11_500).contains(n),
            "{per_node:?}: a primary is not within ±15 % of 10,000"
        );
    }
    // Every user's index, on its own primary, lists exactly its sessions.
    let d = dump(&target, &prefix).await;
    let mut by_user: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, (uh, _)) in &d.records {
        by_user.entry(uh.clone()).or_default().push(id.clone());
    }
    assert_eq!(by_user.len(), 3_000);
    for (uh, ids) in by_user {
        let listed = d.users.get(&uh).expect("an index per user");
        assert_eq!(listed.len(), 10);
        assert!(ids.iter().all(|id| listed.contains(id)));
    }
    // The statistics (SCAN and INFO on every primary) count them all.
    let stats = store
        .stats(1, oidc_bff::clock::unix_now())
        .await
        .expect("stats");
    assert_eq!((stats.sessions, stats.users), (30_000, 3_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_primary_under_load_loses_no_session_its_replica_held() {
    use std::sync::atomic::{AtomicBool, Ordering};

    // The store's own log lines (a replaced connection) in the test output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("oidc_bff::session::store=info")
        .with_test_writer()
        .try_init();
    let mut cluster = RedisCluster::start(3, 1);
    let prefix = random_prefix();
    let store = Arc::new(Store::Redis(store_on(
        &Target::Cluster(cluster.addrs()),
        &prefix,
    )));
    let ids = create_sessions(&store, 300, 10, true).await;
    wait_replicated(&cluster);

    // Load while the primary dies: 64 lookups of those sessions at a time
    // (the queue that once wedged the connection), and new logins.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (store, stop, ids) = (store.clone(), stop.clone(), ids.clone());
        async move {
            let (mut ok, mut failed, mut i) = (0u64, 0u64, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<bool> = futures_util::stream::iter(i..i + 64)
                    .map(|n| {
                        let (store, id) = (&store, &ids[n % ids.len()]);
                        async move { store.get(id).await.is_ok() }
                    })
                    .buffer_unordered(64)
                    .collect()
                    .await;
                ok += batch.iter().filter(|&&b| b).count() as u64;
                failed += batch.iter().filter(|&&b| !b).count() as u64;
                // A login per batch; refused while its slot has no primary.
                let uh = user_hash(&format!("load-{i}"));
                if let Ok(tag) = store.shard_of(&uh).await {
                    let id = SessionId::generate(tag).store_id();
                    let why = Revocation::new(RevokeReason::Limit, "system", 0);
                    let _ = store
                        .create(&NewSession {
                            id: &id,
                            record: &[7u8; 200],
                            ttl_millis: 60_000,
                            user_hash: &uh,
                            sid_hash: None,
                            created_millis: 1,
                            max_per_user: None,
                            eviction: &why,
                            index_ttl_millis: 120_000,
                        })
                        .await;
                }
                i += 64;
            }
            (ok, failed)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.cli(&["ROLE"]).starts_with("master"))
        .expect("a primary");
    let victim_port = cluster.nodes[victim].port.to_string();
    let replica = cluster
        .nodes
        .iter()
        .position(|n| {
            let role = n.cli(&["ROLE"]);
            role.starts_with("slave") && role.lines().nth(2) == Some(victim_port.as_str())
        })
        .expect("the primary has a replica");
    cluster.nodes[victim].stop();
    let killed = Instant::now();

    // The cluster promotes the replica (cluster-node-timeout 2 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    while !cluster.nodes[replica].cli(&["ROLE"]).starts_with("master") {
        assert!(Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted = Instant::now();
    eprintln!("replica promoted {:?} after the kill", killed.elapsed());
    // The connection that lived through the failover, still under load,
    // finds every session again (of every slot; those of the dead primary
    // on its replica) within 15 s of the promotion.
    let bound = Duration::from_secs(15);
    let mut missing = usize::MAX;
    while missing > 0 && promoted.elapsed() < bound {
        let left = bound.saturating_sub(promoted.elapsed());
        missing = tokio::time::timeout(left, missing_on(&store, &ids, killed))
            .await
            .unwrap_or(usize::MAX);
        if missing > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    assert_eq!(
        missing, 0,
        "the long-lived connection did not find every session within {bound:?} of the promotion"
    );
    eprintln!(
        "all sessions found through the long-lived connection {:?} after the promotion",
        promoted.elapsed()
    );
    // A connection opened now (as a new instance would) agrees.
    let fresh = Store::Redis(store_on(&Target::Cluster(cluster.addrs()), &prefix));
    assert_eq!(
        missing_on(&fresh, &ids, killed).await,
        0,
        "through a fresh connection"
    );
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.await.expect("load");
    eprintln!(
        "load: {ok} lookups answered, {failed} failed (timed out or refused while the slots had no primary)"
    );
    assert!(cluster.nodes[replica].cli(&["ROLE"]).starts_with("master"));
}

/// How many of `ids` a lookup does not find live now.
async fn missing_on(store: &Store, ids: &[StoreId], killed: Instant) -> usize {
    let found: Vec<Result<Fetched, _>> = futures_util::stream::iter(ids.iter())
        .map(|id| store.get(id))
        .buffer_unordered(16)
        .collect()
        .await;
    let missing: Vec<_> = found
        .iter()
        .filter(|f| !matches!(f, Ok(Fetched::Live(_))))
        .collect();
    eprintln!(
        "{} of {} not found {:?} after the kill; e.g. {:?}",
        missing.len(),
        ids.len(),
        killed.elapsed(),
        missing.first()
    );
    missing.len()
}

async fn opens(s: &Sessions, cookie: &HeaderValue) -> Option<StoreId> {
    match s
        .load(
            &crate::harness::cookie_request(cookie),
            oidc_bff::clock::unix_now(),
        )
        .await
        .expect("load")
    {
        Lookup::Active(session) => Some(session.store_id.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_the_single_slot_layout_still_opens_and_is_revoked_after_the_upgrade() {
    let cluster = RedisCluster::start(3, 0);
    let target = Target::Cluster(cluster.addrs());
    let prefix = random_prefix();
    let legacy = format!("{{{}}}:", prefix.trim_end_matches(':'));
    let now = oidc_bff::clock::unix_now();
    let client = ClientInfo::default();
    let user = "upgraded-user";

    // Before the upgrade: every key under the prefix's one hash tag, with
    // the cookies of that time (43 characters, 64-hex session IDs).
    let before = sessions_over(store_on(&target, &legacy), None);
    let mut old = Vec::new();
    for n in 0..3 {
        // Provider sessions sid-0, sid-1, sid-0.
        let (id, cookie) = before
            .create_legacy(login(user, n), &client, now)
            .await
            .expect("a legacy session");
        assert_eq!(id.as_str().len(), 64);
        assert_eq!(opens(&before, &cookie).await.as_ref(), Some(&id));
        old.push((id, cookie));
    }

    // After: the new prefix, the old one as legacy_key_prefix.
    let after = sessions_over(store_on(&target, &prefix).with_legacy_prefix(&legacy), None);
    for (id, cookie) in &old {
        assert_eq!(opens(&after, cookie).await.as_ref(), Some(id), "old cookie");
    }
    // A new login of the same user is sharded, and listed with the old ones.
    let (new_id, new_cookie) = after
        .create(login(user, 3), &client, now)
        .await
        .expect("create");
    assert_eq!(new_id.as_str().len(), 60);
    let listed = after.list_user(user, None, 10, now).await.expect("list");
    assert_eq!(listed.sessions.len(), 4, "old and new sessions listed");

    // Back-channel logout of sid-0 finds both old sessions bound to it.
    let mut ended = after
        .revoke_provider_session("sid-0", "provider", now)
        .await
        .expect("back-channel");
    ended.sort();
    let mut expected = vec![old[0].0.clone(), old[2].0.clone()];
    expected.sort();
    assert_eq!(ended, expected);
    assert_eq!(opens(&after, &old[0].1).await, None);
    assert_eq!(opens(&after, &old[2].1).await, None);
    // Logout of the last old one by its ID; the new session lives on.
    assert_eq!(
        after
            .revoke(&old[1].0, RevokeReason::Logout, "user", now)
            .await
            .expect("revoke"),
        oidc_bff::session::store::RevokeOutcome::Revoked
    );
    assert_eq!(opens(&after, &old[1].1).await, None);
    assert_eq!(opens(&after, &new_cookie).await, Some(new_id.clone()));

    // Revoking all the user's sessions reaches both layouts.
    let again = before
        .create_legacy(login(user, 4), &client, now)
        .await
        .expect("a legacy session");
    let mut all = after
        .revoke_user(user, None, RevokeReason::Admin, "operator", now)
        .await
        .expect("revoke all");
    all.sort();
    let mut expected = vec![new_id, again.0];
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(opens(&after, &again.1).await, None);
    // The sweep walks both layouts on every primary without a cross-slot
    // error, and finds nothing left to trim.
    after.sweep(now).await.expect("sweep");
    let d = dump(&target, &prefix).await;
    assert!(d.records.is_empty(), "{:?}", d.records);
}

/// The node ID of a cluster node (`CLUSTER MYID`).
fn node_id(node: &crate::harness::RedisServer) -> String {
    node.cli(&["CLUSTER", "MYID"]).trim().to_owned()
}

/// One slot resharded by hand, step by step, as `redis-cli --cluster
/// reshard` does it: IMPORTING on the target, MIGRATING on the source,
/// MIGRATE of its keys, then SETSLOT NODE on every node. Cheap to clone,
/// so a background task can finish what a test began.
#[derive(Clone)]
struct SlotMove {
    cluster: Arc<RedisCluster>,
    slot: String,
    from: usize,
    to: usize,
}

impl SlotMove {
    /// The slot of the (first) session record under `prefix`, to move from
    /// the node that holds it to the next one.
    fn of_the_session(cluster: &Arc<RedisCluster>, prefix: &str) -> Self {
        let pattern = format!("{prefix}s:*");
        let (from, record) = cluster
            .nodes
            .iter()
            .enumerate()
            .find_map(|(i, n)| {
                let keys = n.cli(&["KEYS", &pattern]);
                keys.lines()
                    .find(|l| !l.is_empty())
                    .map(|k| (i, k.to_owned()))
            })
            .expect("a node holds the session");
        let slot = cluster.nodes[from].cli(&["CLUSTER", "KEYSLOT", &record]);
        Self {
            slot: slot.trim().to_owned(),
            from,
            to: (from + 1) % cluster.nodes.len(),
            cluster: Arc::clone(cluster),
        }
    }

    /// The same move, to node `to` of the cluster (a primary just added,
    /// say) instead of the next one.
    fn to(self, to: usize) -> Self {
        assert_ne!(to, self.from, "a slot moves to another node");
        Self { to, ..self }
    }

    fn source(&self) -> &crate::harness::RedisServer {
        &self.cluster.nodes[self.from]
    }

    fn target(&self) -> &crate::harness::RedisServer {
        &self.cluster.nodes[self.to]
    }

    /// IMPORTING on the target, then MIGRATING on the source.
    fn begin(&self) {
        let (source_id, target_id) = (node_id(self.source()), node_id(self.target()));
        let importing = ["CLUSTER", "SETSLOT", &self.slot, "IMPORTING", &source_id];
        assert_eq!(self.target().cli(&importing).trim(), "OK");
        let migrating = ["CLUSTER", "SETSLOT", &self.slot, "MIGRATING", &target_id];
        assert_eq!(self.source().cli(&migrating).trim(), "OK");
    }

    /// The slot's keys still on the source.
    fn keys_left(&self) -> Vec<String> {
        let listed = ["CLUSTER", "GETKEYSINSLOT", &self.slot, "1000"];
        self.source()
            .cli(&listed)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `keys` moved to the target by one MIGRATE.
    fn migrate(&self, keys: &[String]) {
        let port = self.target().port.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(String::as_str));
        assert_eq!(self.source().cli(&args).trim(), "OK", "{keys:?}");
    }

    /// Begins the move and migrates the first half of the slot's keys (at
    /// least one): the slot is then mid-migration, its keys on both nodes.
    fn begin_and_move_half(&self) {
        self.begin();
        let keys = self.keys_left();
        assert!(keys.len() >= 2, "keys on both nodes need two: {keys:?}");
        self.migrate(&keys[..keys.len() / 2]);
    }

    /// The rest of the keys moved, then the slot handed to the target on
    /// every node: the target first, then the source, as `redis-cli`
    /// does. (The other way round, for a moment the source sends the
    /// slot's commands to the target with `MOVED` and the target, still
    /// importing, sends them back.)
    fn finish(&self) {
        let rest = self.keys_left();
        if !rest.is_empty() {
            self.migrate(&rest);
        }
        let target_id = node_id(self.target());
        let others = (0..self.cluster.nodes.len()).filter(|&i| i != self.from && i != self.to);
        for i in [self.to, self.from].into_iter().chain(others) {
            let node = &self.cluster.nodes[i];
            node.cli(&["CLUSTER", "SETSLOT", &self.slot, "NODE", &target_id]);
        }
    }

    /// [`Self::finish`] after `delay`, on a thread of its own: a migration
    /// still under way when a request arrives, that ends while it waits.
    /// The delay is the migration's duration, not a wait for a condition;
    /// it is well past the Redis client's own retries (about 0.2 s), so a
    /// request that only those retries carry fails.
    fn finish_after(&self, delay: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(delay);
            this.finish();
        })
    }

    /// Keys on the target matching `pattern`.
    fn on_target(&self, pattern: &str) -> Vec<String> {
        self.target()
            .cli(&["KEYS", pattern])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// How long a migration in the tests below takes to finish: far longer
/// than the Redis client's own retries of `TRYAGAIN` (about 0.2 s per
/// command; a request mid-migration may send two such commands before the
/// write, e.g. the lookup and a touch), on a loaded machine too; well
/// within the store's timeout (5 s in tests).
const MIGRATION: Duration = Duration::from_secs(2);

/// Resharding moves a slot key by key (`redis-cli --cluster reshard` does
/// what this does by hand: IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE).
/// While a user's slot is migrating, the record is on one node and keys
/// the lookup also reads (tombstone, activity) exist on neither; the
/// user's requests must still be served at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_session_is_served_at_every_step_of_its_slots_migration() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        // Every request reads the store.
        .configure(|c| c.store.cache_entries = 0)
        .start()
        .await;
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);

    let moving = SlotMove::of_the_session(&cluster, &gw.prefix);
    moving.begin();
    let during = alice.get("/api/a").await;
    assert_eq!(
        during.status,
        StatusCode::OK,
        "slot migrating, keys still on the source: {during:?}"
    );

    let keys = moving.keys_left();
    assert!(!keys.is_empty());
    // Half the slot's keys moved (the record first), then the rest.
    let (first, rest) = keys.split_at(keys.len().div_ceil(2));
    for batch in [first, rest] {
        moving.migrate(batch);
        let mid = alice.get("/api/a").await;
        assert_eq!(
            mid.status,
            StatusCode::OK,
            "after moving {batch:?}: {mid:?}"
        );
    }
    moving.finish();
    assert_eq!(alice.get("/api/a").await.status, StatusCode::OK);
    let out = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    assert_eq!(alice.get("/api/a").await.status, StatusCode::UNAUTHORIZED);
}

/// A gateway on `cluster` whose every request reads the store.
async fn uncached_on(cluster: &RedisCluster, upstream: &Upstream) -> crate::harness::Gateway {
    GatewayBuilder::new(upstream)
        .cluster(&cluster.addrs())
        .configure(|c| c.store.cache_entries = 0)
        .start()
        .await
}

/// A login writes the record and the user's index in one script, which
/// Redis refuses (`TRYAGAIN`) while the user's slot is mid-migration: the
/// new record exists on neither node. The store runs it again until the
/// slot has moved, so the login waits out the migration and succeeds, and
/// the index lists exactly the user's two sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_while_the_users_slot_is_mid_migration_succeeds_once_the_slot_has_moved() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let upstream = Upstream::start().await;
    let gw = uncached_on(&cluster, &upstream).await;
    let mut first = Browser::new(&gw);
    first.login_alice().await;

    let moving = SlotMove::of_the_session(&cluster, &gw.prefix);
    moving.begin_and_move_half();
    let finished = moving.finish_after(MIGRATION);
    let mut second = Browser::new(&gw);
    // Asserts the callback's redirect: a 503 fails here.
    second.login_alice().await;
    finished.await.expect("migration finished");

    for browser in [&mut first, &mut second] {
        assert_eq!(browser.get("/api/a").await.status, StatusCode::OK);
    }
    let listed = second.get("/auth/sessions").await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_eq!(
        listed.json()["sessions"].as_array().expect("list").len(),
        2,
        "{listed:?}"
    );
    // Both records and the index are on the slot's new owner.
    assert_eq!(moving.on_target(&format!("{}s:*", gw.prefix)).len(), 2);
    assert_eq!(moving.on_target(&format!("{}u:*", gw.prefix)).len(), 1);
}

/// A logout ends record, index entry and writes the tombstone in one
/// script; mid-migration Redis refuses it until the slot has moved. The
/// logout waits for that and answers 200 only once the session is ended:
/// the slot's new owner refuses it afterwards and holds its tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_while_the_users_slot_is_mid_migration_ends_the_session_on_its_new_owner() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let upstream = Upstream::start().await;
    let gw = uncached_on(&cluster, &upstream).await;
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    let cookie = alice.cookie_header();

    let moving = SlotMove::of_the_session(&cluster, &gw.prefix);
    moving.begin_and_move_half();
    let finished = moving.finish_after(MIGRATION);
    let out = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    finished.await.expect("migration finished");

    // The cookie as it was before the logout cleared it.
    let (status, body) = crate::session_cache::get_with(&cookie, &gw.url("/api/a")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(moving.on_target(&format!("{}s:*", gw.prefix)).is_empty());
    assert_eq!(moving.on_target(&format!("{}t:*", gw.prefix)).len(), 1);
}

/// A user's session listing reads the index and then its records and
/// activity keys in one script (which drops dead entries from the index),
/// refused mid-migration; it waits for the slot to move and lists the
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_session_listing_while_their_slot_is_mid_migration_lists_their_session() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let upstream = Upstream::start().await;
    let gw = uncached_on(&cluster, &upstream).await;
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;

    let moving = SlotMove::of_the_session(&cluster, &gw.prefix);
    moving.begin_and_move_half();
    let finished = moving.finish_after(MIGRATION);
    let listed = alice.get("/auth/sessions").await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_eq!(
        listed.json()["sessions"].as_array().expect("list").len(),
        1,
        "{listed:?}"
    );
    finished.await.expect("migration finished");
}

/// Mid-migration, a request whose session is due for a token refresh and
/// an activity touch is served; the refresh rewrites the record (a script
/// over that one key, which follows `ASK` at once) and the touch writes
/// the activity key next to the record (a script over both, refused until
/// the slot has moved): both are written, on the slot's new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refresh_and_an_activity_touch_while_the_users_slot_is_mid_migration_are_written() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        .refresh_skew("1d")
        .configure(|c| {
            c.store.cache_entries = 0;
            c.session.idle_timeout = crate::harness::duration("1h");
            c.session.touch_interval = crate::harness::duration("1s");
        })
        .start()
        .await;
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;
    let token = |seen: &[crate::harness::net::Seen]| {
        seen.last()
            .and_then(|s| s.header("authorization"))
            .expect("a token forwarded")
    };
    assert_eq!(alice.get("/api/before").await.status, StatusCode::OK);
    let before = token(&upstream.seen());
    let activity = format!("{}a:*", gw.prefix);

    let moving = SlotMove::of_the_session(&cluster, &gw.prefix);
    // The next request is a touch interval (whole seconds) after the last.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    moving.begin_and_move_half();
    let finished = moving.finish_after(MIGRATION);
    let during = alice.get("/api/during").await;
    assert_eq!(during.status, StatusCode::OK, "{during:?}");
    assert_ne!(token(&upstream.seen()), before, "the tokens were refreshed");
    finished.await.expect("migration finished");
    // The touch runs apart from the request: poll for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while moving.on_target(&activity).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no activity key on the new owner"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alice.get("/api/after").await.status, StatusCode::OK);
}

/// When the slot never finishes moving, a write waits for it at most the
/// store's timeout and then answers 503: not a hang, and not a success
/// for a logout that ended nothing (the session stays usable, and a
/// logout once the slot has moved ends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_while_the_users_slot_stays_mid_migration_answers_503_after_the_store_timeout() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let upstream = Upstream::start().await;
    let timeout = Duration::from_secs(2);
    let gw = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        .store_timeout(timeout)
        .configure(|c| c.store.cache_entries = 0)
        .start()
        .await;
    let mut alice = Browser::new(&gw);
    alice.login_alice().await;

    let moving = SlotMove::of_the_session(&cluster, &gw.prefix);
    moving.begin_and_move_half();
    let started = Instant::now();
    let out = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    let took = started.elapsed();
    assert_eq!(out.status, StatusCode::SERVICE_UNAVAILABLE, "{out:?}");
    assert!(out.body.contains("store_unavailable"), "{out:?}");
    // It waited for the slot (the Redis client alone gives up after about
    // 0.2 s), within the store's timeout and some room for a loaded machine.
    assert!(
        took >= timeout - Duration::from_millis(500) && took < timeout + Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert_eq!(
        alice.get("/api/a").await.status,
        StatusCode::OK,
        "not ended"
    );

    moving.finish();
    let out = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    assert_eq!(alice.get("/api/a").await.status, StatusCode::UNAUTHORIZED);
}

/// Revoking every session of a user (an operator, or "log out
/// everywhere") ends them in batches, each one script over the user's
/// index and the sessions' records and tombstones; mid-migration it waits
/// for the slot to move and ends every one: none is left live, none is
/// left in the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_all_of_a_users_sessions_while_their_slot_is_mid_migration_ends_every_one() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let target = Target::Cluster(cluster.addrs());
    let prefix = random_prefix();
    let sessions = sessions_over(store_on(&target, &prefix), None);
    let (client, now) = (ClientInfo::default(), oidc_bff::clock::unix_now());
    let user = "resharded-user";
    let mut made = Vec::new();
    for n in 0..3 {
        made.push(
            sessions
                .create(login(user, n), &client, now)
                .await
                .expect("create"),
        );
    }

    let moving = SlotMove::of_the_session(&cluster, &prefix);
    moving.begin_and_move_half();
    let finished = moving.finish_after(MIGRATION);
    let mut ended = sessions
        .revoke_user(user, None, RevokeReason::Admin, "operator", now)
        .await
        .expect("revoke all");
    finished.await.expect("migration finished");

    ended.sort();
    let mut expected: Vec<StoreId> = made.iter().map(|(id, _)| id.clone()).collect();
    expected.sort();
    assert_eq!(ended, expected);
    for (_, cookie) in &made {
        assert_eq!(opens(&sessions, cookie).await, None);
    }
    let d = dump(&target, &prefix).await;
    assert!(d.records.is_empty(), "{:?}", d.records);
    assert!(d.users.values().all(BTreeSet::is_empty), "{:?}", d.users);
}

/// The sweep drops index entries whose record is gone, a batch per script
/// over the index and the records; mid-migration it waits for the slot to
/// move and drops the dead entry, keeping the live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_while_a_users_slot_is_mid_migration_drops_its_dead_index_entries() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let target = Target::Cluster(cluster.addrs());
    let prefix = random_prefix();
    let sessions = sessions_over(store_on(&target, &prefix), None);
    let (client, now) = (ClientInfo::default(), oidc_bff::clock::unix_now());
    let user = "swept-user";
    let (live, _) = sessions
        .create(login(user, 0), &client, now)
        .await
        .expect("create");
    let (dead, _) = sessions
        .create(login(user, 1), &client, now)
        .await
        .expect("create");
    // The record gone as if it had expired; its index entry stays.
    let record = format!(
        "{prefix}s:{{{}}}{}",
        &dead.as_str()[..4],
        &dead.as_str()[4..]
    );
    let deleted: usize = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["DEL", &record])
                .trim()
                .parse::<usize>()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(deleted, 1, "{record}");

    let moving = SlotMove::of_the_session(&cluster, &prefix);
    moving.begin_and_move_half();
    let finished = moving.finish_after(MIGRATION);
    let removed = sessions
        .sweep(oidc_bff::clock::unix_now())
        .await
        .expect("sweep");
    finished.await.expect("migration finished");

    assert_eq!(removed, 1);
    let d = dump(&target, &prefix).await;
    let listed: Vec<&BTreeSet<String>> = d.users.values().collect();
    assert_eq!(
        listed,
        [&BTreeSet::from([live.as_str().to_owned()])],
        "{:?}",
        d.users
    );
}

/// Scale-out with the session cache on: two caching gateways, `a` (the
/// one whose cache must stay exact; metrics) and `b` (admin API, where
/// the session is ended), and the cluster they share.
async fn caching_pair_over(
    cluster: &RedisCluster,
    upstream: &Upstream,
) -> (crate::harness::Gateway, crate::harness::Gateway) {
    let a = GatewayBuilder::new(upstream)
        .cluster(&cluster.addrs())
        .metrics()
        .start_process()
        .await;
    let b = GatewayBuilder::new(upstream)
        .cluster(&cluster.addrs())
        .prefix(&a.prefix)
        .admin()
        .start_process()
        .await;
    tracking_up(&a).await;
    (a, b)
}

/// A primary added as an operator adds one (`redis-cli --cluster
/// add-node`, then a reshard as a separate step): empty, and a member of
/// the cluster for longer than the gateway's topology re-read (each
/// second) before any slot moves to it. Then `a` serves `cookie` from
/// its cache again (the new member emptied it).
async fn scale_out(cluster: &mut RedisCluster, a: &crate::harness::Gateway, cookie: &str) -> usize {
    let added = cluster.add_primary();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cached_on(a, cookie).await;
    added
}

/// A slot moving to a primary that joined empty: while it is importing,
/// single-key writes (`ASK`) and `MIGRATE` put the session's keys there,
/// and once it serves the slot every write of the session lands there.
/// Gateway `a` caches the session throughout (read from the new primary
/// mid-migration and after); an admin revoke through `b` on the new
/// primary is refused by `a` at its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cached_while_its_slot_moves_to_a_new_primary_is_refused_after_a_revoke_there() {
    let mut cluster = RedisCluster::start(3, 0);
    let upstream = Upstream::start().await;
    let (a, b) = caching_pair_over(&cluster, &upstream).await;
    let user = unique_user("reshard-revoke");
    let mut alice = Browser::new(&b);
    alice.login_as(&user).await;
    let cookie = alice.cookie_header();
    cached_on(&a, &cookie).await;

    let added = scale_out(&mut cluster, &a, &cookie).await;
    let cluster = Arc::new(cluster);
    let moving = SlotMove::of_the_session(&cluster, &a.prefix).to(added);
    moving.begin();
    moving.migrate(&moving.keys_left());
    // Every key on the new primary, which does not serve the slot yet:
    // `a` reads the session there (`ASK`) and caches it.
    cached_on(&a, &cookie).await;
    moving.finish();
    cached_on(&a, &cookie).await;

    let (status, body) = b
        .admin(
            Method::POST,
            "/admin/sessions/revoke",
            Some(serde_json::json!({ "user": user })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !moving.on_target(&format!("{}t:*", a.prefix)).is_empty(),
        "the revoke wrote its tombstone on the new primary"
    );
    let (status, body) = get_with(&cookie, &a.url("/api/after")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("revoked_by_operator"), "{body}");
}

/// `MIGRATE` deletes the moved keys on the source, which announces the
/// deletion to every gateway tracking it: a session cached before its
/// slot moved is dropped from `a`'s cache, and read again from the new
/// primary at `a`'s next request. Ended there by a logout through `b`,
/// it is refused by `a` at its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_read_again_after_its_keys_moved_to_a_new_primary_is_refused_after_a_logout_there()
 {
    let mut cluster = RedisCluster::start(3, 0);
    let upstream = Upstream::start().await;
    let (a, b) = caching_pair_over(&cluster, &upstream).await;
    let mut alice = Browser::new(&b);
    alice.login_as(&unique_user("reshard-logout")).await;
    let cookie = alice.cookie_header();
    cached_on(&a, &cookie).await;

    let added = scale_out(&mut cluster, &a, &cookie).await;
    let cluster = Arc::new(cluster);
    let moving = SlotMove::of_the_session(&cluster, &a.prefix).to(added);
    let announced = metric(&a, INVALIDATIONS).await;
    moving.begin();
    moving.migrate(&moving.keys_left());
    moving.finish();
    let started = Instant::now();
    while metric(&a, INVALIDATIONS).await <= announced {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the source never announced the keys MIGRATE removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hits = metric(&a, HITS).await;
    let (status, body) = get_with(&cookie, &a.url("/api/moved")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        metric(&a, HITS).await,
        hits,
        "the entry went with the keys MIGRATE removed: read again, not served"
    );
    cached_on(&a, &cookie).await;

    let out = alice
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    let (status, body) = get_with(&cookie, &a.url("/api/after")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("logged_out"), "{body}");
}

/// The key of session `id`'s record under `prefix` (sharded layout).
fn record_key(prefix: &str, id: &StoreId) -> String {
    format!("{prefix}s:{{{}}}{}", &id.as_str()[..4], &id.as_str()[4..])
}

/// A reshard onto a primary that joined empty: once its slot is IMPORTING
/// there, `MIGRATE` puts keys on a node that serves no slot yet. Walks
/// that name no key (SCAN on each node) must visit it: the count finds
/// every live session exactly once, the index on the new node included,
/// and the sweep trims the dead entry of the index that moved there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_moved_to_a_new_primary_before_it_serves_their_slot_are_counted_once_and_swept() {
    let mut cluster = RedisCluster::start(3, 0);
    let added = cluster.add_primary();
    let cluster = Arc::new(cluster);
    let target = Target::Cluster(cluster.addrs());
    let prefix = random_prefix();
    let sessions = sessions_over(store_on(&target, &prefix), None);
    let store = store_on(&target, &prefix);
    let (client, now) = (ClientInfo::default(), oidc_bff::clock::unix_now());
    let user = "importing-user";
    let mut live = Vec::new();
    for n in 0..3 {
        let (id, _) = sessions
            .create(login(user, n), &client, now)
            .await
            .expect("create");
        live.push(id);
    }
    let (dead, _) = sessions
        .create(login(user, 3), &client, now)
        .await
        .expect("create");
    let moving = SlotMove::of_the_session(&cluster, &prefix).to(added);
    // The record gone as if it had expired; its index entry stays.
    assert_eq!(
        moving
            .source()
            .cli(&["DEL", &record_key(&prefix, &dead)])
            .trim(),
        "1"
    );

    // The index and one record on the new primary, two records left on
    // the source: the slot mid-migration, served by neither alone.
    moving.begin();
    let index = moving
        .keys_left()
        .into_iter()
        .find(|k| k.contains(":u:"))
        .expect("the user's index");
    moving.migrate(&[index, record_key(&prefix, &live[0])]);
    assert_eq!(moving.on_target(&format!("{prefix}*")).len(), 2);

    let counted = store.count_sessions(now).await.expect("count");
    assert_eq!(counted, 3, "every live session, each once");

    let finished = moving.finish_after(MIGRATION);
    let removed = store.sweep(now).await.expect("sweep");
    finished.await.expect("migration finished");
    assert_eq!(removed, 1, "the dead entry of the index on the new primary");
    let d = dump(&target, &prefix).await;
    let listed: Vec<&BTreeSet<String>> = d.users.values().collect();
    let expected: BTreeSet<String> = live.iter().map(|id| id.as_str().to_owned()).collect();
    assert_eq!(listed, [&expected], "{:?}", d.users);
    let stats = store.stats(1, now).await.expect("stats");
    assert_eq!((stats.sessions, stats.users), (3, 1));
}

/// A primary that serves no slot and does not answer (a spare that went
/// down before any slot moved to it, not yet marked failed) holds at most
/// keys of a slot being imported: the count and the sweep pass over it
/// (with a warning) and answer for the rest, rather than failing for the
/// whole fleet until the cluster forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_without_slots_that_does_not_answer_is_passed_over_by_the_count_and_sweep() {
    let mut cluster = RedisCluster::start(3, 0);
    let added = cluster.add_primary();
    let target = Target::Cluster(cluster.addrs());
    let prefix = random_prefix();
    let sessions = sessions_over(store_on(&target, &prefix), None);
    let store = store_on(&target, &prefix);
    let (client, now) = (ClientInfo::default(), oidc_bff::clock::unix_now());
    for n in 0..2 {
        sessions
            .create(login("spare-user", n), &client, now)
            .await
            .expect("create");
    }
    let port = cluster.nodes[added].port.to_string();
    cluster.nodes[added].stop();

    assert_eq!(store.count_sessions(now).await.expect("count"), 2);
    assert_eq!(store.sweep(now).await.expect("sweep"), 0);
    let stats = store.stats(1, now).await.expect("stats");
    assert_eq!((stats.sessions, stats.users), (2, 1));
    // Still listed, not yet failed (cluster-node-timeout 2 s): the walks
    // above were sent to it.
    let listed = cluster.nodes[0].cli(&["CLUSTER", "NODES"]);
    let line = listed
        .lines()
        .find(|l| l.contains(&format!(":{port}@")))
        .expect("the stopped node listed");
    assert!(!line.contains("fail "), "{line}");
}

/// With `session.max_per_user` reached, a login mid-migration waits for
/// the user's slot to move (the create script is refused until then) and
/// then evicts the oldest session on the new owner: exactly the limit is
/// left live, the evicted one is refused at its next request, and the
/// index lists exactly the records there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_past_the_session_limit_while_the_users_slot_is_mid_migration_evicts_the_oldest() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let upstream = Upstream::start().await;
    let gw = GatewayBuilder::new(&upstream)
        .cluster(&cluster.addrs())
        .configure(|c| {
            c.store.cache_entries = 0;
            c.session.max_per_user = 2;
        })
        .start()
        .await;
    let user = unique_user("reshard-limit");
    let (mut first, mut second, mut third) =
        (Browser::new(&gw), Browser::new(&gw), Browser::new(&gw));
    first.login_as(&user).await;
    second.login_as(&user).await;

    let moving = SlotMove::of_the_session(&cluster, &gw.prefix);
    moving.begin_and_move_half();
    let finished = moving.finish_after(MIGRATION);
    // Asserts the callback's redirect: a 503 fails here.
    third.login_as(&user).await;
    finished.await.expect("migration finished");

    let evicted = first.get("/api/x").await;
    assert_eq!(evicted.status, StatusCode::UNAUTHORIZED, "{evicted:?}");
    assert_eq!(evicted.json()["reason"], "session_limit", "{evicted:?}");
    for browser in [&mut second, &mut third] {
        assert_eq!(browser.get("/api/x").await.status, StatusCode::OK);
    }
    let d = dump(&Target::Cluster(cluster.addrs()), &gw.prefix).await;
    let records: BTreeSet<String> = d.records.keys().cloned().collect();
    let listed: Vec<&BTreeSet<String>> = d.users.values().collect();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(listed, [&records], "the index agrees with the records");
    assert_eq!(moving.on_target(&format!("{}s:*", gw.prefix)).len(), 2);
    assert_eq!(moving.on_target(&format!("{}t:*", gw.prefix)).len(), 1);
}

/// A gateway on `cluster` whose every request reads the store and that
/// the provider fixture sends back-channel logouts to; with the client ID.
async fn backchannel_on(
    cluster: &RedisCluster,
    upstream: &Upstream,
    store_timeout: Duration,
) -> (crate::harness::Gateway, String) {
    crate::session_lifecycle::backchannel_gateway_from(
        GatewayBuilder::new(upstream)
            .cluster(&cluster.addrs())
            .store_timeout(store_timeout)
            .configure(|c| c.store.cache_entries = 0),
    )
    .await
}

/// A back-channel logout by `sid` mid-migration: ending the session is a
/// script over its record, index entry and tombstone, refused until the
/// slot has moved; the gateway waits for that and answers 200 only with
/// the session ended on the new owner. The user's other session lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backchannel_logout_by_sid_while_the_users_slot_is_mid_migration_ends_that_session() {
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let upstream = Upstream::start().await;
    let (gw, client_id) = backchannel_on(&cluster, &upstream, Duration::from_secs(5)).await;
    let user = unique_user("reshard-bcl");
    let (mut ended, mut other) = (Browser::new(&gw), Browser::new(&gw));
    ended.login_as(&user).await;
    other.login_as(&user).await;
    let sid = ended.provider_sid().await;
    let token =
        crate::session_lifecycle::logout_token(&client_id, serde_json::json!({ "sid": sid })).await;

    let moving = SlotMove::of_the_session(&cluster, &gw.prefix);
    moving.begin_and_move_half();
    let finished = moving.finish_after(MIGRATION);
    let (status, body) = crate::session_lifecycle::post_logout_token(&gw, &token).await;
    finished.await.expect("migration finished");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], 1, "{body}");

    let refused = ended.get("/api/x").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{refused:?}");
    assert_eq!(refused.json()["reason"], "ended_at_provider", "{refused:?}");
    assert_eq!(other.get("/api/x").await.status, StatusCode::OK);
    assert_eq!(moving.on_target(&format!("{}t:*", gw.prefix)).len(), 1);
}

/// A back-channel logout by `sub` while the user's slot stays
/// mid-migration past the store's timeout: the provider is answered an
/// error (never a 200 with the sessions alive), and its retry of the same
/// logout token once the slot has moved ends every session of the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backchannel_logout_refused_mid_migration_ends_the_sessions_when_the_provider_retries_it()
{
    let cluster = Arc::new(RedisCluster::start(3, 0));
    let upstream = Upstream::start().await;
    let (gw, client_id) = backchannel_on(&cluster, &upstream, Duration::from_secs(2)).await;
    let user = unique_user("reshard-bcl-sub");
    let (mut first, mut second) = (Browser::new(&gw), Browser::new(&gw));
    first.login_as(&user).await;
    second.login_as(&user).await;
    let token =
        crate::session_lifecycle::logout_token(&client_id, serde_json::json!({ "sub": user }))
            .await;

    let moving = SlotMove::of_the_session(&cluster, &gw.prefix);
    moving.begin_and_move_half();
    let (status, body) = crate::session_lifecycle::post_logout_token(&gw, &token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    for browser in [&mut first, &mut second] {
        assert_eq!(browser.get("/api/x").await.status, StatusCode::OK);
    }

    moving.finish();
    let (status, body) = crate::session_lifecycle::post_logout_token(&gw, &token).await;
    assert_eq!(status, StatusCode::OK, "the provider's retry: {body}");
    assert_eq!(body["revoked"], 2, "{body}");
    for browser in [&mut first, &mut second] {
        let refused = browser.get("/api/x").await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{refused:?}");
    }
    // A replay of the token that was carried out is still refused.
    let (status, body) = crate::session_lifecycle::post_logout_token(&gw, &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
