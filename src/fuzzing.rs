//! Fuzzing harnesses (issue 7), shared by the cargo-fuzz targets in
//! `fuzz/` and by `tests/fuzz_regressions.rs`, which replays every input
//! a fuzzer ever found a crash with. Each takes raw fuzzer bytes; the
//! structured ones read their operations from them with `arbitrary`.
//! Each asserts invariants besides "does not panic", and returns how much
//! it exercised (lines, octets, reply lines, operations), so a replay can
//! tell a harness that did something from one that decoded nothing.

/// Operations decoded one after another until the input runs out; one that
/// cannot be decoded ends the list (rather than discarding the whole
/// input, as decoding a `Vec` in one go would).
fn ops<'a, T: arbitrary::Arbitrary<'a>>(u: &mut arbitrary::Unstructured<'a>) -> Vec<T> {
    let mut ops = Vec::new();
    while !u.is_empty() {
        match u.arbitrary() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

pub mod command_parser {
    //! The command line splitter and parser on arbitrary octets: no panic, and
    //! what they report stays inside the input and the RFC 5321 line cap.

    use crate::smtp::command::{next_line, parse, Line};

    /// Returns the number of lines split off.
    pub fn run(input: &[u8]) -> usize {
        let mut rest = input;
        let mut lines = 0;
        while !rest.is_empty() {
            lines += 1;
            match next_line(rest, 512) {
                Line::NeedMore => {
                    assert!(
                        rest.len() < 512,
                        "a partial line at the cap must be too long"
                    );
                    break;
                }
                Line::TooLong { consumed, .. } => {
                    assert!(consumed > 0 && consumed <= rest.len());
                    rest = &rest[consumed..];
                }
                Line::Complete { line, consumed } => {
                    assert!(consumed <= 512 && consumed <= rest.len());
                    assert!(line.len() < consumed);
                    let _ = parse(line);
                    rest = &rest[consumed..];
                }
            }
        }
        lines
    }
}

pub mod data_reader {
    //! The DATA reader on arbitrary octets in arbitrary chunks: no panic, the
    //! same result however the input is cut, an end only at CRLF.CRLF, and the
    //! kept text never beyond the size cap.

    use crate::smtp::data::{BareLineEndings, DataProgress, DataReader};

    /// The input's layout, decoded by hand so that nearly all of it is
    /// message text: one octet (bit 0: normalise bare line endings; bits
    /// 1–3: how many cuts), two octets per cut, then the text.
    struct Input<'a> {
        normalize: bool,
        cuts: Vec<usize>,
        bytes: &'a [u8],
    }

    impl<'a> Input<'a> {
        fn decode(data: &'a [u8]) -> Option<Input<'a>> {
            let (&flags, rest) = data.split_first()?;
            let cut_octets = (2 * usize::from((flags >> 1) & 7)).min(rest.len());
            let (cuts, bytes) = rest.split_at(cut_octets);
            Some(Input {
                normalize: flags & 1 == 1,
                cuts: cuts
                    .chunks(2)
                    .map(|c| usize::from(c[0]) | usize::from(*c.get(1).unwrap_or(&0)) << 8)
                    .collect(),
                bytes,
            })
        }
    }

    const SIZE_CAP: usize = 4096;

    fn read(chunks: &[&[u8]], mode: BareLineEndings) -> (Vec<u8>, Option<usize>, String) {
        let mut r = DataReader::new(1000, SIZE_CAP, mode);
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in chunks {
            if let DataProgress::End { consumed } = r.feed(chunk, &mut out) {
                assert!(consumed <= chunk.len());
                return (out, Some(offset + consumed), format!("{:?}", r.outcome()));
            }
            offset += chunk.len();
        }
        (out, None, format!("{:?}", r.outcome()))
    }

    pub fn run(data: &[u8]) -> usize {
        let Some(input) = Input::decode(data) else {
            return 0;
        };
        let mode = if input.normalize {
            BareLineEndings::Normalize
        } else {
            BareLineEndings::Reject
        };
        let bytes = input.bytes;
        let whole = read(&[bytes], mode);
        let mut at: Vec<usize> = input.cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for cut in at.into_iter().chain([bytes.len()]) {
            chunks.push(&bytes[from..cut]);
            from = cut;
        }
        assert_eq!(read(&chunks, mode), whole, "chunking changed the result");
        if let Some(end) = whole.1 {
            let seen = &bytes[..end];
            assert!(seen.ends_with(b"\r\n.\r\n") || seen == b".\r\n");
        }
        // Normalising may add a CR per bare LF within the cap; never more.
        assert!(whole.0.len() <= 2 * SIZE_CAP + 2);
        bytes.len()
    }
}

pub mod server_session {
    //! The server session driven by operation sequences, as the shard drives
    //! it: input in reads, time passing, storage results, TLS coming up,
    //! timeouts, draining. No panic, the session consumes only what it is
    //! given, and every octet it writes is a well-formed reply line.

    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, Instant};

    use crate::smtp::server::{Action, ClientVerify, Peer, Session, TlsFacts};
    use crate::smtp::Endpoint;
    use crate::snapshot::Snapshot;
    use arbitrary::Arbitrary;

    #[derive(Debug, Arbitrary)]
    enum Op {
        /// One read of client input (a command vocabulary helps the fuzzer
        /// reach deep states; raw bytes cover the rest).
        Read(Vec<u8>),
        Command(Verb),
        Wait(u16),
        Timeout,
        Drain,
        Shutdown,
    }

    #[derive(Debug, Arbitrary)]
    enum Verb {
        Ehlo,
        Helo,
        Mail,
        MailSize(u32),
        Rcpt,
        RcptForeign,
        /// RFC 6531 and RFC 3461: UTF-8 addresses, SMTPUTF8, RET, ENVID.
        MailUtf8,
        /// NOTIFY and ORCPT (xtext and RFC 6533 unitext).
        RcptDsn,
        /// Parameters the fuzzer writes itself, on MAIL or RCPT.
        MailParams(String),
        RcptParams(String),
        Data,
        EndData,
        /// RFC 3030: a chunk of the given size, LAST or not (its octets
        /// come from the reads that follow).
        Bdat(u16, bool),
        Rset,
        StartTls,
        Quit,
    }

    fn verb(v: &Verb) -> Vec<u8> {
        match v {
            Verb::Ehlo => b"EHLO fuzz.test\r\n".to_vec(),
            Verb::Helo => b"HELO fuzz.test\r\n".to_vec(),
            Verb::Mail => b"MAIL FROM:<a@b.test> BODY=8BITMIME\r\n".to_vec(),
            Verb::MailSize(n) => format!("MAIL FROM:<a@b.test> SIZE={n}\r\n").into_bytes(),
            Verb::Rcpt => b"RCPT TO:<u@example.com>\r\n".to_vec(),
            Verb::RcptForeign => b"RCPT TO:<u@elsewhere.test>\r\n".to_vec(),
            Verb::MailUtf8 => "MAIL FROM:<jörg@bücher.test> SMTPUTF8 RET=HDRS ENVID=q+2B1\r\n"
                .as_bytes()
                .to_vec(),
            Verb::RcptDsn => {
                "RCPT TO:<élise@example.com> NOTIFY=SUCCESS,DELAY ORCPT=utf-8;\\x{E9}lise@example.com\r\n"
                    .as_bytes()
                    .to_vec()
            }
            Verb::MailParams(p) => format!("MAIL FROM:<a@b.test> {p}\r\n").into_bytes(),
            Verb::RcptParams(p) => format!("RCPT TO:<u@example.com> {p}\r\n").into_bytes(),
            Verb::Data => b"DATA\r\n".to_vec(),
            Verb::EndData => b"\r\n.\r\n".to_vec(),
            Verb::Bdat(n, last) => {
                format!("BDAT {n}{}\r\n", if *last { " LAST" } else { "" }).into_bytes()
            }
            Verb::Rset => b"RSET\r\n".to_vec(),
            Verb::StartTls => b"STARTTLS\r\n".to_vec(),
            Verb::Quit => b"QUIT\r\n".to_vec(),
        }
    }

    struct Input {
        tls: bool,
        store_fails: bool,
        ops: Vec<Op>,
    }

    impl Input {
        fn decode(data: &[u8]) -> Option<Input> {
            let mut u = arbitrary::Unstructured::new(data);
            Some(Input {
                tls: u.arbitrary().ok()?,
                store_fails: u.arbitrary().ok()?,
                ops: super::ops(&mut u),
            })
        }
    }

    fn snapshot(tls: bool) -> Arc<Snapshot> {
        static PLAIN: OnceLock<Arc<Snapshot>> = OnceLock::new();
        static TLS: OnceLock<Arc<Snapshot>> = OnceLock::new();
        let make = |tls: bool| {
            let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
            s.limits.recipients = 3;
            s.limits.message_size = 2000;
            if tls {
                s.tls = Some(crate::tls::ephemeral_server_config("mx.test").unwrap());
            }
            Arc::new(s)
        };
        if tls {
            TLS.get_or_init(|| make(true)).clone()
        } else {
            PLAIN.get_or_init(|| make(false)).clone()
        }
    }

    /// Every reply line: three digits, then space or hyphen (or nothing),
    /// printable text, CRLF.
    /// Checks every reply line; returns how many there were.
    fn check_replies(out: &[u8]) -> usize {
        assert!(out.is_empty() || out.ends_with(b"\r\n"), "{out:?}");
        let mut n = 0;
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            n += 1;
            let line = line.strip_suffix(b"\r").expect("CRLF line ends");
            assert!(
                line.len() >= 3 && line[..3].iter().all(u8::is_ascii_digit),
                "{line:?}"
            );
            assert!(
                matches!(line.get(3), None | Some(b' ') | Some(b'-')),
                "{line:?}"
            );
            assert!(line.iter().all(|&b| (0x20..0x7f).contains(&b)), "{line:?}");
        }
        n
    }

    pub fn run(data: &[u8]) -> usize {
        let Some(input) = Input::decode(data) else {
            return 0;
        };
        let mut now = Instant::now();
        let peer = Peer {
            ip: "192.0.2.1".parse().unwrap(),
            port: 40000,
            name: None,
        };
        let mut s = Session::new(snapshot(input.tls), peer);
        s.greet(now);
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut replies = 0;
        for op in &input.ops {
            if s.is_closed() {
                break;
            }
            let read = match op {
                Op::Read(bytes) => Some(bytes.clone()),
                Op::Command(v) => Some(verb(v)),
                Op::Wait(ms) => {
                    now += Duration::from_millis(*ms as u64);
                    None
                }
                Op::Timeout => {
                    // The timer fires at the deadline, whatever the clock
                    // of the operations says.
                    if let Some(due) = s.poll_timeout() {
                        let _ = s.handle_timeout(due.max(now));
                    }
                    None
                }
                Op::Drain => {
                    let _ = s.drain();
                    None
                }
                Op::Shutdown => {
                    let _ = s.shutdown();
                    None
                }
            };
            if let Some(bytes) = read {
                pending.extend_from_slice(&bytes);
                loop {
                    let fed = s.feed(&pending, now);
                    assert!(fed.consumed <= pending.len());
                    pending.drain(..fed.consumed);
                    match fed.action {
                        None => break,
                        // Sessions without a data budget never spill.
                        Some(Action::Spill(_)) => {}
                        Some(Action::Store(_)) => {
                            let result = if input.store_fails {
                                Err(crate::smtp::server::StoreFailure::Full)
                            } else {
                                Ok("QID")
                            };
                            s.stored(result, now);
                        }
                        Some(Action::StartTls) => {
                            // RFC 3207: the session consumed what was
                            // pipelined behind STARTTLS.
                            assert!(pending.is_empty());
                            s.tls_established(
                                TlsFacts {
                                    version: "TLSv1.3",
                                    cipher: "TLS13_AES_128_GCM_SHA256".into(),
                                    bits: 128,
                                    verify: ClientVerify::No,
                                    client_cert: None,
                                },
                                now,
                            );
                            break;
                        }
                        Some(Action::Close) => break,
                    }
                }
            }
            s.poll_output(&mut out);
            replies += check_replies(&out);
            out.clear();
            // A passed deadline is what the shard's timer acts on: the
            // session must then close, saying 421 (or nothing mid-TLS).
            // (A deadline may well lie in the past: partial input does not
            // move it, or the slow-drip client could live for ever.)
            if let Some(action) = s.handle_timeout(now) {
                assert!(matches!(action, Action::Close));
                assert!(s.is_closed() && s.poll_timeout().is_none());
                s.poll_output(&mut out);
                replies += check_replies(&out);
                let text = String::from_utf8_lossy(&out);
                assert!(
                    text.is_empty()
                        || text.ends_with("421 4.4.2 Timeout exceeded, closing connection\r\n"),
                    "{text}"
                );
                out.clear();
            }
        }
        replies
    }
}

