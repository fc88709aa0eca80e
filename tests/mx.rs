//! OUT-1 routing by MX against dnsmasq on loopback: MX hosts by
//! preference, the first refusing connections, delivery by the second; a
//! null MX (RFC 7505) bounces.

mod common;

use std::time::Duration;

use common::Gateway;

#[test]
fn mx_preference_fallback_and_null_mx() {
    let dir = common::temp_dir("mx");
    // The receiver is the second MX host (127.0.0.31); nothing listens on
    // the first (127.0.0.30).
    let recv = common::receiver::start("127.0.0.31", &dir.join("received"), &[]);
    let rport = recv.port;

    let dns = common::dnsmasq::start(&[
        "--mx-host=two.test,mxa.two.test,10",
        "--mx-host=two.test,mxb.two.test,20",
        "--host-record=mxa.two.test,127.0.0.30",
        "--host-record=mxb.two.test,127.0.0.31",
        "--mx-host=nullmx.test,.,0",
    ]);
    let port = common::free_port();
    let config = common::config(port, 1, "")
        .replace(
            "accept_domains = [\"example.com\"]",
            "accept_domains = [\"two.test\", \"nullmx.test\"]",
        )
        .replace(
            "via = \"[127.0.0.1]:1\"",
            &format!("via = \"mx\"\nport = {rport}"),
        )
        + &format!("\n[dns]\nservers = [\"127.0.0.1:{}\"]\n", dns.port);
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);

    let send = |rcpt: &str, from: &str| {
        let mut c = common::connect(gw.addr);
        c.reply();
        c.cmd("EHLO client.test");
        assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
        assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        assert!(c.cmd("Subject: mx\r\n\r\nvia mx\r\n.").starts_with("250"));
        c.cmd("QUIT");
    };
    send("user@two.test", "");
    let line = gw.wait_for_line("to=<user@two.test>", Duration::from_secs(30));
    let log = gw.log();
    assert!(
        line.contains("status=sent") && line.contains("relay=mxb.two.test[127.0.0.31]"),
        "{line}\n{log}"
    );
    assert!(
        log.contains("connect to mxa.two.test[127.0.0.30]")
            || log.contains("delivery via mxa.two.test[127.0.0.30]"),
        "{log}"
    );

    send("user@nullmx.test", "");
    let line = gw.wait_for_line("to=<user@nullmx.test>", Duration::from_secs(30));
    assert!(
        line.contains("status=bounced") && line.contains("dsn=5.1.10"),
        "{line}"
    );
    drop(recv);
}
