//! The inbound SMTP session, sans-IO.
//!
//! The shard feeds it the plaintext bytes it read and the current time; the
//! session appends replies to its output buffer and, when the connection
//! glue has to act, stops and returns an [`Action`]: start TLS, store a
//! message, or close. It never touches a socket or a clock, so every test
//! drives it with byte tables and simulated time.
//!
//! Replies are only ever appended, in command order (RFC 2920 §3: replies
//! to pipelined commands in order); the glue writes whatever has accumulated
//! once it has fed all the input it has, which batches the replies of a
//! pipelined group into one write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::{self, Command, CommandError, Line, MailParams, ReversePath};
use super::data::{DataError, DataProgress, DataReader};
use super::reply::{canned, Reply};
use super::Endpoint;
pub use crate::model::{ClientVerify, Envelope, Peer, TlsFacts};
use crate::policy::matcher::Client;
use crate::policy::profile::Chosen;
use crate::policy::{self, Limits, Refusal, TlsState};
use crate::snapshot::Snapshot;

/// A complete message for the spool: envelope and data (CRLF line endings,
/// dot-unstuffed, without the Received header, which the glue prepends
/// once the spool has named the message).
#[derive(Debug)]
pub struct Message {
    pub envelope: Envelope,
    pub data: Vec<u8>,
}

/// A refusal the session made, for the glue to count and log.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// MAIL or RCPT refused by policy: why, and the Postfix-style line
    /// (`RCPT from …: 554 …; from=<…> to=<…> proto=ESMTP helo=<…>`).
    Policy { refusal: Refusal, line: String },
    /// A PROXY header from an address not in `server.proxy_protocol_from`.
    UntrustedProxy { line: String },
}

/// Message data held in memory by every session of the gateway, against
/// `limits.inflight_data` (shared by all shards).
#[derive(Debug, Default)]
pub struct DataBudget {
    used: std::sync::atomic::AtomicU64,
}

impl DataBudget {
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn take(&self, n: u64) {
        self.used.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn give(&self, n: u64) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Work the connection glue must do before feeding more input.
#[derive(Debug)]
pub enum Action {
    /// Write the pending output (ending in `220 Ready to start TLS`), run
    /// the handshake, then call [`Session::tls_established`]. The session
    /// has consumed (discarded) all the input it was given: RFC 3207 §4.2 —
    /// whatever the client pipelined behind STARTTLS was sent in the clear
    /// and must not be acted on.
    StartTls,
    /// Store the message durably, then call [`Session::stored`]. Its data
    /// is what followed the last [`Action::Spill`], if any.
    Store(Box<Message>),
    /// Message data past `limits.message_buffer` (or while the in-flight
    /// budget is exhausted): append it to this message's staging file, then
    /// feed on. Only sessions given a budget ([`Session::with_budget`])
    /// spill.
    Spill(Vec<u8>),
    /// Write the pending output, then close the connection.
    Close,
}

/// The result of one [`Endpoint::feed`] call.
pub type Fed = super::Fed<Action>;

#[derive(Debug)]
enum Phase {
    /// Connected, banner not yet sent.
    Greeting,
    /// Reading command lines.
    Command,
    /// Skipping the rest of a command line that was too long.
    DiscardLine,
    /// Reading message data.
    Data(Box<DataState>),
    /// STARTTLS accepted; waiting for the handshake.
    AwaitTls,
    /// A complete message is being stored.
    AwaitStore,
    Closed,
}

#[derive(Debug)]
struct Transaction {
    from: String,
    params: MailParams,
    recipients: Vec<String>,
}

/// Reading a message: the transaction it belongs to, the reader, its
/// deadlines' clock and the data so far (since the last spill).
#[derive(Debug)]
struct DataState {
    transaction: Transaction,
    reader: DataReader,
    clock: DataClock,
    data: Vec<u8>,
}

pub struct Session {
    snapshot: Arc<Snapshot>,
    peer: Peer,
    phase: Phase,
    helo: Option<(String, bool)>,
    transaction: Option<Transaction>,
    tls: Option<TlsFacts>,
    starttls_offered: bool,
    relay_allowed: bool,
    /// The profile chosen by address (and name) when the client connected.
    at_connect: Option<Chosen>,
    /// The gateway is stopping: close after the message in progress.
    draining: bool,
    /// Refused MAIL/RCPT commands, for the `NOQUEUE: reject:` log lines.
    rejections: std::collections::VecDeque<Rejection>,
    errors: usize,
    deadline: Option<Instant>,
    out: Vec<u8>,
    stats: SessionStats,
    /// The in-flight data budget, and how much of it this session holds.
    budget: Option<Arc<DataBudget>>,
    held: u64,
}

/// Counts for the disconnect log line (Postfix style: `ehlo=1 mail=1 …`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    pub commands: u32,
    pub messages: u32,
    pub errors: u32,
    /// Per verb, in Postfix's order: ehlo, helo, starttls, mail, rcpt,
    /// data, rset, noop, quit, other.
    pub verbs: [u32; 10],
}

const VERB_NAMES: [&str; 10] = [
    "ehlo", "helo", "starttls", "mail", "rcpt", "data", "rset", "noop", "quit", "unknown",
];

impl SessionStats {
    /// Postfix's disconnect summary: `ehlo=1 starttls=1 mail=1 rcpt=1
    /// data=1 quit=1 commands=6`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (name, n) in VERB_NAMES.iter().zip(self.verbs) {
            if n > 0 {
                out.push_str(&format!("{name}={n} "));
            }
        }
        out.push_str(&format!("commands={}", self.commands));
        out
    }
}

