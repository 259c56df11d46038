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
//!
//! Each worker serves its public and admin apps from a [`LiveApp`] cell, so
//! a reload (`crate::reload`) swaps in the state each worker built for the
//! new configuration while requests in flight finish on the old one.
//!
//! Shutdown: SIGTERM starts a drain (`/readyz` answers 503, everything else
//! is still accepted and served) for `server.drain_period`; then the
//! listeners close, WebSocket tunnels get a 1001 close frame, and requests
//! and tunnels in flight get `server.shutdown_timeout` to finish. SIGINT
//! (Ctrl-C) skips the drain; a second signal during the drain ends it.
//!
//! Every listener (public, admin, metrics) serves its connections through
//! [`serve_connections`], which bounds what one client can hold: a
//! connection cap, a deadline for each request head, an idle timeout (also
//! for writes a client never takes),
//! header-size and HTTP/2 stream limits (`[server]`, [`ConnectionLimits`]),
//! and a budget of requests its client may cancel (HTTP/2 rapid reset;
//! `Activity::request_cancelled`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use axum::response::IntoResponse as _;

use crate::config::{Config, ConnectionLimits, StoreKind};
use crate::error::AppError;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::oidc::OidcCaches;
use crate::proxy::sticky::UpstreamSlot;
use crate::reload::{Reloader, Source, WorkerReload};
use crate::router::{App, DirectRoutes};
use crate::session::cache::ProcessCache;
use crate::session::store;
use crate::session::store::Store;
use crate::session::store::memory::MemoryStore;
use crate::state::AppState;

mod unreadable;

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

