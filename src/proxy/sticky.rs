//! One upstream HTTP/1.1 connection kept per browser connection
//! (`proxy.sticky_connections`, on by default).
//!
//! A browser (or a fronting proxy) sends its requests on one HTTP/1.1
//! connection one after another, and the gateway answers them in the same
//! order: the upstream connection that carried the previous request is free
//! again when the next one arrives. Keeping it with the browser's
//! connection ([`UpstreamSlot`], a request extension the server adds) spares
//! every request the shared pool's checkout and return: a lock, a keyed
//! lookup, a boxed connect future and the pooled wrapper, about 2–3 µs of
//! the gateway's CPU per request on the benchmark machine
//! (`docs/benchmarks.md`, "The floor"), for one connection per browser
//! connection, which `server.max_connections` already bounds.
//!
//! Only what the pool would send over HTTP/1.1 anyway takes this path: a
//! browser request over HTTP/1.x that leaves its connection open
//! (`headers::keeps_alive`: a single-use connection's request takes a
//! pooled connection, which outlives it; HTTP/2 streams of one connection
//! run side by side, and would queue behind each other here), to an
//! `http://` upstream without `upstream_http2`, that is not a WebSocket
//! handshake. A browser connection keeps one connection per upstream it
//! calls, up to [`UPSTREAMS_KEPT`].
//! Everything else, and every retry of a refused token or a DPoP nonce,
//! uses the pool. A kept connection the upstream has closed is replaced
//! by a new one; a request it never started to write is sent again over
//! the pool, as the pool itself does with a connection that closed while
//! idle, and one it wrote before the exchange failed is never sent again
//! (502: it may have had effects). A connection whose exchange failed
//! leaves the slot at once; one that hyper would not use again (bytes
//! nobody asked for, an unfinished or abandoned answer) is closed by
//! hyper, and is never ready for the next request
//! (`tests/e2e/upstream_hostile.rs` holds both paths to the same rules).

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;

use super::client::HttpClient;
use super::forward::{UpstreamError, caused_by_timeout};

/// An upstream connection one browser connection keeps: which upstream,
/// the sender of its HTTP/1.1 connection, and when a request last used it.
struct Held {
    upstream: Authority,
    sender: SendRequest<Body>,
    /// Tells this connection from a later one in the same slot.
    id: u64,
    used: Instant,
}

/// How many upstreams one browser connection keeps a connection to: an
/// SPA whose calls alternate between a few routes keeps one to each, and
/// the least recently used one is closed beyond this.
const UPSTREAMS_KEPT: usize = 4;

type Shared = Arc<Mutex<Vec<Held>>>;

/// A browser connection's place for its upstream connections (one per
/// upstream, up to [`UPSTREAMS_KEPT`]), shared by the requests of that
/// connection (one at a time on HTTP/1.x).
#[derive(Clone, Default)]
pub struct UpstreamSlot(Shared);

/// Why an upstream request got no response, from the pool or a kept
/// connection.
pub enum SendError {
    /// hyper's or the pool's error (`forward::map_client_error` reads it).
    Pool(hyper_util::client::legacy::Error),
    /// Opening the connection or the exchange on it failed.
    Upstream(UpstreamError),
}

/// How a kept connection is opened and how long it may sit idle.
pub struct Keeping {
    /// The pool's own TCP connector (`client::tcp_connector`).
    pub connector: HttpConnector,
    /// `proxy.pool_idle_timeout`: a kept connection unused this long is
    /// closed, as the pool closes its idle ones.
    pub idle_timeout: Duration,
    /// `proxy.max_response_header_bytes`, as the pool's.
    pub max_response_header_bytes: usize,
}

impl UpstreamSlot {
    /// Sends `req` (absolute URI, `Host` set) to `upstream` over this
    /// browser connection's kept connection, opening one if it has none
    /// for that upstream or the one it has was closed. A request the kept
    /// connection did not start to write (it closed in between) goes over
    /// `pool` instead.
    pub async fn send(
        &self,
        upstream: &Authority,
        mut req: Request<Body>,
        pool: &HttpClient,
        keeping: &Keeping,
    ) -> Result<Response<Incoming>, SendError> {
        let (id, mut sender) = match self.take(upstream) {
            Some(kept) => kept,
            // Boxed: once per browser connection, and inline it would make
            // every request's future larger.
            None => Box::pin(self.connect(req.uri().clone(), keeping))
                .await
                .map_err(SendError::Upstream)?,
        };
        // Ready at once unless the previous response's end is still being
        // read; a closed connection errs here and the pool takes over.
        if sender.ready().await.is_err() {
            return pool.request(req).await.map_err(SendError::Pool);
        }
        let absolute = std::mem::take(req.uri_mut());
        *req.uri_mut() = origin_form(&absolute);
        let answer = sender.try_send_request(req);
        // The sender is free for this browser connection's next request
        // once this response has been read; the next request waits for that
        // (`ready` above), which on HTTP/1.x it already has.
        self.put(upstream, id, sender);
        match answer.await {
            Ok(resp) => Ok(resp),
            Err(mut e) => {
                // A failed exchange has ended its connection: it leaves
                // the slot now rather than at the next request's look.
                self.forget(id);
                match e.take_message() {
                    Some(mut unsent) => {
                        *unsent.uri_mut() = absolute;
                        pool.request(unsent).await.map_err(SendError::Pool)
                    }
                    None => Err(SendError::Upstream(upstream_failed(&e.into_error()))),
                }
            }
        }
    }

