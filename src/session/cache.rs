//! The in-process session cache: opened sessions (claims, deadlines,
//! tokens, generation) kept in memory so an authenticated request needs
//! neither a Redis round trip nor a decryption, and kept exact by Redis'
//! invalidation messages (`session::store::tracking`).
//!
//! This module owns the map and the rules that keep it from ever answering
//! with a stale session; it does no I/O. The rules:
//!
//! - **Only while tracking is confirmed.** Entries are served and inserted
//!   only while every invalidation connection is up, confirmed by the
//!   server's reply to `CLIENT TRACKING`, and answered a `PING` within
//!   [`LEASE`] (a connection that silently stopped delivering invalidations
//!   is noticed within that time). When a connection drops, the cache is
//!   emptied and bypassed (read-through, no inserts) until it is back: fail
//!   closed, never stale. The links ping only while requests ask the
//!   cache: after [`LEASE`] without one they stop (an idle gateway does
//!   not wake every second per worker), the lease lapses, and the first
//!   request after the pause reads through and wakes them.
//! - **Only while tracking listens where the store writes.** Through
//!   Sentinel, each store link tells the cache of a master before it uses
//!   it (`SessionCache::store_uses`, in `follow`, called by the link before it
//!   installs the connection): a tracking link that listens to another
//!   server stops counting as confirmed in that same call, so no request
//!   that could reach the new master is answered from the cache until
//!   that link has moved there and confirmed again. The same holds while
//!   the process's store links (one per worker) name different masters.
//! - **No stale insert.** A miss takes a [`Ticket`] (the global epoch and
//!   its shard's sequence) *before* it reads the store; an insert is
//!   dropped if an invalidation of any key of that shard, or a flush, came
//!   in between (the reply could predate the write that invalidated it).
//!   Both checks run under the shard's lock, as invalidations do.
//! - **The full cookie, every time.** An entry is keyed by the store ID
//!   (public: a hash of the cookie's first half) but returned only to a
//!   request presenting the same whole cookie value, compared in constant
//!   time: a cookie with the right lookup half and a wrong secret never
//!   gets the cached session; it reads through and fails to decrypt as
//!   before.
//! - **Deadlines against `now` on every hit.** Idle and absolute deadlines
//!   are checked as on a store read; an entry past one is dropped and the
//!   request reads through (the store says expired, or what else it knows).
//!   An activity touch writes only the session's activity key, which no
//!   process is told of: the touching process moves its own entry's idle
//!   deadline ([`SessionCache::activity_recorded`]); another process's
//!   entry keeps the effective idle deadline as of its read, which is
//!   never later than the true one (activity only moves it later; only a
//!   record write, which is announced, can do otherwise), so past it the
//!   request reads through and finds the newer activity.
//!
//! Memory is bounded by `store.cache_entries`, split over shards; a full
//! shard evicts an arbitrary entry (random eviction: no bookkeeping on the
//! hit path, and a hit ratio close to LRU's for sessions whose requests
//! arrive in bursts). One cache per process, shared by every worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Session;
use super::cookie::{SessionId, StoreId};
use super::store::MasterObserver;
pub use super::store::tracking::TrackerTask;
use super::store::tracking::{Tracker, tracked_prefixes};
use crate::config::{Config, RedisConfig, StoreKind};
pub use crate::metrics::CacheMetrics;

mod follow;
use follow::Follow;

/// How long a confirmation of the invalidation connections (their last
/// answered `PING`) lets the cache serve: a connection that stops
/// delivering without closing (a network partition) is distrusted after
/// at most this long. The tracker pings every second while requests ask
/// the cache (see [`SessionCache::wanted_again`]).
pub const LEASE: Duration = Duration::from_secs(3);

/// How often a request records that the cache is wanted (a store to a
/// shared atomic at most this often, not on every request).
const WANTED_STEP_MS: u64 = 100;

/// Taken by a miss before it reads the store; an insert with it succeeds
/// only if nothing was invalidated in its shard meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    shard: usize,
    seq: u64,
    epoch: u64,
}

/// What the cache says about a request's cookie.
pub enum Probe {
    /// The opened session, for this very cookie, within its deadlines.
    Hit(Arc<Session>),
    /// Read the store, then offer the result with this ticket.
    Miss(Ticket),
    /// Tracking is not confirmed: read the store and insert nothing.
    Bypass,
}

