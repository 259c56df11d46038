//! A measuring tool, not a product: the floor of a Rust/tokio HTTP/1 proxy
//! on this machine (issue 10, the proxy path; docs/benchmarks.md, "The
//! floor: what a Rust proxy costs here"). It answers two questions before
//! anyone builds a proxy path that bypasses hyper: what does the cheapest
//! Rust proxy cost per request here, and what does hyper alone cost?
//!
//!     cargo build --release --example floor_proxy
//!     target/release/examples/floor_proxy --mode raw \
//!         --listen 127.0.0.1:19209 --upstream 127.0.0.1:19201
//!
//! Every mode does the same rewrite of a GET: the path as received, `Host`
//! set to the upstream's address, the client's headers without `Cookie`
//! (and without `Authorization`, `X-Forwarded-For` and `Connection`, which
//! are replaced or hop-by-hop), plus a fixed 60-character
//! `Authorization: Bearer …` and the client's IP as `X-Forwarded-For`. A
//! request with a body, or not a GET, gets 400. The modes:
//!
//! - `raw`: no HTTP library but `httparse`. One task per client connection
//!   owns the client socket and, opened on its first request, one upstream
//!   keep-alive connection of its own; request and response heads are
//!   parsed in place in buffers reused for the connection's life, the
//!   upstream request is written from one reused buffer, and the response
//!   (head as received, `Content-Length` framing only) is copied back. It
//!   skips everything a product must do: no request-smuggling checks beyond
//!   refusing bodies, no timeouts, no chunked bodies (502), no limits but
//!   the 16 KiB head buffer, no hop-by-hop cleaning of responses, no
//!   `Expect`, no HTTP/1.0 keep-alive, no pool shared between connections.
//! - `hyper-conn`: hyper's HTTP/1 server (`hyper::server::conn::http1`,
//!   its defaults, no timer) and, per client connection, one
//!   `hyper::client::conn::http1` connection to the upstream (no pool).
//! - `hyper-legacy`: the same server, and one `hyper_util` legacy `Client`
//!   per worker with the gateway's settings (`src/proxy/client.rs`: the
//!   rustls connector in `https_or_http` mode, HTTP/1 and HTTP/2 enabled,
//!   a pool with a timer and a 90 s idle timeout).
//! - `hyper-auto`: `hyper-legacy` behind the server the gateway runs
//!   (`src/server.rs`: `hyper_util`'s auto builder, HTTP/1 or HTTP/2 by
//!   sniffing, a timer with the 10 s header deadline, the 32 KiB head
//!   limit, upgrades allowed): the gateway's hyper, without axum, the
//!   router, sessions, metrics, logs and the connection watchdog.
//!
//! The runtime is shaped like the gateway's (`src/server.rs`): one thread
//! per core, each a current-thread tokio runtime with its own SO_REUSEPORT
//! listener, and mimalloc as the allocator (`src/main.rs`). SIGINT or
//! SIGTERM ends the process at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::header::{AUTHORIZATION, CONNECTION, COOKIE, HOST};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The token every mode attaches: the size of a short opaque access token,
/// so the upstream request is as long as a real one would be.
const BEARER: &str = "Bearer floor-proxy-fixed-access-token-0123456789abcdefghijklmnopqrs";
const _: () = assert!(BEARER.len() == "Bearer ".len() + 60);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[derive(Parser, Clone, Copy)]
#[command(about = "The floor of a Rust HTTP/1 proxy: a measuring tool (docs/benchmarks.md)")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Where to listen, e.g. 127.0.0.1:19209.
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream (plain HTTP/1.1), e.g. 127.0.0.1:19201.
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads; 0: one per core, as the gateway's default.
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Raw,
    HyperConn,
    HyperLegacy,
    HyperAuto,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // SO_REUSEPORT would let this share a port with a process already
    // there: make sure nobody listens first (as `server::run` does).
    drop(std::net::TcpListener::bind(args.listen)?);
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for index in 0..workers {
        let ready = ready_tx.clone();
        std::thread::Builder::new()
            .name(format!("floor-{index}"))
            .spawn(move || worker(args, ready))?;
    }
    drop(ready_tx);
    for _ in 0..workers {
        ready_rx.recv()??;
    }
    eprintln!(
        "floor_proxy: {:?} on {} → {}, {workers} workers",
        args.mode, args.listen, args.upstream
    );
    // Handled, not left to the default: a background job of a script
    // ignores SIGINT, and bench/run stops its processes with it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })
}

