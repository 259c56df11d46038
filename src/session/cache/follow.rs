//! Which Redis master the session cache may trust its invalidation
//! connections for, through Sentinel: the master each of the process's
//! store links uses (each tells the cache before it uses one, through its
//! [`MasterObserver`]) and the one each tracking link listens to. A
//! tracking link counts as confirmed only while the two agree; a store
//! link's move stops it counting in the call that announces the move,
//! before the store link sends anything to the new master.
//!
//! This module owns that bookkeeping and the wake-up of the tracking links;
//! it does no I/O, and it must never let a link count while it listens to
//! another master than a store link uses.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::SessionCache;
use crate::session::store::MasterObserver;

/// Which Redis master each of the process's store links uses (as it
/// announced it, Sentinel only) and which one each tracking link listens
/// to. A tracking link may count as confirmed only while it listens to the
/// master every store link uses; with no Sentinel store (one server, a
/// Cluster) no store announces anything and this never holds a link back.
#[derive(Default)]
pub(super) struct Follow {
    /// Numbers the store links' observers.
    next: u64,
    /// Per store link that announced a master: its observer's number and
    /// the master.
    stores: Vec<(u64, Arc<str>)>,
    /// The master a store link announced last: where a tracking link that
    /// moves goes.
    latest: Option<Arc<str>>,
    /// Per tracking link: the master it listens to (`None` while down, and
    /// for servers not found through Sentinel).
    tracked: Box<[Option<Arc<str>>]>,
}

impl Follow {
    /// No store link has announced a master; `links` tracking links listen
    /// nowhere yet.
    pub(super) fn new(links: usize) -> Self {
        Self {
            tracked: (0..links).map(|_| None).collect(),
            ..Self::default()
        }
    }

    /// Whether tracking link `link` listens where every store link reads
    /// and writes.
    pub(super) fn agrees(&self, link: usize) -> bool {
        let tracked = self.tracked.get(link).and_then(Option::as_deref);
        self.stores.iter().all(|(_, at)| tracked == Some(&**at))
    }
}

/// One store link's observer ([`SessionCache::store_observer`]): tells the
/// cache of each master the link uses; its master stops counting when the
/// link (and so this) is dropped.
struct StoreLink {
    cache: Arc<SessionCache>,
    id: u64,
}

impl MasterObserver for StoreLink {
    fn using(&self, addr: &str) {
        self.cache.store_uses(self.id, addr);
    }
}

impl Drop for StoreLink {
    fn drop(&mut self) {
        self.cache.store_gone(self.id);
    }
}

