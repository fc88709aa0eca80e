//! Spool faults seen from outside (issue 7): a write error while storing
//! (a real one, from the kernel) answers `452 4.3.1` and leaves nothing
//! half-written; the order of the durable steps before `250`, read off
//! strace; corrupt and truncated spool files found at start are
//! quarantined, never fatal. Every step's failure in isolation:
//! src/spool/mod.rs `a_failure_at_any_store_step_leaves_nothing_behind`.

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

/// Every entry of a spool subdirectory, over all shards.
fn entries(gw_dir: &std::path::Path, sub: &str) -> Vec<String> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(gw_dir.join("spool")).unwrap() {
        let dir = shard.unwrap().path().join(sub);
        if let Ok(files) = std::fs::read_dir(&dir) {
            out.extend(files.map(|f| f.unwrap().file_name().to_string_lossy().into_owned()));
        }
    }
    out
}

#[test]
fn a_write_error_while_storing_answers_452_and_keeps_nothing() {
    let dir = common::temp_dir("spool-efbig");
    let port = common::free_port();
    std::fs::write(dir.join("sealgate.toml"), common::config(port, 1, "")).unwrap();
    // The kernel refuses to grow any file of the gateway past 64 KiB
    // (EFBIG, the error a full quota gives): a bigger message fails in the
    // middle of its write.
    let mut cmd = Command::new(BIN);
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
    assert!(
        entries(&dir, "tmp").is_empty(),
        "{:?}",
        entries(&dir, "tmp")
    );
    // (Delivery, deferring to the closed test route, may add `.state`.)
    let queued: Vec<String> = entries(&dir, "queue")
        .into_iter()
        .filter(|f| f.ends_with(".msg"))
        .collect();
    assert_eq!(queued.len(), 2, "{queued:?}");
    // A crash now, and a restart: recovery finds the two, nothing partial.
    let dir = gw.kill();
    let port2 = port;
    let gw = Gateway::start_in(dir, port2);
    gw.wait_for_log(
        "recovered 2 queued message(s), removed 0 partial file(s), quarantined 0",
        Duration::from_secs(5),
    );
    let spooled = gw.spooled();
    assert_eq!(spooled.len(), 2);
    assert!(spooled.iter().all(|m| m.message.ends_with(b"fits\r\n")));
}

/// strace (Debian package) follows every thread of the gateway and
/// records, in the order the kernel ran them, the spool's system calls and
/// the reply's. The `250` must come after: the data fsync of the file,
/// its rename into queue/, and the fsync of queue/.
#[test]
fn store_order_is_data_fsync_rename_directory_fsync_then_250() {
    let dir = common::temp_dir("spool-strace");
    let port = common::free_port();
    std::fs::write(dir.join("sealgate.toml"), common::config(port, 1, "")).unwrap();
    let trace = dir.join("trace");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-s", "64", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=openat,write,sendto,writev,fsync,fdatasync,rename,renameat,renameat2",
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
    let tmp = format!("tmp/{id}");
    let msg = format!("queue/{id}.msg");
    let create = find(
        &|l| l.contains("openat(") && l.contains(&tmp) && l.contains("O_CREAT"),
        "create",
    );
    let data_sync = find(
        &|l| l.contains("fsync(") && l.contains(&format!("{tmp}>")),
        "data fsync",
    );
    let rename = find(
        &|l| l.contains("rename") && l.contains(&tmp) && l.contains(&msg),
        "rename",
    );
    let dir_sync_start = (rename..lines.len())
        .find(|&i| lines[i].contains("fsync(") && lines[i].contains("/queue>)"))
        .unwrap_or_else(|| panic!("no directory fsync after the rename:\n{text}"));
    let reply_start = find(&|l| l.contains("250 2.0.0 Ok: queued as"), "250 reply");
    assert!(create < data_sync, "create before fsync");
    assert!(done(data_sync) < rename, "data fsync done before rename");
    assert!(
        done(rename) < dir_sync_start,
        "rename done before directory fsync"
    );
    assert!(
        done(dir_sync_start) < reply_start,
        "directory fsync done before the 250 is written:\n{}",
        lines[create..=reply_start].join("\n")
    );
    let dir_sync_result = lines[done(dir_sync_start)];
    assert!(
        dir_sync_result.trim_end().ends_with("= 0"),
        "{dir_sync_result}"
    );
}

#[test]
fn corrupt_and_truncated_spool_files_are_quarantined_at_start() {
    let gw = Gateway::start("spool-corrupt", 1, "");
    assert!(send(&gw, b"Subject: good\r\n\r\nbody\r\n").starts_with("250"));
    let dir = gw.kill();
    let queue = dir.join("spool/shard-0/queue");
    let good = std::fs::read_dir(&queue)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(queue.join("TRUNCATED.msg"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(queue.join("GARBAGE.msg"), b"\x00\xff not a spool file").unwrap();
    std::fs::write(queue.join("EMPTY.msg"), b"").unwrap();
    let port = common::free_port();
    let config = std::fs::read_to_string(dir.join("sealgate.toml")).unwrap();
    let old_port = config
        .lines()
        .find_map(|l| l.strip_prefix("listen = [\"127.0.0.1:"))
        .and_then(|l| l.strip_suffix("\"]"))
        .unwrap()
        .to_string();
    std::fs::write(
        dir.join("sealgate.toml"),
        config.replace(
            &format!("127.0.0.1:{old_port}\""),
            &format!("127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    gw.wait_for_log("quarantined 3", Duration::from_secs(5));
    let log = gw.log();
    for name in ["TRUNCATED.msg", "GARBAGE.msg", "EMPTY.msg"] {
        assert!(log.contains(&format!("quarantine/{name}")), "{name}: {log}");
        assert!(dir.join("spool/shard-0/quarantine").join(name).exists());
    }
    // Still serving, and the good message is still queued.
    assert!(send(&gw, b"Subject: after\r\n\r\nbody\r\n").starts_with("250"));
    assert_eq!(gw.spooled().len(), 2);
}
