//! The session record as stored: its versioned binary layout, the plain
//! fields the gateway needs without decrypting (deadlines, generation), and
//! the two sealed parts (operator metadata, and the tokens and claims).
//!
//! Layout: `[format version: u8][generation: u64 big-endian][postcard body]
//! [tag: 32 bytes]`. The generation sits at a fixed offset so the store's
//! compare-and-set scripts can read it without understanding the rest. The
//! tag is an HMAC under the server key over everything before it, bound to
//! the session's store ID (see `ServerKey::record_mac`): the plain header
//! (deadlines, generation, key ID, index hashes) is authenticated as much as
//! the sealed parts, so write access to the store cannot extend or re-target
//! a session. This module splits the tag off; `Session::open` checks it.
//!
//! Format 3 packs what format 2 stored as text: the index hashes as their
//! 32 bytes, and the tokens in the sealed secrets as decoded base64url
//! segments (`packed.rs`); records of format 2 still decode, so a session
//! that predates the upgrade keeps working (and is written as format 3 at
//! its next change). Since [`CLAIMS_ONCE_SECRETS`], the sealed secrets keep
//! the claims once: rebuilt from the ID token's payload where they can be
//! (`claims.rs`); the sealed layout before it still decodes.
//!
//! Decoding is strict: the record body, the operator metadata and the
//! sealed secrets must be exactly what the encoder writes for the values
//! they decode to (the body and metadata are encoded again and compared;
//! the secrets check their parts' forms and their encoded size), so a
//! record has one encoding and nothing else — no trailing byte, no
//! over-long length — opens.
//!
//! Records of format 1 (before the tag existed) decode to
//! [`RecordError::UnknownVersion`] and are treated as ended: upgrading signs
//! every user out once, rather than trusting a header nobody authenticated.
//! Anything that does not decode is an error value, never a panic: the
//! caller treats it as "no session" and logs it.

use serde::{Deserialize, Serialize};

mod claims;
mod packed;
use crate::config::RecordLayout;
use crate::secret::SecretString;
pub use claims::Claims;

/// The format records are written in.
pub const FORMAT_VERSION: u8 = 3;
/// The format before packing (hex hashes, tokens as text): still read.
pub const FORMAT_TEXT: u8 = 2;
const HEADER_LEN: usize = 9;
/// Length of the record tag (HMAC-SHA-256) at the end of a record.
pub const TAG_LEN: usize = 32;

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
    /// The sealed claims, checked and rebuilt at their first use, are not
    /// what the encoder writes next to the record's ID token.
    #[error("session claims do not rebuild from the ID token")]
    Claims,
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

/// [`StoredBody`] as format 3 writes it: the same fields in the same
/// order, the hashes as bytes.
#[derive(Serialize)]
struct PackedBodyRef<'a> {
    key_id: &'a str,
    #[serde(with = "packed::hash")]
    user_hash: &'a str,
    #[serde(with = "packed::opt_hash")]
    sid_hash: Option<&'a str>,
    created_at: u64,
    last_active_at: u64,
    idle_expires_at: u64,
    absolute_expires_at: u64,
    access_expires_at: u64,
    has_refresh_token: bool,
    #[serde(with = "serde_bytes")]
    meta: &'a [u8],
    #[serde(with = "serde_bytes")]
    secrets: &'a [u8],
}

impl<'a> From<&'a StoredBody> for PackedBodyRef<'a> {
    fn from(b: &'a StoredBody) -> Self {
        Self {
            key_id: &b.key_id,
            user_hash: &b.user_hash,
            sid_hash: b.sid_hash.as_deref(),
            created_at: b.created_at,
            last_active_at: b.last_active_at,
            idle_expires_at: b.idle_expires_at,
            absolute_expires_at: b.absolute_expires_at,
            access_expires_at: b.access_expires_at,
            has_refresh_token: b.has_refresh_token,
            meta: &b.meta,
            secrets: &b.secrets,
        }
    }
}

