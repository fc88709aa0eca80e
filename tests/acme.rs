//! Certificates by ACME (RFC 8555) against Pebble, the Let's Encrypt test
//! server (which refuses 5 % of nonces), validating http-01 through
//! dnsmasq's answer for the name: issuance, the certificate served by SNI
//! beside the static one, renewal on the same key without a restart or a
//! dropped connection, a restart that uses the stored certificate, and the
//! ACME server gone: the old certificate stays, the failure is said.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{run_tool, Gateway};

const LIMIT: Duration = Duration::from_secs(90);
const NAME: &str = "mx1.example.org";

/// Pebble on loopback, stopped on drop.
struct Pebble {
    child: Child,
    port: u16,
    /// The CA of Pebble's own HTTPS certificate (`[acme] ca_files`).
    ca: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let (status, out, err) = run_tool(
        Command::new("openssl").current_dir(dir).args(args),
        None,
        LIMIT,
    );
    assert!(status.success(), "openssl {args:?}: {out}{err}");
}

/// Starts Pebble: its HTTPS certificate from a CA made here, http-01
/// validated on `http_port`, tls-alpn-01 on `tls_port`, names resolved by
/// the DNS server on `dns_port`.
fn pebble(dir: &Path, http_port: u16, tls_port: u16, dns_port: u16) -> Pebble {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Pebble test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    let port = common::free_port();
    std::fs::write(
        dir.join("pebble.json"),
        format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{port}", "certificate": "{cert}", "privateKey": "{key}", "httpPort": {http_port}, "tlsPort": {tls_port}, "ocspResponderURL": ""}}}}"#,
            cert = dir.join("cert.pem").display(),
            key = dir.join("key.pem").display(),
        ),
    )
    .unwrap();
    let mut child = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .arg("-dnsserver")
        .arg(format!("127.0.0.1:{dns_port}"))
        // No random pauses before validating.
        .env("PEBBLE_VA_NOSLEEP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble (tests/run.sh installs it)");
    // Its log is read to the end (a full pipe would stop it); the line
    // that says it listens is passed on.
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ACME directory available") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(LIMIT).expect("pebble started");
    Pebble {
        child,
        port,
        ca: dir.join("ca.pem"),
    }
}

/// The leaf certificate the gateway presents for `sni` after STARTTLS,
/// as `openssl s_client` sees it: (issuer line, PEM).
fn served(gw: &Gateway, sni: &str) -> (String, String) {
    let (status, out, err) = run_tool(
        Command::new("openssl")
            .args(["s_client", "-starttls", "smtp", "-crlf", "-servername", sni])
            .arg("-connect")
            .arg(gw.addr.to_string()),
        Some(b"QUIT\n"),
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    let issuer = out
        .lines()
        .find(|l| l.starts_with("issuer="))
        .unwrap_or_else(|| panic!("no issuer: {out}"))
        .to_string();
    let begin = out
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = out.find("-----END CERTIFICATE-----").expect("its end") + 25;
    (issuer, out[begin..end].to_string() + "\n")
}

/// `openssl x509` on a PEM certificate: (serial, SPKI SHA-256).
fn serial_and_key(dir: &Path, pem: &str) -> (String, String) {
    let file = dir.join("served.pem");
    std::fs::write(&file, pem).unwrap();
    let (status, out, err) = run_tool(
        Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(&file),
        None,
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    let serial = out.trim().trim_start_matches("serial=").to_uppercase();
    (serial, common::dnssec::spki_sha256(&file))
}

fn sealgate(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let (status, out, err) = run_tool(
        Command::new(common::BIN)
            .args(args)
            .arg("-c")
            .arg(dir.join("sealgate.toml")),
        None,
        Duration::from_secs(330),
    );
    (status.success(), out, err)
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
