//! `sealgate explain`: what the gateway would do with a given client. The
//! profile choice is the policy's own selection; the replies to MAIL and
//! RCPT come from a real `smtp::server::Session` driven in memory, once in
//! the clear and once as if over TLS, so they are the gateway's replies by
//! construction (address syntax included).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::policy::matcher::{Client, MatchedBy};
use crate::policy::{Profiles, ServerRules};
use crate::smtp::server::{Action, Peer, Session, TlsFacts};
use crate::smtp::Endpoint;
use crate::snapshot::Snapshot;

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
    /// Per recipient, what decides the TLS of its delivery: the route's
    /// profile, or the recipient's DNS (DANE, MTA-STS) as configured.
    pub delivery: Vec<(String, String)>,
}

fn choice(profiles: &Profiles, idx: usize, by: MatchedBy) -> ProfileChoice {
    ProfileChoice {
        profile: profiles.list[idx].name.clone(),
        reason: format!("matched by {by}"),
        matched_by: by,
    }
}

/// What a session answered to MAIL FROM and to each RCPT TO (`None`:
/// not asked, MAIL was refused).
struct Conversation {
    mail: String,
    rcpts: Option<Vec<String>>,
}

/// The first reply line in `out`, without its line ending.
fn first_reply(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .next()
        .unwrap_or("")
        .trim_end()
        .to_string()
}

/// A client certificate that meets `rules`: verified, naming what they
/// want named, with the first pinned fingerprint.
fn fitting_certificate(
    rules: &ServerRules,
    client_name: Option<&str>,
) -> crate::policy::ClientCert {
    let name = match rules.client_cert_name.as_deref() {
        Some("") | None => client_name.unwrap_or("client.invalid").to_ascii_lowercase(),
        Some(n) => n.to_ascii_lowercase(),
    };
    let pin = rules.client_cert_sha256.first().copied().unwrap_or([0; 32]);
    crate::policy::ClientCert {
        verified: Ok(()),
        dns_names: vec![name],
        common_name: None,
        subject: "CN=explain".into(),
        cert_sha256: pin,
        spki_sha256: pin,
    }
}

/// Drives a gateway session through EHLO, MAIL and the RCPTs, in the
/// clear (`tls` none) or as after the handshake `tls` describes.
fn converse(snapshot: &Arc<Snapshot>, q: &Question<'_>, tls: Option<TlsFacts>) -> Conversation {
    let now = Instant::now();
    let mut session = Session::new(
        snapshot.clone(),
        Peer {
            ip: q.client_ip,
            port: 0,
            name: None,
        },
    );
    session.client_identified(q.client_name.map(str::to_string));
    session.greet(now);
    let mut out = Vec::new();
    session.poll_output(&mut out);
    if let Some(facts) = tls {
        session.tls_established(facts, now);
    }
    let mut say = |session: &mut Session, line: &str| -> String {
        let input = format!("{line}\r\n");
        let mut fed = 0;
        while fed < input.len() {
            let step = session.feed(&input.as_bytes()[fed..], now);
            fed += step.consumed;
            match step.action {
                None if step.consumed == 0 => break,
                None | Some(Action::Spill(_) | Action::StartTls | Action::Store(_)) => {}
                Some(Action::Close) => break,
            }
        }
        out.clear();
        session.poll_output(&mut out);
        first_reply(&out)
    };
    say(
        &mut session,
        &format!("EHLO {}", q.helo.unwrap_or("explain.invalid")),
    );
    let mail = say(
        &mut session,
        &format!("MAIL FROM:<{}>", q.from.unwrap_or("")),
    );
    if !mail.starts_with('2') {
        return Conversation { mail, rcpts: None };
    }
    let rcpts = q
        .rcpts
        .iter()
        .map(|r| say(&mut session, &format!("RCPT TO:<{r}>")))
        .collect();
    Conversation {
        mail,
        rcpts: Some(rcpts),
    }
}