/// What [`PackedBodyRef`] wrote, read back.
#[derive(Deserialize)]
struct PackedBody {
    key_id: String,
    #[serde(with = "packed::hash")]
    user_hash: String,
    #[serde(with = "packed::opt_hash")]
    sid_hash: Option<String>,
    created_at: u64,
    last_active_at: u64,
    idle_expires_at: u64,
    absolute_expires_at: u64,
    access_expires_at: u64,
    has_refresh_token: bool,
    #[serde(with = "serde_bytes")]
    meta: Vec<u8>,
    #[serde(with = "serde_bytes")]
    secrets: Vec<u8>,
}

impl From<PackedBody> for StoredBody {
    fn from(b: PackedBody) -> Self {
        Self {
            key_id: b.key_id,
            user_hash: b.user_hash,
            sid_hash: b.sid_hash,
            created_at: b.created_at,
            last_active_at: b.last_active_at,
            idle_expires_at: b.idle_expires_at,
            absolute_expires_at: b.absolute_expires_at,
            access_expires_at: b.access_expires_at,
            has_refresh_token: b.has_refresh_token,
            meta: b.meta,
            secrets: b.secrets,
        }
    }
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

    /// Takes in activity recorded apart from the record (the activity
    /// key) at `at`: the session's effective last activity is the later of
    /// the two, and its effective idle deadline the later of the record's
    /// and `at + idle_timeout`, never past the absolute deadline. An older
    /// `at` changes nothing, so applying it again, or out of order, is
    /// harmless.
    pub fn with_activity(&mut self, at: u64, idle_timeout: u64) {
        if at > self.last_active_at {
            self.last_active_at = at;
            self.idle_expires_at = self.idle_expires_at.max(
                at.saturating_add(idle_timeout)
                    .min(self.absolute_expires_at),
            );
        }
    }

    /// The instant the session stops being usable.
    pub fn ends_at(&self) -> u64 {
        self.idle_expires_at.min(self.absolute_expires_at)
    }

    /// Milliseconds until the session stops being usable, at least 1: the
    /// record's key TTL as versions before the activity key wrote it (and
    /// as `store.record_layout = "previous"` still does).
    pub fn ttl_millis(&self, now_millis: u64) -> u64 {
        (self.ends_at() * 1000).saturating_sub(now_millis).max(1)
    }

    /// Milliseconds the store keeps the record's key, at least 1: until
    /// its idle deadline plus one more `idle_timeout`, never past the
    /// absolute deadline. The extra idle period is what activity recorded
    /// apart may keep the session for without rewriting the record; a
    /// session left idle still ends at its effective idle deadline (every
    /// read checks it), and its abandoned record is gone at most one idle
    /// period after that.
    pub fn key_ttl_millis(&self, idle_timeout: u64, now_millis: u64) -> u64 {
        let until = self
            .idle_expires_at
            .saturating_add(idle_timeout)
            .min(self.absolute_expires_at);
        (until * 1000).saturating_sub(now_millis).max(1)
    }
}

/// A decoded record with the parts its tag is checked over: what
/// [`StoredSession::decode`] gives back. Nothing in `record` may be trusted
/// before the tag is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged<'a> {
    pub record: StoredSession,
    /// Every byte before the tag.
    pub signed: &'a [u8],
    pub tag: &'a [u8],
}

