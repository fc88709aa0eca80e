//! OUT-1, OUT-4 against a scripted receiver (Python, loopback): a
//! temporary refusal is retried and delivered exactly once; a permanent
//! one bounces to the sender (RFC 3464); a failing message with the null
//! sender bounces to no one; a forged reply after 220 to STARTTLS aborts
//! the attempt.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Gateway;

use common::receiver::Receiver;

fn receiver(dir: &Path, flags: &[&str]) -> Receiver {
    common::receiver::start("127.0.0.1", &dir.join("received"), flags)
}

/// A gateway directory and port whose configuration routes everything to
/// the receiver and retries after `retry` (start it with
/// `Gateway::start_in`, and again after a kill).
fn routed(name: &str, r: &Receiver, retry: &str) -> (std::path::PathBuf, u16) {
    let dir = common::temp_dir(name);
    let port = common::free_port();
    let config = common::config(port, 1, "")
        .replace("[127.0.0.1]:1", &format!("[127.0.0.1]:{}", r.port))
        + &format!("\n[queue]\nretry = [\"{retry}\"]\nlifetime = \"1h\"\n");
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    (dir, port)
}

/// A gateway that routes everything to the receiver and retries after 1 s.
fn gateway(name: &str, r: &Receiver) -> Gateway {
    let (dir, port) = routed(name, r, "1s");
    Gateway::start_in(dir, port)
}

fn send(gw: &Gateway, from: &str, rcpts: &[&str], subject: &str) {
    common::send_mail(gw, from, rcpts, subject);
}

#[test]
fn temporary_failure_is_retried_and_delivered_once() {
    let dir = common::temp_dir("dlv-temp");
    let r = receiver(&dir, &["--temp-once"]);
    let gw = gateway("dlv-temp-gw", &r);
    send(&gw, "sender@client.test", &["user@example.com"], "retry-me");
    gw.wait_for_log("status=deferred", Duration::from_secs(30));
    gw.wait_for_log("status=sent", Duration::from_secs(30));
    gw.wait_for_log(": removed", Duration::from_secs(30));
    let got = r.messages();
    assert_eq!(got.len(), 1, "exactly one delivery: {got:?}");
    assert!(got[0].contains("X-Env-To: <user@example.com>"));
    assert!(got[0].contains("Subject: retry-me"));
    assert!(
        got[0].contains("Received: from client.test"),
        "our Received header travels"
    );
    assert!(gw.spooled().is_empty(), "delivered mail leaves the queue");
}

#[test]
fn permanent_failure_bounces_to_the_sender_but_never_a_bounce() {
    let dir = common::temp_dir("dlv-perm");
    let r = receiver(&dir, &["--reject-prefix", "bad"]);
    let gw = gateway("dlv-perm-gw", &r);
    send(
        &gw,
        "sender@client.test",
        &["bad@example.com", "good@example.com"],
        "mixed",
    );
    gw.wait_for_log("status=bounced", Duration::from_secs(30));
    gw.wait_for_log("sender non-delivery notification", Duration::from_secs(30));
    // The DSN itself is delivered to the sender (through the same route).
    gw.wait_for_count("status=sent", 2, Duration::from_secs(30));
    let got = r.messages();
    assert_eq!(got.len(), 2, "{got:?}");
    let dsn = got
        .iter()
        .find(|m| m.contains("X-Env-From: <>"))
        .expect("a DSN with the null sender");
    assert!(dsn.contains("X-Env-To: <sender@client.test>"));
    // Made here: stamped without a client, as Postfix stamps its bounces,
    // and logged as local.
    assert!(dsn.contains("Received: by "), "{dsn}");
    gw.wait_for_log(": client=local, from=<>", Duration::from_secs(10));
    assert!(dsn.contains("report-type=\"delivery-status\""));
    assert!(dsn.contains("Final-Recipient: rfc822; bad@example.com"));
    assert!(dsn.contains("Status: 5.1.1"));
    assert!(
        dsn.contains("Subject: mixed"),
        "the original headers are returned"
    );
    assert!(got
        .iter()
        .any(|m| m.contains("X-Env-To: <good@example.com>")));

    // A failing message with the null sender: no notification.
    send(&gw, "", &["bad2@example.com"], "bounce-of-bounce");
    gw.wait_for_log(
        "undeliverable message with null sender: no notification",
        Duration::from_secs(30),
    );
    assert_eq!(r.messages().len(), 2);
}