pub fn explain(cfg: &Config, q: &Question<'_>) -> Explanation {
    let profiles = &cfg.profiles;
    // The gateway's snapshot, less what needs files (certificates): the
    // session is driven in memory.
    let snapshot = Arc::new(Snapshot {
        profiles: profiles.clone(),
        ..Snapshot::plain(cfg.hostname(), cfg.accept_domains(), cfg.limits())
    });
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
    // The session's own rules (policy::Profiles), asked the same way.
    let at_mail = profiles.at_mail(at_connect.as_ref(), &mail_client);
    let relay_allowed = profiles.relay_allowed(at_connect.as_ref());
    let rules = profiles
        .get(at_mail.as_ref())
        .map(|p| p.server.clone())
        .unwrap_or_default();
    let clear = converse(&snapshot, q, None);
    let over_tls = converse(&snapshot, q, Some(TlsFacts::assumed(None)));
    let verdict = |reply: &str| {
        if reply.starts_with('2') {
            "accepted".to_string()
        } else {
            reply.to_string()
        }
    };
    let mail_in_clear = verdict(&clear.mail);
    let needs_cert = rules.needs_tls()
        && (rules.require_verified_client_cert
            || rules.client_cert_name.is_some()
            || !rules.client_cert_sha256.is_empty());
    let with_cert = needs_cert.then(|| {
        converse(
            &snapshot,
            q,
            Some(TlsFacts::assumed(Some(fitting_certificate(
                &rules,
                q.client_name,
            )))),
        )
    });
    let mail_over_tls = match &with_cert {
        Some(w) if !over_tls.mail.starts_with('2') && w.mail.starts_with('2') => format!(
            "accepted with a client certificate that meets the requirements above; without one: {}",
            over_tls.mail
        ),
        _ => verdict(&over_tls.mail),
    };
    // Recipients as the session judged them once MAIL was accepted (with
    // what the profile asks for first: it may refuse MAIL otherwise).
    let rcpt_replies = with_cert
        .and_then(|w| w.rcpts)
        .or(over_tls.rcpts)
        .or(clear.rcpts);
    let winner = at_mail.as_ref().map(|c| c.index);
    Explanation {
        client_ip: q.client_ip.to_string(),
        client_name: q.client_name.map(str::to_string),
        name_needed: q.client_name.is_none() && profiles.index.needs_names(),
        at_connect: at_connect
            .as_ref()
            .map(|c| choice(profiles, c.index, c.matched_by.clone())),
        lost: candidates
            .into_iter()
            .filter(|(i, _)| Some(*i) != winner)
            .map(|(i, by)| choice(profiles, i, by))
            .collect(),
        starttls_advertised: !cfg.file.tls.certificates.is_empty(),
        asks_for_client_certificate: profiles.ask_for_certificate(at_connect.as_ref()),
        relay_allowed,
        at_mail: at_mail
            .as_ref()
            .map(|c| choice(profiles, c.index, c.matched_by.clone())),
        requirements: requirements(&rules),
        mail_in_clear,
        mail_over_tls,
        recipients: q
            .rcpts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let domain = r.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                let v = match rcpt_replies.as_ref().and_then(|v| v.get(i)) {
                    Some(reply) if reply.starts_with('2') => {
                        if accept.contains(domain) || domain.is_empty() {
                            "accepted: a local domain (accept_domains)".into()
                        } else {
                            "accepted: relayed (the client's profile has relay = true)".into()
                        }
                    }
                    Some(reply) => reply.clone(),
                    None => format!("not reached: MAIL FROM is refused ({})", clear.mail),
                };
                (r.clone(), v)
            })
            .collect(),
        delivery: q
            .rcpts
            .iter()
            .map(|r| {
                let domain = r.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                (r.clone(), delivery_sources(cfg, domain))
            })
            .collect(),
    }
}

/// Which sources decide the TLS of mail for `domain`, in the order
/// delivery consults them (docs/delivery.md): the route's profile alone
/// when it has one; otherwise DANE, then MTA-STS, then opportunistic TLS.
fn delivery_sources(cfg: &Config, domain: &str) -> String {
    use crate::policy::route::Via;
    use crate::policy::Enforcement;
    let route = cfg.routes.for_domain(domain);
    let via = &route.via;
    if let Some(p) = route.profile.and_then(|i| cfg.profiles.list.get(i)) {
        return format!(
            "via {via}; profile \"{}\" decides TLS (DANE and MTA-STS are not consulted)",
            p.name
        );
    }
    let mode = |e: Enforcement| match e {
        Enforcement::Off => "off",
        Enforcement::Report => "report-only",
        Enforcement::Enforce => "enforced",
    };
    let sources = route.sources(cfg.dane(), cfg.mta_sts());
    let mut list = vec![format!("DANE {}", mode(cfg.dane()))];
    if matches!(route.via, Via::Mx) {
        list.push(format!("MTA-STS {}", mode(cfg.mta_sts())));
    }
    let live = if sources.dane.is_some() || sources.mta_sts.is_some() {
        format!(" (--dns, or `sealgate policy show {domain}`, for the live verdicts)")
    } else {
        String::new()
    };
    format!(
        "via {via}; no profile: {}, then opportunistic TLS{live}",
        list.join(", then ")
    )
}

/// Adds to each recipient's delivery line what DANE and MTA-STS say now,
/// asked of `resolver` as delivery would (the MTA-STS policy fetched
/// afresh): the live verdict of every source.
pub fn add_live_verdicts(e: &mut Explanation, cfg: &Config, resolver: &crate::dns::Resolver) {
    let roots = cfg.outbound().ok().map(|(.., outbound)| outbound.web_roots);
    for (rcpt, text) in &mut e.delivery {
        let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let route = cfg.routes.for_domain(domain);
        let sources = route.sources(cfg.dane(), cfg.mta_sts());
        let sts = sources
            .mta_sts
            .zip(roots.clone())
            .map(|(enforcement, roots)| crate::dns::StsLookup { roots, enforcement });
        let (tx, rx) = std::sync::mpsc::channel();
        if sources.dane.is_some() || sources.mta_sts.is_some() {
            let tx = tx.clone();
            let (dane_why, sts_why) = route.not_consulted(cfg.dane(), cfg.mta_sts());
            resolver.policy(
                domain,
                crate::dns::PolicyQuery::Refresh,
                sources.dane,
                sts.clone(),
                crate::dns::NotConsulted {
                    dane: dane_why,
                    mta_sts: sts_why,
                },
                move |t| {
                    let _ = tx.send(t.text);
                },
            );
            let live = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| "no answer from DNS".into());
            let live: Vec<&str> = live.lines().collect();
            text.push_str(&format!("; now: {}", live.join("; ")));
        }
        // What delivery would ask of each host now: its own decision.
        let policy = crate::delivery::attempt::Policy::for_route(
            &cfg.profiles,
            route.profile,
            cfg.dane(),
            crate::model::TlsRequest::Default,
        );
        crate::delivery::attempt::live_demands(
            resolver,
            &route.via,
            domain,
            route.port,
            sources.dane,
            sts,
            policy,
            move |t| {
                let _ = tx.send(t);
            },
        );
        let hosts = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| "delivery: no answer from DNS".into());
        for line in hosts.lines() {
            text.push_str(&format!("; {line}"));
        }
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
        for (r, v) in &self.delivery {
            writeln!(f, "delivery to <{r}>: {v}")?;
        }
        Ok(())
    }
}
