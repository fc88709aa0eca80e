//! CERT-1, CERT-2: server certificates chosen by SNI, and certificate
//! problems reported clearly by `sealgate check` (file and what is wrong).

mod common;

use std::sync::Arc;

use common::pki::Ca;
use common::{Client, Gateway};

fn tls_config(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// STARTTLS with SNI `name`; returns the names of the certificate served.
fn served_names(gw: &Gateway, ca: &std::path::Path, name: &str) -> Vec<String> {
    let mut c = common::connect(gw.addr);
    c.reply();
    c.cmd("EHLO sni.test");
    assert!(c.cmd("STARTTLS").starts_with("220"));
    let conn = rustls::ClientConnection::new(tls_config(ca), name.to_string().try_into().unwrap())
        .unwrap();
    let mut t = Client::new(rustls::StreamOwned::new(conn, c.stream));
    assert!(
        t.cmd("EHLO sni.test").starts_with("250"),
        "handshake for {name}"
    );
    let chain = t.stream.conn.peer_certificates().unwrap();
    sealgate::tls::certificate_names(&chain[0])
}

#[test]
fn server_certificate_chosen_by_sni_first_is_default() {
    let dir = common::temp_dir("sni");
    let pki = dir.join("pki");
    let ca = Ca::new(&pki, "ca");
    let (a_crt, a_key) = ca.leaf(&pki, "a", &["mx.test"]);
    let (b_crt, b_key) = ca.leaf(&pki, "b", &["mx.other.test"]);
    let (w_crt, w_key) = ca.leaf(&pki, "w", &["*.wild.test"]);
    let port = common::free_port();
    let config = common::config(port, 1, "").replace(
        "certificates = [ { cert = \"tls/server.crt\", key = \"tls/server.key\" } ]\ngenerate_self_signed = true",
        &format!(
            "certificates = [ {{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }} ]\nsystem_roots = false",
            a_crt.display(), a_key.display(), b_crt.display(), b_key.display(), w_crt.display(), w_key.display()
        ),
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir, port);
    assert_eq!(served_names(&gw, &ca.cert_path, "mx.test"), ["mx.test"]);
    assert_eq!(
        served_names(&gw, &ca.cert_path, "mx.other.test"),
        ["mx.other.test"]
    );
    assert_eq!(
        served_names(&gw, &ca.cert_path, "a.wild.test"),
        ["*.wild.test"]
    );
}

#[test]
fn certificate_problems_are_named() {
    let dir = common::temp_dir("cert-errors");
    let pki = dir.join("pki");
    let ca = Ca::new(&pki, "ca");
    let (good_crt, good_key) = ca.leaf(&pki, "good", &["mx.test"]);
    let (_, other_key) = ca.leaf(&pki, "other", &["x.test"]);
    std::fs::write(pki.join("junk.crt"), "this is not PEM\n").unwrap();
    // An expired certificate.
    common::pki::expired(&pki, "old");

    let check = |certs: &str| {
        let file = dir.join("c.toml");
        std::fs::write(&file, format!("[server]\nlisten = [\"127.0.0.1:2525\"]\n[tls]\nsystem_roots = false\ncertificates = [ {certs} ]\n")).unwrap();
        common::check_config(&file)
    };
    let pair = |c: &std::path::Path, k: &std::path::Path| {
        format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            c.display(),
            k.display()
        )
    };

    let (code, out) = check(&pair(&good_crt, &good_key));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(&pair(&pki.join("missing.crt"), &good_key));
    assert_eq!(code, Some(1));
    assert!(out.contains("missing.crt: file not found"), "{out}");
    let (code, out) = check(&pair(&pki.join("junk.crt"), &good_key));
    assert_eq!(code, Some(1));
    assert!(
        out.contains("junk.crt: no CERTIFICATE block found"),
        "{out}"
    );
    let (code, out) = check(&pair(&good_crt, &other_key));
    assert_eq!(code, Some(1));
    assert!(
        out.contains("good.crt: the private key does not match the certificate"),
        "{out}"
    );
    let (code, out) = check(&pair(&pki.join("old.crt"), &pki.join("old.key")));
    assert_eq!(code, Some(1));
    assert!(out.contains("old.crt: expired on"), "{out}");
    // Every problem at once.
    let (code, out) = check(&format!(
        "{}, {}",
        pair(&pki.join("junk.crt"), &good_key),
        pair(&good_crt, &other_key)
    ));
    assert_eq!(code, Some(1));
    assert!(out.contains("2 error(s) found"), "{out}");
}
