//! Session tests: each conversation is a table of client turns (what the
//! client sends before waiting for replies) and the expected replies. Every
//! table runs whole, with each turn split at every octet, and with bare LF
//! command endings, and all runs must give the same replies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::snapshot::Snapshot;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Command lines: may be rewritten with bare LF endings.
    Cmd,
    /// Command lines whose meaning depends on arriving in one read (input
    /// pipelined past DATA): never split.
    CmdOneRead,
    /// Message data: sent as written.
    Data,
}

struct Turn {
    kind: Kind,
    send: &'static [u8],
    expect: &'static str,
}

fn cmd(send: &'static str, expect: &'static str) -> Turn {
    Turn {
        kind: Kind::Cmd,
        send: send.as_bytes(),
        expect,
    }
}

fn cmd_one_read(send: &'static str, expect: &'static str) -> Turn {
    Turn {
        kind: Kind::CmdOneRead,
        send: send.as_bytes(),
        expect,
    }
}

fn data(send: &'static [u8], expect: &'static str) -> Turn {
    Turn {
        kind: Kind::Data,
        send,
        expect,
    }
}

/// The connection glue, as the shard does it, minus sockets.
struct Harness {
    session: Session,
    pending: Vec<u8>,
    out: Vec<u8>,
    stored: Vec<Message>,
    /// Data spilled for the message being read (the glue's staging file).
    spilled: Vec<u8>,
    closed: bool,
    /// STARTTLS was accepted during this turn: the rest of what the client
    /// sent in the turn went out before it saw our 220 and is discarded.
    tls_started_in_turn: bool,
    now: Instant,
}

impl Harness {
    fn new(snapshot: Arc<Snapshot>) -> Self {
        let peer = Peer {
            ip: "192.0.2.1".parse().unwrap(),
            port: 40000,
            name: None,
        };
        let now = Instant::now();
        let mut session = Session::new(snapshot, peer);
        session.greet(now);
        let mut h = Harness {
            session,
            pending: Vec::new(),
            out: Vec::new(),
            stored: Vec::new(),
            spilled: Vec::new(),
            closed: false,
            tls_started_in_turn: false,
            now,
        };
        h.take_output();
        h
    }

    fn take_output(&mut self) -> String {
        self.session.poll_output(&mut self.out);
        String::from_utf8(std::mem::take(&mut self.out)).unwrap()
    }

