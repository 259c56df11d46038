//! Upstreams that answer wrongly or break their connections, on the
//! upstream connections a browser connection keeps (`proxy::sticky`) and
//! on pooled ones (`proxy.sticky_connections = false`): each test runs
//! both ways and expects the same. Whatever the upstream sends, the
//! browser gets a precise status (502, or 504 for a timeout) or the
//! upstream's own answer to its own request, never an answer meant for
//! another request; a request that may have reached the upstream is never
//! sent twice; and a connection left in a state nobody knows is never
//! used again.
//!
//! The upstream here is a raw TCP server that reads each request and
//! answers as the request's last path segment says, byte by byte; it
//! notes which of its connections each request came on and which ones the
//! gateway closed. Its good answers' bodies are their request's path, so
//! a test sees whose answer a browser got. The browser is one raw
//! keep-alive connection (`BrowserConnection`), so every request after
//! the first goes to the connection its browser connection keeps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    Answer, BrowserConnection, Cut, Gateway, GatewayBuilder, Upstream, duration, public,
};

/// A whole response no request asked for.
const SMUGGLED: &str = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";

/// The route's `timeout` in the tests of late answers.
const ROUTE_TIMEOUT: &str = "400ms";

/// How long after the request the `late` answer comes: well beyond the
/// route's timeout, and beyond the bound on the next request's wait.
const LATE: Duration = Duration::from_millis(2500);

/// What the raw upstream saw.
#[derive(Default)]
struct Seen {
    /// Request lines in arrival order, each with the number of the
    /// connection it came on (from 1, in order of acceptance).
    requests: Mutex<Vec<(usize, String)>>,
    accepted: Mutex<usize>,
    /// Connections the gateway closed (the upstream read their end).
    closed_by_gateway: Mutex<Vec<usize>>,
}

impl Seen {
    fn requests(&self) -> Vec<(usize, String)> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection `path` came on; it must have come exactly once.
    fn connection_of(&self, method: &str, path: &str) -> usize {
        let line = format!("{method} {path} HTTP/1.1");
        let on: Vec<usize> = self
            .requests()
            .into_iter()
            .filter(|(_, l)| *l == line)
            .map(|(c, _)| c)
            .collect();
        assert_eq!(
            on.len(),
            1,
            "{line} reached the upstream {} times: {:?}",
            on.len(),
            self.requests()
        );
        on[0]
    }

    /// Waits until the gateway has closed connection `conn` (then it has
    /// seen whatever the upstream did to it).
    async fn wait_closed_by_gateway(&self, conn: usize, mode: &str) {
        let started = Instant::now();
        while !self
            .closed_by_gateway
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&conn)
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{mode}: the gateway kept upstream connection {conn} open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A good answer: 200, its request's path as the body.
fn ok(path: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{path}",
        path.len()
    )
}

/// The raw upstream; see the module doc.
async fn hostile_upstream() -> (String, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let conn = {
                let mut accepted = s.accepted.lock().unwrap_or_else(|p| p.into_inner());
                *accepted += 1;
                *accepted
            };
            tokio::spawn(serve(stream, conn, s.clone()));
        }
    });
    (format!("http://{addr}"), seen)
}

