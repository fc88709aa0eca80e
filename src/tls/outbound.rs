//! Outbound TLS (OUT-2, OUT-3, OUT-5): rustls client configurations per
//! profile, and the check of the server's certificate after the handshake.
//!
//! As on the inbound side, the handshake itself accepts any certificate
//! (handshake signatures are still verified), and the chain, the names and
//! the pins are checked right after it. The delivery log can then say how
//! far the server was trusted — Postfix's Verified / Trusted / Untrusted —
//! even on opportunistic routes, and a mandatory route that requires
//! verification defers with the exact reason.

use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::{certificate_names, provider, sha256, TlsError};
use crate::policy::ClientRules;

/// The outbound TLS state of a snapshot.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// One configuration per profile (same index as the profiles).
    pub per_profile: Vec<Arc<ClientConfig>>,
    /// Routes without a profile: opportunistic, nothing required.
    pub default: Arc<ClientConfig>,
    pub roots: Arc<RootCertStore>,
    /// For MTA-STS policy hosts (RFC 8461 §3.3, a Web PKI certificate):
    /// the webpki-roots set plus `tls.ca_files`.
    pub web_roots: Arc<RootCertStore>,
}

impl Outbound {
    /// Opportunistic TLS only, no CA store: for tests and tools.
    pub fn opportunistic() -> Outbound {
        Outbound {
            per_profile: Vec::new(),
            default: client_config(None, None, &super::Settings::default())
                .expect("the default client configuration builds"),
            roots: Arc::new(RootCertStore::empty()),
            web_roots: Arc::new(RootCertStore::empty()),
        }
    }

    pub fn config(&self, profile: Option<usize>) -> Arc<ClientConfig> {
        profile
            .and_then(|i| self.per_profile.get(i).cloned())
            .unwrap_or_else(|| self.default.clone())
    }
}

/// A rustls client configuration for a profile's rules (`None`: the
/// opportunistic default).
pub fn client_config(
    rules: Option<&ClientRules>,
    client_cert: Option<Arc<CertifiedKey>>,
    settings: &super::Settings,
) -> Result<Arc<ClientConfig>, TlsError> {
    // `[tls] groups` in order: the first gets a key share in the
    // ClientHello (with X25519MLKEM768 first, rustls sends an X25519 share
    // as well, so a classical server needs no retry).
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = settings.groups.clone();
    if rules.is_some_and(|r| r.high_ciphers_only) {
        // cipher_grade = "high": 256-bit suites only (AES-256-GCM, ChaCha20).
        p.cipher_suites
            .retain(|s| super::cipher_bits(s.suite()) >= 256);
    }
    let p = Arc::new(p);
    let versions: &[&'static rustls::SupportedProtocolVersion] = match rules.map(|r| r.min_version)
    {
        Some(13) => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let err = |e: rustls::Error| TlsError {
        path: "tls".into(),
        problem: e.to_string(),
    };
    let builder = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(versions)
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CheckAfterHandshake { provider: p }));
    let config = match (rules.is_some_and(|r| r.client_certificate), client_cert) {
        (true, Some(ck)) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(ck))),
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// OUT-5: the configured client certificate, presented to servers that ask.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A verifier that accepts any server certificate but checks the
/// handshake signatures (the server must hold the key). The load generator
/// uses it for `--verify` off.
pub fn any_server_certificate() -> Arc<dyn ServerCertVerifier> {
    Arc::new(CheckAfterHandshake {
        provider: provider(),
    })
}

/// Accepts any certificate during the handshake but checks the server's
/// handshake signatures: [`check_server`] judges the certificate after.
#[derive(Debug)]
struct CheckAfterHandshake {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for CheckAfterHandshake {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    provider_signature_checks!();
}

/// How far the server's certificate was trusted (Postfix's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Chain to a trusted root and the right name.
    Verified,
    /// Chain to a trusted root, name not matched.
    Trusted,
    /// No chain to a trusted root (self-signed, unknown CA, expired).
    Untrusted,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Verified => "Verified",
            Trust::Trusted => "Trusted",
            Trust::Untrusted => "Untrusted",
        }
    }
}

/// Why a route's rules refuse the server's certificate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no server certificate")]
    NoCertificate,
    /// `verify = true` and the chain does not verify (rustls's reason).
    #[error("server certificate not trusted: {0}")]
    NotTrusted(rustls::Error),
    /// Neither `match_names` (or the host) is among the certificate's names.
    #[error("server certificate names {names:?} do not match {}", wanted.join(" or "))]
    Names {
        names: Vec<String>,
        wanted: Vec<String>,
    },
    #[error("server certificate matches no pinned fingerprint")]
    Pin,
}

/// Judges the server certificate of a finished handshake: the trust level
/// for the log, and whether the route's rules accept it.
pub fn check_server(
    conn: &ClientConnection,
    host: &str,
    rules: Option<&ClientRules>,
    roots: &RootCertStore,
) -> (Trust, Result<(), Refusal>) {
    let Some(chain) = conn.peer_certificates().filter(|c| !c.is_empty()) else {
        return (Trust::Untrusted, Err(Refusal::NoCertificate));
    };
    let leaf = &chain[0];
    let chain_ok = match rustls::server::ParsedCertificate::try_from(leaf) {
        Ok(parsed) => rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            &chain[1..],
            UnixTime::now(),
            provider().signature_verification_algorithms.all,
        ),
        Err(e) => Err(e),
    };
    let names = certificate_names(leaf);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let wanted: Vec<String> = match rules.map(|r| r.match_names.as_slice()) {
        Some(list) if !list.is_empty() => list.to_vec(),
        _ => vec![host.clone()],
    };
    let name_ok = wanted
        .iter()
        .any(|w| names.iter().any(|n| crate::model::name_matches(w, n)));
    let trust = match (&chain_ok, name_ok) {
        (Ok(()), true) => Trust::Verified,
        (Ok(()), false) => Trust::Trusted,
        (Err(_), _) => Trust::Untrusted,
    };
    let Some(rules) = rules else {
        return (trust, Ok(()));
    };
    if rules.verify {
        if let Err(why) = chain_ok {
            return (trust, Err(Refusal::NotTrusted(why)));
        }
        if !name_ok {
            return (trust, Err(Refusal::Names { names, wanted }));
        }
    } else if !rules.match_names.is_empty() && !name_ok {
        return (trust, Err(Refusal::Names { names, wanted }));
    }
    if !rules.pin_sha256.is_empty() {
        let spki = x509_parser::parse_x509_certificate(leaf)
            .map(|(_, c)| sha256(c.public_key().raw))
            .unwrap_or([0; 32]);
        let cert = sha256(leaf);
        if !rules.pin_sha256.iter().any(|p| *p == cert || *p == spki) {
            return (trust, Err(Refusal::Pin));
        }
    }
    (trust, Ok(()))
}