/// A side listener (admin, metrics) when its address is configured; a
/// failure names the key.
async fn bind_side(addr: Option<SocketAddr>, key: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({key})"))?;
    Ok(Some(listener))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// What the workers of one process share.
struct Shared {
    /// The memory store; `None` for Redis (each worker connects).
    store: Option<Arc<Store>>,
    metrics: Arc<Metrics>,
    /// The public listener's connection cap.
    connections: Arc<Semaphore>,
    /// The provider's metadata and keys, fetched once per process.
    oidc_caches: OidcCaches,
    lifecycle: Lifecycle,
    /// The audit trail's writer (one per process, kept across reloads).
    audit: crate::audit::Auditor,
    /// The session cache and its invalidation connections (one per
    /// process, kept across reloads: `store` needs a restart).
    cache: Option<Arc<ProcessCache>>,
}

/// A worker's background tasks for its current state (provider upkeep; the
/// index sweeper and the active-sessions count on worker 0), replaced with the state on a reload.
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Background {
    fn start(index: usize, state: &AppState) -> Self {
        let mut tasks = vec![crate::spawn_provider_upkeep(state)];
        if index == 0 {
            tasks.push(crate::spawn_sweeper(state));
            tasks.push(crate::spawn_session_counter(state));
        }
        Self(tasks)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What a worker needs to build a state again.
struct Rebuild {
    index: usize,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    audit: crate::audit::Auditor,
    lifecycle: Lifecycle,
    public: LiveApp,
    admin: Option<LiveApp>,
    cache: Option<Arc<ProcessCache>>,
}

impl Rebuild {
    /// Builds each reload's state on this worker's runtime and swaps it in
    /// when every worker could (`crate::reload::Reloader::apply`).
    async fn run(self, mut background: Background, mut reloads: UnboundedReceiver<WorkerReload>) {
        while let Some(reload) = reloads.recv().await {
            let built = AppState::for_worker(
                reload.config,
                self.store.clone(),
                self.metrics.clone(),
                reload.oidc_caches,
                self.audit.clone(),
                self.lifecycle.clone(),
                self.cache.clone(),
            );
            let state = match built {
                Ok(state) => {
                    let _ = reload.built.send(Ok(()));
                    state
                }
                Err(e) => {
                    let _ = reload
                        .built
                        .send(Err(format!("worker {}: {e:#}", self.index)));
                    continue;
                }
            };
            let Ok(Some(swapped)) = reload.commit.await else {
                continue;
            };
            self.public
                .replace(public_app(state.clone(), &self.lifecycle));
            if let Some(admin) = &self.admin {
                admin.replace(crate::admin_app(state.clone()));
            }
            background = Background::start(self.index, &state);
            // Entries were checked against the old `[session]` (lifetimes,
            // keys): the new state opens them again.
            if let Some(cache) = &self.cache {
                cache.flush();
            }
            let _ = swapped.send(());
        }
        drop(background);
    }
}

/// The public app for `state`: during a drain, one that closes
/// connections (see [`closing_connections`]).
fn public_app(state: AppState, lifecycle: &Lifecycle) -> App {
    let app = crate::router::build_app(state);
    if lifecycle.is_draining() {
        closing_connections(app)
    } else {
        app
    }
}

/// `app`, with `Connection: close` on every HTTP/1 response but a protocol
/// switch: during a drain, a keep-alive client finishes its request and
/// opens its next connection through the load balancer (which by now sends
/// it elsewhere) instead of having an idle connection cut when the drain
/// ends. (HTTP/2 has no such header: hyper drops it; those connections get
/// a GOAWAY when the drain ends.) Swapped in once when the drain starts,
/// so serving costs nothing extra before. Configured routes are then
/// reached through the router only, which adds the header to theirs too.
fn closing_connections(app: App) -> App {
    app.router
        .layer(axum::middleware::map_response(
            |mut resp: axum::response::Response| async move {
                if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                resp
            },
        ))
        .into()
}

/// One worker: builds its state, reports readiness, serves until told to
/// stop, rebuilding its state on each reload.
fn worker(
    index: usize,
    config: Config,
    shared: Shared,
    stop: watch::Receiver<bool>,
    ready: mpsc::Sender<anyhow::Result<()>>,
    reloads: UnboundedReceiver<WorkerReload>,
) -> anyhow::Result<()> {
    let Shared {
        store,
        metrics,
        connections,
        oidc_caches,
        lifecycle,
        audit,
        cache,
    } = shared;
    // The worker's log lines go out in batches, when it runs out of work
    // (`log_output`): one write per batch instead of one per request.
    let _lines = crate::log_output::batch_this_thread();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(crate::log_output::flush_this_thread)
        .build()
        .context("cannot start a worker runtime")?;
    runtime.block_on(async move {
        // Writes a busy worker's batch of log lines at the latest after
        // `log_output::MAX_AGE`; it ends with the runtime.
        let _log_age = crate::log_output::bound_batch_age();
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
            let state = AppState::for_worker(
                config,
                store.clone(),
                metrics.clone(),
                oidc_caches,
                audit.clone(),
                lifecycle.clone(),
                cache.clone(),
            )?;
            let listener = reuseport_listener(listen)
                .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
            let admin = bind_side(admin, "admin.listen").await?;
            let metrics_listener = bind_side(metrics_listen, "metrics.listen").await?;
            // This worker's invalidation connections, on its own runtime
            // (see `ProcessCache`); they end with the worker.
            let tracking = cache.as_ref().map(|c| c.track_here(index)).transpose()?;
            anyhow::Ok((state, store, listener, admin, metrics_listener, tracking))
        };
        let (state, store, listener, admin, metrics_listener, _tracking) = match setup.await {
            Ok(parts) => parts,
            Err(e) => {
                let msg = format!("{e:#}");
                let _ = ready.send(Err(e));
                return Err(anyhow::anyhow!(msg));
            }
        };
        let limits = state.config.server.limits;
        let public = LiveApp::new(public_app(state.clone(), &lifecycle));
        tokio::spawn({
            let (lifecycle, public) = (lifecycle.clone(), public.clone());
            async move {
                lifecycle.draining().await;
                public.replace(closing_connections(public.current()));
            }
        });
        let mut admin_app = None;
        if let Some(l) = admin {
            tracing::info!(listen = %l.local_addr()?, "admin API listening");
            let app = LiveApp::new(crate::admin_app(state.clone()));
            admin_app = Some(app.clone());
            tokio::spawn(serve_connections(
                l,
                app,
                limits,
                connection_cap(&limits),
                metrics.connections("admin"),
                stopped(stop.clone()),
            ));
        }
        if let Some(l) = metrics_listener {
            tracing::info!(listen = %l.local_addr()?, "metrics listening");
            tokio::spawn(crate::serve_metrics(
                state.clone(),
                l,
                stopped(stop.clone()),
            ));
        }
        let open = metrics.connections("public");
        let rebuild = Rebuild {
            index,
            store,
            metrics,
            audit,
            lifecycle: lifecycle.clone(),
            public: public.clone(),
            admin: admin_app,
            cache,
        };
        tokio::spawn(rebuild.run(Background::start(index, &state), reloads));
        drop(state);
        let _ = ready.send(Ok(()));
        serve_connections(listener, public, limits, connections, open, stopped(stop)).await?;
        // Upgraded connections have left hyper's hands: wait for the
        // tunnels too (they close with 1001 now; `run` bounds the wait).
        lifecycle.tunnels_closed().await;
        anyhow::Ok(())
    })
}

/// Runs the gateway until SIGTERM or SIGINT: drains, then gives in-flight
/// requests `server.shutdown_timeout` to finish. SIGHUP reloads `source`.
pub fn run(config: Config, source: Source) -> anyhow::Result<()> {
    let listen = config.server.listen;
    // SO_REUSEPORT would let a second gateway silently share the port:
    // make sure nobody listens there first.
    drop(
        std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen} (server.listen)"))?,
    );
    let workers = config.server.workers.max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    // Handled from before the workers start, so that a signal is never
    // lost (SIGINT may be ignored by default, in a background job) nor ends
    // the process without a drain (SIGTERM, SIGHUP); one received while
    // starting is acted on once serving.
    let mut signals = {
        let _in_runtime = runtime.enter();
        Signals::new()?
    };
    let metrics = Arc::new(Metrics::new());
    // `server.max_connections` is per process: the workers' listeners share it.
    let connections = connection_cap(&config.server.limits);
    // The memory store lives in this process: every worker must share it.
    let shared_store = match config.store.kind {
        StoreKind::Memory => Some(Arc::new(Store::Memory(MemoryStore::new()))),
        StoreKind::Redis(_) => None,
    };
    let oidc_caches = OidcCaches::new(&config.oidc);
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let lifecycle = Lifecycle::new(Some(reload_tx));
    let audit = crate::state::open_audit(&config, &metrics)?;
    let cache = ProcessCache::for_workers(&config, &metrics.session_cache, workers);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<anyhow::Result<()>>();
    let mut worker_reloads = Vec::new();
    for index in 0..workers {
        let (reloads_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
        worker_reloads.push(reloads_tx);
        let (config, stop, ready, done) = (
            config.clone(),
            stop_rx.clone(),
            ready_tx.clone(),
            done_tx.clone(),
        );
        let shared = Shared {
            store: shared_store.clone(),
            metrics: metrics.clone(),
            connections: connections.clone(),
            oidc_caches: oidc_caches.clone(),
            lifecycle: lifecycle.clone(),
            audit: audit.clone(),
            cache: cache.clone(),
        };
        std::thread::Builder::new()
            .name(format!("oidc-bff-{index}"))
            .spawn(move || {
                let _ = done.send(worker(index, config, shared, stop, ready, reloads));
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
    let mut reloader = Reloader::new(source, config, oidc_caches, worker_reloads, metrics);

    runtime.block_on(async move {
        let mut finished = 0;
        // A worker that ends on its own (an error) ends the process too.
        let (signal, early) = loop {
            tokio::select! {
                signal = signals.next() => match signal {
                    Signal::Reload => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        reloader.reload().await;
                    }
                    stop => break (stop, None),
                },
                Some(call) = reload_rx.recv() => {
                    let report = reloader.reload().await;
                    let _ = call.send(report);
                }
                result = done_rx.recv() => {
                    finished += 1;
                    break (Signal::Interrupt, result);
                }
            }
        };
        let (drain, grace) = (
            reloader.running().server.drain_period,
            reloader.running().server.shutdown_timeout,
        );
        if early.is_none() && matches!(signal, Signal::Terminate) && !drain.is_zero() {
            lifecycle.start_draining();
            tracing::info!(drain = ?drain, "SIGTERM: draining (/readyz answers 503; still serving)");
            let mut over = pin!(tokio::time::sleep(drain));
            loop {
                tokio::select! {
                    () = &mut over => break,
                    signal = signals.next() => match signal {
                        Signal::Reload => {
                            reloader.reload().await;
                        }
                        _ => {
                            tracing::info!("second signal: drain cut short");
                            break;
                        }
                    },
                    Some(call) = reload_rx.recv() => {
                        let report = reloader.reload().await;
                        let _ = call.send(report);
                    }
                    result = done_rx.recv() => {
                        if let Some(Err(e)) = result {
                            lifecycle.go_away();
                            let _ = stop_tx.send(true);
                            return Err(e);
                        }
                        finished += 1;
                        break;
                    }
                }
            }
        }
        lifecycle.go_away();
        let _ = stop_tx.send(true);
        if let Some(Err(e)) = early {
            return Err(e);
        }
        tracing::info!(grace = ?grace, "shutting down: listeners closed, finishing in-flight requests");
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

/// The signals the process acts on.
#[derive(Clone, Copy)]
enum Signal {
    /// SIGHUP.
    Reload,
    /// SIGTERM: drain, then shut down.
    Terminate,
    /// SIGINT (Ctrl-C): shut down without a drain.
    Interrupt,
}

struct Signals {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (SIGHUP no longer ends the process).
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
                term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.hup.recv() => Signal::Reload,
                _ = self.term.recv() => Signal::Terminate,
                _ = self.int.recv() => Signal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            Signal::Interrupt
        }
    }
}

/// The app a listener serves, replaceable while it serves: each request
/// takes the current one at its start (one atomic load), so a request in
/// flight finishes on the app it started with and a keep-alive connection
/// gets the new one with its next request.
#[derive(Clone)]
pub struct LiveApp(Arc<ArcSwap<App>>);

impl LiveApp {
    pub fn new(app: impl Into<App>) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(app.into())))
    }

    /// Serves `app` from the next request on.
    pub fn replace(&self, app: impl Into<App>) {
        self.0.store(Arc::new(app.into()));
    }

    /// The app now (a reference count).
    fn current(&self) -> App {
        App::clone(&self.0.load())
    }
}

impl From<Router> for LiveApp {
    fn from(app: Router) -> Self {
        Self::new(app)
    }
}

impl From<App> for LiveApp {
    fn from(app: App) -> Self {
        Self::new(app)
    }
}

/// A cap of `limits.max_connections` connections, for one listener (shared
/// by the workers when they share the listener's address).
pub fn connection_cap(limits: &ConnectionLimits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ))
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves
/// (counting its open connections in `open`),
/// then stops accepting and waits for the open connections to finish
/// their in-flight requests (the caller bounds that wait).
///
/// At the cap the loop stops accepting: new connections wait in the
/// kernel's backlog (bounded by it) and are served as slots free up, rather
/// than being reset. Slots free up: a connection that sends no complete
/// request head within `header_read_timeout`, or starts no request within
/// `idle_timeout`, is closed.
pub async fn serve_connections(
    listener: TcpListener,
    app: impl Into<LiveApp>,
    limits: ConnectionLimits,
    cap: Arc<Semaphore>,
    open: Gauge,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let app = app.into();
    let builder = Arc::new(connection_builder(&limits));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a receiver; all dropped = all finished.
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = cap.clone().acquire_owned() => match permit {
                Ok(p) => p,
                // Never closed; treat it as the end of serving.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let activity = Arc::new(Activity::new(&limits));
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            peer,
            limits,
            activity: activity.clone(),
            stop: stop_rx.clone(),
            _open: open_rx.clone(),
        };
        open.inc();
        tokio::spawn(connection.serve(CappedStream {
            stream,
            _permit: permit,
            _open: Open(open.clone()),
            write_stall: WriteStall::new(limits.idle_timeout),
            unreadable: unreadable::Watch::new(activity, app.clone()),
        }));
    }
    drop(listener);
    drop(open_rx);
    let _ = stop_tx.send(true);
    open_tx.closed().await;
    Ok(())
}