/// Answers the requests of one connection until the gateway closes it or
/// an answer ends it.
async fn serve(mut stream: TcpStream, conn: usize, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    loop {
        let Some((method, path)) = read_request(&mut stream, &mut buf).await else {
            seen.closed_by_gateway
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            return;
        };
        seen.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((conn, format!("{method} {path} HTTP/1.1")));
        let what = path.rsplit('/').next().unwrap_or_default().to_owned();
        let what = what.split('-').next().unwrap_or_default();
        let keep_on = match what {
            "ok" => write(&mut stream, &ok(&path)).await,
            // Slow enough for pipelined requests to queue behind it, and far
            // enough within the route's timeout (400 ms) for a loaded CI
            // machine: at 200 ms it was seen to miss it once.
            "slow" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                write(&mut stream, &ok(&path)).await
            }
            // Answers, then closes without a word (FIN).
            "finafter" => {
                write(&mut stream, &ok(&path)).await;
                false
            }
            // Reads the request and closes without answering: FIN, or RST.
            "vanish" => false,
            "reset" => {
                let _ = stream.set_zero_linger();
                return;
            }
            "sayclose" => {
                let close = ok(&path).replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
                write(&mut stream, &close).await;
                false
            }
            // HTTP/1.0 without keep-alive: its connection ends with the
            // answer, though this upstream would read on.
            "oldversion" => {
                let answer = ok(&path).replacen("HTTP/1.1", "HTTP/1.0", 1);
                write(&mut stream, &answer).await
            }
            // No length: the body ends with the connection.
            "closedelimited" => {
                write(
                    &mut stream,
                    &format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{path}"),
                )
                .await;
                false
            }
            // A second, whole response in the same write as the first.
            "smuggle" => write(&mut stream, &format!("{}{SMUGGLED}", ok(&path))).await,
            // The same, a moment after the first, on a connection at rest.
            "unsolicited" => {
                write(&mut stream, &ok(&path)).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                write(&mut stream, SMUGGLED).await
            }
            // Bodies where there can be none (RFC 9112 §6.3): their bytes
            // make up a whole second response.
            "nocontent" => {
                let head = format!(
                    "HTTP/1.1 204 No Content\r\nContent-Length: {}\r\n\r\n",
                    SMUGGLED.len()
                );
                write(&mut stream, &format!("{head}{SMUGGLED}")).await
            }
            "notmodified" => {
                let head = format!(
                    "HTTP/1.1 304 Not Modified\r\nContent-Length: {}\r\n\r\n",
                    SMUGGLED.len()
                );
                write(&mut stream, &format!("{head}{SMUGGLED}")).await
            }
            "headbody" => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    SMUGGLED.len()
                );
                write(&mut stream, &format!("{head}{SMUGGLED}")).await
            }
            // A HEAD answered rightly: the GET's length, no body.
            "head" => write(&mut stream, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n").await,
            // 10 bytes of 100, then the close.
            "truncated" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                )
                .await;
                false
            }
            // 10 bytes of 100, then nothing until the gateway closes.
            "stallbody" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                )
                .await
            }
            // 10 bytes of 20, the rest after more than the route's timeout.
            "slowbody" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789",
                )
                .await;
                tokio::time::sleep(Duration::from_millis(900)).await;
                write(&mut stream, "abcdefghij").await
            }
            // Answers after more than the route's timeout.
            "late" => {
                tokio::time::sleep(LATE).await;
                write(&mut stream, &ok(&path)).await
            }
            "switch" => {
                write(
                    &mut stream,
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                )
                .await
            }
            "informational" => {
                let first = "HTTP/1.1 100 Continue\r\n\r\n\
                             HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n";
                write(&mut stream, &format!("{first}{}", ok(&path))).await
            }
            "trailers" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
                     5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n",
                )
                .await
            }
            // Both framings (RFC 9112 §6.3: chunked wins, and a proxy
            // must drop the length before passing the answer on).
            "chunkedandlength" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5\r\nhello\r\n0\r\n\r\n",
                )
                .await
            }
            "badstatus" => write(&mut stream, "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok").await,
            // Three digits, but no status class (RFC 9110 §15: 100–599).
            "status600" => write(&mut stream, "HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok").await,
            "status099" => write(&mut stream, "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok").await,
            // Bodies still transfer-coded after the chunks are undone, or
            // with no chunks at all (then delimited by the close).
            "gzipchunked" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                )
                .await
            }
            "gzipclose" => {
                write(&mut stream, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok").await;
                false
            }
            // HTTP/1.0 with no length: the body ends with the connection.
            "oldclose" => {
                write(
                    &mut stream,
                    &format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{path}"),
                )
                .await;
                false
            }
            // A header line without a colon; a status line that is not one.
            "nocolon" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nNoColonHere\r\nContent-Length: 2\r\n\r\nok",
                )
                .await
            }
            "nostatusline" => write(&mut stream, "SMTP ready\r\nContent-Length: 2\r\n\r\nok").await,
            "badheader" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok",
                )
                .await
            }
            "twolengths" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 10\r\n\r\nok",
                )
                .await
            }
            "hugelength" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\nok",
                )
                .await
            }
            // A header continued on the next line (obs-fold, RFC 9112 §5.2).
            "obsfold" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
                )
                .await
            }
            // A head far beyond any buffer, and one with a thousand fields.
            "hugehead" => {
                let filler = "x".repeat(1 << 20);
                write(
                    &mut stream,
                    &format!("HTTP/1.1 200 OK\r\nX-Filler: {filler}\r\nContent-Length: 2\r\n\r\nok"),
                )
                .await
            }
            // A head well within hyper's own buffer (~400 KiB), far
            // beyond what a browser or a front proxy should be sent.
            "bighead" => {
                let filler = "x".repeat(200 * 1024);
                write(
                    &mut stream,
                    &format!("HTTP/1.1 200 OK\r\nX-Filler: {filler}\r\nContent-Length: 2\r\n\r\nok"),
                )
                .await
            }
            // Five hundred informational heads, then the answer.
            "manyinformational" => {
                let hint = "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n";
                write(&mut stream, &format!("{}{}", hint.repeat(500), ok(&path))).await
            }
            "manyfields" => {
                let fields: String = (0..1000).map(|i| format!("X-F{i}: v\r\n")).collect();
                write(
                    &mut stream,
                    &format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok"),
                )
                .await
            }
            // A body whose chunk size is not a number.
            "badchunk" => {
                write(
                    &mut stream,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
                )
                .await
            }
            // `100 Continue` over and over, never a final answer.
            "endless" => {
                while write(&mut stream, "HTTP/1.1 100 Continue\r\n\r\n").await {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen.closed_by_gateway
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
                return;
            }
            other => panic!("the raw upstream has no answer called {other:?}"),
        };
        if !keep_on {
            // Half-closes and waits for the gateway's end.
            let _ = stream.shutdown().await;
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
            seen.closed_by_gateway
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            return;
        }
    }
}

