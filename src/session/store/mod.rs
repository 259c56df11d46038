//! The session store: where records, per-user and per-provider-session
//! indexes, single-use values and revocation tombstones live. Pending logins
//! do not: they travel sealed in the browser's login cookie, so an anonymous
//! request writes nothing here.
//!
//! [`SessionStore`] is the contract; [`redis::RedisStore`] is the
//! implementation for real deployments (shared by every instance) and
//! [`memory::MemoryStore`] the single-process one for development and tests.
//! Every mutation keeps a record and its indexes in agreement atomically.
//! The store moves opaque bytes: it never sees a token or a claim in clear.
//!
//! Key layout (under the configured prefix `P`; `{T}` is a Redis hash tag:
//! the 4 hex digits of a session's shard tag, a keyed hash of its user):
//! - `P s:{T}{id}` — hash: `r` record bytes, `u` user hash, `x` provider-sid
//!   hash (32 bytes each; hex in records of earlier versions, and with
//!   `store.record_layout = "previous"`); expires one idle timeout after
//!   its idle deadline (see `a:` below);
//! - `P t:{T}{id}` — tombstone of a revoked session (reason, actor, time);
//! - `P a:{T}{id16}` — the session's last activity (`id16`: the first 16
//!   hex digits of the ID after its tag, see `redis_keys`): an integer
//!   stamp (the time and a tag under the server key), written by an
//!   activity touch
//!   instead of the record so that no process's session cache is
//!   invalidated (`a:` is not a tracked prefix); expires with the idle
//!   deadline it sets. The record's key lives until its own idle deadline
//!   plus one idle timeout (capped at the absolute deadline), so activity
//!   recorded here can keep the session for one more idle period before
//!   the record must be rewritten;
//! - `P l:{T}{id}` — refresh lock;
//! - `P u:{T}{user_hash}` — sorted set of the user's session IDs by creation
//!   time (ms). Same tag as the user's sessions: one slot per user, so a
//!   create or revoke changes record and index atomically;
//! - `P x:{sid_hash}` — sorted set of session IDs (by creation time) for one
//!   provider session; in its own slot, so written *before* the session and
//!   cleaned *after* it (see `redis.rs`): it may hold a dead entry for a
//!   while (the sweep drops it), never miss a live session;
//! - `P o:{kind}:{hash}` — single-use values (logout handles);
//! - `P c:{hash}` — claim markers: a login state spent at the callback;
//! - `P j:{hash}` — seen logout-token IDs;
//! - `P shard-key` — the random key of the shard tags' keyed hash (no TTL).
//!
//! Sessions from before shard tags (64-hex IDs) keep the legacy layout under
//! the legacy prefix `L` (by default `P`): `L s:{id}`, `L t:{id}`,
//! `L l:{id}`, `L a:{id}`, `L u:{user_hash}` and `L sid:{sid_hash}` (a plain set). They
//! are read, revoked and swept there until they expire; nothing new is
//! written in that layout.

pub mod memory;
pub mod redis;
mod redis_keys;
mod redis_link;
mod redis_scripts;
pub(crate) mod tracking;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::session::cookie::{ShardTag, StoreId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session store did not answer within {0:?}")]
    Timeout(Duration),
}

/// A new session to write, with what its indexes need.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a StoreId,
    pub record: &'a [u8],
    pub ttl_millis: u64,
    pub user_hash: &'a str,
    pub sid_hash: Option<&'a str>,
    pub created_millis: u64,
    /// Keep at most this many live sessions for the user, evicting the
    /// oldest (live at `eviction.at`: see [`SessionStore::count_sessions`]).
    pub max_per_user: Option<u32>,
    /// Recorded on sessions evicted by the limit.
    pub eviction: &'a Revocation,
    /// How long the longest possible session lives: the index TTL.
    pub index_ttl_millis: u64,
}

/// Why a session was ended, and by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    Logout,
    Admin,
    Backchannel,
    Limit,
    RefreshFailed,
    User,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Admin => "admin",
            Self::Backchannel => "backchannel",
            Self::Limit => "limit",
            Self::RefreshFailed => "refresh_failed",
            Self::User => "user",
        }
    }
}

/// What [`SessionStore::get`] found under a session ID, in one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The record of a session with no tombstone.
    Live(Vec<u8>),
    /// A tombstone: the session was ended on purpose, for this reason
    /// (`None` when the tombstone names a reason this version does not
    /// know). Wins over a record present again.
    Revoked(Option<RevokeReason>),
    /// Neither record nor tombstone: never existed, or expired.
    Missing,
}

