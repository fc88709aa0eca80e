//! One outbound attempt's decisions, sans-IO: which host next and with
//! what TLS, what a finished handshake's certificate is worth, whether a
//! failure means the clear, the next host or the end, what goes in the TLS
//! report and what is logged. Delivery (`shard::outbound`), `sealgate
//! probe` and `sealgate policy show` run this same code; the callers only
//! connect, read and write.
//!
//! The rules, in the order they are applied to each host:
//! - RFC 8689 §5: a `TLS-Required: No` message sets the recipient's DANE
//!   and MTA-STS policies aside (the operator's profile still applies).
//! - RFC 8689 §4.2.1: a REQUIRETLS message goes only to a host that DANE,
//!   an enforced MTA-STS policy or a verifying route profile authenticates.
//! - RFC 7672 §2.2: a host whose TLSA lookup failed is never used in the
//!   clear nor unchecked (DANE enforced): it is passed over.
//! - RFC 7672 §2.2, RFC 8461 §5: TLSA records (usable or not) or an
//!   enforced MTA-STS policy make TLS mandatory for the host.
//! - RFC 7672 §3: with usable TLSA records they alone judge the
//!   certificate; RFC 8461 §4.2: MTA-STS needs one that chains to a
//!   trusted root and names the MX host.
//! - Report-only modes judge the same way, log `would refuse`, count it
//!   and go on; a recipient policy's failure is still a failure in the
//!   TLS report (RFC 8460 §4.3).

use std::collections::VecDeque;
use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;

use crate::delivery::{posture, Target, TlsLevel, WouldRefuse};
use crate::model::TlsMode;
use crate::model::{Dane, Sts, TlsRequest};
use crate::policy::{requiretls, ClientRules, Enforcement};
use crate::smtp::failure::{Failure, TlsFailure};
use crate::tls::dane::DaneMatch;
use crate::tls::outbound::{Refusal, Trust};
use crate::tlsrpt;

/// What the destination asks of every host of one attempt: the route's
/// profile, how DANE applies, what the messages asked of TLS.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The route profile's client rules, if the route names one.
    pub rules: Option<ClientRules>,
    /// The route profile's name (for the posture's sources).
    pub profile: Option<String>,
    /// How DANE records are applied (`[outbound] dane`).
    pub dane: Enforcement,
    /// What the messages asked of TLS (RFC 8689), as the configuration
    /// lets it apply.
    pub request: TlsRequest,
}

impl Policy {
    /// The policy of a route whose profile is `profile` (an index into
    /// `profiles`), DANE applied as `dane`, for messages that asked
    /// `request` of TLS.
    pub fn for_route(
        profiles: &crate::policy::Profiles,
        profile: Option<usize>,
        dane: Enforcement,
        request: TlsRequest,
    ) -> Policy {
        let profile = profile.and_then(|i| profiles.list.get(i));
        Policy {
            rules: profile.map(|p| p.client.clone()),
            profile: profile.map(|p| p.name.clone()),
            dane,
            request,
        }
    }

    /// The TLS the attempt starts with, before any host's own policy: a
    /// report-only profile never makes TLS mandatory (it reports);
    /// REQUIRETLS does (RFC 8689 §4.2.1).
    pub fn base_tls(&self) -> TlsMode {
        let profile = self
            .rules
            .as_ref()
            .is_some_and(|r| r.mandatory_tls && !r.report_only);
        match (self.request, profile) {
            (TlsRequest::Required, _) | (TlsRequest::Default | TlsRequest::NotRequired, true) => {
                TlsMode::Mandatory
            }
            (TlsRequest::Default | TlsRequest::NotRequired, false) => TlsMode::Opportunistic,
        }
    }
}

/// What a finished handshake showed of the server: the caller reads it off
/// the TLS connection (`tls::outbound::server_facts`), the attempt judges.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// How far the chain and name were trusted.
    pub trust: Trust,
    /// Whether the route profile's certificate rules accept it.
    pub verdict: Result<(), Refusal>,
    /// The server's chain, leaf first (for DANE).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's notAfter (Unix seconds).
    pub not_after: Option<i64>,
    /// `TLSv1.3`, the suite and its bits.
    pub version: &'static str,
    pub cipher: String,
    pub bits: u16,
    /// The session was resumed (a ticket or session id from an earlier
    /// connection).
    pub resumed: bool,
}