/// Writes `bytes`; whether the connection took them.
async fn write(stream: &mut TcpStream, bytes: &str) -> bool {
    stream.write_all(bytes.as_bytes()).await.is_ok()
}

/// The next request's method and path (its body, by Content-Length,
/// read and dropped); `None` when the gateway closed the connection.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String)> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut names = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut names);
        if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
            let method = req.method.unwrap_or_default().to_owned();
            let path = req.path.unwrap_or_default().to_owned();
            let body: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            while buf.len() < len + body {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..len + body);
            return Some((method, path));
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One gateway with `/raw` on a fresh raw upstream, kept connections on
/// or off, and a browser connection to it.
struct Trial {
    _upstream: Upstream,
    gw: Gateway,
    seen: Arc<Seen>,
    browser: BrowserConnection,
    mode: &'static str,
}

impl Trial {
    async fn start(sticky: bool) -> Self {
        Self::start_with_body_idle(sticky, "100s").await
    }

    /// As [`Self::start`], with the route's `body_idle_timeout`.
    async fn start_with_body_idle(sticky: bool, body_idle: &str) -> Self {
        let upstream = Upstream::start().await;
        let (raw, seen) = hostile_upstream().await;
        let gw = GatewayBuilder::new(&upstream)
            .route(oidc_bff::config::RawRoute {
                timeout: duration(ROUTE_TIMEOUT),
                body_idle_timeout: duration(body_idle),
                ..public("/raw", &raw)
            })
            .configure(|c| c.proxy.sticky_connections = sticky)
            .start()
            .await;
        let browser = BrowserConnection::open(&gw).await;
        Self {
            _upstream: upstream,
            gw,
            seen,
            browser,
            mode: if sticky { "kept" } else { "pooled" },
        }
    }

    /// `GET path`, which must be answered `200` with its own path.
    async fn get_own(&mut self, path: &str) -> usize {
        let answer = self.browser.get(path).await;
        assert_eq!(
            (answer.status, answer.text()),
            (200, path.to_owned()),
            "{}: the answer to {path} was not its own: {answer:?}; upstream saw {:?}",
            self.mode,
            self.seen.requests()
        );
        self.seen.connection_of("GET", path)
    }

    /// Sends `GET path` and expects the browser's connection to be cut
    /// before the answer ends (`what` names the case in a failure);
    /// returns what came of the answer before the cut, then reconnects.
    async fn get_cut(&mut self, path: &str, what: &str) -> String {
        self.browser
            .write(&format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n"))
            .await;
        let partial = match self.browser.read_answer(false).await {
            Err(Cut::Closed(partial)) => String::from_utf8_lossy(&partial).into_owned(),
            other => panic!("{}: {what} came through: {other:?}", self.mode),
        };
        self.browser = BrowserConnection::open(&self.gw).await;
        partial
    }

    /// Asserts that the requests made on `conns` went over `first` again,
    /// where that is deterministic: a kept connection is ready for the
    /// next request once the previous body ended. hyper-util's pool takes
    /// a connection back from a task of its own after the body ends, so a
    /// request that comes at once may find it not yet back and open
    /// another (seen once in CI); with the pool only the answers are
    /// checked (each request got its own, by `get_own`).
    fn assert_used_again(&self, conns: &[usize], first: usize) {
        if self.mode == "kept" {
            assert!(
                conns.iter().all(|c| *c == first),
                "kept: {conns:?} are not all connection {first}"
            );
        }
    }

    /// Asserts `answer` is the gateway's own `status` with JSON `error`.
    fn assert_refused(&self, answer: &Answer, status: u16, error: &str) {
        assert_eq!(
            (answer.status, answer.error()),
            (status, error.to_owned()),
            "{}: {answer:?}",
            self.mode
        );
    }
}

/// Kept connections on, then off (the pool): the same is expected.
const MODES: [bool; 2] = [true, false];

/// The close is seen before the next request: the gateway closed its end
/// too, which the upstream waits for. The next request goes out once, on
/// a new connection, and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_and_the_next_request_goes_once() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let first = t.get_own("/raw/finafter").await;
        t.seen.wait_closed_by_gateway(first, t.mode).await;
        let next = t.get_own("/raw/ok-next").await;
        assert_ne!(next, first, "{}: sent on the closed connection", t.mode);
        assert_eq!(t.seen.accepted(), 2, "{}", t.mode);
    }
}

