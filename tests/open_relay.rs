//! IN-5 against the tricks open-relay testers use (issue 7, item 6): from a
//! client without relay permission, none of these addresses is relayed.
//! The rule (docs/configuration.md): a recipient is ours when its domain,
//! case-insensitive and without a trailing dot, is in accept_domains; the
//! local part is never interpreted as a route; source routes are dropped;
//! address literals need relay permission.

mod common;

use std::time::Duration;

use common::Gateway;

#[test]
fn relay_tricks_are_refused_or_local() {
    let dir = common::temp_dir("relay-battery");
    let recv = common::receiver::start("127.0.0.1", &dir.join("received"), &[]);
    let rport = recv.port;
    let port = common::free_port();
    // Mail for example.com goes to the receiver; anything else would go to
    // the closed port (and nothing may be accepted for it anyway).
    let config = common::config(port, 1, "")
        + &format!("\n[[route]]\ndomain = \"example.com\"\nvia = \"[127.0.0.1]:{rport}\"\n");
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);

    let table: &[(&str, &str)] = &[
        // Refused: another domain, however it is dressed up.
        ("<victim@other.example>", "554 5.7.1 Relay access denied"),
        ("<victim@OTHER.EXAMPLE>", "554 5.7.1 Relay access denied"),
        ("<victim@other.example.>", "554 5.7.1 Relay access denied"),
        (
            "<@example.com:victim@other.example>",
            "554 5.7.1 Relay access denied",
        ),
        (
            "<@example.com,@hop.example:victim@other.example>",
            "554 5.7.1 Relay access denied",
        ),
        ("<victim@[192.0.2.1]>", "554 5.7.1 Relay access denied"),
        (
            "<victim@[IPv6:2001:db8::1]>",
            "554 5.7.1 Relay access denied",
        ),
        // A syntax error, not a route.
        (
            "<victim@other.example@example.com>",
            "501 5.1.3 Bad recipient address syntax",
        ),
        // Local: the domain is ours; the local part is just a name.
        (
            "<victim%other.example@example.com>",
            "250 2.1.5 Recipient ok",
        ),
        (
            "<\"victim@other.example\"@example.com>",
            "250 2.1.5 Recipient ok",
        ),
        ("<Local@EXAMPLE.COM.>", "250 2.1.5 Recipient ok"),
        ("<postmaster>", "250 2.1.5 Recipient ok"),
    ];
    let mut c = common::connect(gw.addr);
    c.reply();
    c.cmd("EHLO tester.test");
    assert!(c.cmd("MAIL FROM:<tester@tester.test>").starts_with("250"));
    for (rcpt, want) in table {
        let got = c.cmd(&format!("RCPT TO:{rcpt}"));
        assert_eq!(got.trim_end(), *want, "{rcpt}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: battery\r\n\r\nx\r\n.").starts_with("250"));
    c.cmd("QUIT");

    // What was accepted went to example.com's route only.
    gw.wait_for_log(": removed", Duration::from_secs(30));
    let log = gw.log();
    for line in log.lines().filter(|l| l.contains("status=sent")) {
        assert!(
            line.contains(&format!("relay=127.0.0.1[127.0.0.1]:{rport}")),
            "{line}"
        );
    }
    // Every delivery went to an example.com mailbox, once.
    let sent: Vec<&str> = log.lines().filter(|l| l.contains("status=")).collect();
    assert_eq!(sent.len(), 4, "{sent:?}");
    for l in &sent {
        let to = l
            .split(" to=<")
            .nth(1)
            .unwrap()
            .split(">,")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            to.ends_with("@example.com") || to.ends_with("@example.com."),
            "{l}"
        );
        assert!(l.contains("status=sent"), "{l}");
    }
    let received = std::fs::read_dir(dir.join("received")).unwrap().count();
    assert_eq!(received, 1, "one message, delivered once");
    drop(recv);
}

#[test]
fn control_characters_never_reach_logs_or_headers() {
    let gw = Gateway::start("log-injection", 1, "");
    let mut c = common::connect(gw.addr);
    c.reply();
    // ANSI escapes and CR in a HELO name: refused as a command.
    c.send(b"EHLO evil\x1b[31m.test\r\n");
    assert_eq!(c.reply(), "500 5.5.2 Invalid characters in command\r\n");
    c.send(b"MAIL FROM:<a\x1b[2J@evil.test>\r\n");
    assert!(c.reply().starts_with("500 5.5.2"));
    c.cmd("EHLO fine.test");
    c.cmd("QUIT");
    // The session's last line: everything it logged is in by then.
    gw.wait_for_log("disconnect from", std::time::Duration::from_secs(10));
    let log = gw.log();
    assert!(!log.contains('\x1b'), "no escape sequence in the log");
    assert!(log.lines().all(|l| !l.contains('\r')));
}
