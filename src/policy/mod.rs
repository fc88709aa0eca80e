//! Policy: the immutable [`Snapshot`] a connection runs under, and pure
//! check functions that return a permit or a [`Refusal`]. Nothing here does
//! I/O; the protocol code asks, the policy answers.

pub mod limits;
pub mod matcher;
pub mod profile;
pub mod requiretls;
pub mod route;

/// How a rule from the recipient's DNS (DANE) is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// Not looked up.
    Off,
    /// Looked up and checked; a failure is logged as `would refuse: …`
    /// and counted, and the message goes as if the rule were off.
    Report,
    /// Looked up, checked and obeyed.
    Enforce,
}

impl Enforcement {
    /// As the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Off => "off",
            Enforcement::Report => "report",
            Enforcement::Enforce => "enforce",
        }
    }
}

pub use limits::Limits;
pub use profile::{check_mail, ClientCert, ClientRules, Profile, Profiles, ServerRules, TlsState};

/// Why a recipient, a sender or a session is refused. The SMTP layer maps
/// each variant to exactly one reply.
/// Its kind (`RefusalKind`, derived) indexes the would-refuse counters
/// and names their `reason` label.
#[derive(Debug, Clone, PartialEq, strum::EnumDiscriminants)]
#[strum_discriminants(
    name(RefusalKind),
    derive(strum::EnumIter, strum::EnumCount, strum::IntoStaticStr),
    strum(serialize_all = "snake_case")
)]
pub enum Refusal {
    /// The recipient domain is not ours and the client may not relay.
    RelayDenied,
    /// The profile requires TLS and the session is in the clear.
    TlsRequired,
    /// The negotiated cipher is weaker than the profile's minimum.
    #[strum_discriminants(strum(serialize = "cipher"))]
    CipherTooWeak { bits: u16, min: u16 },
    /// The profile requires a client certificate and none was presented.
    ClientCertMissing,
    /// The certificate does not chain to the CA store (the reason).
    #[strum_discriminants(strum(serialize = "client_cert_unverified"))]
    ClientCertNotVerified(crate::model::Unverified),
    /// The certificate does not carry the required name.
    ClientCertName(String),
    /// The certificate matches none of the pinned fingerprints.
    ClientCertPin,
}

impl Refusal {
    /// The `reason` label of `sealgate_policy_would_refuse_total`.
    pub fn label(&self) -> &'static str {
        RefusalKind::from(self).into()
    }

    /// Its index in the would-refuse counters (the kinds' order).
    pub fn index(&self) -> usize {
        RefusalKind::from(self) as usize
    }
}

/// The recipient-side facts of the inbound policy, compiled once per
/// snapshot: domains lower-cased and without a trailing dot.
#[derive(Debug, Clone, Default)]
pub struct AcceptDomains {
    domains: Vec<String>,
}

impl AcceptDomains {
    pub fn new<S: AsRef<str>>(domains: &[S]) -> Self {
        AcceptDomains {
            domains: domains
                .iter()
                .map(|d| canonical_domain(d.as_ref()))
                .collect(),
        }
    }

    /// The first domain: where `<postmaster>` without a domain goes.
    pub fn first(&self) -> Option<&str> {
        self.domains.first().map(String::as_str)
    }

    pub fn contains(&self, domain: &str) -> bool {
        let d = canonical_domain(domain);
        self.domains.contains(&d)
    }
}

/// Domains compare in one form: [`crate::model::canonical_domain`].
pub use crate::model::canonical_domain;

/// IN-5: may this recipient be accepted from this client?
///
/// The rule (documented in docs/configuration.md): a recipient is local when
/// its domain, compared in one canonical form (A-labels, lower case, no
/// trailing dot: `bücher.example` is `xn--bcher-kva.example`), is in
/// `accept_domains`; `<postmaster>` without a domain is always local
/// (RFC 5321 §4.5.1). Anything else, address literals included, needs
/// relay permission. The local part is not interpreted: `user%other@ours`
/// is a local address of ours, never a route elsewhere.
pub fn check_recipient(
    accept: &AcceptDomains,
    relay_allowed: bool,
    domain: &str,
) -> Result<(), Refusal> {
    if domain.is_empty() || accept.contains(domain) || relay_allowed {
        Ok(())
    } else {
        Err(Refusal::RelayDenied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_in_accept_domains_only() {
        let ours = AcceptDomains::new(&["Example.com"]);
        let table: &[(&str, bool, Result<(), Refusal>)] = &[
            ("example.com", false, Ok(())),
            ("EXAMPLE.COM", false, Ok(())),
            ("example.com.", false, Ok(())),
            ("", false, Ok(())),
            ("other.example", false, Err(Refusal::RelayDenied)),
            ("sub.example.com", false, Err(Refusal::RelayDenied)),
            ("[192.0.2.1]", false, Err(Refusal::RelayDenied)),
            ("other.example", true, Ok(())),
        ];
        for (domain, relay, want) in table {
            assert_eq!(
                check_recipient(&ours, *relay, domain),
                *want,
                "{domain} relay={relay}"
            );
        }
    }
}
