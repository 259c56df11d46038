//! Which Redis server the store talks to: one fixed server, whichever
//! server Redis Sentinel names as master right now, or a Redis Cluster.
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
//! other gets the error (a 503). [`Link::Cluster`] leaves topology to the
//! cluster client; commands that name no key (SCAN, INFO) are sent to each
//! primary in turn by [`Link::on_node`] over [`Link::primaries`]. The
//! cluster client can wedge during a failover (every command of every slot
//! times out while a new connection works), so [`ClusterLink`] watches for
//! commands of several slots timing out in a row and then opens a new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, TlsCertificates, TlsMode, Value,
};

use crate::config::{RedisConfig, SentinelConfig};

/// A cheap-to-clone handle that runs commands on the right server.
#[derive(Clone)]
pub enum Link {
    Fixed(ConnectionManager),
    Sentinel(Arc<SentinelLink>),
    Cluster(Arc<ClusterLink>),
}

/// One server to send a keyless command to: the one server of a fixed or
/// Sentinel link, or one primary of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    The,
    Primary { host: String, port: u16 },
}

/// A Redis Cluster. The cluster client follows slot moves and failovers by
/// itself; this opens it lazily (so the gateway starts while Redis is
/// down), sends the commands that name no key to the node asked for, and
/// replaces a connection that has wedged.
///
/// Why the replacement: after a primary was killed under load (64 lookups
/// at a time), the connection that lived through the failover timed out on
/// every slot for the rest of the run while a fresh one found every session
/// (`store_cluster::killing_a_primary_under_load_loses_no_session_its_replica_held`).
/// The likely cause, from reading redis-rs 1.8 (not traced): one task drives
/// each cluster connection and neither dispatches nor polls requests while
/// it refreshes the slot map, and the refresh needs the connection map's
/// write lock; a request or node repair queued for that lock before the
/// refresh began is granted it but never polled again, so the refresh, and
/// every command after it, waits for ever.
pub struct ClusterLink {
    client: ClusterClient,
    /// The connection in use and its generation, so that stalls seen on a
    /// replaced connection do not condemn its successor.
    current: RwLock<Option<(u64, ClusterConnection)>>,
    /// Held while one task opens a connection, so concurrent requests wait
    /// for it instead of each opening their own.
    opening: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    health: Mutex<Health>,
    /// How long opening a connection may take (connect, then the slot map).
    open_within: Duration,
    /// A command pending this long and then abandoned by its caller (the
    /// store's timeout) counts as stalled.
    stall_after: Duration,
    /// At most one replacement per this long.
    replace_every: Duration,
}

/// Consecutive stalled commands on the current connection, with no answer
/// (of any kind, errors included) in between.
#[derive(Default)]
struct Health {
    generation: u64,
    stalls: u32,
    /// The slots those commands were for (`None`: no key); a few suffice.
    slots: Vec<Option<Route>>,
    replaced: Option<Instant>,
}

/// How many commands must stall in a row, over at least [`STALLED_SLOTS`]
/// slots, before the connection is replaced. One slow or dead node cannot
/// cause that: commands of the other slots are answered in between and reset
/// the count; and a node that stays unreachable is no better through a new
/// connection.
const STALLS_IN_A_ROW: u32 = 3;
const STALLED_SLOTS: usize = 2;

impl Health {
    /// Counts one stalled command for `slot`; `Some(stalls)` when the
    /// connection is to be replaced now (and the count starts again).
    fn stall(&mut self, slot: Option<Route>, replace_every: Duration) -> Option<u32> {
        self.stalls += 1;
        if !self.slots.contains(&slot) && self.slots.len() < STALLED_SLOTS {
            self.slots.push(slot);
        }
        if self.stalls < STALLS_IN_A_ROW
            || self.slots.len() < STALLED_SLOTS
            || self.replaced.is_some_and(|at| at.elapsed() < replace_every)
        {
            return None;
        }
        let stalls = self.stalls;
        self.replaced = Some(Instant::now());
        self.stalls = 0;
        self.slots.clear();
        Some(stalls)
    }
}

