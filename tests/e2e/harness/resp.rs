//! A scripted RESP server for probing the gateway against a Redis that
//! answers badly at the protocol level: a broken or compromised store, a
//! proxy in front of Redis, a server in a bad state.
//!
//! [`RespProxy`] listens on loopback and reads each command the gateway
//! sends (RESP arrays of bulk strings, as every client sends them). A rule
//! set by the test decides what each command gets ([`Act`]): forwarded to
//! a real Redis behind the proxy and answered with its reply, answered
//! with bytes of the test's choice (any RESP2/RESP3 frame, or garbage),
//! never answered, answered a byte at a time forever, or flooded.
//!
//! Scripts: the proxy answers `EVALSHA` of a script it has not seen loaded
//! with `NOSCRIPT`, so the client loads it (`SCRIPT LOAD`) through the
//! proxy, which then knows each hash's script text: a rule can match a
//! script by what its text says ([`Command::script`]) rather than by a
//! hash. (That is also what a `SCRIPT FLUSH` looks like to the client.)
//!
//! Push frames (`>`, RESP3) that the real Redis sends unasked (tracking
//! invalidations) are passed to the client as they arrive; a test can also
//! send its own to every open connection ([`RespProxy::push_all`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One command as the client sent it.
#[derive(Debug, Clone)]
pub struct Command {
    /// The arguments, the command's name first.
    pub args: Vec<Vec<u8>>,
    /// For `EVALSHA`/`EVAL`: the script's text, if the proxy saw it loaded.
    pub script: Option<String>,
}

impl Command {
    /// The command's name, upper case (`CLIENT TRACKING` is `CLIENT`).
    pub fn name(&self) -> String {
        self.args
            .first()
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
            .unwrap_or_default()
    }

    /// Argument `i` (0 is the name) as text.
    pub fn arg(&self, i: usize) -> String {
        self.args
            .get(i)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default()
    }

    /// Whether this runs a script whose text contains `needle`.
    pub fn runs_script_with(&self, needle: &str) -> bool {
        self.script.as_deref().is_some_and(|s| s.contains(needle))
    }
}

/// What a command gets.
#[derive(Debug, Clone)]
pub enum Act {
    /// Sent to the real Redis; its reply goes back.
    Forward,
    /// These bytes go back instead (any frame, or several, or garbage).
    Reply(Vec<u8>),
    /// No answer, ever; the connection stays open (and, since replies come
    /// in order, answers nothing more).
    Hang,
    /// `head` at once, then one byte of `filler` every `every`, forever.
    Trickle {
        head: Vec<u8>,
        filler: u8,
        every: Duration,
    },
    /// `head` at once, then `filler` bytes as fast as the client reads
    /// them until `total` bytes went out, then nothing more.
    Flood {
        head: Vec<u8>,
        filler: Vec<u8>,
        total: usize,
    },
}

type Rule = Box<dyn Fn(&Command) -> Option<Act> + Send + Sync>;

struct Inner {
    target: Option<SocketAddr>,
    rule: Mutex<Option<Rule>>,
    scripts: Mutex<HashMap<String, String>>,
    seen: Mutex<Vec<Command>>,
    conns: AtomicUsize,
    /// Writers of the open client connections, for `push_all`.
    pushers: Mutex<Vec<Out>>,
}

/// A scripted RESP server, optionally in front of a real Redis.
#[derive(Clone)]
pub struct RespProxy {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl RespProxy {
    /// In front of the real Redis at `target`: unscripted commands are
    /// forwarded.
    pub async fn start(target: SocketAddr) -> Self {
        Self::listen(Some(target)).await
    }