/// hyper's settings for one listener: HTTP/1 and HTTP/2 (sniffed), with the
/// header deadline and size limits. HTTP/2 WebSockets (extended CONNECT,
/// RFC 8441) are not offered: the guard answers `CONNECT` with 405 and the
/// proxy tunnels HTTP/1.1 upgrades only, and a client that is not offered
/// them opens its WebSocket over HTTP/1.1, which works.
fn connection_builder(limits: &ConnectionLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The head must fit the read buffer: this bounds it (431 beyond).
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        // A peer must answer a PING within the header deadline, so one
        // that goes silent (or never acknowledges a GOAWAY) is dropped.
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Streams reset by the client before hyper took them: beyond this
        // many at once, GOAWAY ENHANCE_YOUR_CALM (hyper's default, set
        // here so it stays one). Streams reset after they were taken are
        // bounded by `Activity::request_cancelled`.
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        // Streams h2 itself had to reset because the client broke the
        // protocol on them: at most this many per connection, then
        // GOAWAY ENHANCE_YOUR_CALM.
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS);
    builder
}

/// See `connection_builder`.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// See `connection_builder`.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How long a connection whose client cancels too many requests
/// (`Activity::request_cancelled`) is kept after its GOAWAY, so the
/// GOAWAY is sent; requests it starts meanwhile are refused at once (429).
const ABUSE_GRACE: Duration = Duration::from_secs(1);