impl ClusterLink {
    /// `timeouts` are (connect, response); `certificates` apply when `tls`.
    pub fn new(
        nodes: &[(String, u16)],
        tls: bool,
        data_nodes: &RedisConfig,
        certificates: Option<TlsCertificates>,
        timeouts: (Duration, Duration),
    ) -> RedisResult<Self> {
        let seeds: Vec<ConnectionInfo> = nodes
            .iter()
            .map(|(host, port)| address(host, *port, tls).into_connection_info())
            .collect::<RedisResult<_>>()?;
        let mut builder = ClusterClientBuilder::new(seeds)
            .connection_timeout(timeouts.0)
            .response_timeout(timeouts.1)
            // The client's defaults retry 16 times with waits of seconds to
            // minutes: past the store timeout, so a failover would leave
            // requests queued behind retries nobody waits for. A few quick
            // retries ride out a slot move or a promotion.
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500);
        if tls {
            builder = builder.tls(TlsMode::Secure);
            if let Some(certs) = certificates {
                builder = builder.certs(certs);
            }
        }
        if let Some(user) = &data_nodes.username {
            builder = builder.username(user);
        }
        if let Some(pw) = &data_nodes.password {
            builder = builder.password(pw.expose());
        }
        Ok(Self {
            client: builder.build()?,
            current: RwLock::new(None),
            opening: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
            open_within: timeouts.0 + timeouts.1,
            stall_after: timeouts.1 * 3 / 4,
            replace_every: timeouts.1.max(Duration::from_secs(1)),
        })
    }

    fn cached(&self) -> Option<(u64, ClusterConnection)> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The connection in use, opening one when there is none (at the first
    /// command, and after a wedged one was dropped).
    async fn connection(&self) -> RedisResult<(u64, ClusterConnection)> {
        if let Some(found) = self.cached() {
            return Ok(found);
        }
        let _opening = self.opening.lock().await;
        if let Some(found) = self.cached() {
            return Ok(found);
        }
        // Bounded: the client's own initial connect has no overall limit.
        let conn = tokio::time::timeout(self.open_within, self.client.get_async_connection())
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "opening the cluster connection timed out",
                ))
            })??;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((generation, conn.clone()));
        tracing::info!(generation, "redis cluster: connected");
        Ok((generation, conn))
    }

    /// Runs `op` on the current connection and tells [`Self::health`] how
    /// it went: answered, timed out, or abandoned by its caller after
    /// [`Self::stall_after`].
    async fn watched<T, F>(
        &self,
        slot: Option<Route>,
        op: impl FnOnce(ClusterConnection) -> F,
    ) -> RedisResult<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let (generation, conn) = self.connection().await?;
        let mut watch = Watch {
            link: self,
            generation,
            slot,
            started: Instant::now(),
            finished: false,
        };
        let result = op(conn).await;
        watch.finished = true;
        match &result {
            Err(e) if e.is_timeout() => self.stalled(generation, slot),
            _ => self.answered(generation),
        }
        result
    }

    fn answered(&self, generation: u64) {
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if health.generation == generation {
            health.stalls = 0;
            health.slots.clear();
        }
    }

    /// Counts a stalled command; drops the connection (the next command
    /// opens a new one) once enough have stalled in a row over several
    /// slots, at most once per [`Self::replace_every`].
    fn stalled(&self, generation: u64, slot: Option<Route>) {
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if health.generation != generation {
            if self.cached().is_none_or(|(g, _)| g != generation) {
                return; // a connection already replaced
            }
            *health = Health {
                generation,
                replaced: health.replaced,
                ..Health::default()
            };
        }
        let Some(stalls) = health.stall(slot, self.replace_every) else {
            return;
        };
        drop(health);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
            drop(current);
            tracing::warn!(
                generation,
                stalls,
                "redis cluster: commands of several slots timed out in a row; \
                 opening a new cluster connection"
            );
        }
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        self.watched(slot_of(cmd), |mut conn| async move {
            conn.req_packed_command(cmd).await
        })
        .await
    }

    /// The primaries serving slots now, from `CLUSTER NODES` of any node.
    pub(super) async fn primaries(&self) -> RedisResult<Vec<Node>> {
        let value = self
            .watched(None, |mut conn| async move {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                conn.route_command(redis::cmd("CLUSTER").arg("NODES").clone(), route)
                    .await
            })
            .await?;
        let text: String = redis::from_redis_value(value)?;
        Ok(primaries_in(&text))
    }

    async fn on_node(&self, host: &str, port: u16, cmd: &Cmd) -> RedisResult<Value> {
        self.watched(None, |mut conn| async move {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.to_owned(),
                port,
            });
            conn.route_command(cmd.clone(), route).await
        })
        .await
    }

    async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let slot = pipeline.cmd_iter().next().and_then(slot_of);
        self.watched(slot, |mut conn| async move {
            conn.req_packed_commands(pipeline, offset, count).await
        })
        .await
    }
}

