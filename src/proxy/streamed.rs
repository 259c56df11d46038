//! A proxied response's body on its way to the browser: it streams after
//! the request's future has finished, so its polls make the request's log
//! fields current again (`telemetry::in_request`) and a body the upstream
//! cuts short is logged as the request's, with its ID. A body that sends
//! nothing for the route's `body_idle_timeout` is cut short too: an
//! upstream that stops mid-body would otherwise hold the browser's
//! connection and its own for as long as it likes (the route's `timeout`
//! bounds the response head only, and the server's idle timeout waits for
//! a response in flight).
//!
//! The browser's request body on its way to the upstream ([`ClientBody`]),
//! when it streams (not kept whole for a retry): one that sends nothing
//! for `server.body_read_timeout` is cut (408 while the answer is still
//! awaited), and it ends with its answer: once the upstream's response
//! body is done (or dropped), the rest is not forwarded. Before, a client
//! that stopped mid-body, or trickled it, after the upstream had answered
//! held its connection (HTTP/1, or its HTTP/2 stream) and the upstream
//! connection for ever.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::telemetry::{self, RequestFields};

pin_project! {
    /// An upstream's response body, polled as part of the request that
    /// asked for it. No allocation of its own while the upstream keeps
    /// up: it is boxed once with the body it wraps
    /// (`axum::body::Body::new`), as that body was before, and the
    /// request's fields are a clone that shares their bytes (`None` with
    /// the access log off: then no line names its request).
    pub struct UpstreamBody<B> {
        #[pin]
        inner: B,
        fields: Option<RequestFields>,
        idle: Duration,
        // The stall timer: made at the first wait for the upstream (one
        // allocation and timer entry; a body already in the gateway's
        // buffers when the browser's side asks for it never waits), and
        // re-armed at the next wait after each frame.
        stall: Option<Pin<Box<Sleep>>>,
        waiting: bool,
        // Dropped with this body: ends the request's [`ClientBody`].
        answering: Option<Answering>,
    }
}

impl<B> UpstreamBody<B> {
    /// Wraps `inner` for the request being handled now; `idle` is the
    /// route's `body_idle_timeout`; `answering` ends the request's
    /// streamed body, if it has one, when this body is dropped.
    pub fn new(inner: B, idle: Duration, answering: Option<Answering>) -> Self {
        Self {
            inner,
            fields: telemetry::current_request(),
            idle,
            stall: None,
            waiting: false,
            answering,
        }
    }
}

/// Held while a request's answer is still to come or on its way: its
/// drop (the answer's body done or abandoned, or no answer at all) ends
/// the request's [`ClientBody`].
pub struct Answering(#[expect(dead_code, reason = "held for its drop")] oneshot::Sender<()>);

pin_project! {
    /// A request body streaming from the browser to the upstream; see the
    /// module doc. Errors rather than ends early: a body cut short must
    /// never look complete to the upstream (chunked framing would close
    /// it cleanly), so the upstream connection is dropped instead.
    pub struct ClientBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        stall: Option<Pin<Box<Sleep>>>,
        waiting: bool,
        // `None` once the answer is done.
        answered: Option<oneshot::Receiver<()>>,
    }
}

impl<B: Body> ClientBody<B> {
    /// `inner` bounded by `idle` (`server.body_read_timeout`) between
    /// frames, and ended when the returned [`Answering`] is dropped; a body
    /// that has already ended (nothing to bound) comes back as it was.
    pub fn wrap(inner: B, idle: Duration) -> Result<(Self, Answering), B> {
        if inner.is_end_stream() {
            return Err(inner);
        }
        let (tx, answered) = oneshot::channel();
        let body = Self {
            inner,
            idle,
            stall: None,
            waiting: false,
            answered: Some(answered),
        };
        Ok((body, Answering(tx)))
    }
}

/// Why a streamed request body was cut.
#[derive(Debug)]
pub enum ClientBodyCut {
    /// The client sent nothing of it for `server.body_read_timeout`.
    Stalled(Duration),
    /// The answer was complete (or abandoned) before the body.
    Answered,
}

impl std::fmt::Display for ClientBodyCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stalled(d) => write!(
                f,
                "the client sent nothing of its request body for {d:?} (server.body_read_timeout)"
            ),
            Self::Answered => f.write_str("the request's answer was complete before its body"),
        }
    }
}

impl std::error::Error for ClientBodyCut {}

