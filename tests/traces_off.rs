//! With traces off, the spans on the request path cost nothing: under the
//! log subscriber the gateway installs (`telemetry::init`, at the most
//! verbose level), a span with the exported target (`traces::SPANS`) is
//! disabled at its call site, its fields are never evaluated, and
//! entering, recording and propagating it allocate nothing. Counted with
//! `allocation-counter`.

use http::{HeaderMap, HeaderValue};
use oidc_bff::config::{LogConfig, LogFormat};
use oidc_bff::traces::{SPANS, adopt_parent, propagate};
use tracing::Instrument as _;

fn allocations_in(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

/// A field whose evaluation would show: it allocates.
fn costly() -> String {
    "evaluated".repeat(10)
}

#[test]
fn with_traces_off_exported_spans_allocate_nothing_and_evaluate_no_field() {
    oidc_bff::telemetry::init(
        &LogConfig {
            format: LogFormat::Json,
            level: "trace".into(),
            access_log: true,
        },
        None,
        true,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    // A warm-up pass registers the call sites (their interest is cached).
    for pass in 0..2 {
        let mut h = headers.clone();
        let n = allocations_in(|| {
            let span = tracing::info_span!(
                target: SPANS,
                "upstream",
                otel.name = %format_args!("upstream {}", costly()),
                otel.kind = "client",
                server.address = costly().as_str(),
                http.response.status_code = tracing::field::Empty,
            );
            assert!(
                span.is_disabled(),
                "nobody listens to {SPANS} with traces off"
            );
            adopt_parent(&span, &h);
            propagate(&span, &mut h, false);
            runtime.block_on(async { 1 }.instrument(span.clone()));
            span.record("http.response.status_code", 200u16);
        });
        if pass == 1 {
            assert_eq!(n, 0, "allocations on the span path with traces off");
            assert!(
                h.get("traceparent").is_none(),
                "an untrusted client's is removed"
            );
        }
    }
    // The counter counts: the same log subscriber allocates for an event.
    assert!(allocations_in(|| tracing::info!(value = %costly(), "logged")) > 0);
}
