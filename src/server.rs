//! Running the gateway as a process: worker threads, listeners, signals and
//! graceful shutdown.
//!
//! Thread per core: each of `server.workers` threads runs a single-threaded
//! tokio runtime with its own listening socket on `server.listen`
//! (SO_REUSEPORT: the kernel spreads connections), its own Redis connection
//! and its own upstream connection pool, so a request is handled start to
//! finish on one thread without cross-thread wake-ups. Measured on two
//! cores, this is about 40% more authenticated requests per second than one
//! work-stealing runtime (docs/benchmarks.md). Workers share the metrics
//! registry, the provider's metadata and key caches (one discovery and JWKS
//! fetch per process; each worker keeps its own provider connections) and,
//! with the memory store, the store; everything that must be
//! consistent between workers (refresh, revocation, single-use login state)
//! is coordinated in the store exactly as between separate instances.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::{Config, StoreKind};
use crate::metrics::Metrics;
use crate::oidc::OidcCaches;
use crate::session::store;
use crate::session::store::Store;
use crate::session::store::memory::MemoryStore;
use crate::state::AppState;

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// One worker: builds its state, reports readiness, serves until told to stop.
fn worker(
    index: usize,
    config: Config,
    store: Option<Arc<Store>>,
    metrics: Arc<Metrics>,
    oidc_caches: OidcCaches,
    stop: watch::Receiver<bool>,
    ready: mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a worker runtime")?;
    runtime.block_on(async move {
        let setup = async {
            let store = match store {
                Some(s) => s,
                None => Arc::new(store::open(&config)?),
            };
            let listen = config.server.listen;
            let admin = config
                .admin
                .as_ref()
                .map(|a| a.listen)
                .filter(|_| index == 0);
            let metrics_listen = config.metrics_listen.filter(|_| index == 0);
            let state = AppState::with_shared(config, store, metrics, oidc_caches)?;
            let listener = reuseport_listener(listen)
                .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
            let admin = match admin {
                Some(a) => Some(
                    tokio::net::TcpListener::bind(a)
                        .await
                        .with_context(|| format!("cannot listen on {a} (admin.listen)"))?,
                ),
                None => None,
            };
            let metrics_listener = match metrics_listen {
                Some(m) => Some(
                    tokio::net::TcpListener::bind(m)
                        .await
                        .with_context(|| format!("cannot listen on {m} (metrics.listen)"))?,
                ),
                None => None,
            };
            anyhow::Ok((state, listener, admin, metrics_listener))
        };
        let (state, listener, admin, metrics_listener) = match setup.await {
            Ok(parts) => parts,
            Err(e) => {
                let msg = format!("{e:#}");
                let _ = ready.send(Err(e));
                return Err(anyhow::anyhow!(msg));
            }
        };
        crate::spawn_provider_upkeep(&state);
        if index == 0 {
            crate::spawn_sweeper(&state);
            if let Some(l) = admin {
                tracing::info!(listen = %l.local_addr()?, "admin API listening");
                tokio::spawn(crate::serve_admin(state.clone(), l, stopped(stop.clone())));
            }
            if let Some(l) = metrics_listener {
                tracing::info!(listen = %l.local_addr()?, "metrics listening");
                tokio::spawn(crate::serve_metrics(
                    state.clone(),
                    l,
                    stopped(stop.clone()),
                ));
            }
        }
        let _ = ready.send(Ok(()));
        crate::serve(state, listener, stopped(stop)).await?;
        anyhow::Ok(())
    })
}

/// Runs the gateway until SIGTERM or Ctrl-C, then gives in-flight requests
/// `server.shutdown_timeout` to finish.
pub fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    // SO_REUSEPORT would let a second gateway silently share the port:
    // make sure nobody listens there first.
    drop(
        std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen} (server.listen)"))?,
    );
    let workers = config.server.workers.max(1);
    let grace = config.server.shutdown_timeout;
    let metrics = Arc::new(Metrics::new());
    // The memory store lives in this process: every worker must share it.
    let shared_store = match config.store.kind {
        StoreKind::Memory => Some(Arc::new(Store::Memory(MemoryStore::new()))),
        StoreKind::Redis(_) => None,
    };
    let oidc_caches = OidcCaches::new(&config.oidc);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<anyhow::Result<()>>();
    for index in 0..workers {
        let (config, store, metrics, caches, stop, ready, done) = (
            config.clone(),
            shared_store.clone(),
            metrics.clone(),
            oidc_caches.clone(),
            stop_rx.clone(),
            ready_tx.clone(),
            done_tx.clone(),
        );
        std::thread::Builder::new()
            .name(format!("oidc-bff-{index}"))
            .spawn(move || {
                let _ = done.send(worker(index, config, store, metrics, caches, stop, ready));
            })
            .context("cannot start a worker thread")?;
    }
    drop(ready_tx);
    drop(done_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = stop_tx.send(true);
                return Err(e);
            }
            Err(_) => anyhow::bail!("a worker stopped while starting"),
        }
    }
    tracing::info!(%listen, public_url = %config.server.public_url, workers, "oidc-bff listening");

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    signals.block_on(async move {
        let mut finished = 0;
        // A worker that ends on its own (an error) ends the process too.
        let early = tokio::select! {
            () = shutdown_signal() => None,
            result = done_rx.recv() => {
                finished += 1;
                result
            }
        };
        let _ = stop_tx.send(true);
        if let Some(Err(e)) = early {
            return Err(e);
        }
        tracing::info!(grace = ?grace, "shutting down: finishing in-flight requests");
        let rest = async {
            while finished < workers && done_rx.recv().await.is_some() {
                finished += 1;
            }
        };
        if tokio::time::timeout(grace, rest).await.is_err() {
            tracing::warn!("shutdown grace period over; dropping remaining connections");
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
