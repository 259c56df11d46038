//! The Redis Cluster link: the cluster client opened lazily and replaced
//! when it wedges (stalls counted per primary, from the slot map), when
//! one node's connection is stuck behind a reply that never ends (the node
//! answers a connection of its own meanwhile), or when a node's reply says
//! the connection lost track of which reply is whose; and the
//! keyless commands sent to a node of one's choice; a refused login or
//! ACL right told apart, with the keys to fix, when the connection cannot
//! be opened. Knows nothing of sessions; `redis_link` dispatches to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisResult, TlsCertificates,
    TlsMode, Value,
};

use super::sentinels::refused;
use super::{Node, address, named};
use crate::config::RedisConfig;
use crate::secret::SecretString;

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
    current: super::Current<ClusterConnection>,
    /// Set while a task opens a connection: one at a time, in a task of its
    /// own, so a caller that gives up (the store's timeout) does not cancel
    /// it and leave the link with none; concurrent callers wait for it.
    opening: AtomicBool,
    /// Counts finished attempts to open a connection, with the last one's
    /// error: what waiting callers watch.
    attempts: tokio::sync::watch::Sender<Attempt>,
    health: Mutex<Health>,
    /// Which primary serves which slots, from `CLUSTER NODES` at each
    /// opening and each [`Self::masters`]: stalls are counted per node.
    owners: RwLock<SlotOwners>,
    /// How long opening a connection may take (connect, then the slot map).
    open_within: Duration,
    /// The response timeout: a command unanswered this long (or abandoned
    /// by its caller, the store's timeout, after nearly this long) stalled
    /// (see [`super::watched`]).
    respond_within: Duration,
    /// When a node whose command stalled was last asked whether it answers
    /// a connection of its own (see [`Self::check_node`]).
    node_checked: Mutex<Option<Instant>>,
    /// At most one replacement per this long.
    replace_every: Duration,
    /// How to log in to a seed node on a connection of its own, to tell a
    /// refused login from other failures (see [`Seeds::refused_login`]).
    seeds: Seeds,
    /// Connections of their own to primaries that serve no slot, by
    /// address (see [`Self::spare`]); one dropped when it fails.
    spares: Mutex<HashMap<(String, u16), MultiplexedConnection>>,
}

/// The seed nodes and the login the cluster client uses on them.
struct Seeds {
    nodes: Vec<(String, u16)>,
    tls: bool,
    certificates: Option<TlsCertificates>,
    username: Option<String>,
    password: Option<SecretString>,
    /// Connect and response timeout of each look.
    timeouts: (Duration, Duration),
}

/// A finished attempt to open the cluster connection.
#[derive(Clone, Default)]
struct Attempt {
    count: u64,
    error: Option<RedisError>,
}

/// Consecutive stalled commands on the current connection, with no answer
/// (of any kind, errors included) in between.
#[derive(Default)]
struct Health {
    generation: u64,
    stalls: u32,
    /// The nodes those commands were for; a few suffice.
    nodes: Vec<NodeOf>,
    replaced: Option<Instant>,
}

/// The node a stalled command was for: the primary serving its slot, or
/// the slot itself while the slot map is unknown (then two slots of one
/// node count as two nodes, as before the map was kept).
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeOf {
    Primary(Arc<str>),
    Slot(u16),
}

/// How many commands must stall in a row, over at least [`STALLED_NODES`]
/// primaries, before the connection is replaced. One slow or dead node
/// cannot cause that, however many of its slots the stalled commands were
/// for (during a failover all of them wait for the promotion): commands of
/// the other nodes are answered in between and reset the count; and a node
/// that stays unreachable is no better through a new connection. Commands
/// without a key are not counted: they say nothing of a node.
const STALLS_IN_A_ROW: u32 = 3;
const STALLED_NODES: usize = 2;

impl Health {
    /// Counts one stalled command for a key of `node`; `Some(stalls)` when
    /// the connection is to be replaced now (and the count starts again).
    fn stall(&mut self, node: NodeOf, now: Instant, replace_every: Duration) -> Option<u32> {
        self.stalls += 1;
        if !self.nodes.contains(&node) && self.nodes.len() < STALLED_NODES {
            self.nodes.push(node);
        }
        if self.stalls < STALLS_IN_A_ROW
            || self.nodes.len() < STALLED_NODES
            || self
                .replaced
                .is_some_and(|at| now.saturating_duration_since(at) < replace_every)
        {
            return None;
        }
        let stalls = self.stalls;
        self.replaced = Some(now);
        self.stalls = 0;
        self.nodes.clear();
        Some(stalls)
    }
}