struct Shard {
    /// Bumped by every invalidation and flush of this shard.
    seq: u64,
    entries: HashMap<StoreId, Arc<Session>>,
}

pub struct SessionCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Bumped by every flush: tickets from before are void.
    epoch: AtomicU64,
    /// Per tracking link (a set of invalidation connections, one per
    /// server): when it was last confirmed, in ms since `started` plus 1;
    /// 0 while it is down. The cache serves only while all are recent.
    links: Box<[AtomicU64]>,
    /// Whether the cache was serving at the last change of a link.
    up: AtomicBool,
    /// When a request last asked the cache, in ms since `started` plus 1
    /// (recorded at most every [`WANTED_STEP_MS`]): the links keep their
    /// lease (ping) only while the cache is wanted, so an idle gateway
    /// sleeps instead of waking each second for every worker.
    wanted: AtomicU64,
    /// Per link: woken when a request finds the cache not serving, so an
    /// idle link confirms its connections again at once.
    wake: Box<[Notify]>,
    /// The masters the store links use and the tracking links listen to.
    follow: Mutex<Follow>,
    /// Per link: woken when a store link announces a master, so the link
    /// moves there (or confirms again, if it listens there already) at
    /// once instead of at its next once-a-second check.
    moved: Box<[Notify]>,
    started: Instant,
    metrics: CacheMetrics,
}

impl SessionCache {
    /// A cache of at most `entries` sessions (at least 1), kept by `links`
    /// tracking links (at least 1). It serves nothing until every link
    /// reports its connections up.
    pub fn new(entries: usize, links: usize, metrics: CacheMetrics) -> Self {
        let entries = entries.max(1);
        // Shards keep the two workers (and the tracker) off each other's
        // lock; small caches (tests) keep one so the bound is exact.
        let count = (entries / 256).clamp(1, 64);
        let per_shard = entries.div_ceil(count);
        metrics.tracking_up.set(0);
        let links = links.max(1);
        Self {
            shards: (0..count)
                .map(|_| {
                    Mutex::new(Shard {
                        seq: 0,
                        entries: HashMap::new(),
                    })
                })
                .collect(),
            per_shard,
            epoch: AtomicU64::new(0),
            links: (0..links).map(|_| AtomicU64::new(0)).collect(),
            up: AtomicBool::new(false),
            wanted: AtomicU64::new(0),
            wake: (0..links).map(|_| Notify::new()).collect(),
            follow: Mutex::new(Follow::new(links)),
            moved: (0..links).map(|_| Notify::new()).collect(),
            started: Instant::now(),
            metrics,
        }
    }

