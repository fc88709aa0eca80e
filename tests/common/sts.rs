//! The MTA-STS peer: `tests/peers/policy_server.py`, Python's own HTTPS
//! server, serving `DIR/policies/mta-sts.DOMAIN.txt` on port 443 of a
//! loopback address with a certificate from the test CA. Killed when
//! dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::pki::Ca;

pub struct PolicyServer(Child);

impl Drop for PolicyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server on `address`:443 for the policy hosts of `domains`
/// (`mta-sts.DOMAIN`, all in its certificate), serving `dir/policies`.
pub fn start(address: &str, dir: &Path, ca: &Ca, domains: &[&str]) -> PolicyServer {
    let names: Vec<String> = domains.iter().map(|d| format!("mta-sts.{d}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (crt, key) = ca.leaf(&dir.join("pki"), "policy", &names);
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/policy_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(address)
        .arg(&crt)
        .arg(&key)
        .arg(dir.join("policies"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the policy server did not start");
    PolicyServer(child)
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
