//! Logging: `tracing` to stdout, text or JSON, filtered by `log.level`
//! (or `RUST_LOG` when set), coloured on a terminal unless `NO_COLOR` is
//! set. The access log prints method, path (never the
//! query: a callback's query holds the authorization code), status and
//! latency. Exported traces are `traces`'.

use std::time::Duration;

use axum::http::{Request, Response};
use tracing::Span;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat};
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
        .with_target(false);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
        LogFormat::Text => logs.boxed(),
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

pub fn make_span<B>(req: &Request<B>) -> Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
}

pub fn on_response<B>(resp: &Response<B>, latency: Duration, _span: &Span) {
    tracing::info!(
        status = resp.status().as_u16(),
        latency_us = latency.as_micros() as u64,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::{no_color, use_colour};

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
