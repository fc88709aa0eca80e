//! One connection: the glue between the socket, rustls and the SMTP
//! session. It knows nothing of SMTP grammar: it moves bytes, acts on the
//! session's [`Action`]s, and reports when it is done.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::handoff::Sender;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::stage::TlsStage;
use super::tls::Tls;
use super::writers::Job;
use super::{HandshakeFailure, Namer, ShardIo, ShardStats};
use crate::policy::Refusal as PolicyRefusal;
use crate::smtp::received;
use crate::smtp::reply::canned;
use crate::smtp::server::{Action, ClientVerify, Peer, Rejection, Session, StoreFailure};
use crate::smtp::Endpoint;
use crate::snapshot::Snapshot;
use crate::spool::{Spill, SpillArea};
use crate::state::admission::{Admission, Refusal};
use std::sync::atomic::Ordering;

/// A refused MAIL or RCPT (`smtp::server::RejectLine`) logged at `$level` with its
/// facts as fields (docs/operations.md, "Logs").
macro_rules! refusal_event {
    ($level:ident, $line:expr, $($message:tt)+) => {
        tracing::$level!(
            target: "receive",
            client_address = %$line.client_address,
            client_name = %$line.client_name,
            helo = %$line.helo,
            from = %$line.from,
            to = $line.to.as_deref(),
            reply_code = $line.code,
            dsn = $line.dsn,
            $($message)+
        )
    };
}

/// Octets read from a socket per `read` call: the size of the shard's
/// scratch buffer, which TLS records are decrypted from (see [`Tls`]).
pub const READ_CHUNK: usize = 16 * 1024;

/// What the shard must do with the connection after an event.
pub enum Outcome {
    /// Still open; the session's next deadline.
    Open { deadline: Option<Instant> },
    /// Closed.
    Closed,
}

/// Where an inbound connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// A PROXY header from a trusted balancer is due before anything else
    /// (OPS-8).
    AwaitingProxy,
    /// Talking SMTP: input is read and fed to the session.
    Talking,
    /// A spool writer has the session's message: input stays in the
    /// socket until [`Conn::stored`].
    Storing,
    /// Closing once `wbuf` (and TLS output) is flushed; nothing more is
    /// read.
    Closing,
}

impl Flow {
    /// Whether the socket is read in this state.
    fn reads(self) -> bool {
        match self {
            Flow::AwaitingProxy | Flow::Talking => true,
            Flow::Storing | Flow::Closing => false,
        }
    }
}

pub struct Conn {
    socket: TcpStream,
    /// Where the shard keeps this connection, and a number that tells it
    /// apart from earlier connections in the same slot.
    slot: usize,
    serial: u64,
    /// Where the connection is in its life: one state at a time.
    flow: Flow,
    token: Token,
    peer: SocketAddr,
    snapshot: Arc<Snapshot>,
    session: Session,
    /// In the clear, mid-handshake, or under TLS: one state at a time.
    transport: TlsStage<Tls>,
    /// Plaintext received and not yet consumed by the session.
    rbuf: Vec<u8>,
    /// Octets to write: replies in the clear before TLS (the last one the
    /// `220` to STARTTLS), then TLS records. Freed whenever it empties once
    /// TLS is up, so an idle TLS session holds no write buffer.
    wbuf: Vec<u8>,
    interest: Interest,
    pub timer_armed: Option<Instant>,
    /// The client address this connection counts against
    /// `limits.connections_per_ip` (none yet while a PROXY header is due).
    pub counted_ip: Option<IpAddr>,
    /// Where this connection streams large message data, and the current
    /// message's staging file.
    spill_area: Option<Arc<SpillArea>>,
    spill: Option<Spill>,
    /// The read at accept found the socket empty: the first turn
    /// ([`Conn::begin`]) need not read again (edge-triggered epoll reports
    /// what arrives after it).
    empty_at_accept: bool,
}

/// Over a connection limit: say which and hang up.
pub fn refuse_busy(mut stream: TcpStream, peer: SocketAddr, why: Refusal) {
    // RFC 5321 §3.1: a server may answer 421 instead of the banner.
    let (reply, reason) = match why {
        Refusal::Total => (canned::too_many_connections(), "limits.connections reached"),
        Refusal::PerIp => (
            canned::too_many_from_address(),
            "limits.connections_per_ip reached for this address",
        ),
    };
    let _ = stream.write(&reply.to_wire());
    tracing::warn!(target: "receive", "connect from [{}]:{} refused: {reason}", peer.ip(), peer.port());
}

