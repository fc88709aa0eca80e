//! The outbound SMTP session, sans-IO (RFC 5321 client; RFC 3207 STARTTLS;
//! RFC 2920 PIPELINING; RFC 1870 SIZE; RFC 6152 8BITMIME; RFC 3030
//! CHUNKING; RFC 8689
//! REQUIRETLS; RFC 6531 SMTPUTF8; RFC 3461 DSN).
//!
//! The delivery glue feeds it the server's bytes and `now`; it appends
//! commands to its output and stops with an [`Action`] when the glue has
//! to act: start TLS, record a finished message, or close. Every way a
//! session can end maps to an [`Outcome`] per recipient through
//! [`Failure::outcome`], which has no catch-all arm.

use crate::model::{EnhancedStatus, StatusClass};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::reply_parse::{self, Parsed};
use super::Endpoint;

/// How a session can fail, and what each failure means for a recipient.
pub use super::failure::{Failure, TlsFailure, Utf8Need};
/// The shared nouns of an attempt's input and result (`model`).
pub use crate::model::{Outcome, Outgoing, Timeouts, TlsMode, Verdict};

/// How long the RSET that begins a batch on a reused connection waits for
/// its reply (at most: the command timeout, if shorter).
pub const REUSE_RSET_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Config {
    pub helo: String,
    pub tls: TlsMode,
    pub timeouts: Timeouts,
    /// The messages asked for REQUIRETLS (RFC 8689): the server must offer
    /// it over TLS, and every MAIL carries it. The glue makes TLS
    /// mandatory and connects only to authenticated hosts.
    pub require_tls: bool,
    /// After the last message, stay connected and idle
    /// ([`Action::Idle`]) instead of sending QUIT: the connection may
    /// carry the next batch ([`Session::next_batch`]).
    pub keep_open: bool,
}

/// What the glue must do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Write the pending output (STARTTLS was answered 220), then run the
    /// handshake and call [`Session::tls_established`] (or
    /// [`Session::fail`] if it fails).
    StartTls,
    /// Write the pending output and close. Messages not reported done get
    /// the failure's outcome from [`Session::remaining`].
    Close(Option<Failure>),
    /// Every message is done and the session is open and idle
    /// ([`Config::keep_open`]): give it the next batch, or
    /// [`Session::quit`].
    Idle,
}

/// What happened, for the glue to record.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message is finished: one outcome per recipient, in order.
    MessageDone {
        index: usize,
        outcomes: Vec<Outcome>,
    },
}

/// The result of one [`Endpoint::feed`] call.
pub type Fed = super::Fed<Action>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Mail,
    Rcpt(usize),
    Data,
    Dot,
    /// The reply to `BDAT n LAST` (RFC 3030), the whole message.
    Bdat,
    Rset,
    Quit,
}

/// The server's EHLO extensions that matter here.
#[derive(Debug, Clone, Default)]
struct Extensions {
    pipelining: bool,
    starttls: bool,
    size: Option<u64>,
    eightbit: bool,
    requiretls: bool,
    smtputf8: bool,
    dsn: bool,
    chunking: bool,
}

pub struct Session {
    config: Config,
    messages: Vec<Outgoing>,
    /// The message being sent, and its envelope's replies so far.
    tx: Transaction,
    /// Replies due, in order.
    expect: VecDeque<Expect>,
    /// Commands not yet sent (without PIPELINING, one at a time).
    queued: VecDeque<(Expect, Vec<u8>)>,
    ext: Extensions,
    tls_active: bool,
    esmtp: bool,
    out: Vec<u8>,
    events: VecDeque<Event>,
    deadline: Option<Instant>,
    /// Speaking, idle on a kept connection, or closed.
    stage: Stage,
    /// How far a batch on a connection that was idle has got.
    probe: Probe,
}

/// The message in flight: which one of the batch, and what the server
/// said to its envelope so far.
#[derive(Debug, Default)]
struct Transaction {
    /// Its index in the batch (the batch's length once all are done).
    index: usize,
    /// MAIL's reply, when it refused the message.
    mail_refused: Option<Outcome>,
    /// Each recipient's reply in order, or why it was not sent; `None`
    /// while unanswered.
    rcpts: Vec<Option<Outcome>>,
}

