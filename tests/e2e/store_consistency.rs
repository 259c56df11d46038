//! Concurrent creates, evictions and revocations for one user against real
//! Redis, then an exact comparison: the per-user index, the provider-session
//! index and the session records must agree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use oidc_bff::config::{RedisConfig, RedisEndpoint, ServerKeyConfig, SessionConfig};
use oidc_bff::secret::{SecretKey, SecretString};
use oidc_bff::session::store::redis::RedisStore;
use oidc_bff::session::store::{RevokeReason, Store};
use oidc_bff::session::{ClientInfo, NewLogin, Sessions, sid_hash, user_hash};

use crate::harness::{RedisCluster, random_prefix, shared};

/// Where the store under test is: the shared standalone Redis, or a
/// cluster (whose every primary is read when comparing).
#[derive(Clone)]
pub enum Target {
    Standalone,
    /// A server of its own (measurements).
    Url(String),
    Cluster(Vec<String>),
}

impl Target {
    fn endpoint(&self) -> RedisEndpoint {
        match self {
            Self::Standalone => RedisEndpoint::Url(shared().redis.url().parse().expect("url")),
            Self::Url(url) => RedisEndpoint::Url(url.parse().expect("url")),
            Self::Cluster(nodes) => RedisEndpoint::Cluster {
                nodes: nodes
                    .iter()
                    .map(|a| {
                        let (h, p) = a.rsplit_once(':').expect("host:port");
                        (h.to_owned(), p.parse().expect("port"))
                    })
                    .collect(),
                tls: false,
            },
        }
    }

    /// One plain connection per server that may hold keys.
    async fn servers(&self) -> Vec<redis::aio::MultiplexedConnection> {
        let urls = match self {
            Self::Standalone => vec![shared().redis.url()],
            Self::Url(url) => vec![url.clone()],
            Self::Cluster(nodes) => nodes.iter().map(|a| format!("redis://{a}")).collect(),
        };
        let mut out = Vec::new();
        for url in urls {
            let client = redis::Client::open(url).expect("client");
            out.push(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("conn"),
            );
        }
        out
    }
}

pub fn store_on(target: &Target, prefix: &str) -> RedisStore {
    store_as(target, prefix, None)
}

/// A store that logs in as `user` (name, password).
fn store_as(target: &Target, prefix: &str, user: Option<(&str, &str)>) -> RedisStore {
    let redis = RedisConfig {
        endpoint: target.endpoint(),
        username: user.map(|(u, _)| u.to_owned()),
        password: user.map(|(_, p)| SecretString::new(p.to_owned())),
        db: 0,
        connect_timeout: Duration::from_secs(2),
        tls_ca_pem: None,
        tls_client: None,
    };
    RedisStore::new(&redis, prefix, Duration::from_secs(5)).expect("store")
}

pub fn sessions_over(store: RedisStore, max_per_user: Option<u32>) -> Sessions {
    Sessions::new(
        &SessionConfig {
            idle_timeout: Duration::from_secs(600),
            absolute_timeout: Duration::from_secs(3600),
            max_per_user,
            ..SessionConfig::with_keys(vec![ServerKeyConfig {
                id: "k".into(),
                key: SecretKey::from_bytes([5; 32]),
            }])
        },
        Arc::new(Store::Redis(store)),
    )
}

pub fn sessions_on(target: &Target, prefix: &str, max_per_user: Option<u32>) -> Sessions {
    sessions_over(store_on(target, prefix), max_per_user)
}

pub fn login(user: &str, n: usize) -> NewLogin {
    NewLogin {
        sub: user.into(),
        // Two provider sessions shared by many of ours.
        sid: Some(format!("sid-{}", n % 2)),
        access_token: SecretString::new(format!("at-{n}")),
        refresh_token: None,
        id_token: None,
        access_expires_at: 0,
        claims_json: "{}".into(),
        scopes: None,
        dpop_key: None,
    }
}

/// Everything under `prefix` on every primary: session records (ID → user
/// hash, sid hash), user index members (user hash → IDs), provider-session
/// index members (sid hash → IDs). Keys are read on the server that holds
/// them, with plain (non-cluster) connections; replicas hold no key of
/// their own and answer KEYS with their primary's, so only primaries count.
pub struct Dump {
    pub records: BTreeMap<String, (String, Option<String>)>,
    pub users: BTreeMap<String, BTreeSet<String>>,
    pub sids: BTreeMap<String, BTreeSet<String>>,
}

