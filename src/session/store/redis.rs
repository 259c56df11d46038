//! Redis implementation of the session store, shared by every gateway
//! instance.
//!
//! One multiplexed connection (redis-rs `ConnectionManager`) carries all
//! traffic and reconnects by itself after Redis comes back; the link
//! (`redis_link.rs`) replaces it when a command goes unanswered or gets a
//! reply of another kind than it gives. Because the
//! connection is shared by concurrent requests, WATCH/MULTI cannot be used;
//! every multi-key mutation is a Lua script, which Redis runs atomically.
//! Each operation is bounded by the configured timeout: past it, the caller
//! gets [`StoreError::Timeout`] and the request a 503.
//!
//! Redis Cluster spreads the sessions: a session's keys and its user's
//! index share one hash slot (the shard tag), different users do not, and
//! every script declares its keys and touches one slot only (see
//! `redis_scripts.rs`). The provider-session index lives in a slot of its
//! own, so it is written before a session and cleaned after one; a lost
//! write leaves a dead entry for the sweep, never a session that a
//! back-channel logout cannot find. Keyless commands (SCAN, INFO) visit
//! every primary. While a slot migrates (a reshard), a lookup reads its
//! keys one by one (`redis/read.rs`) and a script over several keys waits
//! for the slot to move, within the timeout (`redis/migrating.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::{AsyncCommands, RedisResult};

use super::redis_keys::{Layout, SidIndex, field_hash, index_field};
use super::redis_link::{ClusterLink, FixedLink, Link, SentinelLink};
use super::redis_scripts::Scripts;
use super::{
    Fetched, ListCursor, ListedSession, MAX_PAGE, NewSession, OnceKind, Read, Revocation,
    RevokeOutcome, SessionPage, SessionStore, StoreError, StoreResult, StoreStats,
    TOMBSTONE_TTL_MILLIS,
};
use crate::config::{RecordLayout, RedisConfig, RedisEndpoint};
use crate::session::cookie::{ShardTag, StoreId};
use crate::session::record::{GENERATION_AT, StoredSession};

mod migrating;
mod read;
mod sweep;
use read::{fetched, stamp, wrong_type_as};
use sweep::glob_escape;

pub struct RedisStore {
    conn: Link,
    keys: Layout,
    timeout: Duration,
    scripts: Box<Scripts>,
    /// How `u` and `x` are written (`store.record_layout`): 32 bytes, or
    /// ([`RecordLayout::Previous`]) hex as the version before wrote them.
    layout: RecordLayout,
    /// The shard tags' hash key, read (or created) once from the store.
    shard_key: tokio::sync::OnceCell<Vec<u8>>,
    /// Where the store is, for error messages: `redis://host:port/db`, the
    /// Sentinels or the cluster seeds; never a user name or password.
    address: String,
    /// `session.idle_timeout` in ms as configured at start-up (0: not
    /// told): lets the walks over every record (the sweep, the sessions
    /// count) skip reading the record of a key with more than this left,
    /// whose idle deadline cannot have passed (see `ended` in
    /// `redis_scripts`). Only a shortcut: raised later by a reload, it
    /// can only let an ended session be counted until the next restart.
    live_hint_millis: u64,
}

/// `endpoint` as an operator configured it, without credentials.
pub(super) fn describe(endpoint: &RedisEndpoint, db: i64) -> String {
    let nodes = |nodes: &[(String, u16)]| {
        nodes
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match endpoint {
        RedisEndpoint::Url(url) => {
            let host = url.host_str().unwrap_or("?");
            let port = url.port().unwrap_or(6379);
            format!("{}://{host}:{port}/{db}", url.scheme())
        }
        RedisEndpoint::Sentinel(s) => {
            format!("master `{}` via Sentinels {}", s.master, nodes(&s.nodes))
        }
        RedisEndpoint::Cluster { nodes: n, .. } => format!("cluster nodes {}", nodes(n)),
    }
}

/// A private CA (trusted instead of the public roots) and/or a client
/// certificate for mutual TLS, when configured.
pub(super) fn certificates(config: &RedisConfig) -> Option<redis::TlsCertificates> {
    (config.tls_ca_pem.is_some() || config.tls_client.is_some()).then(|| redis::TlsCertificates {
        client_tls: config.tls_client.as_ref().map(|c| redis::ClientTlsConfig {
            client_cert: c.cert_pem.clone(),
            client_key: c.key_pem.expose().as_bytes().to_vec(),
        }),
        root_cert: config.tls_ca_pem.clone(),
    })
}

/// The client of one fixed server (`store.url`), with the configured
/// database, credentials and certificates.
pub(super) fn fixed_client(
    config: &RedisConfig,
    url: &url::Url,
    certificates: Option<redis::TlsCertificates>,
    address: &str,
) -> Result<redis::Client, StoreError> {
    let mut info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
        .map_err(|e| StoreError::Unavailable(format!("store.url: {e}")))?;
    let mut settings = info.redis_settings().clone().set_db(config.db);
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(pw) = &config.password {
        settings = settings.set_password(pw.expose());
    }
    info = info.set_redis_settings(settings);
    match certificates {
        Some(certificates) => redis::Client::build_with_tls(info, certificates),
        None => redis::Client::open(info),
    }
    .map_err(|e| StoreError::Unavailable(format!("{e} (Redis at {address})")))
}

/// The store error for a shard key that cannot be read. A key of another
/// type there is not replaced: a new key would put every user's new
/// sessions in other slots than their existing ones (their index, their
/// session list and the per-user limit would split), so the operator
/// decides, and is told exactly what to run and what it costs.
fn shard_key_problem(key: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(detail) if detail.contains("WRONGTYPE") => {
            tracing::error!(
                key,
                "the shard tags' key holds a value of another type (written by something else?): every login fails until it is fixed. Fix: `DEL {key}`; the gateway then creates a new key, and sessions created before stay valid until they end, but each user's older sessions are listed, limited and revoked apart from their new ones (see docs/operations.md)"
            );
            StoreError::Unavailable(format!(
                "{key} is not a string (WRONGTYPE); fix: DEL {key} (see docs/operations.md, \"shard-key\")"
            ))
        }
        e => e,
    }
}