/// The close comes when the next request has been written (the upstream
/// reads it, then closes: FIN, or RST): the gateway cannot know whether it
/// had effects, so it answers 502 and never sends it again, on any
/// connection — a `POST`, and a `GET` alike (the gateway does not guess
/// which upstream handlers are free of effects). The browser connection
/// goes on with a new upstream one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_connection_closes_unanswered_is_a_502_and_never_sent_again() {
    for sticky in MODES {
        for (method, cut) in [
            ("POST", "vanish"),
            ("POST", "reset"),
            ("GET", "vanish"),
            ("GET", "reset"),
        ] {
            let mut t = Trial::start(sticky).await;
            let first = t.get_own("/raw/ok-first").await;
            let path = format!("/raw/{cut}");
            let body = if method == "POST" {
                "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\norder"
            } else {
                "\r\n"
            };
            let answer = t
                .browser
                .exchange(&format!(
                    "{method} {path} HTTP/1.1\r\nHost: gateway\r\n{body}"
                ))
                .await;
            t.assert_refused(&answer, 502, "upstream_unavailable");
            assert_eq!(
                t.seen.connection_of(method, &path),
                first,
                "{}: {method} {cut}: sent on the kept-alive connection, once",
                t.mode
            );
            let after = t.get_own("/raw/ok-after").await;
            assert_ne!(after, first, "{}: {method} {cut}", t.mode);
            assert_eq!(t.seen.accepted(), 2, "{}: {method} {cut}", t.mode);
        }
    }
}

/// An answer after which its connection cannot carry another
/// (`Connection: close`; HTTP/1.0 without keep-alive, even when the
/// upstream would read on; a body that ends with the connection) is the
/// last on it: the next request goes on a new one and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_ends_its_connection_is_the_last_on_it() {
    for sticky in MODES {
        for what in ["sayclose", "oldversion", "closedelimited"] {
            let mut t = Trial::start(sticky).await;
            let first = t.get_own(&format!("/raw/{what}")).await;
            let next = t.get_own("/raw/ok-next").await;
            assert_ne!(next, first, "{}: {what}", t.mode);
            assert_eq!(t.seen.accepted(), 2, "{}: {what}", t.mode);
        }
    }
}

/// Bytes after the end of an answer (beyond its `Content-Length`, or any
/// body of a 204, a 304 or an answer to HEAD) are a second response nobody
/// asked for: the connection they came on is closed, and the next request
/// gets its own answer on another, never those bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_beyond_an_answer_never_answer_the_next_request() {
    for sticky in MODES {
        for (method, what, status) in [
            ("GET", "smuggle", 200),
            ("GET", "nocontent", 204),
            ("GET", "notmodified", 304),
            ("HEAD", "headbody", 200),
        ] {
            let mut t = Trial::start(sticky).await;
            let path = format!("/raw/{what}");
            let answer = t
                .browser
                .exchange(&format!(
                    "{method} {path} HTTP/1.1\r\nHost: gateway\r\n\r\n"
                ))
                .await;
            assert_eq!(answer.status, status, "{}: {what}: {answer:?}", t.mode);
            if status == 204 {
                // RFC 9110 §8.6: never a length on a 204.
                assert_eq!(answer.header("content-length"), None, "{}", t.mode);
            }
            if what == "smuggle" {
                assert_eq!(answer.text(), path, "{}", t.mode);
            }
            let first = t.seen.connection_of(method, &path);
            let next = t.get_own("/raw/ok-0").await;
            assert_ne!(
                next, first,
                "{}: {what}: the connection holding bytes nobody asked for was used again",
                t.mode
            );
            for i in 1..3 {
                t.get_own(&format!("/raw/ok-{i}")).await;
            }
        }
    }
}

/// A response that comes on a connection at rest answers nothing: the
/// gateway closes that connection, and the next request goes on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_response_on_a_resting_connection_closes_it() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let first = t.get_own("/raw/unsolicited").await;
        t.seen.wait_closed_by_gateway(first, t.mode).await;
        let next = t.get_own("/raw/ok-next").await;
        assert_ne!(next, first, "{}", t.mode);
    }
}

/// A body cut short by the upstream cannot be finished: the browser's
/// connection is closed before the length its head announced, so the
/// browser knows, and its next connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_upstream_cuts_short_cuts_the_browser_connection() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let text = t.get_cut("/raw/truncated", "a truncated body").await;
        assert!(
            text.starts_with("HTTP/1.1 200") || text.is_empty() || text == "0123456789",
            "{}: {text}",
            t.mode
        );
        let next = t.get_own("/raw/ok-next").await;
        assert_eq!(next, 2, "{}", t.mode);
    }
}