    /// Drops connection `id` from the slot, if it is still there.
    fn forget(&self, id: u64) {
        let mut kept = lock(&self.0);
        if let Some(at) = kept.iter().position(|h| h.id == id) {
            kept.swap_remove(at);
        }
    }

    /// The kept connection to `upstream`, if there is one and it is still
    /// open (a closed one is dropped).
    fn take(&self, upstream: &Authority) -> Option<(u64, SendRequest<Body>)> {
        let mut kept = lock(&self.0);
        let at = kept.iter().position(|h| h.upstream == *upstream)?;
        let held = kept.swap_remove(at);
        (!held.sender.is_closed()).then_some((held.id, held.sender))
    }

    /// Keeps `sender` for the next request to `upstream`; beyond
    /// [`UPSTREAMS_KEPT`] the least recently used connection is dropped,
    /// which closes it.
    fn put(&self, upstream: &Authority, id: u64, sender: SendRequest<Body>) {
        let mut kept = lock(&self.0);
        if kept.len() >= UPSTREAMS_KEPT
            && let Some(oldest) = (0..kept.len()).min_by_key(|&i| kept[i].used)
        {
            kept.swap_remove(oldest);
        }
        kept.push(Held {
            upstream: upstream.clone(),
            sender,
            id,
            used: Instant::now(),
        });
    }

    /// A new HTTP/1.1 connection to `to`'s upstream (an `http://` URI),
    /// opened as the pool opens them. Its task runs on this worker until
    /// the upstream closes it, or its sender is dropped (the browser
    /// connection ended, another upstream took its place) or closed for
    /// idling (`keeping.idle_timeout`).
    async fn connect(
        &self,
        to: Uri,
        keeping: &Keeping,
    ) -> Result<(u64, SendRequest<Body>), UpstreamError> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        // The connector is always ready: no `poll_ready` needed.
        let io = tower::Service::call(&mut keeping.connector.clone(), to)
            .await
            .map_err(|e| {
                if caused_by_timeout(&e) {
                    UpstreamError::Timeout
                } else {
                    UpstreamError::Unavailable("connection failed")
                }
            })?;
        let (sender, conn) = super::client::http1_builder(keeping.max_response_header_bytes)
            .handshake(io)
            .await
            .map_err(|_| UpstreamError::Unavailable("connection failed"))?;
        let idle_timeout = keeping.idle_timeout;
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut conn = pin!(conn);
            // `checked_add`: an idle timeout too large for a deadline means
            // never closing for idleness, not a panic.
            let mut idle_check = Instant::now().checked_add(idle_timeout);
            loop {
                tokio::select! {
                    ended = conn.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "kept upstream connection ended with an error");
                        }
                        return;
                    }
                    () = sleep_until_some(idle_check) => {
                        idle_check = close_if_idle(&slot, id, idle_timeout);
                    }
                }
            }
        });
        Ok((id, sender))
    }
}

/// Drops connection `id`'s sender if it has been idle for `idle`, which
/// closes the connection; else when to look again (`None`: never, the
/// browser connection is gone and the connection with it).
fn close_if_idle(slot: &Weak<Mutex<Vec<Held>>>, id: u64, idle: Duration) -> Option<Instant> {
    let now = Instant::now();
    let slot = slot.upgrade()?;
    let mut kept = lock(&slot);
    let Some(at) = kept.iter().position(|h| h.id == id) else {
        // Taken by a request right now (it puts it back), or dropped (then
        // the connection ends, and its task with it).
        return now.checked_add(idle);
    };
    let held = &mut kept[at];
    if !held.sender.is_ready() {
        // A response is still being read: idle time counts from its end,
        // which is no earlier than now.
        held.used = now;
        return now.checked_add(idle);
    }
    if now.duration_since(held.used) >= idle {
        kept.swap_remove(at);
        return None;
    }
    // Used since: look again when it could be idle.
    held.used.checked_add(idle)
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn lock(slot: &Mutex<Vec<Held>>) -> std::sync::MutexGuard<'_, Vec<Held>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `/path?query` of an absolute URI: what an HTTP/1.1 request to an origin
/// server names (RFC 9112 §3.2.1), as the pool writes it.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if pq.as_str() != "" => Uri::from(pq.clone()),
        _ => Uri::from(PathAndQuery::from_static("/")),
    }
}

