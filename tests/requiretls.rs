//! REQUIRETLS and `TLS-Required: No` (RFC 8689) end to end, with Python's
//! smtplib as the submitting client, MTA-STS policies from a loopback
//! HTTPS server (tests/peers/policy_server.py on 127.0.0.4:443) and
//! dnsmasq, and two receivers:
//!
//! - Postfix 3.7 (no REQUIRETLS) as the MX of `pf.test` and
//!   `badcert.test`, its certificate naming `mx.pf.test` only;
//! - a second sealgate as the MX of `b.test`, its certificate naming
//!   `mx.b.test`.
//!
//! REQUIRETLS in the clear is refused; REQUIRETLS to Postfix bounces
//! `5.7.30` with the headers only; REQUIRETLS to sealgate goes with
//! `REQUIRETLS` on MAIL FROM; `TLS-Required: No` to `badcert.test`, whose
//! enforced policy Postfix's certificate fails, goes anyway and is counted.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::Ca;
use common::postfix::Postfix;
use common::Gateway;

/// Submits with smtplib: `mode` is `clear` (MAIL FROM with REQUIRETLS in
/// the clear; prints the reply) or `tls` (STARTTLS, then one message per
/// recipient: with REQUIRETLS, or with a `TLS-Required: No` header for
/// `header:RCPT`).
const CLIENT: &str = r#"
import smtplib, ssl, sys
port, mode, rcpts = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.ehlo("client.test")
if mode == "clear":
    print("offered" if s.has_extn("requiretls") else "not offered")
    print(s.mail("sender@client.test", ["REQUIRETLS"]))
    s.quit()
    sys.exit(0)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo("client.test")
assert s.has_extn("requiretls"), "REQUIRETLS not offered over TLS"
for r in rcpts:
    header = r.startswith("header:")
    r = r.removeprefix("header:")
    extra = "TLS-Required: No\r\n" if header else ""
    msg = f"From: sender@client.test\r\nTo: {r}\r\nSubject: to {r}\r\n{extra}\r\nbody of the message to {r}\r\n"
    opts = [] if header else ["REQUIRETLS"]
    refused = s.sendmail("sender@client.test", [r], msg, mail_options=opts)
    assert refused == {}, refused
s.quit()
print("sent")
"#;

fn submit(gw: &Gateway, mode: &str, rcpts: &[&str]) -> String {
    let (status, out, err) = common::run_tool(
        Command::new("python3")
            .args(["-c", CLIENT, &gw.port().to_string(), mode])
            .args(rcpts),
        None,
        Duration::from_secs(60),
    );
    assert!(status.success(), "{out}{err}");
    out
}

const DOMAINS: [&str; 3] = ["pf.test", "badcert.test", "b.test"];

fn dns() -> common::dnsmasq::Dnsmasq {
    let mut records = Vec::new();
    for d in DOMAINS {
        records.push(format!("--mx-host={d},mx.{d},10"));
        records.push(format!("--host-record=mx.{d},127.0.0.1"));
        records.push(format!("--host-record=mta-sts.{d},127.0.0.4"));
        records.push(format!("--txt-record=_mta-sts.{d},v=STSv1; id=1;"));
    }
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    common::dnsmasq::start(&records)
}