    /// One read's worth of input.
    fn read(&mut self, bytes: &[u8]) {
        if self.closed || self.tls_started_in_turn {
            return;
        }
        self.pending.extend_from_slice(bytes);
        loop {
            let fed = self.session.feed(&self.pending, self.now);
            self.pending.drain(..fed.consumed);
            match fed.action {
                None => return,
                Some(Action::Spill(chunk)) => self.spilled.extend_from_slice(&chunk),
                Some(Action::Store(mut msg)) => {
                    // The whole message: what was spilled, then the rest.
                    let mut all = std::mem::take(&mut self.spilled);
                    all.extend_from_slice(&msg.data);
                    msg.data = all;
                    self.stored.push(*msg);
                    self.session.stored(Ok("QID1"), self.now);
                }
                Some(Action::StartTls) => {
                    // RFC 3207 §4.2: the session itself consumed (dropped)
                    // what was pipelined behind STARTTLS; later reads of
                    // this turn went out before the client saw our 220.
                    assert!(self.pending.is_empty(), "the session must consume it");
                    self.tls_started_in_turn = true;
                    self.session
                        .tls_established(TlsFacts::assumed(None), self.now);
                    return;
                }
                Some(Action::Close) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }
}

fn snapshot(tls: bool) -> Arc<Snapshot> {
    let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
    s.limits.recipients = 3;
    s.limits.message_size = 1000;
    if tls {
        s.tls = Some(test_tls_config());
    }
    Arc::new(s)
}

fn test_tls_config() -> Arc<rustls::ServerConfig> {
    crate::tls::ephemeral_server_config("mx.test").unwrap()
}

/// Runs the conversation with the given chunking of turn `split_turn` at
/// `split_at` (or no split) and returns the replies per turn and the
/// stored messages.
fn converse(
    snap: &Arc<Snapshot>,
    turns: &[Turn],
    lf_only: bool,
    split: Option<(usize, usize)>,
) -> (Vec<String>, Vec<Message>, bool) {
    let mut h = Harness::new(snap.clone());
    let mut replies = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        h.tls_started_in_turn = false;
        let bytes: Vec<u8> = if lf_only && turn.kind != Kind::Data {
            String::from_utf8(turn.send.to_vec())
                .unwrap()
                .replace("\r\n", "\n")
                .into_bytes()
        } else {
            turn.send.to_vec()
        };
        match split {
            Some((t, at)) if t == i && at <= bytes.len() && turn.kind != Kind::CmdOneRead => {
                h.read(&bytes[..at]);
                h.read(&bytes[at..]);
            }
            _ => h.read(&bytes),
        }
        replies.push(h.take_output());
    }
    (replies, h.stored, h.closed)
}

/// Runs the table whole, split everywhere and with LF endings; returns the
/// stored messages of the whole run.
fn run_table(snap: &Arc<Snapshot>, turns: &[Turn]) -> (Vec<Message>, bool) {
    for lf_only in [false, true] {
        let (replies, stored, closed) = converse(snap, turns, lf_only, None);
        for (turn, got) in turns.iter().zip(&replies) {
            assert_eq!(
                got,
                turn.expect,
                "lf_only={lf_only} after sending {:?}",
                String::from_utf8_lossy(turn.send)
            );
        }
        for (t, turn) in turns.iter().enumerate() {
            for at in 0..=turn.send.len() {
                let split = converse(snap, turns, lf_only, Some((t, at)));
                assert_eq!(split.0, replies, "lf_only={lf_only} turn {t} split at {at}");
                assert_eq!(split.1.len(), stored.len());
                for (a, b) in split.1.iter().zip(&stored) {
                    assert_eq!(a.data, b.data);
                    assert_eq!(a.envelope.recipients, b.envelope.recipients);
                }
            }
        }
        if !lf_only {
            return (stored, closed);
        }
    }
    unreachable!()
}

const EHLO_PLAIN: &str =
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n";
const EHLO_TLS: &str =
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250-DSN\r\n250 STARTTLS\r\n";
/// On a TLS session: REQUIRETLS (RFC 8689 §2), no STARTTLS.
const EHLO_IN_TLS: &str =
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250-DSN\r\n250 REQUIRETLS\r\n";

#[test]
fn state_event_banner_names_host() {
    let mut s = Session::new(
        snapshot(false),
        Harness::new(snapshot(false)).session.peer().clone(),
    );
    let mut out = Vec::new();
    s.greet(Instant::now());
    s.poll_output(&mut out);
    assert_eq!(out, b"220 mx.test ESMTP sealgate\r\n");
}

#[test]
fn state_event_full_transaction_is_stored() {
    let (stored, closed) = run_table(
        &snapshot(false),
        &[
            cmd("EHLO client.test\r\n", EHLO_PLAIN),
            cmd(
                "MAIL FROM:<a@sender.test> SIZE=20\r\n",
                "250 2.1.0 Sender ok\r\n",
            ),
            cmd("RCPT TO:<b@example.com>\r\n", "250 2.1.5 Recipient ok\r\n"),
            cmd("DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n"),
            data(
                b"Subject: t\r\n\r\n..hi\r\n.\r\n",
                "250 2.0.0 Ok: queued as QID1\r\n",
            ),
            cmd("QUIT\r\n", "221 2.0.0 Bye\r\n"),
        ],
    );
    assert!(closed);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data, b"Subject: t\r\n\r\n.hi\r\n");
    assert_eq!(stored[0].envelope.from, "a@sender.test");
    assert_eq!(stored[0].envelope.recipients, vec!["b@example.com"]);
    assert!(stored[0].envelope.esmtp);
    assert!(stored[0].envelope.tls.is_none());
}

