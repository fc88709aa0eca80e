//! Certificate tooling (CERT-3, docs/requirements.md): a private key and
//! CSR, a test CA and signing, PFX to PEM — what operators otherwise do
//! with openssl recipes (docs/tls-guide.md walks through each) — with safe
//! defaults, and `inspect` for troubleshooting.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// Key types `cert key` makes.
pub const KEY_TYPES: &[&str] = &[
    "ecdsa-p256",
    "ecdsa-p384",
    "ed25519",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
];

/// What can go wrong with key material; the wording is what the
/// commands print.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{}: cannot {action}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a usable PEM private key: {reason}", path.display())]
    BadKey {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(
        "{0} is weak: 1024-bit RSA (still in old openssl recipes) has been breakable for years; use rsa-2048 or ecdsa-p256 \
         (or --allow-weak to insist)"
    )]
    Weak(String),
    #[error("{0}: the crypto library (aws-lc) does not generate RSA keys under 2048 bits")]
    Unsupported(String),
    #[error("unknown key type {0:?}; one of {list}", list = KEY_TYPES.join(", "))]
    UnknownKeyType(String),
    #[error("not a valid CSR: {0}")]
    BadCsr(String),
    #[error("not a usable CA certificate: {0}")]
    BadCa(String),
    #[error("wrong password (the file's integrity check failed)")]
    WrongPassword,
    #[error("not a PKCS#12 file this tool can read: {0}")]
    BadPkcs12(String),
    #[error("the PKCS#12 file holds no private key with a certificate")]
    Pkcs12NoKey,
    #[error("the PKCS#12 file holds a key but no certificate")]
    Pkcs12NoCertificate,
    /// From the certificate library.
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    /// `cert inspect`: a certificate of the chain (counted from 1, the
    /// leaf first) that does not parse.
    #[error("certificate {index}: not valid X.509: {reason}")]
    NotX509 { index: usize, reason: String },
}

fn file_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> CertError + 'a {
    move |source| CertError::File {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Writes a file readable by its owner only (keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(file_error(path, "create"))?;
    f.write_all(bytes).map_err(file_error(path, "write"))
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    fs::write(path, bytes).map_err(file_error(path, "write"))
}

/// `cert key`: a new private key (PKCS#8 PEM, mode 0600).
pub fn generate_key(kind: &str, allow_weak: bool) -> Result<KeyPair, CertError> {
    let rsa = |size| Ok(KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)?);
    match kind {
        "ecdsa-p256" => Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?),
        "ecdsa-p384" => Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?),
        "ed25519" => Ok(KeyPair::generate_for(&rcgen::PKCS_ED25519)?),
        "rsa-2048" => rsa(rcgen::RsaKeySize::_2048),
        "rsa-3072" => rsa(rcgen::RsaKeySize::_3072),
        "rsa-4096" => rsa(rcgen::RsaKeySize::_4096),
        "rsa-1024" | "rsa-512" if !allow_weak => Err(CertError::Weak(kind.to_string())),
        "rsa-1024" | "rsa-512" => Err(CertError::Unsupported(kind.to_string())),
        other => Err(CertError::UnknownKeyType(other.to_string())),
    }
}

