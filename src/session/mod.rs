//! Server-side sessions: what a browser's cookie resolves to, and every
//! change to it over its life (create, touch, token refresh, revoke).
//!
//! The hot path is [`Sessions::load`]: cookie → SHA-256 → the process's
//! session cache (`cache`: the opened session, if this very cookie opened
//! it and Redis has announced no change since) or else one store read →
//! decode → deadline check → HKDF + AES-GCM open. Nothing else happens per
//! request unless the last-activity write is due (at most once per
//! `session.touch_interval`, in the background) or the access token is about
//! to expire (see `flows::refresh`).
//!
//! This module owns the [`Sessions`] service and its construction; each
//! concern is a submodule: `lookup` (the read path), `opened` (a loaded
//! session), `create` (a new session), `update` (touches and refreshed
//! tokens), `revoke` (ending one session), `operators` (listings and
//! ending many), `sealing` (the record's tag and sealed parts), `metrics`,
//! `upkeep` (readiness, counts, sweeps) and `markers` (single-use values).

mod activity;
pub mod cache;
pub mod cookie;
mod create;
pub mod crypto;
mod lookup;
mod markers;
mod metrics;
mod opened;
mod operators;
pub mod record;
mod revoke;
mod sealing;
pub mod store;
mod update;
mod upkeep;

pub use self::create::{ClientInfo, NewLogin};
pub use self::lookup::{EndReason, Lookup};
pub use self::metrics::{SessionMetrics, StoreOp};
pub use self::opened::{BearerSlot, ClaimsUnreadable, DpopSlot, Session};
pub use self::operators::{SessionInfo, SessionInfoPage, Stats, UserCount};
pub use self::update::Touch;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use self::cache::ProcessCache;
use self::cookie::{CookiePolicy, StoreId, hex};
use self::crypto::KeyRing;
use self::store::Store;
use crate::config::{RecordLayout, SessionConfig};

/// The hex SHA-256 of a value: how identifiers (subjects, provider session
/// IDs, one-time handles, token IDs) are named in the store, never in clear.
pub fn sha256_hex(value: &str) -> String {
    hex(&Sha256::digest(value.as_bytes()))
}

pub fn user_hash(sub: &str) -> String {
    sha256_hex(sub)
}

pub fn sid_hash(sid: &str) -> String {
    sha256_hex(sid)
}

pub struct Sessions {
    metrics: SessionMetrics,
    store: Arc<Store>,
    keys: KeyRing,
    cookies: CookiePolicy,
    idle_timeout: u64,
    absolute_timeout: u64,
    touch_interval: u64,
    max_per_user: Option<u32>,
    /// The process's session cache, when `store.cache_entries` > 0.
    cache: Option<Arc<ProcessCache>>,
    /// How sealed secrets are written (`store.record_layout`).
    layout: RecordLayout,
}

impl Sessions {
    pub fn new(config: &SessionConfig, store: Arc<Store>) -> Self {
        Self {
            metrics: SessionMetrics::default(),
            store,
            keys: KeyRing::new(&config.keys),
            cookies: CookiePolicy::new(config),
            idle_timeout: config.idle_timeout.as_secs().max(1),
            absolute_timeout: config.absolute_timeout.as_secs().max(1),
            touch_interval: config.touch_interval.as_secs(),
            max_per_user: config.max_per_user,
            cache: None,
            layout: RecordLayout::Compact,
        }
    }

    /// Writes sealed secrets in `layout` (`store.record_layout`): during a
    /// rolling upgrade, [`RecordLayout::Previous`] keeps the sessions this
    /// version writes readable by instances of the version before.
    pub fn with_record_layout(mut self, layout: RecordLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Serves lookups from the process's session cache (shared by every
    /// worker; `None`: every lookup reads the store). A store that finds
    /// its master through Sentinel tells the cache of each master before
    /// it uses it, so the cache never answers for a master its
    /// invalidation connections do not listen to (one cache per store: a
    /// later call replaces the store's observer).
    pub fn with_cache(mut self, cache: Option<Arc<ProcessCache>>) -> Self {
        if let Some(cache) = &cache {
            self.store.observe_masters(cache.store_observer());
        }
        self.cache = cache;
        self
    }

    /// Evicts a session this process just changed or ended from the cache
    /// (Redis announces it too, but this process's next request must not
    /// wait for the message).
    fn forget(&self, id: &StoreId) {
        if let Some(cache) = &self.cache {
            cache.invalidate(id);
        }
    }

    pub fn cookies(&self) -> &CookiePolicy {
        &self.cookies
    }
}

#[cfg(test)]
mod tests;
