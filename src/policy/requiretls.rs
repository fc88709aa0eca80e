//! REQUIRETLS (RFC 8689 §4.2.1): the hosts a message that asked for it
//! may be relayed to. Sans-IO: the delivery glue asks before it connects.

use crate::model::{Dane, Sts};

use super::{ClientRules, Enforcement};

/// What authenticates a host for a REQUIRETLS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticated {
    /// DNSSEC-signed TLSA records, enforced (RFC 8689 §4.2.1 item 2,
    /// RFC 7672).
    Dane,
    /// An MTA-STS policy in enforce mode (RFC 8461 §5).
    MtaSts,
    /// The route's profile verifies the certificate against the CA store
    /// and a name (`verify`, with `match_names` or the host's), or pins it
    /// — the operator's own policy for this partner.
    Profile,
}

impl Authenticated {
    pub fn as_str(self) -> &'static str {
        match self {
            Authenticated::Dane => "DANE",
            Authenticated::MtaSts => "MTA-STS",
            Authenticated::Profile => "the route profile",
        }
    }
}

/// Why a REQUIRETLS message does not go to a host: a bounce with
/// `5.7.30` once no host is left (RFC 8689 §4.2.1, §6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "{host} is authenticated by neither DANE, an enforced MTA-STS policy nor a route profile that verifies its certificate"
    )]
    Unauthenticated { host: String },
    /// §4.2.1 item 4: the server must offer REQUIRETLS itself.
    #[error("the host does not offer REQUIRETLS")]
    NotOffered,
}

/// Whether `host` may take a REQUIRETLS message, and on what authority.
/// Report-only rules never qualify: they do not stop a delivery.
pub fn authentication(
    host: &str,
    dane: &Dane,
    dane_mode: Enforcement,
    sts: Sts,
    rules: Option<&ClientRules>,
) -> Result<Authenticated, Refused> {
    match (dane, dane_mode) {
        (Dane::Usable { .. }, Enforcement::Enforce) => return Ok(Authenticated::Dane),
        (Dane::Usable { .. }, Enforcement::Off | Enforcement::Report)
        | (Dane::None | Dane::Unusable | Dane::Failed(_), _) => {}
    }
    match sts {
        Sts::Enforce => return Ok(Authenticated::MtaSts),
        Sts::None | Sts::Testing { .. } => {}
    }
    match rules {
        Some(r) if !r.report_only && (r.verify || !r.pin_sha256.is_empty()) => {
            Ok(Authenticated::Profile)
        }
        Some(_) | None => Err(Refused::Unauthenticated {
            host: host.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable() -> Dane {
        Dane::Usable {
            records: Vec::new(),
            names: Vec::new(),
        }
    }

    #[test]
    fn only_enforced_authentication_qualifies() {
        let e = Enforcement::Enforce;
        assert_eq!(
            authentication("mx", &usable(), e, Sts::None, None),
            Ok(Authenticated::Dane)
        );
        assert!(authentication("mx", &usable(), Enforcement::Report, Sts::None, None).is_err());
        assert!(authentication("mx", &Dane::Unusable, e, Sts::None, None).is_err());
        assert_eq!(
            authentication("mx", &Dane::None, e, Sts::Enforce, None),
            Ok(Authenticated::MtaSts)
        );
        assert!(authentication("mx", &Dane::None, e, Sts::Testing { mx_ok: true }, None).is_err());
        let verify = ClientRules {
            verify: true,
            ..Default::default()
        };
        assert_eq!(
            authentication("mx", &Dane::None, e, Sts::None, Some(&verify)),
            Ok(Authenticated::Profile)
        );
        let report_only = ClientRules {
            verify: true,
            report_only: true,
            ..Default::default()
        };
        assert_eq!(
            authentication("mx", &Dane::None, e, Sts::None, Some(&report_only)),
            Err(Refused::Unauthenticated { host: "mx".into() })
        );
        let opportunistic = ClientRules::default();
        assert!(authentication("mx", &Dane::None, e, Sts::None, Some(&opportunistic)).is_err());
    }
}