/// Why a message could not be stored; the client hears which (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Out of space, quota or file size: `452 4.3.1`.
    Full,
    /// Anything else: `451 4.3.0`.
    Other,
}

impl StoreFailure {
    pub fn of(e: &std::io::Error) -> StoreFailure {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => StoreFailure::Full,
            _ => StoreFailure::Other,
        }
    }
}

/// Deadlines in DATA. RFC 5321 §4.5.3.2.5 bounds the silence between
/// data blocks (`data_timeout`); that alone lets a client that sends one
/// octet a minute hold a session for ever. So, as Postfix's
/// `smtpd_min_data_rate`, once `data_timeout` has passed since the 354 the
/// client must also have averaged `min_data_rate` octets per second.
/// Octets beyond `message_size` earn no more time: such a message is
/// refused anyway, so a client streaming without end is cut too, at the
/// latest `data_timeout + message_size / min_data_rate` after the 354.
#[derive(Debug)]
struct DataClock {
    since: Instant,
    received: u64,
}

impl DataClock {
    /// Counts `n` octets arrived at `now`; returns the new deadline.
    fn arrived(&mut self, n: usize, now: Instant, limits: &Limits) -> Instant {
        self.received += n as u64;
        let idle = now + limits.data_timeout;
        if limits.min_data_rate == 0 {
            return idle;
        }
        let counted = self.received.min(limits.message_size as u64);
        let earned = Duration::from_secs_f64(counted as f64 / limits.min_data_rate as f64);
        idle.min(self.since + limits.data_timeout + earned)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.release();
    }
}

impl Session {
    pub fn new(snapshot: Arc<Snapshot>, peer: Peer) -> Self {
        let starttls_offered = snapshot.tls.is_some();
        let mut session = Session {
            snapshot,
            peer,
            phase: Phase::Greeting,
            helo: None,
            transaction: None,
            tls: None,
            starttls_offered,
            relay_allowed: false,
            at_connect: None,
            draining: false,
            rejections: std::collections::VecDeque::new(),
            errors: 0,
            deadline: None,
            out: Vec::with_capacity(256),
            budget: None,
            held: 0,
            stats: SessionStats::default(),
        };
        session.choose_profile();
        session
    }

    /// Accounts this session's message data against `budget`, refuses MAIL
    /// and DATA while it is exhausted, and streams data past
    /// `limits.message_buffer` out with [`Action::Spill`].
    pub fn with_budget(mut self, budget: Arc<DataBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Whether the in-flight data budget is used up.
    fn budget_exhausted(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| b.used() >= self.snapshot.limits.inflight_data)
    }

    /// Holds exactly the `in_memory` octets of data against the budget.
    fn account_data(&mut self, in_memory: usize) {
        if let Some(b) = &self.budget {
            let now_held = in_memory as u64;
            if now_held > self.held {
                b.take(now_held - self.held);
            } else {
                b.give(self.held - now_held);
            }
            self.held = now_held;
        }
    }

    /// Data past `limits.message_buffer`, or any while the budget is used
    /// up, leaves memory for the staging file.
    fn should_spill(&self, in_memory: usize) -> bool {
        self.budget.is_some()
            && in_memory > 0
            && (in_memory >= self.snapshot.limits.message_buffer || self.budget_exhausted())
    }