impl RedisStore {
    /// `SET key value NX PX ttl`: `true` if this call set it (single-use
    /// markers, locks, seen token IDs, the sweep's and the count's
    /// leases). A key of another type there is no marker of ours: it is
    /// replaced (the `SET_NX` script says why), never taken as "held".
    async fn set_nx(&self, key: String, value: &str, ttl_millis: u64) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let kind = key
            .strip_prefix(self.keys.prefix.as_str())
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_default()
            .to_owned();
        let r: i64 = self
            .run(
                self.scripts
                    .set_nx
                    .key(key)
                    .arg(value)
                    .arg(ttl_millis.max(1))
                    .invoke_async(&mut conn),
            )
            .await?;
        if self.script_code("SET_NX", r, &[0, 1, 2])? == 2 {
            tracing::warn!(
                kind,
                "a marker key (lock, claim, jti or lease) held a key of another type (written by something else?): replaced"
            );
        }
        Ok(r != 0)
    }

    /// Prepares the connection; it is opened on first use and re-opened after
    /// failures, so the gateway starts (unready) while Redis is down.
    pub fn new(config: &RedisConfig, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let certificates = certificates(config);
        let address = describe(&config.endpoint, config.db);
        let url = match &config.endpoint {
            RedisEndpoint::Url(url) => url,
            RedisEndpoint::Cluster { nodes, tls } => {
                let link = ClusterLink::new(
                    nodes,
                    *tls,
                    config,
                    certificates,
                    (config.connect_timeout, timeout),
                )
                .map_err(|e| StoreError::Unavailable(format!("store.cluster_nodes: {e}")))?;
                return Ok(Self::with_link(
                    Link::Cluster(Arc::new(link)),
                    prefix,
                    timeout,
                    address,
                ));
            }
            RedisEndpoint::Sentinel(sentinel) => {
                let link = SentinelLink::new(sentinel, config, certificates, manager_config)
                    .map_err(|e| StoreError::Unavailable(format!("store.sentinels: {e}")))?;
                return Ok(Self::with_link(
                    Link::Sentinel(Arc::new(link)),
                    prefix,
                    timeout,
                    address,
                ));
            }
        };
        let client = fixed_client(config, url, certificates, &address)?;
        let link = FixedLink::new(client, manager_config);
        Ok(Self::with_link(
            Link::Fixed(Arc::new(link)),
            prefix,
            timeout,
            address,
        ))
    }

    fn with_link(conn: Link, prefix: &str, timeout: Duration, address: String) -> Self {
        Self {
            keys: Layout {
                prefix: prefix.to_owned(),
                legacy: prefix.to_owned(),
                cluster: matches!(conn, Link::Cluster(_)),
            },
            timeout,
            scripts: Box::new(Scripts::new()),
            layout: RecordLayout::Compact,
            shard_key: tokio::sync::OnceCell::new(),
            address,
            live_hint_millis: 0,
            conn,
        }
    }

    /// See [`super::Store::observe_masters`].
    pub fn observe_masters(&self, observer: Box<dyn super::MasterObserver>) {
        if let Link::Sentinel(link) = &self.conn {
            link.observe_masters(observer);
        }
    }

    /// Where sessions of the layout before shard tags live (by default the
    /// prefix itself): read, revoked and swept there until they expire.
    pub fn with_legacy_prefix(mut self, legacy: &str) -> Self {
        legacy.clone_into(&mut self.keys.legacy);
        self
    }

    /// Tells the store `session.idle_timeout`, which the walks over every
    /// record use as a shortcut (see `live_hint_millis`).
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.live_hint_millis = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Writes the index hashes of new records in `layout`'s form; both
    /// forms are read whatever it is.
    pub fn with_record_layout(mut self, layout: RecordLayout) -> Self {
        self.layout = layout;
        self
    }

    /// An index hash as this store writes it into `u` or `x`.
    fn index_field(&self, hex_hash: &str) -> Vec<u8> {
        index_field(hex_hash, self.layout)
    }

    async fn run<T>(&self, op: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(answer) => self.answer(answer),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// What Redis answered, as the store's result.
    /// A reply of another type than the command gives (a conversion that
    /// failed, a script answer of another shape) also replaces the
    /// connection (see [`Link::distrust`]).
    fn answer<T>(&self, answer: RedisResult<T>) -> StoreResult<T> {
        match answer {
            Ok(v) => Ok(v),
            Err(e) if e.is_timeout() => Err(StoreError::Timeout(self.timeout)),
            Err(e)
                if matches!(
                    e.kind(),
                    redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
                ) =>
            {
                self.conn
                    .distrust("a reply of another type than the command gives");
                Err(StoreError::Unavailable(format!(
                    "{e} (Redis at {})",
                    self.address
                )))
            }
            Err(e) => Err(StoreError::Unavailable(format!(
                "{e} (Redis at {})",
                self.address
            ))),
        }
    }

    /// `code` if it is one of the codes `script` answers. Another comes
    /// from a store (or a proxy in front of it) that answered something
    /// else than the script: an error (a 503) that replaces the connection,
    /// never read as one of the answers (a logout that ended nothing taken
    /// for one that found no session, a marker taken for set).
    fn script_code(&self, script: &str, code: i64, valid: &[i64]) -> StoreResult<i64> {
        if valid.contains(&code) {
            return Ok(code);
        }
        self.conn
            .distrust("a script answered a code it never gives");
        Err(StoreError::Unavailable(format!(
            "the {script} script got the code {code}, which it never answers (Redis at {})",
            self.address
        )))
    }

    fn ids(values: Vec<String>) -> Vec<StoreId> {
        values.iter().filter_map(|s| StoreId::parse(s)).collect()
    }

    /// The shard tags' hash key: read once; the first instance ever to ask
    /// creates it (`SET NX`, so concurrent first instances agree). It has no
    /// TTL: deleting it would move users' indexes.
    async fn shard_key(&self) -> StoreResult<&[u8]> {
        let key = self.keys.shard_key();
        self.shard_key
            .get_or_try_init(|| async {
                let mut conn = self.conn.clone();
                let found: Option<Vec<u8>> = self
                    .run(conn.get(&key))
                    .await
                    .map_err(|e| shard_key_problem(&key, e))?;
                if let Some(k) = found {
                    return Ok(k);
                }
                let mut fresh = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
                let _: Option<String> = self
                    .run(
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(crate::session::cookie::hex(&fresh))
                            .arg("NX")
                            .query_async(&mut conn),
                    )
                    .await?;
                let found: Option<Vec<u8>> = self.run(conn.get(&key)).await?;
                found.ok_or_else(|| {
                    StoreError::Unavailable(format!("{key} vanished as it was written"))
                })
            })
            .await
            .map(Vec::as_slice)
    }

    /// Removes a session from a provider-session index, after the session
    /// was ended (the index is in another slot). Best effort: an entry left
    /// behind names a dead session, which a back-channel logout merely
    /// tombstones again and the sweep drops.
    async fn unindex_sid(&self, id: &StoreId, sid_hash: &str) {
        if sid_hash.is_empty() {
            return;
        }
        let (key, kind) = self.keys.sid_index_of(id, sid_hash);
        let cmd = match kind {
            SidIndex::Sorted => "ZREM",
            SidIndex::Set => "SREM",
        };
        let mut conn = self.conn.clone();
        let done: StoreResult<i64> = self
            .run(
                redis::cmd(cmd)
                    .arg(&key)
                    .arg(id.as_str())
                    .query_async(&mut conn),
            )
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "provider-session index entry left for the sweep");
        }
    }

    /// Ends one session by ID: reads which user index lists it, then ends
    /// record, index entry and leaves a tombstone in one script on the
    /// session's slot. With `fence`, an ID without record or tombstone gets a
    /// tombstone too (revocation by provider session: the session may be
    /// being written). A session that had ended at `now` though its record
    /// was there is removed and answered as unknown. Returns the script's
    /// `(code, text)`; see `REVOKE`.
    async fn end_one(
        &self,
        id: &StoreId,
        tomb: &str,
        fence: bool,
        now: u64,
    ) -> StoreResult<(i64, String)> {
        let (record, tombstone) = (self.keys.record(id), self.keys.tombstone(id));
        for _ in 0..3 {
            let mut conn = self.conn.clone();
            // `u` as stored (bytes, or hex from an older version): the
            // script compares it as it is.
            let user: Option<Vec<u8>> = self
                .run(async {
                    wrong_type_as(conn.hget(&record, "u").await, None, "a session's record")
                })
                .await?;
            let mut call = self.scripts.revoke.prepare_invoke();
            call.key(&record)
                .key(&tombstone)
                .key(self.keys.activity(id));
            if let Some(uh) = &user {
                call.key(self.keys.user_index_of(id, &field_hash(uh)));
            }
            call.arg(tomb)
                .arg(TOMBSTONE_TTL_MILLIS)
                .arg(id.as_str())
                .arg(user.as_deref().unwrap_or_default())
                .arg(if fence { "1" } else { "0" })
                .arg(now);
            let (code, text): (i64, Vec<u8>) = self.run_script(&call).await?;
            match self.script_code("REVOKE", code, &[0, 1, 2, 3])? {
                // The sid hash of the session ended, as the record's `x`.
                1 => return Ok((code, field_hash(&text))),
                3 => {}
                _ => return Ok((code, String::from_utf8_lossy(&text).into_owned())),
            }
        }
        Err(StoreError::Unavailable(
            "a session record kept changing while it was revoked".into(),
        ))
    }

    /// The per-user limit after a create: ends the oldest sessions of the
    /// index `index` (other than `keep`) while it holds more than `max`
    /// live ones; sessions that have ended at `why.at` though their record
    /// is there are removed first, so they are neither counted nor chosen
    /// over a live one (`EVICT`).
    async fn evict(
        &self,
        index: &str,
        keep: &StoreId,
        max: u32,
        mut size: u64,
        why: &Revocation,
    ) -> StoreResult<Vec<StoreId>> {
        let tomb = tomb(why);
        let mut evicted = Vec::new();
        for _ in 0..EVICT_ROUNDS {
            if size <= u64::from(max) {
                break;
            }
            // Bounded work per login whatever the index holds: dead entries
            // among the oldest max + 256, and evictions among those; a larger
            // backlog (a limit lowered since) shrinks over the next logins.
            let mut conn = self.conn.clone();
            let oldest: Vec<String> = self
                .run(async {
                    wrong_type_as(
                        conn.zrange(index, 0, max as isize + 255).await,
                        Vec::new(),
                        "a user's index",
                    )
                })
                .await?;
            let candidates = Self::ids(oldest);
            let mut call = self.scripts.evict.prepare_invoke();
            call.key(index);
            for c in &candidates {
                call.key(self.keys.record(c))
                    .key(self.keys.tombstone(c))
                    .key(self.keys.activity(c));
            }
            call.arg(max)
                .arg(keep.as_str())
                .arg(&tomb)
                .arg(TOMBSTONE_TTL_MILLIS)
                .arg(why.at);
            for c in &candidates {
                call.arg(c.as_str());
            }
            let (left, ended): (u64, Vec<Vec<u8>>) = self.run_script(&call).await?;
            let progress = left < size;
            size = left;
            for pair in ended.chunks_exact(2) {
                if let Some(id) = std::str::from_utf8(&pair[0]).ok().and_then(StoreId::parse) {
                    self.unindex_sid(&id, &field_hash(&pair[1])).await;
                    evicted.push(id);
                }
            }
            if !progress {
                break;
            }
        }
        Ok(evicted)
    }

    /// Ends every session listed in one user index but `except`, a batch
    /// per call: the IDs are read first, then passed as keys. Sessions that
    /// had ended at `now` though their record was there are removed, not
    /// revoked (`REVOKE_MANY`).
    async fn revoke_index(
        &self,
        index: &str,
        except: Option<&StoreId>,
        tomb: &str,
        now: u64,
        out: &mut Vec<StoreId>,
    ) -> StoreResult<()> {
        for _ in 0..MAX_BATCHES {
            let mut conn = self.conn.clone();
            let listed: Vec<String> = self
                .run(async {
                    wrong_type_as(
                        conn.zrange(index, 0, BATCH as isize).await,
                        Vec::new(),
                        "a user's index",
                    )
                })
                .await?;
            let batch: Vec<StoreId> = Self::ids(listed.clone())
                .into_iter()
                .filter(|id| Some(id) != except)
                .take(BATCH)
                .collect();
            if batch.is_empty() {
                return Ok(());
            }
            let mut call = self.scripts.revoke_many.prepare_invoke();
            call.key(index);
            for id in &batch {
                call.key(self.keys.record(id))
                    .key(self.keys.tombstone(id))
                    .key(self.keys.activity(id));
            }
            call.arg(tomb).arg(TOMBSTONE_TTL_MILLIS).arg(now);
            for id in &batch {
                call.arg(id.as_str());
            }
            let ended: Vec<Vec<u8>> = self.run_script(&call).await?;
            for pair in ended.chunks_exact(2) {
                if let Some(id) = std::str::from_utf8(&pair[0]).ok().and_then(StoreId::parse) {
                    self.unindex_sid(&id, &field_hash(&pair[1])).await;
                    out.push(id);
                }
            }
            if listed.len() <= BATCH {
                return Ok(());
            }
        }
        Err(batches_exhausted())
    }

    /// Ends every session listed in one provider-session index, a batch at
    /// a time: each listed ID is ended (or fenced by a tombstone if its
    /// record is not there) before its entry is removed, so an entry is
    /// only ever dropped once its session cannot be live.
    async fn revoke_sid_index(
        &self,
        index: &str,
        kind: SidIndex,
        tomb: &str,
        now: u64,
        out: &mut Vec<StoreId>,
    ) -> StoreResult<()> {
        for _ in 0..MAX_BATCHES {
            let mut conn = self.conn.clone();
            let listed: Vec<String> = self
                .run(async {
                    let read = match kind {
                        SidIndex::Sorted => conn.zrange(index, 0, BATCH as isize - 1).await,
                        SidIndex::Set => conn.srandmember_multiple(index, BATCH as isize).await,
                    };
                    wrong_type_as(read, Vec::new(), "a provider-session index")
                })
                .await?;
            if listed.is_empty() {
                return Ok(());
            }
            let ids = Self::ids(listed.clone());
            let ended = futures_util::future::join_all(
                ids.iter().map(|id| self.end_one(id, tomb, true, now)),
            )
            .await;
            for (id, result) in ids.into_iter().zip(ended) {
                if result?.0 == 1 {
                    out.push(id);
                }
            }
            let cmd = match kind {
                SidIndex::Sorted => "ZREM",
                SidIndex::Set => "SREM",
            };
            let _: i64 = self
                .run(
                    redis::cmd(cmd)
                        .arg(index)
                        .arg(&listed)
                        .query_async(&mut conn),
                )
                .await?;
        }
        Err(batches_exhausted())
    }

    /// One window of a user index after the cursor, with the records of
    /// its entries (`None`: dead, dropped from the index).
    async fn list_index(
        &self,
        index: &str,
        after: Option<&ListCursor>,
        want: usize,
    ) -> StoreResult<Vec<(u64, StoreId, Option<(Vec<u8>, Option<u64>)>)>> {
        let mut conn = self.conn.clone();
        let flat: Vec<String> = self
            .run(
                self.scripts
                    .list_window
                    .key(index)
                    .arg(want)
                    .arg(after.map_or(String::new(), |c| c.created_millis.to_string()))
                    .arg(after.map_or("", |c| c.id.as_str()))
                    .invoke_async(&mut conn),
            )
            .await?;
        let entries: Vec<(u64, StoreId)> = flat
            .chunks_exact(2)
            .filter_map(|p| Some((score_millis(&p[1]), StoreId::parse(&p[0])?)))
            .collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.scripts.read_live.prepare_invoke();
        call.key(index).arg("z");
        for (_, id) in &entries {
            call.key(self.keys.record(id))
                .key(self.keys.activity(id))
                .arg(id.as_str());
        }
        let records: Vec<redis::Value> = self.run_script(&call).await?;
        let mut records = records.into_iter();
        let mut out = Vec::with_capacity(entries.len());
        for (score, id) in entries {
            let (record, activity) = (records.next(), records.next());
            let record = match record {
                Some(redis::Value::BulkString(r)) if !r.is_empty() => {
                    Some((r, activity.as_ref().and_then(stamp)))
                }
                _ => None,
            };
            out.push((score, id, record));
        }
        Ok(out)
    }
}

