//! In-process session store for a single instance: development, the demo
//! without Redis, and tests. Same semantics as the Redis store (expiry,
//! atomic index maintenance, single-use values), none of its sharing: two
//! gateway processes with memory stores do not see each other's sessions.
//!
//! Expiry uses tokio's clock so tests can pause and advance time.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

use super::{
    Fetched, ListCursor, ListedSession, MAX_PAGE, NewSession, OnceKind, Read, Revocation,
    RevokeOutcome, SessionPage, SessionStore, StoreResult, StoreStats, TOMBSTONE_TTL_MILLIS,
};
use crate::session::cookie::{ShardTag, StoreId};
use crate::session::record::StoredSession;

struct Entry {
    record: Vec<u8>,
    user_hash: String,
    sid_hash: Option<String>,
    created_millis: u64,
    expires: Instant,
    /// The activity stamp recorded apart from the record, until when (in
    /// Redis a key of its own; here it goes with the record).
    activity: Option<(u64, Instant)>,
}

impl Entry {
    fn activity(&self, now: Instant) -> Option<u64> {
        self.activity
            .filter(|(_, until)| *until > now)
            .map(|(stamp, _)| stamp)
    }

    /// Whether the session has ended at `at` (unix seconds) though its
    /// record is still kept: as the Redis scripts' `ended` decides (see
    /// `SessionStore::count_sessions`): no activity kept, and `at` past the
    /// record's idle or absolute deadline, read without checking its tag.
    /// A record that does not decode has not ended here.
    fn ended(&self, now: Instant, at: u64) -> bool {
        if self.activity(now).is_some() {
            return false;
        }
        StoredSession::decode(&self.record).is_ok_and(|t| {
            let body = &t.record.body;
            at >= body.idle_expires_at.min(body.absolute_expires_at)
        })
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<StoreId, Entry>,
    users: HashMap<String, BTreeSet<(u64, StoreId)>>,
    sids: HashMap<String, BTreeSet<StoreId>>,
    tombstones: HashMap<StoreId, (Revocation, Instant)>,
    once: HashMap<String, (Vec<u8>, Instant)>,
    locks: HashMap<StoreId, (String, Instant)>,
    jtis: HashMap<String, Instant>,
    claims: HashMap<String, Instant>,
}

impl State {
    fn live(&mut self, id: &StoreId, now: Instant) -> Option<&Entry> {
        if self.sessions.get(id).is_some_and(|e| e.expires <= now) {
            self.sessions.remove(id);
        }
        self.sessions.get(id)
    }

    fn revoke_one(&mut self, id: &StoreId, why: &Revocation, now: Instant) -> bool {
        let live = self.live(id, now).is_some();
        let Some(entry) = self.sessions.remove(id) else {
            return false;
        };
        let tomb_until = entry
            .expires
            .max(now + Duration::from_millis(TOMBSTONE_TTL_MILLIS));
        if let Some(set) = self.users.get_mut(&entry.user_hash) {
            set.remove(&(entry.created_millis, id.clone()));
        }
        if let Some(sh) = &entry.sid_hash
            && let Some(set) = self.sids.get_mut(sh)
        {
            set.remove(id);
        }
        self.tombstones
            .insert(id.clone(), (why.clone(), tomb_until));
        live
    }

    /// Removes the session if it has ended at `at` though its record is
    /// still kept ([`Entry::ended`]), with its index entries and no
    /// tombstone; whether it did.
    fn drop_ended(&mut self, id: &StoreId, now: Instant, at: u64) -> bool {
        if !self.sessions.get(id).is_some_and(|e| e.ended(now, at)) {
            return false;
        }
        if let Some(entry) = self.sessions.remove(id) {
            if let Some(set) = self.users.get_mut(&entry.user_hash) {
                set.remove(&(entry.created_millis, id.clone()));
            }
            if let Some(sh) = &entry.sid_hash
                && let Some(set) = self.sids.get_mut(sh)
            {
                set.remove(id);
            }
        }
        true
    }