impl StoredSession {
    /// The record's bytes, ending with the tag `sign` computes over the
    /// bytes before it.
    pub fn encode(&self, sign: impl FnOnce(&[u8]) -> [u8; TAG_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_LEN + 64 + self.body.meta.len() + self.body.secrets.len() + TAG_LEN,
        );
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.generation.to_be_bytes());
        // Serialising plain data into a Vec cannot fail.
        let Ok(mut out) = postcard::to_extend(&PackedBodyRef::from(&self.body), out) else {
            return Vec::new();
        };
        let tag = sign(&out);
        out.extend_from_slice(&tag);
        out
    }

    /// Splits a record into its fields, the signed bytes and the tag. The
    /// tag is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Tagged<'_>, RecordError> {
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(RecordError::Truncated);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&signed[GENERATION_AT]);
        let wire = &signed[HEADER_LEN..];
        // Each body must be exactly what its encoder writes for it.
        let body = match bytes[0] {
            FORMAT_VERSION => {
                let body = StoredBody::from(canonical::<PackedBody>(wire)?);
                same_bytes(postcard::to_stdvec(&PackedBodyRef::from(&body)), wire)?;
                body
            }
            FORMAT_TEXT => {
                let body = canonical::<StoredBody>(wire)?;
                same_bytes(postcard::to_stdvec(&body), wire)?;
                body
            }
            other => return Err(RecordError::UnknownVersion(other)),
        };
        Ok(Tagged {
            record: Self {
                generation: u64::from_be_bytes(generation),
                body,
            },
            signed,
            tag,
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

/// A value that takes every byte of `wire` (nothing left over).
fn canonical<'de, T: Deserialize<'de>>(wire: &'de [u8]) -> Result<T, RecordError> {
    match postcard::take_from_bytes::<T>(wire) {
        Ok((v, [])) => Ok(v),
        _ => Err(RecordError::Malformed),
    }
}

/// Whether encoding a decoded value again gave back the bytes it came
/// from: postcard accepts over-long lengths, the encoder never writes them.
fn same_bytes(again: Result<Vec<u8>, postcard::Error>, wire: &[u8]) -> Result<(), RecordError> {
    match again {
        Ok(v) if v == wire => Ok(()),
        _ => Err(RecordError::Malformed),
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
/// without the browser's cookie. Written with its tokens packed and its
/// claims kept once (after [`CLAIMS_ONCE_SECRETS`]); the older layouts are
/// still read: tokens packed and claims as text (this struct's derived
/// serde form, after [`PACKED_SECRETS`]), and those below with tokens as
/// text.
///
/// Decoding checks structure only (lengths, forms, no byte left over);
/// the claims kept once are checked and rebuilt at their first use
/// ([`Self::claims_json`]), which most requests never make.
#[derive(Clone, Deserialize)]
pub struct SessionSecrets {
    #[serde(with = "packed::token")]
    pub access_token: SecretString,
    #[serde(with = "packed::opt_token")]
    pub refresh_token: Option<SecretString>,
    #[serde(with = "packed::opt_token")]
    pub id_token: Option<SecretString>,
    /// The user's claims as a JSON object: [`Self::claims_json`]. Claims
    /// read from a record go with its ID token; a new ID token comes with
    /// new claims (text).
    #[serde(deserialize_with = "claims_text")]
    pub claims: Claims,
    /// The access token's granted scopes, space-separated (`None` in
    /// records written before they were kept).
    pub scopes: Option<String>,
    /// Tokens made for routes' APIs (derived user tokens), at most
    /// [`MAX_DERIVED`], one per key (empty in records written before
    /// they were kept). They live and die with the record.
    pub derived: Vec<DerivedToken>,
    /// The session's DPoP private key (RFC 9449; PKCS#8), when
    /// `oidc.dpop` is on: its tokens are bound to it. Sealed here only, so
    /// a copy of the store cannot use them (`None` in records written
    /// before DPoP, or with it off).
    #[serde(with = "opt_secret_bytes")]
    pub dpop_key: Option<zeroize::Zeroizing<Vec<u8>>>,
}

/// Most derived tokens a session keeps: one per distinct (resource,
/// scopes, exchange) among the routes, so a config's routes bound it; the
/// bound keeps a record small whatever the config.
pub const MAX_DERIVED: usize = 16;

/// One derived user token.
#[derive(Clone, Serialize, Deserialize)]
pub struct DerivedToken {
    /// What it was asked for: the route token's stable key (resource,
    /// scopes, exchange), never the route's path, so routes asking the
    /// same share it and no two asking differently do.
    pub key: String,
    #[serde(with = "packed::token")]
    pub access_token: SecretString,
    /// When it expires (0: the provider did not say).
    pub expires_at: u64,
}

/// How the sealed secrets of a format-3 record begin: an empty access
/// token followed by an `Option` tag of 2, which no layout with tokens as
/// text can start with (postcard's `Option` tag is 0 or 1, and every such
/// layout begins with the access token and the optional refresh token).
/// The packed layout follows.
pub const PACKED_SECRETS: [u8; 2] = [0x00, 0x02];

/// How the sealed secrets begin since the claims are kept once: as
/// [`PACKED_SECRETS`], with an `Option` tag of 3 (no text layout can start
/// so either). [`SecretsOut`] follows.
pub const CLAIMS_ONCE_SECRETS: [u8; 2] = [0x00, 0x03];

/// [`SessionSecrets`] as written: the same fields in the same order,
/// the claims as `C` (their packed form after [`CLAIMS_ONCE_SECRETS`],
/// text after [`PACKED_SECRETS`]).
#[derive(Serialize)]
struct SecretsOut<'a, C> {
    access_token: packed::TokenRef<'a>,
    refresh_token: Option<packed::TokenRef<'a>>,
    id_token: Option<packed::TokenRef<'a>>,
    claims: C,
    scopes: Option<&'a str>,
    derived: &'a [DerivedToken],
    dpop_key: Option<&'a serde_bytes::Bytes>,
}

/// What [`SecretsOut`] wrote, read back.
#[derive(Deserialize)]
struct SecretsIn<'a> {
    #[serde(with = "packed::token")]
    access_token: SecretString,
    #[serde(with = "packed::opt_token")]
    refresh_token: Option<SecretString>,
    #[serde(with = "packed::opt_token")]
    id_token: Option<SecretString>,
    #[serde(borrow)]
    claims: claims::PackedClaims<'a>,
    scopes: Option<String>,
    derived: Vec<DerivedToken>,
    #[serde(with = "opt_secret_bytes")]
    dpop_key: Option<zeroize::Zeroizing<Vec<u8>>>,
}

/// `SessionSecrets` with its tokens as text, as format 2 wrote it.
#[derive(Deserialize)]
struct SessionSecretsV3 {
    #[serde(with = "secret_string")]
    access_token: SecretString,
    #[serde(with = "opt_secret_string")]
    refresh_token: Option<SecretString>,
    #[serde(with = "opt_secret_string")]
    id_token: Option<SecretString>,
    claims_json: String,
    scopes: Option<String>,
    derived: Vec<DerivedTokenText>,
}

/// `DerivedToken` with its token as text.
#[derive(Deserialize)]
struct DerivedTokenText {
    key: String,
    #[serde(with = "secret_string")]
    access_token: SecretString,
    expires_at: u64,
}

/// `SessionSecrets` as written before `derived` existed.
#[derive(Deserialize)]
struct SessionSecretsV2 {
    #[serde(with = "secret_string")]
    access_token: SecretString,
    #[serde(with = "opt_secret_string")]
    refresh_token: Option<SecretString>,
    #[serde(with = "opt_secret_string")]
    id_token: Option<SecretString>,
    claims_json: String,
    scopes: Option<String>,
}

/// `SessionSecrets` as written before `scopes` existed: postcard has no
/// field names, so such a record decodes only as this.
#[derive(Deserialize)]
struct SessionSecretsV1 {
    #[serde(with = "secret_string")]
    access_token: SecretString,
    #[serde(with = "opt_secret_string")]
    refresh_token: Option<SecretString>,
    #[serde(with = "opt_secret_string")]
    id_token: Option<SecretString>,
    claims_json: String,
}

impl std::fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecrets([redacted])")
    }
}

