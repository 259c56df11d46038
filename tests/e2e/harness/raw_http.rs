//! HTTP/1.1 spoken byte by byte, for the tests of what the gateway does
//! with its connections (`upstream_pool`, `upstream_hostile`): a browser
//! connection that writes raw requests on one TCP connection and reads
//! each answer whole, and the public route such tests put on a raw
//! upstream. A client library would hide what these tests look at: which
//! connection a request goes on, bytes that arrive where no response is
//! due, a connection cut mid-response.

use std::time::Duration;

use oidc_bff::config::RawRoute;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::route;

/// A route open to anonymous callers (no session, no CSRF header).
pub fn public(path: &str, upstream: &str) -> RawRoute {
    RawRoute {
        auth: "none".into(),
        ..route(path, upstream)
    }
}

/// One answer as the browser read it.
#[derive(Debug)]
pub struct Answer {
    /// The minor version of the status line (`HTTP/1.x`).
    pub version: u8,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("(not a JSON error: {})", self.text()))
    }
}

/// How reading an answer ended when it did not end with a whole one.
#[derive(Debug, PartialEq)]
pub enum Cut {
    /// The gateway closed the connection; what had arrived of the answer.
    Closed(Vec<u8>),
    /// Nothing more came for this long.
    Silent(Vec<u8>),
}

/// How long a test waits for bytes that are due before it calls the
/// gateway silent (room for a loaded 2-core machine).
const PATIENCE: Duration = Duration::from_secs(10);

/// One browser connection, kept alive: HTTP/1.1 requests written on one
/// TCP connection, one after another or back to back (a pooling client
/// such as reqwest may open a second connection when its first is not yet
/// back in its pool).
pub struct BrowserConnection {
    stream: tokio::net::TcpStream,
    /// Bytes read beyond the answer last returned (a pipelined next one).
    buf: Vec<u8>,
}

impl BrowserConnection {
    pub async fn open(gw: &super::Gateway) -> Self {
        Self {
            stream: tokio::net::TcpStream::connect(gw.addr)
                .await
                .expect("connect"),
            buf: Vec::new(),
        }
    }

    /// The port of this connection's own end (the gateway's socket for it
    /// has it as its remote port).
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local address").port()
    }

    /// `count` GETs of `/raw/..`, each answered `200 ok`.
    pub async fn get_ok(&mut self, count: usize) {
        self.get_ok_with("/raw", "", count).await;
    }

    /// `count` GETs under `route` with the `extra` header lines, each
    /// answered `200 ok`.
    pub async fn get_ok_with(&mut self, route: &str, extra: &str, count: usize) {
        for i in 0..count {
            let answer = self
                .exchange(&format!(
                    "GET {route}/{i} HTTP/1.1\r\nHost: gateway\r\n{extra}\r\n"
                ))
                .await;
            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(answer.text(), "ok");
        }
    }

    /// Writes `raw` (one request, or several back to back) as it is.
    pub async fn write(&mut self, raw: &str) {
        self.stream
            .write_all(raw.as_bytes())
            .await
            .expect("write request");
    }

    /// Writes one request and reads its answer, which must come whole.
    pub async fn exchange(&mut self, raw: &str) -> Answer {
        self.write(raw).await;
        let head = raw.starts_with("HEAD ");
        self.read_answer(head)
            .await
            .unwrap_or_else(|cut| panic!("no whole answer to {raw:?}: {cut:?}"))
    }

    /// `GET path` on this connection, answered whole.
    pub async fn get(&mut self, path: &str) -> Answer {
        self.exchange(&format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n"))
            .await
    }

    /// Reads the next answer (its body by `Content-Length` or chunked;
    /// none for a `HEAD`, 204 or 304), or how it was cut.
    pub async fn read_answer(&mut self, to_head: bool) -> Result<Answer, Cut> {
        let (version, status, headers, head_len) = loop {
            let mut names = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut names);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    break (
                        parsed.version.unwrap_or(0),
                        parsed.code.unwrap_or(0),
                        headers,
                        len,
                    );
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(e) => panic!(
                    "the gateway's answer does not parse ({e}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        };
        self.buf.drain(..head_len);
        let mut answer = Answer {
            version,
            status,
            headers,
            body: Vec::new(),
        };
        if to_head || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(answer);
        }
        if answer
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            answer.body = self.read_chunked().await?;
        } else if let Some(len) = answer.header("content-length") {
            let len: usize = len.parse().expect("Content-Length");
            while self.buf.len() < len {
                self.fill().await?;
            }
            answer.body = self.buf.drain(..len).collect();
        } else {
            // Delimited by the close.
            loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(Cut::Closed(_)) => break,
                    Err(silent) => return Err(silent),
                }
            }
            answer.body = std::mem::take(&mut self.buf);
        }
        Ok(answer)
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, Cut> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                self.fill().await?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("chunk size {size_text:?}"));
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        let empty = at == 0;
                        self.buf.drain(..at + 2);
                        if empty {
                            return Ok(body);
                        }
                    } else {
                        self.fill().await?;
                    }
                }
            }
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    /// Reads what arrives next into the buffer.
    async fn fill(&mut self) -> Result<(), Cut> {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await {
            Err(_) => Err(Cut::Silent(std::mem::take(&mut self.buf))),
            Ok(Ok(0) | Err(_)) => Err(Cut::Closed(std::mem::take(&mut self.buf))),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// Reads until `needle` has arrived (the start of a streamed body),
    /// which the next `read_answer` then reads again with the rest.
    pub async fn wait_for(&mut self, needle: &[u8]) {
        while !self.buf.windows(needle.len()).any(|w| w == needle) {
            if let Err(cut) = self.fill().await {
                panic!("{needle:?} never came: {cut:?}");
            }
        }
    }
}