    /// Drops the user's index entries whose session expired or has ended
    /// at `at` (removing those records too).
    fn trim_user(&mut self, user_hash: &str, now: Instant, at: u64) {
        let Some(set) = self.users.get(user_hash) else {
            return;
        };
        let dead: Vec<_> = set
            .iter()
            .filter(|(_, id)| {
                self.sessions
                    .get(id)
                    .is_none_or(|e| e.expires <= now || e.ended(now, at))
            })
            .cloned()
            .collect();
        for d in dead {
            self.sessions.remove(&d.1);
            if let Some(set) = self.users.get_mut(user_hash) {
                set.remove(&d);
            }
        }
    }
}

pub struct MemoryStore {
    state: Box<Mutex<State>>,
    /// Keys the shard tags' hash: random per process (one process is the
    /// whole deployment of a memory store).
    shard_key: [u8; 32],
}

impl Default for MemoryStore {
    fn default() -> Self {
        let mut shard_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut shard_key);
        Self {
            state: Box::default(),
            shard_key,
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State, Instant) -> T) -> T {
        // A poisoned lock means a panic elsewhere while holding it; the data
        // is still structurally valid, so keep serving.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard, Instant::now())
    }

    fn once_key(kind: OnceKind, key: &str) -> String {
        format!("{}:{key}", kind.as_str())
    }
}

impl SessionStore for MemoryStore {
    async fn shard_of(&self, user_hash: &str) -> StoreResult<ShardTag> {
        Ok(super::shard_tag(&self.shard_key, user_hash))
    }

    async fn get(&self, id: &StoreId) -> StoreResult<Fetched> {
        self.read(id).await.map(|r| r.fetched)
    }

    async fn read(&self, id: &StoreId) -> StoreResult<Read> {
        Ok(self.with(|s, now| {
            if let Some((why, until)) = s.tombstones.get(id)
                && *until > now
            {
                return Read {
                    fetched: Fetched::Revoked(Some(why.reason)),
                    activity: None,
                };
            }
            s.live(id, now).map_or(
                Read {
                    fetched: Fetched::Missing,
                    activity: None,
                },
                |e| Read {
                    fetched: Fetched::Live(e.record.clone()),
                    activity: e.activity(now),
                },
            )
        }))
    }

    async fn record_activity(
        &self,
        id: &StoreId,
        stamp: u64,
        ttl_millis: u64,
    ) -> StoreResult<bool> {
        Ok(self.with(|s, now| {
            let until = now + Duration::from_millis(ttl_millis.max(1));
            s.live(id, now);
            match s.sessions.get_mut(id) {
                Some(e) if e.expires >= until => {
                    if e.activity(now).is_none_or(|cur| cur < stamp) {
                        e.activity = Some((stamp, until));
                    }
                    true
                }
                _ => false,
            }
        }))
    }

    async fn create(&self, new: &NewSession<'_>) -> StoreResult<Vec<StoreId>> {
        Ok(self.with(|s, now| {
            s.sessions.insert(
                new.id.clone(),
                Entry {
                    record: new.record.to_vec(),
                    user_hash: new.user_hash.to_owned(),
                    sid_hash: new.sid_hash.map(str::to_owned),
                    created_millis: new.created_millis,
                    expires: now + Duration::from_millis(new.ttl_millis),
                    activity: None,
                },
            );
            s.users
                .entry(new.user_hash.to_owned())
                .or_default()
                .insert((new.created_millis, new.id.clone()));
            if let Some(sh) = new.sid_hash {
                s.sids
                    .entry(sh.to_owned())
                    .or_default()
                    .insert(new.id.clone());
            }
            let mut evicted = Vec::new();
            if let Some(max) = new.max_per_user {
                // As Redis: ended sessions are looked for only when the
                // user is over the limit.
                if s.users
                    .get(new.user_hash)
                    .is_some_and(|set| set.len() > max as usize)
                {
                    s.trim_user(new.user_hash, now, new.eviction.at);
                }
                while let Some(set) = s
                    .users
                    .get(new.user_hash)
                    .filter(|set| set.len() > max as usize)
                {
                    // The oldest other than the new session.
                    let Some(victim) = set
                        .iter()
                        .map(|(_, id)| id)
                        .find(|id| *id != new.id)
                        .cloned()
                    else {
                        break;
                    };
                    s.revoke_one(&victim, new.eviction, now);
                    evicted.push(victim);
                }
            }
            evicted
        }))
    }

