//! Cross-cutting layers: request IDs, the access log, error pages, and the
//! order they are applied in (see `crate::build_router`).

use axum::http::{HeaderValue, Request};
use rand::RngCore;
use tower_http::request_id::{MakeRequestId, RequestId};

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