pub async fn dump(target: &Target, prefix: &str) -> Dump {
    let mut d = Dump {
        records: BTreeMap::new(),
        users: BTreeMap::new(),
        sids: BTreeMap::new(),
    };
    for mut c in target.servers().await {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.expect("role");
        if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut c)
            .await
            .expect("keys");
        for k in keys {
            let rest = &k[prefix.len()..];
            // `s:{tag}hash` → ID `taghash`; `u:{tag}user` → user.
            let untag = |s: &str| s.replace(['{', '}'], "");
            let untag_user = |s: &str| s.split_once('}').map_or(s, |(_, u)| u).to_owned();
            if let Some(id) = rest.strip_prefix("s:") {
                let (u, x): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
                    .arg(&k)
                    .arg("u")
                    .arg("x")
                    .query_async(&mut c)
                    .await
                    .expect("hmget");
                let u = u.expect("record without its user");
                d.records
                    .insert(untag(id), (field_hash(&u), x.as_deref().map(field_hash)));
            } else if let Some(user) = rest.strip_prefix("u:") {
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
                    .expect("zrange");
                d.users.entry(untag_user(user)).or_default().extend(members);
            } else if let Some(sid) = rest.strip_prefix("x:") {
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
                    .expect("zrange");
                d.sids.entry(sid.to_owned()).or_default().extend(members);
            }
        }
    }
    d
}

/// A record's `u` or `x` field in hex: 32 bytes as written now, or the
/// hex text versions before wrote.
fn field_hash(field: &[u8]) -> String {
    if field.len() == 32 {
        field.iter().map(|b| format!("{b:02x}")).collect()
    } else {
        String::from_utf8(field.to_vec()).expect("hex text")
    }
}

/// The user index, the provider-session indexes and the records agree
/// exactly; returns how many sessions the user has.
async fn check_agreement(target: &Target, prefix: &str, user: &str) -> usize {
    let uh = user_hash(user);
    let d = dump(target, prefix).await;
    let records: BTreeSet<String> = d.records.keys().cloned().collect();
    for (id, (owner, _)) in &d.records {
        assert_eq!(owner, &uh, "record {id} without its user");
    }
    assert_eq!(
        d.users.get(&uh).cloned().unwrap_or_default(),
        records,
        "user index and records disagree"
    );
    for i in 0..2 {
        let sh = sid_hash(&format!("sid-{i}"));
        let expected: BTreeSet<String> = d
            .records
            .iter()
            .filter(|(_, (_, x))| x.as_deref() == Some(sh.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(
            d.sids.get(&sh).cloned().unwrap_or_default(),
            expected,
            "provider-session index sid-{i} disagrees"
        );
    }
    records.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_creates_and_revokes_leave_indexes_and_records_in_agreement() {
    parallel_creates_and_revokes_agree_on(&Target::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_creates_and_revokes_leave_indexes_and_records_in_agreement_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    parallel_creates_and_revokes_agree_on(&Target::Cluster(cluster.addrs())).await;
}

async fn parallel_creates_and_revokes_agree_on(target: &Target) {
    let prefix = random_prefix();
    let s = Arc::new(sessions_on(target, &prefix, None));
    let user = "concurrent-user";
    let now = oidc_bff::clock::unix_now();

    // Round 1: 60 creates racing 30 single revokes and 3 revoke-alls.
    let created: Vec<_> = join_all((0..20).map(|n| {
        let s = s.clone();
        async move {
            s.create(login(user, n), &ClientInfo::default(), now)
                .await
                .expect("create")
                .0
        }
    }))
    .await;
    let mut tasks = Vec::new();
    for n in 20..80 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create(login(user, n), &ClientInfo::default(), now)
                .await
                .expect("create");
        }));
    }
    for id in &created[..15] {
        let (s, id) = (s.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            s.revoke(&id, RevokeReason::Admin, "test", now)
                .await
                .expect("revoke");
            s.revoke(&id, RevokeReason::Admin, "test", now)
                .await
                .expect("revoke twice");
        }));
    }
    for i in 0..3 {
        let s = s.clone();
        let keep = created[19 - i].clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
            s.revoke_user(user, Some(&keep), RevokeReason::Admin, "test", now)
                .await
                .expect("revoke all");
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    check_agreement(target, &prefix, user).await;
    // Then revoke everything but one live session: exactly one is left.
    let live = s.list_user(user, None, 100, now).await.expect("list");
    if let Some(keep) = live.sessions.first() {
        let keep = oidc_bff::session::cookie::StoreId::parse(&keep.id).expect("id");
        s.revoke_user(user, Some(&keep), RevokeReason::Admin, "test", now)
            .await
            .expect("revoke all");
        assert_eq!(check_agreement(target, &prefix, user).await, 1);
    }

    // Round 2: a per-user limit under concurrent logins.
    let prefix = random_prefix();
    let s = Arc::new(sessions_on(target, &prefix, Some(3)));
    join_all((0..40).map(|n| {
        let s = s.clone();
        async move {
            s.create(login(user, n), &ClientInfo::default(), now)
                .await
                .expect("create")
        }
    }))
    .await;
    assert_eq!(
        check_agreement(target, &prefix, user).await,
        3,
        "the limit holds under concurrency"
    );
    assert_eq!(
        s.list_user(user, None, 100, now)
            .await
            .expect("list")
            .sessions
            .len(),
        3
    );
}

