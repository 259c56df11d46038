//! The audit trail: one structured event per security-relevant fact (a
//! login, a refresh, a logout, a session ended by someone or something,
//! a refusal, an admin call), written as one JSON line each to the sink
//! `[audit] output` names — apart from the diagnostic log, so it can be
//! shipped, retained and access-controlled on its own terms.
//!
//! Owns the event type ([`Event`], [`Action`], [`Outcome`]), the request
//! facts every event carries ([`Origin`]), and the writer ([`Auditor`]).
//! Events are serialised where they happen and handed to one writer thread
//! per gateway over a bounded queue: a slow disk never holds a request up;
//! when the queue is full the event is dropped and counted
//! (`oidc_bff_audit_events_dropped_total`). The schema is in
//! `docs/operations.md` ("Audit trail").
//!
//! What never goes in an event: a token, a cookie value, an authorization
//! code, a claim other than `sub`, or the session ID itself (sessions are
//! named by [`session_hash`], a one-way hash of the store's handle).

use std::io::Write;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{AuditConfig, AuditOutput};
use crate::log_time::civil_from_days;
use crate::session::Session;
use crate::session::cookie::StoreId;

/// The longest user agent recorded, in characters (the rest is cut).
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// What happened. One value per kind of fact; the reason says more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A callback completed (success) or refused (failure, with a reason).
    Login,
    /// An access-token refresh: success, or failure with a reason.
    Refresh,
    /// A user ended their own session (`/auth/logout`).
    Logout,
    /// A session ended by someone or something other than its owner's
    /// logout: an admin, the provider, a failed refresh, a newer login of
    /// the same browser, the user from another session.
    Revocation,
    /// A session ended because the user went over `session.max_per_user`.
    Eviction,
    /// A back-channel logout request from the provider.
    BackchannelLogout,
    /// A front-channel logout request (the provider's logout page framing
    /// `/auth/frontchannel-logout`).
    FrontchannelLogout,
    /// A request refused by a route's policy (or an origin rule).
    PolicyRefusal,
    /// A state-changing request refused for missing anti-CSRF proof.
    CsrfRefusal,
    /// A call to the admin API.
    AdminAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

/// One fact, as the code that observed it describes it. Request facts
/// (time, request ID, client address, user agent) are added by
/// [`Auditor::record`] from the [`Origin`].
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub action: Action,
    pub outcome: Outcome,
    /// Why: a short fixed word (`state_invalid`, `route_policy`, ...).
    pub reason: Option<&'static str>,
    /// Who ended a session: `user`, `admin`, `provider`, `system`, `login`.
    pub actor: Option<&'static str>,
    pub session: Option<&'a StoreId>,
    /// The user's `sub`.
    pub user: Option<&'a str>,
    /// The configured route (its path prefix), for refusals on a route.
    pub route: Option<&'a str>,
    /// The admin API operation.
    pub operation: Option<&'static str>,
    /// How many sessions an admin call or a back-channel logout ended.
    pub sessions: Option<usize>,
}

impl<'a> Event<'a> {
    pub fn new(action: Action, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            reason: None,
            actor: None,
            session: None,
            user: None,
            route: None,
            operation: None,
            sessions: None,
        }
    }

    pub fn success(action: Action) -> Self {
        Self::new(action, Outcome::Success)
    }

    pub fn failure(action: Action, reason: &'static str) -> Self {
        Self::new(action, Outcome::Failure).reason(reason)
    }

    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn actor(mut self, actor: &'static str) -> Self {
        self.actor = Some(actor);
        self
    }

    pub fn session(mut self, id: &'a StoreId) -> Self {
        self.session = Some(id);
        self
    }

    pub fn user(mut self, sub: &'a str) -> Self {
        self.user = Some(sub);
        self
    }

    pub fn route(mut self, route: &'a str) -> Self {
        self.route = Some(route);
        self
    }

    pub fn operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }

    pub fn sessions(mut self, n: usize) -> Self {
        self.sessions = Some(n);
        self
    }
}

/// The request an event happened in: borrowed, so naming it costs nothing
/// unless an event is written. [`Origin::NONE`] for background work.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    request: Option<(&'a HeaderMap, IpAddr)>,
}

impl<'a> Origin<'a> {
    /// Not in a request (a background task).
    pub const NONE: Origin<'static> = Origin { request: None };

    /// A request's headers and its TCP peer.
    pub fn new(headers: &'a HeaderMap, peer: IpAddr) -> Self {
        Self {
            request: Some((headers, peer)),
        }
    }

    pub fn of_request<B>(req: &'a http::Request<B>) -> Self {
        Self::new(req.headers(), peer_ip_of(req.extensions()))
    }

    pub fn of_parts(parts: &'a http::request::Parts) -> Self {
        Self::new(&parts.headers, peer_ip_of(&parts.extensions))
    }
}

/// An extractor owning what an [`Origin`] borrows, for handlers that also
/// consume the body (the admin API): a copy of the headers and the peer.
pub struct RequestFacts {
    headers: HeaderMap,
    peer: IpAddr,
}

