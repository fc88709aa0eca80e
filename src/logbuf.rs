//! The log's writer: lines are formatted on the thread that logs them
//! (a shard, delivery) and appended to one bounded in-memory buffer; a
//! thread of its own writes the buffer to standard error in one `write`
//! every [`INTERVAL`], or as soon as it holds [`FLUSH_AT`] octets. An
//! event loop never waits on the log and pays no system call per line:
//! three lines per session were three `write(2)`s on the shard before.
//! When the writer falls behind (a blocked pipe) and the buffer is full,
//! new lines are dropped whole and counted
//! (`sealgate_log_lines_dropped_total`), never half-written.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a line may wait in the buffer.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// A buffer this full is written at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// At most this much waits; past it, lines are dropped.
pub const CAPACITY: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    stopping: bool,
    stopped: bool,
}

/// The shared buffer; cloned into every [`LineWriter`].
#[derive(Default)]
pub struct LogBuffer {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

impl LogBuffer {
    /// Lines dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn push(&self, line: &[u8]) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if s.stopped {
            // After the writer's last flush (the gateway is exiting).
            drop(s);
            let _ = std::io::stderr().write_all(line);
            return;
        }
        if s.buf.len() + line.len() > CAPACITY {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = s.buf.len();
        s.buf.extend_from_slice(line);
        if before < FLUSH_AT && s.buf.len() >= FLUSH_AT {
            self.wake.notify_one();
        }
    }

    /// The writer thread's loop: take what is buffered, write it, until
    /// stopped with nothing left.
    fn run(&self, out: &mut dyn Write) {
        let mut spare = Vec::new();
        loop {
            let Ok(mut s) = self.state.lock() else {
                return;
            };
            if !s.stopping && s.buf.len() < FLUSH_AT {
                s = match self.wake.wait_timeout(s, INTERVAL) {
                    Ok((s, _)) => s,
                    Err(_) => return,
                };
            }
            std::mem::swap(&mut s.buf, &mut spare);
            let last = s.stopping;
            if last {
                s.stopped = true;
            }
            drop(s);
            if !spare.is_empty() {
                let _ = out.write_all(&spare);
                let _ = out.flush();
                spare.clear();
                // Keep a large buffer from a burst only while it is needed.
                spare.shrink_to(FLUSH_AT);
            }
            if last {
                return;
            }
        }
    }
}

/// Starts the writer thread on `out`; the guard stops it, writing what
/// is left, when dropped.
pub fn start(out: Box<dyn Write + Send>) -> std::io::Result<(Arc<LogBuffer>, Guard)> {
    let buffer = Arc::new(LogBuffer::default());
    let b = buffer.clone();
    let mut out = out;
    let handle = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || b.run(&mut out))?;
    Ok((
        buffer.clone(),
        Guard {
            buffer,
            handle: Some(handle),
        },
    ))
}

/// Stops the writer (after its last write) when dropped.
pub struct Guard {
    buffer: Arc<LogBuffer>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.buffer.state.lock() {
            s.stopping = true;
        }
        self.buffer.wake.notify_one();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What tracing-subscriber's fmt layer writes one formatted line to.
#[derive(Clone)]
pub struct LineWriter(pub Arc<LogBuffer>);

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_come_out_whole_in_order_and_all_of_them_at_stop() {
        let out = Shared::default();
        let (buffer, guard) = start(Box::new(out.clone())).unwrap();
        let mut w = LineWriter(buffer.clone());
        for i in 0..10_000 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
        assert_eq!(buffer.dropped(), 0);
    }

    #[test]
    fn a_full_buffer_drops_whole_lines_and_counts_them() {
        let buffer = LogBuffer::default();
        let line = vec![b'x'; 1024];
        for _ in 0..(CAPACITY / 1024 + 10) {
            buffer.push(&line);
        }
        assert_eq!(buffer.dropped(), 10);
        assert_eq!(buffer.state.lock().unwrap().buf.len(), CAPACITY);
    }
}
