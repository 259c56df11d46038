//! Compact encodings of what a stored record holds most of: tokens and
//! hex hashes. Owns the byte-level packing of format-3 records (see
//! `record.rs`); nothing here knows what a session is.
//!
//! Decoding is strict: a form the encoder would not have written (a token
//! stored as text that it would have packed, a packed token of fewer than
//! two or more than [`MAX_SEGMENTS`] segments, a hex hash stored as text)
//! is refused, so each value has one encoding.
//!
//! A token is mostly base64url text (a JWT, a JWE, or an opaque string):
//! when it is dot-separated canonical base64url segments, the decoded bytes
//! are stored and the text is rebuilt on read, a quarter smaller. Anything
//! else is stored as it is. Packing is lossless by construction: a segment
//! is only decoded when re-encoding gives back the same text (the engine
//! refuses padding and non-zero trailing bits), so the token the gateway
//! forwards is the one the provider issued, byte for byte.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::secret::SecretString;

/// Most segments a packed token has (a JWE has five).
const MAX_SEGMENTS: usize = 8;

/// A token as stored in a format-3 record.
#[derive(Serialize, Deserialize)]
enum PackedToken<'a> {
    /// Stored as it is (not base64url segments).
    Text(#[serde(borrow)] &'a str),
    /// The decoded bytes of each dot-separated base64url segment.
    Segments(#[serde(borrow)] Vec<&'a serde_bytes::Bytes>),
}

/// The decoded segments of `token`, if it is made only of canonical
/// base64url segments (at least two: a lone opaque string gains nothing
/// worth the ambiguity of mixed alphabets).
fn segments(token: &str) -> Option<Vec<Zeroizing<Vec<u8>>>> {
    let n = token.split('.').count();
    if !(2..=MAX_SEGMENTS).contains(&n) {
        return None;
    }
    token
        .split('.')
        .map(|s| URL_SAFE_NO_PAD.decode(s).ok().map(Zeroizing::new))
        .collect()
}

/// A token to serialise packed, by reference: for layouts written from
/// borrowed fields.
pub struct TokenRef<'a>(pub &'a SecretString);

impl Serialize for TokenRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_token(self.0, s)
    }
}

/// Serialises a token packed.
pub fn serialize_token<S: Serializer>(token: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    let text = token.expose();
    match segments(text) {
        Some(parts) => {
            let refs = parts
                .iter()
                .map(|p| serde_bytes::Bytes::new(p.as_slice()))
                .collect();
            PackedToken::Segments(refs).serialize(s)
        }
        None => PackedToken::Text(text).serialize(s),
    }
}

/// Rebuilds a token's text from its packed form; refuses a form the
/// encoder would not have written.
pub fn deserialize_token<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    use serde::de::Error as _;
    Ok(SecretString::new(match PackedToken::deserialize(d)? {
        PackedToken::Text(t) if segments(t).is_some() => {
            return Err(D::Error::custom("a packable token stored as text"));
        }
        PackedToken::Text(t) => t.to_owned(),
        PackedToken::Segments(parts) if !(2..=MAX_SEGMENTS).contains(&parts.len()) => {
            return Err(D::Error::custom(
                "a packed token of too few or many segments",
            ));
        }
        PackedToken::Segments(parts) => {
            let mut out = String::with_capacity(parts.iter().map(|p| p.len() * 4 / 3 + 3).sum());
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                URL_SAFE_NO_PAD.encode_string(p, &mut out);
            }
            out
        }
    }))
}

/// `serde(with)` for a packed token.
pub mod token {
    pub use super::{deserialize_token as deserialize, serialize_token as serialize};
}

/// `serde(with)` for an optional packed token.
pub mod opt_token {
    use super::SecretString;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    struct Unpacked(#[serde(with = "super::token")] SecretString);

    // Written as `Option<TokenRef>` by the layouts' own structs.

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Option::<Unpacked>::deserialize(d).map(|o| o.map(|u| u.0))
    }
}

