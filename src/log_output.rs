//! Where log lines are written: stdout, one `write` per batch of lines on a
//! worker thread, one per line elsewhere.
//!
//! A busy gateway writes an access line per request; written alone, each
//! line is a `write` system call, which on the proxied path cost about as
//! much as all of the gateway's own header handling. A worker thread
//! (see `server`) therefore collects its lines in a buffer of its own and
//! writes them when its runtime runs out of work and is about to wait
//! ([`flush_this_thread`], from the runtime's park hook), when the buffer
//! holds [`BATCH_BYTES`], and when the thread ends. An idle gateway thus
//! writes each line at once (the worker parks right after the request);
//! a loaded one writes a few lines per call. Lines of one worker keep
//! their order; lines of different workers were never ordered.
//!
//! What a batch costs: a line sits in memory until its worker next
//! waits — microseconds to milliseconds — and a process killed outright
//! (`SIGKILL`, an abort) loses the lines of that moment. A panic flushes
//! its own thread's lines first.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// A worker writes its lines once they fill this much, even while busy.
pub const BATCH_BYTES: usize = 32 * 1024;

thread_local! {
    /// This thread's unwritten lines; `None` on threads that write each
    /// line at once.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Makes this thread collect its log lines until [`flush_this_thread`].
/// The returned guard writes what is left when the thread's work ends.
#[must_use = "the guard writes the thread's last lines when dropped"]
pub fn batch_this_thread() -> BatchGuard {
    BATCH.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_none() {
            *b = Some(Vec::with_capacity(BATCH_BYTES));
        }
    });
    BatchGuard(())
}

/// Writes this thread's collected lines, if any.
pub fn flush_this_thread() {
    // `try_with`: the hook may run while the thread's locals are torn down.
    let _ = BATCH.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut()
            && let Some(buf) = b.as_mut()
            && !buf.is_empty()
        {
            write_out(buf);
            buf.clear();
        }
    });
}

/// Stops batching on this thread, writing what is left.
pub struct BatchGuard(());

impl Drop for BatchGuard {
    fn drop(&mut self) {
        flush_this_thread();
        let _ = BATCH.try_with(|b| {
            if let Ok(mut b) = b.try_borrow_mut() {
                *b = None;
            }
        });
    }
}

/// Writes lines to stdout in one call under its lock, so lines of
/// different threads never interleave within a line. A failed write is
/// dropped: logging must not fail a request.
fn write_out(lines: &[u8]) {
    #[cfg(test)]
    if tests::capture(lines) {
        return;
    }
    let mut out = io::stdout().lock();
    let _ = out.write_all(lines);
    let _ = out.flush();
}

/// Installs a panic hook that writes the panicking thread's collected lines
/// before the panic message, so the lines that led to it are not lost.
pub fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush_this_thread();
        previous(info);
    }));
}

/// The `tracing-subscriber` writer: stdout, batched on batching threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stdout;

impl<'a> MakeWriter<'a> for Stdout {
    type Writer = Line;

    fn make_writer(&'a self) -> Self::Writer {
        Line
    }
}

/// One formatted line (the formatter writes a whole line in one call).
pub struct Line;

impl Write for Line {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let batched = BATCH
            .try_with(|b| {
                let Ok(mut b) = b.try_borrow_mut() else {
                    return false;
                };
                let Some(buf) = b.as_mut() else {
                    return false;
                };
                buf.extend_from_slice(line);
                if buf.len() >= BATCH_BYTES {
                    write_out(buf);
                    buf.clear();
                }
                true
            })
            .unwrap_or(false);
        if !batched {
            write_out(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// What this test thread wrote, instead of stdout.
        static WRITTEN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Tests write to a buffer of their thread, not to the test's stdout.
    pub(super) fn capture(lines: &[u8]) -> bool {
        WRITTEN.with(|w| w.borrow_mut().extend_from_slice(lines));
        true
    }

    fn written() -> Vec<u8> {
        WRITTEN.with(|w| w.borrow().clone())
    }

    fn pending() -> usize {
        BATCH.with(|b| b.borrow().as_ref().map_or(0, Vec::len))
    }

    #[test]
    fn a_batching_thread_keeps_lines_until_it_flushes() {
        std::thread::spawn(|| {
            let guard = batch_this_thread();
            Line.write_all(b"one\n").expect("write");
            Line.write_all(b"two\n").expect("write");
            assert_eq!(pending(), 8, "both lines wait for the flush");
            assert!(written().is_empty());
            flush_this_thread();
            assert_eq!(pending(), 0);
            assert_eq!(written(), b"one\ntwo\n", "a flush writes them in order");
            drop(guard);
            assert!(
                BATCH.with(|b| b.borrow().is_none()),
                "the guard ends batching"
            );
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_full_batch_is_written_without_waiting_for_the_flush() {
        std::thread::spawn(|| {
            let _guard = batch_this_thread();
            let line = [b'x'; 1024];
            for _ in 0..(BATCH_BYTES / line.len()) {
                Line.write_all(&line).expect("write");
            }
            assert_eq!(pending(), 0, "a full batch was written");
            assert_eq!(written().len(), BATCH_BYTES);
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn other_threads_write_each_line_at_once() {
        std::thread::spawn(|| {
            Line.write_all(b"now\n").expect("write");
            assert_eq!(pending(), 0);
            assert_eq!(written(), b"now\n");
        })
        .join()
        .expect("thread");
    }
}
