//! Which Redis server the store talks to: one fixed server, whichever
//! server Redis Sentinel names as master right now, or a Redis Cluster.
//!
//! A connection on which a command went unanswered within the store's
//! timeout, or got a reply of another kind than it gives, is not used
//! again ([`watched`], [`Link::distrust`]): replies come in order, so one
//! endless, missing or foreign reply would otherwise spoil every later
//! command on it.
//!
//! A `ConnectionManager` reconnects to the address it was built with. That is
//! right for a fixed server and wrong after a Sentinel failover: the old
//! master is gone, or comes back as a replica that refuses writes with
//! `READONLY`. [`Link::Sentinel`] therefore keeps the current master's
//! connection and drops it when it fails in a way that says "this is no
//! longer the master"; the next command asks the Sentinels again. A command
//! refused with `READONLY` or `MASTERDOWN` was not executed, so it is sent
//! once more to the new master. A command whose connection broke may have
//! run: it is sent again only if it just reads (a session lookup); any
//! other gets the error (a 503). After `SENTINEL FAILOVER` the old master
//! keeps its connections and accepts writes until Sentinel demotes it
//! (about 11 s later), and what it is sent meanwhile is lost when it
//! resynchronises; so the link listens to one Sentinel's `+switch-master`
//! (`redis_link::sentinels`) and moves as soon as it is published, and,
//! while commands flow, also asks the Sentinels each second (on kept
//! connections) whether they still name the master in use, moving once two
//! checks in a row name another one. Whichever way it moves, the link
//! tells its observer (the session cache) of the new master before it
//! installs it, so the cache stops trusting invalidation connections that
//! listen elsewhere before any command reaches the new master.
//! [`Link::Cluster`] leaves topology to the
//! cluster client; commands that name no key (SCAN, INFO) are sent to each
//! primary in turn by [`Link::on_node`] over [`Link::masters`]. The
//! cluster client can wedge during a failover (every command of every slot
//! times out while a new connection works), so [`ClusterLink`] watches for
//! commands of several nodes timing out in a row and then opens a new one;
//! it also opens a new one when a command of one node stalled while that
//! node answers a connection of its own (a reply that never ends), and
//! when [`Link::distrust`] is told of a reply the command never gets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, TlsCertificates, TlsMode, Value,
};

use super::MasterObserver;
use crate::config::{RedisConfig, SentinelConfig};

mod cluster;
mod sentinels;

use sentinels::{Announced, Kept, Sentinels};

/// A link's connection in use, numbered so that a caller holding an older
/// one (its command failed, or stalled) can drop it without discarding a
/// newer one another caller opened meanwhile. Shared by the Sentinel and
/// Cluster links.
struct Current<C> {
    slot: RwLock<Option<(u64, C)>>,
    generations: AtomicU64,
}

impl<C> Default for Current<C> {
    fn default() -> Self {
        Self {
            slot: RwLock::new(None),
            generations: AtomicU64::new(0),
        }
    }
}

impl<C: Clone> Current<C> {
    /// The connection in use and its generation, if any.
    fn get(&self) -> Option<(u64, C)> {
        self.slot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes `conn` the connection in use; returns its generation.
    fn install(&self, conn: C) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *self
            .slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((generation, conn));
        generation
    }

    /// The connection in use, or `open()`'s, installed, when there is
    /// none; under the lock, so concurrent callers share one.
    /// Reads under the shared lock first: every command asks.
    fn get_or_install(&self, open: impl FnOnce() -> RedisResult<C>) -> RedisResult<(u64, C)> {
        if let Some(current) = self.get() {
            return Ok(current);
        }
        let mut slot = self
            .slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(current) = slot.as_ref() {
            return Ok(current.clone());
        }
        let conn = open()?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *slot = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Drops connection `generation` if it is still the one in use; whether
    /// it was.
    fn forget(&self, generation: u64) -> bool {
        let mut slot = self
            .slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = slot.as_ref().is_some_and(|(g, _)| *g == generation);
        if current {
            *slot = None;
        }
        current
    }

    /// How many connections were installed so far.
    #[cfg(test)]
    fn installed(&self) -> u64 {
        self.generations.load(Ordering::Relaxed)
    }
}
pub use cluster::ClusterLink;

/// A cheap-to-clone handle that runs commands on the right server.
#[derive(Clone)]
pub enum Link {
    Fixed(Arc<FixedLink>),
    Sentinel(Arc<SentinelLink>),
    Cluster(Arc<ClusterLink>),
}

/// One server to send a keyless command to: the one server of a fixed or
/// Sentinel link, or one primary of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    The,
    /// A cluster primary; `serves_slots` false while it only imports one
    /// (a reshard onto a primary that joined empty) or holds none.
    Primary {
        host: String,
        port: u16,
        serves_slots: bool,
    },
}