/// One command in flight on a cluster connection; if its caller drops it
/// (the store's timeout) after [`ClusterLink::stall_after`], it stalled.
struct Watch<'a> {
    link: &'a ClusterLink,
    generation: u64,
    slot: Option<Route>,
    started: Instant,
    finished: bool,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.finished && self.started.elapsed() >= self.link.stall_after {
            self.link.stalled(self.generation, self.slot);
        }
    }
}

/// The slot of a command's first key: the argument after the name, or for
/// scripts (`EVAL`, `EVALSHA`, `FCALL`) the first of `KEYS`. `None` for a
/// command without keys.
fn slot_of(cmd: &Cmd) -> Option<Route> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .take(4)
        .filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let key = if named(
        cmd,
        &[b"EVAL", b"EVALSHA", b"FCALL", b"EVAL_RO", b"EVALSHA_RO"],
    ) {
        let keys: u32 = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
        if keys == 0 {
            return None;
        }
        args.get(3)?
    } else {
        args.get(1)?
    };
    Some(Route::with_key(key, SlotAddr::Master))
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

/// The primaries in a `CLUSTER NODES` answer that serve slots and are not
/// marked failed: `<id> <host:port@cport[,hostname]> <flags> <primary>
/// <ping> <pong> <epoch> <state> <slot ranges...>`.
fn primaries_in(text: &str) -> Vec<Node> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
            continue;
        }
        if fields.len() < 9 {
            continue; // a primary without slots holds no keys
        }
        let addr = addr.split(['@', ',']).next().unwrap_or_default();
        if let Some((host, port)) = addr.rsplit_once(':')
            && let Ok(port) = port.parse()
        {
            out.push(Node::Primary {
                host: host.to_owned(),
                port,
            });
        }
    }
    out
}

pub struct SentinelLink {
    /// Asks the Sentinels; locked while one task (re)discovers the master so
    /// concurrent requests do not all query the Sentinels at once.
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The current master's connection and a generation number, so a
    /// request holding an old connection cannot discard a newer one.
    current: RwLock<Option<(u64, ConnectionManager)>>,
    generations: AtomicU64,
    manager_config: ConnectionManagerConfig,
    db: i64,
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
        let nodes = sentinel
            .nodes
            .iter()
            .map(|(host, port)| address(host, *port, sentinel.tls));
        let mut builder =
            SentinelClientBuilder::new(nodes, &sentinel.master, SentinelServerType::Master)?
                .set_client_to_redis_db(data_nodes.db);
        if sentinel.tls {
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(certs) = certificates {
                builder = builder
                    .set_client_to_sentinel_certificates(certs.clone())
                    .set_client_to_redis_certificates(certs);
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
        Ok(Self {
            sentinel: tokio::sync::Mutex::new(builder.build()?),
            current: RwLock::new(None),
            generations: AtomicU64::new(0),
            manager_config,
            db: data_nodes.db,
        })
    }

    fn cached(&self) -> Option<(u64, ConnectionManager)> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The current master's connection, asking the Sentinels when there is
    /// none. The connection is opened eagerly so an unreachable "master" is
    /// never cached.
    async fn master(&self) -> RedisResult<(u64, ConnectionManager)> {
        if let Some(found) = self.cached() {
            return Ok(found);
        }
        let mut sentinel = self.sentinel.lock().await;
        if let Some(found) = self.cached() {
            return Ok(found);
        }
        let client = sentinel.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        let conn = ConnectionManager::new_with_config(client, self.manager_config.clone()).await?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((generation, conn.clone()));
        tracing::info!(master = %addr, "redis sentinel: connected to the current master");
        Ok((generation, conn))
    }

    /// A client of the master the Sentinels name now, asked afresh: the
    /// session cache's invalidation connection follows it.
    pub(super) async fn master_client(&self) -> RedisResult<redis::Client> {
        self.sentinel.lock().await.async_get_client().await
    }

    /// Drops connection `generation` if it is still the current one.
    fn forget(&self, generation: u64, why: &str) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
            drop(current);
            tracing::warn!(
                why,
                "redis sentinel: asking the sentinels for the master again"
            );
        }
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.master().await?;
        let result = conn.req_packed_command(cmd).await;
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
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.master().await?;
        let result = conn.req_packed_commands(pipeline, offset, count).await;
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
    /// Every server that holds keys: the one server, or each primary of a
    /// cluster (keyless commands such as SCAN must visit all of them).
    pub async fn primaries(&self) -> RedisResult<Vec<Node>> {
        match self {
            Link::Fixed(_) | Link::Sentinel(_) => Ok(vec![Node::The]),
            Link::Cluster(link) => link.primaries().await,
        }
    }