    fn shard_of(&self, id: &StoreId) -> usize {
        // Store IDs are hex of a hash (after the 4-digit shard tag): their
        // last digits are already uniform.
        let tail = id.as_str().as_bytes();
        let n = tail.iter().rev().take(4).fold(0usize, |acc, b| {
            acc * 16 + (*b as char).to_digit(16).unwrap_or(0) as usize
        });
        n % self.shards.len()
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether entries may be served and inserted now: every link is up
    /// and was confirmed within the lease.
    fn serving(&self) -> bool {
        self.serving_at(self.elapsed_ms() + 1)
    }

    /// [`Self::serving`] at `now` (ms since `started` plus 1).
    fn serving_at(&self, now: u64) -> bool {
        self.links.iter().all(|l| {
            let at = l.load(Ordering::SeqCst);
            at != 0 && now.saturating_sub(at) <= LEASE.as_millis() as u64
        })
    }

    /// The cached session for the request presenting `id`, or how to read
    /// the store instead.
    pub fn probe(&self, id: &SessionId, store_id: &StoreId, now: u64) -> Probe {
        let at = self.elapsed_ms() + 1;
        if at.saturating_sub(self.wanted.load(Ordering::Relaxed)) >= WANTED_STEP_MS {
            self.wanted.store(at, Ordering::Relaxed);
        }
        if !self.serving_at(at) {
            self.metrics.bypassed.inc();
            // An idle link (or one between reconnection attempts, where
            // the permit is only spent on its next idle wait) confirms
            // again now, so the requests after this one can be served.
            for w in &self.wake {
                w.notify_one();
            }
            return Probe::Bypass;
        }
        let shard = self.shard_of(store_id);
        let (found, ticket) = {
            let s = self.lock(shard);
            let ticket = Ticket {
                shard,
                seq: s.seq,
                epoch: self.epoch.load(Ordering::SeqCst),
            };
            (s.entries.get(store_id).cloned(), ticket)
        };
        match found {
            Some(session) if session.id.same_as(id) => {
                if session.stored.body.expired(now).is_none() {
                    self.metrics.hits.inc();
                    return Probe::Hit(session);
                }
                // Past a deadline: the store decides what the browser is told.
                self.evict(store_id);
            }
            // Right lookup half, wrong secret: read through (it will fail
            // to decrypt there); the entry stays for its real owner.
            Some(_) | None => {}
        }
        self.metrics.misses.inc();
        Probe::Miss(ticket)
    }

    /// Offers a session just read from the store under `ticket`; kept only
    /// if nothing in its shard was invalidated since the ticket was taken
    /// and tracking is still confirmed.
    pub fn insert(&self, ticket: Ticket, session: &Arc<Session>) {
        let mut s = self.lock(ticket.shard);
        if s.seq != ticket.seq
            || self.epoch.load(Ordering::SeqCst) != ticket.epoch
            || !self.serving()
        {
            return;
        }
        if s.entries.len() >= self.per_shard && !s.entries.contains_key(&session.store_id) {
            // Random eviction: the first entry in the table's (hashed) order.
            if let Some(victim) = s.entries.keys().next().cloned() {
                s.entries.remove(&victim);
                self.metrics.entries.dec();
            }
        }
        if s.entries
            .insert(session.store_id.clone(), Arc::clone(session))
            .is_none()
        {
            self.metrics.entries.inc();
        }
    }

    /// This process recorded activity for `id` at `at` apart from its
    /// record (the activity key, which no process is told of): if the entry
    /// still holds the record of `generation`, it takes the later
    /// deadlines ([`super::record::StoredBody::with_activity`]), so the
    /// next hits neither find a touch due nor run past the old idle
    /// deadline. Not a write of the record: tickets stay good. Another
    /// process's entry keeps its older deadlines, which are never later
    /// than the true ones (activity only moves them later); a hit past
    /// them reads through and finds the newer activity.
    pub fn activity_recorded(&self, id: &StoreId, generation: u64, at: u64, idle_timeout: u64) {
        let shard = self.shard_of(id);
        let Some(cached) = self.lock(shard).entries.get(id).cloned() else {
            return;
        };
        if cached.stored.generation != generation || cached.stored.body.last_active_at >= at {
            return;
        }
        // Built outside the lock: a clone of the opened session (its
        // tokens), once per session per touch interval.
        let mut next = Session::clone(&cached);
        next.stored.body.with_activity(at, idle_timeout);
        let mut s = self.lock(shard);
        if let Some(entry) = s.entries.get_mut(id)
            && Arc::ptr_eq(entry, &cached)
        {
            *entry = Arc::new(next);
        }
    }

    /// Drops `id` because it changed or ended: tickets of its shard are
    /// void (a read in flight may have fetched the record before the
    /// change).
    fn remove(&self, id: &StoreId, count: bool) {
        let mut s = self.lock(self.shard_of(id));
        s.seq += 1;
        if s.entries.remove(id).is_some() {
            self.metrics.entries.dec();
        }
        drop(s);
        if count {
            self.metrics.invalidations.inc();
        }
    }

    /// Drops `id` for a reason of this process's own (past a deadline,
    /// sealed under a retired key): nothing was written, so a read in
    /// flight in its shard fetched what is still current and its ticket
    /// stays good. Only [`Self::invalidate`] (a write) voids tickets.
    pub fn evict(&self, id: &StoreId) {
        let mut s = self.lock(self.shard_of(id));
        if s.entries.remove(id).is_some() {
            self.metrics.entries.dec();
        }
    }

    /// The session `id` changed or ended (an invalidation message, or a
    /// write by this process): drop it, and void tickets of its shard.
    pub fn invalidate(&self, id: &StoreId) {
        self.remove(id, true);
    }

    /// [`Self::invalidate`] for a message received on tracking link
    /// `link`: every link receives each message, so only link 0's count.
    pub fn invalidated_on(&self, id: &StoreId, link: usize) {
        self.remove(id, link == 0);
    }

    /// Drops every entry and voids every ticket.
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for shard in 0..self.shards.len() {
            let mut s = self.lock(shard);
            s.seq += 1;
            let n = s.entries.len();
            s.entries.clear();
            drop(s);
            self.metrics.entries.dec_by(n as i64);
        }
        self.metrics.flushes.inc();
    }

