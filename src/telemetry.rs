//! Logging: `tracing` to stdout, text or JSON, filtered by `log.level`
//! (or `RUST_LOG` when set), coloured on a terminal unless `NO_COLOR` is
//! set. The access log prints method, path (never the
//! query: a callback's query holds the authorization code), status and
//! latency. Exported traces are `traces`'.
//!
//! Every line written while a request is handled names it, as a span
//! would (`request{method=GET path=/api request_id="…"}:`), but the
//! request is no `tracing` span: its fields sit in a per-thread slot
//! ([`RequestFields`], set by `middleware::request_log` while it polls the
//! request, and by `proxy::streamed` while a proxied response's body
//! streams on after it) and this module's formatters print them. A span per request
//! cost a span-registry entry, its fields formatted into a string up
//! front, and a registry lookup on every poll — most of the access log's
//! cost — for lines almost no request has besides its access line.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::Duration;

use axum::http::{HeaderValue, Method, Uri};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat};
use crate::log_time::LineTime;
use crate::traces::{SPANS, TracesLayer};

/// Replaces the filter with the given directives, or says why not.
type SetFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Sets the running log filter (`log.level` on reload).
pub struct LogLevel(SetFilter);

impl LogLevel {
    /// Replaces the filter with `directives` (as in `log.level`).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        (self.0)(directives)
    }
}

/// Installs the global subscriber; `rust_log` is the `RUST_LOG` variable if
/// set, `no_color` whether `NO_COLOR` is set to a non-empty value
/// (<https://no-color.org>). Text logs are coloured only on a terminal.
///
/// Returns the handle a reload sets `log.level` with: `None` when
/// `RUST_LOG` decides the filter (it wins over the file, on reload too) or
/// a subscriber was already installed.
pub fn init(config: &LogConfig, rust_log: Option<&str>, no_color: bool) -> Option<LogLevel> {
    init_with_traces(config, rust_log, no_color, None)
}

/// [`init`], with the OpenTelemetry layer (`traces::start`) when traces
/// are exported. The log layer never prints the spans meant for export
/// (target `traces::SPANS`): they are the exporter's alone.
pub fn init_with_traces(
    config: &LogConfig,
    rust_log: Option<&str>,
    no_color: bool,
    traces: Option<TracesLayer>,
) -> Option<LogLevel> {
    let from_env = rust_log.and_then(|f| EnvFilter::try_new(f).ok());
    let governed_by_env = from_env.is_some();
    let filter = with_spans_off(from_env.unwrap_or_else(|| {
        EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"))
    }));
    // Not `.with(Option<layer>)`: an absent (`None`) layer counts as one
    // interested in everything, and every exported span would be built
    // with tracing off (tests/traces_off.rs). The reload handle's type
    // names the subscriber below the filter, so each arm makes its own.
    let (result, level) = match traces {
        Some(traces) => {
            let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
            (
                tracing_subscriber::registry()
                    .with(traces)
                    .with(log_layer(config.format, no_color).with_filter(filter))
                    .try_init(),
                LogLevel(Box::new(move |d| reload_with(&handle, d))),
            )
        }
        None => {
            let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
            (
                tracing_subscriber::registry()
                    .with(log_layer(config.format, no_color).with_filter(filter))
                    .try_init(),
                LogLevel(Box::new(move |d| reload_with(&handle, d))),
            )
        }
    };
    // Err: already installed (tests start several gateways in one process).
    (result.is_ok() && !governed_by_env).then_some(level)
}

/// `log.level` (or `RUST_LOG`) never prints the spans meant for export.
fn with_spans_off(filter: EnvFilter) -> EnvFilter {
    match format!("{SPANS}=off").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

fn reload_with<S>(
    handle: &tracing_subscriber::reload::Handle<EnvFilter, S>,
    directives: &str,
) -> Result<(), String> {
    let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
    handle
        .reload(with_spans_off(filter))
        .map_err(|e| e.to_string())
}

/// The log output: text (coloured only for a person at a terminal) or JSON.
fn log_layer<S>(format: LogFormat, no_color: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal as _;
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(use_colour(std::io::stdout().is_terminal(), no_color))
        .with_target(false)
        .with_writer(crate::log_output::Stdout);
    match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .event_format(JsonLines::new(LineTime))
            .boxed(),
        LogFormat::Text => logs.event_format(TextLines { timer: LineTime }).boxed(),
    }
}

