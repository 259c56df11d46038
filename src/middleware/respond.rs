//! The one layer every answer of the main listener passes on its way out,
//! doing in order what were three layers: an error answer becomes a page
//! for a browser navigation (`error_pages`: first, so the page sees the
//! handler's own response), the answer is counted and timed (`track`:
//! what the client gets), and its kind's security headers are set
//! (`security_headers`). One layer, because each layer costs every request
//! a boxed clone of the service below it and a boxed future.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{error_pages, track};
use crate::metrics::Metrics;
use crate::pages::Pages;

/// What the layer needs (its state).
pub struct Respond {
    pub pages: Arc<Pages>,
    pub metrics: Arc<Metrics>,
    /// `server.public_url`'s path (empty for none): the gateway's own
    /// endpoints are registered under it.
    pub base: String,
}

pub async fn respond(State(r): State<Arc<Respond>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let kind = track::kind_of_request(&req, &r.base);
    let page = error_pages::page_request(&req);
    let mut resp = next.run(req).await;
    if let Some(request_id) = page {
        resp = error_pages::render(&r.pages, resp, request_id.as_deref());
    }
    track::record(&r.metrics, kind, started, &resp);
    crate::security_headers::secure_response(resp)
}