pub fn load_key(path: &Path) -> Result<KeyPair, CertError> {
    let pem = fs::read_to_string(path).map_err(file_error(path, "read"))?;
    KeyPair::from_pem(&pem).map_err(|e| CertError::BadKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Names for a subject.
pub struct Subject<'a> {
    pub cn: &'a str,
    pub sans: &'a [String],
    pub org: Option<&'a str>,
    pub ou: Option<&'a str>,
    pub country: Option<&'a str>,
}

fn params(s: &Subject<'_>) -> Result<CertificateParams, CertError> {
    let mut sans: Vec<String> = s.sans.to_vec();
    if sans.is_empty() {
        // Clients match names against SANs only (RFC 6125): the CN alone
        // is not enough, so it becomes the SAN.
        sans.push(s.cn.to_string());
    }
    let mut p = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    if let Some(c) = s.country {
        dn.push(DnType::CountryName, c);
    }
    if let Some(o) = s.org {
        dn.push(DnType::OrganizationName, o);
    }
    if let Some(ou) = s.ou {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    dn.push(DnType::CommonName, s.cn);
    p.distinguished_name = dn;
    Ok(p)
}

/// `cert csr`: a PKCS#10 request with SANs. Returns the PEM and warnings.
pub fn csr(key: &KeyPair, s: &Subject<'_>) -> Result<(String, Vec<String>), CertError> {
    let mut warnings = Vec::new();
    if !s.sans.is_empty() && !s.sans.iter().any(|n| n.eq_ignore_ascii_case(s.cn)) {
        warnings.push(format!(
            "the CN {:?} is not among the SANs; clients check SANs only",
            s.cn
        ));
    }
    let req = params(s)?.serialize_request(key)?;
    Ok((req.pem()?, warnings))
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(i64::from(days));
}

/// `cert ca`: a test CA, marked as such in its subject.
pub fn test_ca(cn: &str, days: u32, key: &KeyPair) -> Result<String, CertError> {
    let name = if cn.to_ascii_lowercase().contains("test ca") {
        cn.to_string()
    } else {
        format!("{cn} (test CA)")
    };
    let mut p = params(&Subject {
        cn: &name,
        sans: &[],
        org: Some("sealgate test CA"),
        ou: None,
        country: None,
    })?;
    p.subject_alt_names.clear();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, days);
    Ok(p.self_signed(key)?.pem())
}

/// `cert self-signed`: a certificate for `s`'s names, signed by its own
/// key (serverAuth and clientAuth), for a quick start or a lab; clients
/// that verify will not trust it.
pub fn self_signed(key: &KeyPair, s: &Subject<'_>, days: u32) -> Result<String, CertError> {
    let mut p = params(s)?;
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.is_ca = IsCa::ExplicitNoCa;
    validity(&mut p, days);
    Ok(p.self_signed(key)?.pem())
}

/// `cert sign`: a leaf for the CSR, with serverAuth and clientAuth, the
/// CSR's SANs, signed by the CA.
pub fn sign(
    csr_pem: &str,
    ca_cert_pem: &str,
    ca_key: &KeyPair,
    days: u32,
) -> Result<String, CertError> {
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CertError::BadCsr(e.to_string()))?;
    csr.params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    // TLS 1.3 and every ECDHE suite only sign with the key; nothing
    // rustls speaks encrypts to it.
    csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    csr.params.is_ca = IsCa::ExplicitNoCa;
    csr.params.use_authority_key_identifier_extension = true;
    validity(&mut csr.params, days);
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)
        .map_err(|e| CertError::BadCa(e.to_string()))?;
    Ok(csr.signed_by(&issuer)?.pem())
}

/// A warning when a certificate signed now for `days` would outlive the
/// CA that signs it: clients stop trusting it when the CA expires.
pub fn outlives_ca(ca_cert_pem: &str, days: u32) -> Option<String> {
    let der = pem::parse(ca_cert_pem).ok()?;
    let (_, ca) = x509_parser::parse_x509_certificate(der.contents()).ok()?;
    let ca_end = ca.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let end = now + i64::from(days) * 86_400;
    (end > ca_end).then(|| {
        format!(
            "warning: the certificate ({days} days, until {}) outlives its CA, which expires {} ({} days from now): clients stop trusting it then",
            crate::model::rfc3339(end),
            crate::model::rfc3339(ca_end),
            (ca_end - now).div_euclid(86_400)
        )
    })
}

/// `cert pkcs12`: PFX → (certificate chain PEM, private key PEM).
pub fn from_pkcs12(pfx: &[u8], password: &str) -> Result<(String, String), CertError> {
    let ks = p12_keystore::KeyStore::from_pkcs12(
        pfx,
        password,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .map_err(|e| match e {
        // The file's MAC did not verify under this password (a damaged
        // file reads the same; PKCS#12 cannot tell the two apart).
        p12_keystore::error::Error::MacError(_) => CertError::WrongPassword,
        other => CertError::BadPkcs12(other.to_string()),
    })?;
    let (_, chain) = ks.private_key_chain().ok_or(CertError::Pkcs12NoKey)?;
    let mut certs = String::new();
    for c in chain.certs() {
        certs.push_str(&pem::encode(&pem::Pem::new(
            "CERTIFICATE",
            c.as_der().to_vec(),
        )));
    }
    if certs.is_empty() {
        return Err(CertError::Pkcs12NoCertificate);
    }
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", chain.key().as_der().to_vec()));
    Ok((certs, key))
}

pub mod inspect;

/// Writes key material: keys 0600, certificates 0644.
pub fn save(path: &Path, pem_text: &str, private: bool) -> Result<(), CertError> {
    if private {
        write_private(path, pem_text.as_bytes())
    } else {
        write_public(path, pem_text.as_bytes())
    }
}