/// Colour only for a person at a terminal who has not opted out.
fn use_colour(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

/// Whether a `NO_COLOR` value asks for no colour: set and not empty.
pub fn no_color(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// The request a worker is handling, as its log lines name it: what the
/// per-request span used to carry. A clone shares the URI's and the ID's
/// bytes (a reference count: the request log's own copies already made
/// them shared), so it allocates nothing for a standard method.
#[derive(Clone)]
pub struct RequestFields {
    pub method: Method,
    /// The request's URI: only its path is printed (never the query: a
    /// callback's query holds the authorization code).
    pub uri: Uri,
    pub request_id: HeaderValue,
}

thread_local! {
    /// The fields of the request being polled on this thread, if any.
    static CURRENT: RefCell<Option<RequestFields>> = const { RefCell::new(None) };
}

/// Runs `f` with `fields` as this thread's current request (a no-op for
/// `None`), handing them back afterwards, also when `f` panics. Nested
/// calls restore the outer request's fields.
pub fn in_request<R>(fields: &mut Option<RequestFields>, f: impl FnOnce() -> R) -> R {
    if fields.is_none() {
        return f();
    }
    struct Restore<'a>(&'a mut Option<RequestFields>);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = CURRENT.try_with(|c| {
                if let Ok(mut current) = c.try_borrow_mut() {
                    std::mem::swap(&mut *current, self.0);
                }
            });
        }
    }
    let _ = CURRENT.try_with(|c| {
        if let Ok(mut current) = c.try_borrow_mut() {
            std::mem::swap(&mut *current, fields);
        }
    });
    let _restore = Restore(fields);
    f()
}

/// A copy of the current request's fields (`None` outside a request, or
/// with the access log off): for work that outlives the request's own
/// polls, such as its response body streaming.
pub fn current_request() -> Option<RequestFields> {
    with_request(RequestFields::clone)
}

pin_project_lite::pin_project! {
    /// Work a request hands to a task of its own (a WebSocket tunnel, an
    /// activity write, a token revocation at the provider), polled as part
    /// of that request: its lines carry the request's prefix, as the
    /// request's own do.
    pub struct InRequest<F> {
        #[pin]
        inner: F,
        fields: Option<RequestFields>,
    }
}

impl<F: std::future::Future> std::future::Future for InRequest<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        in_request(this.fields, || inner.poll(cx))
    }
}

/// `tokio::spawn` for work the current request hands off: the task's log
/// lines name the request (nothing is carried outside a request or with
/// the access log off).
pub fn spawn_for_request<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(InRequest {
        inner: work,
        fields: current_request(),
    })
}

/// `f` of the current request's fields (`None` outside a request).
fn with_request<R>(f: impl FnOnce(&RequestFields) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| c.try_borrow().ok().and_then(|cur| cur.as_ref().map(f)))
        .ok()
        .flatten()
}

