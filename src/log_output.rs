//! Where log lines are written: stdout, one `write` per batch of lines on a
//! worker thread, one per line elsewhere.
//!
//! A busy gateway writes an access line per request; written alone, each
//! line is a `write` system call, and the workers take turns on the log
//! file's lock (measured in docs/benchmarks.md). A worker thread (see
//! `server`) therefore collects its lines in a batch of its own, written:
//!
//! - when its runtime runs out of work and is about to wait
//!   ([`flush_this_thread`], the runtime's park hook): on an idle gateway
//!   right after each request;
//! - when the batch holds [`BATCH_BYTES`];
//! - at the latest [`MAX_AGE`] after its first line, by a flusher thread
//!   woken only when a batch starts (a worker that never runs out of work
//!   must not sit on an error line);
//! - when the thread ends, and for every worker ([`flush_all`]) when the
//!   process stops or a thread panics.
//!
//! Lines of one worker keep their order; lines of different workers were
//! never ordered. What a batch costs: a process killed outright (`SIGKILL`,
//! out of memory) loses the lines not yet written, at most [`MAX_AGE`]'s
//! worth.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// A worker writes its lines once they fill this much, even while busy.
pub const BATCH_BYTES: usize = 32 * 1024;

/// The longest a line waits in a batch.
pub const MAX_AGE: Duration = Duration::from_millis(100);

type Batch = Arc<Mutex<Vec<u8>>>;

thread_local! {
    /// This thread's batch; `None` on threads that write each line at once.
    static BATCH: std::cell::RefCell<Option<Batch>> = const { std::cell::RefCell::new(None) };
}

/// Every batching thread's batch, for the flusher and [`flush_all`].
static BATCHES: Mutex<Vec<Batch>> = Mutex::new(Vec::new());

/// The flusher thread, started with the first batching thread.
static FLUSHER: OnceLock<Thread> = OnceLock::new();

/// Whether the flusher waits for a batch to start (and must be woken).
static FLUSHER_IDLE: AtomicBool = AtomicBool::new(false);

/// A batch's lock, even if a thread panicked while holding it: the bytes
/// are whole lines or nothing (`extend_from_slice` does not unwind midway).
fn lock(batch: &Batch) -> MutexGuard<'_, Vec<u8>> {
    batch.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes this thread collect its log lines in a batch. The returned guard
/// writes what is left and stops batching when the thread's work ends.
#[must_use = "the guard writes the thread's last lines when dropped"]
pub fn batch_this_thread() -> BatchGuard {
    batch_with(true)
}

/// `flushed_by_age`: false only in tests of the other triggers, whose
/// batches the flusher must not write at a random moment.
fn batch_with(flushed_by_age: bool) -> BatchGuard {
    let batch: Batch = Arc::new(Mutex::new(Vec::with_capacity(BATCH_BYTES)));
    if flushed_by_age {
        BATCHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(batch.clone());
        start_flusher();
    }
    BATCH.with(|b| *b.borrow_mut() = Some(batch));
    BatchGuard(())
}

/// Writes this thread's batch, if any.
pub fn flush_this_thread() {
    // `try_with`: the hook may run while the thread's locals are torn down.
    let _ = BATCH.try_with(|b| {
        if let Ok(b) = b.try_borrow()
            && let Some(batch) = b.as_ref()
        {
            write_batch(&mut lock(batch));
        }
    });
}

/// Writes every batching thread's batch: before the process exits, and
/// from the panic hook.
pub fn flush_all() {
    let batches = BATCHES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for batch in &batches {
        write_batch(&mut lock(batch));
    }
}

/// Stops batching on this thread, writing what is left.
pub struct BatchGuard(());

impl Drop for BatchGuard {
    fn drop(&mut self) {
        flush_this_thread();
        let _ = BATCH.try_with(|b| {
            if let Ok(mut b) = b.try_borrow_mut()
                && let Some(batch) = b.take()
            {
                BATCHES
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|other| !Arc::ptr_eq(other, &batch));
            }
        });
    }
}

