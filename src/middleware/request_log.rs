//! The outermost layer of the public and the admin listener, in one
//! service with a hand-written future (it was four tower layers, each a
//! service clone and a future per request): a request ID kept from a
//! trusted proxy when well-formed (`keep_request_id`) or made up, set on
//! the request (so handlers, upstreams and error pages see it) and echoed
//! on the response; and, with `log.access_log`, the request's fields made
//! current while it is polled (so every log line names the request, see
//! `telemetry`; a proxied response's body, which streams on after this
//! future is done, sets a copy of them itself: `proxy::streamed`) and its
//! access line written when the response head is ready.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{X_REQUEST_ID, keep_request_id, new_request_id};
use crate::extract::client::{ClientAddressPolicy, peer_ip_of};
use crate::telemetry::{self, RequestFields};

/// See the module doc.
#[derive(Clone)]
pub struct RequestLogLayer {
    pub access_log: bool,
    pub client_address: ClientAddressPolicy,
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            access_log: self.access_log,
            client_address: self.client_address.clone(),
        }
    }
}

/// The service of [`RequestLogLayer`].
#[derive(Clone)]
pub struct RequestLog<S> {
    inner: S,
    access_log: bool,
    client_address: ClientAddressPolicy,
}

impl<S> Service<Request<Body>> for RequestLog<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let trusted = self.client_address.trusts(peer_ip_of(req.extensions()));
        let kept = keep_request_id(req.headers(), trusted)
            .then(|| req.headers().get(&X_REQUEST_ID).cloned())
            .flatten();
        let request_id = match kept {
            Some(id) => id,
            None => {
                // Replaces every incoming value.
                let id = new_request_id();
                req.headers_mut().insert(&X_REQUEST_ID, id.clone());
                id
            }
        };
        let mut fields = self.access_log.then(|| RequestFields {
            method: req.method().clone(),
            uri: req.uri().clone(),
            request_id: request_id.clone(),
        });
        let started = Instant::now();
        let inner = telemetry::in_request(&mut fields, || self.inner.call(req));
        ResponseFuture {
            inner,
            fields,
            request_id: Some(request_id),
            started,
        }
    }
}

pin_project! {
    /// The response of [`RequestLog`]: the inner one, polled with the
    /// request's fields current.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        fields: Option<RequestFields>,
        request_id: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let mut resp = ready!(telemetry::in_request(this.fields, || inner.poll(cx)))?;
        if let Some(id) = this.request_id.take()
            && !resp.headers().contains_key(&X_REQUEST_ID)
        {
            resp.headers_mut().insert(&X_REQUEST_ID, id);
        }
        if this.fields.is_some() {
            let (status, latency) = (resp.status().as_u16(), this.started.elapsed());
            telemetry::in_request(this.fields, || telemetry::access_line(status, latency));
            *this.fields = None;
        }
        Poll::Ready(Ok(resp))
    }
}