/// Where the session is: one state at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Speaking: messages to send, or QUIT's reply due.
    Working,
    /// Every message done, the connection kept ([`Config::keep_open`]).
    Idle,
    /// Closed (QUIT answered, or a failure).
    Closed,
}

/// A batch on a reused connection, until the connection shows it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Not a reused connection, or past its first MAIL.
    Done,
    /// RSET sent, not answered: a failure now means the connection died
    /// while idle (nothing of the messages has been read by the server).
    Rset,
    /// RSET answered, MAIL not yet: only a `421` to MAIL says the
    /// connection was being closed (an EOF now could follow a message the
    /// server took: not retried, lest it go twice).
    Mail,
    /// The server closed the idle connection in its reply (`421`, or a
    /// refused RSET).
    Closed,
}

impl Session {
    pub fn new(config: Config, messages: Vec<Outgoing>, now: Instant) -> Session {
        let deadline = Some(now + config.timeouts.greeting);
        Session {
            config,
            messages,
            tx: Transaction::default(),
            expect: VecDeque::from([Expect::Greeting]),
            queued: VecDeque::new(),
            ext: Extensions::default(),
            tls_active: false,
            esmtp: true,
            out: Vec::new(),
            events: VecDeque::new(),
            deadline,
            stage: Stage::Working,
            probe: Probe::Done,
        }
    }

    /// The session is idle on an open connection, every message done.
    pub fn is_idle(&self) -> bool {
        matches!(self.stage, Stage::Idle)
    }

    /// Whether `failure`, which ended this batch, means that the reused
    /// connection had died while idle (RFC 5321 §4.5.3.2.7: a server may
    /// close an idle one): EOF, a reset or no reply (within
    /// [`REUSE_RSET_TIMEOUT`]) to the RSET that began the batch, a `421`
    /// to it or to the MAIL after it. Then the messages go on a fresh
    /// connection and no attempt is counted; nothing of them had been
    /// taken by the server.
    pub fn died_idle(&self, failure: &Failure) -> bool {
        match self.probe {
            Probe::Closed => true,
            Probe::Rset => matches!(failure, Failure::Connection(_) | Failure::Timeout(_)),
            Probe::Mail | Probe::Done => false,
        }
    }

    /// Whether this idle session can carry a batch: idle, and for
    /// REQUIRETLS messages over TLS to a server that offered it (RFC 8689
    /// §4.2.1 item 4, as after EHLO).
    pub fn can_carry(&self, require_tls: bool) -> bool {
        self.is_idle() && (!require_tls || (self.tls_active && self.ext.requiretls))
    }

    /// The messages of the next batch on this idle connection
    /// ([`Session::can_carry`]): RSET first (RFC 5321 §4.1.1.5: whatever
    /// the last transaction left, and a check that the connection still
    /// lives), then each message.
    pub fn next_batch(&mut self, messages: Vec<Outgoing>, require_tls: bool, now: Instant) {
        self.config.require_tls = require_tls;
        self.messages = messages;
        self.tx.index = 0;
        self.stage = Stage::Working;
        self.probe = Probe::Rset;
        self.expect_reply(Expect::Rset, "RSET", now);
        // A connection dropped while idle without a FIN (a NAT, a
        // firewall) is found out this soon, not after the command timeout
        // (Postfix's smtp_rset_timeout is 20 s too).
        self.deadline = Some(now + self.config.timeouts.command.min(REUSE_RSET_TIMEOUT));
    }