/// Whether `e` (or what caused it) is a [`ClientBodyCut::Stalled`].
pub fn client_body_stalled(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if matches!(
            s.downcast_ref::<ClientBodyCut>(),
            Some(ClientBodyCut::Stalled(_))
        ) {
            return true;
        }
        source = s.source();
    }
    false
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.project();
        let done = match this.answered.as_mut() {
            Some(rx) => Pin::new(rx).poll(cx).is_ready(),
            None => true,
        };
        if done {
            *this.answered = None;
            // All of it came (a length fully read, its end flag still to
            // come): it ends cleanly, and the upstream connection may be
            // used again.
            if this.inner.is_end_stream() || this.inner.size_hint().exact() == Some(0) {
                return Poll::Ready(None);
            }
            return Poll::Ready(Some(Err(ClientBodyCut::Answered.into())));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !*this.waiting {
                    *this.waiting = true;
                    // `checked_add`: a timeout too large for a deadline
                    // means never.
                    if let Some(deadline) = Instant::now().checked_add(*this.idle) {
                        match this.stall.as_mut() {
                            Some(timer) => timer.as_mut().reset(deadline),
                            None => {
                                *this.stall = Some(Box::pin(tokio::time::sleep_until(deadline)));
                            }
                        }
                    }
                }
                if let Some(timer) = this.stall.as_mut()
                    && timer.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Some(Err(ClientBodyCut::Stalled(*this.idle).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream sent no part of its response body for the route's
/// `body_idle_timeout`.
#[derive(Debug)]
pub struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the upstream sent nothing of the response body for {:?} (routes[].body_idle_timeout)",
            self.0
        )
    }
}

