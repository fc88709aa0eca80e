//! Compiled connection profiles (docs/policy.md) and the inbound checks
//! made at MAIL FROM (IN-4, docs/requirements.md). Pure functions: the
//! session asks, these answer.

use super::matcher::{Client, MatchedBy, ProfileIndex};
use super::Refusal;
pub use crate::model::{name_matches, ClientCert};

/// `[profile.server]`: what sealgate demands of clients it receives from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerRules {
    pub mandatory_tls: bool,
    pub min_cipher_bits: Option<u16>,
    pub request_client_cert: bool,
    pub require_verified_client_cert: bool,
    /// `None`: no name check; `Some("")`: the client's verified host name.
    pub client_cert_name: Option<String>,
    pub client_cert_sha256: Vec<[u8; 32]>,
    /// Every check runs; a failure is logged `would refuse: …` and
    /// counted, and the command is accepted.
    pub report_only: bool,
}

impl ServerRules {
    /// Whether the TLS server must ask this client for a certificate.
    pub fn wants_client_cert(&self) -> bool {
        self.request_client_cert || self.needs_client_cert()
    }

    /// Whether a session without a (suitable) certificate is refused.
    fn needs_client_cert(&self) -> bool {
        self.require_verified_client_cert
            || self.client_cert_name.is_some()
            || !self.client_cert_sha256.is_empty()
    }

    /// Whether a session in the clear is refused.
    pub fn needs_tls(&self) -> bool {
        self.mandatory_tls || self.min_cipher_bits.is_some() || self.needs_client_cert()
    }
}

/// `[profile.client]`: what sealgate demands of servers it delivers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRules {
    pub mandatory_tls: bool,
    /// Minimum TLS version: 12 or 13 (`system` resolves to
    /// `tls.default_version` when compiled).
    pub min_version: u8,
    /// `high`: only 256-bit suites; `medium` and `any`: every suite
    /// rustls has (all AEAD, at least 128 bits).
    pub high_ciphers_only: bool,
    pub verify: bool,
    /// Names the certificate must carry (SAN first, then CN; wildcards);
    /// empty = the host name connected to.
    pub match_names: Vec<String>,
    pub pin_sha256: Vec<[u8; 32]>,
    pub client_certificate: bool,
    /// Every check runs; a failure is logged `would refuse: …` and
    /// counted, and the message goes as if the rules were off.
    pub report_only: bool,
}

/// One compiled `[[profile]]`.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub name: String,
    pub notes: String,
    pub relay: bool,
    pub server: ServerRules,
    pub client: ClientRules,
}

/// All profiles and their index.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    pub list: Vec<Profile>,
    pub index: ProfileIndex,
    /// Some profile that matches by sender domain (decided only at MAIL,
    /// after the handshake) wants a client certificate.
    pub sender_profile_wants_cert: bool,
}

/// The profile a client runs under at some point of its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub index: usize,
    pub matched_by: MatchedBy,
}

impl Profiles {
    pub fn select(&self, client: &Client<'_>) -> Option<Chosen> {
        self.index
            .select(client)
            .map(|(index, matched_by)| Chosen { index, matched_by })
    }

    /// The profile for a MAIL FROM: the one chosen by address or name at
    /// connect, else by sender domain, else the `*` default. The session
    /// and `explain` both ask this.
    pub fn at_mail(&self, at_connect: Option<&Chosen>, client: &Client<'_>) -> Option<Chosen> {
        match at_connect {
            Some(c) if c.matched_by.by_client() => Some(c.clone()),
            _ => self.select(client),
        }
    }

    /// IN-5: relay permission comes only from a profile that matched the
    /// client by address or name, never from a claimed sender domain.
    pub fn relay_allowed(&self, at_connect: Option<&Chosen>) -> bool {
        at_connect.is_some_and(|c| {
            c.matched_by.by_client() && self.list.get(c.index).is_some_and(|p| p.relay)
        })
    }