/// A connection to the shared Redis and the session record keys under
/// `prefix`.
async fn session_records(prefix: &str) -> (redis::aio::MultiplexedConnection, Vec<String>) {
    let mut conn = redis::Client::open(shared().redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}s:*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    (conn, keys)
}

/// Records written by the version before index hashes were stored as bytes
/// hold `u` and `x` as 64 hex digits: they are still found, evicted and
/// revoked (by ID, by provider session, by user), and their index entries
/// go with them, next to records of the current form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_hex_index_hashes_from_the_previous_version_are_still_revoked() {
    let target = Target::Standalone;
    let prefix = random_prefix();
    let s = sessions_on(&target, &prefix, None);
    let user = "hex-era-user";
    let now = oidc_bff::clock::unix_now();
    let mut ids = Vec::new();
    for n in 0..6 {
        let (id, _) = s
            .create(login(user, n), &ClientInfo::default(), now + n as u64)
            .await
            .expect("create");
        ids.push(id);
    }
    let (mut conn, keys) = session_records(&prefix).await;
    assert_eq!(keys.len(), 6);
    for k in &keys {
        let (u, x): (Vec<u8>, Vec<u8>) = redis::cmd("HMGET")
            .arg(k)
            .arg("u")
            .arg("x")
            .query_async(&mut conn)
            .await
            .expect("hmget");
        assert_eq!((u.len(), x.len()), (32, 32), "written as bytes");
        // As the previous version wrote them.
        let _: () = redis::cmd("HSET")
            .arg(k)
            .arg("u")
            .arg(field_hash(&u))
            .arg("x")
            .arg(field_hash(&x))
            .query_async(&mut conn)
            .await
            .expect("hset");
    }
    assert_eq!(check_agreement(&target, &prefix, user).await, 6);
    // Eviction by the per-user limit at the next login.
    let limited = sessions_on(&target, &prefix, Some(5));
    let (newest, _) = limited
        .create(login(user, 6), &ClientInfo::default(), now + 10)
        .await
        .expect("create");
    assert_eq!(check_agreement(&target, &prefix, user).await, 5);
    // By ID.
    s.revoke(&ids[3], RevokeReason::Admin, "test", now)
        .await
        .expect("revoke");
    assert_eq!(check_agreement(&target, &prefix, user).await, 4);
    // By provider session: sid-1 holds n = 1, 3, 5 less the revoked n = 3
    // and whichever the limit evicted (creation times may tie).
    let sh = sid_hash("sid-1");
    let expected: BTreeSet<String> = dump(&target, &prefix)
        .await
        .records
        .into_iter()
        .filter(|(_, (_, x))| x.as_deref() == Some(sh.as_str()))
        .map(|(id, _)| id)
        .collect();
    assert!(!expected.is_empty());
    let left = 4 - expected.len();
    let ended: BTreeSet<String> = s
        .revoke_provider_session("sid-1", "test", now)
        .await
        .expect("back-channel")
        .iter()
        .map(|id| id.as_str().replace(['{', '}'], ""))
        .collect();
    assert_eq!(ended, expected);
    assert_eq!(check_agreement(&target, &prefix, user).await, left);
    // By user, keeping the session of the current form.
    s.revoke_user(user, Some(&newest), RevokeReason::Admin, "test", now)
        .await
        .expect("revoke all");
    assert_eq!(check_agreement(&target, &prefix, user).await, 1);
    let d = dump(&target, &prefix).await;
    assert!(d.sids.values().all(|m| m.len() <= 1), "{:?}", d.sids);
}

