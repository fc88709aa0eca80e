//! One load-generator session as a sans-IO script: it is told each reply
//! and answers with what to send and what happened. The engine owns the
//! socket, TLS and the clock.

use std::collections::VecDeque;

use crate::reply::Reply;

/// What a session does (product.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Connect, read the banner, QUIT.
    Connect,
    /// Banner, EHLO, STARTTLS, handshake, EHLO, QUIT.
    Starttls,
    /// As starttls, then MAIL/RCPT/DATA before QUIT.
    Message,
    /// As message, without TLS.
    Plain,
}

/// The fixed parameters of every session of a run.
#[derive(Debug, Clone)]
pub struct Params {
    pub mode: Mode,
    pub helo: String,
    pub from: String,
    /// Recipients per message.
    pub rcpts: Vec<String>,
    pub messages_per_conn: usize,
    /// The message (headers and body), CRLF line endings, dot-stuffed,
    /// followed by `.\r\n`.
    pub data: Vec<u8>,
    /// Keep the session open after the (post-TLS) EHLO instead of going on.
    pub hold: bool,
}

impl Params {
    /// Builds a message of about `size` octets, dot-stuffed and terminated.
    pub fn message(size: usize) -> Vec<u8> {
        let mut m = b"From: load@sealgate-load.test\r\nTo: sink@example.com\r\nSubject: sealgate-load\r\n\r\n".to_vec();
        let line = b"sealgate-load payload line: 0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n";
        while m.len() < size {
            m.extend_from_slice(line);
        }
        m.extend_from_slice(b".\r\n");
        m
    }
}

/// Moments the engine timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Banner,
    /// STARTTLS was sent: the handshake phase starts.
    StartTlsSent,
    /// The DATA command went out.
    DataSent,
    /// The message was answered 250.
    MessageAccepted,
}

/// What the engine must do after a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Send(Vec<u8>),
    Mark(Mark),
    /// Start the TLS handshake now (the `220` to STARTTLS arrived).
    StartTls,
    /// The session reached its hold point.
    Hold,
    /// The session ended successfully (221 received).
    Done,
    /// The session failed: a kind (for grouping) and an example.
    Fail(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Await {
    Banner,
    Ehlo,
    StartTls,
    EhloTls,
    Mail,
    Rcpt,
    Data,
    Dot,
    Quit,
}

impl Await {
    fn name(self) -> &'static str {
        match self {
            Await::Banner => "banner",
            Await::Ehlo | Await::EhloTls => "EHLO",
            Await::StartTls => "STARTTLS",
            Await::Mail => "MAIL",
            Await::Rcpt => "RCPT",
            Await::Data => "DATA",
            Await::Dot => "end of data",
            Await::Quit => "QUIT",
        }
    }

    fn expected(self) -> u16 {
        match self {
            Await::Banner | Await::StartTls => 220,
            Await::Data => 354,
            Await::Quit => 221,
            _ => 250,
        }
    }
}

pub struct Script {
    params: std::sync::Arc<Params>,
    waiting: VecDeque<Await>,
    messages_left: usize,
    pipelining: bool,
    tls_done: bool,
}

impl Script {
    pub fn new(params: std::sync::Arc<Params>) -> Self {
        let messages_left = match params.mode {
            Mode::Message | Mode::Plain => params.messages_per_conn,
            _ => 0,
        };
        Script {
            params,
            waiting: VecDeque::from([Await::Banner]),
            messages_left,
            pipelining: false,
            tls_done: false,
        }
    }

    fn uses_tls(&self) -> bool {
        matches!(self.params.mode, Mode::Starttls | Mode::Message)
    }

    /// The handshake completed.
    pub fn tls_established(&mut self) -> Vec<Step> {
        self.tls_done = true;
        self.waiting.push_back(Await::EhloTls);
        vec![Step::Send(
            format!("EHLO {}\r\n", self.params.helo).into_bytes(),
        )]
    }