/// Reads the facts of a finished handshake off the connection: the trust
/// level and the profile's verdict (`tls::outbound::check_server`), the
/// chain, the leaf's end, what was negotiated.
pub fn cert_facts(
    conn: &rustls::ClientConnection,
    host: &str,
    rules: Option<&ClientRules>,
    roots: &rustls::RootCertStore,
) -> CertFacts {
    let (trust, verdict) = crate::tls::outbound::check_server(conn, host, rules, roots);
    let chain: Vec<CertificateDer<'static>> = conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let not_after = chain
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .map(|(_, c)| c.validity().not_after.timestamp());
    let n = crate::tls::negotiated(conn).unwrap_or(crate::tls::Negotiated {
        version: "unknown",
        cipher: "unknown".into(),
        bits: 0,
    });
    CertFacts {
        trust,
        verdict,
        chain,
        not_after,
        version: n.version,
        cipher: n.cipher,
        bits: n.bits,
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    }
}

/// What to do next, after [`Attempt::next_host`].
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Connect to `addr` and run a session with `tls`. `fresh` says that
    /// `tls` differs from [`Attempt::tls_mode`] before this call (the host
    /// needs more, or less, than the last): a session made for that mode
    /// must be made anew.
    Connect {
        addr: SocketAddr,
        tls: TlsMode,
        fresh: bool,
    },
    /// No host is left: the messages not yet done end with this failure.
    Exhausted(Failure),
}

/// What a failed host means, after [`Attempt::host_failed`].
#[derive(Debug, Clone, PartialEq)]
pub enum AfterFailure {
    /// OUT-2: the TLS handshake failed under opportunistic TLS: the same
    /// host again, in the clear.
    RetryClear,
    /// The next host (call [`Attempt::next_host`]).
    NextHost,
    /// No host is left for this failure: what is left ends with it.
    GiveUp(Failure),
}

/// What an attempt says about itself, typed; `Display` is the log wording
/// (target `send`).
#[derive(Debug, Clone, PartialEq)]
pub enum Log {
    /// RFC 8689 §5: `what` is "DANE", "MTA-STS" or both.
    SetAside {
        relay: String,
        what: &'static str,
    },
    /// A host not tried (REQUIRETLS, a failed DANE lookup).
    PassedOver {
        relay: String,
        why: String,
    },
    /// A report-only check failed.
    WouldRefuse {
        relay: String,
        what: WouldRefuse,
        why: String,
    },
    ConnectFailed {
        relay: String,
        error: String,
    },
    TlsEstablished {
        relay: String,
        word: &'static str,
        version: &'static str,
        cipher: String,
        bits: u16,
        resumed: bool,
    },
    HostFailed {
        relay: String,
        detail: String,
    },
    RetryClear {
        relay: String,
    },
}

impl Log {
    /// INFO, or WARN for a report-only refusal.
    pub fn is_warning(&self) -> bool {
        match self {
            Log::WouldRefuse { .. } => true,
            Log::SetAside { .. }
            | Log::PassedOver { .. }
            | Log::ConnectFailed { .. }
            | Log::TlsEstablished { .. }
            | Log::HostFailed { .. }
            | Log::RetryClear { .. } => false,
        }
    }
}

impl std::fmt::Display for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Log::SetAside { relay, what } => write!(
                f,
                "delivery via {relay}: TLS-Required: No: the recipient's {what} policy is set aside (RFC 8689 section 5)"
            ),
            Log::PassedOver { relay, why } => write!(f, "delivery via {relay} passed over: {why}"),
            Log::WouldRefuse { relay, why, .. } => {
                write!(f, "delivery via {relay}: would refuse: {why}")
            }
            Log::ConnectFailed { relay, error } => write!(f, "connect to {relay} failed: {error}"),
            Log::TlsEstablished {
                relay,
                word,
                version,
                cipher,
                bits,
                resumed,
            } => write!(
                f,
                "{word} TLS connection established to {relay}: {version} with cipher {cipher} ({bits}/{bits} bits){}",
                if *resumed { " (resumed)" } else { "" }
            ),
            Log::HostFailed { relay, detail } => {
                write!(f, "delivery via {relay} failed: {detail}")
            }
            Log::RetryClear { relay } => {
                write!(f, "TLS handshake with {relay} failed; retrying in the clear")
            }
        }
    }
}

/// What the attempt achieved as a whole, for the scheduler.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `host[ip]:port` of the server that answered last, if any.
    pub relay: Option<String>,
    pub tls_level: TlsLevel,
    pub would_refuse: Vec<WouldRefuse>,
    pub set_aside: bool,
    /// The posture of the session that delivered.
    pub observed: Option<posture::Observed>,
    pub sessions: Vec<tlsrpt::Session>,
}

