//! rustls configuration built from the snapshot, and the facts of a
//! negotiated session. rustls with the aws-lc-rs provider, TLS 1.2 and 1.3
//! only (AEAD suites only: rustls has nothing weaker).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, ProtocolVersion, ServerConfig, ServerConnection};

use crate::smtp::server::{ClientVerify, TlsFacts};

/// A certificate problem, phrased for the operator: which file, what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub path: PathBuf,
    pub problem: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

fn tls_error(path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The crypto provider every config uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// A certificate chain and its key, loaded from PEM files.
pub struct CertAndKey {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Loads a PEM certificate chain (leaf first) and PEM private key
/// (PKCS#8, PKCS#1 or SEC1).
pub fn load_cert_and_key(cert: &Path, key: &Path) -> Result<CertAndKey, TlsError> {
    let chain = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_error(key, pem_problem(e, "private key")))?;
    Ok(CertAndKey { chain, key })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, pem_problem(e, "certificate")))?;
    let chain = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, pem_problem(e, "certificate")))?;
    if chain.is_empty() {
        return Err(tls_error(
            path,
            "no CERTIFICATE block found (is this a PEM certificate?)",
        ));
    }
    Ok(chain)
}

fn pem_problem(e: rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) if io.kind() == std::io::ErrorKind::NotFound => "file not found".into(),
        E::Io(io) => format!("cannot read: {io}"),
        E::NoItemsFound => format!("no PEM {what} found (is this a PEM file?)"),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// Builds the STARTTLS server configuration: TLS 1.2 and 1.3, session
/// tickets, the given certificate. Fails when the key does not match the
/// certificate.
pub fn server_config(cert: CertAndKey, cert_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls_error(cert_path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(cert.chain, cert.key)
        .map_err(|e| {
            tls_error(
                cert_path,
                format!("certificate and key do not fit together: {e}"),
            )
        })?;
    // Stateless resumption (RFC 8446 §4.6.1 / RFC 5077): one ticket per
    // full handshake is enough for a relay that reconnects to us.
    config.ticketer =
        aws_lc_rs::Ticketer::new().map_err(|e| tls_error(cert_path, e.to_string()))?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// When neither file exists, writes a self-signed ECDSA P-256 certificate
/// for `hostname` (key mode 0600). Returns whether it generated one.
pub fn ensure_self_signed(cert: &Path, key: &Path, hostname: &str) -> Result<bool, TlsError> {
    if cert.exists() || key.exists() {
        return Ok(false);
    }
    let names = vec![hostname.to_string(), "localhost".to_string()];
    let signing_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| tls_error(key, format!("cannot generate key: {e}")))?;
    let params =
        rcgen::CertificateParams::new(names).map_err(|e| tls_error(cert, e.to_string()))?;
    let certificate = params
        .self_signed(&signing_key)
        .map_err(|e| tls_error(cert, format!("cannot sign certificate: {e}")))?;
    for path in [cert, key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .map_err(|e| tls_error(dir, format!("cannot create directory: {e}")))?;
        }
    }
    write_private(key, signing_key.serialize_pem().as_bytes())?;
    fs::write(cert, certificate.pem())
        .map_err(|e| tls_error(cert, format!("cannot write: {e}")))?;
    Ok(true)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| tls_error(path, format!("cannot create: {e}")))?;
    f.write_all(bytes)
        .map_err(|e| tls_error(path, format!("cannot write: {e}")))
}

/// What a completed handshake negotiated, for the session and the
/// Received header.
pub fn facts(conn: &ServerConnection) -> TlsFacts {
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    let cipher = suite.map(suite_name).unwrap_or_else(|| "unknown".into());
    let bits = suite.map(cipher_bits).unwrap_or(0);
    let verify = if conn.peer_certificates().is_some_and(|c| !c.is_empty()) {
        // Issue 2 never requests a certificate; a chain here passed the
        // verifier, which rejects on failure.
        ClientVerify::Ok
    } else {
        ClientVerify::No
    };
    TlsFacts {
        version,
        cipher,
        bits,
        verify,
    }
}

/// The suite name as rustls spells it (`TLS13_AES_256_GCM_SHA384`).
pub fn suite_name(suite: CipherSuite) -> String {
    suite
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{suite:?}"))
}

/// Symmetric key strength of a suite, the `bits=` of the Received header.
pub fn cipher_bits(suite: CipherSuite) -> u16 {
    let name = suite_name(suite);
    if name.contains("AES_128") {
        128
    } else if name.contains("AES_256") || name.contains("CHACHA20") {
        256
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bits_by_suite() {
        assert_eq!(cipher_bits(CipherSuite::TLS13_AES_256_GCM_SHA384), 256);
        assert_eq!(cipher_bits(CipherSuite::TLS13_AES_128_GCM_SHA256), 128);
        assert_eq!(
            cipher_bits(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
            256
        );
        assert_eq!(
            cipher_bits(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
            128
        );
    }

    #[test]
    fn self_signed_certificate_is_generated_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("sealgate-tls-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (cert, key) = (dir.join("a/server.crt"), dir.join("a/server.key"));
        assert!(ensure_self_signed(&cert, &key, "mx.test").unwrap());
        assert!(!ensure_self_signed(&cert, &key, "mx.test").unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = load_cert_and_key(&cert, &key).unwrap();
        assert!(server_config(loaded, &cert).is_ok());
        let missing = load_cert_and_key(&dir.join("nope.crt"), &key)
            .err()
            .unwrap();
        assert_eq!(missing.problem, "file not found");
        let _ = fs::remove_dir_all(&dir);
    }
}
