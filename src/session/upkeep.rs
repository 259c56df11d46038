//! The store's upkeep: readiness, the active-sessions count for the
//! gauge, and the index sweeps; run by background tasks and probes, never
//! per request.

use super::store::{SessionStore, StoreResult};
use super::{Sessions, StoreOp};

impl Sessions {
    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> StoreResult<()> {
        self.timed(StoreOp::Ping, self.store.ping()).await
    }

    /// How many live sessions the store holds, for the active-sessions
    /// gauge every `every` (a walk of the store's keys by one process of
    /// the fleet per period, so a background task calls it; see
    /// `Store::fleet_count`). `None` until a count is published. Live at
    /// `now`: sessions past their effective idle deadline are not counted
    /// though their record is still there (`SessionStore::count_sessions`).
    pub async fn count(&self, every: std::time::Duration, now: u64) -> StoreResult<Option<u64>> {
        self.timed(StoreOp::Maintenance, self.store.fleet_count(every, now))
            .await
    }

    /// Drops index entries of expired sessions, and removes sessions that
    /// have ended at `now` though their record is still there; returns how
    /// many entries went.
    pub async fn sweep(&self, now: u64) -> StoreResult<u64> {
        self.timed(StoreOp::Maintenance, self.store.sweep(now))
            .await
    }

    /// The sweep every `every`, by one process of the fleet per period
    /// (`Store::fleet_sweep`); `None` where another process has it.
    pub async fn periodic_sweep(
        &self,
        every: std::time::Duration,
        now: u64,
    ) -> StoreResult<Option<u64>> {
        self.timed(StoreOp::Maintenance, self.store.fleet_sweep(every, now))
            .await
    }
}
