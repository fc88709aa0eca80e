//! `sealgate spool verify` and `sealgate spool export ID` on a real
//! gateway's journal: a healthy spool verifies (exit 0) and exports each
//! message exactly as stored; a record damaged in place is found (exit 1)
//! and named, while the gateway still starts and serves.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{connect, Gateway, BIN};

fn send(gw: &Gateway, subject: &str) -> String {
    let mut c = connect(gw.addr);
    assert!(c.reply().starts_with("220 "));
    c.cmd("EHLO c.test");
    assert!(c.cmd("MAIL FROM:<a@b.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<\"a b\"@example.com>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n").as_bytes());
    let reply = c.cmd(".");
    reply
        .trim_end()
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string()
}

fn tool(dir: &std::path::Path, args: &[&str]) -> (bool, String, Vec<u8>) {
    let (status, out, err) = common::run_tool(
        Command::new(BIN)
            .arg("spool")
            .args(args)
            .arg("-c")
            .arg(dir.join("sealgate.toml")),
        None,
        Duration::from_secs(20),
    );
    (status.success(), err, out.into_bytes())
}

#[test]
fn verify_and_export_a_journal_and_find_damage() {
    // One writer: both messages in one journal, one after the other.
    let dir = common::temp_dir("spool-tools");
    let port = common::free_port();
    let config = common::config(port, 1, "").replace("[limits]", "spool_writers = 1\n\n[limits]");
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir, port);
    let first = send(&gw, "first");
    let second = send(&gw, "second");
    let spooled = gw.spooled();
    let dir = gw.kill();

    let (ok, err, out) = tool(&dir, &["verify"]);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(ok, "{text}{err}");
    assert!(text.contains("2 live message(s); 0 damaged"), "{text}");

    let (ok, err, out) = tool(&dir, &["export", &first]);
    assert!(ok, "{err}");
    let stored = spooled.iter().find(|m| m.id == first).unwrap();
    assert_eq!(out, stored.message);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("Received: from c.test"), "{text}");
    assert!(text.contains(&format!("id {first}")), "{text}");
    assert!(
        text.ends_with("Subject: first\r\n\r\nbody of first\r\n"),
        "{text}"
    );
    let (ok, err, _) = tool(&dir, &["export", "NOSUCHID"]);
    assert!(!ok && err.contains("no such message"), "{err}");

    // Damage the first message's record in place (one octet of its body).
    let segment = std::fs::read_dir(dir.join("spool/journal-0"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read(p)
                .map(|b| b.windows(13).any(|w| w == b"body of first"))
                .unwrap_or(false)
        })
        .expect("the segment with the first message");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(13)
        .position(|w| w == b"body of first")
        .unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let (ok, _, out) = tool(&dir, &["verify"]);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(!ok, "damage must fail verify: {text}");
    assert!(
        text.contains("damage: segment") && text.contains("CRC mismatch"),
        "{text}"
    );
    assert!(
        text.contains("1 live message(s)"),
        "the record after it is read: {text}"
    );

    // The gateway starts on it, says so, and keeps the intact message.
    let port = common::free_port();
    let config = std::fs::read_to_string(dir.join("sealgate.toml")).unwrap();
    let old = config
        .lines()
        .find_map(|l| l.strip_prefix("listen = [\"127.0.0.1:"))
        .and_then(|l| l.strip_suffix("\"]"))
        .unwrap()
        .to_string();
    std::fs::write(
        dir.join("sealgate.toml"),
        config.replace(&format!(":{old}\""), &format!(":{port}\"")),
    )
    .unwrap();
    let gw = Gateway::start_in(dir, port);
    gw.wait_for_log("damage in segment", Duration::from_secs(5));
    let ids: Vec<String> = gw.spooled().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![second]);
}
