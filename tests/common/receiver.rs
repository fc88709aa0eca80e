//! The final-destination peer: `tests/peers/receiver.py`, Python's own SMTP
//! server code, which writes each message it accepts to a file in `dir`.
//! Killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub struct Receiver {
    child: Child,
    pub port: u16,
    /// Where each accepted message lands as one file.
    pub dir: PathBuf,
    /// Messages the script has reported written ("delivered N").
    delivered: Arc<(Mutex<usize>, Condvar)>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the receiver on `host` (a loopback address) and a free port, and
/// returns once it has said `ready`. `flags` go to the script as they are.
pub fn start(host: &str, dir: &Path, flags: &[&str]) -> Receiver {
    let port = super::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/receiver.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--host", host, "--port", &port.to_string(), "--dir"])
        .arg(dir)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // Keep its stdout drained (so it never blocks on a full pipe) and
    // count what it reports: it prints after the file is written.
    let delivered = Arc::new((Mutex::new(0), Condvar::new()));
    let counter = delivered.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.starts_with("delivered ") {
                *counter.0.lock().unwrap() += 1;
                counter.1.notify_all();
            }
        }
    });
    Receiver {
        child,
        port,
        dir: dir.to_path_buf(),
        delivered,
    }
}

impl Receiver {
    /// Every message received so far, sorted.
    pub fn messages(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Waits until at least `n` messages have arrived and returns them all;
    /// panics after `limit`, with `context()` in the message.
    pub fn wait_for_messages(
        &self,
        n: usize,
        limit: Duration,
        context: impl Fn() -> String,
    ) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let (count, arrived) = &*self.delivered;
        let mut got = count.lock().unwrap();
        while *got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} of {n} messages arrived: {}",
                *got,
                context()
            );
            got = arrived.wait_timeout(got, left).unwrap().0;
        }
        drop(got);
        self.messages()
    }
}
