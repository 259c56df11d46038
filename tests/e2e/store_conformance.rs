//! The session-store conformance suite: every behaviour the `SessionStore`
//! contract promises, written once as a function generic over the store and
//! run against both `MemoryStore` and `RedisStore` (real Redis, a fresh key
//! prefix per test), so the in-memory store cannot drift from the one
//! deployments use. It drives the stores directly, never the gateway.
//!
//! Redis runs each behaviour twice: with the suite's plain IDs (the legacy
//! key layout of sessions from before shard tags) and through
//! [`Sharded`](crate::harness::sharded::Sharded), which gives each ID its
//! user's shard tag (the layout every new session has).
//!
//! Records are built with the crate's own encoder (`StoredSession`), so the
//! compare-and-set tests fail for both stores if the record layout ever moves
//! the generation the stores read at a fixed offset.

use std::future::Future;
use std::time::Duration;

use oidc_bff::config::{RedisConfig, RedisEndpoint};
use oidc_bff::session::cookie::StoreId;
use oidc_bff::session::record::{StoredBody, StoredSession};
use oidc_bff::session::store::redis::RedisStore;
use oidc_bff::session::store::{
    Fetched, ListCursor, MAX_PAGE, NewSession, OnceKind, Revocation, RevokeOutcome, RevokeReason,
    SessionPage, SessionStore,
};
use oidc_bff::session::{sid_hash, user_hash};
use tokio::time::Instant;

use crate::harness::{random_prefix, shared};

/// Instantiates each behaviour three times: `memory::<name>`,
/// `redis::<name>` (legacy layout) and `redis_sharded::<name>`.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&oidc_bff::session::store::memory::MemoryStore::new()).await;
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::redis_store()).await;
                }
            )+
        }
        mod redis_sharded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&crate::harness::sharded::Sharded::new(super::redis_store())).await;
                }
            )+
        }
    };
}

conformance!(
    an_unknown_session_is_none,
    a_created_session_returns_its_record_bytes,
    a_session_expires_after_its_ttl,
    replace_if_with_the_current_generation_writes_the_new_record,
    replace_if_with_a_stale_generation_is_refused_and_keeps_the_record,
    replace_if_on_a_gone_session_is_refused_and_creates_nothing,
    replace_if_sets_a_shorter_ttl,
    replace_if_sets_a_longer_ttl,
    replace_if_keeps_the_session_in_its_indexes,
    activity_is_recorded_only_while_the_record_outlives_it,
    activity_only_moves_later_and_survives_a_record_rewrite,
    activity_of_a_gone_session_is_not_recorded,
    listings_carry_each_sessions_activity,
    revoke_ends_the_session,
    revoking_again_reports_the_first_revocation_from_the_tombstone,
    revoking_an_unknown_session_reports_not_found,
    revoking_an_expired_session_reports_not_found,
    revoke_removes_the_session_from_both_indexes,
    revoke_user_ends_every_session_of_that_user_only,
    revoke_user_spares_the_excepted_session,
    revoke_user_of_an_unknown_user_revokes_nothing,
    revoke_sid_ends_every_session_bound_to_that_provider_session,
    the_per_user_limit_evicts_the_oldest_and_returns_its_id,
    the_per_user_limit_goes_by_creation_time_not_arrival,
    evicted_sessions_leave_a_tombstone_with_the_eviction_reason,
    the_per_user_limit_evicts_several_when_the_user_is_far_over_it,
    the_per_user_limit_holds_when_creation_times_tie_and_spares_the_new_session,
    the_per_user_limit_does_not_count_expired_sessions,
    the_per_user_limit_counts_only_that_users_sessions,
    without_a_limit_nothing_is_evicted,
    list_user_returns_live_sessions_newest_first_with_times_and_records,
    list_user_of_an_unknown_user_is_empty,
    list_user_drops_expired_entries_from_the_index,
    list_user_pages_walk_every_live_session_once_newest_first,
    list_user_pages_stay_in_order_when_creation_times_tie,
    a_list_cursor_survives_sessions_ending_and_starting_between_pages,
    list_user_clamps_the_page_size_to_one_through_the_maximum,
    list_user_pages_through_a_thousand_sessions_of_one_user,
    a_revoked_session_written_back_is_not_returned,
    get_names_the_reason_of_each_kind_of_revocation,
    an_expired_session_is_missing_not_revoked,
    revoke_user_ends_more_sessions_than_one_batch,
    revoke_sid_ends_more_sessions_than_one_batch,
    sweep_trims_more_dead_entries_than_one_batch,
    take_once_returns_the_value_to_the_first_caller_only,
    take_once_of_an_unknown_key_is_none,
    claim_markers_and_once_values_do_not_collide,
    once_values_expire_after_their_ttl,
    claim_once_is_true_only_for_the_first_caller,
    concurrent_claims_of_one_key_have_exactly_one_winner,
    a_claim_is_released_after_its_ttl,
    a_held_lock_refuses_a_second_lock,
    only_the_holders_token_unlocks,
    a_lock_expires_after_its_ttl,
    an_expired_lock_retaken_by_another_is_not_released_by_its_first_holder,
    remember_jti_is_true_only_the_first_time,
    a_forgotten_jti_is_remembered_as_new_again,
    a_remembered_jti_is_forgotten_after_its_ttl,
    sweep_removes_index_entries_of_expired_sessions_and_counts_them,
    sweep_of_a_store_without_dead_entries_removes_nothing,
    stats_count_live_sessions_and_users_with_the_top_users_descending,
    stats_of_an_empty_store_are_zero,
    count_sessions_counts_live_sessions_only,
    ping_answers,
    the_per_user_limit_removes_a_session_past_its_idle_deadline_and_evicts_no_live_one,
    count_and_stats_leave_out_sessions_past_their_effective_idle_deadline,
    revoking_a_session_past_its_effective_idle_deadline_reports_not_found,
    revoke_user_leaves_out_sessions_past_their_effective_idle_deadline,
    the_idle_deadline_is_read_from_every_record_layout,
);

/// Sessions whose record outlives their effective idle deadline.
mod idle_ended;
use idle_ended::*;

fn redis_store() -> RedisStore {
    redis_store_at(&random_prefix())
}

pub(crate) fn redis_store_at(prefix: &str) -> RedisStore {
    let config = RedisConfig {
        endpoint: RedisEndpoint::Url(shared().redis.url().parse().expect("redis url")),
        username: None,
        password: None,
        db: 0,
        connect_timeout: Duration::from_secs(5),
        tls_ca_pem: None,
        tls_client: None,
    };
    RedisStore::new(&config, prefix, Duration::from_secs(5)).expect("redis store")
}

/// Two gateway processes on one store (one key prefix): in each period the
/// first to ask walks the keys (the sessions count, the index sweep) and
/// the other does not — it reads the published count, and skips the
/// sweep — so a fleet walks the keyspace once per period, not once per
/// instance.
#[tokio::test]
async fn redis_a_fleet_counts_and_sweeps_once_per_period() {
    let prefix = random_prefix();
    let (a, b) = (redis_store_at(&prefix), redis_store_at(&prefix));
    for n in 1..=3 {
        Seed::new(n, "alice").create(&a).await;
    }
    // A short period here (2 s, the lease 1.8 s of it); 30 s in a gateway.
    let every = Duration::from_secs(2);
    assert_eq!(a.fleet_count(every, NOW).await.expect("count"), Some(3));
    Seed::new(4, "alice").create(&a).await;
    assert_eq!(
        b.fleet_count(every, NOW).await.expect("count"),
        Some(3),
        "within the period the other process reads the published count"
    );
    assert_eq!(
        a.count_sessions(NOW).await.expect("count"),
        4,
        "the exact count"
    );
    // The next period: the next to ask counts again.
    tokio::time::sleep(every).await;
    assert_eq!(b.fleet_count(every, NOW).await.expect("count"), Some(4));

    let every = Duration::from_secs(600);
    assert!(a.fleet_sweep(every, NOW).await.expect("sweep").is_some());
    assert_eq!(
        b.fleet_sweep(every, NOW).await.expect("sweep"),
        None,
        "one sweep per period"
    );
}