    /// Whether a request asked the cache within `within` (a link pings
    /// only then; see [`Self::wanted_again`]).
    pub fn wanted_within(&self, within: Duration) -> bool {
        let now = self.elapsed_ms() + 1;
        now.saturating_sub(self.wanted.load(Ordering::Relaxed)) <= within.as_millis() as u64
    }

    /// Resolves when a request finds the cache not serving: an idle link
    /// `link` waits for this instead of pinging, and its lease lapses in
    /// the meantime (so the first request after a pause reads through, and
    /// the link's next confirmation empties the cache: a gap longer than
    /// the lease is never trusted).
    pub async fn wanted_again(&self, link: usize) {
        match self.wake.get(link) {
            Some(w) => w.notified().await,
            None => std::future::pending().await,
        }
    }

    /// A connection of tracking link `link` is down (or not yet
    /// confirmed): stop serving, then empty the cache (so nothing cached
    /// before the gap survives it).
    pub fn tracking_down(&self, link: usize) {
        if let Some(l) = self.links.get(link) {
            l.store(0, Ordering::SeqCst);
        }
        self.listening_to(link, None);
        self.metrics.tracking_up.set(0);
        if self.up.swap(false, Ordering::SeqCst) {
            self.flush();
        }
    }

    /// Every connection of link `link` is up and confirmed as of `sent`
    /// (when the confirming command was sent): once all links are, the
    /// cache serves, for [`LEASE`] after the oldest confirmation. Not
    /// counted while the link listens to another master than a store link
    /// uses (checked under the lock `store_uses` takes, so a move
    /// announced meanwhile is never overwritten by this confirmation).
    pub fn tracking_confirmed(&self, link: usize, sent: Instant) {
        let follow = self.follow();
        if !follow.agrees(link) {
            return;
        }
        let at = u64::try_from(sent.saturating_duration_since(self.started).as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        if let Some(l) = self.links.get(link) {
            let before = l.fetch_max(at, Ordering::SeqCst);
            if before != 0 && at.saturating_sub(before) > LEASE.as_millis() as u64 {
                // A gap longer than the lease without a loss noticed (a
                // stalled connection): what was cached may have missed
                // invalidations.
                self.flush();
            }
        }
        if self.links.iter().all(|l| l.load(Ordering::SeqCst) != 0)
            && !self.up.swap(true, Ordering::SeqCst)
        {
            self.metrics.tracking_up.set(1);
        }
    }

    /// Entries held now (tests, metrics).
    pub fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock(i).entries.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The process's cache with what keeps it exact: built once per process,
/// shared by every worker's `Sessions`.
///
/// Each worker of a gateway process keeps its own set of invalidation
/// connections on its own runtime ([`Self::track_here`]), as a link of its
/// own: the cache serves only while every link is confirmed. On one
/// runtime, the invalidation message that Redis sent before answering the
/// revoking instance is read before the request that followed that answer
/// (the worker's event loop sees the readiness of the two sockets in the
/// order they became readable and runs the woken tasks in that order), so
/// a busy machine cannot delay the eviction behind the request the way a
/// separate thread's scheduling could. An embedded gateway (tests, one
/// runtime) gets one link on the runtime it is built in, or on a thread of
/// its own when built outside one ([`Self::open`]).
pub struct ProcessCache {
    cache: Arc<SessionCache>,
    source: Source,
    _thread: Option<Tracker>,
    _task: Option<TrackerTask>,
}

/// What the invalidation connections are opened from.
struct Source {
    redis: RedisConfig,
    prefixes: Vec<String>,
    timeout: std::time::Duration,
}

impl std::ops::Deref for ProcessCache {
    type Target = SessionCache;
    fn deref(&self) -> &SessionCache {
        &self.cache
    }
}

impl ProcessCache {
    /// The cache `store.cache_entries` asks for (`None`: off, or the
    /// memory store), kept by `links` links that are not started yet.
    fn build(
        config: &Config,
        metrics: &CacheMetrics,
        links: usize,
    ) -> Option<(Arc<SessionCache>, Source)> {
        let StoreKind::Redis(redis) = &config.store.kind else {
            return None;
        };
        if config.store.cache_entries == 0 {
            return None;
        }
        let cache = Arc::new(SessionCache::new(
            config.store.cache_entries,
            links,
            metrics.clone(),
        ));
        let source = Source {
            redis: (**redis).clone(),
            prefixes: tracked_prefixes(&config.store.key_prefix, &config.store.legacy_key_prefix),
            timeout: config.store.timeout,
        };
        Some((cache, source))
    }

    /// The cache of an embedded gateway: one link, on the current runtime
    /// (the one that serves the gateway), else on a thread of its own.
    pub fn open(config: &Config, metrics: &CacheMetrics) -> anyhow::Result<Option<Arc<Self>>> {
        let Some((cache, source)) = Self::build(config, metrics, 1) else {
            return Ok(None);
        };
        let (thread, task) = if tokio::runtime::Handle::try_current().is_ok() {
            let task = TrackerTask::spawn(
                &source.redis,
                source.prefixes.clone(),
                source.timeout,
                cache.clone(),
                0,
            )?;
            (None, Some(task))
        } else {
            let thread = Tracker::start(
                &source.redis,
                source.prefixes.clone(),
                source.timeout,
                cache.clone(),
            )?;
            (Some(thread), None)
        };
        Ok(Some(Arc::new(Self {
            cache,
            source,
            _thread: thread,
            _task: task,
        })))
    }

    /// The cache of a gateway process with `workers` workers: each starts
    /// its link with [`Self::track_here`].
    pub fn for_workers(
        config: &Config,
        metrics: &CacheMetrics,
        workers: usize,
    ) -> Option<Arc<Self>> {
        let (cache, source) = Self::build(config, metrics, workers)?;
        Some(Arc::new(Self {
            cache,
            source,
            _thread: None,
            _task: None,
        }))
    }

    /// An observer for one store link of the process (see
    /// [`SessionCache::store_observer`]).
    pub fn store_observer(&self) -> Box<dyn MasterObserver> {
        self.cache.store_observer()
    }

    /// Starts link `link` on the current runtime (a worker's); it stops,
    /// and the cache stops serving, when the returned handle is dropped.
    pub fn track_here(&self, link: usize) -> anyhow::Result<TrackerTask> {
        TrackerTask::spawn(
            &self.source.redis,
            self.source.prefixes.clone(),
            self.source.timeout,
            self.cache.clone(),
            link,
        )
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::secret::SecretString;
    use crate::session::record::{SessionSecrets, StoredBody, StoredSession};

    pub(super) fn session(id: &SessionId, expires: u64) -> Arc<Session> {
        Arc::new(Session {
            id: id.clone(),
            store_id: id.store_id(),
            stored: StoredSession {
                generation: 1,
                body: StoredBody {
                    key_id: "k".into(),
                    user_hash: "u".into(),
                    sid_hash: None,
                    created_at: 100,
                    last_active_at: 100,
                    idle_expires_at: expires,
                    absolute_expires_at: expires,
                    access_expires_at: 0,
                    has_refresh_token: false,
                    meta: Vec::new(),
                    secrets: Vec::new(),
                },
            },
            secrets: SessionSecrets {
                access_token: SecretString::new("at"),
                refresh_token: None,
                id_token: None,
                claims: "{}".into(),
                scopes: None,
                derived: Vec::new(),
                dpop_key: None,
            },
            dpop: Default::default(),
            bearer: Default::default(),
        })
    }

    fn live(entries: usize) -> SessionCache {
        let c = SessionCache::new(entries, 1, CacheMetrics::default());
        c.tracking_confirmed(0, Instant::now());
        c
    }

    pub(super) fn ticket(c: &SessionCache, id: &SessionId) -> Ticket {
        match c.probe(id, &id.store_id(), 150) {
            Probe::Miss(t) => t,
            Probe::Hit(_) => panic!("unexpected hit"),
            Probe::Bypass => panic!("unexpected bypass"),
        }
    }

    pub(super) fn hit(c: &SessionCache, id: &SessionId, now: u64) -> bool {
        matches!(c.probe(id, &id.store_id(), now), Probe::Hit(_))
    }

    #[test]
    fn a_cached_session_is_served_to_the_same_cookie_until_invalidated() {
        let c = live(10);
        let id = SessionId::generate([1, 2]);
        let t = ticket(&c, &id);
        c.insert(t, &session(&id, 1000));
        assert!(hit(&c, &id, 150));
        c.invalidate(&id.store_id());
        assert!(!hit(&c, &id, 150));
        assert_eq!(c.metrics.hits.get(), 1);
        assert_eq!(c.metrics.invalidations.get(), 1);
    }

    #[test]
    fn activity_this_process_recorded_moves_its_entrys_idle_deadline_without_voiding_tickets() {
        let c = live(10);
        let (id, other) = (SessionId::generate([1, 2]), SessionId::generate([1, 2]));
        // Idle deadline 400, absolute 1000.
        let idle_until_400 = || {
            let mut s = Session::clone(&session(&id, 1000));
            s.stored.body.idle_expires_at = 400;
            Arc::new(s)
        };
        c.insert(ticket(&c, &id), &idle_until_400());
        let in_flight = ticket(&c, &other);
        // Activity at 350 with an idle timeout of 300: deadline 650.
        c.activity_recorded(&id.store_id(), 1, 350, 300);
        assert!(hit(&c, &id, 450));
        assert!(!hit(&c, &id, 650), "past the new deadline: read through");
        assert_eq!(c.metrics.invalidations.get(), 0);
        // A read in flight meanwhile still inserts: nothing was written
        // that it could have missed (one shard: same sequence).
        c.insert(in_flight, &session(&other, 1000));
        assert!(hit(&c, &other, 450));
        // Another generation's activity (the record was rewritten since)
        // changes nothing; nor does an older activity.
        c.insert(ticket(&c, &id), &idle_until_400());
        c.activity_recorded(&id.store_id(), 2, 350, 300);
        c.activity_recorded(&id.store_id(), 1, 50, 300);
        assert!(!hit(&c, &id, 450));
    }

    #[test]
    fn a_cookie_with_the_right_lookup_half_and_a_wrong_secret_never_gets_the_entry() {
        let c = live(10);
        let id = SessionId::generate([1, 2]);
        let t = ticket(&c, &id);
        c.insert(t, &session(&id, 1000));
        let mut forged = id.encode().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = SessionId::parse(std::str::from_utf8(&forged).expect("ascii")).expect("id");
        assert_eq!(forged.store_id(), id.store_id());
        assert!(matches!(
            c.probe(&forged, &forged.store_id(), 150),
            Probe::Miss(_)
        ));
        // The real owner still hits.
        assert!(hit(&c, &id, 150));
    }

    #[test]
    fn an_entry_past_its_deadline_is_dropped_and_read_through() {
        let c = live(10);
        let id = SessionId::generate([1, 2]);
        let t = ticket(&c, &id);
        c.insert(t, &session(&id, 200));
        assert!(hit(&c, &id, 199));
        assert!(!hit(&c, &id, 200));
        assert!(c.is_empty());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_inserted() {
        let c = live(10);
        let id = SessionId::generate([1, 2]);
        let t = ticket(&c, &id);
        // The store answered with the old record, but the invalidation of
        // the write that replaced it arrived first.
        c.invalidate(&id.store_id());
        c.insert(t, &session(&id, 1000));
        assert!(c.is_empty());
    }

    #[test]
    fn an_expiry_does_not_void_a_concurrent_ticket_but_an_invalidation_does() {
        // One shard, so the two sessions share it.
        let c = live(10);
        let (old, other) = (SessionId::generate([1, 2]), SessionId::generate([1, 2]));
        let t = ticket(&c, &old);
        c.insert(t, &session(&old, 200));
        // A read of `other` is in flight when `old`'s entry is found past
        // its deadline and dropped: nothing was written, so its answer is
        // still current and is kept.
        let t = ticket(&c, &other);
        assert!(!hit(&c, &old, 200), "expired");
        c.insert(t, &session(&other, 1000));
        assert!(hit(&c, &other, 150), "the concurrent read was cached");
        // An invalidation of any key of the shard still voids a ticket.
        c.invalidate(&other.store_id());
        let t = ticket(&c, &other);
        c.invalidate(&old.store_id());
        c.insert(t, &session(&other, 1000));
        assert!(c.is_empty());
    }

    #[test]
    fn a_lost_tracking_connection_empties_the_cache_and_bypasses_it_until_confirmed() {
        let c = live(10);
        let id = SessionId::generate([1, 2]);
        let t = ticket(&c, &id);
        c.tracking_down(0);
        c.insert(t, &session(&id, 1000));
        assert!(matches!(c.probe(&id, &id.store_id(), 150), Probe::Bypass));
        c.tracking_confirmed(0, Instant::now());
        let t = ticket(&c, &id);
        c.insert(t, &session(&id, 1000));
        assert_eq!(c.len(), 1);
        c.tracking_down(0);
        assert!(c.is_empty());
        assert_eq!(c.metrics.flushes.get(), 2, "one flush per loss");
        assert_eq!(c.metrics.tracking_up.get(), 0);
    }

    #[test]
    fn a_confirmation_older_than_the_lease_stops_the_cache_serving() {
        let c = SessionCache::new(10, 2, CacheMetrics::default());
        assert!(
            !c.serving(),
            "nothing is served before tracking is confirmed"
        );
        c.tracking_confirmed(0, Instant::now());
        assert!(!c.serving(), "nor while one link of two is");
        c.tracking_confirmed(1, Instant::now());
        assert!(c.serving());
        let c2 = SessionCache {
            started: Instant::now() - LEASE - Duration::from_secs(1),
            ..c
        };
        c2.links[0].store(1, Ordering::SeqCst);
        assert!(!c2.serving(), "a confirmation older than the lease");
    }

    #[tokio::test]
    async fn a_request_marks_the_cache_wanted_and_a_bypass_wakes_every_idle_link() {
        let c = SessionCache::new(10, 2, CacheMetrics::default());
        let c2 = SessionCache {
            started: Instant::now() - LEASE - Duration::from_secs(1),
            ..c
        };
        assert!(
            !c2.wanted_within(LEASE),
            "no request for longer than the lease: the links idle"
        );
        let id = SessionId::generate([1, 2]);
        // Not confirmed: the probe reads through and wakes both links.
        assert!(matches!(c2.probe(&id, &id.store_id(), 150), Probe::Bypass));
        assert!(c2.wanted_within(Duration::from_millis(10)));
        for link in 0..2 {
            tokio::time::timeout(Duration::from_secs(1), c2.wanted_again(link))
                .await
                .unwrap_or_else(|_| panic!("link {link} was not woken"));
        }
        // A served probe wakes nobody: the links are pinging already.
        c2.tracking_confirmed(0, Instant::now());
        c2.tracking_confirmed(1, Instant::now());
        assert!(matches!(c2.probe(&id, &id.store_id(), 150), Probe::Miss(_)));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), c2.wanted_again(0))
                .await
                .is_err()
        );
    }

    /// What a hit costs, against the deep copy a hit used to hand out
    /// (claims, tokens, record: what a real login stores). A measurement,
    /// not a check: `cargo test --release --lib cache_hit_cost --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn cache_hit_cost() {
        let c = live(10);
        let id = SessionId::generate([1, 2]);
        let mut s = Arc::unwrap_or_clone(session(&id, u64::MAX));
        s.secrets.access_token = SecretString::new("a".repeat(900));
        s.secrets.refresh_token = Some(SecretString::new("r".repeat(400)));
        s.secrets.id_token = Some(SecretString::new("i".repeat(900)));
        s.secrets.claims = format!(r#"{{"sub":"{}"}}"#, "c".repeat(700)).into();
        s.stored.body.secrets = vec![0; 2400];
        let t = ticket(&c, &id);
        c.insert(t, &Arc::new(s));
        let n = 20_000u32;
        c.tracking_confirmed(0, Instant::now());
        let started = Instant::now();
        for _ in 0..n {
            let Probe::Hit(s) = c.probe(&id, &id.store_id(), 150) else {
                panic!("a hit");
            };
            std::hint::black_box(&s);
        }
        let hit = started.elapsed() / n;
        c.tracking_confirmed(0, Instant::now());
        let started = Instant::now();
        for _ in 0..n {
            let Probe::Hit(s) = c.probe(&id, &id.store_id(), 150) else {
                panic!("a hit");
            };
            std::hint::black_box(Session::clone(&s));
        }
        let copied = started.elapsed() / n;
        println!("hit (shared) {hit:?}; hit + deep copy (before) {copied:?}");
    }

    #[test]
    fn the_bound_holds_by_evicting() {
        let c = live(3);
        for _ in 0..10 {
            let id = SessionId::generate([1, 2]);
            let t = ticket(&c, &id);
            c.insert(t, &session(&id, 1000));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.metrics.entries.get(), 3);
    }
}