pub mod client_session {
    //! The delivery client against a hostile server: arbitrary replies in
    //! arbitrary reads, interleaved with TLS coming up, timeouts and failures.
    //! No panic, consumes only what it is given, and once it reports the
    //! connection closed it asks for nothing more.

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::smtp::client::{Action, Config, Failure, Outgoing, Session, Timeouts, TlsMode};
    use crate::smtp::Endpoint;
    use arbitrary::Arbitrary;

    #[derive(Debug, Arbitrary)]
    enum Op {
        Read(Vec<u8>),
        Reply(Canned),
        Wait(u16),
        Timeout,
        Fail,
    }

    #[derive(Debug, Arbitrary)]
    enum Canned {
        Greeting,
        Ehlo,
        EhloTls,
        /// A next hop offering SMTPUTF8 and DSN.
        EhloIntl,
        Ok,
        Go,
        TempFail,
        PermFail,
        Bye,
        Ready,
    }

    fn canned(c: &Canned) -> &'static [u8] {
        match c {
            Canned::Greeting => b"220 mx.test ESMTP\r\n",
            Canned::Ehlo => b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 8BITMIME\r\n",
            Canned::EhloTls => b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
            Canned::EhloIntl => {
                b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 DSN\r\n"
            }
            Canned::Ok => b"250 2.0.0 ok\r\n",
            Canned::Go => b"354 go ahead\r\n",
            Canned::TempFail => b"451 4.3.0 later\r\n",
            Canned::PermFail => b"550 5.1.1 no\r\n",
            Canned::Bye => b"221 2.0.0 bye\r\n",
            Canned::Ready => b"220 2.0.0 ready for TLS\r\n",
        }
    }

    struct Input {
        mode: u8,
        ops: Vec<Op>,
    }

    impl Input {
        fn decode(data: &[u8]) -> Option<Input> {
            let mut u = arbitrary::Unstructured::new(data);
            Some(Input {
                mode: u.arbitrary().ok()?,
                ops: super::ops(&mut u),
            })
        }
    }

    pub fn run(data: &[u8]) -> usize {
        let Some(input) = Input::decode(data) else {
            return 0;
        };
        let mut now = Instant::now();
        let tls = match input.mode % 3 {
            0 => TlsMode::Opportunistic,
            1 => TlsMode::Mandatory,
            _ => TlsMode::Off,
        };
        let config = Config {
            require_tls: false,
            keep_open: false,
            helo: "gw.test".into(),
            tls,
            timeouts: Timeouts::default(),
        };
        let message = |from: &str, rcpts: &[&str], data: &[u8]| Outgoing {
            from: from.into(),
            recipients: rcpts.iter().map(|r| (*r).into()).collect(),
            data: Arc::from(data),
            flags: crate::model::MailFlags {
                body_8bit: true,
                ..Default::default()
            },
            dsn: Default::default(),
        };
        // A SMTPUTF8 message with DSN requests: sent on with SMTPUTF8 and
        // the parameters, downgraded, or refused with 5.6.7, by what the
        // next hop offers.
        let intl = international(
            message(
                "jörg@bücher.test",
                &["élise@r.test", "u@bücher.test"],
                "Subject: Grüße\r\n\r\nx\r\n".as_bytes(),
            ),
            "id+1",
        );
        let messages = vec![
            message(
                "a@gw.test",
                &["x@r.test", "y@r.test"],
                b"Subject: s\r\n\r\n.dot\r\n",
            ),
            message("", &["z@r.test"], b"x\r\n"),
            intl,
        ];
        let mut s = Session::new(config, messages, now);
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut closed = false;
        let mut steps = 0;
        for op in &input.ops {
            if closed {
                break;
            }
            steps += 1;
            let read: Option<&[u8]> = match op {
                Op::Read(bytes) => Some(bytes),
                Op::Reply(c) => Some(canned(c)),
                Op::Wait(ms) => {
                    now += Duration::from_millis(*ms as u64);
                    None
                }
                Op::Timeout => {
                    closed = s
                        .poll_timeout()
                        .and_then(|due| s.handle_timeout(due.max(now)))
                        .is_some_and(|a| matches!(a, Action::Close(_)));
                    None
                }
                Op::Fail => {
                    let _ = s.fail(Failure::Connection("reset".into()));
                    closed = true;
                    None
                }
            };
            if let Some(bytes) = read {
                pending.extend_from_slice(bytes);
                loop {
                    let fed = s.feed(&pending, now);
                    assert!(fed.consumed <= pending.len());
                    pending.drain(..fed.consumed);
                    while s.poll_event().is_some() {}
                    match fed.action {
                        None => break,
                        Some(Action::StartTls) => s.tls_established(now),
                        Some(Action::Idle) => s.quit(now),
                        Some(Action::Close(_)) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            s.poll_output(&mut out);
        }
        // Whatever was sent is command lines or dot-stuffed text: CRLF-ended.
        assert!(out.is_empty() || out.ends_with(b"\r\n"));
        steps
    }

    /// `m` as a SMTPUTF8 message with DSN requests: RET=HDRS, `envid`, and
    /// NOTIFY=SUCCESS,FAILURE with a `utf-8` ORCPT for every recipient (the
    /// client harness's third message; the client session's tests).
    pub fn international(mut m: Outgoing, envid: &str) -> Outgoing {
        m.flags.smtputf8 = true;
        m.dsn = crate::model::MessageDsn {
            ret: Some(crate::model::Ret::Hdrs),
            envid: Some(envid.into()),
        };
        for r in &mut m.recipients {
            r.dsn.notify = crate::model::Notify::On {
                success: true,
                failure: true,
                delay: false,
            };
            r.dsn.orcpt = Some(crate::model::Orcpt {
                kind: "utf-8".into(),
                address: r.address.clone(),
            });
        }
        m
    }
}
