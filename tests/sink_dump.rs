//! `sealgate-load sink --dump DIR`: every message to its own file, and a
//! restarted sink never writes over an earlier run's files.

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sink(port: u16, dump: &std::path::Path) -> Sink {
    let mut child = Command::new(common::load_generator())
        .args(["sink", "--listen", &format!("127.0.0.1:{port}"), "--dump"])
        .arg(dump)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the sink");
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("sink ready"), "{line}");
    Sink(child)
}

fn send(addr: SocketAddr, subject: &str) {
    let mut c = common::connect(addr);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@client.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.com>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c
        .cmd(&format!("Subject: {subject}\r\n\r\nbody\r\n."))
        .starts_with("250"));
    let _ = c.cmd("QUIT");
}

#[test]
fn a_restarted_sink_keeps_the_earlier_dumps() {
    let dir = common::temp_dir("sink-dump");
    let port = common::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for subject in ["first run", "second run"] {
        let s = sink(port, &dir);
        send(addr, subject);
        drop(s);
    }
    let mut texts: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    texts.sort();
    assert_eq!(texts.len(), 2, "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains("Subject: first run")));
    assert!(texts.iter().any(|t| t.contains("Subject: second run")));
}