/// A SHA-256 named in hex (user and provider-session hashes) as stored in
/// a format-3 record: its 32 bytes, or the text if it is not one.
#[derive(Serialize, Deserialize)]
enum PackedHash<'a> {
    Bytes([u8; 32]),
    Text(#[serde(borrow)] &'a str),
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        // Upper case would not come back the same.
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// `serde(with)` for a hex hash.
pub mod hash {
    use super::{PackedHash, unhex};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: AsRef<str>, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        let v = v.as_ref();
        match unhex(v) {
            Some(b) => PackedHash::Bytes(b).serialize(s),
            None => PackedHash::Text(v).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        use serde::de::Error as _;
        Ok(match PackedHash::deserialize(d)? {
            PackedHash::Bytes(b) => crate::session::cookie::hex(&b),
            PackedHash::Text(t) if unhex(t).is_some() => {
                return Err(D::Error::custom("a hex hash stored as text"));
            }
            PackedHash::Text(t) => t.to_owned(),
        })
    }
}

/// `serde(with)` for an optional hex hash.
pub mod opt_hash {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct PackedRef<'a>(#[serde(with = "super::hash")] &'a str);

    #[derive(Deserialize)]
    struct Packed(#[serde(with = "super::hash")] String);

    pub fn serialize<T: AsRef<str>, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|h| PackedRef(h.as_ref())).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<Packed>::deserialize(d).map(|o| o.map(|p| p.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct T(#[serde(with = "token")] SecretString);

    fn round_trip(text: &str) -> (String, usize) {
        let bytes = postcard::to_stdvec(&T(SecretString::new(text))).expect("encode");
        let back: T = postcard::from_bytes(&bytes).expect("decode");
        (back.0.expose().to_owned(), bytes.len())
    }

    #[test]
    fn jwt_shaped_tokens_come_back_byte_for_byte_and_a_quarter_smaller() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(vec![b'x'; 700]);
        let sig = URL_SAFE_NO_PAD.encode([7u8; 256]);
        let jwt = format!("{header}.{payload}.{sig}");
        let (back, len) = round_trip(&jwt);
        assert_eq!(back, jwt);
        assert!(len * 4 < jwt.len() * 3 + 40, "{len} vs {}", jwt.len());
        // A JWE with an empty encrypted key ("dir").
        let jwe = format!("{header}..{sig}.{payload}.{sig}");
        assert_eq!(round_trip(&jwe).0, jwe);
    }

    #[test]
    fn anything_else_is_stored_as_it_is() {
        for t in [
            "",
            "opaque-refresh-token",
            "a.b=.c",   // padding
            "ab.c+d",   // standard alphabet
            "a.b",      // "a" is no canonical segment
            "AB.AC",    // non-zero trailing bits
            "x..y",     // two dots around nothing: still not base64
            "eyJ.eyJ.", // odd lengths
            "a.b.c.d.e.f.g.h.i",
            "ünïcode.tøken",
        ] {
            assert_eq!(round_trip(t).0, t, "{t:?}");
        }
        // Canonical segments that are not JSON: packed, still lossless.
        assert_eq!(round_trip("AA.AQ.").0, "AA.AQ.");
    }

    #[test]
    fn hashes_pack_to_32_bytes_and_other_text_stays() {
        #[derive(Serialize, Deserialize)]
        struct H(
            #[serde(with = "hash")] String,
            #[serde(with = "opt_hash")] Option<String>,
        );
        let h = "0123456789abcdef".repeat(4);
        let bytes = postcard::to_stdvec(&H(h.clone(), Some(h.clone()))).expect("encode");
        assert!(bytes.len() <= 2 * 33 + 1, "{}", bytes.len());
        let back: H = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!((back.0, back.1), (h.clone(), Some(h)));
        for odd in ["AB".repeat(32), "short".into(), String::new()] {
            let bytes = postcard::to_stdvec(&H(odd.clone(), None)).expect("encode");
            let back: H = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!((back.0, back.1), (odd, None));
        }
    }

    #[test]
    fn forms_the_encoder_never_writes_are_refused() {
        let decode = |v: &PackedToken<'_>| {
            let bytes = postcard::to_stdvec(v).expect("encode");
            postcard::from_bytes::<T>(&bytes).map(|t| t.0.expose().to_owned())
        };
        // A packable token stored as text.
        assert!(decode(&PackedToken::Text("AA.AQ.")).is_err());
        assert_eq!(
            decode(&PackedToken::Text("opaque")).ok().as_deref(),
            Some("opaque")
        );
        // Packed with a segment count the encoder never packs.
        let seg = serde_bytes::Bytes::new(b"\x01");
        assert!(decode(&PackedToken::Segments(vec![seg])).is_err());
        assert!(decode(&PackedToken::Segments(vec![seg; MAX_SEGMENTS + 1])).is_err());
        assert!(decode(&PackedToken::Segments(vec![seg; 2])).is_ok());
        // A hex hash stored as text.
        #[derive(Deserialize)]
        struct H(#[serde(with = "hash")] String);
        let h = "0123456789abcdef".repeat(4);
        let bytes = postcard::to_stdvec(&PackedHash::Text(&h)).expect("encode");
        assert!(postcard::from_bytes::<H>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&PackedHash::Text("AB")).expect("encode");
        assert_eq!(postcard::from_bytes::<H>(&bytes).expect("text").0, "AB");
    }
}