/// Sessions ended per script call by `revoke_user`/`revoke_sid`, and index
/// members trimmed per call by `sweep`: each Redis call stays short.
const BATCH: usize = 100;
/// A bound on the batches of one revocation (100 000 sessions).
const MAX_BATCHES: usize = 1000;
/// Rounds of eviction per login (each ends up to 256 sessions).
const EVICT_ROUNDS: usize = 4;
/// How old a provider-session index entry must be before the sweep may drop
/// it for a missing record: far longer than a create takes, so an entry
/// written just before its session is never taken for a dead one.
const SID_GRACE_MILLIS: u64 = 10 * 60 * 1000;

fn batches_exhausted() -> StoreError {
    StoreError::Unavailable(format!(
        "revocation did not finish within {MAX_BATCHES} batches of {BATCH} (sessions still being created?)"
    ))
}

/// A sorted-set score (creation time in ms) as Redis prints it.
fn score_millis(s: &str) -> u64 {
    s.parse::<f64>().map_or(0, |f| f as u64)
}

fn tomb(why: &Revocation) -> String {
    serde_json::to_string(why).unwrap_or_default()
}

impl SessionStore for RedisStore {
    async fn shard_of(&self, user_hash: &str) -> StoreResult<ShardTag> {
        Ok(super::shard_tag(self.shard_key().await?, user_hash))
    }

