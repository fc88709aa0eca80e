//! OPS-7: SIGTERM stops accepting, answers `421 4.3.2` to sessions between
//! commands, lets a message in DATA finish and answers it, then exits 0
//! within the bound; nothing answered `250` is lost, under load too.

mod common;

use std::time::Duration;

use common::Gateway;

#[test]
fn sigterm_drains_sessions_and_keeps_every_message() {
    let dir = common::temp_dir("shutdown");
    let port = common::free_port();
    std::fs::write(
        dir.join("sealgate.toml"),
        common::config(port, 2, "shutdown_timeout = \"20s\""),
    )
    .unwrap();
    let gw = Gateway::start_in(dir.clone(), port);

    // A client in the middle of DATA, and one idle between commands.
    let mut busy = common::connect(gw.addr);
    busy.reply();
    busy.cmd("EHLO busy.test");
    busy.cmd("MAIL FROM:<a@client.test>");
    busy.cmd("RCPT TO:<u@example.com>");
    assert!(busy.cmd("DATA").starts_with("354"));
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n");
    let mut idle = common::connect(gw.addr);
    idle.reply();
    idle.cmd("EHLO idle.test");

    gw.terminate();
    gw.wait_for_log("draining", Duration::from_secs(10));
    assert_eq!(
        idle.reply(),
        "421 4.3.2 Service shutting down, closing connection\r\n"
    );
    // The message in DATA finishes and is answered, then the session ends.
    busy.send(b"second half\r\n.\r\n");
    let queued = busy.reply();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    assert_eq!(
        busy.reply(),
        "421 4.3.2 Service shutting down, closing connection\r\n"
    );
    // No new connections.
    assert!(
        std::net::TcpStream::connect(gw.addr).is_err(),
        "the listeners are closed"
    );
    // Well within the drain bound: no session is left to wait for.
    let (status, log) = gw.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(log.contains("sealgate stopped"));

    // The message is in the spool.
    let id = queued.trim().rsplit(' ').next().unwrap().to_string();
    let spooled = common::spooled(&dir.join("spool"));
    assert!(spooled.iter().any(|m| m.id == id), "{id} kept");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM while the load generator (`sealgate-load --mode message`,
/// STARTTLS, 8 sessions at a time) is sending: every message it saw
/// answered `250` is in the spool, and the gateway exits 0 within the
/// bound (`shutdown_timeout`, default 30 s).
#[test]
fn sigterm_under_load_loses_nothing() {
    let dir = common::temp_dir("shutdown-load");
    let port = common::free_port();
    std::fs::write(
        dir.join("sealgate.toml"),
        common::config(port, 2, "connections_per_ip = 1000"),
    )
    .unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let accepted_log = dir.join("accepted");
    let log_arg = accepted_log.display().to_string();
    let loader = common::load_command(
        port,
        "message",
        &[
            "--concurrency",
            "8",
            "--messages-per-conn",
            "3",
            "--duration",
            "6s",
            "--timeout",
            "5s",
            "--accepted-log",
            &log_arg,
        ],
    )
    .spawn()
    .expect("start sealgate-load");
    // Stop mid-load, once plenty has been stored.
    gw.wait_for_count("(queue active)", 100, Duration::from_secs(60));
    gw.terminate();
    let (status, log) = gw.wait_exit(Duration::from_secs(45));
    let out = loader.wait_with_output().expect("sealgate-load");
    assert!(status.success(), "{log}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let acked = common::accepted_ids(&accepted_log);
    let ids: std::collections::HashSet<String> = common::spooled(&dir.join("spool"))
        .into_iter()
        .map(|m| m.id)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !ids.contains(*id)).collect();
    eprintln!(
        "{} messages answered 250 to the load generator before and during the stop \
         ({} in the spool); load report: {} sessions, {} failed",
        acked.len(),
        ids.len(),
        report["sessions"],
        report["sessions_failed"]
    );
    assert!(acked.len() >= 100, "{report}");
    assert!(
        lost.is_empty(),
        "answered 250 but not in the spool: {lost:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// systemd's `Type=notify` (docs/operations.md): READY=1 with a status
/// once the gateway accepts mail, RELOADING=1 then READY=1 around a
/// reload, STOPPING=1 when it begins to stop — each a datagram to
/// `$NOTIFY_SOCKET`.
#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = common::temp_dir("sd-notify");
    let port = common::free_port();
    std::fs::write(dir.join("sealgate.toml"), common::config(port, 1, "")).unwrap();
    let socket = dir.join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    // A guard against a hang, not a timing.
    systemd
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = systemd.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut command = std::process::Command::new(common::BIN);
    command.env("NOTIFY_SOCKET", &socket);
    let gw = Gateway::start_with(dir.clone(), port, command);
    let ready = next();
    assert!(
        ready.lines().any(|l| l == "READY=1")
            && ready.lines().any(|l| l == "STATUS=accepting mail"),
        "{ready}"
    );
    gw.hangup();
    assert_eq!(next().trim(), "RELOADING=1");
    assert_eq!(next().trim(), "READY=1");
    gw.terminate();
    assert_eq!(next().trim(), "STOPPING=1");
    let (status, log) = gw.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}