/// A body whose chunk framing breaks (a chunk size that is not a number)
/// is cut like a short one: the browser's connection is closed, and its
/// next connection works on a new upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_with_broken_chunk_framing_cuts_the_browser_connection() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        t.get_cut("/raw/badchunk", "a broken chunked body").await;
        let next = t.get_own("/raw/ok-next").await;
        assert_eq!(next, 2, "{}", t.mode);
    }
}

/// Informational answers that never end in a final one: the route's
/// timeout still applies (504), and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_informational_answers_are_a_504_and_close_their_connection() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let first = t.get_own("/raw/ok-first").await;
        let answer = t.browser.get("/raw/endless").await;
        t.assert_refused(&answer, 504, "upstream_timeout");
        t.seen.wait_closed_by_gateway(first, t.mode).await;
        let next = t.get_own("/raw/ok-next").await;
        assert_ne!(next, first, "{}", t.mode);
    }
}

/// A browser that leaves while its answer's body is still coming: the
/// upstream connection, half read, is closed, never given to a request;
/// the browser's next connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_leaving_mid_body_closes_the_upstream_connection_it_was_reading() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        t.browser
            .write("GET /raw/stallbody HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .await;
        t.browser.wait_for(b"0123456789").await;
        t.browser = BrowserConnection::open(&t.gw).await;
        t.seen.wait_closed_by_gateway(1, t.mode).await;
        let next = t.get_own("/raw/ok-next").await;
        assert_eq!(next, 2, "{}", t.mode);
    }
}

/// The route's `timeout` bounds the wait for the answer's head: a body
/// that has started may pause longer, and comes whole; its connection is
/// then at rest and is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_pausing_beyond_the_route_timeout_comes_whole() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let answer = t.browser.get("/raw/slowbody").await;
        assert_eq!(
            (answer.status, answer.text()),
            (200, "0123456789abcdefghij".to_owned()),
            "{}",
            t.mode
        );
        let next = t.get_own("/raw/ok-next").await;
        t.assert_used_again(&[next], 1);
    }
}

/// A body that stops coming for the route's `body_idle_timeout` is cut:
/// the browser's connection is closed before the length its head
/// announced, the upstream connection holding the rest is closed, and the
/// browser's next connection works on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_silent_for_its_idle_timeout_is_cut_and_its_connection_closed() {
    for sticky in MODES {
        let mut t = Trial::start_with_body_idle(sticky, "500ms").await;
        let started = std::time::Instant::now();
        let text = t.get_cut("/raw/stallbody", "a stalled body").await;
        let waited = started.elapsed();
        assert!(
            text.ends_with("0123456789"),
            "{}: the part sent before the silence: {text}",
            t.mode
        );
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
            "{}: cut after {waited:?}",
            t.mode
        );
        t.seen.wait_closed_by_gateway(1, t.mode).await;
        let next = t.get_own("/raw/ok-next").await;
        assert_eq!(next, 2, "{}", t.mode);
    }
}

/// `body_idle_timeout` counts from the latest part of the body, not from
/// the head: a body whose pause (900 ms) is shorter than it comes whole,
/// however long the body takes in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_pausing_within_its_idle_timeout_comes_whole() {
    for sticky in MODES {
        let mut t = Trial::start_with_body_idle(sticky, "3s").await;
        let answer = t.browser.get("/raw/slowbody").await;
        assert_eq!(
            (answer.status, answer.text()),
            (200, "0123456789abcdefghij".to_owned()),
            "{}",
            t.mode
        );
    }
}

/// An upstream that answers after the route's timeout: 504, and its late
/// answer reaches nobody. The next request does not wait behind it: a
/// connection still owing an answer takes no other request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_is_a_504_and_never_answers_the_next_request() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let first = t.get_own("/raw/ok-first").await;
        let answer = t.browser.get("/raw/late").await;
        t.assert_refused(&answer, 504, "upstream_timeout");
        let started = Instant::now();
        let next = t.get_own("/raw/ok-next").await;
        assert_ne!(
            next, first,
            "{}: sent on the connection still owing an answer",
            t.mode
        );
        // Waiting behind the late answer would take at least 2 s more.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{}: the next request waited {:?}",
            t.mode,
            started.elapsed()
        );
        // The connection that owed the answer is closed (by the time the
        // late answer is written at the latest), and the browser
        // connection goes on.
        t.seen.wait_closed_by_gateway(first, t.mode).await;
        t.get_own("/raw/ok-last").await;
        t.seen.connection_of("GET", "/raw/late");
    }
}

