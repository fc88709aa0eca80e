//! `sealgate explain` (OPS-6): what the gateway would do with a given
//! client, using the same selection and checks as the sessions.

use std::net::IpAddr;

use serde::Serialize;

use crate::config::Config;
use crate::policy::matcher::{Client, MatchedBy};
use crate::policy::{self, Profiles, Refusal, ServerRules};

/// The question.
pub struct Question<'a> {
    pub client_ip: IpAddr,
    /// The client's forward-confirmed host name, as the gateway would find
    /// it by DNS.
    pub client_name: Option<&'a str>,
    pub helo: Option<&'a str>,
    pub from: Option<&'a str>,
    pub rcpts: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct ProfileChoice {
    pub profile: String,
    pub matched_by: MatchedBy,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub client_ip: String,
    pub client_name: Option<String>,
    /// Host-name profiles exist but no name was given.
    pub name_needed: bool,
    /// The profile chosen when the client connects (by address or name).
    pub at_connect: Option<ProfileChoice>,
    /// Profiles that also matched and lost, most specific first.
    pub lost: Vec<ProfileChoice>,
    pub starttls_advertised: bool,
    pub asks_for_client_certificate: bool,
    pub relay_allowed: bool,
    /// The profile that applies at MAIL FROM (may be a sender-domain one).
    pub at_mail: Option<ProfileChoice>,
    pub requirements: Vec<String>,
    /// What MAIL FROM gets in the clear and over TLS (assuming the
    /// strongest cipher and a verified certificate with the right name).
    pub mail_in_clear: String,
    pub mail_over_tls: String,
    pub recipients: Vec<(String, String)>,
}

fn choice(profiles: &Profiles, idx: usize, by: MatchedBy) -> ProfileChoice {
    ProfileChoice {
        profile: profiles.list[idx].name.clone(),
        reason: format!("matched by {by}"),
        matched_by: by,
    }
}

pub fn explain(cfg: &Config, q: &Question<'_>) -> Explanation {
    let (profiles, _) = crate::config::compile_profiles(&cfg.file);
    let accept = cfg.accept_domains();
    let sender_domain = q.from.and_then(|f| f.rsplit_once('@').map(|(_, d)| d));
    let connect_client = Client {
        ip: q.client_ip,
        name: q.client_name,
        sender_domain: None,
    };
    let mail_client = Client {
        sender_domain,
        ..connect_client
    };
    let at_connect = profiles.select(&connect_client);
    let candidates = profiles.index.candidates(&mail_client);
    let at_mail = match &at_connect {
        Some(c) if c.matched_by.by_client() => Some(c.clone()),
        _ => profiles.select(&mail_client),
    };
    let relay_allowed = at_connect
        .as_ref()
        .is_some_and(|c| c.matched_by.by_client() && profiles.list[c.index].relay);
    let rules = profiles
        .get(at_mail.as_ref())
        .map(|p| p.server.clone())
        .unwrap_or_default();
    let strongest = policy::TlsState {
        bits: 256,
        client_cert: None,
    };
    let mail_in_clear = verdict(policy::check_mail(&rules, None, q.client_name));
    let mail_over_tls = if rules.needs_tls()
        && (rules.require_verified_client_cert
            || rules.client_cert_name.is_some()
            || !rules.client_cert_sha256.is_empty())
    {
        "accepted with a client certificate that meets the requirements above; refused (554 5.7.1) otherwise".to_string()
    } else {
        verdict(policy::check_mail(&rules, Some(strongest), q.client_name))
    };
    let winner = at_mail.as_ref().map(|c| c.index);
    Explanation {
        client_ip: q.client_ip.to_string(),
        client_name: q.client_name.map(str::to_string),
        name_needed: q.client_name.is_none() && profiles.index.needs_names(),
        at_connect: at_connect
            .as_ref()
            .map(|c| choice(&profiles, c.index, c.matched_by.clone())),
        lost: candidates
            .into_iter()
            .filter(|(i, _)| Some(*i) != winner)
            .map(|(i, by)| choice(&profiles, i, by))
            .collect(),
        starttls_advertised: !cfg.file.tls.certificates.is_empty(),
        asks_for_client_certificate: profiles.ask_for_certificate(at_connect.as_ref()),
        relay_allowed,
        at_mail: at_mail
            .as_ref()
            .map(|c| choice(&profiles, c.index, c.matched_by.clone())),
        requirements: requirements(&rules),
        mail_in_clear,
        mail_over_tls,
        recipients: q
            .rcpts
            .iter()
            .map(|r| {
                let domain = r.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                let v = match policy::check_recipient(&accept, relay_allowed, domain) {
                    Ok(()) if accept.contains(domain) || domain.is_empty() => {
                        "accepted: a local domain (accept_domains)".into()
                    }
                    Ok(()) => "accepted: relayed (the client's profile has relay = true)".into(),
                    Err(r) => verdict(Err(r)),
                };
                (r.clone(), v)
            })
            .collect(),
    }
}