impl Fetched {
    /// The record bytes, if the session is live.
    pub fn into_live(self) -> Option<Vec<u8>> {
        match self {
            Self::Live(bytes) => Some(bytes),
            Self::Revoked(_) | Self::Missing => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub reason: RevokeReason,
    pub actor: String,
    pub at: u64,
}

impl Revocation {
    pub fn new(reason: RevokeReason, actor: impl Into<String>, at: u64) -> Self {
        Self {
            reason,
            actor: actor.into(),
            at,
        }
    }
}

/// The outcome of revoking one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RevokeOutcome {
    Revoked,
    /// It had been revoked before; this is how.
    AlreadyRevoked {
        previous: Option<Revocation>,
    },
    NotFound,
}

/// What [`SessionStore::read`] found: the record (or why there is none)
/// and the session's last activity recorded apart from it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub fetched: Fetched,
    /// The activity stamp (see [`SessionStore::record_activity`]); only
    /// with a live record.
    pub activity: Option<u64>,
}

/// One entry of a user's session list.
#[derive(Debug, Clone)]
pub struct ListedSession {
    pub id: StoreId,
    pub created_millis: u64,
    pub record: Vec<u8>,
    /// The session's activity stamp, if one is recorded apart.
    pub activity: Option<u64>,
}

/// Where the next page of a user's sessions starts: just after this entry
/// in the listing order (newest first; equal creation times by descending
/// ID). Pages stay consistent while sessions come and go between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub created_millis: u64,
    pub id: StoreId,
}

impl ListCursor {
    /// The opaque form handed to API clients: `{created_millis}.{id}`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_millis, self.id.as_str())
    }

    /// Accepts only what [`Self::encode`] produces.
    pub fn parse(s: &str) -> Option<Self> {
        let (millis, id) = s.split_once('.')?;
        if millis.is_empty() || millis.len() > 16 || !millis.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            created_millis: millis.parse().ok()?,
            id: StoreId::parse(id)?,
        })
    }
}

/// The most entries one `list_user` call returns, whatever is asked: the
/// work one call does in the store stays bounded.
pub const MAX_PAGE: usize = 1000;

/// One page of a user's live sessions.
#[derive(Debug, Clone, Default)]
pub struct SessionPage {
    /// At most the requested limit, newest first.
    pub sessions: Vec<ListedSession>,
    /// Where the next page starts, if more entries may follow (`None`: this
    /// was the last page). A page may be short, even empty, and still name
    /// a next one when the store skipped dead index entries.
    pub next: Option<ListCursor>,
}

/// Kinds of single-use values.
#[derive(Debug, Clone, Copy)]
pub enum OnceKind {
    Logout,
}

impl OnceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
        }
    }
}

/// Store statistics for operators.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStats {
    pub sessions: u64,
    pub users: u64,
    /// Users with the most sessions, descending.
    pub top_users: Vec<(String, u64)>,
    pub memory_bytes: Option<u64>,
}

/// The shard tag of `user_hash` under `key`: the first 16 bits of
/// HMAC-SHA-256. Without the key the tag cannot be linked to a user.
pub fn shard_tag(key: &[u8], user_hash: &str) -> ShardTag {
    use hmac::Mac;
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return [0, 0];
    };
    mac.update(user_hash.as_bytes());
    let out = mac.finalize().into_bytes();
    [out[0], out[1]]
}

/// How long a tombstone lasts at least: long enough for "already revoked"
/// answers and for late requests to be told why. It also lasts as long as
/// the revoked record would have, so a restored copy never outlives it.
pub const TOMBSTONE_TTL_MILLIS: u64 = 24 * 3600 * 1000;

pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the configured store (connections are made lazily).
pub fn open(config: &crate::config::Config) -> anyhow::Result<Store> {
    use crate::config::StoreKind;
    Ok(match &config.store.kind {
        StoreKind::Memory => Store::Memory(memory::MemoryStore::new()),
        StoreKind::Redis(r) => Store::Redis(
            redis::RedisStore::new(r, &config.store.key_prefix, config.store.timeout)?
                .with_legacy_prefix(&config.store.legacy_key_prefix)
                .with_record_layout(config.store.record_layout)
                .with_idle_timeout(config.session.idle_timeout),
        ),
    })
}