/// The second sealgate: the MX of `b.test`, with a certificate from the
/// test CA naming `mx.b.test`.
fn receiving_gateway(dir: &Path, ca: &Ca) -> Gateway {
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    let (crt, key) = ca.leaf(
        dir.parent().unwrap().join("pki").as_path(),
        "b",
        &["mx.b.test"],
    );
    std::fs::copy(crt, dir.join("tls/server.crt")).unwrap();
    std::fs::copy(key, dir.join("tls/server.key")).unwrap();
    let port = common::free_port();
    let config = common::config(port, 1, "").replace(
        "accept_domains = [\"example.com\"]",
        "accept_domains = [\"b.test\"]",
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    Gateway::start_in(dir.to_path_buf(), port)
}

#[test]
fn requiretls_and_tls_required_no_end_to_end() {
    let dir = common::temp_dir("requiretls");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let (leaf, key) = ca.leaf(&dir.join("pki"), "postfix", &["mx.pf.test"]);
    let sink = common::receiver::start("127.0.0.1", &dir.join("final"), &[]);
    let pf = Postfix::tls_relay(&dir, &["pf.test", "badcert.test"], sink.port, &key, &leaf);
    common::sts::policy(&dir, "pf.test", "enforce", "mx.pf.test");
    common::sts::policy(&dir, "badcert.test", "enforce", "*.badcert.test");
    common::sts::policy(&dir, "b.test", "enforce", "mx.b.test");
    let _server = common::sts::start("127.0.0.4", &dir, &ca, &DOMAINS);
    let dns = dns();
    let b = receiving_gateway(&dir.join("b"), &ca);

    let gw_dir = dir.join("gw");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let ports = (common::free_port(), common::free_port());
    // Idle connections wait long enough for the cache check at the end.
    let tail = format!(
        "connection_idle = \"60s\"\n\n[dns]\nservers = [\"127.0.0.1:{}\"]\n\n\
         [[route]]\ndomain = \"b.test\"\nvia = \"mx\"\nport = {}\n\n\
         [[route]]\ndomain = \"client.test\"\nvia = \"[127.0.0.1]:{}\"\n",
        dns.port,
        b.port(),
        sink.port
    );
    let config = common::mx_relay_config(ports, &DOMAINS, &ca.cert_path, pf.port, &tail);
    std::fs::write(gw_dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(gw_dir, ports.0);

    // RFC 8689 §2, §4.1: not offered in the clear, and refused there.
    let clear = submit(&gw, "clear", &[]);
    assert!(
        clear.contains("not offered")
            && clear.contains("530")
            && clear.contains("5.7.10 REQUIRETLS needs TLS"),
        "{clear}"
    );
    let sent = submit(
        &gw,
        "tls",
        &["user@pf.test", "user@b.test", "header:user@badcert.test"],
    );
    assert!(sent.contains("sent"), "{sent}");
    // The log is written a few milliseconds behind the replies.
    gw.wait_for_count("requiretls (queue active)", 2, Duration::from_secs(10));
    gw.wait_for_count("tls_required=no (queue active)", 1, Duration::from_secs(10));
    assert_eq!(gw.count("requiretls (queue active)"), 2, "{}", gw.log());

    let line = |rcpt: &str| gw.wait_for_line(&format!("to=<{rcpt}>"), Duration::from_secs(60));
    // Postfix 3.7 is authenticated by MTA-STS but does not offer
    // REQUIRETLS: a bounce, 5.7.30 (§4.2.1, §6).
    let pf_line = line("user@pf.test");
    assert!(
        pf_line.contains("status=bounced")
            && pf_line.contains("dsn=5.7.30")
            && pf_line.contains("the host does not offer REQUIRETLS"),
        "{pf_line}\n{}",
        gw.log()
    );
    // sealgate offers it: delivered, REQUIRETLS on its MAIL FROM (the
    // receiving gateway logs the request it was given).
    let b_line = line("user@b.test");
    assert!(
        b_line.contains("status=sent"),
        "{b_line}\n{}\n{}",
        gw.log(),
        b.log()
    );
    b.wait_for_log("requiretls (queue active)", Duration::from_secs(30));
    // It keeps the obligation: its own onward route (a closed port, no
    // profile) authenticates nothing.
    b.wait_for_log(
        "passed over: REQUIRETLS: [127.0.0.1] is authenticated by neither",
        Duration::from_secs(30),
    );
    // TLS-Required: No: the enforced policy Postfix's certificate fails
    // is set aside (§5); TLS is still used.
    let header_line = line("user@badcert.test");
    assert!(
        header_line.contains("status=sent"),
        "{header_line}\n{}",
        gw.log()
    );
    assert!(gw
        .log()
        .contains("TLS-Required: No: the recipient's MTA-STS policy is set aside"));
    let metrics = common::scrape(ports.1);
    assert_eq!(
        common::value(&metrics, "sealgate_tls_required_no_total"),
        1,
        "{metrics}"
    );
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_deliveries_total{outcome=\"sent\",tls=\"trusted\"}"
        ),
        1,
        "{metrics}"
    );

    // The bounce (to the sender's route, the sink) and the message Postfix
    // relayed. The bounce carries the original's headers only.
    let got = sink.wait_for_messages(2, Duration::from_secs(60), || pf.log());
    let dsn = got
        .iter()
        .find(|m| m.contains("report-type=\"delivery-status\""))
        .unwrap_or_else(|| panic!("no bounce: {got:?}"));
    assert!(
        dsn.contains("Status: 5.7.30")
            && dsn.contains("Content-Type: text/rfc822-headers")
            && dsn.contains("Subject: to user@pf.test")
            && !dsn.contains("body of the message"),
        "{dsn}"
    );
    assert!(
        got.iter()
            .any(|m| m.contains("Subject: to user@badcert.test") && m.contains("TLS-Required: No")),
        "{got:?}"
    );

    // The connection cache: a message without REQUIRETLS leaves a
    // connection to Postfix idle (TLS, MTA-STS enforced); a REQUIRETLS
    // message to the same host never takes it (Postfix does not offer
    // REQUIRETLS): its own connection, and the same 5.7.30.
    common::send_mail(&gw, "sender@client.test", &["plain@pf.test"], "plain");
    let plain = line("plain@pf.test");
    assert!(plain.contains("status=sent"), "{plain}\n{}", gw.log());
    let sent = submit(&gw, "tls", &["again@pf.test"]);
    assert!(sent.contains("sent"), "{sent}");
    let again = line("again@pf.test");
    assert!(
        again.contains("status=bounced")
            && again.contains("dsn=5.7.30")
            && again.contains("the host does not offer REQUIRETLS"),
        "{again}\n{}",
        gw.log()
    );
    let reused = || {
        gw.log()
            .lines()
            .filter(|l| {
                l.contains("delivery via mx.pf.test") && l.contains("reusing the connection")
            })
            .count()
    };
    assert_eq!(reused(), 0, "{}", gw.log());
    // The idle connection was there all along: the next plain message
    // takes it.
    common::send_mail(&gw, "sender@client.test", &["plain2@pf.test"], "plain2");
    let plain2 = line("plain2@pf.test");
    assert!(plain2.contains("status=sent"), "{plain2}\n{}", gw.log());
    assert_eq!(reused(), 1, "{}", gw.log());
}
