//! The flows that join the OpenID provider and the session store: login
//! (authorization code + PKCE), token refresh, logout, back-channel logout.
//!
//! Each is a small service over [`crate::session::Sessions`] and
//! [`crate::oidc::Oidc`] with its own error type; `error` maps those to HTTP
//! in one place. Nothing here reads a request or writes a response: the
//! handlers in `routes` and the proxy do that.

pub mod backchannel;
pub mod client_token;
pub mod login;
pub mod logout;
pub mod refresh;

use std::fmt;

/// Text that came from outside — a query parameter, a provider's answer, an
/// error message that quotes one — made safe for a log line. Logged with
/// `%`, it writes the text with every control character (newline, carriage
/// return, ESC of an ANSI sequence), bidi override, quote and backslash
/// escaped as Rust's `escape_debug` does, so one value stays one line and
/// cannot forge another log record or recolour a terminal.
pub struct Untrusted<T>(pub T);

impl<T: fmt::Display> fmt::Display for Untrusted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::write(&mut Escaping(f), format_args!("{}", self.0))
    }
}

impl<T: fmt::Display> fmt::Debug for Untrusted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Escapes what is written through it before it reaches the formatter.
struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if is_invisible_control(c) {
                write!(self.0, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                write!(self.0, "{}", c.escape_debug())?;
            }
        }
        Ok(())
    }
}

/// Format characters `escape_debug` may leave as they are but that change
/// how a line reads: bidi embeddings, overrides and isolates, line and
/// paragraph separators.
fn is_invisible_control(c: char) -> bool {
    matches!(
        c,
        '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}'
    )
}

#[cfg(test)]
mod tests {
    use super::Untrusted;

    #[test]
    fn untrusted_text_is_written_as_one_escaped_line() {
        let hostile = "access_denied\nINFO forged=\"record\"\r\x1b[31mred\x1b[0m\u{202e}txt\\";
        let shown = Untrusted(hostile).to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(!shown.contains('\u{202e}'), "{shown:?}");
        assert_eq!(
            shown,
            "access_denied\\nINFO forged=\\\"record\\\"\\r\\u{1b}[31mred\\u{1b}[0m\\u{202e}txt\\\\"
        );
        assert_eq!(Untrusted("plain text-1_2").to_string(), "plain text-1_2");
    }

    #[test]
    fn an_untrusted_value_logs_as_one_escaped_line_through_tracing() {
        use std::io::Write;
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let error = "x\nERROR forged line\x1b[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(error = %Untrusted(error), "provider returned an error");
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(
            text.contains("error=x\\nERROR forged line\\u{1b}[2J"),
            "{text:?}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
    }
}
