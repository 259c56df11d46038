//! Redis implementation of the session store, shared by every gateway
//! instance.
//!
//! One multiplexed connection (redis-rs `ConnectionManager`) carries all
//! traffic and reconnects by itself after Redis comes back. Because the
//! connection is shared by concurrent requests, WATCH/MULTI cannot be used;
//! every multi-key mutation is a Lua script, which Redis runs atomically.
//! Each operation is bounded by the configured timeout: past it, the caller
//! gets [`StoreError::Timeout`] and the request a 503.
//!
//! Scripts that build their key names from the prefix (ARGV) still declare
//! the prefix as KEYS[1]: on Redis Cluster that routes them to the node of
//! the prefix's hash tag, whose one slot holds every key of the gateway.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::{AsyncCommands, RedisResult, Script, Value};

use super::redis_link::{ClusterLink, Link, SentinelLink};
use super::{
    Fetched, ListCursor, ListedSession, MAX_PAGE, NewSession, OnceKind, Revocation, RevokeOutcome,
    RevokeReason, SessionPage, SessionStore, StoreError, StoreResult, StoreStats,
    TOMBSTONE_TTL_MILLIS,
};
use crate::config::{RedisConfig, RedisEndpoint};
use crate::session::cookie::StoreId;
use crate::session::record::{GENERATION_AT, StoredSession};

/// Shared by the scripts that end sessions: deletes the record, removes it
/// from both indexes and leaves a tombstone. Returns 1 if a live session was
/// ended.
const REVOKE_ONE: &str = r"
local function revoke_one(p, id, tomb, tttl)
  local sk = p .. 's:' .. id
  local f = redis.call('HMGET', sk, 'u', 'x')
  local left = redis.call('PTTL', sk)
  if redis.call('DEL', sk) == 0 then return 0 end
  if f[1] then redis.call('ZREM', p .. 'u:' .. f[1], id) end
  if f[2] then redis.call('SREM', p .. 'sid:' .. f[2], id) end
  -- The tombstone outlives whatever was left of the record, so a copy of
  -- it written back later is still refused by GET.
  redis.call('SET', p .. 't:' .. id, tomb, 'PX', math.max(tonumber(tttl), left))
  return 1
end
local function extend(k, ms)
  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
end
";

const CREATE: &str = r"
local p, id, rec, ttl, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxn, ittl, uh, sh = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9]
local tomb, tttl = ARGV[10], ARGV[11]
local sk, uk = p .. 's:' .. id, p .. 'u:' .. uh
redis.call('DEL', sk)
if sh ~= '' then
  redis.call('HSET', sk, 'r', rec, 'u', uh, 'x', sh)
  local xk = p .. 'sid:' .. sh
  redis.call('SADD', xk, id)
  extend(xk, ittl)
else
  redis.call('HSET', sk, 'r', rec, 'u', uh)
end
redis.call('PEXPIRE', sk, ttl)
redis.call('ZADD', uk, score, id)
extend(uk, ittl)
local evicted = {}
if maxn > 0 and redis.call('ZCARD', uk) > maxn then
  -- Bounded work per login whatever the index holds: dead entries among
  -- the oldest maxn + 256, then at most 256 evictions; a larger backlog
  -- (a limit lowered since) shrinks over the next logins.
  for _, m in ipairs(redis.call('ZRANGE', uk, 0, maxn + 255)) do
    if redis.call('EXISTS', p .. 's:' .. m) == 0 then redis.call('ZREM', uk, m) end
  end
  local budget = 256
  while budget > 0 and redis.call('ZCARD', uk) > maxn do
    budget = budget - 1
    -- The oldest other than the new session (equal scores sort by ID).
    local two = redis.call('ZRANGE', uk, 0, 1)
    local victim = two[1]
    if victim == id then victim = two[2] end
    if not victim then break end
    revoke_one(p, victim, tomb, tttl)
    redis.call('ZREM', uk, victim)
    table.insert(evicted, victim)
  end
end
return evicted
";

