//! The activity stamp: what an activity touch writes to a session's
//! activity key (`P a:{T}rest16`, see `store`) instead of rewriting the
//! record, so that no process's session cache is invalidated.
//!
//! A stamp is one integer: the activity time (unix seconds) in the high
//! bits and a 31-bit tag under the server key that sealed the record in the
//! low ones (`crypto::ServerKey::activity_tag`). One integer because Redis
//! keeps a value that parses as one without a string allocation (the
//! activity key costs the least it can per session), and because a later
//! time is then a greater stamp, which is all the store needs to keep the
//! latest. The tag makes the stamp as hard to forge as the record's own
//! deadlines: without it, anyone able to write to the store could keep a
//! session alive up to its absolute deadline. This module only encodes and
//! checks; deciding when to write is `Sessions::touch`'s.

use super::cookie::StoreId;
use super::crypto::ServerKey;

/// Bits of the tag below the time.
const TAG_BITS: u32 = 31;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// The stamp of activity at `at` for the session `store_id`, tagged under
/// `key` (the key its record names). Times past 2106 do not fit 32 bits:
/// they are clamped, which only makes the stamp older.
pub fn stamp(key: &ServerKey, store_id: &StoreId, at: u64) -> u64 {
    let at = at.min(u64::from(u32::MAX));
    (at << TAG_BITS) | u64::from(key.activity_tag(store_id.as_str(), at))
}

/// The activity time a stamp carries, if its tag is `key`'s for this
/// session.
pub fn open(key: &ServerKey, store_id: &StoreId, stamp: u64) -> Option<u64> {
    let at = stamp >> TAG_BITS;
    let tag = u32::try_from(stamp & TAG_MASK).ok()?;
    crate::secret::constant_time_eq(
        &key.activity_tag(store_id.as_str(), at).to_be_bytes(),
        &tag.to_be_bytes(),
    )
    .then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::crypto::KeyRing;

    fn keys(secret: u8) -> KeyRing {
        KeyRing::new(&[crate::config::ServerKeyConfig {
            id: "k1".into(),
            key: crate::secret::SecretKey::from_bytes([secret; 32]),
        }])
    }

    #[test]
    fn a_stamp_opens_to_its_time_for_its_session_under_its_key_only() {
        let ring = keys(1);
        let key = ring.current();
        let id = StoreId::parse(&format!("ab12{}", "c".repeat(56))).expect("id");
        let other = StoreId::parse(&format!("ab12{}", "d".repeat(56))).expect("id");
        let s = stamp(key, &id, 1_765_000_000);
        assert_eq!(open(key, &id, s), Some(1_765_000_000));
        // Another session's stamp, another key's, an edited time or tag.
        assert_eq!(open(key, &other, s), None);
        assert_eq!(open(keys(2).current(), &id, s), None);
        assert_eq!(open(key, &id, s + (1 << TAG_BITS)), None);
        assert_eq!(open(key, &id, s ^ 1), None);
        // Fits a signed 64-bit integer (what Redis stores as one), and a
        // later time is a greater stamp whatever the tags.
        assert!(i64::try_from(stamp(key, &id, u64::from(u32::MAX))).is_ok());
        assert!(stamp(key, &id, 1_765_000_001) > s | TAG_MASK);
    }
}