    async fn get(&self, id: &StoreId) -> StoreResult<Fetched> {
        self.read(id).await.map(|r| r.fetched)
    }

    async fn read(&self, id: &StoreId) -> StoreResult<Read> {
        let (record, tombstone, activity) = (
            self.keys.record(id),
            self.keys.tombstone(id),
            self.keys.activity(id),
        );
        let lookup = || {
            let mut conn = self.conn.clone();
            let (record, tombstone, activity) = (&record, &tombstone, &activity);
            async move {
                let mut invocation = self.scripts.get.prepare_invoke();
                invocation.key(record).key(tombstone).key(activity);
                match invocation.invoke_async(&mut conn).await.and_then(fetched) {
                    // The session's slot is migrating (a reshard): the
                    // script's keys are not all on one node, so read them
                    // one by one (`read_apart`), each where it is.
                    Err(e) if self.keys.cluster && e.code() == Some("TRYAGAIN") => {
                        self.read_apart(record, tombstone, activity).await
                    }
                    read => read,
                }
            }
        };
        self.run(async {
            match lookup().await {
                // The script only reads, so a lookup whose connection broke
                // (a Sentinel failover) is safe to send once more: the link
                // has dropped that connection and finds the master again.
                Err(e) if e.is_io_error() || e.is_connection_dropped() => lookup().await,
                result => result,
            }
        })
        .await
    }