    /// Gives back what this session holds of the budget.
    fn release(&mut self) {
        if let Some(b) = &self.budget {
            b.give(self.held);
        }
        self.held = 0;
    }

    /// Whether the session is reading message data (a staging file the
    /// glue keeps for it belongs to this message).
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data(_) | Phase::AwaitStore)
    }

    /// The connection came through a trusted proxy: the client is `peer`.
    pub fn set_peer(&mut self, peer: Peer) {
        self.peer = peer;
        self.choose_profile();
    }

    /// The client's forward-confirmed host name is known (or known not to
    /// exist): choose the profile again with it.
    pub fn client_identified(&mut self, name: Option<String>) {
        self.peer.name = name;
        self.choose_profile();
    }

    fn choose_profile(&mut self) {
        self.at_connect = self.snapshot.profiles.select(&Client {
            ip: self.peer.ip,
            name: self.peer.name.as_deref(),
            sender_domain: None,
        });
        // IN-5: relay permission comes only from a profile that matched the
        // client by address or name, never from a claimed sender domain.
        self.relay_allowed = self.snapshot.relay_everyone
            || self.at_connect.as_ref().is_some_and(|c| {
                c.matched_by.by_client() && self.snapshot.profiles.list[c.index].relay
            });
    }

    /// Sends the banner (RFC 5321 §4.3.1: `220 <domain>`).
    pub fn greet(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Greeting) {
            let banner = Reply::new(
                220,
                "",
                format!("{} ESMTP sealgate", self.snapshot.hostname),
            );
            banner.write_to(&mut self.out);
            self.phase = Phase::Command;
            self.deadline = Some(now + self.snapshot.limits.command_timeout);
        }
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The profile chosen at connect, for logs and the TLS layer.
    pub fn profile_at_connect(&self) -> Option<&Chosen> {
        self.at_connect.as_ref()
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    pub fn tls(&self) -> Option<&TlsFacts> {
        self.tls.as_ref()
    }

    /// Where the session is, for log lines (`lost connection after DATA`).
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Greeting => "CONNECT",
            Phase::Command | Phase::DiscardLine => match (&self.transaction, &self.helo) {
                (Some(tx), _) if !tx.recipients.is_empty() => "RCPT",
                (Some(_), _) => "MAIL",
                (None, Some(_)) => "EHLO",
                (None, None) => "CONNECT",
            },
            Phase::Data(_) => "DATA",
            Phase::AwaitTls => "STARTTLS",
            Phase::AwaitStore => "END-OF-MESSAGE",
            Phase::Closed => "QUIT",
        }
    }

    fn note_rejection(
        &mut self,
        verb: &str,
        refusal: Refusal,
        reply: &Reply,
        from: &str,
        to: Option<&str>,
    ) {
        let helo = self.helo.as_ref().map(|(h, _)| h.as_str()).unwrap_or("");
        let proto = match &self.helo {
            Some((_, true)) => "ESMTP",
            _ => "SMTP",
        };
        let name = self.peer.name.as_deref().unwrap_or("unknown");
        let mut line = format!(
            "{verb} from {name}[{}]: {reply}; from=<{from}>",
            self.peer.ip
        );
        if let Some(to) = to {
            line.push_str(&format!(" to=<{to}>"));
        }
        line.push_str(&format!(" proto={proto} helo=<{helo}>"));
        self.rejections.push_back(Rejection::Policy {
            refusal,
            line: super::received::sanitize_line(&line),
        });
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The replies produced so far, unsent; call `clear_output` once they
    /// are handed on. Lets a TLS writer take them without a copy.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    pub fn clear_output(&mut self) {
        self.out.clear();
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The deadline passed without input (RFC 5321 §4.5.3.2).
    fn expire(&mut self) -> Action {
        match self.phase {
            // Mid-handshake there is no channel to say anything on.
            Phase::AwaitTls | Phase::Closed => {}
            _ => canned::timeout().write_to(&mut self.out),
        }
        self.close()
    }

    /// The gateway is stopping (OPS-7). A session between commands is told
    /// so now (`421 4.3.2`) and closed; one that is sending or storing a
    /// message finishes it, gets its reply, and is closed after it.
    pub fn drain(&mut self) -> Option<Action> {
        self.draining = true;
        match self.phase {
            Phase::Data(_) | Phase::AwaitStore => None,
            _ => Some(self.shutdown()),
        }
    }

    /// The gateway is stopping: answer `421 4.3.2` and close.
    pub fn shutdown(&mut self) -> Action {
        if !matches!(self.phase, Phase::AwaitTls | Phase::Closed) {
            canned::shutting_down().write_to(&mut self.out);
        }
        self.close()
    }

    fn close(&mut self) -> Action {
        self.phase = Phase::Closed;
        self.deadline = None;
        Action::Close
    }

    /// Feeds plaintext input. Returns how much was consumed and, when the
    /// glue has to act, the action; the glue then acts and feeds the rest.
    fn process(&mut self, input: &[u8], now: Instant) -> Fed {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let step = match &mut self.phase {
                Phase::Greeting => {
                    // RFC 5321 §3.1 / §4.3.1: the client waits for the
                    // greeting. Talking first marks a non-compliant client
                    // (or a spam engine), as Postfix's postscreen does.
                    canned::pregreet().write_to(&mut self.out);
                    return Fed {
                        consumed: input.len(),
                        action: Some(self.close()),
                    };
                }
                Phase::Closed | Phase::AwaitTls | Phase::AwaitStore => {
                    return Fed {
                        consumed: pos,
                        action: None,
                    }
                }
                Phase::DiscardLine => match memchr::memchr(b'\n', rest) {
                    Some(lf) => {
                        self.phase = Phase::Command;
                        Step::consumed(lf + 1)
                    }
                    None => Step::consumed(rest.len()),
                },
                Phase::Data(st) => {
                    self.deadline = Some(st.clock.arrived(rest.len(), now, &self.snapshot.limits));
                    let ended = match st.reader.feed(rest, &mut st.data) {
                        DataProgress::NeedMore => None,
                        DataProgress::End { consumed } => Some((consumed, st.reader.outcome())),
                    };
                    let spill = ended.is_none().then(|| std::mem::take(&mut st.data));
                    let in_memory = spill.as_ref().map_or(0, Vec::len);
                    match (ended, spill) {
                        (Some((consumed, outcome)), _) => Step {
                            consumed,
                            action: self.end_of_data(outcome),
                            sync_check: false,
                        },
                        (None, Some(data)) => {
                            self.account_data(in_memory);
                            if self.should_spill(in_memory) {
                                self.release();
                                Step {
                                    consumed: rest.len(),
                                    action: Some(Action::Spill(data)),
                                    sync_check: false,
                                }
                            } else {
                                // Not spilled: back where it was.
                                if let Phase::Data(st) = &mut self.phase {
                                    st.data = data;
                                }
                                Step::consumed(rest.len())
                            }
                        }
                        (None, None) => Step::consumed(rest.len()),
                    }
                }
                Phase::Command => self.command_line(rest, now),
            };
            if step.consumed == 0 && step.action.is_none() {
                // An incomplete command line: wait for more input.
                break;
            }
            pos += step.consumed;
            if let Some(action) = step.action {
                // RFC 3207 §4.2 / CVE-2011-0411: what followed STARTTLS in
                // this input came in the clear: consumed, never acted on.
                let consumed = match action {
                    Action::StartTls => input.len(),
                    Action::Store(_) | Action::Spill(_) | Action::Close => pos,
                };
                return Fed {
                    consumed,
                    action: Some(action),
                };
            }
            // RFC 2920 §3.1: DATA ends a pipelined group; a client that sent
            // more before our 354 did not wait for it.
            if matches!(self.phase, Phase::Data(_)) && step.sync_check && pos < input.len() {
                canned::sync_error().write_to(&mut self.out);
                return Fed {
                    consumed: input.len(),
                    action: Some(self.close()),
                };
            }
        }
        Fed {
            consumed: pos,
            action: None,
        }
    }

    fn command_line(&mut self, rest: &[u8], now: Instant) -> Step {
        let cap = self.snapshot.limits.command_line;
        match command::next_line(rest, cap) {
            Line::NeedMore => Step::consumed(0),
            Line::TooLong { consumed, ended } => {
                if !ended {
                    self.phase = Phase::DiscardLine;
                }
                Step {
                    consumed,
                    action: self.error(canned::line_too_long()),
                    sync_check: false,
                }
            }
            Line::Complete { line, consumed } => {
                self.deadline = Some(now + self.snapshot.limits.command_timeout);
                self.stats.commands += 1;
                // OPS-8: a PROXY header from an address that may not send
                // one (it was not read as such): refuse and hang up.
                if line.starts_with(b"PROXY ") && self.helo.is_none() {
                    self.rejections.push_back(Rejection::UntrustedProxy {
                        line: format!(
                            "PROXY header from [{}]:{}, which is not in server.proxy_protocol_from",
                            self.peer.ip, self.peer.port
                        ),
                    });
                    Reply::new(554, "5.7.0", "PROXY header not accepted from this address")
                        .write_to(&mut self.out);
                    return Step {
                        consumed,
                        action: Some(self.close()),
                        sync_check: false,
                    };
                }
                let action = match command::parse(line) {
                    Ok(cmd) => self.command(cmd, now),
                    Err(e) => self.error(command_error_reply(e)),
                };
                Step {
                    consumed,
                    action,
                    sync_check: true,
                }
            }
        }
    }

    fn command(&mut self, cmd: Command<'_>, now: Instant) -> Option<Action> {
        let verb = match &cmd {
            Command::Ehlo(_) => 0,
            Command::Helo(_) => 1,
            Command::StartTls => 2,
            Command::Mail { .. } => 3,
            Command::Rcpt { .. } => 4,
            Command::Data => 5,
            Command::Rset => 6,
            Command::Noop => 7,
            Command::Quit => 8,
            Command::Vrfy | Command::Help | Command::NotImplemented(_) => 9,
        };
        self.stats.verbs[verb] += 1;
        match cmd {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => self.data_command(now),
            Command::Rset => {
                self.transaction = None;
                self.reply(canned::ok())
            }
            Command::Noop => self.reply(canned::ok()),
            Command::Vrfy => self.reply(canned::vrfy()),
            Command::Help => self.reply(canned::help()),
            Command::Quit => {
                canned::bye().write_to(&mut self.out);
                Some(self.close())
            }
            Command::StartTls => self.starttls(),
            Command::NotImplemented(_) => self.error(canned::not_implemented()),
        }
    }

    fn hello(&mut self, name: &str, esmtp: bool) -> Option<Action> {
        // RFC 5321 §4.1.4: EHLO/HELO resets like RSET.
        self.transaction = None;
        self.helo = Some((name.to_string(), esmtp));
        let host = &self.snapshot.hostname;
        if !esmtp {
            return self.reply(Reply::new(250, "", host.clone()));
        }
        let mut lines: Vec<std::borrow::Cow<'static, str>> = vec![
            host.clone().into(),
            "PIPELINING".into(),
            format!("SIZE {}", self.snapshot.limits.message_size).into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.starttls_offered && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        self.reply(Reply::multi(250, lines))
    }

    fn mail(&mut self, from: ReversePath<'_>, params: MailParams) -> Option<Action> {
        if self.helo.is_none() {
            return self.error(canned::bad_sequence("Send EHLO or HELO first"));
        }
        if self.transaction.is_some() {
            return self.error(canned::bad_sequence("Nested MAIL command"));
        }
        if self.budget_exhausted() {
            return self.error(canned::busy());
        }
        // RFC 1870 §6.2: a declared size over the limit is refused at MAIL.
        if params
            .size
            .is_some_and(|s| s > self.snapshot.limits.message_size as u64)
        {
            return self.error(canned::message_too_big());
        }
        let sender_domain = match &from {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m.domain),
        };
        let chosen = self.profile_for_sender(sender_domain);
        if let Some(profile) = self.snapshot.profiles.get(chosen.as_ref()) {
            let tls = self.tls.as_ref().map(|t| TlsState {
                bits: t.bits,
                client_cert: t.client_cert.as_ref(),
            });
            if let Err(refusal) =
                policy::check_mail(&profile.server, tls, self.peer.name.as_deref())
            {
                let reply = refusal_reply(refusal.clone());
                let from_text = match &from {
                    ReversePath::Null => String::new(),
                    ReversePath::Mailbox(m) => m.to_string(),
                };
                self.note_rejection("MAIL", refusal, &reply, &from_text, None);
                return self.error(reply);
            }
        }
        let from = match from {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(m) => m.to_string(),
        };
        self.transaction = Some(Transaction {
            from,
            params,
            recipients: Vec::new(),
        });
        self.reply(canned::sender_ok())
    }

    fn rcpt(&mut self, to: command::Mailbox<'_>) -> Option<Action> {
        let limit = self.snapshot.limits.recipients;
        let Some(tx) = &self.transaction else {
            return self.error(canned::bad_sequence("Need MAIL before RCPT"));
        };
        // RFC 5321 §4.5.3.1.8: refuse the excess with 452 and keep the
        // recipients already accepted.
        if tx.recipients.len() >= limit {
            return self.error(canned::too_many_recipients());
        }
        match policy::check_recipient(&self.snapshot.accept_domains, self.relay_allowed, to.domain)
        {
            Ok(()) => {
                // RFC 5321 §4.5.1: `<postmaster>` is ours; it is delivered
                // as postmaster of our first domain (or our host name).
                let rcpt = if to.is_postmaster() {
                    let domain = self
                        .snapshot
                        .accept_domains
                        .first()
                        .unwrap_or(&self.snapshot.hostname);
                    format!("{}@{domain}", to.local)
                } else {
                    to.to_string()
                };
                if let Some(tx) = &mut self.transaction {
                    tx.recipients.push(rcpt);
                }
                self.reply(canned::recipient_ok())
            }
            Err(refusal) => {
                let reply = refusal_reply(refusal.clone());
                let from = self
                    .transaction
                    .as_ref()
                    .map(|t| t.from.clone())
                    .unwrap_or_default();
                self.note_rejection("RCPT", refusal, &reply, &from, Some(&to.to_string()));
                self.error(reply)
            }
        }
    }

    /// The profile for this MAIL FROM: the one chosen by address or name
    /// at connect, else by sender domain, else the `*` default.
    fn profile_for_sender(&self, sender_domain: Option<&str>) -> Option<Chosen> {
        match &self.at_connect {
            Some(c) if c.matched_by.by_client() => Some(c.clone()),
            _ => self.snapshot.profiles.select(&Client {
                ip: self.peer.ip,
                name: self.peer.name.as_deref(),
                sender_domain,
            }),
        }
    }

    fn data_command(&mut self, now: Instant) -> Option<Action> {
        match self.transaction.take() {
            None => self.error(canned::bad_sequence("Need MAIL command")),
            Some(tx) if tx.recipients.is_empty() => {
                self.transaction = Some(tx);
                self.error(canned::no_valid_recipients())
            }
            Some(tx) if self.budget_exhausted() => {
                self.transaction = Some(tx);
                self.error(canned::busy())
            }
            Some(transaction) => {
                let limits = &self.snapshot.limits;
                self.phase = Phase::Data(Box::new(DataState {
                    transaction,
                    reader: DataReader::new(
                        limits.text_line,
                        limits.message_size,
                        limits.bare_line_endings,
                    ),
                    clock: DataClock {
                        since: now,
                        received: 0,
                    },
                    data: Vec::new(),
                }));
                self.reply(canned::start_data())
            }
        }
    }

    fn end_of_data(&mut self, outcome: Result<(), DataError>) -> Option<Action> {
        // Called from the DATA phase only: the message's state leaves it.
        let state = match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::Data(state) => state,
            other @ (Phase::Greeting
            | Phase::Command
            | Phase::DiscardLine
            | Phase::AwaitTls
            | Phase::AwaitStore
            | Phase::Closed) => {
                self.phase = other;
                return None;
            }
        };
        let DataState {
            transaction: tx,
            data,
            ..
        } = *state;
        if let Err(e) = outcome {
            self.release();
            let reply = match e {
                DataError::TooBig => canned::message_too_big(),
                DataError::BareLineEnding => canned::bare_line_ending(),
                DataError::LineTooLong => canned::text_line_too_long(),
            };
            return self.error(reply);
        }
        // Held against the budget until the spool has it.
        self.account_data(data.len());
        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        self.phase = Phase::AwaitStore;
        self.deadline = None;
        Some(Action::Store(Box::new(Message {
            envelope: Envelope {
                from: tx.from,
                recipients: tx.recipients,
                helo,
                esmtp,
                body_8bit: tx.params.body_8bit,
                peer: Some(self.peer.clone()),
                tls: self.tls.clone(),
            },
            data,
        })))
    }

    /// The glue stored the message (`Ok(queue id)`) or could not.
    pub fn stored(&mut self, result: Result<&str, StoreFailure>, now: Instant) {
        if !matches!(self.phase, Phase::AwaitStore) {
            return;
        }
        self.phase = Phase::Command;
        self.release();
        self.deadline = Some(now + self.snapshot.limits.command_timeout);
        match result {
            Ok(id) => {
                self.stats.messages += 1;
                Reply::new(250, "2.0.0", format!("Ok: queued as {id}")).write_to(&mut self.out);
            }
            Err(StoreFailure::Full) => canned::storage_full().write_to(&mut self.out),
            Err(StoreFailure::Other) => canned::storage_failed().write_to(&mut self.out),
        }
        if self.draining {
            let _ = self.shutdown();
        }
    }

    fn starttls(&mut self) -> Option<Action> {
        if self.tls.is_some() {
            return self.error(canned::tls_already_active());
        }
        if !self.starttls_offered {
            return self.error(canned::tls_not_available());
        }
        canned::ready_for_tls().write_to(&mut self.out);
        self.phase = Phase::AwaitTls;
        Some(Action::StartTls)
    }

    /// The handshake completed. RFC 3207 §4.2: the server discards all
    /// knowledge obtained from the client before TLS; the client must send
    /// EHLO again.
    pub fn tls_established(&mut self, facts: TlsFacts, now: Instant) {
        self.tls = Some(facts);
        self.helo = None;
        self.transaction = None;
        self.phase = Phase::Command;
        self.deadline = Some(now + self.snapshot.limits.command_timeout);
    }

    fn reply(&mut self, reply: Reply) -> Option<Action> {
        reply.write_to(&mut self.out);
        None
    }

    /// A 4xx/5xx reply to a command; too many of them end the session, as
    /// Postfix's hard error limit does.
    fn error(&mut self, reply: Reply) -> Option<Action> {
        reply.write_to(&mut self.out);
        self.errors += 1;
        self.stats.errors += 1;
        if self.errors >= self.snapshot.limits.errors {
            canned::too_many_errors().write_to(&mut self.out);
            return Some(self.close());
        }
        None
    }
}