/// The decisions of one attempt over its hosts. Events in (`next`,
/// `connected`, `tls_established`, `host_failed`, `finish`), decisions
/// out; log lines wait in [`Attempt::poll_log`].
#[derive(Debug)]
pub struct Attempt {
    policy: Policy,
    targets: Vec<Target>,
    /// The host being tried (`targets.len()` once none is left).
    target: usize,
    /// The TLS mode of the current (or last) session.
    tls_mode: TlsMode,
    relay: Option<String>,
    tls_level: TlsLevel,
    /// Version, suite and certificate end of the current connection's TLS.
    negotiated: Option<(String, String, Option<i64>)>,
    /// Why the last hosts failed or were passed over, for the outcome
    /// when none is left (see [`Attempt::note_failure`]).
    passed_over: Option<Failure>,
    set_aside: bool,
    sessions: Vec<tlsrpt::Session>,
    /// A report-only check that failed on the current host: the session
    /// is a failure in the TLS report although it went on.
    rpt_failure: Option<(tlsrpt::ResultType, String)>,
    /// The current connection's session is in `sessions` already.
    rpt_done: bool,
    would_refuse: Vec<WouldRefuse>,
    /// The host whose connect-time checks were last noted (a retry in the
    /// clear connects to it again: noted once).
    noted: Option<usize>,
    log: VecDeque<Log>,
}

impl Attempt {
    pub fn new(policy: Policy, targets: Vec<Target>) -> Attempt {
        let tls_mode = policy.base_tls();
        Attempt {
            policy,
            targets,
            target: 0,
            tls_mode,
            relay: None,
            tls_level: TlsLevel::None,
            negotiated: None,
            passed_over: None,
            set_aside: false,
            sessions: Vec::new(),
            rpt_failure: None,
            rpt_done: false,
            would_refuse: Vec::new(),
            noted: None,
            log: VecDeque::new(),
        }
    }

    /// The TLS mode of the current session.
    pub fn tls_mode(&self) -> TlsMode {
        self.tls_mode
    }

    /// The host name (or `[address]`) of the host being tried.
    pub fn host(&self) -> &str {
        self.targets
            .get(self.target)
            .map_or("", |t| t.host.as_str())
    }

    /// The TLS the current connection reached.
    pub fn tls_level(&self) -> TlsLevel {
        self.tls_level
    }

    /// The next log line, oldest first.
    pub fn poll_log(&mut self) -> Option<Log> {
        self.log.pop_front()
    }

    /// What DANE asks of the current host, when it applies: never for a
    /// `TLS-Required: No` message (RFC 8689 §5).
    fn dane(&self) -> &Dane {
        match self.policy.request {
            TlsRequest::NotRequired => &Dane::None,
            TlsRequest::Default | TlsRequest::Required => self
                .targets
                .get(self.target)
                .map_or(&Dane::None, |t| &t.dane),
        }
    }

    /// What the recipient's MTA-STS policy asks of the current host
    /// (likewise).
    fn sts(&self) -> Sts {
        match self.policy.request {
            TlsRequest::NotRequired => Sts::None,
            TlsRequest::Default | TlsRequest::Required => {
                self.targets.get(self.target).map_or(Sts::None, |t| t.sts)
            }
        }
    }

    /// `host[address]:port`, Postfix's way; a route to an address literal
    /// names the address as the host (`192.0.2.10[192.0.2.10]:25`).
    pub fn relay_name(&self) -> String {
        match self.targets.get(self.target) {
            Some(t) => format!(
                "{}[{}]:{}",
                t.host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim_start_matches("IPv6:"),
                t.addr.ip(),
                t.addr.port()
            ),
            None => "none".into(),
        }
    }

    /// Whether the current host needs TLS whatever the profile says: TLSA
    /// records under enforced DANE (RFC 7672 §2.2), an enforced MTA-STS
    /// policy (RFC 8461 §5).
    fn host_needs_tls(&self) -> bool {
        (self.policy.dane == Enforcement::Enforce
            && matches!(self.dane(), Dane::Usable { .. } | Dane::Unusable))
            || self.sts() == Sts::Enforce
    }

