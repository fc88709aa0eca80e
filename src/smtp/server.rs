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
//!
//! Here: the session, its phases and the reading of input; `commands` what
//! each command does; `replies` the table from a refusal to its reply;
//! `budget` the in-flight data budget and the DATA deadlines; `stats` the
//! counts of the disconnect line.

use std::sync::Arc;
use std::time::Instant;

use super::command::{self, Command, Line, MailParams, RcptParams, ReversePath};
use super::data::{DataError, DataProgress, DataReader};
use super::reply::{canned, Reply};
use super::Endpoint;
pub use crate::model::{ClientVerify, Envelope, Message, Peer, StoreFailure, TlsFacts};
use crate::policy::matcher::Client;
use crate::policy::profile::Chosen;
use crate::policy::{self, Refusal, TlsState};
use crate::snapshot::Snapshot;

mod budget;
mod commands;
mod replies;
mod stats;

pub use budget::DataBudget;
use budget::DataClock;
use replies::command_error_reply;
pub use replies::refusal_reply;
pub use stats::SessionStats;

/// A refusal the session made, for the glue to count and log.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// MAIL or RCPT refused by policy: why, and the Postfix-style line
    /// (`RCPT from …: 554 …; from=<…> to=<…> proto=ESMTP helo=<…>`).
    Policy { refusal: Refusal, line: RejectLine },
    /// A PROXY header from an address not in `server.proxy_protocol_from`.
    UntrustedProxy { line: String },
    /// What a report-only profile would have refused (and accepted).
    WouldRefuse { refusal: Refusal, line: RejectLine },
}

/// A refused MAIL or RCPT, typed: its `Display` is Postfix's `NOQUEUE:
/// reject:` wording without the prefix (`RCPT from name[ip]: 554 5.7.1 …;
/// from=<…> to=<…> proto=ESMTP helo=<…>`), its fields the log event's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectLine {
    pub verb: &'static str,
    /// The forward-confirmed name, or `unknown`.
    pub client_name: String,
    pub client_address: std::net::IpAddr,
    pub code: u16,
    /// The enhanced status code (RFC 3463).
    pub dsn: &'static str,
    /// The reply as the client saw it, on one line.
    pub reply: String,
    pub from: String,
    pub to: Option<String>,
    /// EHLO (ESMTP) or HELO (SMTP).
    pub esmtp: bool,
    pub helo: String,
}

impl std::fmt::Display for RejectLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut line = format!(
            "{} from {}[{}]: {}; from=<{}>",
            self.verb, self.client_name, self.client_address, self.reply, self.from
        );
        if let Some(to) = &self.to {
            line.push_str(&format!(" to=<{to}>"));
        }
        line.push_str(&format!(
            " proto={} helo=<{}>",
            if self.esmtp { "ESMTP" } else { "SMTP" },
            self.helo
        ));
        f.write_str(&crate::model::sanitize_line(&line))
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
    /// Reading message data: after DATA, or a BDAT chunk.
    Data(Box<DataState>),
    /// Reading (and dropping) a BDAT chunk whose command was refused:
    /// RFC 3030 §2, the octets are sent anyway and must not be read as
    /// commands; the refusal is the chunk's reply.
    SkipChunk {
        remaining: u64,
        reply: Box<Reply>,
    },
    /// STARTTLS accepted; waiting for the handshake.
    AwaitTls,
    /// A complete message is being stored.
    AwaitStore,
    Closed,
}

/// Where the mail transaction stands between commands: one state at a
/// time, each owning its data.
#[derive(Debug, Default)]
enum Mail {
    #[default]
    None,
    /// MAIL (and RCPTs) accepted: the envelope so far.
    Envelope(Transaction),
    /// A message sent in BDAT chunks, between its chunks: its transaction
    /// and data stay here until the LAST chunk (or RSET, EHLO, STARTTLS).
    Chunks(Box<DataState>),
}

#[derive(Debug)]
struct Transaction {
    from: String,
    params: MailParams,
    recipients: Vec<crate::model::Recipient>,
}

/// Reading a message: the transaction it belongs to, the reader, its
/// deadlines' clock and the data so far (since the last spill).
#[derive(Debug)]
struct DataState {
    transaction: Transaction,
    reader: DataReader,
    clock: DataClock,
    data: Vec<u8>,
    /// BDAT: the chunk being read (none after DATA).
    chunk: Option<Chunk>,
}

/// One BDAT chunk (RFC 3030 §2).
#[derive(Debug, Clone, Copy)]
struct Chunk {
    size: u64,
    remaining: u64,
    last: bool,
}

pub struct Session {
    snapshot: Arc<Snapshot>,
    peer: Peer,
    phase: Phase,
    helo: Option<(String, bool)>,
    /// The mail transaction between commands (in the data phase,
    /// `Phase::Data` holds it).
    mail: Mail,
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
            mail: Mail::None,
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

