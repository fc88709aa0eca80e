//! CERT-3: the seed's openssl recipes done with `sealgate cert`, with
//! openssl used only as the independent checker.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{run_tool, Client, Gateway};

fn sealgate(args: &[&str], dir: &Path) -> (bool, String) {
    let (status, out, err) = run_tool(
        Command::new(common::BIN).args(args).current_dir(dir),
        None,
        Duration::from_secs(60),
    );
    (status.success(), format!("{out}{err}"))
}

fn openssl(args: &[&str], dir: &Path) -> String {
    let (status, out, err) = run_tool(
        Command::new("openssl").args(args).current_dir(dir),
        None,
        Duration::from_secs(30),
    );
    assert!(status.success(), "openssl {args:?}: {out}{err}");
    out
}

/// `sealgate cert ca` (a test CA in `ca.crt`/`ca.key`), then `cert sign`
/// of `csr` for `days`, to `out`.
fn sign_with_new_ca(dir: &Path, csr: &str, days: &str, out: &str) {
    for args in [
        &[
            "cert",
            "ca",
            "--cn",
            "Test",
            "--out-cert",
            "ca.crt",
            "--out-key",
            "ca.key",
        ][..],
        &[
            "cert",
            "sign",
            "--ca-cert",
            "ca.crt",
            "--ca-key",
            "ca.key",
            "--csr",
            csr,
            "--days",
            days,
            "--out",
            out,
        ],
    ] {
        let (ok, text) = sealgate(args, dir);
        assert!(ok, "{args:?}: {text}");
    }
}

