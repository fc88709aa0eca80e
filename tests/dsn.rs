//! Delivery status notifications (RFC 3461/3464) end to end, with
//! Python's smtplib as the sender: NOTIFY, ORCPT, RET and ENVID go on to
//! Postfix (which offers DSN) as given; to smtp-sink without DSN, NOTIFY=
//! SUCCESS gets a "relayed" notification; NOTIFY=NEVER silences a
//! bounce; RET=HDRS returns the headers only; NOTIFY=DELAY gets a delay
//! notice after `[queue] delay_notice`. Every notification goes to the
//! senders' domain `client.test`, routed to its own smtp-sink.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::postfix::Postfix;
use common::Gateway;

const LIMIT: Duration = Duration::from_secs(60);

/// A gateway accepting `example.com`, routing each `(domain, port)` and
/// everything for `client.test` to `bounces`.
fn gateway(dir: &Path, routes: &[(&str, u16)], bounces: u16, queue: &str) -> Gateway {
    let port = common::free_port();
    let mut config = common::config(port, 1, "").replace(
        "accept_domains = [\"example.com\"]",
        "accept_domains = [\"partner.example\", \"nodsn.example\", \"reject.example\", \"slow.example\"]",
    ) + &format!("\n[queue]\n{queue}\n");
    for (domain, to) in routes.iter().chain(&[("client.test", bounces)]) {
        config += &format!("\n[[route]]\ndomain = \"{domain}\"\nvia = \"[127.0.0.1]:{to}\"\n");
    }
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    Gateway::start_in(dir.to_path_buf(), port)
}

#[test]
fn dsn_parameters_go_on_to_postfix() {
    let dir = common::temp_dir("dsn-postfix");
    let bounces = common::smtp_sink::start(&dir.join("bounces"), &[]);
    let pf = Postfix::start(
        &dir,
        "debug_peer_list = 127.0.0.1\n\
         default_transport = discard:taken\nrelay_transport = discard:taken\n",
    );
    let gw = gateway(
        &dir,
        &[("partner.example", pf.port)],
        bounces.port,
        "retry = [\"1h\"]",
    );
    common::smtplib_send(
        &gw,
        "sender@client.test",
        &["user@partner.example"],
        "Subject: tracked\r\n\r\nx\r\n",
        &["RET=HDRS", "ENVID=track+2B1"],
        &["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x@y"],
    );
    let arrived = gw.wait_for_line(": client=[127.0.0.1]", LIMIT);
    assert!(arrived.contains(", ret=HDRS, envid=track+2B1"), "{arrived}");
    let sent = gw.wait_for_line("to=<user@partner.example>", LIMIT);
    assert!(
        sent.contains("to=<user@partner.example>, notify=SUCCESS,FAILURE, orcpt=rfc822;x@y,")
            && sent.contains("status=sent"),
        "{sent}"
    );
    // debug_peer_list logs each command sealgate sent.
    let mail = pf.wait_for_line("MAIL FROM:<sender@client.test>", LIMIT);
    assert!(
        mail.contains(" RET=HDRS") && mail.contains(" ENVID=track+2B1"),
        "{mail}"
    );
    let rcpt = pf.wait_for_line("RCPT TO:<user@partner.example>", LIMIT);
    assert!(
        rcpt.contains("RCPT TO:<user@partner.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y"),
        "{rcpt}"
    );
    // Postfix took the request on: sealgate says nothing of its own.
    gw.wait_for_log(": removed", LIMIT);
    assert!(!gw.log().contains("relay notification"), "{}", gw.log());
    assert!(bounces.messages().is_empty());
}