/// `101 Switching Protocols` to a request that asked for no upgrade: 502,
/// and the connection (now speaking who knows what) is not used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_of_protocols_nobody_asked_for_is_a_502_and_its_connection_is_not_used_again() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let first = t.get_own("/raw/ok-first").await;
        let answer = t.browser.get("/raw/switch").await;
        t.assert_refused(&answer, 502, "upstream_unavailable");
        let next = t.get_own("/raw/ok-next").await;
        assert_ne!(next, first, "{}", t.mode);
    }
}

/// An answer whose head does not parse (a status of four digits, no
/// status line, a space in a header name, a header line without a colon, two different lengths, a length beyond 64 bits, a
/// folded header line, a mebibyte of head, 200 KiB of head (within
/// hyper's own buffer, over `proxy.max_response_header_bytes`), a
/// thousand fields): 502, and
/// the connection is not used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_head_that_does_not_parse_is_a_502_and_its_connection_is_not_used_again() {
    for sticky in MODES {
        for what in [
            "badstatus",
            "nostatusline",
            "badheader",
            "nocolon",
            "twolengths",
            "hugelength",
            "obsfold",
            "hugehead",
            "bighead",
            "manyfields",
        ] {
            let mut t = Trial::start(sticky).await;
            let first = t.get_own("/raw/ok-first").await;
            let answer = t.browser.get(&format!("/raw/{what}")).await;
            t.assert_refused(&answer, 502, "upstream_unavailable");
            let next = t.get_own("/raw/ok-next").await;
            assert_ne!(next, first, "{}: {what}", t.mode);
        }
    }
}

/// Answers that are odd but right keep their connection: 1xx before the
/// final answer (skipped), a HEAD answer with the GET's length (no body),
/// a chunked body with trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informational_heads_head_answers_and_trailers_pass_and_keep_the_connection() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let first = t.get_own("/raw/informational").await;
        // Hundreds of them: each is read and dropped, within the route's
        // timeout; none reaches the browser.
        let many = t.get_own("/raw/manyinformational").await;
        let head = t
            .browser
            .exchange("HEAD /raw/head HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .await;
        assert_eq!(
            (head.status, head.header("content-length")),
            (200, Some("50")),
            "{}: {head:?}",
            t.mode
        );
        let chunked = t.browser.get("/raw/trailers").await;
        assert_eq!(
            (chunked.status, chunked.text()),
            (200, "hello".to_owned()),
            "{}",
            t.mode
        );
        let next = t.get_own("/raw/ok-next").await;
        t.assert_used_again(
            &[
                many,
                t.seen.connection_of("HEAD", "/raw/head"),
                t.seen.connection_of("GET", "/raw/trailers"),
                next,
            ],
            first,
        );
    }
}

/// An answer that parses but cannot be passed on as it is: a status
/// outside 100–599 (no class a client could read it by), or a body still
/// gzip-coded after its chunks are undone, or instead of them. 502, and
/// the browser's next request gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_no_status_class_or_a_coding_besides_chunked_is_a_502() {
    for sticky in MODES {
        for what in ["status600", "status099", "gzipchunked", "gzipclose"] {
            let mut t = Trial::start(sticky).await;
            let answer = t.browser.get(&format!("/raw/{what}")).await;
            t.assert_refused(&answer, 502, "upstream_unavailable");
            t.get_own("/raw/ok-next").await;
        }
    }
}

/// An upstream answering in HTTP/1.0 (with a length, or delimited by its
/// close) is passed on in the gateway's own version (RFC 9110 §6.2): the
/// browser's connection stays open for its next request, which gets its
/// own answer on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_answer_reaches_the_browser_as_http_1_1_and_its_connection_stays() {
    for sticky in MODES {
        for what in ["oldversion", "oldclose"] {
            let mut t = Trial::start(sticky).await;
            let path = format!("/raw/{what}");
            let answer = t.browser.get(&path).await;
            assert_eq!(
                (answer.version, answer.status, answer.text()),
                (1, 200, path.clone()),
                "{}: {what}: {answer:?}",
                t.mode
            );
            let next = t.browser.get("/raw/ok-next").await;
            assert_eq!(
                (next.status, next.text()),
                (200, "/raw/ok-next".to_owned()),
                "{}: {what}: the browser's connection did not carry its next request",
                t.mode
            );
        }
    }
}

/// An answer framed both ways, chunked and with a `Content-Length`, is
/// read as chunked (RFC 9112 §6.3), and its length is not passed on: the
/// browser gets the whole chunked body, framed by the gateway, and the
/// next request its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_both_chunked_and_with_a_length_reaches_the_browser_whole() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let answer = t.browser.get("/raw/chunkedandlength").await;
        assert_eq!(
            (answer.status, answer.text()),
            (200, "hello".to_owned()),
            "{}: {answer:?}",
            t.mode
        );
        assert!(
            matches!(answer.header("content-length"), None | Some("5")),
            "{}: the upstream's length was passed on: {answer:?}",
            t.mode
        );
        t.get_own("/raw/ok-next").await;
    }
}

