//! TLS audit (issue 7) with a scanner nobody here wrote: sslscan (Debian
//! package) against the STARTTLS listener of a gateway on its default TLS
//! settings. No protocol below TLS 1.2, only forward-secret AEAD suites of
//! at least 128 bits, no insecure renegotiation, no Heartbleed, and the
//! certificate generated on first start named after the host and valid
//! for a year. The full testssl report: `tests/tls-audit.sh`, summarised
//! in docs/security.md.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Gateway;

#[test]
fn sslscan_finds_only_modern_protocols_and_strong_suites() {
    let gw = Gateway::start("tls-audit", 1, "");
    let mut cmd = Command::new("sslscan");
    cmd.args(["--starttls-smtp", "--no-colour"])
        .arg(format!("127.0.0.1:{}", gw.port()));
    let (status, out, err) = common::run_tool(&mut cmd, None, Duration::from_secs(120));
    assert!(status.success(), "sslscan failed: {err}\n{out}");
    println!("{out}");
    let line = |prefix: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
            .to_string()
    };
    for old in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        assert!(
            line(&format!("{old} ")).ends_with("disabled"),
            "{old}:\n{out}"
        );
    }
    for current in ["TLSv1.2", "TLSv1.3"] {
        assert!(
            line(&format!("{current} ")).ends_with("enabled"),
            "{current}:\n{out}"
        );
    }
    // Renegotiation: rustls refuses it outright.
    let reneg = line("Session renegotiation");
    assert!(
        reneg.contains("not supported") || reneg.contains("secure"),
        "{reneg}"
    );
    assert!(!reneg.contains("insecure"), "{reneg}");
    for l in out.lines().filter(|l| l.contains("heartbleed")) {
        assert!(l.contains("not vulnerable"), "{l}");
    }
    // Every accepted suite: TLS 1.2+, at least 128 bits, AEAD, and (for
    // TLS 1.2) ECDHE key exchange.
    let suites: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("Preferred") || l.starts_with("Accepted"))
        .collect();
    assert!(suites.len() >= 4, "{out}");
    for s in &suites {
        let fields: Vec<&str> = s.split_whitespace().collect();
        let (version, bits, name) = (fields[1], fields[2], fields[4]);
        assert!(matches!(version, "TLSv1.2" | "TLSv1.3"), "{s}");
        assert!(bits.parse::<u32>().unwrap() >= 128, "{s}");
        assert!(
            name.contains("GCM") || name.contains("CHACHA20"),
            "not AEAD: {s}"
        );
        if version == "TLSv1.2" {
            assert!(name.starts_with("ECDHE-"), "no forward secrecy: {s}");
        }
    }
    // The generated certificate.
    assert!(line("Subject:").ends_with("mx.test"), "{out}");
    let not_after = line("Not valid after:");
    let year: i32 = not_after
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|y| y.parse().ok())
        .unwrap_or_else(|| panic!("{not_after}"));
    let this_year = 1970
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 31_556_952) as i32;
    assert!(year <= this_year + 1, "valid until {year}: {not_after}");
}
