//! The one layer every answer of the main listener passes on its way out,
//! doing in order what were three layers: an error answer becomes a page
//! for a browser navigation (`error_pages`: first, so the page sees the
//! handler's own response), the answer is counted and timed (`track`:
//! what the client gets), and its kind's security headers are set
//! (`security_headers`). One layer, because each layer costs every request
//! a clone of the service below it and a future; and a hand-written one
//! (a tower service with its own future, not `from_fn`), which costs no
//! boxed future and no boxed clone of the rest of the stack per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{error_pages, track};
use crate::metrics::{Metrics, RequestKind};
use crate::pages::Pages;

/// What the layer needs (its state).
pub struct Respond {
    pub pages: Arc<Pages>,
    pub metrics: Arc<Metrics>,
    /// `server.public_url`'s path (empty for none): the gateway's own
    /// endpoints are registered under it.
    pub base: String,
}

/// The layer (see the module doc).
#[derive(Clone)]
pub struct RespondLayer {
    respond: Arc<Respond>,
    kind: Option<RequestKind>,
}

impl RespondLayer {
    pub fn new(respond: Respond) -> Self {
        Self {
            respond: Arc::new(respond),
            kind: None,
        }
    }

    /// The same layer for services that answer one kind of request only
    /// (a configured route: always [`RequestKind::Proxy`]): the kind is
    /// then known without the router's matched path, which a configured
    /// route reached without the router (`router::direct`) does not have.
    pub fn of_kind(&self, kind: RequestKind) -> Self {
        Self {
            respond: self.respond.clone(),
            kind: Some(kind),
        }
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = RespondService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RespondService {
            inner,
            respond: self.respond.clone(),
            kind: self.kind,
        }
    }
}

/// The service of [`RespondLayer`].
#[derive(Clone)]
pub struct RespondService<S> {
    inner: S,
    respond: Arc<Respond>,
    kind: Option<RequestKind>,
}

impl<S> Service<Request> for RespondService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let kind = self
            .kind
            .unwrap_or_else(|| track::kind_of_request(&req, &self.respond.base));
        let page = error_pages::page_request(&req);
        ResponseFuture {
            inner: self.inner.call(req),
            respond: self.respond.clone(),
            started,
            kind,
            page,
        }
    }
}

pin_project! {
    /// The inner answer, then the way out (see the module doc).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        respond: Arc<Respond>,
        started: Instant,
        kind: RequestKind,
        // For a navigation, the request ID its error page would show.
        page: Option<Option<String>>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx))?;
        let r = &**this.respond;
        if let Some(request_id) = this.page.take() {
            resp = error_pages::render(&r.pages, resp, request_id.as_deref());
        }
        track::record(&r.metrics, *this.kind, *this.started, &resp);
        Poll::Ready(Ok(crate::security_headers::secure_response(resp)))
    }
}
