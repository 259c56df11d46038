//! The session record as stored: its versioned binary layout, the plain
//! fields the gateway needs without decrypting (deadlines, generation), and
//! the two sealed parts (operator metadata, and the tokens and claims).
//!
//! Layout: `[format version: u8][generation: u64 big-endian][postcard body]`.
//! The generation sits at a fixed offset so the store's compare-and-set
//! scripts can read it without understanding the rest. Anything that does not
//! decode is an error value, never a panic: the caller treats it as "no
//! session" and logs it.

use serde::{Deserialize, Serialize};

use crate::secret::SecretString;

pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 9;

/// Where the generation sits in a record's bytes: the one definition both
/// stores' compare-and-set use.
pub const GENERATION_AT: std::ops::Range<usize> = 1..HEADER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is shorter than its header")]
    Truncated,
    #[error("record format version {0} is not supported")]
    UnknownVersion(u8),
    #[error("record body does not decode")]
    Malformed,
}

/// What the store holds for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Bumped by every write; compare-and-set writes check it.
    pub generation: u64,
    pub body: StoredBody,
}

/// Plain (unencrypted) fields: timestamps and hashes only — no token, no
/// claim, nothing that identifies the user by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBody {
    /// Which server key sealed `meta` and `secrets`.
    pub key_id: String,
    /// Hex SHA-256 of the subject: names the per-user index.
    pub user_hash: String,
    /// Hex SHA-256 of the provider's session ID, if it sent one: names the
    /// back-channel logout index.
    pub sid_hash: Option<String>,
    pub created_at: u64,
    pub last_active_at: u64,
    pub idle_expires_at: u64,
    pub absolute_expires_at: u64,
    /// When the access token expires (0: the provider did not say).
    pub access_expires_at: u64,
    pub has_refresh_token: bool,
    /// [`SessionMeta`], sealed under the server key.
    #[serde(with = "serde_bytes")]
    pub meta: Vec<u8>,
    /// [`SessionSecrets`], sealed under the server key and the cookie's
    /// per-session secret.
    #[serde(with = "serde_bytes")]
    pub secrets: Vec<u8>,
}

/// Why a stored session is no longer usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Absolute,
}

impl StoredBody {
    pub fn expired(&self, now: u64) -> Option<Expiry> {
        if now >= self.absolute_expires_at {
            Some(Expiry::Absolute)
        } else if now >= self.idle_expires_at {
            Some(Expiry::Idle)
        } else {
            None
        }
    }

    /// The instant the record stops being usable: its store TTL.
    pub fn ends_at(&self) -> u64 {
        self.idle_expires_at.min(self.absolute_expires_at)
    }

    /// Milliseconds the store should keep the record, at least 1.
    pub fn ttl_millis(&self, now_millis: u64) -> u64 {
        (self.ends_at() * 1000).saturating_sub(now_millis).max(1)
    }
}

impl StoredSession {
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEADER_LEN + 64 + self.body.meta.len() + self.body.secrets.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.generation.to_be_bytes());
        // Serialising plain data into a Vec cannot fail.
        if let Ok(body) = postcard::to_extend(&self.body, out) {
            return body;
        }
        Vec::new()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() < HEADER_LEN {
            return Err(RecordError::Truncated);
        }
        if bytes[0] != FORMAT_VERSION {
            return Err(RecordError::UnknownVersion(bytes[0]));
        }
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&bytes[GENERATION_AT]);
        let (body, rest) = postcard::take_from_bytes::<StoredBody>(&bytes[HEADER_LEN..])
            .map_err(|_| RecordError::Malformed)?;
        if !rest.is_empty() {
            return Err(RecordError::Malformed);
        }
        Ok(Self {
            generation: u64::from_be_bytes(generation),
            body,
        })
    }

    /// The generation as stored (at [`GENERATION_AT`]), for
    /// compare-and-set.
    pub fn generation_bytes(generation: u64) -> [u8; 8] {
        generation.to_be_bytes()
    }

    /// The stored generation of a record's bytes, read without decoding
    /// the rest: what a store compares in `replace_if`.
    pub fn stored_generation(bytes: &[u8]) -> Option<&[u8]> {
        bytes.get(GENERATION_AT)
    }
}

