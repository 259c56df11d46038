//! How a session's keys are read: the `GET` script's answer (record,
//! tombstone, activity) taken apart, and on a Cluster the same three keys
//! read one by one while the session's slot migrates.

use super::RedisStore;
use crate::session::store::{Fetched, Read, RevokeReason};

/// What the `GET` script answered. Only the answers it gives are read
/// (a record, a record and its activity, a tombstone, nil, or one of the
/// two wrong-type codes); anything else is an error, not "no session": a
/// reply of another shape comes from a store (or a proxy in front of it)
/// that answers something else than the script, and reading it as no
/// session would log out a user whose session still exists.
pub(super) fn fetched(value: redis::Value) -> redis::RedisResult<Read> {
    let unexpected = |value: &redis::Value| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "the session lookup script got a reply it never gives",
            shape(value),
        ))
    };
    let (fetched, activity) = match value {
        redis::Value::BulkString(record) => (Fetched::Live(record), None),
        redis::Value::Nil => (Fetched::Missing, None),
        redis::Value::Array(mut items)
            if items.len() == 2
                && matches!(items[0], redis::Value::BulkString(_))
                && matches!(items[1], redis::Value::BulkString(_)) =>
        {
            let activity = stamp(&items[1]);
            match items.swap_remove(0) {
                redis::Value::BulkString(record) => (Fetched::Live(record), activity),
                other => return Err(unexpected(&other)),
            }
        }
        redis::Value::Array(items)
            if items.len() == 1 && matches!(items[0], redis::Value::BulkString(_)) =>
        {
            (
                Fetched::Revoked(match items.first() {
                    Some(redis::Value::BulkString(tomb)) => tomb_reason(tomb),
                    _ => None,
                }),
                None,
            )
        }
        // `GET`'s answers for a key of the wrong type (see the script).
        redis::Value::Int(WRONG_TYPE_RECORD) => {
            tracing::warn!(
                "a session's record key holds another type than a hash (written by something else?): read as no session"
            );
            (Fetched::Missing, None)
        }
        redis::Value::Int(WRONG_TYPE_TOMBSTONE) => {
            tracing::warn!(
                "a session's tombstone key holds another type than a string (written by something else?): read as ended"
            );
            (Fetched::Revoked(None), None)
        }
        other => return Err(unexpected(&other)),
    };
    Ok(Read { fetched, activity })
}

/// A reply's kind and size, never its bytes (a record, a token), for an
/// error that says what came instead of what was expected.
pub(in crate::session::store) fn shape(value: &redis::Value) -> String {
    use redis::Value as V;
    match value {
        V::Nil => "nil".into(),
        V::Int(i) => format!("the integer {i}"),
        V::BulkString(b) => format!("a string of {} bytes", b.len()),
        V::Array(items) => {
            let kinds: Vec<String> = items.iter().take(4).map(shape).collect();
            let more = if items.len() > 4 { ", …" } else { "" };
            format!("an array of {} [{}{more}]", items.len(), kinds.join(", "))
        }
        V::SimpleString(_) | V::Okay => "a status reply".into(),
        V::Map(m) => format!("a map of {}", m.len()),
        V::Set(s) => format!("a set of {}", s.len()),
        V::Double(_) => "a double".into(),
        V::Boolean(_) => "a boolean".into(),
        V::VerbatimString { .. } => "a verbatim string".into(),
        V::BigNumber(_) => "a big number".into(),
        V::Attribute { .. } => "an attribute".into(),
        V::Push { .. } => "a push message".into(),
        V::ServerError(e) => format!("the error {}", e.code()),
        _ => "another kind of reply".into(),
    }
}

/// What `GET` answers when the record key is not a hash.
const WRONG_TYPE_RECORD: i64 = 1;
/// What `GET` answers when the tombstone key is not a string.
const WRONG_TYPE_TOMBSTONE: i64 = 2;