    async fn listen(target: Option<SocketAddr>) -> Self {
        // (`None`, no Redis behind: every answer scripted, PING answered.)
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind resp");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Inner {
            target,
            rule: Mutex::new(None),
            scripts: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            conns: AtomicUsize::new(0),
            pushers: Mutex::new(Vec::new()),
        });
        let i = inner.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                i.conns.fetch_add(1, Ordering::SeqCst);
                let i = i.clone();
                tokio::spawn(async move { serve(i, client).await });
            }
        });
        Self { addr, inner }
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Decides from now on what each command gets (`None`: forwarded).
    pub fn rule(&self, rule: impl Fn(&Command) -> Option<Act> + Send + Sync + 'static) {
        *self.inner.rule.lock().expect("rule") = Some(Box::new(rule));
    }

    /// Back to the default for every command.
    pub fn clear(&self) {
        *self.inner.rule.lock().expect("rule") = None;
    }

    /// Forgets the scripts loaded so far (as `SCRIPT FLUSH` on the server
    /// would): the next `EVALSHA` of each gets `NOSCRIPT`.
    pub fn forget_scripts(&self) {
        self.inner.scripts.lock().expect("scripts").clear();
    }

    /// Every command received so far.
    pub fn seen(&self) -> Vec<Command> {
        self.inner.seen.lock().expect("seen").clone()
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        self.inner.conns.load(Ordering::SeqCst)
    }

    /// Sends `frame` unasked to every open client connection.
    pub async fn push_all(&self, frame: &[u8]) {
        let open: Vec<Out> = self.inner.pushers.lock().expect("pushers").clone();
        for out in open {
            send(&out, frame).await;
        }
    }
}

type Out = Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>;

/// Writes `bytes` to the client whole (pushes and replies never interleave
/// inside a frame); whether the client is still there.
async fn send(out: &Out, bytes: &[u8]) -> bool {
    out.lock().await.write_all(bytes).await.is_ok()
}

/// One client connection: commands in order, one answer each.
async fn serve(inner: Arc<Inner>, client: TcpStream) {
    let (mut from_client, to_client) = client.into_split();
    let out: Out = Arc::new(tokio::sync::Mutex::new(to_client));
    inner.pushers.lock().expect("pushers").push(out.clone());
    // The real Redis' replies (pushes go straight to the client).
    let mut upstream = None;
    if let Some(target) = inner.target {
        let Ok(server) = TcpStream::connect(target).await else {
            return;
        };
        let (mut from_server, to_server) = server.into_split();
        let (reply_tx, reply_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pushes = out.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 65536];
            loop {
                while let Some(len) = frame_len(&buf) {
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    let sent = if frame.first() == Some(&b'>') {
                        send(&pushes, &frame).await
                    } else {
                        reply_tx.send(frame).is_ok()
                    };
                    if !sent {
                        return;
                    }
                }
                match from_server.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        upstream = Some((to_server, reply_rx));
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        let Some(len) = frame_len(&buf) else {
            match from_client.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
            }
        };
        let raw: Vec<u8> = buf.drain(..len).collect();
        let mut command = Command {
            args: parse_command(&raw),
            script: None,
        };
        let name = command.name();
        if name == "EVALSHA" {
            let sha = command.arg(1).to_ascii_lowercase();
            command.script = inner.scripts.lock().expect("scripts").get(&sha).cloned();
            if command.script.is_none() {
                inner.seen.lock().expect("seen").push(command);
                if !send(&out, b"-NOSCRIPT No matching script. Please use EVAL.\r\n").await {
                    break;
                }
                continue;
            }
        } else if name == "EVAL" {
            command.script = Some(command.arg(1));
        }
        inner.seen.lock().expect("seen").push(command.clone());
        let act = inner
            .rule
            .lock()
            .expect("rule")
            .as_ref()
            .and_then(|rule| rule(&command))
            .unwrap_or(Act::Forward);
        match act {
            Act::Forward => {
                let reply = match &mut upstream {
                    Some((to_server, replies)) => {
                        if to_server.write_all(&raw).await.is_err() {
                            break;
                        }
                        match replies.recv().await {
                            Some(reply) => reply,
                            None => break,
                        }
                    }
                    None if name == "PING" => b"+PONG\r\n".to_vec(),
                    None => format!("-ERR unscripted command '{name}'\r\n").into_bytes(),
                };
                if name == "SCRIPT"
                    && command.arg(1).eq_ignore_ascii_case("LOAD")
                    && let Some(sha) = bulk_text(&reply)
                {
                    inner
                        .scripts
                        .lock()
                        .expect("scripts")
                        .insert(sha.to_ascii_lowercase(), command.arg(2));
                }
                if !send(&out, &reply).await {
                    break;
                }
            }
            Act::Reply(bytes) => {
                if !send(&out, &bytes).await {
                    break;
                }
            }
            Act::Hang => {
                // Keep reading (and dropping) so the client's writes never
                // block, but answer nothing more.
                while let Ok(n) = from_client.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
                break;
            }
            Act::Trickle {
                head,
                filler,
                every,
            } => {
                if send(&out, &head).await {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {
                                if !send(&out, &[filler]).await {
                                    break;
                                }
                            }
                            r = from_client.read(&mut chunk) => {
                                if matches!(r, Ok(0) | Err(_)) {
                                    break;
                                }
                            }
                        }
                    }
                }
                break;
            }
            Act::Flood {
                head,
                filler,
                total,
            } => {
                // As fast as the client reads; the write fails once it
                // closed the connection.
                let flood = async {
                    let mut w = out.lock().await;
                    if w.write_all(&head).await.is_err() {
                        return;
                    }
                    let piece: Vec<u8> = filler.iter().copied().cycle().take(64 * 1024).collect();
                    let mut sent = 0;
                    while sent < total {
                        let n = piece.len().min(total - sent);
                        if w.write_all(&piece[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                    }
                };
                flood.await;
                while let Ok(n) = from_client.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
                break;
            }
        }
    }
}

