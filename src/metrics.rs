//! Prometheus metrics: what operators watch. One registry per gateway (in
//! `AppState`), served as text on the separate `[metrics] listen` address.
//!
//! A leaf: the registry and its families only. What feeds them lives with
//! the code that observes the event (`middleware::track` for requests).
//!
//! Every label takes values from a small fixed set (request kinds, status
//! classes, error codes, outcomes, store operations, provider endpoints,
//! listeners) or from the configuration (a route's configured path
//! prefix): no user, session, address or request path ever becomes a
//! label, so cardinality stays bounded and nothing personal is exported.
//! Handles the hot path uses (per route, per store operation) are resolved
//! once, so a request only increments. Every family and what to alert on is
//! listed in `docs/operations.md` ("Metrics and alerting").

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

/// `outcome` is `success` or `failure`; `reason` says why a failure
/// failed, from a fixed list per family (`none` for a success).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
    pub reason: &'static str,
}

impl OutcomeLabels {
    pub const SUCCESS: Self = Self {
        outcome: "success",
        reason: "none",
    };

    pub fn failure(reason: &'static str) -> Self {
        Self {
            outcome: "failure",
            reason,
        }
    }
}

/// A configured route (its path prefix, from the config: bounded by it)
/// and the status class of the upstream's answer (`error`: none came).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub route: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

/// A configuration reload's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// A family of [`duration_histogram`]s.
fn histograms<S: Clone + std::hash::Hash + Eq>() -> Family<S, Histogram, fn() -> Histogram> {
    Family::new_with_constructor(duration_histogram)
}

fn duration_histogram() -> Histogram {
    // 0.5 ms … ~8 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 15,
    ))
}

/// One route's upstream latency histogram and status-class counters.
#[derive(Clone, Debug)]
pub struct UpstreamRoute {
    pub latency: Histogram,
    /// 1xx, 2xx, 3xx, 4xx, 5xx, no answer.
    classes: [Counter; 6],
}

impl UpstreamRoute {
    /// Counts an answer (`Some(status)`) or its absence, and times it.
    pub fn observe(&self, status: Option<u16>, seconds: f64) {
        self.latency.observe(seconds);
        self.classes[status.map_or(STATUS_CLASSES.len(), status_class)].inc();
    }
}

/// The `kind` label of `requests` and `request_duration_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Proxy,
    Auth,
    Static,
    Health,
}

impl RequestKind {
    const ALL: [Self; 4] = [Self::Proxy, Self::Auth, Self::Static, Self::Health];