/// Requests written back to back, among them answers carrying a
/// smuggled response and an unparsable one: each answered in order, the
/// good ones with their own answers, the broken one with a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_after_a_hostile_answer_get_their_own_answers() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let paths = [
            "/raw/slow-1",
            "/raw/smuggle",
            "/raw/ok-3",
            "/raw/badstatus",
            "/raw/ok-5",
        ];
        let all: String = paths
            .iter()
            .map(|p| format!("GET {p} HTTP/1.1\r\nHost: gateway\r\n\r\n"))
            .collect();
        t.browser.write(&all).await;
        for path in paths {
            let answer = t
                .browser
                .read_answer(false)
                .await
                .unwrap_or_else(|cut| panic!("{}: {path}: {cut:?}", t.mode));
            if path.ends_with("badstatus") {
                t.assert_refused(&answer, 502, "upstream_unavailable");
            } else {
                assert_eq!(
                    (answer.status, answer.text()),
                    (200, path.to_owned()),
                    "{}",
                    t.mode
                );
            }
            t.seen.connection_of("GET", path);
        }
    }
}

/// Requests written back to back before any answer is read (pipelining):
/// answered in order, each with its own answer, a slow first one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_each_with_its_own_answer() {
    for sticky in MODES {
        let mut t = Trial::start(sticky).await;
        let paths = ["/raw/slow-1", "/raw/ok-2", "/raw/slow-3", "/raw/ok-4"];
        let all: String = paths
            .iter()
            .map(|p| format!("GET {p} HTTP/1.1\r\nHost: gateway\r\n\r\n"))
            .collect();
        t.browser.write(&all).await;
        for path in paths {
            let answer = t
                .browser
                .read_answer(false)
                .await
                .unwrap_or_else(|cut| panic!("{}: {path}: {cut:?}", t.mode));
            assert_eq!(
                (answer.status, answer.text()),
                (200, path.to_owned()),
                "{}",
                t.mode
            );
        }
        let conns: Vec<usize> = paths
            .iter()
            .map(|p| t.seen.connection_of("GET", p))
            .collect();
        t.assert_used_again(&conns, 1);
    }
}

/// A browser request framed both ways, chunked and with a `Content-Length`
/// (the length first, so hyper keeps the header): its body is read by its
/// chunks (RFC 9112 §6.3), and the upstream gets that body whole, framed by
/// the gateway, never the browser's length (which would cut it to five
/// bytes here, or leave the upstream waiting for bytes that never come).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_both_chunked_and_with_a_length_reaches_the_upstream_whole() {
    for sticky in MODES {
        let upstream = Upstream::start().await;
        let gw = GatewayBuilder::new(&upstream)
            .route(public("/open", &upstream.url()))
            .configure(|c| c.proxy.sticky_connections = sticky)
            .start()
            .await;
        let mut browser = BrowserConnection::open(&gw).await;
        let answer = browser
            .exchange(
                "POST /open/x HTTP/1.1\r\nHost: gateway\r\nContent-Length: 5\r\n\
                 Transfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
            )
            .await;
        assert_eq!(answer.status, 200, "{sticky}: {answer:?}");
        let seen = upstream.seen();
        let last = seen.last().expect("the upstream saw the request");
        assert_eq!(
            (last.body_len, last.header("content-length")),
            (11, None),
            "sticky = {sticky}: the body as its chunks framed it"
        );
    }
}

/// A raw upstream whose first connection, once it has answered its first
/// request, is handed to the test, which closes it when it chooses; later
/// connections are served by [`serve`]. Every request is noted in the
/// returned [`Seen`].
async fn upstream_handing_over_its_first_connection()
-> (String, Arc<Seen>, tokio::sync::oneshot::Receiver<TcpStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let (hand_over, handed) = tokio::sync::oneshot::channel();
    let s = seen.clone();
    tokio::spawn(async move {
        let mut hand_over = Some(hand_over);
        while let Ok((mut stream, _)) = listener.accept().await {
            let conn = {
                let mut accepted = s.accepted.lock().unwrap_or_else(|p| p.into_inner());
                *accepted += 1;
                *accepted
            };
            let Some(to_test) = hand_over.take() else {
                tokio::spawn(serve(stream, conn, s.clone()));
                continue;
            };
            let mut buf = Vec::new();
            let Some((method, path)) = read_request(&mut stream, &mut buf).await else {
                continue;
            };
            s.requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((conn, format!("{method} {path} HTTP/1.1")));
            write(&mut stream, &ok(&path)).await;
            let _ = to_test.send(stream);
        }
    });
    (format!("http://{addr}"), seen, handed)
}