    /// Ends an idle session: QUIT, then [`Action::Close`] on its reply.
    pub fn quit(&mut self, now: Instant) {
        if self.is_idle() {
            self.stage = Stage::Working;
            self.expect_reply(Expect::Quit, "QUIT", now);
        }
    }

    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Messages not reported done; with the failure that ended the
    /// session, each recipient's outcome.
    pub fn remaining(&self, failure: &Failure) -> Vec<(usize, Vec<Outcome>)> {
        let outcome = failure.outcome();
        (self.tx.index.min(self.messages.len())..self.messages.len())
            .map(|i| {
                let rcpts = &self.messages[i].recipients;
                let outs = (0..rcpts.len())
                    .map(|r| {
                        // Recipients of the current message already refused
                        // keep that outcome.
                        if i == self.tx.index {
                            if let Some(Some(o)) = self.tx.rcpts.get(r) {
                                if o.verdict != Verdict::Delivered {
                                    return o.clone();
                                }
                            }
                        }
                        outcome.clone()
                    })
                    .collect();
                (i, outs)
            })
            .collect()
    }

    /// The glue gave up on the session (connect error, TLS failure).
    pub fn fail(&mut self, failure: Failure) -> Action {
        self.stage = Stage::Closed;
        self.deadline = None;
        Action::Close(Some(failure))
    }

    /// Feeds the server's bytes.
    fn process(&mut self, input: &[u8], now: Instant) -> Fed {
        let fed = |consumed, action| Fed { consumed, action };
        let mut pos = 0;
        while !matches!(self.stage, Stage::Closed) {
            let reply = match reply_parse::parse(&input[pos..]) {
                Ok(Some((r, used))) => {
                    pos += used;
                    r
                }
                Ok(None) => break,
                Err(e) => {
                    return fed(
                        input.len(),
                        Some(self.fail(Failure::Protocol(format!("malformed reply: {e}")))),
                    )
                }
            };
            let Some(expect) = self.expect.pop_front() else {
                return fed(
                    input.len(),
                    Some(self.fail(Failure::Protocol(format!(
                        "unexpected reply {}",
                        reply.one_line()
                    )))),
                );
            };
            let action = self.on_reply(expect, reply, now);
            if action.is_none() && matches!(self.stage, Stage::Idle) {
                return fed(pos, Some(Action::Idle));
            }
            if let Some(action) = action {
                if action == Action::StartTls && pos < input.len() {
                    // RFC 3207 §4.2 / CVE-2011-0411, client side: bytes
                    // after the 220 were sent in the clear before TLS and
                    // must never be read as replies.
                    return fed(
                        input.len(),
                        Some(self.fail(Failure::Protocol(
                            "server sent data after 220 to STARTTLS".into(),
                        ))),
                    );
                }
                return fed(pos, Some(action));
            }
        }
        fed(pos, None)
    }