    async fn replace_if(
        &self,
        id: &StoreId,
        expected: u64,
        record: &[u8],
        ttl_millis: u64,
    ) -> StoreResult<bool> {
        Ok(self.with(|s, now| {
            s.live(id, now);
            match s.sessions.get_mut(id) {
                Some(e)
                    if StoredSession::stored_generation(&e.record)
                        == Some(&StoredSession::generation_bytes(expected)[..]) =>
                {
                    e.record = record.to_vec();
                    e.expires = now + Duration::from_millis(ttl_millis);
                    true
                }
                _ => false,
            }
        }))
    }

    async fn revoke(&self, id: &StoreId, why: &Revocation) -> StoreResult<RevokeOutcome> {
        Ok(self.with(|s, now| {
            let ended = s.drop_ended(id, now, why.at);
            if !ended && s.revoke_one(id, why, now) {
                return RevokeOutcome::Revoked;
            }
            match s.tombstones.get(id) {
                Some((previous, until)) if *until > now => RevokeOutcome::AlreadyRevoked {
                    previous: Some(previous.clone()),
                },
                _ => RevokeOutcome::NotFound,
            }
        }))
    }

    async fn revoke_user(
        &self,
        user_hash: &str,
        except: Option<&StoreId>,
        why: &Revocation,
    ) -> StoreResult<Vec<StoreId>> {
        Ok(self.with(|s, now| {
            let ids: Vec<StoreId> = s
                .users
                .get(user_hash)
                .map(|set| set.iter().map(|(_, id)| id.clone()).collect())
                .unwrap_or_default();
            let mut out = Vec::new();
            for id in ids {
                if Some(&id) == except || s.drop_ended(&id, now, why.at) {
                    continue;
                }
                if s.revoke_one(&id, why, now) {
                    out.push(id);
                }
            }
            s.trim_user(user_hash, now, why.at);
            out
        }))
    }

    async fn revoke_sid(&self, sid_hash: &str, why: &Revocation) -> StoreResult<Vec<StoreId>> {
        Ok(self.with(|s, now| {
            let ids = s.sids.remove(sid_hash).unwrap_or_default();
            ids.into_iter()
                .filter(|id| !s.drop_ended(id, now, why.at) && s.revoke_one(id, why, now))
                .collect()
        }))
    }

    async fn list_user(
        &self,
        user_hash: &str,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<SessionPage> {
        let limit = limit.clamp(1, MAX_PAGE);
        Ok(self.with(|s, now| {
            let Some(set) = s.users.get(user_hash) else {
                return SessionPage::default();
            };
            let upper = after.map_or(Bound::Unbounded, |c| {
                Bound::Excluded((c.created_millis, c.id.clone()))
            });
            let mut page = SessionPage::default();
            let mut dead = Vec::new();
            for (created, id) in set.range((Bound::Unbounded, upper)).rev() {
                match s.sessions.get(id).filter(|e| e.expires > now) {
                    Some(_) if page.sessions.len() == limit => {
                        page.next = page.sessions.last().map(|l| ListCursor {
                            created_millis: l.created_millis,
                            id: l.id.clone(),
                        });
                        break;
                    }
                    Some(e) => page.sessions.push(ListedSession {
                        id: id.clone(),
                        created_millis: *created,
                        record: e.record.clone(),
                        activity: e.activity(now),
                    }),
                    None => dead.push((*created, id.clone())),
                }
            }
            for d in dead {
                s.sessions.remove(&d.1);
                if let Some(set) = s.users.get_mut(user_hash) {
                    set.remove(&d);
                }
            }
            page
        }))
    }

    async fn put_once(
        &self,
        kind: OnceKind,
        key: &str,
        value: &[u8],
        ttl_millis: u64,
    ) -> StoreResult<()> {
        self.with(|s, now| {
            s.once.insert(
                Self::once_key(kind, key),
                (value.to_vec(), now + Duration::from_millis(ttl_millis)),
            );
        });
        Ok(())
    }

    async fn take_once(&self, kind: OnceKind, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.with(|s, now| {
            s.once
                .remove(&Self::once_key(kind, key))
                .filter(|(_, until)| *until > now)
                .map(|(v, _)| v)
        }))
    }

