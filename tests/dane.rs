//! DANE (RFC 7672) against a DNSSEC-signed zone: nsd serves `test.` and
//! its children, unbound validates with `test.`'s key as the trust anchor
//! (`[dns] dnssec = "trust-ad"`), and a private Postfix is every MX host,
//! with a certificate from a test CA that names them all.
//!
//! - TLSA 3 1 1 of Postfix's key → delivered, logged DANE-verified, counted
//!   `tls="dane"`;
//! - TLSA 2 0 1 of the test CA (Postfix sends it in its chain) → delivered;
//! - a wrong digest → deferred 4.7.5, never delivered;
//! - a TLSA record changed after signing (bogus: unbound answers SERVFAIL)
//!   → deferred 4.7.5 without a connection;
//! - an unsigned zone with the same wrong TLSA → DANE does not apply,
//!   delivered with opportunistic TLS;
//! - `[outbound] dane = "report"`: the wrong digest and the bogus zone are
//!   delivered, logged `would refuse` and counted;
//! - `[dns] dnssec = "validate"` (hickory validating from `test.`'s keys,
//!   asking nsd directly): the same verdicts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::dnssec::{self, Zone};
use common::pki::Ca;
use common::postfix::Postfix;
use common::Gateway;

const DOMAINS: [&str; 7] = [
    "dane.test",
    "ta.test",
    "wrong.test",
    "bogus.test",
    "plain.test",
    "report.test",
    "shared.test",
];

