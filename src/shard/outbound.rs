//! One outbound delivery attempt on a shard: connect to the job's targets
//! in order, run the SMTP client session over plain TCP or rustls, and
//! report per-recipient outcomes to the scheduler. No thread per
//! connection: this is driven by the shard's event loop like inbound
//! connections are.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use super::stage::TlsStage;

use crate::delivery::attempt::{self, AfterFailure, Attempt, Next};
use crate::delivery::{AttemptResult, Event, Job};
use crate::model::TlsRequest;
use crate::smtp::client::{self, Action, Failure, Outcome, TlsFailure, TlsMode};
use crate::smtp::Endpoint;

/// An outbound connection's TCP socket: one state at a time.
enum Socket {
    None,
    /// Connecting (non-blocking): writable readiness says how it went.
    Connecting(TcpStream),
    Connected(TcpStream),
}

impl Socket {
    fn get_mut(&mut self) -> Option<&mut TcpStream> {
        match self {
            Socket::None => None,
            Socket::Connecting(s) | Socket::Connected(s) => Some(s),
        }
    }

    fn take(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Socket::None) {
            Socket::None => None,
            Socket::Connecting(s) | Socket::Connected(s) => Some(s),
        }
    }

    /// The connection is made.
    fn connected(&mut self) {
        *self = match std::mem::replace(self, Socket::None) {
            Socket::Connecting(s) => Socket::Connected(s),
            other @ (Socket::None | Socket::Connected(_)) => other,
        };
    }
}

/// An outbound connection's life: one state at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// The attempt runs.
    Working,
    /// The attempt is reported; the connection is not kept.
    Reported,
    /// The attempt is reported; the connection waits in the cache for the
    /// next attempt to the same host, since then.
    Idle(Instant),
    /// Closed (by the server while idle, or by QUIT): never reused.
    Gone,
}

pub struct OutConn {
    job: Job,
    token: Token,
    /// The outbound decision: hosts, TLS, certificate verdicts, reports.
    attempt: Attempt,
    /// The TCP connection: none, being made, or made.
    socket: Socket,
    /// What the socket is registered for (re-registered only on change).
    interest: Interest,
    /// The connection's TLS: none yet, mid-handshake, or up.
    tls: TlsStage<ClientConnection>,
    session: client::Session,
    /// Job message index of each session message.
    in_session: Vec<usize>,
    results: Vec<Option<Vec<Outcome>>>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Where the attempt and its connection are.
    life: Life,
    /// Keep the connection open after the last message (the connection
    /// cache, `[queue] connection_idle`).
    keep_open: bool,
    /// The current connection's TLS, as the attempt judged it: judged
    /// again for each attempt that would reuse the connection.
    facts: Option<attempt::CertFacts>,
    /// The address of the current connection.
    addr: Option<std::net::SocketAddr>,
    /// Messages this connection has carried.
    carried: usize,
    /// Where this shard's counters are.
    shared: Arc<super::Shared>,
    shard: usize,
}

impl OutConn {
    pub fn start(
        job: Job,
        registry: &Registry,
        token: Token,
        keep_open: bool,
        (shared, shard): (Arc<super::Shared>, usize),
        now: Instant,
    ) -> OutConn {
        let n = job.messages.len();
        let attempt = Attempt::new(job.policy.clone(), job.targets.clone());
        let session = client::Session::new(
            session_config(&job, attempt.tls_mode(), keep_open),
            job.messages.clone(),
            now,
        );
        let mut c = OutConn {
            job,
            token,
            attempt,
            socket: Socket::None,
            interest: Interest::READABLE | Interest::WRITABLE,
            tls: TlsStage::Clear,
            session,
            in_session: (0..n).collect(),
            results: vec![None; n],
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            life: Life::Working,
            keep_open,
            facts: None,
            addr: None,
            carried: 0,
            shared,
            shard,
        };
        c.connect(registry, now);
        c
    }

    /// Idle in the cache, its last attempt reported, since then.
    pub fn idle_since(&self) -> Option<Instant> {
        match self.life {
            Life::Idle(since) if self.session.is_idle() => Some(since),
            Life::Idle(_) | Life::Working | Life::Reported | Life::Gone => None,
        }
    }

    pub fn carried(&self) -> usize {
        self.carried
    }

    /// Whether this is an idle connection made for what `job` would try
    /// first: the same address and host name, under the same TLS
    /// configuration (the route's profile in the same snapshot). Only
    /// then may the job's own decision ([`OutConn::accepts`]) be asked.
    pub fn idle_for(&self, job: &Job) -> bool {
        let Some(first) = job.targets.first() else {
            return false;
        };
        self.idle_since().is_some()
            && self.addr == Some(first.addr)
            && self.attempt.host() == first.host
            && Arc::ptr_eq(&self.job.config, &job.config)
    }