    /// One round trip where every key is on one server (a fixed server,
    /// Sentinel's master): the provider-session entry, the record and the
    /// user index in one script, the entry first (see `CREATE` for why a
    /// failure part-way can never leave a session that a back-channel
    /// logout cannot find). Not a pipeline of two scripts: Redis would run
    /// the second even after the first failed, writing a session that no
    /// provider-session index names.
    ///
    /// In a Cluster the entry lives in another slot, so it is written
    /// first, by a call of its own that must succeed before the record is
    /// written: if the second step fails, the entry names no session and
    /// the sweep drops it; a back-channel logout that reads the entry
    /// before the record exists leaves a tombstone, which GET answers
    /// before the record written after it.
    async fn create(&self, new: &NewSession<'_>) -> StoreResult<Vec<StoreId>> {
        let id = new.id;
        let mut conn = self.conn.clone();
        let sid_index = new.sid_hash.map(|sh| self.keys.sid_index_of(id, sh));
        if self.keys.cluster
            && let Some((index, kind)) = &sid_index
        {
            let _: i64 = self
                .run(
                    self.scripts
                        .index_add
                        .key(index)
                        .arg(new.created_millis)
                        .arg(id.as_str())
                        .arg(new.index_ttl_millis)
                        .arg(kind.tag())
                        .invoke_async(&mut conn),
                )
                .await?;
        }
        let index = self.keys.user_index_of(id, new.user_hash);
        let mut call = self.scripts.create.prepare_invoke();
        call.key(self.keys.record(id))
            .key(&index)
            .arg(new.record)
            .arg(new.ttl_millis)
            .arg(new.created_millis)
            .arg(new.index_ttl_millis)
            .arg(self.index_field(new.user_hash))
            .arg(
                new.sid_hash
                    .map(|h| self.index_field(h))
                    .unwrap_or_default(),
            )
            .arg(id.as_str());
        if !self.keys.cluster
            && let Some((sid_index, kind)) = &sid_index
        {
            call.key(sid_index).arg(kind.tag());
        }
        let size: i64 = self.run_script(&call).await?;
        match new.max_per_user {
            Some(max) if max > 0 && size > i64::from(max) => {
                self.evict(&index, id, max, size.unsigned_abs(), new.eviction)
                    .await
            }
            _ => Ok(Vec::new()),
        }
    }