/// What one worker's connections share.
struct Ctx {
    mode: Mode,
    upstream: SocketAddr,
    /// `Host` for the upstream: its address.
    host: HeaderValue,
    authority: Authority,
    /// `hyper-legacy` and `hyper-auto`: this worker's pooled client.
    client: Option<LegacyClient>,
    /// `hyper-auto`: the gateway's server settings.
    auto: Option<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
}

type LegacyClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Incoming>;

/// What the hyper modes answer with: the upstream's streamed body, or an
/// empty one for their own 400 and 502 (no boxing).
type FloorBody = Either<Incoming, Empty<Bytes>>;

/// One worker: a current-thread runtime with its own listener.
fn worker(args: Args, ready: std::sync::mpsc::Sender<std::io::Result<()>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let setup = || -> anyhow::Result<(TcpListener, Ctx)> {
            Ok((
                reuseport_listener(args.listen)?,
                Ctx::new(args.mode, args.upstream)?,
            ))
        };
        let (listener, ctx) = match setup() {
            Ok(parts) => {
                let _ = ready.send(Ok(()));
                parts
            }
            Err(e) => {
                let _ = ready.send(Err(std::io::Error::other(format!("{e:#}"))));
                return;
            }
        };
        accept_loop(listener, Arc::new(ctx)).await;
    });
}

impl Ctx {
    fn new(mode: Mode, upstream: SocketAddr) -> anyhow::Result<Self> {
        let authority: Authority = upstream.to_string().parse()?;
        let legacy = matches!(mode, Mode::HyperLegacy | Mode::HyperAuto);
        Ok(Self {
            mode,
            upstream,
            host: HeaderValue::from_str(authority.as_str())?,
            authority,
            client: legacy.then(legacy_client).transpose()?,
            auto: (mode == Mode::HyperAuto).then(gateway_server),
        })
    }
}

/// Serves `listener`'s connections, one task each, forever.
async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let ctx = ctx.clone();
        match ctx.mode {
            Mode::Raw => tokio::spawn(raw::serve(stream, peer, ctx)),
            _ => tokio::spawn(serve_hyper(stream, peer, ctx)),
        };
    }
}

/// As `server::reuseport_listener`: the kernel spreads connections over
/// the workers' listeners; accepted sockets inherit TCP_NODELAY.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
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

/// The gateway's upstream client (`proxy::client::build_client` with the
/// default `[proxy]` settings and `Versions::Http1OrAlpn`).
fn legacy_client() -> anyhow::Result<LegacyClient> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90));
    Ok(client.build(https))
}

/// The gateway's server settings (`server::connection_builder` with the
/// default `[server]` limits).
fn gateway_server() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let header_deadline = Duration::from_secs(10);
    let max_header_bytes = 32 * 1024;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_deadline)
        .max_buf_size(max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .keep_alive_interval(header_deadline)
        .keep_alive_timeout(header_deadline)
        .max_concurrent_streams(100)
        .max_header_list_size(32 * 1024);
    builder
}