    fn send(&mut self, cmd: &str) {
        self.out.extend_from_slice(cmd.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn expect_reply(&mut self, e: Expect, cmd: &str, now: Instant) {
        self.send(cmd);
        self.expect.push_back(e);
        let t = &self.config.timeouts;
        let wait = match e {
            Expect::Data => t.data_start,
            Expect::Dot | Expect::Bdat => t.data_end,
            Expect::Greeting => t.greeting,
            _ => t.command,
        };
        self.deadline = Some(now + wait);
    }

    fn hello(&mut self, now: Instant) {
        let cmd = format!("EHLO {}", self.config.helo);
        self.expect_reply(Expect::Ehlo, &cmd, now);
    }

    fn on_reply(&mut self, expect: Expect, r: Parsed, now: Instant) -> Option<Action> {
        match expect {
            Expect::Greeting => {
                if r.code != 220 {
                    return self.quit_with(Failure::Greeting(r));
                }
                self.hello(now);
                None
            }
            Expect::Ehlo => {
                if r.code == 250 {
                    self.ext = parse_extensions(&r);
                    return self.after_hello(now);
                }
                // RFC 5321 §3.2: a server that does not know EHLO gets HELO.
                if r.code / 100 == 5 && !self.tls_active {
                    self.esmtp = false;
                    let cmd = format!("HELO {}", self.config.helo);
                    self.expect_reply(Expect::Helo, &cmd, now);
                    return None;
                }
                self.quit_with(Failure::Hello(r))
            }
            Expect::Helo => {
                if r.code != 250 {
                    return self.quit_with(Failure::Hello(r));
                }
                self.ext = Extensions::default();
                self.after_hello(now)
            }
            Expect::StartTls => {
                if r.code == 220 {
                    self.deadline = Some(now + self.config.timeouts.command);
                    return Some(Action::StartTls);
                }
                match self.config.tls {
                    TlsMode::Mandatory => self.quit_with(Failure::StartTlsRefused(r)),
                    // Refused: go on in the clear on this connection.
                    TlsMode::Opportunistic | TlsMode::Off => self.start_message(now),
                }
            }
            Expect::Mail if self.probe == Probe::Mail && r.code == 421 => {
                self.probe = Probe::Closed;
                self.fail(Failure::Connection(format!(
                    "the idle connection was closed: {}",
                    r.one_line()
                )))
                .into()
            }
            Expect::Mail => {
                self.probe = Probe::Done;
                let o = outcome_of(&r);
                if o.verdict != Verdict::Delivered {
                    self.tx.mail_refused = Some(o);
                }
                self.send_queued(now);
                None
            }
            Expect::Rcpt(i) => {
                self.tx.rcpts[i] = Some(outcome_of(&r));
                self.send_queued(now);
                None
            }
            Expect::Data => {
                let any = self.accepted_recipients() > 0 && self.tx.mail_refused.is_none();
                match (r.code, any) {
                    (354, true) => {
                        let body = dot_stuffed(&self.messages[self.tx.index].data);
                        self.out.extend_from_slice(&body);
                        self.expect.push_back(Expect::Dot);
                        self.deadline = Some(now + self.config.timeouts.data_end);
                        None
                    }
                    // RFC 2920 §3.1: DATA accepted although no recipient
                    // was: end it at once, and ignore its reply.
                    (354, false) => {
                        self.send(".");
                        self.expect.push_back(Expect::Dot);
                        None
                    }
                    (_, true) => {
                        self.finish_message(Some(outcome_of(&r)), now);
                        None
                    }
                    (_, false) => {
                        self.finish_message(None, now);
                        None
                    }
                }
            }
            // RFC 3030 §2: the reply to the LAST chunk is the message's,
            // as the reply to the end of data is.
            Expect::Dot | Expect::Bdat => {
                let any = self.accepted_recipients() > 0 && self.tx.mail_refused.is_none();
                self.finish_message(any.then(|| outcome_of(&r)), now);
                None
            }
            Expect::Rset if self.probe == Probe::Rset && r.code != 250 => {
                self.probe = Probe::Closed;
                self.fail(Failure::Connection(format!(
                    "the idle connection was refused RSET: {}",
                    r.one_line()
                )))
                .into()
            }
            Expect::Rset => {
                if self.probe == Probe::Rset {
                    self.probe = Probe::Mail;
                }
                self.start_message(now)
            }
            Expect::Quit => {
                self.stage = Stage::Closed;
                self.deadline = None;
                Some(Action::Close(None))
            }
        }
    }

    fn after_hello(&mut self, now: Instant) -> Option<Action> {
        if !self.tls_active {
            match (self.config.tls, self.ext.starttls) {
                (TlsMode::Mandatory | TlsMode::Opportunistic, true) => {
                    self.expect_reply(Expect::StartTls, "STARTTLS", now);
                    return None;
                }
                (TlsMode::Mandatory, false) => return self.quit_with(Failure::TlsNotOffered),
                (TlsMode::Opportunistic | TlsMode::Off, _) => {}
            }
        }
        // RFC 8689 §4.2.1 item 4: the server offers REQUIRETLS (after TLS).
        if self.config.require_tls && !(self.tls_active && self.ext.requiretls) {
            return self.quit_with(Failure::RequireTls(
                crate::policy::requiretls::Refused::NotOffered,
            ));
        }
        self.start_message(now)
    }

    /// The handshake completed (and met the policy).
    pub fn tls_established(&mut self, now: Instant) {
        self.tls_active = true;
        // RFC 3207 §4.2: forget what we knew; EHLO again.
        self.hello(now);
    }

    fn accepted_recipients(&self) -> usize {
        self.tx
            .rcpts
            .iter()
            .filter(|o| o.as_ref().is_some_and(|o| o.verdict == Verdict::Delivered))
            .count()
    }

    /// Sends the envelope of the next message, or QUIT.
    fn start_message(&mut self, now: Instant) -> Option<Action> {
        let (msg, envelope) = loop {
            let Some(msg) = self.messages.get(self.tx.index) else {
                if self.config.keep_open {
                    // Every message is reported done: their octets are
                    // not kept while the connection waits.
                    self.messages = Vec::new();
                    self.tx.index = 0;
                    self.stage = Stage::Idle;
                    self.deadline = None;
                } else {
                    self.expect_reply(Expect::Quit, "QUIT", now);
                }
                return None;
            };
            let size = msg.data.len();
            let refused = match self.ext.size.filter(|l| *l > 0 && size as u64 > *l) {
                // RFC 1870 §6.1: do not send what the server said it won't take.
                Some(limit) => Err(Failure::TooBig { size, limit }),
                None => envelope_for(msg, self.ext.smtputf8),
            };
            match refused {
                Ok(envelope) => break (msg, envelope),
                Err(failure) => {
                    let o = failure.outcome();
                    let outcomes = vec![o; msg.recipients.len()];
                    self.events.push_back(Event::MessageDone {
                        index: self.tx.index,
                        outcomes,
                    });
                    self.tx.index += 1;
                }
            }
        };
        let size = msg.data.len();
        let mut mail = format!("MAIL FROM:<{}>", envelope.from);
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if msg.flags.body_8bit && self.ext.eightbit {
            mail.push_str(" BODY=8BITMIME");
        }
        if self.config.require_tls {
            mail.push_str(" REQUIRETLS");
        }
        // RFC 6531 §3.4: the message goes on as SMTPUTF8 where it can.
        if msg.flags.smtputf8 && self.ext.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        // RFC 3461 §5.2.2: a DSN request goes on to a server that offers
        // DSN, as it was given.
        if self.ext.dsn {
            if let Some(ret) = msg.dsn.ret {
                mail.push_str(" RET=");
                mail.push_str(ret.as_str());
            }
            if let Some(envid) = &msg.dsn.envid {
                mail.push_str(" ENVID=");
                mail.push_str(&crate::model::xtext_encode(envid));
            }
        }
        self.tx.mail_refused = None;
        self.tx.rcpts = envelope
            .recipients
            .iter()
            .map(|r| match r {
                Ok(_) => None,
                Err(failure) => Some(failure.outcome()),
            })
            .collect();
        let mut cmds: VecDeque<(Expect, Vec<u8>)> = VecDeque::new();
        cmds.push_back((Expect::Mail, format!("{mail}\r\n").into_bytes()));
        for (i, (r, address)) in msg.recipients.iter().zip(&envelope.recipients).enumerate() {
            let Ok(address) = address else { continue };
            let mut rcpt = format!("RCPT TO:<{address}>");
            if self.ext.dsn {
                if let Some(notify) = r.dsn.notify.value() {
                    rcpt.push_str(" NOTIFY=");
                    rcpt.push_str(&notify);
                }
                if let Some(o) = &r.dsn.orcpt {
                    rcpt.push_str(" ORCPT=");
                    rcpt.push_str(&crate::model::orcpt_encode(o));
                }
            }
            cmds.push_back((Expect::Rcpt(i), format!("{rcpt}\r\n").into_bytes()));
        }
        if self.ext.chunking {
            // RFC 3030 §2: the message in one chunk, as it is: no
            // dot-stuffing, no end-of-data line.
            let mut bdat = format!("BDAT {size} LAST\r\n").into_bytes();
            bdat.extend_from_slice(&msg.data);
            cmds.push_back((Expect::Bdat, bdat));
        } else {
            cmds.push_back((Expect::Data, b"DATA\r\n".to_vec()));
        }
        self.queued = cmds;
        if self.ext.pipelining {
            // RFC 2920 (and RFC 3030 §4.2 for BDAT): MAIL, every RCPT and
            // DATA, or BDAT with the message, in one write.
            let mut last = Expect::Mail;
            while let Some((e, bytes)) = self.queued.pop_front() {
                self.out.extend_from_slice(&bytes);
                self.expect.push_back(e);
                last = e;
            }
            let t = &self.config.timeouts;
            self.deadline = Some(
                now + if last == Expect::Bdat {
                    t.data_end
                } else {
                    t.command
                },
            );
        } else {
            self.send_queued(now);
        }
        None
    }

    /// Without PIPELINING: the next command once the last one is answered.
    /// A refused MAIL or no accepted recipient skips what is left.
    fn send_queued(&mut self, now: Instant) {
        if self.ext.pipelining || !self.expect.is_empty() {
            return;
        }
        if let Some((e, bytes)) = self.queued.pop_front() {
            let skip = match e {
                Expect::Rcpt(_) => self.tx.mail_refused.is_some(),
                Expect::Data | Expect::Bdat => {
                    self.tx.mail_refused.is_some() || self.accepted_recipients() == 0
                }
                _ => false,
            };
            if skip {
                self.queued.clear();
                self.finish_message(None, now);
                return;
            }
            self.out.extend_from_slice(&bytes);
            self.expect.push_back(e);
            let t = &self.config.timeouts;
            self.deadline = Some(
                now + match e {
                    Expect::Data => t.data_start,
                    Expect::Bdat => t.data_end,
                    _ => t.command,
                },
            );
        }
    }

    /// Ends the current message: `final_reply` is the outcome for the
    /// recipients the server accepted (None when it accepted none).
    fn finish_message(&mut self, final_reply: Option<Outcome>, now: Instant) {
        let msg = &self.messages[self.tx.index];
        let final_reply = final_reply.map(|o| Outcome {
            next_hop_dsn: o.verdict == Verdict::Delivered && self.ext.dsn,
            ..o
        });
        let outcomes: Vec<Outcome> = (0..msg.recipients.len())
            .map(|i| {
                if let Some(m) = &self.tx.mail_refused {
                    return m.clone();
                }
                match &self.tx.rcpts[i] {
                    Some(o) if o.verdict != Verdict::Delivered => o.clone(),
                    Some(_) => final_reply
                        .clone()
                        .unwrap_or_else(|| Failure::Protocol("no final reply".into()).outcome()),
                    None => Failure::Protocol("recipient not answered".into()).outcome(),
                }
            })
            .collect();
        let clean = final_reply
            .as_ref()
            .is_some_and(|o| o.verdict == Verdict::Delivered);
        let index = self.tx.index;
        self.tx.index += 1;
        self.queued.clear();
        if self.tx.index < self.messages.len() && !clean {
            // RFC 5321 §4.1.1.5: reset a transaction that did not end well.
            self.expect_reply(Expect::Rset, "RSET", now);
        } else {
            let _ = self.start_message(now);
        }
        self.events
            .push_back(Event::MessageDone { index, outcomes });
    }

    fn quit_with(&mut self, failure: Failure) -> Option<Action> {
        self.send("QUIT");
        Some(self.fail(failure))
    }
}

/// The addresses a message goes out with: as they are to a server that
/// offers SMTPUTF8, or for a message that did not ask for it; otherwise
/// with A-label domains (RFC 6531 §3.2), where nothing else needs UTF-8.
/// A recipient whose local part is UTF-8 fails alone; a sender or
/// headers that need UTF-8 fail the whole message.
struct OutEnvelope<'a> {
    from: std::borrow::Cow<'a, str>,
    recipients: Vec<Result<std::borrow::Cow<'a, str>, Failure>>,
}

fn envelope_for(msg: &Outgoing, smtputf8_offered: bool) -> Result<OutEnvelope<'_>, Failure> {
    use std::borrow::Cow;
    if !msg.flags.smtputf8 || smtputf8_offered {
        return Ok(OutEnvelope {
            from: Cow::Borrowed(&msg.from),
            recipients: msg
                .recipients
                .iter()
                .map(|r| Ok(Cow::Borrowed(r.address.as_str())))
                .collect(),
        });
    }
    let from =
        crate::model::ascii_address(&msg.from).ok_or(Failure::NeedsSmtpUtf8(Utf8Need::Sender))?;
    if !super::headers::header_is_ascii(&msg.data) {
        return Err(Failure::NeedsSmtpUtf8(Utf8Need::Headers));
    }
    let recipients: Vec<_> = msg
        .recipients
        .iter()
        .map(|r| {
            crate::model::ascii_address(&r.address)
                .map(Cow::Owned)
                .ok_or(Failure::NeedsSmtpUtf8(Utf8Need::Recipient))
        })
        .collect();
    if recipients.iter().all(Result::is_err) {
        return Err(Failure::NeedsSmtpUtf8(Utf8Need::Recipient));
    }
    Ok(OutEnvelope {
        from: Cow::Owned(from),
        recipients,
    })
}