/// The access-log line of one request, written inside its request (so it
/// carries the request's fields): status and latency to the response head.
pub fn access_line(status: u16, latency: Duration) {
    tracing::info!(
        status,
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
}

/// ANSI styles, as `tracing-subscriber`'s own formatter paints them.
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const ITALIC: &str = "\x1b[3m";
const RESET: &str = "\x1b[0m";

/// Text lines, as `tracing-subscriber`'s default (`Full`) format writes
/// them with the target off: `<time> <LEVEL> <spans>: <fields>`, the
/// current request first among the spans.
pub struct TextLines<T = SystemTime> {
    pub timer: T,
}

impl<S, N, T> FormatEvent<S, N> for TextLines<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        if ansi {
            writer.write_str(DIM)?;
        }
        if self.timer.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        if ansi {
            writer.write_str(RESET)?;
        }
        writer.write_char(' ')?;
        write_level(&mut writer, *event.metadata().level(), ansi)?;
        writer.write_char(' ')?;

        let mut seen = with_request(|r| write_request(&mut writer, r, ansi))
            .transpose()?
            .is_some();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                seen = true;
                paint(&mut writer, ansi, BOLD, span.metadata().name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    paint(&mut writer, ansi, BOLD, "{")?;
                    writer.write_str(fields)?;
                    paint(&mut writer, ansi, BOLD, "}")?;
                }
                paint(&mut writer, ansi, DIM, ":")?;
            }
        }
        if seen {
            writer.write_char(' ')?;
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn paint(w: &mut Writer<'_>, ansi: bool, style: &str, text: &str) -> fmt::Result {
    if ansi {
        w.write_str(style)?;
        w.write_str(text)?;
        w.write_str(RESET)
    } else {
        w.write_str(text)
    }
}

fn write_level(w: &mut Writer<'_>, level: Level, ansi: bool) -> fmt::Result {
    let (text, colour) = match level {
        Level::TRACE => ("TRACE", "\x1b[35m"),
        Level::DEBUG => ("DEBUG", "\x1b[34m"),
        Level::INFO => (" INFO", "\x1b[32m"),
        Level::WARN => (" WARN", "\x1b[33m"),
        Level::ERROR => ("ERROR", "\x1b[31m"),
    };
    paint(w, ansi, colour, text)
}

/// `request{method=GET path=/x request_id="…"}:`, as the span's fields
/// were formatted (`method` and `path` displayed, the ID quoted).
fn write_request(w: &mut Writer<'_>, r: &RequestFields, ansi: bool) -> fmt::Result {
    paint(w, ansi, BOLD, "request")?;
    paint(w, ansi, BOLD, "{")?;
    field_name(w, ansi, "method")?;
    w.write_str(r.method.as_str())?;
    w.write_char(' ')?;
    field_name(w, ansi, "path")?;
    w.write_str(r.uri.path())?;
    w.write_char(' ')?;
    field_name(w, ansi, "request_id")?;
    let id = r.request_id.to_str().unwrap_or_default();
    // Quoted as `{:?}` quotes it; a kept or made-up ID has nothing that
    // Debug would escape, so the usual case skips the formatter.
    if id
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        w.write_char('"')?;
        w.write_str(id)?;
        w.write_char('"')?;
    } else {
        write!(w, "{id:?}")?;
    }
    paint(w, ansi, BOLD, "}")?;
    paint(w, ansi, DIM, ":")
}

fn field_name(w: &mut Writer<'_>, ansi: bool, name: &str) -> fmt::Result {
    paint(w, ansi, ITALIC, name)?;
    paint(w, ansi, DIM, "=")
}

/// JSON lines, as `tracing-subscriber`'s JSON format writes them with the
/// event flattened: the current request appears as the span would have,
/// `"span"` (the innermost) and first in `"spans"`.
pub struct JsonLines<T = SystemTime> {
    inner: tracing_subscriber::fmt::format::Format<format::Json, T>,
}

impl<T: FormatTime> JsonLines<T> {
    pub fn new(timer: T) -> Self {
        Self {
            inner: format::format()
                .json()
                .flatten_event(true)
                .with_target(false)
                .with_timer(timer),
        }
    }
}

thread_local! {
    /// The JSON formatter's scratch line, reused.
    static JSON_LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, N, T> FormatEvent<S, N> for JsonLines<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let request = with_request(json_request);
        let Some(request) = request else {
            return self.inner.format_event(ctx, writer, event);
        };
        let spliced = JSON_LINE.try_with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return Err(fmt::Error);
            };
            line.clear();
            self.inner
                .format_event(ctx, Writer::new(&mut *line), event)?;
            splice_request(&mut line, &request);
            writer.write_str(&line)
        });
        spliced.unwrap_or(Err(fmt::Error))
    }
}

/// The request as the span's JSON object: its fields, then its name.
fn json_request(r: &RequestFields) -> String {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!(
        "{{\"method\":{},\"path\":{},\"request_id\":{},\"name\":\"request\"}}",
        text(r.method.as_str()),
        text(r.uri.path()),
        text(r.request_id.to_str().unwrap_or_default()),
    )
}

