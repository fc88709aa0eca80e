//! The commands of a session: what HELO/EHLO, MAIL, RCPT, DATA and the
//! end of data, STARTTLS, RSET, NOOP and QUIT do to its state and what
//! they answer (RFC 5321 §4.1, RFC 3207, RFC 2920, RFC 1870, RFC 6152).

use std::time::Instant;

use super::*;

impl Session {
    pub(super) fn command(&mut self, cmd: Command<'_>, now: Instant) -> Option<Action> {
        let verb = match &cmd {
            Command::Ehlo(_) => 0,
            Command::Helo(_) => 1,
            Command::StartTls => 2,
            Command::Mail { .. } => 3,
            Command::Rcpt { .. } => 4,
            Command::Data => 5,
            Command::Bdat { .. } => 6,
            Command::Rset => 7,
            Command::Noop => 8,
            Command::Quit => 9,
            Command::Vrfy | Command::Help | Command::NotImplemented(_) => 10,
        };
        self.stats.verbs[verb] += 1;
        match cmd {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => self.data_command(now),
            Command::Bdat { size, last } => self.bdat_command(size, last, now),
            Command::Rset => {
                self.reset_mail();
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

    pub(super) fn hello(&mut self, name: &str, esmtp: bool) -> Option<Action> {
        // RFC 5321 §4.1.4: EHLO/HELO resets like RSET.
        self.reset_mail();
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
            "CHUNKING".into(),
            "SMTPUTF8".into(),
            "DSN".into(),
        ];
        if self.starttls_offered && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        // RFC 8689 §2: REQUIRETLS is offered on a TLS session only.
        if self.tls.is_some() {
            lines.push("REQUIRETLS".into());
        }
        self.reply(Reply::multi(250, lines))
    }

    pub(super) fn mail(&mut self, from: ReversePath<'_>, params: MailParams) -> Option<Action> {
        if self.helo.is_none() {
            return self.error(canned::bad_sequence("Send EHLO or HELO first"));
        }
        if !matches!(self.mail, Mail::None) {
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
        if params.require_tls && self.tls.is_none() {
            return self.error(canned::requiretls_needs_tls());
        }
        // RFC 6531 §3.4: UTF-8 in the reverse-path needs SMTPUTF8 on MAIL.
        if let ReversePath::Mailbox(m) = &from {
            if m.is_utf8() && !params.smtputf8 {
                return self.error(canned::utf8_needs_smtputf8());
            }
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
                if profile.server.report_only {
                    self.note_would_refuse("MAIL", refusal, &reply, &from_text);
                } else {
                    self.note_rejection("MAIL", refusal, &reply, &from_text, None);
                    return self.error(reply);
                }
            }
        }
        let from = match from {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(m) => m.normalized(),
        };
        self.mail = Mail::Envelope(Transaction {
            from,
            params,
            recipients: Vec::new(),
        });
        self.reply(canned::sender_ok())
    }

    pub(super) fn rcpt(&mut self, to: command::Mailbox<'_>, params: RcptParams) -> Option<Action> {
        let limit = self.snapshot.limits.recipients;
        let Mail::Envelope(tx) = &self.mail else {
            return self.error(canned::bad_sequence("Need MAIL before RCPT"));
        };
        // RFC 6531 §3.4: a UTF-8 forward-path only in an SMTPUTF8
        // transaction.
        if to.is_utf8() && !tx.params.smtputf8 {
            return self.error(canned::utf8_needs_smtputf8());
        }
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
                    to.normalized()
                };
                if let Mail::Envelope(tx) = &mut self.mail {
                    tx.recipients.push(crate::model::Recipient {
                        address: rcpt,
                        dsn: params.dsn,
                    });
                }
                self.reply(canned::recipient_ok())
            }
            Err(refusal) => {
                let reply = refusal_reply(refusal.clone());
                let from = match &self.mail {
                    Mail::Envelope(t) => t.from.clone(),
                    Mail::None | Mail::Chunks(_) => String::new(),
                };
                self.note_rejection("RCPT", refusal, &reply, &from, Some(&to.to_string()));
                self.error(reply)
            }
        }
    }

    /// The profile for this MAIL FROM: the one chosen by address or name
    /// at connect, else by sender domain, else the `*` default.
    pub(super) fn profile_for_sender(&self, sender_domain: Option<&str>) -> Option<Chosen> {
        self.snapshot.profiles.at_mail(
            self.at_connect.as_ref(),
            &Client {
                ip: self.peer.ip,
                name: self.peer.name.as_deref(),
                sender_domain,
            },
        )
    }

    pub(super) fn data_command(&mut self, now: Instant) -> Option<Action> {
        // RFC 3030 §3: DATA and BDAT do not mix in one transaction.
        if matches!(self.mail, Mail::Chunks(_)) {
            return self.error(canned::bad_sequence("DATA after BDAT in one transaction"));
        }
        match self.open_message(now, None) {
            Ok(()) => self.reply(canned::start_data()),
            Err(refusal) => self.error(refusal),
        }
    }

    /// DATA or the first BDAT: the transaction becomes a message being
    /// read (`chunk` is BDAT's first chunk), or the command is refused.
    fn open_message(&mut self, now: Instant, chunk: Option<Chunk>) -> Result<(), Reply> {
        let transaction = match std::mem::take(&mut self.mail) {
            Mail::None => return Err(canned::bad_sequence("Need MAIL command")),
            Mail::Envelope(tx) if tx.recipients.is_empty() => {
                self.mail = Mail::Envelope(tx);
                return Err(canned::no_valid_recipients());
            }
            Mail::Envelope(tx) if self.budget_exhausted() => {
                self.mail = Mail::Envelope(tx);
                return Err(canned::busy());
            }
            Mail::Envelope(tx) => tx,
            // A chunked message goes on through `bdat_command`; DATA is
            // refused before it gets here.
            chunks @ Mail::Chunks(_) => {
                self.mail = chunks;
                return Err(canned::bad_sequence("DATA after BDAT in one transaction"));
            }
        };
        let limits = &self.snapshot.limits;
        let (line, size, bare) = (
            limits.text_line,
            limits.message_size,
            limits.bare_line_endings,
        );
        self.phase = Phase::Data(Box::new(DataState {
            transaction,
            reader: match chunk {
                None => DataReader::new(line, size, bare),
                Some(_) => DataReader::chunked(line, size, bare),
            },
            clock: DataClock {
                since: now,
                received: 0,
            },
            data: Vec::new(),
            chunk,
        }));
        Ok(())
    }

    /// RFC 3030 §2: `BDAT size [LAST]`. The chunk's octets follow at once
    /// and are read whatever the answer; the reply comes once they are in
    /// (for LAST, once the message is stored, as after DATA).
    pub(super) fn bdat_command(&mut self, size: u64, last: bool, now: Instant) -> Option<Action> {
        let chunk = Chunk {
            size,
            remaining: size,
            last,
        };
        match std::mem::take(&mut self.mail) {
            Mail::Chunks(mut state) => {
                state.chunk = Some(chunk);
                self.phase = Phase::Data(state);
            }
            other @ (Mail::None | Mail::Envelope(_)) => {
                self.mail = other;
                if let Err(refusal) = self.open_message(now, Some(chunk)) {
                    return self.skip_chunk(size, refusal);
                }
            }
        }
        if size == 0 {
            return self.end_of_chunk(now);
        }
        None
    }

    /// A refused BDAT: its octets are read and dropped, then the refusal.
    fn skip_chunk(&mut self, size: u64, reply: Reply) -> Option<Action> {
        if size == 0 {
            return self.error(reply);
        }
        self.phase = Phase::SkipChunk {
            remaining: size,
            reply: Box::new(reply),
        };
        None
    }

    /// The message being read leaves the data phase (at its end, or a
    /// chunk's); none outside it.
    fn take_message(&mut self) -> Option<Box<DataState>> {
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::Data(state) => Some(state),
            other @ (Phase::Greeting
            | Phase::Command
            | Phase::DiscardLine
            | Phase::AwaitTls
            | Phase::AwaitStore
            | Phase::SkipChunk { .. }
            | Phase::Closed) => {
                self.phase = other;
                None
            }
        }
    }

    /// A BDAT chunk is in: the message ends (LAST), is refused (over the
    /// size limit: RFC 3030 §4 allows the refusal at any chunk), or waits
    /// for the next chunk.
    pub(super) fn end_of_chunk(&mut self, now: Instant) -> Option<Action> {
        let mut state = self.take_message()?;
        let Some(chunk) = state.chunk else {
            self.phase = Phase::Data(state);
            return None;
        };
        if state.reader.too_big() {
            self.release();
            return self.error(canned::message_too_big());
        }
        if chunk.last {
            let DataState { reader, data, .. } = &mut *state;
            reader.finish_chunked(data);
            let outcome = reader.outcome();
            return self.finish_message(*state, outcome);
        }
        self.account_data(state.data.len());
        self.mail = Mail::Chunks(state);
        self.deadline = Some(now + self.snapshot.limits.command_timeout);
        self.reply(Reply::new(
            250,
            "2.0.0",
            format!("Ok: {} octets received", chunk.size),
        ))
    }

    /// RSET, EHLO or STARTTLS: the transaction goes, and with it any
    /// chunks received so far (their data leaves the budget).
    pub(super) fn reset_mail(&mut self) {
        match std::mem::take(&mut self.mail) {
            Mail::Chunks(_) => self.release(),
            Mail::None | Mail::Envelope(_) => {}
        }
    }

    /// DATA's end (`<CRLF>.<CRLF>`) was read.
    pub(super) fn end_of_data(&mut self, outcome: Result<(), DataError>) -> Option<Action> {
        let state = self.take_message()?;
        self.finish_message(*state, outcome)
    }

    /// The whole message is in: refused with the reader's verdict, or
    /// handed to the spool.
    fn finish_message(
        &mut self,
        state: DataState,
        outcome: Result<(), DataError>,
    ) -> Option<Action> {
        let DataState {
            transaction: tx,
            data,
            ..
        } = state;
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
                flags: crate::model::MailFlags {
                    body_8bit: tx.params.body_8bit,
                    tls: tls_request(tx.params.require_tls, &data),
                    tls_report: false,
                    smtputf8: tx.params.smtputf8,
                },
                dsn: tx.params.dsn,
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

    pub(super) fn starttls(&mut self) -> Option<Action> {
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
        self.reset_mail();
        self.phase = Phase::Command;
        self.deadline = Some(now + self.snapshot.limits.command_timeout);
    }

    pub(super) fn reply(&mut self, reply: Reply) -> Option<Action> {
        reply.write_to(&mut self.out);
        None
    }

    /// A 4xx/5xx reply to a command; too many of them end the session, as
    /// Postfix's hard error limit does.
    pub(super) fn error(&mut self, reply: Reply) -> Option<Action> {
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

/// What the sender asked of TLS: RFC 8689 §4.1, REQUIRETLS on MAIL tags
/// the message; §5, a `TLS-Required: No` header is ignored when it is.
fn tls_request(require_tls: bool, data: &[u8]) -> crate::model::TlsRequest {
    if require_tls {
        crate::model::TlsRequest::Required
    } else if crate::smtp::headers::tls_required_no(data) {
        crate::model::TlsRequest::NotRequired
    } else {
        crate::model::TlsRequest::Default
    }
}
