//! SMTP replies with enhanced status codes.
//!
//! Every reply sealgate sends carries an RFC 3463 enhanced status code
//! (RFC 2034 ENHANCEDSTATUSCODES is always advertised), so every error in the
//! protocol code maps to exactly one `Reply` value defined here or built with
//! [`Reply::new`].

use std::borrow::Cow;
use std::fmt::Write as _;

/// One SMTP reply: a three-digit code, an enhanced status code and one or
/// more text lines (RFC 5321 §4.2: multi-line replies repeat the code with
/// `-` on every line but the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// RFC 3463 `class.subject.detail`, without the code; empty for the
    /// banner and EHLO, which RFC 2034 §3 exempts.
    pub status: &'static str,
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Self {
        Reply {
            code,
            status,
            lines: vec![text.into()],
        }
    }

    pub fn multi(code: u16, lines: Vec<Cow<'static, str>>) -> Self {
        Reply {
            code,
            status: "",
            lines,
        }
    }

    /// Positive completion or intermediate (2xx, 3xx).
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Appends the wire form (CRLF-terminated lines) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        let mut line = String::with_capacity(64);
        for (i, text) in self.lines.iter().enumerate() {
            line.clear();
            let sep = if i == last { ' ' } else { '-' };
            let _ = write!(line, "{}{}", self.code, sep);
            if !self.status.is_empty() {
                line.push_str(self.status);
                line.push(' ');
            }
            // RFC 5321 §4.2: reply text is printable US-ASCII (and tab).
            // Text from configuration or from a peer (a host name, a TLS
            // alert) may not be; it is escaped, never sent raw.
            for c in text.chars() {
                if c == '\t' || (' '..='~').contains(&c) {
                    line.push(c);
                } else {
                    line.push('?');
                }
            }
            line.push_str("\r\n");
            out.extend_from_slice(line.as_bytes());
        }
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.lines.join(" / ");
        if self.status.is_empty() {
            write!(f, "{} {}", self.code, text)
        } else {
            write!(f, "{} {} {}", self.code, self.status, text)
        }
    }
}

