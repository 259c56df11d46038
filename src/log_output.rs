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
//! - at the latest [`MAX_AGE`] after its first line, by a task on the
//!   worker's own runtime ([`bound_batch_age`]): a worker that never runs
//!   out of work must not sit on an error line. The task's timer is
//!   dropped as soon as the park hook writes the batch, so an idle worker
//!   sleeps without a wake-up of its own;
//! - when the thread ends, and for every worker ([`flush_all`]) when the
//!   process stops or a thread panics.
//!
//! Lines of one worker keep their order; lines of different workers were
//! never ordered. What a batch costs: a process killed outright (`SIGKILL`,
//! out of memory) loses the lines not yet written, at most [`MAX_AGE`]'s
//! worth.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tracing_subscriber::fmt::MakeWriter;

/// A worker writes its lines once they fill this much, even while busy.
pub const BATCH_BYTES: usize = 32 * 1024;

/// The longest a line waits in a batch.
pub const MAX_AGE: Duration = Duration::from_millis(100);

/// One thread's unwritten lines, and the signals of its age task.
struct Batch {
    lines: Mutex<Vec<u8>>,
    /// A line went into an empty batch.
    started: Notify,
    /// The batch was written (by the park hook or on filling up).
    written: Notify,
}

thread_local! {
    /// This thread's batch; `None` on threads that write each line at once.
    static BATCH: std::cell::RefCell<Option<Arc<Batch>>> = const { std::cell::RefCell::new(None) };
}

/// Every batching thread's batch, for [`flush_all`].
static BATCHES: Mutex<Vec<Arc<Batch>>> = Mutex::new(Vec::new());

/// A batch's lines, even if a thread panicked while holding them: they are
/// whole lines or nothing (`extend_from_slice` does not unwind midway).
fn lock(batch: &Batch) -> MutexGuard<'_, Vec<u8>> {
    batch.lines.lock().unwrap_or_else(|p| p.into_inner())
}

fn registry() -> MutexGuard<'static, Vec<Arc<Batch>>> {
    BATCHES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes this thread collect its log lines in a batch. The returned guard
/// writes what is left and stops batching when the thread's work ends.
#[must_use = "the guard writes the thread's last lines when dropped"]
pub fn batch_this_thread() -> BatchGuard {
    let batch = Arc::new(Batch {
        lines: Mutex::new(Vec::with_capacity(BATCH_BYTES)),
        started: Notify::new(),
        written: Notify::new(),
    });
    registry().push(batch.clone());
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
            write_batch(batch, &mut lock(batch));
        }
    });
}

/// Writes every batching thread's batch: before the process exits, and
/// from the panic hook.
pub fn flush_all() {
    flush(&registry().clone());
}

fn flush(batches: &[Arc<Batch>]) {
    for batch in batches {
        // `try_lock`: a batch held right now is being written by its own
        // thread — or by this one, if it panicked there, where waiting
        // would never end.
        let mut lines = match batch.lines.try_lock() {
            Ok(lines) => lines,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => continue,
        };
        write_batch(batch, &mut lines);
    }
}

/// Starts, on the calling worker's runtime, the task that writes this
/// thread's batch [`MAX_AGE`] after its first line unless the park hook
/// or a full batch wrote it first. `None` on a thread that does not batch.
pub fn bound_batch_age() -> Option<tokio::task::JoinHandle<()>> {
    let batch = BATCH.with(|b| b.borrow().clone())?;
    Some(tokio::spawn(async move {
        loop {
            batch.started.notified().await;
            tokio::select! {
                () = tokio::time::sleep(MAX_AGE) => flush_this_thread(),
                () = batch.written.notified() => {}
            }
        }
    }))
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
                registry().retain(|other| !Arc::ptr_eq(other, &batch));
            }
        });
    }
}

/// Writes a batch and empties it, and tells its age task (which then
/// drops its timer); a batch grown past twice the usual size (a very long
/// line) gives its memory back.
fn write_batch(batch: &Batch, buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    write_out(buf);
    buf.clear();
    if buf.capacity() > 2 * BATCH_BYTES {
        buf.shrink_to(BATCH_BYTES);
    }
    // Only a waiting task: no permit is kept for a later batch's timer.
    batch.written.notify_waiters();
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
                    write_batch(batch, &mut buf);
                } else if started {
                    batch.started.notify_one();
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

    /// A worker's runtime, with the park hook and the age task as
    /// `server` sets them up.
    fn worker_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(flush_this_thread)
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_line_waits_at_most_max_age_in_a_busy_workers_batch() {
        std::thread::spawn(|| {
            let _guard = batch_this_thread();
            worker_runtime().block_on(async {
                let _age = bound_batch_age().expect("a batching thread");
                tokio::task::yield_now().await;
                Line.write_all(b"an error line\n").expect("write");
                // Busy without pause: a task always ready, so the runtime
                // never parks and its hook never runs.
                let started = std::time::Instant::now();
                while pending() != 0 {
                    assert!(
                        started.elapsed() < 20 * MAX_AGE,
                        "the age task wrote the batch"
                    );
                    tokio::task::yield_now().await;
                }
                assert!(started.elapsed() >= MAX_AGE / 2, "not before its time");
                assert_eq!(written(), b"an error line\n");
            });
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn an_idle_worker_writes_its_line_at_once_and_keeps_no_timer() {
        std::thread::spawn(|| {
            let _guard = batch_this_thread();
            worker_runtime().block_on(async {
                let _age = bound_batch_age().expect("a batching thread");
                tokio::task::yield_now().await;
                Line.write_all(b"a line\n").expect("write");
                // Waiting lets the runtime park: its hook writes the line.
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert_eq!(written(), b"a line\n", "written at the park");
                assert_eq!(pending(), 0);
                // The age task dropped its timer: nothing is written later
                // (there is nothing), and the next line starts a new batch.
                Line.write_all(b"next\n").expect("write");
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert_eq!(written(), b"a line\nnext\n");
            });
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_very_long_line_gives_its_memory_back_once_written() {
        std::thread::spawn(|| {
            let _guard = batch_this_thread();
            Line.write_all(&vec![b'x'; 10 * BATCH_BYTES])
                .expect("write");
            let capacity = BATCH.with(|b| b.borrow().as_ref().map(|b| lock(b).capacity()));
            assert!(capacity.is_some_and(|c| c <= 2 * BATCH_BYTES));
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn flushing_all_never_waits_for_a_batch_its_own_thread_holds() {
        std::thread::spawn(|| {
            let _guard = batch_this_thread();
            Line.write_all(b"held\n").expect("write");
            let batch = BATCH.with(|b| b.borrow().clone()).expect("batch");
            let held = lock(&batch);
            // As `flush_all` from a panic hook on a thread that panicked
            // mid-write (only this batch: other tests' are their own).
            flush(std::slice::from_ref(&batch));
            drop(held);
            assert_eq!(pending(), 5, "the held batch was left to its thread");
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