/// A node's address, over TLS (host name verified) or plain TCP.
pub(super) fn address(host: &str, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }
}

/// Whether the command's name is one of `names`.
fn named(cmd: &Cmd, names: &[&[u8]]) -> bool {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        _ => false,
    }
}

/// Runs `op`, one command (or pipeline) on connection `generation`, and
/// calls `stuck(generation)` when the connection stopped answering: the
/// command failed with a timeout, or it was dropped unfinished (the
/// store's own timeout, equal to `limit`, fired first) after nearly
/// `limit`. A connection with one command unanswered answers nothing
/// after it (replies come in order): a server that trickles an endless
/// reply, declares a 512 MB string and sends nothing more, or hangs,
/// would otherwise leave every later command of every request waiting on
/// the same connection, each timing out, for as long as the process runs.
/// The client library reconnects only after an I/O or parse failure,
/// never after a timeout. A request dropped early (its client went away)
/// says nothing about the connection and replaces nothing.
async fn watched<T>(
    generation: u64,
    limit: Option<Duration>,
    op: impl std::future::Future<Output = RedisResult<T>>,
    stuck: impl Fn(u64),
) -> RedisResult<T> {
    struct Guard<F: Fn(u64)> {
        generation: u64,
        started: Instant,
        limit: Option<Duration>,
        stuck: F,
        finished: bool,
    }
    impl<F: Fn(u64)> Drop for Guard<F> {
        fn drop(&mut self) {
            // Timers fire a little early or late: nine tenths of the limit
            // is a command that waited out the store's timeout.
            if !self.finished
                && self
                    .limit
                    .is_some_and(|limit| self.started.elapsed() >= limit.mul_f32(0.9))
            {
                (self.stuck)(self.generation);
            }
        }
    }
    let mut guard = Guard {
        generation,
        started: Instant::now(),
        limit,
        stuck,
        finished: false,
    };
    let result = op.await;
    guard.finished = true;
    if let Err(e) = &result
        && e.is_timeout()
    {
        (guard.stuck)(generation);
    }
    result
}

/// One fixed server (`store.url`): a reconnecting connection, replaced by
/// a new one when it stops answering (see [`watched`]).
pub struct FixedLink {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    current: Current<ConnectionManager>,
    db: i64,
}

impl FixedLink {
    /// Prepares the link; the connection is opened on first use.
    pub fn new(client: redis::Client, manager_config: ConnectionManagerConfig) -> Self {
        let db = client.get_connection_info().redis_settings().db();
        Self {
            client,
            manager_config,
            current: Current::default(),
            db,
        }
    }

    fn conn(&self) -> RedisResult<(u64, ConnectionManager)> {
        self.current.get_or_install(|| {
            self.client
                .get_connection_manager_lazy(self.manager_config.clone())
        })
    }

    fn stuck(&self, generation: u64) {
        if self.current.forget(generation) {
            tracing::warn!(
                "redis: a command got no complete answer within the store timeout; the connection is replaced"
            );
        }
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.conn()?;
        watched(
            generation,
            self.manager_config.response_timeout(),
            conn.req_packed_command(cmd),
            |g| self.stuck(g),
        )
        .await
    }

    async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.conn()?;
        watched(
            generation,
            self.manager_config.response_timeout(),
            conn.req_packed_commands(pipeline, offset, count),
            |g| self.stuck(g),
        )
        .await
    }
}

/// How often, while commands flow, the Sentinels are asked whether they
/// still name the master in use.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// The master in use: its connection and its address as the Sentinels
/// named it.
#[derive(Clone)]
struct Master {
    conn: ConnectionManager,
    addr: Arc<str>,
}

/// The Sentinel clients that find the master, one per Sentinel, each
/// asking them in another order (the first one first, the second one
/// first, …), and which one asks next. The client library waits for the
/// Sentinels' answers in the order it was given them, with no response
/// timeout of its own: a Sentinel that accepts the connection and never
/// answers (or trickles an endless reply) would stall every discovery
/// behind it, for good, however many good Sentinels follow. Each
/// discovery is bounded (`SentinelLink::discover`) and the next one
/// starts from the next Sentinel, so a bad one costs one failed
/// discovery, not the store.
struct Discovery {
    clients: Vec<SentinelClient>,
    next: usize,
}