/// `store.record_layout = "previous"`: the index hashes of a new record
/// are written as the version before wrote them (64 hex digits), so its
/// revoke — `HGET u` read as text, that user's index named from it —
/// finds the session; this version reads and revokes them as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_record_layout_writes_index_hashes_the_version_before_reads() {
    use oidc_bff::config::RecordLayout;
    let target = Target::Standalone;
    let prefix = random_prefix();
    let store = store_on(&target, &prefix).with_record_layout(RecordLayout::Previous);
    let s = sessions_over(store, None).with_record_layout(RecordLayout::Previous);
    let user = "rolling-upgrade-user";
    let now = oidc_bff::clock::unix_now();
    let mut ids = Vec::new();
    for n in 0..2 {
        let (id, _) = s
            .create(login(user, n), &ClientInfo::default(), now)
            .await
            .expect("create");
        ids.push(id);
    }
    let (mut conn, keys) = session_records(&prefix).await;
    assert_eq!(keys.len(), 2);
    for k in &keys {
        // What the version before reads: UTF-8 text, its own hashes.
        let (u, x): (String, String) = redis::cmd("HMGET")
            .arg(k)
            .arg("u")
            .arg("x")
            .query_async(&mut conn)
            .await
            .expect("hmget as text");
        assert_eq!(u, user_hash(user), "u as 64 hex digits");
        assert!(x == sid_hash("sid-0") || x == sid_hash("sid-1"), "x as hex");
        // The version before named the user index from `u` as read.
        let index = k.replacen(&format!("{prefix}s:"), &format!("{prefix}u:"), 1);
        let index = match index.split_once('}') {
            Some((tag, _)) => format!("{tag}}}{u}"),
            None => index,
        };
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .expect("zrange");
        assert_eq!(members.len(), 2, "{index} lists both sessions");
    }
    assert_eq!(check_agreement(&target, &prefix, user).await, 2);
    // This version revokes them by ID and by provider session.
    s.revoke(&ids[0], RevokeReason::Admin, "test", now)
        .await
        .expect("revoke");
    assert_eq!(check_agreement(&target, &prefix, user).await, 1);
    let ended = s
        .revoke_provider_session("sid-1", "test", now)
        .await
        .expect("back-channel");
    assert_eq!(ended.len(), 1);
    assert_eq!(check_agreement(&target, &prefix, user).await, 0);
}

/// The provider-session entry is written before the record: in the same
/// script where every key is on one server, by a call of its own on a
/// cluster. When it cannot be written (here the store's Redis user may
/// write every key of the prefix but the provider-session indexes, so
/// `ZADD` fails with `NOPERM`) the create fails and leaves neither a
/// record nor a user-index entry: no session exists that a back-channel
/// logout for that provider session could not find. (A key of another
/// type there no longer fails it: the create replaces it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_provider_session_entry_cannot_be_written_leaves_no_session() {
    a_failed_sid_entry_leaves_no_session_on(&Target::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_provider_session_entry_cannot_be_written_leaves_no_session_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    a_failed_sid_entry_leaves_no_session_on(&Target::Cluster(cluster.addrs())).await;
}

async fn a_failed_sid_entry_leaves_no_session_on(target: &Target) {
    let prefix = random_prefix();
    let s = sessions_on(target, &prefix, None);
    let user = "provider-session-index-broken";
    let now = oidc_bff::clock::unix_now();
    // A Redis user of every server (ACLs are per server) that may write
    // every key of the prefix except those of the provider-session
    // indexes (`x:`), which it may only read.
    let acl_user = format!("no-x-{}", &prefix[..prefix.len() - 1]);
    let mut servers = target.servers().await;
    for c in &mut servers {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&acl_user)
            .arg("reset")
            .arg("on")
            .arg(">pw")
            .arg("+@all")
            .arg("&*")
            .arg(format!("~{prefix}[^x]*"))
            .arg(format!("%R~{prefix}x:*"))
            .query_async(c)
            .await
            .expect("ACL SETUSER");
    }
    let limited = sessions_over(store_as(target, &prefix, Some((&acl_user, "pw"))), None);
    let refused = limited
        .create(login(user, 0), &ClientInfo::default(), now)
        .await;
    assert!(
        refused.is_err(),
        "a create whose provider-session entry failed must fail"
    );
    for c in &mut servers {
        let _: redis::RedisResult<i64> = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&acl_user)
            .query_async(c)
            .await;
    }
    let d = dump(target, &prefix).await;
    assert!(
        d.records.is_empty(),
        "a record was written without its provider-session entry: {:?}",
        d.records.keys()
    );
    assert!(
        d.users.is_empty(),
        "a user-index entry was written: {:?}",
        d.users
    );

    // With the key fixed, the same login is stored and indexed everywhere.
    s.create(login(user, 0), &ClientInfo::default(), now)
        .await
        .expect("create");
    assert_eq!(check_agreement(target, &prefix, user).await, 1);
}
