//! rustls configuration built from the snapshot, and the facts of a
//! negotiated session. rustls with the aws-lc-rs provider, TLS 1.2 and 1.3
//! only (AEAD suites only: rustls has nothing weaker).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::crypto::SupportedKxGroup;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ProducesTickets;
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ProtocolVersion, ServerConfig};

/// The handshake-signature checks that both of rustls's verifier traits
/// (client and server certificates) require, delegated to the provider's
/// algorithms. The implementing type needs a `provider` field.
macro_rules! provider_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

pub mod dane;
pub mod outbound;

use crate::model::{ClientCert, Unverified};
use crate::model::{ClientVerify, TlsFacts};

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

impl std::error::Error for TlsError {}

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

/// `[tls] groups` and `ticket_lifetime`: the key exchange groups
/// sealgate allows as a server and offers, in order, as a client, and how
/// long a session ticket's key encrypts new tickets.
#[derive(Debug, Clone)]
pub struct Settings {
    pub groups: Vec<&'static dyn SupportedKxGroup>,
    /// Seconds; 0 turns resumption off.
    pub ticket_lifetime: u32,
}

/// The groups when `[tls] groups` is not set: the post-quantum hybrid
/// first (RFC 9794 names; what a client whose first choice it is gets
/// without a retry), then the classical ones.
pub const DEFAULT_GROUPS: [&str; 4] = ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1"];

/// `ticket_lifetime` when not set: six hours, as rustls's own ticketer.
pub const DEFAULT_TICKET_LIFETIME: u32 = 6 * 60 * 60;

/// A group's IANA name as rustls spells it (`X25519`, `secp256r1`), with
/// no allocation: the log line of every TLS session carries it.
pub fn group_name(group: rustls::NamedGroup) -> &'static str {
    group.as_str().unwrap_or("unknown")
}

/// A key exchange group by its IANA name (`X25519MLKEM768`, `X25519`,
/// `secp256r1`, `secp384r1`, `MLKEM768`, …), any case.
pub fn kx_group(name: &str) -> Option<&'static dyn SupportedKxGroup> {
    aws_lc_rs::ALL_KX_GROUPS
        .iter()
        .find(|g| group_name(g.name()).eq_ignore_ascii_case(name))
        .copied()
}

/// Every name [`kx_group`] knows, for error messages and docs.
pub fn kx_group_names() -> Vec<&'static str> {
    aws_lc_rs::ALL_KX_GROUPS
        .iter()
        .map(|g| group_name(g.name()))
        .collect()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            groups: DEFAULT_GROUPS.iter().filter_map(|n| kx_group(n)).collect(),
            ticket_lifetime: DEFAULT_TICKET_LIFETIME,
        }
    }
}

impl Settings {
    /// The provider with these groups.
    pub fn provider(&self) -> Arc<rustls::crypto::CryptoProvider> {
        let mut p = aws_lc_rs::default_provider();
        p.kx_groups = self.groups.clone();
        Arc::new(p)
    }
}

/// The session ticket encrypter, one for the process: its keys rotate
/// every `ticket_lifetime` (a ticket stays valid for two lifetimes, RFC
/// 8446 §4.6.1 allows at most seven days), and a reload that keeps the
/// lifetime keeps the keys, so returning clients resume across reloads.
/// A changed lifetime starts with fresh keys.
fn ticketer(lifetime: u32) -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    static TICKETER: std::sync::Mutex<Option<(u32, Arc<dyn ProducesTickets>)>> =
        std::sync::Mutex::new(None);
    let mut held = TICKETER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((l, t)) = held.as_ref() {
        if *l == lifetime {
            return Ok(t.clone());
        }
    }
    let t: Arc<dyn ProducesTickets> = Arc::new(rustls::ticketer::TicketRotator::new(
        lifetime,
        rfc5077_ticketer,
    )?);
    *held = Some((lifetime, t.clone()));
    Ok(t)
}

/// One key of the rotation: aws-lc-rs's RFC 5077 §4 construction
/// (AES-256-CBC and HMAC-SHA256 under random keys).
fn rfc5077_ticketer() -> Result<Box<dyn ProducesTickets>, rustls::crypto::GetRandomFailed> {
    aws_lc_rs::Ticketer::new()
        .map(|t| Box::new(Rotated(t)) as Box<dyn ProducesTickets>)
        .map_err(|_| rustls::crypto::GetRandomFailed)
}

/// aws-lc-rs's ticketer as one key of our rotation (it rotates itself
/// only after six hours, past any key's life here unless the lifetime is
/// longer, where its own rotation only adds keys).
#[derive(Debug)]
struct Rotated(Arc<dyn ProducesTickets>);