impl RequestFacts {
    pub fn origin(&self) -> Origin<'_> {
        Origin::new(&self.headers, self.peer)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestFacts {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            headers: parts.headers.clone(),
            peer: peer_ip_of(&parts.extensions),
        })
    }
}

/// One line of the trail, as serialised. Field order is the schema's.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    action: Action,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'static str>,
    request_id: Option<&'a str>,
    session: Option<String>,
    user: Option<&'a str>,
    client_ip: Option<IpAddr>,
    user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions: Option<usize>,
}

/// A session's name in the trail: the first 128 bits of SHA-256 over a
/// fixed label and the store handle, hex. Stable for a session, the same in
/// every event about it, and neither the cookie nor the admin API's handle.
pub fn session_hash(id: &StoreId) -> String {
    let mut h = Sha256::new();
    h.update(b"oidc-bff audit session\0");
    h.update(id.as_str().as_bytes());
    crate::session::cookie::hex(&h.finalize()[..16])
}

/// A session's user (`sub`), for its events ("" if the claims lack one,
/// or do not read: a corrupt record, refused where its claims are used).
pub fn subject(session: &Session) -> String {
    let claims = session.claims().unwrap_or_default();
    claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Writes events to the configured sink, off the request path. Cheap to
/// clone; the writer thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Auditor(Arc<Shared>);

struct Shared {
    /// `None`: audit is off.
    queue: Option<SyncSender<Vec<u8>>>,
    dropped: Counter,
    client_address: ClientResolver,
    /// Hears from the writer thread once it has written everything queued
    /// and flushed (see `Drop`).
    finished: Mutex<Option<Receiver<()>>>,
}

/// How long the last clone's drop waits for queued events to be written.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// When the gateway stops (the last clone goes with the process's state),
/// the events still queued are written before it exits, for at most
/// [`DRAIN_WAIT`] (a sink that is stuck must not hold the exit up).
impl Drop for Shared {
    fn drop(&mut self) {
        drop(self.queue.take());
        let finished = self.finished.get_mut().map_or(None, Option::take);
        if let Some(rx) = finished {
            let _ = rx.recv_timeout(DRAIN_WAIT);
        }
    }
}

/// How the client's address is read from a request's headers and TCP
/// peer: `extract::client::client_ip` under the gateway's trusted proxies,
/// handed in by the state (so this module stays below `extract`).
pub type ClientResolver = Arc<dyn Fn(&HeaderMap, IpAddr) -> IpAddr + Send + Sync>;

/// The TCP peer of a request (unspecified without a listener).
fn peer_ip_of(extensions: &http::Extensions) -> IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

fn peer_only() -> ClientResolver {
    Arc::new(|_: &HeaderMap, peer: IpAddr| peer.to_canonical())
}

impl Auditor {
    /// Opens the sink (a file is opened here, so a bad path stops the
    /// start-up naming `audit.output`) and starts its writer thread.
    pub fn open(
        config: &AuditConfig,
        client_address: ClientResolver,
        dropped: Counter,
    ) -> anyhow::Result<Self> {
        let sink: Box<dyn Write + Send> = match &config.output {
            AuditOutput::Off => return Ok(Self::off_with(client_address, dropped)),
            AuditOutput::Stdout => Box::new(std::io::stdout()),
            AuditOutput::Stderr => Box::new(std::io::stderr()),
            AuditOutput::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| {
                        format!(
                            "cannot open the audit trail file {} (audit.output)",
                            path.display()
                        )
                    })?,
            ),
        };
        Self::start(sink, config.queue, client_address, dropped)
    }

    /// A writer thread over `sink`, behind a queue of `queue` events.
    fn start(
        sink: Box<dyn Write + Send>,
        queue: usize,
        client_address: ClientResolver,
        dropped: Counter,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = sync_channel(queue);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("oidc-bff-audit".into())
            .spawn(move || {
                write_lines(&rx, sink);
                let _ = done_tx.send(());
            })
            .context("cannot start the audit writer thread")?;
        Ok(Self(Arc::new(Shared {
            queue: Some(tx),
            dropped,
            client_address,
            finished: Mutex::new(Some(done_rx)),
        })))
    }

    /// An auditor that writes nothing (`audit.output = "off"`).
    pub fn off() -> Self {
        Self::off_with(peer_only(), Counter::default())
    }

    fn off_with(client_address: ClientResolver, dropped: Counter) -> Self {
        Self(Arc::new(Shared {
            queue: None,
            dropped,
            client_address,
            finished: Mutex::new(None),
        }))
    }

    /// Whether events are written at all (`audit.output` is not `off`), so
    /// a caller can skip preparing one.
    pub fn enabled(&self) -> bool {
        self.0.queue.is_some()
    }

    /// Queues one event for the writer; never waits. A full queue drops
    /// the event and counts it.
    pub fn record(&self, origin: Origin<'_>, event: Event<'_>) {
        let Some(queue) = &self.0.queue else {
            return;
        };
        let mut line = match serde_json::to_vec(&self.line(origin, &event)) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "audit event not serialisable; dropped");
                self.0.dropped.inc();
                return;
            }
        };
        line.push(b'\n');
        match queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.0.dropped.inc();
            }
        }
    }

    fn line<'a>(&self, origin: Origin<'a>, event: &Event<'a>) -> Line<'a> {
        let (request_id, client, user_agent) = match origin.request {
            Some((headers, peer)) => (
                headers.get("x-request-id").and_then(|v| v.to_str().ok()),
                Some((self.0.client_address)(headers, peer)),
                headers.get(http::header::USER_AGENT).map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .chars()
                        .take(MAX_USER_AGENT_CHARS)
                        .collect()
                }),
            ),
            None => (None, None, None),
        };
        Line {
            time: rfc3339_now(),
            action: event.action,
            outcome: event.outcome,
            reason: event.reason,
            actor: event.actor,
            request_id,
            session: event.session.map(session_hash),
            user: event.user,
            client_ip: client,
            user_agent,
            route: event.route,
            operation: event.operation,
            sessions: event.sessions,
        }
    }
}

