//! MTA-STS (RFC 8461) against a policy server over HTTPS on loopback
//! (tests/peers/policy_server.py, 127.0.0.3:443 with a certificate from a
//! test CA), dnsmasq for the `_mta-sts` TXT records, MX hosts and the policy
//! host, and a private Postfix as every MX host:
//!
//! - enforce, MX matching, certificate naming it → delivered, counted
//!   `tls="mta-sts"`;
//! - enforce, MX outside the patterns → not used: deferred 4.7.5;
//! - enforce, certificate not naming the MX host → deferred 4.7.5;
//! - testing, the same certificate → delivered, logged `would refuse`;
//! - a policy past half its max_age is fetched again in the background;
//! - the policy server down and the TXT id changed, after a restart: the
//!   cached policy (kept in the spool directory) stays in force.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::Ca;
use common::postfix::Postfix;
use common::Gateway;

/// `sealgate policy ACTION DOMAIN` against the running gateway in `dir`.
fn policy_cmd(dir: &Path, action: &str, domain: &str) -> String {
    let (status, out, err) = common::run_tool(
        Command::new(common::BIN)
            .args(["policy", action, domain, "-c"])
            .arg(dir.join("sealgate.toml")),
        None,
        Duration::from_secs(60),
    );
    assert!(status.success(), "{out}{err}");
    out
}

const DOMAINS: [&str; 5] = [
    "sts.test",
    "outside.test",
    "badcert.test",
    "testing.test",
    "short.test",
];

fn dns(ids: &[(&str, &str)]) -> common::dnsmasq::Dnsmasq {
    let mut records = Vec::new();
    for d in DOMAINS {
        records.push(format!("--mx-host={d},mx.{d},10"));
        records.push(format!("--host-record=mx.{d},127.0.0.1"));
        records.push(format!("--host-record=mta-sts.{d},127.0.0.3"));
    }
    for (d, id) in ids {
        records.push(format!("--txt-record=_mta-sts.{d},v=STSv1; id={id};"));
    }
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    common::dnsmasq::start(&records)
}