impl Discovery {
    /// The client whose turn it is; the turn passes even if the caller
    /// is cancelled (the store's timeout) while it asks.
    fn take_turn(&mut self) -> &mut SentinelClient {
        let index = self.next % self.clients.len().max(1);
        self.next = index + 1;
        &mut self.clients[index]
    }
}

pub struct SentinelLink {
    /// Asks the Sentinels; locked while one task (re)discovers the master so
    /// concurrent requests do not all query the Sentinels at once.
    sentinel: tokio::sync::Mutex<Discovery>,
    /// The current master's connection.
    current: Current<Master>,
    manager_config: ConnectionManagerConfig,
    db: i64,
    /// When the Sentinels last named the master in use (ms since
    /// `started`), and whether a re-check is under way.
    confirmed_at: AtomicU64,
    rechecking: AtomicBool,
    started: Instant,
    /// Another master named by the last re-check: the connection moves
    /// only when the next one names it too, so one Sentinel that has not
    /// yet taken in a failover cannot send the gateway back to the old
    /// master while that one still accepts writes.
    suspect: std::sync::Mutex<Option<String>>,
    /// How to reach the Sentinels for the re-check and the subscription.
    sentinels: Arc<Sentinels>,
    /// The re-check's kept Sentinel connections.
    kept: tokio::sync::Mutex<Kept>,
    /// Whether a `+switch-master` subscription task runs, and its handles
    /// (aborted when the link is dropped: a gateway that stops or reloads
    /// leaves no task, nor connection, behind).
    watching: AtomicBool,
    watchers: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    /// Told of each master before it is installed (the session cache);
    /// locked across the telling and the installing, so an observer set
    /// meanwhile is told of the new master rather than miss it.
    observer: std::sync::Mutex<Option<Box<dyn MasterObserver>>>,
}

impl Drop for SentinelLink {
    fn drop(&mut self) {
        for watcher in self
            .watchers
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            watcher.abort();
        }
    }
}

/// Marks the subscription task ended however it ends (its runtime, a
/// worker's, shut down): the next command on another runtime starts one.
struct WatchDone(Weak<SentinelLink>);

impl Drop for WatchDone {
    fn drop(&mut self) {
        if let Some(link) = self.0.upgrade() {
            link.watching.store(false, Ordering::Release);
        }
    }
}

/// Whether a re-check that found `named` should move the link off
/// `in_use`: only when the previous re-check named the same other master
/// (kept in `suspect`); a re-check that names the master in use forgets
/// any suspect.
fn named_twice(suspect: &mut Option<String>, in_use: &str, named: String) -> bool {
    if named == in_use {
        *suspect = None;
        false
    } else if suspect.as_deref() == Some(named.as_str()) {
        *suspect = None;
        true
    } else {
        *suspect = Some(named);
        false
    }
}

/// Ends a re-check however its task ends (done, panicked, or dropped with
/// its runtime): the next one may start a second later.
struct RecheckDone(Arc<SentinelLink>);

impl Drop for RecheckDone {
    fn drop(&mut self) {
        let link = &self.0;
        link.confirmed_at
            .store(link.elapsed_ms(), Ordering::Relaxed);
        link.rechecking.store(false, Ordering::Release);
    }
}

impl SentinelLink {
    /// `certificates` (a private CA, a client certificate) serve both the
    /// Sentinels and the master when `sentinel.tls` is on.
    pub fn new(
        sentinel: &SentinelConfig,
        data_nodes: &RedisConfig,
        certificates: Option<TlsCertificates>,
        manager_config: ConnectionManagerConfig,
    ) -> RedisResult<Self> {
        // One client per Sentinel, each asking the Sentinels in another
        // order (see `Discovery`); at least one, since the builder refuses
        // an empty list.
        let count = sentinel.nodes.len().max(1);
        let mut clients = Vec::with_capacity(count);
        for first in 0..count {
            let nodes = sentinel
                .nodes
                .iter()
                .cycle()
                .skip(first)
                .take(sentinel.nodes.len())
                .map(|(host, port)| address(host, *port, sentinel.tls));
            let mut builder =
                SentinelClientBuilder::new(nodes, &sentinel.master, SentinelServerType::Master)?
                    .set_client_to_redis_db(data_nodes.db);
            if sentinel.tls {
                builder = builder
                    .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                    .set_client_to_redis_tls_mode(TlsMode::Secure);
                if let Some(certs) = &certificates {
                    builder = builder
                        .set_client_to_sentinel_certificates(certs.clone())
                        .set_client_to_redis_certificates(certs.clone());
                }
            }
            if let Some(user) = &data_nodes.username {
                builder = builder.set_client_to_redis_username(user);
            }
            if let Some(pw) = &data_nodes.password {
                builder = builder.set_client_to_redis_password(pw.expose());
            }
            if let Some(user) = &sentinel.username {
                builder = builder.set_client_to_sentinel_username(user);
            }
            if let Some(pw) = &sentinel.password {
                builder = builder.set_client_to_sentinel_password(pw.expose());
            }
            clients.push(builder.build()?);
        }
        let timeouts = (
            manager_config.connection_timeout().unwrap_or(RECHECK_EVERY),
            manager_config.response_timeout().unwrap_or(RECHECK_EVERY),
        );
        let sentinels = Sentinels::new(sentinel, data_nodes, certificates, timeouts);
        Ok(Self {
            sentinel: tokio::sync::Mutex::new(Discovery { clients, next: 0 }),
            current: Current::default(),
            manager_config,
            db: data_nodes.db,
            confirmed_at: AtomicU64::new(0),
            rechecking: AtomicBool::new(false),
            started: Instant::now(),
            suspect: std::sync::Mutex::new(None),
            sentinels: Arc::new(sentinels),
            kept: tokio::sync::Mutex::new(Kept::default()),
            watching: AtomicBool::new(false),
            watchers: std::sync::Mutex::new(Vec::new()),
            observer: std::sync::Mutex::new(None),
        })
    }