impl SessionCache {
    pub(super) fn follow(&self) -> MutexGuard<'_, Follow> {
        self.follow
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An observer for one store link (handed to
    /// `Store::observe_masters`): the cache then serves only while every
    /// tracking link listens to the master that link uses.
    pub fn store_observer(self: &Arc<Self>) -> Box<dyn MasterObserver> {
        let id = {
            let mut f = self.follow();
            f.next += 1;
            f.next
        };
        Box::new(StoreLink {
            cache: Arc::clone(self),
            id,
        })
    }

    /// Store link `store` is about to use the master at `addr`: every
    /// tracking link that does not listen there stops counting as confirmed
    /// now (and the cache is emptied if one did count), before the store
    /// link sends anything there; then every link is woken to move (or, if
    /// it listens there already, to confirm again at once).
    fn store_uses(&self, store: u64, addr: &str) {
        let mut f = self.follow();
        match f.stores.iter_mut().find(|(id, _)| *id == store) {
            Some((_, at)) if **at == *addr => {}
            Some((_, at)) => *at = addr.into(),
            None => f.stores.push((store, addr.into())),
        }
        if f.latest.as_deref() != Some(addr) {
            f.latest = Some(addr.into());
        }
        let mut untrusted = false;
        for (link, moved) in self.moved.iter().enumerate() {
            if !f.agrees(link) {
                untrusted |= self.links[link].swap(0, Ordering::SeqCst) != 0;
            }
            moved.notify_one();
        }
        if untrusted {
            self.metrics.tracking_up.set(0);
            self.up.store(false, Ordering::SeqCst);
            self.flush();
        }
    }

    /// Store link `store` is gone (a reload replaced the store): its master
    /// no longer holds the tracking links back.
    fn store_gone(&self, store: u64) {
        let mut f = self.follow();
        f.stores.retain(|(id, _)| *id != store);
        drop(f);
        for moved in &self.moved {
            moved.notify_one();
        }
    }

    /// The master a store link announced last (`host:port`), if any: where
    /// a tracking link over Sentinel connects.
    pub fn store_master(&self) -> Option<Arc<str>> {
        self.follow().latest.clone()
    }

    /// Tracking link `link` now listens to the master at `addr` (`None`:
    /// to servers not found through Sentinel); it counts as confirmed only
    /// while that is where every store link is.
    pub fn listening_to(&self, link: usize, addr: Option<Arc<str>>) {
        if let Some(slot) = self.follow().tracked.get_mut(link) {
            *slot = addr;
        }
    }

    /// Resolves when a store link announced a master since the last call
    /// (by link `link`): the link checks at once that it listens there.
    pub async fn store_moved(&self, link: usize) {
        match self.moved.get(link) {
            Some(m) => m.notified().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::session::cache::tests::{hit, session, ticket};
    use crate::session::cache::{CacheMetrics, Probe};
    use crate::session::cookie::SessionId;

    /// Confirms tracking link `link` as listening to `addr`.
    fn listens(c: &SessionCache, link: usize, addr: &str) {
        c.listening_to(link, Some(addr.into()));
        c.tracking_confirmed(link, Instant::now());
    }

    #[test]
    fn a_store_move_to_another_master_stops_the_cache_serving_before_the_store_uses_it() {
        let c = Arc::new(SessionCache::new(10, 2, CacheMetrics::default()));
        let store = c.store_observer();
        store.using("a:1");
        listens(&c, 0, "a:1");
        listens(&c, 1, "a:1");
        let id = SessionId::generate([1, 2]);
        let t = ticket(&c, &id);
        c.insert(t, &session(&id, 1000));
        assert!(hit(&c, &id, 150), "every link listens where the store is");
        // A read (of another session of the shard) in flight on the old
        // master while the store link moves.
        let other = SessionId::generate([1, 2]);
        let t = ticket(&c, &other);

        // The store link tells the cache before it installs the new master:
        // when this returns, nothing is served, nor kept.
        store.using("b:2");
        assert!(matches!(c.probe(&id, &id.store_id(), 150), Probe::Bypass));
        assert!(c.is_empty());
        listens(&c, 0, "b:2");
        listens(&c, 1, "b:2");
        c.insert(t, &session(&other, 1000));
        assert!(c.is_empty(), "the read from before the move is not kept");
        c.tracking_down(0);
        c.tracking_down(1);
        assert_eq!(c.metrics.tracking_up.get(), 0);

        // A ping answered by the old master confirms nothing.
        c.tracking_confirmed(0, Instant::now());
        c.tracking_confirmed(1, Instant::now());
        assert!(!c.serving());
        // Served again once every link listens to the new master.
        listens(&c, 0, "b:2");
        assert!(!c.serving(), "one link of two moved");
        listens(&c, 1, "b:2");
        assert!(c.serving());
        assert_eq!(c.store_master().as_deref(), Some("b:2"));
        // The store link going back to where every link listens is no move.
        let flushes = c.metrics.flushes.get();
        store.using("b:2");
        assert!(c.serving());
        assert_eq!(c.metrics.flushes.get(), flushes);
    }

    #[test]
    fn while_two_store_links_use_different_masters_the_cache_serves_nothing() {
        let c = Arc::new(SessionCache::new(10, 1, CacheMetrics::default()));
        let (first, second) = (c.store_observer(), c.store_observer());
        first.using("a:1");
        second.using("a:1");
        listens(&c, 0, "a:1");
        assert!(c.serving());
        // One worker's store link moved, the other's not yet: wherever the
        // tracking link listens, one of them reads a server it does not.
        first.using("b:2");
        assert!(!c.serving());
        listens(&c, 0, "b:2");
        assert!(!c.serving(), "the second store link still uses a:1");
        second.using("b:2");
        listens(&c, 0, "b:2");
        assert!(c.serving());
        // A store link dropped (a reload replaced its store) holds nothing
        // back any more.
        first.using("c:3");
        assert!(!c.serving());
        drop(first);
        listens(&c, 0, "b:2");
        assert!(c.serving());
    }

    #[tokio::test]
    async fn a_store_move_wakes_every_tracking_link_at_once() {
        let c = Arc::new(SessionCache::new(10, 2, CacheMetrics::default()));
        let store = c.store_observer();
        store.using("b:2");
        for link in 0..2 {
            tokio::time::timeout(Duration::from_secs(1), c.store_moved(link))
                .await
                .unwrap_or_else(|_| panic!("link {link} was not woken"));
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(50), c.store_moved(0))
                .await
                .is_err(),
            "woken once per announcement"
        );
    }

    #[test]
    fn without_a_store_announcing_masters_a_link_listening_anywhere_confirms() {
        // One server or a Cluster: no store link announces a master.
        let c = SessionCache::new(10, 1, CacheMetrics::default());
        c.listening_to(0, None);
        c.tracking_confirmed(0, Instant::now());
        assert!(c.serving());
    }
}
