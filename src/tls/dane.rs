//! DANE authentication of an SMTP server's certificate (RFC 7672 §3,
//! RFC 6698 §2.1, RFC 7671): judged after the handshake, against the
//! usable TLSA records of the host.
//!
//! - DANE-EE (usage 3): the leaf certificate (selector 0) or its public key
//!   (selector 1) matches the record; names and dates are not checked
//!   (RFC 7672 §3.1.1).
//! - DANE-TA (usage 2): a certificate of the presented chain matches the
//!   record; the chain from the leaf up to it verifies with it as the
//!   trust anchor, and the leaf names the host (RFC 7672 §3.1.2, §3.2.2).

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::RootCertStore;

use super::{certificate_names, provider};
use crate::model::{name_matches, Tlsa};

/// Why the server's certificate fails the host's TLSA records.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DaneRefusal {
    #[error("no server certificate")]
    NoCertificate,
    #[error("the server certificate matches no TLSA record")]
    NoMatch,
    /// DANE-TA matched, but the chain does not verify up to it.
    #[error("the chain does not verify from the DANE-TA trust anchor: {0}")]
    TrustAnchorChain(rustls::Error),
    /// DANE-TA matched and verified, but the leaf carries none of the
    /// reference identifiers.
    #[error("server certificate names {names:?} do not match {}", wanted.join(" or "))]
    Names {
        names: Vec<String>,
        wanted: Vec<String>,
    },
}

/// Which record authenticated the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaneMatch {
    EndEntity,
    TrustAnchor,
}

/// The data a record's selector picks from `der`, digested as its matching
/// type says; `None` for what this code cannot read.
fn associated(der: &[u8], selector: u8, matching: u8) -> Option<Vec<u8>> {
    let picked: Vec<u8> = match selector {
        0 => der.to_vec(),
        1 => x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, c)| c.public_key().raw.to_vec())?,
        _ => return None,
    };
    match matching {
        0 => Some(picked),
        1 => Some(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &picked)
                .as_ref()
                .to_vec(),
        ),
        2 => Some(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, &picked)
                .as_ref()
                .to_vec(),
        ),
        _ => None,
    }
}

fn matches(der: &[u8], r: &Tlsa) -> bool {
    associated(der, r.selector, r.matching).is_some_and(|d| d == r.data)
}

/// Judges the presented `chain` (leaf first) against `records` (the usable
/// ones); a DANE-TA certificate must carry one of `wanted`, the reference
/// identifiers (RFC 7672 §3.2.2). Any record that matches suffices.
pub fn check(
    chain: &[CertificateDer<'_>],
    wanted: &[String],
    records: &[Tlsa],
) -> Result<DaneMatch, DaneRefusal> {
    let Some(leaf) = chain.first() else {
        return Err(DaneRefusal::NoCertificate);
    };
    if records.iter().any(|r| r.usage == 3 && matches(leaf, r)) {
        return Ok(DaneMatch::EndEntity);
    }
    let mut refusal = DaneRefusal::NoMatch;
    for r in records.iter().filter(|r| r.usage == 2) {
        // The trust anchor is an issuer in the chain (RFC 7671 §5.2.2: the
        // server includes it), not the leaf itself.
        let Some(at) = chain
            .iter()
            .skip(1)
            .position(|c| matches(c, r))
            .map(|i| i + 1)
        else {
            continue;
        };
        let mut roots = RootCertStore::empty();
        if let Err(e) = roots.add(chain[at].clone()) {
            refusal = DaneRefusal::TrustAnchorChain(e);
            continue;
        }
        let verified = rustls::server::ParsedCertificate::try_from(leaf).and_then(|parsed| {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &roots,
                &chain[1..at],
                UnixTime::now(),
                provider().signature_verification_algorithms.all,
            )
        });
        if let Err(e) = verified {
            refusal = DaneRefusal::TrustAnchorChain(e);
            continue;
        }
        let wanted: Vec<String> = wanted
            .iter()
            .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        let names = certificate_names(leaf);
        if names
            .iter()
            .any(|n| wanted.iter().any(|w| name_matches(w, n)))
        {
            return Ok(DaneMatch::TrustAnchor);
        }
        refusal = DaneRefusal::Names { names, wanted };
    }
    Err(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_and_leaf(names: &[&str]) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&leaf_key, &issuer)
                .unwrap();
        (ca_cert.der().clone(), leaf.der().clone())
    }

    fn record(usage: u8, selector: u8, matching: u8, der: &[u8]) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data: associated(der, selector, matching).unwrap(),
        }
    }

    fn names(n: &str) -> Vec<String> {
        vec![n.to_string()]
    }

    #[test]
    fn dane_ee_matches_the_leaf_or_its_key_whatever_its_names() {
        let (ca, leaf) = ca_and_leaf(&["other.example"]);
        let chain = [leaf.clone(), ca.clone()];
        for (s, m) in [(0, 0), (0, 1), (1, 1), (1, 2)] {
            assert_eq!(
                check(&chain, &names("mx.example"), &[record(3, s, m, &leaf)]),
                Ok(DaneMatch::EndEntity),
                "3 {s} {m}"
            );
        }
        let mut wrong = record(3, 1, 1, &leaf);
        wrong.data[0] ^= 1;
        assert_eq!(
            check(&chain, &names("mx.example"), &[wrong]),
            Err(DaneRefusal::NoMatch)
        );
        // A DANE-EE record of the issuer does not authenticate the leaf.
        assert_eq!(
            check(&chain, &names("mx.example"), &[record(3, 1, 1, &ca)]),
            Err(DaneRefusal::NoMatch)
        );
    }

    #[test]
    fn dane_ta_needs_the_chain_and_the_host_name() {
        let (ca, leaf) = ca_and_leaf(&["mx.example"]);
        let ta = record(2, 0, 1, &ca);
        assert_eq!(
            check(
                &[leaf.clone(), ca.clone()],
                &names("mx.example"),
                std::slice::from_ref(&ta)
            ),
            Ok(DaneMatch::TrustAnchor)
        );
        // A CNAME'd MX host: the expanded name (the TLSA base) counts too.
        assert_eq!(
            check(
                &[leaf.clone(), ca.clone()],
                &["mx.example".to_string(), "alias.example".to_string()],
                std::slice::from_ref(&ta)
            ),
            Ok(DaneMatch::TrustAnchor)
        );
        assert!(matches!(
            check(
                &[leaf.clone(), ca.clone()],
                &names("mx.other"),
                std::slice::from_ref(&ta)
            ),
            Err(DaneRefusal::Names { .. })
        ));
        // The anchor must be in the chain the server sent.
        assert_eq!(
            check(std::slice::from_ref(&leaf), &names("mx.example"), &[ta]),
            Err(DaneRefusal::NoMatch)
        );
        // Another CA's anchor: no match.
        let (other_ca, _) = ca_and_leaf(&["mx.example"]);
        assert_eq!(
            check(
                &[leaf.clone(), ca.clone()],
                &names("mx.example"),
                &[record(2, 1, 1, &other_ca)]
            ),
            Err(DaneRefusal::NoMatch)
        );
    }
}
