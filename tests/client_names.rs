//! IN-4 host-name matchers against a real DNS server: dnsmasq on a
//! loopback port serves PTR and A records for 127.0.0.x; a name counts only
//! when it is forward-confirmed.

mod common;

use std::time::Duration;

use common::Gateway;

#[test]
fn host_name_profiles_use_forward_confirmed_names() {
    let dns = common::dnsmasq::start(&[
        // Confirmed: PTR and A agree.
        "--host-record=mail.partner.test,127.0.0.9",
        "--host-record=relay.partner.test,127.0.0.13",
        // Not confirmed: the PTR name resolves elsewhere.
        "--ptr-record=10.0.0.127.in-addr.arpa,liar.partner.test",
        "--host-record=liar.partner.test,127.0.0.99",
    ]);
    let dns_port = dns.port;
    let dir = common::temp_dir("names");
    let port = common::free_port();
    let config = format!(
        "{}\n[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n\n[[profile]]\nname = \"partner-host\"\nhosts = [\"mail.partner.test\"]\n[profile.server]\nmandatory_tls = true\n\n[[profile]]\nname = \"partner-wild\"\nhosts = [\"*.partner.test\"]\nrelay = true\n",
        common::config(port, 1, "")
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir, port);

    // 127.0.0.9 is mail.partner.test, confirmed: the exact host profile.
    let mut c = common::connect_from("127.0.0.9", gw.addr);
    assert_eq!(
        c.cmd("MAIL FROM:<a@partner.test>"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    // 127.0.0.13 is relay.partner.test: the wildcard profile, which relays.
    let mut c = common::connect_from("127.0.0.13", gw.addr);
    assert_eq!(
        c.cmd("MAIL FROM:<a@partner.test>"),
        "250 2.1.0 Sender ok\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@elsewhere.test>"),
        "250 2.1.5 Recipient ok\r\n"
    );
    // 127.0.0.10 claims liar.partner.test by PTR, which resolves elsewhere:
    // no name, no host profile, no relay.
    let mut c = common::connect_from("127.0.0.10", gw.addr);
    assert_eq!(
        c.cmd("MAIL FROM:<a@partner.test>"),
        "250 2.1.0 Sender ok\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@elsewhere.test>"),
        "554 5.7.1 Relay access denied\r\n"
    );
    // 127.0.0.12 has no PTR at all.
    let mut c = common::connect_from("127.0.0.12", gw.addr);
    assert_eq!(
        c.cmd("MAIL FROM:<a@partner.test>"),
        "250 2.1.0 Sender ok\r\n"
    );

    // The log is written a few milliseconds behind: wait for the lines.
    gw.wait_for_log("is mail.partner.test", Duration::from_secs(10));
    gw.wait_for_log("is relay.partner.test", Duration::from_secs(10));
    let log = gw.log();
    assert!(!log.contains("is liar.partner.test"), "{log}");
}