// ---------------------------------------------------------------------------
// Fixtures

/// A realistic creation time (ms since the epoch): large enough that a store
/// keeping it as a float score must still give it back exactly.
const T0: u64 = 1_700_000_000_123;
/// The time (unix seconds) the suite judges sessions' deadlines at: a
/// minute after `T0`, well within every record's idle deadline unless a
/// test sets one before it.
const NOW: u64 = T0 / 1000 + 60;
/// Outlives every test.
const LONG: Duration = Duration::from_secs(600);
/// Short enough to wait for, long enough to be seen alive first.
const SHORT: Duration = Duration::from_millis(400);
/// How long anything that should happen may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);
/// Redis keeps time in whole milliseconds on its own clock.
const CLOCK_SLACK: Duration = Duration::from_millis(5);

/// A session ID whose distinguishing digits come first, so `Debug` (which
/// shows 12 characters) tells them apart and IDs sort like `n`.
fn id(n: u64) -> StoreId {
    StoreId::parse(&format!("{n:04x}{:060x}", 0)).expect("valid id")
}

fn eviction() -> Revocation {
    Revocation::new(RevokeReason::Limit, "system", 1_700_000_100)
}

fn logout() -> Revocation {
    Revocation::new(RevokeReason::Logout, "user", 1_700_000_200)
}

fn admin() -> Revocation {
    Revocation::new(RevokeReason::Admin, "operator@example.com", 1_700_000_300)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("fits")
}

/// A record as the gateway writes it, with every byte value in it so a
/// store that is not binary-safe shows.
fn record(generation: u64, user: &str, sid: Option<&str>, idle_expires_at: u64) -> Vec<u8> {
    stored(generation, user, sid, idle_expires_at)
        // The stores never check the tag: a fixed one keeps records comparable.
        .encode(|_| [0x5a; 32])
}

/// The same record as format 2 wrote it, before packing (versions before
/// it): the hashes as text.
fn record_format_2(
    generation: u64,
    user: &str,
    sid: Option<&str>,
    idle_expires_at: u64,
) -> Vec<u8> {
    let r = stored(generation, user, sid, idle_expires_at);
    let mut out = vec![oidc_bff::session::record::FORMAT_TEXT];
    out.extend_from_slice(&r.generation.to_be_bytes());
    let mut out = postcard::to_extend(&r.body, out).expect("encodes");
    out.extend_from_slice(&[0x5a; 32]);
    out
}

fn stored(generation: u64, user: &str, sid: Option<&str>, idle_expires_at: u64) -> StoredSession {
    StoredSession {
        generation,
        body: StoredBody {
            key_id: "k1".into(),
            user_hash: user.to_owned(),
            sid_hash: sid.map(str::to_owned),
            created_at: T0 / 1000,
            last_active_at: T0 / 1000,
            idle_expires_at,
            absolute_expires_at: T0 / 1000 + 86_400,
            access_expires_at: 0,
            has_refresh_token: true,
            meta: (0..=255).collect(),
            secrets: vec![0xff, 0, 0xfe, generation as u8],
        },
    }
}

/// One session to create, with defaults for whatever a test does not care
/// about: created `n` seconds after `T0`, long TTL, no provider session, no
/// per-user limit, generation 1.
#[derive(Clone)]
struct Seed {
    id: StoreId,
    user: String,
    sid: Option<String>,
    created: u64,
    ttl: Duration,
    max: Option<u32>,
    generation: u64,
    /// The record's idle deadline (unix seconds).
    idle: u64,
    /// Written in format 2 (before packing) rather than the current one.
    format_2: bool,
}

impl Seed {
    fn new(n: u64, user: &str) -> Self {
        Self {
            id: id(n),
            user: user_hash(user),
            sid: None,
            created: T0 + n * 1000,
            ttl: LONG,
            max: None,
            generation: 1,
            idle: T0 / 1000 + 3600,
            format_2: false,
        }
    }

    fn sid(mut self, sid: &str) -> Self {
        self.sid = Some(sid_hash(sid));
        self
    }

    fn created(mut self, millis: u64) -> Self {
        self.created = millis;
        self
    }

    fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn max(mut self, max: u32) -> Self {
        self.max = Some(max);
        self
    }

    /// The record's own idle deadline (unix seconds; an hour after `T0`
    /// unless set).
    fn idle(mut self, deadline: u64) -> Self {
        self.idle = deadline;
        self
    }

    fn format_2(mut self) -> Self {
        self.format_2 = true;
        self
    }

    fn generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    fn record(&self) -> Vec<u8> {
        let encode = if self.format_2 {
            record_format_2
        } else {
            record
        };
        encode(self.generation, &self.user, self.sid.as_deref(), self.idle)
    }

    /// Creates the session; returns the IDs the per-user limit evicted.
    async fn create<S: SessionStore>(&self, store: &S) -> Vec<StoreId> {
        let record = self.record();
        store
            .create(&NewSession {
                id: &self.id,
                record: &record,
                ttl_millis: ms(self.ttl),
                user_hash: &self.user,
                sid_hash: self.sid.as_deref(),
                created_millis: self.created,
                max_per_user: self.max,
                eviction: &eviction(),
                index_ttl_millis: ms(self.ttl.max(LONG)) + 60_000,
            })
            .await
            .expect("create")
    }
}

/// Polls `probe` until it holds; fails the test past the deadline.
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if probe().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the session has expired.
async fn gone<S: SessionStore>(store: &S, id: &StoreId) {
    eventually("the session expires", move || async move {
        store.get(id).await.expect("get") == Fetched::Missing
    })
    .await;
}

/// Waits until `ttl` has passed on the store's own clock since this call:
/// a marker session created now with that TTL has expired.
async fn wait_past<S: SessionStore>(store: &S, ttl: Duration) {
    let marker = Seed::new(0xffff, "marker").ttl(ttl);
    marker.create(store).await;
    gone(store, &marker.id).await;
}

/// Asserts that something that expired did not expire before its TTL.
fn assert_not_early(started: Instant, ttl: Duration) {
    let elapsed = started.elapsed();
    assert!(
        elapsed + CLOCK_SLACK >= ttl,
        "expired after {elapsed:?}, before its TTL of {ttl:?}"
    );
}

fn sorted(mut ids: Vec<StoreId>) -> Vec<StoreId> {
    ids.sort();
    ids
}

async fn page<S: SessionStore>(
    store: &S,
    user: &str,
    after: Option<&ListCursor>,
    limit: usize,
) -> SessionPage {
    store
        .list_user(&user_hash(user), after, limit)
        .await
        .expect("list_user")
}

/// Every page of a user's list, `limit` at a time, each page checked to be
/// within it.
async fn all_pages<S: SessionStore>(store: &S, user: &str, limit: usize) -> Vec<SessionPage> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let p = page(store, user, after.as_ref(), limit).await;
        assert!(
            p.sessions.len() <= limit,
            "a page of {} over its limit {limit}",
            p.sessions.len()
        );
        after = p.next.clone();
        pages.push(p);
        assert!(pages.len() <= 10_000, "pagination does not end");
        if after.is_none() {
            return pages;
        }
    }
}