/// The fixed replies of the server session. Variable ones are built where
/// they are needed with [`Reply::new`].
pub mod canned {
    use super::Reply;

    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0", "Ok")
    }
    pub fn sender_ok() -> Reply {
        Reply::new(250, "2.1.0", "Sender ok")
    }
    pub fn recipient_ok() -> Reply {
        Reply::new(250, "2.1.5", "Recipient ok")
    }
    pub fn start_data() -> Reply {
        Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
    }
    pub fn ready_for_tls() -> Reply {
        Reply::new(220, "2.0.0", "Ready to start TLS")
    }
    pub fn bye() -> Reply {
        Reply::new(221, "2.0.0", "Bye")
    }
    pub fn vrfy() -> Reply {
        // RFC 5321 §3.5.3: 252 when we will accept the message but cannot verify.
        Reply::new(
            252,
            "2.5.0",
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    pub fn help() -> Reply {
        Reply::new(
            214,
            "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS",
        )
    }
    pub fn unknown_command() -> Reply {
        Reply::new(500, "5.5.1", "Command unrecognized")
    }
    pub fn line_too_long() -> Reply {
        Reply::new(500, "5.5.2", "Line too long")
    }
    pub fn text_line_too_long() -> Reply {
        Reply::new(
            500,
            "5.5.2",
            "Message line too long (RFC 5321 section 4.5.3.1.6)",
        )
    }
    pub fn bad_sequence(text: &'static str) -> Reply {
        Reply::new(503, "5.5.1", text)
    }
    pub fn not_implemented() -> Reply {
        Reply::new(502, "5.5.1", "Command not implemented")
    }
    pub fn must_starttls() -> Reply {
        Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
    }
    /// RFC 6531 §3.6.1 (RFC 5248's registry): a UTF-8 address in a
    /// transaction that did not say SMTPUTF8.
    pub fn utf8_needs_smtputf8() -> Reply {
        Reply::new(
            553,
            "5.6.7",
            "Non-ASCII address needs MAIL FROM:<...> SMTPUTF8",
        )
    }
    /// RFC 8689 §4.1: REQUIRETLS only on a TLS session (it is advertised
    /// only there); X.7.10 is "Encryption Needed" (RFC 5248).
    pub fn requiretls_needs_tls() -> Reply {
        Reply::new(530, "5.7.10", "REQUIRETLS needs TLS: issue STARTTLS first")
    }
    pub fn relay_denied() -> Reply {
        Reply::new(554, "5.7.1", "Relay access denied")
    }
    pub fn message_too_big() -> Reply {
        Reply::new(
            552,
            "5.3.4",
            "Message size exceeds fixed maximum message size",
        )
    }
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, "4.5.3", "Too many recipients")
    }
    pub fn bare_line_ending() -> Reply {
        Reply::new(
            554,
            "5.5.2",
            "Bare CR or LF in message data is not allowed (RFC 5321 section 2.3.8)",
        )
    }
    pub fn no_valid_recipients() -> Reply {
        Reply::new(554, "5.5.1", "No valid recipients")
    }
    pub fn sync_error() -> Reply {
        Reply::new(
            554,
            "5.5.0",
            "Protocol error: SMTP synchronization error (input sent before the server's reply)",
        )
    }
    pub fn pregreet() -> Reply {
        Reply::new(
            554,
            "5.5.0",
            "Protocol error: input before the greeting banner",
        )
    }
    pub fn timeout() -> Reply {
        Reply::new(421, "4.4.2", "Timeout exceeded, closing connection")
    }
    pub fn shutting_down() -> Reply {
        Reply::new(421, "4.3.2", "Service shutting down, closing connection")
    }
    pub fn tls_already_active() -> Reply {
        Reply::new(503, "5.5.1", "TLS already active")
    }
    pub fn tls_not_available() -> Reply {
        Reply::new(454, "4.7.0", "TLS not available")
    }
    /// RFC 5321 §4.2.2 452, RFC 3463 4.3.1 "mail system full".
    pub fn storage_full() -> Reply {
        Reply::new(
            452,
            "4.3.1",
            "Insufficient system storage, message not accepted",
        )
    }
    /// RFC 5321 §4.2.2 452 at MAIL or DATA: the memory for messages in
    /// flight is exhausted (RFC 3463 4.3.1).
    pub fn busy() -> Reply {
        Reply::new(
            452,
            "4.3.1",
            "Insufficient system resources, try again later",
        )
    }
    pub fn storage_failed() -> Reply {
        Reply::new(
            451,
            "4.3.0",
            "Local error in processing, message not accepted",
        )
    }
    pub fn too_many_connections() -> Reply {
        Reply::new(421, "4.7.0", "Too many connections, try again later")
    }
    pub fn too_many_from_address() -> Reply {
        Reply::new(
            421,
            "4.7.0",
            "Too many connections from your address, try again later",
        )
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(421, "4.7.0", "Too many errors, closing connection")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_on_the_wire_is_printable_ascii() {
        let r = Reply::new(550, "5.7.1", "caf\u{e9} \x1b[31m bell\x07 \r\n end");
        assert_eq!(
            String::from_utf8(r.to_wire()).unwrap(),
            "550 5.7.1 caf? ?[31m bell? ?? end\r\n"
        );
    }

    #[test]
    fn single_line_carries_enhanced_code() {
        assert_eq!(
            canned::relay_denied().to_wire(),
            b"554 5.7.1 Relay access denied\r\n"
        );
    }

    #[test]
    fn multi_line_uses_dash_continuation() {
        let r = Reply::multi(250, vec!["a".into(), "B".into(), "c".into()]);
        assert_eq!(r.to_wire(), b"250-a\r\n250-B\r\n250 c\r\n");
    }
}