/// An opening task's end, however it ends: the next opening is allowed and
/// the callers waiting for this one are told (a task that panicked or was
/// dropped with its runtime must not leave them waiting for the store's
/// timeout on every later command).
struct Opening {
    link: Arc<ClusterLink>,
    /// `Some` once the attempt finished: its error, if any.
    error: Option<Option<RedisError>>,
}

impl Opening {
    fn finished(mut self, error: Option<RedisError>) {
        self.error = Some(error);
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        let error = self.error.take().unwrap_or_else(|| {
            Some(RedisError::from(std::io::Error::other(
                "opening the cluster connection ended early",
            )))
        });
        self.link.opening.store(false, Ordering::SeqCst);
        self.link.attempts.send_modify(|a| {
            a.count += 1;
            a.error = error;
        });
    }
}

/// Slot ranges and the primary (`host:port`) serving each, sorted.
#[derive(Default)]
struct SlotOwners {
    ranges: Vec<(u16, u16, Arc<str>)>,
    /// How many primaries serve slots. With fewer than [`STALLED_NODES`],
    /// stalls count per slot, as before the map was kept: a wedged
    /// connection to a one-primary cluster must still be replaced.
    primaries: usize,
}

impl SlotOwners {
    /// From a `CLUSTER NODES` answer: the slot ranges of the primaries not
    /// marked failed (single slots, `a-b` ranges; `[…]` migration entries
    /// skipped).
    fn parse(text: &str) -> Self {
        let mut ranges = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !flags.split(',').any(|f| f == "master")
                || flags.split(',').any(|f| f.starts_with("fail"))
            {
                continue;
            }
            let node: Arc<str> = addr.split(['@', ',']).next().unwrap_or_default().into();
            for range in fields.iter().skip(8) {
                if range.starts_with('[') {
                    continue;
                }
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    ranges.push((a, b, node.clone()));
                }
            }
        }
        ranges.sort_by_key(|r| r.0);
        let mut nodes: Vec<&Arc<str>> = ranges.iter().map(|r| &r.2).collect();
        nodes.sort();
        nodes.dedup();
        let primaries = nodes.len();
        Self { ranges, primaries }
    }

    /// The node serving `slot`, or the slot itself when the map has none.
    fn node_of(&self, slot: u16) -> NodeOf {
        if self.primaries < STALLED_NODES {
            return NodeOf::Slot(slot);
        }
        let i = self.ranges.partition_point(|r| r.0 <= slot);
        match i.checked_sub(1).map(|i| &self.ranges[i]) {
            Some((_, end, node)) if slot <= *end => NodeOf::Primary(node.clone()),
            _ => NodeOf::Slot(slot),
        }
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
            if let Some(certs) = &certificates {
                builder = builder.certs(certs.clone());
            }
        }
        if let Some(user) = &data_nodes.username {
            builder = builder.username(user);
        }
        if let Some(pw) = &data_nodes.password {
            builder = builder.password(pw.expose());
        }
        let seeds = Seeds {
            nodes: nodes.to_vec(),
            tls,
            certificates: certificates.filter(|_| tls),
            username: data_nodes.username.clone(),
            password: data_nodes.password.clone(),
            timeouts,
        };
        Ok(Self {
            client: builder.build()?,
            current: super::Current::default(),
            opening: AtomicBool::new(false),
            attempts: tokio::sync::watch::Sender::new(Attempt::default()),
            health: Mutex::new(Health::default()),
            owners: RwLock::new(SlotOwners::default()),
            open_within: timeouts.0 + timeouts.1,
            respond_within: timeouts.1,
            node_checked: Mutex::new(None),
            replace_every: timeouts.1.max(Duration::from_secs(1)),
            seeds,
            spares: Mutex::new(HashMap::new()),
        })
    }

    /// The connection in use, opening one when there is none (at the first
    /// command, and after a wedged one was dropped). The opening runs in a
    /// task of its own, one at a time: a caller that stops waiting (the
    /// store's timeout) leaves it to finish for the next command.
    async fn connection(self: &Arc<Self>) -> RedisResult<(u64, ClusterConnection)> {
        if let Some(found) = self.current.get() {
            return Ok(found);
        }
        let mut attempts = self.attempts.subscribe();
        // Again after subscribing: an opening that finished in between.
        if let Some(found) = self.current.get() {
            return Ok(found);
        }
        self.open_in_background();
        // The sender lives in `self`: `changed` cannot fail here.
        let _ = attempts.changed().await;
        if let Some(found) = self.current.get() {
            return Ok(found);
        }
        Err(attempts.borrow().error.clone().unwrap_or_else(|| {
            RedisError::from(std::io::Error::other(
                "the cluster connection could not be opened",
            ))
        }))
    }

    /// Starts opening a connection unless a task is doing so already.
    fn open_in_background(self: &Arc<Self>) {
        // No runtime (a command's future dropped at shutdown): the next
        // command opens it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.opening.swap(true, Ordering::SeqCst) {
            return;
        }
        let opening = Opening {
            link: Arc::clone(self),
            error: None,
        };
        runtime.spawn(async move {
            let link = &opening.link;
            let error = if link.current.get().is_some() {
                None
            } else {
                link.open().await.err()
            };
            opening.finished(error);
        });
    }

    /// Opens a connection, reads the slot map, and makes it the current one.
    async fn open(&self) -> RedisResult<()> {
        let timed_out = |what: &'static str| {
            RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
        };
        // Bounded: the client's own initial connect has no overall limit.
        let opened = tokio::time::timeout(self.open_within, self.client.get_async_connection())
            .await
            .map_err(|_| timed_out("opening the cluster connection timed out"))?;
        let mut conn = match opened {
            Ok(conn) => conn,
            // The cluster client's error for a refused login is an I/O
            // error ("Failed to create initial connections") that keeps
            // only the text of the node's answer, and says nothing of the
            // keys to fix: look again, on a plain connection, to name
            // them. Only then: an unreachable cluster is not asked twice.
            Err(e) if refused(&e) || refusal_in_text(&e) => {
                return Err(match self.seeds.refused_login().await {
                    Some(why) => {
                        RedisError::from((redis::ErrorKind::AuthenticationFailed, "refused", why))
                    }
                    None => e,
                });
            }
            Err(e) => return Err(e),
        };
        // Which node serves which slots, for counting stalls per node; a
        // connection without it still serves (stalls then count per slot).
        match tokio::time::timeout(self.open_within, cluster_nodes(&mut conn)).await {
            Ok(Ok(text)) => self.learn_owners(&text),
            Ok(Err(e)) => tracing::debug!(error = %e, "redis cluster: no slot map"),
            Err(_) => tracing::debug!("redis cluster: no slot map (timed out)"),
        }
        let generation = self.current.install(conn);
        tracing::info!(generation, "redis cluster: connected");
        Ok(())
    }

    fn learn_owners(&self, cluster_nodes: &str) {
        let owners = SlotOwners::parse(cluster_nodes);
        if !owners.ranges.is_empty() {
            *self
                .owners
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = owners;
        }
    }

    /// The node a stalled command for `slot` counts against.
    fn node_of(&self, slot: u16) -> NodeOf {
        self.owners
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .node_of(slot)
    }

    /// Runs `op` on the current connection and tells [`Self::health`] how
    /// it went: answered, or stalled (timed out, or abandoned by its
    /// caller after nearly the response timeout: [`super::watched`], as
    /// on the other links).
    async fn watched<T, F>(
        self: &Arc<Self>,
        at: At,
        op: impl FnOnce(ClusterConnection) -> F,
    ) -> RedisResult<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let (generation, conn) = self.connection().await?;
        let result = super::watched(generation, Some(self.respond_within), op(conn), |g| {
            self.stalled(g, &at)
        })
        .await;
        if !matches!(&result, Err(e) if e.is_timeout()) {
            self.answered(generation);
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
            health.nodes.clear();
        }
    }

    /// Counts a stalled command; drops the connection and opens a new one
    /// once enough have stalled in a row over several nodes, at most once
    /// per [`Self::replace_every`], or at once when the stalled command's
    /// node answers a connection of its own ([`Self::check_node`]). A
    /// command without a key is not counted; one sent to a node by its
    /// address has that node checked.
    fn stalled(self: &Arc<Self>, generation: u64, at: &At) {
        let slot = match at {
            At::Slot(slot) => *slot,
            At::Node(addr) => return self.check_node(generation, addr.clone()),
            At::Any => return,
        };
        let node = self.node_of(slot);
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if health.generation != generation {
            if self.current.get().is_none_or(|(g, _)| g != generation) {
                return; // a connection already replaced
            }
            *health = Health {
                generation,
                replaced: health.replaced,
                ..Health::default()
            };
        }
        let Some(stalls) = health.stall(node.clone(), Instant::now(), self.replace_every) else {
            drop(health);
            if let NodeOf::Primary(addr) = node {
                self.check_node(generation, addr);
            }
            return;
        };
        drop(health);
        self.replace(
            generation,
            &format!("{stalls} commands of several nodes timed out in a row"),
        );
    }

    /// Drops connection `generation` if it is still the one in use, and
    /// opens a new one now (not in the next caller's future: that
    /// caller's timeout would cancel it). Every node's connection goes
    /// with it: the cluster client has no way to replace one node's.
    fn replace(self: &Arc<Self>, generation: u64, why: &str) {
        if self.current.forget(generation) {
            tracing::warn!(
                generation,
                why,
                "redis cluster: opening a new cluster connection"
            );
            self.open_in_background();
        }
    }

    /// Replaces the connection in use after a reply the command never
    /// gets (see [`super::Link::distrust`]): the node that sent it lost
    /// track of which reply is whose, or answers garbage, and every later
    /// command to that node on this connection would get an earlier one's
    /// reply.
    pub(super) fn distrust(self: &Arc<Self>, why: &str) {
        // The reply may have come on a spare (a walk of a primary that
        // serves no slot): they go too.
        self.lock_spares().clear();
        if let Some((generation, _)) = self.current.get() {
            self.replace(generation, why);
        }
    }

    /// A command for the primary at `addr` stalled: asks that node, on a
    /// connection of its own, for a `PING`, and replaces connection
    /// `generation` if it answers. A stall on one node alone is counted
    /// but replaces nothing by itself ([`Health::stall`]), since a node
    /// that does not answer (a dead primary awaiting its replica's
    /// promotion) answers no new connection either; but a node that
    /// answers a new connection at once while this one waits has left
    /// this one with a reply that never ends (a 512 MB string declared
    /// and then silent or trickled, an endless array, a reply lost):
    /// replies come in order, so every later command to that node on it
    /// would wait behind it, for as long as the process runs. At most one
    /// look per [`Self::replace_every`], in a task of its own.
    fn check_node(self: &Arc<Self>, generation: u64, addr: Arc<str>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut checked = self
                .node_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if checked.is_some_and(|at| now.saturating_duration_since(at) < self.replace_every) {
                return;
            }
            *checked = Some(now);
        }
        let link = Arc::clone(self);
        runtime.spawn(async move {
            if link.answers(&addr).await {
                link.replace(
                    generation,
                    "a command got no complete answer within the store timeout \
                     from a node that answers a new connection",
                );
            }
        });
    }

    /// Whether the node at `addr` (`host:port`) answers `PING` on a new
    /// connection within the connect and response timeouts.
    async fn answers(&self, addr: &str) -> bool {
        let Some((host, port)) = addr
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        else {
            return false;
        };
        let (connect, respond) = self.seeds.timeouts;
        let ping = async {
            let mut conn = self
                .seeds
                .client(host, port)?
                .get_multiplexed_async_connection()
                .await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        matches!(
            tokio::time::timeout(connect + respond, ping).await,
            Ok(Ok(pong)) if pong == "PONG"
        )
    }

    pub(super) async fn command(self: &Arc<Self>, cmd: &Cmd) -> RedisResult<Value> {
        self.watched(At::of(slot_of(cmd)), |mut conn| async move {
            conn.req_packed_command(cmd).await
        })
        .await
    }

    /// Every primary that may hold keys now, from `CLUSTER NODES` of any
    /// node (which also refreshes the slot map stalls are counted with):
    /// what the session cache tracks and what the walks that name no key
    /// (SCAN, INFO) visit (see [`masters_in`]).
    pub(in crate::session::store) async fn masters(self: &Arc<Self>) -> RedisResult<Vec<Node>> {
        Ok(masters_in(&self.nodes_text().await?))
    }

    /// `CLUSTER NODES` of any node, after learning the slot owners it
    /// names.
    async fn nodes_text(self: &Arc<Self>) -> RedisResult<String> {
        let text = self
            .watched(
                At::Any,
                |mut conn| async move { cluster_nodes(&mut conn).await },
            )
            .await?;
        self.learn_owners(&text);
        Ok(text)
    }

    /// `cmd` on the primary at `host:port`. One that serves no slot is
    /// reached on a connection of its own (see [`Self::spare`]); SCAN and
    /// the count's script there walk its keys whatever their slot (Redis
    /// lets a script that names no key read the keys of a slot the node
    /// imports).
    pub(super) async fn on_node(
        self: &Arc<Self>,
        host: &str,
        port: u16,
        serves_slots: bool,
        cmd: &Cmd,
    ) -> RedisResult<Value> {
        let addr: Arc<str> = format!("{host}:{port}").into();
        if serves_slots {
            return self
                .watched(At::Node(addr), |mut conn| async move {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    });
                    conn.route_command(cmd.clone(), route).await
                })
                .await;
        }
        let mut conn = self.spare(host, port).await?;
        // A failed command drops the spare; so does one that stalled
        // ([`super::watched`]): a reply that never ends ends either in the
        // response timeout's error or in the store's timeout dropping the
        // command (the two are equally long, so either may fire first),
        // and the next walk must not wait behind it.
        let key = (host.to_owned(), port);
        let answer = super::watched(
            0,
            Some(self.respond_within),
            conn.req_packed_command(cmd),
            |_| {
                self.lock_spares().remove(&key);
            },
        )
        .await;
        if answer.is_err() {
            self.lock_spares().remove(&key);
        }
        answer
    }

    /// A connection of its own to the primary at `host:port`, which serves
    /// no slot: the cluster client connects only to the nodes its slot map
    /// names, and answers a command routed to another one with
    /// `ClusterConnectionNotFound`. Such a node holds keys while a reshard
    /// imports a slot onto it; it is a rare and passing state, so the
    /// connections are kept by address and dropped when one fails.
    async fn spare(&self, host: &str, port: u16) -> RedisResult<MultiplexedConnection> {
        let key = (host.to_owned(), port);
        if let Some(conn) = self.lock_spares().get(&key) {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.seeds.timeouts.0))
            .set_response_timeout(Some(self.seeds.timeouts.1));
        let conn = self
            .seeds
            .client(host, port)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.lock_spares().insert(key, conn.clone());
        Ok(conn)
    }

    fn lock_spares(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, u16), MultiplexedConnection>> {
        self.spares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) async fn pipeline(
        self: &Arc<Self>,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let slot = pipeline.cmd_iter().next().and_then(slot_of);
        self.watched(At::of(slot), |mut conn| async move {
            conn.req_packed_commands(pipeline, offset, count).await
        })
        .await
    }
}

