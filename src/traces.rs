//! OpenTelemetry traces: the exporter set up from `[tracing]`, the
//! `tracing` target every exported span is recorded under, and W3C trace
//! context in and out (adopted only from trusted proxies; injected into the
//! upstream request).
//!
//! Spans are ordinary `tracing` spans with target [`SPANS`]. Only the
//! OpenTelemetry layer listens to that target (the log layer never prints
//! it), so with tracing off no subscriber is interested and each such span
//! costs one cached check at its call site: no allocation, no fields
//! evaluated. Attributes are bounded (route templates, methods, status
//! codes, operation names) and never carry a token, cookie, code, state or
//! claim value.
//!
//! Process model: the gateway runs one current-thread runtime per worker
//! thread (`server`), so export work cannot live on any of them. The SDK's
//! batch span processor runs on its own thread and hands batches to
//! [`ExportClient`], which posts them from a small runtime of its own. On
//! shutdown [`Traces::shutdown`] flushes what is queued.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::HeaderMap;
use http::header::HeaderName;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler as SdkSampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::Targets;

use crate::config::{Sampler, TracingConfig};

/// The `tracing` target of every span that is exported.
pub const SPANS: &str = "oidc_bff_otel";

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The running exporter, if any; flush it with [`Traces::shutdown`] before
/// the process exits.
#[must_use = "call shutdown() before exiting, or queued spans are lost"]
pub struct Traces {
    running: Option<(SdkTracerProvider, tokio::runtime::Runtime)>,
}

impl Traces {
    /// No exporter: tracing is off.
    pub fn off() -> Self {
        Self { running: None }
    }

    /// Exports what is queued (waiting at most for the export timeout) and
    /// stops the exporter.
    pub fn shutdown(self) {
        if let Some((provider, runtime)) = self.running {
            if let Err(e) = provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
                tracing::warn!(error = %e, "could not flush the last spans");
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// The layer type the log setup stacks under the log layer.
pub type TracesLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Starts the exporter for `config`: the layer to install and the handle
/// to flush it with.
pub fn start(config: &TracingConfig) -> anyhow::Result<(Traces, TracesLayer)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otel-export")
        .enable_all()
        .build()
        .context("cannot start the trace export runtime")?;
    let http = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .context("cannot build the trace export HTTP client")?;
    let headers: HashMap<String, String> = config
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient {
            http,
            runtime: runtime.handle().clone(),
        })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.traces_endpoint.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .with_headers(headers)
        .build()
        .context("cannot set up the OTLP exporter (tracing.endpoint)")?;
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(config.sampler))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("oidc-bff");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Only bounded attributes: no source locations, thread names or
        // inactivity timings on every span.
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        .with_level(false)
        .with_filter(Targets::new().with_target(SPANS, tracing::Level::TRACE))
        .boxed();
    Ok((
        Traces {
            running: Some((provider, runtime)),
        },
        layer,
    ))
}

fn sampler(s: Sampler) -> SdkSampler {
    let root = if s.ratio >= 1.0 {
        SdkSampler::AlwaysOn
    } else if s.ratio <= 0.0 {
        SdkSampler::AlwaysOff
    } else {
        SdkSampler::TraceIdRatioBased(s.ratio)
    };
    if s.parent_based {
        SdkSampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

/// Makes `span` a child of the W3C `traceparent` in `headers`, if there is
/// a valid one. Call it only for a request from a trusted proxy: anyone
/// else could pick trace IDs (join someone else's trace, or force
/// sampling), so their requests start a new trace.
pub fn adopt_parent(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key(&TRACEPARENT) {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_remote() {
        let _ = span.set_parent(cx);
    }
}

/// Sets the trace context an upstream receives. With tracing on, the
/// client's `traceparent`/`tracestate` are replaced by `span`'s (so the
/// upstream joins our trace). With tracing off, a trusted proxy's are
/// passed on untouched and anyone else's removed.
pub fn propagate(span: &Span, headers: &mut HeaderMap, from_trusted_proxy: bool) {
    if span.is_disabled() {
        if !from_trusted_proxy {
            headers.remove(&TRACEPARENT);
            headers.remove(&TRACESTATE);
        }
        return;
    }
    headers.remove(&TRACEPARENT);
    headers.remove(&TRACESTATE);
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// The exporter's HTTP client: the reqwest client the gateway already
/// uses, driven by the export runtime, so it works whichever thread (the
/// batch processor's) awaits it.
#[derive(Debug)]
struct ExportClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let resp = http.execute(request).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            let mut out = http::Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, HttpError>(out)
        });
        task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_follow_the_configured_ratio_and_parent_rule() {
        let s = |parent_based, ratio| {
            format!(
                "{:?}",
                sampler(Sampler {
                    parent_based,
                    ratio
                })
            )
        };
        assert_eq!(s(false, 1.0), "AlwaysOn");
        assert_eq!(s(false, 0.0), "AlwaysOff");
        assert_eq!(s(false, 0.5), "TraceIdRatioBased(0.5)");
        assert_eq!(s(true, 1.0), "ParentBased(AlwaysOn)");
    }

    #[test]
    fn with_tracing_off_an_untrusted_trace_context_is_removed_and_a_trusted_one_kept() {
        let mut headers = HeaderMap::new();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        headers.insert(&TRACEPARENT, tp.parse().expect("value"));
        headers.insert(&TRACESTATE, "a=b".parse().expect("value"));
        let mut trusted = headers.clone();
        propagate(&Span::none(), &mut trusted, true);
        assert_eq!(trusted, headers);
        propagate(&Span::none(), &mut headers, false);
        assert!(headers.is_empty());
    }
}
