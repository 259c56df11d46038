//! The connections a Sentinel link keeps to the Sentinels themselves: one
//! subscribed to `+switch-master`, which reports a failover the moment
//! Sentinel switches, and one per Sentinel for the periodic
//! `SENTINEL GET-MASTER-ADDR-BY-NAME`. Owns reaching the Sentinels (TLS,
//! credentials, timeouts, reconnecting with backoff) and validating what
//! they announce; it must not decide on its own to move the link (that is
//! the parent's `SentinelLink`) and must never log a credential.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, RedisError, RedisResult,
    ServerErrorKind, TlsCertificates,
};

use super::address;
use crate::config::{RedisConfig, SentinelConfig};
use crate::secret::SecretString;

/// The channel on which a Sentinel announces that it now names another
/// master: `<master-name> <old-ip> <old-port> <new-ip> <new-port>`.
const SWITCH_MASTER: &str = "+switch-master";

/// First and longest wait before subscribing again after the subscription
/// was lost or could not be made.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long the subscription may stay silent before it is pinged: a
/// Sentinel that vanished without closing the connection (a cut network)
/// would otherwise leave the link deaf to failovers for good.
const PING_AFTER: Duration = Duration::from_secs(10);

/// Longest announced host name accepted (DNS' limit).
const MAX_HOST_LEN: usize = 253;

/// Everything needed to reach the Sentinels, and to open a connection to a
/// master they name.
pub(super) struct Sentinels {
    nodes: Vec<(String, u16)>,
    tls: bool,
    certificates: Option<TlsCertificates>,
    username: Option<String>,
    password: Option<SecretString>,
    /// The master name to follow (`store.sentinel_master`).
    master: String,
    /// The data nodes' login (`store.db`, `store.username`,
    /// `store.password`), for a client of an announced master.
    data: MasterLogin,
    connect_timeout: Duration,
    response_timeout: Duration,
}

struct MasterLogin {
    db: i64,
    username: Option<String>,
    password: Option<SecretString>,
}

/// A master address a Sentinel announced, checked to be a plausible host
/// and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Announced {
    pub host: String,
    pub port: u16,
}