/// Writes a batch and empties it; a batch grown past twice the usual size
/// (a very long line) gives its memory back.
fn write_batch(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    write_out(buf);
    buf.clear();
    if buf.capacity() > 2 * BATCH_BYTES {
        buf.shrink_to(BATCH_BYTES);
    }
}

/// Writes lines to stdout in one call under its lock, so no other thread
/// of this process writes between two parts of a line. A failed write is
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

/// The flusher: sleeps until a batch starts, then writes every batch
/// [`MAX_AGE`] later (those the workers' park hooks did not write first).
fn start_flusher() {
    FLUSHER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("oidc-bff-log".into())
            .spawn(|| {
                loop {
                    // Idle first, then look: a batch started after the last
                    // flush but before this store finds it pending here; one
                    // started after it wakes this thread.
                    FLUSHER_IDLE.store(true, Ordering::SeqCst);
                    if !any_pending() {
                        std::thread::park();
                    }
                    if FLUSHER_IDLE.swap(false, Ordering::SeqCst) && !any_pending() {
                        // A spurious wake-up: no batch started.
                        continue;
                    }
                    std::thread::sleep(MAX_AGE);
                    flush_all();
                }
            });
        match spawned {
            Ok(handle) => handle.thread().clone(),
            // No flusher: batches are still written at park, at
            // `BATCH_BYTES` and at exit.
            Err(_) => std::thread::current(),
        }
    });
}

/// Whether any batch holds lines.
fn any_pending() -> bool {
    let batches = BATCHES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    batches.iter().any(|b| !lock(b).is_empty())
}

/// Wakes the flusher when a batch starts and it is waiting.
fn batch_started() {
    if FLUSHER_IDLE.swap(false, Ordering::SeqCst)
        && let Some(flusher) = FLUSHER.get()
        && flusher.id() != std::thread::current().id()
    {
        flusher.unpark();
    }
}

/// Installs a panic hook that writes the batched lines before the panic
/// message, so the lines that led to it are not lost.
pub fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush_all();
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
                let Ok(b) = b.try_borrow() else {
                    return false;
                };
                let Some(batch) = b.as_ref() else {
                    return false;
                };
                let mut buf = lock(batch);
                let started = buf.is_empty();
                buf.extend_from_slice(line);
                if buf.len() >= BATCH_BYTES {
                    write_batch(&mut buf);
                } else if started {
                    batch_started();
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
    use std::cell::RefCell;

    thread_local! {
        /// What this test thread wrote, instead of stdout.
        static WRITTEN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Tests write to a buffer of their thread, not to the test's stdout
    /// (the flusher thread's writes are dropped).
    pub(super) fn capture(lines: &[u8]) -> bool {
        WRITTEN.with(|w| w.borrow_mut().extend_from_slice(lines));
        true
    }

    fn written() -> Vec<u8> {
        WRITTEN.with(|w| w.borrow().clone())
    }

    fn pending() -> usize {
        BATCH.with(|b| b.borrow().as_ref().map_or(0, |batch| lock(batch).len()))
    }

    #[test]
    fn a_batching_thread_keeps_lines_until_it_flushes() {
        std::thread::spawn(|| {
            let guard = batch_with(false);
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
            let _guard = batch_with(false);
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
    fn a_line_waits_at_most_max_age_in_a_busy_workers_batch() {
        std::thread::spawn(|| {
            let _guard = batch_this_thread();
            Line.write_all(b"an error line\n").expect("write");
            // The thread stays busy (it never reaches a park hook): the
            // flusher writes the batch (to its own, dropped capture).
            let deadline = std::time::Instant::now() + 20 * MAX_AGE;
            while pending() != 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the flusher wrote the batch"
                );
                std::thread::sleep(MAX_AGE / 10);
            }
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_very_long_line_gives_its_memory_back_once_written() {
        std::thread::spawn(|| {
            let _guard = batch_with(false);
            Line.write_all(&vec![b'x'; 10 * BATCH_BYTES])
                .expect("write");
            let capacity = BATCH.with(|b| b.borrow().as_ref().map(|b| lock(b).capacity()));
            assert!(capacity.is_some_and(|c| c <= 2 * BATCH_BYTES));
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
