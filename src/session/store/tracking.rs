//! The session cache's invalidation connections: Redis server-assisted
//! client-side caching (RESP3 `CLIENT TRACKING ON BCAST`) on the session
//! keys, one dedicated connection per Redis server that holds sessions.
//!
//! BCAST on the prefixes of the session records and tombstones (`P s:`,
//! `P t:`, and the legacy prefix's, see `store` for the key layout) fits
//! every topology: the connection needs no reads to register interest (so
//! on a Cluster it can sit on each primary without knowing its slots), and
//! every write, deletion or expiry of any session key is announced to every
//! gateway process. The cost is one message per session write to each
//! process, whether it caches that session or not: touches, refreshes,
//! logins and revocations, a small fraction of the requests.
//!
//! Which servers: the one `store.url` server; through Sentinel, the master
//! the process's store link announced last (`SessionCache::store_master`),
//! else the one the Sentinels name. A store link's move (`+switch-master`,
//! or a discovery after a failure or a re-check) wakes the link at once
//! (`SessionCache::store_moved`): the cache already stopped trusting it
//! in the same call that announced the move, before the store used the new
//! master, and trusts it again once it listens there and confirmed. Each
//! second the link also asks the Sentinels whether they name the master
//! it follows (the fallback for a missed event: on another answer it
//! reconnects to the one they name, and the cache is bypassed until the
//! store link agrees); every primary of a Cluster that may hold keys,
//! whether it serves slots or not (`CLUSTER NODES`, re-read each second;
//! see `masters_in` in `redis_link/cluster.rs` for which are left out).
//!
//! On a Cluster the list compared each second is the set of those
//! primaries' addresses (sorted: nodes list each other in their own
//! order); any change (a primary joined, was promoted, or left) ends the
//! session like a lost connection, so the new set is tracked, and has
//! confirmed, before the cache serves again. A slot moving between two
//! tracked primaries changes nothing: both already announce every write,
//! and `MIGRATE` announces its deletion of the moved keys on the source,
//! so an entry read before the move is dropped and read again from the
//! target. A primary that joins empty is tracked within a second of
//! joining, before a reshard can put a session key on it, as long as the
//! reshard starts later than that: `redis-cli --cluster add-node` and
//! `reshard` are separate steps, and the second first checks that every
//! node agrees on the configuration. Not guaranteed: a node that takes session keys within one
//! re-read of joining (a script that meets and reshards in the same
//! second), or one the node asked does not list yet (gossip, well under a
//! second); for that moment a write there may go unannounced to a cache.
//! (Tracking only the primaries that served slots left the importing
//! target untracked for the whole migration and up to a second after
//! the slot moved: a session read from it and revoked there was served.)
//!
//! This module owns those connections and what their messages mean for the
//! cache ([`SessionCache`]); it must never make the cache serve while any
//! of them is unconfirmed. A lost connection (the library's disconnection
//! notice, a `PING` unanswered within `store.timeout`, a changed topology)
//! empties the cache at once and reconnects with backoff; the cache serves
//! again only after every server has answered `CLIENT TRACKING` with `OK`.
//! The pings (and topology re-reads) stop while no request asks the cache
//! and start again with the first request that finds it not serving.
//! A gateway process runs one link (a connection per server) per worker,
//! as a task on the worker's runtime ([`TrackerTask`]): the worker then
//! reads an invalidation before a request that arrived after it (see
//! `session::cache::ProcessCache`). An embedded gateway runs one link on a
//! thread of its own ([`Tracker`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, watch};

use super::redis::{certificates, describe, fixed_client};
use super::redis_link::{ClusterLink, Node, SentinelLink, address};
use crate::config::{RedisConfig, RedisEndpoint};
use crate::session::cache::SessionCache;
use crate::session::cookie::StoreId;

/// How often every invalidation connection is pinged (and the topology
/// re-read); the cache's lease ([`crate::session::cache::LEASE`]) is a few
/// of these.
const PING_EVERY: Duration = Duration::from_secs(1);
/// A link stops pinging once no request asked the cache for this long
/// (see [`SessionCache::wanted_again`]).
const IDLE_AFTER: Duration = crate::session::cache::LEASE;
/// The invalidation connections' name in `CLIENT LIST`.
pub const CONNECTION_NAME: &str = "oidc-bff-tracking";
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the invalidation connections go.
#[expect(
    clippy::large_enum_variant,
    reason = "one per tracking link, built once: boxing saves nothing that matters"
)]
enum Targets {
    Fixed(Client),
    Sentinel(SentinelLink),
    Cluster {
        link: Arc<ClusterLink>,
        tls: bool,
        config: Box<RedisConfig>,
    },
}