fn gateway(dir: &Path, ports: (u16, u16), ca: &Ca, dns_port: u16, pf_port: u16) -> Gateway {
    let config = common::mx_relay_config(
        ports,
        &DOMAINS,
        &ca.cert_path,
        pf_port,
        &format!(
            "\n[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n\n[outbound]\nmta_sts_refresh = \"1s\"\n"
        ),
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    Gateway::start_in(dir.to_path_buf(), ports.0)
}

fn send(gw: &Gateway, rcpt: &str) {
    common::send_mail(gw, "sender@client.test", &[rcpt], &format!("to {rcpt}"));
}

#[test]
fn mta_sts_policies_decide_outbound_tls() {
    let dir = common::temp_dir("mta-sts");
    let ca = Ca::new(&dir.join("pki"), "ca");
    // Postfix's certificate names every MX host but mx.badcert.test and
    // mx.testing.test.
    let (leaf, key) = ca.leaf(
        &dir.join("pki"),
        "postfix",
        &["mx.sts.test", "mx.outside.test"],
    );
    let sink = common::receiver::start("127.0.0.1", &dir.join("final"), &[]);
    let pf = Postfix::tls_relay(&dir, &DOMAINS, sink.port, &key, &leaf);
    let policies = dir.join("policies");
    let policy = |domain: &str, mode: &str, mx: &str| common::sts::policy(&dir, domain, mode, mx);
    policy("sts.test", "enforce", "mx.sts.test");
    policy("outside.test", "enforce", "mx.elsewhere.test");
    policy("badcert.test", "enforce", "*.badcert.test");
    policy("testing.test", "testing", "mx.testing.test");
    // A policy past half its max_age at once: refreshed in the background.
    std::fs::write(
        policies.join("mta-sts.short.test.txt"),
        "version: STSv1\nmode: none\nmax_age: 2\n",
    )
    .unwrap();
    let server = common::sts::start("127.0.0.3", &dir, &ca, &DOMAINS);
    let ids = DOMAINS.map(|d| (d, "1"));
    let dns1 = dns(&ids);

    let gw_dir = dir.join("gw");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let ports = (common::free_port(), common::free_port());
    let gw = gateway(&gw_dir, ports, &ca, dns1.port, pf.port);
    for d in DOMAINS {
        send(&gw, &format!("user@{d}"));
    }
    // Fetched on use, then again by the background refresh.
    gw.wait_for_log(
        "MTA-STS policy of short.test refreshed (id 1)",
        Duration::from_secs(30),
    );
    let line = |gw: &Gateway, rcpt: &str| {
        gw.wait_for_line(&format!("to=<{rcpt}>"), Duration::from_secs(60))
    };
    let ok = line(&gw, "user@sts.test");
    assert!(ok.contains("status=sent"), "{ok}\n{}", gw.log());
    assert!(gw
        .log()
        .contains("MTA-STS policy of sts.test (id 1): mode Enforce"));
    common::assert_deferred_tls(
        &line(&gw, "user@outside.test"),
        "no MX host of outside.test matches its MTA-STS policy",
    );
    common::assert_deferred_tls(
        &line(&gw, "user@badcert.test"),
        "MTA-STS: the certificate of mx.badcert.test is Trusted",
    );
    let testing = line(&gw, "user@testing.test");
    assert!(testing.contains("status=sent"), "{testing}\n{}", gw.log());
    assert!(
        gw.log()
            .contains("would refuse: MTA-STS: the certificate is Trusted"),
        "{}",
        gw.log()
    );
    let metrics = common::scrape(ports.1);
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_deliveries_total{outcome=\"sent\",tls=\"mta-sts\"}"
        ),
        1,
        "{metrics}"
    );
    // Five on use, then the background refreshes of short.test.
    let fetched = common::value(&metrics, "sealgate_mta_sts_fetches_total{result=\"ok\"}");
    assert!(fetched >= 6, "{metrics}");
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_policy_would_refuse_total{source=\"mta-sts\",reason=\"certificate\"}"
        ),
        1
    );
    let cache = std::fs::read_to_string(gw_dir.join("spool/mta-sts.json")).unwrap();
    assert!(cache.contains("\"sts.test\""), "{cache}");
    // What applies and why, from the running gateway.
    let shown = policy_cmd(&gw_dir, "show", "sts.test");
    assert!(
        shown.contains("sts.test: route via MX; no profile of its own")
            && shown.contains("MTA-STS: policy id 1 fetched")
            && shown.contains("mode enforce, mx mx.sts.test, max_age 86400")
            && shown.contains("DANE: not consulted"),
        "{shown}"
    );
    // The probe runs delivery's own decision: its verdict is what
    // delivery did with the mail above.
    for (domain, expect) in [
        (
            "sts.test",
            "MTA-STS:   enforce: the certificate is valid and names the host",
        ),
        (
            "testing.test",
            "MTA-STS:   testing: would refuse: the certificate is Trusted",
        ),
        (
            "badcert.test",
            "MTA-STS:   enforce: refused: the certificate is Trusted",
        ),
    ] {
        let (_, probed, err) = common::run_tool(
            Command::new(common::BIN)
                .args(["probe", "--mx", &format!("{domain}:{}", pf.port), "-c"])
                .arg(gw_dir.join("sealgate.toml")),
            None,
            Duration::from_secs(60),
        );
        assert!(probed.contains(expect), "{domain}: {probed}{err}");
        let (_, json, err) = common::run_tool(
            Command::new(common::BIN)
                .args([
                    "probe",
                    "--json",
                    "--mx",
                    &format!("{domain}:{}", pf.port),
                    "-c",
                ])
                .arg(gw_dir.join("sealgate.toml")),
            None,
            Duration::from_secs(60),
        );
        let report: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}{err}"));
        let delivered = line(&gw, &format!("user@{domain}")).contains("status=sent");
        assert_eq!(
            report["would_deliver"].as_bool(),
            Some(delivered),
            "{domain}: probe and delivery disagree: {report}"
        );
    }
    let forgot = policy_cmd(&gw_dir, "forget", "testing.test");
    assert!(
        forgot.contains("testing.test: cached MTA-STS policy forgotten"),
        "{forgot}"
    );
    let refreshed = policy_cmd(&gw_dir, "refresh", "testing.test");
    assert!(
        refreshed.contains("MTA-STS: policy id 1 fetched 0 s ago"),
        "{refreshed}"
    );
    // Killed, not stopped: the cache was written when it changed.
    let gw_dir = gw.kill();

    // The policy server goes, the TXT id changes, the gateway restarts:
    // the cached policy stays in force (RFC 8461 §5.1).
    drop(server);
    drop(dns1);
    let dns2 = dns(&[("sts.test", "2")]);
    let gw = gateway(&gw_dir, ports, &ca, dns2.port, pf.port);
    send(&gw, "again@sts.test");
    let again = line(&gw, "again@sts.test");
    assert!(again.contains("status=sent"), "{again}\n{}", gw.log());
    let log = gw.log();
    assert!(
        log.contains("MTA-STS policy of sts.test: fetch failed")
            && log.contains("the cached policy stays in force"),
        "{log}"
    );
    let metrics = common::scrape(ports.1);
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_deliveries_total{outcome=\"sent\",tls=\"mta-sts\"}"
        ),
        1,
        "{metrics}"
    );
    sink.wait_for_messages(3, Duration::from_secs(60), || pf.log());
}
