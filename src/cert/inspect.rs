//! `sealgate cert inspect`: what a certificate chain says, and what is
//! wrong with it (what an operator would otherwise check with openssl;
//! docs/tls-guide.md).

use super::CertError;
use serde::Serialize;
use x509_parser::prelude::*;

#[derive(Debug, Serialize)]
pub struct CertReport {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub days_left: i64,
    pub key: String,
    pub key_bits: usize,
    pub key_usage: Vec<String>,
    pub extended_key_usage: Vec<String>,
    pub is_ca: bool,
    pub sha256: String,
    pub spki_sha256: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub certificates: Vec<CertReport>,
    /// For each certificate but the last: whether the next one issued it.
    pub chain_order_ok: bool,
    pub key_matches: Option<bool>,
    pub warnings: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn key_of(cert: &X509Certificate<'_>) -> (String, usize) {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => ("RSA".into(), rsa.key_size()),
        Ok(PublicKey::EC(ec)) => {
            let bits = ec.key_size();
            (format!("ECDSA P-{bits}"), bits)
        }
        Ok(_) if cert.public_key().algorithm.algorithm.to_id_string() == "1.3.101.112" => {
            ("Ed25519".into(), 256)
        }
        Ok(_) | Err(_) => (cert.public_key().algorithm.algorithm.to_id_string(), 0),
    }
}

/// Inspects DER certificates (leaf first); `key_spki` is the public key of
/// a private key to compare with the leaf.
pub fn inspect(chain: &[Vec<u8>], key_spki: Option<&[u8]>) -> Result<Report, CertError> {
    let mut certs = Vec::new();
    let mut parsed = Vec::new();
    for (i, der) in chain.iter().enumerate() {
        let (_, c) = X509Certificate::from_der(der).map_err(|e| CertError::NotX509 {
            index: i + 1,
            reason: e.to_string(),
        })?;
        parsed.push(c);
    }
    let now = ASN1Time::now();
    let mut warnings = Vec::new();
    for (i, c) in parsed.iter().enumerate() {
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = c.subject_alternative_name() {
            for n in &ext.value.general_names {
                match n {
                    GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                    GeneralName::IPAddress(ip) => sans.push(format!("IP:{}", ip_text(ip))),
                    GeneralName::RFC822Name(m) => sans.push(format!("email:{m}")),
                    _ => {}
                }
            }
        }
        let mut ku = Vec::new();
        if let Ok(Some(k)) = c.key_usage() {
            let k = k.value;
            for (on, name) in [
                (k.digital_signature(), "digitalSignature"),
                (k.non_repudiation(), "nonRepudiation"),
                (k.key_encipherment(), "keyEncipherment"),
                (k.data_encipherment(), "dataEncipherment"),
                (k.key_agreement(), "keyAgreement"),
                (k.key_cert_sign(), "keyCertSign"),
                (k.crl_sign(), "cRLSign"),
            ] {
                if on {
                    ku.push(name.to_string());
                }
            }
        }
        let mut eku = Vec::new();
        if let Ok(Some(e)) = c.extended_key_usage() {
            let e = e.value;
            for (on, name) in [
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.email_protection, "emailProtection"),
            ] {
                if on {
                    eku.push(name.to_string());
                }
            }
        }
        let is_ca = c
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca);
        let (key, key_bits) = key_of(c);
        let validity = c.validity();
        let days_left = (validity.not_after.timestamp() - now.timestamp()) / 86_400;
        let which = if i == 0 {
            "the certificate".to_string()
        } else {
            format!("chain certificate {}", i + 1)
        };
        if validity.not_after < now {
            warnings.push(format!("{which} expired on {}", validity.not_after));
        } else if days_left < 30 {
            warnings.push(format!(
                "{which} expires in {days_left} days ({})",
                validity.not_after
            ));
        }
        if validity.not_before > now {
            warnings.push(format!(
                "{which} is not valid before {}",
                validity.not_before
            ));
        }
        if key == "RSA" && key_bits < 2048 {
            warnings.push(format!(
                "{which} has a weak {key_bits}-bit RSA key; use 2048 bits or more"
            ));
        }
        if i == 0 && !is_ca && sans.is_empty() {
            warnings.push("the certificate has no subjectAltName: clients that follow RFC 6125 will not match its name".into());
        }
        certs.push(CertReport {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            sans,
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
            days_left,
            key,
            key_bits,
            key_usage: ku,
            extended_key_usage: eku,
            is_ca,
            sha256: hex(&crate::tls::sha256(&chain[i])),
            spki_sha256: hex(&crate::tls::sha256(c.public_key().raw)),
        });
    }
    let chain_order_ok = parsed.windows(2).all(|w| w[0].issuer() == w[1].subject());
    if !chain_order_ok {
        warnings.push(
            "the chain is out of order: each certificate must be followed by its issuer".into(),
        );
    }
    let key_matches = key_spki.map(|spki| {
        parsed
            .first()
            .is_some_and(|leaf| leaf.public_key().raw == spki)
    });
    if key_matches == Some(false) {
        warnings.push("the private key does not match the certificate".into());
    }
    Ok(Report {
        certificates: certs,
        chain_order_ok,
        key_matches,
        warnings,
    })
}

fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => hex(b),
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.certificates.len();
        for (i, c) in self.certificates.iter().enumerate() {
            let role = if c.is_ca {
                "CA"
            } else if i == 0 {
                "leaf"
            } else {
                "chain"
            };
            writeln!(f, "certificate {} of {n} ({role})", i + 1)?;
            writeln!(f, "  subject:  {}", c.subject)?;
            writeln!(f, "  issuer:   {}", c.issuer)?;
            // A CA names no hosts; a leaf without SANs is worth saying.
            if !(c.is_ca && c.sans.is_empty()) {
                writeln!(
                    f,
                    "  SANs:     {}",
                    if c.sans.is_empty() {
                        "(none)".into()
                    } else {
                        c.sans.join(", ")
                    }
                )?;
            }
            writeln!(
                f,
                "  valid:    {} .. {} ({} days left)",
                c.not_before, c.not_after, c.days_left
            )?;
            writeln!(f, "  key:      {} ({} bits)", c.key, c.key_bits)?;
            // Only the usages the certificate states.
            match (c.key_usage.is_empty(), c.extended_key_usage.is_empty()) {
                (true, true) => {}
                (false, true) => writeln!(f, "  usage:    {}", c.key_usage.join(", "))?,
                (true, false) => writeln!(
                    f,
                    "  usage:    extended: {}",
                    c.extended_key_usage.join(", ")
                )?,
                (false, false) => writeln!(
                    f,
                    "  usage:    {}; extended: {}",
                    c.key_usage.join(", "),
                    c.extended_key_usage.join(", ")
                )?,
            }
            writeln!(f, "  SHA-256:  {}", c.sha256)?;
            writeln!(f, "  SPKI SHA-256: {}", c.spki_sha256)?;
        }
        if n > 1 {
            writeln!(
                f,
                "chain order: {}",
                if self.chain_order_ok {
                    "ok (each certificate followed by its issuer)"
                } else {
                    "WRONG"
                }
            )?;
        }
        if let Some(m) = self.key_matches {
            writeln!(
                f,
                "private key: {}",
                if m {
                    "matches the certificate"
                } else {
                    "DOES NOT match the certificate"
                }
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
