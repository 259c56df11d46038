//! Cross-cutting layers: request IDs and the access log, request metrics
//! (`track`), error pages for navigations (`error_pages`), the anti-CSRF
//! rule (`csrf`). The order they are applied in is written down once, in
//! `router::build_router`.

pub mod csrf;
pub mod error_pages;
pub mod track;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request};
use rand::RngCore;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The outermost layers of the public and the admin listener: a request ID
/// (kept from the client or made up, echoed on the response) and, with
/// `log.access_log`, one log line per request carrying it. `/metrics` gets
/// neither: a scrape every few seconds would drown the log.
pub fn with_request_log<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    access_log: bool,
) -> Router<S> {
    let router = if access_log {
        router.layer(
            TraceLayer::new_for_http()
                .make_span_with(crate::telemetry::make_span)
                .on_response(crate::telemetry::on_response)
                .on_request(())
                .on_failure(()),
        )
    } else {
        router
    };
    router
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID.clone(),
            RandomRequestId,
        ))
}

/// 16 hex characters per request: enough to find one request in the logs.
#[derive(Clone, Copy, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let mut bytes = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut bytes);
        let id = crate::session::cookie::hex(&bytes);
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}