#[test]
fn success_to_a_receiver_without_dsn_is_reported_relayed() {
    let dir = common::temp_dir("dsn-relayed");
    let bounces = common::smtp_sink::start(&dir.join("bounces"), &[]);
    let sink = common::smtp_sink::start(&dir.join("sink"), &["-N"]);
    let gw = gateway(
        &dir,
        &[("nodsn.example", sink.port)],
        bounces.port,
        "retry = [\"1h\"]",
    );
    common::smtplib_send(
        &gw,
        "sender@client.test",
        &["user@nodsn.example"],
        "Subject: relay-me\r\n\r\nx\r\n",
        &["ENVID=env-42"],
        &["NOTIFY=SUCCESS", "ORCPT=rfc822;orig@nodsn.example"],
    );
    gw.wait_for_log("sender relay notification", LIMIT);
    gw.wait_for_line("to=<sender@client.test>", LIMIT);
    let got = sink.one_with("Subject: relay-me");
    assert!(
        got.contains("X-Rcpt-Args: <user@nodsn.example>\n"),
        "no DSN parameters to a receiver without DSN: {got}"
    );
    let dsn = bounces.one_with("report-type=\"delivery-status\"");
    assert!(dsn.contains("X-Mail-Args: <>"), "{dsn}");
    assert!(dsn.contains("Action: relayed"), "{dsn}");
    assert!(dsn.contains("Status: 2.0.0"), "{dsn}");
    assert!(dsn.contains("Original-Envelope-Id: env-42"), "{dsn}");
    assert!(
        dsn.contains("Original-Recipient: rfc822; orig@nodsn.example"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Final-Recipient: rfc822; user@nodsn.example"),
        "{dsn}"
    );
}

#[test]
fn notify_never_silences_the_bounce_and_ret_hdrs_returns_headers_only() {
    let dir = common::temp_dir("dsn-never");
    let bounces = common::smtp_sink::start(&dir.join("bounces"), &[]);
    let reject = common::smtp_sink::start(
        &dir.join("reject"),
        &["-f", "RCPT", "-B", "550 5.1.1 no such user here"],
    );
    let gw = gateway(
        &dir,
        &[("reject.example", reject.port)],
        bounces.port,
        "retry = [\"1h\"]",
    );
    common::smtplib_send(
        &gw,
        "sender@client.test",
        &["never@reject.example"],
        "Subject: never-tell\r\n\r\nx\r\n",
        &[],
        &["NOTIFY=NEVER"],
    );
    gw.wait_for_log(
        "to=<never@reject.example>: NOTIFY=NEVER: no notification",
        LIMIT,
    );
    // A notification is logged in the same batch as the removal.
    gw.wait_for_log(": removed", LIMIT);
    assert!(!gw.log().contains("notification:"), "{}", gw.log());

    // The same failure with RET=HDRS: a bounce with the headers only.
    common::smtplib_send(
        &gw,
        "sender@client.test",
        &["hdrs@reject.example"],
        "Subject: headers-only\r\n\r\nthe body stays here\r\n",
        &["RET=HDRS"],
        &["NOTIFY=FAILURE"],
    );
    gw.wait_for_log("sender non-delivery notification", LIMIT);
    gw.wait_for_line("to=<sender@client.test>", LIMIT);
    let all = bounces.messages();
    assert_eq!(all.len(), 1, "only the RET=HDRS bounce: {all:#?}");
    let dsn = &all[0];
    assert!(
        dsn.contains("Final-Recipient: rfc822; hdrs@reject.example"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(dsn.contains("Content-Type: text/rfc822-headers"), "{dsn}");
    assert!(dsn.contains("Subject: headers-only"), "{dsn}");
    assert!(!dsn.contains("the body stays here"), "{dsn}");
    assert!(!dsn.contains("never@reject.example"), "{dsn}");
}

#[test]
fn notify_delay_gets_a_delay_notice_and_delivery_goes_on() {
    let dir = common::temp_dir("dsn-delay");
    let bounces = common::smtp_sink::start(&dir.join("bounces"), &[]);
    let slow = common::smtp_sink::start(
        &dir.join("slow"),
        &["-r", "RCPT", "-b", "450 4.2.0 try later"],
    );
    let gw = gateway(
        &dir,
        &[("slow.example", slow.port)],
        bounces.port,
        "retry = [\"1s\"]\ndelay_notice = \"2s\"",
    );
    common::smtplib_send(
        &gw,
        "sender@client.test",
        &["slow@slow.example"],
        "Subject: slow\r\n\r\nx\r\n",
        &[],
        &["NOTIFY=DELAY,FAILURE"],
    );
    let arrived = gw.wait_for_line(": client=[127.0.0.1]", LIMIT);
    let id = arrived
        .split(": client=")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .expect("a queue id");
    gw.wait_for_log("sender delay notification", LIMIT);
    gw.wait_for_line("to=<sender@client.test>", LIMIT);
    let dsn = bounces.one_with("report-type=\"delivery-status\"");
    assert!(dsn.contains("Action: delayed"), "{dsn}");
    assert!(dsn.contains("Status: 4.2.0"), "{dsn}");
    assert!(dsn.contains("Will-Retry-Until: "), "{dsn}");
    // Still queued, still tried.
    let n = gw.count("to=<slow@slow.example>, notify=FAILURE,DELAY");
    gw.wait_for_count("to=<slow@slow.example>", n + 1, LIMIT);
    assert_eq!(gw.spooled().len(), 1);
    let (status, out, err) = common::run_tool(
        Command::new(common::BIN)
            .args(["queue", "list", "--json", "-c"])
            .arg(dir.join("sealgate.toml")),
        None,
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("\"notify\": \"FAILURE,DELAY\""), "{out}");
    let (status, out, err) = common::run_tool(
        Command::new(common::BIN)
            .args(["queue", "-c"])
            .arg(dir.join("sealgate.toml"))
            .args(["show", id]),
        None,
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("rcpt <slow@slow.example>, notify=FAILURE,DELAY\n")
            && out.contains("\nsmtputf8 no\n")
            && out.contains("\nret -\nenvid -\n"),
        "{out}"
    );
}
