//! OPS-6: `sealgate explain` names the profile, why it won, what lost, and
//! the replies the gateway would give.

mod common;

use std::time::Duration;

const CONFIG: &str = r#"
[server]
hostname = "mx.example.com"
listen = ["127.0.0.1:2525"]
accept_domains = ["example.com"]
[tls]
certificates = [ { cert = "c.crt", key = "c.key" } ]
system_roots = false
[[profile]]
name = "partner-b"
hosts = ["192.0.2.10", "198.51.100.*", "mail.partner-b.example"]
sender_domains = ["partner-b.example"]
[profile.server]
mandatory_tls = true
require_verified_client_cert = true
[[profile]]
name = "lan"
hosts = ["192.0.2.0/24"]
relay = true
[[profile]]
name = "everyone"
hosts = ["*"]
[[route]]
domain = "partner-b.example"
via = "mx"
profile = "partner-b"
[[route]]
domain = "*"
via = "mx"
[dns]
dnssec = "trust-ad"
[outbound]
mta_sts = "report"
"#;

fn explain(args: &[&str]) -> serde_json::Value {
    let dir = common::temp_dir("explain");
    std::fs::write(dir.join("s.toml"), CONFIG).unwrap();
    let (status, out, err) = common::run_tool(
        std::process::Command::new(common::BIN)
            .args(["explain", "-c"])
            .arg(dir.join("s.toml"))
            .args(args)
            .arg("--json"),
        None,
        Duration::from_secs(20),
    );
    assert!(status.success(), "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn exact_ip_beats_prefix_and_default() {
    let e = explain(&[
        "--client-ip",
        "192.0.2.10",
        "--rcpt",
        "x@other.example",
        "--rcpt",
        "u@example.com",
    ]);
    assert_eq!(e["at_connect"]["profile"], "partner-b");
    assert_eq!(e["at_connect"]["matched_by"]["kind"], "ip");
    let lost: Vec<&str> = e["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["profile"].as_str().unwrap())
        .collect();
    assert_eq!(lost, ["lan", "everyone"]);
    assert_eq!(
        e["mail_in_clear"],
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(e["relay_allowed"], false);
    assert_eq!(e["recipients"][0][1], "554 5.7.1 Relay access denied");
    assert_eq!(
        e["recipients"][1][1],
        "accepted: a local domain (accept_domains)"
    );
    assert_eq!(e["asks_for_client_certificate"], true);
}

#[test]
fn prefix_relays_and_sender_domain_applies_at_mail() {
    let e = explain(&["--client-ip", "192.0.2.77", "--rcpt", "x@other.example"]);
    assert_eq!(e["at_connect"]["profile"], "lan");
    assert_eq!(e["relay_allowed"], true);
    assert_eq!(
        e["recipients"][0][1],
        "accepted: relayed (the client's profile has relay = true)"
    );

    let e = explain(&[
        "--client-ip",
        "203.0.113.5",
        "--from",
        "a@partner-b.example",
    ]);
    assert_eq!(e["at_connect"]["profile"], "everyone");
    assert_eq!(e["at_mail"]["profile"], "partner-b");
    assert_eq!(e["at_mail"]["matched_by"]["kind"], "sender");
    assert_eq!(
        e["mail_in_clear"],
        "530 5.7.0 Must issue a STARTTLS command first"
    );

    let e = explain(&[
        "--client-ip",
        "203.0.113.5",
        "--client-name",
        "MAIL.partner-b.example",
    ]);
    assert_eq!(e["at_connect"]["matched_by"]["kind"], "host");
    assert_eq!(e["name_needed"], false);
}

/// For each recipient, which sources decide the TLS of its delivery, in
/// delivery's order: a route profile alone, else DANE then MTA-STS.
#[test]
fn delivery_sources_per_recipient() {
    let e = explain(&[
        "--client-ip",
        "192.0.2.77",
        "--rcpt",
        "x@partner-b.example",
        "--rcpt",
        "y@other.example",
    ]);
    assert_eq!(
        e["delivery"][0][1],
        "via MX; profile \"partner-b\" decides TLS (DANE and MTA-STS are not consulted)"
    );
    let other = e["delivery"][1][1].as_str().unwrap();
    assert!(
        other.starts_with(
            "via MX; no profile: DANE enforced, then MTA-STS report-only, then opportunistic TLS"
        ),
        "{other}"
    );
}

/// `explain` runs the gateway's own session, so its verdicts are the
/// gateway's replies: a table of good and bad senders and recipients,
/// each asked of `explain` and of a running gateway with the same file.
#[test]
fn explain_answers_what_the_gateway_answers() {
    let gw = common::Gateway::start("explain-vs-gateway", 1, "");
    let cfg = gw.dir.join("sealgate.toml");
    let senders = [
        "a@b.test",
        "not an address",
        "",
        "a@b@c.test",
        "\"q x\"@b.test",
    ];
    let rcpts = [
        "u@example.com",
        "x@other.example",
        "x",
        "U@EXAMPLE.COM",
        "u@other.example.",
        "postmaster",
    ];
    for from in senders {
        let mut args = vec![
            "explain".to_string(),
            "-c".into(),
            cfg.display().to_string(),
            "--client-ip".into(),
            "127.0.0.1".into(),
            "--from".into(),
            from.to_string(),
            "--json".into(),
        ];
        for r in rcpts {
            args.push("--rcpt".into());
            args.push(r.to_string());
        }
        let (status, out, err) = common::run_tool(
            std::process::Command::new(common::BIN).args(&args),
            None,
            Duration::from_secs(20),
        );
        assert!(status.success(), "{err}");
        let e: serde_json::Value = serde_json::from_str(&out).unwrap();

        let mut c = common::connect(gw.addr);
        assert!(c.reply().starts_with("220"));
        c.cmd("EHLO client.test");
        let mail = c.cmd(&format!("MAIL FROM:<{from}>"));
        let mail = mail.trim_end();
        let said = e["mail_in_clear"].as_str().unwrap();
        if mail.starts_with('2') {
            assert_eq!(said, "accepted", "MAIL FROM:<{from}>: gateway {mail}");
        } else {
            assert_eq!(said, mail, "MAIL FROM:<{from}>");
        }
        for (i, r) in rcpts.iter().enumerate() {
            let said = e["recipients"][i][1].as_str().unwrap();
            if !mail.starts_with('2') {
                assert!(said.starts_with("not reached"), "{from} / {r}: {said}");
                continue;
            }
            let reply = c.cmd(&format!("RCPT TO:<{r}>"));
            let reply = reply.trim_end();
            if reply.starts_with('2') {
                assert!(
                    said.starts_with("accepted"),
                    "RCPT TO:<{r}>: gateway {reply}, explain {said}"
                );
            } else {
                assert_eq!(said, reply, "RCPT TO:<{r}> from <{from}>");
            }
        }
        c.cmd("QUIT");
    }
}
