//! `sealgate probe` (CERT-4): connect to a mail server as the delivery
//! agent would and report what it offers — banner, STARTTLS, TLS version,
//! cipher, key bits, certificate chain, verification, name match — and
//! whether a named outbound profile would accept it, and if not, why.
//! Postfix's posttls-finger, for people.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::smtp::reply_parse;

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub host: String,
    pub address: String,
    pub banner: String,
    pub starttls_offered: bool,
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub bits: Option<u16>,
    /// Verified / Trusted / Untrusted.
    pub trust: Option<String>,
    pub chain: Option<crate::cert::inspect::Report>,
    pub profile: Option<String>,
    /// Whether the profile (or opportunistic delivery) would deliver here.
    pub would_deliver: bool,
    pub reason: String,
    /// What DANE says of this host (with `--mx` and DNSSEC on).
    pub dane: Option<String>,
    /// What the domain's MTA-STS policy says of it (with `--mx`).
    pub mta_sts: Option<String>,
    /// Checks that would refuse were they enforced (report-only modes),
    /// as delivery logs them.
    pub would_refuse: Vec<String>,
}

/// What the recipient's DNS said of the host probed (`--mx`).
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub dane: Option<crate::model::Dane>,
    pub sts: Option<crate::model::Sts>,
}

/// Why a probe could not be made (as opposed to what it found, which is
/// the report); the wording is what `sealgate probe` prints.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The configuration's outbound side (CA files, client certificate).
    #[error(transparent)]
    Config(#[from] crate::config::LoadErrors),
    #[error("no profile named \"{0}\"")]
    NoProfile(String),
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Reply(String),
    #[error("bad host name {host}: {reason}")]
    BadName { host: String, reason: String },
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// A target that is not `HOST[:PORT]`, `[IP]:PORT` or `DOMAIN[:PORT]`,
    /// or that does not resolve.
    #[error("{0}")]
    Target(String),
    #[error("cannot start the resolver: {0}")]
    Resolver(std::io::Error),
}

fn read_reply<R: BufRead>(r: &mut R) -> Result<reply_parse::Parsed, ProbeError> {
    let mut buf = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(ProbeError::Closed);
        }
        buf.extend_from_slice(&line);
        if let Some((reply, _)) =
            reply_parse::parse(&buf).map_err(|e| ProbeError::Reply(e.to_string()))?
        {
            return Ok(reply);
        }
    }
}