    async fn replace_if(
        &self,
        id: &StoreId,
        expected: u64,
        record: &[u8],
        ttl_millis: u64,
    ) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let r: i64 = self
            .run(
                self.scripts
                    .replace_if
                    .key(self.keys.record(id))
                    .arg(&StoredSession::generation_bytes(expected)[..])
                    .arg(record)
                    .arg(ttl_millis)
                    // Lua strings count from 1, inclusive.
                    .arg(GENERATION_AT.start + 1)
                    .arg(GENERATION_AT.end)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(self.script_code("REPLACE_IF", r, &[-1, 0, 1])? == 1)
    }

    async fn record_activity(
        &self,
        id: &StoreId,
        stamp: u64,
        ttl_millis: u64,
    ) -> StoreResult<bool> {
        let written: i64 = self
            .run_script(
                self.scripts
                    .activity
                    .key(self.keys.record(id))
                    .key(self.keys.activity(id))
                    .arg(stamp)
                    .arg(ttl_millis.max(1)),
            )
            .await?;
        Ok(self.script_code("ACTIVITY", written, &[0, 1])? == 1)
    }

    async fn revoke(&self, id: &StoreId, why: &Revocation) -> StoreResult<RevokeOutcome> {
        let (code, text) = self.end_one(id, &tomb(why), false, why.at).await?;
        Ok(match code {
            1 => {
                self.unindex_sid(id, &text).await;
                RevokeOutcome::Revoked
            }
            2 => RevokeOutcome::AlreadyRevoked {
                previous: serde_json::from_str(&text).ok(),
            },
            _ => RevokeOutcome::NotFound,
        })
    }