#[test]
fn forged_reply_after_starttls_aborts_the_attempt() {
    let dir = common::temp_dir("dlv-inject");
    let r = receiver(&dir, &["--inject"]);
    let gw = gateway("dlv-inject-gw", &r);
    send(&gw, "sender@client.test", &["user@example.com"], "inject");
    gw.wait_for_log(
        "server sent data after 220 to STARTTLS",
        Duration::from_secs(30),
    );
    gw.wait_for_log("status=deferred", Duration::from_secs(30));
    assert!(r.messages().is_empty());
    assert_eq!(gw.spooled().len(), 1, "the message stays queued");
}

#[test]
fn restart_mid_queue_delivers_the_rest_and_repeats_nothing() {
    let dir = common::temp_dir("dlv-restart");
    let r = receiver(&dir, &["--temp-once-prefix", "later"]);
    let (gwdir, port) = routed("dlv-restart-gw", &r, "2s");
    let gw = Gateway::start_in(gwdir.clone(), port);
    send(
        &gw,
        "sender@client.test",
        &["now@example.com", "later@example.com"],
        "split",
    );
    // One recipient delivered, the other deferred: then a crash.
    gw.wait_for_log("to=<later@example.com>", Duration::from_secs(30));
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("to=<now@example.com>") && l.contains("status=sent")),
        "{log}"
    );
    let _ = gw.kill();
    // The journal says who is done.
    let states = common::queue_states(&gwdir.join("spool"));
    assert_eq!(states.len(), 1, "{states:?}");
    let got: Vec<(&str, sealgate::spool::RcptStatus, u32)> = states[0]
        .1
        .iter()
        .map(|r| (r.rcpt.as_str(), r.status, r.attempts))
        .collect();
    assert_eq!(
        got,
        vec![
            ("now@example.com", sealgate::spool::RcptStatus::Delivered, 1),
            ("later@example.com", sealgate::spool::RcptStatus::Pending, 1),
        ]
    );

    let gw = Gateway::start_in(gwdir, port);
    gw.wait_for_log("to=<later@example.com>", Duration::from_secs(30));
    gw.wait_for_log(": removed", Duration::from_secs(30));
    let got = r.messages();
    let to_now = got
        .iter()
        .filter(|m| m.contains("<now@example.com>"))
        .count();
    let to_later = got
        .iter()
        .filter(|m| m.contains("<later@example.com>"))
        .count();
    assert_eq!((to_now, to_later), (1, 1), "{got:?}");
}