fn parse_extensions(r: &Parsed) -> Extensions {
    let mut ext = Extensions::default();
    for line in r.lines.iter().skip(1) {
        let mut words = line.split_ascii_whitespace();
        let Some(kw) = words.next() else { continue };
        match kw.to_ascii_uppercase().as_str() {
            "PIPELINING" => ext.pipelining = true,
            "STARTTLS" => ext.starttls = true,
            "8BITMIME" => ext.eightbit = true,
            "REQUIRETLS" => ext.requiretls = true,
            "SMTPUTF8" => ext.smtputf8 = true,
            "DSN" => ext.dsn = true,
            "CHUNKING" => ext.chunking = true,
            "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
            _ => {}
        }
    }
    ext
}

/// RFC 5321 §4.5.2: a line starting with `.` gets another; the data ends
/// with CRLF `.` CRLF.
pub fn dot_stuffed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !data.is_empty() && !data.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The class of a reply code (RFC 5321 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    PositiveCompletion,
    PositiveIntermediate,
    TransientNegative,
    PermanentNegative,
    /// 1yz, or not a valid code at all.
    Unexpected,
}

fn class(code: u16) -> Class {
    match code {
        200..=299 => Class::PositiveCompletion,
        300..=399 => Class::PositiveIntermediate,
        400..=499 => Class::TransientNegative,
        500..=599 => Class::PermanentNegative,
        0..=199 | 600..=u16::MAX => Class::Unexpected,
    }
}

