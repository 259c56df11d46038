//! Session encryption: key derivation, AES-256-GCM sealing, and the server
//! key ring used for rotation.
//!
//! Two kinds of sealed data exist:
//! - **session secrets** (tokens, claims) are sealed under a key derived with
//!   HKDF from the server key *and* the per-session secret that only the
//!   browser's cookie carries — so neither a Redis dump nor a leaked server
//!   key alone decrypts a token;
//! - **metadata** that operators need without the cookie (user, provider
//!   session ID, last IP, user agent) and pending logins are sealed under a
//!   key derived from the server key alone.
//!
//! Every seal uses a fresh random 96-bit nonce and binds the data to where it
//! is stored (associated data), so a record copied under another key does
//! not decrypt. This module never logs and never sees the network.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::config::ServerKeyConfig;
use crate::secret::SecretKey;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Sealing or opening failed: wrong key, tampered or truncated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed data could not be opened")]
pub struct CryptoError;

/// One configured server key and what is derived from it once at start-up.
pub struct ServerKey {
    id: String,
    material: SecretKey,
    meta: Aes256Gcm,
    logout_mac: SecretKey,
    record_mac: SecretKey,
}

impl ServerKey {
    fn new(config: &ServerKeyConfig) -> Self {
        let hk = Hkdf::<Sha256>::new(None, config.key.expose());
        let mut meta_key = Zeroizing::new([0u8; 32]);
        let mut logout_key = [0u8; 32];
        let mut record_key = [0u8; 32];
        // HKDF-Expand only fails for outputs longer than 255 blocks.
        let _ = hk.expand(b"oidc-bff/v1/metadata", meta_key.as_mut());
        let _ = hk.expand(b"oidc-bff/v1/logout-token", &mut logout_key);
        let _ = hk.expand(b"oidc-bff/v2/record-tag", &mut record_key);
        Self {
            id: config.id.clone(),
            material: config.key.clone(),
            meta: Aes256Gcm::new(meta_key.as_ref().into()),
            logout_mac: SecretKey::from_bytes(logout_key),
            record_mac: SecretKey::from_bytes(record_key),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key for one session's secrets: HKDF(salt = session secret,
    /// ikm = server key, info = label ‖ key id).
    pub fn session_cipher(&self, session_secret: &[u8; 16]) -> Aes256Gcm {
        let hk = Hkdf::<Sha256>::new(Some(session_secret), self.material.expose());
        let mut key = Zeroizing::new([0u8; 32]);
        let mut info = Vec::with_capacity(24 + self.id.len());
        info.extend_from_slice(b"oidc-bff/v1/session/");
        info.extend_from_slice(self.id.as_bytes());
        let _ = hk.expand(&info, key.as_mut());
        Aes256Gcm::new(key.as_ref().into())
    }

    pub fn meta_cipher(&self) -> &Aes256Gcm {
        &self.meta
    }

    /// The MAC that authenticates a whole stored session record (its plain
    /// header included) to the session it is stored for: anyone who can
    /// write to the store but lacks the server key cannot forge or edit one.
    pub fn record_mac(&self, store_id: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.record_mac.expose())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(b"oidc-bff/v2/record/");
        mac.update(store_id.as_bytes());
        mac.update(b"/");
        mac
    }

    /// The 31-bit tag of a session's last-activity time `at` as the
    /// activity key holds it (see `session::activity`): someone who can
    /// write to the store but lacks the server key cannot make a session
    /// look more recently used than it was (which would stretch its idle
    /// life). Bound to the session; a replayed older value of the same
    /// session only ever counts for less than what is there. 31 bits keep
    /// the stored value one integer Redis holds without a string
    /// allocation; a forgery must be tried against a live gateway, one
    /// request per guess.
    pub fn activity_tag(&self, store_id: &str, at: u64) -> u32 {
        // Records start with their format byte (2 or 3), never `a`: no
        // record's tag is an activity tag.
        let mut mac = self.record_mac(store_id);
        mac.update(b"activity/");
        mac.update(&at.to_be_bytes());
        let out = mac.finalize().into_bytes();
        u32::from_be_bytes([out[0], out[1], out[2], out[3]]) & 0x7fff_ffff
    }

    /// A value bound to one session, used to authorise the HTML-form logout
    /// without JavaScript (it plays the role of Duende's `sid` parameter).
    pub fn logout_token(&self, store_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.logout_mac.expose())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(store_id.as_bytes());
        let tag = mac.finalize().into_bytes();
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..18])
    }
}

/// The configured keys: the first seals, any opens.
pub struct KeyRing {
    keys: Vec<ServerKey>,
}

impl KeyRing {
    pub fn new(configs: &[ServerKeyConfig]) -> Self {
        Self {
            keys: configs.iter().map(ServerKey::new).collect(),
        }
    }

    /// The key new records are sealed with.
    pub fn current(&self) -> &ServerKey {
        &self.keys[0]
    }

    pub fn by_id(&self, id: &str) -> Option<&ServerKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn all(&self) -> impl Iterator<Item = &ServerKey> {
        self.keys.iter()
    }
}

