//! The Lua scripts of the Redis store. Each declares every key it touches
//! in `KEYS` (Redis' rule for scripts), and on a Cluster the keys of one
//! call always share a hash slot: a session's record, tombstone and its
//! user's index carry the same hash tag (`{T}`, the shard tag), and the
//! legacy layout keeps every key in the legacy prefix's slot. The one
//! exception is off a Cluster, where every key is on one server: there
//! `CREATE` also writes the provider-session entry (its own slot). Keys found by reading an
//! index (the members of a user's index) are read by one call and passed
//! to the next: the store (`redis.rs`) does that, never a script.

use redis::Script;

/// Shared by the scripts that end sessions: deletes the record, drops it
/// from its user's index and leaves a tombstone. Returns the record's
/// provider-sid hash ('' if none) when a live session was ended, `false`
/// otherwise; the caller removes the session from the provider-session
/// index, which lives in another slot.
///
/// A record's hash holds the index hashes it names in `u` (user) and `x`
/// (provider session) as 32 bytes (`redis_keys::hash_field`); records
/// written before hold them as 64 hex digits. The scripts never interpret
/// either: they compare `u` with what the caller read from it and return
/// `x` as stored, so both forms work and no script changed with the form.
const PRELUDE: &str = r"
-- A key of the wrong type (a string where a hash is expected: another
-- tenant's write, a restore from another layout) is read as an absent
-- key, and replaced by a write: one bad key is a session that does not
-- exist, never an error on every request that names it. Only WRONGTYPE:
-- any other refusal (out of memory, an ACL) is raised, as a plain call
-- would, by repeating the command (one that failed had no effect). Not
-- `TYPE` first: the documented ACL does not grant it.
local function wrong_type(v)
  return type(v) == 'table' and v.err and string.find(v.err, 'WRONGTYPE', 1, true)
end
local function lenient(absent, ...)
  local v = redis.pcall(...)
  if wrong_type(v) then return absent end
  if type(v) == 'table' and v.err then return redis.call(...) end
  return v
end
local function hget(k, f) return lenient(false, 'HGET', k, f) end
local function sget(k) return lenient(false, 'GET', k) end
local function owned(...)
  local v = redis.pcall(...)
  if wrong_type(v) then
    redis.call('DEL', (select(2, ...)))
  elseif not (type(v) == 'table' and v.err) then
    return v
  end
  return redis.call(...)
end
local function unlist(ik, id, kind)
  if kind == 's' then lenient(0, 'SREM', ik, id) else lenient(0, 'ZREM', ik, id) end
end
local function revoke_one(sk, tk, uk, id, tomb, tttl)
  local left = redis.call('PTTL', sk)
  local x = hget(sk, 'x')
  if redis.call('DEL', sk) == 0 then return false end
  unlist(uk, id, 'z')
  -- The tombstone outlives whatever was left of the record, so a copy of
  -- it written back later is still refused by GET.
  redis.call('SET', tk, tomb, 'PX', math.max(tonumber(tttl), left))
  return x or ''
end
-- A record's idle and absolute deadlines (unix seconds), read from its
-- plain header without checking its tag (the layout is `record.rs`'s:
-- version, generation, then the postcard body: key ID, user hash,
-- optional provider-sid hash, created, last active, idle deadline,
-- absolute deadline; the hashes as 32 bytes in format 3, as text in
-- format 2). nil for anything else.
local function varint(s, p)
  local v, m = 0, 1
  for i = p, p + 9 do
    local b = string.byte(s, i)
    if not b then return nil end
    v = v + (b % 128) * m
    if b < 128 then return v, i + 1 end
    m = m * 128
  end
  return nil
end
local function skip_bytes(s, p)
  local n
  n, p = varint(s, p)
  if not n then return nil end
  return p + n
end
local function skip_hash(s, p, fmt)
  if fmt == 2 then return skip_bytes(s, p) end
  local k
  k, p = varint(s, p)
  if k == 0 then return p + 32 elseif k == 1 then return skip_bytes(s, p) end
  return nil
end
local function deadlines(r)
  local fmt = string.byte(r, 1)
  if fmt ~= 2 and fmt ~= 3 then return nil end
  local p = skip_bytes(r, 10)
  p = p and skip_hash(r, p, fmt)
  local some, created, active, idle, abs
  if p then some, p = varint(r, p) end
  if some == 1 then p = skip_hash(r, p, fmt) elseif some ~= 0 then return nil end
  if p then created, p = varint(r, p) end
  if p then active, p = varint(r, p) end
  if p then idle, p = varint(r, p) end
  if p then abs, p = varint(r, p) end
  if not abs then return nil end
  return idle, abs
end
-- Whether the session whose record key is sk (activity key ak) has ended
-- at now (unix seconds) though its record is still there: past its
-- effective idle deadline (the later of the record's and its activity's,
-- and the activity key expires at the activity's) or its absolute one.
-- Neither the record's tag nor the activity's is checked: this decides
-- what is counted and cleaned up, never what is served. A record that is
-- gone, or that this cannot read, has not ended here.
--
-- live_ms (optional; '0' or absent: none) is the idle timeout in ms, a
-- shortcut for the walks over every record: a record's key lives at most
-- one idle timeout past its idle deadline (`StoredBody::key_ttl_millis`;
-- until the deadline itself with `record_layout = previous`), so a key
-- with more left than that belongs to a session whose idle deadline has
-- not passed, and its record (kilobytes, the costly part) is not read.
-- A live_ms below some writer's idle timeout could only take an ended
-- session for a live one, never the reverse.
local function ended(sk, ak, now, live_ms)
  local hint = tonumber(live_ms or '0') or 0
  if hint > 0 and redis.call('PTTL', sk) > hint then return false end
  if redis.call('EXISTS', ak) == 1 then return false end
  local r = hget(sk, 'r')
  if not r then return false end
  local idle, abs = deadlines(r)
  return idle ~= nil and tonumber(now) >= math.min(idle, abs)
end
-- Removes an ended session's record and activity, and its entry in the
-- index ik (kind 'z' sorted set, 's' set): no tombstone, as for a
-- session that expired; its provider-session entry, if any, is the
-- sweep's.
local function drop(sk, ak, ik, id, kind)
  redis.call('DEL', sk, ak)
  unlist(ik, id, kind)
end
local function extend(k, ms)
  if redis.call('PTTL', k) < tonumber(ms) then redis.call('PEXPIRE', k, ms) end
end
local function index_add(xk, score, id, ittl, kind)
  if kind == 'z' then
    owned('ZADD', xk, score, id)
  else
    owned('SADD', xk, id)
  end
  extend(xk, ittl)
end
";

/// KEYS: record, user index, and — only where every key lives on one
/// server (a fixed server or Sentinel's master, never a Cluster) — the
/// provider-session index. ARGV: record bytes, TTL, score (creation ms),
/// index TTL, user hash and sid hash ('' if none) as `u` and `x` store
/// them, ID, and with the third key its kind ('z' or 's'). An ID with a
/// tombstone is written all the same (a restored backup does that too): GET
/// answers the tombstone first, so a session that a back-channel logout
/// fenced while it was being written stays ended. Returns the index size.
///
/// With the provider-session index, it is written first, in the same
/// script: if that write fails (a key of the wrong type, Redis out of
/// memory), `redis.call` raises and the script stops before the record
/// exists, so there is never a session that a back-channel logout cannot
/// find; and no other client sees the entry without its record, since a
/// script runs whole. A failure after it leaves an entry that names no
/// session, which the sweep drops, as in the two-step create of a Cluster.
const CREATE: &str = r"
local sk, uk, xk = KEYS[1], KEYS[2], KEYS[3]
local rec, ttl, score, ittl, uh, sh, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if xk then index_add(xk, score, id, ittl, ARGV[8]) end
redis.call('DEL', sk)
if sh ~= '' then
  redis.call('HSET', sk, 'r', rec, 'u', uh, 'x', sh)
else
  redis.call('HSET', sk, 'r', rec, 'u', uh)
end
redis.call('PEXPIRE', sk, ttl)
owned('ZADD', uk, score, id)
extend(uk, ittl)
return redis.call('ZCARD', uk)
";

/// Adds a session to a provider-session index (KEYS[1]; a sorted set by
/// creation ms in the sharded layout, a set in the legacy one: ARGV[4]
/// 'z' or 's'), before its record is written by `CREATE` in another slot
/// (a Cluster). ARGV: score, ID, index TTL, kind.
const INDEX_ADD: &str = r"
index_add(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
";

/// The per-user limit. KEYS: user index, then record, tombstone and
/// activity of each candidate (the index's oldest entries, oldest first).
/// ARGV: limit, the new session's ID (never evicted), tombstone, tombstone
/// TTL, now (unix seconds), candidate IDs. Drops candidates whose record is
/// gone, and those that have ended though their record is still there
/// (`ended`: idle past the deadline their activity set), so that only
/// live sessions count; then ends the oldest live ones while the index is
/// over the limit. Returns `{index size, {id, sid hash, ...}}` of the
/// sessions ended.
const EVICT: &str = r"
local uk, maxn, keep, tomb, tttl, now = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n = #ARGV - 5
for i = 1, n do
  local id, sk, ak = ARGV[5 + i], KEYS[3 * i - 1], KEYS[3 * i + 1]
  if redis.call('EXISTS', sk) == 0 then
    unlist(uk, id, 'z')
  elseif id ~= keep and ended(sk, ak, now) then
    drop(sk, ak, uk, id, 'z')
  end
end
local out = {}
for i = 1, n do
  if redis.call('ZCARD', uk) <= maxn then break end
  local id = ARGV[5 + i]
  if id ~= keep and redis.call('ZSCORE', uk, id) then
    local x = revoke_one(KEYS[3 * i - 1], KEYS[3 * i], uk, id, tomb, tttl)
    unlist(uk, id, 'z')
    if x then
      table.insert(out, id)
      table.insert(out, x)
    end
  end
end
return {redis.call('ZCARD', uk), out}
";

/// One session by ID. KEYS: record, tombstone, activity, and the user
/// index the caller read from the record (absent if it found no record).
/// ARGV: tombstone, tombstone TTL, ID, that user hash (the `u` field as
/// read), fence ('1': leave a tombstone even if there is no record, so a
/// create still under way for this ID is refused), now (unix seconds).
/// Returns `{1, sid hash}` ended, `{2, tombstone}` ended before, `{0, ''}`
/// unknown or already ended (a record past its effective idle deadline is
/// removed, as the sweep would: `ended`), `{3, ''}` the record changed
/// since the caller read it (ask again).
const REVOKE: &str = r"
local sk, tk, ak, uk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local u = hget(sk, 'u')
if u then
  if not uk or u ~= ARGV[4] then return {3, ''} end
  if not ended(sk, ak, ARGV[6]) then
    return {1, revoke_one(sk, tk, uk, ARGV[3], ARGV[1], ARGV[2])}
  end
  drop(sk, ak, uk, ARGV[3], 'z')
  local t = sget(tk)
  if t then return {2, t} end
  return {0, ''}
end
local t = sget(tk)
if t then return {2, t} end
if ARGV[5] == '1' then redis.call('SET', tk, ARGV[1], 'PX', ARGV[2]) end
return {0, ''}
";

/// A batch of one user's sessions. KEYS: user index, then record,
/// tombstone and activity of each ID. ARGV: tombstone, tombstone TTL, now
/// (unix seconds), IDs. Returns `{id, sid hash, ...}` of the sessions
/// ended; one that had already ended though its record was there
/// (`ended`) is removed without a tombstone and not among them.
const REVOKE_MANY: &str = r"
local uk = KEYS[1]
local out = {}
for i = 4, #ARGV do
  local j = i - 3
  local sk, tk, ak = KEYS[3 * j - 1], KEYS[3 * j], KEYS[3 * j + 1]
  local x = false
  if ended(sk, ak, ARGV[3]) then
    drop(sk, ak, uk, ARGV[i], 'z')
  else
    x = revoke_one(sk, tk, uk, ARGV[i], ARGV[1], ARGV[2])
  end
  unlist(uk, ARGV[i], 'z')
  if x then
    table.insert(out, ARGV[i])
    table.insert(out, x)
  end
end
return out
";

/// A window of a user's index (KEYS[1]), newest first, after the cursor
/// (ARGV[2] score, ARGV[3] ID; empty for the first page): at most ARGV[1]
/// entries as `{id, score, ...}`. The cursor's rank is found in O(log n) —
/// if its entry has gone (or lives in the other layout's index) it is put
/// in for that instant, inside the script, so its neighbours are found.
const LIST_WINDOW: &str = r"
local uk, want, cs, cid = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
-- An index of another type lists nothing (the next login replaces it).
local n = redis.pcall('ZCARD', uk)
if type(n) == 'table' then
  if string.find(n.err or '', 'WRONGTYPE', 1, true) then return {} end
  return redis.call('ZCARD', uk)
end
local start = 0
if cid ~= '' then
  if redis.call('ZSCORE', uk, cid) then
    start = redis.call('ZREVRANK', uk, cid) + 1
  else
    redis.call('ZADD', uk, cs, cid)
    start = redis.call('ZREVRANK', uk, cid)
    redis.call('ZREM', uk, cid)
  end
end
return redis.call('ZREVRANGE', uk, start, start + want - 1, 'WITHSCORES')
";

/// The records of some entries of one index, each with its activity.
/// KEYS: the index, then each entry's record and activity key. ARGV: kind
/// ('z' sorted set, 's' set), the IDs. Entries whose record is gone are
/// dropped from the index (answered as ''). Answers `{record, activity
/// or '', ...}`.
const READ_LIVE: &str = r"
local out = {}
for i = 2, #ARGV do
  local r = hget(KEYS[2 * i - 2], 'r')
  if r then
    table.insert(out, r)
    table.insert(out, sget(KEYS[2 * i - 1]) or '')
  else
    unlist(KEYS[1], ARGV[i], ARGV[1])
    table.insert(out, '')
    table.insert(out, '')
  end
end
return out
";

/// Drops the members of one index (KEYS[1]) whose record is gone, and
/// removes those that have ended though their record is still there
/// (`ended`), record and activity with them. KEYS: the index, then each
/// member's record and activity. ARGV: kind ('z' or 's'), now (unix
/// seconds), the idle timeout in ms (`ended`'s shortcut, '0' for none),
/// the members. The sweep feeds it one ZSCAN/SSCAN batch at a time.
/// Returns how many it dropped.
const TRIM: &str = r"
local n = 0
for i = 4, #ARGV do
  local sk, ak = KEYS[2 * i - 6], KEYS[2 * i - 5]
  if redis.call('EXISTS', sk) == 0 then
    unlist(KEYS[1], ARGV[i], ARGV[1])
    n = n + 1
  elseif ended(sk, ak, ARGV[2], ARGV[3]) then
    drop(sk, ak, KEYS[1], ARGV[i], ARGV[1])
    n = n + 1
  end
end
return n
";

/// A session's record unless it has a tombstone: one round trip for the
/// hot path, and a restored copy of a revoked record stays ended. KEYS:
/// record, tombstone, activity. A tombstone comes back wrapped in a
/// one-element array, so a live record (a plain bulk string) needs no
/// unwrapping; a live record with an activity key comes back as
/// `{record, activity}`.
///
/// A key of the wrong type is never an error (which would answer every
/// request of the session with a 503, for as long as the key is there):
/// a tombstone key holding anything but a string answers `2` (ended, no
/// reason readable: the session cannot be shown not to be revoked), a
/// record key holding anything but a hash answers `1` (no session), and
/// an activity key of another type counts as no activity.
const GET: &str = r"
local function read(...)
  local v = redis.pcall(...)
  if type(v) ~= 'table' then return v, false end
  if string.find(v.err or '', 'WRONGTYPE', 1, true) then return false, true end
  return redis.call(...), false
end
local t, bad = read('GET', KEYS[2])
if bad then return 2 end
if t then return {t} end
local r, bad = read('HGET', KEYS[1], 'r')
if bad then return 1 end
if not r then return r end
local a = read('GET', KEYS[3])
if a then return {r, a} end
return r
";

/// Records a session's last activity apart from its record, so no
/// process's session cache is invalidated (the activity key's prefix is
/// not tracked). KEYS: record, activity. ARGV: the activity stamp (an
/// integer whose high bits are the time: a later time is a greater
/// stamp), its TTL in ms. Written only if the record exists and its key
/// outlives the new activity's deadline (returns 1; 0: the caller
/// rewrites the record instead), and only if it is later than what is
/// there (a touch that lost a race never moves the activity back, so the
/// idle deadline a process has seen never comes earlier).
const ACTIVITY: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left < 0 or left < tonumber(ARGV[2]) then return 0 end
-- An activity key of another type is replaced (SET overwrites any type).
local cur = redis.pcall('GET', KEYS[2])
if type(cur) == 'table' then
  if not string.find(cur.err or '', 'WRONGTYPE', 1, true) then return redis.call('GET', KEYS[2]) end
  cur = false
end
if cur and tonumber(cur) and tonumber(cur) >= tonumber(ARGV[1]) then return 1 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
";

const REPLACE_IF: &str = r"
local cur = redis.pcall('HGET', KEYS[1], 'r')
if type(cur) == 'table' then
  if not string.find(cur.err or '', 'WRONGTYPE', 1, true) then return redis.call('HGET', KEYS[1], 'r') end
  return 0
end
if not cur then return 0 end
if string.sub(cur, ARGV[4], ARGV[5]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'r', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// One SCAN batch of session records, the live ones counted where they
/// run: the active-sessions gauge's walk. No `KEYS`: it names no key, and
/// SCAN walks the server it is sent to (each primary of a Cluster in
/// turn). ARGV: cursor, pattern (`P s:*`), batch size, now (unix seconds),
/// the length of the prefix `P`, the hex digits of an activity key's name
/// after the shard tag (`redis_keys::ACTIVITY_ID_DIGITS`), the idle
/// timeout in ms (`ended`'s shortcut, '0' for none). A record counts
/// unless it has ended though it is still there (as `ended` decides, the
/// activity key named as `redis_keys::Layout::activity` names it). Returns
/// the next cursor (as SCAN's text) and how many of the batch count.
///
/// It only reads: without flags it is a script of the pre-7 kind, checked
/// only when it writes, so `min-replicas-to-write` with too few replicas
/// does not refuse it (tried on Redis 7.0), nor does a replica. The keys it
/// reads are found by its SCAN (on this node) or share their hash tag; an
/// activity key that is not readable here (its slot migrating) counts the
/// session as live.
const COUNT_BATCH: &str = r"
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local now, plen, digits, hint = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n = 0
local function activity_key(sk)
  local rest = string.sub(sk, plen + 3)
  local ak = string.sub(sk, 1, plen) .. 'a:'
  if string.match(rest, '^{%x%x%x%x}') then return ak .. string.sub(rest, 1, 6 + digits) end
  return ak .. rest
end
for _, sk in ipairs(r[2]) do
  if hint > 0 and redis.call('PTTL', sk) > hint then
    n = n + 1
  elseif redis.pcall('EXISTS', activity_key(sk)) ~= 0 then
    n = n + 1
  else
    local rec = hget(sk, 'r')
    if rec then
      local idle, abs = deadlines(rec)
      if idle == nil or now < math.min(idle, abs) then n = n + 1 end
    end
  end
end
return {r[1], n}
";

const UNLOCK: &str = r"
if sget(KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// `SET KEYS[1] ARGV[1] NX PX ARGV[2]` for a single-use marker, a lock or a
/// lease, where a key of another type is no marker of ours: `SET NX` alone
/// answers "already set" for a key of any type, so a hash or list left
/// there (another tenant's write, a restore from elsewhere) would hold the
/// lock, the claim or the lease forever (every refresh, login or sweep
/// refused for as long as it is there). Such a key is deleted and the
/// marker set. A string is a marker, whoever wrote it: left as it is.
/// Answers 1 (set), 0 (already set) or 2 (set in place of a key of another
/// type, which the caller logs).
const SET_NX: &str = r"
local replaced = 0
if wrong_type(redis.pcall('GET', KEYS[1])) then
  redis.call('DEL', KEYS[1])
  replaced = 1
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return 1 + replaced
";

pub(super) struct Scripts {
    pub get: Script,
    pub activity: Script,
    pub create: Script,
    pub index_add: Script,
    pub evict: Script,
    pub replace_if: Script,
    pub revoke: Script,
    pub revoke_many: Script,
    pub list_window: Script,
    pub read_live: Script,
    pub trim: Script,
    pub unlock: Script,
    pub set_nx: Script,
    /// [`COUNT_BATCH`]'s text, sent with EVAL to each node in turn.
    pub count_batch: String,
}

impl Scripts {
    pub fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            get: Script::new(GET),
            activity: Script::new(ACTIVITY),
            create: with_prelude(CREATE),
            index_add: with_prelude(INDEX_ADD),
            evict: with_prelude(EVICT),
            replace_if: Script::new(REPLACE_IF),
            revoke: with_prelude(REVOKE),
            revoke_many: with_prelude(REVOKE_MANY),
            list_window: Script::new(LIST_WINDOW),
            read_live: with_prelude(READ_LIVE),
            trim: with_prelude(TRIM),
            unlock: with_prelude(UNLOCK),
            set_nx: with_prelude(SET_NX),
            count_batch: format!("{PRELUDE}\n{COUNT_BATCH}"),
        }
    }
}