impl Targets {
    fn new(config: &RedisConfig, timeout: Duration) -> anyhow::Result<Self> {
        let certs = certificates(config);
        Ok(match &config.endpoint {
            RedisEndpoint::Url(url) => Self::Fixed(fixed_client(
                config,
                url,
                certs,
                &describe(&config.endpoint, config.db),
            )?),
            RedisEndpoint::Sentinel(sentinel) => Self::Sentinel(SentinelLink::new(
                sentinel,
                config,
                certs,
                redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(timeout)),
            )?),
            RedisEndpoint::Cluster { nodes, tls } => Self::Cluster {
                link: Arc::new(ClusterLink::new(
                    nodes,
                    *tls,
                    config,
                    certs,
                    (config.connect_timeout, timeout),
                )?),
                tls: *tls,
                config: Box::new(config.clone()),
            },
        })
    }

    /// The servers to track now, as RESP3 clients, in a stable order.
    /// Through Sentinel: `store_master` (the master the store link
    /// announced last) when given, else the one the Sentinels name.
    async fn resolve(&self, store_master: Option<&str>) -> redis::RedisResult<Vec<Client>> {
        let clients = match self {
            Self::Fixed(client) => vec![client.clone()],
            Self::Sentinel(link) => vec![match store_master {
                Some(addr) => link.client_at(addr)?,
                None => link.master_client().await?,
            }],
            Self::Cluster { link, tls, config } => {
                // Every primary that may hold a session key, slots or
                // not; sorted, since nodes list each other in their own
                // order and the re-read compares lists.
                let mut nodes: Vec<(String, u16)> = link
                    .masters()
                    .await?
                    .into_iter()
                    .filter_map(|node| match node {
                        Node::Primary { host, port, .. } => Some((host, port)),
                        Node::The => None,
                    })
                    .collect();
                nodes.sort();
                nodes.dedup();
                let mut out = Vec::new();
                for (host, port) in nodes {
                    let mut info = redis::IntoConnectionInfo::into_connection_info(address(
                        &host, port, *tls,
                    ))?;
                    let mut settings = info.redis_settings().clone();
                    if let Some(user) = &config.username {
                        settings = settings.set_username(user);
                    }
                    if let Some(pw) = &config.password {
                        settings = settings.set_password(pw.expose());
                    }
                    info = info.set_redis_settings(settings);
                    out.push(match certificates(config) {
                        Some(c) => Client::build_with_tls(info, c)?,
                        None => Client::open(info)?,
                    });
                }
                out
            }
        };
        clients.into_iter().map(resp3).collect()
    }
}

/// The same server, spoken to in RESP3 (push messages need it).
fn resp3(client: Client) -> redis::RedisResult<Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

fn addr(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// The key prefixes to track: records and tombstones under the prefix and
/// the legacy prefix, without overlaps (Redis refuses a prefix that
/// starts another one on the same connection; the shorter covers both).
pub fn tracked_prefixes(prefix: &str, legacy: &str) -> Vec<String> {
    let mut all: Vec<String> = [prefix, legacy]
        .iter()
        .flat_map(|p| [format!("{p}s:"), format!("{p}t:")])
        .collect();
    all.sort_by_key(String::len);
    let mut kept: Vec<String> = Vec::new();
    for p in all {
        if !kept.iter().any(|k| p.starts_with(k.as_str())) {
            kept.push(p);
        }
    }
    kept
}

/// The session a tracked key belongs to: the key without its prefix and
/// hash-tag braces is the store ID (`P s:{abcd}rest` → `abcdrest`,
/// `L s:id`, `L s:{id}`).
pub fn session_of(key: &[u8], prefixes: &[String]) -> Option<StoreId> {
    let key = std::str::from_utf8(key).ok()?;
    prefixes.iter().find_map(|p| {
        let rest = key.strip_prefix(p.as_str())?;
        let id: String = rest.chars().filter(|c| !matches!(c, '{' | '}')).collect();
        StoreId::parse(&id)
    })
}

/// What one push message means for the cache.
fn on_push(
    push: PushInfo,
    prefixes: &[String],
    cache: &SessionCache,
    link: usize,
    lost: &mpsc::UnboundedSender<()>,
) {
    match push.kind {
        PushKind::Invalidate => match push.data.first() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    let Value::BulkString(key) = key else {
                        // A key we cannot read might be a session's.
                        cache.flush();
                        continue;
                    };
                    match session_of(key, prefixes) {
                        Some(id) => cache.invalidated_on(&id, link),
                        // Under a tracked prefix but not a session's key
                        // (nothing of ours is): dropping all is the safe
                        // answer to what cannot be read.
                        None => cache.flush(),
                    }
                }
            }
            // `invalidate` with null: the server flushed (FLUSHALL, a
            // full resync): everything goes.
            _ => cache.flush(),
        },
        PushKind::Disconnection => {
            cache.tracking_down(link);
            let _ = lost.send(());
        }
        _ => {}
    }
}

