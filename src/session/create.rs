//! A new session: the login's tokens and identity, written under a fresh
//! ID with its indexes, and the sessions the per-user limit evicted to
//! make room.

use std::net::IpAddr;

use http::HeaderValue;

use super::cookie::{SessionId, StoreId};
use super::record::{SessionMeta, SessionSecrets, StoredBody, StoredSession};
use super::store::{NewSession, Revocation, RevokeReason, SessionStore, StoreResult};
use super::{Sessions, StoreOp, sid_hash, user_hash};
use crate::secret::SecretString;

/// Who is asking: recorded as last IP and user agent.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The client at `ip`, with the request's `User-Agent` cut to 256
    /// characters (it is shown in session listings, not trusted).
    pub fn new(ip: IpAddr, headers: &http::HeaderMap) -> Self {
        Self {
            ip: Some(ip),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect()),
        }
    }
}

/// Tokens and identity for a new session.
pub struct NewLogin {
    pub sub: String,
    pub sid: Option<String>,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    pub access_expires_at: u64,
    pub claims_json: String,
    /// The granted scopes, space-separated.
    pub scopes: Option<String>,
    /// The session's DPoP private key (PKCS#8), when `oidc.dpop` is on.
    pub dpop_key: Option<zeroize::Zeroizing<Vec<u8>>>,
}

impl Sessions {
    /// Writes a new session (fresh ID: no fixation) and returns its cookie.
    pub async fn create(
        &self,
        login: NewLogin,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<(StoreId, HeaderValue)> {
        let (id, cookie, _) = self.create_evicting(login, client, now).await?;
        Ok((id, cookie))
    }

    /// [`Self::create`], also returning the sessions the per-user limit
    /// evicted to make room (for the audit trail).
    pub async fn create_evicting(
        &self,
        login: NewLogin,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<(StoreId, HeaderValue, Vec<StoreId>)> {
        let user_hash = user_hash(&login.sub);
        let id = SessionId::generate(self.store.shard_of(&user_hash).await?);
        self.create_as(id, login, client, now).await
    }

    /// A session as gateways before shard tags wrote it (43-character
    /// cookie, legacy key layout): only for tests of the upgrade path.
    #[doc(hidden)]
    pub async fn create_legacy(
        &self,
        login: NewLogin,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<(StoreId, HeaderValue)> {
        let (id, cookie, _) = self
            .create_as(SessionId::generate_legacy(), login, client, now)
            .await?;
        Ok((id, cookie))
    }

    async fn create_as(
        &self,
        id: SessionId,
        login: NewLogin,
        client: &ClientInfo,
        now: u64,
    ) -> StoreResult<(StoreId, HeaderValue, Vec<StoreId>)> {
        let store_id = id.store_id();
        let meta = SessionMeta {
            sub: login.sub.clone(),
            sid: login.sid.clone(),
            last_ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent.clone(),
        };
        let secrets = SessionSecrets {
            access_token: login.access_token,
            refresh_token: login.refresh_token,
            id_token: login.id_token,
            claims: login.claims_json.into(),
            scopes: login.scopes,
            derived: Vec::new(),
            dpop_key: login.dpop_key,
        };
        let absolute_expires_at = now + self.absolute_timeout;
        let body = StoredBody {
            key_id: self.keys.current().id().to_owned(),
            user_hash: user_hash(&login.sub),
            sid_hash: login.sid.as_deref().map(sid_hash),
            created_at: now,
            last_active_at: now,
            idle_expires_at: (now + self.idle_timeout).min(absolute_expires_at),
            absolute_expires_at,
            access_expires_at: login.access_expires_at,
            has_refresh_token: secrets.refresh_token.is_some(),
            meta: self.seal_meta(&store_id, &meta),
            secrets: self.seal_secrets(&id, &store_id, &secrets),
        };
        let record = StoredSession {
            generation: 1,
            body,
        };
        let bytes = self.encode(&store_id, &record);
        let eviction = Revocation::new(RevokeReason::Limit, "system", now);
        let new = NewSession {
            id: &store_id,
            record: &bytes,
            ttl_millis: self.record_ttl(&record.body, now),
            user_hash: &record.body.user_hash,
            sid_hash: record.body.sid_hash.as_deref(),
            created_millis: crate::clock::unix_now_millis(),
            max_per_user: self.max_per_user,
            eviction: &eviction,
            index_ttl_millis: self.absolute_timeout * 1000 + 60_000,
        };
        let evicted = self.timed(StoreOp::Create, self.store.create(&new)).await?;
        self.count_revocations(RevokeReason::Limit, evicted.len());
        for old in &evicted {
            self.forget(old);
            tracing::info!(session = ?old, "session evicted: per-user limit reached");
        }
        let cookie = self
            .cookies
            .session_cookie(&id, std::time::Duration::from_secs(self.absolute_timeout));
        Ok((store_id, cookie, evicted))
    }
}