/// Whether the text of `e` holds a server's refusal of the login or of a
/// command (the cluster client wraps the node's error in an I/O error and
/// keeps only its text).
fn refusal_in_text(e: &RedisError) -> bool {
    let text = e.to_string();
    ["AuthenticationFailed", "WRONGPASS", "NOAUTH", "NOPERM"]
        .iter()
        .any(|needle| text.contains(needle))
}

impl Seeds {
    /// Why the gateway may not use the cluster, when a refused login or a
    /// missing ACL right is the reason: the node, its answer (which holds
    /// no credential) and the configuration keys to check. Each seed node
    /// in turn, on a connection of its own, logs in and asks `CLUSTER
    /// SLOTS` as the cluster client does; `None` when a node accepts both,
    /// or none answers at all (the original error then says why).
    async fn refused_login(&self) -> Option<String> {
        for (host, port) in &self.nodes {
            let limit = self.timeouts.0 + self.timeouts.1;
            let looked = tokio::time::timeout(limit, async {
                let mut conn = self
                    .client(host, *port)?
                    .get_multiplexed_async_connection()
                    .await?;
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<Value>(&mut conn)
                    .await
            })
            .await;
            match looked {
                Ok(Err(e)) if refused(&e) => {
                    return Some(format!(
                        "cluster node {host}:{port} refused the gateway's login or command: {e} \
                         (check store.username and store.password, and that user's ACL rights \
                         on the cluster nodes)"
                    ));
                }
                Ok(Ok(_)) => return None,
                Ok(Err(_)) | Err(_) => continue,
            }
        }
        None
    }

