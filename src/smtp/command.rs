//! Incremental, zero-copy SMTP command parsing (RFC 5321 §4.1).
//!
//! Two steps: [`next_line`] frames one command line out of the input with a
//! hard cap (RFC 5321 §4.5.3.1.4: 512 octets including CRLF), and [`parse`]
//! turns the line into a [`Command`] that borrows from the input.

/// The result of looking for one command line in buffered input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line without its line ending, and the octets consumed
    /// including the line ending.
    Complete { line: &'a [u8], consumed: usize },
    /// No line ending yet and still within the cap: wait for more input.
    NeedMore,
    /// The line is longer than the cap. `consumed` octets (up to and
    /// including the line ending, if it was seen) are to be discarded; when
    /// `ended` is false the rest of the overlong line is still to come and
    /// must be discarded too.
    TooLong { consumed: usize, ended: bool },
}

/// Frames the next command line. A line ends at LF; a CR before it is part
/// of the line ending. Commands ending in a bare LF are accepted, as most
/// MTAs do: unlike message data, a command line cannot smuggle anything.
pub fn next_line(input: &[u8], cap: usize) -> Line<'_> {
    match memchr::memchr(b'\n', input) {
        Some(lf) => {
            let consumed = lf + 1;
            if consumed > cap {
                return Line::TooLong {
                    consumed,
                    ended: true,
                };
            }
            let line = &input[..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Line::Complete { line, consumed }
        }
        None if input.len() >= cap => Line::TooLong {
            consumed: input.len(),
            ended: false,
        },
        None => Line::NeedMore,
    }
}

/// A parsed command. Arguments borrow from the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Ehlo(&'a str),
    Helo(&'a str),
    Mail {
        from: ReversePath<'a>,
        params: MailParams,
    },
    Rcpt {
        to: Mailbox<'a>,
        params: RcptParams,
    },
    Data,
    /// RFC 3030 CHUNKING: `BDAT size [LAST]`; `size` octets of message
    /// data follow the command line at once.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// A verb we know but do not implement (EXPN, TURN, ETRN, AUTH …).
    NotImplemented(&'a str),
}

/// MAIL FROM: either the null reverse-path `<>` or a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath<'a> {
    Null,
    Mailbox(Mailbox<'a>),
}

/// `local-part@domain`, as written by the client (source route dropped,
/// RFC 5321 §4.1.2 and Appendix C: receivers MUST ignore it). The special
/// recipient `<Postmaster>` has an empty domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox<'a> {
    pub local: &'a str,
    pub domain: &'a str,
}

impl Mailbox<'_> {
    pub fn is_postmaster(&self) -> bool {
        self.domain.is_empty()
    }

    /// The address needs SMTPUTF8: UTF-8 in its local part or domain
    /// (RFC 6531 §3.3).
    pub fn is_utf8(&self) -> bool {
        !(self.local.is_ascii() && self.domain.is_ascii())
    }

    /// The address as the envelope keeps it: a domain with U-labels in
    /// its normalised form (UTS 46 mapping: `BÜCHER.example` →
    /// `bücher.example`); anything else as written.
    pub fn normalized(&self) -> String {
        if self.domain.is_ascii() {
            self.to_string()
        } else {
            format!("{}@{}", self.local, crate::model::to_u_labels(self.domain))
        }
    }
}

impl std::fmt::Display for Mailbox<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.domain.is_empty() {
            f.write_str(self.local)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

/// MAIL parameters we understand (RFC 1870 SIZE, RFC 6152 BODY, RFC 8689
/// REQUIRETLS, RFC 6531 SMTPUTF8 (IN-7), RFC 3461 RET and ENVID (IN-8)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body_8bit: bool,
    pub require_tls: bool,
    pub smtputf8: bool,
    pub dsn: crate::model::MessageDsn,
}

/// RCPT parameters we understand (RFC 3461 NOTIFY and ORCPT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    pub dsn: crate::model::RcptDsn,
}

/// Why a line is not a valid command; each maps to one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown verb: 500 5.5.1.
    Unrecognized,
    /// Known verb, bad arguments: 501 5.5.4.
    Syntax(&'static str),
    /// Malformed sender address: 501 5.1.7.
    BadSender,
    /// Malformed recipient address: 501 5.1.3.
    BadRecipient,
    /// An ESMTP parameter we do not support: 555 5.5.4.
    UnsupportedParameter,
    /// The line holds octets that are not text: control characters,
    /// bytes that are not UTF-8, or UTF-8 outside MAIL and RCPT.
    NonAscii,
}

