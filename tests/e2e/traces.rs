//! Exported traces, read back by a real OTLP/HTTP receiver: one trace per
//! proxied call holding the inbound, session, store, provider and upstream
//! spans; the upstream joins that trace through `traceparent`; a client's
//! own `traceparent` is adopted only from a trusted proxy; nothing secret
//! in any span; nothing sent with tracing off. The gateway runs as its own
//! process, since the tracer is process-wide.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::otlp::{CLIENT, SERVER, SpanRecord};
use crate::harness::{
    Browser, CLIENT_SECRET, GatewayBuilder, KEY_B64, LoginSecrets, OtlpReceiver, ProviderApi,
    Upstream, duration, route, shared,
};

/// A gateway process exporting to `rx` (configured in its file), batching
/// for 100 ms.
fn traced(upstream: &Upstream, rx: &OtlpReceiver) -> GatewayBuilder {
    let endpoint = rx.url();
    GatewayBuilder::new(upstream)
        .configure(move |c| {
            c.tracing.enabled = true;
            c.tracing.endpoint = endpoint;
            c.tracing.service_name = "bff-under-test".into();
        })
        .process_env("OTEL_BSP_SCHEDULE_DELAY", "100")
}

/// (trace id, parent span id) of a `traceparent` value.
fn parse_traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value}");
    assert_eq!(parts[0], "00");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn named<'a>(trace: &'a [SpanRecord], name: &str) -> Vec<&'a SpanRecord> {
    trace.iter().filter(|s| s.name == name).collect()
}