impl Announced {
    /// Checks a host and port as a Sentinel sent them; `None` for anything
    /// that is not an IP address or a host name, or not a port.
    pub(super) fn checked(host: &str, port: &str) -> Option<Self> {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        let plausible = host.parse::<IpAddr>().is_ok()
            || (!host.is_empty()
                && host.len() <= MAX_HOST_LEN
                && !host.starts_with('-')
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
        plausible.then(|| Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The address as the link records the master in use (`host:port`, as
    /// `redis::ConnectionAddr` prints it), for comparison.
    pub fn key(&self, tls: bool) -> String {
        address(&self.host, self.port, tls).to_string()
    }
}

/// The new master of a `+switch-master` message, if the message is about
/// `master` and well-formed; any other message is ignored.
fn switched_to(payload: &[u8], master: &str) -> Option<Announced> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut fields = text.split(' ');
    let (name, _old_host, _old_port, host, port) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() || name != master {
        return None;
    }
    Announced::checked(host, port)
}

/// Whether `e` is a server refusing the login (wrong user or password, a
/// user that is off) or a command the user has no ACL right to.
pub(super) fn refused(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm)
    ) || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

/// One kept connection per Sentinel for the periodic question, opened when
/// first needed, and which Sentinel is asked next.
#[derive(Default)]
pub(super) struct Kept {
    conns: Vec<Option<MultiplexedConnection>>,
    next: usize,
    /// Per Sentinel: not asked again before this after it could not be
    /// reached, and the wait after its next failure. A Sentinel that drops
    /// packets costs a whole connect timeout per attempt; without this,
    /// every Nth check would stall on it and fail (and the session cache,
    /// whose check is bounded by `store.timeout`, would flush each time).
    retry_at: Vec<Option<std::time::Instant>>,
    backoff: Vec<Duration>,
}

/// The wait before asking an unreachable Sentinel again: doubled per
/// failure from [`FIRST_BACKOFF`]'s tenfold, up to a minute.
fn next_backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(FIRST_BACKOFF * 10, Duration::from_secs(60))
}

impl Sentinels {
    pub fn new(
        sentinel: &SentinelConfig,
        data_nodes: &RedisConfig,
        certificates: Option<TlsCertificates>,
        timeouts: (Duration, Duration),
    ) -> Self {
        Self {
            nodes: sentinel.nodes.clone(),
            tls: sentinel.tls,
            // As the Sentinel client uses them: only over TLS.
            certificates: certificates.filter(|_| sentinel.tls),
            username: sentinel.username.clone(),
            password: sentinel.password.clone(),
            master: sentinel.master.clone(),
            data: MasterLogin {
                db: data_nodes.db,
                username: data_nodes.username.clone(),
                password: data_nodes.password.clone(),
            },
            connect_timeout: timeouts.0,
            response_timeout: timeouts.1,
        }
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    fn client(
        &self,
        addr: ConnectionAddr,
        username: Option<&str>,
        password: Option<&SecretString>,
        db: i64,
    ) -> RedisResult<Client> {
        let info = redis::IntoConnectionInfo::into_connection_info(addr)?;
        let mut settings = info.redis_settings().clone().set_db(db);
        if let Some(user) = username {
            settings = settings.set_username(user);
        }
        if let Some(pw) = password {
            settings = settings.set_password(pw.expose());
        }
        let info = info.set_redis_settings(settings);
        match &self.certificates {
            Some(certs) => Client::build_with_tls(info, certs.clone()),
            None => Client::open(info),
        }
    }

    /// A client of Sentinel `index`.
    fn sentinel(&self, index: usize) -> RedisResult<Client> {
        let (host, port) = &self.nodes[index % self.nodes.len()];
        self.client(
            address(host, *port, self.tls),
            self.username.as_deref(),
            self.password.as_ref(),
            0,
        )
    }

    /// A client of the master at `at`, logged in as the data nodes are.
    pub fn master_client(&self, at: &Announced) -> RedisResult<Client> {
        self.client(
            address(&at.host, at.port, self.tls),
            self.data.username.as_deref(),
            self.data.password.as_ref(),
            self.data.db,
        )
    }

    /// Why the gateway may not use the Sentinels or the master they name,
    /// when a refused login or a missing ACL permission is the reason: the
    /// configuration keys to check and the server's answer (which holds no
    /// credential). Asked only after finding the master failed, on fresh
    /// connections, Sentinel by Sentinel until one names a master; `None`
    /// when the logins are accepted, or nothing answers at all (the
    /// original error then says why).
    pub async fn refused_login(&self) -> Option<String> {
        for index in 0..self.nodes.len() {
            let asked = match self.open(index).await {
                Ok(conn) => self.get_master_addr(conn).await,
                Err(e) => Err(e),
            };
            let at = match asked {
                Ok(Some(at)) => at,
                Err(e) if refused(&e) => {
                    return Some(format!(
                        "Sentinel {} refused the gateway's login or command: {e} \
                         (check store.sentinel_username and store.sentinel_password, \
                         and that user's ACL rights on the Sentinels)",
                        self.describe(index)
                    ));
                }
                Ok(None) | Err(_) => continue,
            };
            let limit = self.connect_timeout + self.response_timeout;
            let checked = tokio::time::timeout(limit, async {
                let client = self.master_client(&at)?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("ROLE")
                    .query_async::<redis::Value>(&mut conn)
                    .await
            })
            .await;
            return match checked {
                Ok(Err(e)) if refused(&e) => Some(format!(
                    "the master the Sentinels name ({}) refused the gateway's login or command: \
                     {e} (check store.username and store.password, and that user's ACL \
                     rights on the data nodes)",
                    at.key(self.tls)
                )),
                _ => None,
            };
        }
        None
    }

    fn describe(&self, index: usize) -> String {
        let (host, port) = &self.nodes[index % self.nodes.len()];
        format!("{host}:{port}")
    }

    /// The master the next Sentinel in turn names (`host:port`), asked on
    /// a connection kept from one check to the next. Each check asks
    /// another Sentinel, so when several are configured, two checks in a
    /// row are two Sentinels agreeing; one that cannot be reached or names
    /// no master is passed over for the next. `None` when none answered.
    pub async fn ask(&self, kept: &mut Kept) -> Option<String> {
        if self.nodes.is_empty() {
            return None;
        }
        kept.conns.resize_with(self.nodes.len(), || None);
        kept.retry_at.resize(self.nodes.len(), None);
        kept.backoff.resize(self.nodes.len(), Duration::ZERO);
        for _ in 0..self.nodes.len() {
            let index = kept.next % self.nodes.len();
            kept.next = index + 1;
            let conn = match kept.conns[index].clone() {
                Some(conn) => conn,
                None if kept.retry_at[index].is_some_and(|at| std::time::Instant::now() < at) => {
                    continue;
                }
                None => match self.open(index).await {
                    Ok(conn) => {
                        kept.conns[index] = Some(conn.clone());
                        kept.retry_at[index] = None;
                        kept.backoff[index] = Duration::ZERO;
                        conn
                    }
                    Err(e) => {
                        let wait = next_backoff(kept.backoff[index]);
                        kept.backoff[index] = wait;
                        kept.retry_at[index] = std::time::Instant::now().checked_add(wait);
                        tracing::debug!(sentinel = %self.describe(index), error = %e, "redis sentinel: cannot reach this sentinel to re-check the master");
                        continue;
                    }
                },
            };
            match self.get_master_addr(conn).await {
                Ok(Some(named)) => return Some(named.key(self.tls)),
                Ok(None) => {
                    tracing::debug!(sentinel = %self.describe(index), "redis sentinel: this sentinel names no valid master");
                }
                Err(e) => {
                    tracing::debug!(sentinel = %self.describe(index), error = %e, "redis sentinel: re-check of the master failed");
                    kept.conns[index] = None;
                }
            }
        }
        None
    }

    async fn open(&self, index: usize) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        self.sentinel(index)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    async fn get_master_addr(
        &self,
        mut conn: MultiplexedConnection,
    ) -> RedisResult<Option<Announced>> {
        let named: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master)
            .query_async(&mut conn)
            .await?;
        Ok(named.and_then(|(host, port)| Announced::checked(&host, &port)))
    }