/// What a failed exchange on a kept connection means for the browser.
fn upstream_failed(e: &hyper::Error) -> UpstreamError {
    if super::streamed::client_body_stalled(e) {
        return UpstreamError::ClientBodyStalled;
    }
    if caused_by_timeout(e) {
        return UpstreamError::Timeout;
    }
    UpstreamError::Unavailable("request failed")
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::sync::mpsc;

    use tokio::io::AsyncReadExt as _;

    use super::*;
    use crate::config::ProxyConfig;
    use crate::proxy::client::{Versions, build_client, tcp_connector};

    /// The request line of the next request on `conn` (its head read
    /// whole; the test's requests have no body).
    fn request_line(conn: &mut std::net::TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut byte).expect("read request");
            assert_eq!(n, 1, "the connection closed mid-request");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        head.lines().next().unwrap_or_default().to_owned()
    }

    /// The race a kept connection loses without harm: the upstream closes
    /// it at rest, and the close reaches the gateway together with the
    /// browser's next request, which is handed to the connection before
    /// its task has read the close. The connection never writes it (it
    /// has read its end of file first); the request comes back unsent and
    /// goes over the pool, once, and the closed connection is not kept.
    ///
    /// Made deterministic on this single-threaded runtime: the close and
    /// a probe byte are both in the kernel before the runtime next polls
    /// for I/O, and after that poll it runs the test's own future (woken
    /// by the probe) before the connection's task (woken by the close).
    #[tokio::test]
    async fn a_request_handed_to_a_connection_closing_at_rest_goes_once_over_the_pool() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (kept_tx, kept_rx) = mpsc::channel();
        let (seen_tx, seen_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (conn, body) in [(1, "kept"), (2, "pool")] {
                let (mut stream, _) = listener.accept().expect("accept");
                let line = request_line(&mut stream);
                let _ = seen_tx.send((conn, line));
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{body}");
                stream.write_all(answer.as_bytes()).expect("answer");
                if conn == 1 {
                    let _ = kept_tx.send(stream);
                } else {
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest);
                }
            }
        });
        let config = ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            sticky_connections: true,
            tls_ca_pem: None,
            tls_client: None,
            max_response_header_bytes: 64 * 1024,
        };
        let pool = build_client(&config, Versions::Http1OrAlpn).expect("pool");
        let keeping = Keeping {
            connector: tcp_connector(&config),
            idle_timeout: config.pool_idle_timeout,
            max_response_header_bytes: config.max_response_header_bytes,
        };
        let upstream: Authority = addr.to_string().parse().expect("authority");
        let request = |path: &str| {
            Request::get(format!("http://{addr}{path}"))
                .header(http::header::HOST, addr.to_string())
                .body(Body::empty())
                .expect("request")
        };
        let body_of = |resp: Response<Incoming>| async move {
            use http_body_util::BodyExt as _;
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let slot = UpstreamSlot::default();
        let Ok(first) = slot
            .send(&upstream, request("/first"), &pool, &keeping)
            .await
        else {
            panic!("the first request failed");
        };
        assert_eq!(body_of(first).await, "kept");
        // The kept connection's task reads to rest.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let kept = kept_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the upstream's side");
        let (probe_in, mut probe_out) = tokio::net::UnixStream::pair().expect("probe");
        drop(kept);
        probe_in.try_write(b"x").expect("probe byte");
        let mut byte = [0u8; 1];
        probe_out.read_exact(&mut byte).await.expect("probe");
        // No await before the request is handed over.
        let Ok(second) = slot
            .send(&upstream, request("/second"), &pool, &keeping)
            .await
        else {
            panic!("the request the closing connection did not take failed");
        };
        assert_eq!(body_of(second).await, "pool");
        let seen: Vec<(i32, String)> = seen_rx.try_iter().collect();
        assert_eq!(
            seen,
            [
                (1, "GET /first HTTP/1.1".to_owned()),
                (2, "GET /second HTTP/1.1".to_owned())
            ],
            "each request once, the second on the pool's connection"
        );
        assert!(
            lock(&slot.0).is_empty(),
            "the closed connection is not kept, and the pool's is not taken"
        );
    }

    #[test]
    fn an_absolute_uri_is_sent_in_origin_form() {
        let cases = [
            ("http://api:9100/v1/items?x=1", "/v1/items?x=1"),
            ("http://api:9100/", "/"),
            ("http://api:9100", "/"),
        ];
        for (absolute, origin) in cases {
            let uri: Uri = absolute.parse().expect("uri");
            assert_eq!(origin_form(&uri).to_string(), origin, "{absolute}");
        }
    }
}
