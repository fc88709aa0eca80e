//! The HTTPS peer: `tests/peers/policy_server.py`, Python's own HTTPS
//! server on port 443 of a loopback address with a certificate from the
//! test CA: MTA-STS policies from `DIR/policies/mta-sts.DOMAIN.txt`, and
//! POSTed TLS reports kept under `DIR/policies/posted/`. Killed when
//! dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki::Ca;

pub struct PolicyServer {
    child: Child,
    posted: PathBuf,
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on `address`:443 for the policy hosts of `domains`
/// (`mta-sts.DOMAIN`, all in its certificate), serving `dir/policies`.
pub fn start(address: &str, dir: &Path, ca: &Ca, domains: &[&str]) -> PolicyServer {
    let names: Vec<String> = domains.iter().map(|d| format!("mta-sts.{d}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    serve(address, dir, ca, &names)
}

/// The same server with a certificate for `names` (a report endpoint).
pub fn serve(address: &str, dir: &Path, ca: &Ca, names: &[&str]) -> PolicyServer {
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    let (crt, key) = ca.leaf(&dir.join("pki"), &format!("https-{address}"), names);
    let root = dir.join("policies");
    std::fs::create_dir_all(&root).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/policy_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(address)
        .arg(&crt)
        .arg(&key)
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the HTTPS server did not start");
    PolicyServer {
        child,
        posted: root.join("posted"),
    }
}

impl PolicyServer {
    /// Waits for the first POST: (content type, body); panics after
    /// `limit` with `context()`.
    pub fn first_post(&self, limit: Duration, context: impl Fn() -> String) -> (String, Vec<u8>) {
        let deadline = Instant::now() + limit;
        loop {
            if let (Ok(t), Ok(b)) = (
                std::fs::read_to_string(self.posted.join("1.type")),
                std::fs::read(self.posted.join("1.body")),
            ) {
                return (t, b);
            }
            assert!(
                Instant::now() < deadline,
                "nothing was POSTed: {}",
                context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Publishes `domain`'s policy (RFC 8461 §3.2) under `dir/policies`.
pub fn policy(dir: &Path, domain: &str, mode: &str, mx: &str) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies").join(format!("mta-sts.{domain}.txt")),
        format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"),
    )
    .unwrap();
}