    /// The next host to connect to, passing over those the rules exclude.
    pub fn next_host(&mut self) -> Next {
        while self.target < self.targets.len() {
            let first_look = self.noted != Some(self.target);
            if first_look {
                self.note_set_aside();
            }
            if self.policy.request == TlsRequest::Required {
                // RFC 8689 §4.2.1: only to a host authenticated by DANE,
                // MTA-STS or the operator's verifying profile.
                if let Err(refused) = requiretls::authentication(
                    self.host(),
                    self.dane(),
                    self.policy.dane,
                    self.sts(),
                    self.policy.rules.as_ref(),
                ) {
                    self.log.push_back(Log::PassedOver {
                        relay: self.relay_name(),
                        why: format!("REQUIRETLS: {refused}"),
                    });
                    self.note_failure(Failure::RequireTls(refused));
                    self.advance();
                    continue;
                }
            }
            match (self.dane(), self.policy.dane) {
                (Dane::Failed(f), Enforcement::Enforce) => {
                    // RFC 7672 §2.2: never in the clear, never unchecked.
                    let f = f.clone();
                    self.log.push_back(Log::PassedOver {
                        relay: self.relay_name(),
                        why: f.to_string(),
                    });
                    let failure = Failure::Dane(f);
                    if let Some(r) = tls_report_result(&failure, false) {
                        self.rpt_session(Err(r));
                    }
                    self.note_failure(failure);
                    self.advance();
                    continue;
                }
                (Dane::Failed(f), Enforcement::Report) if first_look => {
                    let why = format!("DANE: {f}");
                    self.would_refuse(WouldRefuse::DaneLookup, why);
                }
                (Dane::Failed(_), Enforcement::Report | Enforcement::Off)
                | (Dane::None | Dane::Usable { .. } | Dane::Unusable, _) => {}
            }
            if let (Sts::Testing { mx_ok: false }, true) = (self.sts(), first_look) {
                self.would_refuse(
                    WouldRefuse::StsMx,
                    "MTA-STS: the host is not among the policy's MX patterns".into(),
                );
            }
            self.noted = Some(self.target);
            // Mandatory for this host, or back to the attempt's own mode
            // after a host that needed it (a clear retry's `Off` stays).
            let mode = match (self.host_needs_tls(), self.tls_mode) {
                (true, _) => TlsMode::Mandatory,
                (false, TlsMode::Mandatory) => self.policy.base_tls(),
                (false, current) => current,
            };
            let fresh = mode != self.tls_mode;
            self.tls_mode = mode;
            let Some(t) = self.targets.get(self.target) else {
                break;
            };
            return Next::Connect {
                addr: t.addr,
                tls: mode,
                fresh,
            };
        }
        let failure = self
            .passed_over
            .take()
            .unwrap_or_else(|| Failure::Connection("no host could be reached".into()));
        Next::Exhausted(failure)
    }

    /// The connection to the current host could not be made at once: the
    /// next host (call [`Attempt::next_host`]).
    pub fn connect_failed(&mut self, error: String) {
        self.log.push_back(Log::ConnectFailed {
            relay: self.relay_name(),
            error,
        });
        self.advance();
    }

    /// The current host answered the connection.
    pub fn connected(&mut self) {
        self.relay = Some(self.relay_name());
    }

    fn advance(&mut self) {
        self.target += 1;
        self.rpt_done = false;
        self.rpt_failure = None;
    }

    /// A `TLS-Required: No` message to a host with a recipient policy:
    /// the policy is set aside (RFC 8689 §5), said once per host.
    fn note_set_aside(&mut self) {
        if self.policy.request != TlsRequest::NotRequired {
            return;
        }
        let Some(t) = self.targets.get(self.target) else {
            return;
        };
        let what = match (!matches!(t.dane, Dane::None), !matches!(t.sts, Sts::None)) {
            (false, false) => return,
            (true, false) => "DANE",
            (false, true) => "MTA-STS",
            (true, true) => "DANE and MTA-STS",
        };
        self.log.push_back(Log::SetAside {
            relay: self.relay_name(),
            what,
        });
        self.set_aside = true;
    }

    /// Keeps the failure that best says why no host took the messages: a
    /// host that REQUIRETLS ruled out (a bounce) never hides one that may
    /// work later (a deferral).
    fn note_failure(&mut self, f: Failure) {
        let keep = matches!(f, Failure::RequireTls(_))
            && self
                .passed_over
                .as_ref()
                .is_some_and(|p| !matches!(p, Failure::RequireTls(_)));
        if !keep {
            self.passed_over = Some(f);
        }
    }