    async fn claim_once(&self, key: &str, ttl_millis: u64) -> StoreResult<bool> {
        Ok(self.with(|s, now| {
            if s.claims.get(key).is_some_and(|until| *until > now) {
                return false;
            }
            s.claims
                .insert(key.to_owned(), now + Duration::from_millis(ttl_millis));
            true
        }))
    }

    async fn lock(&self, id: &StoreId, token: &str, ttl_millis: u64) -> StoreResult<bool> {
        Ok(self.with(|s, now| {
            if s.locks.get(id).is_some_and(|(_, until)| *until > now) {
                return false;
            }
            s.locks.insert(
                id.clone(),
                (token.to_owned(), now + Duration::from_millis(ttl_millis)),
            );
            true
        }))
    }

    async fn unlock(&self, id: &StoreId, token: &str) -> StoreResult<()> {
        self.with(|s, _| {
            if s.locks.get(id).is_some_and(|(t, _)| t == token) {
                s.locks.remove(id);
            }
        });
        Ok(())
    }

    async fn remember_jti(&self, hash: &str, ttl_millis: u64) -> StoreResult<bool> {
        Ok(self.with(|s, now| {
            if s.jtis.get(hash).is_some_and(|until| *until > now) {
                return false;
            }
            s.jtis
                .insert(hash.to_owned(), now + Duration::from_millis(ttl_millis));
            true
        }))
    }

    async fn forget_jti(&self, hash: &str) -> StoreResult<()> {
        self.with(|s, _| {
            s.jtis.remove(hash);
        });
        Ok(())
    }

    /// Counts dead entries of both indexes, per-user and provider-session,
    /// as the Redis store does.
    async fn sweep(&self, at: u64) -> StoreResult<u64> {
        Ok(self.with(|s, now| {
            let before: usize = s.users.values().map(BTreeSet::len).sum::<usize>()
                + s.sids.values().map(BTreeSet::len).sum::<usize>();
            let users: Vec<String> = s.users.keys().cloned().collect();
            for u in users {
                s.trim_user(&u, now, at);
            }
            s.users.retain(|_, set| !set.is_empty());
            let sessions = &s.sessions;
            for set in s.sids.values_mut() {
                set.retain(|id| sessions.get(id).is_some_and(|e| e.expires > now));
            }
            s.sids.retain(|_, set| !set.is_empty());
            s.sessions.retain(|_, e| e.expires > now);
            s.tombstones.retain(|_, (_, until)| *until > now);
            s.once.retain(|_, (_, until)| *until > now);
            s.locks.retain(|_, (_, until)| *until > now);
            s.jtis.retain(|_, until| *until > now);
            s.claims.retain(|_, until| *until > now);
            let after: usize = s.users.values().map(BTreeSet::len).sum::<usize>()
                + s.sids.values().map(BTreeSet::len).sum::<usize>();
            (before - after) as u64
        }))
    }

    async fn count_sessions(&self, at: u64) -> StoreResult<u64> {
        Ok(self.with(|s, now| {
            s.sessions
                .values()
                .filter(|e| e.expires > now && !e.ended(now, at))
                .count() as u64
        }))
    }

    async fn stats(&self, top: usize, at: u64) -> StoreResult<StoreStats> {
        self.sweep(at).await?;
        Ok(self.with(|s, _| {
            let mut users: Vec<(String, u64)> = s
                .users
                .iter()
                .map(|(u, set)| (u.clone(), set.len() as u64))
                .collect();
            users.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let sessions = s.sessions.len() as u64;
            let user_count = users.len() as u64;
            users.truncate(top);
            StoreStats {
                sessions,
                users: user_count,
                top_users: users,
                memory_bytes: None,
            }
        }))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
