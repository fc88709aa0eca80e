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

/// Writes a file readable by its owner only (keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// `cert key`: a new private key (PKCS#8 PEM, mode 0600).
pub fn generate_key(kind: &str, allow_weak: bool) -> Result<KeyPair, String> {
    let rsa =
        |size| KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).map_err(|e| e.to_string());
    match kind {
        "ecdsa-p256" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string()),
        "ecdsa-p384" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(|e| e.to_string()),
        "ed25519" => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| e.to_string()),
        "rsa-2048" => rsa(rcgen::RsaKeySize::_2048),
        "rsa-3072" => rsa(rcgen::RsaKeySize::_3072),
        "rsa-4096" => rsa(rcgen::RsaKeySize::_4096),
        "rsa-1024" | "rsa-512" if !allow_weak => Err(format!(
            "{kind} is weak: 1024-bit RSA (still in old openssl recipes) has been breakable for years; use rsa-2048 or ecdsa-p256 \
             (or --allow-weak to insist)"
        )),
        "rsa-1024" | "rsa-512" => Err(format!("{kind}: the crypto library (aws-lc) does not generate RSA keys under 2048 bits")),
        other => Err(format!("unknown key type {other:?}; one of {}", KEY_TYPES.join(", "))),
    }
}

pub fn load_key(path: &Path) -> Result<KeyPair, String> {
    let pem =
        fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    KeyPair::from_pem(&pem)
        .map_err(|e| format!("{}: not a usable PEM private key: {e}", path.display()))
}

/// Names for a subject.
pub struct Subject<'a> {
    pub cn: &'a str,
    pub sans: &'a [String],
    pub org: Option<&'a str>,
    pub ou: Option<&'a str>,
    pub country: Option<&'a str>,
}

fn params(s: &Subject<'_>) -> Result<CertificateParams, String> {
    let mut sans: Vec<String> = s.sans.to_vec();
    if sans.is_empty() {
        // Clients match names against SANs only (RFC 6125): the CN alone
        // is not enough, so it becomes the SAN.
        sans.push(s.cn.to_string());
    }
    let mut p = CertificateParams::new(sans).map_err(|e| e.to_string())?;
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
pub fn csr(key: &KeyPair, s: &Subject<'_>) -> Result<(String, Vec<String>), String> {
    let mut warnings = Vec::new();
    if !s.sans.is_empty() && !s.sans.iter().any(|n| n.eq_ignore_ascii_case(s.cn)) {
        warnings.push(format!(
            "the CN {:?} is not among the SANs; clients check SANs only",
            s.cn
        ));
    }
    let req = params(s)?
        .serialize_request(key)
        .map_err(|e| e.to_string())?;
    Ok((req.pem().map_err(|e| e.to_string())?, warnings))
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(i64::from(days));
}

/// `cert ca`: a test CA, marked as such in its subject.
pub fn test_ca(cn: &str, days: u32, key: &KeyPair) -> Result<String, String> {
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
    Ok(p.self_signed(key).map_err(|e| e.to_string())?.pem())
}

/// `cert sign`: a leaf for the CSR, with serverAuth and clientAuth, the
/// CSR's SANs, signed by the CA.
pub fn sign(
    csr_pem: &str,
    ca_cert_pem: &str,
    ca_key: &KeyPair,
    days: u32,
) -> Result<String, String> {
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| format!("not a valid CSR: {e}"))?;
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
        .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    Ok(csr.signed_by(&issuer).map_err(|e| e.to_string())?.pem())
}

/// `cert pkcs12`: PFX → (certificate chain PEM, private key PEM).
pub fn from_pkcs12(pfx: &[u8], password: &str) -> Result<(String, String), String> {
    let ks = p12_keystore::KeyStore::from_pkcs12(
        pfx,
        password,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .map_err(|e| {
        let text = e.to_string();
        if text.to_ascii_lowercase().contains("mac") {
            "wrong password (the file's integrity check failed)".to_string()
        } else {
            format!("not a PKCS#12 file this tool can read: {text}")
        }
    })?;
    let (_, chain) = ks
        .private_key_chain()
        .ok_or("the PKCS#12 file holds no private key with a certificate")?;
    let mut certs = String::new();
    for c in chain.certs() {
        certs.push_str(&pem::encode(&pem::Pem::new(
            "CERTIFICATE",
            c.as_der().to_vec(),
        )));
    }
    if certs.is_empty() {
        return Err("the PKCS#12 file holds a key but no certificate".into());
    }
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", chain.key().as_der().to_vec()));
    Ok((certs, key))
}

pub mod inspect;

/// Writes key material: keys 0600, certificates 0644.
pub fn save(path: &Path, pem_text: &str, private: bool) -> Result<(), String> {
    if private {
        write_private(path, pem_text.as_bytes())
    } else {
        write_public(path, pem_text.as_bytes())
    }
}