/// A user's whole list, walked in pages of two, as comparable tuples:
/// (ID, creation time, record).
async fn listed<S: SessionStore>(store: &S, user: &str) -> Vec<(StoreId, u64, Vec<u8>)> {
    all_pages(store, user, 2)
        .await
        .into_iter()
        .flat_map(|p| p.sessions)
        .map(|l| (l.id, l.created_millis, l.record))
        .collect()
}

async fn listed_ids<S: SessionStore>(store: &S, user: &str) -> Vec<StoreId> {
    listed(store, user).await.into_iter().map(|l| l.0).collect()
}

fn entry(seed: &Seed) -> (StoreId, u64, Vec<u8>) {
    (seed.id.clone(), seed.created, seed.record())
}

async fn get<S: SessionStore>(store: &S, id: &StoreId) -> Fetched {
    store.get(id).await.expect("get")
}

async fn revoke<S: SessionStore>(store: &S, id: &StoreId, why: &Revocation) -> RevokeOutcome {
    store.revoke(id, why).await.expect("revoke")
}

fn already(previous: Revocation) -> RevokeOutcome {
    RevokeOutcome::AlreadyRevoked {
        previous: Some(previous),
    }
}

// ---------------------------------------------------------------------------
// get / create / expiry

async fn an_unknown_session_is_none<S: SessionStore>(store: &S) {
    assert_eq!(get(store, &id(1)).await, Fetched::Missing);
}

async fn a_created_session_returns_its_record_bytes<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice").sid("op-1");
    assert_eq!(s.create(store).await, Vec::<StoreId>::new());
    assert_eq!(get(store, &s.id).await, Fetched::Live(s.record()));
    assert_eq!(
        get(store, &id(2)).await,
        Fetched::Missing,
        "other IDs stay unknown"
    );
}

async fn a_session_expires_after_its_ttl<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice").ttl(SHORT);
    let started = Instant::now();
    s.create(store).await;
    let first = get(store, &s.id).await;
    assert!(
        first == Fetched::Live(s.record()) || started.elapsed() >= SHORT,
        "alive within its TTL"
    );
    gone(store, &s.id).await;
    assert_not_early(started, SHORT);
}

// ---------------------------------------------------------------------------
// activity recorded apart from the record

async fn read_activity<S: SessionStore>(store: &S, id: &StoreId) -> Option<u64> {
    let read = store.read(id).await.expect("read");
    assert!(matches!(read.fetched, Fetched::Live(_)), "{read:?}");
    read.activity
}

async fn activity_is_recorded_only_while_the_record_outlives_it<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice");
    s.create(store).await;
    assert_eq!(
        read_activity(store, &s.id).await,
        None,
        "none until written"
    );
    // The record lives LONG: an activity for half of it is written.
    assert!(
        store
            .record_activity(&s.id, 1 << 40, ms(LONG) / 2)
            .await
            .expect("activity")
    );
    assert_eq!(read_activity(store, &s.id).await, Some(1 << 40));
    // One that would outlive the record is refused (the caller rewrites
    // the record instead), and what is there stays.
    assert!(
        !store
            .record_activity(&s.id, 2 << 40, ms(LONG) * 2)
            .await
            .expect("activity")
    );
    assert_eq!(read_activity(store, &s.id).await, Some(1 << 40));
    // The record, with `get`, is as it was: activity is not the record.
    assert_eq!(get(store, &s.id).await, Fetched::Live(s.record()));
}

async fn activity_only_moves_later_and_survives_a_record_rewrite<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice").generation(1);
    s.create(store).await;
    for stamp in [5 << 40, 3 << 40, 5 << 40] {
        assert!(
            store
                .record_activity(&s.id, stamp, ms(LONG) / 2)
                .await
                .expect("activity"),
            "an older stamp is no failure: the later one is kept"
        );
    }
    assert_eq!(read_activity(store, &s.id).await, Some(5 << 40));
    let next = s.clone().generation(2).record();
    assert!(
        store
            .replace_if(&s.id, 1, &next, ms(LONG))
            .await
            .expect("replace_if")
    );
    assert_eq!(read_activity(store, &s.id).await, Some(5 << 40));
}

async fn activity_of_a_gone_session_is_not_recorded<S: SessionStore>(store: &S) {
    let unknown = Seed::new(1, "alice");
    let revoked = Seed::new(2, "alice");
    revoked.create(store).await;
    store
        .revoke(&revoked.id, &Revocation::new(RevokeReason::Logout, "t", 1))
        .await
        .expect("revoke");
    for id in [&unknown.id, &revoked.id] {
        assert!(
            !store
                .record_activity(id, 1 << 40, 1_000)
                .await
                .expect("activity")
        );
        let read = store.read(id).await.expect("read");
        assert_eq!(read.activity, None, "{read:?}");
    }
}

async fn listings_carry_each_sessions_activity<S: SessionStore>(store: &S) {
    let (a, b) = (Seed::new(1, "alice"), Seed::new(2, "alice"));
    a.create(store).await;
    b.create(store).await;
    assert!(
        store
            .record_activity(&b.id, 7 << 40, ms(LONG) / 2)
            .await
            .expect("activity")
    );
    let page = store
        .list_user(&user_hash("alice"), None, 10)
        .await
        .expect("list");
    let mut seen: Vec<(StoreId, Option<u64>)> = page
        .sessions
        .into_iter()
        .map(|l| (l.id, l.activity))
        .collect();
    seen.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    let mut want = vec![(a.id.clone(), None), (b.id.clone(), Some(7 << 40))];
    want.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    assert_eq!(seen, want);
}

// ---------------------------------------------------------------------------
// replace_if

async fn replace_if_with_the_current_generation_writes_the_new_record<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice").generation(7);
    s.create(store).await;
    let next = s.clone().generation(8).record();
    assert!(
        store
            .replace_if(&s.id, 7, &next, ms(LONG))
            .await
            .expect("replace_if")
    );
    assert_eq!(get(store, &s.id).await, Fetched::Live(next.clone()));
    // The stored generation is now 8: the next writer must expect 8.
    let third = s.clone().generation(9).record();
    assert!(
        store
            .replace_if(&s.id, 8, &third, ms(LONG))
            .await
            .expect("replace_if")
    );
    assert_eq!(get(store, &s.id).await, Fetched::Live(third));
}

async fn replace_if_with_a_stale_generation_is_refused_and_keeps_the_record<S: SessionStore>(
    store: &S,
) {
    // 0x0102 stored; 0x0201 (the same bytes in the other order) and the new
    // record's own generation are both stale.
    let s = Seed::new(1, "alice").generation(0x0102);
    s.create(store).await;
    for stale in [0x0101, 0x0201, 0x0103, 0x0102 << 8, 0] {
        let other = s.clone().generation(stale).record();
        assert!(
            !store
                .replace_if(&s.id, stale, &other, ms(LONG))
                .await
                .expect("replace_if"),
            "generation {stale:#x} must be refused"
        );
    }
    assert_eq!(get(store, &s.id).await, Fetched::Live(s.record()));
}

