//! SMTPUTF8 (RFC 6531/6532) end to end: Python's smtplib sends
//! internationalised mail through sealgate. To Postfix (which offers
//! SMTPUTF8) it goes on with the flag; to smtp-sink (which never offers
//! it) ASCII mail — U-label domains sent as A-labels — is delivered, and
//! mail that needs UTF-8 in its envelope or headers bounces with 5.6.7.
//! Domains match in one canonical form: the accepted domain is written
//! with A-labels, the routes with U-labels.

mod common;

use std::path::Path;
use std::time::Duration;

use common::postfix::Postfix;
use common::smtp_sink::SmtpSink;
use common::Gateway;

const LIMIT: Duration = Duration::from_secs(60);

/// A gateway accepting `bücher.example` (configured as its A-label),
/// routing it (as its U-label) to `port`, and the senders' domain
/// `client.test` to `bounces`.
fn gateway(dir: &Path, port: u16, bounces: u16) -> Gateway {
    let gw_port = common::free_port();
    let config = common::config(gw_port, 1, "").replace(
        "accept_domains = [\"example.com\"]",
        "accept_domains = [\"xn--bcher-kva.example\"]",
    ) + &format!(
        "\n[queue]\nretry = [\"1h\"]\n\n\
         [[route]]\ndomain = \"bücher.example\"\nvia = \"[127.0.0.1]:{port}\"\n\n\
         [[route]]\ndomain = \"client.test\"\nvia = \"[127.0.0.1]:{bounces}\"\n"
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    Gateway::start_in(dir.to_path_buf(), gw_port)
}

#[test]
fn utf8_mail_goes_on_to_postfix_with_smtputf8() {
    let dir = common::temp_dir("utf8-postfix");
    let bounces = common::smtp_sink::start(&dir.join("bounces"), &[]);
    // Postfix takes it for any domain from loopback and discards it
    // there; debug_peer_list logs every command sealgate sends.
    let pf = Postfix::start(
        &dir,
        "smtputf8_enable = yes\ndebug_peer_list = 127.0.0.1\n\
         default_transport = discard:taken\nrelay_transport = discard:taken\n",
    );
    let gw = gateway(&dir, pf.port, bounces.port);
    common::smtplib_send(
        &gw,
        "jörg@client.test",
        &["élise@bücher.example"],
        "From: Jörg <jörg@client.test>\r\nTo: Élise <élise@bücher.example>\r\n\
         Subject: Grüße aus Köln\r\n\r\nHallo Élise.\r\n",
        &["SMTPUTF8"],
        &[],
    );
    let arrived = gw.wait_for_line(": client=[127.0.0.1]", LIMIT);
    assert!(
        arrived.contains("from=<jörg@client.test>") && arrived.contains(", smtputf8"),
        "{arrived}"
    );
    let sent = gw.wait_for_line("to=<élise@bücher.example>", LIMIT);
    assert!(sent.contains("status=sent"), "{sent}");
    // debug_peer_list logs each command sealgate sent, and the delivery.
    let mail = pf.wait_for_line("MAIL FROM:<jörg@client.test>", LIMIT);
    assert!(
        mail.contains(" SMTPUTF8"),
        "Postfix got no SMTPUTF8: {mail}"
    );
    pf.wait_for_line("RCPT TO:<élise@bücher.example>", LIMIT);
    let taken = pf.wait_for_line("to=<élise@bücher.example>", LIMIT);
    assert!(taken.contains("status=sent"), "{taken}");
    assert!(bounces.messages().is_empty());
}

#[test]
fn a_receiver_without_smtputf8_gets_ascii_mail_and_utf8_mail_bounces() {
    let dir = common::temp_dir("utf8-sink");
    let bounces = common::smtp_sink::start(&dir.join("bounces"), &[]);
    let sink: SmtpSink = common::smtp_sink::start(&dir.join("sink"), &[]);
    let gw = gateway(&dir, sink.port, bounces.port);

    // SMTPUTF8 given, nothing needs it but the U-label domain: sent with
    // the A-label, without SMTPUTF8.
    common::smtplib_send(
        &gw,
        "sender@client.test",
        &["user@bücher.example"],
        "Subject: ascii-only\r\n\r\nplain\r\n",
        &["SMTPUTF8"],
        &[],
    );
    let sent = gw.wait_for_line("to=<user@bücher.example>", LIMIT);
    assert!(sent.contains("status=sent"), "{sent}");
    let got = sink.one_with("Subject: ascii-only");
    assert!(
        got.contains("X-Rcpt-Args: <user@xn--bcher-kva.example>"),
        "{got}"
    );
    assert!(
        got.contains("X-Mail-Args: <sender@client.test>") && !got.contains("SMTPUTF8"),
        "{got}"
    );
    // Our trace header says how it came in.
    assert!(got.contains("with UTF8SMTP id"), "{got}");

    // A UTF-8 local part, then UTF-8 only in a header: both need
    // SMTPUTF8, which this receiver does not offer (RFC 6531 §3.2).
    common::smtplib_send(
        &gw,
        "sender@client.test",
        &["élise@bücher.example"],
        "Subject: utf8-address\r\n\r\nx\r\n",
        &["SMTPUTF8"],
        &[],
    );
    common::smtplib_send(
        &gw,
        "sender@client.test",
        &["header@bücher.example"],
        "Subject: Grüße\r\n\r\nx\r\n",
        &["SMTPUTF8"],
        &[],
    );
    for rcpt in ["élise@bücher.example", "header@bücher.example"] {
        let line = gw.wait_for_line(&format!("to=<{rcpt}>"), LIMIT);
        assert!(
            line.contains("dsn=5.6.7") && line.contains("status=bounced"),
            "{line}"
        );
    }
    gw.wait_for_count("sender non-delivery notification", 2, LIMIT);
    gw.wait_for_count("to=<sender@client.test>", 2, LIMIT);
    let dsns = bounces.messages();
    assert_eq!(dsns.len(), 2, "{dsns:#?}");
    for d in &dsns {
        assert!(d.contains("Status: 5.6.7"), "{d}");
        assert!(d.contains("X-Mail-Args: <>"), "{d}");
    }
    assert!(
        dsns.iter().any(|d| d.contains("élise@bücher.example")),
        "{dsns:#?}"
    );
    assert_eq!(sink.messages().len(), 1, "only the ASCII message went on");
}