    /// A report-only check failed: say so, count it, go on. A recipient
    /// policy's failure is also the session's result in the TLS report.
    fn would_refuse(&mut self, what: WouldRefuse, why: String) {
        let rt = match what {
            WouldRefuse::DaneLookup => Some(tlsrpt::ResultType::DnssecInvalid),
            WouldRefuse::DaneCertificate => Some(tlsrpt::ResultType::TlsaInvalid),
            WouldRefuse::StsMx => Some(tlsrpt::ResultType::ValidationFailure),
            WouldRefuse::DaneNoTls | WouldRefuse::StsNoTls => {
                Some(tlsrpt::ResultType::StarttlsNotSupported)
            }
            // Set where the trust level is known (`tls_established`).
            WouldRefuse::StsCertificate => None,
            // The operator's own rules: not a recipient policy.
            WouldRefuse::ProfileCertificate | WouldRefuse::ProfileNoTls => None,
        };
        if let Some(rt) = rt {
            self.rpt_failure.get_or_insert((rt, why.clone()));
        }
        self.would_refuse.push(what);
        self.log.push_back(Log::WouldRefuse {
            relay: self.relay_name(),
            what,
            why,
        });
    }

    /// What the current host's recipient policy is, for the TLS report.
    fn rpt_policy(&self) -> tlsrpt::Policy {
        match (self.dane(), self.policy.dane) {
            (Dane::Usable { records, .. }, Enforcement::Report | Enforcement::Enforce) => {
                return tlsrpt::Policy::Tlsa {
                    records: tlsrpt::tlsa_strings(records),
                }
            }
            (Dane::Usable { .. }, Enforcement::Off)
            | (Dane::None | Dane::Unusable | Dane::Failed(_), _) => {}
        }
        match self.sts() {
            // The policy's text is the scheduler's to fill in (its cache).
            Sts::Enforce | Sts::Testing { .. } => tlsrpt::Policy::Sts {
                lines: Vec::new(),
                mx: Vec::new(),
            },
            Sts::None => tlsrpt::Policy::NoPolicyFound,
        }
    }

    /// The current host's session is over for the TLS report: `result`,
    /// or the report-only failure noted on the way.
    fn rpt_session(&mut self, result: Result<(), (tlsrpt::ResultType, String)>) {
        let Some(t) = self.targets.get(self.target) else {
            return;
        };
        if self.rpt_done {
            return;
        }
        self.rpt_done = true;
        let (mx_host, ip) = (t.host.clone(), t.addr.ip());
        let result = match (result, self.rpt_failure.take()) {
            (Ok(()), Some(f)) => Err(f),
            (r, _) => r,
        };
        let policy = self.rpt_policy();
        self.sessions.push(tlsrpt::Session {
            mx_host,
            ip,
            policy,
            result,
        });
    }

    /// The current connection's certificate is past its end at `now`
    /// (Unix seconds).
    fn cert_expired(&self, now: i64) -> bool {
        self.negotiated
            .as_ref()
            .and_then(|n| n.2)
            .is_some_and(|end| end < now)
    }