/// Parses one command line (without its line ending).
pub fn parse(line: &[u8]) -> Result<Command<'_>, CommandError> {
    // RFC 5321 §2.4: commands are ASCII, control characters never. RFC
    // 6531 §3.3: with SMTPUTF8 the addresses of MAIL and RCPT may hold
    // UTF-8 (whether this transaction may is the session's to say); no
    // other command may, and octets that are not UTF-8 are never text.
    if line.iter().any(|&b| b == 0x7f || (b < 0x20 && b != b'\t')) {
        return Err(CommandError::NonAscii);
    }
    let line = std::str::from_utf8(line).map_err(|_| CommandError::NonAscii)?;
    if !line.is_ascii() {
        let verb = line.get(..4).unwrap_or("");
        if !(verb.eq_ignore_ascii_case("MAIL") || verb.eq_ignore_ascii_case("RCPT")) {
            return Err(CommandError::NonAscii);
        }
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let is = |name: &str| verb.eq_ignore_ascii_case(name);
    let no_args = |cmd: Command<'static>| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax("Syntax error, no parameters allowed"))
        }
    };
    if is("EHLO") || is("HELO") {
        let name = rest.trim();
        if name.is_empty() || name.contains(' ') || !valid_helo(name) {
            return Err(CommandError::Syntax(
                "Syntax: EHLO domain-or-address-literal",
            ));
        }
        return Ok(if is("EHLO") {
            Command::Ehlo(name)
        } else {
            Command::Helo(name)
        });
    }
    if is("MAIL") {
        let arg = strip_prefix_ci(rest, "FROM:")
            .ok_or(CommandError::Syntax("Syntax: MAIL FROM:<address>"))?;
        let (path, params) = split_path(arg).ok_or(CommandError::BadSender)?;
        let from = if path == "<>" {
            ReversePath::Null
        } else {
            ReversePath::Mailbox(parse_path(path, false).ok_or(CommandError::BadSender)?)
        };
        let params = parse_mail_params(params)?;
        return Ok(Command::Mail { from, params });
    }
    if is("RCPT") {
        let arg = strip_prefix_ci(rest, "TO:")
            .ok_or(CommandError::Syntax("Syntax: RCPT TO:<address>"))?;
        let (path, params) = split_path(arg).ok_or(CommandError::BadRecipient)?;
        let to = parse_path(path, true).ok_or(CommandError::BadRecipient)?;
        let params = parse_rcpt_params(params)?;
        return Ok(Command::Rcpt { to, params });
    }
    if is("DATA") {
        return no_args(Command::Data);
    }
    if is("BDAT") {
        // RFC 3030 §2: bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ]
        // CR LF; chunk-size ::= 1*DIGIT; end-marker ::= "LAST".
        let mut args = rest.split(' ');
        let size = args
            .next()
            .filter(|v| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(CommandError::Syntax("Syntax: BDAT size [LAST]"))?;
        let last = match args.next() {
            None => false,
            Some(m) if m.eq_ignore_ascii_case("LAST") => true,
            Some(_) => return Err(CommandError::Syntax("Syntax: BDAT size [LAST]")),
        };
        if args.next().is_some() {
            return Err(CommandError::Syntax("Syntax: BDAT size [LAST]"));
        }
        return Ok(Command::Bdat { size, last });
    }
    if is("RSET") {
        return no_args(Command::Rset);
    }
    if is("QUIT") {
        return no_args(Command::Quit);
    }
    if is("STARTTLS") {
        return no_args(Command::StartTls);
    }
    // RFC 5321 §4.1.1.9: NOOP may carry a string, which is ignored.
    if is("NOOP") {
        return Ok(Command::Noop);
    }
    if is("HELP") {
        return Ok(Command::Help);
    }
    if is("VRFY") {
        if rest.trim().is_empty() {
            return Err(CommandError::Syntax("Syntax: VRFY address"));
        }
        return Ok(Command::Vrfy);
    }
    for known in [
        "EXPN", "TURN", "ETRN", "AUTH", "ATRN", "SEND", "SOML", "SAML",
    ] {
        if is(known) {
            return Ok(Command::NotImplemented(known));
        }
    }
    Err(CommandError::Unrecognized)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        // Tolerate `MAIL FROM: <a@b>` (a space after the colon), as
        // deployed clients send it although RFC 5321 has no space there.
        Some(s[prefix.len()..].trim_start_matches(' '))
    } else {
        None
    }
}

