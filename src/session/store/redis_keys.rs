//! Where each key of the Redis store lives: the key names of the sharded
//! layout and of the legacy (single-slot) one, decided by the session ID's
//! format. See the key layout in the parent module's documentation. Also
//! how a record's hash holds the index hashes (`u`, `x`) it names.

use crate::config::RecordLayout;
use crate::session::cookie::{ShardTag, StoreId, hex};

/// Which kind of provider-session index a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SidIndex {
    /// Sharded layout: a sorted set by creation time, in its own slot.
    Sorted,
    /// Legacy layout: a set, in the legacy prefix's slot.
    Set,
}

impl SidIndex {
    /// The kind argument of the scripts: `z` or `s`.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Sorted => "z",
            Self::Set => "s",
        }
    }
}

/// Hex digits of a sharded session's hash in its activity key's name.
pub(super) const ACTIVITY_ID_DIGITS: usize = 16;

/// Key names under the prefix (`P`) and the legacy prefix (`L`).
pub(super) struct Layout {
    pub prefix: String,
    pub legacy: String,
    /// A Redis Cluster: keys of one legacy session must still share a slot
    /// even if the legacy prefix has no hash tag (then no session of that
    /// layout can exist there, but a stale cookie must get an answer, not a
    /// cross-slot error).
    pub cluster: bool,
}

impl Layout {
    /// A key that belongs to one session: `P {kind}:{T}rest` for a sharded
    /// ID, `L {kind}:id` for a legacy one.
    fn per_session(&self, kind: &str, id: &StoreId) -> String {
        match id.shard() {
            Some((tag, rest)) => format!("{}{kind}:{{{tag}}}{rest}", self.prefix),
            None if self.cluster && !crate::config::has_hash_tag(&self.legacy) => {
                format!("{}{kind}:{{{}}}", self.legacy, id.as_str())
            }
            None => format!("{}{kind}:{}", self.legacy, id.as_str()),
        }
    }

    pub fn record(&self, id: &StoreId) -> String {
        self.per_session("s", id)
    }

    pub fn tombstone(&self, id: &StoreId) -> String {
        self.per_session("t", id)
    }

    pub fn lock(&self, id: &StoreId) -> String {
        self.per_session("l", id)
    }

    /// The session's last activity, written apart from the record: `a` is
    /// not a tracked prefix (`tracking::tracked_prefixes`), so writing it
    /// invalidates no process's session cache.
    ///
    /// A sharded ID's key holds only the first [`ACTIVITY_ID_DIGITS`] hex
    /// digits of the ID's hash after its tag: every session that is used
    /// has this key, and the shorter name keeps its allocation in a smaller
    /// size class (88 B instead of 136 B of `MEMORY USAGE` with an 18-byte
    /// prefix; see docs/benchmarks.md). Two sessions of one shard tag
    /// sharing it is a 64-bit coincidence, and could not extend either:
    /// the stamp's tag is bound to the whole store ID, so the other
    /// session's stamp is ignored (at worst one session ends at its
    /// record's own idle deadline). Legacy IDs keep the whole ID (their
    /// key must hash like their record's).
    pub fn activity(&self, id: &StoreId) -> String {
        match id.shard() {
            Some((tag, rest)) => format!(
                "{}a:{{{tag}}}{}",
                self.prefix,
                rest.get(..ACTIVITY_ID_DIGITS).unwrap_or(rest)
            ),
            None => self.per_session("a", id),
        }
    }

    /// The sharded index of a user whose sessions carry `tag`.
    pub fn user_index(&self, tag: ShardTag, user_hash: &str) -> String {
        format!("{}u:{{{}}}{user_hash}", self.prefix, hex(&tag))
    }

    pub fn legacy_user_index(&self, user_hash: &str) -> String {
        format!("{}u:{user_hash}", self.legacy)
    }

    /// The index of `user_hash` that lists session `id`: the one with the
    /// ID's shard tag, or the legacy one.
    pub fn user_index_of(&self, id: &StoreId, user_hash: &str) -> String {
        match id.shard() {
            Some((tag, _)) => format!("{}u:{{{tag}}}{user_hash}", self.prefix),
            None => self.legacy_user_index(user_hash),
        }
    }

    pub fn sid_index(&self, sid_hash: &str) -> String {
        format!("{}x:{sid_hash}", self.prefix)
    }

    pub fn legacy_sid_index(&self, sid_hash: &str) -> String {
        format!("{}sid:{sid_hash}", self.legacy)
    }

    /// The provider-session index that lists session `id`.
    pub fn sid_index_of(&self, id: &StoreId, sid_hash: &str) -> (String, SidIndex) {
        match id.shard() {
            Some(_) => (self.sid_index(sid_hash), SidIndex::Sorted),
            None => (self.legacy_sid_index(sid_hash), SidIndex::Set),
        }
    }

    /// A key of its own slot: single-use values, claims, token IDs.
    pub fn plain(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    /// The random key of the shard tags' keyed hash.
    pub fn shard_key(&self) -> String {
        format!("{}shard-key", self.prefix)
    }

    /// The prefixes to scan: `P`, and `L` when it differs.
    pub fn prefixes(&self) -> Vec<&str> {
        if self.legacy == self.prefix {
            vec![&self.prefix]
        } else {
            vec![&self.prefix, &self.legacy]
        }
    }

    /// The user hash a user index key names (either layout), given the
    /// prefix it was found under.
    pub fn user_of_index<'k>(&self, key: &'k str) -> Option<&'k str> {
        if let Some(rest) = key
            .strip_prefix(&self.prefix)
            .and_then(|k| k.strip_prefix("u:"))
        {
            if let Some(tagged) = rest.strip_prefix('{') {
                return tagged.split_once('}').map(|(_, uh)| uh);
            }
            if self.legacy == self.prefix {
                return Some(rest);
            }
        }
        key.strip_prefix(&self.legacy)
            .and_then(|k| k.strip_prefix("u:"))
    }
}