/// The writer thread: lines in arrival order, flushed whenever the queue
/// is empty (so a reader sees each event promptly, and a burst is written
/// in few system calls).
fn write_lines(rx: &Receiver<Vec<u8>>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    let mut failing = false;
    while let Ok(mut line) = rx.recv() {
        loop {
            if let Err(e) = out.write_all(&line) {
                if !failing {
                    tracing::error!(error = %e, "cannot write the audit trail");
                }
                failing = true;
            }
            match rx.try_recv() {
                Ok(next) => line = next,
                Err(_) => break,
            }
        }
        match out.flush() {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "cannot write the audit trail");
                }
                failing = true;
            }
        }
    }
    let _ = out.flush();
}

/// Now, as RFC 3339 in UTC with milliseconds (`2026-12-05T04:00:00.123Z`).
fn rfc3339_now() -> String {
    rfc3339(crate::clock::unix_now_millis())
}

fn rfc3339(millis: u64) -> String {
    let secs = millis / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_443_199_999), "2026-12-05T03:59:59.999Z");
        assert_eq!(rfc3339(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn the_session_hash_is_stable_and_is_not_the_handle() {
        let id = StoreId::parse(&"ab".repeat(32)).expect("id");
        let h = session_hash(&id);
        assert_eq!(h, session_hash(&id));
        assert_eq!(h.len(), 32);
        assert!(!id.as_str().contains(&h));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = sync_channel(1);
        let dropped = Counter::default();
        let auditor = Auditor(Arc::new(Shared {
            queue: Some(tx),
            dropped: dropped.clone(),
            client_address: peer_only(),
            finished: Mutex::new(None),
        }));
        for _ in 0..3 {
            auditor.record(Origin::NONE, Event::success(Action::Logout));
        }
        assert_eq!(dropped.get(), 2);
    }

    /// A sink that takes 20 ms per write, like a disk that is behind.
    struct SlowSink(Arc<Mutex<Vec<u8>>>);

    impl Write for SlowSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_millis(20));
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_queued_when_the_gateway_stops_are_written_before_it_exits() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Box::new(SlowSink(written.clone()));
        let auditor = Auditor::start(sink, 100, peer_only(), Counter::default()).expect("start");
        for _ in 0..20 {
            auditor.record(Origin::NONE, Event::success(Action::Logout));
            // Each event its own write: the writer falls behind.
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(auditor);
        let text = String::from_utf8(written.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 20, "{text}");
    }

    #[test]
    fn an_audit_file_that_cannot_be_opened_names_the_key() {
        let config = AuditConfig {
            output: AuditOutput::File("/nonexistent-dir/oidc-bff/audit.jsonl".into()),
            queue: 10,
        };
        let Err(e) = Auditor::open(&config, peer_only(), Counter::default()) else {
            panic!("opened a file in a directory that does not exist");
        };
        assert!(format!("{e:#}").contains("audit.output"), "{e:#}");
    }

    #[test]
    fn a_line_carries_the_request_facts_and_an_escaped_bounded_user_agent() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "req-1".parse().expect("value"));
        let ua = format!("evil\"agent\\{}", "x".repeat(400));
        headers.insert(http::header::USER_AGENT, ua.parse().expect("value"));
        let id = StoreId::parse(&"cd".repeat(32)).expect("id");
        let auditor = Auditor::off();
        let line = auditor.line(
            Origin::new(&headers, IpAddr::from([0, 0, 0, 0])),
            &Event::failure(Action::Refresh, "invalid_grant")
                .session(&id)
                .user("alice"),
        );
        let json: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&line).expect("json")).expect("parse");
        assert_eq!(json["action"], "refresh");
        assert_eq!(json["outcome"], "failure");
        assert_eq!(json["reason"], "invalid_grant");
        assert_eq!(json["request_id"], "req-1");
        assert_eq!(json["user"], "alice");
        assert_eq!(json["session"], session_hash(&id).as_str());
        assert_eq!(json["client_ip"], "0.0.0.0");
        let agent = json["user_agent"].as_str().expect("ua");
        assert_eq!(agent.chars().count(), MAX_USER_AGENT_CHARS);
        assert!(agent.starts_with("evil\"agent\\"));
        assert!(json.get("actor").is_none());
    }
}
