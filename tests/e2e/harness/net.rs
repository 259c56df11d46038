//! Network helpers owned by one test: a recording upstream API, and a chaos
//! TCP proxy that can refuse or stall connections (to Redis or the provider)
//! to prove failure handling for real.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Clone, Default)]
pub struct Upstream {
    pub addr: Option<SocketAddr>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// WebSockets at `/api/ws` that have ended, as the upstream saw it.
    ws_ended: Arc<AtomicUsize>,
    /// Bearer tokens this API treats as revoked (`Upstream::revoke`).
    revoked: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// `/api/ws`: records the handshake, then answers each text message with
/// "echo: " and the message.
async fn ws_echo(State(up): State<Upstream>, ws: WebSocketUpgrade, req: Request) -> Response {
    up.seen.lock().expect("lock").push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
        body_len: 0,
    });
    ws.on_upgrade(move |mut socket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            match msg {
                Message::Text(t) => {
                    let echo = Message::Text(format!("echo: {}", t.as_str()).into());
                    if socket.send(echo).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        up.ws_ended.fetch_add(1, Ordering::SeqCst);
    })
}

async fn record(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    // Stream the body through, counting bytes, never holding it whole.
    let mut stream = body.into_data_stream();
    let mut body_len = 0usize;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => body_len += c.len(),
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    up.seen.lock().expect("lock").push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body_len,
    });
    // `/…/step-up`: an API that wants an `mfa` login (RFC 9470), known
    // from the `X-Acr` identity header; `/…/challenge`: a 401 whose
    // `WWW-Authenticate` is the request's `X-Test-Challenge` (hostile
    // challenges).
    if path.ends_with("/step-up")
        && parts.headers.get("x-acr").and_then(|v| v.to_str().ok()) != Some("mfa")
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                "www-authenticate",
                "Bearer error=\"insufficient_user_authentication\", error_description=\"A stronger login is required\", acr_values=\"mfa\", max_age=300",
            )],
            "step up, please",
        )
            .into_response();
    }
    // A token revoked at the API (`Upstream::revoke`) or any token at
    // `/…/refuse-always`: 401 `invalid_token` (RFC 6750), after another
    // scheme's challenge.
    let token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let refuse =
        up.revoked.lock().expect("lock").contains(token) || path.ends_with("/refuse-always");
    if refuse {
        return (
            StatusCode::UNAUTHORIZED,
            [
                ("www-authenticate", "Basic realm=\"api\""),
                (
                    "www-authenticate",
                    "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"The access token was revoked\"",
                ),
            ],
            "token refused",
        )
            .into_response();
    }
    if path.ends_with("/challenge") {
        let mut resp = (StatusCode::UNAUTHORIZED, "challenge").into_response();
        if let Some(v) = parts.headers.get("x-test-challenge") {
            resp.headers_mut().insert("www-authenticate", v.clone());
        }
        return resp;
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    // `/…/sleep/MS`: answers after MS milliseconds (a request in flight
    // across a reload or a shutdown).
    if let Some(ms) = path
        .rsplit_once("/sleep/")
        .and_then(|(_, ms)| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = path
        .strip_suffix("/stream")
        .and_then(|p| p.rsplit('/').next())
        .and_then(|n| n.parse::<usize>().ok())
    {
        // n chunks of 64 KiB, produced lazily.
        let chunks = futures_util::stream::iter(
            (0..n)
                .map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![b'a' + (i % 26) as u8; 65536]))),
        );
        return Response::builder()
            .header("content-type", "application/octet-stream")
            .body(Body::from_stream(chunks))
            .unwrap_or_default();
    }
    if path.ends_with("/abort") {
        // A 200's head and 64 KiB of its body, sent, then the connection
        // cut: a body the upstream cuts short.
        let first = futures_util::stream::once(async { Ok(Bytes::from(vec![b'a'; 65536])) });
        let cut = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(std::io::Error::other("upstream gives up mid-body"))
        });
        let chunks = first.chain(cut);
        return Response::builder()
            .header("content-type", "application/octet-stream")
            .body(Body::from_stream(chunks))
            .unwrap_or_default();
    }
    let mut resp = axum::Json(serde_json::json!({
        "path": path,
        "method": parts.method.as_str(),
        "body_len": body_len,
        "authorization_present": parts.headers.contains_key("authorization"),
        "version": format!("{:?}", parts.version),
    }))
    .into_response();
    resp.headers_mut().append(
        "set-cookie",
        "__Host-oidc-bff=from-upstream; Path=/".parse().expect("hv"),
    );
    resp.headers_mut()
        .append("set-cookie", "app_pref=1; Path=/".parse().expect("hv"));
    resp
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let up = Upstream {
            addr: Some(listener.local_addr().expect("addr")),
            ..Default::default()
        };
        let app = Router::new()
            .route("/api/ws", axum::routing::get(ws_echo))
            .fallback(record)
            .with_state(up.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        up
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("started"))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    /// From now on, answers requests with this bearer token 401
    /// `invalid_token`.
    pub fn revoke(&self, token: &str) {
        self.revoked.lock().expect("lock").insert(token.to_owned());
    }

    pub fn websockets_ended(&self) -> usize {
        self.ws_ended.load(Ordering::SeqCst)
    }
}

const PASS: u8 = 0;
const REFUSE: u8 = 1;
const STALL: u8 = 2;

/// A TCP proxy whose behaviour can be switched while connections are open:
/// pass traffic, refuse (close open connections and refuse new ones), or
/// stall (keep connections open but move no bytes).
#[derive(Clone)]
pub struct Chaos {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Chaos {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind chaos");
        let addr = listener.local_addr().expect("addr");
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let chaos = Chaos {
            addr,
            mode: Arc::new(AtomicU8::new(PASS)),
            generation: Arc::new(tx),
        };
        let c = chaos.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let c = c.clone();
                tokio::spawn(async move { c.handle(inbound, target).await });
            }
        });
        chaos
    }

    async fn handle(&self, inbound: TcpStream, target: SocketAddr) {
        if self.mode.load(Ordering::SeqCst) == REFUSE {
            return;
        }
        let Ok(outbound) = TcpStream::connect(target).await else {
            return;
        };
        let (ri, wi) = inbound.into_split();
        let (ro, wo) = outbound.into_split();
        let a = pump(ri, wo, self.mode.clone(), self.generation.subscribe());
        let b = pump(ro, wi, self.mode.clone(), self.generation.subscribe());
        tokio::join!(a, b);
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn pass(&self) {
        self.set(PASS);
    }

    pub fn refuse(&self) {
        self.set(REFUSE);
    }

    /// Traffic freezes on open connections and new ones (a slow or hung
    /// server); leaving the stall drops those connections.
    pub fn stall(&self) {
        self.set(STALL);
    }
}

/// Copies one direction, honouring the chaos mode between reads.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16384];
    loop {
        // A connection that lived through a stall is dropped when it ends:
        // a hung server does not wake up and answer old requests.
        let mut stalled = false;
        while mode.load(Ordering::SeqCst) == STALL {
            stalled = true;
            if changes.changed().await.is_err() {
                return;
            }
        }
        if stalled || mode.load(Ordering::SeqCst) == REFUSE {
            return;
        }
        tokio::select! {
            r = from.read(&mut buf) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            _ = changes.changed() => {}
        }
    }
}