    pub fn get(&self, chosen: Option<&Chosen>) -> Option<&Profile> {
        chosen.and_then(|c| self.list.get(c.index))
    }

    /// Whether the TLS server should ask this client for a certificate:
    /// its profile by address or name wants one, or it has none of those
    /// and a sender-domain profile (decided later) might.
    pub fn ask_for_certificate(&self, at_connect: Option<&Chosen>) -> bool {
        match at_connect {
            Some(c) if c.matched_by.by_client() => self.list[c.index].server.wants_client_cert(),
            Some(c) => {
                self.list[c.index].server.wants_client_cert() || self.sender_profile_wants_cert
            }
            None => self.sender_profile_wants_cert,
        }
    }
}

/// What the session knows of its TLS layer, for the checks.
#[derive(Debug, Clone, Copy)]
pub struct TlsState<'a> {
    pub bits: u16,
    pub client_cert: Option<&'a ClientCert>,
}

/// The checks of `[profile.server]`, made at MAIL FROM: TLS, cipher
/// strength, client certificate (verified, name, pins). `verified_name` is
/// the client's forward-confirmed host name, the default certificate name.
pub fn check_mail(
    rules: &ServerRules,
    tls: Option<TlsState<'_>>,
    verified_name: Option<&str>,
) -> Result<(), Refusal> {
    let Some(tls) = tls else {
        return if rules.needs_tls() {
            Err(Refusal::TlsRequired)
        } else {
            Ok(())
        };
    };
    if let Some(min) = rules.min_cipher_bits {
        if tls.bits < min {
            return Err(Refusal::CipherTooWeak {
                bits: tls.bits,
                min,
            });
        }
    }
    if !rules.needs_client_cert() {
        return Ok(());
    }
    let Some(cert) = tls.client_cert else {
        return Err(Refusal::ClientCertMissing);
    };
    if rules.require_verified_client_cert {
        if let Err(why) = &cert.verified {
            return Err(Refusal::ClientCertNotVerified(why.clone()));
        }
    }
    if let Some(name) = &rules.client_cert_name {
        let want = if name.is_empty() {
            verified_name
        } else {
            Some(name.as_str())
        };
        match want {
            Some(want) if certificate_matches(cert, want) => {}
            Some(want) => return Err(Refusal::ClientCertName(want.to_string())),
            None => {
                return Err(Refusal::ClientCertName(
                    "the client's verified host name (it has none)".into(),
                ))
            }
        }
    }
    if !rules.client_cert_sha256.is_empty()
        && !rules
            .client_cert_sha256
            .iter()
            .any(|p| *p == cert.cert_sha256 || *p == cert.spki_sha256)
    {
        return Err(Refusal::ClientCertPin);
    }
    Ok(())
}