#[test]
fn state_event_pipelined_group_replies_in_order() {
    let (stored, _) = run_table(
        &snapshot(false),
        &[
            cmd("EHLO client.test\r\n", EHLO_PLAIN),
            cmd(
                "MAIL FROM:<>\r\nRCPT TO:<x@other.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
                "250 2.1.0 Sender ok\r\n554 5.7.1 Relay access denied\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            data(b"x\r\n.\r\nQUIT\r\n", "250 2.0.0 Ok: queued as QID1\r\n221 2.0.0 Bye\r\n"),
        ],
    );
    assert_eq!(stored[0].envelope.from, "");
}

#[test]
fn state_event_starttls_discards_pipelined_input_and_resets() {
    let (stored, _) = run_table(
        &snapshot(true),
        &[
            cmd("EHLO client.test\r\n", EHLO_TLS),
            cmd("MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Sender ok\r\n"),
            // CVE-2011-0411 class: the RSET is never answered.
            cmd("STARTTLS\r\nRSET\r\n", "220 2.0.0 Ready to start TLS\r\n"),
            // RFC 3207 §4.2: no state survives; EHLO is needed again.
            cmd("MAIL FROM:<a@b.test>\r\n", "503 5.5.1 Send EHLO or HELO first\r\n"),
            cmd("EHLO client.test\r\n", EHLO_IN_TLS),
            cmd("STARTTLS\r\n", "503 5.5.1 TLS already active\r\n"),
            cmd(
                "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            data(b"hi\r\n.\r\n", "250 2.0.0 Ok: queued as QID1\r\n"),
        ],
    );
    let tls = stored[0].envelope.tls.as_ref().unwrap();
    assert_eq!(tls.version, "TLSv1.3");
}

#[test]
fn state_event_requiretls_is_accepted_over_tls_only_and_kept_with_the_message() {
    use crate::model::TlsRequest;
    let (stored, _) = run_table(
        &snapshot(true),
        &[
            // RFC 8689 §2: not offered in the clear; refused there.
            cmd("EHLO client.test\r\n", EHLO_TLS),
            cmd(
                "MAIL FROM:<a@b.test> REQUIRETLS\r\n",
                "530 5.7.10 REQUIRETLS needs TLS: issue STARTTLS first\r\n",
            ),
            cmd("STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n"),
            cmd("EHLO client.test\r\n", EHLO_IN_TLS),
            cmd(
                "MAIL FROM:<a@b.test> REQUIRETLS=yes\r\n",
                "501 5.5.4 REQUIRETLS takes no value\r\n",
            ),
            cmd(
                "MAIL FROM:<a@b.test> requiretls BODY=8BITMIME\r\nRCPT TO:<c@example.com>\r\nDATA\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            // §4.1: with REQUIRETLS the TLS-Required header is ignored.
            data(
                b"TLS-Required: No\r\n\r\nhi\r\n.\r\n",
                "250 2.0.0 Ok: queued as QID1\r\n",
            ),
            cmd(
                "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            // §5: the header alone asks that recipient policies not stop it.
            data(
                b"Subject: x\r\ntls-required:  NO\r\n\r\nhi\r\n.\r\n",
                "250 2.0.0 Ok: queued as QID1\r\n",
            ),
            cmd(
                "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            data(
                b"Subject: x\r\n\r\nTLS-Required: No\r\n.\r\n",
                "250 2.0.0 Ok: queued as QID1\r\n",
            ),
        ],
    );
    let flags: Vec<_> = stored.iter().map(|m| m.envelope.flags).collect();
    assert_eq!(flags[0].tls, TlsRequest::Required);
    assert!(flags[0].body_8bit);
    assert_eq!(flags[1].tls, TlsRequest::NotRequired);
    assert_eq!(flags[2].tls, TlsRequest::Default);
}

#[test]
fn state_event_starttls_refused_without_certificate() {
    run_table(
        &snapshot(false),
        &[
            cmd("EHLO c.test\r\n", EHLO_PLAIN),
            cmd("STARTTLS\r\n", "454 4.7.0 TLS not available\r\n"),
        ],
    );
}

#[test]
fn state_event_overlong_command_then_session_goes_on() {
    // 511 octets + CRLF = 513: one over RFC 5321 §4.5.3.1.4.
    let line: &'static str = Box::leak(format!("NOOP {}\r\n", "x".repeat(506)).into_boxed_str());
    assert_eq!(line.len(), 513);
    let ok: &'static str = Box::leak(format!("NOOP {}\r\n", "x".repeat(505)).into_boxed_str());
    run_table(
        &snapshot(false),
        &[
            cmd(line, "500 5.5.2 Line too long\r\n"),
            cmd(ok, "250 2.0.0 Ok\r\n"),
            cmd("NOOP\r\n", "250 2.0.0 Ok\r\n"),
        ],
    );
    // A line far over the cap that arrives in pieces is discarded whole.
    let long: &'static str =
        Box::leak(format!("NOOP {}\r\nNOOP\r\n", "y".repeat(2000)).into_boxed_str());
    run_table(
        &snapshot(false),
        &[cmd(long, "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n")],
    );
}

#[test]
fn state_event_size_declared_over_limit() {
    run_table(
        &snapshot(false),
        &[
            cmd("EHLO c.test\r\n", EHLO_PLAIN),
            cmd(
                "MAIL FROM:<a@b.test> SIZE=1001\r\n",
                "552 5.3.4 Message size exceeds fixed maximum message size\r\n",
            ),
            cmd(
                "MAIL FROM:<a@b.test> SIZE=1000\r\n",
                "250 2.1.0 Sender ok\r\n",
            ),
        ],
    );
}

#[test]
fn state_event_message_over_limit_is_refused_after_data() {
    let big: &'static [u8] = Box::leak(
        format!("{}\r\n.\r\n", "z".repeat(990))
            .repeat(1)
            .into_bytes()
            .into_boxed_slice(),
    );
    let bigger: Vec<u8> = [&b"a\r\n"[..], &vec![b'b'; 998], b"\r\n.\r\n"].concat();
    let bigger: &'static [u8] = Box::leak(bigger.into_boxed_slice());
    let (stored, _) = run_table(
        &snapshot(false),
        &[
            cmd("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n", concat!(
                "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")),
            data(bigger, "552 5.3.4 Message size exceeds fixed maximum message size\r\n"),
            cmd("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"),
            data(big, "250 2.0.0 Ok: queued as QID1\r\n"),
        ],
    );
    assert_eq!(stored.len(), 1);
}

#[test]
fn state_event_recipient_over_limit_keeps_earlier_ones() {
    let (stored, _) = run_table(
        &snapshot(false),
        &[
            cmd("EHLO c.test\r\n", EHLO_PLAIN),
            cmd(
                "MAIL FROM:<a@b.test>\r\nRCPT TO:<1@example.com>\r\nRCPT TO:<2@example.com>\r\nRCPT TO:<3@example.com>\r\nRCPT TO:<4@example.com>\r\nDATA\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n452 4.5.3 Too many recipients\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            data(b"x\r\n.\r\n", "250 2.0.0 Ok: queued as QID1\r\n"),
        ],
    );
    assert_eq!(
        stored[0].envelope.recipients,
        vec!["1@example.com", "2@example.com", "3@example.com"]
    );
}

#[test]
fn state_event_foreign_domain_is_relay_denied() {
    run_table(
        &snapshot(false),
        &[
            cmd("EHLO c.test\r\n", EHLO_PLAIN),
            cmd("MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Sender ok\r\n"),
            cmd(
                "RCPT TO:<victim@elsewhere.test>\r\n",
                "554 5.7.1 Relay access denied\r\n",
            ),
            cmd(
                "RCPT TO:<user%elsewhere.test@example.com>\r\n",
                "250 2.1.5 Recipient ok\r\n",
            ),
            cmd("DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n"),
        ],
    );
}

#[test]
fn state_event_sequence_errors() {
    run_table(
        &snapshot(false),
        &[
            cmd(
                "MAIL FROM:<a@b.test>\r\n",
                "503 5.5.1 Send EHLO or HELO first\r\n",
            ),
            cmd("HELO c.test\r\n", "250 mx.test\r\n"),
            cmd(
                "RCPT TO:<c@example.com>\r\n",
                "503 5.5.1 Need MAIL before RCPT\r\n",
            ),
            cmd("DATA\r\n", "503 5.5.1 Need MAIL command\r\n"),
            cmd("MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Sender ok\r\n"),
            cmd(
                "MAIL FROM:<a@b.test>\r\n",
                "503 5.5.1 Nested MAIL command\r\n",
            ),
            cmd("DATA\r\n", "554 5.5.1 No valid recipients\r\n"),
            cmd("RSET\r\n", "250 2.0.0 Ok\r\n"),
            cmd(
                "VRFY postmaster\r\n",
                "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n",
            ),
            cmd("EXPN list\r\n", "502 5.5.1 Command not implemented\r\n"),
            cmd("FOO\r\n", "500 5.5.1 Command unrecognized\r\n"),
        ],
    );
}

#[test]
fn state_event_data_before_354_is_a_synchronization_error() {
    let (stored, closed) = run_table(
        &snapshot(false),
        &[
            cmd("EHLO c.test\r\n", EHLO_PLAIN),
            cmd_one_read(
                "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nDATA\r\nSubject: x\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n554 5.5.0 Protocol error: SMTP synchronization error (input sent before the server's reply)\r\n",
            ),
        ],
    );
    assert!(closed);
    assert!(stored.is_empty());
}

#[test]
fn state_event_input_before_banner_is_refused() {
    let snap = snapshot(false);
    let peer = Harness::new(snap.clone()).session.peer().clone();
    let mut s = Session::new(snap, peer);
    let fed = s.feed(b"EHLO early.test\r\n", Instant::now());
    assert!(matches!(fed.action, Some(Action::Close)));
    let mut out = Vec::new();
    s.poll_output(&mut out);
    assert_eq!(
        out,
        b"554 5.5.0 Protocol error: input before the greeting banner\r\n"
    );
}

#[test]
fn state_event_smuggled_end_of_data_stays_in_the_message() {
    let (stored, _) = run_table(
        &snapshot(false),
        &[
            cmd("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n", concat!(
                "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")),
            data(
                b"Subject: a\r\n\r\nhello\n.\nMAIL FROM:<evil@b.test>\r\nRCPT TO:<c@example.com>\r\n.\r\n",
                "554 5.5.2 Bare CR or LF in message data is not allowed (RFC 5321 section 2.3.8)\r\n",
            ),
            cmd("NOOP\r\n", "250 2.0.0 Ok\r\n"),
        ],
    );
    assert!(
        stored.is_empty(),
        "nothing is accepted from a message with bare LF"
    );
}

#[test]
fn state_event_idle_client_times_out_with_421() {
    let snap = {
        let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
        s.limits.command_timeout = Duration::from_secs(30);
        Arc::new(s)
    };
    let mut h = Harness::new(snap);
    h.read(b"EHLO c.test\r\n");
    h.take_output();
    let due = h.now + Duration::from_secs(30);
    assert_eq!(h.session.poll_timeout(), Some(due));
    assert!(
        h.session
            .handle_timeout(due - Duration::from_millis(1))
            .is_none(),
        "not before the deadline"
    );
    assert!(matches!(h.session.handle_timeout(due), Some(Action::Close)));
    assert_eq!(
        h.take_output(),
        "421 4.4.2 Timeout exceeded, closing connection\r\n"
    );
    assert!(h.session.is_closed());
}

#[test]
fn state_event_too_many_errors_closes() {
    let snap = {
        let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
        s.limits.errors = 3;
        Arc::new(s)
    };
    let (_, closed) = run_table(
        &snap,
        &[cmd(
            "FOO\r\nFOO\r\nFOO\r\nNOOP\r\n",
            "500 5.5.1 Command unrecognized\r\n500 5.5.1 Command unrecognized\r\n500 5.5.1 Command unrecognized\r\n421 4.7.0 Too many errors, closing connection\r\n",
        )],
    );
    assert!(closed);
}

#[test]
fn slow_drip_data_is_cut_once_below_min_data_rate() {
    let snap = {
        let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
        s.limits.data_timeout = Duration::from_secs(10);
        s.limits.min_data_rate = 100;
        Arc::new(s)
    };
    let mut h = Harness::new(snap);
    h.read(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n");
    assert!(h
        .take_output()
        .ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"));
    let start = h.now;
    // A fast client: 1000 octets at once earn 10 s beyond data_timeout,
    // but silence is still bounded by data_timeout.
    h.read(&[b'x'; 1000]);
    assert_eq!(
        h.session.poll_timeout(),
        Some(start + Duration::from_secs(10))
    );
    // One octet a second: the silence bound moves on, the rate bound
    // barely does: the session is cut 20.19 s after the 354 (10 s of
    // grace plus 10.19 s earned by 1019 octets at 100/s).
    for second in 1..=19u64 {
        h.now = start + Duration::from_secs(second);
        h.read(b"y");
    }
    let deadline = h.session.poll_timeout().unwrap();
    assert!(
        deadline < h.now + Duration::from_secs(10),
        "rate bound applies"
    );
    assert_eq!(deadline, start + Duration::from_millis(20_190));
    // A client streaming without end (fast, but past message_size, here
    // 1000 octets): what is over the size earns nothing, so the deadline
    // stops at data_timeout + message_size / rate = 10 s + 10 s.
    let snap = {
        let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
        s.limits.data_timeout = Duration::from_secs(10);
        s.limits.min_data_rate = 100;
        s.limits.message_size = 1000;
        Arc::new(s)
    };
    let mut h = Harness::new(snap);
    h.read(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n");
    let start = h.now;
    for second in 1..=30u64 {
        h.now = start + Duration::from_secs(second);
        h.read(&[b'z'; 5000]);
    }
    assert_eq!(
        h.session.poll_timeout(),
        Some(start + Duration::from_secs(20))
    );
    // With the floor off, only silence counts.
    let snap = {
        let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
        s.limits.data_timeout = Duration::from_secs(10);
        s.limits.min_data_rate = 0;
        Arc::new(s)
    };
    let mut h = Harness::new(snap);
    h.read(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n");
    let start = h.now;
    h.now = start + Duration::from_secs(30);
    h.read(b"y");
    assert_eq!(
        h.session.poll_timeout(),
        Some(start + Duration::from_secs(40))
    );
}

/// Property (issue 7): whatever a client sends, and however the network
/// cuts it into reads, the session gives the same replies and stores the
/// same messages. Each turn is what a client sends before it waits for a
/// reply; every turn is cut at arbitrary points.
mod split_property {
    use super::*;
    use proptest::prelude::*;

    /// Command lines, good and bad, including ones that change state.
    fn command() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"EHLO c.test\r\n".to_vec()),
            Just(b"HELO c.test\r\n".to_vec()),
            Just(b"MAIL FROM:<a@b.test>\r\n".to_vec()),
            Just(b"MAIL FROM:<a@b.test> SIZE=999999\r\n".to_vec()),
            Just(b"MAIL FROM:<> BODY=8BITMIME\r\n".to_vec()),
            Just(b"RCPT TO:<u@example.com>\r\n".to_vec()),
            Just(b"RCPT TO:<x@elsewhere.test>\r\n".to_vec()),
            Just(b"RCPT TO:<\"q@x\"@example.com>\r\n".to_vec()),
            Just(b"DATA\r\n".to_vec()),
            // RFC 3030: chunks with dots, line ends and command-like text.
            Just(b"BDAT 6\r\nab\r\n.\r".to_vec()),
            Just(b"BDAT 7 LAST\r\n\nQUIT\r\n".to_vec()),
            Just(b"BDAT 0 LAST\r\n".to_vec()),
            Just(b"BDAT 2000\r\n".to_vec()),
            Just(b"RSET\r\n".to_vec()),
            Just(b"NOOP\r\n".to_vec()),
            Just(b"VRFY u\r\n".to_vec()),
            Just(b"STARTTLS\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"QUIT\r\n".to_vec()),
            // Overlong, and arbitrary octets ending in a line end.
            Just([b"NOOP ".to_vec(), vec![b'x'; 600], b"\r\n".to_vec()].concat()),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|mut v| {
                v.extend_from_slice(b"\r\n");
                v
            }),
        ]
    }

    /// Message text built from the pieces that matter to the DATA reader:
    /// line ends, bare CR and LF, dots at line starts, NUL, long runs.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"text".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\0".to_vec()),
            Just(vec![b'y'; 300]),
        ];
        proptest::collection::vec(piece, 0..30).prop_map(|mut v| {
            v.push(b"\r\n.\r\n".to_vec());
            v.concat()
        })
    }

    fn turn() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![4 => command(), 1 => body()]
    }

    fn conversation(
        snap: &Arc<Snapshot>,
        turns: &[Vec<u8>],
        cuts: &[Vec<usize>],
    ) -> (String, Vec<Vec<u8>>, bool) {
        let mut h = Harness::new(snap.clone());
        let mut replies = String::new();
        for (i, bytes) in turns.iter().enumerate() {
            h.tls_started_in_turn = false;
            let mut at: Vec<usize> = cuts
                .get(i)
                .map(|c| c.iter().map(|x| x % (bytes.len() + 1)).collect())
                .unwrap_or_default();
            at.sort_unstable();
            let mut from = 0;
            for cut in at.into_iter().chain([bytes.len()]) {
                h.read(&bytes[from..cut]);
                from = cut;
            }
            replies.push_str(&h.take_output());
        }
        (
            replies,
            h.stored.iter().map(|m| m.data.to_vec()).collect(),
            h.closed,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn any_split_of_the_same_bytes_gives_the_same_replies(
            turns in proptest::collection::vec(turn(), 1..14),
            cuts in proptest::collection::vec(proptest::collection::vec(any::<usize>(), 0..4), 14),
            tls in any::<bool>(),
        ) {
            let snap = snapshot(tls);
            let whole = conversation(&snap, &turns, &[]);
            let split = conversation(&snap, &turns, &cuts);
            prop_assert_eq!(&split.0, &whole.0);
            prop_assert_eq!(&split.1, &whole.1);
            prop_assert_eq!(split.2, whole.2);
        }
    }
}

/// Past `limits.message_buffer` the session hands its data out as it comes
/// (`Action::Spill`), holding at most about that much, accounted in the
/// shared budget; the message reassembles exactly, at every split; once
/// stored the budget is back to zero. While the budget is used up, MAIL
/// and DATA get 452 4.3.1 and the session goes on.
#[test]
fn data_past_the_buffer_spills_and_the_budget_bounds_memory() {
    let snap = {
        let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
        s.limits.message_buffer = 64;
        s.limits.inflight_data = 1000;
        Arc::new(s)
    };
    let body: Vec<u8> = (0..40)
        .flat_map(|i| format!("line {i:02} of the message, some text\r\n").into_bytes())
        .collect();
    for split in [1usize, 7, 64, 10_000] {
        let budget = Arc::new(DataBudget::default());
        let mut h = Harness::new(snap.clone());
        h.session =
            Session::new(snap.clone(), h.session.peer().clone()).with_budget(budget.clone());
        h.session.greet(h.now);
        h.take_output();
        h.read(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n");
        assert!(h
            .take_output()
            .ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"));
        let mut most = 0;
        for chunk in body.chunks(split) {
            h.read(chunk);
            most = most.max(budget.used());
        }
        assert!(
            most < 64 + split as u64,
            "held {most} octets at split {split}"
        );
        h.read(b".\r\n");
        assert!(h.take_output().starts_with("250 2.0.0 Ok: queued as QID1"));
        assert_eq!(h.stored[0].data, body, "split {split}");
        assert_eq!(budget.used(), 0, "all given back once stored");
    }

    // Another session's message, waiting for the spool, holds the budget.
    let budget = Arc::new(DataBudget::default());
    let small = {
        let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
        s.limits.inflight_data = 10;
        Arc::new(s)
    };
    let now = Instant::now();
    let mut holder = Session::new(
        small.clone(),
        Harness::new(small.clone()).session.peer().clone(),
    )
    .with_budget(budget.clone());
    holder.greet(now);
    let mut input: &[u8] = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n";
    while !input.is_empty() {
        let fed = holder.feed(input, now);
        input = &input[fed.consumed..];
    }
    let fed = holder.feed(b"0123456789\r\n.\r\n", now);
    assert!(matches!(fed.action, Some(Action::Store(_))));
    assert_eq!(budget.used(), 12);
    let mut other = Harness::new(small.clone());
    other.session = Session::new(small, other.session.peer().clone()).with_budget(budget.clone());
    other.session.greet(other.now);
    other.take_output();
    other.read(b"EHLO c\r\n");
    other.take_output();
    other.read(b"MAIL FROM:<a@b.test>\r\n");
    assert_eq!(
        other.take_output(),
        "452 4.3.1 Insufficient system resources, try again later\r\n"
    );
    other.read(b"NOOP\r\n");
    assert_eq!(other.take_output(), "250 2.0.0 Ok\r\n");
    // Stored: the budget is free again.
    holder.stored(Ok("Q"), now);
    assert_eq!(budget.used(), 0);
    other.read(b"MAIL FROM:<a@b.test>\r\n");
    assert!(other.take_output().starts_with("250"));
}

/// A report-only profile runs its checks and refuses nothing: MAIL in the
/// clear under `mandatory_tls` is accepted, and the session reports what it
/// would have answered; the same profile without `report_only` refuses.
#[test]
fn state_event_report_only_profile_accepts_and_reports() {
    let snapshot = |report_only: bool| {
        let text = format!(
            "[server]\naccept_domains = [\"example.com\"]\n\n[[profile]]\nname = \"p\"\nhosts = [\"*\"]\n\n[profile.server]\nmandatory_tls = true\nreport_only = {report_only}\n"
        );
        let cfg = crate::config::parse(&text, "t.toml", std::path::PathBuf::from(".")).unwrap();
        Arc::new(cfg.snapshot().unwrap())
    };
    let mut h = Harness::new(snapshot(true));
    h.read(b"EHLO c.test\r\n");
    h.take_output();
    h.read(b"MAIL FROM:<a@c.test>\r\n");
    assert_eq!(h.take_output(), "250 2.1.0 Sender ok\r\n");
    match h.session.poll_event() {
        Some(Rejection::WouldRefuse {
            refusal: Refusal::TlsRequired,
            line,
        }) => assert!(line.to_string().contains("530 5.7.0"), "{line}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.session.poll_event(), None);

    let mut h = Harness::new(snapshot(false));
    h.read(b"EHLO c.test\r\n");
    h.take_output();
    h.read(b"MAIL FROM:<a@c.test>\r\n");
    assert!(h.take_output().starts_with("530 5.7.0"));
    assert!(matches!(
        h.session.poll_event(),
        Some(Rejection::Policy {
            refusal: Refusal::TlsRequired,
            ..
        })
    ));
}

const BDAT_START: &str = "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\n";
const BDAT_START_REPLIES: &str = concat!(
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n",
    "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
);

/// RFC 3030: a message in BDAT chunks is taken as sent — no dot-stuffing,
/// a dot line is data, a chunk may end mid-line and mid-CRLF — and each
/// chunk is answered once its octets are in, the LAST one after the
/// spool has the message. Every turn is also split at every octet.
#[test]
fn state_event_bdat_chunks_are_stored_as_sent() {
    let (stored, _) = run_table(
        &snapshot(false),
        &[
            cmd(BDAT_START, BDAT_START_REPLIES),
            data(
                b"BDAT 9\r\nSubject: ",
                "250 2.0.0 Ok: 9 octets received\r\n",
            ),
            data(b"BDAT 4\r\nx\r\n\r", "250 2.0.0 Ok: 4 octets received\r\n"),
            data(
                b"BDAT 11 LAST\r\n\n.\r\n..end\r\n",
                "250 2.0.0 Ok: queued as QID1\r\n",
            ),
            cmd("NOOP\r\n", "250 2.0.0 Ok\r\n"),
        ],
    );
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data, b"Subject: x\r\n\r\n.\r\n..end\r\n");
    assert_eq!(stored[0].envelope.recipients, vec!["c@example.com"]);
}

/// Chunks pipelined with the envelope in one read, `BDAT 0 LAST` to end,
/// and a last line without CRLF, which gets one (the message goes on with
/// DATA). A message of no octets at all is stored too.
#[test]
fn state_event_bdat_pipelined_zero_last_and_empty_message() {
    let (stored, _) = run_table(
        &snapshot(false),
        &[
            data(
                b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nBDAT 4\r\nabcdBDAT 0 LAST\r\n",
                concat!(
                    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n",
                    "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.0.0 Ok: 4 octets received\r\n",
                    "250 2.0.0 Ok: queued as QID1\r\n"
                ),
            ),
            data(
                b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nBDAT 0 LAST\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.0.0 Ok: queued as QID1\r\n",
            ),
        ],
    );
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].data, b"abcd\r\n");
    assert_eq!(stored[1].data, b"");
}

/// A refused BDAT still has its octets read and dropped — never taken as
/// commands (RFC 3030 §2); DATA does not follow BDAT in one transaction
/// (§3); RSET drops the chunks so far; over the size limit the chunk that
/// crosses it is refused with 552; bare LF is refused as after DATA.
#[test]
fn state_event_bdat_refusals_consume_the_chunk() {
    let big: Vec<u8> = [&b"BDAT 1001\r\n"[..], &[b'x'; 1001]].concat();
    let big: &'static [u8] = Box::leak(big.into_boxed_slice());
    let (stored, closed) = run_table(
        &snapshot(false),
        &[
            data(
                b"EHLO c.test\r\nBDAT 6 LAST\r\nQUIT\r\n",
                "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n503 5.5.1 Need MAIL command\r\n",
            ),
            data(
                b"MAIL FROM:<a@b.test>\r\nBDAT 6\r\nRSET\r\n",
                "250 2.1.0 Sender ok\r\n554 5.5.1 No valid recipients\r\n",
            ),
            data(
                b"RCPT TO:<c@example.com>\r\nBDAT 2\r\nhi",
                "250 2.1.5 Recipient ok\r\n250 2.0.0 Ok: 2 octets received\r\n",
            ),
            cmd("DATA\r\n", "503 5.5.1 DATA after BDAT in one transaction\r\n"),
            cmd("RSET\r\n", "250 2.0.0 Ok\r\n"),
            data(b"BDAT 1 LAST\r\nx", "503 5.5.1 Need MAIL command\r\n"),
            data(
                b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\n",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n",
            ),
            data(big, "552 5.3.4 Message size exceeds fixed maximum message size\r\n"),
            data(
                b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.com>\r\nBDAT 7 LAST\r\nhi\n.\nyo",
                "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n554 5.5.2 Bare CR or LF in message data is not allowed (RFC 5321 section 2.3.8)\r\n",
            ),
            cmd("QUIT\r\n", "221 2.0.0 Bye\r\n"),
        ],
    );
    assert!(stored.is_empty());
    assert!(closed);
}

/// RFC 6531: a UTF-8 address needs `SMTPUTF8` on MAIL (553 5.6.7 without
/// it, and the session goes on); with it, UTF-8 local parts and U-label
/// domains are taken, an accepted domain matches in either form, and the
/// flag stays with the message.
#[test]
fn state_event_smtputf8_addresses_need_the_parameter_and_keep_the_flag() {
    let mut snap = Snapshot::for_tests("mx.test", &["example.com", "xn--bcher-kva.example"]);
    snap.limits.message_size = 1000;
    let (stored, _) = run_table(
        &Arc::new(snap),
        &[
            cmd("EHLO client.test\r\n", EHLO_PLAIN),
            cmd(
                "MAIL FROM:<jörg@bücher.example>\r\n",
                "553 5.6.7 Non-ASCII address needs MAIL FROM:<...> SMTPUTF8\r\n",
            ),
            cmd("MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Sender ok\r\n"),
            cmd(
                "RCPT TO:<élise@example.com>\r\n",
                "553 5.6.7 Non-ASCII address needs MAIL FROM:<...> SMTPUTF8\r\n",
            ),
            cmd("RSET\r\n", "250 2.0.0 Ok\r\n"),
            cmd(
                "MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n",
                "250 2.1.0 Sender ok\r\n",
            ),
            cmd(
                "RCPT TO:<élise@bücher.example>\r\n",
                "250 2.1.5 Recipient ok\r\n",
            ),
            cmd(
                "RCPT TO:<bob@xn--bcher-kva.example>\r\n",
                "250 2.1.5 Recipient ok\r\n",
            ),
            cmd(
                "RCPT TO:<ünï@example.com>\r\n",
                "250 2.1.5 Recipient ok\r\n",
            ),
            cmd(
                "RCPT TO:<x@bücher.test>\r\n",
                "554 5.7.1 Relay access denied\r\n",
            ),
            cmd("DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n"),
            data(
                "Subject: Grüße\r\n\r\nhi\r\n.\r\n".as_bytes(),
                "250 2.0.0 Ok: queued as QID1\r\n",
            ),
        ],
    );
    assert_eq!(stored.len(), 1);
    let env = &stored[0].envelope;
    assert!(env.flags.smtputf8);
    assert_eq!(env.from, "jörg@bücher.example");
    assert_eq!(
        env.recipients,
        vec![
            "élise@bücher.example",
            "bob@xn--bcher-kva.example",
            "ünï@example.com"
        ]
    );
}

/// RFC 3461: RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT are kept
/// (xtext decoded) per message and per recipient; a bad value is 501 and
/// the transaction goes on.
#[test]
fn state_event_dsn_parameters_are_kept_per_recipient() {
    use crate::model::{Notify, Ret};
    let (stored, _) = run_table(
        &snapshot(false),
        &[
            cmd("EHLO client.test\r\n", EHLO_PLAIN),
            cmd(
                "MAIL FROM:<a@b.test> RET=ALL\r\n",
                "501 5.5.4 Bad RET parameter: FULL or HDRS\r\n",
            ),
            cmd(
                "MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2B314\r\n",
                "250 2.1.0 Sender ok\r\n",
            ),
            cmd(
                "RCPT TO:<x@example.com> NOTIFY=NEVER,SUCCESS\r\n",
                "501 5.5.4 Bad NOTIFY parameter: NEVER or SUCCESS,FAILURE,DELAY\r\n",
            ),
            cmd(
                "RCPT TO:<x@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2By@y.example\r\n",
                "250 2.1.5 Recipient ok\r\n",
            ),
            cmd(
                "RCPT TO:<n@example.com> NOTIFY=NEVER\r\n",
                "250 2.1.5 Recipient ok\r\n",
            ),
            cmd("RCPT TO:<p@example.com>\r\n", "250 2.1.5 Recipient ok\r\n"),
            cmd("DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n"),
            data(
                b"Subject: t\r\n\r\nhi\r\n.\r\n",
                "250 2.0.0 Ok: queued as QID1\r\n",
            ),
        ],
    );
    assert_eq!(stored.len(), 1);
    let env = &stored[0].envelope;
    assert_eq!(env.dsn.ret, Some(Ret::Hdrs));
    assert_eq!(env.dsn.envid.as_deref(), Some("QQ+314"));
    let r = &env.recipients;
    assert_eq!(
        r[0].dsn.notify,
        Notify::On {
            success: true,
            failure: true,
            delay: false
        }
    );
    let orcpt = r[0].dsn.orcpt.as_ref().expect("ORCPT kept");
    assert_eq!(
        (orcpt.kind.as_str(), orcpt.address.as_str()),
        ("rfc822", "x+y@y.example")
    );
    assert_eq!(r[1].dsn.notify, Notify::Never);
    assert_eq!(r[2].dsn, crate::model::RcptDsn::default());
}