/// Splits `<path> params` at the closing bracket of the path. A `>` inside
/// a quoted local part does not close the path.
fn split_path(arg: &str) -> Option<(&str, &str)> {
    let bytes = arg.as_bytes();
    if bytes.first() != Some(&b'<') {
        return None;
    }
    let mut in_quote = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quote => escaped = true,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => {
                let rest = &arg[i + 1..];
                if !rest.is_empty() && !rest.starts_with(' ') {
                    return None;
                }
                return Some((&arg[..=i], rest));
            }
            _ => {}
        }
    }
    None
}

/// Parses `<[@route:]local@domain>` (RFC 5321 §4.1.2 Path). `<Postmaster>`
/// without a domain is accepted for recipients (RFC 5321 §4.5.1).
fn parse_path(path: &str, recipient: bool) -> Option<Mailbox<'_>> {
    let inner = path.strip_prefix('<')?.strip_suffix('>')?;
    // RFC 5321 §4.1.2 A-d-l: "@one,@two:" source route, to be ignored.
    let inner = if inner.starts_with('@') {
        let colon = inner.find(':')?;
        let route = &inner[..colon];
        if !route
            .split(',')
            .all(|hop| hop.strip_prefix('@').is_some_and(valid_domain))
        {
            return None;
        }
        &inner[colon + 1..]
    } else {
        inner
    };
    if recipient && inner.eq_ignore_ascii_case("postmaster") {
        return Some(Mailbox {
            local: inner,
            domain: "",
        });
    }
    let at = inner.rfind('@')?;
    let (local, domain) = (&inner[..at], &inner[at + 1..]);
    if !valid_local_part(local)
        || !(crate::model::valid_mail_domain(domain) || valid_address_literal(domain))
    {
        return None;
    }
    Some(Mailbox { local, domain })
}

/// `key[=value]` of one ESMTP parameter (RFC 5321 §4.1.2 esmtp-param).
/// Keywords are ASCII (one that is not is unknown); a value with UTF-8
/// is for the parameter to judge (RFC 6533 §3: ORCPT and ENVID as
/// unitext).
fn esmtp_params(params: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    params
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(|param| match param.find('=') {
            Some(i) => (&param[..i], Some(&param[i + 1..])),
            None => (param, None),
        })
}