/// The length of the first complete frame in `buf`, if there is one.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let line_end = |from: usize| -> Option<usize> {
        buf.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p + 2)
    };
    let number = |end: usize| -> Option<i64> {
        std::str::from_utf8(&buf[1..end - 2])
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let kind = *buf.first()?;
    let end = line_end(0)?;
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(end),
        b'$' | b'!' | b'=' => {
            let n = number(end)?;
            if n < 0 {
                return Some(end);
            }
            let total = end + usize::try_from(n).ok()? + 2;
            (buf.len() >= total).then_some(total)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number(end)?;
            if n < 0 {
                return Some(end);
            }
            let n = usize::try_from(n).ok()?;
            let items = match kind {
                b'%' => n * 2,
                b'|' => n * 2 + 1,
                _ => n,
            };
            let mut at = end;
            for _ in 0..items {
                at += frame_len(&buf[at..])?;
            }
            Some(at)
        }
        // Inline commands (`PING\r\n`): one line.
        _ => Some(end),
    }
}

/// A command frame's arguments (an inline command's words).
fn parse_command(raw: &[u8]) -> Vec<Vec<u8>> {
    if raw.first() != Some(&b'*') {
        return String::from_utf8_lossy(raw)
            .split_whitespace()
            .map(|w| w.as_bytes().to_vec())
            .collect();
    }
    let mut out = Vec::new();
    let Some(first) = raw.windows(2).position(|w| w == b"\r\n") else {
        return out;
    };
    let mut at = first + 2;
    while at < raw.len() {
        let Some(len) = frame_len(&raw[at..]) else {
            break;
        };
        let frame = &raw[at..at + len];
        out.push(bulk_payload(frame).unwrap_or_default());
        at += len;
    }
    out
}

/// A bulk string frame's payload.
fn bulk_payload(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.first() != Some(&b'$') {
        return None;
    }
    let start = frame.windows(2).position(|w| w == b"\r\n")? + 2;
    Some(frame.get(start..frame.len().checked_sub(2)?)?.to_vec())
}

/// A bulk string reply as text.
fn bulk_text(frame: &[u8]) -> Option<String> {
    bulk_payload(frame).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `bytes` as a RESP bulk string.
pub fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}
