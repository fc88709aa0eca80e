//! Bounded memory for message data: past `limits.message_buffer` a
//! session streams its data to the spool's staging area as it arrives, so
//! 30 clients each in the middle of a 20 MB message (under the 25 MB
//! default limit) keep the gateway under 100 MB RSS; finished, each is
//! stored whole (its octets in a file of its own) and exported intact.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Gateway;

const CLIENTS: usize = 30;
const SIZE: usize = 20_000_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn staged_octets(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("spool/staging"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// One line of the test message (998 octets and CRLF: the longest a text
/// line may be), numbered so that a lost or repeated block shows.
fn line(i: usize) -> Vec<u8> {
    let mut l = format!("{i:010} ").into_bytes();
    l.resize(998, b'a' + (i % 26) as u8);
    l.extend_from_slice(b"\r\n");
    l
}

#[test]
fn thirty_clients_in_twenty_megabyte_data_keep_rss_under_100_mb() {
    let gw = Gateway::start("memory", 2, "connections_per_ip = 100");
    let pid: u32 = std::fs::read_to_string(gw.dir.join("spool/sealgate.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let before = rss_kib(pid);
    let lines = SIZE / 1000;
    let (sent_tx, sent_rx) = mpsc::channel();
    let mut finish = Vec::new();
    let mut workers = Vec::new();
    for n in 0..CLIENTS {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        finish.push(go_tx);
        let (addr, sent_tx) = (gw.addr, sent_tx.clone());
        workers.push(std::thread::spawn(move || {
            let mut c = common::connect(addr);
            assert!(c.reply().starts_with("220"));
            c.cmd("EHLO big.test");
            assert!(c.cmd("MAIL FROM:<big@client.test>").starts_with("250"));
            assert!(c
                .cmd(&format!("RCPT TO:<u{n}@example.com>"))
                .starts_with("250"));
            assert!(c.cmd("DATA").starts_with("354"));
            let mut block = format!("Subject: big {n}\r\n\r\n").into_bytes();
            for i in 0..lines {
                block.extend_from_slice(&line(i));
                if block.len() >= 1 << 16 {
                    c.send(&block);
                    block.clear();
                }
            }
            c.send(&block);
            sent_tx.send(()).unwrap();
            // Held, unfinished, until the main thread has measured.
            go_rx.recv().unwrap();
            c.cmd(".")
        }));
    }
    for _ in 0..CLIENTS {
        sent_rx.recv_timeout(Duration::from_secs(120)).unwrap();
    }
    // Everything sent has been read by the gateway once the staging
    // files hold it (each keeps less than message_buffer in memory).
    let want = (CLIENTS * (lines * 1000 - 256 * 1024)) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while staged_octets(&gw.dir) < want {
        assert!(
            Instant::now() < deadline,
            "staged {} of {want}",
            staged_octets(&gw.dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = rss_kib(pid);
    println!(
        "{CLIENTS} clients each holding {SIZE} octets of unfinished DATA: gateway RSS {before} KiB before, {during} KiB during ({} octets staged)",
        staged_octets(&gw.dir)
    );
    assert!(during < 100 * 1024, "RSS {during} KiB");

    for go in finish {
        go.send(()).unwrap();
    }
    for w in workers {
        let reply = w.join().unwrap();
        assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    }
    assert_eq!(staged_octets(&gw.dir), 0, "every staging file adopted");
    let queued = common::queue_states(&gw.dir.join("spool"));
    assert_eq!(queued.len(), CLIENTS);
    // One of them, exported: exactly what was sent, after the Received
    // header.
    let (status, out, err) = common::run_tool(
        std::process::Command::new(common::BIN)
            .args(["spool", "export", &queued[0].0, "-c"])
            .arg(gw.dir.join("sealgate.toml")),
        None,
        Duration::from_secs(60),
    );
    assert!(status.success(), "{err}");
    let n: usize = queued[0].1[0].rcpt[1..]
        .split('@')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let body_at = out.find(&format!("Subject: big {n}\r\n\r\n")).unwrap();
    let mut want = format!("Subject: big {n}\r\n\r\n").into_bytes();
    for i in 0..lines {
        want.extend_from_slice(&line(i));
    }
    assert!(
        out.as_bytes()[body_at..] == want[..],
        "the message is intact"
    );
    println!("after: gateway RSS {} KiB", rss_kib(pid));
}