impl KeyRing {
    /// Seals server-only data (pending logins, logout handles) with the
    /// current key, prefixed by the key's ID so any configured key can open
    /// it after a rotation.
    pub fn seal_tagged(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let key = self.current();
        let sealed = seal(key.meta_cipher(), aad, plaintext);
        let mut out = Vec::with_capacity(1 + key.id.len() + sealed.len());
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open_tagged(&self, aad: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (&len, rest) = data.split_first().ok_or(CryptoError)?;
        let len = len as usize;
        if rest.len() < len {
            return Err(CryptoError);
        }
        let id = std::str::from_utf8(&rest[..len]).map_err(|_| CryptoError)?;
        let key = self.by_id(id).ok_or(CryptoError)?;
        open(key.meta_cipher(), aad, &rest[len..])
    }
}

/// Encrypts `plaintext`; the output is `nonce ‖ ciphertext ‖ tag`.
pub fn seal(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    // The thread's CSPRNG, not a system call per seal (see
    // `cookie::random_token`); 96 random bits per nonce either way.
    rand::thread_rng().fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    // Encryption with a valid key and in-memory buffers cannot fail.
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default();
    out.extend_from_slice(&ct);
    out
}

/// Decrypts what [`seal`] produced with the same key and associated data.
pub fn open(
    cipher: &Aes256Gcm,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[(&str, u8)]) -> KeyRing {
        KeyRing::new(
            &keys
                .iter()
                .map(|(id, b)| ServerKeyConfig {
                    id: (*id).into(),
                    key: SecretKey::from_bytes([*b; 32]),
                })
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn sealed_session_data_opens_only_with_the_same_server_key_and_session_secret() {
        let r = ring(&[("k1", 1)]);
        let secret = [9u8; 16];
        let sealed = seal(&r.current().session_cipher(&secret), b"store-id", b"tokens");
        let opened =
            open(&r.current().session_cipher(&secret), b"store-id", &sealed).expect("opens");
        assert_eq!(opened.as_slice(), b"tokens");

        // Another session secret (a Redis dump plus the server key is not enough).
        assert_eq!(
            open(
                &r.current().session_cipher(&[8u8; 16]),
                b"store-id",
                &sealed
            ),
            Err(CryptoError)
        );
        // Another server key (the cookie alone is not enough).
        let other = ring(&[("k1", 2)]);
        assert_eq!(
            open(
                &other.current().session_cipher(&secret),
                b"store-id",
                &sealed
            ),
            Err(CryptoError)
        );
    }

    #[test]
    fn a_record_copied_under_another_key_does_not_open() {
        let r = ring(&[("k1", 1)]);
        let c = r.current().session_cipher(&[1; 16]);
        let sealed = seal(&c, b"store-id-a", b"tokens");
        assert_eq!(open(&c, b"store-id-b", &sealed), Err(CryptoError));
    }

    #[test]
    fn tampered_or_truncated_data_does_not_open() {
        let r = ring(&[("k1", 1)]);
        let c = r.current().meta_cipher();
        let mut sealed = seal(c, b"a", b"metadata");
        assert_eq!(open(c, b"a", &sealed[..10]), Err(CryptoError));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(open(c, b"a", &sealed), Err(CryptoError));
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let r = ring(&[("k1", 1)]);
        let c = r.current().meta_cipher();
        assert_ne!(seal(c, b"a", b"same"), seal(c, b"a", b"same"));
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_finds_older_ones_by_id() {
        let r = ring(&[("new", 1), ("old", 2)]);
        assert_eq!(r.current().id(), "new");
        let old_only = ring(&[("old", 2)]);
        let sealed = seal(old_only.current().meta_cipher(), b"x", b"data");
        let key = r.by_id("old").expect("old key kept for decryption");
        assert_eq!(
            open(key.meta_cipher(), b"x", &sealed)
                .expect("opens")
                .as_slice(),
            b"data"
        );
    }

    #[test]
    fn tagged_data_opens_after_rotation_and_not_under_other_aad() {
        let old = ring(&[("old", 2)]);
        let sealed = old.seal_tagged(b"login:x", b"pending");
        let rotated = ring(&[("new", 1), ("old", 2)]);
        assert_eq!(
            rotated
                .open_tagged(b"login:x", &sealed)
                .expect("opens")
                .as_slice(),
            b"pending"
        );
        assert_eq!(rotated.open_tagged(b"login:y", &sealed), Err(CryptoError));
        assert_eq!(
            ring(&[("new", 1)]).open_tagged(b"login:x", &sealed),
            Err(CryptoError)
        );
        assert_eq!(rotated.open_tagged(b"login:x", &[]), Err(CryptoError));
        assert_eq!(
            rotated.open_tagged(b"login:x", &[200, 1, 2]),
            Err(CryptoError)
        );
    }

    #[test]
    fn logout_tokens_are_per_session_and_per_key() {
        let r = ring(&[("k1", 1)]);
        let a = r.current().logout_token("session-a");
        assert_eq!(a, r.current().logout_token("session-a"));
        assert_ne!(a, r.current().logout_token("session-b"));
        assert_ne!(a, ring(&[("k1", 2)]).current().logout_token("session-a"));
    }
}