impl SessionSecrets {
    /// The layout after [`CLAIMS_ONCE_SECRETS`].
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        self.encode_as(RecordLayout::Compact)
    }

    /// The layout `store.record_layout` names: after
    /// [`CLAIMS_ONCE_SECRETS`], or ([`RecordLayout::Previous`]) exactly what
    /// the version before wrote — after [`PACKED_SECRETS`], the claims as
    /// text (this struct's serde form then, unchanged).
    ///
    /// Claims that do not rebuild ([`RecordError::Claims`]: never so for a
    /// record this code wrote and sealed) are written back in the stored
    /// form they were read in, so the record stays refused at their use —
    /// never rewritten as some other claims. That holds under
    /// [`RecordLayout::Previous`] too: the version before cannot open such
    /// a record and so also refuses it, where writing it in its layout
    /// would have needed claims to write (empty ones would pass policies
    /// that only name what a user must not have).
    pub fn encode_as(&self, layout: RecordLayout) -> zeroize::Zeroizing<Vec<u8>> {
        // All the room up front: a buffer that grows frees its old copy,
        // tokens and key included, without wiping it.
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(self.encoded_capacity()));
        let id_token = self.id_token.as_ref().map(SecretString::expose);
        let text = self.claims.text(id_token);
        // Serialising plain data into a Vec cannot fail.
        let written = match (layout, text, self.claims.stored_form()) {
            (RecordLayout::Previous, Some(text), _) => {
                out.extend_from_slice(&PACKED_SECRETS);
                postcard::to_extend(&self.layout_with(text), std::mem::take(&mut *out))
            }
            (_, Some(text), _) => {
                out.extend_from_slice(&CLAIMS_ONCE_SECRETS);
                let layout = self.layout_with(claims::pack(text, id_token));
                postcard::to_extend(&layout, std::mem::take(&mut *out))
            }
            (_, None, form) => {
                out.extend_from_slice(&CLAIMS_ONCE_SECRETS);
                let empty = claims::PackedClaims::Text(std::borrow::Cow::Borrowed(""));
                let layout = self.layout_with(form.unwrap_or(&empty));
                postcard::to_extend(&layout, std::mem::take(&mut *out))
            }
        };
        if let Ok(v) = written {
            *out = v;
        }
        out
    }

    /// The fields as [`CLAIMS_ONCE_SECRETS`] lays them out, the claims in
    /// the form given.
    fn layout_with<C>(&self, claims: C) -> SecretsOut<'_, C> {
        SecretsOut {
            access_token: packed::TokenRef(&self.access_token),
            refresh_token: self.refresh_token.as_ref().map(packed::TokenRef),
            id_token: self.id_token.as_ref().map(packed::TokenRef),
            claims,
            scopes: self.scopes.as_deref(),
            derived: &self.derived,
            dpop_key: self.dpop_key.as_deref().map(|k| serde_bytes::Bytes::new(k)),
        }
    }

    /// The layout after [`CLAIMS_ONCE_SECRETS`], read strictly: only what
    /// [`Self::encode`] writes for the values it decodes to. Tokens check
    /// their own form as they decode, the claims at their first use
    /// ([`Self::claims_json`]); what is left to differ is an over-long
    /// length, which the encoded size shows without encoding again.
    fn decode_claims_once(wire: &[u8]) -> Result<Self, RecordError> {
        let v: SecretsIn<'_> = canonical(wire)?;
        let claims_len = claims::stored_len(&v.claims);
        let s = Self {
            access_token: v.access_token,
            refresh_token: v.refresh_token,
            id_token: v.id_token,
            claims: Claims::stored(v.claims),
            scopes: v.scopes,
            derived: v.derived,
            dpop_key: v.dpop_key,
        };
        // Everything but the claims, with empty text (2 bytes) in their place.
        let empty = claims::PackedClaims::Text(std::borrow::Cow::Borrowed(""));
        let rest = postcard::experimental::serialized_size(&s.layout_with(empty));
        let canonical_len = rest.map(|r| r - 2 + claims_len);
        if canonical_len != Ok(wire.len()) {
            return Err(RecordError::Malformed);
        }
        Ok(s)
    }

    /// The packed layout with the claims as text (after
    /// [`PACKED_SECRETS`]), read as strictly.
    fn decode_packed(wire: &[u8]) -> Result<Self, RecordError> {
        let s: Self = canonical(wire)?;
        let text = s.claims.text(None).unwrap_or_default();
        let again =
            zeroize::Zeroizing::new(postcard::to_stdvec(&s.layout_with(text)).unwrap_or_default());
        if again.as_slice() != wire {
            return Err(RecordError::Malformed);
        }
        Ok(s)
    }

    /// An upper bound of [`Self::encode`]'s length: the text lengths bound
    /// the packed tokens, plus room for postcard's lengths and tags.
    fn encoded_capacity(&self) -> usize {
        let text = |s: &SecretString| s.expose().len() + 48;
        let opt = |s: &Option<SecretString>| s.as_ref().map_or(1, text);
        PACKED_SECRETS.len()
            + 64
            + text(&self.access_token)
            + opt(&self.refresh_token)
            + opt(&self.id_token)
            + self.claims.len_bound()
            + self.scopes.as_ref().map_or(0, String::len)
            + self
                .derived
                .iter()
                .map(|d| d.key.len() + text(&d.access_token) + 16)
                .sum::<usize>()
            + self.dpop_key.as_ref().map_or(0, |k| k.len() + 8)
    }

    /// Decodes the current layout, the packed one with the claims as
    /// text, or one with tokens as text: as format 2 wrote it, before `derived` (no derived tokens yet) or before
    /// `scopes` (no known scopes) — a session that predates an upgrade
    /// keeps working. Each older layout is a prefix of the newer, so the
    /// newest that decodes is tried first.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if let Some(wire) = bytes.strip_prefix(&CLAIMS_ONCE_SECRETS[..]) {
            return Self::decode_claims_once(wire);
        }
        if let Some(packed) = bytes.strip_prefix(&PACKED_SECRETS[..]) {
            return Self::decode_packed(packed);
        }
        if let Ok(v3) = postcard::from_bytes::<SessionSecretsV3>(bytes) {
            return Ok(Self {
                access_token: v3.access_token,
                refresh_token: v3.refresh_token,
                id_token: v3.id_token,
                claims: v3.claims_json.into(),
                scopes: v3.scopes,
                derived: v3
                    .derived
                    .into_iter()
                    .map(|d| DerivedToken {
                        key: d.key,
                        access_token: d.access_token,
                        expires_at: d.expires_at,
                    })
                    .collect(),
                dpop_key: None,
            });
        }
        if let Ok(v2) = postcard::from_bytes::<SessionSecretsV2>(bytes) {
            return Ok(Self {
                access_token: v2.access_token,
                refresh_token: v2.refresh_token,
                id_token: v2.id_token,
                claims: v2.claims_json.into(),
                scopes: v2.scopes,
                derived: Vec::new(),
                dpop_key: None,
            });
        }
        let v1: SessionSecretsV1 =
            postcard::from_bytes(bytes).map_err(|_| RecordError::Malformed)?;
        Ok(Self {
            access_token: v1.access_token,
            refresh_token: v1.refresh_token,
            id_token: v1.id_token,
            claims: v1.claims_json.into(),
            scopes: None,
            derived: Vec::new(),
            dpop_key: None,
        })
    }

    /// The user's claims as a JSON object, checked and rebuilt from the ID
    /// token at the first call if the record kept them once.
    /// [`RecordError::Claims`]: they do not rebuild — a corrupt record
    /// (never one this code wrote and sealed); the caller refuses the
    /// session rather than reading no claims.
    pub fn claims_json(&self) -> Result<&str, RecordError> {
        let id_token = self.id_token.as_ref().map(SecretString::expose);
        self.claims.text(id_token).ok_or(RecordError::Claims)
    }

    /// The derived token stored under `key`, if it is still valid `skew`
    /// seconds from `now` (one without an expiry is used as it is).
    pub fn derived_token(&self, key: &str, now: u64, skew: u64) -> Option<&SecretString> {
        self.derived
            .iter()
            .find(|d| d.key == key && (d.expires_at == 0 || now + skew < d.expires_at))
            .map(|d| &d.access_token)
    }

    /// Stores `token`, replacing any under the same key; past
    /// [`MAX_DERIVED`], the one expiring first goes.
    pub fn put_derived(&mut self, token: DerivedToken) {
        self.derived.retain(|d| d.key != token.key);
        while self.derived.len() >= MAX_DERIVED {
            let Some(first) = self
                .derived
                .iter()
                .enumerate()
                .min_by_key(|(_, d)| d.expires_at)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.derived.remove(first);
        }
        self.derived.push(token);
    }
}

