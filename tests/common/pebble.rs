//! Pebble, the Let's Encrypt test server, on loopback; and what a client
//! sees of the certificate a gateway serves.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{run_tool, Gateway};

const LIMIT: Duration = Duration::from_secs(90);

/// Pebble on loopback, stopped on drop.
pub struct Pebble {
    child: Child,
    pub port: u16,
    /// The CA of Pebble's own HTTPS certificate (`[acme] ca_files`).
    pub ca: PathBuf,
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
pub fn pebble(dir: &Path, http_port: u16, tls_port: u16, dns_port: u16) -> Pebble {
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
    let port = super::free_port();
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
pub fn served(gw: &Gateway, sni: &str) -> (String, String) {
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
pub fn serial_and_key(dir: &Path, pem: &str) -> (String, String) {
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
    (serial, super::dnssec::spki_sha256(&file))
}