/// Probes `host` at `addr`; `profile` names an outbound profile of `cfg`.
/// Every decision — TLS needed or not, the certificate's verdict by the
/// profile, DANE and MTA-STS, a retry in the clear — is delivery's own
/// ([`crate::delivery::attempt::Attempt`]); the probe only talks.
pub fn probe(
    cfg: &Config,
    host: &str,
    addr: SocketAddr,
    profile: Option<&str>,
    published: &Published,
) -> Result<ProbeReport, ProbeError> {
    use crate::delivery::attempt::{self, AfterFailure, Attempt, Next};
    use crate::smtp::client::{Failure, TlsFailure, TlsMode};
    let (roots, profiles, outbound) = cfg.outbound()?;
    let profile_idx = match profile {
        Some(name) => Some(
            profiles
                .list
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| ProbeError::NoProfile(name.to_string()))?,
        ),
        None => None,
    };
    let rules = profile_idx.map(|i| profiles.list[i].client.clone());
    let policy = attempt::Policy {
        rules: rules.clone(),
        profile: profile.map(str::to_string),
        dane: match published.dane {
            Some(_) => cfg.dane(),
            None => crate::policy::Enforcement::Off,
        },
        request: crate::model::TlsRequest::Default,
    };
    let target = crate::delivery::Target {
        host: host.to_string(),
        addr,
        dane: published.dane.clone().unwrap_or(crate::model::Dane::None),
        sts: published.sts.unwrap_or(crate::model::Sts::None),
    };
    let mut decision = Attempt::new(policy, vec![target]);
    // What delivery decides before it connects: a host passed over, or the
    // TLS it needs.
    let (mode, passed_over) = match decision.next_host() {
        Next::Connect { tls, .. } => (tls, None),
        Next::Exhausted(f) => (TlsMode::Mandatory, Some(f)),
    };
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|source| ProbeError::Connect { addr, source })?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    decision.connected();
    let mut reader = BufReader::new(tcp.try_clone()?);
    let mut writer = tcp;
    let banner = read_reply(&mut reader)?;
    let helo = cfg.hostname();
    writeln!(writer, "EHLO {helo}\r")?;
    let ehlo = read_reply(&mut reader)?;
    let starttls_offered = ehlo
        .lines
        .iter()
        .skip(1)
        .any(|l| l.eq_ignore_ascii_case("STARTTLS"));
    let mut report = ProbeReport {
        host: host.to_string(),
        address: addr.to_string(),
        banner: banner.one_line(),
        starttls_offered,
        tls_version: None,
        cipher: None,
        bits: None,
        trust: None,
        chain: None,
        profile: profile.map(str::to_string),
        would_deliver: true,
        reason: String::new(),
        dane: published.dane.as_ref().map(describe_dane),
        mta_sts: published.sts.map(describe_sts),
        would_refuse: Vec::new(),
    };
    // The verdict for a failure, in the words delivery logs (the
    // profile's refusal and a missing STARTTLS said as the probe always
    // said them).
    let refused = |f: &Failure| match f {
        Failure::TlsNotOffered => format!("TLS is required, but was not offered by host {host}"),
        Failure::Tls(TlsFailure::Certificate(why)) => {
            format!("profile \"{}\" would refuse: {why}", profile.unwrap_or(""))
        }
        Failure::Greeting(_)
        | Failure::Hello(_)
        | Failure::StartTlsRefused(_)
        | Failure::Handshake(_)
        | Failure::Tls(_)
        | Failure::Protocol(_)
        | Failure::Timeout(_)
        | Failure::Connection(_)
        | Failure::TooBig { .. }
        | Failure::Dane(_)
        | Failure::RequireTls(_)
        | Failure::NeedsSmtpUtf8(_) => f.outcome().detail,
    };
    if let Some(f) = passed_over {
        let _ = writeln!(writer, "QUIT\r");
        report.would_deliver = false;
        report.reason = refused(&f);
        return Ok(finish(report, &mut decision, false));
    }
    let now = || crate::model::unix_now() as i64;
    if !starttls_offered || mode == TlsMode::Off {
        let _ = writeln!(writer, "QUIT\r");
        if mode == TlsMode::Mandatory {
            let f = Failure::TlsNotOffered;
            report.would_deliver = false;
            report.reason = refused(&f);
            decision.host_failed(f, true, now());
            return Ok(finish(report, &mut decision, false));
        }
        report.reason = "STARTTLS not offered: opportunistic delivery would go in the clear".into();
        return Ok(finish(report, &mut decision, true));
    }
    writeln!(writer, "STARTTLS\r")?;
    let go = read_reply(&mut reader)?;
    if go.code != 220 {
        report.would_deliver = mode != TlsMode::Mandatory;
        report.reason = format!("STARTTLS refused: {}", go.one_line());
        return Ok(finish(report, &mut decision, mode != TlsMode::Mandatory));
    }
    let name = rustls::pki_types::ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| ProbeError::BadName {
        host: host.to_string(),
        reason: e.to_string(),
    })?;
    let conn = rustls::ClientConnection::new(outbound.config(profile_idx), name)?;
    let mut tls = rustls::StreamOwned::new(conn, writer);
    // Drive the handshake with an EHLO, as delivery does.
    let handshake = tls
        .write_all(format!("EHLO {helo}\r\n").as_bytes())
        .and_then(|_| tls.flush());
    let mut first = [0u8; 1];
    let handshake = handshake.and_then(|_| tls.read(&mut first).map(|_| ()));
    if let Err(e) = handshake {
        let error = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(r) => r.clone(),
            None => rustls::Error::General(e.to_string()),
        };
        return Ok(
            match decision.host_failed(Failure::Handshake(error), true, now()) {
                AfterFailure::RetryClear => {
                    report.reason = format!(
                        "TLS handshake failed ({e}): opportunistic delivery would retry in the clear"
                    );
                    finish(report, &mut decision, true)
                }
                AfterFailure::NextHost | AfterFailure::GiveUp(_) => {
                    report.would_deliver = false;
                    report.reason = format!("TLS handshake failed: {e}");
                    finish(report, &mut decision, false)
                }
            },
        );
    }
    let conn = &tls.conn;
    let facts = attempt::cert_facts(conn, host, rules.as_ref(), &Arc::new(roots));
    report.tls_version = Some(facts.version.to_string());
    report.cipher = Some(facts.cipher.clone());
    report.bits = Some(facts.bits);
    let chain: Vec<Vec<u8>> = facts.chain.iter().map(|c| c.to_vec()).collect();
    report.chain = crate::cert::inspect::inspect(&chain, None).ok();
    report.trust = Some(facts.trust.as_str().to_string());
    let verdict = decision.tls_established(&facts, now());
    let _ = tls.write_all(b"QUIT\r\n");
    // What DANE and MTA-STS made of the certificate.
    if let Some(crate::model::Dane::Usable { .. }) = &published.dane {
        report.dane = Some(match (&verdict, decision.tls_level()) {
            (_, crate::delivery::TlsLevel::Dane) => {
                "the certificate matches the TLSA records".to_string()
            }
            (Err(Failure::Tls(TlsFailure::Dane(why))), _) => format!("refused: {why}"),
            (Ok(()) | Err(_), _) => "not checked: another rule refused first".to_string(),
        });
    }
    if let Some(s @ (crate::model::Sts::Enforce | crate::model::Sts::Testing { .. })) =
        published.sts
    {
        let mode = if s == crate::model::Sts::Enforce {
            "enforce"
        } else {
            "testing"
        };
        report.mta_sts = Some(if facts.trust == crate::tls::outbound::Trust::Verified {
            format!("{mode}: the certificate is valid and names the host")
        } else {
            format!(
                "{mode}: {}: the certificate is {}",
                if s == crate::model::Sts::Enforce {
                    "refused"
                } else {
                    "would refuse"
                },
                facts.trust.as_str()
            )
        });
    }
    Ok(match verdict {
        Ok(()) => {
            report.reason = match profile {
                Some(p) => format!("profile \"{p}\" would accept this server"),
                None => "opportunistic delivery would use TLS".into(),
            };
            finish(report, &mut decision, true)
        }
        Err(f) => {
            report.would_deliver = false;
            report.reason = refused(&f);
            decision.host_failed(f, true, now());
            finish(report, &mut decision, false)
        }
    })
}