/// A failed `accept`: a connection that died in the backlog is skipped; a
/// resource error (out of file descriptors) is logged and retried after a
/// pause instead of spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionRefused | K::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One accepted connection and what it needs to be served.
struct Connection {
    builder: Arc<Builder<TokioExecutor>>,
    app: LiveApp,
    peer: SocketAddr,
    limits: ConnectionLimits,
    /// Written by each request; read by the idle watchdog and the
    /// connection's [`unreadable::Watch`].
    activity: Arc<Activity>,
    stop: watch::Receiver<bool>,
    /// Dropped when the connection is done (see `serve_connections`).
    _open: watch::Receiver<()>,
}

impl Connection {
    /// Serves the connection to its end; on shutdown or when idle, lets the
    /// request in flight finish and closes.
    async fn serve(mut self, stream: CappedStream) {
        let activity = self.activity.clone();
        let service = ConnectionService {
            app: self.app.clone(),
            peer: self.peer,
            activity: activity.clone(),
            upstream: UpstreamSlot::default(),
        };
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        let mut conn = pin!(conn);
        let mut idle = pin!(activity.until_idle(&self.limits));
        let mut abused = pin!(activity.abused());
        let mut cut_off = pin!(tokio::time::sleep(Duration::MAX));
        let (mut closing, mut abusive) = (false, false);
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                () = &mut abused, if !abusive => {
                    // GOAWAY now, and the end once it has gone out: what
                    // the client has in flight is lost, which is the
                    // point (see `Activity::request_cancelled`).
                    tracing::warn!(
                        peer = %self.peer,
                        "closing a connection whose client cancelled too many requests (HTTP/2 rapid reset?)"
                    );
                    abusive = true;
                    if !closing {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    cut_off.as_mut().reset(Instant::now() + ABUSE_GRACE);
                }
                () = &mut cut_off => break,
                _ = self.stop.wait_for(|stop| *stop), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                quiet = &mut idle, if !closing => match quiet {
                    // Nothing in flight can be lost: drop it (an HTTP/2
                    // client that never answers the GOAWAY ping would
                    // otherwise keep it open).
                    Quiet::NeverUsed => break,
                    Quiet::Idle => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                },
            }
        }
    }
}

