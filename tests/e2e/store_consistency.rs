//! Concurrent creates, evictions and revocations for one user against real
//! Redis, then an exact comparison: the per-user index, the provider-session
//! index and the session records must agree.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use oidc_bff::config::{RedisConfig, RedisEndpoint, ServerKeyConfig, SessionConfig};
use oidc_bff::secret::{SecretKey, SecretString};
use oidc_bff::session::store::redis::RedisStore;
use oidc_bff::session::store::{RevokeReason, Store};
use oidc_bff::session::{ClientInfo, NewLogin, Sessions, sid_hash, user_hash};

use crate::harness::{random_prefix, shared};

fn sessions(prefix: &str, max_per_user: Option<u32>) -> Sessions {
    let redis = RedisConfig {
        endpoint: RedisEndpoint::Url(shared().redis.url().parse().expect("url")),
        username: None,
        password: None,
        db: 0,
        connect_timeout: Duration::from_secs(2),
        tls_ca_pem: None,
        tls_client: None,
    };
    let store = RedisStore::new(&redis, prefix, Duration::from_secs(5)).expect("store");
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

fn login(user: &str, n: usize) -> NewLogin {
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
    }
}

async fn check_agreement(prefix: &str, user: &str) -> usize {
    let client = redis::Client::open(shared().redis.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let uh = user_hash(user);
    let index: BTreeSet<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}u:{uh}"))
        .arg(0)
        .arg(-1)
        .query_async::<Vec<String>>(&mut c)
        .await
        .expect("zrange")
        .into_iter()
        .collect();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}s:*"))
        .query_async(&mut c)
        .await
        .expect("keys");
    let mut records = BTreeSet::new();
    let mut by_sid: [BTreeSet<String>; 2] = Default::default();
    for k in keys {
        let owner: Option<String> = redis::cmd("HGET")
            .arg(&k)
            .arg("u")
            .query_async(&mut c)
            .await
            .expect("hget");
        assert_eq!(
            owner.as_deref(),
            Some(uh.as_str()),
            "record {k} without its user"
        );
        let id = k.trim_start_matches(&format!("{prefix}s:")).to_owned();
        let sid: Option<String> = redis::cmd("HGET")
            .arg(&k)
            .arg("x")
            .query_async(&mut c)
            .await
            .expect("hget");
        for (i, set) in by_sid.iter_mut().enumerate() {
            if sid.as_deref() == Some(sid_hash(&format!("sid-{i}")).as_str()) {
                set.insert(id.clone());
            }
        }
        records.insert(id);
    }
    assert_eq!(index, records, "user index and records disagree");
    for (i, expected) in by_sid.iter().enumerate() {
        let members: BTreeSet<String> = redis::cmd("SMEMBERS")
            .arg(format!("{prefix}sid:{}", sid_hash(&format!("sid-{i}"))))
            .query_async::<Vec<String>>(&mut c)
            .await
            .expect("smembers")
            .into_iter()
            .collect();
        assert_eq!(
            &members, expected,
            "provider-session index sid-{i} disagrees"
        );
    }
    records.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_creates_and_revokes_leave_indexes_and_records_in_agreement() {
    let prefix = random_prefix();
    let s = Arc::new(sessions(&prefix, None));
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
    check_agreement(&prefix, user).await;
    // Then revoke everything but one live session: exactly one is left.
    let live = s.list_user(user, None, 100, now).await.expect("list");
    if let Some(keep) = live.sessions.first() {
        let keep = oidc_bff::session::cookie::StoreId::parse(&keep.id).expect("id");
        s.revoke_user(user, Some(&keep), RevokeReason::Admin, "test", now)
            .await
            .expect("revoke all");
        assert_eq!(check_agreement(&prefix, user).await, 1);
    }

    // Round 2: a per-user limit under concurrent logins.
    let prefix = random_prefix();
    let s = Arc::new(sessions(&prefix, Some(3)));
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
        check_agreement(&prefix, user).await,
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