/// Keeps the cache's invalidation connections while it lives; dropping it
/// stops them (the cache then stays off).
pub struct Tracker {
    _stop: watch::Sender<()>,
}

impl Tracker {
    /// Starts the tracking thread for `cache` over the configured Redis.
    pub fn start(
        config: &RedisConfig,
        prefixes: Vec<String>,
        timeout: Duration,
        cache: Arc<SessionCache>,
    ) -> anyhow::Result<Self> {
        let targets = Targets::new(config, timeout)?;
        let (stop, mut stopped) = watch::channel(());
        let connect_timeout = config.connect_timeout;
        std::thread::Builder::new()
            .name("oidc-bff-cache".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "session cache: no runtime for invalidations; the cache stays off");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let off = cache.clone();
                    let link = Link {
                        targets,
                        prefixes,
                        cache,
                        timeout,
                        connect_timeout,
                        index: 0,
                        ask_sentinels: AtomicBool::new(false),
                    };
                    tokio::select! {
                        () = link.run() => {}
                        _ = stopped.changed() => {}
                    }
                    // Stopped: whoever still holds the cache reads through.
                    off.tracking_down(0);
                });
            })?;
        Ok(Self { _stop: stop })
    }
}

/// One worker's link, running as a task on its runtime; dropping it stops
/// the link (and the cache serves nothing until it is started again).
pub struct TrackerTask {
    task: tokio::task::JoinHandle<()>,
    cache: Arc<SessionCache>,
    index: usize,
}

impl TrackerTask {
    pub(crate) fn spawn(
        config: &RedisConfig,
        prefixes: Vec<String>,
        timeout: Duration,
        cache: Arc<SessionCache>,
        index: usize,
    ) -> anyhow::Result<Self> {
        let link = Link {
            targets: Targets::new(config, timeout)?,
            prefixes,
            cache: cache.clone(),
            timeout,
            connect_timeout: config.connect_timeout,
            index,
            ask_sentinels: AtomicBool::new(false),
        };
        Ok(Self {
            task: tokio::spawn(async move { link.run().await }),
            cache,
            index,
        })
    }
}

impl Drop for TrackerTask {
    fn drop(&mut self) {
        self.task.abort();
        self.cache.tracking_down(self.index);
    }
}

struct Link {
    targets: Targets,
    prefixes: Vec<String>,
    cache: Arc<SessionCache>,
    timeout: Duration,
    connect_timeout: Duration,
    /// Which of the cache's links this is.
    index: usize,
    /// Through Sentinel: the next session asks the Sentinels for the
    /// master instead of going where the store link went, because the last
    /// attempt there failed or the Sentinels named another master.
    ask_sentinels: AtomicBool,
}

