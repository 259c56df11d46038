//! A proxied response's body on its way to the browser: it streams after
//! the request's future has finished, so its polls make the request's log
//! fields current again (`telemetry::in_request`) and a body the upstream
//! cuts short is logged as the request's, with its ID.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::telemetry::{self, RequestFields};

pin_project! {
    /// An upstream's response body, polled as part of the request that
    /// asked for it. No allocation of its own: it is boxed once with the
    /// body it wraps (`axum::body::Body::new`), as that body was before,
    /// and the request's fields are a clone that shares their bytes
    /// (`None` with the access log off: then no line names its request).
    pub struct UpstreamBody<B> {
        #[pin]
        inner: B,
        fields: Option<RequestFields>,
    }
}

impl<B> UpstreamBody<B> {
    /// Wraps `inner` for the request being handled now.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            fields: telemetry::current_request(),
        }
    }
}

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let inner = this.inner;
        telemetry::in_request(this.fields, || {
            let polled = inner.poll_frame(cx);
            if let Poll::Ready(Some(Err(e))) = &polled {
                // The browser gets a cut-short response (its connection or
                // stream is reset); the cause is only here. The error says
                // what failed (a reset, an early close), never what was
                // sent.
                tracing::warn!(
                    error = %ErrorChain(e),
                    "upstream response body failed; the response to the browser is cut short"
                );
            }
            polled
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
            axum::body::Body::new(UpstreamBody::new(inner))
        });
        // Polled later, outside the request (as hyper polls it).
        assert!(telemetry::current_request().is_none());
        assert_eq!(drain(body), 3);
        assert!(telemetry::current_request().is_none(), "restored");
        let id = HeaderValue::from_static("0123456789abcdef");
        assert_eq!(*seen.lock().expect("lock"), vec![Some(id); 4]);

        // Made outside a request (the access log off): nothing is current.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let body = axum::body::Body::new(UpstreamBody::new(Noting {
            left: 1,
            seen: seen.clone(),
        }));
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
                axum::body::Body::new(UpstreamBody::new(wrapped))
            });
            assert_eq!(drain(body), 8);
        });
        assert_eq!(plain.count_total, 1, "the body's box");
        assert_eq!(
            wrapped.count_total, plain.count_total,
            "the request's fields are shared, not copied"
        );
    }
}
