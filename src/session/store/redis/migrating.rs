//! The store's scripts while a Cluster slot migrates (a reshard): run
//! again while Redis refuses them with `TRYAGAIN`, until the slot has
//! moved or the store's timeout has passed. Never a script split into
//! single-key steps: each write keeps its atomicity (record, index and
//! tombstone change together or not at all).
//!
//! What Redis (7, `getNodeByQuery`) answers a script over several keys
//! of a migrating slot: the source runs it if it holds every key, answers
//! `TRYAGAIN` if it holds some, and `ASK` (the target) if it holds none;
//! the target, asked with `ASKING`, runs it if every key has arrived and
//! otherwise answers `TRYAGAIN`. Keys a write creates (a new record, a
//! tombstone) exist on neither node, so a login, a logout, an activity
//! touch, the listing's record read, an eviction and the sweep's trim are
//! refused until `CLUSTER SETSLOT … NODE` hands the slot over; a script
//! with one key (`REPLACE_IF`, `UNLOCK`, `LIST_WINDOW`) follows the `ASK`
//! and runs at once. `TRYAGAIN` is answered before the script starts, so
//! sending it again cannot apply a write twice. redis-rs (1.8) follows
//! `ASK` itself and retries `TRYAGAIN` 3 times (`redis_link/cluster.rs`:
//! waits of 50–80 ms, about 0.2 s in all); this waits past that, within
//! the same bound as every store command.

use std::time::Duration;

use redis::{FromRedisValue, ScriptInvocation};

use super::RedisStore;
use crate::session::store::{StoreError, StoreResult};

/// The first wait after the client's own retries gave up; it doubles up
/// to [`LONGEST_WAIT`]. A slot of a few sessions' keys moves in
/// milliseconds (a MIGRATE of a batch of keys is one round trip between
/// two nodes), so the first waits are short.
const FIRST_WAIT: Duration = Duration::from_millis(20);
const LONGEST_WAIT: Duration = Duration::from_millis(250);

/// Answers that refuse a command before it runs while its slot moves:
/// `TRYAGAIN`, and the redirections the client gave up following. One
/// command can get those where the client follows a redirection
/// correctly: in a reshard that tells the source the slot's new owner
/// before that owner knows it (the other way round from `redis-cli`),
/// for a moment the two send the command back and forth (`MOVED`); two
/// redirected commands sent at once on the shared connection interleave
/// their `ASKING`s, and the second is refused (`MOVED`, see
/// `read_apart`).
const REFUSED_WHILE_MOVING: [&str; 3] = ["TRYAGAIN", "MOVED", "ASK"];

impl RedisStore {
    /// Runs `call`; while Redis answers `TRYAGAIN` (its slot migrating,
    /// its keys not all on one node) or another refusal of
    /// [`REFUSED_WHILE_MOVING`], runs it again after a wait, until
    /// the store's timeout has passed since the first try. Past it, the
    /// answer is an error (a 503), never a write half done.
    pub(super) async fn run_script<T: FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> StoreResult<T> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut wait = FIRST_WAIT;
        loop {
            let mut conn = self.conn.clone();
            let answer = tokio::time::timeout_at(deadline, call.invoke_async(&mut conn)).await;
            match answer {
                // Off a Cluster these answers mean a misconfiguration
                // (`store.url` naming a cluster node): no wait.
                Ok(Err(e))
                    if self.keys.cluster
                        && e.code()
                            .is_some_and(|code| REFUSED_WHILE_MOVING.contains(&code)) =>
                {
                    let now = tokio::time::Instant::now();
                    if now + wait >= deadline {
                        return Err(StoreError::Unavailable(format!(
                            "{e}: its slot was still migrating after {:?} (Redis at {})",
                            self.timeout, self.address
                        )));
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
                Ok(answer) => return self.answer(answer),
                Err(_) => return Err(StoreError::Timeout(self.timeout)),
            }
        }
    }
}