    /// The handshake with the current host finished: judge the
    /// certificate by the profile, MTA-STS and DANE. `Err` is the host's
    /// failure (give it to [`Attempt::host_failed`]). `now` is Unix
    /// seconds.
    pub fn tls_established(&mut self, facts: &CertFacts, now: i64) -> Result<(), Failure> {
        let host = self.host().to_string();
        // RFC 7672 §3: with usable TLSA records they alone decide.
        let dane = match self.dane() {
            Dane::Usable { records, names } => {
                Some(crate::tls::dane::check(&facts.chain, names, records))
            }
            Dane::None | Dane::Unusable | Dane::Failed(_) => None,
        };
        let word = match &dane {
            Some(Ok(DaneMatch::EndEntity)) => "DANE-verified (DANE-EE)",
            Some(Ok(DaneMatch::TrustAnchor)) => "DANE-verified (DANE-TA)",
            Some(Err(_)) | None => facts.trust.as_str(),
        };
        self.negotiated = Some((
            facts.version.to_string(),
            facts.cipher.clone(),
            facts.not_after,
        ));
        self.log.push_back(Log::TlsEstablished {
            relay: self.relay_name(),
            word,
            version: facts.version,
            cipher: facts.cipher.clone(),
            bits: facts.bits,
            resumed: facts.resumed,
        });
        let report_only = self.policy.rules.as_ref().is_some_and(|r| r.report_only);
        // RFC 8461 §4.2: a valid certificate naming the MX host.
        let verified = facts.trust == Trust::Verified;
        // The enforced rules first: a host they refuse counts no
        // report-only check.
        match (&facts.verdict, report_only) {
            (Err(refusal), false) => {
                return Err(Failure::Tls(TlsFailure::Certificate(refusal.clone())))
            }
            (Ok(()), _) | (Err(_), true) => {}
        }
        if self.sts() == Sts::Enforce && !verified {
            return Err(Failure::Tls(TlsFailure::Sts {
                host,
                trust: facts.trust.as_str(),
            }));
        }
        let dane = match (dane, self.policy.dane) {
            (Some(Err(refusal)), Enforcement::Enforce) => {
                return Err(Failure::Tls(TlsFailure::Dane(refusal)))
            }
            (dane, Enforcement::Enforce | Enforcement::Report | Enforcement::Off) => dane,
        };
        self.tls_level = match (&dane, self.sts(), verified) {
            (Some(Ok(_)), _, _) => TlsLevel::Dane,
            (Some(Err(_)) | None, Sts::Enforce, true) => TlsLevel::MtaSts,
            (Some(Err(_)) | None, _, _) => facts.trust.into(),
        };
        if let (Err(refusal), true) = (&facts.verdict, report_only) {
            self.would_refuse(
                WouldRefuse::ProfileCertificate,
                format!("profile (report-only): {refusal}"),
            );
        }
        if let (Sts::Testing { .. }, false) = (self.sts(), verified) {
            let why = format!(
                "MTA-STS: the certificate is {}; the policy needs a valid one naming the host",
                facts.trust.as_str()
            );
            let rt = match (self.cert_expired(now), facts.trust) {
                (true, _) => tlsrpt::ResultType::CertificateExpired,
                (false, Trust::Trusted) => tlsrpt::ResultType::CertificateHostMismatch,
                (false, Trust::Verified | Trust::Untrusted) => {
                    tlsrpt::ResultType::CertificateNotTrusted
                }
            };
            self.rpt_failure.get_or_insert((rt, why.clone()));
            self.would_refuse(WouldRefuse::StsCertificate, why);
        }
        if let Some(Err(refusal)) = dane {
            self.would_refuse(WouldRefuse::DaneCertificate, format!("DANE: {refusal}"));
        }
        self.rpt_session(Ok(()));
        Ok(())
    }

    /// The session with the current host failed with `f`; `unfinished`
    /// says whether messages are left. `now` is Unix seconds.
    pub fn host_failed(&mut self, f: Failure, unfinished: bool, now: i64) -> AfterFailure {
        let relay = self.relay_name();
        self.log.push_back(Log::HostFailed {
            relay: relay.clone(),
            detail: f.outcome().detail,
        });
        if let Some(r) = tls_report_result(&f, self.cert_expired(now)) {
            self.rpt_session(Err(r));
        }
        self.rpt_failure = None;
        self.rpt_done = false;
        self.tls_level = TlsLevel::None;
        self.negotiated = None;
        if !unfinished {
            return AfterFailure::GiveUp(f);
        }
        let next_host = match &f {
            Failure::Connection(_)
            | Failure::Greeting(_)
            | Failure::Hello(_)
            | Failure::Timeout(_)
            | Failure::Handshake(_)
            | Failure::Tls(_)
            | Failure::Dane(_)
            | Failure::RequireTls(_)
            | Failure::NeedsSmtpUtf8(_) => true,
            Failure::TlsNotOffered
            | Failure::StartTlsRefused(_)
            | Failure::Protocol(_)
            | Failure::TooBig { .. } => false,
        };
        if matches!(&f, Failure::Handshake(_)) && self.tls_mode == TlsMode::Opportunistic {
            // OUT-2: opportunistic TLS that failed: the same host, in clear.
            self.log.push_back(Log::RetryClear { relay });
            self.tls_mode = TlsMode::Off;
            return AfterFailure::RetryClear;
        }
        if next_host && self.target + 1 < self.targets.len() {
            self.note_failure(f);
            self.advance();
            self.tls_mode = self.policy.base_tls();
            return AfterFailure::NextHost;
        }
        // The failure that best says why (a host ruled out by REQUIRETLS
        // earlier does not turn a deferral here into a bounce, nor the
        // reverse).
        self.note_failure(f);
        let f = self
            .passed_over
            .take()
            .unwrap_or_else(|| Failure::Connection("no host".into()));
        AfterFailure::GiveUp(f)
    }

