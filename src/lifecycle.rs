//! The stages of a gateway process's life that every worker must see at
//! once: *draining* (after SIGTERM `/readyz` answers 503 while requests are
//! still accepted and served, so load balancers stop sending first), *going
//! away* (the drain is over: listeners close and WebSocket tunnels send the
//! browser a 1001 close frame), and the open tunnels the process waits for
//! before it exits. It also carries the admin API's requests for a
//! configuration reload to the process that performs them.
//!
//! A leaf: `crate::server` moves the stages forward; handlers and tunnels
//! only read them. It must not know about state, routers or config.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

/// What a reload did, as the admin API reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// `success`, `invalid` (the file does not validate; nothing changed) or
    /// `failed` (a worker could not build the new state; nothing changed).
    pub result: &'static str,
    /// Keys that changed but keep their running value until a restart.
    pub needs_restart: Vec<String>,
    /// Why a refused reload was refused: `key: problem` lines.
    pub problems: Vec<String>,
    /// What an applied reload ends or leaves unread (a retired session
    /// key, a renamed session cookie): `key: consequence` lines.
    pub ends_sessions: Vec<String>,
}

/// A request for a reload and where its report goes.
pub type ReloadCall = oneshot::Sender<ReloadReport>;

/// Shared by every worker of one process (a clone is a reference count).
#[derive(Clone)]
pub struct Lifecycle(Arc<Inner>);

struct Inner {
    draining: watch::Sender<bool>,
    going_away: watch::Sender<bool>,
    /// Every open tunnel holds a receiver; all dropped = all closed.
    tunnels: watch::Sender<()>,
    reload: Option<mpsc::UnboundedSender<ReloadCall>>,
}

impl Default for Lifecycle {
    /// Never draining, no reloads (a gateway embedded in tests).
    fn default() -> Self {
        Self::new(None)
    }
}

impl Lifecycle {
    /// `reload`: where the admin API's reload requests go, if anywhere.
    pub fn new(reload: Option<mpsc::UnboundedSender<ReloadCall>>) -> Self {
        Self(Arc::new(Inner {
            draining: watch::channel(false).0,
            going_away: watch::channel(false).0,
            tunnels: watch::channel(()).0,
            reload,
        }))
    }

    /// From now on `/readyz` answers 503; nothing else changes.
    pub fn start_draining(&self) {
        self.0
            .draining
            .send_if_modified(|d| !std::mem::replace(d, true));
    }

    pub fn is_draining(&self) -> bool {
        *self.0.draining.borrow()
    }

    /// Resolves once the drain has started.
    pub async fn draining(&self) {
        let mut rx = self.0.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// The drain is over: tunnels close with 1001 (draining, too, if it was
    /// skipped).
    pub fn go_away(&self) {
        self.start_draining();
        self.0.going_away.send_replace(true);
    }

    /// Resolves once [`Self::go_away`] has been called.
    pub async fn going_away(&self) {
        let mut rx = self.0.going_away.subscribe();
        let _ = rx.wait_for(|gone| *gone).await;
    }

    /// A token an open tunnel holds until it has closed.
    pub fn tunnel_open(&self) -> TunnelToken {
        TunnelToken(self.0.tunnels.subscribe())
    }

    /// Resolves when no tunnel is open.
    pub async fn tunnels_closed(&self) {
        self.0.tunnels.closed().await;
    }

    /// Asks the process for a reload and waits for its report; `None` when
    /// this gateway cannot reload (not run by `oidc-bff serve`).
    pub async fn request_reload(&self) -> Option<ReloadReport> {
        let (tx, rx) = oneshot::channel();
        self.0.reload.as_ref()?.send(tx).ok()?;
        rx.await.ok()
    }
}

/// Held by an open tunnel (see [`Lifecycle::tunnel_open`]).
pub struct TunnelToken(#[expect(dead_code, reason = "held for its drop")] watch::Receiver<()>);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn going_away_implies_draining_and_wakes_every_waiter() {
        let life = Lifecycle::default();
        assert!(!life.is_draining());
        let waiter = tokio::spawn({
            let life = life.clone();
            async move { life.going_away().await }
        });
        let drain_waiter = tokio::spawn({
            let life = life.clone();
            async move { life.draining().await }
        });
        life.go_away();
        assert!(life.is_draining());
        waiter.await.expect("woken");
        drain_waiter.await.expect("woken");
        // A late waiter does not wait.
        life.going_away().await;
    }

    #[tokio::test]
    async fn tunnels_closed_waits_for_every_token() {
        let life = Lifecycle::default();
        life.tunnels_closed().await;
        let token = life.tunnel_open();
        let closed =
            tokio::time::timeout(std::time::Duration::from_millis(50), life.tunnels_closed());
        assert!(closed.await.is_err(), "a tunnel is open");
        drop(token);
        life.tunnels_closed().await;
    }
}
