//! Request metrics: every answer of the main listener counted by kind and
//! status class, timed to the response head, and error answers counted by
//! their code. The kind comes from the route the router matched, so no path
//! is looked at twice and no path ever becomes a label.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ErrorInfo;
use crate::metrics::{CodeLabel, KindLabel, Metrics, RequestLabels};

/// The request kind label for a matched route (`None`: the fallback, i.e.
/// the static app or a 404).
fn kind_of(matched: Option<&str>) -> &'static str {
    match matched {
        None => "static",
        Some(p) if p.starts_with("/auth/") => "auth",
        Some("/healthz" | "/readyz") => "health",
        Some(_) => "proxy",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Counts and times every request on the main listener.
/// `base` is `server.public_url`'s path, under which the gateway's own
/// endpoints are registered (empty for none).
pub async fn track(
    State((metrics, base)): State<(Arc<Metrics>, Arc<str>)>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let kind = kind_of(
        req.extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().strip_prefix(&*base).unwrap_or(m.as_str())),
    );
    let resp = next.run(req).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            kind,
            status: status_class(resp.status().as_u16()),
        })
        .inc();
    metrics
        .duration
        .get_or_create(&KindLabel { kind })
        .observe(started.elapsed().as_secs_f64());
    if let Some(info) = resp.extensions().get::<ErrorInfo>() {
        metrics
            .errors
            .get_or_create(&CodeLabel { code: info.code })
            .inc();
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_kinds_come_from_the_matched_route() {
        assert_eq!(kind_of(Some("/auth/login")), "auth");
        assert_eq!(kind_of(Some("/readyz")), "health");
        assert_eq!(kind_of(Some("/api/{*rest}")), "proxy");
        assert_eq!(kind_of(None), "static");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
    }
}