    /// The attempt is over; `delivered` says whether any recipient was.
    pub fn finish(&mut self, delivered: bool) -> Summary {
        // Report-only: mail went in the clear where a policy asks for TLS.
        if delivered && self.tls_level == TlsLevel::None {
            let dane_needs = matches!(self.dane(), Dane::Usable { .. } | Dane::Unusable);
            if dane_needs && self.policy.dane == Enforcement::Report {
                self.would_refuse(
                    WouldRefuse::DaneNoTls,
                    "DANE requires TLS; the session was in the clear".into(),
                );
            }
            if matches!(self.sts(), Sts::Testing { .. }) {
                self.would_refuse(
                    WouldRefuse::StsNoTls,
                    "MTA-STS: the policy needs TLS; the session was in the clear".into(),
                );
            }
            if self
                .policy
                .rules
                .as_ref()
                .is_some_and(|r| r.report_only && r.mandatory_tls)
            {
                self.would_refuse(
                    WouldRefuse::ProfileNoTls,
                    "profile (report-only): TLS is mandatory; the session was in the clear".into(),
                );
            }
        }
        if self.rpt_failure.is_some() {
            // A report-only failure of a session that never got to TLS.
            self.rpt_session(Ok(()));
        }
        let observed = match (&self.relay, delivered) {
            (Some(relay), true) => Some(self.observed(relay.clone())),
            _ => None,
        };
        Summary {
            relay: self.relay.clone(),
            tls_level: self.tls_level,
            would_refuse: std::mem::take(&mut self.would_refuse),
            set_aside: self.set_aside,
            observed,
            sessions: std::mem::take(&mut self.sessions),
        }
    }

    /// The posture of the session that delivered (the current host's).
    fn observed(&self, relay: String) -> posture::Observed {
        let mut sources = Vec::new();
        if !matches!(self.dane(), Dane::None) && self.policy.dane != Enforcement::Off {
            sources.push("dane".to_string());
        }
        if self.sts() != Sts::None {
            sources.push("mta-sts".to_string());
        }
        if let Some(name) = &self.policy.profile {
            sources.push(format!("profile {name}"));
        }
        let (version, cipher, cert_expires) = match &self.negotiated {
            Some((v, c, e)) => (Some(v.clone()), Some(c.clone()), *e),
            None => (None, None, None),
        };
        posture::Observed {
            level: self.tls_level,
            version,
            cipher,
            cert_expires,
            relay,
            sources,
        }
    }
}

/// What delivery asks of one host before it connects, as the attempt
/// decides it: for `sealgate policy show` and `explain --dns`.
#[derive(Debug, Clone)]
pub struct Demand {
    /// `host[address]:port`.
    pub relay: String,
    /// The TLS the session needs and what authenticates the host, or why
    /// the host is not used.
    pub verdict: Result<(TlsMode, Option<requiretls::Authenticated>), Failure>,
    /// Report-only checks that already fail before a connection.
    pub would_refuse: Vec<String>,
}

/// Runs each host through the attempt's first decision on its own.
pub fn demands(policy: &Policy, targets: &[Target]) -> Vec<Demand> {
    targets
        .iter()
        .map(|t| {
            let mut a = Attempt::new(policy.clone(), vec![t.clone()]);
            let relay = a.relay_name();
            let verdict = match a.next_host() {
                Next::Connect { tls, .. } => Ok((
                    tls,
                    requiretls::authentication(
                        &t.host,
                        a.dane(),
                        policy.dane,
                        a.sts(),
                        policy.rules.as_ref(),
                    )
                    .ok(),
                )),
                Next::Exhausted(f) => Err(f),
            };
            let would_refuse = std::iter::from_fn(|| a.poll_log())
                .filter_map(|l| match l {
                    Log::WouldRefuse { why, .. } => Some(why),
                    Log::SetAside { .. }
                    | Log::PassedOver { .. }
                    | Log::ConnectFailed { .. }
                    | Log::TlsEstablished { .. }
                    | Log::HostFailed { .. }
                    | Log::RetryClear { .. } => None,
                })
                .collect();
            Demand {
                relay,
                verdict,
                would_refuse,
            }
        })
        .collect()
}