fn requirements(r: &ServerRules) -> Vec<String> {
    let mut v = Vec::new();
    if r.mandatory_tls {
        v.push("TLS is mandatory".into());
    }
    if let Some(bits) = r.min_cipher_bits {
        v.push(format!("cipher of at least {bits} bits"));
    }
    if r.request_client_cert {
        v.push("a client certificate is asked for".into());
    }
    if r.require_verified_client_cert {
        v.push("the client certificate must verify against the CA store".into());
    }
    match r.client_cert_name.as_deref() {
        Some("") => v.push("the certificate must name the client's verified host name".into()),
        Some(n) => v.push(format!("the certificate must name {n}")),
        None => {}
    }
    if !r.client_cert_sha256.is_empty() {
        v.push(format!(
            "the certificate must match one of {} pinned fingerprint(s)",
            r.client_cert_sha256.len()
        ));
    }
    v
}

fn verdict(r: Result<(), Refusal>) -> String {
    match r {
        Ok(()) => "accepted".into(),
        Err(refusal) => crate::smtp::server::refusal_reply(refusal).to_string(),
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client {}", self.client_ip)?;
        match &self.client_name {
            Some(n) => writeln!(f, " (verified name {n})")?,
            None => writeln!(f, " (no verified name)")?,
        }
        if self.name_needed {
            writeln!(
                f,
                "  note: some profiles match host names; give --client-name to test them"
            )?;
        }
        match &self.at_connect {
            Some(c) => writeln!(f, "profile at connect: {:?}, {}", c.profile, c.reason)?,
            None => writeln!(
                f,
                "profile at connect: none (no profile matches this address or name)"
            )?,
        }
        match &self.at_mail {
            Some(c) => writeln!(f, "profile at MAIL FROM: {:?}, {}", c.profile, c.reason)?,
            None => writeln!(f, "profile at MAIL FROM: none")?,
        }
        for l in &self.lost {
            writeln!(
                f,
                "  also matched, less specific: {:?}, {}",
                l.profile, l.reason
            )?;
        }
        writeln!(
            f,
            "STARTTLS advertised: {}",
            if self.starttls_advertised {
                "yes"
            } else {
                "no (no certificate)"
            }
        )?;
        writeln!(
            f,
            "client certificate asked for: {}",
            if self.asks_for_client_certificate {
                "yes"
            } else {
                "no"
            }
        )?;
        writeln!(
            f,
            "may relay: {}",
            if self.relay_allowed { "yes" } else { "no" }
        )?;
        if self.requirements.is_empty() {
            writeln!(f, "requirements: none")?;
        } else {
            writeln!(f, "requirements: {}", self.requirements.join("; "))?;
        }
        writeln!(f, "MAIL FROM in the clear: {}", self.mail_in_clear)?;
        writeln!(f, "MAIL FROM over TLS: {}", self.mail_over_tls)?;
        for (r, v) in &self.recipients {
            writeln!(f, "RCPT TO:<{r}>: {v}")?;
        }
        Ok(())
    }
}