    /// Tells `observer` of the master in use now, then of every master the
    /// link moves to, each before the link uses it.
    pub(super) fn observe_masters(&self, observer: Box<dyn MasterObserver>) {
        let mut slot = self
            .observer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, m)) = self.current.get() {
            observer.using(&m.addr);
        }
        *slot = Some(observer);
    }

    /// Makes `master` the one in use, after telling the observer: from
    /// the moment a command can reach the new master, the session cache
    /// no longer trusts invalidation connections listening elsewhere
    /// (both the `+switch-master` move and a discovery after a failure or
    /// a re-check come through here).
    fn install(&self, master: Master) -> u64 {
        let observer = self
            .observer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(observer) = observer.as_ref() {
            observer.using(&master.addr);
        }
        self.current.install(master)
    }

    /// How long one discovery may take: a connection and an answer from a
    /// Sentinel, then from the master it names.
    fn discovery_limit(&self) -> Duration {
        2 * self.connect_and_answer_limit()
    }

    /// How long one server may take to accept a connection and answer.
    fn connect_and_answer_limit(&self) -> Duration {
        self.manager_config
            .connection_timeout()
            .unwrap_or(RECHECK_EVERY)
            + self
                .manager_config
                .response_timeout()
                .unwrap_or(RECHECK_EVERY)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The current master's connection, asking the Sentinels when there is
    /// none. The connection is opened eagerly so an unreachable "master" is
    /// never cached.
    async fn master(&self) -> RedisResult<(u64, ConnectionManager)> {
        if let Some((generation, m)) = self.current.get() {
            return Ok((generation, m.conn));
        }
        let mut sentinel = self.sentinel.lock().await;
        if let Some((generation, m)) = self.current.get() {
            return Ok((generation, m.conn));
        }
        let limit = self.discovery_limit();
        let client = sentinel.take_turn();
        let opened = tokio::time::timeout(limit, async {
            let client = client.async_get_client().await?;
            let addr: Arc<str> = client.get_connection_info().addr().to_string().into();
            let conn =
                ConnectionManager::new_with_config(client, self.manager_config.clone()).await?;
            Ok::<_, RedisError>((addr, conn))
        })
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "no Sentinel named a reachable master in time (the next try asks another Sentinel first)",
            )))
        });
        // The Sentinel client's error for a refused login does not say
        // whose, the Sentinels' or the data nodes': ask again, step by
        // step, to name the keys to fix. Only then: an unreachable Sentinel
        // is not asked twice.
        let (addr, conn) = match opened {
            Ok(opened) => opened,
            Err(e) if sentinels::refused(&e) => {
                return Err(match self.sentinels.refused_login().await {
                    Some(why) => {
                        RedisError::from((ErrorKind::AuthenticationFailed, "refused", why))
                    }
                    None => e,
                });
            }
            Err(e) => return Err(e),
        };
        let generation = self.install(Master {
            conn: conn.clone(),
            addr: Arc::clone(&addr),
        });
        self.confirmed_at
            .store(self.elapsed_ms(), Ordering::Relaxed);
        tracing::info!(master = %addr, "redis sentinel: connected to the current master");
        Ok((generation, conn))
    }

    /// Asks the Sentinels again, in the background, when the master in use
    /// was last named more than [`RECHECK_EVERY`] ago; one check at a time.
    fn recheck_when_due(self: &Arc<Self>) {
        let due = self
            .elapsed_ms()
            .saturating_sub(self.confirmed_at.load(Ordering::Relaxed))
            >= RECHECK_EVERY.as_millis() as u64;
        if !due || self.rechecking.swap(true, Ordering::AcqRel) {
            return;
        }
        let done = RecheckDone(Arc::clone(self));
        tokio::spawn(async move {
            done.0.recheck().await;
            drop(done);
        });
    }

    /// Drops the connection in use if the Sentinels name another master
    /// twice in a row (two Sentinels in turn, when several are
    /// configured); the next command then asks them again, and connects
    /// only to a master that answers `ROLE` as master. The question is
    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` on a kept connection, so a check
    /// opens no connection to the master nor to a Sentinel. Sentinels that
    /// cannot be asked change nothing: the connection's own failures say
    /// when it is no longer the master's. It does not take the discovery
    /// lock, so a re-check never makes a discovery wait behind it.
    async fn recheck(&self) {
        let Some((generation, in_use)) = self.current.get() else {
            return;
        };
        let named = {
            let mut kept = self.kept.lock().await;
            self.sentinels.ask(&mut kept).await
        };
        let Some(named) = named else {
            return;
        };
        let mut suspect = self
            .suspect
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if named_twice(&mut suspect, &in_use.addr, named) {
            self.forget(generation, "the sentinels name another master");
        }
    }

    /// Starts the `+switch-master` subscription unless one runs. One task
    /// per link, and so per process (the store's one link serves every
    /// worker): each process holds its own connection to the master, so
    /// each must hear the switch; a per-worker task would multiply
    /// subscriptions for nothing. Started by the first command rather than
    /// by [`SentinelLink::new`], since it needs a runtime, and the session
    /// cache's links (which only ask for the master's address) need none.
    /// The task holds the link weakly, so it never keeps it alive.
    fn watch_when_needed(self: &Arc<Self>) {
        if self.watching.load(Ordering::Acquire) || self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let done = WatchDone(Arc::downgrade(self));
        let link = Arc::downgrade(self);
        let sentinels = Arc::clone(&self.sentinels);
        let task = tokio::spawn(async move {
            let _done = done;
            let alive = || link.strong_count() > 0;
            sentinels
                .watch(alive, |to| {
                    let link = link.clone();
                    async move {
                        match link.upgrade() {
                            Some(link) => {
                                link.switch_to(to).await;
                                true
                            }
                            None => false,
                        }
                    }
                })
                .await;
        });
        let mut watchers = self
            .watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        watchers.retain(|w| !w.is_finished());
        watchers.push(task.abort_handle());
    }

    /// Moves the link to the master a `+switch-master` announced, at once.
    ///
    /// One message is enough, unlike the polled re-check's two answers: a
    /// Sentinel publishes `+switch-master` only when it adopts a new
    /// configuration for the master, either as the leader the quorum
    /// elected for the failover, once the promoted replica reported itself
    /// master, or on learning that leader's configuration, which carries a
    /// higher epoch than its own. It never publishes a move back to a
    /// master it merely has not heard is gone, which is what a lagging
    /// Sentinel's polled answer can be. The connection is opened before
    /// it replaces the one in use; if it cannot be, the one in use is
    /// dropped anyway (the event says it is not the master's), and the
    /// next command asks the Sentinels. Should the announced server not be
    /// a master after all, its `READONLY` refusal sends the command back to
    /// the Sentinels as for any demoted master.
    async fn switch_to(&self, to: Announced) {
        let addr: Arc<str> = to.key(self.sentinels.tls()).into();
        // No discovery runs meanwhile, so none can install the master it
        // was told of before the switch over this one.
        let _discovery = self.sentinel.lock().await;
        let in_use = self.current.get();
        if in_use.as_ref().is_some_and(|(_, m)| m.addr == addr) {
            return;
        }
        let limit = self.connect_and_answer_limit();
        let opened = match self.sentinels.master_client(&to) {
            Ok(client) => tokio::time::timeout(
                limit,
                ConnectionManager::new_with_config(client, self.manager_config.clone()),
            )
            .await
            .unwrap_or_else(|_| Err(RedisError::from((ErrorKind::Io, "timed out")))),
            Err(e) => Err(e),
        };
        // Only a server that says it is a master now: a late or replayed
        // announcement naming a replica would otherwise serve session reads
        // from it until the next write is refused.
        let opened = match opened {
            Ok(mut conn) => match tokio::time::timeout(
                limit,
                redis::cmd("ROLE").query_async::<Value>(&mut conn),
            )
            .await
            {
                Ok(Ok(role)) if says_master(&role) => Ok(conn),
                Ok(Ok(_)) => Err(RedisError::from((
                    ErrorKind::Client,
                    "the announced server is not a master",
                ))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(RedisError::from((ErrorKind::Io, "timed out"))),
            },
            Err(e) => Err(e),
        };
        match opened {
            Ok(conn) => {
                self.install(Master {
                    conn,
                    addr: Arc::clone(&addr),
                });
                *self
                    .suspect
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                self.confirmed_at
                    .store(self.elapsed_ms(), Ordering::Relaxed);
                tracing::info!(master = %addr, "redis sentinel: +switch-master: moved to the new master");
            }
            Err(e) => {
                tracing::warn!(master = %addr, error = %e, "redis sentinel: cannot connect to the master +switch-master announced");
                if let Some((generation, _)) = in_use {
                    self.forget(generation, "+switch-master named another master");
                }
            }
        }
    }

    /// The master the next Sentinel in turn names now (`host:port`, as
    /// `redis::ConnectionAddr` prints it), asked on a kept connection: the
    /// session cache's invalidation connections check each second that
    /// they still follow it without opening a connection to it (what
    /// [`Self::master_client`] does, to check its `ROLE`). `None` when no
    /// Sentinel answered.
    pub(super) async fn named_master(&self) -> Option<String> {
        let mut kept = self.kept.lock().await;
        self.sentinels.ask(&mut kept).await
    }

    /// A client of the master the Sentinels name now, asked afresh: the
    /// session cache's invalidation connection follows it.
    pub(super) async fn master_client(&self) -> RedisResult<redis::Client> {
        let limit = self.discovery_limit();
        let mut sentinel = self.sentinel.lock().await;
        tokio::time::timeout(limit, sentinel.take_turn().async_get_client())
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from((
                    ErrorKind::Io,
                    "no Sentinel named the master in time",
                )))
            })
    }

    /// A client of the master at `addr` (`host:port`, as a store's link
    /// announced it to its [`MasterObserver`]), logged in as the data
    /// nodes are: the session cache's invalidation connection goes where
    /// the store went, without asking the Sentinels (the link already
    /// checked that it is a master).
    pub(super) fn client_at(&self, addr: &str) -> RedisResult<redis::Client> {
        addr.rsplit_once(':')
            .and_then(|(host, port)| Announced::checked(host, port))
            .ok_or_else(|| RedisError::from((ErrorKind::Client, "not a host:port address")))
            .and_then(|at| self.sentinels.master_client(&at))
    }

    /// Drops connection `generation` if it is still the current one.
    fn forget(&self, generation: u64, why: &str) {
        if self.current.forget(generation) {
            tracing::warn!(
                why,
                "redis sentinel: asking the sentinels for the master again"
            );
        }
    }

    async fn command(self: &Arc<Self>, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.master().await?;
        self.recheck_when_due();
        self.watch_when_needed();
        let result = watched(
            generation,
            self.manager_config.response_timeout(),
            conn.req_packed_command(cmd),
            |g| {
                self.forget(
                    g,
                    "a command got no complete answer within the store timeout",
                )
            },
        )
        .await;
        let sign = match &result {
            Ok(value) => refusal(value),
            Err(e) => failure(e),
        };
        match sign {
            None => result,
            Some(Sign::Refused(why)) => {
                self.forget(generation, why);
                let (_, mut conn) = self.master().await?;
                conn.req_packed_command(cmd).await
            }
            Some(Sign::Broken(why)) => {
                self.forget(generation, why);
                if reads_only(cmd) {
                    // Safe to repeat: a session lookup survives a planned
                    // failover instead of failing with 503.
                    let (_, mut conn) = self.master().await?;
                    return conn.req_packed_command(cmd).await;
                }
                result
            }
        }
    }

    async fn pipeline(
        self: &Arc<Self>,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.master().await?;
        self.recheck_when_due();
        self.watch_when_needed();
        let result = watched(
            generation,
            self.manager_config.response_timeout(),
            conn.req_packed_commands(pipeline, offset, count),
            |g| {
                self.forget(
                    g,
                    "a command got no complete answer within the store timeout",
                )
            },
        )
        .await;
        let sign = match &result {
            Ok(values) => values.iter().find_map(refusal),
            Err(e) => failure(e),
        };
        if let Some(Sign::Refused(why) | Sign::Broken(why)) = sign {
            self.forget(generation, why);
        }
        result
    }
}

enum Sign {
    /// The server refused the command without running it: retry elsewhere.
    Refused(&'static str),
    /// The connection failed: the command may or may not have run.
    Broken(&'static str),
}

/// Whether `cmd` only reads, so running it twice changes nothing.
/// Whether a `ROLE` answer is a master's (`["master", offset, replicas]`).
fn says_master(role: &Value) -> bool {
    match role {
        Value::Array(items) => match items.first() {
            Some(Value::BulkString(b)) => b.as_slice() == b"master",
            Some(Value::SimpleString(s)) => s == "master",
            _ => false,
        },
        _ => false,
    }
}

fn reads_only(cmd: &Cmd) -> bool {
    named(
        cmd,
        &[
            b"GET", b"HGET", b"HMGET", b"EXISTS", b"ZCARD", b"ZRANGE", b"SCAN", b"PING", b"INFO",
        ],
    )
}

/// Server errors by which a server says it is no longer the master; the
/// command did not run.
fn not_master(kind: ServerErrorKind) -> Option<Sign> {
    match kind {
        ServerErrorKind::ReadOnly => Some(Sign::Refused("READONLY: now a replica")),
        ServerErrorKind::MasterDown => Some(Sign::Refused("MASTERDOWN")),
        _ => None,
    }
}

/// A reply by which a server says it is no longer the master.
fn refusal(value: &Value) -> Option<Sign> {
    match value {
        Value::ServerError(e) => e.kind().and_then(not_master),
        _ => None,
    }
}

/// An error that says the master is gone or answers as a replica.
fn failure(e: &RedisError) -> Option<Sign> {
    match e.kind() {
        ErrorKind::Server(kind) => not_master(kind),
        _ if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
            Some(Sign::Broken("connection to the master failed"))
        }
        _ => None,
    }
}

impl Link {
    /// Replaces the connection in use (fixed server, Sentinel's master)
    /// after a reply the command never gets: a value of another type, or
    /// a script's answer it never gives. Such a reply comes from a server
    /// or a proxy in front of it that lost track of which reply belongs
    /// to which command (a desynchronised connection answers every later
    /// command with an earlier one's reply) or that answers garbage:
    /// either way the connection is not kept. On a cluster, the cluster
    /// connection (one per node, none replaceable alone) is replaced.
    pub fn distrust(&self, why: &str) {
        match self {
            Link::Fixed(link) => {
                if let Some((generation, _)) = link.current.get()
                    && link.current.forget(generation)
                {
                    tracing::warn!(
                        why,
                        "redis: an unexpected reply; the connection is replaced"
                    );
                }
            }
            Link::Sentinel(link) => {
                if let Some((generation, _)) = link.current.get() {
                    link.forget(generation, why);
                }
            }
            Link::Cluster(link) => link.distrust(why),
        }
    }

    /// Every server that may hold keys: the one server, or each primary of
    /// a cluster, with slots or importing one (keyless commands such as
    /// SCAN must visit all of them).
    pub async fn masters(&self) -> RedisResult<Vec<Node>> {
        match self {
            Link::Fixed(_) | Link::Sentinel(_) => Ok(vec![Node::The]),
            Link::Cluster(link) => link.masters().await,
        }
    }

    /// Runs a command that names no key on `node`.
    pub async fn on_node<T: redis::FromRedisValue>(
        &self,
        node: &Node,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        let value = match (self, node) {
            (
                Link::Cluster(link),
                Node::Primary {
                    host,
                    port,
                    serves_slots,
                },
            ) => link.on_node(host, *port, *serves_slots, cmd).await?,
            _ => self.clone().req_packed_command(cmd).await?,
        };
        Ok(redis::from_redis_value(value)?)
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Fixed(link) => Box::pin(link.command(cmd)),
            Link::Sentinel(link) => Box::pin(link.command(cmd)),
            Link::Cluster(link) => Box::pin(link.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Fixed(link) => Box::pin(link.pipeline(pipeline, offset, count)),
            Link::Sentinel(link) => Box::pin(link.pipeline(pipeline, offset, count)),
            Link::Cluster(link) => Box::pin(link.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Fixed(link) => link.db,
            Link::Sentinel(link) => link.db,
            // A cluster has only database 0 (`store.db` is checked).
            Link::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_role_answer_of_master_is_a_master() {
        let role = |first: Value| Value::Array(vec![first, Value::Int(0), Value::Array(vec![])]);
        assert!(says_master(&role(Value::BulkString(b"master".to_vec()))));
        assert!(says_master(&role(Value::SimpleString("master".into()))));
        assert!(!says_master(&role(Value::BulkString(b"slave".to_vec()))));
        assert!(!says_master(&role(Value::BulkString(b"sentinel".to_vec()))));
        assert!(!says_master(&Value::Nil));
        assert!(!says_master(&Value::Array(vec![])));
    }

    #[test]
    fn only_reads_are_repeated_after_a_broken_connection() {
        assert!(reads_only(redis::cmd("HGET").arg("k").arg("r")));
        assert!(reads_only(&redis::cmd("ping")));
        assert!(!reads_only(redis::cmd("SET").arg("k").arg("v")));
        assert!(!reads_only(redis::cmd("GETDEL").arg("k")));
        assert!(!reads_only(redis::cmd("EVALSHA").arg("0123").arg(0)));
    }

    #[test]
    fn readonly_and_masterdown_replies_mean_ask_sentinel_again() {
        let readonly =
            redis::parse_redis_value(b"-READONLY You can't write against a read only replica.\r\n")
                .expect("a RESP error reply");
        assert!(matches!(refusal(&readonly), Some(Sign::Refused(_))));
        assert!(refusal(&redis::Value::Okay).is_none());
    }

    /// Records, for each master it is told of, the master the link had
    /// in use at that moment.
    #[derive(Default)]
    struct Told {
        link: std::sync::OnceLock<Weak<SentinelLink>>,
        seen: std::sync::Mutex<Vec<(String, Option<String>)>>,
    }

    struct Observer(Arc<Told>);

    impl MasterObserver for Observer {
        fn using(&self, addr: &str) {
            let in_use = self
                .0
                .link
                .get()
                .and_then(Weak::upgrade)
                .and_then(|link| link.current.get())
                .map(|(_, m)| m.addr.to_string());
            self.0
                .seen
                .lock()
                .expect("not poisoned")
                .push((addr.to_owned(), in_use));
        }
    }

    fn unconnected_master(addr: &str) -> Master {
        let conn = redis::Client::open("redis://127.0.0.1:1")
            .expect("client")
            .get_connection_manager_lazy(ConnectionManagerConfig::new())
            .expect("a lazy connection manager");
        Master {
            conn,
            addr: addr.into(),
        }
    }

    #[tokio::test]
    async fn the_observer_is_told_of_each_master_before_the_link_uses_it() {
        let sentinel = SentinelConfig {
            nodes: vec![("127.0.0.1".to_owned(), 1)],
            master: "sessions".to_owned(),
            username: None,
            password: None,
            tls: false,
        };
        let data = RedisConfig {
            endpoint: crate::config::RedisEndpoint::Sentinel(sentinel.clone()),
            username: None,
            password: None,
            db: 0,
            connect_timeout: Duration::from_secs(1),
            tls_ca_pem: None,
            tls_client: None,
        };
        let link = Arc::new(
            SentinelLink::new(&sentinel, &data, None, ConnectionManagerConfig::new())
                .expect("link"),
        );
        let told = Arc::new(Told::default());
        let _ = told.link.set(Arc::downgrade(&link));
        link.observe_masters(Box::new(Observer(Arc::clone(&told))));
        link.install(unconnected_master("10.0.0.1:6379"));
        link.install(unconnected_master("10.0.0.2:6379"));
        assert_eq!(
            *told.seen.lock().expect("not poisoned"),
            [
                ("10.0.0.1:6379".to_owned(), None),
                ("10.0.0.2:6379".to_owned(), Some("10.0.0.1:6379".to_owned())),
            ],
            "each master announced while the one before was still in use"
        );
        // An observer set later (a reload's) hears of the master in use at
        // once.
        let later = Arc::new(Told::default());
        link.observe_masters(Box::new(Observer(Arc::clone(&later))));
        assert_eq!(
            *later.seen.lock().expect("not poisoned"),
            [("10.0.0.2:6379".to_owned(), None)]
        );
    }

    #[test]
    fn the_link_moves_only_when_two_rechecks_in_a_row_name_the_same_other_master() {
        let mut suspect = None;
        let named = |s: &str| s.to_owned();
        // The master in use named: nothing to do.
        assert!(!named_twice(&mut suspect, "b:6379", named("b:6379")));
        // One Sentinel lagging behind a failover names the old master once.
        assert!(!named_twice(&mut suspect, "b:6379", named("a:6379")));
        // The next check names the master in use again: the suspect is
        // forgotten, so a later single answer does not move the link.
        assert!(!named_twice(&mut suspect, "b:6379", named("b:6379")));
        assert!(!named_twice(&mut suspect, "b:6379", named("a:6379")));
        // Two different other masters in a row: still no move.
        assert!(!named_twice(&mut suspect, "b:6379", named("c:6379")));
        // The same other master twice in a row: move.
        assert!(named_twice(&mut suspect, "b:6379", named("c:6379")));
        assert_eq!(suspect, None);
    }
}
