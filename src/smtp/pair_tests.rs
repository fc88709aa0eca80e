//! The two sessions against each other, in memory: sealgate's SMTP client
//! delivers several messages to sealgate's SMTP server over one
//! connection, through STARTTLS (both sides told the handshake happened),
//! with each direction's bytes cut at arbitrary points. The server must
//! store exactly what the client was given (dot-stuffing undone, lines
//! starting with dots intact), and the client must see every recipient
//! accepted.

use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;

use super::client::{self, Outgoing, TlsMode, Verdict};
use super::server::{self, Action};
use super::Endpoint;
use crate::model::{Peer, TlsFacts};
use crate::snapshot::Snapshot;

fn server_snapshot() -> Arc<Snapshot> {
    let mut s = Snapshot::for_tests("mx.test", &["example.com"]);
    s.tls = Some(crate::tls::ephemeral_server_config("mx.test").unwrap());
    Arc::new(s)
}

/// Moves `bytes` into `session` in reads of the given sizes (cycled).
struct Cutter {
    sizes: Vec<usize>,
    next: usize,
}

impl Cutter {
    fn take(&mut self, left: usize) -> usize {
        let n = self.sizes[self.next % self.sizes.len()].max(1);
        self.next += 1;
        n.min(left)
    }
}

/// What the conversation produced.
struct Ran {
    stored: Vec<server::Message>,
    outcomes: Vec<(usize, Vec<Verdict>)>,
    tls: bool,
}

fn converse(messages: Vec<Outgoing>, to_server: Vec<usize>, to_client: Vec<usize>) -> Ran {
    let now = Instant::now();
    let mut srv = server::Session::new(
        server_snapshot(),
        Peer {
            ip: "192.0.2.1".parse().unwrap(),
            port: 1,
            name: None,
        },
    );
    let mut cli = client::Session::new(
        client::Config {
            helo: "gw.test".into(),
            tls: TlsMode::Mandatory,
            timeouts: client::Timeouts::default(),
            require_tls: false,
            keep_open: false,
        },
        messages,
        now,
    );
    let (mut up, mut down) = (
        Cutter {
            sizes: to_server,
            next: 0,
        },
        Cutter {
            sizes: to_client,
            next: 0,
        },
    );
    let mut ran = Ran {
        stored: Vec::new(),
        outcomes: Vec::new(),
        tls: false,
    };
    srv.greet(now);
    let (mut c2s, mut s2c) = (Vec::<u8>::new(), Vec::<u8>::new());
    let (mut srv_pending, mut cli_pending) = (Vec::<u8>::new(), Vec::<u8>::new());
    let mut closed = false;
    for _ in 0..100_000 {
        srv.poll_output(&mut s2c);
        cli.poll_output(&mut c2s);
        if closed || (s2c.is_empty() && c2s.is_empty() && srv.is_closed()) {
            break;
        }
        // Server → client, one read.
        if !s2c.is_empty() {
            let n = down.take(s2c.len());
            cli_pending.extend(s2c.drain(..n));
            loop {
                let fed = cli.feed(&cli_pending, now);
                cli_pending.drain(..fed.consumed);
                while let Some(client::Event::MessageDone { index, outcomes }) = cli.poll_event() {
                    ran.outcomes
                        .push((index, outcomes.iter().map(|o| o.verdict).collect()));
                }
                match fed.action {
                    None => break,
                    Some(client::Action::StartTls) => {
                        // RFC 3207: nothing read past the 220 counts.
                        cli_pending.clear();
                        s2c.clear();
                        cli.tls_established(now);
                        ran.tls = true;
                    }
                    Some(client::Action::Close(_) | client::Action::Idle) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        cli.poll_output(&mut c2s);
        // Client → server, one read.
        if !c2s.is_empty() {
            let n = up.take(c2s.len());
            srv_pending.extend(c2s.drain(..n));
            loop {
                let fed = srv.feed(&srv_pending, now);
                srv_pending.drain(..fed.consumed);
                match fed.action {
                    None => break,
                    Some(Action::StartTls) => {
                        assert!(srv_pending.is_empty(), "the session consumed the rest");
                        srv.poll_output(&mut s2c);
                        srv.tls_established(TlsFacts::assumed(None), now);
                    }
                    Some(Action::Store(m)) => {
                        ran.stored.push(*m);
                        srv.stored(Ok("QID"), now);
                    }
                    Some(Action::Spill(_)) => unreachable!("no budget, no spill"),
                    Some(Action::Close) => {
                        srv.poll_output(&mut s2c);
                        break;
                    }
                }
            }
        }
    }
    ran
}

fn body(lines: &[String]) -> Vec<u8> {
    let mut b = b"Subject: pair\r\n\r\n".to_vec();
    for l in lines {
        b.extend_from_slice(l.as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    b
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(".".to_string()),
        Just("..".to_string()),
        Just(".leading dot".to_string()),
        Just(String::new()),
        "[a-zA-Z0-9 .:]{0,80}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn client_and_server_agree_through_every_cut(
        messages in prop::collection::vec(
            (prop::collection::vec(line(), 0..12), 1usize..4),
            1..6,
        ),
        to_server in prop::collection::vec(1usize..40, 1..8),
        to_client in prop::collection::vec(1usize..40, 1..8),
    ) {
        let outgoing: Vec<Outgoing> = messages
            .iter()
            .enumerate()
            .map(|(i, (lines, rcpts))| Outgoing {
                from: format!("s{i}@client.test"),
                recipients: (0..*rcpts)
                    .map(|r| crate::model::Recipient::plain(format!("u{r}@example.com")))
                    .collect(),
                data: Arc::from(body(lines)),
                flags: Default::default(),
                dsn: Default::default(),
            })
            .collect();
        let ran = converse(outgoing.clone(), to_server, to_client);
        prop_assert!(ran.tls, "STARTTLS was used");
        prop_assert_eq!(ran.stored.len(), outgoing.len());
        for (stored, sent) in ran.stored.iter().zip(&outgoing) {
            prop_assert_eq!(&stored.data[..], &sent.data[..]);
            prop_assert_eq!(&stored.envelope.from, &sent.from);
            prop_assert_eq!(&stored.envelope.recipients, &sent.recipients);
        }
        prop_assert_eq!(ran.outcomes.len(), outgoing.len());
        for (i, verdicts) in &ran.outcomes {
            prop_assert!(verdicts.iter().all(|v| *v == Verdict::Delivered), "message {}: {:?}", i, verdicts);
            prop_assert_eq!(verdicts.len(), outgoing[*i].recipients.len());
        }
    }
}