/// One client connection in a hyper mode.
async fn serve_hyper(stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) {
    let xff = match HeaderValue::from_str(&peer.ip().to_string()) {
        Ok(v) => v,
        Err(_) => return,
    };
    let io = TokioIo::new(stream);
    match ctx.mode {
        Mode::HyperConn => {
            // This connection's own upstream connection, opened by its
            // first request. HTTP/1 serves one request at a time, so the
            // lock is never contended; it is not held across an await.
            let slot = Arc::new(Mutex::new(None::<SendRequest<Incoming>>));
            let service = service_fn(move |req| {
                let (ctx, slot, xff) = (ctx.clone(), slot.clone(), xff.clone());
                async move { Ok::<_, Infallible>(via_conn(req, &ctx, &slot, xff).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        }
        Mode::HyperLegacy => {
            let service = service_fn(move |req| {
                let (ctx, xff) = (ctx.clone(), xff.clone());
                async move { Ok::<_, Infallible>(via_legacy(req, &ctx, xff).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        }
        Mode::HyperAuto => {
            let Some(builder) = ctx.auto.clone() else {
                return;
            };
            let service = service_fn(move |req| {
                let (ctx, xff) = (ctx.clone(), xff.clone());
                async move { Ok::<_, Infallible>(via_legacy(req, &ctx, xff).await) }
            });
            let _ = builder.serve_connection_with_upgrades(io, service).await;
        }
        Mode::Raw => {}
    }
}

fn status(code: StatusCode) -> Response<FloorBody> {
    let mut resp = Response::new(Either::Right(Empty::new()));
    *resp.status_mut() = code;
    resp
}

/// A GET without a body; anything else gets 400 (a floor, not a product).
fn acceptable(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET && req.body().is_end_stream()
}

/// The header rewrite every mode does.
fn rewrite(headers: &mut HeaderMap, ctx: &Ctx, xff: HeaderValue) {
    headers.remove(COOKIE);
    headers.remove(CONNECTION);
    headers.insert(HOST, ctx.host.clone());
    headers.insert(AUTHORIZATION, HeaderValue::from_static(BEARER));
    headers.insert(X_FORWARDED_FOR.clone(), xff);
}

/// `hyper-conn`: over this client connection's own upstream connection.
async fn via_conn(
    mut req: Request<Incoming>,
    ctx: &Ctx,
    slot: &Mutex<Option<SendRequest<Incoming>>>,
    xff: HeaderValue,
) -> Response<FloorBody> {
    if !acceptable(&req) {
        return status(StatusCode::BAD_REQUEST);
    }
    rewrite(req.headers_mut(), ctx, xff);
    let kept = slot.lock().ok().and_then(|mut s| s.take());
    let mut sender = match kept {
        Some(s) if !s.is_closed() => s,
        _ => match connect(ctx.upstream).await {
            Ok(s) => s,
            Err(_) => return status(StatusCode::BAD_GATEWAY),
        },
    };
    if sender.ready().await.is_err() {
        return status(StatusCode::BAD_GATEWAY);
    }
    match sender.send_request(req).await {
        Ok(resp) => {
            // Ready again once the server has sent this body on, which it
            // does before it reads the next request.
            if let Ok(mut s) = slot.lock() {
                *s = Some(sender);
            }
            resp.map(Either::Left)
        }
        Err(_) => status(StatusCode::BAD_GATEWAY),
    }
}

async fn connect(upstream: SocketAddr) -> anyhow::Result<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// `hyper-legacy`, `hyper-auto`: through the worker's pooled client, which
/// wants an absolute URI (the gateway rebuilds one too).
async fn via_legacy(
    mut req: Request<Incoming>,
    ctx: &Ctx,
    xff: HeaderValue,
) -> Response<FloorBody> {
    if !acceptable(&req) {
        return status(StatusCode::BAD_REQUEST);
    }
    let Some(client) = &ctx.client else {
        return status(StatusCode::BAD_GATEWAY);
    };
    rewrite(req.headers_mut(), ctx, xff);
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(ctx.authority.clone());
    match Uri::from_parts(parts) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    }
    match client.request(req).await {
        Ok(resp) => resp.map(Either::Left),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    }
}

/// The `raw` mode: `httparse` and two sockets.
mod raw {
    use super::*;

    /// Request and response heads must fit (and a request head is
    /// refused beyond): the 16 KiB buffers each connection keeps.
    const BUF: usize = 16 * 1024;
    const MAX_HEADERS: usize = 64;

    const BAD_REQUEST: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    const BAD_GATEWAY: &[u8] =
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

    /// What the parse of the buffered request bytes found.
    enum Head {
        /// More bytes needed.
        Partial,
        /// Not a GET without a body, or not HTTP: 400 and close.
        Refused,
        /// A head of `len` bytes, rewritten into the upstream request;
        /// `close`: the client asked to close after this response.
        Complete { len: usize, close: bool },
    }

    /// Why an exchange with the upstream ended the client connection.
    enum Failed {
        /// The upstream failed or answered something this cannot frame: 502.
        Upstream,
        /// Nothing more can be said to the client (it went away, or the
        /// upstream failed after the response head was sent): close.
        Closed,
    }

    /// One client connection, with its buffers and its upstream
    /// connection, until either side closes.
    pub(super) async fn serve(mut client: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) {
        let mut input = vec![0u8; BUF];
        let mut filled = 0;
        let mut request = Vec::with_capacity(BUF);
        let mut response = vec![0u8; BUF];
        let mut upstream: Option<TcpStream> = None;
        let xff = peer.ip().to_string();
        loop {
            let (len, close) = loop {
                if filled > 0 {
                    match parse_request(&input[..filled], &ctx, xff.as_bytes(), &mut request) {
                        Head::Complete { len, close } => break (len, close),
                        Head::Refused => {
                            let _ = client.write_all(BAD_REQUEST).await;
                            return;
                        }
                        Head::Partial => {}
                    }
                }
                if filled == input.len() {
                    let _ = client.write_all(BAD_REQUEST).await;
                    return;
                }
                match client.read(&mut input[filled..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => filled += n,
                }
            };
            // A pipelined next request stays for the next turn.
            input.copy_within(len..filled, 0);
            filled -= len;
            match exchange(&mut upstream, &ctx, &request, &mut response, &mut client).await {
                Ok(()) if !close => {}
                Ok(()) | Err(Failed::Closed) => return,
                Err(Failed::Upstream) => {
                    let _ = client.write_all(BAD_GATEWAY).await;
                    return;
                }
            }
        }
    }

    /// Parses the request head in `buf` and, when it is complete and
    /// acceptable, writes the upstream request into `out`.
    fn parse_request(buf: &[u8], ctx: &Ctx, xff: &[u8], out: &mut Vec<u8>) -> Head {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Head::Partial,
            Err(_) => return Head::Refused,
        };
        let (Some("GET"), Some(path), Some(version)) = (req.method, req.path, req.version) else {
            return Head::Refused;
        };
        // No HTTP/1.0 keep-alive: an HTTP/1.0 client gets one answer.
        let mut close = version == 0;
        out.clear();
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(ctx.host.as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                if h.value != b"0" {
                    return Head::Refused;
                }
                continue;
            }
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                return Head::Refused;
            }
            if name.eq_ignore_ascii_case(b"connection") {
                close |= contains_token(h.value, b"close");
                continue;
            }
            if name.eq_ignore_ascii_case(b"host")
                || name.eq_ignore_ascii_case(b"cookie")
                || name.eq_ignore_ascii_case(b"authorization")
                || name.eq_ignore_ascii_case(b"x-forwarded-for")
            {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"authorization: ");
        out.extend_from_slice(BEARER.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-for: ");
        out.extend_from_slice(xff);
        out.extend_from_slice(b"\r\n\r\n");
        Head::Complete { len, close }
    }

    fn contains_token(value: &[u8], token: &[u8]) -> bool {
        value
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    }

    /// The response head's framing: its length, the body's, and whether
    /// the upstream closes after it.
    struct Framing {
        head: usize,
        body: usize,
        close: bool,
    }

    /// [`parse_response`] as (head, body, close), for the tests.
    #[cfg(test)]
    pub(super) fn framing(buf: &[u8]) -> Result<Option<(usize, usize, bool)>, ()> {
        parse_response(buf).map(|f| f.map(|f| (f.head, f.body, f.close)))
    }

    /// `None`: more bytes needed. `Err`: not framed by Content-Length.
    fn parse_response(buf: &[u8]) -> Result<Option<Framing>, ()> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        let code = resp.code.ok_or(())?;
        if code < 200 {
            return Err(());
        }
        let mut body = None;
        let mut close = resp.version == Some(0);
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let n: usize = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or(())?;
                if body.is_some_and(|b| b != n) {
                    return Err(());
                }
                body = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                return Err(());
            } else if name.eq_ignore_ascii_case(b"connection") {
                close |= contains_token(h.value, b"close");
            }
        }
        let body = match (code, body) {
            (204 | 304, _) => 0,
            (_, Some(n)) => n,
            (_, None) => return Err(()),
        };
        Ok(Some(Framing { head, body, close }))
    }

    /// Sends `request` upstream (opening the connection if there is none;
    /// once more on a fresh one if a kept connection turns out closed) and
    /// copies the response back to the client.
    async fn exchange(
        upstream: &mut Option<TcpStream>,
        ctx: &Ctx,
        request: &[u8],
        buf: &mut [u8],
        client: &mut TcpStream,
    ) -> Result<(), Failed> {
        'attempt: for _ in 0..2 {
            let reused = upstream.is_some();
            let up = match upstream {
                Some(s) => s,
                None => {
                    let s = TcpStream::connect(ctx.upstream)
                        .await
                        .map_err(|_| Failed::Upstream)?;
                    s.set_nodelay(true).map_err(|_| Failed::Upstream)?;
                    upstream.insert(s)
                }
            };
            if up.write_all(request).await.is_err() {
                *upstream = None;
                if reused {
                    continue 'attempt;
                }
                return Err(Failed::Upstream);
            }
            let mut filled = 0;
            let framing = loop {
                let n = up.read(&mut buf[filled..]).await.unwrap_or(0);
                if n == 0 {
                    *upstream = None;
                    if reused && filled == 0 {
                        continue 'attempt;
                    }
                    return Err(Failed::Upstream);
                }
                filled += n;
                match parse_response(&buf[..filled]) {
                    Ok(Some(f)) => break f,
                    Ok(None) if filled < buf.len() => {}
                    Ok(None) | Err(()) => {
                        *upstream = None;
                        return Err(Failed::Upstream);
                    }
                }
            };
            let total = framing.head + framing.body;
            // Bytes beyond the response: the upstream is out of step.
            let keep = !framing.close && filled <= total;
            let now = filled.min(total);
            if client.write_all(&buf[..now]).await.is_err() {
                *upstream = None;
                return Err(Failed::Closed);
            }
            let mut left = total - now;
            while left > 0 {
                let want = left.min(buf.len());
                let n = up.read(&mut buf[..want]).await.unwrap_or(0);
                if n == 0 {
                    *upstream = None;
                    return Err(Failed::Closed);
                }
                if client.write_all(&buf[..n]).await.is_err() {
                    *upstream = None;
                    return Err(Failed::Closed);
                }
                left -= n;
            }
            if !keep {
                *upstream = None;
            }
            return Ok(());
        }
        Err(Failed::Upstream)
    }
}

#[cfg(test)]
mod tests {
    //! Each mode against a real loopback upstream that echoes the request
    //! head it received as its body.

    use super::*;

    /// An upstream that answers every request with its own head (what the
    /// proxy sent), framed by Content-Length, keep-alive.
    async fn echo_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    let mut filled = 0;
                    loop {
                        let Ok(n) = s.read(&mut buf[filled..]).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        filled += n;
                        let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n")
                        else {
                            continue;
                        };
                        let head = buf[..end + 4].to_vec();
                        buf.copy_within(end + 4..filled, 0);
                        filled -= end + 4;
                        let mut out =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", head.len())
                                .into_bytes();
                        out.extend_from_slice(&head);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn proxy(mode: Mode, upstream: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ctx = Ctx::new(mode, upstream).expect("ctx");
        tokio::spawn(accept_loop(listener, Arc::new(ctx)));
        addr
    }

    /// Sends `request` (which asks to close) and reads until the proxy
    /// closes. A proxy that refuses a body closes without reading it, so
    /// the close may come as a reset after the answer: what came before
    /// it counts.
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut chunk).await {
            out.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    const MODES: [Mode; 4] = [
        Mode::Raw,
        Mode::HyperConn,
        Mode::HyperLegacy,
        Mode::HyperAuto,
    ];

    #[tokio::test]
    async fn every_mode_forwards_a_get_without_the_cookie_with_bearer_host_and_forwarded_for() {
        let upstream = echo_upstream().await;
        for mode in MODES {
            let addr = proxy(mode, upstream).await;
            let got = exchange(
                addr,
                "GET /api/x?q=1 HTTP/1.1\r\nHost: app.example\r\nCookie: __Host-oidc-bff=secret\r\nX-Other: 1\r\nConnection: close\r\n\r\n",
            )
            .await
            .to_ascii_lowercase();
            assert!(got.starts_with("http/1.1 200"), "{mode:?}: {got}");
            assert!(
                got.contains("get /api/x?q=1 http/1.1\r\n"),
                "{mode:?}: {got}"
            );
            assert!(
                got.contains(&format!("host: {upstream}\r\n")),
                "{mode:?}: {got}"
            );
            assert!(
                got.contains(&format!(
                    "authorization: {}\r\n",
                    BEARER.to_ascii_lowercase()
                )),
                "{mode:?}: {got}"
            );
            assert!(
                got.contains("x-forwarded-for: 127.0.0.1\r\n"),
                "{mode:?}: {got}"
            );
            assert!(got.contains("x-other: 1\r\n"), "{mode:?}: {got}");
            assert!(
                !got.contains("secret"),
                "{mode:?} passed the cookie on: {got}"
            );
            assert!(
                !got.contains("app.example"),
                "{mode:?} passed the client's Host on: {got}"
            );
        }
    }

    #[tokio::test]
    async fn every_mode_refuses_a_body_and_methods_other_than_get() {
        let upstream = echo_upstream().await;
        for mode in MODES {
            let addr = proxy(mode, upstream).await;
            for request in [
                "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
                "GET /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
                "GET /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                "DELETE /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            ] {
                let got = exchange(addr, request).await;
                assert!(
                    got.starts_with("HTTP/1.1 400"),
                    "{mode:?}, {request:?}: {got}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_raw_mode_serves_keep_alive_and_pipelined_requests_in_order() {
        let upstream = echo_upstream().await;
        let addr = proxy(Mode::Raw, upstream).await;
        let got = exchange(
            addr,
            "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        let one = got.find("GET /one ").expect("first answered");
        let two = got.find("GET /two ").expect("second answered");
        assert!(one < two, "{got}");
        assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    }

    #[test]
    fn the_raw_mode_frames_responses_by_content_length_only() {
        let framed = |head: &str| raw::framing(head.as_bytes());
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            Ok(Some((38, 5, false)))
        );
        assert_eq!(
            framed("HTTP/1.1 204 No Content\r\n\r\n"),
            Ok(Some((27, 0, false)))
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"),
            Ok(Some((57, 5, true)))
        );
        assert_eq!(framed("HTTP/1.1 200 OK\r\ncontent-len"), Ok(None));
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(())
        );
        assert_eq!(framed("HTTP/1.1 200 OK\r\n\r\n"), Err(()));
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"),
            Err(())
        );
        assert_eq!(framed("HTTP/1.1 100 Continue\r\n\r\n"), Err(()));
    }
}