/// The outcome a reply means for the recipients it answers.
pub fn outcome_of(r: &Parsed) -> Outcome {
    let (verdict, default_status) = match class(r.code) {
        Class::PositiveCompletion => (
            Verdict::Delivered,
            EnhancedStatus::new(StatusClass::Success, 0, 0),
        ),
        Class::TransientNegative => (
            Verdict::Temporary,
            EnhancedStatus::new(StatusClass::PersistentTransient, 0, 0),
        ),
        Class::PermanentNegative => (
            Verdict::Permanent,
            EnhancedStatus::new(StatusClass::Permanent, 0, 0),
        ),
        // A 3yz or 1yz where a completion was due: the server is confused;
        // try again later rather than lose or bounce the message.
        Class::PositiveIntermediate | Class::Unexpected => (
            Verdict::Temporary,
            EnhancedStatus::new(StatusClass::PersistentTransient, 5, 0),
        ),
    };
    // The server's own code where it has one of the reply's class (RFC
    // 3463 §3.1: the class matches the reply code's first digit).
    let status = r
        .enhanced()
        .and_then(EnhancedStatus::parse)
        .filter(|s| s.class == default_status.class)
        .unwrap_or(default_status);
    Outcome {
        verdict,
        status,
        detail: r.one_line(),
        next_hop_dsn: false,
    }
}

impl Endpoint for Session {
    type Action = Action;
    type Event = Event;

    fn feed(&mut self, input: &[u8], now: Instant) -> Fed {
        self.process(input, now)
    }

    fn poll_output(&mut self, into: &mut Vec<u8>) {
        into.append(&mut self.out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The deadline passed.
    fn expire(&mut self) -> Action {
        let stage = match self.expect.front() {
            Some(Expect::Greeting) => "waiting for the greeting",
            Some(Expect::Data) => "waiting for the reply to DATA",
            Some(Expect::Dot) => "waiting for the reply to the end of data",
            Some(Expect::Bdat) => "waiting for the reply to BDAT",
            Some(_) => "waiting for a reply",
            None => "sending",
        };
        self.fail(Failure::Timeout(stage))
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