async fn replace_if_on_a_gone_session_is_refused_and_creates_nothing<S: SessionStore>(store: &S) {
    let unknown = Seed::new(1, "alice");
    let revoked = Seed::new(2, "alice");
    let expired = Seed::new(3, "alice").ttl(SHORT);
    revoked.create(store).await;
    expired.create(store).await;
    revoke(store, &revoked.id, &logout()).await;
    gone(store, &expired.id).await;
    for s in [&unknown, &revoked, &expired] {
        let next = s.clone().generation(2).record();
        assert!(
            !store
                .replace_if(&s.id, 1, &next, ms(LONG))
                .await
                .expect("replace_if"),
            "{:?} is gone",
            s.id
        );
        assert!(
            matches!(
                get(store, &s.id).await,
                Fetched::Missing | Fetched::Revoked(_)
            ),
            "{:?} stays gone",
            s.id
        );
    }
    assert_eq!(listed_ids(store, "alice").await, Vec::<StoreId>::new());
}

async fn replace_if_sets_a_shorter_ttl<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice");
    s.create(store).await;
    let next = s.clone().generation(2).record();
    let started = Instant::now();
    assert!(
        store
            .replace_if(&s.id, 1, &next, ms(SHORT))
            .await
            .expect("replace_if")
    );
    gone(store, &s.id).await;
    assert_not_early(started, SHORT);
}

async fn replace_if_sets_a_longer_ttl<S: SessionStore>(store: &S) {
    // Long enough for the replace to land first even on a loaded machine.
    let first_ttl = Duration::from_secs(3);
    let s = Seed::new(1, "alice").ttl(first_ttl);
    s.create(store).await;
    let next = s.clone().generation(2).record();
    assert!(
        store
            .replace_if(&s.id, 1, &next, ms(LONG))
            .await
            .expect("replace_if")
    );
    wait_past(store, first_ttl).await;
    assert_eq!(get(store, &s.id).await, Fetched::Live(next));
}

async fn replace_if_keeps_the_session_in_its_indexes<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice").sid("op-1");
    s.create(store).await;
    let next = s.clone().generation(2).record();
    assert!(
        store
            .replace_if(&s.id, 1, &next, ms(LONG))
            .await
            .expect("replace_if")
    );
    assert_eq!(
        listed(store, "alice").await,
        vec![(s.id.clone(), s.created, next)]
    );
    assert_eq!(
        store
            .revoke_sid(&sid_hash("op-1"), &logout())
            .await
            .expect("revoke_sid"),
        vec![s.id.clone()]
    );
}

// ---------------------------------------------------------------------------
// revoke

async fn revoke_ends_the_session<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice");
    let other = Seed::new(2, "alice");
    s.create(store).await;
    other.create(store).await;
    assert_eq!(
        revoke(store, &s.id, &logout()).await,
        RevokeOutcome::Revoked
    );
    assert_eq!(
        get(store, &s.id).await,
        Fetched::Revoked(Some(RevokeReason::Logout))
    );
    assert_eq!(get(store, &other.id).await, Fetched::Live(other.record()));
}

async fn revoking_again_reports_the_first_revocation_from_the_tombstone<S: SessionStore>(
    store: &S,
) {
    let s = Seed::new(1, "alice");
    s.create(store).await;
    assert_eq!(revoke(store, &s.id, &admin()).await, RevokeOutcome::Revoked);
    // Every field of the first revocation comes back, however often asked,
    // and a later revocation does not overwrite it.
    assert_eq!(revoke(store, &s.id, &logout()).await, already(admin()));
    assert_eq!(revoke(store, &s.id, &logout()).await, already(admin()));
}

async fn revoking_an_unknown_session_reports_not_found<S: SessionStore>(store: &S) {
    assert_eq!(
        revoke(store, &id(1), &logout()).await,
        RevokeOutcome::NotFound
    );
    // And leaves no tombstone behind.
    assert_eq!(
        revoke(store, &id(1), &logout()).await,
        RevokeOutcome::NotFound
    );
}

async fn revoking_an_expired_session_reports_not_found<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice").ttl(SHORT);
    s.create(store).await;
    gone(store, &s.id).await;
    assert_eq!(
        revoke(store, &s.id, &logout()).await,
        RevokeOutcome::NotFound
    );
}

async fn revoke_removes_the_session_from_both_indexes<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice").sid("op-1");
    s.create(store).await;
    revoke(store, &s.id, &logout()).await;
    assert_eq!(
        store.sweep(NOW).await.expect("sweep"),
        0,
        "no dead entry left"
    );
    assert_eq!(listed_ids(store, "alice").await, Vec::<StoreId>::new());
    assert_eq!(
        store
            .revoke_sid(&sid_hash("op-1"), &admin())
            .await
            .expect("revoke_sid"),
        Vec::<StoreId>::new()
    );
    assert_eq!(revoke(store, &s.id, &admin()).await, already(logout()));
}

// ---------------------------------------------------------------------------
// revoke_user / revoke_sid

async fn revoke_user_ends_every_session_of_that_user_only<S: SessionStore>(store: &S) {
    let alice: Vec<Seed> = (1..=3).map(|n| Seed::new(n, "alice").sid("op-a")).collect();
    let bob = Seed::new(4, "bob").sid("op-a");
    for s in &alice {
        s.create(store).await;
    }
    bob.create(store).await;
    let revoked = store
        .revoke_user(&user_hash("alice"), None, &admin())
        .await
        .expect("revoke_user");
    assert_eq!(sorted(revoked), vec![id(1), id(2), id(3)]);
    for s in &alice {
        assert_eq!(
            get(store, &s.id).await,
            Fetched::Revoked(Some(RevokeReason::Admin))
        );
        assert_eq!(revoke(store, &s.id, &logout()).await, already(admin()));
    }
    assert_eq!(listed_ids(store, "alice").await, Vec::<StoreId>::new());
    assert_eq!(get(store, &bob.id).await, Fetched::Live(bob.record()));
    assert_eq!(listed_ids(store, "bob").await, vec![bob.id.clone()]);
    assert_eq!(
        store.sweep(NOW).await.expect("sweep"),
        0,
        "no dead entry left"
    );
}

async fn revoke_user_spares_the_excepted_session<S: SessionStore>(store: &S) {
    let alice: Vec<Seed> = (1..=3).map(|n| Seed::new(n, "alice")).collect();
    for s in &alice {
        s.create(store).await;
    }
    let revoked = store
        .revoke_user(&user_hash("alice"), Some(&id(2)), &logout())
        .await
        .expect("revoke_user");
    assert_eq!(sorted(revoked), vec![id(1), id(3)]);
    assert_eq!(get(store, &id(2)).await, Fetched::Live(alice[1].record()));
    assert_eq!(listed(store, "alice").await, vec![entry(&alice[1])]);
    assert_eq!(revoke(store, &id(1), &admin()).await, already(logout()));
}

async fn revoke_user_of_an_unknown_user_revokes_nothing<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice");
    s.create(store).await;
    assert_eq!(
        store
            .revoke_user(&user_hash("nobody"), None, &admin())
            .await
            .expect("revoke_user"),
        Vec::<StoreId>::new()
    );
    assert_eq!(get(store, &s.id).await, Fetched::Live(s.record()));
}

