//! One outbound delivery attempt on a shard: connect to the job's targets
//! in order, run the SMTP client session over plain TCP or rustls, and
//! report per-recipient outcomes to the scheduler. No thread per
//! connection: this is driven by the shard's event loop like inbound
//! connections are.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use crate::delivery::{AttemptResult, Event, Job, WouldRefuse};
use crate::model::{Dane, Sts, TlsRequest};
use crate::policy::requiretls;
use crate::policy::Enforcement;
use crate::smtp::client::{self, Action, Failure, Outcome, TlsFailure, TlsMode};
use crate::smtp::Endpoint;
use crate::tlsrpt;

pub struct OutConn {
    job: Job,
    token: Token,
    target: usize,
    tls_mode: TlsMode,
    socket: Option<TcpStream>,
    /// What the socket is registered for (re-registered only on change).
    interest: Interest,
    connected: bool,
    tls: Option<ClientConnection>,
    handshaking: bool,
    session: client::Session,
    /// Job message index of each session message.
    in_session: Vec<usize>,
    results: Vec<Option<Vec<Outcome>>>,
    relay: Option<String>,
    /// Of the last connection, for the metrics (see `AttemptResult`).
    tls_level: crate::delivery::TlsLevel,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    finished: bool,
    /// Why the last targets failed or were passed over without a
    /// connection (a failed DANE lookup, a host REQUIRETLS rules out), for
    /// the outcome when no host is left (see [`OutConn::note_failure`]).
    passed_over: Option<Failure>,
    /// Recipient policies `TLS-Required: No` set aside (RFC 8689 §5).
    set_aside: bool,
    /// Version, suite and certificate end of the current connection's TLS.
    negotiated: Option<(String, String, Option<i64>)>,
    /// Each session to a host, for the TLS reports (RFC 8460).
    sessions: Vec<tlsrpt::Session>,
    /// A report-only policy check that failed on the current host: the
    /// session is a failure in the TLS report although it went on.
    rpt_failure: Option<(tlsrpt::ResultType, String)>,
    /// The current connection's session is in `sessions` already.
    rpt_done: bool,
    /// Report-only checks that failed.
    would_refuse: Vec<WouldRefuse>,
    /// The target whose connect-time report-only checks were last noted
    /// (a retry in the clear connects to it again: noted once).
    noted: Option<usize>,
}

impl OutConn {
    pub fn start(job: Job, registry: &Registry, token: Token, now: Instant) -> OutConn {
        let n = job.messages.len();
        let tls_mode = job.tls;
        let session =
            client::Session::new(session_config(&job, tls_mode), job.messages.clone(), now);
        let mut c = OutConn {
            job,
            token,
            target: 0,
            tls_mode,
            socket: None,
            interest: Interest::READABLE | Interest::WRITABLE,
            connected: false,
            tls: None,
            handshaking: false,
            session,
            in_session: (0..n).collect(),
            results: vec![None; n],
            relay: None,
            tls_level: crate::delivery::TlsLevel::None,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            finished: false,
            passed_over: None,
            set_aside: false,
            negotiated: None,
            sessions: Vec::new(),
            rpt_failure: None,
            rpt_done: false,
            would_refuse: Vec::new(),
            noted: None,
        };
        c.connect(registry, now);
        c
    }

    /// What DANE asks of the current target (RFC 7672 §2.2), when it
    /// applies: never for a `TLS-Required: No` message (RFC 8689 §5).
    fn dane(&self) -> &Dane {
        match self.job.request {
            TlsRequest::NotRequired => &Dane::None,
            TlsRequest::Default | TlsRequest::Required => self
                .job
                .targets
                .get(self.target)
                .map_or(&Dane::None, |t| &t.dane),
        }
    }

    /// What the recipient's MTA-STS policy asks of the current target
    /// (likewise).
    fn sts(&self) -> Sts {
        match self.job.request {
            TlsRequest::NotRequired => Sts::None,
            TlsRequest::Default | TlsRequest::Required => self
                .job
                .targets
                .get(self.target)
                .map_or(Sts::None, |t| t.sts),
        }
    }