/// The attempt's report-only refusals, as delivery would log them.
fn finish(
    mut report: ProbeReport,
    decision: &mut crate::delivery::attempt::Attempt,
    delivered: bool,
) -> ProbeReport {
    let _ = decision.finish(delivered);
    while let Some(line) = decision.poll_log() {
        if let crate::delivery::attempt::Log::WouldRefuse { why, .. } = line {
            report.would_refuse.push(why);
        }
    }
    report
}

/// What the recipient's DNS says of the host, before any TLS.
fn describe_dane(d: &crate::model::Dane) -> String {
    match d {
        crate::model::Dane::None => "not DANE (unsigned zone, or no TLSA records)".to_string(),
        crate::model::Dane::Unusable => {
            "TLSA records, none usable: TLS required, not authenticated".to_string()
        }
        crate::model::Dane::Failed(e) => format!("lookup failed: {e}"),
        crate::model::Dane::Usable { records, .. } => {
            format!("{} usable TLSA record(s): TLS required", records.len())
        }
    }
}

fn describe_sts(s: crate::model::Sts) -> String {
    match s {
        crate::model::Sts::None => "no policy applies".to_string(),
        crate::model::Sts::Enforce => {
            "enforce: TLS with a valid certificate naming the host required".to_string()
        }
        crate::model::Sts::Testing { mx_ok } => format!(
            "testing: reported only{}",
            if mx_ok {
                ""
            } else {
                " (the host is outside the policy's MX patterns)"
            }
        ),
    }
}