/// A user or provider-session hash (64 lower-case hex digits) as the
/// record's hash stores it in `u` and `x`: its 32 bytes. The scripts only
/// compare and return these fields, and Lua strings are byte strings.
/// Anything that is not such a hash (never written by the gateway, whose
/// hashes are all SHA-256 in hex) is stored as it is.
pub(super) fn hash_field(hex_hash: &str) -> Vec<u8> {
    let b = hex_hash.as_bytes();
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let packed: Option<Vec<u8>> = (b.len() == 64)
        .then(|| {
            b.chunks_exact(2)
                .map(|p| Some((digit(p[0])? << 4) | digit(p[1])?))
                .collect()
        })
        .flatten();
    packed.unwrap_or_else(|| b.to_vec())
}

/// An index hash as a record's hash stores it with `layout`
/// (`store.record_layout`): [`hash_field`]'s 32 bytes, or the 64 hex
/// digits the version before wrote (and reads: its `HGET u` expects text).
pub(super) fn index_field(hex_hash: &str, layout: RecordLayout) -> Vec<u8> {
    match layout {
        RecordLayout::Compact => hash_field(hex_hash),
        RecordLayout::Previous => hex_hash.as_bytes().to_vec(),
    }
}

/// The hash a `u` or `x` field names, in hex: 32 bytes as this version
/// writes them, or the 64 hex digits that versions before it wrote (still
/// read until those records expire).
pub(super) fn field_hash(field: &[u8]) -> String {
    if field.len() == 32 {
        hex(field)
    } else {
        String::from_utf8_lossy(field).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(legacy: &str) -> Layout {
        Layout {
            prefix: "bff:".into(),
            legacy: legacy.into(),
            cluster: true,
        }
    }

    #[test]
    fn a_sessions_keys_and_its_users_index_carry_the_same_hash_tag() {
        let l = layout("bff:");
        let id = StoreId::parse(&format!("ab12{}", "c".repeat(56))).expect("id");
        let tag = format!("{{ab12}}{}", "c".repeat(56));
        assert_eq!(l.record(&id), format!("bff:s:{tag}"));
        assert_eq!(l.tombstone(&id), format!("bff:t:{tag}"));
        assert_eq!(l.lock(&id), format!("bff:l:{tag}"));
        assert_eq!(l.activity(&id), format!("bff:a:{{ab12}}{}", "c".repeat(16)));
        assert_eq!(l.user_index_of(&id, "uh"), "bff:u:{ab12}uh");
        assert_eq!(l.user_index([0xab, 0x12], "uh"), "bff:u:{ab12}uh");
        assert_eq!(
            l.sid_index_of(&id, "sh"),
            ("bff:x:sh".to_owned(), SidIndex::Sorted)
        );
        assert_eq!(l.user_of_index("bff:u:{ab12}uh"), Some("uh"));
    }

    #[test]
    fn legacy_ids_keep_the_legacy_layout_under_the_legacy_prefix() {
        let l = layout("{bff}:");
        let id = StoreId::parse(&"d".repeat(64)).expect("id");
        assert_eq!(l.record(&id), format!("{{bff}}:s:{}", "d".repeat(64)));
        assert_eq!(l.user_index_of(&id, "uh"), "{bff}:u:uh");
        assert_eq!(
            l.sid_index_of(&id, "sh"),
            ("{bff}:sid:sh".to_owned(), SidIndex::Set)
        );
        assert_eq!(l.user_of_index("{bff}:u:uh"), Some("uh"));
        assert_eq!(l.prefixes(), ["bff:", "{bff}:"]);
        // Same prefix for both layouts (standalone, Sentinel).
        let same = layout("bff:");
        assert_eq!(same.user_of_index("bff:u:uh"), Some("uh"));
        assert_eq!(same.prefixes(), ["bff:"]);
        // A cluster without a legacy prefix of its own: a stale legacy
        // cookie's keys still share a slot.
        assert_eq!(same.record(&id), format!("bff:s:{{{}}}", "d".repeat(64)));
        let standalone = Layout {
            cluster: false,
            ..layout("bff:")
        };
        assert_eq!(standalone.record(&id), format!("bff:s:{}", "d".repeat(64)));
        assert_eq!(same.activity(&id), format!("bff:a:{{{}}}", "d".repeat(64)));
        assert_eq!(
            standalone.activity(&id),
            format!("bff:a:{}", "d".repeat(64))
        );
    }

    #[test]
    fn index_hashes_are_stored_as_32_bytes_and_hex_ones_still_read() {
        let h = "0123456789abcdef".repeat(4);
        let field = hash_field(&h);
        assert_eq!(field.len(), 32);
        assert_eq!(field_hash(&field), h);
        // As the previous version wrote it.
        assert_eq!(field_hash(h.as_bytes()), h);
        assert_eq!(field_hash(b""), "");
        assert_eq!(index_field(&h, RecordLayout::Compact), field);
        // As the version before wrote them, and `record_layout = "previous"`.
        assert_eq!(index_field(&h, RecordLayout::Previous), h.as_bytes());
        for odd in ["AB".repeat(32), "xyz".into(), String::new()] {
            assert_eq!(hash_field(&odd), odd.as_bytes());
            assert_eq!(field_hash(&hash_field(&odd)), odd);
        }
    }
}
