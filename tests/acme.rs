//! Certificates by ACME (RFC 8555) against Pebble, the Let's Encrypt test
//! server (which refuses 5 % of nonces), validating http-01 through
//! dnsmasq's answer for the name: issuance, the certificate served by SNI
//! beside the static one, renewal on the same key without a restart or a
//! dropped connection, a restart that uses the stored certificate, and the
//! ACME server gone: the old certificate stays, the failure is said.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pebble::{pebble, serial_and_key, served};
use common::Gateway;

const LIMIT: Duration = Duration::from_secs(90);
const NAME: &str = "mx1.example.org";

/// `sealgate ARGS -c DIR/sealgate.toml` (an ACME order may take its
/// retries: 330 s at most).
fn sealgate(dir: &Path, args: &[&str]) -> (bool, String, String) {
    common::sealgate_in(dir, args, Duration::from_secs(330))
}

#[test]
fn a_certificate_is_ordered_renewed_on_its_key_and_kept_when_the_server_is_away() {
    let dir = common::temp_dir("acme");
    let dns = common::dnsmasq::start(&[&format!("--host-record={NAME},127.0.0.1")]);
    let http_port = common::free_port();
    let mut acme = Some(pebble(
        &dir.join("pebble"),
        http_port,
        common::free_port(),
        dns.port,
    ));
    let server = acme.as_ref().unwrap();
    let port = common::free_port();
    let admin = common::free_port();
    let config = common::config(port, 1, "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{admin}\""),
    ) + &format!(
        r#"
[acme]
directory = "https://127.0.0.1:{}/dir"
ca_files = ["{}"]
contact = ["mailto:postmaster@example.org"]
domains = ["{NAME}"]
http_listen = "127.0.0.1:{http_port}"
"#,
        server.port,
        server.ca.display()
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);

    // Issued by http-01 and served for its name; the static certificate
    // for the rest.
    gw.wait_for_log(
        &format!("acme: installed the certificate for {NAME}"),
        LIMIT,
    );
    let (issuer, pem) = served(&gw, NAME);
    assert!(issuer.contains("Pebble Intermediate CA"), "{issuer}");
    let (first_serial, key) = serial_and_key(&dir, &pem);
    let (issuer, _) = served(&gw, "mx.test");
    assert!(issuer.contains("mx.test"), "{issuer}");
    let (ok, out, err) = sealgate(&dir, &["acme", "status", "--json"]);
    assert!(ok, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["certificate"]["names"][0], NAME, "{out}");
    assert_eq!(
        status["certificate"]["serial"],
        first_serial.as_str(),
        "{out}"
    );
    assert_eq!(status["certificate"]["spki_sha256"], key.as_str(), "{out}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("spool/acme/certificate.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Renewed now, on the same key, while a session stays open.
    let mut open = common::connect(gw.addr);
    assert!(open.reply().starts_with("220"));
    let (ok, out, err) = sealgate(&dir, &["acme", "renew"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("installed the certificate"), "{out}");
    let (_, pem) = served(&gw, NAME);
    let (second_serial, second_key) = serial_and_key(&dir, &pem);
    assert_ne!(second_serial, first_serial, "a new certificate");
    assert_eq!(
        second_key, key,
        "renewal keeps the key (DANE 3 1 1 stays valid)"
    );
    assert!(
        open.cmd("NOOP").starts_with("250"),
        "the open session goes on"
    );
    drop(open);

    // A restart serves the stored certificate and orders nothing.
    gw.terminate();
    let (status, log) = gw.wait_exit(LIMIT);
    assert!(status.success(), "{log}");
    let gw = Gateway::start_in(dir.clone(), port);
    gw.wait_for_log(
        &format!("acme: the certificate for {NAME} is in service"),
        LIMIT,
    );
    assert!(!gw.log().contains("acme: ordering"), "{}", gw.log());
    let (_, pem) = served(&gw, NAME);
    assert_eq!(serial_and_key(&dir, &pem).0, second_serial);

    // The ACME server is gone: the order fails and says so, the
    // certificate in service stays.
    drop(acme.take());
    let (ok, out, err) = sealgate(&dir, &["acme", "renew"]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("failed") && err.contains("certificate in service stays"),
        "{err}"
    );
    gw.wait_for_log(&format!("acme: the order for {NAME} failed"), LIMIT);
    let (_, pem) = served(&gw, NAME);
    assert_eq!(serial_and_key(&dir, &pem).0, second_serial);
    let (ok, out, err) = sealgate(&dir, &["acme", "status"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("last failure:") && out.contains("1 in a row"),
        "{out}"
    );
    gw.stop();
}

/// RFC 8737: the name proved by a validation certificate offered with
/// ALPN `acme-tls/1` on `tls_alpn_listen`; nothing listens for http-01.
#[test]
fn tls_alpn_01_proves_the_name() {
    let dir = common::temp_dir("acme-alpn");
    let dns = common::dnsmasq::start(&[&format!("--host-record={NAME},127.0.0.1")]);
    let tls_port = common::free_port();
    let server = pebble(&dir.join("pebble"), common::free_port(), tls_port, dns.port);
    let port = common::free_port();
    let config = common::config(port, 1, "")
        + &format!(
            r#"
[acme]
directory = "https://127.0.0.1:{}/dir"
ca_files = ["{}"]
domains = ["{NAME}"]
challenge = "tls-alpn-01"
tls_alpn_listen = "127.0.0.1:{tls_port}"
http_listen = "127.0.0.1:1"
"#,
            server.port,
            server.ca.display()
        );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    gw.wait_for_log(
        &format!("acme: installed the certificate for {NAME}"),
        LIMIT,
    );
    let (issuer, _) = served(&gw, NAME);
    assert!(issuer.contains("Pebble Intermediate CA"), "{issuer}");
    gw.stop();
}
