//! The server's log lines, collected in memory and written to stdout by a thread of their own
//! every few milliseconds.
//!
//! A line costs the request that logs it one uncontended lock and a copy: no system call and no
//! thread woken per line (a channel to a writer thread woke it, and wrote, once per line: a
//! third of `/healthz`'s time).
//!
//! Invariants:
//! - A request never waits for stdout: past [`LIMIT`] bytes waiting, new lines are dropped and
//!   counted, never blocked on.
//! - Every line accepted is written before [`Flusher`] is dropped (at exit).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How much may wait to be written before new lines are dropped.
pub const LIMIT: usize = 16 << 20;
/// How often waiting lines are written.
const INTERVAL: Duration = Duration::from_millis(20);

/// Lines waiting to be written.
#[derive(Default)]
pub struct LogBuffer {
    waiting: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stopping: AtomicBool,
}

impl LogBuffer {
    fn waiting(&self) -> MutexGuard<'_, Vec<u8>> {
        // An append or a swap; a panic elsewhere cannot leave the buffer half-changed.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lines dropped because too much was waiting.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Takes every waiting line.
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.waiting())
    }
}

/// What the log subscriber writes each formatted line to.
pub struct LineWriter(pub Arc<LogBuffer>);

impl Write for LineWriter {
    /// The subscriber writes a whole line at once.
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut waiting = self.0.waiting();
        if waiting.len() + line.len() > LIMIT {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            waiting.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the buffer's lines to `out` until dropped, then writes what is left.
pub struct Flusher {
    buffer: Arc<LogBuffer>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub fn start(
        buffer: Arc<LogBuffer>,
        mut out: impl Write + Send + 'static,
    ) -> std::io::Result<Flusher> {
        let shared = Arc::clone(&buffer);
        let thread = std::thread::Builder::new()
            .name("flowgate-log".to_owned())
            .spawn(move || {
                loop {
                    let stopping = shared.stopping.load(Ordering::Acquire);
                    let lines = shared.take();
                    if !lines.is_empty() {
                        // Nowhere to report a failing stdout but stdout itself.
                        let _ = out.write_all(&lines).and_then(|()| out.flush());
                    }
                    if stopping {
                        return;
                    }
                    std::thread::park_timeout(INTERVAL);
                }
            })?;
        Ok(Flusher {
            buffer,
            thread: Some(thread),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.buffer.stopping.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_accepted_is_written_by_the_time_the_flusher_stops() {
        let buffer = Arc::new(LogBuffer::default());
        let out = Shared::default();
        let flusher = Flusher::start(Arc::clone(&buffer), out.clone()).unwrap();
        let mut writer = LineWriter(Arc::clone(&buffer));
        for i in 0..1000 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(flusher);
        let written = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count(), 1000);
        assert_eq!(buffer.dropped(), 0);
    }

    #[test]
    fn lines_beyond_the_limit_are_dropped_and_counted_never_waited_for() {
        let buffer = Arc::new(LogBuffer::default());
        let mut writer = LineWriter(Arc::clone(&buffer));
        let line = vec![b'x'; 1 << 20];
        for _ in 0..20 {
            writer.write_all(&line).unwrap();
        }
        assert_eq!(buffer.waiting().len(), LIMIT);
        assert_eq!(buffer.dropped(), 4);
    }
}
