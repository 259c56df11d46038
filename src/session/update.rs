//! Writes to a live session: the activity touch (usually only the
//! activity key, see `activity`; the record when it must be rewritten)
//! and refreshed tokens, each on top of the version it read.

use super::opened::{BearerSlot, DpopSlot, Session};
use super::record::{SessionSecrets, StoredBody, StoredSession};
use super::store::{SessionStore, StoreError, StoreResult};
use super::{ClientInfo, Sessions, StoreOp, activity};
use crate::config::RecordLayout;

/// What an activity touch writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Only the activity key (if the record's key outlives the new idle
    /// deadline; else the record after all).
    Activity,
    /// The whole record, as before the activity key existed.
    Record,
}

impl Touch {
    /// The record must be rewritten when the client's IP changed (it is in
    /// the sealed metadata), when the record is sealed under a key that is
    /// no longer the current one (every write re-seals), and while
    /// versions that read only the record may still run
    /// (`store.record_layout = "previous"`: they would not see activity
    /// recorded apart and end the session at the record's idle deadline).
    pub fn plan(layout: RecordLayout, ip_changed: bool, rekey: bool) -> Self {
        if layout == RecordLayout::Previous || ip_changed || rekey {
            Self::Record
        } else {
            Self::Activity
        }
    }
}

impl Sessions {
    /// Whether the last-activity write is due: the session's effective
    /// last activity (record or activity key, whichever is later) is at
    /// least `session.touch_interval` old.
    pub fn touch_due(&self, session: &Session, now: u64) -> bool {
        now.saturating_sub(session.stored.body.last_active_at) >= self.touch_interval
    }

    /// How long the store keeps a record's key from `now` (ms): one more
    /// idle period past its idle deadline, for activity recorded apart
    /// ([`StoredBody::key_ttl_millis`]); with `store.record_layout =
    /// "previous"`, until its deadline as before (versions before read
    /// only the record, and nothing records activity apart then).
    pub(super) fn record_ttl(&self, body: &StoredBody, now: u64) -> u64 {
        match self.layout {
            RecordLayout::Compact => body.key_ttl_millis(self.idle_timeout, now * 1000),
            RecordLayout::Previous => body.ttl_millis(now * 1000),
        }
    }

    /// Slides the idle deadline and records activity. Best effort: losing a
    /// race with another write only delays the next touch.
    ///
    /// Usually only the activity key is written ([`Touch::Activity`]),
    /// which invalidates no process's session cache; the record is
    /// rewritten when it must be ([`Touch::plan`]) or when its key would
    /// not outlive the new idle deadline (about once per idle period of
    /// continuous use; the store decides that atomically).
    pub async fn touch(
        &self,
        session: &Session,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<bool> {
        let body = &session.stored.body;
        let meta = self.open_meta(&session.store_id, body);
        let ip = client.ip.map(|ip| ip.to_string());
        let ip_changed = ip.is_some() && meta.as_ref().is_some_and(|m| m.last_ip != ip);
        let rekey = body.key_id != self.keys.current().id();
        if Touch::plan(self.layout, ip_changed, rekey) == Touch::Activity
            && self.touch_activity(session, now).await?
        {
            return Ok(true);
        }
        let mut body = body.clone();
        body.last_active_at = now;
        body.idle_expires_at = (now + self.idle_timeout).min(body.absolute_expires_at);
        if let Some(mut meta) = meta
            && (ip_changed || rekey)
        {
            if ip_changed {
                meta.last_ip = ip;
            }
            body.meta = self.seal_meta(&session.store_id, &meta);
        }
        if rekey {
            // Every write re-seals under the current key: one key ID per
            // record, and older keys can be retired once records turned over.
            body.secrets = self.seal_secrets(&session.id, &session.store_id, &session.secrets);
            body.key_id = self.keys.current().id().to_owned();
        }
        let next = StoredSession {
            generation: session.stored.generation + 1,
            body,
        };
        let ttl = self.record_ttl(&next.body, now);
        let record = self.encode(&session.store_id, &next);
        let write =
            self.store
                .replace_if(&session.store_id, session.stored.generation, &record, ttl);
        let written = self.timed(StoreOp::Update, write).await;
        self.forget(&session.store_id);
        written
    }

    /// Writes only the activity key. `Ok(false)`: the record's key would
    /// not outlive the new idle deadline, or the session is gone; the
    /// caller rewrites the record (which fails if it is gone). On success
    /// this process's cached entry takes the new deadlines (no other
    /// process needs to: see `cache::SessionCache::activity_recorded`).
    async fn touch_activity(&self, session: &Session, now: u64) -> StoreResult<bool> {
        let body = &session.stored.body;
        let Some(key) = self.keys.by_id(&body.key_id) else {
            return Ok(false);
        };
        let deadline = (now + self.idle_timeout).min(body.absolute_expires_at);
        let ttl = (deadline * 1000).saturating_sub(now * 1000);
        if ttl == 0 {
            return Ok(false);
        }
        let stamp = activity::stamp(key, &session.store_id, now);
        let write = self.store.record_activity(&session.store_id, stamp, ttl);
        if !self.timed(StoreOp::Update, write).await? {
            return Ok(false);
        }
        if let Some(cache) = &self.cache {
            cache.activity_recorded(
                &session.store_id,
                session.stored.generation,
                now,
                self.idle_timeout,
            );
        }
        Ok(true)
    }

    /// Stores refreshed tokens on top of the latest version of the record.
    /// `None`: the session ended meanwhile.
    pub async fn write_tokens(
        &self,
        session: &Session,
        secrets: SessionSecrets,
        access_expires_at: u64,
        now: u64,
    ) -> StoreResult<Option<Session>> {
        let mut current = session.stored.clone();
        for _ in 0..5 {
            let mut body = current.body.clone();
            body.access_expires_at = access_expires_at;
            body.has_refresh_token = secrets.refresh_token.is_some();
            if body.key_id != self.keys.current().id() {
                if let Some(meta) = self.open_meta(&session.store_id, &body) {
                    body.meta = self.seal_meta(&session.store_id, &meta);
                }
                body.key_id = self.keys.current().id().to_owned();
            }
            body.secrets = self.seal_secrets(&session.id, &session.store_id, &secrets);
            let next = StoredSession {
                generation: current.generation + 1,
                body,
            };
            let ttl = self.record_ttl(&next.body, now);
            let record = self.encode(&session.store_id, &next);
            let write = self
                .store
                .replace_if(&session.store_id, current.generation, &record, ttl);
            let written = self.timed(StoreOp::Update, write).await;
            self.forget(&session.store_id);
            if written? {
                return Ok(Some(Session {
                    id: session.id.clone(),
                    store_id: session.store_id.clone(),
                    stored: next,
                    secrets,
                    dpop: DpopSlot::new(),
                    bearer: BearerSlot::new(),
                }));
            }
            // Someone else wrote (a touch): re-read and apply on top.
            let read = self
                .timed(StoreOp::Get, self.store.read(&session.store_id))
                .await?;
            let Some(bytes) = read.fetched.into_live() else {
                return Ok(None);
            };
            let Some(latest) = self.verify_read(&session.store_id, &bytes, read.activity, now)
            else {
                return Ok(None);
            };
            current = latest;
        }
        Err(StoreError::Unavailable(
            "could not store refreshed tokens after 5 attempts (concurrent writes)".into(),
        ))
    }
}