impl std::error::Error for BodyStalled {}

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.project();
        let (inner, stall, waiting, idle) = (this.inner, this.stall, this.waiting, *this.idle);
        telemetry::in_request(this.fields, || match inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                // The browser gets a cut-short response (its connection or
                // stream is reset); the cause is only here. The error says
                // what failed (a reset, an early close), never what was
                // sent.
                tracing::warn!(
                    error = %ErrorChain(&e),
                    "upstream response body failed; the response to the browser is cut short"
                );
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(frame) => {
                *waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !*waiting {
                    *waiting = true;
                    // `checked_add`: a timeout too large for a deadline
                    // means never.
                    if let Some(deadline) = Instant::now().checked_add(idle) {
                        match stall.as_mut() {
                            Some(timer) => timer.as_mut().reset(deadline),
                            None => *stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                    }
                }
                if let Some(timer) = stall.as_mut()
                    && timer.as_mut().poll(cx).is_ready()
                {
                    let e = BodyStalled(idle);
                    tracing::warn!(error = %e, "upstream response body stalled; the response to the browser is cut short");
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Pending
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An error and its sources, `: `-separated (hyper's own display names
/// only the outermost, "error reading a body from connection").
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderValue, Method, Uri};

    use super::*;

    /// A request's fields as the request log makes them: the URI's bytes
    /// and the made-up ID each already shared with the request's own copy.
    fn request_fields() -> Option<RequestFields> {
        let uri =
            Uri::from_maybe_shared(Bytes::copy_from_slice(b"/api/items?page=2")).expect("uri");
        let request_id = HeaderValue::from_bytes(b"0123456789abcdef").expect("id");
        let (_request_uri, _request_header) = (uri.clone(), request_id.clone());
        Some(RequestFields {
            method: Method::GET,
            uri,
            request_id,
        })
    }

    /// A body of `n` frames that notes, at each poll, which request's
    /// fields are current.
    struct Noting {
        left: usize,
        seen: Arc<Mutex<Vec<Option<HeaderValue>>>>,
    }

    impl Body for Noting {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            let id = telemetry::current_request().map(|f| f.request_id);
            self.seen.lock().expect("lock").push(id);
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk")))))
        }
    }

    /// Polls `body` to its end (every frame is ready at once).
    fn drain(mut body: axum::body::Body) -> usize {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut frames = 0;
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            assert!(frame.is_ok());
            frames += 1;
        }
        frames
    }

    #[test]
    fn an_upstream_body_streams_with_its_requests_fields_current_and_only_then() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = Noting {
            left: 3,
            seen: seen.clone(),
        };
        let mut fields = request_fields();
        let body = telemetry::in_request(&mut fields, || {
            axum::body::Body::new(UpstreamBody::new(inner, Duration::from_secs(100), None))
        });
        // Polled later, outside the request (as hyper polls it).
        assert!(telemetry::current_request().is_none());
        assert_eq!(drain(body), 3);
        assert!(telemetry::current_request().is_none(), "restored");
        let id = HeaderValue::from_static("0123456789abcdef");
        assert_eq!(*seen.lock().expect("lock"), vec![Some(id); 4]);

        // Made outside a request (the access log off): nothing is current.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let body = axum::body::Body::new(UpstreamBody::new(
            Noting {
                left: 1,
                seen: seen.clone(),
            },
            Duration::from_secs(100),
            None,
        ));
        assert_eq!(drain(body), 1);
        assert_eq!(*seen.lock().expect("lock"), vec![None, None]);
    }

    #[test]
    fn wrapping_an_upstream_body_allocates_nothing_more_per_request() {
        let frames = || {
            http_body_util::StreamBody::new(futures_util::stream::iter(
                (0..8).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x")))),
            ))
        };
        let mut fields = request_fields();
        let (plain, wrapped) = (frames(), frames());
        let plain = allocation_counter::measure(|| {
            let body = telemetry::in_request(&mut fields, || axum::body::Body::new(plain));
            assert_eq!(drain(body), 8);
        });
        let wrapped = allocation_counter::measure(|| {
            let body = telemetry::in_request(&mut fields, || {
                axum::body::Body::new(UpstreamBody::new(wrapped, Duration::from_secs(100), None))
            });
            assert_eq!(drain(body), 8);
        });
        assert_eq!(plain.count_total, 1, "the body's box");
        assert_eq!(
            wrapped.count_total, plain.count_total,
            "the request's fields are shared, not copied"
        );
    }

    /// A body that sends one frame, then nothing ever again.
    struct OneThenSilence {
        sent: bool,
    }

    impl Body for OneThenSilence {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.sent {
                return Poll::Pending;
            }
            self.sent = true;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"head")))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_sends_nothing_for_its_idle_timeout_is_cut_short() {
        use http_body_util::BodyExt as _;
        let idle = Duration::from_secs(100);
        let mut body = UpstreamBody::new(OneThenSilence { sent: false }, idle, None);
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "head");
        let started = Instant::now();
        let Ok(Some(Err(e))) = tokio::time::timeout(idle * 2, body.frame()).await else {
            panic!("a silent body must end with an error");
        };
        assert_eq!(
            started.elapsed(),
            idle,
            "cut after exactly the idle timeout"
        );
        assert!(e.is::<BodyStalled>(), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_sending_within_its_idle_timeout_streams_to_its_end() {
        use http_body_util::BodyExt as _;
        let idle = Duration::from_secs(10);
        // Five frames 6 s apart: 30 s in all, never 10 s without one.
        let slow =
            http_body_util::StreamBody::new(futures_util::stream::unfold(0, |n| async move {
                if n == 5 {
                    return None;
                }
                tokio::time::sleep(Duration::from_secs(6)).await;
                Some((
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))),
                    n + 1,
                ))
            }));
        let started = Instant::now();
        let all = UpstreamBody::new(slow, idle, None)
            .collect()
            .await
            .expect("no error")
            .to_bytes();
        assert_eq!(all, "xxxxx");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_request_body_silent_for_its_idle_timeout_is_cut_as_stalled() {
        use http_body_util::BodyExt as _;
        let idle = Duration::from_secs(30);
        let Ok((mut body, _answering)) = ClientBody::wrap(OneThenSilence { sent: false }, idle)
        else {
            panic!("a body still to come is wrapped");
        };
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "head");
        let started = Instant::now();
        let Ok(Some(Err(e))) = tokio::time::timeout(idle * 2, body.frame()).await else {
            panic!("a silent body must end with an error");
        };
        assert_eq!(started.elapsed(), idle);
        assert!(client_body_stalled(&*e), "{e}");
    }

    /// Cut with an error, never a clean end: a chunked body would
    /// otherwise close and the upstream take the part as the whole.
    #[tokio::test(start_paused = true)]
    async fn a_streamed_request_body_ends_with_an_error_once_its_answer_is_done() {
        use http_body_util::BodyExt as _;
        let Ok((mut body, answering)) =
            ClientBody::wrap(OneThenSilence { sent: false }, Duration::from_secs(30))
        else {
            panic!("a body still to come is wrapped");
        };
        body.frame().await.expect("a frame").expect("data");
        drop(answering);
        let Some(Err(e)) = body.frame().await else {
            panic!("an error, not the end");
        };
        assert!(matches!(
            e.downcast_ref::<ClientBodyCut>(),
            Some(ClientBodyCut::Answered)
        ));
        assert!(!client_body_stalled(&*e));
        // And a body that has ended comes back unwrapped.
        assert!(ClientBody::wrap(http_body_util::Empty::<Bytes>::new(), Duration::ZERO).is_err());
    }

    /// Every byte of its length came, only its end flag has not.
    struct AllButTheEnd;

    impl Body for AllButTheEnd {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Pending
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(0)
        }
    }

    #[tokio::test]
    async fn a_streamed_request_body_whose_length_has_all_come_ends_cleanly_with_its_answer() {
        use http_body_util::BodyExt as _;
        let Ok((mut body, answering)) = ClientBody::wrap(AllButTheEnd, Duration::from_secs(30))
        else {
            panic!("not ended yet");
        };
        drop(answering);
        assert!(body.frame().await.is_none(), "a clean end");
    }
}
