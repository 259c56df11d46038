//! Walking the store's indexes: SCAN over every node that may hold keys
//! (on a Cluster, primaries with slots and those importing one), and
//! trimming the entries of sessions that are gone (the sweep and the
//! statistics); and the leases that make a fleet walk them once per
//! period. It must not fail a whole walk for a primary that serves no
//! slot and does not answer (see `passed_over`).

use std::time::Duration;

use redis::AsyncCommands;

use super::super::redis_keys::{ACTIVITY_ID_DIGITS, SidIndex};
use super::super::redis_link::Node;
use super::{BATCH, RedisStore, SID_GRACE_MILLIS, score_millis, wrong_type_as};
use crate::session::cookie::StoreId;
use crate::session::store::{SessionStore as _, StoreError, StoreResult};

/// The most calls one cursor walk (a SCAN of a node, a ZSCAN/SSCAN of an
/// index) may take: with the batch sizes used (500 to 1,000 per call),
/// more than any real keyspace needs.
const MAX_WALK_CALLS: usize = 1_000_000;

/// One cursor walk's progress. Redis ends every walk (its cursor comes
/// back to 0) and never hands out the same cursor twice in one (the
/// cursor's reversed bits only grow); a store or a proxy that answers a
/// cursor already seen (stuck or cycling), or keeps answering new ones past
/// [`MAX_WALK_CALLS`], would keep the sweep or the count calling it for as
/// long as the process runs, and, once the period's lease lapsed, every
/// other process of the fleet as well.
#[derive(Default)]
struct Walk {
    seen: std::collections::HashSet<u64>,
}

impl Walk {
    /// Records `next` (not 0) as the cursor to send next; an error when the
    /// walk cannot be a real one.
    fn advance(&mut self, next: u64, what: &str) -> StoreResult<u64> {
        if !self.seen.insert(next) {
            return Err(StoreError::Unavailable(format!(
                "{what}: the store answered the cursor {next} twice in one walk (a SCAN that never ends); walk abandoned"
            )));
        }
        if self.seen.len() > MAX_WALK_CALLS {
            return Err(StoreError::Unavailable(format!(
                "{what}: no end after {MAX_WALK_CALLS} calls (a SCAN that never ends); walk abandoned"
            )));
        }
        Ok(next)
    }
}

impl RedisStore {
    /// Keys matching `pattern` on every node that may hold keys, by SCAN
    /// (never KEYS).
    pub(super) async fn scan(&self, pattern: &str) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        self.scan_batches(pattern, 500, |batch| out.extend(batch))
            .await?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// How many session records under `prefix` on every node are live
    /// at `now` (unix seconds): every record but those that have ended
    /// though their key is still there (see `COUNT_BATCH`). Counted by
    /// Redis itself, a SCAN batch per script call that answers the cursor
    /// and a number: the keys are never sent (at a million sessions,
    /// sending them was about 80 MB per count, written by Redis and read by
    /// the gateway). Every key lives on one node at a time (`MIGRATE` moves
    /// it in one step), so visiting each node that may hold keys counts each
    /// session once, mid-reshard too.
    pub(super) async fn count_live(&self, prefix: &str, now: u64) -> StoreResult<u64> {
        let pattern = format!("{}s:*", glob_escape(prefix));
        let mut count = 0;
        for node in self.key_holders().await? {
            match self.count_on(&node, prefix, &pattern, now).await {
                Ok(n) => count += n,
                Err(e) => self.passed_over(&node, "count", e)?,
            }
        }
        Ok(count)
    }

    async fn count_on(
        &self,
        node: &Node,
        prefix: &str,
        pattern: &str,
        now: u64,
    ) -> StoreResult<u64> {
        let mut count = 0;
        let mut cursor: u64 = 0;
        let mut walk = Walk::default();
        loop {
            let (next, n): (u64, u64) = self
                .run(
                    self.conn.on_node(
                        node,
                        redis::cmd("EVAL")
                            .arg(&self.scripts.count_batch)
                            .arg(0)
                            .arg(cursor)
                            .arg(pattern)
                            .arg(1000)
                            .arg(now)
                            .arg(prefix.len())
                            .arg(ACTIVITY_ID_DIGITS)
                            .arg(self.live_hint_millis),
                    ),
                )
                .await?;
            count += n;
            if next == 0 {
                return Ok(count);
            }
            cursor = walk.advance(next, "the session count")?;
        }
    }