fn parse_mail_params(params: &str) -> Result<MailParams, CommandError> {
    let mut out = MailParams::default();
    for (key, value) in esmtp_params(params) {
        if key.eq_ignore_ascii_case("SIZE") {
            // RFC 1870 §6: size-value ::= 1*20DIGIT
            let v = value
                .filter(|v| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(CommandError::Syntax("Bad SIZE parameter"))?;
            out.size = Some(v.parse().unwrap_or(u64::MAX));
        } else if key.eq_ignore_ascii_case("BODY") {
            match value {
                Some(v) if v.eq_ignore_ascii_case("8BITMIME") => out.body_8bit = true,
                Some(v) if v.eq_ignore_ascii_case("7BIT") => out.body_8bit = false,
                _ => return Err(CommandError::Syntax("Bad BODY parameter")),
            }
        } else if key.eq_ignore_ascii_case("REQUIRETLS") {
            // RFC 8689 §3: the keyword takes no value.
            if value.is_some() {
                return Err(CommandError::Syntax("REQUIRETLS takes no value"));
            }
            out.require_tls = true;
        } else if key.eq_ignore_ascii_case("SMTPUTF8") {
            // RFC 6531 §3.4: the parameter takes no value.
            if value.is_some() {
                return Err(CommandError::Syntax("SMTPUTF8 takes no value"));
            }
            out.smtputf8 = true;
        } else if key.eq_ignore_ascii_case("RET") {
            // RFC 3461 §4.3: ret-value = "FULL" / "HDRS".
            if out.dsn.ret.is_some() {
                return Err(CommandError::Syntax("RET given twice"));
            }
            out.dsn.ret = Some(match value {
                Some(v) if v.eq_ignore_ascii_case("FULL") => crate::model::Ret::Full,
                Some(v) if v.eq_ignore_ascii_case("HDRS") => crate::model::Ret::Hdrs,
                _ => return Err(CommandError::Syntax("Bad RET parameter: FULL or HDRS")),
            });
        } else if key.eq_ignore_ascii_case("ENVID") {
            // RFC 3461 §4.4: envid-value = xtext, at most 100 characters.
            if out.dsn.envid.is_some() {
                return Err(CommandError::Syntax("ENVID given twice"));
            }
            let v = value
                .filter(|v| !v.is_empty() && v.len() <= 100)
                .and_then(crate::model::xtext_decode)
                .ok_or(CommandError::Syntax(
                    "Bad ENVID parameter (xtext, at most 100)",
                ))?;
            out.dsn.envid = Some(v);
        } else {
            return Err(CommandError::UnsupportedParameter);
        }
    }
    Ok(out)
}

fn parse_rcpt_params(params: &str) -> Result<RcptParams, CommandError> {
    use crate::model::{Notify, Orcpt};
    let mut out = RcptParams::default();
    for (key, value) in esmtp_params(params) {
        if key.eq_ignore_ascii_case("NOTIFY") {
            // RFC 3461 §4.1: notify-esmtp-value = "NEVER" / 1#notify-list-
            // element, notify-list-element = "SUCCESS" / "FAILURE" / "DELAY".
            if out.dsn.notify != Notify::Default {
                return Err(CommandError::Syntax("NOTIFY given twice"));
            }
            const BAD: CommandError =
                CommandError::Syntax("Bad NOTIFY parameter: NEVER or SUCCESS,FAILURE,DELAY");
            let v = value.filter(|v| !v.is_empty()).ok_or(BAD)?;
            if v.eq_ignore_ascii_case("NEVER") {
                out.dsn.notify = Notify::Never;
                continue;
            }
            let (mut success, mut failure, mut delay) = (false, false, false);
            for word in v.split(',') {
                let flag = if word.eq_ignore_ascii_case("SUCCESS") {
                    &mut success
                } else if word.eq_ignore_ascii_case("FAILURE") {
                    &mut failure
                } else if word.eq_ignore_ascii_case("DELAY") {
                    &mut delay
                } else {
                    // NEVER among others, an empty or unknown element.
                    return Err(BAD);
                };
                *flag = true;
            }
            out.dsn.notify = Notify::On {
                success,
                failure,
                delay,
            };
        } else if key.eq_ignore_ascii_case("ORCPT") {
            // RFC 3461 §4.2: orcpt-value = addr-type ";" xtext, at most 500
            // characters; addr-type an atom (rfc822, or RFC 6533's utf-8).
            if out.dsn.orcpt.is_some() {
                return Err(CommandError::Syntax("ORCPT given twice"));
            }
            const BAD: CommandError = CommandError::Syntax("Bad ORCPT parameter: type;xtext");
            let v = value.filter(|v| v.len() <= 500).ok_or(BAD)?;
            let (kind, address) = v.split_once(';').ok_or(BAD)?;
            if kind.is_empty() || !kind.is_ascii() || !kind.bytes().all(is_atext) {
                return Err(BAD);
            }
            let address = crate::model::xtext_decode(address)
                .filter(|a| !a.is_empty())
                .ok_or(BAD)?;
            out.dsn.orcpt = Some(Orcpt {
                kind: kind.to_string(),
                address,
            });
        } else {
            return Err(CommandError::UnsupportedParameter);
        }
    }
    Ok(out)
}

/// RFC 5321 §4.1.2 Local-part = Dot-string / Quoted-string, at most 64
/// octets (§4.5.3.1.1); RFC 6531 §3.3 adds UTF-8 to atext and qtext
/// (whether UTF-8 may be used is the session's to check).
fn valid_local_part(local: &str) -> bool {
    if local.is_empty() || local.len() > 64 {
        return false;
    }
    if let Some(q) = local.strip_prefix('"') {
        let Some(body) = q.strip_suffix('"') else {
            return false;
        };
        let mut escaped = false;
        for b in body.bytes() {
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' => escaped = true,
                b'"' => return false,
                32..=126 | 0x80..=0xff => {}
                _ => return false,
            }
        }
        return !escaped;
    }
    local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

/// atext, and (RFC 6531 §3.3 UTF8-non-ascii) every octet of a UTF-8
/// character: the line is known to be UTF-8.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

pub use crate::model::valid_domain;

/// RFC 5321 §4.1.3 address literals: `[192.0.2.1]`, `[IPv6:2001:db8::1]`.
pub fn valid_address_literal(lit: &str) -> bool {
    let Some(inner) = lit.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    if let Some(v6) = strip_prefix_ci(inner, "IPv6:") {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    inner.parse::<std::net::Ipv4Addr>().is_ok()
}

fn valid_helo(name: &str) -> bool {
    valid_domain(name) || valid_address_literal(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_event_line_framing_waits_for_line_ending() {
        assert_eq!(next_line(b"NOOP", 512), Line::NeedMore);
        assert_eq!(
            next_line(b"NOOP\r\nQUIT\r\n", 512),
            Line::Complete {
                line: b"NOOP",
                consumed: 6
            }
        );
        assert_eq!(
            next_line(b"NOOP\nQUIT\r\n", 512),
            Line::Complete {
                line: b"NOOP",
                consumed: 5
            }
        );
    }

    #[test]
    fn state_event_line_cap_counts_the_line_ending() {
        // 510 octets of text + CRLF = 512: the RFC 5321 §4.5.3.1.4 maximum.
        let mut ok = vec![b'N'; 510];
        ok.extend_from_slice(b"\r\n");
        assert!(matches!(
            next_line(&ok, 512),
            Line::Complete { consumed: 512, .. }
        ));
        let mut long = vec![b'N'; 511];
        long.extend_from_slice(b"\r\n");
        assert_eq!(
            next_line(&long, 512),
            Line::TooLong {
                consumed: 513,
                ended: true
            }
        );
        assert_eq!(
            next_line(&[b'N'; 600], 512),
            Line::TooLong {
                consumed: 600,
                ended: false
            }
        );
    }

    #[test]
    fn state_event_parses_mail_with_params() {
        let cmd = parse(b"mail from:<a@b.example> SIZE=100 BODY=8BITMIME").unwrap();
        assert_eq!(
            cmd,
            Command::Mail {
                from: ReversePath::Mailbox(Mailbox {
                    local: "a",
                    domain: "b.example"
                }),
                params: MailParams {
                    size: Some(100),
                    body_8bit: true,
                    ..MailParams::default()
                }
            }
        );
        assert_eq!(
            parse(b"MAIL FROM:<>").unwrap(),
            Command::Mail {
                from: ReversePath::Null,
                params: MailParams::default()
            }
        );
    }

    #[test]
    fn state_event_source_route_is_ignored() {
        assert_eq!(
            parse(b"RCPT TO:<@hop.example,@two.example:user@dest.example>").unwrap(),
            Command::Rcpt {
                to: Mailbox {
                    local: "user",
                    domain: "dest.example"
                },
                params: RcptParams::default(),
            }
        );
    }

    #[test]
    fn state_event_quoted_local_part_may_hold_at_and_bracket() {
        assert_eq!(
            parse(b"RCPT TO:<\"a>b@c\"@d.example>").unwrap(),
            Command::Rcpt {
                to: Mailbox {
                    local: "\"a>b@c\"",
                    domain: "d.example"
                },
                params: RcptParams::default(),
            }
        );
    }

    /// RFC 3030 §2: `BDAT chunk-size [LAST]`, any case, nothing else.
    #[test]
    fn state_event_bdat_takes_a_size_and_last() {
        assert_eq!(
            parse(b"BDAT 1000"),
            Ok(Command::Bdat {
                size: 1000,
                last: false
            })
        );
        assert_eq!(
            parse(b"bdat 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        for bad in [
            &b"BDAT"[..],
            b"BDAT -1",
            b"BDAT 1x",
            b"BDAT 10 LAST x",
            b"BDAT 10 FIRST",
            b"BDAT 123456789012345678901",
        ] {
            assert_eq!(
                parse(bad),
                Err(CommandError::Syntax("Syntax: BDAT size [LAST]")),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn state_event_bad_addresses_are_rejected() {
        for bad in [
            &b"MAIL FROM:a@b"[..],
            b"MAIL FROM:<a@>",
            b"MAIL FROM:<@b>",
            b"MAIL FROM:<a..b@c>",
            b"MAIL FROM:<a@b>x",
        ] {
            assert_eq!(
                parse(bad),
                Err(CommandError::BadSender),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"RCPT TO:<user>"), Err(CommandError::BadRecipient));
        assert!(parse(b"RCPT TO:<postmaster>").is_ok());
        assert_eq!(
            parse(b"MAIL FROM:<a@b> SIZE="),
            Err(CommandError::Syntax("Bad SIZE parameter"))
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b> XFOO=1"),
            Err(CommandError::UnsupportedParameter)
        );
        assert_eq!(parse(b"BOGUS"), Err(CommandError::Unrecognized));
        assert_eq!(parse(b"NOOP \x00"), Err(CommandError::NonAscii));
        assert_eq!(
            parse(b"DATA x"),
            Err(CommandError::Syntax("Syntax error, no parameters allowed"))
        );
    }

    /// RFC 6531 §3.3-3.4: UTF-8 in MAIL and RCPT paths, SMTPUTF8 on MAIL;
    /// nowhere else.
    #[test]
    fn state_event_utf8_addresses_and_smtputf8() {
        let Ok(Command::Mail { from, params }) =
            parse("MAIL FROM:<é@bücher.example> SMTPUTF8".as_bytes())
        else {
            panic!()
        };
        assert!(params.smtputf8);
        let ReversePath::Mailbox(m) = from else {
            panic!()
        };
        assert!(m.is_utf8());
        assert_eq!(
            Mailbox {
                local: "é",
                domain: "BÜCHER.example"
            }
            .normalized(),
            "é@bücher.example"
        );
        assert!(parse("RCPT TO:<ü@xn--bcher-kva.example>".as_bytes()).is_ok());
        assert_eq!(
            parse("EHLO bücher.example".as_bytes()),
            Err(CommandError::NonAscii)
        );
        assert_eq!(
            parse(b"RCPT TO:<\xff@x.example>"),
            Err(CommandError::NonAscii)
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b> SMTPUTF8=1"),
            Err(CommandError::Syntax("SMTPUTF8 takes no value"))
        );
    }

    /// RFC 3461 §4.1-4.4: NOTIFY, ORCPT, RET and ENVID, xtext decoded.
    #[test]
    fn state_event_dsn_parameters() {
        use crate::model::{Notify, Ret};
        let Ok(Command::Mail { params, .. }) =
            parse(b"MAIL FROM:<a@b.example> RET=hdrs ENVID=QQ+2B314")
        else {
            panic!()
        };
        assert_eq!(params.dsn.ret, Some(Ret::Hdrs));
        assert_eq!(params.dsn.envid.as_deref(), Some("QQ+314"));
        let Ok(Command::Rcpt { params, .. }) =
            parse(b"RCPT TO:<x@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2By@y.example")
        else {
            panic!()
        };
        assert_eq!(
            params.dsn.notify,
            Notify::On {
                success: true,
                failure: true,
                delay: false
            }
        );
        let orcpt = params.dsn.orcpt.expect("ORCPT");
        assert_eq!(
            (orcpt.kind.as_str(), orcpt.address.as_str()),
            ("rfc822", "x+y@y.example")
        );
        assert_eq!(crate::model::orcpt_encode(&orcpt), "rfc822;x+2By@y.example");
        let Ok(Command::Rcpt { params, .. }) = parse(b"RCPT TO:<x@y.example> notify=never") else {
            panic!()
        };
        assert_eq!(params.dsn.notify, Notify::Never);
        for bad in [
            &b"RCPT TO:<x@y> NOTIFY=NEVER,SUCCESS"[..],
            b"RCPT TO:<x@y> NOTIFY=",
            b"RCPT TO:<x@y> NOTIFY=SOMETIMES",
            b"RCPT TO:<x@y> NOTIFY=DELAY NOTIFY=DELAY",
            b"RCPT TO:<x@y> ORCPT=x@y",
            b"RCPT TO:<x@y> ORCPT=rfc822;a+ZZ",
            b"MAIL FROM:<a@b> RET=ALL",
            b"MAIL FROM:<a@b> RET=FULL RET=HDRS",
            b"MAIL FROM:<a@b> ENVID=",
        ] {
            assert!(
                matches!(parse(bad), Err(CommandError::Syntax(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn state_event_address_literals() {
        assert!(parse(b"EHLO [127.0.0.1]").is_ok());
        assert!(parse(b"EHLO [IPv6:::1]").is_ok());
        assert!(parse(b"EHLO [1.2.3]").is_err());
        assert!(parse(b"RCPT TO:<u@[192.0.2.1]>").is_ok());
    }
}