/// RFC 6125 §6.4: DNS-ID (subjectAltName dNSName) first; the CN only when
/// the certificate has no dNSName. `want` may itself be `*.example.com`.
pub fn certificate_matches(cert: &ClientCert, want: &str) -> bool {
    let want = super::canonical_domain(want);
    let mut names = cert.dns_names.iter().map(String::as_str);
    if cert.dns_names.is_empty() {
        cert.common_name
            .as_deref()
            .into_iter()
            .any(|cn| name_matches(&want, &cn.to_ascii_lowercase()))
    } else {
        names.any(|n| name_matches(&want, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown_issuer() -> crate::model::Unverified {
        crate::model::Unverified::Rejected(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn cert(names: &[&str], cn: Option<&str>, verified: bool) -> ClientCert {
        ClientCert {
            verified: if verified {
                Ok(())
            } else {
                Err(unknown_issuer())
            },
            dns_names: names.iter().map(|s| s.to_string()).collect(),
            common_name: cn.map(str::to_string),
            subject: "CN=test".into(),
            cert_sha256: [1; 32],
            spki_sha256: [2; 32],
        }
    }

    #[test]
    fn name_matching_san_first_then_cn_wildcards() {
        let table: &[(&ClientCert, &str, bool)] = &[
            (
                &cert(&["mail.b.example"], None, true),
                "mail.b.example",
                true,
            ),
            (
                &cert(&["mail.b.example"], None, true),
                "MAIL.B.EXAMPLE.",
                true,
            ),
            (&cert(&["*.b.example"], None, true), "mail.b.example", true),
            (
                &cert(&["*.b.example"], None, true),
                "a.mail.b.example",
                false,
            ),
            (&cert(&["mail.b.example"], None, true), "*.b.example", true),
            (
                &cert(&["x.mail.b.example"], None, true),
                "*.b.example",
                true,
            ),
            (&cert(&["b.example"], None, true), "*.b.example", false),
            // CN is used only when there is no dNSName.
            (
                &cert(&[], Some("mail.b.example"), true),
                "mail.b.example",
                true,
            ),
            (
                &cert(&["other.example"], Some("mail.b.example"), true),
                "mail.b.example",
                false,
            ),
        ];
        for (c, want, ok) in table {
            assert_eq!(
                certificate_matches(c, want),
                *ok,
                "{want} vs {:?}/{:?}",
                c.dns_names,
                c.common_name
            );
        }
    }

    fn tls(bits: u16, client_cert: Option<&ClientCert>) -> Option<TlsState<'_>> {
        Some(TlsState { bits, client_cert })
    }

    #[test]
    fn mail_checks_in_order() {
        let mandatory = ServerRules {
            mandatory_tls: true,
            ..Default::default()
        };
        assert_eq!(
            check_mail(&mandatory, None, None),
            Err(Refusal::TlsRequired)
        );
        assert_eq!(check_mail(&mandatory, tls(128, None), None), Ok(()));
        let strong = ServerRules {
            min_cipher_bits: Some(256),
            ..Default::default()
        };
        assert_eq!(check_mail(&strong, None, None), Err(Refusal::TlsRequired));
        assert_eq!(
            check_mail(&strong, tls(128, None), None),
            Err(Refusal::CipherTooWeak {
                bits: 128,
                min: 256
            })
        );
        assert_eq!(check_mail(&strong, tls(256, None), None), Ok(()));

        let verified = ServerRules {
            require_verified_client_cert: true,
            ..Default::default()
        };
        assert_eq!(
            check_mail(&verified, tls(256, None), None),
            Err(Refusal::ClientCertMissing)
        );
        let bad = cert(&["a.example"], None, false);
        assert_eq!(
            check_mail(&verified, tls(256, Some(&bad)), None),
            Err(Refusal::ClientCertNotVerified(unknown_issuer()))
        );
        let good = cert(&["mail.b.example"], None, true);
        assert_eq!(check_mail(&verified, tls(256, Some(&good)), None), Ok(()));

        let by_host = ServerRules {
            client_cert_name: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            check_mail(&by_host, tls(256, Some(&good)), Some("mail.b.example")),
            Ok(())
        );
        assert!(matches!(
            check_mail(&by_host, tls(256, Some(&good)), Some("x.example")),
            Err(Refusal::ClientCertName(_))
        ));
        assert!(matches!(
            check_mail(&by_host, tls(256, Some(&good)), None),
            Err(Refusal::ClientCertName(_))
        ));

        let pinned = ServerRules {
            client_cert_sha256: vec![[2; 32]],
            ..Default::default()
        };
        assert_eq!(
            check_mail(&pinned, tls(256, Some(&good)), None),
            Ok(()),
            "SPKI pin"
        );
        let other_pin = ServerRules {
            client_cert_sha256: vec![[9; 32]],
            ..Default::default()
        };
        assert_eq!(
            check_mail(&other_pin, tls(256, Some(&good)), None),
            Err(Refusal::ClientCertPin)
        );
        // Asking is not requiring.
        let ask = ServerRules {
            request_client_cert: true,
            ..Default::default()
        };
        assert!(ask.wants_client_cert() && !ask.needs_tls());
        assert_eq!(check_mail(&ask, None, None), Ok(()));
    }
}