/// The operations the gateway needs from a session store.
pub trait SessionStore: Send + Sync {
    /// The shard tag of a user's sessions: a keyed hash of the user hash,
    /// stable for the deployment (every instance agrees), so the user's
    /// sessions and index share a Redis Cluster slot and different users
    /// spread. Carries nothing that names the user.
    fn shard_of(&self, user_hash: &str) -> impl Future<Output = StoreResult<ShardTag>> + Send;

    /// The record bytes of a live session, or the reason of its tombstone,
    /// in one round trip. A session with a tombstone is ended even if its
    /// record is present again (restored from a backup or written back by
    /// someone with store access): [`Fetched::Revoked`].
    fn get(&self, id: &StoreId) -> impl Future<Output = StoreResult<Fetched>> + Send;

    /// [`Self::get`] with the session's activity stamp, in the same round
    /// trip: what every reader that judges a session's idle deadline uses.
    fn read(&self, id: &StoreId) -> impl Future<Output = StoreResult<Read>> + Send;

    /// Records a session's last activity apart from its record, so the
    /// record, and every process's cached copy of it, is left alone.
    /// `stamp` is opaque to the store except that a later activity is a
    /// greater stamp: the greater of it and the stamp already there is
    /// kept, until `ttl_millis` from now. Written only if the record
    /// exists and its key outlives `ttl_millis`; `Ok(false)` otherwise
    /// (the caller rewrites the record instead, which moves its deadline).
    fn record_activity(
        &self,
        id: &StoreId,
        stamp: u64,
        ttl_millis: u64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Writes a new session with its index entries; evicts the user's oldest
    /// sessions beyond `max_per_user`. Returns the evicted IDs.
    fn create(
        &self,
        new: &NewSession<'_>,
    ) -> impl Future<Output = StoreResult<Vec<StoreId>>> + Send;

    /// Replaces a record only if its stored generation is still `expected`.
    /// `Ok(false)`: someone else wrote first, or the session is gone.
    fn replace_if(
        &self,
        id: &StoreId,
        expected: u64,
        record: &[u8],
        ttl_millis: u64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Ends one session (record and index entries) and leaves a tombstone.
    fn revoke(
        &self,
        id: &StoreId,
        why: &Revocation,
    ) -> impl Future<Output = StoreResult<RevokeOutcome>> + Send;

    /// Ends every session of a user except `except`; returns the revoked IDs.
    fn revoke_user(
        &self,
        user_hash: &str,
        except: Option<&StoreId>,
        why: &Revocation,
    ) -> impl Future<Output = StoreResult<Vec<StoreId>>> + Send;

    /// Ends every session bound to one provider session ID.
    fn revoke_sid(
        &self,
        sid_hash: &str,
        why: &Revocation,
    ) -> impl Future<Output = StoreResult<Vec<StoreId>>> + Send;

    /// One page of a user's live sessions, newest first, starting after
    /// `after` (from the start if `None`), at most `limit` (clamped to
    /// 1..=[`MAX_PAGE`]); dead index entries met on the way are dropped.
    /// The work per call is bounded by the page size, never by the size of
    /// the user's index.
    fn list_user(
        &self,
        user_hash: &str,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<SessionPage>> + Send;

    /// Stores a single-use value.
    fn put_once(
        &self,
        kind: OnceKind,
        key: &str,
        value: &[u8],
        ttl_millis: u64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Takes a single-use value: the first caller gets it, later ones `None`.
    fn take_once(
        &self,
        kind: OnceKind,
        key: &str,
    ) -> impl Future<Output = StoreResult<Option<Vec<u8>>>> + Send;

    /// Claims `key` once until `ttl_millis` (`SET NX PX`): `true` for the
    /// first caller on any instance, `false` for every later one while the
    /// claim lives. The marker is tiny: callers bound how many they make.
    fn claim_once(
        &self,
        key: &str,
        ttl_millis: u64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Takes a short exclusive lock (for refresh); `true` if acquired.
    fn lock(
        &self,
        id: &StoreId,
        token: &str,
        ttl_millis: u64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Releases a lock if `token` still holds it.
    fn unlock(&self, id: &StoreId, token: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Records a logout-token `jti`; `true` if it had not been seen.
    fn remember_jti(
        &self,
        hash: &str,
        ttl_millis: u64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Forgets a logout-token `jti` remembered by a logout that then
    /// failed, so the provider's retry of the same token is carried out
    /// rather than refused as a replay.
    fn forget_jti(&self, hash: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Drops index entries whose sessions have expired, and removes the
    /// sessions that have ended at `now` though their record is still
    /// there (see [`SessionStore::count_sessions`]) with their entries;
    /// returns how many entries went.
    fn sweep(&self, now: u64) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Live sessions and users at `now` (after a [`Self::sweep`]).
    fn stats(&self, top: usize, now: u64) -> impl Future<Output = StoreResult<StoreStats>> + Send;

    /// How many sessions are live at `now` (unix seconds; the
    /// active-sessions gauge). A scan of the keys: call it from a
    /// background task, not per request.
    ///
    /// A record's key outlives its session's idle deadline by up to one
    /// idle period (for activity recorded apart: see the key layout), so
    /// "live" is judged as a read judges it, on the effective idle
    /// deadline: a record counts unless `now` is past its absolute
    /// deadline, or past its own idle deadline while the session has no
    /// activity key (that key expires at the idle deadline its activity
    /// set). Neither the record's tag nor the stamp's is checked here: a
    /// writer to the store can change counts anyway, and what is served is
    /// decided by a verified read alone. The same rule makes `create`'s
    /// per-user limit count only live sessions (an ended one is removed
    /// first, never a live one evicted for it), and makes `revoke` and
    /// `revoke_user` remove an ended one as for a session that expired
    /// (`NotFound`, no tombstone, not among the revoked). Their `now` is
    /// the revocation's time (`Revocation::at`).
    fn count_sessions(&self, now: u64) -> impl Future<Output = StoreResult<u64>> + Send;

    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
}

/// The configured store. An enum rather than a trait object so the hot path
/// pays no boxing or dynamic dispatch.
pub enum Store {
    Redis(redis::RedisStore),
    Memory(memory::MemoryStore),
}

/// Told, by a store reaching Redis through Sentinel, of each master it is
/// about to use (`host:port`), *before* any command is sent there: the
/// session cache must stop trusting invalidation connections that listen to
/// another server before a request can read or write the new master (see
/// `session::cache::SessionCache::store_uses`). Dropped with the store.
pub trait MasterObserver: Send + Sync {
    /// The store is about to use the master at `addr`; called before it
    /// does, and again for the same master after a reconnection.
    fn using(&self, addr: &str);
}

impl Store {
    /// Tells `observer` of every master the store's Sentinel link uses, the
    /// one in use now first; replaces an earlier observer. A store of one
    /// fixed server, a Cluster or memory uses no announced master: the
    /// observer is dropped.
    pub fn observe_masters(&self, observer: Box<dyn MasterObserver>) {
        if let Self::Redis(s) = self {
            s.observe_masters(observer);
        }
    }

    /// The active-sessions gauge's figure: on Redis counted by one process
    /// of the fleet per `every` and shared (`RedisStore::fleet_count`); in
    /// memory, this process's own count. `None`: none published yet.
    pub async fn fleet_count(&self, every: Duration, now: u64) -> StoreResult<Option<u64>> {
        match self {
            Self::Redis(s) => s.fleet_count(every, now).await,
            Self::Memory(s) => s.count_sessions(now).await.map(Some),
        }
    }

    /// The periodic index sweep: on Redis by one process of the fleet per
    /// `every` (`RedisStore::fleet_sweep`; `None` where another has it);
    /// in memory, this process's own.
    pub async fn fleet_sweep(&self, every: Duration, now: u64) -> StoreResult<Option<u64>> {
        match self {
            Self::Redis(s) => s.fleet_sweep(every, now).await,
            Self::Memory(s) => s.sweep(now).await.map(Some),
        }
    }
}

/// Calls the configured store, each call in a client span for exported
/// traces named for the operation (no key or value is recorded).
/// `as name`: the operation's name in the span, where it is not the
/// method's (a session read is `get` to operators, whichever method reads).
macro_rules! delegate {
    ($self:ident, $s:ident => $recv:ident . $op:ident ( $($arg:expr),* )) => {
        delegate!($self, $s => $recv.$op($($arg),*) as $op)
    };
    ($self:ident, $s:ident => $recv:ident . $op:ident ( $($arg:expr),* ) as $name:ident) => {{
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            target: crate::traces::SPANS,
            "store",
            otel.name = concat!("store ", stringify!($name)),
            otel.kind = "client",
            db.system.name = $self.system_name(),
            db.operation.name = stringify!($name),
        );
        match $self {
            Store::Redis($s) => $recv.$op($($arg),*).instrument(span).await,
            Store::Memory($s) => $recv.$op($($arg),*).instrument(span).await,
        }
    }};
}

impl Store {
    /// The store's kind, as traces name it.
    fn system_name(&self) -> &'static str {
        match self {
            Store::Redis(_) => "redis",
            Store::Memory(_) => "memory",
        }
    }
}

impl SessionStore for Store {
    async fn shard_of(&self, user_hash: &str) -> StoreResult<ShardTag> {
        delegate!(self, s => s.shard_of(user_hash))
    }
    async fn get(&self, id: &StoreId) -> StoreResult<Fetched> {
        delegate!(self, s => s.get(id))
    }
    async fn read(&self, id: &StoreId) -> StoreResult<Read> {
        delegate!(self, s => s.read(id) as get)
    }
    async fn record_activity(
        &self,
        id: &StoreId,
        stamp: u64,
        ttl_millis: u64,
    ) -> StoreResult<bool> {
        delegate!(self, s => s.record_activity(id, stamp, ttl_millis))
    }
    async fn create(&self, new: &NewSession<'_>) -> StoreResult<Vec<StoreId>> {
        delegate!(self, s => s.create(new))
    }
    async fn replace_if(
        &self,
        id: &StoreId,
        expected: u64,
        record: &[u8],
        ttl_millis: u64,
    ) -> StoreResult<bool> {
        delegate!(self, s => s.replace_if(id, expected, record, ttl_millis))
    }
    async fn revoke(&self, id: &StoreId, why: &Revocation) -> StoreResult<RevokeOutcome> {
        delegate!(self, s => s.revoke(id, why))
    }
    async fn revoke_user(
        &self,
        user_hash: &str,
        except: Option<&StoreId>,
        why: &Revocation,
    ) -> StoreResult<Vec<StoreId>> {
        delegate!(self, s => s.revoke_user(user_hash, except, why))
    }
    async fn revoke_sid(&self, sid_hash: &str, why: &Revocation) -> StoreResult<Vec<StoreId>> {
        delegate!(self, s => s.revoke_sid(sid_hash, why))
    }
    async fn list_user(
        &self,
        user_hash: &str,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<SessionPage> {
        delegate!(self, s => s.list_user(user_hash, after, limit))
    }
    async fn put_once(
        &self,
        kind: OnceKind,
        key: &str,
        value: &[u8],
        ttl_millis: u64,
    ) -> StoreResult<()> {
        delegate!(self, s => s.put_once(kind, key, value, ttl_millis))
    }
    async fn take_once(&self, kind: OnceKind, key: &str) -> StoreResult<Option<Vec<u8>>> {
        delegate!(self, s => s.take_once(kind, key))
    }
    async fn claim_once(&self, key: &str, ttl_millis: u64) -> StoreResult<bool> {
        delegate!(self, s => s.claim_once(key, ttl_millis))
    }
    async fn lock(&self, id: &StoreId, token: &str, ttl_millis: u64) -> StoreResult<bool> {
        delegate!(self, s => s.lock(id, token, ttl_millis))
    }
    async fn unlock(&self, id: &StoreId, token: &str) -> StoreResult<()> {
        delegate!(self, s => s.unlock(id, token))
    }
    async fn remember_jti(&self, hash: &str, ttl_millis: u64) -> StoreResult<bool> {
        delegate!(self, s => s.remember_jti(hash, ttl_millis))
    }
    async fn forget_jti(&self, hash: &str) -> StoreResult<()> {
        delegate!(self, s => s.forget_jti(hash))
    }
    async fn sweep(&self, now: u64) -> StoreResult<u64> {
        delegate!(self, s => s.sweep(now))
    }
    async fn stats(&self, top: usize, now: u64) -> StoreResult<StoreStats> {
        delegate!(self, s => s.stats(top, now))
    }
    async fn count_sessions(&self, now: u64) -> StoreResult<u64> {
        delegate!(self, s => s.count_sessions(now))
    }
    async fn ping(&self) -> StoreResult<()> {
        delegate!(self, s => s.ping())
    }
}