/// The state (`st`, hex: `08` is CLOSE_WAIT, the peer's FIN received) and
/// the bytes waiting to be read (`rx_queue`) of the IPv4 TCP socket from
/// loopback port `local` to loopback port `remote`, from `/proc/net/tcp`.
fn tcp_socket(local: u16, remote: u16) -> Option<(String, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let (local, remote) = (
        format!("0100007F:{local:04X}"),
        format!("0100007F:{remote:04X}"),
    );
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let queued = fields.get(4)?.split_once(':')?.1;
        Some((
            fields.get(3)?.to_string(),
            u64::from_str_radix(queued, 16).ok()?,
        ))
    })
}

/// Polls `done` every 5 ms for up to 10 s; `what` names it in a failure.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The race that `proxy::sticky`'s unit test
/// `a_request_handed_to_a_connection_closing_at_rest_goes_once_over_the_pool`
/// plays on one runtime, end to end: the upstream closes the kept
/// connection at rest, and its FIN reaches the gateway together with the
/// browser's next request. The gateway process is paused (SIGSTOP) while
/// the request, then the FIN, arrive, and resumed only once the kernel
/// holds both (the request's bytes queued on the browser's socket, the
/// upstream socket in CLOSE_WAIT): its worker then learns of both in one
/// poll, the request first, and hands it to the kept connection before
/// that connection's task has read the close. The connection never writes
/// it; it goes over the pool instead of failing. For a GET and for a POST
/// with a body: the upstream's own answer (not 502), the request seen
/// exactly once, on a new connection, never on the closed one; and the
/// pool's connection is not kept for the browser connection (the next
/// request opens a third one), which is how the test knows the pool sent
/// it: had the gateway seen the close first, it would have opened a new
/// kept connection, and the next request would have used it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_meeting_the_close_of_its_kept_connection_goes_once_over_the_pool() {
    for (method, extra) in [
        ("GET", "\r\n"),
        (
            "POST",
            "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\norder",
        ),
    ] {
        let upstream = Upstream::start().await;
        let (raw, seen, handed) = upstream_handing_over_its_first_connection().await;
        let raw_port: u16 = raw
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let gw = GatewayBuilder::new(&upstream)
            .route(public("/raw", &raw))
            .configure(|c| {
                c.proxy.sticky_connections = true;
                // One runtime: the browser's connection and the kept
                // upstream connection are tasks of the same worker.
                c.server.workers = 1;
            })
            .start_process()
            .await;
        let mut browser = BrowserConnection::open(&gw).await;
        let first = browser.get("/raw/ok-first").await;
        assert_eq!((first.status, first.text()), (200, "/raw/ok-first".into()));
        let kept = tokio::time::timeout(Duration::from_secs(10), handed)
            .await
            .expect("the first connection")
            .expect("handed over");
        let gateway_end = kept.peer_addr().expect("peer").port();
        assert_eq!(
            tcp_socket(gateway_end, raw_port).map(|s| s.0),
            Some("01".into()),
            "{method}: the kept connection is established"
        );

        let path = format!("/raw/ok-{}", method.to_lowercase());
        let request = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\n{extra}");
        gw.process().pause();
        browser.write(&request).await;
        let browser_port = browser.local_port();
        wait_until("the request in the gateway's socket", || {
            tcp_socket(gw.addr.port(), browser_port).is_some_and(|s| s.1 == request.len() as u64)
        });
        drop(kept);
        wait_until(
            "the FIN at the gateway's end of the kept connection",
            || tcp_socket(gateway_end, raw_port).is_some_and(|s| s.0 == "08"),
        );
        gw.process().resume();

        let answer = browser
            .read_answer(false)
            .await
            .unwrap_or_else(|cut| panic!("{method}: no whole answer: {cut:?}"));
        assert_eq!(
            (answer.status, answer.text()),
            (200, path.clone()),
            "{method}: {answer:?}; upstream saw {:?}",
            seen.requests()
        );
        let on = seen.connection_of(method, &path);
        assert_eq!(on, 2, "{method}: on a new connection");
        // The next request: a new kept connection, so the pool (not a
        // kept connection) sent the one before.
        let next = browser.get("/raw/ok-next").await;
        assert_eq!((next.status, next.text()), (200, "/raw/ok-next".into()));
        assert_eq!(
            seen.connection_of("GET", "/raw/ok-next"),
            3,
            "{method}: the request before was not sent over the pool: {:?}",
            seen.requests()
        );
        // Never a second copy, later either.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(seen.connection_of(method, &path), 2, "{method}");
        assert_eq!(seen.requests().len(), 3, "{method}: {:?}", seen.requests());
    }
}