impl Link {
    /// Tracks forever: a session until it fails, then backoff and again.
    async fn run(&self) {
        let mut backoff = Duration::from_millis(100);
        let mut was_up = false;
        // The reason last reported at WARN while tracking could not be
        // set up: a server that refuses it for good (`CLIENT TRACKING`
        // unknown to a Redis-compatible server, denied by an ACL) leaves
        // the cache off for as long as the process runs, which operators
        // must learn from the log, once per reason rather than per retry.
        let mut warned: Option<String> = None;
        loop {
            let started = Instant::now();
            let why = self.session(&mut was_up).await;
            self.cache.tracking_down(self.index);
            if was_up {
                tracing::warn!(why = %why, "session cache: invalidation connection lost; cache emptied, reading through until it is back");
                was_up = false;
                warned = None;
            } else if warned.as_deref() != Some(why.as_str()) {
                tracing::warn!(why = %why, "session cache: cannot set up the invalidation connection; the cache is off (every lookup reads the store) until it can, retrying");
                warned = Some(why);
            } else {
                tracing::debug!(why = %why, "session cache: invalidation connection not established");
            }
            if started.elapsed() > MAX_BACKOFF * 2 {
                backoff = Duration::from_millis(100);
            }
            // A store link that moved meanwhile is followed at once.
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.cache.store_moved(self.index) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn bounded<T>(
        &self,
        limit: Duration,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(limit, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    /// Why the session following `tracked` must end because a store link
    /// announced another master (`None`: it listens where the store is).
    fn moved_away(&self, tracked: Option<&str>) -> Option<String> {
        let tracked = tracked?;
        let store = self.cache.store_master()?;
        (*store != *tracked).then(|| "the store moved to another master (failover)".into())
    }

    /// One tracking session over every server; returns why it ended.
    async fn session(&self, was_up: &mut bool) -> String {
        let store_master = match self.targets {
            Targets::Sentinel(_) if !self.ask_sentinels.swap(false, Ordering::Relaxed) => {
                self.cache.store_master()
            }
            _ => None,
        };
        let why = self.track(was_up, store_master.as_deref()).await;
        if !*was_up {
            // Could not listen where the store went (it may have moved on
            // without a command since): the Sentinels say where next.
            self.ask_sentinels.store(true, Ordering::Relaxed);
        }
        why
    }

    /// [`Self::session`] over the servers `store_master` names (see
    /// [`Targets::resolve`]).
    async fn track(&self, was_up: &mut bool, store_master: Option<&str>) -> String {
        let clients = match self
            .bounded(self.timeout, self.targets.resolve(store_master))
            .await
        {
            Ok(c) if c.is_empty() => return "no Redis server holds sessions".into(),
            Ok(c) => c,
            Err(e) => return format!("cannot find the Redis servers: {e}"),
        };
        let addrs: Vec<String> = clients.iter().map(addr).collect();
        // The master this session follows, which the cache compares with
        // the store links' (Sentinel only: other servers are not moved).
        let tracked: Option<Arc<str>> = match self.targets {
            Targets::Sentinel(_) => addrs.first().map(|a| Arc::from(a.as_str())),
            _ => None,
        };
        let (lost_tx, mut lost) = mpsc::unbounded_channel();
        let mut conns = Vec::with_capacity(clients.len());
        let sent = Instant::now();
        for client in &clients {
            let (prefixes, cache, lost_tx, link) = (
                self.prefixes.clone(),
                self.cache.clone(),
                lost_tx.clone(),
                self.index,
            );
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(Some(self.timeout))
                .set_push_sender(move |push: PushInfo| {
                    on_push(push, &prefixes, &cache, link, &lost_tx);
                    Ok::<(), std::convert::Infallible>(())
                });
            let mut conn = match self
                .bounded(
                    self.connect_timeout + self.timeout,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
            {
                Ok(c) => c,
                Err(e) => return format!("cannot connect to {}: {e}", addr(client)),
            };
            // Named, so operators (and tests) find it in `CLIENT LIST`.
            let named: Result<(), String> = self
                .bounded(
                    self.timeout,
                    redis::cmd("CLIENT")
                        .arg("SETNAME")
                        .arg(CONNECTION_NAME)
                        .query_async(&mut conn),
                )
                .await;
            if let Err(e) = named {
                return format!("CLIENT SETNAME refused by {}: {e}", addr(client));
            }
            let mut tracking = redis::cmd("CLIENT");
            tracking.arg("TRACKING").arg("ON").arg("BCAST");
            for p in &self.prefixes {
                tracking.arg("PREFIX").arg(p);
            }
            let on: Result<(), String> = self
                .bounded(self.timeout, tracking.query_async(&mut conn))
                .await;
            if let Err(e) = on {
                return format!("CLIENT TRACKING refused by {}: {e}", addr(client));
            }
            conns.push(conn);
        }
        // Every server now sends this process every change to a session
        // key: from here the cache may serve (through Sentinel, once this
        // is the master the store links use).
        self.cache.listening_to(self.index, tracked.clone());
        self.cache.tracking_confirmed(self.index, sent);
        *was_up = true;
        tracing::info!(servers = ?addrs, "session cache: tracking session keys");
        loop {
            let moved = tokio::select! {
                _ = lost.recv() => return "the connection closed".into(),
                () = tokio::time::sleep(PING_EVERY) => false,
                () = self.cache.store_moved(self.index) => true,
            };
            if moved {
                // The cache stopped trusting this link when the store link
                // announced a master elsewhere; one that listens there
                // already confirms at once instead.
                if let Some(why) = self.moved_away(tracked.as_deref()) {
                    return why;
                }
            } else if !self.cache.wanted_within(IDLE_AFTER) {
                // No request asked the cache lately: no pings (an idle
                // worker sleeps), so the lease lapses and the cache serves
                // nothing. Invalidations are still read as they come. The
                // first request that finds the cache not serving wakes
                // this link, which then confirms (ping, topology) first.
                tokio::select! {
                    _ = lost.recv() => return "the connection closed".into(),
                    () = self.cache.wanted_again(self.index) => {}
                    () = self.cache.store_moved(self.index) => {
                        if let Some(why) = self.moved_away(tracked.as_deref()) {
                            return why;
                        }
                    }
                }
            }
            let sent = Instant::now();
            for (conn, at) in conns.iter_mut().zip(&addrs) {
                let pong: Result<String, String> = self
                    .bounded(self.timeout, redis::cmd("PING").query_async(conn))
                    .await;
                if let Err(e) = pong {
                    return format!("{at} did not answer PING: {e}");
                }
            }
            if let Targets::Sentinel(link) = &self.targets {
                // Asked on a kept Sentinel connection: no connection to the
                // master each second (a lagging Sentinel that names the old
                // one only costs a reconnection, with the cache emptied).
                match tokio::time::timeout(self.timeout, link.named_master()).await {
                    Ok(Some(named)) if addrs.len() == 1 && named == addrs[0] => {}
                    Ok(Some(_)) => {
                        // Missed the store's move, or the store has not
                        // moved yet: follow the Sentinels (the cache is
                        // bypassed until the store link agrees).
                        self.ask_sentinels.store(true, Ordering::Relaxed);
                        return "the Sentinels name another master (failover)".into();
                    }
                    Ok(None) => return "no Sentinel named the master".into(),
                    Err(_) => {
                        return format!("no Sentinel answered within {:?}", self.timeout);
                    }
                }
            } else if !matches!(self.targets, Targets::Fixed(_)) {
                match self.bounded(self.timeout, self.targets.resolve(None)).await {
                    Ok(now) if now.iter().map(addr).collect::<Vec<_>>() == addrs => {}
                    Ok(_) => {
                        return "the servers holding sessions changed (failover or new primary)"
                            .into();
                    }
                    Err(e) => return format!("cannot re-read the topology: {e}"),
                }
            }
            // Every invalidation sent before the pings has been received
            // (replies come in order on each connection).
            self.cache.tracking_confirmed(self.index, sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_prefixes_collapse_to_the_shorter() {
        assert_eq!(tracked_prefixes("bff:", "bff:"), ["bff:s:", "bff:t:"]);
        assert_eq!(
            tracked_prefixes("bff:", "{bff}:"),
            ["bff:s:", "bff:t:", "{bff}:s:", "{bff}:t:"]
        );
    }

    #[test]
    fn tracked_keys_name_their_session_in_either_layout() {
        let prefixes = tracked_prefixes("bff:", "{old}:");
        let sharded = format!("ab12{}", "c".repeat(56));
        let key = format!("bff:s:{{ab12}}{}", "c".repeat(56));
        assert_eq!(
            session_of(key.as_bytes(), &prefixes).map(|id| id.as_str().to_owned()),
            Some(sharded)
        );
        let legacy = "d".repeat(64);
        for key in [
            format!("{{old}}:t:{legacy}"),
            format!("{{old}}:s:{{{legacy}}}"),
        ] {
            assert_eq!(
                session_of(key.as_bytes(), &prefixes).map(|id| id.as_str().to_owned()),
                Some(legacy.clone()),
                "{key}"
            );
        }
        assert_eq!(session_of(b"bff:shard-key", &prefixes), None);
        assert_eq!(session_of(b"bff:s:nothex", &prefixes), None);
    }
}