/// `HOST[:PORT]` or `[IP]:PORT` to (host name, address); port 25 by default.
pub fn target(spec: &str) -> Result<(String, SocketAddr), ProbeError> {
    let bad = ProbeError::Target;
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| bad(format!("{spec}: unbalanced [")))?;
        (h.to_string(), p.strip_prefix(':').map(str::to_string))
    } else {
        match spec.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.to_string())),
            _ => (spec.to_string(), None),
        }
    };
    let port: u16 = port
        .map(|p| p.parse().map_err(|_| bad(format!("{spec}: bad port"))))
        .transpose()?
        .unwrap_or(25);
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| bad(format!("{host}: {e}")))?
        .next()
        .ok_or_else(|| bad(format!("{host}: no address")))?;
    Ok((host, addr))
}

/// `DOMAIN[:PORT]` with `--mx`: the first MX host of the domain (by
/// preference, as delivery would try it), through the configured resolver.
pub fn mx_target(cfg: &Config, spec: &str) -> Result<(String, SocketAddr, Published), ProbeError> {
    let bad = ProbeError::Target;
    let (domain, port) = match spec.rsplit_once(':') {
        Some((d, p)) => (
            d,
            p.parse::<u16>()
                .map_err(|_| bad(format!("{spec}: bad port")))?,
        ),
        None => (spec, 25),
    };
    let resolver = cfg.start_resolver().map_err(ProbeError::Resolver)?;
    // As delivery would look them up (no route profile considered: the
    // probe judges by the profile it is given).
    let dane = (cfg.dane() != crate::policy::Enforcement::Off).then_some(port);
    let sts = match cfg.mta_sts() {
        crate::policy::Enforcement::Off => None,
        enforcement => Some(crate::dns::StsLookup {
            roots: cfg.outbound()?.2.web_roots,
            enforcement,
        }),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    resolver.targets(domain, true, dane, sts.clone(), move |t| {
        let _ = tx.send(t);
    });
    let targets = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| bad(format!("{domain}: no answer from DNS")))?
        // The lookup's own text names the domain, except for a null MX.
        .map_err(|e| match e {
            crate::dns::LookupError::NullMx => bad(format!("{domain}: {e}")),
            crate::dns::LookupError::NotFound(why)
            | crate::dns::LookupError::Temporary(why)
            | crate::dns::LookupError::Policy(why) => bad(why),
        })?;
    let found = targets
        .into_iter()
        .next()
        .ok_or_else(|| bad(format!("{domain}: no MX host")))?;
    let published = Published {
        dane: dane.map(|_| found.dane.clone()),
        sts: sts.map(|_| found.sts),
    };
    Ok((found.host, SocketAddr::new(found.ip, port), published))
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "host:      {} ({})", self.host, self.address)?;
        writeln!(f, "banner:    {}", self.banner)?;
        writeln!(
            f,
            "STARTTLS:  {}",
            if self.starttls_offered {
                "offered"
            } else {
                "not offered"
            }
        )?;
        if let (Some(v), Some(c), Some(b)) = (&self.tls_version, &self.cipher, self.bits) {
            writeln!(f, "TLS:       {v} with cipher {c} ({b}/{b} bits)")?;
        }
        if let Some(t) = &self.trust {
            writeln!(f, "trust:     {t}")?;
        }
        if let Some(chain) = &self.chain {
            write!(f, "{chain}")?;
        }
        if let Some(d) = &self.dane {
            writeln!(f, "DANE:      {d}")?;
        }
        if let Some(s) = &self.mta_sts {
            writeln!(f, "MTA-STS:   {s}")?;
        }
        for w in &self.would_refuse {
            writeln!(f, "report:    would refuse: {w}")?;
        }
        writeln!(
            f,
            "verdict:   {} — {}",
            if self.would_deliver {
                "deliver"
            } else {
                "refuse"
            },
            self.reason
        )
    }
}
