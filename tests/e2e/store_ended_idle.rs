//! Sessions over real Redis that have ended at their effective idle
//! deadline while their record is still kept (a record's key outlives its
//! own idle deadline by one idle period, for the activity key a touch
//! writes instead): the per-user limit, the active-sessions count, the
//! statistics and an operator's revoke judge them ended, on one server
//! and on a Cluster (where the count reads each record and its activity
//! key on the node that SCAN found it on).
//!
//! Idle timeout 600 s (`store_consistency::sessions_over`). Redis keeps
//! every key far longer than these tests run, so the times passed as `now`
//! (from the wall clock on) decide alone what has ended. That is why the
//! stores here are not told the idle timeout: its shortcut reads a key's
//! time left on Redis' own clock (see `store_conformance::idle_ended`).

use std::time::Duration;

use http::HeaderMap;
use oidc_bff::session::cookie::StoreId;
use oidc_bff::session::store::{RevokeOutcome, RevokeReason};
use oidc_bff::session::{ClientInfo, EndReason, Lookup, Sessions};

use crate::harness::{RedisCluster, random_prefix};
use crate::store_consistency::{Target, login, sessions_on};

/// Logs alice in at `now`: the session's store ID and cookie headers, and
/// the sessions the per-user limit evicted for it.
async fn logs_in(s: &Sessions, n: usize, now: u64) -> (StoreId, HeaderMap, Vec<StoreId>) {
    // The per-user index orders sessions by their creation in wall-clock
    // milliseconds: two logins of one test must not share one.
    std::thread::sleep(Duration::from_millis(2));
    let (id, cookie, evicted) = s
        .create_evicting(login("alice", n), &ClientInfo::default(), now)
        .await
        .expect("create");
    (id, crate::harness::cookie_request(&cookie), evicted)
}

/// The session is live at `now` and its touch writes only the activity key.
async fn used(s: &Sessions, h: &HeaderMap, now: u64) {
    let Ok(Lookup::Active(session)) = s.load(h, now).await else {
        panic!("active at {now}")
    };
    assert!(
        s.touch(&session, &ClientInfo::default(), now)
            .await
            .expect("touch")
    );
    assert_eq!(session.stored.generation, 1, "activity only");
}

async fn end_reason(s: &Sessions, h: &HeaderMap, now: u64) -> Option<EndReason> {
    match s.load(h, now).await.expect("load") {
        Lookup::Ended(why) => Some(why),
        Lookup::Active(_) => None,
        Lookup::Anonymous | Lookup::Ambiguous => panic!("one cookie was sent"),
    }
}

/// Three sessions made at `t` (record idle deadline `t` + 600, key until
/// `t` + 1 200); the second and third used at `t` + 500 (activity until
/// `t` + 1 100), the first not: at `t` + 800 the first has ended, its
/// record still kept.
async fn three_two_used(s: &Sessions, t: u64) -> [(StoreId, HeaderMap); 3] {
    let (a, ha, _) = logs_in(s, 1, t).await;
    let (b, hb, _) = logs_in(s, 2, t).await;
    let (c, hc, _) = logs_in(s, 3, t).await;
    used(s, &hb, t + 500).await;
    used(s, &hc, t + 500).await;
    [(a, ha), (b, hb), (c, hc)]
}

async fn a_login_at_the_limit_keeps_every_live_session(target: &Target) {
    let s = sessions_on(target, &random_prefix(), Some(3));
    let t = oidc_bff::clock::unix_now();
    let [(_, ha), (_, hb), (_, hc)] = three_two_used(&s, t).await;
    let (_, hd, evicted) = logs_in(&s, 4, t + 800).await;
    assert_eq!(evicted, Vec::<StoreId>::new(), "nothing to evict");
    for (name, h) in [("second", &hb), ("third", &hc), ("new", &hd)] {
        assert_eq!(end_reason(&s, h, t + 800).await, None, "{name} live");
    }
    assert_eq!(
        end_reason(&s, &ha, t + 800).await,
        Some(EndReason::Expired),
        "the idle one expired, it was not closed by the limit"
    );
}

async fn the_count_and_statistics_leave_out_a_session_ended_idle(target: &Target) {
    let s = sessions_on(target, &random_prefix(), None);
    let t = oidc_bff::clock::unix_now();
    three_two_used(&s, t).await;
    // Other users' sessions, live (made at `t` + 500), in other slots of a
    // Cluster: one SCAN batch of the count meets several.
    for n in 0..5 {
        s.create(
            login(&format!("user-{n}"), n),
            &ClientInfo::default(),
            t + 500,
        )
        .await
        .expect("create");
    }
    let every = Duration::from_secs(30);
    assert_eq!(s.count(every, t + 800).await.expect("count"), Some(7));
    let stats = s.stats(10, t + 800).await.expect("stats");
    assert_eq!((stats.sessions, stats.users), (7, 6));
    assert_eq!(stats.top_users[0].user, "alice");
    assert_eq!(stats.top_users[0].sessions, 2);
}

#[tokio::test]
async fn a_login_at_the_limit_whose_oldest_session_ended_idle_keeps_every_live_session() {
    a_login_at_the_limit_keeps_every_live_session(&Target::Standalone).await;
}

#[tokio::test]
async fn the_session_count_and_statistics_leave_out_a_session_ended_idle() {
    the_count_and_statistics_leave_out_a_session_ended_idle(&Target::Standalone).await;
}

#[tokio::test]
async fn an_operators_revoke_of_a_session_ended_idle_answers_as_for_an_ended_one() {
    let s = sessions_on(&Target::Standalone, &random_prefix(), None);
    let t = oidc_bff::clock::unix_now();
    let [(a, ha), (b, _), _] = three_two_used(&s, t).await;
    assert_eq!(
        s.revoke(&a, RevokeReason::Admin, "operator", t + 800)
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        end_reason(&s, &ha, t + 800).await,
        Some(EndReason::Expired),
        "not told it was revoked by an operator"
    );
    assert_eq!(
        s.revoke(&b, RevokeReason::Admin, "operator", t + 800)
            .await
            .expect("revoke"),
        RevokeOutcome::Revoked,
        "a session kept live by its activity is revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_limit_the_count_and_the_statistics_leave_out_a_session_ended_idle() {
    let cluster = RedisCluster::start(3, 0);
    let target = Target::Cluster(cluster.addrs());
    a_login_at_the_limit_keeps_every_live_session(&target).await;
    the_count_and_statistics_leave_out_a_session_ended_idle(&target).await;
}
