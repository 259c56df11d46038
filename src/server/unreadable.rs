//! The gateway's answer to a request head hyper cannot read, in place of
//! hyper's own.
//!
//! hyper answers a request head it cannot parse — a malformed request
//! line, an invalid character in a header, a header folded over lines, a
//! head over `server.max_header_bytes` or with more fields than its
//! parser takes, a target too long — by itself, before any of the
//! gateway's code runs: `400`, `431` or `414` with an empty body, and the
//! connection closed. The client (or the user looking at a blank page
//! after a cookie grew too large) learns nothing of what was wrong.
//! [`Watch`], part of each connection's stream (`CappedStream`), knows
//! that answer when hyper writes it and writes the gateway's instead: the
//! same status, the JSON error of `AppError` (`bad_request`,
//! `request_head_too_large`, `uri_too_long`) or, when the request was a
//! browser's navigation, its error page; the API's or the page's security
//! headers; `Connection: close`, as hyper closes the connection after it.
//!
//! Only until the connection's first request starts. Before that, nothing
//! but hyper itself writes to the connection, so an HTTP/1 status line
//! written then can only be its own answer, never part of a response an
//! upstream chose. A head that does not parse after other requests on a
//! kept-alive connection still gets hyper's bare answer (the same status);
//! recognising it there would mean telling it from a body's bytes.
//!
//! Whether the request was a navigation is read from the first 4 KiB of
//! the connection (a browser sends `Accept` and `Sec-Fetch-Mode` before
//! its cookies), by the rule of every other answer
//! (`pages::is_navigation`). Cost: that copy once per connection; after
//! the first request has started, one branch per read and per write.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use axum::response::IntoResponse as _;
use futures_util::FutureExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use tokio::io::AsyncWrite;

use super::{Activity, LiveApp, WriteStall};
use crate::error::AppError;

/// How much of a connection's first bytes is kept to tell a navigation
/// from an API call should its head not parse.
const KEPT: usize = 4096;

/// A connection's watch for hyper's own answer to an unreadable head.
pub(super) struct Watch {
    /// `None` once the connection's first request has started, or its
    /// answer has been replaced.
    first: Option<First>,
    /// The gateway's answer still to be written, and how much of it is.
    pending: Option<(Vec<u8>, usize)>,
}

struct First {
    activity: Arc<Activity>,
    app: LiveApp,
    /// The connection's first bytes, up to [`KEPT`].
    head: Vec<u8>,
}

impl Watch {
    pub(super) fn new(activity: Arc<Activity>, app: LiveApp) -> Self {
        Self {
            first: Some(First {
                activity,
                app,
                head: Vec::new(),
            }),
            pending: None,
        }
    }

    /// Whether the watch is over: the first request has started.
    fn over(&mut self) -> bool {
        match &self.first {
            None => true,
            Some(first) if first.activity.any_started() => {
                self.first = None;
                true
            }
            Some(_) => false,
        }
    }

    /// Keeps the start of what the client sent (`read`: the bytes a read
    /// just added).
    pub(super) fn on_read(&mut self, read: &[u8]) {
        if self.over() {
            return;
        }
        if let Some(first) = &mut self.first {
            let room = KEPT.saturating_sub(first.head.len());
            first.head.extend_from_slice(&read[..read.len().min(room)]);
        }
    }

    /// Whether `buf`, about to be written, is hyper's own answer to an
    /// unreadable head. If so the gateway's answer takes its place (written
    /// by [`Watch::poll_pending`]) and the caller reports `buf` as written.
    pub(super) fn replaces(&mut self, buf: &[u8]) -> bool {
        if self.pending.is_some() || self.over() {
            return false;
        }
        let Some((version, error)) = hypers_answer(buf) else {
            return false;
        };
        let Some(first) = self.first.take() else {
            return false;
        };
        let pages = first.app.0.load().pages.clone();
        let navigation = pages
            .as_ref()
            .filter(|_| crate::pages::is_navigation(&navigation_headers(&first.head)));
        match answer(version, error, navigation.map(|p| &**p)) {
            Some(bytes) => {
                self.pending = Some((bytes, 0));
                true
            }
            None => false,
        }
    }