/// A single-key read whose key holds another type than the command reads
/// (`WRONGTYPE`) as `absent`: a key written by something else is no data
/// of ours, and an error there would be taken for an outage (a 503 on
/// every request that names the key, for as long as it is there).
pub(super) fn wrong_type_as<T>(
    answer: redis::RedisResult<T>,
    absent: T,
    what: &str,
) -> redis::RedisResult<T> {
    match answer {
        Err(e) if e.code() == Some("WRONGTYPE") => {
            tracing::warn!(
                "{what} holds a key of another type (written by something else?): read as absent"
            );
            Ok(absent)
        }
        answer => answer,
    }
}

/// An activity key's value: a decimal integer (Redis may hand it back as
/// text or as an integer). Anything else counts as no activity.
pub(super) fn stamp(value: &redis::Value) -> Option<u64> {
    match value {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        redis::Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

/// The reason a tombstone names; only the reason leaves the store layer.
fn tomb_reason(tomb: &[u8]) -> Option<RevokeReason> {
    #[derive(serde::Deserialize)]
    struct Reason {
        reason: RevokeReason,
    }
    serde_json::from_slice::<Reason>(tomb)
        .ok()
        .map(|r| r.reason)
}

impl RedisStore {
    /// A session's tombstone, record and activity read by single-key
    /// commands (up to three round trips): on a Cluster, when the `GET`
    /// script was refused with `TRYAGAIN`. While a slot migrates, Redis refuses
    /// a command over several keys of it unless all of them are on the
    /// node asked (`TRYAGAIN`), and a live session's tombstone (and often
    /// its activity key) exists nowhere: the `GET` script would fail for
    /// the whole migration of the user's slot. A single key is answered
    /// wherever it is (the client follows `ASK`). Without the script's
    /// atomicity the answer is still one a lookup may give: a revocation
    /// writes the tombstone and deletes the record in one step, so a read
    /// that starts after it sees the tombstone or no record, whichever it
    /// reads first; one that overlaps it may see the session live, as a
    /// lookup just before it would.
    pub(super) async fn read_apart(
        &self,
        record: &str,
        tombstone: &str,
        activity: &str,
    ) -> redis::RedisResult<Read> {
        // One after the other: the client follows an `ASK` by sending
        // `ASKING` and then the command as two requests on the shared
        // connection, and `ASKING` holds for the next command only. Sent
        // together, three redirected reads would interleave (`ASKING`,
        // `ASKING`, `ASKING`, `GET`, …): the second and third are then
        // sent back with `MOVED`, every time.
        let mut conn = self.conn.clone();
        // A key of the wrong type reads as `GET` reads it: a tombstone as
        // one without a reason, a record as none, an activity as none.
        let tomb: Option<Vec<u8>> = wrong_type_as(
            redis::cmd("GET")
                .arg(tombstone)
                .query_async(&mut conn)
                .await,
            Some(Vec::new()),
            "a session's tombstone",
        )?;
        let live: Option<Vec<u8>> = match tomb {
            Some(_) => None,
            None => wrong_type_as(
                redis::cmd("HGET")
                    .arg(record)
                    .arg("r")
                    .query_async(&mut conn)
                    .await,
                None,
                "a session's record",
            )?,
        };
        let stamped: redis::Value = match live {
            Some(_) => wrong_type_as(
                redis::cmd("GET").arg(activity).query_async(&mut conn).await,
                redis::Value::Nil,
                "a session's activity",
            )?,
            None => redis::Value::Nil,
        };
        Ok(match (tomb, live) {
            (Some(tomb), _) => Read {
                fetched: Fetched::Revoked(tomb_reason(&tomb)),
                activity: None,
            },
            (None, Some(record)) => Read {
                fetched: Fetched::Live(record),
                activity: stamp(&stamped),
            },
            (None, None) => Read {
                fetched: Fetched::Missing,
                activity: None,
            },
        })
    }
}