async fn revoke_sid_ends_every_session_bound_to_that_provider_session<S: SessionStore>(store: &S) {
    let a1 = Seed::new(1, "alice").sid("op-1");
    let b2 = Seed::new(2, "bob").sid("op-1");
    let a3 = Seed::new(3, "alice").sid("op-2");
    let a4 = Seed::new(4, "alice");
    for s in [&a1, &b2, &a3, &a4] {
        s.create(store).await;
    }
    let backchannel = Revocation::new(RevokeReason::Backchannel, "provider", 1_700_000_400);
    let revoked = store
        .revoke_sid(&sid_hash("op-1"), &backchannel)
        .await
        .expect("revoke_sid");
    assert_eq!(sorted(revoked), vec![id(1), id(2)]);
    for s in [&a1, &b2] {
        assert_eq!(
            get(store, &s.id).await,
            Fetched::Revoked(Some(RevokeReason::Backchannel))
        );
        assert_eq!(
            revoke(store, &s.id, &logout()).await,
            already(backchannel.clone())
        );
    }
    assert_eq!(listed_ids(store, "alice").await, vec![id(4), id(3)]);
    assert_eq!(listed_ids(store, "bob").await, Vec::<StoreId>::new());
    assert_eq!(
        store
            .revoke_sid(&sid_hash("op-1"), &backchannel)
            .await
            .expect("revoke_sid"),
        Vec::<StoreId>::new(),
        "a second back-channel logout finds nothing"
    );
    assert_eq!(
        store.sweep(NOW).await.expect("sweep"),
        0,
        "no dead entry left"
    );
}

// ---------------------------------------------------------------------------
// Per-user limit

async fn the_per_user_limit_evicts_the_oldest_and_returns_its_id<S: SessionStore>(store: &S) {
    let s1 = Seed::new(1, "alice").max(2);
    let s2 = Seed::new(2, "alice").max(2);
    let s3 = Seed::new(3, "alice").max(2);
    assert_eq!(s1.create(store).await, Vec::<StoreId>::new());
    assert_eq!(s2.create(store).await, Vec::<StoreId>::new());
    assert_eq!(s3.create(store).await, vec![id(1)]);
    assert_eq!(
        get(store, &id(1)).await,
        Fetched::Revoked(Some(RevokeReason::Limit))
    );
    assert_eq!(listed(store, "alice").await, vec![entry(&s3), entry(&s2)]);
}

async fn the_per_user_limit_goes_by_creation_time_not_arrival<S: SessionStore>(store: &S) {
    // Arrive 1, 2, 3; created 2, 3, 1 (oldest first).
    let s1 = Seed::new(1, "alice").created(T0 + 3000).max(2);
    let s2 = Seed::new(2, "alice").created(T0 + 1000).max(2);
    let s3 = Seed::new(3, "alice").created(T0 + 2000).max(2);
    s1.create(store).await;
    s2.create(store).await;
    assert_eq!(s3.create(store).await, vec![id(2)]);
    assert_eq!(listed(store, "alice").await, vec![entry(&s1), entry(&s3)]);
}

async fn evicted_sessions_leave_a_tombstone_with_the_eviction_reason<S: SessionStore>(store: &S) {
    let old = Seed::new(1, "alice").sid("op-1").max(1);
    let new = Seed::new(2, "alice").max(1);
    old.create(store).await;
    assert_eq!(new.create(store).await, vec![id(1)]);
    assert_eq!(revoke(store, &old.id, &logout()).await, already(eviction()));
    // The eviction cleaned the provider-session index too.
    assert_eq!(
        store
            .revoke_sid(&sid_hash("op-1"), &logout())
            .await
            .expect("revoke_sid"),
        Vec::<StoreId>::new()
    );
    assert_eq!(
        store.sweep(NOW).await.expect("sweep"),
        0,
        "no dead entry left"
    );
}

async fn the_per_user_limit_evicts_several_when_the_user_is_far_over_it<S: SessionStore>(
    store: &S,
) {
    for n in 1..=4 {
        Seed::new(n, "alice").create(store).await;
    }
    let evicted = Seed::new(5, "alice").max(2).create(store).await;
    assert_eq!(sorted(evicted), vec![id(1), id(2), id(3)]);
    assert_eq!(listed_ids(store, "alice").await, vec![id(5), id(4)]);
    for n in 1..=3 {
        assert_eq!(revoke(store, &id(n), &logout()).await, already(eviction()));
    }
}

async fn the_per_user_limit_holds_when_creation_times_tie_and_spares_the_new_session<
    S: SessionStore,
>(
    store: &S,
) {
    // One creation time and descending IDs: each new session sorts first
    // among its equals, yet it is the one session never evicted. Equal
    // times order by ID (as in a Redis sorted set), so the victim is the
    // lowest ID other than the new one.
    let expected: [(u64, &[u64]); 6] = [
        (6, &[]),
        (5, &[]),
        (4, &[5]),
        (3, &[4]),
        (2, &[3]),
        (1, &[2]),
    ];
    for (n, evicted) in expected {
        let s = Seed::new(n, "alice").created(T0).max(2);
        let want: Vec<StoreId> = evicted.iter().copied().map(id).collect();
        assert_eq!(s.create(store).await, want, "creating {n}");
        assert_eq!(get(store, &s.id).await, Fetched::Live(s.record()));
    }
    // Newest first; ties newest-ID first.
    assert_eq!(listed_ids(store, "alice").await, vec![id(6), id(1)]);
    for n in 2..=5 {
        assert_eq!(revoke(store, &id(n), &logout()).await, already(eviction()));
    }
}

async fn the_per_user_limit_does_not_count_expired_sessions<S: SessionStore>(store: &S) {
    let expired = Seed::new(1, "alice").ttl(SHORT);
    let live = Seed::new(2, "alice");
    expired.create(store).await;
    live.create(store).await;
    gone(store, &expired.id).await;
    assert_eq!(
        Seed::new(3, "alice").max(2).create(store).await,
        Vec::<StoreId>::new()
    );
    assert_eq!(listed_ids(store, "alice").await, vec![id(3), id(2)]);
    assert_eq!(
        revoke(store, &expired.id, &logout()).await,
        RevokeOutcome::NotFound,
        "an expired session is not evicted, so has no tombstone"
    );
}

async fn the_per_user_limit_counts_only_that_users_sessions<S: SessionStore>(store: &S) {
    Seed::new(1, "bob").create(store).await;
    Seed::new(2, "bob").create(store).await;
    assert_eq!(
        Seed::new(3, "alice").max(1).create(store).await,
        Vec::<StoreId>::new()
    );
    assert_eq!(
        Seed::new(4, "alice").max(1).create(store).await,
        vec![id(3)]
    );
    assert_eq!(listed_ids(store, "bob").await, vec![id(2), id(1)]);
}

async fn without_a_limit_nothing_is_evicted<S: SessionStore>(store: &S) {
    for n in 1..=5 {
        assert_eq!(
            Seed::new(n, "alice").create(store).await,
            Vec::<StoreId>::new()
        );
    }
    assert_eq!(
        listed_ids(store, "alice").await,
        vec![id(5), id(4), id(3), id(2), id(1)]
    );
}

// ---------------------------------------------------------------------------
// list_user

async fn list_user_returns_live_sessions_newest_first_with_times_and_records<S: SessionStore>(
    store: &S,
) {
    let s1 = Seed::new(1, "alice").created(T0 + 2000).sid("op-1");
    let s2 = Seed::new(2, "alice").created(T0 + 7).generation(3);
    let s3 = Seed::new(3, "alice").created(T0 + 5000);
    let revoked = Seed::new(4, "alice").created(T0 + 9000);
    let bob = Seed::new(5, "bob");
    for s in [&s1, &s2, &s3, &revoked, &bob] {
        s.create(store).await;
    }
    revoke(store, &revoked.id, &logout()).await;
    assert_eq!(
        listed(store, "alice").await,
        vec![entry(&s3), entry(&s1), entry(&s2)]
    );
}