    /// Every node that may hold keys: the one server, or each cluster
    /// primary that serves slots or imports one. A primary that joined
    /// empty holds keys as soon as a reshard marks a slot IMPORTING on it
    /// (`MIGRATE` and `ASK`ed writes put them there) and serves the slot
    /// only at its end: a walk of the primaries serving slots missed them
    /// (the count left those sessions out, the sweep their dead entries).
    pub(super) async fn key_holders(&self) -> StoreResult<Vec<Node>> {
        self.run(self.conn.masters()).await
    }

    /// What a walk of every node does when `node` fails it: a node that
    /// serves slots fails the walk (its keys are the store's; a count or
    /// sweep without them would be wrong without saying so, and the caller
    /// keeps the last figure or sweeps again next period). A primary that
    /// serves none is passed over with a warning: it holds at most the keys
    /// of a slot being imported, and one unreachable spare (joined, never
    /// given slots, or going away) must not stop every sweep and count of
    /// the fleet; the next walk visits it again.
    pub(super) fn passed_over(&self, node: &Node, walk: &str, e: StoreError) -> StoreResult<()> {
        match node {
            Node::Primary {
                host,
                port,
                serves_slots: false,
            } => {
                tracing::warn!(
                    node = %format_args!("{host}:{port}"),
                    walk,
                    error = %e,
                    "a cluster primary that serves no slot did not answer; passed over"
                );
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// Hands `each` every SCAN batch of keys matching `pattern`, node by
    /// node.
    async fn scan_batches(
        &self,
        pattern: &str,
        batch: usize,
        mut each: impl FnMut(Vec<String>),
    ) -> StoreResult<()> {
        for node in self.key_holders().await? {
            if let Err(e) = self.scan_on(&node, pattern, batch, &mut each).await {
                self.passed_over(&node, "scan", e)?;
            }
        }
        Ok(())
    }

    async fn scan_on(
        &self,
        node: &Node,
        pattern: &str,
        batch: usize,
        each: &mut impl FnMut(Vec<String>),
    ) -> StoreResult<()> {
        let mut cursor: u64 = 0;
        let mut walk = Walk::default();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    self.conn.on_node(
                        node,
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(batch),
                    ),
                )
                .await?;
            each(keys);
            if next == 0 {
                return Ok(());
            }
            cursor = walk.advance(next, "a key scan")?;
        }
    }

    /// One batch of a cursor walk (`SSCAN`/`ZSCAN`) over the index `key`.
    /// An index of another type reads as empty: it is skipped, not the
    /// sweep's end (the next login of its user replaces it).
    async fn index_batch(
        &self,
        scan: &str,
        key: &str,
        cursor: u64,
        what: &str,
    ) -> StoreResult<(u64, Vec<String>)> {
        let mut conn = self.conn.clone();
        self.run(async {
            wrong_type_as(
                redis::cmd(scan)
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(BATCH)
                    .query_async(&mut conn)
                    .await,
                (0, Vec::new()),
                what,
            )
        })
        .await
    }

    /// Walks one index whose members' records share its slot (a user index,
    /// a legacy provider-session index) and drops dead members, one
    /// ZSCAN/SSCAN batch per script call: those whose record is gone, and
    /// those that have ended at `now` though it is still there (removed
    /// with it; see `TRIM`).
    pub(super) async fn trim(&self, key: &str, kind: SidIndex, now: u64) -> StoreResult<u64> {
        let scan = match kind {
            SidIndex::Sorted => "ZSCAN",
            SidIndex::Set => "SSCAN",
        };
        let mut removed = 0;
        let mut cursor: u64 = 0;
        let mut walk = Walk::default();
        loop {
            let (next, batch) = self
                .index_batch(scan, key, cursor, "a session index")
                .await?;
            // ZSCAN answers member, score, member, score, ...
            let step = if kind == SidIndex::Sorted { 2 } else { 1 };
            let members = Self::ids(batch.into_iter().step_by(step).collect());
            if !members.is_empty() {
                let mut call = self.scripts.trim.prepare_invoke();
                call.key(key)
                    .arg(kind.tag())
                    .arg(now)
                    .arg(self.live_hint_millis);
                for m in &members {
                    call.key(self.keys.record(m))
                        .key(self.keys.activity(m))
                        .arg(m.as_str());
                }
                let n: u64 = self.run_script(&call).await?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = walk.advance(next, "a session index")?;
        }
    }

    /// Walks one sharded provider-session index (its members' records are
    /// in other slots): drops members older than [`SID_GRACE_MILLIS`] whose
    /// record is gone. A younger entry may belong to a session still being
    /// written, so it stays.
    pub(super) async fn trim_sid(&self, key: &str, now_millis: u64) -> StoreResult<u64> {
        let mut removed = 0;
        let mut cursor: u64 = 0;
        let mut walk = Walk::default();
        loop {
            let (next, batch) = self
                .index_batch("ZSCAN", key, cursor, "a provider-session index")
                .await?;
            let old: Vec<StoreId> = batch
                .chunks_exact(2)
                .filter(|p| score_millis(&p[1]).saturating_add(SID_GRACE_MILLIS) < now_millis)
                .filter_map(|p| StoreId::parse(&p[0]))
                .collect();
            let exists = futures_util::future::join_all(old.iter().map(|id| {
                let mut conn = self.conn.clone();
                let record = self.keys.record(id);
                async move { self.run(conn.exists::<_, bool>(record)).await }
            }))
            .await;
            let mut dead = Vec::new();
            for (id, e) in old.iter().zip(exists) {
                if !e? {
                    dead.push(id.as_str());
                }
            }
            if !dead.is_empty() {
                let mut conn = self.conn.clone();
                let n: u64 = self.run(conn.zrem(key, &dead)).await?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = walk.advance(next, "a provider-session index")?;
        }
    }
}

/// `s` with the glob characters of SCAN's MATCH escaped.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisStore {
    /// Takes `<job>:lease` for this period of `every` if no process of the
    /// fleet holds it (`SET NX PX`, held for nine tenths of the period, so
    /// the next period's first asker takes it again); its length in ms,
    /// or `None` when another process has it.
    async fn take_lease(&self, job: &str, every: Duration) -> StoreResult<Option<u64>> {
        let lease_ms = u64::try_from(every.as_millis() * 9 / 10)
            .unwrap_or(u64::MAX)
            .max(1);
        let taken = self
            .set_nx(self.keys.plain(job, "lease"), "1", lease_ms)
            .await?;
        Ok(taken.then_some(lease_ms))
    }

    /// Gives `<job>:lease` back after a failed run, so the next period's
    /// first asker on any process tries again rather than nobody for most
    /// of this one (a lost lease only expires: nothing to report).
    async fn give_back_lease(&self, job: &str) {
        let mut conn = self.conn.clone();
        let _ = self
            .run(
                redis::cmd("DEL")
                    .arg(self.keys.plain(job, "lease"))
                    .query_async::<()>(&mut conn),
            )
            .await;
    }

    /// The periodic index sweep, run by one process of the fleet per
    /// `every` (the first to take `sweep:lease`), since it walks every
    /// index: `None` when another process has the period's lease.
    pub async fn fleet_sweep(&self, every: Duration, now: u64) -> StoreResult<Option<u64>> {
        if self.take_lease("sweep", every).await?.is_none() {
            return Ok(None);
        }
        match self.sweep(now).await {
            Ok(n) => Ok(Some(n)),
            Err(e) => {
                self.give_back_lease("sweep").await;
                Err(e)
            }
        }
    }

    /// The active-sessions gauge's figure, counted by one process of the
    /// whole fleet per `every`: the first to take `count:lease` counts and
    /// publishes the total (`count:total`, kept four leases long); the
    /// others read it. Counting is a walk of every key, so with many
    /// instances and a million sessions each counting on its own kept Redis
    /// busy (1.8 million keys walked per instance every 30 s); now they are
    /// walked once per period. `None` while no count has been published
    /// yet (the gauge keeps its value).
    pub async fn fleet_count(&self, every: Duration, now: u64) -> StoreResult<Option<u64>> {
        let total = self.keys.plain("count", "total");
        let mut conn = self.conn.clone();
        let Some(lease_ms) = self.take_lease("count", every).await? else {
            // A key of another type is no count of ours: none published
            // yet (the process holding the lease overwrites it).
            return self
                .run(async {
                    wrong_type_as(
                        redis::cmd("GET").arg(&total).query_async(&mut conn).await,
                        None,
                        "the published session count",
                    )
                })
                .await;
        };
        let n = match self.count_sessions(now).await {
            Ok(n) => n,
            Err(e) => {
                self.give_back_lease("count").await;
                return Err(e);
            }
        };
        self.run(
            redis::cmd("SET")
                .arg(&total)
                .arg(n)
                .arg("PX")
                .arg(lease_ms.saturating_mul(4))
                .query_async::<()>(&mut conn),
        )
        .await?;
        Ok(Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_ends_when_the_store_answers_a_cursor_it_already_answered() {
        let mut walk = Walk::default();
        assert_eq!(walk.advance(7, "t").ok(), Some(7));
        assert_eq!(walk.advance(3, "t").ok(), Some(3));
        assert!(walk.advance(7, "t").is_err(), "a cycle");
        let mut walk = Walk::default();
        assert_eq!(walk.advance(5, "t").ok(), Some(5));
        assert!(walk.advance(5, "t").is_err(), "stuck");
    }
}