impl ProducesTickets for Rotated {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }
    fn lifetime(&self) -> u32 {
        self.0.lifetime()
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(cipher)
    }
}

/// Builds the STARTTLS server configuration for one certificate: TLS 1.2
/// and 1.3, session tickets, no client certificate, default settings.
pub fn server_config(cert: CertAndKey, cert_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = SniResolver::new(vec![(
        certified_key(cert, cert_path)?,
        cert_path.to_path_buf(),
    )])?;
    server_config_with(Arc::new(resolver), None, cert_path, &Settings::default())
}

/// The STARTTLS server configuration: certificates chosen by SNI, and
/// either no client certificate request (`ask` = None) or a request that
/// accepts whatever the client sends (verified after the handshake).
pub fn server_config_with(
    resolver: Arc<SniResolver>,
    ask: Option<Arc<AskForCertificate>>,
    path: &Path,
    settings: &Settings,
) -> Result<Arc<ServerConfig>, TlsError> {
    // The groups allowed; rustls takes the client's order among them
    // (and asks for another key share only when none offered fits).
    let builder = ServerConfig::builder_with_provider(settings.provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls_error(path, e.to_string()))?;
    let builder = match ask {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    // Stateless resumption (RFC 8446 §4.6.1 / RFC 5077): one ticket per
    // full handshake is enough for a relay that reconnects to us; a
    // resumed session skips the certificate and its signature.
    if settings.ticket_lifetime > 0 {
        config.ticketer =
            ticketer(settings.ticket_lifetime).map_err(|e| tls_error(path, e.to_string()))?;
        config.send_tls13_tickets = 1;
    } else {
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    // Every suite offered is an AEAD with forward secrecy, so the choice
    // is about speed and margin, not safety; still, the server picks (in
    // rustls's order: AES-256-GCM first where the CPU has AES), as TLS
    // scanners and operators' audits expect.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Checks a certificate and key and pairs them for rustls: the key must
/// fit the certificate, and the certificate must be valid now.
pub fn certified_key(cert: CertAndKey, cert_path: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let leaf = cert
        .chain
        .first()
        .ok_or_else(|| tls_error(cert_path, "no certificate"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| tls_error(cert_path, format!("not a valid X.509 certificate: {e}")))?;
    let validity = parsed.validity();
    if !validity.is_valid() {
        let now = x509_parser::time::ASN1Time::now();
        let why = if now < validity.not_before {
            format!("not valid before {}", validity.not_before)
        } else {
            format!("expired on {}", validity.not_after)
        };
        return Err(tls_error(cert_path, why));
    }
    let key = provider()
        .key_provider
        .load_private_key(cert.key)
        .map_err(|e| tls_error(cert_path, format!("unusable private key: {e}")))?;
    let ck = CertifiedKey::new(cert.chain, key);
    ck.keys_match()
        .map_err(|_| tls_error(cert_path, "the private key does not match the certificate"))?;
    Ok(Arc::new(ck))
}

/// Days until each certificate's end of validity, for the leaf of every
/// file given: `(path, days left, subject, not-after as Unix time)`.
pub fn days_left(paths: &[PathBuf]) -> Vec<(PathBuf, i64, String, i64)> {
    let now = x509_parser::time::ASN1Time::now();
    let mut out = Vec::new();
    for p in paths {
        let Ok(chain) = load_certs(p) else { continue };
        let Some(leaf) = chain.first() else { continue };
        if let Ok((_, c)) = x509_parser::parse_x509_certificate(leaf) {
            let days = (c.validity().not_after.timestamp() - now.timestamp()).div_euclid(86_400);
            out.push((
                p.clone(),
                days,
                c.subject().to_string(),
                c.validity().not_after.timestamp(),
            ));
        }
    }
    out
}

/// Warnings for certificates that expire within 30 days (CERT-3).
pub fn expiry_warnings(paths: &[PathBuf]) -> Vec<String> {
    days_left(paths)
        .into_iter()
        .filter(|(_, days, _, _)| *days < 30)
        .map(|(p, days, subject, _)| {
            if days < 0 {
                format!("{}: certificate {subject} has expired", p.display())
            } else {
                format!(
                    "{}: certificate {subject} expires in {days} days",
                    p.display()
                )
            }
        })
        .collect()
}

/// DNS names a certificate is for: subjectAltName dNSNames, else the CN.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let (sans, cn) = names_of(&cert);
    if sans.is_empty() {
        cn.into_iter().collect()
    } else {
        sans
    }
}

fn names_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> (Vec<String>, Option<String>) {
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                sans.push(d.to_ascii_lowercase());
            }
        }
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    (sans, cn)
}

/// Chooses the server certificate by SNI (CERT-2): an exact name, then a
/// wildcard one label up; clients without SNI, or with a name no
/// certificate has, get the first certificate.
pub struct SniResolver {
    exact: std::collections::HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

/// The names in order (a `HashMap` prints in a different order each
/// run), each with its certificate: the same certificates print the same.
impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let exact: std::collections::BTreeMap<_, _> = self.exact.iter().collect();
        f.debug_struct("SniResolver")
            .field("exact", &exact)
            .field("default", &self.default)
            .finish()
    }
}

