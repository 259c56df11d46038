//! What operators and a session's owner see and do across sessions:
//! paged listings, ownership checks, revoking a user's or a provider
//! session's sessions, store statistics. No tokens and no claims leave
//! here: only times, client IP, user agent and subjects from the sealed
//! metadata.

use serde::Serialize;

use super::cookie::StoreId;
use super::store::{ListCursor, Revocation, RevokeReason, SessionStore, StoreResult};
use super::{Sessions, StoreOp, sid_hash, user_hash};

/// A session as an operator or its owner sees it: no tokens, no claims.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub created_at: u64,
    pub last_active_at: u64,
    pub expires_at: u64,
    pub idle_expires_at: u64,
    pub absolute_expires_at: u64,
    pub last_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// One page of a user's sessions: `next_cursor` (opaque) asks for the next.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfoPage {
    pub sessions: Vec<SessionInfo>,
    pub next_cursor: Option<String>,
}

/// Store statistics for operators.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub sessions: u64,
    pub users: u64,
    pub top_users: Vec<UserCount>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserCount {
    pub user: String,
    pub sessions: u64,
}

impl Sessions {
    /// One page of a user's sessions as operators (and the user) see them,
    /// newest first: at most `limit`, after `after`. Records that do not
    /// verify are left out.
    pub async fn list_user(
        &self,
        sub: &str,
        after: Option<&ListCursor>,
        limit: usize,
        now: u64,
    ) -> StoreResult<SessionInfoPage> {
        let hash = user_hash(sub);
        let page = self
            .timed(StoreOp::List, self.store.list_user(&hash, after, limit))
            .await?;
        let sessions = page
            .sessions
            .into_iter()
            .filter_map(|l| {
                let stored = self.verify_read(&l.id, &l.record, l.activity, now)?;
                let meta = self.open_meta(&l.id, &stored.body);
                Some(SessionInfo {
                    id: l.id.to_string(),
                    created_at: stored.body.created_at,
                    last_active_at: stored.body.last_active_at,
                    expires_at: stored.body.ends_at(),
                    idle_expires_at: stored.body.idle_expires_at,
                    absolute_expires_at: stored.body.absolute_expires_at,
                    last_ip: meta.as_ref().and_then(|m| m.last_ip.clone()),
                    user_agent: meta.and_then(|m| m.user_agent),
                })
            })
            .collect();
        Ok(SessionInfoPage {
            sessions,
            next_cursor: page.next.map(|c| c.encode()),
        })
    }

    /// Whether `store_id` names a live session of the user `sub`: read from
    /// that one record's authenticated header, never by listing the user.
    pub async fn belongs_to(&self, store_id: &StoreId, sub: &str, now: u64) -> StoreResult<bool> {
        let read = self.timed(StoreOp::Get, self.store.read(store_id)).await?;
        let Some(bytes) = read.fetched.into_live() else {
            return Ok(false);
        };
        Ok(self
            .verify_read(store_id, &bytes, read.activity, now)
            .is_some_and(|r| {
                crate::secret::constant_time_eq(
                    r.body.user_hash.as_bytes(),
                    user_hash(sub).as_bytes(),
                )
            }))
    }

    /// Ends every session of a user, except `except` (e.g. the caller's).
    pub async fn revoke_user(
        &self,
        sub: &str,
        except: Option<&StoreId>,
        reason: RevokeReason,
        actor: &str,
        now: u64,
    ) -> StoreResult<Vec<StoreId>> {
        let (hash, why) = (user_hash(sub), Revocation::new(reason, actor, now));
        let ids = self
            .timed(
                StoreOp::RevokeMany,
                self.store.revoke_user(&hash, except, &why),
            )
            .await?;
        ids.iter().for_each(|id| self.forget(id));
        self.count_revocations(reason, ids.len());
        tracing::info!(
            count = ids.len(),
            reason = reason.as_str(),
            actor,
            "user sessions revoked"
        );
        Ok(ids)
    }

    /// Ends the sessions bound to a provider session (back-channel logout).
    pub async fn revoke_provider_session(
        &self,
        sid: &str,
        actor: &str,
        now: u64,
    ) -> StoreResult<Vec<StoreId>> {
        let (hash, why) = (
            sid_hash(sid),
            Revocation::new(RevokeReason::Backchannel, actor, now),
        );
        let ids = self
            .timed(StoreOp::RevokeMany, self.store.revoke_sid(&hash, &why))
            .await?;
        ids.iter().for_each(|id| self.forget(id));
        self.count_revocations(RevokeReason::Backchannel, ids.len());
        tracing::info!(
            count = ids.len(),
            "provider session ended: sessions revoked"
        );
        Ok(ids)
    }

    /// Store statistics, with the top users named (their subject is read
    /// from the sealed metadata of one of their sessions).
    pub async fn stats(&self, top: usize, now: u64) -> StoreResult<Stats> {
        let raw = self
            .timed(StoreOp::Maintenance, self.store.stats(top, now))
            .await?;
        let mut top_users = Vec::with_capacity(raw.top_users.len());
        for (hash, count) in raw.top_users {
            // One short page is enough to name the user.
            let listed = self
                .timed(StoreOp::List, self.store.list_user(&hash, None, 8))
                .await?;
            let sub = listed.sessions.iter().find_map(|l| {
                let stored = self.verify_read(&l.id, &l.record, l.activity, now)?;
                self.open_meta(&l.id, &stored.body).map(|m| m.sub)
            });
            top_users.push(UserCount {
                user: sub.unwrap_or_else(|| format!("(sha256 {hash})")),
                sessions: count,
            });
        }
        Ok(Stats {
            sessions: raw.sessions,
            users: raw.users,
            top_users,
            memory_bytes: raw.memory_bytes,
        })
    }
}