    pub const fn label(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Auth => "auth",
            Self::Static => "static",
            Self::Health => "health",
        }
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A status code's index in [`STATUS_CLASSES`] (anything past 499 is 5xx).
fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The series every request touches (`requests` by kind and status class,
/// `request_duration_seconds` by kind), each taken from its family on
/// first use and kept: a request then increments without hashing its
/// labels or taking the family's lock. A series still appears in
/// `/metrics` only once used.
#[derive(Default)]
struct RequestSeries {
    counts: [[std::sync::OnceLock<Counter>; 5]; 4],
    durations: [std::sync::OnceLock<Histogram>; 4],
}

pub struct Metrics {
    registry: Registry,
    request_series: RequestSeries,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    pub errors: Family<CodeLabel, Counter>,
    pub logins: Family<OutcomeLabels, Counter>,
    pub refreshes: Family<OutcomeLabels, Counter>,
    pub revocations: Family<ReasonLabel, Counter>,
    pub backchannel_logouts: Family<OutcomeLabels, Counter>,
    pub tunnels_open: Gauge,
    pub tunnels_closed: Family<ReasonLabel, Counter>,
    pub config_reloads: Family<ResultLabel, Counter>,
    /// Sessions in the store, as last counted (`spawn_session_counter`).
    pub sessions_active: Gauge,
    pub upstream_responses: Family<UpstreamLabels, Counter>,
    pub upstream_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub store_duration: Family<OperationLabel, Histogram, fn() -> Histogram>,
    pub provider_duration: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    pub connections_open: Family<ListenerLabel, Gauge>,
    pub audit_dropped: Counter,
    /// The in-process session cache (`store.cache_entries`).
    pub session_cache: CacheMetrics,
}

/// The session cache's handles (`session::cache`), resolved once.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    /// Requests answered from the cache.
    pub hits: Counter,
    /// Requests that read the store while the cache was serving.
    pub misses: Counter,
    /// Requests that read the store because tracking was not confirmed.
    pub bypassed: Counter,
    /// Keys invalidated (by Redis' messages or this process's own writes).
    pub invalidations: Counter,
    /// Whole-cache flushes (a tracking connection lost, Redis flushed, a
    /// confirmation after a gap longer than the lease: a stall, or a pause
    /// without requests).
    pub flushes: Counter,
    /// Entries held now.
    pub entries: Gauge,
    /// 1 while every invalidation connection is confirmed, else 0.
    pub tracking_up: Gauge,
}

impl CacheMetrics {
    fn register(&self, lookups: &Family<OutcomeLabel, Counter>, registry: &mut Registry) {
        registry.register(
            "session_cache_lookups",
            "Session lookups by the in-process cache's answer: hit (no store read), miss (read and cached), bypass (read through: invalidation tracking not confirmed)",
            lookups.clone(),
        );
        registry.register(
            "session_cache_invalidations",
            "Sessions evicted from the cache because they changed or ended (Redis invalidation messages and this process's own writes)",
            self.invalidations.clone(),
        );
        registry.register(
            "session_cache_flushes",
            "Times the whole session cache was emptied (an invalidation connection lost, Redis flushed, tracking confirmed again after a pause)",
            self.flushes.clone(),
        );
        registry.register(
            "session_cache_entries",
            "Opened sessions held in this process's cache",
            self.entries.clone(),
        );
        registry.register(
            "session_cache_tracking_up",
            "1 while every Redis invalidation connection of the session cache is confirmed (the cache serves), else 0",
            self.tracking_up.clone(),
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oidc_bff");
        let m = Self {
            registry: Registry::default(),
            request_series: RequestSeries::default(),
            requests: Family::default(),
            duration: histograms(),
            errors: Family::default(),
            logins: Family::default(),
            refreshes: Family::default(),
            revocations: Family::default(),
            backchannel_logouts: Family::default(),
            tunnels_open: Gauge::default(),
            tunnels_closed: Family::default(),
            sessions_active: Gauge::default(),
            upstream_responses: Family::default(),
            upstream_duration: histograms(),
            store_duration: histograms(),
            provider_duration: histograms(),
            connections_open: Family::default(),
            audit_dropped: Counter::default(),
            config_reloads: Family::default(),
            session_cache: CacheMetrics::default(),
        };
        registry.register(
            "requests",
            "HTTP requests answered, by kind and status class",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by kind",
            m.duration.clone(),
        );
        registry.register(
            "errors",
            "Error answers, by error code (as in the JSON body)",
            m.errors.clone(),
        );
        registry.register(
            "logins",
            "Completed callbacks, by outcome and failure reason",
            m.logins.clone(),
        );
        registry.register(
            "token_refreshes",
            "Access-token refreshes, by outcome; failure reasons: invalid_grant or refused (session ended), provider_error (session kept)",
            m.refreshes.clone(),
        );
        registry.register(
            "session_revocations",
            "Sessions ended, by reason",
            m.revocations.clone(),
        );
        registry.register(
            "backchannel_logouts",
            "Back-channel logout requests, by outcome and failure reason",
            m.backchannel_logouts.clone(),
        );
        registry.register(
            "websockets_open",
            "WebSocket (upgraded) connections being proxied now",
            m.tunnels_open.clone(),
        );
        registry.register(
            "websockets_closed",
            "WebSocket tunnels ended: closed (by either side), session_ended or going_away (cut by the gateway), or error",
            m.tunnels_closed.clone(),
        );
        registry.register(
            "sessions_active",
            "Live sessions in the store, as last counted (every 30 s by one worker)",
            m.sessions_active.clone(),
        );
        registry.register(
            "upstream_responses",
            "Upstream answers by configured route and status class (error: no answer)",
            m.upstream_responses.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending to an upstream to its response head, by configured route",
            m.upstream_duration.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Session store round trips, by operation",
            m.store_duration.clone(),
        );
        registry.register(
            "provider_request_duration_seconds",
            "Identity provider calls, by endpoint",
            m.provider_duration.clone(),
        );
        registry.register(
            "connections_open",
            "TCP connections open now, by listener (public, admin, metrics)",
            m.connections_open.clone(),
        );
        registry.register(
            "audit_events_dropped",
            "Audit events dropped because the writer's queue was full",
            m.audit_dropped.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, POST /admin/reload): success, invalid (refused by validation) or failed (a worker could not build it); the running configuration is kept unless success",
            m.config_reloads.clone(),
        );
        let lookups = Family::<OutcomeLabel, Counter>::default();
        // One statement each: a family's guard must be gone before the
        // next `get_or_create` (it may take the write lock).
        let outcome = |outcome: &'static str| -> Counter {
            let counter = lookups.get_or_create(&OutcomeLabel { outcome });
            counter.clone()
        };
        let hits = outcome("hit");
        let misses = outcome("miss");
        let bypassed = outcome("bypass");
        let session_cache = CacheMetrics {
            hits,
            misses,
            bypassed,
            ..CacheMetrics::default()
        };
        session_cache.register(&lookups, &mut registry);
        Self {
            registry,
            session_cache,
            ..m
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

    /// Counts one answer of the main listener (`status`: its status code)
    /// and times it.
    pub fn record_request(&self, kind: RequestKind, status: u16, seconds: f64) {
        let class = status_class(status);
        let k = kind as usize;
        self.request_series.counts[k][class]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        kind: RequestKind::ALL[k].label(),
                        status: STATUS_CLASSES[class],
                    })
                    .clone()
            })
            .inc();
        self.request_series.durations[k]
            .get_or_init(|| {
                self.duration
                    .get_or_create(&KindLabel {
                        kind: RequestKind::ALL[k].label(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    pub fn count(family: &Family<OutcomeLabels, Counter>, labels: &OutcomeLabels) {
        family.get_or_create(labels).inc();
    }

    /// The gauge of open connections on one listener (`public`, `admin`,
    /// `metrics`), resolved once per listener.
    pub fn connections(&self, listener: &'static str) -> Gauge {
        self.connections_open
            .get_or_create(&ListenerLabel { listener })
            .clone()
    }

    /// One configured route's upstream metrics, resolved once (at start-up)
    /// so the proxy path only increments.
    pub fn upstream_route(&self, route: &str) -> UpstreamRoute {
        let status = |status: &'static str| {
            self.upstream_responses
                .get_or_create(&UpstreamLabels {
                    route: route.to_owned(),
                    status,
                })
                .clone()
        };
        UpstreamRoute {
            latency: self
                .upstream_duration
                .get_or_create(&RouteLabel {
                    route: route.to_owned(),
                })
                .clone(),
            classes: [
                status(STATUS_CLASSES[0]),
                status(STATUS_CLASSES[1]),
                status(STATUS_CLASSES[2]),
                status(STATUS_CLASSES[3]),
                status(STATUS_CLASSES[4]),
                status("error"),
            ],
        }
    }

    /// The histogram of one store operation, resolved once.
    pub fn store_operation(&self, operation: &'static str) -> Histogram {
        self.store_duration
            .get_or_create(&OperationLabel { operation })
            .clone()
    }

    /// The histogram of one provider endpoint, resolved once.
    pub fn provider_endpoint(&self, endpoint: &'static str) -> Histogram {
        self.provider_duration
            .get_or_create(&EndpointLabel { endpoint })
            .clone()
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
        Metrics::count(&m.logins, &OutcomeLabels::SUCCESS);
        m.duration
            .get_or_create(&KindLabel { kind: "proxy" })
            .observe(0.002);
        m.record_request(RequestKind::Health, 503, 0.001);
        m.record_request(RequestKind::Health, 503, 0.001);
        let text = m.render();
        assert!(
            text.contains("oidc_bff_requests_total{kind=\"health\",status=\"5xx\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("oidc_bff_request_duration_seconds_count{kind=\"health\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("kind=\"auth\""),
            "a series appears only once used: {text}"
        );
        assert!(
            text.contains("oidc_bff_requests_total{kind=\"proxy\",status=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("oidc_bff_logins_total{outcome=\"success\",reason=\"none\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("oidc_bff_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