    /// A `TLS-Required: No` message to a host with a recipient policy:
    /// the policy is set aside (RFC 8689 §5), said once per host.
    fn note_set_aside(&mut self) {
        let Some(t) = self.job.targets.get(self.target) else {
            return;
        };
        if self.job.request != TlsRequest::NotRequired {
            return;
        }
        let dane = !matches!(t.dane, Dane::None);
        let sts = !matches!(t.sts, Sts::None);
        let what = match (dane, sts) {
            (false, false) => return,
            (true, false) => "DANE",
            (false, true) => "MTA-STS",
            (true, true) => "DANE and MTA-STS",
        };
        tracing::info!(target: "send", "delivery via {}: TLS-Required: No: the recipient's {what} policy is set aside (RFC 8689 section 5)", self.target_name());
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
    fn would_refuse(&mut self, what: WouldRefuse, why: &str) {
        tracing::warn!(target: "send", "delivery via {}: would refuse: {why}", self.target_name());
        self.would_refuse.push(what);
        let rt = match what {
            WouldRefuse::DaneLookup => Some(tlsrpt::ResultType::DnssecInvalid),
            WouldRefuse::DaneCertificate => Some(tlsrpt::ResultType::TlsaInvalid),
            WouldRefuse::StsMx => Some(tlsrpt::ResultType::ValidationFailure),
            WouldRefuse::DaneNoTls | WouldRefuse::StsNoTls => {
                Some(tlsrpt::ResultType::StarttlsNotSupported)
            }
            // Set where the trust level is known (`tls_done`).
            WouldRefuse::StsCertificate => None,
            // The operator's own rules: not a recipient policy.
            WouldRefuse::ProfileCertificate | WouldRefuse::ProfileNoTls => None,
        };
        if let Some(rt) = rt {
            self.rpt_failure.get_or_insert((rt, why.to_string()));
        }
    }

    /// What the current host's recipient policy is, for the TLS report.
    fn rpt_policy(&self) -> tlsrpt::Policy {
        match (self.dane(), self.job.dane) {
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
        let Some(t) = self.job.targets.get(self.target) else {
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

    /// The current connection's certificate is past its end.
    fn cert_expired(&self) -> bool {
        self.negotiated
            .as_ref()
            .and_then(|n| n.2)
            .is_some_and(|end| end < crate::model::unix_now() as i64)
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// The host name (or `[address]`) of the target being tried.
    fn target_host(&self) -> String {
        self.job
            .targets
            .get(self.target)
            .map(|t| t.host.clone())
            .unwrap_or_default()
    }

    fn target_name(&self) -> String {
        match self.job.targets.get(self.target) {
            // Postfix's `host[address]:port`; a route to an address literal
            // names the address as the host (`192.0.2.10[192.0.2.10]:25`).
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

    /// Connects to the current target, skipping targets that fail at once
    /// or that DANE rules out. A target whose TLSA records are secure
    /// (RFC 7672 §2.2), or under an enforced MTA-STS policy (RFC 8461 §5),
    /// gets mandatory TLS.
    fn connect(&mut self, registry: &Registry, now: Instant) {
        while self.target < self.job.targets.len() {
            let enforce = self.job.dane == Enforcement::Enforce;
            if self.noted != Some(self.target) {
                self.note_set_aside();
            }
            if self.job.request == TlsRequest::Required {
                // RFC 8689 §4.2.1: only to a host authenticated by DANE,
                // MTA-STS or the operator's verifying profile.
                let host = self.target_host();
                if let Err(refused) = requiretls::authentication(
                    &host,
                    self.dane(),
                    self.job.dane,
                    self.sts(),
                    self.job.rules.as_ref(),
                ) {
                    tracing::info!(target: "send", "delivery via {} passed over: REQUIRETLS: {refused}", self.target_name());
                    self.note_failure(Failure::RequireTls(refused));
                    self.target += 1;
                    continue;
                }
            }
            match (self.dane(), enforce) {
                (Dane::Failed(f), true) => {
                    // RFC 7672 §2.2: never in the clear, never unchecked.
                    let f = f.clone();
                    tracing::info!(target: "send", "delivery via {} passed over: {f}", self.target_name());
                    let failure = Failure::Dane(f);
                    if let Some(r) = client::tls_report_result(&failure, false) {
                        self.rpt_session(Err(r));
                    }
                    self.rpt_done = false;
                    self.note_failure(failure);
                    self.target += 1;
                    continue;
                }
                (Dane::Failed(f), false) if self.noted != Some(self.target) => {
                    let why = format!("DANE: {f}");
                    self.would_refuse(WouldRefuse::DaneLookup, &why);
                }
                (Dane::Failed(_), false)
                | (Dane::None | Dane::Usable { .. } | Dane::Unusable, _) => {}
            }
            if let (Sts::Testing { mx_ok: false }, false) =
                (self.sts(), self.noted == Some(self.target))
            {
                self.would_refuse(
                    WouldRefuse::StsMx,
                    "MTA-STS: the host is not among the policy's MX patterns",
                );
            }
            self.noted = Some(self.target);
            let needs_tls = (enforce
                && matches!(self.dane(), Dane::Usable { .. } | Dane::Unusable))
                || self.sts() == Sts::Enforce;
            // Mandatory for this host, or back to the job's own mode after
            // a host that needed it (a clear retry's `Off` stays).
            let mode = match (needs_tls, self.tls_mode) {
                (true, _) => TlsMode::Mandatory,
                (false, TlsMode::Mandatory) => self.job.tls,
                (false, current) => current,
            };
            if mode != self.tls_mode {
                self.tls_mode = mode;
                let messages: Vec<client::Outgoing> = self
                    .in_session
                    .iter()
                    .map(|j| self.job.messages[*j].clone())
                    .collect();
                self.session =
                    client::Session::new(session_config(&self.job, self.tls_mode), messages, now);
            }
            let Some(t) = self.job.targets.get(self.target) else {
                break;
            };
            match TcpStream::connect(t.addr) {
                Ok(mut s) => {
                    if registry
                        .register(&mut s, self.token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        let _ = s.set_nodelay(true);
                        self.socket = Some(s);
                        self.interest = Interest::READABLE | Interest::WRITABLE;
                        self.connected = false;
                        return;
                    }
                }
                Err(e) => {
                    tracing::info!(target: "send", "connect to {} failed: {e}", self.target_name());
                }
            }
            self.target += 1;
        }
        let failure = self
            .passed_over
            .take()
            .unwrap_or_else(|| Failure::Connection("no host could be reached".into()));
        self.end(Some(failure));
    }

    /// Readiness on the socket.
    pub fn ready(&mut self, registry: &Registry, now: Instant) {
        if self.finished {
            return;
        }
        if !self.connected {
            let Some(s) = &self.socket else { return };
            match s.take_error() {
                Ok(Some(e)) | Err(e) => {
                    return self.host_failed(Failure::Connection(e.to_string()), registry, now)
                }
                Ok(None) => {}
            }
            match s.peer_addr() {
                Ok(_) => {
                    self.connected = true;
                    self.relay = Some(self.target_name());
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    return self.host_failed(Failure::Connection(e.to_string()), registry, now)
                }
            }
        }
        if let Err(f) = self.pump(now) {
            return self.host_failed(f, registry, now);
        }
        self.step(registry, now);
    }

    /// Reads and feeds; a failure ends the session on this host.
    fn pump(&mut self, now: Instant) -> Result<(), Failure> {
        let mut chunk = [0u8; 8192];
        loop {
            let Some(sock) = self.socket.as_mut() else {
                return Ok(());
            };
            let n = match sock.read(&mut chunk) {
                Ok(0) => {
                    return Err(Failure::Connection(
                        "connection closed by the server".into(),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Connection(e.to_string())),
            };
            match self.tls.as_mut() {
                None => self.rbuf.extend_from_slice(&chunk[..n]),
                Some(tls) => {
                    let mut records = &chunk[..n];
                    while !records.is_empty() {
                        tls.read_tls(&mut records)
                            .map_err(|e| Failure::Tls(TlsFailure::Records(e.to_string())))?;
                        if let Err(e) = tls.process_new_packets() {
                            let _ = tls.write_tls(sock);
                            return Err(Failure::Handshake(e));
                        }
                        let mut plain = [0u8; 8192];
                        loop {
                            match tls.reader().read(&mut plain) {
                                Ok(0) => break,
                                Ok(k) => self.rbuf.extend_from_slice(&plain[..k]),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => {
                                    return Err(Failure::Tls(TlsFailure::Records(e.to_string())))
                                }
                            }
                        }
                    }
                    if self.handshaking && !tls.is_handshaking() {
                        self.handshaking = false;
                        self.tls_done(now)?;
                    }
                }
            }
            self.feed(now)?;
            if self.finished {
                return Ok(());
            }
        }
        self.feed(now)
    }

    fn tls_done(&mut self, now: Instant) -> Result<(), Failure> {
        let Some(tls) = self.tls.as_ref() else {
            return Ok(());
        };
        let host = self.target_host();
        let (trust, verdict) = crate::tls::outbound::check_server(
            tls,
            &host,
            self.job.rules.as_ref(),
            &self.job.roots,
        );
        // RFC 7672 §3: with usable TLSA records they alone decide.
        let dane = match self.dane() {
            Dane::Usable { records, names } => Some(crate::tls::dane::check(
                tls.peer_certificates().unwrap_or_default(),
                names,
                records,
            )),
            Dane::None | Dane::Unusable | Dane::Failed(_) => None,
        };
        let word = match &dane {
            Some(Ok(crate::tls::dane::DaneMatch::EndEntity)) => "DANE-verified (DANE-EE)",
            Some(Ok(crate::tls::dane::DaneMatch::TrustAnchor)) => "DANE-verified (DANE-TA)",
            Some(Err(_)) | None => trust.as_str(),
        };
        let not_after = tls
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
            .map(|(_, c)| c.validity().not_after.timestamp());
        self.negotiated = crate::tls::negotiated(tls)
            .map(|n| (n.version.to_string(), n.cipher.clone(), not_after));
        if let Some(n) = crate::tls::negotiated(tls) {
            tracing::info!(
                target: "send",
                "{word} TLS connection established to {}: {} with cipher {} ({}/{} bits)",
                self.target_name(),
                n.version,
                n.cipher,
                n.bits,
                n.bits
            );
        }
        let report_only = self.job.rules.as_ref().is_some_and(|r| r.report_only);
        match verdict {
            Ok(()) => {}
            Err(refusal) if report_only => self.would_refuse(
                WouldRefuse::ProfileCertificate,
                &format!("profile (report-only): {refusal}"),
            ),
            Err(refusal) => return Err(Failure::Tls(refusal.into())),
        }
        self.tls_level = trust.into();
        // RFC 8461 §4.2: a valid certificate naming the MX host.
        let verified = trust == crate::tls::outbound::Trust::Verified;
        match (self.sts(), verified) {
            (Sts::Enforce, true) => self.tls_level = crate::delivery::TlsLevel::MtaSts,
            (Sts::Enforce, false) => {
                return Err(Failure::Tls(TlsFailure::Sts {
                    host,
                    trust: trust.as_str(),
                }))
            }
            (Sts::Testing { .. }, false) => {
                let why = format!(
                    "MTA-STS: the certificate is {}; the policy needs a valid one naming the host",
                    trust.as_str()
                );
                self.would_refuse(WouldRefuse::StsCertificate, &why);
                let rt = match (self.cert_expired(), trust) {
                    (true, _) => tlsrpt::ResultType::CertificateExpired,
                    (false, crate::tls::outbound::Trust::Trusted) => {
                        tlsrpt::ResultType::CertificateHostMismatch
                    }
                    (false, _) => tlsrpt::ResultType::CertificateNotTrusted,
                };
                self.rpt_failure.get_or_insert((rt, why));
            }
            (Sts::Testing { .. } | Sts::None, _) => {}
        }
        match dane {
            Some(Ok(_)) => self.tls_level = crate::delivery::TlsLevel::Dane,
            Some(Err(refusal)) if self.job.dane == Enforcement::Enforce => {
                return Err(Failure::Tls(refusal.into()))
            }
            Some(Err(refusal)) => {
                self.would_refuse(WouldRefuse::DaneCertificate, &format!("DANE: {refusal}"))
            }
            None => {}
        }
        self.rpt_session(Ok(()));
        self.session.tls_established(now);
        Ok(())
    }

    /// Feeds what was read to the session: it reads every reply it can
    /// and stops early only for an action.
    fn feed(&mut self, now: Instant) -> Result<(), Failure> {
        let fed = self.session.feed(&self.rbuf, now);
        self.rbuf.drain(..fed.consumed);
        while let Some(event) = self.session.poll_event() {
            match event {
                client::Event::MessageDone { index, outcomes } => {
                    if let Some(&j) = self.in_session.get(index) {
                        self.results[j] = Some(outcomes);
                    }
                }
            }
        }
        match fed.action {
            None => {}
            Some(Action::StartTls) => {
                self.collect();
                let host = self.target_host();
                let name = ServerName::try_from(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                )
                .map_err(|e| {
                    Failure::Tls(TlsFailure::ServerName {
                        host: host.clone(),
                        error: e.to_string(),
                    })
                })?;
                let conn = ClientConnection::new(self.job.config.clone(), name)
                    .map_err(|e| Failure::Tls(TlsFailure::Setup(e)))?;
                self.tls = Some(conn);
                self.handshaking = true;
            }
            Some(Action::Close(None)) => {
                self.collect();
                self.flush_best_effort();
                self.end(None);
                return Ok(());
            }
            Some(Action::Close(Some(f))) => {
                self.collect();
                self.flush_best_effort();
                return Err(f);
            }
        }
        self.collect();
        Ok(())
    }

    /// Session output to the socket (through TLS once it is up).
    fn collect(&mut self) {
        let mut out = Vec::new();
        self.session.poll_output(&mut out);
        if out.is_empty() {
            return;
        }
        match self.tls.as_mut() {
            Some(tls) if !self.handshaking => {
                let _ = tls.writer().write_all(&out);
            }
            _ => self.wbuf.extend_from_slice(&out),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some(sock) = self.socket.as_mut() else {
            return Ok(());
        };
        while !self.wbuf.is_empty() {
            match sock.write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                match tls.write_tls(sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn flush_best_effort(&mut self) {
        let _ = self.flush();
    }

    /// Writes what is pending and sets the interest.
    fn step(&mut self, registry: &Registry, now: Instant) {
        if self.finished {
            return;
        }
        if let Err(e) = self.flush() {
            return self.host_failed(Failure::Connection(e.to_string()), registry, now);
        }
        let pending = !self.wbuf.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write());
        let interest = if pending || !self.connected {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if interest != self.interest {
            if let Some(s) = self.socket.as_mut() {
                if registry.reregister(s, self.token, interest).is_ok() {
                    self.interest = interest;
                }
            }
        }
    }

    /// The deadline passed.
    pub fn timeout(&mut self, registry: &Registry, now: Instant) {
        if let Some(Action::Close(Some(f))) = self.session.handle_timeout(now) {
            self.host_failed(f, registry, now);
        }
    }

    /// This host failed: fall back as the rules allow, or end.
    fn host_failed(&mut self, f: Failure, registry: &Registry, now: Instant) {
        if self.finished {
            return;
        }
        let host = self.target_name();
        tracing::info!(target: "send", "delivery via {host} failed: {}", client::classify(&f).detail);
        if let Some(r) = client::tls_report_result(&f, self.cert_expired()) {
            self.rpt_session(Err(r));
        }
        self.rpt_failure = None;
        self.rpt_done = false;
        // Messages this session did not finish.
        let remaining: Vec<usize> = self
            .in_session
            .iter()
            .copied()
            .filter(|j| self.results[*j].is_none())
            .collect();
        if let Some(s) = self.socket.take() {
            let mut s = s;
            let _ = registry.deregister(&mut s);
        }
        self.tls = None;
        self.tls_level = crate::delivery::TlsLevel::None;
        self.negotiated = None;
        self.handshaking = false;
        self.rbuf.clear();
        self.wbuf.clear();
        let retry_clear =
            matches!(&f, Failure::Handshake(_)) && self.tls_mode == TlsMode::Opportunistic;
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
        if remaining.is_empty() {
            return self.end(None);
        }
        if retry_clear {
            // OUT-2: opportunistic TLS that failed: the same host, in clear.
            tracing::info!(target: "send", "TLS handshake with {host} failed; retrying in the clear");
            self.tls_mode = TlsMode::Off;
        } else if next_host && self.target + 1 < self.job.targets.len() {
            self.note_failure(f);
            self.target += 1;
            self.tls_mode = self.job.tls;
        } else {
            // Record the failure for what is left, then end: the one that
            // best says why (a host ruled out by REQUIRETLS earlier does
            // not turn a deferral here into a bounce, nor the reverse).
            self.note_failure(f);
            let outcome = self
                .passed_over
                .as_ref()
                .map(client::classify)
                .unwrap_or_else(|| client::classify(&Failure::Connection("no host".into())));
            for j in remaining {
                let n = self.job.messages[j].recipients.len();
                self.results[j] = Some(vec![outcome.clone(); n]);
            }
            return self.end(None);
        }
        let messages: Vec<client::Outgoing> = remaining
            .iter()
            .map(|j| self.job.messages[*j].clone())
            .collect();
        self.in_session = remaining;
        self.session =
            client::Session::new(session_config(&self.job, self.tls_mode), messages, now);
        self.connect(registry, now);
        self.step(registry, now);
    }

    /// Reports the attempt to the scheduler.
    fn end(&mut self, failure: Option<Failure>) {
        if self.finished {
            return;
        }
        self.finished = true;
        // Report-only: a session in the clear where DANE asks for TLS.
        let required = matches!(self.dane(), Dane::Usable { .. } | Dane::Unusable);
        if required
            && self.job.dane == Enforcement::Report
            && self.relay.is_some()
            && self.tls_level == crate::delivery::TlsLevel::None
        {
            self.would_refuse(
                WouldRefuse::DaneNoTls,
                "DANE requires TLS; the session was in the clear",
            );
        }
        if self.rpt_failure.is_some() {
            // A report-only failure of a session that never got to TLS.
            self.rpt_session(Ok(()));
        }
        let fallback = failure.as_ref().map(client::classify).unwrap_or_else(|| {
            client::classify(&Failure::Connection(
                "session ended before this message".into(),
            ))
        });
        let outcomes: Vec<Vec<Outcome>> = self
            .results
            .iter()
            .enumerate()
            .map(|(j, r)| {
                r.clone().unwrap_or_else(|| {
                    vec![fallback.clone(); self.job.messages[j].recipients.len()]
                })
            })
            .collect();
        let delivered = outcomes
            .iter()
            .flatten()
            .any(|o| o.verdict == client::Verdict::Delivered);
        let observed = match (&self.relay, delivered) {
            (Some(relay), true) => Some(self.observed(relay.clone())),
            _ => None,
        };
        let _ = self.job.reply.send(Event::Finished(AttemptResult {
            attempt: self.job.attempt,
            outcomes,
            relay: self.relay.clone(),
            would_refuse: std::mem::take(&mut self.would_refuse),
            set_aside: self.set_aside,
            observed,
            sessions: std::mem::take(&mut self.sessions),
            tls_level: self.tls_level,
        }));
    }

    /// The posture of the session that delivered (the current target's).
    fn observed(&self, relay: String) -> crate::delivery::posture::Observed {
        let mut sources = Vec::new();
        if !matches!(self.dane(), Dane::None) && self.job.dane != Enforcement::Off {
            sources.push("dane".to_string());
        }
        if self.sts() != Sts::None {
            sources.push("mta-sts".to_string());
        }
        if let Some(name) = &self.job.profile {
            sources.push(format!("profile {name}"));
        }
        let (version, cipher, cert_expires) = match &self.negotiated {
            Some((v, c, e)) => (Some(v.clone()), Some(c.clone()), *e),
            None => (None, None, None),
        };
        crate::delivery::posture::Observed {
            level: self.tls_level,
            version,
            cipher,
            cert_expires,
            relay,
            sources,
        }
    }

    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut s) = self.socket.take() {
            let _ = registry.deregister(&mut s);
        }
    }
}

fn session_config(job: &Job, tls: TlsMode) -> client::Config {
    client::Config {
        helo: job.helo.clone(),
        tls,
        timeouts: job.timeouts,
        require_tls: job.request == TlsRequest::Required,
    }
}