    /// Listens to `+switch-master` on one Sentinel at a time, for as long
    /// as `switched` returns `true` for each new master announced for our
    /// master name and `alive` holds when the subscription is idle (either
    /// saying no: the link is gone, and so is this task; the link also
    /// aborts it when dropped). A lost or refused subscription is made
    /// again on the next Sentinel, after a backoff that doubles up to
    /// [`MAX_BACKOFF`]; the periodic re-check covers a failover announced
    /// meanwhile.
    pub async fn watch<F, Fut>(&self, alive: impl Fn() -> bool, mut switched: F)
    where
        F: FnMut(Announced) -> Fut,
        Fut: Future<Output = bool>,
    {
        if self.nodes.is_empty() {
            return;
        }
        let mut index = 0;
        let mut backoff = FIRST_BACKOFF;
        while alive() {
            let ended = match self.subscribe(index).await {
                Ok((mut sink, mut stream)) => {
                    backoff = FIRST_BACKOFF;
                    tracing::debug!(sentinel = %self.describe(index), "redis sentinel: listening for +switch-master");
                    loop {
                        match tokio::time::timeout(PING_AFTER, stream.next()).await {
                            Ok(Some(msg)) => {
                                let Some(to) = switched_to(msg.get_payload_bytes(), &self.master)
                                else {
                                    continue;
                                };
                                if !switched(to).await {
                                    return;
                                }
                            }
                            Ok(None) => break "the connection closed".to_owned(),
                            Err(_) => {
                                if !alive() {
                                    return;
                                }
                                let limit = self.connect_timeout + self.response_timeout;
                                match tokio::time::timeout(limit, sink.ping::<Vec<String>>()).await
                                {
                                    Ok(Ok(_)) => {}
                                    Ok(Err(e)) => break format!("ping failed: {e}"),
                                    Err(_) => break "ping timed out".to_owned(),
                                }
                            }
                        }
                    }
                }
                Err(e) => e.to_string(),
            };
            tracing::warn!(sentinel = %self.describe(index), why = %ended, retry_in = ?backoff, "redis sentinel: +switch-master subscription lost; subscribing on the next sentinel");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            index = (index + 1) % self.nodes.len();
        }
    }

