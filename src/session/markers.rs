//! Small values the session layer keeps for the flows, each bound to its
//! purpose: single-use values in the store (fetch-logout handles), values
//! sealed for the browser to carry (pending logins), claim markers, the
//! refresh lock, seen logout-token IDs. The store sees hashes and sealed
//! bytes only.

use super::cookie::StoreId;
use super::store::{OnceKind, SessionStore, StoreResult};
use super::{Sessions, StoreOp, sha256_hex};

fn once_aad(kind: OnceKind, key: &str) -> Vec<u8> {
    format!("{}:{key}", kind.as_str()).into_bytes()
}

/// The longest sealed value the browser may hand back: above any cookie a
/// browser keeps, so longer input is refused before it is decoded.
const MAX_BROWSER_SEALED_LEN: usize = 4096;

fn browser_aad(purpose: &str) -> Vec<u8> {
    format!("oidc-bff/browser/{purpose}").into_bytes()
}

impl Sessions {
    /// Keeps a value for one later [`Self::take_sealed_once`] by `handle`
    /// (a random token the caller hands out). The store sees only the
    /// handle's hash and the value sealed under the server key, bound to
    /// its kind and handle.
    pub async fn put_sealed_once(
        &self,
        kind: OnceKind,
        handle: &str,
        value: &[u8],
        ttl: std::time::Duration,
    ) -> StoreResult<()> {
        let key = sha256_hex(handle);
        let sealed = self.keys.seal_tagged(&once_aad(kind, &key), value);
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.timed(
            StoreOp::Once,
            self.store.put_once(kind, &key, &sealed, ttl_millis),
        )
        .await
    }

    /// Takes a value kept by [`Self::put_sealed_once`]: the first caller
    /// gets it, every later one (on any instance) `None`, as does a value
    /// that does not open under any configured key.
    pub async fn take_sealed_once(
        &self,
        kind: OnceKind,
        handle: &str,
    ) -> StoreResult<Option<zeroize::Zeroizing<Vec<u8>>>> {
        let key = sha256_hex(handle);
        let Some(sealed) = self
            .timed(StoreOp::Once, self.store.take_once(kind, &key))
            .await?
        else {
            return Ok(None);
        };
        Ok(self.keys.open_tagged(&once_aad(kind, &key), &sealed).ok())
    }

    /// Seals a value the browser carries for us (a pending login), under
    /// the current server key and bound to `purpose`, as base64url ready for
    /// a cookie. Only this gateway can read or forge it.
    pub fn seal_for_browser(&self, purpose: &str, value: &[u8]) -> String {
        use base64::Engine as _;
        let sealed = self.keys.seal_tagged(&browser_aad(purpose), value);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
    }

    /// Opens what [`Self::seal_for_browser`] made for `purpose`, under any
    /// configured key (so rotation keeps pending values valid). Anything
    /// else — too long, not base64url, tampered, another purpose, a retired
    /// key — is `None`.
    pub fn open_from_browser(
        &self,
        purpose: &str,
        value: &str,
    ) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        use base64::Engine as _;
        if value.len() > MAX_BROWSER_SEALED_LEN {
            return None;
        }
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .ok()?;
        self.keys.open_tagged(&browser_aad(purpose), &sealed).ok()
    }

    /// Claims `handle` for `purpose` once, on every instance, until `ttl`:
    /// `true` the first time. The store keeps a tiny marker under the hash
    /// of purpose and handle, never the handle itself.
    pub async fn claim_once(
        &self,
        purpose: &str,
        handle: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let key = sha256_hex(&format!("{purpose}:{handle}"));
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.timed(StoreOp::Once, self.store.claim_once(&key, ttl_millis))
            .await
    }

    /// Takes the session's short refresh lock (shared by every instance);
    /// `false`: another holder has it.
    pub async fn lock_refresh(
        &self,
        store_id: &StoreId,
        token: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.timed(StoreOp::Lock, self.store.lock(store_id, token, ttl_millis))
            .await
    }

    /// Releases the refresh lock if `token` still holds it.
    pub async fn unlock_refresh(&self, store_id: &StoreId, token: &str) -> StoreResult<()> {
        self.timed(StoreOp::Lock, self.store.unlock(store_id, token))
            .await
    }

    /// Records a back-channel logout token's `jti` until `ttl`; `false` if
    /// it was seen before (a replay), on any instance.
    pub async fn remember_logout_jti(
        &self,
        jti: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let hash = sha256_hex(jti);
        self.timed(StoreOp::Once, self.store.remember_jti(&hash, ttl_millis))
            .await
    }

    /// Forgets a `jti` [`Self::remember_logout_jti`] recorded, after the
    /// logout it named failed: the provider's retry must be carried out.
    pub async fn forget_logout_jti(&self, jti: &str) -> StoreResult<()> {
        let hash = sha256_hex(jti);
        self.timed(StoreOp::Once, self.store.forget_jti(&hash))
            .await
    }
}
