//! OUT-2, OUT-3 against a real MTA as the receiver: a private Postfix with
//! a certificate from a test CA (relaying on to a scripted sink).
//! A mandatory verified route delivers; a mandatory route whose names do
//! not match defers with the reason; an opportunistic route delivers. With
//! STARTTLS off on Postfix, the mandatory route defers and the
//! opportunistic one delivers in the clear.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::Ca;
use common::postfix::Postfix;
use common::Gateway;

use common::receiver::Receiver as Sink;

/// The final hop behind Postfix.
fn sink(dir: &Path) -> Sink {
    common::receiver::start("127.0.0.1", &dir.join("final"), &[])
}

/// Postfix receiving for three domains, relaying them to the sink; with
/// `tls` its smtpd offers STARTTLS with a CA-signed mx.partner.test cert.
fn postfix(dir: &Path, ca: &Ca, sink: &Sink, tls: bool) -> Postfix {
    let pki = dir.join("pki");
    let (crt, key) = ca.leaf(&pki, "postfix-server", &["mx.partner.test"]);
    let tls_conf = if tls {
        format!(
            "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {}, {}\n",
            key.display(),
            crt.display()
        )
    } else {
        "smtpd_tls_security_level = none\n".into()
    };
    Postfix::start(
        dir,
        &format!(
            "relay_domains = mand.test wrongname.test opp.test reportonly.test\nrelayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = none\n{tls_conf}",
            sink.port
        ),
    )
}

fn gateway(dir: &Path, ca: &Ca, pf_port: u16) -> Gateway {
    gateway_with_admin(dir, ca, pf_port, 0)
}

fn gateway_with_admin(dir: &Path, ca: &Ca, pf_port: u16, admin: u16) -> Gateway {
    let port = common::free_port();
    // OUT-5: the certificate sealgate presents to servers that ask.
    let (client_crt, client_key) = ca.leaf(&dir.join("pki"), "gateway-client", &["mx.test"]);
    let routes = format!(
        r#"
[[profile]]
name = "strict"
[profile.client]
mandatory_tls = true
verify = true
match_names = ["mx.partner.test"]
client_certificate = true

[[profile]]
name = "wrong-name"
[profile.client]
mandatory_tls = true
verify = true
match_names = ["not-the-server.test"]

[[profile]]
name = "wrong-name-report-only"
[profile.client]
mandatory_tls = true
verify = true
match_names = ["not-the-server.test"]
report_only = true

[[route]]
domain = "reportonly.test"
via = "[127.0.0.1]:{pf_port}"
profile = "wrong-name-report-only"

[[route]]
domain = "mand.test"
via = "[127.0.0.1]:{pf_port}"
profile = "strict"

[[route]]
domain = "wrongname.test"
via = "[127.0.0.1]:{pf_port}"
profile = "wrong-name"

[[route]]
domain = "opp.test"
via = "[127.0.0.1]:{pf_port}"
"#
    );
    let config = common::config(port, 1, "")
        .replace(
            "accept_domains = [\"example.com\"]",
            "accept_domains = [\"mand.test\", \"wrongname.test\", \"opp.test\", \"reportonly.test\"]",
        )
        .replace(
            "generate_self_signed = true\n",
            &format!(
                "generate_self_signed = true\nca_files = [\"{}\"]\nsystem_roots = false\nclient_certificate = {{ cert = \"{}\", key = \"{}\" }}\n",
                ca.cert_path.display(),
                client_crt.display(),
                client_key.display()
            ),
        )
        + "\n[queue]\nretry = [\"1h\"]\n"
        + &routes;
    let config = config.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{admin}\""),
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    Gateway::start_in(dir.to_path_buf(), port)
}

fn send(gw: &Gateway, rcpt: &str) {
    common::send_mail(gw, "sender@client.test", &[rcpt], &format!("to {rcpt}"));
}