    async fn subscribe(
        &self,
        index: usize,
    ) -> RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        let limit = self.connect_timeout + self.response_timeout;
        let timed_out = || redis::RedisError::from((redis::ErrorKind::Io, "timed out"));
        let client = self.sentinel(index)?;
        let pubsub = tokio::time::timeout(limit, client.get_async_pubsub())
            .await
            .map_err(|_| timed_out())??;
        let (mut sink, stream) = pubsub.split();
        tokio::time::timeout(limit, sink.subscribe(SWITCH_MASTER))
            .await
            .map_err(|_| timed_out())??;
        Ok((sink, stream))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn refused_logins_and_missing_rights_are_told_from_other_failures() {
        let no_perm = ErrorKind::Server(ServerErrorKind::NoPerm);
        let cases: [(RedisError, bool); 5] = [
            (
                (ErrorKind::AuthenticationFailed, "wrong password").into(),
                true,
            ),
            (
                (no_perm, "no permissions to run the 'role' command").into(),
                true,
            ),
            (
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
                false,
            ),
            ((ErrorKind::Io, "timed out").into(), false),
            (
                (
                    ErrorKind::Server(ServerErrorKind::ResponseError),
                    "unknown command",
                )
                    .into(),
                false,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(refused(&e), want, "{e}");
        }
    }

    #[test]
    fn an_unreachable_sentinel_is_asked_again_later_and_later_up_to_a_minute() {
        let mut wait = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..12 {
            wait = next_backoff(wait);
            waits.push(wait.as_secs_f64());
        }
        assert_eq!(waits[..4], [1.0, 2.0, 4.0, 8.0]);
        assert_eq!(waits[11], 60.0);
    }

    use super::*;

    fn at(host: &str, port: u16) -> Option<Announced> {
        Some(Announced {
            host: host.to_owned(),
            port,
        })
    }

    #[test]
    fn a_switch_master_message_names_the_new_master_of_our_master_name_only() {
        let cases: &[(&[u8], Option<Announced>)] = &[
            (
                b"sessions 127.0.0.1 6379 127.0.0.1 6380",
                at("127.0.0.1", 6380),
            ),
            (b"sessions ::1 6379 ::1 6380", at("::1", 6380)),
            (
                b"sessions a.example 6379 redis-2.example 6380",
                at("redis-2.example", 6380),
            ),
            // Another master's failover.
            (b"other 127.0.0.1 6379 127.0.0.1 6380", None),
            (b"sessions-2 127.0.0.1 6379 127.0.0.1 6380", None),
            // Malformed or hostile.
            (b"", None),
            (b"sessions", None),
            (b"sessions 127.0.0.1 6379 127.0.0.1", None),
            (b"sessions 127.0.0.1 6379 127.0.0.1 6380 extra", None),
            (b"sessions 127.0.0.1 6379 127.0.0.1 0", None),
            (b"sessions 127.0.0.1 6379 127.0.0.1 65536", None),
            (b"sessions 127.0.0.1 6379 127.0.0.1 -1", None),
            (b"sessions 127.0.0.1 6379 127.0.0.1 +80", None),
            (b"sessions 127.0.0.1 6379 -oProxy 6380", None),
            (b"sessions 127.0.0.1 6379 host/evil 6380", None),
            (b"sessions 127.0.0.1 6379 a@b 6380", None),
            (b"sessions  127.0.0.1 6379 127.0.0.1 6380", None),
            (b"sessions 1 2 \xff\xfe 6380", None),
        ];
        for (payload, want) in cases {
            assert_eq!(
                &switched_to(payload, "sessions"),
                want,
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        let long = format!("sessions h 1 {} 6380", "a".repeat(MAX_HOST_LEN + 1));
        assert_eq!(switched_to(long.as_bytes(), "sessions"), None);
    }

    #[test]
    fn an_announced_master_is_recorded_as_the_link_records_the_one_in_use() {
        let named = Announced::checked("10.0.0.2", "6380").expect("valid");
        assert_eq!(named.key(false), "10.0.0.2:6380");
        assert_eq!(named.key(true), "10.0.0.2:6380");
    }
}