    /// Whether this idle connection may carry `job`, by the attempt's own
    /// decision: the same first host with the TLS it needs (never a clear
    /// connection where TLS is mandatory), and the certificate judged
    /// again under the job's policy (REQUIRETLS, DANE, MTA-STS, a
    /// stricter profile). The decision, ready to go on, if so.
    pub fn accepts(&self, job: &Job) -> Option<Attempt> {
        self.idle_since()?;
        let mut decision = Attempt::new(job.policy.clone(), job.targets.clone());
        match decision.next_host() {
            Next::Connect { addr, tls, .. }
                if Some(addr) == self.addr
                    && (self.facts.is_some() || tls != TlsMode::Mandatory) => {}
            Next::Connect { .. } | Next::Exhausted(_) => return None,
        }
        decision.connected();
        if let Some(facts) = &self.facts {
            decision
                .tls_established(facts, crate::model::unix_now() as i64)
                .ok()?;
        }
        self.session
            .can_carry(job.policy.request == TlsRequest::Required)
            .then_some(decision)
    }

    /// Gives this idle connection the next attempt, with the decision
    /// [`OutConn::accepts`] made for it.
    pub fn reuse(&mut self, job: Job, decision: Attempt, registry: &Registry, now: Instant) {
        let mut decision = decision;
        let require_tls = job.policy.request == TlsRequest::Required;
        self.session
            .next_batch(job.messages.clone(), require_tls, now);
        self.count(|s| &s.outbound_reused);
        tracing::info!(
            target: "send",
            "delivery via {}: reusing the connection ({} message(s) carried)",
            decision.relay_name(),
            self.carried
        );
        // The checks were made on this connection before: only what they
        // found for this attempt is said (a report-only refusal).
        while let Some(line) = decision.poll_log() {
            match line {
                attempt::Log::TlsEstablished { .. } => {}
                line @ (attempt::Log::SetAside { .. }
                | attempt::Log::PassedOver { .. }
                | attempt::Log::WouldRefuse { .. }
                | attempt::Log::ConnectFailed { .. }
                | attempt::Log::HostFailed { .. }
                | attempt::Log::RetryClear { .. }) => emit(&line),
            }
        }
        let n = job.messages.len();
        self.job = job;
        self.attempt = decision;
        self.in_session = (0..n).collect();
        self.results = vec![None; n];
        self.life = Life::Working;
        self.collect();
        self.step(registry, now);
    }

    /// Sends QUIT on an idle connection (best effort) and closes it: the
    /// idle time is over, the cache is full, the gateway stops or reloads.
    pub fn quit_and_close(&mut self, registry: &Registry, now: Instant) {
        if !matches!(self.life, Life::Gone) {
            self.session.quit(now);
            self.collect();
            self.flush_best_effort();
            if let Some(tls) = self.tls.conn_mut() {
                tls.send_close_notify();
            }
            self.flush_best_effort();
        }
        self.life = Life::Gone;
        self.close(registry);
    }

    /// The attempt is reported (the connection may wait idle).
    pub fn is_finished(&self) -> bool {
        !self.working()
    }