impl Endpoint for Session {
    type Action = Action;
    /// A refused command, for the glue to count and log.
    type Event = Rejection;

    fn feed(&mut self, input: &[u8], now: Instant) -> Fed {
        self.process(input, now)
    }

    fn poll_output(&mut self, into: &mut Vec<u8>) {
        into.append(&mut self.out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        match self.deadline {
            Some(due) if due <= now => Some(self.expire()),
            _ => None,
        }
    }

    fn poll_event(&mut self) -> Option<Rejection> {
        self.rejections.pop_front()
    }
}

struct Step {
    consumed: usize,
    action: Option<Action>,
    /// A whole command was processed: check RFC 2920 synchronisation.
    sync_check: bool,
}

impl Step {
    fn consumed(n: usize) -> Step {
        Step {
            consumed: n,
            action: None,
            sync_check: false,
        }
    }
}

fn command_error_reply(e: CommandError) -> Reply {
    match e {
        CommandError::Unrecognized => canned::unknown_command(),
        CommandError::Syntax(text) => Reply::new(501, "5.5.4", text),
        CommandError::BadSender => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        CommandError::BadRecipient => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
        CommandError::UnsupportedParameter => Reply::new(555, "5.5.4", "Unsupported parameter"),
        CommandError::NonAscii => Reply::new(500, "5.5.2", "Invalid characters in command"),
    }
}

pub fn refusal_reply(r: Refusal) -> Reply {
    match r {
        Refusal::RelayDenied => canned::relay_denied(),
        Refusal::TlsRequired => canned::must_starttls(),
        Refusal::CipherTooWeak { bits, min } => Reply::new(
            554,
            "5.7.0",
            format!("Cipher strength {bits} bits is below the {min} bits required by policy"),
        ),
        Refusal::ClientCertMissing => {
            Reply::new(554, "5.7.1", "Client certificate required by policy")
        }
        Refusal::ClientCertNotVerified(why) => Reply::new(
            554,
            "5.7.1",
            format!("Client certificate not trusted: {why}"),
        ),
        Refusal::ClientCertName(want) => Reply::new(
            554,
            "5.7.1",
            format!("Client certificate does not match {want}"),
        ),
        Refusal::ClientCertPin => Reply::new(
            554,
            "5.7.1",
            "Client certificate does not match a pinned fingerprint",
        ),
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