    /// Writes what is left of the gateway's answer; ready once nothing is.
    pub(super) fn poll_pending<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut W,
        stall: &mut WriteStall,
    ) -> Poll<std::io::Result<()>> {
        while let Some((bytes, at)) = &mut self.pending {
            if *at >= bytes.len() {
                self.pending = None;
                break;
            }
            let written = Pin::new(&mut *stream).poll_write(cx, &bytes[*at..]);
            let n = ready!(stall.check(cx, written))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// The HTTP version and the error of an answer hyper writes for a head it
/// cannot read: a whole head, no body (`content-length: 0`), status 400,
/// 414 or 431.
fn hypers_answer(buf: &[u8]) -> Option<(&[u8], AppError)> {
    let version = buf
        .get(..8)
        .filter(|v| *v == b"HTTP/1.1" || *v == b"HTTP/1.0")?;
    if buf.get(8) != Some(&b' ') || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let error = match buf.get(9..12)? {
        b"400" => AppError::UnreadableHead,
        b"414" => AppError::TargetTooLong,
        b"431" => AppError::HeadTooLarge,
        _ => return None,
    };
    let empty = buf
        .split(|&b| b == b'\n')
        .any(|line| line.eq_ignore_ascii_case(b"content-length: 0\r"));
    empty.then_some((version, error))
}

/// The headers of a head (however malformed) that tell a navigation.
fn navigation_headers(head: &[u8]) -> HeaderMap {
    let wanted_names = [
        header::ACCEPT,
        HeaderName::from_static("sec-fetch-mode"),
        HeaderName::from_static("x-requested-with"),
    ];
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let Some(wanted) = wanted_names
            .iter()
            .find(|w| name.eq_ignore_ascii_case(w.as_str().as_bytes()))
        else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(wanted.clone(), value);
        }
    }
    headers
}

/// The gateway's answer for `error`, as bytes: the page when `navigation`
/// holds the pages, else the JSON error.
fn answer(
    version: &[u8],
    error: AppError,
    navigation: Option<&crate::pages::Pages>,
) -> Option<Vec<u8>> {
    let mut resp = error.into_response();
    if let Some(pages) = navigation {
        resp = crate::middleware::error_pages::render(pages, resp, None);
    }
    let (parts, body) = crate::security_headers::secure_response(resp).into_parts();
    // The body is whole (JSON or a rendered page): ready at once.
    let body = axum::body::to_bytes(body, usize::MAX)
        .now_or_never()?
        .ok()?;
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(version);
    let reason = parts.status.canonical_reason().unwrap_or("");
    let _ = write!(out, " {} {reason}\r\n", parts.status.as_str());
    for (name, value) in &parts.headers {
        if [header::CONTENT_LENGTH, header::CONNECTION, header::DATE].contains(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let date = httpdate::fmt_http_date(SystemTime::now());
    let _ = write!(
        out,
        "content-length: {}\r\nconnection: close\r\ndate: {date}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 07:36:10 GMT\r\n\r\n";

    #[test]
    fn hypers_own_answers_are_known_by_status_and_empty_body() {
        let (version, error) = hypers_answer(HYPER_431).expect("431");
        assert_eq!(version, b"HTTP/1.1");
        assert!(matches!(error, AppError::HeadTooLarge));
        let bad = b"HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(
            hypers_answer(bad),
            Some((b"HTTP/1.0", AppError::UnreadableHead))
        ));
        let long = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(
            hypers_answer(long),
            Some((_, AppError::TargetTooLong))
        ));
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/2 400\r\ncontent-length: 0\r\n\r\n",
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00",
            b"",
        ] {
            assert!(hypers_answer(other).is_none(), "{other:?}");
        }
    }

    #[test]
    fn a_navigation_is_told_from_the_start_of_a_malformed_head() {
        let browser = b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html,*/*\r\nSec-Fetch-Mode: navigate\r\nX: a\r\n b\r\n";
        assert!(crate::pages::is_navigation(&navigation_headers(browser)));
        let fetch =
            b"GET /api HTTP/1.1\r\naccept: text/html\r\nsec-fetch-mode: cors\r\nbroken header\r\n";
        assert!(!crate::pages::is_navigation(&navigation_headers(fetch)));
        let curl = b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\nAccept: text/html\r\n";
        assert!(
            !crate::pages::is_navigation(&navigation_headers(curl)),
            "only the first head counts"
        );
    }

    #[test]
    fn the_answer_is_the_gateways_json_with_its_headers_and_a_close() {
        let bytes = answer(b"HTTP/1.1", AppError::HeadTooLarge, None).expect("answer");
        let text = String::from_utf8(bytes).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        for line in [
            "content-type: application/json",
            "cache-control: no-store",
            "x-content-type-options: nosniff",
            "connection: close",
        ] {
            assert!(head.lines().any(|l| l == line), "{line} in {head}");
        }
        assert_eq!(
            head.lines()
                .filter(|l| l.starts_with("connection:"))
                .count(),
            1
        );
        let length = format!("content-length: {}", body.len());
        assert!(head.lines().any(|l| l == length), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["error"], "request_head_too_large");
    }
}
