//! A real MTA as the sender: Postfix, with `smtp_tls_security_level =
//! encrypt` and its own client certificate, relays into sealgate under a
//! profile that demands TLS and a verified client certificate.

mod common;

use std::time::Duration;

use common::pki::Ca;
use common::postfix::Postfix;
use common::Gateway;

#[test]
fn postfix_relays_in_with_a_verified_client_certificate() {
    let dir = common::temp_dir("pf-sender");
    let pki = dir.join("pki");
    let ca = Ca::new(&pki, "ca");
    let (client_crt, client_key) = ca.leaf(&pki, "postfix-client", &["mail.partner.test"]);
    let (server_crt, server_key) = ca.leaf(&pki, "gateway", &["mx.test"]);

    let port = common::free_port();
    let config = format!(
        r#"[server]
hostname = "mx.test"
listen = ["127.0.0.1:{port}"]
shards = 1
spool_dir = "spool"
accept_domains = ["example.com"]

[tls]
certificates = [ {{ cert = "{}", key = "{}" }} ]
ca_files = ["{}"]
system_roots = false

[admin]
listen = "127.0.0.1:0"

[[route]]
domain = "*"
via = "[127.0.0.1]:1"

[[profile]]
name = "postfix-partner"
hosts = ["127.0.0.20"]
[profile.server]
mandatory_tls = true
require_verified_client_cert = true
client_cert_name = "mail.partner.test"
"#,
        server_crt.display(),
        server_key.display(),
        ca.cert_path.display()
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);

    let pf = Postfix::start(
        &dir,
        &format!(
            "relayhost = [127.0.0.1]:{port}\nsmtp_bind_address = 127.0.0.20\n\
             smtp_tls_security_level = encrypt\nsmtp_tls_chain_files = {}, {}\nsmtp_tls_loglevel = 1\n",
            client_key.display(),
            client_crt.display()
        ),
    );
    // Hand Postfix a message; it relays it to sealgate.
    let mut c = common::connect(std::net::SocketAddr::from(([127, 0, 0, 1], pf.port)));
    c.reply();
    c.cmd("EHLO submitter.test");
    assert!(c.cmd("MAIL FROM:<someone@partner.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.com>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c
        .cmd("Subject: via postfix\r\n\r\nrelayed with a client certificate\r\n.")
        .starts_with("250"));
    c.cmd("QUIT");

    gw.wait_for_log("(queue active)", Duration::from_secs(60));
    let spooled = gw.spooled();
    assert_eq!(spooled.len(), 1, "{}", pf.log());
    let text = String::from_utf8_lossy(&spooled[0].message).into_owned();
    let received = text.split("\r\n\r\n").next().unwrap();
    assert!(received.contains("[127.0.0.20]"), "{received}");
    assert!(received.contains(" verify=OK)"), "{received}");
    assert!(received.contains("with ESMTPS"), "{received}");
    assert!(
        gw.log()
            .contains("Trusted TLS connection established from [127.0.0.20]"),
        "{}",
        gw.log()
    );
    // Postfix's own Received header is there too: a real MTA hop.
    assert!(text.contains("by postfix.test (Postfix)"), "{text}");
}
