//! Protocol behaviour over real sockets: the STARTTLS injection rule, the
//! limits of product.md §2, the idle timeout, per-shard accounting.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{connect, tls_client_config, Client, Gateway};

#[test]
fn starttls_pipelined_rset_is_never_answered() {
    let gw = Gateway::start("inject", 1, "");
    let mut c = connect(gw.addr);
    assert!(c.reply().starts_with("220 mx.test ESMTP"));
    assert!(c.cmd("EHLO client.test").contains("250 STARTTLS"));
    // STARTTLS and RSET in one write (CVE-2011-0411 class).
    c.send(b"STARTTLS\r\nRSET\r\n");
    assert_eq!(c.reply(), "220 2.0.0 Ready to start TLS\r\n");
    // Nothing else may follow in the clear: the next bytes we see must be
    // a TLS handshake, which rustls would refuse if a cleartext "250"
    // arrived first.
    assert!(
        c.unread().is_empty(),
        "cleartext after 220: {:?}",
        String::from_utf8_lossy(c.unread())
    );
    let conn =
        rustls::ClientConnection::new(tls_client_config(&gw.dir), "mx.test".try_into().unwrap())
            .unwrap();
    let tls = rustls::StreamOwned::new(conn, c.stream);
    let mut c = Client::new(tls);
    // After the handshake: the first reply is to our EHLO, not to RSET.
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.starts_with("250-mx.test\r\n"), "{ehlo}");
    assert!(
        !ehlo.contains("STARTTLS"),
        "STARTTLS is not offered twice: {ehlo}"
    );
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
}

#[test]
fn limits_over_the_wire() {
    let gw = Gateway::start("limits", 1, "recipients = 2\nmessage_size = \"10KB\"");
    let mut c = connect(gw.addr);
    c.reply();
    c.cmd("EHLO client.test");
    // 511 octets + CRLF = 513, one over RFC 5321 §4.5.3.1.4.
    let long = format!("NOOP {}", "x".repeat(506));
    assert_eq!(c.cmd(&long), "500 5.5.2 Line too long\r\n");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n", "the session goes on");
    assert_eq!(
        c.cmd("MAIL FROM:<a@client.test> SIZE=10001"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@client.test> SIZE=100"),
        "250 2.1.0 Sender ok\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<one@example.com>"),
        "250 2.1.5 Recipient ok\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@foreign.test>"),
        "554 5.7.1 Relay access denied\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<two@example.com>"),
        "250 2.1.5 Recipient ok\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<three@example.com>"),
        "452 4.5.3 Too many recipients\r\n"
    );
    assert!(c.cmd("DATA").starts_with("354"));
    let queued = c.cmd("Subject: limits\r\n\r\nbody\r\n.");
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    c.cmd("QUIT");
    let spooled = gw.spooled();
    assert_eq!(spooled.len(), 1);
    assert_eq!(
        spooled[0].recipients,
        vec!["one@example.com", "two@example.com"],
        "earlier recipients kept"
    );
}

#[test]
fn idle_client_is_closed_with_421() {
    let gw = Gateway::start("idle", 1, "command_timeout = \"1s\"");
    let mut c = connect(gw.addr);
    c.reply();
    c.cmd("EHLO client.test");
    let started = std::time::Instant::now();
    // Say nothing: the gateway must speak first, then close.
    assert_eq!(
        c.reply(),
        "421 4.4.2 Timeout exceeded, closing connection\r\n"
    );
    let waited = started.elapsed();
    // Not before its deadline (how soon after is the session's own
    // simulated-time test, state_event_idle_client_times_out_with_421).
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    let mut rest = Vec::new();
    assert_eq!(
        c.stream.read_to_end(&mut rest).unwrap(),
        0,
        "connection closed"
    );
}

#[test]
fn both_shards_serve_connections() {
    let gw = Gateway::start("shards", 2, "connections_per_ip = 100");
    // The kernel spreads connections over the shards' SO_REUSEPORT
    // listeners by a hash of the 4-tuple; 64 connections from distinct
    // ports all landing on one shard has probability 2^-63.
    let mut clients: Vec<_> = (0..64).map(|_| connect(gw.addr)).collect();
    for c in &mut clients {
        assert!(c.reply().starts_with("220 "));
        assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    }
    let log = gw.stop();
    let counts: Vec<u64> = (0..2)
        .map(|i| {
            let prefix = format!("shard {i}: connections=");
            let line = log
                .lines()
                .find(|l| l.contains(&prefix))
                .unwrap_or_else(|| panic!("no counter for shard {i}:\n{log}"));
            let n = line
                .split(&prefix)
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            n.parse().unwrap()
        })
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 64, "{counts:?}");
    assert!(
        counts.iter().all(|&n| n > 0),
        "each shard served some: {counts:?}"
    );
}

#[test]
fn check_reports_all_three_mistakes_with_lines() {
    let dir = common::temp_dir("check");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:2525\"]\nshards = \"two\"\n\n[limits]\nmessage_size = \"25XB\"\ncommand_timeot = \"5m\"\n",
    )
    .unwrap();
    let (status, _out, err) = common::run_tool(
        std::process::Command::new(common::BIN)
            .args(["check", "-c"])
            .arg(&path),
        None,
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    let p = path.display().to_string();
    assert!(err.contains(&format!("{p}:3: server.shards: ")), "{err}");
    assert!(
        err.contains(&format!(
            "{p}:6: limits.message_size: invalid size \"25XB\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:7: limits.command_timeot: unknown field `command_timeot`"
        )),
        "{err}"
    );
    assert!(err.contains("3 error(s) found"), "{err}");

    // A valid file passes.
    std::fs::write(&path, common::config(2525, 1, "")).unwrap();
    let (status, out, err) = common::run_tool(
        std::process::Command::new(common::BIN)
            .args(["check", "-c"])
            .arg(&path),
        None,
        Duration::from_secs(20),
    );
    assert!(status.success(), "{out}{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
