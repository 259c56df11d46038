//! How a record is made safe to store: the integrity tag over its bytes,
//! the sealed operator metadata and the sealed secrets, each bound to its
//! session and part. Checking a record read back is the read path's
//! (`lookup`).

use hmac::Mac;

use super::Sessions;
use super::cookie::{SessionId, StoreId};
use super::crypto::{open, seal};
use super::record::{SessionMeta, SessionSecrets, StoredBody, StoredSession};

pub(super) fn aad(store_id: &StoreId, part: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(72);
    v.extend_from_slice(store_id.as_str().as_bytes());
    v.push(b'/');
    v.extend_from_slice(part.as_bytes());
    v
}

impl Sessions {
    /// A record's bytes, tagged under the key it names (the current one for
    /// every record this gateway writes).
    pub(super) fn encode(&self, store_id: &StoreId, record: &StoredSession) -> Vec<u8> {
        let key = self
            .keys
            .by_id(&record.body.key_id)
            .unwrap_or_else(|| self.keys.current());
        record.encode(|signed| {
            let mut mac = key.record_mac(store_id.as_str());
            mac.update(signed);
            mac.finalize().into_bytes().into()
        })
    }

    pub(super) fn seal_meta(&self, store_id: &StoreId, meta: &SessionMeta) -> Vec<u8> {
        seal(
            self.keys.current().meta_cipher(),
            &aad(store_id, "meta"),
            &meta.encode(),
        )
    }

    /// Opens the operator metadata of a record (no cookie needed).
    pub fn open_meta(&self, store_id: &StoreId, body: &StoredBody) -> Option<SessionMeta> {
        let key = self.keys.by_id(&body.key_id)?;
        let plain = open(key.meta_cipher(), &aad(store_id, "meta"), &body.meta).ok()?;
        SessionMeta::decode(&plain).ok()
    }

    pub(super) fn seal_secrets(
        &self,
        id: &SessionId,
        store_id: &StoreId,
        secrets: &SessionSecrets,
    ) -> Vec<u8> {
        let cipher = self.keys.current().session_cipher(id.secret());
        seal(
            &cipher,
            &aad(store_id, "secrets"),
            &secrets.encode_as(self.layout),
        )
    }
}