impl std::fmt::Display for Demand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.relay)?;
        match &self.verdict {
            Err(failure) => write!(f, "not used: {}", failure.outcome().detail)?,
            Ok((TlsMode::Mandatory, Some(by))) => write!(
                f,
                "TLS mandatory, the certificate judged by {}",
                by.as_str()
            )?,
            Ok((TlsMode::Mandatory, None)) => {
                write!(f, "TLS mandatory, the certificate not authenticated")?
            }
            Ok((TlsMode::Opportunistic, Some(by))) => write!(
                f,
                "opportunistic TLS, the certificate judged by {}",
                by.as_str()
            )?,
            Ok((TlsMode::Opportunistic, None)) => write!(
                f,
                "opportunistic TLS (in the clear when STARTTLS is not offered or fails)"
            )?,
            Ok((TlsMode::Off, _)) => write!(f, "in the clear")?,
        }
        for why in &self.would_refuse {
            write!(f, "; report-only: would refuse: {why}")?;
        }
        Ok(())
    }
}

/// Looks the route's hosts up as delivery does and says what delivery
/// asks of each (`sealgate policy show`, `explain --dns`): one
/// `delivery: …` line a host, in the order delivery tries them.
#[allow(clippy::too_many_arguments)]
pub fn live_demands(
    resolver: &crate::dns::Resolver,
    via: &crate::policy::route::Via,
    domain: &str,
    mx_port: u16,
    dane: Option<u16>,
    sts: Option<crate::dns::StsLookup>,
    policy: Policy,
    reply: impl FnOnce(String) + Send + 'static,
) {
    use crate::policy::route::{literal_ip, Via};
    let (name, mx, port) = match via {
        Via::Mx => (domain.to_string(), true, mx_port),
        Via::Host { host, port } => (host.clone(), false, *port),
    };
    let text = move |found: Result<Vec<crate::dns::Found>, crate::dns::LookupError>| {
        let targets: Vec<Target> = match found {
            Ok(found) => found.into_iter().map(|f| Target::new(f, port)).collect(),
            Err(e) => return format!("delivery: no host: {e}\n"),
        };
        demands(&policy, &targets)
            .iter()
            .map(|d| format!("delivery: {d}\n"))
            .collect()
    };
    // An address literal needs no lookup (RFC 5321 §4.1.3).
    match literal_ip(&name) {
        Some(ip) => reply(text(Ok(vec![crate::dns::Found::literal(name, ip)]))),
        None => resolver.targets(&name, mx, dane, sts, move |found| reply(text(found))),
    }
}

/// The result type a failed session means for its TLS report (RFC 8460
/// §4.3): `None` for a failure that is not about TLS (a refused
/// connection, a timeout, a reply); `expired` when the server's
/// certificate is past its end.
pub fn tls_report_result(
    f: &Failure,
    expired: bool,
) -> Option<(crate::tlsrpt::ResultType, String)> {
    use crate::tlsrpt::ResultType;
    let rt = match f {
        Failure::TlsNotOffered | Failure::StartTlsRefused(_) => ResultType::StarttlsNotSupported,
        Failure::Handshake(_) => ResultType::ValidationFailure,
        Failure::Tls(TlsFailure::Sts { trust, .. }) => match (*trust, expired) {
            (_, true) => ResultType::CertificateExpired,
            ("Trusted", false) => ResultType::CertificateHostMismatch,
            (_, false) => ResultType::CertificateNotTrusted,
        },
        Failure::Tls(TlsFailure::Dane(_)) => ResultType::TlsaInvalid,
        Failure::Tls(TlsFailure::Certificate(r)) => match (r, expired) {
            (_, true) => ResultType::CertificateExpired,
            (Refusal::Names { .. }, false) => ResultType::CertificateHostMismatch,
            (Refusal::NotTrusted(_), false) => ResultType::CertificateNotTrusted,
            (Refusal::NoCertificate | Refusal::Pin, false) => ResultType::ValidationFailure,
        },
        Failure::Tls(
            TlsFailure::ServerName { .. } | TlsFailure::Setup(_) | TlsFailure::Records(_),
        ) => ResultType::ValidationFailure,
        Failure::Dane(_) => ResultType::DnssecInvalid,
        Failure::Greeting(_)
        | Failure::Hello(_)
        | Failure::Protocol(_)
        | Failure::Timeout(_)
        | Failure::Connection(_)
        | Failure::TooBig { .. }
        | Failure::NeedsSmtpUtf8(_)
        | Failure::RequireTls(_) => return None,
    };
    Some((rt, f.outcome().detail))
}

#[cfg(test)]
#[path = "attempt_tests.rs"]
mod tests;