    fn client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
        let info = address(host, port, self.tls).into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(pw) = &self.password {
            settings = settings.set_password(pw.expose());
        }
        let info = info.set_redis_settings(settings);
        match &self.certificates {
            Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
            None => redis::Client::open(info),
        }
    }
}

/// What a command on the cluster connection is for, to tell whom its
/// stall counts against: the slot of its key, a node it was sent to by
/// address (a walk's `SCAN`), or any node.
enum At {
    Slot(u16),
    Node(Arc<str>),
    Any,
}

impl At {
    fn of(slot: Option<u16>) -> Self {
        slot.map_or(Self::Any, Self::Slot)
    }
}

/// `CLUSTER NODES` of any node.
async fn cluster_nodes(conn: &mut ClusterConnection) -> RedisResult<String> {
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let value = conn
        .route_command(redis::cmd("CLUSTER").arg("NODES").clone(), route)
        .await?;
    Ok(redis::from_redis_value(value)?)
}

/// The slot of a command's first key: the argument after the name, or for
/// scripts (`EVAL`, `EVALSHA`, `FCALL`) the first of `KEYS`. `None` for a
/// command without keys.
fn slot_of(cmd: &Cmd) -> Option<u16> {
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
    Some(key_slot(key))
}

/// Redis Cluster's slot of `key`: CRC16 (XMODEM) of its hash tag (the
/// text between the first `{` and the next `}`, if not empty) or of the
/// whole key, modulo 16384. (The cluster client computes it too, but does
/// not say.)
fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16384
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis uses.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// The primaries in a `CLUSTER NODES` answer that may hold keys, whether
/// they serve slots or not: a primary that joined empty (`CLUSTER MEET`)
/// receives keys as soon as a reshard marks a slot IMPORTING on it (the
/// source's `ASK` sends single-key writes there, `MIGRATE` moves keys
/// there), and serves the slot only at its end; one that another node
/// suspects (`fail?`) may still serve every client that reaches it. Left
/// out: a node still in its handshake or without an address (no slot can
/// name it yet), and a primary confirmed failed that serves no slot (its
/// replica took its slots over; if it returns it joins as a replica and
/// drops its keys). A failed primary still serving slots stays in: its
/// keys are unreachable, and so is the store for them, until it is back
/// or replaced. Each says whether it serves a slot (a range, not only a
/// `[…]` migration entry): a walk may pass over one that serves none and
/// does not answer (see `RedisStore::passed_over`).
fn masters_in(text: &str) -> Vec<Node> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| matches!(*f, "handshake" | "noaddr"))
        {
            continue;
        }
        if flags.contains(&"fail") && fields.iter().skip(8).all(|f| f.starts_with('[')) {
            continue;
        }
        let addr = addr.split(['@', ',']).next().unwrap_or_default();
        if let Some((host, port)) = addr.rsplit_once(':')
            && let Ok(port) = port.parse()
            && port != 0
        {
            out.push(Node::Primary {
                host: host.to_owned(),
                port,
                serves_slots: fields.iter().skip(8).any(|f| !f.starts_with('[')),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922 [5461->-a1]
c3 127.0.0.1:7002@17002,node-c master - 0 0 3 connected 10923-16382 16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 127.0.0.1:7004@17004 master,fail - 0 0 4 disconnected 1-2
";

    #[test]
    fn a_refusal_wrapped_by_the_cluster_client_is_told_from_other_failures() {
        // As redis-rs 1.8 wraps a node's answer when no initial connection
        // could be made.
        let wrapped = |detail: &str| {
            RedisError::from((
                redis::ErrorKind::Io,
                "Failed to create initial connections",
                detail.to_owned(),
            ))
        };
        for refusal in [
            "Io: Password authentication failed - AuthenticationFailed",
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOPERM this user has no permissions to run the 'cluster|slots' command",
        ] {
            assert!(refusal_in_text(&wrapped(refusal)), "{refusal}");
        }
        for other in ["Io: Connection refused (os error 111)", "timed out"] {
            assert!(!refusal_in_text(&wrapped(other)), "{other}");
        }
    }

    #[test]
    fn the_slot_map_names_the_primary_of_each_slot() {
        let owners = SlotOwners::parse(NODES);
        let primary = |s: &str| NodeOf::Primary(s.into());
        assert_eq!(owners.node_of(0), primary("127.0.0.1:7000"));
        assert_eq!(
            owners.node_of(1),
            primary("127.0.0.1:7000"),
            "not the failed node"
        );
        assert_eq!(owners.node_of(5460), primary("127.0.0.1:7000"));
        assert_eq!(owners.node_of(5461), primary("127.0.0.1:7001"));
        assert_eq!(owners.node_of(16383), primary("127.0.0.1:7002"));
        assert_eq!(SlotOwners::default().node_of(42), NodeOf::Slot(42));
    }

    #[test]
    fn with_one_primary_stalls_count_per_slot_so_a_wedged_connection_is_still_replaced() {
        let owners =
            SlotOwners::parse("a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\n");
        assert_eq!(owners.node_of(100), NodeOf::Slot(100));
        let mut health = Health::default();
        let now = Instant::now();
        let every = Duration::from_secs(1);
        assert_eq!(health.stall(owners.node_of(100), now, every), None);
        assert_eq!(health.stall(owners.node_of(200), now, every), None);
        assert_eq!(health.stall(owners.node_of(300), now, every), Some(3));
    }

    #[tokio::test]
    async fn an_opening_that_ends_early_still_lets_the_next_one_start_and_wakes_its_waiters() {
        let config = RedisConfig {
            endpoint: crate::config::RedisEndpoint::Cluster {
                nodes: vec![("127.0.0.1".into(), 1)],
                tls: false,
            },
            username: None,
            password: None,
            db: 0,
            connect_timeout: Duration::from_millis(50),
            tls_ca_pem: None,
            tls_client: None,
        };
        let link = Arc::new(
            ClusterLink::new(
                &[("127.0.0.1".into(), 1)],
                false,
                &config,
                None,
                (Duration::from_millis(50), Duration::from_millis(50)),
            )
            .expect("client"),
        );
        let mut attempts = link.attempts.subscribe();
        link.opening.store(true, Ordering::SeqCst);
        // A task dropped (or panicking) before it recorded its result.
        drop(Opening {
            link: Arc::clone(&link),
            error: None,
        });
        attempts.changed().await.expect("told");
        assert!(attempts.borrow().error.is_some(), "told it failed");
        assert!(
            !link.opening.load(Ordering::SeqCst),
            "a next opening may start"
        );
    }

    #[test]
    fn a_cluster_connection_is_replaced_only_after_commands_of_several_nodes_stall_in_a_row() {
        let owners = SlotOwners::parse(NODES);
        // Two slots of one primary, one of another.
        let (a, a2, b) = (
            owners.node_of(100),
            owners.node_of(200),
            owners.node_of(6000),
        );
        assert_eq!(a, a2);
        assert_ne!(a, b);
        let (every, t0) = (Duration::from_secs(60), Instant::now());
        let mut health = Health::default();
        // One node alone, over any number of its slots (a dead primary
        // whose slots wait for a promotion) is no reason: a new connection
        // would wait for it too.
        for n in [&a, &a2, &a, &a2, &a] {
            assert_eq!(health.stall(n.clone(), t0, every), None);
        }
        assert_eq!(health.stall(b.clone(), t0, every), Some(6));
        // Then at most once per `every`.
        for n in [&a, &b, &a, &b] {
            assert_eq!(health.stall(n.clone(), t0 + every / 2, every), None);
        }
        assert_eq!(health.stall(a.clone(), t0 + every, every), Some(5));
        // Without a slot map, slots stand for nodes.
        let mut health = Health::default();
        assert_eq!(health.stall(NodeOf::Slot(1), t0, every), None);
        assert_eq!(health.stall(NodeOf::Slot(1), t0, every), None);
        assert_eq!(health.stall(NodeOf::Slot(2), t0, every), Some(3));
    }

    /// A real one-node Redis Cluster (all slots on it), stopped on drop.
    struct OneNodeCluster {
        child: std::process::Child,
        dir: std::path::PathBuf,
        port: u16,
    }

    impl OneNodeCluster {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let dir = std::env::temp_dir().join(format!("oidc-bff-link-{port}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .current_dir(&dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (from the redis-server package) runs");
            let node = Self { child, dir, port };
            let cli = |args: &[&str]| {
                std::process::Command::new("redis-cli")
                    .args(["-p", &port.to_string()])
                    .args(args)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while !cli(&["PING"]).contains("PONG") {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
            while !cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(50));
            }
            node
        }
    }

    impl Drop for OneNodeCluster {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A slow network in front of `port`: each connection's bytes start
    /// to flow `delay` after it was accepted.
    async fn slow_relay(port: u16, delay: Duration) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let relay = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        relay
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_leave_the_cluster_link_without_a_connection() {
        let node = OneNodeCluster::start();
        // Opening takes longer than the caller waits (the store's timeout
        // in the gateway), though no single answer is late.
        let seed = slow_relay(node.port, Duration::from_millis(600)).await;
        let config = RedisConfig {
            endpoint: crate::config::RedisEndpoint::Cluster {
                nodes: vec![("127.0.0.1".into(), seed)],
                tls: false,
            },
            username: None,
            password: None,
            db: 0,
            connect_timeout: Duration::from_secs(5),
            tls_ca_pem: None,
            tls_client: None,
        };
        let link = Arc::new(
            ClusterLink::new(
                &[("127.0.0.1".into(), seed)],
                false,
                &config,
                None,
                (Duration::from_secs(5), Duration::from_secs(5)),
            )
            .expect("link"),
        );
        let get = redis::cmd("GET").arg("k").clone();
        let gave_up = tokio::time::timeout(Duration::from_millis(100), link.command(&get)).await;
        assert!(gave_up.is_err(), "the caller stopped waiting");
        // Nobody asks again: the opening goes on by itself.
        let deadline = Instant::now() + Duration::from_secs(15);
        while link.current.get().is_none() {
            assert!(
                Instant::now() < deadline,
                "the opening was cancelled with its caller"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // And the next command uses it without opening another.
        let before = link.current.installed();
        let value = tokio::time::timeout(Duration::from_secs(5), link.command(&get))
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(value, Value::Nil);
        assert_eq!(link.current.installed(), before);
    }

    #[test]
    fn slots_are_redis_clusters() {
        // CRC16/XMODEM's check value, and Redis' own examples.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        for key in [
            "foo",
            "bar",
            "{user1000}.following",
            "a{}b",
            "{}{x}",
            "oidc-bff:s:{3fa2}abc",
        ] {
            assert_eq!(
                redis::cluster_routing::Route::new(
                    key_slot(key.as_bytes()),
                    redis::cluster_routing::SlotAddr::Master
                ),
                redis::cluster_routing::Route::with_key(
                    key,
                    redis::cluster_routing::SlotAddr::Master
                ),
                "{key}"
            );
        }
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    }

    #[test]
    fn a_commands_slot_is_that_of_its_first_key() {
        let key = "oidc-bff:s:{3fa2}abc";
        let expected = Some(key_slot(b"3fa2"));
        assert_eq!(slot_of(redis::cmd("HGET").arg(key).arg("r")), expected);
        assert_eq!(
            slot_of(redis::cmd("EVALSHA").arg("0123").arg(2).arg(key).arg("x")),
            expected
        );
        assert_eq!(slot_of(redis::cmd("EVALSHA").arg("0123").arg(0)), None);
        assert_eq!(slot_of(&redis::cmd("PING")), None);
    }

    #[test]
    fn the_walks_and_the_cache_visit_every_primary_that_may_hold_keys_with_or_without_slots() {
        let nodes = format!(
            "{NODES}\
f6 127.0.0.1:7005@17005 master - 0 0 5 connected
g7 127.0.0.1:7006@17006 master,fail? - 0 0 6 connected 16000
h8 127.0.0.1:7007@17007 master,fail - 0 0 7 disconnected
i9 127.0.0.1:7008@17008 master,handshake - 0 0 0 connected
j0 :0@0 master,noaddr - 0 0 0 disconnected
k1 127.0.0.1:7009@17009 myself,master - 0 0 8 connected [5461-<-b2]
l2 127.0.0.1:7010@17010 master,fail - 0 0 9 disconnected [100-<-a1]
"
        );
        let found: Vec<(u16, bool)> = masters_in(&nodes)
            .into_iter()
            .map(|n| match n {
                Node::Primary {
                    port, serves_slots, ..
                } => (port, serves_slots),
                Node::The => (0, false),
            })
            .collect();
        // 7004 failed but still serves slots 1-2 (no replica took them);
        // 7005 joined empty; 7006 is only suspected; 7009 serves no slot
        // but imports one (its keys are counted and swept); 7010 failed
        // and serves none: its slot's keys went back with a promotion or
        // stay unreachable either way.
        assert_eq!(
            found,
            [
                (7000, true),
                (7001, true),
                (7002, true),
                (7004, true),
                (7005, false),
                (7006, true),
                (7009, false),
            ]
        );
    }
}