    fn working(&self) -> bool {
        match self.life {
            Life::Working => true,
            Life::Reported | Life::Idle(_) | Life::Gone => false,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// A new session for the messages of `in_session` not yet done, with
    /// the TLS the attempt asks for now.
    fn new_session(&mut self, now: Instant) {
        let messages: Vec<client::Outgoing> = self
            .in_session
            .iter()
            .map(|j| self.job.messages[*j].clone())
            .collect();
        self.session = client::Session::new(
            session_config(&self.job, self.attempt.tls_mode(), self.keep_open),
            messages,
            now,
        );
    }

    /// Forgets the connection: its socket, TLS and buffers.
    fn drop_connection(&mut self, registry: &Registry) {
        if let Some(mut s) = self.socket.take() {
            let _ = registry.deregister(&mut s);
        }
        self.tls = TlsStage::Clear;
        self.rbuf.clear();
        self.wbuf.clear();
    }

    /// Adds one to a counter of this shard's.
    fn count(&self, which: impl Fn(&crate::state::ShardStats) -> &std::sync::atomic::AtomicU64) {
        if let Some(s) = self.shared.stats.get(self.shard) {
            which(s).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The attempt's log lines, as they come.
    fn log(&mut self) {
        while let Some(line) = self.attempt.poll_log() {
            emit(&line);
        }
    }

    /// Connects to the host the attempt names next; a host whose
    /// connection fails at once is passed for the next.
    fn connect(&mut self, registry: &Registry, now: Instant) {
        loop {
            let next = self.attempt.next_host();
            self.log();
            let (addr, fresh) = match next {
                Next::Connect { addr, fresh, .. } => (addr, fresh),
                Next::Exhausted(failure) => return self.end(Some(failure)),
            };
            if fresh {
                self.new_session(now);
            }
            let error = match TcpStream::connect(addr) {
                Ok(mut s) => {
                    match registry.register(
                        &mut s,
                        self.token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        Ok(()) => {
                            let _ = s.set_nodelay(true);
                            self.count(|s| &s.outbound_opened);
                            self.addr = Some(addr);
                            self.carried = 0;
                            self.socket = Socket::Connecting(s);
                            self.interest = Interest::READABLE | Interest::WRITABLE;
                            return;
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            self.attempt.connect_failed(error.to_string());
        }
    }

    /// Readiness on the socket.
    pub fn ready(&mut self, registry: &Registry, now: Instant) {
        if self.idle_since().is_some() {
            return self.idle_read(registry);
        }
        if !self.working() {
            return;
        }
        if let Socket::Connecting(s) = &self.socket {
            match s.take_error() {
                Ok(Some(e)) | Err(e) => {
                    return self.host_failed(Failure::Connection(e.to_string()), registry, now)
                }
                Ok(None) => {}
            }
            match s.peer_addr() {
                Ok(_) => {
                    self.socket.connected();
                    self.attempt.connected();
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

    /// Readiness while idle: TLS records the server sends unasked (a
    /// session ticket) are taken in; anything else — EOF, a reset, a
    /// close_notify, a `421` — means the connection is gone.
    fn idle_read(&mut self, registry: &Registry) {
        let mut chunk = [0u8; 4096];
        loop {
            let Some(sock) = self.socket.get_mut() else {
                return;
            };
            let n = match sock.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let Some(tls) = self.tls.conn_mut() else {
                break;
            };
            let mut records = &chunk[..n];
            let mut gone = false;
            while !records.is_empty() && !gone {
                gone = tls.read_tls(&mut records).is_err() || tls.process_new_packets().is_err();
            }
            let mut plain = [0u8; 512];
            gone = gone
                || !matches!(tls.reader().read(&mut plain), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            if gone {
                break;
            }
        }
        tracing::info!(
            target: "send",
            "delivery via {}: the idle connection was closed by the server",
            self.attempt.relay_name()
        );
        self.count(|s| &s.outbound_idle_gone);
        self.life = Life::Gone;
        self.close(registry);
    }

    /// Reads and feeds; a failure ends the session on this host.
    fn pump(&mut self, now: Instant) -> Result<(), Failure> {
        let mut chunk = [0u8; 8192];
        loop {
            let Some(sock) = self.socket.get_mut() else {
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
            let handshaking = self.tls.handshaking();
            match self.tls.conn_mut() {
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
                    if handshaking && !tls.is_handshaking() {
                        self.tls.establish();
                        self.tls_done(now)?;
                    }
                }
            }
            self.feed(now)?;
            if !self.working() {
                return Ok(());
            }
        }
        self.feed(now)
    }

    fn tls_done(&mut self, now: Instant) -> Result<(), Failure> {
        let Some(tls) = self.tls.conn() else {
            return Ok(());
        };
        let facts = attempt::cert_facts(
            tls,
            self.attempt.host(),
            self.job.policy.rules.as_ref(),
            &self.job.roots,
        );
        let verdict = self
            .attempt
            .tls_established(&facts, crate::model::unix_now() as i64);
        self.log();
        verdict?;
        self.facts = Some(facts);
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
                    self.carried += 1;
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
                let host = self.attempt.host().to_string();
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
                self.tls = TlsStage::Handshaking(conn);
            }
            Some(Action::Close(None)) => {
                self.collect();
                self.flush_best_effort();
                self.end(None);
                return Ok(());
            }
            Some(Action::Idle) => {
                // Every message done, the connection kept: the attempt is
                // over; the connection waits in the cache.
                self.collect();
                self.end(None);
                self.life = Life::Idle(now);
                // Reported: the messages' octets are not kept while idle.
                self.job.messages = Vec::new();
                self.results = Vec::new();
                self.in_session = Vec::new();
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
        match &mut self.tls {
            TlsStage::Established(tls) => {
                let _ = tls.writer().write_all(&out);
            }
            TlsStage::Clear | TlsStage::Handshaking(_) => self.wbuf.extend_from_slice(&out),
            // Never in the clear after a failed handshake (the attempt
            // drops such a connection before it says anything more).
            TlsStage::Failed(_) => {}
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some(sock) = self.socket.get_mut() else {
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
        if let Some(tls) = self.tls.conn_mut() {
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
        if !self.working() {
            return;
        }
        if let Err(e) = self.flush() {
            return self.host_failed(Failure::Connection(e.to_string()), registry, now);
        }
        let pending = !self.wbuf.is_empty() || self.tls.conn().is_some_and(|t| t.wants_write());
        let interest = if pending || !matches!(self.socket, Socket::Connected(_)) {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if interest != self.interest {
            if let Some(s) = self.socket.get_mut() {
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

    /// This host failed: fall back as the attempt decides, or end.
    fn host_failed(&mut self, f: Failure, registry: &Registry, now: Instant) {
        if !self.working() {
            return;
        }
        self.facts = None;
        if self.session.died_idle(&f) {
            self.count(|s| &s.outbound_idle_gone);
            // The cached connection died while idle (EOF, a reset, 421 to
            // RSET or MAIL: RFC 5321 §3.8, a server may close what it
            // finds idle; no reply to RSET: dropped on the way, by a NAT
            // or a firewall): not the host's failure. The batch goes on a
            // fresh connection; no attempt is counted, nothing reported.
            tracing::info!(
                target: "send",
                "delivery via {}: the idle connection was gone ({}); connecting afresh",
                self.attempt.relay_name(),
                f.outcome().detail
            );
            self.drop_connection(registry);
            self.attempt = Attempt::new(self.job.policy.clone(), self.job.targets.clone());
            self.new_session(now);
            self.connect(registry, now);
            self.step(registry, now);
            return;
        }
        // Messages this session did not finish.
        let remaining: Vec<usize> = self
            .in_session
            .iter()
            .copied()
            .filter(|j| self.results[*j].is_none())
            .collect();
        let after =
            self.attempt
                .host_failed(f, !remaining.is_empty(), crate::model::unix_now() as i64);
        self.log();
        self.drop_connection(registry);
        match after {
            AfterFailure::GiveUp(f) => {
                let outcome = f.outcome();
                for j in remaining {
                    let n = self.job.messages[j].recipients.len();
                    self.results[j] = Some(vec![outcome.clone(); n]);
                }
                return self.end(None);
            }
            AfterFailure::RetryClear | AfterFailure::NextHost => {}
        }
        self.in_session = remaining;
        self.new_session(now);
        self.connect(registry, now);
        self.step(registry, now);
    }

    /// Reports the attempt to the scheduler.
    fn end(&mut self, failure: Option<Failure>) {
        if !self.working() {
            return;
        }
        self.life = Life::Reported;
        let fallback = failure.as_ref().map(Failure::outcome).unwrap_or_else(|| {
            Failure::Connection("session ended before this message".into()).outcome()
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
        let summary = self.attempt.finish(delivered);
        self.log();
        let _ = self.job.reply.send(Event::Finished(AttemptResult {
            attempt: self.job.attempt,
            outcomes,
            relay: summary.relay,
            would_refuse: summary.would_refuse,
            set_aside: summary.set_aside,
            observed: summary.observed,
            sessions: summary.sessions,
            tls_level: summary.tls_level,
        }));
    }

    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut s) = self.socket.take() {
            let _ = registry.deregister(&mut s);
        }
    }
}

fn session_config(job: &Job, tls: TlsMode, keep_open: bool) -> client::Config {
    client::Config {
        helo: job.helo.clone(),
        tls,
        timeouts: job.timeouts,
        require_tls: job.policy.request == TlsRequest::Required,
        keep_open,
    }
}

/// An attempt's log line, at its level, its facts as fields.
fn emit(line: &attempt::Log) {
    use attempt::Log;
    match line {
        Log::WouldRefuse { relay, what, why } => tracing::warn!(
            target: "send",
            relay = %relay,
            source = what.labels().0,
            refusal = what.labels().1,
            reason = %why,
            "{line}"
        ),
        Log::SetAside { relay, what } => {
            tracing::info!(target: "send", relay = %relay, set_aside = what, "{line}")
        }
        Log::PassedOver { relay, why } => {
            tracing::info!(target: "send", relay = %relay, reason = %why, "{line}")
        }
        Log::ConnectFailed { relay, error } => {
            tracing::info!(target: "send", relay = %relay, error = %error, "{line}")
        }
        Log::TlsEstablished {
            relay,
            word,
            version,
            cipher,
            bits,
            resumed,
        } => tracing::info!(
            target: "send",
            relay = %relay,
            tls_trust = word,
            tls_version = version,
            tls_cipher = %cipher,
            tls_bits = bits,
            tls_resumed = resumed,
            "{line}"
        ),
        Log::HostFailed { relay, detail } => {
            tracing::info!(target: "send", relay = %relay, error = %detail, "{line}")
        }
        Log::RetryClear { relay } => tracing::info!(target: "send", relay = %relay, "{line}"),
    }
}
