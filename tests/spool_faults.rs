//! Spool faults seen from outside: a write error while storing (a real
//! one, from the kernel) answers `452 4.3.1` and leaves nothing
//! half-written; the order of the journal's write, its `fdatasync` and the
//! `250`, read off strace; a spool in the old file-per-message format is
//! imported at start, its corrupt and truncated files quarantined, never
//! fatal. Torn writes, lost unsynced writes and failing syncs on
//! simulated storage: src/spool/journal.rs's tests.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::{connect, Gateway, BIN};

fn send(gw: &Gateway, body: &[u8]) -> String {
    let mut c = connect(gw.addr);
    assert!(c.reply().starts_with("220 "));
    c.cmd("EHLO c.test");
    assert!(c.cmd("MAIL FROM:<a@b.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<u@example.com>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(body);
    let reply = c.cmd(".");
    // The session goes on after a failed store.
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    reply
}

#[test]
fn a_write_error_while_storing_answers_452_and_keeps_nothing() {
    let dir = common::temp_dir("spool-efbig");
    let port = common::free_port();
    // Segments of 32 KiB; a message over 16 KiB gets a file of its own.
    let config = common::config(port, 1, "").replace(
        "[limits]",
        "spool_segment_size = \"32KiB\"\nspool_large_message = \"16KiB\"\n\n[limits]",
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    // The kernel refuses to grow any file of the gateway past 64 KiB
    // (EFBIG, the error a full quota gives): a bigger message fails in the
    // middle of its write.
    let mut cmd = Command::new(BIN);
    // SAFETY: the closure runs in the child between fork and exec and
    // only calls setrlimit(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64 * 1024,
                rlim_max: 64 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let gw = Gateway::start_with(dir.clone(), port, cmd);
    let small = b"Subject: small\r\n\r\nfits\r\n";
    let big: Vec<u8> = b"Subject: big\r\n\r\n"
        .iter()
        .copied()
        .chain(
            std::iter::repeat_n(
                b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"
                    .iter()
                    .copied(),
                2000,
            )
            .flatten(),
        )
        .collect();
    assert!(send(&gw, small).starts_with("250 2.0.0 Ok: queued as"));
    assert_eq!(
        send(&gw, &big),
        "452 4.3.1 Insufficient system storage, message not accepted\r\n"
    );
    assert!(send(&gw, small).starts_with("250 2.0.0 Ok: queued as"));
    gw.wait_for_log(
        "NOQUEUE: cannot store message from [127.0.0.1]",
        Duration::from_secs(5),
    );
    assert!(gw.log().contains("File too large"), "{}", gw.log());
    // Nothing of the big one anywhere, and both small ones whole.
    let large: Vec<_> = std::fs::read_dir(dir.join("spool/journal-0/large"))
        .unwrap()
        .collect();
    assert!(large.is_empty(), "{large:?}");
    assert_eq!(gw.spooled().len(), 2);
    // A crash now, and a restart: recovery finds the two, nothing partial.
    let dir = gw.kill();
    let port2 = port;
    let gw = Gateway::start_in(dir, port2);
    gw.wait_for_log("recovered 2 queued message(s)", Duration::from_secs(5));
    let spooled = gw.spooled();
    assert_eq!(spooled.len(), 2);
    assert!(spooled.iter().all(|m| m.message.ends_with(b"fits\r\n")));
}

/// strace (Debian package) follows every thread of the gateway and
/// records, in the order the kernel ran them, the journal's system calls
/// and the reply's. The `250` must come after the write of the message's
/// record into a journal segment and, after that, the segment's
/// `fdatasync` (which returned 0).
#[test]
fn store_order_is_journal_write_then_fdatasync_then_250() {
    let dir = common::temp_dir("spool-strace");
    let port = common::free_port();
    std::fs::write(dir.join("sealgate.toml"), common::config(port, 1, "")).unwrap();
    let trace = dir.join("trace");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-s", "64", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=openat,write,pwrite64,pwritev,sendto,writev,fsync,fdatasync",
        ])
        .arg(BIN);
    let gw = Gateway::start_with(dir.clone(), port, cmd);
    let reply = send(&gw, b"Subject: traced\r\n\r\nbody\r\n");
    let id = reply
        .trim_end()
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string();
    // Stop the gateway itself (strace then exits with it).
    let pid: i32 = std::fs::read_to_string(dir.join("spool/sealgate.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with the pid the gateway this test started wrote.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let (status, _) = gw.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // A call is done at its own line unless "<unfinished ...>", then at
    // its "<... NAME resumed>" line (same pid).
    let done = |start: usize| -> usize {
        let line = lines[start];
        if !line.contains("<unfinished ...>") {
            return start;
        }
        let pid = line.split_whitespace().next().unwrap();
        (start + 1..lines.len())
            .find(|&i| lines[i].starts_with(pid) && lines[i].contains("resumed>"))
            .unwrap_or_else(|| panic!("no resumption of {line}"))
    };
    let find = |what: &dyn Fn(&str) -> bool, name: &str| -> usize {
        lines
            .iter()
            .position(|l| what(l))
            .unwrap_or_else(|| panic!("no {name} in trace:\n{text}"))
    };
    // The record names the queue id in its first 64 octets.
    let write = find(
        &|l| l.contains("pwritev(") && l.contains("/journal-") && l.contains(&id),
        "journal write of the record",
    );
    let segment = lines[write]
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(path, _)| path.to_string())
        .unwrap_or_else(|| panic!("no path in {}", lines[write]));
    let sync_start = (write..lines.len())
        .find(|&i| lines[i].contains("fdatasync(") && lines[i].contains(&format!("<{segment}>")))
        .unwrap_or_else(|| panic!("no fdatasync of {segment} after the write:\n{text}"));
    let reply_start = find(&|l| l.contains("250 2.0.0 Ok: queued as"), "250 reply");
    assert!(done(write) < sync_start, "write done before its fdatasync");
    assert!(
        done(sync_start) < reply_start,
        "fdatasync done before the 250 is written:\n{}",
        lines[write..=reply_start].join("\n")
    );
    let sync_result = lines[done(sync_start)];
    assert!(sync_result.trim_end().ends_with("= 0"), "{sync_result}");
}

/// A message file in the old format (`SEALGATE-SPOOL 1`), as sealgate
/// before the journal wrote it.
pub fn old_format(id: &str, rcpts: &[&str], body: &str) -> String {
    // Arrived now: a fixed time would expire once the queue lifetime passed.
    let arrived = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut h = format!("SEALGATE-SPOOL 1\nid {id}\narrived {arrived}\nfrom <a@b.test>\n");
    for r in rcpts {
        h.push_str(&format!("rcpt <{r}>\n"));
    }
    h.push_str("client 127.0.0.1 60844\nhelo client.example\nbody 7BIT\n");
    h.push_str(&format!("size {}\n\n{body}", body.len()));
    h
}

/// An upgrade: the old spool's good messages are imported into the
/// journal (and their files removed); truncated, garbage and empty files
/// are quarantined with a warning; the gateway serves.
#[test]
fn an_old_format_spool_is_imported_and_its_bad_files_quarantined() {
    let dir = common::temp_dir("spool-import");
    let port = common::free_port();
    std::fs::write(dir.join("sealgate.toml"), common::config(port, 1, "")).unwrap();
    let queue = dir.join("spool/shard-0/queue");
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::create_dir_all(dir.join("spool/shard-0/tmp")).unwrap();
    let good = old_format(
        "661467A9D485A010001",
        &["u@example.com"],
        "Subject: old\r\n\r\nbody\r\n",
    );
    std::fs::write(queue.join("661467A9D485A010001.msg"), &good).unwrap();
    std::fs::write(queue.join("TRUNCATED.msg"), &good[..good.len() / 2]).unwrap();
    std::fs::write(queue.join("GARBAGE.msg"), b"\x00\xff not a spool file").unwrap();
    std::fs::write(queue.join("EMPTY.msg"), b"").unwrap();
    std::fs::write(dir.join("spool/shard-0/tmp/PARTIAL"), b"SEALGATE-SPOOL 1\n").unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    gw.wait_for_log(
        "imported 1 message(s) from the file-per-message format",
        Duration::from_secs(5),
    );
    let log = gw.log();
    for name in ["TRUNCATED.msg", "GARBAGE.msg", "EMPTY.msg"] {
        assert!(log.contains(&format!("quarantine/{name}")), "{name}: {log}");
        assert!(dir.join("spool/shard-0/quarantine").join(name).exists());
    }
    assert!(!queue.exists(), "the old queue/ is gone once imported");
    let spooled = gw.spooled();
    assert_eq!(spooled.len(), 1);
    assert_eq!(spooled[0].id, "661467A9D485A010001");
    assert_eq!(spooled[0].recipients, vec!["u@example.com"]);
    assert_eq!(spooled[0].message, b"Subject: old\r\n\r\nbody\r\n");
    // Still serving; a restart imports nothing twice.
    assert!(send(&gw, b"Subject: after\r\n\r\nbody\r\n").starts_with("250"));
    let dir = gw.kill();
    let gw = Gateway::start_in(dir, port);
    gw.wait_for_log("recovered 2 queued message(s)", Duration::from_secs(5));
    assert!(!gw.log().contains("imported"), "{}", gw.log());
    assert_eq!(gw.spooled().len(), 2);
}