    /// Runs a command that names no key on `node`.
    pub async fn on_node<T: redis::FromRedisValue>(
        &self,
        node: &Node,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        let value = match (self, node) {
            (Link::Cluster(link), Node::Primary { host, port }) => {
                link.on_node(host, *port, cmd).await?
            }
            _ => self.clone().req_packed_command(cmd).await?,
        };
        Ok(redis::from_redis_value(value)?)
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Fixed(conn) => conn.req_packed_command(cmd),
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
            Link::Fixed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(link) => Box::pin(link.pipeline(pipeline, offset, count)),
            Link::Cluster(link) => Box::pin(link.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Fixed(conn) => conn.get_db(),
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
    fn only_reads_are_repeated_after_a_broken_connection() {
        assert!(reads_only(redis::cmd("HGET").arg("k").arg("r")));
        assert!(reads_only(&redis::cmd("ping")));
        assert!(!reads_only(redis::cmd("SET").arg("k").arg("v")));
        assert!(!reads_only(redis::cmd("GETDEL").arg("k")));
        assert!(!reads_only(redis::cmd("EVALSHA").arg("0123").arg(0)));
    }

    #[test]
    fn a_cluster_connection_is_replaced_after_commands_of_several_slots_stall_in_a_row() {
        let (a, b) = (
            slot_of(redis::cmd("HGET").arg("s:{aa}1").arg("r")),
            slot_of(redis::cmd("GET").arg("s:{bb}2")),
        );
        assert_ne!(a, b);
        let every = Duration::from_secs(60);
        let mut health = Health::default();
        // One slot alone (a dead node whose slots wait for a promotion) is
        // no reason: a new connection would wait for it too.
        for _ in 0..5 {
            assert_eq!(health.stall(a, every), None);
        }
        assert_eq!(health.stall(b, every), Some(6));
        // Then at most once per `every`.
        for slot in [a, b, a, b] {
            assert_eq!(health.stall(slot, every), None);
        }
        let mut health = Health::default();
        assert_eq!(health.stall(a, Duration::ZERO), None);
        assert_eq!(health.stall(None, Duration::ZERO), None);
        assert_eq!(health.stall(a, Duration::ZERO), Some(3));
    }

    #[test]
    fn a_commands_slot_is_that_of_its_first_key() {
        let key = "oidc-bff:s:{3fa2}abc";
        let expected = Some(Route::with_key("3fa2", SlotAddr::Master));
        assert_eq!(slot_of(redis::cmd("HGET").arg(key).arg("r")), expected);
        assert_eq!(
            slot_of(redis::cmd("EVALSHA").arg("0123").arg(2).arg(key).arg("x")),
            expected
        );
        assert_eq!(slot_of(redis::cmd("EVALSHA").arg("0123").arg(0)), None);
        assert_eq!(slot_of(&redis::cmd("PING")), None);
    }

    #[test]
    fn keyless_commands_visit_every_primary_that_serves_slots() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002,node-c master - 0 0 3 connected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 127.0.0.1:7004@17004 master,fail - 0 0 4 disconnected 1-2
f6 127.0.0.1:7005@17005 master - 0 0 5 connected
";
        let ports: Vec<u16> = primaries_in(nodes)
            .into_iter()
            .map(|n| match n {
                Node::Primary { port, .. } => port,
                Node::The => 0,
            })
            .collect();
        assert_eq!(ports, [7000, 7001, 7002]);
    }

    #[test]
    fn readonly_and_masterdown_replies_mean_ask_sentinel_again() {
        let readonly =
            redis::parse_redis_value(b"-READONLY You can't write against a read only replica.\r\n")
                .expect("a RESP error reply");
        assert!(matches!(refusal(&readonly), Some(Sign::Refused(_))));
        assert!(refusal(&redis::Value::Okay).is_none());
    }
}
