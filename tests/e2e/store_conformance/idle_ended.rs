//! Sessions that have ended at their effective idle deadline while their
//! record is still kept: a record's key outlives its own idle deadline by
//! one idle period, for activity recorded apart (the activity key, which
//! expires at the deadline it sets). The stores judge such a session as a
//! read does — ended unless its activity key is there — so it is not
//! counted, is removed rather than counted against the per-user limit, and
//! a revocation answers for it as for a session that expired.
//!
//! The records here have their own idle deadline before the time each
//! call judges at (`NOW`, or the revocation's time); an activity key
//! (recorded with a long TTL) keeps a session live past it.

use super::*;

/// Before every judging time of the suite: `NOW`, `eviction().at`,
/// `logout().at`, `admin().at`.
const PAST: u64 = T0 / 1000 + 30;

/// Records activity for the session (any stamp: the stores never read it),
/// keeping it live until its activity key expires (long after the test).
async fn touched<S: SessionStore>(store: &S, seed: &Seed) {
    assert!(
        store
            .record_activity(&seed.id, 1, ms(SHORT.max(Duration::from_secs(300))))
            .await
            .expect("activity"),
        "the record outlives the activity"
    );
}

/// Alice at her limit of three, logging in again: her middle session has
/// ended (idle), the other two are kept live by activity. The ended one
/// is removed and not counted, so the limit holds with no eviction; before,
/// the index counted four and the oldest — a live session — was evicted.
pub(super) async fn the_per_user_limit_removes_a_session_past_its_idle_deadline_and_evicts_no_live_one<
    S: SessionStore,
>(
    store: &S,
) {
    let oldest = Seed::new(1, "alice").idle(PAST);
    let ended = Seed::new(2, "alice").idle(PAST);
    let newer = Seed::new(3, "alice").idle(PAST);
    for s in [&oldest, &ended, &newer] {
        s.create(store).await;
    }
    touched(store, &oldest).await;
    touched(store, &newer).await;
    assert_eq!(
        Seed::new(4, "alice").max(3).create(store).await,
        Vec::<StoreId>::new(),
        "no live session is evicted"
    );
    assert_eq!(listed_ids(store, "alice").await, vec![id(4), id(3), id(1)]);
    assert_eq!(
        get(store, &ended.id).await,
        Fetched::Missing,
        "ended as by expiry: no tombstone"
    );
    // The limit still evicts a live session when the live ones are over it.
    assert_eq!(
        Seed::new(5, "alice").max(3).create(store).await,
        vec![id(1)]
    );
}

/// One live session, one ended at its idle deadline, one past its own
/// idle deadline but kept live by activity: two count, in the gauge's
/// count and in the statistics (whose sweep removes the ended one).
pub(super) async fn count_and_stats_leave_out_sessions_past_their_effective_idle_deadline<
    S: SessionStore,
>(
    store: &S,
) {
    let live = Seed::new(1, "alice");
    let ended = Seed::new(2, "alice").idle(PAST);
    let kept = Seed::new(3, "alice").idle(PAST);
    let ended_bob = Seed::new(4, "bob").idle(PAST);
    for s in [&live, &ended, &kept, &ended_bob] {
        s.create(store).await;
    }
    touched(store, &kept).await;
    assert_eq!(store.count_sessions(NOW).await.expect("count"), 2);
    let stats = store.stats(10, NOW).await.expect("stats");
    assert_eq!((stats.sessions, stats.users), (2, 1));
    assert_eq!(stats.top_users, vec![(user_hash("alice"), 2)]);
    assert_eq!(get(store, &ended.id).await, Fetched::Missing, "removed");
    assert_eq!(get(store, &ended_bob.id).await, Fetched::Missing, "removed");
    assert_eq!(store.count_sessions(NOW).await.expect("count"), 2);
    assert!(matches!(get(store, &kept.id).await, Fetched::Live(_)));
}

/// An operator revoking a session that has ended at its idle deadline is
/// told it was not found, as for one that expired, and no tombstone turns
/// its end into a revocation; one kept live by activity is revoked.
pub(super) async fn revoking_a_session_past_its_effective_idle_deadline_reports_not_found<
    S: SessionStore,