#[test]
fn mandatory_verified_route_to_postfix() {
    let dir = common::temp_dir("pf-recv");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let s = sink(&dir);
    let pf = postfix(&dir, &ca, &s, true);
    let gw = gateway(&dir, &ca, pf.port);

    send(&gw, "user@mand.test");
    let line = gw.wait_for_line("to=<user@mand.test>", Duration::from_secs(60));
    assert!(line.contains("status=sent"), "{line}");
    let log = gw.log();
    assert!(
        log.contains("Verified TLS connection established to 127.0.0.1[127.0.0.1]"),
        "{log}"
    );

    send(&gw, "user@wrongname.test");
    let line = gw.wait_for_line("to=<user@wrongname.test>", Duration::from_secs(60));
    assert!(line.contains("status=deferred"), "{line}");
    assert!(
        line.contains("dsn=4.7.5") && line.contains("do not match not-the-server.test"),
        "{line}"
    );

    send(&gw, "user@opp.test");
    let line = gw.wait_for_line("to=<user@opp.test>", Duration::from_secs(60));
    assert!(line.contains("status=sent"), "{line}");

    // The same rules, report-only: delivered, and what would have been
    // refused is said.
    send(&gw, "user@reportonly.test");
    let line = gw.wait_for_line("to=<user@reportonly.test>", Duration::from_secs(60));
    assert!(line.contains("status=sent"), "{line}");
    assert!(
        gw.log()
            .contains("would refuse: profile (report-only): server certificate names")
            && gw.log().contains("do not match not-the-server.test"),
        "{}",
        gw.log()
    );

    // Postfix relayed both delivered messages on: our Received header and
    // Postfix's are both there.
    gw.wait_for_log(": removed", Duration::from_secs(30));
    let msgs = s.wait_for_messages(2, Duration::from_secs(60), || pf.log());
    let m = msgs
        .iter()
        .find(|m| m.contains("Subject: to user@mand.test"))
        .unwrap();
    assert!(m.contains("by postfix.test (Postfix) with ESMTPS"), "{m}");
    assert!(m.contains("by mx.test (sealgate) with ESMTP"), "{m}");
}

#[test]
fn postfix_without_starttls() {
    let dir = common::temp_dir("pf-recv-clear");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let s = sink(&dir);
    let pf = postfix(&dir, &ca, &s, false);
    let gw = gateway(&dir, &ca, pf.port);
    send(&gw, "user@mand.test");
    let line = gw.wait_for_line("to=<user@mand.test>", Duration::from_secs(60));
    assert!(
        line.contains("status=deferred") && line.contains("TLS is required, but was not offered"),
        "{line}"
    );
    send(&gw, "user@opp.test");
    let line = gw.wait_for_line("to=<user@opp.test>", Duration::from_secs(60));
    assert!(line.contains("status=sent"), "{line}");
    let log = gw.log();
    assert!(
        !log.contains("TLS connection established to"),
        "delivered in the clear: {log}"
    );
}

#[test]
fn swaks_to_sealgate_to_postfix_by_mx_with_mandatory_verified_tls() {
    let dir = common::temp_dir("e2e");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let s = sink(&dir);
    let pf = postfix(&dir, &ca, &s, true);
    let dns = common::dnsmasq::start(&[
        "--mx-host=mand.test,mx.partner.test,10",
        "--host-record=mx.partner.test,127.0.0.1",
    ]);
    let port = common::free_port();
    let config = common::config(port, 1, "")
        .replace("accept_domains = [\"example.com\"]", "accept_domains = [\"mand.test\"]")
        .replace(
            "generate_self_signed = true\n",
            &format!("generate_self_signed = true\nca_files = [\"{}\"]\nsystem_roots = false\n", ca.cert_path.display()),
        )
        + &format!(
            "\n[dns]\nservers = [\"127.0.0.1:{}\"]\n\n[[profile]]\nname = \"strict\"\n[profile.client]\nmandatory_tls = true\nverify = true\n\n[[route]]\ndomain = \"mand.test\"\nvia = \"mx\"\nport = {}\nprofile = \"strict\"\n",
            dns.port, pf.port
        );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let (status, out, err) = common::run_tool(
        Command::new("swaks")
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--tls",
                "--timeout",
                "20",
            ])
            .args([
                "--from",
                "sender@client.test",
                "--to",
                "user@mand.test",
                "--header",
                "Subject: end to end",
            ]),
        None,
        Duration::from_secs(30),
    );
    assert!(status.success(), "{out}{err}");
    let line = gw.wait_for_line("to=<user@mand.test>", Duration::from_secs(60));
    let log = gw.log();
    assert!(
        log.contains("Verified TLS connection established to mx.partner.test[127.0.0.1]"),
        "{log}"
    );
    assert!(
        line.contains("relay=mx.partner.test[127.0.0.1]") && line.contains("status=sent"),
        "{line}"
    );
    let msgs = s.wait_for_messages(1, Duration::from_secs(60), || pf.log());
    let m = &msgs[0];
    // Both hops recorded TLS: swaks → sealgate, sealgate → Postfix.
    assert!(m.contains("by mx.test (sealgate) with ESMTPS"), "{m}");
    assert!(m.contains("by postfix.test (Postfix) with ESMTPS"), "{m}");
}