/// Why a connection's watchdog fired.
enum Quiet {
    /// No request started within the header deadline.
    NeverUsed,
    /// No request started for the idle timeout.
    Idle,
}

/// When a connection last started a request, so an idle one can be closed,
/// and how fast its client cancels requests, so one that makes the gateway
/// work for nothing can be closed.
/// Written by [`ConnectionService`] per request (two relaxed atomic stores;
/// one more per cancelled request), read by the connection's watchdog.
struct Activity {
    opened: Instant,
    requests: AtomicU64,
    /// Milliseconds after `opened` of the latest request.
    last_ms: AtomicU64,
    /// The cancellation budget (a GCRA): microseconds after `opened` at
    /// which the budget is whole again.
    cancels_full_at_us: AtomicU64,
    /// What one cancellation costs of the budget, in microseconds.
    cancel_cost_us: u64,
    /// Set once the budget is overdrawn: new requests are refused.
    refusing: AtomicBool,
    abuse: Notify,
}

/// A client may cancel `http2_max_concurrent_streams` requests at once
/// and on average that many per this window after that.
const CANCEL_WINDOW_US: u64 = 10_000_000;

impl Activity {
    fn new(limits: &ConnectionLimits) -> Self {
        Self {
            opened: Instant::now(),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            cancels_full_at_us: AtomicU64::new(0),
            cancel_cost_us: CANCEL_WINDOW_US
                / u64::from(limits.http2_max_concurrent_streams.max(1)),
            refusing: AtomicBool::new(false),
            abuse: Notify::new(),
        }
    }

