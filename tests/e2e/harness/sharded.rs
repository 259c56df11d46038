//! Runs the store conformance suite on the sharded key layout: the suite
//! names sessions by plain 64-hex IDs (`id(n)`, which a Redis store keeps
//! in the legacy layout), so this wrapper gives each one the shard tag of
//! its user on the way in (as the gateway does at login) and takes it off
//! again on the way out. Every behaviour is then checked on both layouts.
//! A sharded ID holds 56 hex digits of hash: the suite's IDs end in zeros
//! (`id(n)` puts `n` first), so the last 8 are dropped and restored.

use std::collections::HashMap;
use std::sync::Mutex;

use oidc_bff::session::cookie::{ShardTag, StoreId, hex};
use oidc_bff::session::store::{
    Fetched, ListCursor, ListedSession, NewSession, OnceKind, Read, Revocation, RevokeOutcome,
    SessionPage, SessionStore, StoreResult, StoreStats,
};

pub struct Sharded<S> {
    inner: S,
    /// The tag each plain ID was created with.
    tags: Mutex<HashMap<StoreId, ShardTag>>,
}

impl<S: SessionStore> Sharded<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            tags: Mutex::new(HashMap::new()),
        }
    }

    fn inward(&self, id: &StoreId) -> StoreId {
        let tag = self
            .tags
            .lock()
            .expect("tags")
            .get(id)
            .copied()
            .unwrap_or([0, 0]);
        assert!(id.as_str().ends_with("00000000"), "{id:?}");
        StoreId::parse(&(hex(&tag) + &id.as_str()[..56])).expect("a sharded ID")
    }

    fn outward(id: &StoreId) -> StoreId {
        assert!(
            id.shard().is_some(),
            "the store answered a legacy ID {id:?}"
        );
        StoreId::parse(&(id.as_str()[4..].to_owned() + "00000000")).expect("a plain ID")
    }

    fn outward_all(ids: Vec<StoreId>) -> Vec<StoreId> {
        ids.iter().map(Self::outward).collect()
    }
}

impl<S: SessionStore> SessionStore for Sharded<S> {
    async fn shard_of(&self, user_hash: &str) -> StoreResult<ShardTag> {
        self.inner.shard_of(user_hash).await
    }
    async fn get(&self, id: &StoreId) -> StoreResult<Fetched> {
        self.inner.get(&self.inward(id)).await
    }
    async fn read(&self, id: &StoreId) -> StoreResult<Read> {
        self.inner.read(&self.inward(id)).await
    }
    async fn record_activity(
        &self,
        id: &StoreId,
        stamp: u64,
        ttl_millis: u64,
    ) -> StoreResult<bool> {
        self.inner
            .record_activity(&self.inward(id), stamp, ttl_millis)
            .await
    }
    async fn count_sessions(&self, now: u64) -> StoreResult<u64> {
        self.inner.count_sessions(now).await
    }
    async fn create(&self, new: &NewSession<'_>) -> StoreResult<Vec<StoreId>> {
        let tag = self.inner.shard_of(new.user_hash).await?;
        self.tags.lock().expect("tags").insert(new.id.clone(), tag);
        let id = self.inward(new.id);
        let evicted = self.inner.create(&NewSession { id: &id, ..*new }).await?;
        Ok(Self::outward_all(evicted))
    }
    async fn replace_if(
        &self,
        id: &StoreId,
        expected: u64,
        record: &[u8],
        ttl_millis: u64,
    ) -> StoreResult<bool> {
        self.inner
            .replace_if(&self.inward(id), expected, record, ttl_millis)
            .await
    }
    async fn revoke(&self, id: &StoreId, why: &Revocation) -> StoreResult<RevokeOutcome> {
        self.inner.revoke(&self.inward(id), why).await
    }
    async fn revoke_user(
        &self,
        user_hash: &str,
        except: Option<&StoreId>,
        why: &Revocation,
    ) -> StoreResult<Vec<StoreId>> {
        let except = except.map(|e| self.inward(e));
        let ids = self
            .inner
            .revoke_user(user_hash, except.as_ref(), why)
            .await?;
        Ok(Self::outward_all(ids))
    }
    async fn revoke_sid(&self, sid_hash: &str, why: &Revocation) -> StoreResult<Vec<StoreId>> {
        Ok(Self::outward_all(
            self.inner.revoke_sid(sid_hash, why).await?,
        ))
    }
    async fn list_user(
        &self,
        user_hash: &str,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<SessionPage> {
        let after = after.map(|c| ListCursor {
            created_millis: c.created_millis,
            id: self.inward(&c.id),
        });
        let page = self
            .inner
            .list_user(user_hash, after.as_ref(), limit)
            .await?;
        Ok(SessionPage {
            sessions: page
                .sessions
                .into_iter()
                .map(|l| ListedSession {
                    id: Self::outward(&l.id),
                    ..l
                })
                .collect(),
            next: page.next.map(|c| ListCursor {
                created_millis: c.created_millis,
                id: Self::outward(&c.id),
            }),
        })
    }
    async fn put_once(
        &self,
        kind: OnceKind,
        key: &str,
        value: &[u8],
        ttl_millis: u64,
    ) -> StoreResult<()> {
        self.inner.put_once(kind, key, value, ttl_millis).await
    }
    async fn take_once(&self, kind: OnceKind, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.take_once(kind, key).await
    }
    async fn claim_once(&self, key: &str, ttl_millis: u64) -> StoreResult<bool> {
        self.inner.claim_once(key, ttl_millis).await
    }
    async fn lock(&self, id: &StoreId, token: &str, ttl_millis: u64) -> StoreResult<bool> {
        self.inner.lock(&self.inward(id), token, ttl_millis).await
    }
    async fn unlock(&self, id: &StoreId, token: &str) -> StoreResult<()> {
        self.inner.unlock(&self.inward(id), token).await
    }
    async fn remember_jti(&self, hash: &str, ttl_millis: u64) -> StoreResult<bool> {
        self.inner.remember_jti(hash, ttl_millis).await
    }
    async fn forget_jti(&self, hash: &str) -> StoreResult<()> {
        self.inner.forget_jti(hash).await
    }
    async fn sweep(&self, now: u64) -> StoreResult<u64> {
        self.inner.sweep(now).await
    }
    async fn stats(&self, top: usize, now: u64) -> StoreResult<StoreStats> {
        self.inner.stats(top, now).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}