async fn list_user_of_an_unknown_user_is_empty<S: SessionStore>(store: &S) {
    Seed::new(1, "alice").create(store).await;
    assert_eq!(listed_ids(store, "nobody").await, Vec::<StoreId>::new());
}

async fn list_user_drops_expired_entries_from_the_index<S: SessionStore>(store: &S) {
    let expired = Seed::new(1, "alice").ttl(SHORT);
    let live = Seed::new(2, "alice");
    expired.create(store).await;
    live.create(store).await;
    gone(store, &expired.id).await;
    assert_eq!(listed(store, "alice").await, vec![entry(&live)]);
    assert_eq!(
        store.sweep(NOW).await.expect("sweep"),
        0,
        "listing already dropped the dead entry"
    );
}

async fn list_user_pages_walk_every_live_session_once_newest_first<S: SessionStore>(store: &S) {
    let seeds: Vec<Seed> = (1..=7).map(|n| Seed::new(n, "alice")).collect();
    for s in &seeds {
        s.create(store).await;
    }
    let pages = all_pages(store, "alice", 3).await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.sessions.len()).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    let ids: Vec<StoreId> = pages
        .into_iter()
        .flat_map(|p| p.sessions)
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, (1..=7).rev().map(id).collect::<Vec<_>>());
    // A page exactly as long as what is left says there is no next one.
    let first = page(store, "alice", None, 7).await;
    assert_eq!(first.sessions.len(), 7);
    assert_eq!(first.next, None);
}

async fn list_user_pages_stay_in_order_when_creation_times_tie<S: SessionStore>(store: &S) {
    for n in 1..=5 {
        Seed::new(n, "alice").created(T0).create(store).await;
    }
    Seed::new(6, "alice").created(T0 + 1).create(store).await;
    Seed::new(7, "alice").created(T0 - 1).create(store).await;
    // Ties go by descending ID, and a cursor inside a tie resumes there.
    assert_eq!(
        listed_ids(store, "alice").await,
        vec![id(6), id(5), id(4), id(3), id(2), id(1), id(7)]
    );
    let ids: Vec<StoreId> = all_pages(store, "alice", 1)
        .await
        .into_iter()
        .flat_map(|p| p.sessions)
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, vec![id(6), id(5), id(4), id(3), id(2), id(1), id(7)]);
}

async fn a_list_cursor_survives_sessions_ending_and_starting_between_pages<S: SessionStore>(
    store: &S,
) {
    for n in 1..=5 {
        Seed::new(n, "alice").create(store).await;
    }
    let first = page(store, "alice", None, 2).await;
    assert_eq!(
        first
            .sessions
            .iter()
            .map(|l| l.id.clone())
            .collect::<Vec<_>>(),
        vec![id(5), id(4)]
    );
    let cursor = first.next.expect("more pages");
    assert_eq!(
        cursor,
        ListCursor {
            created_millis: T0 + 4000,
            id: id(4)
        }
    );
    // The cursor's own session ends, a newer one starts: the next page
    // continues below the cursor, no repeat, no gap.
    revoke(store, &id(4), &logout()).await;
    Seed::new(9, "alice").create(store).await;
    let rest: Vec<StoreId> = {
        let mut out = Vec::new();
        let mut after = Some(cursor);
        while let Some(c) = after {
            let p = page(store, "alice", Some(&c), 2).await;
            out.extend(p.sessions.into_iter().map(|l| l.id));
            after = p.next;
        }
        out
    };
    assert_eq!(rest, vec![id(3), id(2), id(1)]);
}

async fn list_user_clamps_the_page_size_to_one_through_the_maximum<S: SessionStore>(store: &S) {
    for n in 1..=3 {
        Seed::new(n, "alice").create(store).await;
    }
    let p = page(store, "alice", None, 0).await;
    assert_eq!(p.sessions.len(), 1, "a zero limit still lists one");
    assert!(p.next.is_some());
    let p = page(store, "alice", None, usize::MAX).await;
    assert_eq!(p.sessions.len(), 3);
    assert_eq!(p.next, None);
    let p = page(store, "alice", None, MAX_PAGE + 1).await;
    assert_eq!(p.sessions.len(), 3);
}

/// Many sessions of one user, written straight through the store: listed a
/// bounded page at a time, every one exactly once, newest first.
async fn list_user_pages_through_a_thousand_sessions_of_one_user<S: SessionStore>(store: &S) {
    const N: u64 = 1_200;
    const LIMIT: usize = 100;
    let user = user_hash("crowd");
    let rec = record(1, &user, None, T0 / 1000 + 3600);
    let ev = eviction();
    for n in 1..=N {
        store
            .create(&NewSession {
                id: &id(n),
                record: &rec,
                ttl_millis: ms(LONG),
                user_hash: &user,
                sid_hash: None,
                created_millis: T0 + n,
                max_per_user: None,
                eviction: &ev,
                index_ttl_millis: ms(LONG) + 60_000,
            })
            .await
            .expect("create");
    }
    let pages = all_pages(store, "crowd", LIMIT).await;
    assert_eq!(pages.len(), 12);
    assert!(pages.iter().all(|p| p.sessions.len() == LIMIT));
    let ids: Vec<StoreId> = pages
        .into_iter()
        .flat_map(|p| p.sessions)
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, (1..=N).rev().map(id).collect::<Vec<_>>());
}

async fn a_revoked_session_written_back_is_not_returned<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice");
    s.create(store).await;
    revoke(store, &s.id, &logout()).await;
    // The same bytes and index entries again, as a restored backup would.
    s.create(store).await;
    assert_eq!(
        get(store, &s.id).await,
        Fetched::Revoked(Some(RevokeReason::Logout))
    );
    assert_eq!(revoke(store, &s.id, &admin()).await, RevokeOutcome::Revoked);
}

async fn get_names_the_reason_of_each_kind_of_revocation<S: SessionStore>(store: &S) {
    let reasons = [
        RevokeReason::Logout,
        RevokeReason::Admin,
        RevokeReason::Backchannel,
        RevokeReason::Limit,
        RevokeReason::RefreshFailed,
        RevokeReason::User,
    ];
    for (n, reason) in (1..).zip(reasons) {
        let s = Seed::new(n, "alice");
        s.create(store).await;
        let why = Revocation::new(reason, "someone", 1_700_000_400);
        assert_eq!(revoke(store, &s.id, &why).await, RevokeOutcome::Revoked);
        assert_eq!(get(store, &s.id).await, Fetched::Revoked(Some(reason)));
    }
}

async fn an_expired_session_is_missing_not_revoked<S: SessionStore>(store: &S) {
    let s = Seed::new(1, "alice").ttl(SHORT);
    s.create(store).await;
    gone(store, &s.id).await;
    assert_eq!(get(store, &s.id).await, Fetched::Missing);
}

async fn revoke_user_ends_more_sessions_than_one_batch<S: SessionStore>(store: &S) {
    for n in 1..=250 {
        Seed::new(n, "alice").create(store).await;
    }
    Seed::new(300, "bob").create(store).await;
    let revoked = store
        .revoke_user(&user_hash("alice"), Some(&id(120)), &logout())
        .await
        .expect("revoke_user");
    assert_eq!(
        sorted(revoked),
        (1..=250).filter(|n| *n != 120).map(id).collect::<Vec<_>>()
    );
    assert_eq!(listed_ids(store, "alice").await, vec![id(120)]);
    assert_eq!(listed_ids(store, "bob").await, vec![id(300)]);
}