/// Puts the request into a line the JSON format wrote without it: as
/// `"span"` and `"spans"` when the line has no span, else first in its
/// `"spans"` (the request is the outermost span).
fn splice_request(line: &mut String, request: &str) {
    const SPANS: &str = ",\"spans\":[";
    if let Some(at) = line.rfind(SPANS) {
        line.insert_str(at + SPANS.len(), &format!("{request},"));
        return;
    }
    let body_end = line.trim_end_matches('\n').len();
    if !line[..body_end].ends_with('}') {
        return;
    }
    let tail = line.split_off(body_end - 1);
    let _ = write!(line, ",\"span\":{request},\"spans\":[{request}]");
    line.push_str(&tail);
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// A captured log output.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    /// A clock that always says the same, so two outputs compare.
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-05T10:00:00.000001Z")
        }
    }

    /// What `lines` logs through `tracing-subscriber`'s own formatter
    /// (`stock`) or the gateway's, text or JSON.
    fn output(json: bool, stock: bool, lines: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(false)
            .with_writer(writer);
        let layer: Box<dyn Layer<_> + Send + Sync> = match (json, stock) {
            (false, true) => layer.with_timer(Fixed).boxed(),
            (false, false) => layer.event_format(TextLines { timer: Fixed }).boxed(),
            (true, true) => layer.json().flatten_event(true).with_timer(Fixed).boxed(),
            (true, false) => layer
                .json()
                .flatten_event(true)
                .event_format(JsonLines::new(Fixed))
                .boxed(),
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, lines);
        out.text()
    }

    fn some_lines() {
        tracing::info!(workers = 2, "outside any request");
        tracing::warn!(error = "refused\nFORGED", "upstream unavailable");
        let inner = tracing::info_span!("inner", attempt = 1);
        inner.in_scope(|| tracing::debug!("in a span of its own"));
        access_line(502, Duration::from_micros(1234));
    }

    #[test]
    fn lines_inside_a_request_read_as_the_per_request_span_wrote_them() {
        for json in [false, true] {
            let stock = output(json, true, || {
                tracing::info!(workers = 2, "outside any request");
                let span = tracing::info_span!(
                    "request",
                    method = %Method::POST,
                    path = %"/api/x y",
                    request_id = "abc-123"
                );
                span.in_scope(some_lines);
            });
            let ours = output(json, false, || {
                tracing::info!(workers = 2, "outside any request");
                let mut fields = Some(RequestFields {
                    method: Method::POST,
                    uri: "/api/x%20y?code=secret".parse().expect("uri"),
                    request_id: HeaderValue::from_static("abc-123"),
                });
                in_request(&mut fields, some_lines);
                assert!(fields.is_some(), "handed back");
            });
            let stock = stock.replace("/api/x y", "/api/x%20y");
            assert_eq!(ours, stock, "json: {json}");
            assert_eq!(ours.lines().count(), 5, "{ours}");
            assert!(!ours.contains("secret"), "never the query: {ours}");
        }
    }

    #[test]
    fn a_request_is_current_only_inside_and_nested_requests_restore_the_outer() {
        let fields = |id| {
            Some(RequestFields {
                method: Method::GET,
                uri: Uri::from_static("/"),
                request_id: HeaderValue::from_static(id),
            })
        };
        let id = || with_request(|r| r.request_id.clone());
        let (mut outer, mut inner) = (fields("outer"), fields("inner"));
        assert_eq!(id(), None);
        in_request(&mut outer, || {
            assert_eq!(id(), Some(HeaderValue::from_static("outer")));
            in_request(&mut inner, || {
                assert_eq!(id(), Some(HeaderValue::from_static("inner")));
            });
            assert_eq!(id(), Some(HeaderValue::from_static("outer")));
        });
        assert_eq!(id(), None);
        assert!(outer.is_some() && inner.is_some());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            in_request(&mut outer, || panic!("a handler panics"))
        }));
        assert!(caught.is_err());
        assert_eq!(id(), None, "cleared on unwind too");
        assert!(outer.is_some());
    }

    #[test]
    fn work_a_request_hands_to_a_task_logs_as_that_request() {
        let text = output(false, false, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut fields = Some(RequestFields {
                    method: Method::GET,
                    uri: Uri::from_static("/api/ws?ticket=secret"),
                    request_id: HeaderValue::from_static("req-7"),
                });
                let handed_off = in_request(&mut fields, || {
                    spawn_for_request(async {
                        tokio::task::yield_now().await;
                        tracing::warn!("tunnel closed");
                    })
                });
                let outside = tokio::spawn(async { tracing::warn!("not a request's") });
                handed_off.await.expect("task");
                outside.await.expect("task");
            });
        });
        let line = |needle| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            line("tunnel closed")
                .contains(r#"request{method=GET path=/api/ws request_id="req-7"}:"#),
            "{text}"
        );
        assert!(!line("not a request's").contains("request{"), "{text}");
        assert!(!text.contains("secret"), "never the query: {text}");
    }

    #[test]
    fn no_color_set_to_anything_but_empty_turns_colour_off() {
        assert!(!no_color(None));
        assert!(!no_color(Some("")));
        assert!(no_color(Some("1")));
        assert!(!use_colour(true, true));
        assert!(use_colour(true, false));
        assert!(
            !use_colour(false, false),
            "never colour into a pipe or file"
        );
    }
}