fn describe(trace: &[SpanRecord]) -> String {
    trace
        .iter()
        .map(|s| {
            format!(
                "{} {} <- {} {:?}",
                s.name, s.span_id, s.parent_span_id, s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_call_is_one_trace_from_request_to_upstream_with_no_secret_in_any_span() {
    let rx = OtlpReceiver::start().await;
    let upstream = Upstream::start().await;
    // A skew longer than the access token's life: every proxied call
    // refreshes first, so the trace shows the refresh too.
    // The session cache off: the trace is to show the lookup's store read
    // (a cache hit has none). The browser's connection waits for the
    // exports between requests: a header deadline longer than that wait,
    // so the gateway does not close it (HTTP/1 keep-alive waits count
    // against `server.header_read_timeout`) just as the next request is
    // sent on it.
    let gw = traced(&upstream, &rx)
        .refresh_skew("2h")
        .configure(|c| {
            c.store.cache_entries = 0;
            c.server.header_read_timeout = duration("60s");
        })
        .start_process()
        .await;

    let mut b = Browser::new(&gw);
    let LoginSecrets {
        login_cookies,
        code,
        state,
    } = b.login_revealing("/app", "alice", "alice-password").await;
    let session = b.session_cookie().expect("session cookie");
    let user = b.get("/auth/user").await.json();
    let text_of = |v: &serde_json::Value| v.as_str().expect("string").to_owned();
    let sub = text_of(&user["sub"]);
    let email = text_of(&user["claims"]["email"]);
    let session_id = text_of(&user["session"]["id"]);
    let logout_token = text_of(&user["logout_token"]);

    let resp = b
        .request(
            Method::GET,
            "/api/orders",
            &[("authorization", "Bearer browser-supplied-secret-4711")],
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let seen = upstream.seen();
    let call = seen.last().expect("the upstream was called");
    let (trace_id, parent) =
        parse_traceparent(&call.header("traceparent").expect("traceparent upstream"));

    let trace = rx
        .trace(&trace_id, |t| {
            t.iter().any(|s| s.kind == SERVER) && t.iter().any(|s| s.name == "upstream")
        })
        .await;
    let all = describe(&trace);
    // The inbound request: a server span, named by route template.
    let servers: Vec<_> = trace.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(servers.len(), 1, "one inbound span:\n{all}");
    let server = servers[0];
    assert_eq!(server.name, "GET /api/{*rest}", "{all}");
    assert_eq!(server.attribute("http.route"), Some("/api/{*rest}"));
    assert_eq!(server.attribute("http.request.method"), Some("GET"));
    assert_eq!(server.attribute("http.response.status_code"), Some("200"));
    assert!(server.parent_span_id.is_empty(), "a new trace: {all}");
    // The session lookup and its store read, under the request.
    let lookup = named(&trace, "session.lookup");
    assert_eq!(lookup.len(), 1, "{all}");
    assert_eq!(lookup[0].parent_span_id, server.span_id);
    assert_eq!(lookup[0].attribute("session.outcome"), Some("active"));
    assert!(
        named(&trace, "store get")
            .iter()
            .any(|s| s.parent_span_id == lookup[0].span_id
                && s.kind == CLIENT
                && s.attribute("db.system.name") == Some("redis")),
        "the lookup reads the store:\n{all}"
    );
    // The refresh, with its provider call and store writes.
    let refresh = named(&trace, "session.refresh");
    assert_eq!(refresh.len(), 1, "{all}");
    assert_eq!(refresh[0].attribute("refresh.outcome"), Some("ok"));
    assert!(
        named(&trace, "provider.refresh")
            .iter()
            .any(|s| s.parent_span_id == refresh[0].span_id && s.kind == CLIENT),
        "{all}"
    );
    assert!(
        trace
            .iter()
            .any(|s| s.name.starts_with("store ") && s.parent_span_id == refresh[0].span_id),
        "{all}"
    );
    // The upstream call: a client span, whose context the upstream got.
    let up = named(&trace, "upstream GET");
    assert_eq!(up.len(), 1, "{all}");
    assert_eq!(up[0].kind, CLIENT);
    assert_eq!(up[0].span_id, parent, "traceparent names the upstream span");
    assert_eq!(up[0].parent_span_id, server.span_id);
    assert_eq!(up[0].attribute("http.response.status_code"), Some("200"));
    assert_eq!(up[0].attribute("oidc_bff.route"), Some("/api"));
    assert_eq!(
        server
            .resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.as_str()),
        Some("bff-under-test")
    );

    // Every span exported so far (the login's too): no secret anywhere.
    // The refresh tokens the provider holds, read before the logout
    // revokes this session's (read after it, the list holds only what
    // other tests left, and none when this test runs alone).
    let api = ProviderApi::new(&shared().provider.issuer);
    let refresh_tokens: Vec<String> = api
        .get("/__test/refresh-tokens")
        .await
        .as_array()
        .expect("refresh tokens")
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    assert!(!refresh_tokens.is_empty());
    let logout = b
        .request(Method::POST, "/auth/logout", &[("x-csrf", "1")], None)
        .await;
    assert_eq!(logout.status, StatusCode::OK);
    let bearers: Vec<String> = upstream
        .seen()
        .iter()
        .filter_map(|s| s.header("authorization"))
        .map(|a| a.trim_start_matches("Bearer ").to_owned())
        .collect();
    // The logout's spans are exported too before they are read.
    let spans_before = rx.spans().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let spans = rx.spans();
    assert!(spans.len() >= spans_before);
    assert!(
        spans.iter().any(|s| s.name == "provider.token"),
        "the login's code exchange is traced"
    );
    let mut secrets = vec![
        ("session cookie", session),
        ("session id", session_id),
        ("authorization code", code),
        ("state", state),
        ("logout token", logout_token),
        ("sub", sub),
        ("email", email),
        ("client secret", CLIENT_SECRET.to_owned()),
        ("encryption key", KEY_B64.to_owned()),
        (
            "browser Authorization",
            "browser-supplied-secret-4711".into(),
        ),
    ];
    secrets.extend(login_cookies.into_iter().map(|c| ("login cookie", c)));
    secrets.extend(bearers.into_iter().map(|t| ("access token", t)));
    secrets.extend(refresh_tokens.into_iter().map(|t| ("refresh token", t)));
    for span in &spans {
        for text in span.texts() {
            for (what, secret) in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "the {what} appears in span {}: {text}",
                    span.name
                );
            }
        }
    }
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

/// Calls the anonymous route `/open` with a client-chosen `traceparent`;
/// returns the trace context the upstream received and the request's
/// server span.
async fn call_with_client_traceparent(
    trusted_proxies: Vec<String>,
) -> (String, String, SpanRecord) {
    let rx = OtlpReceiver::start().await;
    let upstream = Upstream::start().await;
    let mut open = route("/open", &upstream.url());
    open.auth = "none".into();
    // Configured by the standard variables alone this time.
    let gw = GatewayBuilder::new(&upstream)
        .route(open)
        .configure(|c| c.server.trusted_proxies = trusted_proxies)
        .process_env("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.url())
        .process_env("OTEL_SERVICE_NAME", "bff-from-env")
        .process_env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start_process()
        .await;
    let resp = reqwest::Client::new()
        .get(gw.url("/open/x"))
        .header(
            "traceparent",
            format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"),
        )
        .header("tracestate", "client=chosen")
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.seen();
    let call = seen.last().expect("upstream called");
    let (trace_id, parent) = parse_traceparent(&call.header("traceparent").expect("traceparent"));
    let trace = rx
        .trace(&trace_id, |t| t.iter().any(|s| s.kind == SERVER))
        .await;
    let server = trace
        .iter()
        .find(|s| s.kind == SERVER)
        .unwrap_or_else(|| panic!("no server span in {}", describe(&trace)))
        .clone();
    let up = named(&trace, "upstream GET");
    assert_eq!(up.len(), 1, "{}", describe(&trace));
    assert_eq!(up[0].span_id, parent);
    assert_eq!(
        server
            .resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.as_str()),
        Some("bff-from-env")
    );
    (
        trace_id,
        call.header("tracestate").unwrap_or_default(),
        server,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_from_an_untrusted_client_starts_a_new_trace_and_is_not_passed_on() {
    let (trace_id, tracestate, server) = call_with_client_traceparent(Vec::new()).await;
    assert_ne!(trace_id, CLIENT_TRACE, "the client's trace id was adopted");
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert!(!tracestate.contains("client=chosen"), "{tracestate}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_from_a_trusted_proxy_is_continued() {
    let (trace_id, _, server) = call_with_client_traceparent(vec!["127.0.0.1/32".into()]).await;
    assert_eq!(trace_id, CLIENT_TRACE);
    assert_eq!(server.parent_span_id, CLIENT_PARENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_nothing_is_exported_and_no_client_trace_context_passes() {
    let rx = OtlpReceiver::start().await;
    let upstream = Upstream::start().await;
    // The collector is named, but the SDK is switched off.
    let gw = GatewayBuilder::new(&upstream)
        .process_env("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.url())
        .process_env("OTEL_SDK_DISABLED", "true")
        .process_env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start_process()
        .await;
    let mut b = Browser::new(&gw);
    b.login_alice().await;
    let resp = b
        .request(
            Method::GET,
            "/api/x",
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen.last().expect("called").header("traceparent"), None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.requests(), 0, "spans were exported: {:?}", rx.spans());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_at_shutdown_are_sent_before_the_process_exits() {
    let rx = OtlpReceiver::start().await;
    let upstream = Upstream::start().await;
    // A batch delay far longer than the test: only the flush at exit sends.
    let gw = traced(&upstream, &rx)
        .process_env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .start_process()
        .await;
    let resp = reqwest::get(gw.url("/healthz")).await.expect("healthz");
    assert_eq!(resp.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.requests(), 0, "nothing is sent before the batch is due");

    gw._process.as_ref().expect("a process").signal("INT");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !rx.spans().iter().any(|s| s.name == "GET /healthz") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queued spans were not flushed at shutdown: {:?}",
            rx.spans()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