async fn revoke_sid_ends_more_sessions_than_one_batch<S: SessionStore>(store: &S) {
    for n in 1..=250 {
        Seed::new(n, "alice").sid("op-1").create(store).await;
    }
    Seed::new(300, "alice").sid("op-2").create(store).await;
    let revoked = store
        .revoke_sid(&sid_hash("op-1"), &logout())
        .await
        .expect("revoke_sid");
    assert_eq!(sorted(revoked), (1..=250).map(id).collect::<Vec<_>>());
    assert_eq!(listed_ids(store, "alice").await, vec![id(300)]);
}

async fn sweep_trims_more_dead_entries_than_one_batch<S: SessionStore>(store: &S) {
    for n in 1..=250 {
        Seed::new(n, "alice")
            .sid("op-1")
            .ttl(SHORT)
            .create(store)
            .await;
    }
    let live = Seed::new(300, "alice").sid("op-1");
    live.create(store).await;
    for n in 1..=250 {
        gone(store, &id(n)).await;
    }
    assert_eq!(store.sweep(NOW).await.expect("sweep"), 500);
    assert_eq!(store.sweep(NOW).await.expect("sweep"), 0);
    assert_eq!(listed(store, "alice").await, vec![entry(&live)]);
}

// ---------------------------------------------------------------------------
// Single-use values

async fn take_once_returns_the_value_to_the_first_caller_only<S: SessionStore>(store: &S) {
    let value = [0u8, 1, 2, 255, 254];
    store
        .put_once(OnceKind::Logout, "state-1", &value, ms(LONG))
        .await
        .expect("put_once");
    store
        .put_once(OnceKind::Logout, "state-2", b"other", ms(LONG))
        .await
        .expect("put_once");
    let take = move |key: &'static str| async move {
        store
            .take_once(OnceKind::Logout, key)
            .await
            .expect("take_once")
    };
    assert_eq!(take("state-1").await, Some(value.to_vec()));
    assert_eq!(take("state-1").await, None);
    assert_eq!(take("state-2").await, Some(b"other".to_vec()));
}

async fn take_once_of_an_unknown_key_is_none<S: SessionStore>(store: &S) {
    assert_eq!(
        store
            .take_once(OnceKind::Logout, "nothing")
            .await
            .expect("take_once"),
        None
    );
}

async fn claim_markers_and_once_values_do_not_collide<S: SessionStore>(store: &S) {
    store
        .put_once(OnceKind::Logout, "k", b"logout", ms(LONG))
        .await
        .expect("put_once");
    assert!(store.claim_once("k", ms(LONG)).await.expect("claim"));
    assert!(store.remember_jti("k", ms(LONG)).await.expect("remember"));
    assert_eq!(
        store
            .take_once(OnceKind::Logout, "k")
            .await
            .expect("take_once"),
        Some(b"logout".to_vec())
    );
}

async fn once_values_expire_after_their_ttl<S: SessionStore>(store: &S) {
    store
        .put_once(OnceKind::Logout, "state", b"v", ms(SHORT))
        .await
        .expect("put_once");
    // Taking would consume it, so wait on the store's clock instead.
    wait_past(store, SHORT).await;
    assert_eq!(
        store
            .take_once(OnceKind::Logout, "state")
            .await
            .expect("take_once"),
        None
    );
}

// ---------------------------------------------------------------------------
// Claim markers (a login state spent at the callback)

async fn claim_once_is_true_only_for_the_first_caller<S: SessionStore>(store: &S) {
    let claim = move |key: &'static str| async move {
        store.claim_once(key, ms(LONG)).await.expect("claim")
    };
    assert!(claim("state-1").await);
    assert!(!claim("state-1").await);
    assert!(!claim("state-1").await);
    assert!(claim("state-2").await);
}

async fn concurrent_claims_of_one_key_have_exactly_one_winner<S: SessionStore>(store: &S) {
    let results = futures_util::future::join_all(
        (0..16).map(|_| async { store.claim_once("raced", ms(LONG)).await.expect("claim") }),
    )
    .await;
    assert_eq!(results.iter().filter(|won| **won).count(), 1, "{results:?}");
}

async fn a_claim_is_released_after_its_ttl<S: SessionStore>(store: &S) {
    let started = Instant::now();
    assert!(store.claim_once("c1", ms(SHORT)).await.expect("claim"));
    eventually("the claim expires", move || async move {
        store.claim_once("c1", ms(LONG)).await.expect("claim")
    })
    .await;
    assert_not_early(started, SHORT);
    assert!(!store.claim_once("c1", ms(LONG)).await.expect("claim"));
}

// ---------------------------------------------------------------------------
// Refresh locks

async fn a_held_lock_refuses_a_second_lock<S: SessionStore>(store: &S) {
    let lock = move |n: u64, token: &'static str| async move {
        store.lock(&id(n), token, ms(LONG)).await.expect("lock")
    };
    assert!(lock(1, "a").await);
    assert!(!lock(1, "b").await, "another token");
    assert!(!lock(1, "a").await, "the same token: not re-entrant");
    assert!(lock(2, "b").await, "another session's lock is independent");
}

async fn only_the_holders_token_unlocks<S: SessionStore>(store: &S) {
    let lock = move |token: &'static str| async move {
        store.lock(&id(1), token, ms(LONG)).await.expect("lock")
    };
    assert!(lock("a").await);
    store.unlock(&id(1), "b").await.expect("unlock");
    assert!(!lock("c").await, "a wrong token released nothing");
    store.unlock(&id(1), "a").await.expect("unlock");
    assert!(lock("c").await, "the holder released it");
    // Unlocking what is not locked is harmless.
    store.unlock(&id(2), "a").await.expect("unlock");
}

async fn a_lock_expires_after_its_ttl<S: SessionStore>(store: &S) {
    let started = Instant::now();
    assert!(store.lock(&id(1), "a", ms(SHORT)).await.expect("lock"));
    eventually("the lock expires", move || async move {
        store.lock(&id(1), "b", ms(LONG)).await.expect("lock")
    })
    .await;
    assert_not_early(started, SHORT);
}

async fn an_expired_lock_retaken_by_another_is_not_released_by_its_first_holder<S: SessionStore>(
    store: &S,
) {
    assert!(store.lock(&id(1), "a", ms(SHORT)).await.expect("lock"));
    eventually("the lock expires", move || async move {
        store.lock(&id(1), "b", ms(LONG)).await.expect("lock")
    })
    .await;
    store.unlock(&id(1), "a").await.expect("unlock");
    assert!(
        !store.lock(&id(1), "c", ms(LONG)).await.expect("lock"),
        "b still holds it"
    );
}

// ---------------------------------------------------------------------------
// Logout-token IDs

async fn remember_jti_is_true_only_the_first_time<S: SessionStore>(store: &S) {
    let remember = move |hash: &'static str| async move {
        store.remember_jti(hash, ms(LONG)).await.expect("remember")
    };
    assert!(remember("j1").await);
    assert!(!remember("j1").await);
    assert!(!remember("j1").await);
    assert!(remember("j2").await);
}

async fn a_forgotten_jti_is_remembered_as_new_again<S: SessionStore>(store: &S) {
    assert!(store.remember_jti("j1", ms(LONG)).await.expect("remember"));
    assert!(store.remember_jti("j2", ms(LONG)).await.expect("remember"));
    store.forget_jti("j1").await.expect("forget");
    assert!(store.remember_jti("j1", ms(LONG)).await.expect("remember"));
    assert!(!store.remember_jti("j2", ms(LONG)).await.expect("remember"));
    store.forget_jti("never-seen").await.expect("forget");
}