    /// Whether the session is reading message data (a staging file the
    /// glue keeps for it belongs to this message).
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data(_) | Phase::AwaitStore)
            || matches!(self.mail, Mail::Chunks(_))
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
        self.relay_allowed = self.snapshot.relay_everyone
            || self
                .snapshot
                .profiles
                .relay_allowed(self.at_connect.as_ref());
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
        match &self.phase {
            Phase::Greeting => "CONNECT",
            Phase::Command | Phase::DiscardLine => match (&self.mail, &self.helo) {
                (Mail::Chunks(_), _) => "BDAT",
                (Mail::Envelope(tx), _) if !tx.recipients.is_empty() => "RCPT",
                (Mail::Envelope(_), _) => "MAIL",
                (Mail::None, Some(_)) => "EHLO",
                (Mail::None, None) => "CONNECT",
            },
            Phase::Data(st) if st.chunk.is_some() => "BDAT",
            Phase::Data(_) => "DATA",
            Phase::SkipChunk { .. } => "BDAT",
            Phase::AwaitTls => "STARTTLS",
            Phase::AwaitStore => "END-OF-MESSAGE",
            Phase::Closed => "QUIT",
        }
    }

    fn note_rejection(
        &mut self,
        verb: &'static str,
        refusal: Refusal,
        reply: &Reply,
        from: &str,
        to: Option<&str>,
    ) {
        let line = self.rejection_line(verb, reply, from, to);
        self.rejections
            .push_back(Rejection::Policy { refusal, line });
    }

    /// A refusal a report-only profile does not make: the line says
    /// what the reply would have been.
    fn note_would_refuse(
        &mut self,
        verb: &'static str,
        refusal: Refusal,
        reply: &Reply,
        from: &str,
    ) {
        let line = self.rejection_line(verb, reply, from, None);
        self.rejections
            .push_back(Rejection::WouldRefuse { refusal, line });
    }

    fn rejection_line(
        &self,
        verb: &'static str,
        reply: &Reply,
        from: &str,
        to: Option<&str>,
    ) -> RejectLine {
        RejectLine {
            verb,
            client_name: self.peer.name.as_deref().unwrap_or("unknown").to_string(),
            client_address: self.peer.ip,
            code: reply.code,
            dsn: reply.status,
            reply: reply.to_string(),
            from: from.to_string(),
            to: to.map(str::to_string),
            esmtp: matches!(&self.helo, Some((_, true))),
            helo: self
                .helo
                .as_ref()
                .map(|(h, _)| h.clone())
                .unwrap_or_default(),
        }
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

    /// The gateway is stopping (OPS-7). A session between commands is told
    /// so now (`421 4.3.2`) and closed; one that is sending or storing a
    /// message finishes it, gets its reply, and is closed after it.
    pub fn drain(&mut self) -> Option<Action> {
        self.draining = true;
        match self.phase {
            Phase::Data(_) | Phase::AwaitStore | Phase::SkipChunk { .. } => None,
            // Between BDAT chunks the message is still arriving.
            Phase::Command if matches!(self.mail, Mail::Chunks(_)) => None,
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
                Phase::SkipChunk { remaining, reply } => {
                    // Dropped data is still data: its idle limit applies.
                    self.deadline = Some(now + self.snapshot.limits.data_timeout);
                    let n = (*remaining).min(rest.len() as u64) as usize;
                    *remaining -= n as u64;
                    if *remaining > 0 {
                        Step::consumed(n)
                    } else {
                        let reply = (**reply).clone();
                        self.phase = Phase::Command;
                        Step {
                            consumed: n,
                            action: self.error(reply),
                            sync_check: false,
                        }
                    }
                }
                Phase::Data(st) => {
                    // A BDAT chunk ends at its size, whatever follows.
                    let (rest, chunk_done) = match &mut st.chunk {
                        None => (rest, false),
                        Some(c) => {
                            let n = c.remaining.min(rest.len() as u64) as usize;
                            c.remaining -= n as u64;
                            (&rest[..n], c.remaining == 0)
                        }
                    };
                    self.deadline = Some(st.clock.arrived(rest.len(), now, &self.snapshot.limits));
                    match st.reader.feed(rest, &mut st.data) {
                        DataProgress::End { consumed } => {
                            let outcome = st.reader.outcome();
                            Step {
                                consumed,
                                action: self.end_of_data(outcome),
                                sync_check: false,
                            }
                        }
                        // The chunk's reply (or the message's end) comes
                        // now; data held past the buffer spills with the
                        // next chunk.
                        DataProgress::NeedMore if chunk_done => Step {
                            consumed: rest.len(),
                            action: self.end_of_chunk(now),
                            sync_check: false,
                        },
                        DataProgress::NeedMore => {
                            let in_memory = st.data.len();
                            let data = std::mem::take(&mut st.data);
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
            // BDAT's octets follow its command by design (RFC 3030 §2).
            let after_data = matches!(&self.phase, Phase::Data(st) if st.chunk.is_none());
            if after_data && step.sync_check && pos < input.len() {
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

    /// The deadline passed without input (RFC 5321 §4.5.3.2).
    fn expire(&mut self) -> Action {
        match self.phase {
            // Mid-handshake there is no channel to say anything on.
            Phase::AwaitTls | Phase::Closed => {}
            _ => canned::timeout().write_to(&mut self.out),
        }
        self.close()
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

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
