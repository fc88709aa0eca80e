//! dnsmasq as the test bed's DNS server: a loopback port, no upstream, no
//! /etc/hosts, only the records a test gives. Stopped on drop.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};

pub struct Dnsmasq {
    child: Child,
    pub port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts dnsmasq with `records` (dnsmasq options such as
/// `--host-record=name,ip`, `--mx-host=domain,host,pref`).
pub fn start(records: &[&str]) -> Dnsmasq {
    // dnsmasq listens on UDP and TCP on its port: a port free for both,
    // and never one this process has handed out to anything else.
    let port = loop {
        let port = super::free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let bin = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
        "/usr/sbin/dnsmasq"
    } else {
        "dnsmasq"
    };
    let mut child = Command::new(bin)
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .args(["--log-facility=-", "--conf-file=/dev/null", "--user=root"])
        // No pid file: several may run at once.
        .arg("--pid-file=")
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsmasq (tests/run.sh installs dnsmasq-base)");
    // dnsmasq says "started" once its socket is bound.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("dnsmasq exited on port {port}:\n{said}");
        };
        if line.contains("started, version") {
            break;
        }
        said.push_str(&line);
        said.push('\n');
        assert!(!line.to_ascii_lowercase().contains("failed"), "{said}");
    }
    std::thread::spawn(move || for _ in lines {});
    Dnsmasq { child, port }
}