>(
    store: &S,
) {
    let ended = Seed::new(1, "alice").idle(PAST);
    let kept = Seed::new(2, "alice").idle(PAST);
    ended.create(store).await;
    kept.create(store).await;
    touched(store, &kept).await;
    assert_eq!(
        revoke(store, &ended.id, &admin()).await,
        RevokeOutcome::NotFound
    );
    assert_eq!(get(store, &ended.id).await, Fetched::Missing);
    assert_eq!(
        revoke(store, &ended.id, &admin()).await,
        RevokeOutcome::NotFound,
        "and again"
    );
    assert_eq!(
        revoke(store, &kept.id, &admin()).await,
        RevokeOutcome::Revoked
    );
    assert_eq!(listed_ids(store, "alice").await, Vec::<StoreId>::new());
}

/// Revoking all of a user's sessions reports the live ones only; the
/// ended one is removed without a tombstone.
pub(super) async fn revoke_user_leaves_out_sessions_past_their_effective_idle_deadline<
    S: SessionStore,
>(
    store: &S,
) {
    let ended = Seed::new(1, "alice").idle(PAST);
    let live = Seed::new(2, "alice");
    ended.create(store).await;
    live.create(store).await;
    let mut revoked = store
        .revoke_user(&user_hash("alice"), None, &admin())
        .await
        .expect("revoke user");
    revoked.sort();
    assert_eq!(revoked, vec![live.id.clone()]);
    assert_eq!(get(store, &ended.id).await, Fetched::Missing);
    assert_eq!(
        get(store, &live.id).await,
        Fetched::Revoked(Some(RevokeReason::Admin))
    );
}

/// The stores read a record's idle deadline from its plain header in every
/// layout a record may have: the current format and format 2 (before
/// packing), with and without a provider session, and with a user hash
/// that is not hex (kept as text in the current format too).
pub(super) async fn the_idle_deadline_is_read_from_every_record_layout<S: SessionStore>(store: &S) {
    let mut n = 0;
    let (mut live, mut ended) = (Vec::new(), Vec::new());
    for format_2 in [false, true] {
        for sid in [None, Some("op-1")] {
            for user in [user_hash("alice"), "carol, as text".to_owned()] {
                for idle in [NOW + 1, PAST] {
                    n += 1;
                    let mut seed = Seed::new(n, "alice").idle(idle);
                    seed.user = user.clone();
                    if let Some(sid) = sid {
                        seed = seed.sid(sid);
                    }
                    if format_2 {
                        seed = seed.format_2();
                    }
                    seed.create(store).await;
                    if idle > NOW { &mut live } else { &mut ended }.push(seed.id);
                }
            }
        }
    }
    assert_eq!(
        store.count_sessions(NOW).await.expect("count"),
        live.len() as u64
    );
    assert_eq!(
        store.stats(10, NOW).await.expect("stats").sessions,
        live.len() as u64
    );
    for id in &ended {
        assert_eq!(get(store, id).await, Fetched::Missing, "{id:?} removed");
    }
    for id in &live {
        assert!(matches!(get(store, id).await, Fetched::Live(_)), "{id:?}");
    }
}

/// Redis only: told the idle timeout (`with_idle_timeout`, as the gateway
/// does), the walks over every record — the count and the sweep — take a
/// record key with more than that left for a live session without reading
/// the record (a key lives at most one idle timeout past its idle
/// deadline); a key with less left has its record read. Here both records
/// say their idle deadline has passed: only the second is judged by it.
#[tokio::test]
async fn redis_the_walks_take_a_key_with_more_than_the_idle_timeout_left_for_live() {
    let store = super::redis_store().with_idle_timeout(Duration::from_secs(60));
    let long_left = Seed::new(1, "alice").idle(PAST).ttl(LONG);
    let short_left = Seed::new(2, "alice")
        .idle(PAST)
        .ttl(Duration::from_secs(30));
    long_left.create(&store).await;
    short_left.create(&store).await;
    assert_eq!(store.count_sessions(NOW).await.expect("count"), 1);
    assert_eq!(store.sweep(NOW).await.expect("sweep"), 1);
    assert_eq!(get(&store, &short_left.id).await, Fetched::Missing);
    assert!(matches!(get(&store, &long_left.id).await, Fetched::Live(_)));
    // An exact judgement (revoke, the limit) reads the record.
    assert_eq!(
        revoke(&store, &long_left.id, &admin()).await,
        RevokeOutcome::NotFound
    );
}