    /// Whether a request has started on the connection.
    fn any_started(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// A request whose answer was dropped before it was ready: the client
    /// reset its HTTP/2 stream (or closed the connection). On HTTP/2 a
    /// reset frees the stream's slot at once, so `max_concurrent_streams`
    /// does not bound how many requests a client can start and cancel:
    /// sent back to back (rapid reset, CVE-2023-44487) they made the
    /// gateway look up sessions and open upstream requests by the
    /// thousand per second while the client waited for nothing. A client
    /// may cancel `http2_max_concurrent_streams` requests at once and on
    /// average that many per 10 s (`CANCEL_WINDOW_US`); beyond that its
    /// connection is closed (GOAWAY).
    fn request_cancelled(&self) {
        let now = u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX);
        let full_at = self.cancels_full_at_us.load(Ordering::Relaxed).max(now);
        let full_at = full_at.saturating_add(self.cancel_cost_us);
        self.cancels_full_at_us.store(full_at, Ordering::Relaxed);
        if full_at - now > CANCEL_WINDOW_US && !self.refusing.swap(true, Ordering::Relaxed) {
            self.abuse.notify_one();
        }
    }

    /// Resolves once the client has cancelled too many requests.
    async fn abused(&self) {
        self.abuse.notified().await;
    }

    fn request_started(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves once the connection has started no request for too long:
    /// none within `header_read_timeout` of opening (this also covers what
    /// hyper's own header timer does not see: the protocol sniffing before
    /// HTTP/1 starts, and HTTP/2), or none for `idle_timeout` since the
    /// latest one.
    async fn until_idle(&self, limits: &ConnectionLimits) -> Quiet {
        let first_by = self.opened + limits.header_read_timeout;
        let mut seen = 0;
        let mut deadline = self.opened + limits.header_read_timeout.min(limits.idle_timeout);
        loop {
            tokio::time::sleep_until(deadline).await;
            let requests = self.requests.load(Ordering::Relaxed);
            if requests == 0 {
                if Instant::now() >= first_by {
                    return Quiet::NeverUsed;
                }
                deadline = first_by;
                continue;
            }
            if requests == seen {
                return Quiet::Idle;
            }
            seen = requests;
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            deadline = self.opened + last + limits.idle_timeout;
        }
    }
}

/// The app as one connection's hyper service: records activity and hands
/// the peer address to the app as `ConnectInfo` (`extract::client::peer_ip`),
/// and the connection's [`UpstreamSlot`].
struct ConnectionService {
    app: LiveApp,
    peer: SocketAddr,
    activity: Arc<Activity>,
    /// The connection's own upstream connection (`proxy::sticky`).
    upstream: UpstreamSlot,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Tracked;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        if self.activity.refusing.load(Ordering::Relaxed) {
            // The connection is closing for abuse: no work for it.
            return Tracked::new(
                Answer::Refused {
                    response: Some(AppError::TooManyCancelled.into_response()),
                },
                None,
            );
        }
        self.activity.request_started();
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut().insert(self.upstream.clone());
        // Taking the app is an atomic load and reference counts.
        let app = self.app.0.load();
        if let Some(direct) = &app.direct
            && let Some(route) = direct.find(req.method(), req.uri().path())
        {
            return Tracked::new(
                Answer::Direct {
                    inner: DirectRoutes::call(route, req.map(axum::body::Body::new)),
                },
                Some(self.activity.clone()),
            );
        }
        // `Router` is always ready.
        Tracked::new(
            Answer::Router {
                inner: tower::Service::call(&mut app.router.clone(), req),
            },
            Some(self.activity.clone()),
        )
    }
}

pin_project_lite::pin_project! {
    /// A request's answer: from a configured route reached directly, or
    /// from the router, or a refusal on a connection closing for abuse.
    #[project = AnswerProj]
    pub enum Answer {
        Direct { #[pin] inner: crate::router::direct::Answer },
        Router { #[pin] inner: RouteFuture<Infallible> },
        Refused { response: Option<axum::response::Response> },
    }
}

impl Future for Answer {
    type Output = Result<axum::response::Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProj::Direct { inner } => inner.poll(cx),
            AnswerProj::Router { inner } => inner.poll(cx),
            AnswerProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_default()))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// An [`Answer`] that tells its connection's [`Activity`] when it is
    /// dropped before it was ready: a request its client cancelled.
    pub struct Tracked {
        #[pin]
        answer: Answer,
        activity: Option<Arc<Activity>>,
    }

    impl PinnedDrop for Tracked {
        fn drop(this: Pin<&mut Self>) {
            if let Some(activity) = this.project().activity.take() {
                activity.request_cancelled();
            }
        }
    }
}