impl SniResolver {
    pub fn new(certs: Vec<(Arc<CertifiedKey>, PathBuf)>) -> Result<SniResolver, TlsError> {
        let mut exact = std::collections::HashMap::new();
        let mut default = None;
        for (ck, _path) in certs {
            for name in ck
                .end_entity_cert()
                .map(|c| certificate_names(c))
                .unwrap_or_default()
            {
                exact.entry(name).or_insert_with(|| ck.clone());
            }
            default.get_or_insert(ck);
        }
        let default =
            default.ok_or_else(|| tls_error(Path::new("tls.certificates"), "no certificate"))?;
        Ok(SniResolver { exact, default })
    }
}

impl rustls::server::ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Seed §9: at debug, what the client offered.
        tracing::debug!(
            target: "receive",
            "TLS ClientHello: SNI={} cipher suites offered: {}",
            hello.server_name().unwrap_or("(none)"),
            hello.cipher_suites().iter().map(|s| suite_name(*s)).collect::<Vec<_>>().join(" ")
        );
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(ck) = self.exact.get(&name) {
            return Some(ck.clone());
        }
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        Some(
            wildcard
                .and_then(|w| self.exact.get(&w).cloned())
                .unwrap_or_else(|| self.default.clone()),
        )
    }
}

/// The CA store (CERT-1): the system roots when `system_roots`, plus every
/// PEM file in `ca_files`. Returns the store and how many came from each.
/// The Web PKI roots (the webpki-roots set, Mozilla's) plus `extra`: what
/// an MTA-STS policy host's certificate must chain to (RFC 8461 §3.3).
pub fn web_roots(extra: &rustls::RootCertStore) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    roots.roots.extend(extra.roots.iter().cloned());
    roots
}

pub fn ca_store(
    system_roots: bool,
    ca_files: &[PathBuf],
) -> Result<rustls::RootCertStore, Vec<TlsError>> {
    let mut roots = rustls::RootCertStore::empty();
    let mut problems = Vec::new();
    if system_roots {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
    }
    for path in ca_files {
        match load_certs(path) {
            Ok(certs) => {
                for c in certs {
                    if let Err(e) = roots.add(c) {
                        problems.push(tls_error(path, format!("not a usable CA certificate: {e}")));
                    }
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(roots)
    } else {
        Err(problems)
    }
}

/// Builds the verifier that checks client chains after the handshake, or
/// `None` when the CA store is empty.
pub fn client_verifier(roots: rustls::RootCertStore) -> Option<Arc<dyn ClientCertVerifier>> {
    if roots.is_empty() {
        return None;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .ok()
}

/// Asks the client for a certificate and accepts any (or none): the
/// handshake then never fails for a bad certificate, the chain is checked
/// after it (`verify=FAIL` in the Received header) and the profile decides
/// at MAIL whether that is acceptable. Handshake signatures are still
/// checked, so the client must hold the certificate's key.
#[derive(Debug)]
pub struct AskForCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
    hints: Vec<rustls::DistinguishedName>,
}

impl AskForCertificate {
    pub fn new(verifier: Option<&Arc<dyn ClientCertVerifier>>) -> Self {
        AskForCertificate {
            provider: provider(),
            hints: verifier
                .map(|v| v.root_hint_subjects().to_vec())
                .unwrap_or_default(),
        }
    }
}

impl ClientCertVerifier for AskForCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    provider_signature_checks!();
}

/// What the client's certificate chain is: verified or not (and why), its
/// names, its fingerprints.
pub fn inspect_client_chain(
    chain: &[CertificateDer<'_>],
    verifier: Option<&dyn ClientCertVerifier>,
) -> Option<ClientCert> {
    let leaf = chain.first()?;
    let verified = match verifier {
        None => Err(Unverified::NoCaStore),
        Some(v) => v
            .verify_client_cert(leaf, &chain[1..], UnixTime::now())
            .map(|_| ())
            .map_err(Unverified::Rejected),
    };
    let (dns_names, common_name, subject, spki) = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, c)) => {
            let (sans, cn) = names_of(&c);
            (
                sans,
                cn,
                c.subject().to_string(),
                c.public_key().raw.to_vec(),
            )
        }
        Err(_) => (Vec::new(), None, "(unparseable)".into(), Vec::new()),
    };
    Some(ClientCert {
        verified,
        dns_names,
        common_name,
        subject,
        cert_sha256: sha256(leaf),
        spki_sha256: sha256(&spki),
    })
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ::aws_lc_rs::digest::digest(&::aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// When neither file exists, writes a self-signed ECDSA P-256 certificate
/// for `hostname` (key mode 0600). Returns whether it generated one.
pub fn ensure_self_signed(cert: &Path, key: &Path, hostname: &str) -> Result<bool, TlsError> {
    if cert.exists() || key.exists() {
        return Ok(false);
    }
    let mut names = vec![hostname.to_string(), "localhost".to_string()];
    // The embedded default's host name is `localhost` itself: once.
    names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let signing_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| tls_error(key, format!("cannot generate key: {e}")))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| tls_error(cert, e.to_string()))?;
    // A certificate as a CA would issue it: named after the host, for
    // server (and client) authentication, valid for a year. (rcgen's
    // default is a placeholder name valid until the year 4096, which TLS
    // audits rightly flag.) The expiry warnings of `sealgate check` and
    // the daily log line say when to replace it; deleting both files makes
    // the next start generate a fresh one.
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, hostname);
    params.distinguished_name = dn;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
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

