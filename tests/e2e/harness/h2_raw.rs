//! A raw HTTP/2 client for abuse tests: frames written byte by byte over a
//! `TcpStream` (RFC 9113 §4.1: a 9-byte header of length, type, flags and
//! stream id, then the payload), so a test can send what no well-behaved
//! client library would (resets right after each request, floods of
//! control frames, header blocks that never end), and a reader that
//! reports what the server answered (GOAWAY and its error code, resets,
//! response heads).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// RFC 9113 §7 error codes the tests look for.
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: header and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame too long");
    assert!(len < 1 << 24, "frame too long");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK string literal, not Huffman-coded (RFC 7541 §5.2); lengths up
/// to 126 (one byte of length) are all the tests need.
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127, "hpack_string: too long for one length byte");
    out.push(u8::try_from(s.len()).expect("len"));
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `flags`
/// (RFC 7541 §5.1).
pub fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | u8::try_from(value).expect("fits"));
        return;
    }
    out.push(flags | u8::try_from(max).expect("fits"));
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).expect("fits") | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).expect("fits"));
}

/// A field as a literal without indexing, new name, of any length.
pub fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// A header block for `GET path` (HPACK: `:method GET` and `:scheme http`
/// from the static table, `:path` and `:authority` as literals without
/// indexing), plus `extra` literal fields.
pub fn get_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    request_block("GET", path, extra)
}

/// A header block for `method path` (see [`get_block`]).
pub fn request_block(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    match method {
        "GET" => b.push(0x82),
        "POST" => b.push(0x83),
        other => {
            b.push(0x02); // literal, indexed name `:method`
            hpack_string(&mut b, other.as_bytes());
        }
    }
    b.push(0x86); // :scheme http
    b.push(0x04); // literal without indexing, name = static 4 (:path)
    hpack_string(&mut b, path.as_bytes());
    b.push(0x01); // :authority
    hpack_string(&mut b, b"gateway");
    for (name, value) in extra {
        b.push(0x00); // literal without indexing, new name
        hpack_string(&mut b, name.as_bytes());
        hpack_string(&mut b, value.as_bytes());
    }
    b
}

/// A connection to `addr` that has sent the preface and an empty SETTINGS.
pub struct RawH2 {
    pub read: OwnedReadHalf,
    pub write: OwnedWriteHalf,
}

impl RawH2 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (read, mut write) = stream.into_split();
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        write.write_all(&hello).await.expect("preface");
        Self { read, write }
    }
}

/// What the server sent on a connection, as far as a test cares.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// The GOAWAY's error code, if one came.
    pub goaway: Option<u32>,
    /// Its debug data, as text.
    pub goaway_debug: String,
    /// Streams that got a response HEADERS frame.
    pub responses: Vec<u32>,
    /// Streams the server reset, with the error code.
    pub resets: Vec<(u32, u32)>,
    /// PING acknowledgements.
    pub ping_acks: usize,
    /// Whether the connection ended (EOF or error) within the limit.
    pub closed: bool,
    /// Bytes read in all.
    pub bytes: usize,
}

/// Reads frames until the server closes the connection or `limit` passes.
pub async fn read_until_closed(read: &mut OwnedReadHalf, limit: Duration) -> Received {
    let mut got = Received::default();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = vec![0u8; 65536];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    got.closed = true;
                    break;
                }
                Ok(n) => {
                    got.bytes += n;
                    buf.extend_from_slice(&chunk[..n]);
                    parse(&mut buf, &mut got);
                }
            }
        }
    })
    .await;
    got
}

/// Takes every whole frame off the front of `buf` into `got`.
fn parse(buf: &mut Vec<u8>, got: &mut Received) {
    loop {
        if buf.len() < 9 {
            return;
        }
        let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
        if buf.len() < 9 + len {
            return;
        }
        let (kind, flags) = (buf[3], buf[4]);
        let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
        let payload = &buf[9..9 + len];
        match kind {
            GOAWAY if len >= 8 => {
                got.goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
                got.goaway_debug = String::from_utf8_lossy(&payload[8..]).into_owned();
            }
            HEADERS => got.responses.push(stream),
            RST_STREAM if len == 4 => got.resets.push((
                stream,
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
            )),
            PING if flags & ACK != 0 => got.ping_acks += 1,
            _ => {}
        }
        buf.drain(..9 + len);
    }
}