impl Tracked {
    fn new(answer: Answer, activity: Option<Arc<Activity>>) -> Self {
        Self { answer, activity }
    }
}

impl Future for Tracked {
    type Output = Result<axum::response::Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = this.answer.poll(cx);
        if answered.is_ready() {
            *this.activity = None;
        }
        answered
    }
}

/// A TCP stream that holds its slot of the connection cap for as long as
/// it is open, including after an upgrade hands it to a WebSocket tunnel.
struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _open: Open,
    write_stall: WriteStall,
    /// Puts the gateway's answer in place of hyper's bare one to a head
    /// it cannot read.
    unreadable: unreadable::Watch,
}

/// Fails a connection's writes once the peer has taken nothing for
/// `server.idle_timeout`: a client that never reads its response (a large
/// download, an event stream, a WebSocket) would otherwise hold its
/// connection, its slot of the cap and the upstream connection behind the
/// response for ever, since the idle timeout lets a response in flight
/// finish. Proxied bodies are polled only as fast as the client takes
/// them, so memory stays bounded meanwhile; this bounds the time.
///
/// Costs a flag check per write; the timer is made on the connection's
/// first blocked write only, and re-armed (not re-made) after that.
struct WriteStall {
    limit: Duration,
    /// Whether the latest write was blocked (the timer counts from then).
    blocked: bool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteStall {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            blocked: false,
            timer: None,
        }
    }

    /// What to make of a write's outcome: progress clears the stall, a
    /// blocked write starts (or goes on counting) it and fails once it
    /// has lasted `limit`.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if written.is_ready() {
            self.blocked = false;
            return written;
        }
        if !self.blocked {
            self.blocked = true;
            // `checked_add`: a limit too large for a deadline means never.
            let Some(deadline) = tokio::time::Instant::now().checked_add(self.limit) else {
                return Poll::Pending;
            };
            match self.timer.as_mut() {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready());
        if expired {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer read nothing for server.idle_timeout",
            )));
        }
        Poll::Pending
    }
}

/// One count in the listener's open-connections gauge
/// (`oidc_bff_connections_open`), given back when the stream is dropped.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        this.unreadable.on_read(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(
            this.unreadable
                .poll_pending(cx, &mut this.stream, &mut this.write_stall)
        )?;
        if this.unreadable.replaces(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.write_stall.check(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(
            this.unreadable
                .poll_pending(cx, &mut this.stream, &mut this.write_stall)
        )?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && this.unreadable.replaces(first)
        {
            return Poll::Ready(Ok(first.len()));
        }
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.write_stall.check(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(
            this.unreadable
                .poll_pending(cx, &mut this.stream, &mut this.write_stall)
        )?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(
            this.unreadable
                .poll_pending(cx, &mut this.stream, &mut this.write_stall)
        )?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(streams: u32) -> ConnectionLimits {
        ConnectionLimits {
            http2_max_concurrent_streams: streams,
            ..ConnectionLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_may_cancel_its_stream_limit_at_once_and_no_more() {
        let a = Activity::new(&limits(10));
        for _ in 0..10 {
            a.request_cancelled();
        }
        assert!(!a.refusing.load(Ordering::Relaxed), "10 of 10 at once");
        a.request_cancelled();
        assert!(a.refusing.load(Ordering::Relaxed), "the 11th");
        tokio::time::timeout(Duration::from_millis(1), a.abused())
            .await
            .expect("the watchdog is told");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cancellation_budget_refills_at_the_stream_limit_per_ten_seconds() {
        let a = Activity::new(&limits(10));
        for _ in 0..10 {
            a.request_cancelled();
        }
        // One cancellation's worth back per second, and a steady one per
        // second for ever after.
        for _ in 0..30 {
            tokio::time::advance(Duration::from_millis(1001)).await;
            a.request_cancelled();
        }
        assert!(!a.refusing.load(Ordering::Relaxed));
        tokio::time::advance(Duration::from_millis(500)).await;
        a.request_cancelled();
        assert!(a.refusing.load(Ordering::Relaxed), "two in one second");
    }
}