const REPLACE_IF: &str = r"
local cur = redis.call('HGET', KEYS[1], 'r')
if not cur then return 0 end
if string.sub(cur, ARGV[4], ARGV[5]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'r', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

const REVOKE: &str = r"
local p, id, tomb, tttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if revoke_one(p, id, tomb, tttl) == 1 then return {1, ''} end
local t = redis.call('GET', p .. 't:' .. id)
if t then return {2, t} end
return {0, ''}
";

/// One batch: the oldest `n` entries other than `except`. Returns
/// `{done, revoked IDs}`; the caller repeats until `done` is 1.
const REVOKE_USER: &str = r"
local p, uh, except, tomb, tttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n = tonumber(ARGV[6])
local uk = p .. 'u:' .. uh
local ids = redis.call('ZRANGE', uk, 0, n)
local out = {}
local left = n
for _, id in ipairs(ids) do
  if id ~= except and left > 0 then
    left = left - 1
    if revoke_one(p, id, tomb, tttl) == 1 then table.insert(out, id) end
    redis.call('ZREM', uk, id)
  end
end
local done = 0
if #ids <= n then done = 1 end
return {done, out}
";

/// One batch of at most `n` sessions of a provider session. Returns
/// `{done, revoked IDs}`; the caller repeats until `done` is 1.
const REVOKE_SID: &str = r"
local p, sh, tomb, tttl, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local xk = p .. 'sid:' .. sh
local out = {}
for _, id in ipairs(redis.call('SPOP', xk, n)) do
  if revoke_one(p, id, tomb, tttl) == 1 then table.insert(out, id) end
end
local done = 0
if redis.call('SCARD', xk) == 0 then done = 1 end
return {done, out}
";

/// One page of a user's index, newest first, after the cursor (ARGV[4]
/// score, ARGV[5] ID; empty for the first page). The cursor's rank is found
/// in O(log n) — if its entry has gone meanwhile it is put back for that
/// instant, inside the script, so its neighbours are still found. Examines
/// at most 2 * limit + 1 entries: the page, the entry that shows more exist,
/// and room for dead entries (dropped). Returns
/// `{more, last score, last ID, {id, score, record, ...}}`; the last entry
/// examined is where the next page starts.
const LIST_USER: &str = r"
local p, uh, lim, cs, cid = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local uk = p .. 'u:' .. uh
local start = 0
if cid ~= '' then
  if redis.call('ZSCORE', uk, cid) then
    start = redis.call('ZREVRANK', uk, cid) + 1
  else
    redis.call('ZADD', uk, cs, cid)
    start = redis.call('ZREVRANK', uk, cid) + 1
    redis.call('ZREM', uk, cid)
    start = start - 1
  end
end
local want = 2 * lim + 1
local entries = redis.call('ZREVRANGE', uk, start, start + want - 1, 'WITHSCORES')
local out, n, more = {}, 0, 0
local last_s, last_id = '', ''
for i = 1, #entries, 2 do
  local id, s = entries[i], entries[i + 1]
  if n == lim then
    more = 1
    break
  end
  local r = redis.call('HGET', p .. 's:' .. id, 'r')
  if r then
    table.insert(out, id)
    table.insert(out, s)
    table.insert(out, r)
    n = n + 1
  else
    redis.call('ZREM', uk, id)
  end
  last_s, last_id = s, id
end
if #entries == 2 * want then more = 1 end
return {more, last_s, last_id, out}
";

/// Drops the given members of one index (KEYS[1]) whose sessions are gone:
/// the caller feeds it one ZSCAN/SSCAN batch at a time.
const TRIM_INDEX: &str = r"
local p, k, kind = ARGV[1], KEYS[1], ARGV[2]
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('EXISTS', p .. 's:' .. id) == 0 then
    if kind == 'z' then redis.call('ZREM', k, id) else redis.call('SREM', k, id) end
    n = n + 1
  end
end
return n
";

/// A session's record unless it has a tombstone: one round trip for the
/// hot path, and a restored copy of a revoked record stays ended. A
/// tombstone comes back wrapped in a one-element array, so a live record
/// (a plain bulk string) needs no unwrapping.
const GET: &str = r"
local t = redis.call('GET', KEYS[2])
if t then return {t} end
return redis.call('HGET', KEYS[1], 'r')
";

/// What the `GET` script answered.
fn fetched(value: redis::Value) -> Fetched {
    match value {
        redis::Value::BulkString(record) => Fetched::Live(record),
        redis::Value::Array(items) => Fetched::Revoked(match items.first() {
            Some(redis::Value::BulkString(tomb)) => tomb_reason(tomb),
            _ => None,
        }),
        _ => Fetched::Missing,
    }
}

/// The reason a tombstone names; only the reason leaves the store layer.
fn tomb_reason(tomb: &[u8]) -> Option<RevokeReason> {
    #[derive(serde::Deserialize)]
    struct Reason {
        reason: RevokeReason,
    }
    serde_json::from_slice::<Reason>(tomb)
        .ok()
        .map(|r| r.reason)
}

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

struct Scripts {
    get: Script,
    create: Script,
    replace_if: Script,
    revoke: Script,
    revoke_user: Script,
    revoke_sid: Script,
    list_user: Script,
    trim_index: Script,
    unlock: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{REVOKE_ONE}\n{body}"));
        Self {
            get: Script::new(GET),
            create: with_prelude(CREATE),
            replace_if: Script::new(REPLACE_IF),
            revoke: with_prelude(REVOKE),
            revoke_user: with_prelude(REVOKE_USER),
            revoke_sid: with_prelude(REVOKE_SID),
            list_user: Script::new(LIST_USER),
            trim_index: Script::new(TRIM_INDEX),
            unlock: Script::new(UNLOCK),
        }
    }
}