impl Conn {
    #[allow(clippy::too_many_arguments)]
    pub fn accept(
        mut socket: TcpStream,
        peer: SocketAddr,
        snapshot: Arc<Snapshot>,
        registry: &Registry,
        token: Token,
        slot: usize,
        serial: u64,
        await_name: bool,
        expect_proxy: bool,
        counted_ip: Option<IpAddr>,
        spill_area: Option<Arc<SpillArea>>,
        now: Instant,
    ) -> io::Result<Conn> {
        // TCP_NODELAY comes from the listener (bind_reuseport).
        registry.register(&mut socket, token, Interest::READABLE)?;
        let mut session = Session::new(
            snapshot.clone(),
            Peer {
                ip: peer.ip(),
                port: peer.port(),
                name: None,
            },
        );
        if let Some(area) = &spill_area {
            session = session.with_budget(area.budget.clone());
        }
        let mut conn = Conn {
            socket,
            slot,
            serial,
            flow: if expect_proxy {
                Flow::AwaitingProxy
            } else {
                Flow::Talking
            },
            token,
            peer,
            snapshot,
            session,
            transport: TlsStage::Clear,
            rbuf: Vec::new(),
            wbuf: Vec::with_capacity(512),
            interest: Interest::READABLE,
            timer_armed: None,
            counted_ip,
            spill_area,
            spill: None,
            empty_at_accept: false,
        };
        // RFC 5321 §4.3.1: the client speaks after our banner. Anything
        // already waiting was sent before it; the session refuses it.
        let mut early = [0u8; 512];
        match conn.socket.read(&mut early) {
            Ok(n) if n > 0 => {
                if !expect_proxy && crate::proxy::looks_like_proxy(&early[..n]) {
                    tracing::warn!(
                        target: "receive",
                        "PROXY header from [{}]:{}, which is not in server.proxy_protocol_from: refused",
                        peer.ip(), peer.port()
                    );
                }
                conn.rbuf.extend_from_slice(&early[..n])
            }
            other => {
                conn.empty_at_accept =
                    matches!(&other, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
                // The banner waits for the client's name when one is looked up.
                if !await_name {
                    conn.session.greet(now);
                }
            }
        }
        Ok(conn)
    }

    /// The socket is ready (or the connection is new): read what there
    /// is, feed the session, act, write.
    pub fn ready(&mut self, now: Instant, io: &mut ShardIo<'_>) -> Outcome {
        self.empty_at_accept = false;
        self.turn(now, io, true)
    }

    /// The connection's first turn, right after [`Conn::accept`]: the
    /// banner goes out, and the socket is read only if the read at accept
    /// did not already find it empty (one `recvfrom` less per session).
    pub fn begin(&mut self, now: Instant, io: &mut ShardIo<'_>) -> Outcome {
        let read = !std::mem::take(&mut self.empty_at_accept);
        self.turn(now, io, read)
    }

    fn turn(&mut self, now: Instant, io: &mut ShardIo<'_>, read: bool) -> Outcome {
        match self.pump(now, io, read) {
            Ok(()) => {}
            Err(e) => {
                self.log_lost(&e);
                return self.finish();
            }
        }
        self.settle(io.registry)
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The resolver answered: choose the profile with the name, greet.
    pub fn named(&mut self, name: Option<String>, now: Instant, io: &mut ShardIo<'_>) -> Outcome {
        if let Some(n) = &name {
            tracing::info!(target: "receive", "client [{}]:{} is {}", self.peer.ip(), self.peer.port(), received::sanitize(n));
        }
        self.session.client_identified(name);
        self.session.greet(now);
        self.ready(now, io)
    }

    /// A spool writer finished this connection's message.
    pub fn stored(
        &mut self,
        result: Result<String, StoreFailure>,
        now: Instant,
        io: &mut ShardIo<'_>,
    ) -> Outcome {
        if self.flow == Flow::Storing {
            self.flow = Flow::Talking;
        }
        if result.is_ok() {
            // Counted as each message is stored, so that a scrape during a
            // long session sees it.
            io.stats.messages.fetch_add(1, Ordering::Relaxed);
        }
        self.session.stored(result.as_deref().map_err(|e| *e), now);
        if self.session.is_closed() {
            // The gateway is draining: the reply, then 421, then close.
            self.flow = Flow::Closing;
        }
        // Go on with what the client pipelined behind the message, and
        // read what arrived meanwhile.
        self.ready(now, io)
    }

    fn pump(&mut self, now: Instant, io: &mut ShardIo<'_>, read: bool) -> io::Result<()> {
        // Input that arrived before the banner (read at accept), or while
        // a message was being stored.
        let (shard, writers, stats, namer) = (io.shard, io.writers, io.stats, io.namer);
        let admission = (io.admission, stats);
        if self.flow == Flow::AwaitingProxy {
            self.proxy_header(now, namer, admission)?;
        }
        if self.flow == Flow::Talking && !self.rbuf.is_empty() && !self.session.is_closed() {
            self.feed(now, shard, writers, stats);
        }
        let chunk = &mut *io.scratch;
        // While a message is being stored, input stays in the socket: the
        // buffer cannot grow, and `stored` reads it afterwards.
        while read && self.flow.reads() {
            let n = match self.socket.read(chunk) {
                Ok(0) => {
                    self.handshake_failed(HandshakeFailure::Connection, stats);
                    self.peer_closed();
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.handshake_failed(HandshakeFailure::Connection, stats);
                    return Err(e);
                }
            };
            if self.transport.conn_mut().is_some() {
                match self.tls_input(&mut chunk[..n], now) {
                    // Counted once: the handshake completes once.
                    Ok(true) => {
                        stats.starttls_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.handshake_failed(HandshakeFailure::of(&e), stats);
                        return Err(e);
                    }
                }
            } else {
                self.rbuf.extend_from_slice(&chunk[..n]);
            }
            if self.flow == Flow::AwaitingProxy {
                self.proxy_header(now, namer, admission)?;
            }
            if self.flow == Flow::Talking && !self.rbuf.is_empty() {
                self.feed(now, shard, writers, stats);
            }
            // A short read drained the socket: epoll (edge-triggered) will
            // report the next arrival, so the read that would only say
            // EAGAIN is skipped.
            if n < chunk.len() {
                break;
            }
        }
        // The banner, or replies from before a read error.
        self.collect_output();
        self.flush()
    }

    /// OPS-8: the PROXY header from a trusted balancer; the original
    /// client's address replaces the balancer's for everything after.
    fn proxy_header(
        &mut self,
        now: Instant,
        namer: Namer<'_>,
        (admission, stats): (&Admission, &ShardStats),
    ) -> io::Result<()> {
        match crate::proxy::parse(&self.rbuf) {
            crate::proxy::Parsed::NeedMore => Ok(()),
            crate::proxy::Parsed::Invalid(why) => {
                tracing::warn!(target: "receive", "malformed PROXY header from [{}]:{}: {why}; closing", self.peer.ip(), self.peer.port());
                Err(io::Error::other("malformed PROXY header"))
            }
            crate::proxy::Parsed::Done(header, n) => {
                self.rbuf.drain(..n);
                self.flow = Flow::Talking;
                if let crate::proxy::Header::Client(original) = header {
                    tracing::info!(
                        target: "receive",
                        "connect from [{}]:{} via proxy [{}]:{}",
                        original.ip(), original.port(), self.peer.ip(), self.peer.port()
                    );
                    self.peer = original;
                    self.session.set_peer(Peer {
                        ip: original.ip(),
                        port: original.port(),
                        name: None,
                    });
                    let max = self.snapshot.limits.connections_per_ip;
                    if !admission.admit_ip(original.ip(), max) {
                        stats.refused_per_ip_limit.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(target: "receive", "connect from [{}]:{} refused: limits.connections_per_ip reached for this address", original.ip(), original.port());
                        self.wbuf
                            .extend_from_slice(&canned::too_many_from_address().to_wire());
                        self.flow = Flow::Closing;
                        return Ok(());
                    }
                    self.counted_ip = Some(original.ip());
                }
                if self.snapshot.profiles.index.needs_names() {
                    namer.request_name(self.peer.ip(), self.slot, self.serial);
                } else {
                    self.session.greet(now);
                }
                Ok(())
            }
        }
    }

    /// Passes received TLS records to rustls: the plaintext goes to the
    /// session's input, the handshake's answers to the write buffer.
    /// True when the handshake completed with these records.
    fn tls_input(&mut self, records: &mut [u8], now: Instant) -> io::Result<bool> {
        let was_handshaking = self.transport.handshaking();
        let Some(tls) = self.transport.conn_mut() else {
            return Ok(false);
        };
        let received = match tls.receive(records, &mut self.rbuf, &mut self.wbuf) {
            Ok(r) => r,
            Err(e) => {
                // Send the alert rustls queued, then give up.
                let _ = self.flush();
                tracing::info!(target: "receive", "SSL_accept error from [{}]:{}: {e}", self.peer.ip(), self.peer.port());
                return Err(io::Error::other(e));
            }
        };
        let completed = was_handshaking && !tls.state().is_handshaking();
        if completed {
            let state = tls.state();
            let facts = crate::tls::facts(state, self.snapshot.client_verifier.as_deref());
            // Postfix wording: Trusted = chain verified, Untrusted = a
            // certificate that did not verify, Anonymous = none.
            let trust = match facts.verify {
                ClientVerify::Ok => "Trusted",
                ClientVerify::Fail => "Untrusted",
                ClientVerify::No => "Anonymous",
            };
            let subject = facts
                .client_cert
                .as_ref()
                .map(|c| received::sanitize(&c.subject));
            let why = facts
                .client_cert
                .as_ref()
                .and_then(|c| c.verified.as_ref().err())
                .map(|e| received::sanitize(&e.to_string()));
            // As Postfix says it: the group, and whether the client
            // came back with a session ticket (no allocation for either).
            let (kx, group) = match state.negotiated_key_exchange_group() {
                Some(g) => (" key-exchange ", crate::tls::group_name(g.name())),
                None => ("", ""),
            };
            let resumed = if state.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                " resumed"
            } else {
                ""
            };
            tracing::info!(
                target: "receive",
                client_address = %self.peer.ip(),
                client_port = self.peer.port(),
                tls_trust = trust,
                tls_version = %facts.version,
                tls_cipher = %facts.cipher,
                tls_bits = facts.bits,
                tls_group = group,
                tls_resumed = !resumed.is_empty(),
                client_certificate = subject.as_deref(),
                "{trust} TLS connection established from [{}]:{}: {} with cipher {} ({}/{} bits){kx}{group}{resumed}{}{}",
                self.peer.ip(), self.peer.port(), facts.version, facts.cipher, facts.bits, facts.bits,
                subject.as_ref().map(|s| format!(" client certificate {s}")).unwrap_or_default(),
                why.map(|w| format!(" verify failed: {w}")).unwrap_or_default()
            );
            self.session.tls_established(facts, now);
        }
        if completed {
            self.transport.establish();
        }
        // close_notify: the client is done sending.
        if received.peer_closed {
            self.flow = Flow::Closing;
        }
        Ok(completed)
    }

    /// Feeds buffered plaintext to the session and acts on what it asks.
    fn feed(&mut self, now: Instant, shard: usize, writers: &Sender<Job>, stats: &ShardStats) {
        loop {
            let fed = self.session.feed(&self.rbuf, now);
            self.rbuf.drain(..fed.consumed);
            // A message refused at its end (too big, bad line endings) or
            // a session gone: its staged data goes too.
            if self.spill.is_some() && !self.session.in_data() {
                self.spill = None;
            }
            while let Some(rejection) = self.session.poll_event() {
                let (counter, line) = match rejection {
                    Rejection::UntrustedProxy { line } => {
                        tracing::warn!(target: "receive", "{line}: refused");
                        continue;
                    }
                    Rejection::WouldRefuse { refusal, line } => {
                        stats.would_refuse[refusal.index()].fetch_add(1, Ordering::Relaxed);
                        refusal_event!(warn, line, "would refuse (report-only profile): {line}");
                        continue;
                    }
                    Rejection::Policy {
                        refusal: PolicyRefusal::TlsRequired,
                        line,
                    } => (&stats.mandatory_tls_refusals, line),
                    Rejection::Policy {
                        refusal:
                            PolicyRefusal::RelayDenied
                            | PolicyRefusal::CipherTooWeak { .. }
                            | PolicyRefusal::ClientCertMissing
                            | PolicyRefusal::ClientCertNotVerified(_)
                            | PolicyRefusal::ClientCertName(_)
                            | PolicyRefusal::ClientCertPin,
                        line,
                    } => (&stats.rejects, line),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                refusal_event!(info, line, "NOQUEUE: reject: {line}");
            }
            match fed.action {
                None => break,
                Some(Action::Spill(chunk)) => {
                    // Data past limits.message_buffer: to the staging
                    // file (page cache; synced by the spool writer).
                    if let Some(area) = &self.spill_area {
                        self.spill
                            .get_or_insert_with(|| area.create())
                            .append(&chunk);
                    }
                    continue;
                }
                Some(Action::Store(message)) => {
                    let spill = self.spill.take();
                    if let Some(e) = spill.as_ref().and_then(|s| s.failure()) {
                        tracing::error!(
                            target: "receive",
                            "NOQUEUE: cannot stage message data from [{}]:{}: {e}",
                            self.peer.ip(), self.peer.port()
                        );
                        self.session
                            .stored(Err(crate::spool::store_failure(e)), now);
                        continue;
                    }
                    let job = Job {
                        shard,
                        slot: self.slot,
                        serial: self.serial,
                        message,
                        hostname: self.snapshot.hostname.clone(),
                        spill,
                    };
                    if writers.send(job).is_err() {
                        // The writers are gone: the gateway is stopping.
                        self.session.stored(Err(StoreFailure::Other), now);
                        continue;
                    }
                    self.flow = Flow::Storing;
                    break;
                }
                Some(Action::StartTls) => {
                    // RFC 3207 §4.2: the session consumed (dropped) whatever
                    // followed STARTTLS in the clear.
                    debug_assert!(self.rbuf.is_empty());
                    self.session.poll_output(&mut self.wbuf);
                    // IN-4: ask for a client certificate only when the
                    // client's profile (or a sender-domain profile that may
                    // still apply) wants one.
                    let ask = self
                        .snapshot
                        .profiles
                        .ask_for_certificate(self.session.profile_at_connect());
                    let config = if ask {
                        self.snapshot.tls_ask_cert.clone()
                    } else {
                        self.snapshot.tls.clone()
                    };
                    if let Some(config) = config {
                        match Tls::new(config) {
                            Ok(c) => self.transport = TlsStage::Handshaking(c),
                            Err(e) => {
                                tracing::warn!(target: "receive", "cannot start TLS for {}: {e}", self.peer);
                                self.flow = Flow::Closing;
                            }
                        }
                    }
                    break;
                }
                Some(Action::Close) => {
                    self.flow = Flow::Closing;
                    break;
                }
            }
        }
        self.collect_output();
        // RFC 8446 §6.1: close_notify before closing the write side (after
        // the 221 to QUIT, or the 421 that ends a session), so the client
        // can tell the end from a truncation.
        if self.flow == Flow::Closing {
            self.close_notify();
        }
    }

    /// Moves session output to the right place: the TLS writer once TLS is
    /// up, the cleartext buffer before.
    fn collect_output(&mut self) {
        if !self.session.has_output() {
            return;
        }
        match &mut self.transport {
            TlsStage::Established(tls) => {
                // Encrypted straight into the write buffer: no per-reply
                // buffer on this path.
                if let Err(e) = tls.send(self.session.output(), &mut self.wbuf) {
                    tracing::warn!(target: "receive", "cannot encrypt a reply to [{}]:{}: {e}; closing", self.peer.ip(), self.peer.port());
                    self.flow = Flow::Closing;
                }
                self.session.clear_output();
            }
            // Mid-handshake (or after it failed) the session has nothing
            // to say; anything it produced (a timeout) cannot be said in
            // the clear.
            TlsStage::Handshaking(_) | TlsStage::Failed(_) => self.session.clear_output(),
            TlsStage::Clear => self.session.poll_output(&mut self.wbuf),
        }
    }

    /// RFC 8446 §6.1: `close_notify` after the last reply (once; nothing
    /// mid-handshake).
    fn close_notify(&mut self) {
        match &mut self.transport {
            TlsStage::Established(tls) => {
                let _ = tls.close(&mut self.wbuf);
            }
            TlsStage::Clear | TlsStage::Handshaking(_) | TlsStage::Failed(_) => {}
        }
    }

    /// Writes until done or the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.socket.write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Once TLS is up, an idle session keeps no write buffer (what it
        // sends next is encrypted into a new one).
        if self.transport.conn_mut().is_some() && self.wbuf.capacity() > 0 {
            self.wbuf = Vec::new();
        }
        Ok(())
    }

    fn pending_write(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Decides what to wait for next, or closes.
    fn settle(&mut self, registry: &Registry) -> Outcome {
        if self.flow == Flow::Closing && !self.pending_write() {
            return self.finish();
        }
        let want = if self.pending_write() {
            if self.flow == Flow::Closing {
                Interest::WRITABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            }
        } else {
            Interest::READABLE
        };
        if want != self.interest {
            if registry
                .reregister(&mut self.socket, self.token, want)
                .is_err()
            {
                return self.finish();
            }
            self.interest = want;
        }
        Outcome::Open {
            deadline: self.session.poll_timeout(),
        }
    }

    /// A timer fired: time the session out if its deadline has passed.
    pub fn check_deadline(
        &mut self,
        now: Instant,
        registry: &Registry,
        stats: &ShardStats,
    ) -> Outcome {
        match self.session.poll_timeout() {
            Some(d) if d <= now => {
                self.handshake_failed(HandshakeFailure::Timeout, stats);
                tracing::info!(target: "receive", "timeout after {} from [{}]:{}", self.session_phase(), self.peer.ip(), self.peer.port());
                let _ = self.session.handle_timeout(now);
                self.flow = Flow::Closing;
                self.collect_output();
                if self.flush().is_err() {
                    return self.finish();
                }
                self.settle(registry)
            }
            deadline => Outcome::Open { deadline },
        }
    }

    fn session_phase(&self) -> &'static str {
        self.session.phase_name()
    }

    /// The gateway is draining (OPS-7): close now between commands, or
    /// after the message in progress.
    pub fn drain(&mut self, registry: &Registry) -> Outcome {
        if self.session.drain().is_some() {
            self.flow = Flow::Closing;
            self.collect_output();
            self.close_notify();
            if self.flush().is_err() {
                return self.finish();
            }
        }
        self.settle(registry)
    }

    /// The drain time is over: say `421` and flush what we can.
    pub fn shutdown(&mut self) {
        self.session.shutdown();
        self.collect_output();
        self.close_notify();
        let _ = self.flush();
    }

    fn finish(&mut self) -> Outcome {
        let s = self.session.stats();
        tracing::info!(
            target: "receive",
            client_address = %self.peer.ip(),
            client_port = self.peer.port(),
            messages = s.messages,
            errors = s.errors,
            "disconnect from [{}]:{} {} messages={} errors={}",
            self.peer.ip(), self.peer.port(), s.summary(), s.messages, s.errors
        );
        Outcome::Closed
    }

    fn log_lost(&self, e: &io::Error) {
        if !self.session.is_closed() && e.kind() != io::ErrorKind::Other {
            tracing::info!(
                target: "receive",
                client_address = %self.peer.ip(),
                client_port = self.peer.port(),
                error = %e,
                "lost connection from [{}]:{}: {e}", self.peer.ip(), self.peer.port()
            );
        }
    }

    /// The client closed its side: answer what it sent (best effort),
    /// then close.
    /// Counts a failed STARTTLS handshake, once, if one is under way.
    fn handshake_failed(&mut self, why: HandshakeFailure, stats: &ShardStats) {
        if self.transport.fail() {
            // The counters are in declaration order.
            stats.starttls_failed[why as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn peer_closed(&mut self) {
        if !self.session.is_closed() {
            tracing::info!(target: "receive", "lost connection after {} from [{}]:{}", self.session_phase(), self.peer.ip(), self.peer.port());
        }
        self.flow = Flow::Closing;
    }

    /// Dropping the connection closes the socket, which removes it from
    /// the epoll set: no separate deregister call.
    pub fn close(self) {}
}