/// A server configuration with a fresh self-signed P-256 certificate held
/// only in memory: for benchmarks, fuzzing and tests that need STARTTLS
/// offered but no files.
pub fn ephemeral_server_config(hostname: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let here = Path::new("(in memory)");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| tls_error(here, format!("cannot generate key: {e}")))?;
    let cert = rcgen::CertificateParams::new(vec![hostname.to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| tls_error(here, format!("cannot sign certificate: {e}")))?;
    let key_der =
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| tls_error(here, e.to_string()))?;
    server_config(
        CertAndKey {
            chain: vec![cert.der().clone()],
            key: key_der,
        },
        here,
    )
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

/// What a handshake negotiated, as logs, headers and reports name it.
pub struct Negotiated {
    /// `TLSv1.3` or `TLSv1.2` (the only versions sealgate enables).
    pub version: &'static str,
    /// The suite as rustls spells it (`TLS13_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// Symmetric key bits of the suite.
    pub bits: u16,
}

/// The version and suite of a connection, server or client side; `None`
/// until the handshake has chosen them.
pub fn negotiated(conn: &rustls::CommonState) -> Option<Negotiated> {
    let suite = conn.negotiated_cipher_suite()?.suite();
    let version = match conn.protocol_version()? {
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "unknown",
    };
    Some(Negotiated {
        version,
        cipher: suite_name(suite),
        bits: cipher_bits(suite),
    })
}

/// What a completed handshake negotiated, for the session and the
/// Received header.
pub fn facts(conn: &rustls::CommonState, verifier: Option<&dyn ClientCertVerifier>) -> TlsFacts {
    let Negotiated {
        version,
        cipher,
        bits,
    } = negotiated(conn).unwrap_or(Negotiated {
        version: "unknown",
        cipher: "unknown".into(),
        bits: 0,
    });
    let client_cert = conn
        .peer_certificates()
        .and_then(|chain| inspect_client_chain(chain, verifier));
    let verify = match &client_cert {
        None => ClientVerify::No,
        Some(c) if c.verified.is_ok() => ClientVerify::Ok,
        Some(_) => ClientVerify::Fail,
    };
    TlsFacts {
        version,
        cipher,
        bits,
        verify,
        client_cert,
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

    /// MTA-STS policy hosts are judged by the Web PKI plus the operator's
    /// own CA files, whatever `tls.system_roots` says.
    #[test]
    fn web_roots_are_webpki_and_the_extra_cas() {
        let none = web_roots(&rustls::RootCertStore::empty());
        assert_eq!(none.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(none.len() > 100, "the Mozilla set");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let mut extra = rustls::RootCertStore::empty();
        extra
            .add(ca.self_signed(&key).unwrap().der().clone())
            .unwrap();
        assert_eq!(web_roots(&extra).len(), none.len() + 1);
    }

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