async fn a_remembered_jti_is_forgotten_after_its_ttl<S: SessionStore>(store: &S) {
    let started = Instant::now();
    assert!(store.remember_jti("j1", ms(SHORT)).await.expect("remember"));
    eventually("the jti is forgotten", move || async move {
        store.remember_jti("j1", ms(LONG)).await.expect("remember")
    })
    .await;
    assert_not_early(started, SHORT);
    assert!(!store.remember_jti("j1", ms(LONG)).await.expect("remember"));
}

// ---------------------------------------------------------------------------
// Sweep, stats, ping

async fn sweep_removes_index_entries_of_expired_sessions_and_counts_them<S: SessionStore>(
    store: &S,
) {
    // Two dead entries in alice's index, one in op-1's, none for the live one.
    let a = Seed::new(1, "alice").sid("op-1").ttl(SHORT);
    let b = Seed::new(2, "alice").ttl(SHORT);
    let live = Seed::new(3, "alice").sid("op-1");
    for s in [&a, &b, &live] {
        s.create(store).await;
    }
    gone(store, &a.id).await;
    gone(store, &b.id).await;
    assert_eq!(store.sweep(NOW).await.expect("sweep"), 3);
    assert_eq!(store.sweep(NOW).await.expect("sweep"), 0, "nothing left");
    assert_eq!(listed(store, "alice").await, vec![entry(&live)]);
    assert_eq!(
        store
            .revoke_sid(&sid_hash("op-1"), &logout())
            .await
            .expect("revoke_sid"),
        vec![live.id.clone()]
    );
}

async fn sweep_of_a_store_without_dead_entries_removes_nothing<S: SessionStore>(store: &S) {
    assert_eq!(store.sweep(NOW).await.expect("sweep"), 0, "empty");
    let s = Seed::new(1, "alice").sid("op-1");
    s.create(store).await;
    assert_eq!(store.sweep(NOW).await.expect("sweep"), 0, "all alive");
    assert_eq!(get(store, &s.id).await, Fetched::Live(s.record()));
    assert_eq!(listed_ids(store, "alice").await, vec![id(1)]);
}

async fn stats_count_live_sessions_and_users_with_the_top_users_descending<S: SessionStore>(
    store: &S,
) {
    let mut n = 0;
    for (user, count) in [("alice", 3), ("carol", 2), ("bob", 1)] {
        for _ in 0..count {
            n += 1;
            Seed::new(n, user).sid("op-1").create(store).await;
        }
    }
    let revoked = Seed::new(20, "dave");
    revoked.create(store).await;
    revoke(store, &revoked.id, &logout()).await;
    let expired = Seed::new(21, "erin").ttl(SHORT);
    expired.create(store).await;
    gone(store, &expired.id).await;

    let stats = store.stats(2, NOW).await.expect("stats");
    assert_eq!(stats.sessions, 6);
    assert_eq!(stats.users, 3);
    assert_eq!(
        stats.top_users,
        vec![(user_hash("alice"), 3), (user_hash("carol"), 2)]
    );
    // `memory_bytes` is whatever the backend reports (None in memory).
    let all = store.stats(10, NOW).await.expect("stats");
    assert_eq!(all.top_users.len(), 3);
    assert_eq!(all.top_users[2], (user_hash("bob"), 1));
}

async fn stats_of_an_empty_store_are_zero<S: SessionStore>(store: &S) {
    let stats = store.stats(10, NOW).await.expect("stats");
    assert_eq!(stats.sessions, 0);
    assert_eq!(stats.users, 0);
    assert_eq!(stats.top_users, Vec::<(String, u64)>::new());
}

/// The active-sessions gauge's count: live records, of every user; not
/// revoked ones (their tombstones are not sessions), not expired ones, and
/// more than one SCAN batch of them.
async fn count_sessions_counts_live_sessions_only<S: SessionStore>(store: &S) {
    assert_eq!(store.count_sessions(NOW).await.expect("count"), 0);
    for n in 1..=1200 {
        Seed::new(n, if n % 2 == 0 { "alice" } else { "bob" })
            .create(store)
            .await;
    }
    let short = Seed::new(5000, "carol").ttl(SHORT);
    short.create(store).await;
    assert_eq!(
        revoke(store, &id(1), &logout()).await,
        RevokeOutcome::Revoked
    );
    gone(store, &short.id).await;
    assert_eq!(store.count_sessions(NOW).await.expect("count"), 1199);
}

async fn ping_answers<S: SessionStore>(store: &S) {
    store.ping().await.expect("ping");
}

// ---------------------------------------------------------------------------
// Redis only: the work of one call is bounded by the page, not the index.

/// 1,200 index entries of one user, the newest 600 of them dead: one list
/// call examines at most 2 × limit + 1 entries (it drops the dead ones it
/// meets and stops), so it removes at most that many from the index, answers
/// a short page and says where to go on. The old script walked all 1,200.
#[tokio::test]
async fn redis_list_user_examines_a_bounded_window_of_the_index_per_call() {
    let prefix = random_prefix();
    let store = RedisStore::new(
        &RedisConfig {
            endpoint: RedisEndpoint::Url(shared().redis.url().parse().expect("redis url")),
            username: None,
            password: None,
            db: 0,
            connect_timeout: Duration::from_secs(5),
            tls_ca_pem: None,
            tls_client: None,
        },
        &prefix,
        Duration::from_secs(5),
    )
    .expect("redis store");
    let user = user_hash("crowd");
    let rec = record(1, &user, None, T0 / 1000 + 3600);
    let ev = eviction();
    for n in 1..=1_200u64 {
        let ttl = if n > 600 { SHORT } else { LONG };
        store
            .create(&NewSession {
                id: &id(n),
                record: &rec,
                ttl_millis: ms(ttl),
                user_hash: &user,
                sid_hash: None,
                created_millis: T0 + n,
                max_per_user: None,
                eviction: &ev,
                index_ttl_millis: ms(LONG) + 60_000,
            })
            .await
            .expect("create");
    }
    gone(&store, &id(601)).await;
    gone(&store, &id(1_200)).await;
    let client = ::redis::Client::open(shared().redis.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let index = format!("{prefix}u:{user}");
    let before: u64 = ::redis::cmd("ZCARD")
        .arg(&index)
        .query_async(&mut c)
        .await
        .expect("zcard");
    assert_eq!(before, 1_200);
    let p = store.list_user(&user, None, 10).await.expect("list");
    let after: u64 = ::redis::cmd("ZCARD")
        .arg(&index)
        .query_async(&mut c)
        .await
        .expect("zcard");
    assert_eq!(
        before - after,
        21,
        "one call examined exactly 2 × 10 + 1 entries"
    );
    assert!(p.sessions.is_empty());
    assert!(p.next.is_some(), "a short page still says where to go on");
    // Walking on reaches the live sessions, still a bounded page at a time.
    let mut live = Vec::new();
    let mut next = p.next;
    let mut calls = 1;
    while let Some(cursor) = next {
        let p = store
            .list_user(&user, Some(&cursor), 10)
            .await
            .expect("list");
        assert!(p.sessions.len() <= 10);
        live.extend(p.sessions.into_iter().map(|l| l.id));
        next = p.next;
        calls += 1;
        assert!(calls < 1_000, "pagination does not end");
    }
    assert_eq!(live, (1..=600).rev().map(id).collect::<Vec<_>>());
}
