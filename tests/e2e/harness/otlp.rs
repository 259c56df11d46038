//! A small OTLP/HTTP receiver owned by one test: a loopback server that
//! accepts `POST /v1/traces` (protobuf `ExportTraceServiceRequest`),
//! decodes it with the generated OTLP messages and keeps every span, so a
//! test can read exactly what the gateway exported.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use tokio::net::TcpListener;

/// One exported span, flattened: IDs in lowercase hex (as in
/// `traceparent`), every attribute value as text.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub attributes: Vec<(String, String)>,
    /// The attributes of the span's resource (`service.name`, ...).
    pub resource: Vec<(String, String)>,
    /// Names and attribute values of the span's events.
    pub events: Vec<String>,
}

impl SpanRecord {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every text this span carries: name, attribute and resource values,
    /// events.
    pub fn texts(&self) -> Vec<&str> {
        let mut all = vec![self.name.as_str()];
        for (k, v) in self.attributes.iter().chain(&self.resource) {
            all.push(k);
            all.push(v);
        }
        all.extend(self.events.iter().map(String::as_str));
        all
    }
}

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;

#[derive(Clone, Default)]
pub struct OtlpReceiver {
    addr: Option<SocketAddr>,
    spans: Arc<Mutex<Vec<SpanRecord>>>,
    requests: Arc<Mutex<usize>>,
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn pairs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn traces(State(rx): State<OtlpReceiver>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    *rx.requests.lock().expect("lock") += 1;
    let mut spans = rx.spans.lock().expect("lock");
    for rs in request.resource_spans {
        let resource = pairs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(SpanRecord {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attributes: pairs(&s.attributes),
                    resource: resource.clone(),
                    events: s
                        .events
                        .iter()
                        .flat_map(|e| {
                            std::iter::once(e.name.clone())
                                .chain(pairs(&e.attributes).into_iter().map(|(_, v)| v))
                        })
                        .collect(),
                });
            }
        }
    }
    StatusCode::OK
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind otlp");
        let rx = OtlpReceiver {
            addr: Some(listener.local_addr().expect("addr")),
            ..Default::default()
        };
        let app = Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .with_state(rx.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        rx
    }

    /// The base URL (`tracing.endpoint`, `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("started"))
    }

    pub fn spans(&self) -> Vec<SpanRecord> {
        self.spans.lock().expect("lock").clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> usize {
        *self.requests.lock().expect("lock")
    }

    /// The spans of trace `trace_id`, once `done` says they are complete
    /// (within 10 s; the exporter sends batches every 100 ms in tests).
    pub async fn trace(
        &self,
        trace_id: &str,
        done: impl Fn(&[SpanRecord]) -> bool,
    ) -> Vec<SpanRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let trace: Vec<SpanRecord> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if done(&trace) || tokio::time::Instant::now() > deadline {
                return trace;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