pub struct RedisStore {
    conn: Link,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
    /// Where the store is, for error messages: `redis://host:port/db`, the
    /// Sentinels or the cluster seeds; never a user name or password.
    address: String,
}

/// `endpoint` as an operator configured it, without credentials.
fn describe(endpoint: &RedisEndpoint, db: i64) -> String {
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

impl RedisStore {
    /// Runs a revoking script (`call` builds one invocation) until it says
    /// it is done: `BATCH` sessions per call, so no script runs long.
    async fn revoke_in_batches<'a>(
        &self,
        call: impl Fn() -> redis::ScriptInvocation<'a>,
    ) -> StoreResult<Vec<StoreId>> {
        let mut out = Vec::new();
        for _ in 0..MAX_BATCHES {
            let mut conn = self.conn.clone();
            let invocation = call();
            let (done, ids): (i64, Vec<String>) =
                self.run(invocation.invoke_async(&mut conn)).await?;
            out.extend(Self::ids(ids));
            if done == 1 {
                return Ok(out);
            }
        }
        Err(batches_exhausted())
    }

    /// `SET key value NX PX ttl`: `true` if this call set it (single-use
    /// markers, locks, seen token IDs).
    async fn set_nx(&self, key: String, value: &str, ttl_millis: u64) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let r: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_millis.max(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(r.is_some())
    }

    /// Prepares the connection; it is opened on first use and re-opened after
    /// failures, so the gateway starts (unready) while Redis is down.
    pub fn new(config: &RedisConfig, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        // A private CA (trusted instead of the public roots) and/or a client
        // certificate for mutual TLS.
        let certificates =
            (config.tls_ca_pem.is_some() || config.tls_client.is_some()).then(|| {
                redis::TlsCertificates {
                    client_tls: config.tls_client.as_ref().map(|c| redis::ClientTlsConfig {
                        client_cert: c.cert_pem.clone(),
                        client_key: c.key_pem.expose().as_bytes().to_vec(),
                    }),
                    root_cert: config.tls_ca_pem.clone(),
                }
            });
        let address = describe(&config.endpoint, config.db);
        let url = match &config.endpoint {
            RedisEndpoint::Url(url) => url,
            RedisEndpoint::Cluster { nodes, tls } => {
                let link = ClusterLink::new(
                    nodes,
                    *tls,
                    config,
                    certificates,
                    prefix,
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
        let client = match certificates {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
        .map_err(|e| StoreError::Unavailable(format!("{e} (Redis at {address})")))?;
        let conn = client
            .get_connection_manager_lazy(manager_config)
            .map_err(|e| StoreError::Unavailable(format!("{e} (Redis at {address})")))?;
        Ok(Self::with_link(Link::Fixed(conn), prefix, timeout, address))
    }

    fn with_link(conn: Link, prefix: &str, timeout: Duration, address: String) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            timeout,
            scripts: Scripts::new(),
            address,
        }
    }

    async fn run<T>(&self, op: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                "{e} (Redis at {})",
                self.address
            ))),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + 1 + rest.len());
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.push(':');
        k.push_str(rest);
        k
    }

    fn ids(values: Vec<String>) -> Vec<StoreId> {
        values.iter().filter_map(|s| StoreId::parse(s)).collect()
    }

    /// Keys matching `{prefix}{kind}:*`, by SCAN (never KEYS).
    async fn scan(&self, kind: &str) -> StoreResult<Vec<String>> {
        let pattern = format!("{}{kind}:*", glob_escape(&self.prefix));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut conn),
                )
                .await?;
            out.extend(batch);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Sessions ended per script call by `revoke_user`/`revoke_sid`, and index