/// `sealgate_deliveries_total{tls=…}` says how each delivery to a real
/// receiver was protected: `verified` (the CA's chain and the name the
/// profile wants), `trusted` (the CA's chain, opportunistic, the host is
/// an address the certificate does not name), `untrusted` (a gateway that
/// does not know the CA), `none` (Postfix without STARTTLS).
#[test]
fn delivery_metrics_label_each_tls_level() {
    let dir = common::temp_dir("pf-recv-levels");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let s = sink(&dir);
    let pf = postfix(&dir, &ca, &s, true);
    let admin = common::free_port();
    let gw = gateway_with_admin(&dir, &ca, pf.port, admin);
    send(&gw, "user@mand.test");
    send(&gw, "user@opp.test");
    gw.wait_for_count("status=sent", 2, Duration::from_secs(60));
    let body = common::scrape(admin);
    let sent = |tls: &str| {
        common::value(
            &body,
            &format!("sealgate_deliveries_total{{outcome=\"sent\",tls=\"{tls}\"}}"),
        )
    };
    assert_eq!(
        (
            sent("verified"),
            sent("trusted"),
            sent("untrusted"),
            sent("none")
        ),
        (1, 1, 0, 0),
        "{body}"
    );

    // A gateway that knows no CA: the same Postfix is untrusted.
    let dir2 = common::temp_dir("pf-recv-levels-gw2");
    let port2 = common::free_port();
    let admin2 = common::free_port();
    let config = common::config(port2, 1, "")
        .replace(
            "accept_domains = [\"example.com\"]",
            "accept_domains = [\"opp.test\"]",
        )
        .replace("[127.0.0.1]:1", &format!("[127.0.0.1]:{}", pf.port))
        .replace(
            "generate_self_signed = true\n",
            "generate_self_signed = true\nsystem_roots = false\n",
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{admin2}\""),
        );
    std::fs::write(dir2.join("sealgate.toml"), config).unwrap();
    let gw2 = Gateway::start_in(dir2, port2);
    send(&gw2, "other@opp.test");
    let line = gw2.wait_for_line("to=<other@opp.test>", Duration::from_secs(60));
    assert!(line.contains("status=sent"), "{line}");
    assert!(
        gw2.log().contains("Untrusted TLS connection established"),
        "{}",
        gw2.log()
    );
    let body = common::scrape(admin2);
    assert_eq!(
        common::value(
            &body,
            "sealgate_deliveries_total{outcome=\"sent\",tls=\"untrusted\"}"
        ),
        1,
        "{body}"
    );
    drop(gw2);

    // Postfix without STARTTLS: in the clear.
    drop(gw);
    drop(pf);
    let dir3 = common::temp_dir("pf-recv-levels-clear");
    // (The first gateway's directory, with the CA, went with it.)
    let ca = Ca::new(&dir3.join("pki"), "ca");
    let pf = postfix(&dir3, &ca, &s, false);
    let admin3 = common::free_port();
    let gw = gateway_with_admin(&dir3, &ca, pf.port, admin3);
    send(&gw, "user@opp.test");
    let line = gw.wait_for_line("to=<user@opp.test>", Duration::from_secs(60));
    assert!(line.contains("status=sent"), "{line}");
    let body = common::scrape(admin3);
    assert_eq!(
        common::value(
            &body,
            "sealgate_deliveries_total{outcome=\"sent\",tls=\"none\"}"
        ),
        1,
        "{body}"
    );
}
