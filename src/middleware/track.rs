//! Request metrics: every answer of the main listener counted by kind and
//! status class, timed to the response head, and error answers counted by
//! their code. The kind comes from the route the router matched, so no path
//! is looked at twice and no path ever becomes a label.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;

use crate::error::ErrorInfo;
use crate::metrics::{CodeLabel, Metrics, RequestKind};

/// The request kind for a matched route (`None`: the fallback, i.e.
/// the static app or a 404).
fn kind_of(matched: Option<&str>) -> RequestKind {
    match matched {
        None => RequestKind::Static,
        Some(p) if p.starts_with("/auth/") => RequestKind::Auth,
        Some("/healthz" | "/readyz") => RequestKind::Health,
        Some(_) => RequestKind::Proxy,
    }
}

/// The request's kind, from the route the router matched. `base` is
/// `server.public_url`'s path, under which the gateway's own endpoints are
/// registered (empty for none).
pub fn kind_of_request(req: &Request, base: &str) -> RequestKind {
    kind_of(
        req.extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().strip_prefix(base).unwrap_or(m.as_str())),
    )
}

/// Counts and times one answer (`started`: when its request came in), and
/// counts an error answer by its code.
pub fn record(metrics: &Metrics, kind: RequestKind, started: Instant, resp: &Response) {
    metrics.record_request(
        kind,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if let Some(info) = resp.extensions().get::<ErrorInfo>() {
        metrics
            .errors
            .get_or_create(&CodeLabel { code: info.code })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_kinds_come_from_the_matched_route() {
        assert_eq!(kind_of(Some("/auth/login")), RequestKind::Auth);
        assert_eq!(kind_of(Some("/readyz")), RequestKind::Health);
        assert_eq!(kind_of(Some("/api/{*rest}")), RequestKind::Proxy);
        assert_eq!(kind_of(None), RequestKind::Static);
    }
}