impl SessionMeta {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Strict, as the record: only what [`Self::encode`] writes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let meta: Self = canonical(bytes)?;
        same_bytes(postcard::to_stdvec(&meta), bytes)?;
        Ok(meta)
    }
}

/// The encoders of format 2, kept for tests that a record written before
/// packing still opens.
#[cfg(test)]
pub(crate) mod format_text {
    use super::*;

    /// A record as format 2 wrote it: hex hashes, and `body.secrets` as
    /// the caller sealed it.
    pub fn encode_record(r: &StoredSession, sign: impl FnOnce(&[u8]) -> [u8; TAG_LEN]) -> Vec<u8> {
        let mut out = vec![FORMAT_TEXT];
        out.extend_from_slice(&r.generation.to_be_bytes());
        let mut out = postcard::to_extend(&r.body, out).expect("encode");
        let tag = sign(&out);
        out.extend_from_slice(&tag);
        out
    }

    /// Secrets as format 3 sealed them before the claims were kept once:
    /// tokens packed, claims as text.
    pub fn encode_packed_secrets(s: &SessionSecrets) -> Vec<u8> {
        s.encode_as(RecordLayout::Previous).to_vec()
    }

    /// Secrets as format 2 sealed them: tokens as text, no marker.
    pub fn encode_secrets(s: &SessionSecrets) -> Vec<u8> {
        #[derive(Serialize)]
        struct Derived<'a>(&'a str, &'a str, u64);
        #[derive(Serialize)]
        struct V3<'a>(
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            Option<&'a str>,
            Vec<Derived<'a>>,
        );
        postcard::to_stdvec(&V3(
            s.access_token.expose(),
            s.refresh_token.as_ref().map(|t| t.expose()),
            s.id_token.as_ref().map(|t| t.expose()),
            s.claims_json().expect("claims"),
            s.scopes.as_deref(),
            s.derived
                .iter()
                .map(|d| Derived(&d.key, d.access_token.expose(), d.expires_at))
                .collect(),
        ))
        .expect("encode")
    }
}

/// Tokens as text: how the layouts before packing stored them (read only).
mod secret_string {
    use super::SecretString;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(SecretString::new)
    }
}

/// Key bytes, wiped from memory when dropped.
/// Claims stored as JSON text.
fn claims_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Claims, D::Error> {
    String::deserialize(d).map(Claims::from)
}

/// Written as `Option<&serde_bytes::Bytes>` by the layouts' own structs.
mod opt_secret_bytes {
    use serde::{Deserialize, Deserializer};
    use zeroize::Zeroizing;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, D::Error> {
        Option::<serde_bytes::ByteBuf>::deserialize(d)
            .map(|o| o.map(|b| Zeroizing::new(b.into_vec())))
    }
}

mod opt_secret_string {
    use super::SecretString;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Option::<String>::deserialize(d).map(|o| o.map(SecretString::new))
    }
}

#[cfg(test)]
mod tests;