/// A gateway delivering every domain by MX to Postfix's port; `dns` is
/// its `[dns]` table's body.
fn gateway(dir: &Path, ca: &Ca, dns: &str, pf_port: u16, dane: &str) -> Gateway {
    let port = common::free_port();
    let config = common::mx_relay_config(
        (port, common::free_port()),
        &DOMAINS,
        &ca.cert_path,
        pf_port,
        // Idle connections wait long enough for the cache checks below.
        &format!("connection_idle = \"60s\"\n\n[dns]\n{dns}\n\n[outbound]\ndane = \"{dane}\"\n"),
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    Gateway::start_in(dir.to_path_buf(), port)
}

fn send(gw: &Gateway, rcpt: &str) {
    common::send_mail(gw, "sender@client.test", &[rcpt], &format!("to {rcpt}"));
}

fn admin_port(gw: &Gateway) -> u16 {
    let text = std::fs::read_to_string(gw.dir.join("sealgate.toml")).unwrap();
    let at = text.find("listen = \"127.0.0.1:").unwrap() + "listen = \"127.0.0.1:".len();
    text[at..].split('"').next().unwrap().parse().unwrap()
}

#[test]
fn dane_decides_outbound_tls_from_signed_tlsa_records() {
    let dir = common::temp_dir("dane");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let names: Vec<String> = DOMAINS.iter().map(|d| format!("mx.{d}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (leaf, key) = ca.leaf(&dir.join("pki"), "postfix", &names);
    // DANE-TA needs the anchor in the chain the server sends.
    let chain = dir.join("pki/postfix-chain.pem");
    std::fs::write(
        &chain,
        std::fs::read_to_string(&leaf).unwrap() + &std::fs::read_to_string(&ca.cert_path).unwrap(),
    )
    .unwrap();
    let sink = common::receiver::start("127.0.0.1", &dir.join("final"), &[]);
    let pf = Postfix::tls_relay(&dir, &DOMAINS, sink.port, &key, &chain);
    let spki = dnssec::spki_sha256(&leaf);
    let ca_digest = dnssec::cert_sha256(&ca.cert_path);
    let wrong = "00".repeat(32);
    let p = pf.port;
    let dane_records = format!("@ MX 10 mx\nmx A 127.0.0.1\n_{p}._tcp.mx TLSA 3 1 1 {spki}\n");
    let ta_records = format!("@ MX 10 mx\nmx A 127.0.0.1\n_{p}._tcp.mx TLSA 2 0 1 {ca_digest}\n");
    let wrong_records = format!("@ MX 10 mx\nmx A 127.0.0.1\n_{p}._tcp.mx TLSA 3 1 1 {wrong}\n");
    let bogus_records = format!("@ MX 10 mx\nmx A 127.0.0.1\n_{p}._tcp.mx TLSA 3 1 1 {spki}\n");
    let zones = [
        Zone {
            name: "dane.test",
            records: &dane_records,
            signed: true,
            tamper: None,
        },
        Zone {
            name: "ta.test",
            records: &ta_records,
            signed: true,
            tamper: None,
        },
        Zone {
            name: "wrong.test",
            records: &wrong_records,
            signed: true,
            tamper: None,
        },
        Zone {
            name: "bogus.test",
            records: &bogus_records,
            signed: true,
            // The right digest, changed after signing: signatures fail.
            tamper: Some((&spki, &wrong)),
        },
        Zone {
            name: "plain.test",
            records: &wrong_records,
            signed: false,
            tamper: None,
        },
        Zone {
            name: "report.test",
            records: &wrong_records,
            signed: true,
            tamper: None,
        },
        // Unsigned, so not DANE (RFC 7672 §2.2.1), with wrong.test's MX
        // host: its connections may be cached for wrong.test's mail.
        Zone {
            name: "shared.test",
            records: "@ MX 10 mx.wrong.test.\n",
            signed: false,
            tamper: None,
        },
    ];
    let dns = dnssec::start(&dir, &zones);

    let gw_dir = dir.join("gw");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let trust_ad = format!(
        "servers = [\"127.0.0.1:{}\"]\ndnssec = \"trust-ad\"",
        dns.resolver
    );
    let gw = gateway(&gw_dir, &ca, &trust_ad, pf.port, "enforce");
    for d in [
        "dane.test",
        "ta.test",
        "wrong.test",
        "bogus.test",
        "plain.test",
    ] {
        send(&gw, &format!("user@{d}"));
    }
    let line = |rcpt: &str| gw.wait_for_line(&format!("to=<{rcpt}>"), Duration::from_secs(60));
    let log = || gw.log();

    let ok = line("user@dane.test");
    assert!(ok.contains("status=sent"), "{ok}\n{}", log());
    assert!(
        log().contains(&format!(
            "DANE-verified (DANE-EE) TLS connection established to mx.dane.test[127.0.0.1]:{p}"
        )),
        "{}",
        log()
    );
    let ta = line("user@ta.test");
    assert!(ta.contains("status=sent"), "{ta}\n{}", log());
    assert!(log().contains("DANE-verified (DANE-TA) TLS connection established to mx.ta.test"));

    common::assert_deferred_tls(&line("user@wrong.test"), "matches no TLSA record");
    common::assert_deferred_tls(&line("user@bogus.test"), "SERVFAIL");
    assert!(
        !log().contains("established to mx.bogus.test"),
        "no connection to a host whose TLSA lookup failed"
    );
    let plain = line("user@plain.test");
    assert!(plain.contains("status=sent"), "{plain}\n{}", log());
    assert!(log().contains("TLS connection established to mx.plain.test"));

    // The deliveries' lookups (before the tools below add their own).
    let metrics = common::scrape(admin_port(&gw));
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_deliveries_total{outcome=\"sent\",tls=\"dane\"}"
        ),
        2,
        "{metrics}"
    );
    assert_eq!(
        common::value(&metrics, "sealgate_dane_lookups_total{result=\"ok\"}"),
        3,
        "{metrics}"
    );
    assert_eq!(
        common::value(&metrics, "sealgate_dane_lookups_total{result=\"bogus\"}"),
        1
    );
    assert_eq!(
        common::value(&metrics, "sealgate_dane_lookups_total{result=\"insecure\"}"),
        1
    );
    // What applies and why, from the running gateway.
    let tool = |args: &[&str]| {
        let (_, out, err) = common::run_tool(
            std::process::Command::new(common::BIN)
                .args(args)
                .arg("-c")
                .arg(gw.dir.join("sealgate.toml")),
            None,
            Duration::from_secs(60),
        );
        format!("{out}{err}")
    };
    let shown = tool(&["policy", "show", "dane.test"]);
    assert!(
        shown.contains(&format!(
            "DANE: mx.dane.test: DNSSEC-signed TLSA at port {p}: 3 1 1 {spki}"
        )) && shown.contains(&format!(
            "delivery: mx.dane.test[127.0.0.1]:{p}: TLS mandatory, the certificate judged by DANE"
        )),
        "{shown}"
    );
    // The same decision as delivery's: a host whose TLSA lookup failed is
    // not used; an unsigned one gets opportunistic TLS.
    let shown = tool(&["policy", "show", "bogus.test"]);
    assert!(
        shown.contains(&format!(
            "delivery: mx.bogus.test[127.0.0.1]:{p}: not used: DANE: DNSSEC lookup of _"
        )),
        "{shown}"
    );
    let shown = tool(&["policy", "show", "plain.test"]);
    assert!(
        shown.contains(&format!(
            "delivery: mx.plain.test[127.0.0.1]:{p}: opportunistic TLS"
        )),
        "{shown}"
    );
    // explain --dns: the live verdict of every source, per recipient.
    let explained = tool(&[
        "explain",
        "--client-ip",
        "127.0.0.1",
        "--rcpt",
        "user@dane.test",
        "--dns",
    ]);
    assert!(
        explained.contains("delivery to <user@dane.test>: via MX; no profile: DANE enforced")
            && explained.contains(&format!(
                "now: DANE: mx.dane.test: DNSSEC-signed TLSA at port {p}: 3 1 1 {spki}"
            ))
            && explained.contains(&format!(
                "; delivery: mx.dane.test[127.0.0.1]:{p}: TLS mandatory, the certificate judged by DANE"
            )),
        "{explained}"
    );
    // The probe runs delivery's own decision: its verdict on each MX host
    // is what delivery did with the mail above (sent, or deferred).
    for (domain, expect) in [
        (
            "dane.test",
            "DANE:      the certificate matches the TLSA records",
        ),
        (
            "ta.test",
            "DANE:      the certificate matches the TLSA records",
        ),
        (
            "wrong.test",
            "DANE:      refused: the server certificate matches no TLSA record",
        ),
        ("bogus.test", "DANE:      lookup failed: DNSSEC lookup of _"),
        (
            "plain.test",
            "DANE:      not DANE (unsigned zone, or no TLSA records)",
        ),
    ] {
        let probed = tool(&["probe", "--mx", &format!("{domain}:{p}")]);
        assert!(probed.contains(expect), "{domain}: {probed}");
        let (_, json, err) = common::run_tool(
            std::process::Command::new(common::BIN)
                .args(["probe", "--mx", &format!("{domain}:{p}"), "--json", "-c"])
                .arg(gw.dir.join("sealgate.toml")),
            None,
            Duration::from_secs(60),
        );
        let report: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}{err}"));
        let delivered = line(&format!("user@{domain}")).contains("status=sent");
        assert_eq!(
            report["would_deliver"].as_bool(),
            Some(delivered),
            "{domain}: probe and delivery disagree: {report}"
        );
    }
    // The connection cache never carries a DANE destination over a
    // connection that did not meet its TLSA records: mail for shared.test
    // (not DANE) leaves a connection to mx.wrong.test idle, and
    // wrong.test's mail does not take it.
    send(&gw, "one@shared.test");
    let one = line("one@shared.test");
    assert!(one.contains("status=sent"), "{one}\n{}", log());
    send(&gw, "two@shared.test");
    let two = line("two@shared.test");
    assert!(two.contains("status=sent"), "{two}\n{}", log());
    assert!(
        log().contains(&format!(
            "delivery via mx.wrong.test[127.0.0.1]:{p}: reusing the connection"
        )),
        "{}",
        log()
    );
    let reused = gw.count("reusing the connection");
    send(&gw, "again@wrong.test");
    common::assert_deferred_tls(&line("again@wrong.test"), "matches no TLSA record");
    assert_eq!(
        gw.count("reusing the connection"),
        reused,
        "the DANE destination had a connection of its own: {}",
        log()
    );
    drop(gw);

    // Report-only: every check runs, nothing is refused.
    let report_dir = dir.join("gw-report");
    std::fs::create_dir_all(&report_dir).unwrap();
    let gw = gateway(&report_dir, &ca, &trust_ad, pf.port, "report");
    send(&gw, "user@report.test");
    send(&gw, "user@bogus.test");
    let report = gw.wait_for_line("to=<user@report.test>", Duration::from_secs(60));
    assert!(report.contains("status=sent"), "{report}\n{}", gw.log());
    let bogus = gw.wait_for_line("to=<user@bogus.test>", Duration::from_secs(60));
    assert!(bogus.contains("status=sent"), "{bogus}\n{}", gw.log());
    let log = gw.log();
    assert!(
        log.contains("delivery via mx.report.test[127.0.0.1]")
            && log.contains("would refuse: DANE: the server certificate matches no TLSA record"),
        "{log}"
    );
    assert!(
        log.contains("would refuse: DANE: DNSSEC lookup of _"),
        "{log}"
    );
    let metrics = common::scrape(admin_port(&gw));
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_policy_would_refuse_total{source=\"dane\",reason=\"certificate\"}"
        ),
        1,
        "{metrics}"
    );
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_policy_would_refuse_total{source=\"dane\",reason=\"lookup_failed\"}"
        ),
        1,
        "{metrics}"
    );
    drop(gw);

    // In-process validation, asking the authoritative server directly,
    // from the DNSKEY records of test.: the same verdicts.
    let validate_dir = dir.join("gw-validate");
    std::fs::create_dir_all(&validate_dir).unwrap();
    let validate = format!(
        "servers = [\"127.0.0.1:{}\"]\ndnssec = \"validate\"\ntrust_anchor = \"{}\"",
        dns.authoritative,
        dns.anchor.display()
    );
    let gw = gateway(&validate_dir, &ca, &validate, pf.port, "enforce");
    for d in ["dane.test", "wrong.test", "bogus.test", "plain.test"] {
        send(&gw, &format!("user@{d}"));
    }
    let line = |rcpt: &str| gw.wait_for_line(&format!("to=<{rcpt}>"), Duration::from_secs(60));
    let ok = line("user@dane.test");
    assert!(ok.contains("status=sent"), "{ok}\n{}", gw.log());
    assert!(gw
        .log()
        .contains("DANE-verified (DANE-EE) TLS connection established to mx.dane.test"));
    common::assert_deferred_tls(&line("user@wrong.test"), "matches no TLSA record");
    common::assert_deferred_tls(&line("user@bogus.test"), "DNSSEC lookup of _");
    let plain = line("user@plain.test");
    assert!(plain.contains("status=sent"), "{plain}\n{}", gw.log());

    // Postfix relayed everything delivered to the final hop.
    sink.wait_for_messages(7, Duration::from_secs(60), || pf.log());
}
