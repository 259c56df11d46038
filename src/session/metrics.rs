//! What the session layer reports: revocations by reason, and the
//! latency of each store operation ([`StoreOp`], a fixed list so the label
//! stays bounded).

use super::Sessions;
use super::store::RevokeReason;

type Counters<L> =
    prometheus_client::metrics::family::Family<L, prometheus_client::metrics::counter::Counter>;

/// What the session layer reports (shared with the gateway's registry).
#[derive(Default)]
pub struct SessionMetrics {
    pub revocations: Counters<crate::metrics::ReasonLabel>,
    /// One latency histogram per [`StoreOp`], resolved once; none in
    /// tests that build `Sessions` without a registry.
    store: Option<Vec<prometheus_client::metrics::histogram::Histogram>>,
}

/// The store operations timed (`oidc_bff_store_operation_duration_seconds`),
/// a fixed list so the label stays bounded.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    /// A session read (every authenticated request).
    Get,
    /// A new session, with its indexes and evictions.
    Create,
    /// A record rewrite: a touch or refreshed tokens.
    Update,
    /// One session ended.
    Revoke,
    /// A user's or a provider session's sessions ended.
    RevokeMany,
    /// A page of a user's sessions (listings, stats).
    List,
    /// Single-use values: login state claims, logout handles, logout-token IDs.
    Once,
    /// The refresh lock.
    Lock,
    /// Readiness.
    Ping,
    /// Index sweeps, statistics and the active-sessions count.
    Maintenance,
}

impl StoreOp {
    const ALL: [StoreOp; 10] = [
        Self::Get,
        Self::Create,
        Self::Update,
        Self::Revoke,
        Self::RevokeMany,
        Self::List,
        Self::Once,
        Self::Lock,
        Self::Ping,
        Self::Maintenance,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Create => "create",
            Self::Update => "update",
            Self::Revoke => "revoke",
            Self::RevokeMany => "revoke_many",
            Self::List => "list",
            Self::Once => "once",
            Self::Lock => "lock",
            Self::Ping => "ping",
            Self::Maintenance => "maintenance",
        }
    }
}

impl Sessions {
    /// Reports into the gateway's metrics registry.
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.metrics = SessionMetrics {
            revocations: metrics.revocations.clone(),
            store: Some(
                StoreOp::ALL
                    .iter()
                    .map(|op| metrics.store_operation(op.label()))
                    .collect(),
            ),
        };
        self
    }

    /// Runs one store operation, timing it into its histogram.
    pub(super) async fn timed<T>(
        &self,
        op: StoreOp,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        let Some(h) = self.metrics.store.as_ref().and_then(|h| h.get(op as usize)) else {
            return call.await;
        };
        let started = std::time::Instant::now();
        let out = call.await;
        h.observe(started.elapsed().as_secs_f64());
        out
    }

    pub(super) fn count_revocations(&self, reason: RevokeReason, n: usize) {
        if n > 0 {
            self.metrics
                .revocations
                .get_or_create(&crate::metrics::ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc_by(n as u64);
        }
    }
}