/// Sealed under the server key: what operators see when listing sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMeta {
    pub sub: String,
    /// The provider's session ID (`sid` claim), for back-channel logout.
    pub sid: Option<String>,
    pub last_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Sealed under the server key and the cookie's secret: never readable
/// without the browser's cookie.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionSecrets {
    #[serde(with = "secret_string")]
    pub access_token: SecretString,
    #[serde(with = "opt_secret_string")]
    pub refresh_token: Option<SecretString>,
    #[serde(with = "opt_secret_string")]
    pub id_token: Option<SecretString>,
    /// The user's claims as a JSON object.
    pub claims_json: String,
}

impl std::fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecrets([redacted])")
    }
}

impl SessionSecrets {
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(postcard::to_stdvec(self).unwrap_or_default())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        postcard::from_bytes(bytes).map_err(|_| RecordError::Malformed)
    }
}

impl SessionMeta {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        postcard::from_bytes(bytes).map_err(|_| RecordError::Malformed)
    }
}

mod secret_string {
    use super::SecretString;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(SecretString::new)
    }
}

mod opt_secret_string {
    use super::SecretString;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|x| x.expose()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Option::<String>::deserialize(d).map(|o| o.map(SecretString::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredSession {
        StoredSession {
            generation: 7,
            body: StoredBody {
                key_id: "k1".into(),
                user_hash: "ab".repeat(32),
                sid_hash: Some("cd".repeat(32)),
                created_at: 1_000,
                last_active_at: 1_100,
                idle_expires_at: 4_700,
                absolute_expires_at: 44_200,
                access_expires_at: 1_400,
                has_refresh_token: true,
                meta: vec![1, 2, 3],
                secrets: vec![4; 300],
            },
        }
    }

    #[test]
    fn records_round_trip_with_the_generation_at_a_fixed_offset() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(&bytes[1..9], &StoredSession::generation_bytes(7));
        assert_eq!(StoredSession::decode(&bytes), Ok(r));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(StoredSession::decode(b""), Err(RecordError::Truncated));
        assert_eq!(
            StoredSession::decode(&[2; 20]),
            Err(RecordError::UnknownVersion(2))
        );
        let mut bytes = sample().encode();
        bytes.truncate(bytes.len() - 5);
        assert_eq!(StoredSession::decode(&bytes), Err(RecordError::Malformed));
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(StoredSession::decode(&bytes), Err(RecordError::Malformed));
        // Every prefix and a sweep of random-ish inputs: no panic.
        let full = sample().encode();
        for n in 0..full.len() {
            let _ = StoredSession::decode(&full[..n]);
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let mut buf = vec![FORMAT_VERSION];
            for _ in 0..(x % 97) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            let _ = StoredSession::decode(&buf);
            let _ = SessionSecrets::decode(&buf);
            let _ = SessionMeta::decode(&buf);
        }
    }

    #[test]
    fn expiry_reports_which_limit_ended_the_session() {
        let b = sample().body;
        assert_eq!(b.expired(1_200), None);
        assert_eq!(b.expired(4_700), Some(Expiry::Idle));
        assert_eq!(b.expired(44_200), Some(Expiry::Absolute));
        assert_eq!(b.ends_at(), 4_700);
        assert_eq!(b.ttl_millis(4_600_000), 100_000);
        assert_eq!(b.ttl_millis(9_999_999), 1);
    }

    #[test]
    fn secrets_debug_is_redacted() {
        let s = SessionSecrets {
            access_token: SecretString::new("at"),
            refresh_token: None,
            id_token: None,
            claims_json: "{}".into(),
        };
        assert_eq!(format!("{s:?}"), "SessionSecrets([redacted])");
        let back = SessionSecrets::decode(&s.encode()).expect("decodes");
        assert_eq!(back.access_token.expose(), "at");
    }
}
