//! IN-4 and IN-5 with real peers: connection profiles matched by source
//! address and by sender domain, mandatory TLS (swaks), client
//! certificates verified against the configured CA (openssl s_client),
//! relay permission by address.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pki::Ca;
use common::{run_tool, Gateway};

/// Profiles: 127.0.0.7 must use TLS; 127.0.0.5 may relay; senders from
/// partner.test need a verified certificate named mail.partner.test.
const PROFILES: &str = r#"
[tls]
certificates = [ { cert = "tls/server.crt", key = "tls/server.key" } ]
generate_self_signed = true
ca_files = ["pki/ca1.crt"]
system_roots = false

[[profile]]
name = "tls-only"
hosts = ["127.0.0.7"]
[profile.server]
mandatory_tls = true

[[profile]]
name = "internal"
hosts = ["127.0.0.5/32"]
relay = true

[[profile]]
name = "partner"
sender_domains = ["partner.test"]
[profile.server]
mandatory_tls = true
require_verified_client_cert = true
client_cert_name = "mail.partner.test"
"#;

fn start(name: &str) -> Gateway {
    let dir = common::temp_dir(name);
    let pki = dir.join("pki");
    let ca1 = Ca::new(&pki, "ca1");
    let ca2 = Ca::new(&pki, "ca2");
    ca1.leaf(&pki, "good", &["mail.partner.test"]);
    ca1.leaf(&pki, "wrong-name", &["other.test"]);
    ca2.leaf(&pki, "other-ca", &["mail.partner.test"]);
    let port = common::free_port();
    let base = common::config(port, 1, "").replace(
        "[tls]\ncertificates = [ { cert = \"tls/server.crt\", key = \"tls/server.key\" } ]\ngenerate_self_signed = true\n",
        "",
    );
    std::fs::write(dir.join("sealgate.toml"), format!("{base}{PROFILES}")).unwrap();
    Gateway::start_in(dir, port)
}

fn swaks(gw: &Gateway, source: &str, extra: &[&str]) -> (bool, String) {
    let (status, out, err) = run_tool(
        Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", &gw.port().to_string()])
            .args(["--local-interface", source, "--timeout", "20"])
            .args(["--from", "sender@client.test", "--to", "user@example.com"])
            .args(extra),
        None,
        Duration::from_secs(30),
    );
    (status.success(), format!("{out}{err}"))
}

#[test]
fn mandatory_tls_profile_by_source_address() {
    let gw = start("prof-tls");
    // From the profile's address, in the clear: refused at MAIL.
    let (ok, out) = swaks(&gw, "127.0.0.7", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("<** 530 5.7.0 Must issue a STARTTLS command first"),
        "{out}"
    );
    // The same with STARTTLS: accepted.
    let (ok, out) = swaks(
        &gw,
        "127.0.0.7",
        &["--tls", "--header", "Subject: tls-only"],
    );
    assert!(ok, "{out}");
    // Another source address matches no profile: clear text is fine.
    let (ok, out) = swaks(&gw, "127.0.0.8", &["--header", "Subject: no-profile"]);
    assert!(ok, "{out}");
    let spooled = gw.spooled();
    assert_eq!(spooled.len(), 2);
    gw.wait_for_log("connect from [127.0.0.7]", Duration::from_secs(10));
}

#[test]
fn relay_only_from_the_relay_profile() {
    let gw = start("prof-relay");
    let (ok, out) = swaks(&gw, "127.0.0.5", &["--to", "someone@elsewhere.test"]);
    assert!(ok, "internal host may relay: {out}");
    let (ok, out) = swaks(&gw, "127.0.0.6", &["--to", "someone@elsewhere.test"]);
    assert!(!ok);
    assert!(out.contains("<** 554 5.7.1 Relay access denied"), "{out}");
}

/// Drives `openssl s_client -starttls smtp` with a client certificate and
/// returns the reply to MAIL FROM and, when accepted, the queue reply.
fn s_client_mail(gw: &Gateway, cert: &str, from: &str, subject: &str) -> (String, Option<String>) {
    let pki = gw.dir.join("pki");
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-quiet",
            "-connect",
        ])
        .arg(gw.addr.to_string())
        .arg("-cert")
        .arg(pki.join(format!("{cert}.crt")))
        .arg("-key")
        .arg(pki.join(format!("{cert}.key")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reply = || loop {
        let line = lines.next().expect("s_client closed").unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            return line;
        }
    };
    writeln!(stdin, "EHLO openssl.test").unwrap();
    reply();
    writeln!(stdin, "MAIL FROM:<{from}>").unwrap();
    let mail = reply();
    let mut queued = None;
    if mail.starts_with("250") {
        writeln!(stdin, "RCPT TO:<user@example.com>").unwrap();
        reply();
        writeln!(stdin, "DATA").unwrap();
        reply();
        write!(stdin, "Subject: {subject}\n\nhi\n.\n").unwrap();
        queued = Some(reply());
    }
    writeln!(stdin, "QUIT").unwrap();
    drop(stdin);
    let _ = common::wait_bounded(&mut child, Duration::from_secs(20));
    (mail, queued)
}

#[test]
fn client_certificate_verified_against_configured_ca() {
    let gw = start("prof-cert");
    let (mail, queued) = s_client_mail(&gw, "good", "a@partner.test", "cert-ok");
    assert!(mail.starts_with("250"), "{mail}");
    assert!(queued.unwrap().starts_with("250 2.0.0 Ok: queued as"));
    let spooled = gw.spooled();
    let text = String::from_utf8_lossy(&spooled[0].message).into_owned();
    assert!(text.contains(" verify=OK)"), "{text}");

    let (mail, _) = s_client_mail(&gw, "other-ca", "a@partner.test", "cert-other-ca");
    assert!(
        mail.starts_with("554 5.7.1 Client certificate not trusted"),
        "{mail}"
    );
    let (mail, _) = s_client_mail(&gw, "wrong-name", "a@partner.test", "cert-wrong-name");
    assert_eq!(
        mail,
        "554 5.7.1 Client certificate does not match mail.partner.test"
    );
    // A sender outside the profile is not held to it.
    let (mail, queued) = s_client_mail(&gw, "other-ca", "a@elsewhere.test", "not-partner");
    assert!(mail.starts_with("250"), "{mail}");
    assert!(queued.is_some());
    let spooled = gw.spooled();
    let other = spooled
        .iter()
        .find(|m| String::from_utf8_lossy(&m.message).contains("Subject: not-partner"))
        .unwrap();
    assert!(String::from_utf8_lossy(&other.message).contains(" verify=FAIL)"));
    gw.wait_for_log(
        "Trusted TLS connection established from",
        Duration::from_secs(10),
    );
    gw.wait_for_log(
        "Untrusted TLS connection established from",
        Duration::from_secs(10),
    );
}
