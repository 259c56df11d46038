//! The inbound request's span for exported traces (`traces`): named for
//! the method and the matched route template, never the path itself, so
//! its attributes stay bounded and free of anything a path or query could
//! carry. A `traceparent` is adopted only from a trusted proxy
//! (`server.trusted_proxies`); anyone else's request starts a new trace.
//! Installed only when traces are exported.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::extract::client::{ClientAddressPolicy, peer_ip_of};
use crate::traces::{SPANS, adopt_parent};

/// Wraps the request in a server span with method, route and status.
pub async fn server_span(
    State(client_address): State<ClientAddressPolicy>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(fallback)", |m| m.as_str());
    let method = req.method().as_str();
    let span = tracing::info_span!(
        target: SPANS,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    if client_address.trusts(peer_ip_of(req.extensions())) {
        adopt_parent(&span, req.headers());
    }
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    resp
}