#[test]
fn silent_server_times_out_and_is_deferred() {
    let dir = common::temp_dir("dlv-silent");
    let r = receiver(&dir, &["--silent"]);
    let gwdir = common::temp_dir("dlv-silent-gw");
    let port = common::free_port();
    let config = common::config(port, 1, "")
        .replace("[127.0.0.1]:1", &format!("[127.0.0.1]:{}", r.port))
        + "\n[queue]\nretry = [\"1h\"]\ncommand_timeout = \"1s\"\n";
    std::fs::write(gwdir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(gwdir, port);
    let started = std::time::Instant::now();
    send(&gw, "sender@client.test", &["user@example.com"], "silence");
    let line = gw.wait_for_line("to=<user@example.com>", Duration::from_secs(30));
    assert!(line.contains("status=deferred"), "{line}");
    assert!(
        line.contains("dsn=4.4.2") && line.contains("timeout waiting for the greeting"),
        "{line}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// RFC 6152: a message declared BODY=8BITMIME is relayed with the same
/// declaration (the receiver offers 8BITMIME); a 7-bit one is not.
#[test]
fn body_8bitmime_is_declared_again_on_the_way_out() {
    let dir = common::temp_dir("dlv-8bit");
    let r = receiver(&dir, &[]);
    let gw = gateway("dlv-8bit-gw", &r);
    let mut c = common::connect(gw.addr);
    c.reply();
    c.cmd("EHLO client.test");
    assert!(c
        .cmd("MAIL FROM:<eight@client.test> BODY=8BITMIME")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.com>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c
        .cmd("Subject: caf\u{e9}\r\n\r\nd\u{e9}j\u{e0} vu\r\n.")
        .starts_with("250"));
    c.cmd("QUIT");
    send(&gw, "seven@client.test", &["user@example.com"], "plain");
    gw.wait_for_count("status=sent", 2, Duration::from_secs(30));
    let got = r.messages();
    let eight = got
        .iter()
        .find(|m| m.contains("X-Env-From: <eight@client.test>"))
        .expect("the 8-bit message");
    let mail_from = eight.lines().next().unwrap_or_default();
    assert!(mail_from.ends_with(" BODY=8BITMIME"), "{eight}");
    assert!(eight.contains("d\u{e9}j\u{e0} vu"), "the 8-bit body intact");
    let seven = got
        .iter()
        .find(|m| m.contains("X-Env-From: <seven@client.test>"))
        .expect("the 7-bit message");
    assert!(!seven.contains("BODY=8BITMIME"), "{seven}");
}

/// Quoted local parts with spaces (and words the old `.state` lines were
/// made of) among several recipients: one delivered, one deferred, a
/// crash, a restart. The delivered ones are not delivered again, the
/// deferred one is delivered once, and no phantom recipient appears.
#[test]
fn quoted_local_parts_keep_their_state_across_a_restart() {
    let dir = common::temp_dir("dlv-quoted");
    let r = receiver(&dir, &["--temp-once-prefix", "\"x"]);
    let (gwdir, port) = routed("dlv-quoted-gw", &r, "2s");
    let gw = Gateway::start_in(gwdir.clone(), port);
    let rcpts = [
        "\"a b\"@example.com",
        "\"x delivered 1 2\"@example.com",
        "plain@example.com",
    ];
    send(&gw, "sender@client.test", &rcpts, "quoted");
    let line = gw.wait_for_line(
        "to=<\"x delivered 1 2\"@example.com>",
        Duration::from_secs(30),
    );
    assert!(line.contains("status=deferred"), "{line}");
    let _ = gw.kill();
    let states = common::queue_states(&gwdir.join("spool"));
    assert_eq!(states.len(), 1, "{states:?}");
    let got: Vec<(&str, sealgate::spool::RcptStatus)> = states[0]
        .1
        .iter()
        .map(|s| (s.rcpt.as_str(), s.status))
        .collect();
    use sealgate::spool::RcptStatus::{Delivered, Pending};
    assert_eq!(
        got,
        vec![
            (rcpts[0], Delivered),
            (rcpts[1], Pending),
            (rcpts[2], Delivered)
        ]
    );

    let gw = Gateway::start_in(gwdir, port);
    gw.wait_for_log(": removed", Duration::from_secs(30));
    let log = gw.log();
    let sent: Vec<&str> = log.lines().filter(|l| l.contains("status=sent")).collect();
    assert_eq!(
        sent.len(),
        1,
        "only the deferred one after the restart: {sent:?}"
    );
    assert!(sent[0].contains(rcpts[1]), "{sent:?}");
    let got = r.messages();
    for rcpt in rcpts {
        let n = got
            .iter()
            .filter(|m| m.contains(&format!("<{rcpt}>")))
            .count();
        assert_eq!(n, 1, "{rcpt}: {got:?}");
    }
}

/// An upgrade: a spool left by the file-per-message format (a message and
/// its `.state`, one recipient already delivered) is imported at start and
/// delivered — to the pending recipient only.
#[test]
fn an_old_format_spool_is_imported_and_delivered() {
    let dir = common::temp_dir("dlv-upgrade");
    let r = receiver(&dir, &[]);
    let (gwdir, port) = routed("dlv-upgrade-gw", &r, "1s");
    let queue = gwdir.join("spool/shard-0/queue");
    std::fs::create_dir_all(&queue).unwrap();
    let body = "Subject: from the old spool\r\n\r\nbody\r\n";
    std::fs::write(
        queue.join("661467A9D485A010001.msg"),
        format!(
            "SEALGATE-SPOOL 1\nid 661467A9D485A010001\narrived 1795805192\nfrom <a@b.test>\n\
             rcpt <done@example.com>\nrcpt <todo@example.com>\nclient 127.0.0.1 60844\n\
             helo client.example\nbody 7BIT\nsize {}\n\n{body}",
            body.len()
        ),
    )
    .unwrap();
    std::fs::write(
        queue.join("661467A9D485A010001.state"),
        "hold 0\nrcpt done@example.com delivered 1 0 dsn=2.0.0 250 ok\nrcpt todo@example.com pending 1 0 dsn=4.0.0 451 later\n",
    )
    .unwrap();
    let gw = Gateway::start_in(gwdir.clone(), port);
    gw.wait_for_log("imported 1 message(s)", Duration::from_secs(10));
    gw.wait_for_log("661467A9D485A010001: removed", Duration::from_secs(30));
    let got = r.messages();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("<todo@example.com>") && !got[0].contains("<done@example.com>"));
    assert!(got[0].contains("Subject: from the old spool"));
    assert!(!queue.exists());
}