#[test]
fn key_csr_ca_sign_then_the_gateway_serves_it() {
    let dir = common::temp_dir("cert-roundtrip");
    for args in [
        &["cert", "key", "--type", "ecdsa-p256", "--out", "mx.key"][..],
        &[
            "cert",
            "csr",
            "--key",
            "mx.key",
            "--cn",
            "mx.test",
            "--san",
            "mx.test",
            "--san",
            "smtp.test",
            "--org",
            "Example Org",
            "--out",
            "mx.csr",
        ],
        &[
            "cert",
            "ca",
            "--cn",
            "Lab",
            "--days",
            "30",
            "--out-cert",
            "ca.crt",
            "--out-key",
            "ca.key",
        ],
    ] {
        let (ok, out) = sealgate(args, &dir);
        assert!(ok, "{args:?}: {out}");
    }
    let sign = |days: &str, out: &str| {
        sealgate(
            &[
                "cert",
                "sign",
                "--ca-cert",
                "ca.crt",
                "--ca-key",
                "ca.key",
                "--csr",
                "mx.csr",
                "--days",
                days,
                "--out",
                out,
            ],
            &dir,
        )
    };
    // The 90-day certificate outlives its 30-day CA: said, not refused.
    let (ok, out) = sign("90", "mx.crt");
    assert!(ok && out.contains("outlives its CA"), "{out}");
    let (ok, out) = sign("20", "mx3.crt");
    assert!(ok && !out.contains("outlives"), "{out}");
    // A CA is inspected as a CA, without the fields it does not have.
    let (ok, out) = sealgate(&["cert", "inspect", "ca.crt"], &dir);
    assert!(ok, "{out}");
    assert!(out.contains("certificate 1 of 1 (CA)"), "{out}");
    assert!(
        !out.contains("(leaf)") && !out.contains("extended: \n"),
        "{out}"
    );
    assert!(!out.lines().any(|l| l.trim_end().ends_with(':')), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.join("mx.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // openssl agrees the chain verifies, and on what the certificate says.
    assert!(openssl(&["verify", "-CAfile", "ca.crt", "mx.crt"], &dir).contains("mx.crt: OK"));
    let text = openssl(&["x509", "-in", "mx.crt", "-noout", "-text"], &dir);
    let (ok, out) = sealgate(
        &["cert", "inspect", "mx.crt", "--key", "mx.key", "--json"],
        &dir,
    );
    assert!(ok, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let leaf = &j["certificates"][0];
    assert_eq!(leaf["subject"], "O=Example Org, CN=mx.test");
    assert!(
        text.contains("Subject: O = Example Org, CN = mx.test"),
        "{text}"
    );
    assert_eq!(
        leaf["sans"],
        serde_json::json!(["DNS:mx.test", "DNS:smtp.test"])
    );
    assert!(text.contains("DNS:mx.test, DNS:smtp.test"), "{text}");
    assert_eq!(
        leaf["extended_key_usage"],
        serde_json::json!(["serverAuth", "clientAuth"])
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert_eq!(leaf["key_usage"], serde_json::json!(["digitalSignature"]));
    assert!(text.contains("Digital Signature"), "{text}");
    let not_after = leaf["not_after"]
        .as_str()
        .unwrap()
        .replace(" +00:00", " GMT");
    assert!(
        text.contains(&format!("Not After : {not_after}")),
        "{not_after} vs {text}"
    );
    assert!(leaf["issuer"].as_str().unwrap().contains("Lab (test CA)"));
    assert_eq!(j["key_matches"], true);
    let fp = openssl(
        &["x509", "-in", "mx.crt", "-noout", "-fingerprint", "-sha256"],
        &dir,
    );
    assert!(fp.contains(leaf["sha256"].as_str().unwrap()), "{fp}");

    // The gateway runs with the result, and a client trusting the CA
    // verifies it by name.
    let port = common::free_port();
    let config = common::config(port, 1, "").replace(
        "certificates = [ { cert = \"tls/server.crt\", key = \"tls/server.key\" } ]\ngenerate_self_signed = true",
        "certificates = [ { cert = \"mx.crt\", key = \"mx.key\" } ]\nsystem_roots = false",
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let mut c = common::connect(gw.addr);
    c.reply();
    c.cmd("EHLO c.test");
    assert!(c.cmd("STARTTLS").starts_with("220"));
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(dir.join("ca.crt")).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), "smtp.test".try_into().unwrap()).unwrap();
    let mut t = Client::new(rustls::StreamOwned::new(conn, c.stream));
    assert!(
        t.cmd("EHLO c.test").starts_with("250-mx.test"),
        "verified by the CA, name from the SANs"
    );
}

#[test]
fn weak_keys_refused_and_csr_warnings() {
    let dir = common::temp_dir("cert-weak");
    let (ok, out) = sealgate(
        &["cert", "key", "--type", "rsa-1024", "--out", "w.key"],
        &dir,
    );
    assert!(!ok && out.contains("rsa-1024 is weak"), "{out}");
    let (ok, out) = sealgate(
        &["cert", "key", "--type", "rsa-2048", "--out", "r.key"],
        &dir,
    );
    assert!(ok, "{out}");
    let (ok, out) = sealgate(
        &[
            "cert", "csr", "--key", "r.key", "--cn", "a.test", "--san", "b.test", "--out", "r.csr",
        ],
        &dir,
    );
    assert!(
        ok && out.contains("warning: the CN \"a.test\" is not among the SANs"),
        "{out}"
    );
    // openssl checks the request's self-signature (exit status).
    openssl(&["req", "-in", "r.csr", "-noout", "-verify"], &dir);

    // A certificate about to expire: `check` warns, `inspect` too.
    assert!(
        sealgate(
            &[
                "cert", "csr", "--key", "r.key", "--cn", "b.test", "--san", "b.test", "--out",
                "s.csr"
            ],
            &dir
        )
        .0
    );
    sign_with_new_ca(&dir, "s.csr", "10", "s.crt");
    std::fs::write(
        dir.join("g.toml"),
        "[server]\nlisten = [\"127.0.0.1:2525\"]\n[tls]\nsystem_roots = false\ncertificates = [ { cert = \"s.crt\", key = \"r.key\" } ]\n",
    )
    .unwrap();
    let (ok, out) = sealgate(&["check", "-c", "g.toml"], &dir);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: ") && out.contains("s.crt: certificate CN=b.test expires in"),
        "{out}"
    );
    let (_, out) = sealgate(&["cert", "inspect", "s.crt"], &dir);
    assert!(out.contains("warning: the certificate expires in"), "{out}");
}

#[test]
fn pkcs12_from_openssl_modern_and_legacy() {
    let dir = common::temp_dir("cert-p12");
    for args in [
        &["cert", "key", "--out", "k.pem"][..],
        &[
            "cert", "csr", "--key", "k.pem", "--cn", "mx.test", "--out", "r.csr",
        ],
    ] {
        assert!(sealgate(args, &dir).0);
    }
    sign_with_new_ca(&dir, "r.csr", "90", "c.pem");
    std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
    std::fs::write(dir.join("bad"), "nope\n").unwrap();
    // OpenSSL 3's default (PBES2, AES-256-CBC) and the legacy 3DES form
    // older Windows and appliances export.
    openssl(
        &[
            "pkcs12",
            "-export",
            "-in",
            "c.pem",
            "-inkey",
            "k.pem",
            "-certfile",
            "ca.crt",
            "-passout",
            "pass:s3cret",
            "-out",
            "modern.pfx",
        ],
        &dir,
    );
    openssl(
        &[
            "pkcs12",
            "-export",
            "-in",
            "c.pem",
            "-inkey",
            "k.pem",
            "-passout",
            "pass:s3cret",
            "-certpbe",
            "PBE-SHA1-3DES",
            "-keypbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
            "-out",
            "legacy.pfx",
        ],
        &dir,
    );
    for pfx in ["modern.pfx", "legacy.pfx"] {
        let (ok, out) = sealgate(
            &[
                "cert",
                "pkcs12",
                "--in",
                pfx,
                "--password-file",
                "pw",
                "--out-cert",
                "o.crt",
                "--out-key",
                "o.key",
            ],
            &dir,
        );
        assert!(ok, "{pfx}: {out}");
        let (ok, out) = sealgate(
            &["cert", "inspect", "o.crt", "--key", "o.key", "--json"],
            &dir,
        );
        assert!(ok, "{out}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["key_matches"], true, "{pfx}");
        assert_eq!(j["certificates"][0]["subject"], "CN=mx.test");
        // The gateway accepts the result.
        std::fs::write(
            dir.join("g.toml"),
            "[server]\nlisten = [\"127.0.0.1:2525\"]\n[tls]\nsystem_roots = false\ncertificates = [ { cert = \"o.crt\", key = \"o.key\" } ]\n",
        )
        .unwrap();
        let (ok, out) = sealgate(&["check", "-c", "g.toml"], &dir);
        assert!(ok, "{pfx}: {out}");
        let (ok, out) = sealgate(
            &[
                "cert",
                "pkcs12",
                "--in",
                pfx,
                "--password-file",
                "bad",
                "--out-cert",
                "x.crt",
                "--out-key",
                "x.key",
            ],
            &dir,
        );
        assert!(!ok && out.contains("wrong password"), "{pfx}: {out}");
    }
}

/// `cert self-signed`: a certificate and key in one step, each name once;
/// `openssl x509` reads it and its key matches. The embedded default's
/// generated certificate for `localhost` names it once too.
#[test]
fn self_signed_in_one_step_with_each_name_once() {
    let dir = common::temp_dir("cert-self-signed");
    let (ok, out) = sealgate(
        &[
            "cert",
            "self-signed",
            "--cn",
            "mx.example.org",
            "--san",
            "mx.example.org",
            "--san",
            "localhost",
            "--days",
            "30",
            "--out-cert",
            "ss.crt",
            "--out-key",
            "ss.key",
        ],
        &dir,
    );
    assert!(ok, "{out}");
    let text = openssl(&["x509", "-in", "ss.crt", "-noout", "-text"], &dir);
    assert!(
        text.contains("DNS:mx.example.org, DNS:localhost")
            && text.matches("DNS:localhost").count() == 1,
        "{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("ss.key")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let (ok, out) = sealgate(&["cert", "inspect", "ss.crt", "--key", "ss.key"], &dir);
    assert!(
        ok && out.contains("private key: matches the certificate"),
        "{out}"
    );

    // The gateway's own generated certificate for host name "localhost".
    assert!(
        sealgate::tls::ensure_self_signed(&dir.join("g.crt"), &dir.join("g.key"), "localhost")
            .unwrap()
    );
    let text = openssl(&["x509", "-in", "g.crt", "-noout", "-text"], &dir);
    assert_eq!(text.matches("DNS:localhost").count(), 1, "{text}");
}