/// members trimmed per call by `sweep`: each Redis call stays short.
const BATCH: usize = 100;
/// A bound on the batches of one revocation (100 000 sessions).
const MAX_BATCHES: usize = 1000;

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
    async fn get(&self, id: &StoreId) -> StoreResult<Fetched> {
        let (record, tombstone) = (self.key("s", id.as_str()), self.key("t", id.as_str()));
        let lookup = || {
            let mut conn = self.conn.clone();
            let (record, tombstone) = (&record, &tombstone);
            async move {
                let mut invocation = self.scripts.get.prepare_invoke();
                invocation.key(record).key(tombstone);
                invocation.invoke_async(&mut conn).await
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
            .map(fetched)
        })
        .await
    }

    async fn create(&self, new: &NewSession<'_>) -> StoreResult<Vec<StoreId>> {
        let mut conn = self.conn.clone();
        let evicted: Vec<String> = self
            .run(
                self.scripts
                    .create
                    .key(&self.prefix)
                    .arg(&self.prefix)
                    .arg(new.id.as_str())
                    .arg(new.record)
                    .arg(new.ttl_millis)
                    .arg(new.created_millis)
                    .arg(new.max_per_user.unwrap_or(0))
                    .arg(new.index_ttl_millis)
                    .arg(new.user_hash)
                    .arg(new.sid_hash.unwrap_or(""))
                    .arg(tomb(new.eviction))
                    .arg(TOMBSTONE_TTL_MILLIS)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(Self::ids(evicted))
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
                    .key(self.key("s", id.as_str()))
                    .arg(&StoredSession::generation_bytes(expected)[..])
                    .arg(record)
                    .arg(ttl_millis)
                    // Lua strings count from 1, inclusive.
                    .arg(GENERATION_AT.start + 1)
                    .arg(GENERATION_AT.end)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(r == 1)
    }

    async fn revoke(&self, id: &StoreId, why: &Revocation) -> StoreResult<RevokeOutcome> {
        let mut conn = self.conn.clone();
        let (code, previous): (i64, String) = self
            .run(
                self.scripts
                    .revoke
                    .key(&self.prefix)
                    .arg(&self.prefix)
                    .arg(id.as_str())
                    .arg(tomb(why))
                    .arg(TOMBSTONE_TTL_MILLIS)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(match code {
            1 => RevokeOutcome::Revoked,
            2 => RevokeOutcome::AlreadyRevoked {
                previous: serde_json::from_str(&previous).ok(),
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
        self.revoke_in_batches(|| {
            let mut call = self.scripts.revoke_user.key(&self.prefix);
            call.arg(&self.prefix)
                .arg(user_hash)
                .arg(except.map_or("", StoreId::as_str))
                .arg(&tomb)
                .arg(TOMBSTONE_TTL_MILLIS)
                .arg(BATCH);
            call
        })
        .await
    }

    async fn revoke_sid(&self, sid_hash: &str, why: &Revocation) -> StoreResult<Vec<StoreId>> {
        let tomb = tomb(why);
        self.revoke_in_batches(|| {
            let mut call = self.scripts.revoke_sid.key(&self.prefix);
            call.arg(&self.prefix)
                .arg(sid_hash)
                .arg(&tomb)
                .arg(TOMBSTONE_TTL_MILLIS)
                .arg(BATCH);
            call
        })
        .await
    }

    async fn list_user(
        &self,
        user_hash: &str,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<SessionPage> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut conn = self.conn.clone();
        let (more, last_score, last_id, flat): (i64, String, String, Vec<Value>) = self
            .run(
                self.scripts
                    .list_user
                    .key(&self.prefix)
                    .arg(&self.prefix)
                    .arg(user_hash)
                    .arg(limit)
                    .arg(after.map_or(String::new(), |c| c.created_millis.to_string()))
                    .arg(after.map_or("", |c| c.id.as_str()))
                    .invoke_async(&mut conn),
            )
            .await?;
        let mut sessions = Vec::with_capacity(flat.len() / 3);
        for chunk in flat.chunks_exact(3) {
            let (Value::BulkString(id), Value::BulkString(score), Value::BulkString(record)) =
                (&chunk[0], &chunk[1], &chunk[2])
            else {
                continue;
            };
            let Some(id) = std::str::from_utf8(id).ok().and_then(StoreId::parse) else {
                continue;
            };
            sessions.push(ListedSession {
                id,
                created_millis: score_millis(std::str::from_utf8(score).unwrap_or_default()),
                record: record.clone(),
            });
        }
        let next = (more == 1)
            .then(|| {
                Some(ListCursor {
                    created_millis: score_millis(&last_score),
                    id: StoreId::parse(&last_id)?,
                })
            })
            .flatten();
        Ok(SessionPage { sessions, next })
    }

    async fn put_once(
        &self,
        kind: OnceKind,
        key: &str,
        value: &[u8],
        ttl_millis: u64,
    ) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let k = self.key("o", &format!("{}:{key}", kind.as_str()));
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
        let k = self.key("o", &format!("{}:{key}", kind.as_str()));
        self.run(redis::cmd("GETDEL").arg(k).query_async(&mut conn))
            .await
    }

    async fn claim_once(&self, key: &str, ttl_millis: u64) -> StoreResult<bool> {
        self.set_nx(self.key("c", key), "1", ttl_millis).await
    }

    async fn lock(&self, id: &StoreId, token: &str, ttl_millis: u64) -> StoreResult<bool> {
        self.set_nx(self.key("l", id.as_str()), token, ttl_millis)
            .await
    }

    async fn unlock(&self, id: &StoreId, token: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .run(
                self.scripts
                    .unlock
                    .key(self.key("l", id.as_str()))
                    .arg(token)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn remember_jti(&self, hash: &str, ttl_millis: u64) -> StoreResult<bool> {
        self.set_nx(self.key("j", hash), "1", ttl_millis).await
    }

    /// Walks each index with ZSCAN/SSCAN and trims one batch per script
    /// call, so no single call runs long however large an index grew.
    async fn sweep(&self) -> StoreResult<u64> {
        let mut removed = 0u64;
        for (kind, tag, scan) in [("u", "z", "ZSCAN"), ("sid", "s", "SSCAN")] {
            for key in self.scan(kind).await? {
                let mut cursor: u64 = 0;
                loop {
                    let mut conn = self.conn.clone();
                    let (next, batch): (u64, Vec<String>) = self
                        .run(
                            redis::cmd(scan)
                                .arg(&key)
                                .arg(cursor)
                                .arg("COUNT")
                                .arg(BATCH)
                                .query_async(&mut conn),
                        )
                        .await?;
                    // ZSCAN answers member, score, member, score, ...
                    let members: Vec<&String> = if tag == "z" {
                        batch.iter().step_by(2).collect()
                    } else {
                        batch.iter().collect()
                    };
                    if !members.is_empty() {
                        let mut invocation = self.scripts.trim_index.key(&key);
                        invocation.arg(&self.prefix).arg(tag);
                        for m in members {
                            invocation.arg(m);
                        }
                        let n: u64 = self.run(invocation.invoke_async(&mut conn)).await?;
                        removed += n;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(removed)
    }

    /// Counts `s:*` keys by SCAN, batch by batch (no key list is kept).
    /// Sent where `scan` sends it: on a Cluster, the node of the prefix's
    /// slot, which holds every key of the gateway (a layout that spreads
    /// keys over several primaries must count on each of them).
    async fn count_sessions(&self) -> StoreResult<u64> {
        let pattern = format!("{}s:*", glob_escape(&self.prefix));
        let mut conn = self.conn.clone();
        let (mut cursor, mut count) = (0u64, 0u64);
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            count += batch.len() as u64;
            if next == 0 {
                return Ok(count);
            }
            cursor = next;
        }
    }

    async fn stats(&self, top: usize) -> StoreResult<StoreStats> {
        self.sweep().await?;
        let user_prefix_len = self.prefix.len() + 2;
        let mut users = Vec::new();
        for key in self.scan("u").await? {
            let mut conn = self.conn.clone();
            let n: u64 = self.run(conn.zcard(&key)).await?;
            if n > 0 {
                users.push((key.get(user_prefix_len..).unwrap_or_default().to_owned(), n));
            }
        }
        users.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let sessions = users.iter().map(|(_, n)| n).sum();
        let user_count = users.len() as u64;
        users.truncate(top);
        let mut conn = self.conn.clone();
        let info: String = self
            .run(redis::cmd("INFO").arg("memory").query_async(&mut conn))
            .await?;
        let memory_bytes = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok());
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