    async fn revoke_user(
        &self,
        user_hash: &str,
        except: Option<&StoreId>,
        why: &Revocation,
    ) -> StoreResult<Vec<StoreId>> {
        let tomb = tomb(why);
        let tag = self.shard_of(user_hash).await?;
        let mut out = Vec::new();
        for index in [
            self.keys.user_index(tag, user_hash),
            self.keys.legacy_user_index(user_hash),
        ] {
            self.revoke_index(&index, except, &tomb, why.at, &mut out)
                .await?;
        }
        Ok(out)
    }

    async fn revoke_sid(&self, sid_hash: &str, why: &Revocation) -> StoreResult<Vec<StoreId>> {
        let tomb = tomb(why);
        let mut out = Vec::new();
        self.revoke_sid_index(
            &self.keys.sid_index(sid_hash),
            SidIndex::Sorted,
            &tomb,
            why.at,
            &mut out,
        )
        .await?;
        self.revoke_sid_index(
            &self.keys.legacy_sid_index(sid_hash),
            SidIndex::Set,
            &tomb,
            why.at,
            &mut out,
        )
        .await?;
        Ok(out)
    }

    /// Merges the user's sharded and legacy indexes. Each window examines
    /// at most 2 * limit + 1 entries: the page, the entry that shows more
    /// exist, and room for dead entries (dropped). When a window was full,
    /// entries past its last one are left for the next page, since the
    /// other index may hold entries before them.
    async fn list_user(
        &self,
        user_hash: &str,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<SessionPage> {
        let limit = limit.clamp(1, MAX_PAGE);
        let want = 2 * limit + 1;
        let tag = self.shard_of(user_hash).await?;
        let mut merged = Vec::new();
        let mut boundary: Option<(u64, StoreId)> = None;
        for index in [
            self.keys.user_index(tag, user_hash),
            self.keys.legacy_user_index(user_hash),
        ] {
            let window = self.list_index(&index, after, want).await?;
            if window.len() == want
                && let Some((score, id, _)) = window.last()
                && boundary.as_ref().is_none_or(|b| (*score, id) > (b.0, &b.1))
            {
                boundary = Some((*score, id.clone()));
            }
            merged.extend(window);
        }
        // Newest first; equal creation times by descending ID.
        merged.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        if let Some((score, id)) = &boundary {
            merged.retain(|e| (e.0, &e.1) >= (*score, id));
        }
        let mut sessions = Vec::new();
        let mut last = None;
        let mut more = boundary.is_some();
        for (created_millis, id, record) in merged {
            if sessions.len() == limit {
                more = true;
                break;
            }
            if let Some((record, activity)) = record {
                sessions.push(ListedSession {
                    id: id.clone(),
                    created_millis,
                    record,
                    activity,
                });
            }
            last = Some(ListCursor { created_millis, id });
        }
        Ok(SessionPage {
            sessions,
            next: if more { last } else { None },
        })
    }

    async fn put_once(
        &self,
        kind: OnceKind,
        key: &str,
        value: &[u8],
        ttl_millis: u64,
    ) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let k = self.keys.plain("o", &format!("{}:{key}", kind.as_str()));
        self.run(
            redis::cmd("SET")
                .arg(k)
                .arg(value)
                .arg("PX")
                .arg(ttl_millis.max(1))
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn take_once(&self, kind: OnceKind, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        let k = self.keys.plain("o", &format!("{}:{key}", kind.as_str()));
        // A key of another type is no handle of ours: the handle is unknown
        // (as an expired one), not an outage on every use of it.
        self.run(async {
            wrong_type_as(
                redis::cmd("GETDEL").arg(&k).query_async(&mut conn).await,
                None,
                "a single-use handle",
            )
        })
        .await
    }

    async fn claim_once(&self, key: &str, ttl_millis: u64) -> StoreResult<bool> {
        self.set_nx(self.keys.plain("c", key), "1", ttl_millis)
            .await
    }

    async fn lock(&self, id: &StoreId, token: &str, ttl_millis: u64) -> StoreResult<bool> {
        self.set_nx(self.keys.lock(id), token, ttl_millis).await
    }

    async fn unlock(&self, id: &StoreId, token: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .run(
                self.scripts
                    .unlock
                    .key(self.keys.lock(id))
                    .arg(token)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn remember_jti(&self, hash: &str, ttl_millis: u64) -> StoreResult<bool> {
        self.set_nx(self.keys.plain("j", hash), "1", ttl_millis)
            .await
    }

    async fn forget_jti(&self, hash: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        self.run(
            redis::cmd("DEL")
                .arg(self.keys.plain("j", hash))
                .query_async::<()>(&mut conn),
        )
        .await
    }

    /// Walks every index on every primary, in both layouts, a batch per
    /// call, so no single call runs long however large an index grew.
    async fn sweep(&self, now: u64) -> StoreResult<u64> {
        let mut removed = 0u64;
        let now_millis = crate::clock::unix_now_millis();
        for prefix in self.keys.prefixes() {
            for key in self.scan(&format!("{}u:*", glob_escape(prefix))).await? {
                removed += self.trim(&key, SidIndex::Sorted, now).await?;
            }
            if prefix == self.keys.prefix {
                for key in self.scan(&format!("{}x:*", glob_escape(prefix))).await? {
                    removed += self.trim_sid(&key, now_millis).await?;
                }
            }
            if prefix == self.keys.legacy {
                for key in self.scan(&format!("{}sid:*", glob_escape(prefix))).await? {
                    removed += self.trim(&key, SidIndex::Set, now).await?;
                }
            }
        }
        Ok(removed)
    }

    /// Counts live session records (`s:*` under each key prefix, either
    /// layout) by SCAN on every primary, batch by batch (no key list is
    /// kept).
    async fn count_sessions(&self, now: u64) -> StoreResult<u64> {
        let mut count = 0;
        for prefix in self.keys.prefixes() {
            count += self.count_live(prefix, now).await?;
        }
        Ok(count)
    }

    /// The indexes' sizes after a sweep at `now`, which leaves only live
    /// sessions in them.
    async fn stats(&self, top: usize, now: u64) -> StoreResult<StoreStats> {
        self.sweep(now).await?;
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for prefix in self.keys.prefixes() {
            for key in self.scan(&format!("{}u:*", glob_escape(prefix))).await? {
                let Some(user) = self.keys.user_of_index(&key) else {
                    continue;
                };
                let user = user.to_owned();
                let mut conn = self.conn.clone();
                let n: u64 = self
                    .run(async { wrong_type_as(conn.zcard(&key).await, 0, "a user's index") })
                    .await?;
                if n > 0 {
                    *counts.entry(user).or_default() += n;
                }
            }
        }
        let mut users: Vec<(String, u64)> = counts.into_iter().collect();
        users.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let sessions = users.iter().map(|(_, n)| n).sum();
        let user_count = users.len() as u64;
        users.truncate(top);
        let mut memory_bytes = None;
        for node in self.key_holders().await? {
            let info: String = match self
                .run(self.conn.on_node(&node, redis::cmd("INFO").arg("memory")))
                .await
            {
                Ok(info) => info,
                Err(e) => {
                    self.passed_over(&node, "memory", e)?;
                    continue;
                }
            };
            if let Some(used) = info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                memory_bytes = Some(memory_bytes.unwrap_or(0) + used);
            }
        }
        Ok(StoreStats {
            sessions,
            users: user_count,
            top_users: users,
            memory_bytes,
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: String = self.run(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_in_store_errors_names_host_port_and_db_but_no_credentials() {
        let url = url::Url::parse("rediss://gateway@redis.internal:6380").expect("url");
        assert_eq!(
            describe(&RedisEndpoint::Url(url), 2),
            "rediss://redis.internal:6380/2"
        );
        let url = url::Url::parse("redis://10.0.0.7").expect("url");
        assert_eq!(
            describe(&RedisEndpoint::Url(url), 0),
            "redis://10.0.0.7:6379/0"
        );
        let cluster = RedisEndpoint::Cluster {
            nodes: vec![("a".into(), 7000), ("b".into(), 7001)],
            tls: false,
        };
        assert_eq!(describe(&cluster, 0), "cluster nodes a:7000, b:7001");
    }

    #[test]
    fn scan_patterns_escape_glob_characters_in_the_prefix() {
        assert_eq!(glob_escape("app*[1]:"), "app\\*\\[1\\]:");
        assert_eq!(glob_escape("oidc-bff:"), "oidc-bff:");
    }
}
