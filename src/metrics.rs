//! Prometheus metrics: what operators watch. One registry per gateway (in
//! `AppState`), served as text on the separate `[metrics] listen` address.
//!
//! A leaf: the registry and its families only. What feeds them lives with
//! the code that observes the event (`middleware::track` for requests).
//!
//! Every label takes values from a small fixed set (request kinds, status
//! classes, error codes, outcomes): no user, session or path ever becomes a
//! label, so cardinality stays bounded and nothing personal is exported.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `proxy`, `auth`, `static`, `health`.
    pub kind: &'static str,
    /// `2xx` … `5xx`.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms … ~8 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 15,
    ))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    pub errors: Family<CodeLabel, Counter>,
    pub logins: Family<ResultLabel, Counter>,
    pub refreshes: Family<ResultLabel, Counter>,
    pub revocations: Family<ReasonLabel, Counter>,
    pub backchannel_logouts: Family<ResultLabel, Counter>,
    pub tunnels_open: Gauge,
    pub tunnels_closed: Family<ReasonLabel, Counter>,
    pub config_reloads: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oidc_bff");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<KindLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let errors = Family::<CodeLabel, Counter>::default();
        let logins = Family::<ResultLabel, Counter>::default();
        let refreshes = Family::<ResultLabel, Counter>::default();
        let revocations = Family::<ReasonLabel, Counter>::default();
        let backchannel_logouts = Family::<ResultLabel, Counter>::default();
        let tunnels_open = Gauge::default();
        let tunnels_closed = Family::<ReasonLabel, Counter>::default();
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by kind and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by kind",
            duration.clone(),
        );
        registry.register(
            "errors",
            "Error answers, by error code (as in the JSON body)",
            errors.clone(),
        );
        registry.register(
            "logins",
            "Completed callbacks: success or failed",
            logins.clone(),
        );
        registry.register(
            "token_refreshes",
            "Access-token refreshes: success, invalid_grant or refused (session ended), provider_error (session kept)",
            refreshes.clone(),
        );
        registry.register(
            "session_revocations",
            "Sessions ended, by reason",
            revocations.clone(),
        );
        registry.register(
            "backchannel_logouts",
            "Back-channel logout requests: accepted or refused",
            backchannel_logouts.clone(),
        );
        registry.register(
            "websockets_open",
            "WebSocket (upgraded) connections being proxied now",
            tunnels_open.clone(),
        );
        registry.register(
            "websockets_closed",
            "WebSocket tunnels ended: closed (by either side), session_ended or going_away (cut by the gateway), or error",
            tunnels_closed.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, POST /admin/reload): success, invalid (refused by validation) or failed (a worker could not build it); the running configuration is kept unless success",
            config_reloads.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            errors,
            logins,
            refreshes,
            revocations,
            backchannel_logouts,
            tunnels_open,
            tunnels_closed,
            config_reloads,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn count(family: &Family<ResultLabel, Counter>, result: &'static str) {
        family.get_or_create(&ResultLabel { result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                kind: "proxy",
                status: "2xx",
            })
            .inc();
        Metrics::count(&m.logins, "success");
        m.duration
            .get_or_create(&KindLabel { kind: "proxy" })
            .observe(0.002);
        let text = m.render();
        assert!(
            text.contains("oidc_bff_requests_total{kind=\"proxy\",status=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("oidc_bff_logins_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("oidc_bff_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