    /// One complete reply arrived.
    pub fn reply(&mut self, reply: &Reply) -> Vec<Step> {
        let Some(awaited) = self.waiting.pop_front() else {
            return vec![Step::Fail(
                "unexpected reply".into(),
                format!("{} {}", reply.code, reply.text),
            )];
        };
        if reply.code != awaited.expected() {
            return vec![Step::Fail(
                format!("{} after {}", reply.code, awaited.name()),
                format!("{} {}", reply.code, reply.text),
            )];
        }
        let helo = || format!("EHLO {}\r\n", self.params.helo).into_bytes();
        let mut steps = Vec::new();
        match awaited {
            Await::Banner => {
                steps.push(Step::Mark(Mark::Banner));
                if self.params.mode == Mode::Connect {
                    return self.quit(steps);
                }
                self.waiting.push_back(Await::Ehlo);
                steps.push(Step::Send(helo()));
            }
            Await::Ehlo | Await::EhloTls => {
                self.pipelining = reply
                    .lines
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case("PIPELINING"));
                if awaited == Await::Ehlo && self.uses_tls() {
                    if !reply
                        .lines
                        .iter()
                        .any(|l| l.eq_ignore_ascii_case("STARTTLS"))
                    {
                        return vec![Step::Fail(
                            "STARTTLS not offered".into(),
                            reply.lines.join(" / "),
                        )];
                    }
                    self.waiting.push_back(Await::StartTls);
                    steps.push(Step::Mark(Mark::StartTlsSent));
                    steps.push(Step::Send(b"STARTTLS\r\n".to_vec()));
                } else if self.params.hold {
                    steps.push(Step::Hold);
                } else {
                    return self.next_message(steps);
                }
            }
            Await::StartTls => steps.push(Step::StartTls),
            Await::Mail | Await::Rcpt => {
                if !self.pipelining {
                    if let Some(Await::Rcpt) = self.waiting.front() {
                        let i = self.params.rcpts.len()
                            - self.waiting.iter().filter(|w| **w == Await::Rcpt).count();
                        steps.push(Step::Send(
                            format!("RCPT TO:<{}>\r\n", self.params.rcpts[i]).into_bytes(),
                        ));
                    } else {
                        steps.push(Step::Mark(Mark::DataSent));
                        steps.push(Step::Send(b"DATA\r\n".to_vec()));
                    }
                }
            }
            Await::Data => {
                self.waiting.push_back(Await::Dot);
                steps.push(Step::Send(self.params.data.clone()));
            }
            Await::Dot => {
                steps.push(Step::Mark(Mark::MessageAccepted));
                return self.next_message(steps);
            }
            Await::Quit => steps.push(Step::Done),
        }
        steps
    }

    fn next_message(&mut self, mut steps: Vec<Step>) -> Vec<Step> {
        if self.messages_left == 0 {
            return self.quit(steps);
        }
        self.messages_left -= 1;
        let p = &self.params;
        self.waiting.push_back(Await::Mail);
        self.waiting
            .extend(std::iter::repeat_n(Await::Rcpt, p.rcpts.len()));
        self.waiting.push_back(Await::Data);
        let mail = format!("MAIL FROM:<{}>\r\n", p.from);
        if self.pipelining {
            // RFC 2920: MAIL, every RCPT and DATA in one write.
            let mut batch = mail.into_bytes();
            for r in &p.rcpts {
                batch.extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            steps.push(Step::Mark(Mark::DataSent));
            steps.push(Step::Send(batch));
        } else {
            steps.push(Step::Send(mail.into_bytes()));
        }
        steps
    }

    fn quit(&mut self, mut steps: Vec<Step>) -> Vec<Step> {
        self.waiting.push_back(Await::Quit);
        steps.push(Step::Send(b"QUIT\r\n".to_vec()));
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn reply(code: u16, lines: &[&str]) -> Reply {
        Reply {
            code,
            text: lines.last().unwrap().to_string(),
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn params(mode: Mode) -> Arc<Params> {
        Arc::new(Params {
            mode,
            helo: "load.test".into(),
            from: "a@load.test".into(),
            rcpts: vec!["x@example.com".into(), "y@example.com".into()],
            messages_per_conn: 1,
            data: b"hi\r\n.\r\n".to_vec(),
            hold: false,
        })
    }

    fn sent(steps: &[Step]) -> String {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn message_session_pipelines_the_envelope() {
        let mut s = Script::new(params(Mode::Message));
        assert_eq!(
            sent(&s.reply(&reply(220, &["mx ESMTP"]))),
            "EHLO load.test\r\n"
        );
        let steps = s.reply(&reply(250, &["mx", "PIPELINING", "STARTTLS"]));
        assert!(steps.contains(&Step::Mark(Mark::StartTlsSent)));
        assert_eq!(sent(&steps), "STARTTLS\r\n");
        assert_eq!(s.reply(&reply(220, &["Ready"])), vec![Step::StartTls]);
        assert_eq!(sent(&s.tls_established()), "EHLO load.test\r\n");
        let steps = s.reply(&reply(250, &["mx", "PIPELINING"]));
        assert_eq!(sent(&steps), "MAIL FROM:<a@load.test>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\nDATA\r\n");
        for _ in 0..3 {
            assert!(sent(&s.reply(&reply(250, &["ok"]))).is_empty());
        }
        assert_eq!(sent(&s.reply(&reply(354, &["go"]))), "hi\r\n.\r\n");
        let steps = s.reply(&reply(250, &["queued"]));
        assert!(steps.contains(&Step::Mark(Mark::MessageAccepted)));
        assert_eq!(sent(&steps), "QUIT\r\n");
        assert_eq!(s.reply(&reply(221, &["bye"])), vec![Step::Done]);
    }

    #[test]
    fn without_pipelining_commands_go_one_by_one() {
        let mut s = Script::new(params(Mode::Plain));
        s.reply(&reply(220, &["mx"]));
        assert_eq!(
            sent(&s.reply(&reply(250, &["mx"]))),
            "MAIL FROM:<a@load.test>\r\n"
        );
        assert_eq!(
            sent(&s.reply(&reply(250, &["ok"]))),
            "RCPT TO:<x@example.com>\r\n"
        );
        assert_eq!(
            sent(&s.reply(&reply(250, &["ok"]))),
            "RCPT TO:<y@example.com>\r\n"
        );
        assert_eq!(sent(&s.reply(&reply(250, &["ok"]))), "DATA\r\n");
        assert_eq!(sent(&s.reply(&reply(354, &["go"]))), "hi\r\n.\r\n");
    }

    #[test]
    fn refusals_are_failures_with_the_reply() {
        let mut s = Script::new(params(Mode::Plain));
        s.reply(&reply(220, &["mx"]));
        s.reply(&reply(250, &["mx", "PIPELINING"]));
        s.reply(&reply(250, &["ok"]));
        let steps = s.reply(&reply(554, &["5.7.1 Relay access denied"]));
        assert_eq!(
            steps,
            vec![Step::Fail(
                "554 after RCPT".into(),
                "554 5.7.1 Relay access denied".into()
            )]
        );
        let mut s = Script::new(params(Mode::Starttls));
        s.reply(&reply(220, &["mx"]));
        assert!(
            matches!(&s.reply(&reply(250, &["mx"]))[0], Step::Fail(k, _) if k == "STARTTLS not offered")
        );
    }

    #[test]
    fn message_is_dot_terminated_and_near_size() {
        let m = Params::message(2048);
        assert!(m.ends_with(b"\r\n.\r\n"));
        assert!(m.len() >= 2048 && m.len() < 2048 + 200, "{}", m.len());
    }
}
