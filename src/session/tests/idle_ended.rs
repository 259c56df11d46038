//! Sessions that have ended at their effective idle deadline while their
//! record is still kept (it outlives its own idle deadline by one idle
//! period, for activity recorded apart): not counted by the gauge or the
//! statistics, never the reason a login evicts a live session, and told
//! apart from live ones by an operator's revoke. Idle timeout 600 s; the
//! memory store's clock is tokio's, paused and advanced with the times
//! passed as `now`.

use super::*;
use crate::session::store::RevokeOutcome;

fn limited(store: Arc<Store>, max: u32) -> Sessions {
    Sessions::new(
        &SessionConfig {
            idle_timeout: Duration::from_secs(600),
            absolute_timeout: Duration::from_secs(3600),
            max_per_user: Some(max),
            ..SessionConfig::with_keys(vec![ServerKeyConfig {
                id: "k1".into(),
                key: SecretKey::from_bytes([3; 32]),
            }])
        },
        store,
    )
}

/// Logs alice in at `now`: the new session's store ID and cookie headers,
/// and the sessions the per-user limit evicted for it.
async fn logs_in(s: &Sessions, now: u64) -> (StoreId, HeaderMap, Vec<StoreId>) {
    // The per-user index orders sessions by their creation in wall-clock
    // milliseconds: two logins of one test must not share one.
    std::thread::sleep(Duration::from_millis(2));
    let (id, cookie, evicted) = s
        .create_evicting(login("alice"), &ClientInfo::default(), now)
        .await
        .expect("create");
    (id, cookie_header(&cookie), evicted)
}

/// Uses the session at `now`: it is live, and its touch writes only the
/// activity key (the record is left as it was).
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

/// Three sessions made at 1 000 (record idle deadline 1 600, key until
/// 2 200); the second and third used at 1 500 (activity until 2 100), the
/// first not: at 1 800 the first has ended, its record still kept.
async fn three_at_1000_two_used_at_1500(s: &Sessions) -> [(StoreId, HeaderMap); 3] {
    let (a, ha, _) = logs_in(s, 1_000).await;
    let (b, hb, _) = logs_in(s, 1_000).await;
    let (c, hc, _) = logs_in(s, 1_000).await;
    tokio::time::advance(Duration::from_secs(500)).await;
    used(s, &hb, 1_500).await;
    used(s, &hc, 1_500).await;
    tokio::time::advance(Duration::from_secs(300)).await;
    [(a, ha), (b, hb), (c, hc)]
}

#[tokio::test(start_paused = true)]
async fn a_login_at_the_limit_whose_oldest_session_ended_idle_keeps_every_live_session() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = limited(store.clone(), 3);
    let [(_, ha), (_, hb), (_, hc)] = three_at_1000_two_used_at_1500(&s).await;
    let (_, hd, evicted) = logs_in(&s, 1_800).await;
    assert_eq!(evicted, Vec::<StoreId>::new(), "nothing to evict");
    for (name, h) in [("second", &hb), ("third", &hc), ("new", &hd)] {
        assert_eq!(end_reason(&s, h, 1_800).await, None, "{name} live");
    }
    assert_eq!(
        end_reason(&s, &ha, 1_800).await,
        Some(EndReason::Expired),
        "the idle one expired, it was not closed by the limit"
    );
}

#[tokio::test(start_paused = true)]
async fn the_session_count_and_statistics_leave_out_a_session_ended_idle() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    three_at_1000_two_used_at_1500(&s).await;
    let every = Duration::from_secs(30);
    assert_eq!(s.count(every, 1_800).await.expect("count"), Some(2));
    let stats = s.stats(10, 1_800).await.expect("stats");
    assert_eq!((stats.sessions, stats.users), (2, 1));
    assert_eq!(stats.top_users[0].user, "alice");
    assert_eq!(stats.top_users[0].sessions, 2);
}

#[tokio::test(start_paused = true)]
async fn an_operators_revoke_of_a_session_ended_idle_answers_as_for_an_ended_one() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let s = sessions(store.clone());
    let [(a, ha), (b, _), _] = three_at_1000_two_used_at_1500(&s).await;
    assert_eq!(
        s.revoke(&a, RevokeReason::Admin, "operator", 1_800)
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        end_reason(&s, &ha, 1_800).await,
        Some(EndReason::Expired),
        "not told it was revoked by an operator"
    );
    assert_eq!(
        s.revoke(&b, RevokeReason::Admin, "operator", 1_800)
            .await
            .expect("revoke"),
        RevokeOutcome::Revoked,
        "a session kept live by its activity is revoked"
    );
}
